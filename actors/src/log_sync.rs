//! The log-sync actor: one per configured transparency-log backend.
//!
//! Every `sync_interval` it runs one round on a task of its own (log calls may take
//! seconds; the mailbox never waits on them, and a round still running skips the tick):
//!
//! 1. fetch the checkpoint through the backend's client, which verifies signature and
//!    origin; a refused one is a `bad_signature` divergence with the note as served;
//! 2. compare it with the last checkpoint this node verified for its origin (from the
//!    store, so a restart resumes there): a smaller size is a `rollback`, the same size with
//!    another root a `fork`, a bigger one needs a consistency proof that verifies, else
//!    `consistency_failed`; a new origin (a new log, a shard rollover announced through
//!    config) is trusted on first use, and the empty tree is extended by any tree;
//! 3. re-verify the stored receipts this tree covers and that were not re-verified yet:
//!    each receipt's own proof, and its tree's consistency with the verified one, else
//!    `inclusion_failed`; once included in a verified tree, a receipt stays included in
//!    every later one, since each of those is proven consistent with it;
//! 4. only when everything passed: store the checkpoint, mark the receipts `verified_at`,
//!    and publish `rekor.checkpoints.observed` for every node's divergence detector.
//!
//! While the backend has an unacknowledged divergence (raised by any node) the round still
//! checks, but never stores or publishes: the stored checkpoint does not advance, and the
//! readiness gate `rekor-divergence:<backend>` keeps `/readyz` red until an operator
//! acknowledges it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::data::CheckpointObserved;
use events::{CloudEvent, EventKind, Subjects};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;

use crate::divergence::Raiser;
use crate::domain::divergence::{
    self, DivergenceKind, ReceiptCheck, Step, TreeHead, check_consistency, classify, dedupe_key,
    fork_key, note_body, receipt_check, reverify_receipt,
};
use crate::domain::merkle::Hash;
use crate::health::{ChildStatus, Health};
use crate::ports::{
    CheckpointStore, DivergenceStore, EventBus, LogCheckpoint, ObservedCheckpoint, PortError,
    RekorClient, RekorError, StoredReceipt,
};

/// The actor name of a backend's sync.
pub fn actor_name(backend: &str) -> String {
    format!("rekor-sync:{backend}")
}

/// The readiness gate a backend's unacknowledged divergences hold red.
pub fn gate_name(backend: &str) -> String {
    format!("rekor-divergence:{backend}")
}

/// What the sync needs from the outside.
#[derive(Clone)]
pub struct LogSyncDeps {
    /// The backend's client (verifies what it returns).
    pub client: Arc<dyn RekorClient>,
    /// Verified checkpoints and stored receipts.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Open divergences of the backend.
    pub divergences: Arc<dyn DivergenceStore>,
    /// Raises what a round finds.
    pub raiser: Raiser,
    /// Where observations go.
    pub bus: Arc<dyn EventBus>,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// The CloudEvents `source`.
    pub source: String,
    /// The readiness gates.
    pub health: Health,
}

/// How one round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// A new checkpoint was verified and stored.
    Advanced {
        /// Its size.
        size: u64,
        /// Receipts re-verified in this round.
        receipts: usize,
    },
    /// The log has not changed since the last verified checkpoint (receipts may have been
    /// re-verified).
    Unchanged {
        /// Its size.
        size: u64,
        /// Receipts re-verified in this round.
        receipts: usize,
    },
    /// Every check passed, but an unacknowledged divergence holds the backend.
    Held {
        /// Open divergences.
        open: usize,
    },
    /// A divergence was found (raised now or earlier).
    Diverged(DivergenceKind),
    /// The log or the store could not be reached; the next round tries again.
    Unavailable(String),
}

impl Round {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Round::Advanced { .. } => "advanced",
            Round::Unchanged { .. } => "unchanged",
            Round::Held { .. } => "held",
            Round::Diverged(_) => "diverged",
            Round::Unavailable(_) => "unavailable",
        }
    }
}

/// One backend's sync logic, separate from the actor so tests can run rounds directly.
#[derive(Clone)]
pub struct Syncer {
    deps: LogSyncDeps,
    receipt_batch: u32,
}

fn store_down(e: PortError) -> Round {
    Round::Unavailable(format!("store: {e}"))
}

