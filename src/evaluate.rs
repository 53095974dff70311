//! Verify-then-cache: "is artifact X acceptable under policy P, given these attestations?"
//!
//! The seed's loop inside provd. [`Evaluator::evaluate`] computes the VeriKey from the
//! request (the artifact digest, the SBOM and VEX digests, the stored policy's hash, the
//! signer-set hash of the attestations — which binds the verdict to the exact attestations
//! it was decided on — and the feed epoch) and answers from the cache on a hit, without
//! verifying anything. On a miss it verifies every attestation completely and evaluates the
//! policy ([`actors::domain::policy::evaluate`], off the runtime), keeps the attestations as
//! the entry's Merkle-chunked evidence, stores their log receipts and links the first to the
//! entry (so air-gap bundles carry it), and writes the verdict — decision, reasons, the
//! identities and predicate types it relied on, each log entry and signing time, the ledger
//! position — through the ordinary write path. A deny is a verdict too. Concurrent misses
//! for one VeriKey verify once: the first does the work, the others wait for it and read its
//! verdict.
//!
//! [`Evaluator::explain`] gives everything an auditor needs to replay a verdict offline
//! (`provd verify --explain`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actors::domain::entry::{Entry, verdict_hash};
use actors::domain::evidence::{EvidenceLimits, chunk_all};
use actors::domain::policy::{
    self, ATTESTATIONS_CONTENT_TYPE, Decision, Policy, VERDICT_KIND, attestations_evidence,
    canonical_attestation,
};
use actors::domain::receipt::Receipt;
use actors::domain::verification::ArtifactDigest;
use actors::domain::verikey::VeriKeyInputs;
use actors::ports::{EvidenceStore, PolicyStore, PortError, ReplayStore};
use actors::provcache::{Accepted, CacheError, ProvCache, Served};
use async_trait::async_trait;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::airgap::BundleStore;
use crate::http::verify::TrustedRoots;

/// The most attestations one evaluation takes.
pub const MAX_ATTESTATIONS: usize = 16;
/// What the VeriKey records for an input the request does not give.
const ABSENT: &str = "none";

/// Registers the evaluation metrics' help texts and creates their series at zero.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "provd_evaluations_total",
        "Evaluations by outcome: hit (answered from the cache), allow, deny (decided now)."
    );
    metrics::describe_counter!(
        "provd_evaluation_verifications_total",
        "Evaluations that verified their attestations (cache misses decided now)."
    );
    for outcome in ["hit", "allow", "deny"] {
        metrics::counter!("provd_evaluations_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("provd_evaluation_verifications_total").increment(0);
}

/// Where the log receipts of evaluated attestations are kept, beside the receipts of
/// provd's own submissions.
#[async_trait]
pub trait ReceiptStore: Send + Sync + 'static {
    /// Stores a receipt verified as part of an attestation, under the log that issued it;
    /// storing one that is already there changes nothing.
    async fn store_receipt(
        &self,
        log: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError>;
}

/// Why an evaluation could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// No policy has this name.
    #[error("no policy named {0:?}")]
    UnknownPolicy(String),
    /// The entry was not decided by provd, so there is nothing to explain.
    #[error("{0}")]
    NotExplainable(String),
    /// The trusted root is unavailable; try again.
    #[error("{0}")]
    Unavailable(String),
    /// A store or the bus failed; its kind says whether trying again can help.
    #[error(transparent)]
    Store(#[from] PortError),
    /// A bug; logged, never returned in detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CacheError> for EvaluateError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Store(e) => EvaluateError::Store(e),
        }
    }
}

/// The request body of `POST /api/v1/provcache/evaluate`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The artifact, `sha256:<hex>` or `sha512:<hex>` (an in-toto subject's digest).
    #[schema(pattern = "^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")]
    pub artifact_digest: String,
    /// The stored policy's name.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub policy: String,
    /// The Sigstore bundles (objects, or their JSON text).
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 16)]
    pub attestations: Vec<Value>,
    /// The SBOM's digest, when the verdict depends on one.
    #[serde(default)]
    pub sbom_digest: Option<String>,
    /// VEX documents' digests.
    #[serde(default)]
    pub vex_digests: Vec<String>,
    /// The vulnerability feed and its epoch the verdict was decided at.
    #[serde(default)]
    pub feed_id: Option<String>,
    /// See `feed_id`.
    #[serde(default)]
    pub feed_epoch: Option<String>,
    /// How long the verdict is served, in seconds (default `provcache.default_ttl`).
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// An evaluation's answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The VeriKey.
    pub veri_key: String,
    /// The entry: its `verdict` is the decision document.
    pub entry: Arc<Entry>,
    /// Where a cached verdict was read from; `None` when it was decided now.
    pub served: Option<Served>,
    /// How a new verdict was written.
    pub accepted: Option<Accepted>,
}

