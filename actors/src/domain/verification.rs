//! Complete verification of Sigstore bundles (v0.1–v0.3), offline, as the Sigstore client
//! specification describes it, with the reference clients' verdict on every conformance case.
//!
//! The cryptography is `sigstore-verify` (sigstore-rust): the Fulcio certificate chain to a
//! certificate authority of the trusted root valid at the signing time, the SCT against the
//! trusted CT logs, RFC 3161 timestamps against the trusted timestamp authorities, the
//! transparency-log entries (inclusion proof, signed checkpoint, SET), the signature over the
//! artifact or the DSSE PAE, the artifact bound to the bundle (message digest, or a subject of
//! the in-toto statement), and the log entry bound to the bundle's content. It was chosen over
//! extending provd's own code because it already gives the expected verdict on all 70
//! sigstore-conformance `bundle-verify` cases, runs without a network, and uses the same
//! aws-lc-rs provider as the rest of provd (see ARCHITECTURE.md).
//!
//! On top of it, this module owns what a provd user asks for: the identity policy (the
//! certificate's SAN exactly or by an anchored regular expression, the OIDC issuer, the GitHub
//! workflow claims), managed keys with the bundle's key hint checked, thresholds of verified
//! log entries and timestamps, and a [`Report`] that names every check, the one that failed,
//! the verified signer, the signing time and the log entries. The log entries are described by
//! provd's own transparency-log code ([`super::sigstore`], [`super::receipt`]), the same code
//! that verifies receipts and monitors logs; a test checks that both agree on every case.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_NO_PAD};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sigstore_verify as sv;

use super::entry_binding::BundleContent;
use super::keys::PublicKey;
use super::receipt::Receipt;
use super::sigstore;

/// The checks a verification runs, in the order a reader thinks of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The bundle parses and is of a supported version and shape.
    Bundle,
    /// The trusted root parses and can be used.
    TrustedRoot,
    /// A managed key: the caller's key, and the bundle's key hint.
    Key,
    /// The signing certificate chains to a trusted CA valid at the signing time.
    Certificate,
    /// The certificate's signed certificate timestamp verifies with a trusted CT log.
    Sct,
    /// RFC 3161 timestamps verify, and a trusted signing time exists.
    Timestamp,
    /// Every log entry is included in a trusted log and is about this bundle's content.
    TransparencyLog,
    /// The signature verifies over the artifact or the DSSE PAE.
    Signature,
    /// The bundle is about this artifact.
    Artifact,
    /// The certificate's identity satisfies the policy.
    Identity,
    /// Enough log entries and timestamps verified.
    Threshold,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 11] = [
        Check::Bundle,
        Check::TrustedRoot,
        Check::Key,
        Check::Certificate,
        Check::Sct,
        Check::Timestamp,
        Check::TransparencyLog,
        Check::Signature,
        Check::Artifact,
        Check::Identity,
        Check::Threshold,
    ];

    /// The name used in messages ("signature check failed: …").
    pub fn name(self) -> &'static str {
        match self {
            Check::Bundle => "bundle",
            Check::TrustedRoot => "trusted root",
            Check::Key => "key",
            Check::Certificate => "certificate",
            Check::Sct => "signed certificate timestamp",
            Check::Timestamp => "timestamp",
            Check::TransparencyLog => "transparency log",
            Check::Signature => "signature",
            Check::Artifact => "artifact",
            Check::Identity => "identity",
            Check::Threshold => "threshold",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a bundle was refused: the check that failed and what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerificationError {
    /// The bundle is malformed, of an unknown version, or has no content.
    #[error("bundle check failed: {0}")]
    Bundle(String),
    /// The trusted root is malformed or unusable.
    #[error("trusted root check failed: {0}")]
    TrustedRoot(String),
    /// The managed key is missing, malformed, or not the one the bundle names.
    #[error("key check failed: {0}")]
    Key(String),
    /// The signing certificate is malformed, does not chain to a trusted CA, or was not
    /// valid at the signing time.
    #[error("certificate check failed: {0}")]
    Certificate(String),
    /// The certificate's SCT is missing or does not verify.
    #[error("signed certificate timestamp check failed: {0}")]
    Sct(String),
    /// An RFC 3161 timestamp does not verify, or no trusted signing time exists.
    #[error("timestamp check failed: {0}")]
    Timestamp(String),
    /// A log entry is not included in a trusted log, or is not about this bundle.
    #[error("transparency log check failed: {0}")]
    TransparencyLog(String),
    /// The signature does not verify.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// The bundle is not about this artifact.
    #[error("artifact check failed: {0}")]
    Artifact(String),
    /// The certificate's identity does not satisfy the policy; the message names the claim.
    #[error("identity check failed: {0}")]
    Identity(String),
    /// Fewer log entries or timestamps verified than required.
    #[error("threshold check failed: {0}")]
    Threshold(String),
}

impl VerificationError {
    /// The check that failed.
    pub fn check(&self) -> Check {
        match self {
            VerificationError::Bundle(_) => Check::Bundle,
            VerificationError::TrustedRoot(_) => Check::TrustedRoot,
            VerificationError::Key(_) => Check::Key,
            VerificationError::Certificate(_) => Check::Certificate,
            VerificationError::Sct(_) => Check::Sct,
            VerificationError::Timestamp(_) => Check::Timestamp,
            VerificationError::TransparencyLog(_) => Check::TransparencyLog,
            VerificationError::Signature(_) => Check::Signature,
            VerificationError::Artifact(_) => Check::Artifact,
            VerificationError::Identity(_) => Check::Identity,
            VerificationError::Threshold(_) => Check::Threshold,
        }
    }
}

/// Maps a `sigstore-verify` failure to the check it belongs to.
fn from_crate(e: sv::Error) -> VerificationError {
    use sv::bundle::Error as B;
    use sv::{CertificateError as C, Error as E};
    let detail = e.to_string();
    match e {
        E::IdentityMismatch { .. } | E::IssuerMismatch { .. } => {
            VerificationError::Identity(detail)
        }
        E::SignatureInvalid(d) => VerificationError::Signature(d),
        E::ArtifactMismatch(d) | E::UnsupportedArtifact(d) => VerificationError::Artifact(d),
        E::ArtifactRead(_) => VerificationError::Artifact(detail),
        E::Certificate(C::Sct(d)) => VerificationError::Sct(d),
        E::Certificate(_) => VerificationError::Certificate(detail),
        E::TransparencyLog(_) => VerificationError::TransparencyLog(detail),
        E::Timestamp(_) => VerificationError::Timestamp(detail),
        E::Bundle(
            b @ (B::MissingInclusionPromise(_)
            | B::MissingInclusionProof(_)
            | B::MissingCheckpoint
            | B::LogIndexOutOfRange { .. }
            | B::CheckpointRootMismatch),
        ) => VerificationError::TransparencyLog(b.to_string()),
        E::Bundle(b @ (B::MissingTimestamp | B::MissingSigningTimeEvidence)) => {
            VerificationError::Timestamp(b.to_string())
        }
        E::Bundle(b) => VerificationError::Bundle(b.to_string()),
        E::InvalidTrustRoot(_) | E::TrustRoot(_) | E::TrustedCertificate(_) => {
            VerificationError::TrustedRoot(detail)
        }
        E::Crypto(_) => VerificationError::Signature(detail),
        _ => VerificationError::Bundle(detail),
    }
}

/// A trusted root, prepared once and used for many verifications.
pub struct TrustMaterial {
    verifier: sv::Verifier,
    logs: sigstore::TrustedRoot,
}

impl fmt::Debug for TrustMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustMaterial")
            .field("tlogs", &self.logs.tlogs.len())
            .finish_non_exhaustive()
    }
}