fn note_evidence(role: &str, note: &str, size: u64, root: &Hash) -> serde_json::Value {
    json!({"role": role, "tree_size": size, "root_hash": hex::encode(root), "note": note})
}

impl Syncer {
    /// A syncer re-verifying at most `receipt_batch` receipts per round.
    pub fn new(deps: LogSyncDeps, receipt_batch: u32) -> Self {
        Syncer {
            deps,
            receipt_batch: receipt_batch.max(1),
        }
    }

    fn backend(&self) -> &str {
        self.deps.client.backend()
    }

    fn node(&self) -> &str {
        self.deps.raiser.node_id()
    }

    async fn raise(
        &self,
        origin: &str,
        kind: DivergenceKind,
        evidence: serde_json::Value,
        key: String,
    ) -> Round {
        match self
            .deps
            .raiser
            .raise(self.backend(), origin, kind, evidence, key)
            .await
        {
            Ok(_) => Round::Diverged(kind),
            // Found but not stored: the next round finds it again.
            Err(e) => {
                Round::Unavailable(format!("cannot store a {} divergence: {e}", kind.as_str()))
            }
        }
    }

    /// Sets the readiness gate from the backend's open divergences; returns how many.
    async fn refresh_gate(&self) -> Result<usize, PortError> {
        let open = self
            .deps
            .divergences
            .open_divergences(Some(self.backend()))
            .await?;
        metrics::gauge!("provd_rekor_open_divergences", "backend" => self.backend().to_owned())
            .set(open.len() as f64);
        let status = match open.first() {
            None => ChildStatus::Running,
            Some(d) => ChildStatus::Failed(format!(
                "{} unacknowledged divergence(s); first: #{} {} on {} (POST /api/v1/rekor/divergences/{}/ack)",
                open.len(),
                d.id,
                d.kind,
                d.origin,
                d.id
            )),
        };
        self.deps
            .health
            .set(&gate_name(self.backend()), true, status);
        Ok(open.len())
    }

    /// Runs one round. `published` is the observation last published by this syncer, so
    /// an unchanged log is announced once (again after a restart; the bus deduplicates).
    pub async fn round(&self, published: &mut Option<String>) -> Round {
        let round = self.checked_round(published).await;
        if let Round::Diverged(_) = round {
            // Readiness turns red now, not one interval later.
            if let Err(e) = self.refresh_gate().await {
                tracing::warn!(backend = self.backend(), error = %e, "cannot refresh the divergence gate");
            }
        }
        round
    }

    async fn checked_round(&self, published: &mut Option<String>) -> Round {
        let open = match self.refresh_gate().await {
            Ok(n) => n,
            Err(e) => return store_down(e),
        };
        let fetched = match self.deps.client.checkpoint().await {
            Ok(cp) => cp,
            Err(RekorError::Unverified(why)) => return self.bad_signature(&why).await,
            Err(e) => return Round::Unavailable(format!("checkpoint: {e}")),
        };
        let head = TreeHead {
            origin: fetched.checkpoint.origin.clone(),
            size: fetched.checkpoint.size,
            root: fetched.checkpoint.root,
        };
        let verified = match self
            .deps
            .checkpoints
            .latest_checkpoint(self.backend(), &head.origin, self.node())
            .await
        {
            Ok(v) => v.map(|s| s.checkpoint),
            Err(e) => return store_down(e),
        };
        let step = classify(
            verified.as_ref().map(ObservedCheckpoint::head).as_ref(),
            &head,
        );
        if let Some(round) = self
            .check_step(step, verified.as_ref(), &fetched, &head)
            .await
        {
            return round;
        }
        let verified_uuids = match self.reverify_receipts(&fetched, &head).await {
            Ok(u) => u,
            Err(round) => return round,
        };
        if open > 0 {
            return Round::Held { open };
        }
        let observed = ObservedCheckpoint {
            backend: self.backend().to_owned(),
            origin: head.origin.clone(),
            tree_size: head.size,
            root_hash: head.root,
            note: fetched.note.clone(),
            observed_by: self.node().to_owned(),
        };
        if step != Step::Unchanged
            && let Err(e) = self.deps.checkpoints.record_checkpoint(&observed).await
        {
            return store_down(e);
        }
        if !verified_uuids.is_empty() {
            if let Err(e) = self
                .deps
                .checkpoints
                .mark_receipts_verified(&verified_uuids)
                .await
            {
                return store_down(e);
            }
            metrics::counter!("provd_rekor_receipts_reverified_total", "backend" => self.backend().to_owned())
                .increment(verified_uuids.len() as u64);
        }
        self.publish(&observed, published).await;
        metrics::gauge!("provd_rekor_checkpoint_tree_size", "backend" => self.backend().to_owned())
            .set(head.size as f64);
        if step == Step::Unchanged {
            Round::Unchanged {
                size: head.size,
                receipts: verified_uuids.len(),
            }
        } else {
            tracing::info!(backend = self.backend(), origin = %head.origin, size = head.size, "checkpoint verified");
            Round::Advanced {
                size: head.size,
                receipts: verified_uuids.len(),
            }
        }
    }