/// What the evaluator is built from.
pub struct EvaluatorParts {
    /// The provenance cache (read path and write path).
    pub cache: Arc<ProvCache>,
    /// The policies.
    pub policies: Arc<dyn PolicyStore>,
    /// Where the attestations are kept as evidence.
    pub evidence: Arc<dyn EvidenceStore>,
    /// Where their log receipts are kept.
    pub receipts: Arc<dyn ReceiptStore>,
    /// The entry → receipt link.
    pub links: Arc<dyn BundleStore>,
    /// The ledger head, recorded with each verdict.
    pub ledger: Arc<dyn ReplayStore>,
    /// The trusted root attestations are verified against.
    pub roots: Arc<dyn TrustedRoots>,
    /// Evidence chunking.
    pub evidence_limits: EvidenceLimits,
    /// How long verdicts are served by default.
    pub default_ttl: Duration,
}

/// Verify-then-cache, shared by the HTTP route and its tests.
pub struct Evaluator {
    parts: EvaluatorParts,
    /// One lock per VeriKey being decided, so concurrent misses decide it once.
    deciding: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Checked policies by hash: a policy is parsed (and its Rego compiled) once.
    checked: Mutex<HashMap<String, Arc<Policy>>>,
}

impl Evaluator {
    /// An evaluator over these parts.
    pub fn new(parts: EvaluatorParts) -> Self {
        Evaluator {
            parts,
            deciding: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict on `request`: cached, or decided now (see the module docs).
    pub async fn evaluate(&self, request: EvaluateRequest) -> Result<Outcome, EvaluateError> {
        let artifact: ArtifactDigest = request
            .artifact_digest
            .parse()
            .map_err(|e| EvaluateError::BadRequest(format!("`artifact_digest`: {e}")))?;
        if request.attestations.is_empty() || request.attestations.len() > MAX_ATTESTATIONS {
            return Err(EvaluateError::BadRequest(format!(
                "`attestations` must hold 1 to {MAX_ATTESTATIONS} Sigstore bundles"
            )));
        }
        let bundles: Vec<Vec<u8>> = request
            .attestations
            .iter()
            .map(|a| match a {
                Value::String(text) => canonical_attestation(text.as_bytes()),
                other => canonical_attestation(&serde_json::to_vec(other).unwrap_or_default()),
            })
            .collect();
        let stored = self
            .parts
            .policies
            .policy(&request.policy)
            .await?
            .ok_or_else(|| EvaluateError::UnknownPolicy(request.policy.clone()))?;
        let policy = self.checked_policy(&stored.policy_hash, &stored.document)?;
        let inputs = VeriKeyInputs {
            source_artifact_digest: artifact.to_string(),
            sbom_digest: request.sbom_digest.clone().unwrap_or_else(|| ABSENT.into()),
            vex_digests: request.vex_digests.clone(),
            policy_hash: policy.hash.clone(),
            signer_set_hash: policy::signer_set_hash(&bundles),
            feed_epoch: request.feed_epoch.clone().unwrap_or_else(|| ABSENT.into()),
            time_window: None,
        };
        let veri_key = inputs
            .veri_key()
            .map_err(|e| EvaluateError::BadRequest(e.to_string()))?;
        if let Some(hit) = self.cached(&veri_key).await? {
            metrics::counter!("provd_evaluations_total", "outcome" => "hit").increment(1);
            return Ok(hit);
        }
        // Concurrent misses for one VeriKey: the first decides, the others read its verdict.
        let lock = self.lock_for(&veri_key);
        let _deciding = lock.lock().await;
        if let Some(hit) = self.cached(&veri_key).await? {
            metrics::counter!("provd_evaluations_total", "outcome" => "hit").increment(1);
            return Ok(hit);
        }
        let root = {
            let roots = self.parts.roots.clone();
            tokio::task::spawn_blocking(move || roots.current())
                .await
                .map_err(|e| EvaluateError::Internal(e.to_string()))?
                .map_err(|e| {
                    EvaluateError::Unavailable(format!("no trusted root to verify with: {e}"))
                })?
        };
        let evaluation = {
            let (policy, artifact, bundles) = (policy.clone(), artifact.clone(), bundles.clone());
            let name = request.policy.clone();
            tokio::task::spawn_blocking(move || {
                policy::evaluate(&root.material, &name, &policy, &artifact, &bundles)
            })
            .await
            .map_err(|e| EvaluateError::Internal(e.to_string()))?
        };
        metrics::counter!("provd_evaluation_verifications_total").increment(1);
        let proof_root = self.keep_evidence(&bundles).await?;
        let receipts = self
            .keep_receipts(&request.attestations, &evaluation)
            .await?;
        let ledger_position = self.parts.ledger.ledger_head().await?;
        let now = Utc::now();
        let verdict = policy::verdict_document(
            &evaluation,
            &request.policy,
            stored.version,
            &policy,
            &artifact,
            &inputs,
            ledger_position,
            &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let ttl = request
            .ttl
            .map_or(self.parts.default_ttl, Duration::from_secs)
            .min(Duration::from_secs(366 * 86_400));
        let entry = Entry {
            veri_key: veri_key.clone(),
            verdict_hash: verdict_hash(&verdict),
            verdict,
            proof_root: Some(proof_root),
            trust_score: if evaluation.decision == Decision::Allow {
                100
            } else {
                0
            },
            policy_hash: policy.hash.clone(),
            signer_set_hash: inputs.signer_set_hash.clone(),
            signer_key_ids: evaluation.signer_ids(),
            feed_id: request.feed_id.clone(),
            feed_epoch: request.feed_epoch.clone(),
            created_at: now,
            expires_at: now
                + chrono::Duration::from_std(ttl)
                    .map_err(|e| EvaluateError::BadRequest(format!("`ttl`: {e}")))?,
        };
        entry
            .validate()
            .map_err(|e| EvaluateError::BadRequest(e.to_string()))?;
        let accepted = self.parts.cache.put(entry.clone()).await?;
        if let Some(uuid) = receipts.first() {
            self.parts.links.link_receipt(&veri_key, uuid).await?;
        }
        let outcome = match evaluation.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        };
        metrics::counter!("provd_evaluations_total", "outcome" => outcome).increment(1);
        Ok(Outcome {
            veri_key,
            entry: Arc::new(entry),
            served: None,
            accepted: Some(accepted),
        })
    }

    /// Everything needed to replay a verdict offline, or `None` when there is no such entry.
    pub async fn explain(&self, veri_key: &str) -> Result<Option<Value>, EvaluateError> {
        let Some((entry, _)) = self.parts.cache.get(veri_key).await? else {
            return Ok(None);
        };
        let verdict = &entry.verdict;
        if verdict["kind"] != VERDICT_KIND {
            return Err(EvaluateError::NotExplainable(
                "this verdict was written through the entries API, not decided by provd: \
                 provd has nothing to replay"
                    .into(),
            ));
        }
        let policy = self
            .parts
            .policies
            .policy_by_hash(&entry.policy_hash)
            .await?
            .ok_or_else(|| {
                EvaluateError::NotExplainable(format!(
                    "the policy {} is no longer stored",
                    entry.policy_hash
                ))
            })?;
        let proof_root = entry.proof_root.clone().unwrap_or_default();
        let manifest = self
            .parts
            .evidence
            .manifest(&proof_root)
            .await?
            .ok_or_else(|| {
                EvaluateError::NotExplainable(format!("the evidence {proof_root} is not stored"))
            })?;
        let mut bytes = Vec::with_capacity(manifest.total_size as usize);
        let mut from = 0;
        loop {
            let chunks = self.parts.evidence.chunks(&proof_root, from, 256).await?;
            if chunks.is_empty() {
                break;
            }
            for c in &chunks {
                bytes.extend_from_slice(&c.data);
                from = c.index + 1;
            }
        }
        let attestations: Value = serde_json::from_slice(&bytes).map_err(|e| {
            EvaluateError::Internal(format!("the stored attestations do not parse: {e}"))
        })?;
        let root = self.parts.roots.current().ok();
        Ok(Some(json!({
            "veri_key": entry.veri_key,
            "inputs": verdict["inputs"],
            "policy": {
                "name": verdict["policy"]["name"],
                "version": policy.version,
                "hash": policy.policy_hash,
                "document": policy.document,
            },
            "verdict": verdict,
            "evidence": {
                "proof_root": proof_root,
                "chunk_size": manifest.chunk_size,
                "total_chunks": manifest.total_chunks,
                "total_size": manifest.total_size,
                "content_type": manifest.content_type,
            },
            "attestations": attestations,
            "ledger_position": verdict["ledger_position"],
            "signer_key_ids": entry.signer_key_ids,
            "trusted_root": root.map(|r| json!({
                "source": r.source,
                "document": serde_json::from_slice::<Value>(&r.json).unwrap_or(Value::Null),
            })),
        })))
    }

    async fn cached(&self, veri_key: &str) -> Result<Option<Outcome>, EvaluateError> {
        let hit = self.parts.cache.get(veri_key).await?;
        Ok(hit.map(|(entry, served)| Outcome {
            veri_key: veri_key.to_owned(),
            entry,
            served: Some(served),
            accepted: None,
        }))
    }

    fn lock_for(&self, veri_key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut deciding = self
            .deciding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget the locks nobody holds any more, so the map stays as small as the work.
        deciding.retain(|_, w| w.strong_count() > 0);
        if let Some(lock) = deciding.get(veri_key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        deciding.insert(veri_key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    fn checked_policy(&self, hash: &str, document: &Value) -> Result<Arc<Policy>, EvaluateError> {
        let mut checked = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = checked.get(hash) {
            return Ok(p.clone());
        }
        let policy = Policy::from_json(document.to_string().as_bytes())
            .map_err(|e| EvaluateError::Internal(format!("a stored policy does not load: {e}")))?;
        let policy = Arc::new(policy);
        checked.insert(hash.to_owned(), policy.clone());
        Ok(policy)
    }

    /// Keeps the attestations as Merkle-chunked evidence; returns the proof root.
    async fn keep_evidence(&self, bundles: &[Vec<u8>]) -> Result<String, EvaluateError> {
        let evidence = attestations_evidence(bundles);
        let (chunks, manifest) = chunk_all(
            self.parts.evidence_limits,
            ATTESTATIONS_CONTENT_TYPE,
            &evidence,
        )
        .map_err(|e| {
            EvaluateError::BadRequest(format!(
                "the attestations are larger than the evidence limits allow: {e}"
            ))
        })?;
        self.parts.evidence.put_evidence(&manifest, &chunks).await?;
        Ok(manifest.proof_root)
    }

    /// Stores the log receipts of the verified attestations; returns their UUIDs.
    async fn keep_receipts(
        &self,
        attestations: &[Value],
        evaluation: &policy::Evaluation,
    ) -> Result<Vec<String>, EvaluateError> {
        let mut uuids = Vec::new();
        for (bundle, outcome) in attestations.iter().zip(&evaluation.attestations) {
            if !outcome.report.valid {
                continue;
            }
            let bundle = match bundle {
                Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            let entries = bundle["verificationMaterial"]["tlogEntries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (tle, summary) in entries.iter().zip(&outcome.report.log_entries) {
                let Ok(tle) = serde_json::from_value(tle.clone()) else {
                    continue;
                };
                let Ok(receipt) = Receipt::from_tle(&tle) else {
                    continue;
                };
                let log = summary
                    .log_url
                    .as_deref()
                    .map(|u| {
                        u.split_once("://")
                            .map_or(u, |(_, h)| h)
                            .trim_end_matches('/')
                    })
                    .unwrap_or("unknown")
                    .to_owned();
                let uuid = receipt.uuid();
                self.parts
                    .receipts
                    .store_receipt(&log, &uuid, &receipt)
                    .await?;
                uuids.push(uuid);
            }
        }
        Ok(uuids)
    }
}