impl TrustMaterial {
    /// Parses and prepares a `trusted_root.json`: its CAs, CT logs, transparency logs and
    /// timestamp authorities. A malformed root (for example a validity window without its
    /// start) is refused here, before any bundle is read.
    pub fn from_json(json: &[u8]) -> Result<Self, VerificationError> {
        let text = std::str::from_utf8(json)
            .map_err(|_| VerificationError::TrustedRoot("not UTF-8 JSON".into()))?;
        let root = sv::trust_root::TrustedRoot::from_json(text)
            .map_err(|e| VerificationError::TrustedRoot(e.to_string()))?;
        let verifier =
            sv::Verifier::new(&root).map_err(|e| VerificationError::TrustedRoot(e.to_string()))?;
        let logs = sigstore::TrustedRoot::from_json(json)
            .map_err(|e| VerificationError::TrustedRoot(e.to_string()))?;
        Ok(TrustMaterial { verifier, logs })
    }

    /// The transparency logs of this root, as provd's own log code reads them.
    pub fn logs(&self) -> &sigstore::TrustedRoot {
        &self.logs
    }
}

/// A hash algorithm an artifact digest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The prefix of the `alg:hex` spelling.
    pub fn prefix(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    fn len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 32,
            DigestAlgorithm::Sha384 => 48,
            DigestAlgorithm::Sha512 => 64,
        }
    }

    fn to_crate(self) -> sv::types::HashAlgorithm {
        match self {
            DigestAlgorithm::Sha256 => sv::types::HashAlgorithm::Sha2256,
            DigestAlgorithm::Sha384 => sv::types::HashAlgorithm::Sha2384,
            DigestAlgorithm::Sha512 => sv::types::HashAlgorithm::Sha2512,
        }
    }
}

/// An artifact's digest, `sha256:<hex>` (or `sha384:`, `sha512:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDigest {
    /// The algorithm.
    pub algorithm: DigestAlgorithm,
    /// The digest bytes, of the algorithm's length.
    pub value: Vec<u8>,
}

