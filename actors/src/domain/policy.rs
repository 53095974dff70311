//! Policies and verdicts: "is artifact X acceptable under policy P, given these
//! attestations?"
//!
//! A [`Policy`] is a JSON document (`docs/policies.md`): the identities it trusts (an OIDC
//! issuer with a certificate SAN, exactly or by an anchored regular expression, optionally
//! GitHub workflow claims; or a managed key), the in-toto predicate types it requires, how
//! much transparency evidence each attestation needs, and optionally a Rego module
//! evaluated over the verified attestations. Its hash is `sha256:` of the RFC 8785 canonical
//! JSON of the document, so the same policy written twice has one hash.
//!
//! [`evaluate`] verifies every attestation completely ([`super::verification`]) against the
//! policy's signers, checks the required predicate types, runs the Rego module, and returns
//! an [`Evaluation`]: the decision, its reasons, and what it relied on (the identities, the
//! predicate types, each attestation's log entry and signing time), so a cached verdict can
//! be explained, replayed offline and revoked by identity.
//!
//! Identities are recorded as fixed-length IDs in the same index as signer key IDs:
//! `identity:sha256:<hex of SHA-256(u64 BE length of issuer ‖ issuer ‖ SAN)>` for a
//! certificate identity and
//! `key:sha256:<hex of SHA-256(DER key)>` for a managed key ([`identity_id`], [`key_id`]).

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::verification::{
    self, Artifact, ArtifactDigest, ContentSummary, IdentityPolicy, Matcher, Report, Request,
    SignerPolicy, SignerSummary, Thresholds, TrustMaterial, WorkflowClaims,
};

/// The most identities a policy may trust.
pub const MAX_IDENTITIES: usize = 64;
/// The most predicate types a policy may require.
pub const MAX_PREDICATE_TYPES: usize = 32;
/// The largest Rego module, in bytes.
pub const MAX_REGO_BYTES: usize = 256 * 1024;
/// The largest text field (identity, issuer, predicate type), in bytes.
pub const MAX_TEXT: usize = 1024;
/// The longest policy name, in bytes.
pub const MAX_NAME: usize = 128;
/// The longest a Rego evaluation may run.
pub const REGO_TIME_LIMIT: Duration = Duration::from_secs(2);

/// Why a policy document was refused, or a Rego module failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document is not a policy: the message names the field.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// The Rego module does not compile.
    #[error("invalid policy: `rego` does not compile: {0}")]
    Rego(String),
}

/// A GitHub workflow claim set, as written in a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubClaims {
    /// The repository, `owner/repo` or its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The ref, e.g. `refs/heads/main`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The workflow file that signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The triggering event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `github-hosted` or `self-hosted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_environment: Option<String>,
}

/// One trusted signer, as written in a policy: an identity or a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIdentity {
    /// The OIDC issuer, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Or an anchored regular expression over the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_regexp: Option<String>,
    /// The certificate's SAN, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san: Option<String>,
    /// Or an anchored regular expression over the SAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_regexp: Option<String>,
    /// GitHub workflow claims the certificate must also carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubClaims>,
    /// Or a managed key (PEM `PUBLIC KEY`), instead of an identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How much transparency evidence each attestation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transparency {
    /// Verified log entries per attestation (default 1).
    #[serde(default = "one")]
    pub tlog_entries: usize,
    /// Verified timestamps per attestation (default 1).
    #[serde(default = "one")]
    pub timestamps: usize,
}

fn one() -> usize {
    1
}

impl Default for Transparency {
    fn default() -> Self {
        Transparency {
            tlog_entries: 1,
            timestamps: 1,
        }
    }
}

/// A policy document as written (`PUT /api/v1/policies/{name}`, `provd policy apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// The signers whose attestations count.
    pub identities: Vec<TrustedIdentity>,
    /// In-toto predicate types that must each be attested (e.g.
    /// `https://slsa.dev/provenance/v1`); empty: none required.
    #[serde(default)]
    pub predicate_types: Vec<String>,
    /// Transparency requirements per attestation.
    #[serde(default)]
    pub transparency: Transparency,
    /// A Rego module (package `provd`) evaluated over the verified attestations: the verdict
    /// is `allow` only if `data.provd.allow` is true and `data.provd.deny` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego: Option<String>,
}