    async fn bad_signature(&self, why: &str) -> Round {
        // The refused note itself is the evidence; fetch it as served.
        let note = match self.deps.client.checkpoint_note_unverified().await {
            Ok(n) => Some(n),
            // The divergence is keyed by the note; raised now under the error's text, the
            // same refused tree would be raised again, under its note, once the log answers.
            Err(e @ (RekorError::Transient { .. } | RekorError::CircuitOpen { .. })) => {
                return Round::Unavailable(format!(
                    "cannot fetch the refused checkpoint as evidence: {e}"
                ));
            }
            Err(e) => {
                tracing::warn!(backend = self.backend(), error = %e, "cannot fetch the refused checkpoint as evidence");
                None
            }
        };
        let origin = note
            .as_deref()
            .and_then(|n| n.split('\n').next())
            .filter(|o| !o.is_empty())
            .unwrap_or("unknown")
            .to_owned();
        // The same tree re-signed on every fetch (ECDSA) is one divergence: key by the text.
        let key_text = note.as_deref().map_or(why, note_body);
        let key = dedupe_key(DivergenceKind::BadSignature, &origin, &[key_text]);
        let evidence = json!({"error": why, "note": note});
        self.raise(&origin, DivergenceKind::BadSignature, evidence, key)
            .await
    }

    /// Checks the step from the verified checkpoint to the fetched one; `Some` ends the
    /// round (a divergence, or the log unreachable).
    async fn check_step(
        &self,
        step: Step,
        verified: Option<&ObservedCheckpoint>,
        fetched: &LogCheckpoint,
        head: &TreeHead,
    ) -> Option<Round> {
        let v = verified?;
        let both = || {
            json!({
                "checkpoints": [
                    note_evidence("verified", &v.note, v.tree_size, &v.root_hash),
                    note_evidence("fetched", &fetched.note, head.size, &head.root),
                ],
            })
        };
        match step {
            Step::First | Step::Unchanged | Step::GrewFromEmpty => None,
            Step::Fork => {
                let key = fork_key(&head.origin, head.size, &v.root_hash, &head.root);
                let mut evidence = both();
                evidence["split_view"] = json!(false);
                Some(
                    self.raise(&head.origin, DivergenceKind::Fork, evidence, key)
                        .await,
                )
            }
            Step::Rollback => {
                let key = dedupe_key(
                    DivergenceKind::Rollback,
                    &head.origin,
                    &[
                        &v.tree_size.to_string(),
                        &head.size.to_string(),
                        &hex::encode(head.root),
                    ],
                );
                Some(
                    self.raise(&head.origin, DivergenceKind::Rollback, both(), key)
                        .await,
                )
            }
            Step::Grew { from, to } => {
                let proof = match self.deps.client.consistency_proof(from, to).await {
                    Ok(p) => p,
                    Err(RekorError::Unverified(why)) => {
                        return Some(
                            self.consistency_failed(v, fetched, head, both(), &[], &why)
                                .await,
                        );
                    }
                    Err(e) => return Some(Round::Unavailable(format!("consistency proof: {e}"))),
                };
                match check_consistency(&v.head(), head, &proof) {
                    Ok(()) => None,
                    Err(e) => Some(
                        self.consistency_failed(v, fetched, head, both(), &proof, &e.to_string())
                            .await,
                    ),
                }
            }
        }
    }