impl FromStr for ArtifactDigest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (alg, hex_value) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not `sha256:<hex>` or `sha512:<hex>`"))?;
        let algorithm = match alg {
            "sha256" => DigestAlgorithm::Sha256,
            "sha384" => DigestAlgorithm::Sha384,
            "sha512" => DigestAlgorithm::Sha512,
            other => return Err(format!("unsupported digest algorithm {other:?}")),
        };
        let value = hex::decode(hex_value)
            .ok()
            .filter(|v| {
                v.len() == algorithm.len() && hex_value.bytes().all(|b| !b.is_ascii_uppercase())
            })
            .ok_or_else(|| {
                format!(
                    "{alg} digest must be {} lowercase hex digits",
                    algorithm.len() * 2
                )
            })?;
        Ok(ArtifactDigest { algorithm, value })
    }
}

impl fmt::Display for ArtifactDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.algorithm.prefix(),
            hex::encode(&self.value)
        )
    }
}

/// What is verified: the artifact's bytes, or its digest.
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    /// The artifact itself.
    Bytes(&'a [u8]),
    /// The artifact's digest (for DSSE, one of the statement's subjects).
    Digest(&'a ArtifactDigest),
}

/// The DER SubjectPublicKeyInfo of a PEM public key (`-----BEGIN PUBLIC KEY-----`), for a
/// managed-key policy. Any key type the verification supports (ECDSA, Ed25519, RSA) is
/// accepted here; a key that verification cannot use fails its key check.
pub fn key_from_pem(pem: &str) -> Result<Vec<u8>, VerificationError> {
    if let Ok(key) = PublicKey::from_pem(pem) {
        return Ok(key.to_spki_der());
    }
    match super::entry_binding::pem_block(pem) {
        Some((label, der)) if label == "PUBLIC KEY" => Ok(der),
        _ => Err(VerificationError::Key(
            "not a PEM public key (-----BEGIN PUBLIC KEY----- and a base64 body)".into(),
        )),
    }
}

/// How a claim must match: exactly, or by a regular expression over the whole value.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The value equals this string.
    Exact(String),
    /// The whole value matches this expression (anchored at both ends).
    Regex(regex::Regex),
}

impl Matcher {
    /// A regular expression that must match the whole value: `^(?:re)$`.
    pub fn regex(pattern: &str) -> Result<Self, String> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Matcher::Regex)
            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
    }

    /// Whether `value` satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(expected) => value == expected,
            Matcher::Regex(re) => re.is_match(value),
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => format!("{s:?}"),
            Matcher::Regex(re) => {
                let s = re.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("a match of /{inner}/")
            }
        }
    }
}

/// The GitHub workflow claims a policy may require (Fulcio certificate extensions). Each
/// one given must match exactly; those left `None` are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowClaims {
    /// The source repository, `owner/repo` or its full URL.
    pub repository: Option<String>,
    /// The source ref, e.g. `refs/heads/main`.
    pub git_ref: Option<String>,
    /// The workflow that signed: its path in the repository (`.github/workflows/release.yml`)
    /// or its full URL, with or without `@ref`.
    pub workflow: Option<String>,
    /// The event that triggered the build, e.g. `push`.
    pub trigger: Option<String>,
    /// The runner environment, `github-hosted` or `self-hosted`.
    pub runner_environment: Option<String>,
}

/// Who must have signed, for a certificate-signed bundle.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    /// The certificate's subject alternative name (email or URI).
    pub san: Matcher,
    /// The OIDC issuer recorded in the certificate.
    pub issuer: Matcher,
    /// Workflow claims, when the caller asks for them.
    pub workflow: WorkflowClaims,
}

/// The signer a bundle must come from.
#[derive(Debug, Clone)]
pub enum SignerPolicy {
    /// A Fulcio certificate whose identity matches.
    Identity(IdentityPolicy),
    /// A managed key, as DER SubjectPublicKeyInfo.
    Key(Vec<u8>),
    /// Any one of these (a policy trusting several identities and keys).
    AnyOf(Vec<SignerPolicy>),
}

impl SignerPolicy {
    /// The identities and keys this policy trusts, flattened.
    fn split(&self) -> (Vec<&IdentityPolicy>, Vec<&[u8]>) {
        let mut identities = Vec::new();
        let mut keys = Vec::new();
        let mut stack = vec![self];
        while let Some(policy) = stack.pop() {
            match policy {
                SignerPolicy::Identity(i) => identities.push(i),
                SignerPolicy::Key(k) => keys.push(k.as_slice()),
                SignerPolicy::AnyOf(all) => stack.extend(all.iter().rev()),
            }
        }
        (identities, keys)
    }
}

/// How many log entries and timestamps must verify. The defaults are the reference clients':
/// one log entry and one trusted time (an integrated time vouched for by a log, or an
/// RFC 3161 timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Verified transparency-log entries required.
    pub tlog_entries: usize,
    /// Verified timestamps required.
    pub timestamps: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            tlog_entries: 1,
            timestamps: 1,
        }
    }
}

/// One verification.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The bundle JSON.
    pub bundle: &'a [u8],
    /// The artifact or its digest.
    pub artifact: Artifact<'a>,
    /// Who must have signed.
    pub signer: &'a SignerPolicy,
    /// How much evidence must verify.
    pub thresholds: Thresholds,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The check ran and passed.
    Passed,
    /// The check ran and failed.
    Failed,
    /// The check does not apply to this bundle (e.g. SCTs for a managed key).
    NotApplicable,
    /// Verification stopped at an earlier failure, so this check's result is unknown.
    NotChecked,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The check.
    pub check: Check,
    /// Its outcome.
    pub status: Status,
    /// What it found.
    pub detail: String,
}