/// A checked policy: its document, canonical bytes and hash, and the signers it trusts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The document.
    pub document: PolicyDocument,
    /// RFC 8785 canonical JSON of the document.
    pub canonical: Vec<u8>,
    /// `sha256:<hex>` of the canonical JSON.
    pub hash: String,
    signers: SignerPolicy,
}

fn text(field: &str, value: &str) -> Result<(), PolicyError> {
    if value.is_empty() {
        return Err(PolicyError::Invalid(format!("`{field}` is empty")));
    }
    if value.len() > MAX_TEXT {
        return Err(PolicyError::Invalid(format!(
            "`{field}` is longer than {MAX_TEXT} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(PolicyError::Invalid(format!("`{field}` contains NUL")));
    }
    Ok(())
}

fn matcher(
    field: &str,
    exact: &Option<String>,
    re: &Option<String>,
) -> Result<Matcher, PolicyError> {
    match (exact, re) {
        (Some(v), None) => {
            text(field, v)?;
            Ok(Matcher::Exact(v.clone()))
        }
        (None, Some(re)) => {
            text(&format!("{field}_regexp"), re)?;
            Matcher::regex(re).map_err(|e| PolicyError::Invalid(format!("`{field}_regexp`: {e}")))
        }
        (Some(_), Some(_)) => Err(PolicyError::Invalid(format!(
            "give `{field}` or `{field}_regexp`, not both"
        ))),
        (None, None) => Err(PolicyError::Invalid(format!(
            "`{field}` (or `{field}_regexp`) is required"
        ))),
    }
}

impl Policy {
    /// Parses and checks a policy document: every identity, key, expression and the Rego
    /// module must be usable, and the transparency thresholds at least 1 log entry.
    pub fn from_json(json: &[u8]) -> Result<Self, PolicyError> {
        let document: PolicyDocument = serde_json::from_slice(json)
            .map_err(|e| PolicyError::Invalid(format!("not a policy document: {e}")))?;
        Policy::from_document(document)
    }

    /// Checks a parsed document.
    pub fn from_document(document: PolicyDocument) -> Result<Self, PolicyError> {
        if document.identities.is_empty() {
            return Err(PolicyError::Invalid(
                "`identities` is empty: a policy must trust at least one signer".into(),
            ));
        }
        if document.identities.len() > MAX_IDENTITIES {
            return Err(PolicyError::Invalid(format!(
                "`identities` lists more than {MAX_IDENTITIES} signers"
            )));
        }
        let mut signers = Vec::new();
        for (i, id) in document.identities.iter().enumerate() {
            let at = |f: &str| format!("identities[{i}].{f}");
            if let Some(pem) = &id.key {
                if id.issuer.is_some()
                    || id.issuer_regexp.is_some()
                    || id.san.is_some()
                    || id.san_regexp.is_some()
                    || id.github.is_some()
                {
                    return Err(PolicyError::Invalid(format!(
                        "`{}` names a key and an identity: give one",
                        at("key")
                    )));
                }
                let der = verification::key_from_pem(pem)
                    .map_err(|e| PolicyError::Invalid(format!("`{}`: {e}", at("key"))))?;
                signers.push(SignerPolicy::Key(der));
                continue;
            }
            let github = id.github.clone().unwrap_or_default();
            for (name, v) in [
                ("github.repository", &github.repository),
                ("github.ref", &github.git_ref),
                ("github.workflow", &github.workflow),
                ("github.trigger", &github.trigger),
                ("github.runner_environment", &github.runner_environment),
            ] {
                if let Some(v) = v {
                    text(&at(name), v)?;
                }
            }
            signers.push(SignerPolicy::Identity(IdentityPolicy {
                san: matcher(&at("san"), &id.san, &id.san_regexp)?,
                issuer: matcher(&at("issuer"), &id.issuer, &id.issuer_regexp)?,
                workflow: WorkflowClaims {
                    repository: github.repository,
                    git_ref: github.git_ref,
                    workflow: github.workflow,
                    trigger: github.trigger,
                    runner_environment: github.runner_environment,
                },
            }));
        }
        if document.predicate_types.len() > MAX_PREDICATE_TYPES {
            return Err(PolicyError::Invalid(format!(
                "`predicate_types` lists more than {MAX_PREDICATE_TYPES} types"
            )));
        }
        for (i, t) in document.predicate_types.iter().enumerate() {
            text(&format!("predicate_types[{i}]"), t)?;
        }
        let t = document.transparency;
        if t.tlog_entries == 0 || t.tlog_entries > 16 || t.timestamps > 16 {
            return Err(PolicyError::Invalid(
                "`transparency.tlog_entries` must be 1 to 16 and `transparency.timestamps` \
                 0 to 16"
                    .into(),
            ));
        }
        if let Some(rego) = &document.rego {
            if rego.len() > MAX_REGO_BYTES {
                return Err(PolicyError::Invalid(format!(
                    "`rego` is larger than {MAX_REGO_BYTES} bytes"
                )));
            }
            if rego.contains('\0') {
                return Err(PolicyError::Invalid("`rego` contains NUL".into()));
            }
            rego_engine(rego)?;
        }
        let value = serde_json::to_value(&document)
            .map_err(|e| PolicyError::Invalid(format!("cannot encode the policy: {e}")))?;
        let canonical = serde_json_canonicalizer::to_vec(&value)
            .map_err(|e| PolicyError::Invalid(format!("cannot canonicalise the policy: {e}")))?;
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(&canonical)));
        Ok(Policy {
            document,
            canonical,
            hash,
            signers: SignerPolicy::AnyOf(signers),
        })
    }
}

/// An engine holding the module, or why it does not compile.
fn rego_engine(rego: &str) -> Result<regorus::Engine, PolicyError> {
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: REGO_TIME_LIMIT,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });
    let package = engine
        .add_policy("policy.rego".into(), rego.to_owned())
        .map_err(|e| PolicyError::Rego(e.to_string()))?;
    if package != "data.provd" {
        return Err(PolicyError::Rego(format!(
            "the module's package is {package}, not `provd`"
        )));
    }
    Ok(engine)
}