    async fn consistency_failed(
        &self,
        v: &ObservedCheckpoint,
        _fetched: &LogCheckpoint,
        head: &TreeHead,
        mut evidence: serde_json::Value,
        proof: &[Hash],
        why: &str,
    ) -> Round {
        evidence["proof"] = json!(proof.iter().map(hex::encode).collect::<Vec<_>>());
        evidence["error"] = json!(why);
        let key = dedupe_key(
            DivergenceKind::ConsistencyFailed,
            &head.origin,
            &[
                &v.tree_size.to_string(),
                &hex::encode(v.root_hash),
                &head.size.to_string(),
                &hex::encode(head.root),
            ],
        );
        self.raise(
            &head.origin,
            DivergenceKind::ConsistencyFailed,
            evidence,
            key,
        )
        .await
    }

    /// Re-verifies the receipts the fetched tree covers; returns the UUIDs that passed, or
    /// the round's end when one failed or a proof could not be fetched.
    async fn reverify_receipts(
        &self,
        fetched: &LogCheckpoint,
        head: &TreeHead,
    ) -> Result<Vec<String>, Round> {
        if head.size == 0 {
            return Ok(Vec::new());
        }
        let receipts = self
            .deps
            .checkpoints
            .unverified_receipts(self.backend(), &head.origin, head.size, self.receipt_batch)
            .await
            .map_err(store_down)?;
        // One consistency proof per distinct receipt tree size.
        let mut proofs: BTreeMap<(u64, u64), Vec<Hash>> = BTreeMap::new();
        let mut ok = Vec::new();
        for r in &receipts {
            let Some(proof) = r.receipt.inclusion_proof.as_ref() else {
                continue;
            };
            let consistency =
                match receipt_check(proof.tree_size, head.size) {
                    ReceiptCheck::SameTree => Vec::new(),
                    ReceiptCheck::Consistency { from, to } => match proofs.get(&(from, to)) {
                        Some(p) => p.clone(),
                        None => {
                            let p = self.deps.client.consistency_proof(from, to).await.map_err(
                                |e| {
                                    Round::Unavailable(format!(
                                        "consistency proof for receipt {}: {e}",
                                        r.uuid
                                    ))
                                },
                            )?;
                            proofs.insert((from, to), p.clone());
                            p
                        }
                    },
                };
            match reverify_receipt(&r.receipt.canonical_body, proof, head, &consistency) {
                Ok(()) => ok.push(r.uuid.clone()),
                Err(failure) => {
                    return Err(self
                        .inclusion_failed(r, fetched, head, &consistency, &failure)
                        .await);
                }
            }
        }
        Ok(ok)
    }

    async fn inclusion_failed(
        &self,
        r: &StoredReceipt,
        fetched: &LogCheckpoint,
        head: &TreeHead,
        consistency: &[Hash],
        failure: &divergence::InclusionFailure,
    ) -> Round {
        let proof = r.receipt.inclusion_proof.as_ref();
        let evidence = json!({
            "uuid": r.uuid,
            "log_index": r.receipt.log_index,
            "error": failure.to_string(),
            "receipt_proof": proof.map(|p| json!({
                "log_index": p.log_index,
                "tree_size": p.tree_size,
                "root_hash": hex::encode(p.root_hash),
                "hashes": p.hashes.iter().map(hex::encode).collect::<Vec<_>>(),
            })),
            "consistency_proof": consistency.iter().map(hex::encode).collect::<Vec<_>>(),
            "checkpoints": [
                proof.and_then(|p| p.checkpoint.as_ref()).map(|n| json!({"role": "receipt", "note": n})),
                note_evidence("fetched", &fetched.note, head.size, &head.root),
            ],
        });
        let key = dedupe_key(
            DivergenceKind::InclusionFailed,
            &head.origin,
            &[&r.uuid, &hex::encode(head.root)],
        );
        self.raise(&head.origin, DivergenceKind::InclusionFailed, evidence, key)
            .await
    }