/// What the bundle signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContentSummary {
    /// A message signature over an artifact.
    MessageSignature {
        /// The artifact digest the bundle records, `alg:hex`.
        digest: Option<String>,
    },
    /// A DSSE envelope.
    DsseEnvelope {
        /// The payload type.
        payload_type: String,
        /// The in-toto predicate type, when the payload is an in-toto statement.
        predicate_type: Option<String>,
        /// The statement's subjects: name and digests (`alg:hex`).
        subjects: Vec<Subject>,
    },
}

/// One subject of an in-toto statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// The subject's name.
    pub name: String,
    /// Its digests, `alg:hex`.
    pub digests: Vec<String>,
}

/// The verified signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignerSummary {
    /// A Fulcio certificate.
    Certificate {
        /// The subject alternative name (email or URI).
        san: String,
        /// The OIDC issuer.
        issuer: Option<String>,
        /// Start of the certificate's validity (RFC 3339).
        not_before: String,
        /// End of the certificate's validity (RFC 3339).
        not_after: String,
        /// The GitHub workflow claims, when the certificate has them.
        workflow: Option<Box<WorkflowSummary>>,
    },
    /// A managed key.
    Key {
        /// `sha256:<hex>` of the key's DER SubjectPublicKeyInfo.
        fingerprint: String,
    },
}

/// The CI claims of a certificate, as recorded by Fulcio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowSummary {
    /// Source repository URL.
    pub repository: Option<String>,
    /// Source ref.
    pub git_ref: Option<String>,
    /// Source commit.
    pub commit: Option<String>,
    /// The workflow that signed (build signer URI).
    pub workflow: Option<String>,
    /// The triggering event.
    pub trigger: Option<String>,
    /// The runner environment.
    pub runner_environment: Option<String>,
}

/// One transparency-log entry of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntrySummary {
    /// The log's base URL from the trusted root.
    pub log_url: Option<String>,
    /// Hex of the log ID.
    pub log_id: String,
    /// The (virtual, for Rekor v1) log index.
    pub log_index: u64,
    /// The entry UUID: hex of the RFC 6962 leaf hash of its canonical body.
    pub uuid: String,
    /// Kind and version of the body, e.g. `hashedrekord 0.0.1`.
    pub kind: Option<String>,
    /// The integrated time (Rekor v1), RFC 3339.
    pub integrated_time: Option<String>,
    /// The checkpoint the inclusion proof leads to: origin and size.
    pub checkpoint: Option<CheckpointSummary>,
}

/// A checkpoint, briefly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointSummary {
    /// The origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
}

/// Everything a verification found, valid or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether every check passed.
    pub valid: bool,
    /// The failure, one line (`<check> check failed: …`), when invalid.
    pub error: Option<String>,
    /// The check that failed, when invalid.
    pub failed_check: Option<Check>,
    /// Every check with its outcome.
    pub checks: Vec<CheckResult>,
    /// The bundle's media type.
    pub media_type: Option<String>,
    /// What the bundle signs.
    pub content: Option<ContentSummary>,
    /// The verified signer (only when valid).
    pub signer: Option<SignerSummary>,
    /// The earliest verified time, RFC 3339 (only when valid).
    pub signing_time: Option<String>,
    /// Every verified time, RFC 3339 (only when valid).
    pub verified_times: Vec<String>,
    /// The bundle's log entries (verified only when valid).
    pub log_entries: Vec<LogEntrySummary>,
}

impl Report {
    /// A report for a verification that failed before or at `error`.
    pub fn refused(error: VerificationError) -> Self {
        let failed = error.check();
        Report {
            valid: false,
            error: Some(error.to_string()),
            failed_check: Some(failed),
            checks: Check::ALL
                .iter()
                .map(|&check| CheckResult {
                    check,
                    status: if check == failed {
                        Status::Failed
                    } else {
                        Status::NotChecked
                    },
                    detail: if check == failed {
                        error.to_string()
                    } else {
                        "not checked: verification stopped at the first failure".into()
                    },
                })
                .collect(),
            media_type: None,
            content: None,
            signer: None,
            signing_time: None,
            verified_times: Vec::new(),
            log_entries: Vec::new(),
        }
    }