/// Checks a policy's name: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, so it is safe in a URL
/// path, a file name and a log line as it is.
pub fn check_name(name: &str) -> Result<(), PolicyError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || name.len() > MAX_NAME {
        return Err(PolicyError::Invalid(format!(
            "policy name {name:?} must be 1 to {MAX_NAME} letters, digits, `.`, `_` or `-`, \
             starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Whether `hash` is spelled as a policy hash is: `sha256:` and 64 lowercase hex digits.
pub fn is_policy_hash(hash: &str) -> bool {
    hash.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The ID a certificate identity is indexed under (and revoked by).
pub fn identity_id(issuer: &str, san: &str) -> String {
    // The length prefix keeps every (issuer, SAN) pair distinct.
    let mut h = Sha256::new();
    h.update((issuer.len() as u64).to_be_bytes());
    h.update(issuer.as_bytes());
    h.update(san.as_bytes());
    format!("identity:sha256:{}", hex::encode(h.finalize()))
}

/// The ID a managed key is indexed under, from its `sha256:<hex>` fingerprint.
pub fn key_id(fingerprint: &str) -> String {
    format!("key:{fingerprint}")
}

/// The signer-set hash of a set of attestations: `sha256:` over the sorted `sha256:<hex>`
/// digests of the bundles, one per line. It binds a verdict to the exact attestations it was
/// decided on, so a forged attestation can never read (or poison) the verdict of a genuine
/// one, and the same request again finds its verdict without verifying.
pub fn signer_set_hash(bundles: &[Vec<u8>]) -> String {
    let digests: BTreeSet<String> = bundles.iter().map(|b| bundle_digest(b)).collect();
    let mut h = Sha256::new();
    for d in digests {
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// `sha256:<hex>` of a bundle's bytes.
pub fn bundle_digest(bundle: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bundle)))
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The artifact is acceptable under the policy.
    Allow,
    /// It is not; the reasons say why.
    Deny,
}

/// One attestation and what its verification established.
#[derive(Debug, Clone)]
pub struct AttestationOutcome {
    /// `sha256:<hex>` of the bundle.
    pub bundle_digest: String,
    /// The complete verification report.
    pub report: Report,
    /// The indexed ID of the verified signer (only when verified).
    pub signer_id: Option<String>,
    /// The in-toto predicate type (DSSE attestations).
    pub predicate_type: Option<String>,
}

/// A decision and everything it rested on.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `allow` or `deny`.
    pub decision: Decision,
    /// Why: the checks that failed, the Rego module's `deny` messages, or what passed.
    pub reasons: Vec<String>,
    /// Each attestation, in the order given.
    pub attestations: Vec<AttestationOutcome>,
}

impl Evaluation {
    /// The IDs of the signers the decision relied on (verified ones only), sorted.
    pub fn signer_ids(&self) -> Vec<String> {
        let ids: BTreeSet<String> = self
            .attestations
            .iter()
            .filter_map(|a| a.signer_id.clone())
            .collect();
        ids.into_iter().collect()
    }

    /// The predicate types of the verified attestations, sorted.
    pub fn predicate_types(&self) -> Vec<String> {
        let types: BTreeSet<String> = self
            .attestations
            .iter()
            .filter(|a| a.report.valid)
            .filter_map(|a| a.predicate_type.clone())
            .collect();
        types.into_iter().collect()
    }
}

/// Decides whether `artifact` is acceptable under `policy`, given `bundles`.
pub fn evaluate(
    trust: &TrustMaterial,
    policy_name: &str,
    policy: &Policy,
    artifact: &ArtifactDigest,
    bundles: &[Vec<u8>],
) -> Evaluation {
    let thresholds = Thresholds {
        tlog_entries: policy.document.transparency.tlog_entries,
        timestamps: policy.document.transparency.timestamps,
    };
    let attestations: Vec<AttestationOutcome> = bundles
        .iter()
        .map(|bundle| {
            let report = verification::verify(
                trust,
                &Request {
                    bundle,
                    artifact: Artifact::Digest(artifact),
                    signer: &policy.signers,
                    thresholds,
                },
            );
            let signer_id = match &report.signer {
                Some(SignerSummary::Certificate { san, issuer, .. }) => {
                    Some(identity_id(issuer.as_deref().unwrap_or_default(), san))
                }
                Some(SignerSummary::Key { fingerprint }) => Some(key_id(fingerprint)),
                None => None,
            };
            let predicate_type = match &report.content {
                Some(ContentSummary::DsseEnvelope { predicate_type, .. }) => predicate_type.clone(),
                _ => None,
            };
            AttestationOutcome {
                bundle_digest: bundle_digest(bundle),
                report,
                signer_id,
                predicate_type,
            }
        })
        .collect();
    let mut reasons = Vec::new();
    if attestations.is_empty() {
        reasons.push("no attestations were given".to_owned());
    }
    for (i, a) in attestations.iter().enumerate() {
        if let Some(error) = &a.report.error {
            reasons.push(format!("attestation {i}: {error}"));
        }
    }
    let attested: BTreeSet<&str> = attestations
        .iter()
        .filter(|a| a.report.valid)
        .filter_map(|a| a.predicate_type.as_deref())
        .collect();
    for required in &policy.document.predicate_types {
        if !attested.contains(required.as_str()) {
            reasons.push(format!(
                "predicate type {required} is required, and no verified attestation has it"
            ));
        }
    }
    // The Rego module sees only what verified, and only when everything else passed.
    if reasons.is_empty()
        && let Some(rego) = &policy.document.rego
    {
        let input = rego_input(policy_name, policy, artifact, bundles, &attestations);
        match run_rego(rego, input) {
            Ok(denials) => reasons.extend(denials),
            Err(e) => reasons.push(format!("the policy's Rego module failed: {e}")),
        }
    }
    if reasons.is_empty() {
        let mut allowed = vec![format!(
            "{} attestation(s) verified against the policy's signers",
            attestations.len()
        )];
        if !policy.document.predicate_types.is_empty() {
            allowed.push(format!(
                "required predicate types attested: {}",
                policy.document.predicate_types.join(", ")
            ));
        }
        if policy.document.rego.is_some() {
            allowed.push("the policy's Rego module allows it".to_owned());
        }
        return Evaluation {
            decision: Decision::Allow,
            reasons: allowed,
            attestations,
        };
    }
    Evaluation {
        decision: Decision::Deny,
        reasons,
        attestations,
    }
}

/// The Rego input document (`docs/policies.md`): the artifact, the policy, and every
/// verified attestation with its signer, statement, log entries and signing time.
pub fn rego_input(
    policy_name: &str,
    policy: &Policy,
    artifact: &ArtifactDigest,
    bundles: &[Vec<u8>],
    attestations: &[AttestationOutcome],
) -> Value {
    let verified: Vec<Value> = attestations
        .iter()
        .zip(bundles)
        .filter(|(a, _)| a.report.valid)
        .map(|(a, bundle)| {
            json!({
                "bundle_digest": a.bundle_digest,
                "signer": a.report.signer,
                "signer_id": a.signer_id,
                "predicate_type": a.predicate_type,
                "statement": statement_of(bundle),
                "content": a.report.content,
                "signing_time": a.report.signing_time,
                "log_entries": a.report.log_entries,
            })
        })
        .collect();
    json!({
        "artifact": {"digest": artifact.to_string()},
        "policy": {"name": policy_name, "hash": policy.hash},
        "attestations": verified,
    })
}

/// The in-toto statement of a DSSE bundle, parsed; `null` for a message signature.
fn statement_of(bundle: &[u8]) -> Value {
    use base64::Engine as _;
    let Ok(b) = serde_json::from_slice::<Value>(bundle) else {
        return Value::Null;
    };
    b.pointer("/dsseEnvelope/payload")
        .and_then(Value::as_str)
        .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null)
}

/// Runs the module over `input`: its denials (`data.provd.deny` messages, or one saying
/// `data.provd.allow` is not true), empty when it allows.
fn run_rego(rego: &str, input: Value) -> Result<Vec<String>, PolicyError> {
    let mut engine = rego_engine(rego)?;
    let input = regorus::Value::from_json_str(&input.to_string())
        .map_err(|e| PolicyError::Rego(format!("input: {e}")))?;
    engine.set_input(input);
    let allow = engine
        .eval_rule("data.provd.allow".into())
        .map_err(|e| PolicyError::Rego(e.to_string()))?;
    let deny = engine
        .eval_rule("data.provd.deny".into())
        .map_err(|e| PolicyError::Rego(e.to_string()))?;
    let mut denials: Vec<String> = match deny.as_set() {
        Ok(set) => set
            .iter()
            .map(|v| match v.as_string() {
                Ok(s) => format!("rego: {s}"),
                Err(_) => format!("rego: {}", v.to_json_str().unwrap_or_default()),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    if denials.is_empty() && allow != regorus::Value::from(true) {
        denials.push("rego: data.provd.allow is not true".to_owned());
    }
    Ok(denials)
}

/// What a verdict decided by provd says it is, so an explanation can tell provd's verdicts
/// from those other systems wrote through the entries API.
pub const VERDICT_KIND: &str = "provd.evaluation/v1";

/// The content type of the evidence a verdict keeps: its attestations.
pub const ATTESTATIONS_CONTENT_TYPE: &str = "application/vnd.provd.attestations+json";

/// One attestation in the form verdicts are decided, hashed and kept in: the RFC 8785
/// canonical JSON of the bundle when it is JSON (so the same bundle written with other
/// spacing or key order is the same attestation), else a JSON string of its text, so the
/// evidence stays one JSON document (such an attestation never verifies).
pub fn canonical_attestation(bundle: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<Value>(bundle)
        .ok()
        .and_then(|v| serde_json_canonicalizer::to_vec(&v).ok())
        .unwrap_or_else(|| serde_json::to_vec(&String::from_utf8_lossy(bundle)).unwrap_or_default())
}

/// The evidence of a verdict: the JSON array of its attestations, each canonical, in the
/// order given. Its Merkle root is the entry's `proof_root`.
pub fn attestations_evidence(bundles: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bundles.iter().map(Vec::len).sum::<usize>() + 2);
    out.push(b'[');
    for (i, b) in bundles.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.push(b']');
    out
}

/// The verdict document a decision is cached as (the entry's `verdict`): the decision and
/// its reasons, the policy, the VeriKey inputs, the identities and predicate types it relied
/// on, each attestation's outcome with its log entries, and the ledger position when it was
/// decided.
#[allow(clippy::too_many_arguments)]
pub fn verdict_document(
    evaluation: &Evaluation,
    policy_name: &str,
    policy_version: i64,
    policy: &Policy,
    artifact: &ArtifactDigest,
    inputs: &super::verikey::VeriKeyInputs,
    ledger_position: i64,
    evaluated_at: &str,
) -> Value {
    let attestations: Vec<Value> = evaluation
        .attestations
        .iter()
        .map(|a| {
            json!({
                "bundle_digest": a.bundle_digest,
                "valid": a.report.valid,
                "error": a.report.error,
                "failed_check": a.report.failed_check,
                "signer": a.report.signer,
                "signer_id": a.signer_id,
                "predicate_type": a.predicate_type,
                "signing_time": a.report.signing_time,
                "log_entries": a.report.log_entries,
            })
        })
        .collect();
    json!({
        "kind": VERDICT_KIND,
        "decision": evaluation.decision,
        "reasons": evaluation.reasons,
        "policy": {"name": policy_name, "version": policy_version, "hash": policy.hash},
        "artifact_digest": artifact.to_string(),
        "inputs": inputs,
        "identities": evaluation.signer_ids(),
        "predicate_types": evaluation.predicate_types(),
        "attestations": attestations,
        "ledger_position": ledger_position,
        "evaluated_at": evaluated_at,
    })
}

/// One check of an offline replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayCheck {
    /// What was checked.
    pub check: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Replays an explanation (`GET /api/v1/provcache/entries/{veri_key}/explain`) offline: the
/// policy's hash from its document, the signer-set hash from the attestations, the VeriKey
/// from its inputs, the evidence root from the attestations, and the decision and the
/// identities by evaluating the policy again against `trust`.
pub fn replay(explanation: &Value, trust: &TrustMaterial) -> Vec<ReplayCheck> {
    let mut checks = Vec::new();
    let mut check = |check: &'static str, ok: bool, detail: String| {
        checks.push(ReplayCheck { check, ok, detail })
    };
    let verdict = &explanation["verdict"];
    let policy = match Policy::from_document(
        serde_json::from_value(explanation["policy"]["document"].clone()).unwrap_or(
            PolicyDocument {
                identities: Vec::new(),
                predicate_types: Vec::new(),
                transparency: Transparency::default(),
                rego: None,
            },
        ),
    ) {
        Ok(p) => p,
        Err(e) => {
            check(
                "policy",
                false,
                format!("the policy document does not load: {e}"),
            );
            return checks;
        }
    };
    let recorded_hash = verdict["policy"]["hash"].as_str().unwrap_or_default();
    check(
        "policy hash",
        policy.hash == recorded_hash,
        format!(
            "the document hashes to {}, the verdict names {recorded_hash}",
            policy.hash
        ),
    );
    let bundles: Vec<Vec<u8>> = explanation["attestations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| canonical_attestation(&serde_json::to_vec(b).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let inputs: Option<super::verikey::VeriKeyInputs> =
        serde_json::from_value(explanation["inputs"].clone()).ok();
    let Some(inputs) = inputs else {
        check(
            "inputs",
            false,
            "the explanation has no VeriKey inputs".into(),
        );
        return checks;
    };
    let set_hash = signer_set_hash(&bundles);
    check(
        "signer set",
        set_hash == inputs.signer_set_hash,
        format!(
            "the attestations hash to {set_hash}, the inputs name {}",
            inputs.signer_set_hash
        ),
    );
    let key = inputs.veri_key().unwrap_or_default();
    let recorded_key = explanation["veri_key"].as_str().unwrap_or_default();
    check(
        "verikey",
        key == recorded_key,
        format!("the inputs give {key}, the entry is {recorded_key}"),
    );
    let chunk_size = explanation["evidence"]["chunk_size"]
        .as_u64()
        .unwrap_or(65536);
    let evidence = attestations_evidence(&bundles);
    let root = super::evidence::EvidenceLimits::new(chunk_size, u64::MAX / chunk_size.max(1))
        .and_then(|limits| super::evidence::chunk_all(limits, ATTESTATIONS_CONTENT_TYPE, &evidence))
        .map(|(_, manifest)| manifest.proof_root)
        .unwrap_or_default();
    let recorded_root = explanation["evidence"]["proof_root"]
        .as_str()
        .unwrap_or_default();
    check(
        "evidence root",
        root == recorded_root,
        format!("the attestations chunk to {root}, the entry's proof root is {recorded_root}"),
    );
    let artifact: Option<ArtifactDigest> = inputs.source_artifact_digest.parse().ok();
    let Some(artifact) = artifact else {
        check(
            "artifact",
            false,
            "the inputs' artifact digest does not parse".into(),
        );
        return checks;
    };
    let name = explanation["policy"]["name"].as_str().unwrap_or_default();
    let again = evaluate(trust, name, &policy, &artifact, &bundles);
    let decision = serde_json::to_value(again.decision).unwrap_or_default();
    check(
        "decision",
        decision == verdict["decision"],
        format!(
            "evaluated again: {decision}, recorded: {}",
            verdict["decision"]
        ),
    );
    let ids = serde_json::to_value(again.signer_ids()).unwrap_or_default();
    check(
        "identities",
        ids == verdict["identities"],
        format!(
            "evaluated again: {ids}, recorded: {}",
            verdict["identities"]
        ),
    );
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra: Value) -> Vec<u8> {
        let mut d = json!({"identities": [{"issuer": "https://issuer", "san": "me@example.com"}]});
        for (k, v) in extra.as_object().unwrap() {
            d[k] = v.clone();
        }
        serde_json::to_vec(&d).unwrap()
    }

    #[test]
    fn the_hash_is_of_the_canonical_form() {
        let a =
            Policy::from_json(br#"{"identities":[{"san":"a","issuer":"b"}],"predicate_types":[]}"#)
                .unwrap();
        let b = Policy::from_json(
            br#"{ "predicate_types": [], "identities": [ {"issuer":"b", "san":"a"} ] }"#,
        )
        .unwrap();
        assert_eq!(a.hash, b.hash);
        assert!(a.hash.starts_with("sha256:") && a.hash.len() == 71);
        let c = Policy::from_json(br#"{"identities":[{"san":"a","issuer":"c"}]}"#).unwrap();
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn bad_documents_name_the_field() {
        for (bad, says) in [
            (br#"{"identities":[]}"#.to_vec(), "`identities` is empty"),
            (
                doc(json!({"identities": [{"san": "x"}]})),
                "identities[0].issuer",
            ),
            (
                doc(json!({"identities": [{"issuer": "i", "san_regexp": "("}]})),
                "identities[0].san_regexp",
            ),
            (
                doc(json!({"identities": [{"key": "not a key"}]})),
                "identities[0].key",
            ),
            (
                doc(json!({"identities": [{"issuer": "i", "san": "a\u{0}b"}]})),
                "NUL",
            ),
            (
                doc(json!({"transparency": {"tlog_entries": 0}})),
                "transparency",
            ),
            (
                doc(json!({"rego": "package other\nallow := true"})),
                "package",
            ),
            (
                doc(json!({"rego": "package provd\nallow := {"})),
                "does not compile",
            ),
            (doc(json!({"surprise": 1})), "unknown field"),
        ] {
            let err = Policy::from_json(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn rego_decides_with_its_messages() {
        let rego = r#"
package provd
default allow := false
allow if input.artifact.digest == "sha256:aa"
deny contains msg if {
  input.artifact.digest == "sha256:bb"
  msg := "bb is banned"
}
"#;
        let input = |d: &str| json!({"artifact": {"digest": d}, "attestations": []});
        assert_eq!(
            run_rego(rego, input("sha256:aa")).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            run_rego(rego, input("sha256:bb")).unwrap(),
            vec!["rego: bb is banned"]
        );
        assert_eq!(
            run_rego(rego, input("sha256:cc")).unwrap(),
            vec!["rego: data.provd.allow is not true"]
        );
    }

    #[test]
    fn names_and_hashes_have_one_spelling() {
        for good in ["a", "baseline", "Team-1.prod_v2", &"x".repeat(MAX_NAME)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            &"x".repeat(MAX_NAME + 1),
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("policy name"), "{err}");
        }
        let h = Policy::from_json(&doc(json!({}))).unwrap().hash;
        assert!(is_policy_hash(&h));
        assert!(!is_policy_hash(
            &h.to_uppercase().replace("SHA256", "sha256")
        ));
        assert!(!is_policy_hash("sha256:abc"));
        assert!(!is_policy_hash(&h.replace("sha256:", "sha512:")));
    }

    #[test]
    fn identity_ids_are_fixed_length_and_distinct() {
        let a = identity_id("https://issuer", "me");
        assert_eq!(a.len(), "identity:sha256:".len() + 64);
        assert_ne!(a, identity_id("https://issuer", "you"));
        assert_ne!(identity_id("ab", "c"), identity_id("a", "bc"));
        assert_eq!(key_id("sha256:ab"), "key:sha256:ab");
    }

    #[test]
    fn the_signer_set_hash_ignores_order() {
        let a = vec![b"one".to_vec(), b"two".to_vec()];
        let b = vec![b"two".to_vec(), b"one".to_vec()];
        assert_eq!(signer_set_hash(&a), signer_set_hash(&b));
        assert_ne!(signer_set_hash(&a), signer_set_hash(&a[..1]));
    }
}