    async fn publish(&self, observed: &ObservedCheckpoint, published: &mut Option<String>) {
        let id = format!(
            "{}:{}:{}:{}",
            observed.observed_by,
            observed.origin,
            observed.tree_size,
            hex::encode(observed.root_hash)
        );
        if published.as_deref() == Some(id.as_str()) {
            return;
        }
        let event = CloudEvent::new(
            self.deps.source.clone(),
            CheckpointObserved {
                backend: observed.backend.clone(),
                origin: observed.origin.clone(),
                tree_size: observed.tree_size,
                root_hash: hex::encode(observed.root_hash),
                note: observed.note.clone(),
                observed_by: observed.observed_by.clone(),
            },
        );
        let subject = self.deps.subjects.subject(EventKind::CheckpointObserved);
        match crate::trace::publish(self.deps.bus.as_ref(), &subject, &id, event).await {
            Ok(()) => *published = Some(id),
            // Stored already; the next round publishes it (deduplicated by its id).
            Err(e) => {
                tracing::warn!(backend = self.backend(), error = %e, "cannot publish the observation; will retry")
            }
        }
    }
}

/// The actor. Config lives here; the ticker and the round in flight live in its state.
#[derive(Clone)]
pub struct LogSync {
    syncer: Syncer,
    interval: Duration,
}

/// Messages the sync handles.
pub enum LogSyncMsg {
    /// Time for a round.
    Tick,
    /// A round ended.
    Done(Round, Option<String>),
}

/// The sync's state.
pub struct LogSyncState {
    _ticker: crate::pump::Pump,
    running: bool,
    published: Option<String>,
    last_verified: Option<Instant>,
    started: Instant,
}

impl LogSync {
    /// A sync running a round every `interval`.
    pub fn new(deps: LogSyncDeps, interval: Duration, receipt_batch: u32) -> Self {
        LogSync {
            syncer: Syncer::new(deps, receipt_batch),
            interval,
        }
    }
}