    /// The failure, when invalid.
    pub fn failure(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// Verifies a bundle completely and reports every check. Never panics on any input.
pub fn verify(trust: &TrustMaterial, request: &Request<'_>) -> Report {
    let own = sigstore::Bundle::from_json(request.bundle).ok();
    let mut report = match verify_inner(trust, request, own.as_ref()) {
        Ok(report) => report,
        Err(e) => Report::refused(e),
    };
    if let Some(own) = &own {
        report.media_type = Some(own.media_type.clone());
        report.content = own.content.as_ref().map(summarise_content);
        report.log_entries = own
            .tlog_entries
            .iter()
            .filter_map(|tle| summarise_entry(tle, trust.logs()))
            .collect();
    }
    report
}

fn verify_inner(
    trust: &TrustMaterial,
    request: &Request<'_>,
    own: Option<&sigstore::Bundle>,
) -> Result<Report, VerificationError> {
    let text = std::str::from_utf8(request.bundle)
        .map_err(|_| VerificationError::Bundle("not UTF-8 JSON".into()))?;
    let bundle =
        sv::types::Bundle::from_json(text).map_err(|e| VerificationError::Bundle(e.to_string()))?;
    let key_hint = match &bundle.verification_material.content {
        sv::types::bundle::VerificationMaterialContent::PublicKey(id) => Some(id.hint.clone()),
        _ => None,
    };
    let digest_input;
    let artifact: sv::types::Artifact<'_> = match request.artifact {
        Artifact::Bytes(b) => b.into(),
        Artifact::Digest(d) => {
            digest_input = sv::types::ArtifactDigest::new(d.algorithm.to_crate(), d.value.clone())
                .map_err(|e| VerificationError::Artifact(e.to_string()))?;
            digest_input.into()
        }
    };
    let (identities, keys) = request.signer.split();
    let mut key_used: Option<(&[u8], String)> = None;
    let result = if let Some(hint) = &key_hint {
        if keys.is_empty() {
            return Err(VerificationError::Key(format!(
                "the bundle is signed with a managed key (hint {hint:?}), not a certificate; \
                 verify it with the key"
            )));
        }
        // Each trusted key in turn; the first that verifies the bundle is the signer.
        let mut last = None;
        let mut found = None;
        for der in &keys {
            let detail = match check_key_hint(der, Some(hint)) {
                Ok(detail) => detail,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let key = sv::types::DerPublicKey::new(der.to_vec());
            match trust.verifier.verify(
                artifact.clone(),
                &bundle,
                &sv::PublicKeyVerificationPolicy::new(key),
            ) {
                Ok(result) => {
                    key_used = Some((der, detail));
                    found = Some(result);
                    break;
                }
                Err(e) => last = Some(from_crate(e)),
            }
        }
        match found {
            Some(result) => result,
            None => {
                return Err(match (last, keys.len()) {
                    (Some(e), 1) => e,
                    (Some(e), n) => VerificationError::Key(format!(
                        "none of the {n} trusted keys verifies the bundle (the last: {e})"
                    )),
                    (None, _) => VerificationError::Key("no trusted key".into()),
                });
            }
        }
    } else {
        if identities.is_empty() {
            return Err(VerificationError::Key(
                "the bundle is signed with a certificate, not a managed key; verify it \
                 with an identity and issuer"
                    .into(),
            ));
        }
        trust
            .verifier
            .verify(artifact, &bundle, &sv::VerificationPolicy::any_identity())
            .map_err(from_crate)?
    };

    let mut checks = Vec::new();
    let mut push = |check, status, detail: String| {
        checks.push(CheckResult {
            check,
            status,
            detail,
        })
    };
    push(
        Check::Bundle,
        Status::Passed,
        format!("{} parsed", media_type_of(own)),
    );
    push(
        Check::TrustedRoot,
        Status::Passed,
        "trusted root prepared".into(),
    );
    let signer = match key_used {
        Some((der, detail)) => {
            push(Check::Key, Status::Passed, detail);
            push(
                Check::Certificate,
                Status::NotApplicable,
                "signed with a managed key".into(),
            );
            push(
                Check::Sct,
                Status::NotApplicable,
                "signed with a managed key".into(),
            );
            SignerSummary::Key {
                fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(der))),
            }
        }
        None => {
            push(
                Check::Key,
                Status::NotApplicable,
                "signed with a certificate".into(),
            );
            push(
                Check::Certificate,
                Status::Passed,
                "chains to a certificate authority of the trusted root valid at the signing time"
                    .into(),
            );
            push(
                Check::Sct,
                if result.sct_verified() {
                    Status::Passed
                } else {
                    Status::NotApplicable
                },
                if result.sct_verified() {
                    "verified with a CT log of the trusted root".into()
                } else {
                    "not checked by this policy".into()
                },
            );
            check_identities(&identities, &result)?
        }
    };
    let times = result.verified_timestamps();
    push(
        Check::Timestamp,
        Status::Passed,
        format!("{} verified time(s)", times.len()),
    );
    let entries = if result.tlog_verified() {
        bundle.verification_material.tlog_entries.len()
    } else {
        0
    };
    push(
        Check::TransparencyLog,
        Status::Passed,
        format!(
            "{entries} log entr{} included and about this content",
            if entries == 1 { "y" } else { "ies" }
        ),
    );
    push(
        Check::Signature,
        Status::Passed,
        "verified with the signer's key".into(),
    );
    push(
        Check::Artifact,
        Status::Passed,
        "the bundle is about this artifact".into(),
    );
    if entries < request.thresholds.tlog_entries {
        return Err(VerificationError::Threshold(format!(
            "{entries} verified log entr{}, {} required",
            if entries == 1 { "y" } else { "ies" },
            request.thresholds.tlog_entries
        )));
    }
    if times.len() < request.thresholds.timestamps {
        return Err(VerificationError::Threshold(format!(
            "{} verified timestamp(s), {} required",
            times.len(),
            request.thresholds.timestamps
        )));
    }
    if matches!(signer, SignerSummary::Certificate { .. }) {
        push(
            Check::Identity,
            Status::Passed,
            "the certificate's identity satisfies the policy".into(),
        );
    } else {
        push(
            Check::Identity,
            Status::NotApplicable,
            "signed with a managed key".into(),
        );
    }
    push(
        Check::Threshold,
        Status::Passed,
        format!(
            "{entries} of {} log entries and {} of {} timestamps required",
            request.thresholds.tlog_entries,
            times.len(),
            request.thresholds.timestamps
        ),
    );
    let mut verified_times: Vec<jiff::Timestamp> = times.to_vec();
    verified_times.sort();
    Ok(Report {
        valid: true,
        error: None,
        failed_check: None,
        checks,
        media_type: None,
        content: None,
        signer: Some(signer),
        signing_time: verified_times.first().map(ToString::to_string),
        verified_times: verified_times.iter().map(ToString::to_string).collect(),
        log_entries: Vec::new(),
    })
}

