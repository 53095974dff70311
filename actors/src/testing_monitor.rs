//! In-memory fakes for log-monitoring unit tests: a checkpoint and divergence store, a
//! recording webhook, and a transparency log with real Merkle trees and fault switches.
//!
//! Integration tests use PostgreSQL, the real webhook client and the local log instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::Utc;

use crate::domain::merkle::{self, Hash};
use crate::domain::note::Checkpoint;
use crate::domain::receipt::{InclusionProof, Receipt};
use crate::ports::{
    AlertSink, CheckpointQuery, CheckpointStore, Divergence, DivergenceStore, LogCheckpoint,
    NewDivergence, ObservedCheckpoint, PortError, RekorClient, RekorError, RekorSubmission,
    StoredCheckpoint, StoredReceipt,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A checkpoint note for `origin`, `size` and `root` with a well-formed (not a real)
/// signature: the fakes do not verify.
pub fn note_for(origin: &str, size: u64, root: &Hash) -> String {
    let text = Checkpoint {
        origin: origin.to_owned(),
        size,
        root: *root,
        extensions: Vec::new(),
    }
    .to_text();
    let sig = base64::engine::general_purpose::STANDARD.encode([7u8; 68]);
    format!("{text}\n\u{2014} {origin} {sig}\n")
}

#[derive(Default)]
struct MonitorInner {
    checkpoints: Vec<StoredCheckpoint>,
    divergences: Vec<(String, Divergence)>,
    receipts: BTreeMap<String, StoredReceipt>,
}

/// Checkpoints, divergences and receipts in memory. Clones share their data.
#[derive(Clone, Default)]
pub struct MemoryMonitor {
    inner: Arc<Mutex<MonitorInner>>,
}

impl MemoryMonitor {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stored receipt.
    pub fn add_receipt(&self, receipt: StoredReceipt) {
        lock(&self.inner)
            .receipts
            .insert(receipt.uuid.clone(), receipt);
    }

    /// A stored receipt by UUID.
    pub fn receipt(&self, uuid: &str) -> Option<StoredReceipt> {
        lock(&self.inner).receipts.get(uuid).cloned()
    }

    /// Every stored checkpoint, oldest first.
    pub fn all_checkpoints(&self) -> Vec<StoredCheckpoint> {
        lock(&self.inner).checkpoints.clone()
    }

    /// Every divergence, oldest first.
    pub fn all_divergences(&self) -> Vec<Divergence> {
        lock(&self.inner)
            .divergences
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }
}

fn origin_of(proof: &InclusionProof) -> Option<String> {
    let note = proof.checkpoint.as_deref()?;
    note.split('\n').next().map(str::to_owned)
}

#[async_trait]
impl CheckpointStore for MemoryMonitor {
    async fn record_checkpoint(&self, cp: &ObservedCheckpoint) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        let exists = inner.checkpoints.iter().any(|s| {
            let c = &s.checkpoint;
            c.backend == cp.backend
                && c.origin == cp.origin
                && c.tree_size == cp.tree_size
                && c.root_hash == cp.root_hash
                && c.observed_by == cp.observed_by
        });
        if !exists {
            let id = inner.checkpoints.len() as i64 + 1;
            inner.checkpoints.push(StoredCheckpoint {
                id,
                checkpoint: cp.clone(),
                observed_at: Utc::now(),
            });
        }
        Ok(())
    }

    async fn latest_checkpoint(
        &self,
        backend: &str,
        origin: &str,
        observed_by: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        Ok(lock(&self.inner)
            .checkpoints
            .iter()
            .filter(|s| {
                let c = &s.checkpoint;
                c.backend == backend && c.origin == origin && c.observed_by == observed_by
            })
            .max_by_key(|s| (s.checkpoint.tree_size, s.id))
            .cloned())
    }

    async fn conflicting_checkpoint(
        &self,
        origin: &str,
        tree_size: u64,
        root: &Hash,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        Ok(lock(&self.inner)
            .checkpoints
            .iter()
            .find(|s| {
                let c = &s.checkpoint;
                c.origin == origin && c.tree_size == tree_size && c.root_hash != *root
            })
            .cloned())
    }

    async fn latest_foreign_checkpoint(
        &self,
        origin: &str,
        exclude: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        Ok(lock(&self.inner)
            .checkpoints
            .iter()
            .rev()
            .find(|s| s.checkpoint.origin == origin && s.checkpoint.observed_by != exclude)
            .cloned())
    }

    async fn checkpoints(&self, q: &CheckpointQuery) -> Result<Vec<StoredCheckpoint>, PortError> {
        let mut out: Vec<StoredCheckpoint> = lock(&self.inner)
            .checkpoints
            .iter()
            .filter(|s| {
                let c = &s.checkpoint;
                q.backend.as_ref().is_none_or(|b| *b == c.backend)
                    && q.origin.as_ref().is_none_or(|o| *o == c.origin)
                    && q.tree_size.is_none_or(|n| n == c.tree_size)
            })
            .cloned()
            .collect();
        out.reverse();
        out.truncate(q.limit as usize);
        Ok(out)
    }

    async fn unverified_receipts(
        &self,
        backend: &str,
        origin: &str,
        tree_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, PortError> {
        Ok(lock(&self.inner)
            .receipts
            .values()
            .filter(|r| {
                r.backend == backend
                    && r.verified_at.is_none()
                    && r.receipt.inclusion_proof.as_ref().is_some_and(|p| {
                        p.log_index < tree_size && origin_of(p).as_deref() == Some(origin)
                    })
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn mark_receipts_verified(&self, uuids: &[String]) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        for u in uuids {
            if let Some(r) = inner.receipts.get_mut(u) {
                r.verified_at = Some(Utc::now());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl DivergenceStore for MemoryMonitor {
    async fn raise_divergence(&self, new: &NewDivergence) -> Result<Option<Divergence>, PortError> {
        let mut inner = lock(&self.inner);
        if inner.divergences.iter().any(|(k, _)| *k == new.dedupe_key) {
            return Ok(None);
        }
        let d = Divergence {
            id: inner.divergences.len() as i64 + 1,
            backend: new.backend.clone(),
            origin: new.origin.clone(),
            kind: new.kind.as_str().to_owned(),
            evidence: new.evidence.clone(),
            detected_by: new.detected_by.clone(),
            detected_at: Utc::now(),
            acknowledged_at: None,
            acknowledged_by: None,
            published_at: None,
            delivered_at: None,
            delivery_attempts: 0,
            last_delivery_error: None,
        };
        inner.divergences.push((new.dedupe_key.clone(), d.clone()));
        Ok(Some(d))
    }

    async fn open_divergences(&self, backend: Option<&str>) -> Result<Vec<Divergence>, PortError> {
        Ok(self
            .all_divergences()
            .into_iter()
            .filter(|d| d.acknowledged_at.is_none() && backend.is_none_or(|b| b == d.backend))
            .collect())
    }

    async fn divergences(&self, open_only: bool, limit: u32) -> Result<Vec<Divergence>, PortError> {
        let mut out: Vec<Divergence> = self
            .all_divergences()
            .into_iter()
            .filter(|d| !open_only || d.acknowledged_at.is_none())
            .collect();
        out.reverse();
        out.truncate(limit as usize);
        Ok(out)
    }

    async fn acknowledge_divergence(
        &self,
        id: i64,
        by: &str,
    ) -> Result<Option<Divergence>, PortError> {
        let mut inner = lock(&self.inner);
        Ok(inner
            .divergences
            .iter_mut()
            .find(|(_, d)| d.id == id)
            .map(|(_, d)| {
                if d.acknowledged_at.is_none() {
                    d.acknowledged_at = Some(Utc::now());
                    d.acknowledged_by = Some(by.to_owned());
                }
                d.clone()
            }))
    }

    async fn undelivered_divergences(
        &self,
        detected_by: &str,
        webhook: bool,
        limit: u32,
    ) -> Result<Vec<Divergence>, PortError> {
        Ok(self
            .all_divergences()
            .into_iter()
            .filter(|d| {
                d.detected_by == detected_by
                    && (d.published_at.is_none() || (webhook && d.delivered_at.is_none()))
            })
            .take(limit as usize)
            .collect())
    }

    async fn mark_divergence_published(&self, id: i64) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        if let Some((_, d)) = inner.divergences.iter_mut().find(|(_, d)| d.id == id) {
            d.published_at = Some(Utc::now());
        }
        Ok(())
    }

    async fn mark_divergence_delivered(&self, id: i64) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        if let Some((_, d)) = inner.divergences.iter_mut().find(|(_, d)| d.id == id) {
            d.delivered_at = Some(Utc::now());
        }
        Ok(())
    }

    async fn record_delivery_failure(&self, id: i64, error: &str) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        if let Some((_, d)) = inner.divergences.iter_mut().find(|(_, d)| d.id == id) {
            d.delivery_attempts += 1;
            d.last_delivery_error = Some(error.to_owned());
        }
        Ok(())
    }
}

#[derive(Default)]
struct SinkInner {
    received: Vec<serde_json::Value>,
    fail_next: u32,
}

/// A webhook that records what it receives and can fail on demand.
#[derive(Clone, Default)]
pub struct RecordingSink {
    inner: Arc<Mutex<SinkInner>>,
}

impl RecordingSink {
    /// A sink that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` sends fail.
    pub fn fail_next(&self, n: u32) {
        lock(&self.inner).fail_next = n;
    }

    /// What it accepted, in order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        lock(&self.inner).received.clone()
    }
}

#[async_trait]
impl AlertSink for RecordingSink {
    async fn send(&self, alert: &serde_json::Value) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(PortError::Unavailable {
                service: "webhook",
                message: "HTTP 503".into(),
            });
        }
        inner.received.push(alert.clone());
        Ok(())
    }
}

#[derive(Default)]
struct LogInner {
    leaves: Vec<Hash>,
    bodies: Vec<Vec<u8>>,
    fork: bool,
    rollback_to: Option<u64>,
    wrong_key: bool,
    down: bool,
    bad_consistency: bool,
    failing_note_fetches: usize,
}

/// A transparency log with real RFC 6962 trees and fault switches like the local log's.
#[derive(Clone)]
pub struct FakeLog {
    origin: String,
    inner: Arc<Mutex<LogInner>>,
}

impl FakeLog {
    /// An empty log with this origin.
    pub fn new(origin: &str) -> Self {
        FakeLog {
            origin: origin.to_owned(),
            inner: Arc::default(),
        }
    }

    /// Appends an entry; returns its index.
    pub fn append(&self, body: &[u8]) -> u64 {
        let mut inner = lock(&self.inner);
        inner.leaves.push(merkle::leaf_hash(body));
        inner.bodies.push(body.to_vec());
        inner.leaves.len() as u64 - 1
    }

    /// The honest leaf hashes.
    pub fn leaf_hashes(&self) -> Vec<Hash> {
        lock(&self.inner).leaves.clone()
    }

    /// Serves a fork: the last entry replaced by one the log never had.
    pub fn set_fork(&self, on: bool) {
        lock(&self.inner).fork = on;
    }

    /// Serves checkpoints of this older size.
    pub fn set_rollback(&self, to: Option<u64>) {
        lock(&self.inner).rollback_to = to;
    }

    /// Signs checkpoints with a wrong key.
    pub fn set_wrong_key(&self, on: bool) {
        lock(&self.inner).wrong_key = on;
    }

    /// Answers every request as unavailable.
    pub fn set_down(&self, on: bool) {
        lock(&self.inner).down = on;
    }

    /// Answers the next `n` fetches of the unverified checkpoint note as unavailable, as a
    /// log under load does while the signed checkpoint itself was served.
    pub fn fail_note_fetches(&self, n: usize) {
        lock(&self.inner).failing_note_fetches = n;
    }

    /// Serves consistency proofs that do not verify.
    pub fn set_bad_consistency(&self, on: bool) {
        lock(&self.inner).bad_consistency = on;
    }

    fn view(inner: &LogInner) -> Vec<Hash> {
        let mut leaves = inner.leaves.clone();
        if inner.fork
            && let Some(last) = leaves.last_mut()
        {
            *last = merkle::leaf_hash(b"an entry the log never had");
        }
        leaves
    }

    /// A stored receipt for the entry at `index` with its proof in the tree of `size`.
    pub fn stored_receipt(&self, backend: &str, index: u64, size: u64) -> StoredReceipt {
        let inner = lock(&self.inner);
        let leaves = &inner.leaves[..size as usize];
        let root = merkle::root_from_leaf_hashes(leaves);
        let receipt = Receipt {
            log_id: vec![1; 32],
            log_index: index,
            tree_id: None,
            integrated_time: None,
            kind_version: None,
            canonical_body: inner.bodies[index as usize].clone(),
            inclusion_proof: Some(InclusionProof {
                log_index: index,
                tree_size: size,
                root_hash: root,
                hashes: merkle::inclusion_proof(leaves, index).expect("index in tree"),
                checkpoint: Some(note_for(&self.origin, size, &root)),
            }),
            signed_entry_timestamp: None,
        };
        StoredReceipt {
            uuid: receipt.uuid(),
            backend: backend.to_owned(),
            submission_id: None,
            receipt,
            created_at: Utc::now(),
            verified_at: None,
        }
    }

    fn unavailable() -> RekorError {
        RekorError::Transient {
            message: "down".into(),
            retry_after: None,
        }
    }

    fn current(&self) -> Result<(String, u64, Hash), RekorError> {
        let inner = lock(&self.inner);
        if inner.down {
            return Err(Self::unavailable());
        }
        let leaves = Self::view(&inner);
        let size = inner.rollback_to.unwrap_or(leaves.len() as u64);
        let root = merkle::root_from_leaf_hashes(&leaves[..size as usize]);
        Ok((note_for(&self.origin, size, &root), size, root))
    }
}

#[async_trait]
impl RekorClient for FakeLog {
    fn backend(&self) -> &str {
        "fake"
    }

    async fn submit(&self, _s: &RekorSubmission) -> Result<Receipt, RekorError> {
        Err(RekorError::Unsupported("fake log".into()))
    }

    async fn entry_by_index(&self, _i: u64) -> Result<Receipt, RekorError> {
        Err(RekorError::Unsupported("fake log".into()))
    }

    async fn entry_by_uuid(&self, _u: &str) -> Result<Receipt, RekorError> {
        Err(RekorError::Unsupported("fake log".into()))
    }

    async fn inclusion_proof(
        &self,
        _i: u64,
        _s: Option<u64>,
    ) -> Result<InclusionProof, RekorError> {
        Err(RekorError::Unsupported("fake log".into()))
    }

    async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError> {
        let (note, size, root) = self.current()?;
        if lock(&self.inner).wrong_key {
            return Err(RekorError::Unverified(
                "checkpoint: signature does not verify".into(),
            ));
        }
        Ok(LogCheckpoint {
            note,
            checkpoint: Checkpoint {
                origin: self.origin.clone(),
                size,
                root,
                extensions: Vec::new(),
            },
        })
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, RekorError> {
        let inner = lock(&self.inner);
        if inner.down {
            return Err(Self::unavailable());
        }
        let leaves = Self::view(&inner);
        if old == 0 || old > new || new > leaves.len() as u64 {
            return Err(RekorError::Rejected {
                status: 400,
                message: format!("bad sizes {old} {new}"),
            });
        }
        let mut proof = merkle::consistency_proof(&leaves[..new as usize], old)
            .map_err(|e| RekorError::Invalid(e.to_string()))?;
        if inner.bad_consistency
            && let Some(first) = proof.first_mut()
        {
            first[0] ^= 1;
        }
        Ok(proof)
    }

    async fn checkpoint_note_unverified(&self) -> Result<String, RekorError> {
        {
            let mut inner = lock(&self.inner);
            if inner.failing_note_fetches > 0 {
                inner.failing_note_fetches -= 1;
                return Err(Self::unavailable());
            }
        }
        Ok(self.current()?.0)
    }
}