impl Actor for LogSync {
    type Msg = LogSyncMsg;
    type State = LogSyncState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = self.interval;
        let ticker = crate::pump::Pump::spawn(async move {
            // The first round comes one interval after start, so a starting node does not
            // add its sync reads to whatever else it sends the log first.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if myself.cast(LogSyncMsg::Tick).is_err() {
                    return;
                }
            }
        });
        Ok(LogSyncState {
            _ticker: ticker,
            running: false,
            published: None,
            last_verified: None,
            started: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let backend = self.syncer.backend().to_owned();
        match msg {
            LogSyncMsg::Tick => {
                let since = state.last_verified.unwrap_or(state.started);
                metrics::gauge!("provd_rekor_checkpoint_age_seconds", "backend" => backend)
                    .set(since.elapsed().as_secs_f64());
                if state.running {
                    return Ok(());
                }
                state.running = true;
                let syncer = self.syncer.clone();
                let mut published = state.published.clone();
                tokio::spawn(async move {
                    let round = syncer.round(&mut published).await;
                    let _ = myself.cast(LogSyncMsg::Done(round, published));
                });
            }
            LogSyncMsg::Done(round, published) => {
                state.running = false;
                state.published = published;
                metrics::counter!("provd_rekor_sync_ticks_total", "backend" => backend.clone(), "outcome" => round.label())
                    .increment(1);
                match &round {
                    Round::Advanced { .. } | Round::Unchanged { .. } => {
                        state.last_verified = Some(Instant::now());
                        metrics::gauge!("provd_rekor_checkpoint_age_seconds", "backend" => backend)
                            .set(0.0);
                    }
                    Round::Unavailable(why) => {
                        tracing::warn!(backend = %backend, error = %why, "log sync round failed; next round retries");
                    }
                    Round::Held { open } => {
                        tracing::debug!(backend = %backend, open, "log sync held by unacknowledged divergences");
                    }
                    Round::Diverged(kind) => {
                        tracing::warn!(backend = %backend, kind = kind.as_str(), "log sync found a divergence");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryBus;
    use crate::testing_monitor::{FakeLog, MemoryMonitor};

    struct Fixture {
        log: FakeLog,
        store: MemoryMonitor,
        bus: Arc<MemoryBus>,
        health: Health,
        syncer: Syncer,
        published: Option<String>,
    }

    impl Fixture {
        fn new(node: &str) -> Fixture {
            Self::with(FakeLog::new("log.example"), MemoryMonitor::new(), node)
        }

        fn with(log: FakeLog, store: MemoryMonitor, node: &str) -> Fixture {
            let bus = Arc::new(MemoryBus::new());
            let health = Health::new();
            let syncer = Syncer::new(
                LogSyncDeps {
                    client: Arc::new(log.clone()),
                    checkpoints: Arc::new(store.clone()),
                    divergences: Arc::new(store.clone()),
                    raiser: Raiser::new(Arc::new(store.clone()), node),
                    bus: bus.clone(),
                    subjects: Subjects::new(""),
                    source: "urn:test".into(),
                    health: health.clone(),
                },
                100,
            );
            Fixture {
                log,
                store,
                bus,
                health,
                syncer,
                published: None,
            }
        }

        async fn round(&mut self) -> Round {
            self.syncer.round(&mut self.published).await
        }

        fn kinds(&self) -> Vec<String> {
            self.store
                .all_divergences()
                .into_iter()
                .map(|d| d.kind)
                .collect()
        }

        fn grow(&self, n: usize) {
            for _ in 0..n {
                self.log.append(uuid::Uuid::new_v4().as_bytes());
            }
        }
    }

    #[tokio::test]
    async fn an_empty_then_growing_then_unchanged_log_raises_nothing() {
        let mut f = Fixture::new("a");
        assert_eq!(
            f.round().await,
            Round::Advanced {
                size: 0,
                receipts: 0
            }
        );
        for i in 0..50 {
            f.grow(i % 3);
            let r = f.round().await;
            assert!(
                matches!(r, Round::Advanced { .. } | Round::Unchanged { .. }),
                "round {i}: {r:?}"
            );
        }
        assert!(f.kinds().is_empty());
        assert!(f.health.ready());
        let observed = f.bus.published("rekor.checkpoints.observed");
        let distinct_sizes: std::collections::BTreeSet<u64> = f
            .store
            .all_checkpoints()
            .iter()
            .map(|c| c.checkpoint.tree_size)
            .collect();
        assert_eq!(
            observed.len(),
            distinct_sizes.len(),
            "one observation per new checkpoint"
        );
    }

    #[tokio::test]
    async fn receipts_covered_by_the_tree_get_verified_once() {
        let mut f = Fixture::new("a");
        f.grow(5);
        let early = f.log.stored_receipt("fake", 2, 4);
        f.store.add_receipt(early.clone());
        f.grow(3);
        let late = f.log.stored_receipt("fake", 6, 8);
        f.store.add_receipt(late.clone());
        assert_eq!(
            f.round().await,
            Round::Advanced {
                size: 8,
                receipts: 2
            }
        );
        assert!(f.store.receipt(&early.uuid).unwrap().verified_at.is_some());
        assert!(f.store.receipt(&late.uuid).unwrap().verified_at.is_some());
        assert_eq!(
            f.round().await,
            Round::Unchanged {
                size: 8,
                receipts: 0
            }
        );
    }

    #[tokio::test]
    async fn a_receipt_from_another_tree_is_an_inclusion_failure_and_holds_the_sync() {
        let mut f = Fixture::new("a");
        f.grow(4);
        // A receipt handed out from a forked view: its tree is not the log's.
        let forged = {
            let forked = FakeLog::new("log.example");
            for _ in 0..3 {
                forked.append(b"x");
            }
            forked.append(b"y");
            forked.stored_receipt("fake", 3, 4)
        };
        f.store.add_receipt(forged);
        assert_eq!(
            f.round().await,
            Round::Diverged(DivergenceKind::InclusionFailed)
        );
        assert!(f.store.all_checkpoints().is_empty(), "nothing stored");
        assert_eq!(f.kinds(), ["inclusion_failed"]);
        let d = &f.store.all_divergences()[0];
        assert!(d.evidence["receipt_proof"]["hashes"].is_array());
        assert!(d.evidence["checkpoints"][1]["note"].is_string());
    }

    #[tokio::test]
    async fn a_refused_checkpoint_whose_note_cannot_be_fetched_yet_is_raised_once_by_its_note() {
        let mut f = Fixture::new("a");
        f.grow(3);
        assert!(matches!(f.round().await, Round::Advanced { size: 3, .. }));
        f.log.set_wrong_key(true);
        f.log.fail_note_fetches(1);
        assert!(
            matches!(f.round().await, Round::Unavailable(ref why) if why.contains("evidence")),
            "no divergence without its evidence; the next round tries again"
        );
        assert!(f.kinds().is_empty());
        for _ in 0..2 {
            assert_eq!(
                f.round().await,
                Round::Diverged(DivergenceKind::BadSignature)
            );
        }
        assert_eq!(
            f.kinds(),
            ["bad_signature"],
            "one divergence per refused tree"
        );
        let d = &f.store.all_divergences()[0];
        assert!(
            d.evidence["note"]
                .as_str()
                .unwrap()
                .starts_with("log.example\n")
        );
    }

    #[tokio::test]
    async fn fork_rollback_bad_signature_and_bad_proofs_are_raised_once_with_evidence() {
        let mut f = Fixture::new("a");
        f.grow(5);
        assert!(matches!(f.round().await, Round::Advanced { size: 5, .. }));

        f.log.set_fork(true);
        assert_eq!(f.round().await, Round::Diverged(DivergenceKind::Fork));
        assert_eq!(f.round().await, Round::Diverged(DivergenceKind::Fork));
        assert_eq!(f.kinds(), ["fork"], "raised once, not every round");
        let fork = &f.store.all_divergences()[0];
        let notes = fork.evidence["checkpoints"].as_array().unwrap();
        assert_eq!(notes.len(), 2);
        assert_ne!(notes[0]["note"], notes[1]["note"]);
        assert!(!f.health.ready(), "the gate is red while it is open");
        f.log.set_fork(false);
        // Honest again, but held until acknowledged: checked, not stored.
        f.grow(1);
        assert_eq!(f.round().await, Round::Held { open: 1 });
        assert_eq!(f.store.all_checkpoints().len(), 1);
        f.store
            .acknowledge_divergence(fork.id, "ops")
            .await
            .unwrap();
        assert!(matches!(f.round().await, Round::Advanced { size: 6, .. }));
        assert!(f.health.ready());

        f.log.set_rollback(Some(3));
        assert_eq!(f.round().await, Round::Diverged(DivergenceKind::Rollback));
        f.log.set_rollback(None);

        f.log.set_wrong_key(true);
        assert_eq!(
            f.round().await,
            Round::Diverged(DivergenceKind::BadSignature)
        );
        assert_eq!(
            f.round().await,
            Round::Diverged(DivergenceKind::BadSignature)
        );
        f.log.set_wrong_key(false);

        f.grow(2);
        f.log.set_bad_consistency(true);
        assert_eq!(
            f.round().await,
            Round::Diverged(DivergenceKind::ConsistencyFailed)
        );
        f.log.set_bad_consistency(false);
        assert_eq!(
            f.kinds(),
            ["fork", "rollback", "bad_signature", "consistency_failed"]
        );
        let bad = &f.store.all_divergences()[2];
        assert!(
            bad.evidence["note"]
                .as_str()
                .unwrap()
                .starts_with("log.example\n")
        );
        let cons = &f.store.all_divergences()[3];
        assert!(!cons.evidence["proof"].as_array().unwrap().is_empty());
        assert_eq!(
            f.store.all_checkpoints().len(),
            2,
            "never advanced on a failure"
        );
    }

    #[tokio::test]
    async fn a_restart_resumes_from_the_stored_checkpoint_and_an_outage_is_no_divergence() {
        let mut f = Fixture::new("a");
        f.grow(3);
        f.round().await;
        // A new syncer on the same store (a restart) proves consistency from size 3.
        let mut again = Fixture::with(f.log.clone(), f.store.clone(), "a");
        f.grow(2);
        f.log.set_bad_consistency(true);
        assert_eq!(
            again.round().await,
            Round::Diverged(DivergenceKind::ConsistencyFailed)
        );
        f.log.set_bad_consistency(false);
        f.log.set_down(true);
        assert!(matches!(again.round().await, Round::Unavailable(_)));
        assert_eq!(again.kinds(), ["consistency_failed"]);
    }

    #[tokio::test]
    async fn a_new_origin_is_trusted_on_first_use() {
        let store = MemoryMonitor::new();
        let mut old = Fixture::with(FakeLog::new("shard-1"), store.clone(), "a");
        old.grow(10);
        old.round().await;
        // The rollover: a new, smaller shard under another origin.
        let mut new = Fixture::with(FakeLog::new("shard-2"), store.clone(), "a");
        new.grow(1);
        assert!(matches!(new.round().await, Round::Advanced { size: 1, .. }));
        assert!(store.all_divergences().is_empty());
    }
}