fn media_type_of(own: Option<&sigstore::Bundle>) -> String {
    own.map_or_else(
        || "the bundle".into(),
        |b| format!("{} bundle", b.media_type),
    )
}

/// Checks the bundle's key hint against the caller's key. The hint is an opaque string; the
/// forms in use are recognised (base64 or hex of the SHA-256 of the DER key, as
/// sigstore-python and cosign write it, and OpenSSH's `SHA256:` fingerprint, as npm writes
/// it) and must then name this key. A hint in another form cannot be compared and is
/// reported as such.
fn check_key_hint(der: &[u8], hint: Option<&str>) -> Result<String, VerificationError> {
    let Some(hint) = hint.filter(|h| !h.is_empty()) else {
        return Ok("the caller's key (the bundle names no key)".into());
    };
    let digest = Sha256::digest(der);
    let mut forms = vec![B64.encode(digest), hex::encode(digest)];
    if let Some(ssh) = openssh_fingerprint(der) {
        forms.push(ssh);
    }
    if forms.iter().any(|f| f == hint) {
        return Ok(format!(
            "the caller's key, which the bundle's hint {hint:?} names"
        ));
    }
    let recognised = hint.starts_with("SHA256:")
        || (hint.len() == 64 && hint.bytes().all(|b| b.is_ascii_hexdigit()))
        || B64.decode(hint).is_ok_and(|b| b.len() == 32);
    if recognised {
        return Err(VerificationError::Key(format!(
            "the bundle's key hint {hint:?} names another key than the one given \
             (sha256:{})",
            hex::encode(digest)
        )));
    }
    Ok(format!(
        "the caller's key (the bundle's hint {hint:?} is in a form that cannot be compared)"
    ))
}

/// OpenSSH's `SHA256:` fingerprint of a P-256 or Ed25519 key, as npm names its keys.
fn openssh_fingerprint(der: &[u8]) -> Option<String> {
    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let key = PublicKey::from_spki_der(der).ok()?;
    let mut blob = Vec::new();
    match key {
        PublicKey::P256(k) => {
            string(&mut blob, b"ecdsa-sha2-nistp256");
            string(&mut blob, b"nistp256");
            string(&mut blob, k.to_sec1_point(false).as_bytes());
        }
        PublicKey::Ed25519(k) => {
            string(&mut blob, b"ssh-ed25519");
            string(&mut blob, k.as_bytes());
        }
    }
    Some(format!(
        "SHA256:{}",
        B64_NO_PAD.encode(Sha256::digest(&blob))
    ))
}

/// Checks the certificate's claims against every trusted identity: the first that matches
/// is the signer. With one identity the refusal names the claim that differed; with several,
/// it says none matched and why the first did not.
fn check_identities(
    identities: &[&IdentityPolicy],
    result: &sv::VerificationResult,
) -> Result<SignerSummary, VerificationError> {
    let mut first_refusal = None;
    for policy in identities {
        match check_identity(policy, result) {
            Ok(summary) => return Ok(summary),
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    match (first_refusal, identities.len()) {
        (Some(e), 1) => Err(e),
        (Some(VerificationError::Identity(why)), n) => Err(VerificationError::Identity(format!(
            "the certificate matches none of the {n} trusted identities ({why})"
        ))),
        (Some(e), _) => Err(e),
        (None, _) => Err(VerificationError::Identity("no trusted identity".into())),
    }
}

/// Checks the certificate's claims against the policy, naming the first that differs.
fn check_identity(
    policy: &IdentityPolicy,
    result: &sv::VerificationResult,
) -> Result<SignerSummary, VerificationError> {
    let san = result.identity().map(|s| s.as_str().to_owned());
    let issuer = result.issuer().map(str::to_owned);
    match &san {
        Some(san) if policy.san.matches(san) => {}
        Some(san) => {
            return Err(VerificationError::Identity(format!(
                "the certificate's subject alternative name is {san:?}, the policy requires {}",
                policy.san.describe()
            )));
        }
        None => {
            return Err(VerificationError::Identity(
                "the certificate has no subject alternative name".into(),
            ));
        }
    }
    match &issuer {
        Some(i) if policy.issuer.matches(i) => {}
        Some(i) => {
            return Err(VerificationError::Identity(format!(
                "the certificate's OIDC issuer is {i:?}, the policy requires {}",
                policy.issuer.describe()
            )));
        }
        None => {
            return Err(VerificationError::Identity(
                "the certificate records no OIDC issuer".into(),
            ));
        }
    }
    let workflow = result
        .certificate()
        .map(|c| workflow_of(&c.ci_claims, san.as_deref()));
    let claims = workflow.clone().unwrap_or(WorkflowSummary {
        repository: None,
        git_ref: None,
        commit: None,
        workflow: None,
        trigger: None,
        runner_environment: None,
    });
    let want = &policy.workflow;
    let differs = |name: &str, actual: &Option<String>, expected: &str| {
        VerificationError::Identity(format!(
            "the certificate's {name} is {}, the policy requires {expected:?}",
            actual
                .as_deref()
                .map_or("absent".into(), |a| format!("{a:?}"))
        ))
    };
    if let Some(expected) = &want.repository
        && !claims
            .repository
            .as_deref()
            .is_some_and(|a| repository_matches(a, expected))
    {
        return Err(differs("source repository", &claims.repository, expected));
    }
    if let Some(expected) = &want.git_ref
        && claims.git_ref.as_deref() != Some(expected.as_str())
    {
        return Err(differs("source ref", &claims.git_ref, expected));
    }
    if let Some(expected) = &want.workflow
        && !claims
            .workflow
            .as_deref()
            .is_some_and(|a| workflow_matches(a, expected))
    {
        return Err(differs("workflow", &claims.workflow, expected));
    }
    if let Some(expected) = &want.trigger
        && claims.trigger.as_deref() != Some(expected.as_str())
    {
        return Err(differs("workflow trigger", &claims.trigger, expected));
    }
    if let Some(expected) = &want.runner_environment
        && claims.runner_environment.as_deref() != Some(expected.as_str())
    {
        return Err(differs(
            "runner environment",
            &claims.runner_environment,
            expected,
        ));
    }
    let (not_before, not_after) = result
        .certificate()
        .map(|c| (c.not_before.to_string(), c.not_after.to_string()))
        .unwrap_or_default();
    Ok(SignerSummary::Certificate {
        san: san.unwrap_or_default(),
        issuer,
        not_before,
        not_after,
        workflow: workflow
            .filter(|w| w.repository.is_some() || w.workflow.is_some() || w.git_ref.is_some())
            .map(Box::new),
    })
}

/// The workflow claims of a certificate: the provider-neutral extensions, or the deprecated
/// GitHub ones for certificates that predate them. The workflow falls back to a URI SAN,
/// which Fulcio sets to the workflow for GitHub Actions.
fn workflow_of(claims: &sv::crypto::FulcioCiClaims, san: Option<&str>) -> WorkflowSummary {
    let old = &claims.deprecated_github;
    WorkflowSummary {
        repository: claims
            .source_repository_uri
            .clone()
            .or_else(|| old.workflow_repository.clone()),
        git_ref: claims
            .source_repository_ref
            .clone()
            .or_else(|| old.workflow_ref.clone()),
        commit: claims
            .source_repository_digest
            .clone()
            .or_else(|| old.workflow_sha.clone()),
        workflow: claims.build_signer_uri.clone().or_else(|| {
            san.filter(|s| s.starts_with("https://") && s.contains("/.github/workflows/"))
                .map(str::to_owned)
        }),
        trigger: claims
            .build_trigger
            .clone()
            .or_else(|| old.workflow_trigger.clone()),
        runner_environment: claims.runner_environment.clone(),
    }
}

/// `owner/repo` and `https://github.com/owner/repo` name the same repository.
fn repository_matches(actual: &str, expected: &str) -> bool {
    let short = |s: &str| {
        s.strip_prefix("https://github.com/")
            .unwrap_or(s)
            .trim_end_matches('/')
            .to_owned()
    };
    short(actual) == short(expected)
}

/// A workflow given as its path in the repository, or as its URL with or without `@ref`,
/// matches the certificate's build signer URI.
fn workflow_matches(actual: &str, expected: &str) -> bool {
    if actual == expected {
        return true;
    }
    let without_ref = actual.split_once('@').map_or(actual, |(w, _)| w);
    without_ref == expected
        || (!expected.contains("://")
            && without_ref.ends_with(&format!("/{}", expected.trim_start_matches('/'))))
}

fn summarise_content(content: &BundleContent) -> ContentSummary {
    match content {
        BundleContent::Message { digest, .. } => ContentSummary::MessageSignature {
            digest: digest
                .as_ref()
                .map(|(alg, value)| format!("{alg}:{}", hex::encode(value))),
        },
        BundleContent::Dsse {
            payload_type,
            payload,
            ..
        } => {
            let statement: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
            let predicate_type = statement
                .as_ref()
                .and_then(|s| s.get("predicateType"))
                .and_then(|p| p.as_str())
                .map(str::to_owned);
            let subjects = statement
                .as_ref()
                .and_then(|s| s.get("subject"))
                .and_then(|s| s.as_array())
                .map(|subjects| {
                    subjects
                        .iter()
                        .map(|s| Subject {
                            name: s
                                .get("name")
                                .and_then(|n| n.as_str())
                                .unwrap_or_default()
                                .to_owned(),
                            digests: s
                                .get("digest")
                                .and_then(|d| d.as_object())
                                .map(|d| {
                                    d.iter()
                                        .filter_map(|(alg, v)| {
                                            v.as_str().map(|v| format!("{alg}:{v}"))
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ContentSummary::DsseEnvelope {
                payload_type: payload_type.clone(),
                predicate_type,
                subjects,
            }
        }
    }
}

fn summarise_entry(
    tle: &super::receipt::TransparencyLogEntry,
    logs: &sigstore::TrustedRoot,
) -> Option<LogEntrySummary> {
    let receipt = Receipt::from_tle(tle).ok()?;
    let checkpoint = receipt
        .inclusion_proof
        .as_ref()
        .and_then(|p| p.checkpoint.as_deref())
        .and_then(|text| {
            let note = super::note::Note::parse(text.as_bytes()).ok()?;
            let cp = super::note::Checkpoint::parse(note.text()).ok()?;
            Some(CheckpointSummary {
                origin: cp.origin,
                size: cp.size,
            })
        });
    Some(LogEntrySummary {
        log_url: logs.find(&receipt.log_id).map(|t| t.base_url.clone()),
        log_id: hex::encode(&receipt.log_id),
        log_index: receipt.log_index,
        uuid: receipt.uuid(),
        kind: receipt
            .kind_version
            .as_ref()
            .map(|kv| format!("{} {}", kv.kind, kv.version)),
        integrated_time: receipt
            .integrated_time
            .and_then(|t| jiff::Timestamp::from_second(t).ok().map(|t| t.to_string())),
        checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_in_their_one_spelling() {
        let d: ArtifactDigest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(d.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(d.to_string(), format!("sha256:{}", "ab".repeat(32)));
        let d: ArtifactDigest = format!("sha512:{}", "0f".repeat(64)).parse().unwrap();
        assert_eq!(d.algorithm, DigestAlgorithm::Sha512);
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha256:{}", "AB".repeat(32)),
            format!("md5:{}", "ab".repeat(16)),
            "ab".repeat(32),
            format!("sha512:{}", "ab".repeat(32)),
        ] {
            assert!(bad.parse::<ArtifactDigest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn regular_expressions_match_the_whole_value() {
        let m = Matcher::regex("https://github.com/org/.*").unwrap();
        assert!(m.matches("https://github.com/org/repo/.github/workflows/r.yml@refs/heads/main"));
        assert!(!m.matches("https://evil.example/https://github.com/org/x"));
        assert!(Matcher::regex("(").is_err());
    }

    #[test]
    fn repositories_and_workflows_in_their_usual_spellings() {
        assert!(repository_matches(
            "https://github.com/sigstore/sigstore-js",
            "sigstore/sigstore-js"
        ));
        assert!(!repository_matches(
            "https://github.com/sigstore/sigstore-js",
            "sigstore/cosign"
        ));
        let uri =
            "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";
        assert!(workflow_matches(uri, ".github/workflows/release.yml"));
        assert!(workflow_matches(
            uri,
            "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml"
        ));
        assert!(workflow_matches(uri, uri));
        assert!(!workflow_matches(uri, ".github/workflows/other.yml"));
        assert!(!workflow_matches(uri, "release.yml@refs/heads/main"));
    }

    #[test]
    fn key_hints_in_known_forms_must_name_the_key() {
        let key = crate::domain::keys::PrivateKey::generate(
            crate::domain::keys::Algorithm::P256,
            &mut crate::domain::keys::os_random,
        )
        .unwrap()
        .public_key()
        .to_spki_der();
        let digest = Sha256::digest(&key);
        assert!(check_key_hint(&key, Some(&B64.encode(digest))).is_ok());
        assert!(check_key_hint(&key, Some(&hex::encode(digest))).is_ok());
        assert!(check_key_hint(&key, Some(&openssh_fingerprint(&key).unwrap())).is_ok());
        assert!(check_key_hint(&key, None).is_ok());
        assert!(matches!(
            check_key_hint(&key, Some(&B64.encode([0u8; 32]))),
            Err(VerificationError::Key(_))
        ));
        assert!(matches!(
            check_key_hint(&key, Some("SHA256:AAAA")),
            Err(VerificationError::Key(_))
        ));
        assert!(
            check_key_hint(&key, Some("my-kms-key"))
                .unwrap()
                .contains("cannot be compared")
        );
    }
}
