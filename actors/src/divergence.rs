//! Divergence detection across nodes, and the alert outbox.
//!
//! * [`Raiser`]: what every detecting party shares: store the divergence once (by its
//!   dedupe key, so a fork seen on every tick or by several nodes is raised once), count it,
//!   and wake the outbox. The log-sync actors raise what they find themselves through it.
//! * [`Detector`]: one per node. A durable consumer of its own on
//!   `rekor.checkpoints.observed` sees the verified checkpoints of every node; each is
//!   stored (idempotently, so nodes with separate databases compare too) and compared with
//!   the stored checkpoints of the same origin and size from any node. Two roots for one
//!   size is a fork, a *split view* when different nodes saw them.
//! * [`AlertOutbox`]: one per node, a task beside its actor. For each divergence this node
//!   raised and has not yet sent out, it publishes `rekor.checkpoints.diverged` and POSTs
//!   the webhook, recording each step, with backoff per divergence. A crash between a send
//!   and its record repeats the send; the event's message id and the alert's `id` let
//!   receivers drop the repeat.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::data::{CheckpointDiverged, CheckpointObserved};
use events::streams::REKOR_EVENTS;
use events::{CloudEvent, EventKind, Subjects, decode_as};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use crate::domain::divergence::{DivergenceKind, check_consistency, dedupe_key, fork_key};
use crate::domain::note::{Checkpoint, Note};
use crate::ports::{
    AlertSink, CheckpointStore, ConsumerSpec, Delivery, Divergence, DivergenceStore, EventBus,
    NewDivergence, ObservedCheckpoint, PortError, RejectedEventStore, RekorClient, StartPosition,
};
use crate::{pump, rejected};

/// The detector's actor name.
pub const DETECTOR_NAME: &str = "rekor-divergence-detector";
/// The outbox's actor name.
pub const OUTBOX_NAME: &str = "rekor-alerts";

/// Describes the metrics of log monitoring and starts the divergence counter of every
/// backend and kind at zero.
pub fn describe_metrics<'a>(backends: impl IntoIterator<Item = &'a str>) {
    metrics::describe_counter!(
        "provd_rekor_divergences_total",
        "Divergences raised by this node, by backend and kind"
    );
    metrics::describe_gauge!(
        "provd_rekor_checkpoint_tree_size",
        "Tree size of the last checkpoint this node verified, by backend"
    );
    metrics::describe_gauge!(
        "provd_rekor_checkpoint_age_seconds",
        "Seconds since this node last verified a backend's current checkpoint"
    );
    metrics::describe_gauge!(
        "provd_rekor_open_divergences",
        "Unacknowledged divergences of a backend (from any node)"
    );
    metrics::describe_counter!(
        "provd_rekor_sync_ticks_total",
        "Log-sync rounds by backend and outcome"
    );
    metrics::describe_counter!(
        "provd_rekor_receipts_reverified_total",
        "Stored receipts re-verified against a verified checkpoint, by backend"
    );
    metrics::describe_counter!(
        "provd_rekor_alerts_total",
        "Divergence alerts by channel (event, webhook) and outcome (sent, failed)"
    );
    for b in backends {
        for k in DivergenceKind::ALL {
            metrics::counter!("provd_rekor_divergences_total", "backend" => b.to_owned(), "kind" => k.as_str())
                .absolute(0);
        }
        metrics::counter!("provd_rekor_receipts_reverified_total", "backend" => b.to_owned())
            .increment(0);
        for outcome in ["advanced", "unchanged", "held", "diverged", "unavailable"] {
            metrics::counter!("provd_rekor_sync_ticks_total", "backend" => b.to_owned(), "outcome" => outcome)
                .increment(0);
        }
    }
    for channel in ["event", "webhook"] {
        for outcome in ["sent", "failed"] {
            metrics::counter!("provd_rekor_alerts_total", "channel" => channel, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// Stores, counts and announces divergences. Cheap to clone.
#[derive(Clone)]
pub struct Raiser {
    store: Arc<dyn DivergenceStore>,
    node_id: String,
    wake: Arc<Notify>,
}

impl Raiser {
    /// A raiser recording as `node_id`.
    pub fn new(store: Arc<dyn DivergenceStore>, node_id: impl Into<String>) -> Self {
        Raiser {
            store,
            node_id: node_id.into(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// What the outbox waits on.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// This node.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Raises a divergence unless one with `dedupe_key` exists; returns it when new.
    pub async fn raise(
        &self,
        backend: &str,
        origin: &str,
        kind: DivergenceKind,
        evidence: serde_json::Value,
        dedupe_key: String,
    ) -> Result<Option<Divergence>, PortError> {
        let new = NewDivergence {
            backend: backend.to_owned(),
            origin: origin.to_owned(),
            kind,
            evidence,
            detected_by: self.node_id.clone(),
            dedupe_key,
        };
        let raised = self.store.raise_divergence(&new).await?;
        if let Some(d) = &raised {
            metrics::counter!("provd_rekor_divergences_total", "backend" => backend.to_owned(), "kind" => kind.as_str())
                .increment(1);
            tracing::error!(
                id = d.id,
                backend,
                origin,
                kind = kind.as_str(),
                "transparency log divergence detected"
            );
            self.wake.notify_one();
        }
        Ok(raised)
    }
}

/// What the detector needs from the outside.
#[derive(Clone)]
pub struct DetectorDeps {
    /// The bus carrying every node's observations.
    pub bus: Arc<dyn EventBus>,
    /// Stored checkpoints of every node.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Where malformed observations are recorded.
    pub rejects: Arc<dyn RejectedEventStore>,
    /// Raises what it finds.
    pub raiser: Raiser,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// This node's clients by backend name: views of different sizes are proven consistent
    /// through this node's own view of the log.
    pub clients: BTreeMap<String, Arc<dyn RekorClient>>,
}

/// The cross-node divergence detector. Config lives here; the pump lives in its state.
#[derive(Clone)]
pub struct Detector {
    deps: DetectorDeps,
}

/// Messages the detector handles.
pub enum DetectorMsg {
    /// A batch of observations; reply when every delivery is settled.
    Batch(Vec<Box<dyn Delivery>>, oneshot::Sender<()>),
}

/// The running pump.
pub struct DetectorState {
    _pump: pump::Pump,
}

/// The durable consumer name of a node's detector: NATS refuses `.`, `*`, `>` and spaces.
pub fn detector_durable(node_id: &str) -> String {
    let node: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{DETECTOR_NAME}-{node}")
}

/// An observation whose note says what its fields say.
fn parse_observation(obs: &CheckpointObserved) -> Result<ObservedCheckpoint, String> {
    let root: [u8; 32] = hex::decode(&obs.root_hash)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| "field `root_hash`: expected 64 hex characters".to_owned())?;
    let note = Note::parse(obs.note.as_bytes()).map_err(|e| format!("field `note`: {e}"))?;
    let cp = Checkpoint::parse(note.text()).map_err(|e| format!("field `note`: {e}"))?;
    if cp.origin != obs.origin || cp.size != obs.tree_size || cp.root != root {
        return Err("the note's origin, size or root differs from the observation's fields".into());
    }
    if obs.backend.is_empty() || obs.observed_by.is_empty() {
        return Err("fields `backend` and `observed_by` must not be empty".into());
    }
    Ok(ObservedCheckpoint {
        backend: obs.backend.clone(),
        origin: obs.origin.clone(),
        tree_size: obs.tree_size,
        root_hash: root,
        note: obs.note.clone(),
        observed_by: obs.observed_by.clone(),
    })
}

/// What became of one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Consistent with everything stored.
    Consistent,
    /// A fork or split view was raised (or had been already).
    Fork,
    /// Malformed: recorded and dropped.
    Rejected,
    /// The store failed: redelivered later.
    Retry,
}

impl Detector {
    /// A detector with these dependencies.
    pub fn new(deps: DetectorDeps) -> Self {
        Detector { deps }
    }

    /// This node's durable consumer on every node's observations.
    pub fn consumer(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: self.deps.subjects.stream_name(&REKOR_EVENTS),
            durable: detector_durable(self.deps.raiser.node_id()),
            filter_subject: self.deps.subjects.subject(EventKind::CheckpointObserved),
            // Observations made before this node first started still show a split view.
            start: StartPosition::All,
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            max_ack_pending: 256,
        }
    }

    /// Compares one observation with what is stored, raising a fork when two roots exist
    /// for its origin and size.
    pub async fn observe(&self, obs: &ObservedCheckpoint) -> Result<Outcome, PortError> {
        self.deps.checkpoints.record_checkpoint(obs).await?;
        let Some(other) = self
            .deps
            .checkpoints
            .conflicting_checkpoint(&obs.origin, obs.tree_size, &obs.root_hash)
            .await?
        else {
            return self.compare_sizes(obs).await;
        };
        let o = &other.checkpoint;
        let split_view = o.observed_by != obs.observed_by;
        let evidence = json!({
            "tree_size": obs.tree_size,
            "split_view": split_view,
            "checkpoints": [
                {"observed_by": obs.observed_by, "backend": obs.backend, "root_hash": hex::encode(obs.root_hash), "note": obs.note},
                {"observed_by": o.observed_by, "backend": o.backend, "root_hash": hex::encode(o.root_hash), "note": o.note},
            ],
        });
        let key = fork_key(&obs.origin, obs.tree_size, &obs.root_hash, &o.root_hash);
        // Attribute it to this node's backend name for the log when it saw one side, so
        // its sync is held (nodes may name one log differently).
        let backend = if o.observed_by == self.deps.raiser.node_id() {
            &o.backend
        } else {
            &obs.backend
        };
        self.deps
            .raiser
            .raise(backend, &obs.origin, DivergenceKind::Fork, evidence, key)
            .await?;
        Ok(Outcome::Fork)
    }

    /// Two nodes' views of one origin at different sizes: asks this node's client for the
    /// consistency proof between them. A proof that does not verify is a split view; no
    /// proof (the log unreachable, or refusing a size it does not have) proves nothing, and
    /// a later observation tries again.
    async fn compare_sizes(&self, obs: &ObservedCheckpoint) -> Result<Outcome, PortError> {
        let me = self.deps.raiser.node_id();
        let (mine, theirs) = if obs.observed_by == me {
            let theirs = self
                .deps
                .checkpoints
                .latest_foreign_checkpoint(&obs.origin, me)
                .await?;
            (Some(obs.clone()), theirs.map(|s| s.checkpoint))
        } else {
            let mine = self
                .deps
                .checkpoints
                .latest_checkpoint(&obs.backend, &obs.origin, me)
                .await?;
            (mine.map(|s| s.checkpoint), Some(obs.clone()))
        };
        let (Some(mine), Some(theirs)) = (mine, theirs) else {
            return Ok(Outcome::Consistent);
        };
        let Some(client) = self.deps.clients.get(&mine.backend) else {
            return Ok(Outcome::Consistent);
        };
        let (old, new) = if mine.tree_size < theirs.tree_size {
            (&mine, &theirs)
        } else {
            (&theirs, &mine)
        };
        if old.tree_size == new.tree_size || old.tree_size == 0 {
            return Ok(Outcome::Consistent);
        }
        let proof = match client.consistency_proof(old.tree_size, new.tree_size).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(origin = %obs.origin, error = %e, "cannot prove two nodes' views consistent now");
                return Ok(Outcome::Consistent);
            }
        };
        let Err(error) = check_consistency(&old.head(), &new.head(), &proof) else {
            return Ok(Outcome::Consistent);
        };
        let side = |c: &ObservedCheckpoint| json!({"observed_by": c.observed_by, "backend": c.backend, "tree_size": c.tree_size, "root_hash": hex::encode(c.root_hash), "note": c.note});
        let evidence = json!({
            "split_view": true,
            "checkpoints": [side(old), side(new)],
            "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
            "error": error.to_string(),
        });
        let key = dedupe_key(
            DivergenceKind::Fork,
            &obs.origin,
            &[
                &old.tree_size.to_string(),
                &hex::encode(old.root_hash),
                &new.tree_size.to_string(),
                &hex::encode(new.root_hash),
            ],
        );
        self.deps
            .raiser
            .raise(
                &mine.backend,
                &obs.origin,
                DivergenceKind::Fork,
                evidence,
                key,
            )
            .await?;
        Ok(Outcome::Fork)
    }

    async fn process(&self, delivery: &dyn Delivery) -> Outcome {
        let parsed = decode_as::<CheckpointObserved>(delivery.payload())
            .map_err(|e| (e.reason.as_str(), e.detail, e.event_id))
            .and_then(|ev| {
                let id = Some(ev.id.clone());
                parse_observation(&ev.data).map_err(|d| ("invalid_data", d, id))
            });
        let obs = match parsed {
            Ok(o) => o,
            Err((reason, detail, event_id)) => {
                rejected::reject(
                    self.deps.rejects.as_ref(),
                    delivery,
                    EventKind::CheckpointObserved.base_subject(),
                    reason,
                    detail,
                    event_id,
                )
                .await;
                return Outcome::Rejected;
            }
        };
        match self.observe(&obs).await {
            Ok(outcome) => {
                if let Err(e) = delivery.ack().await {
                    tracing::warn!(error = %e, "ack failed; the observation comes again (harmless)");
                }
                outcome
            }
            Err(e) => {
                let delay =
                    pump::retry_delay(u32::try_from(delivery.delivered()).unwrap_or(8).min(8));
                tracing::warn!(error = %e, "cannot compare an observation; will retry");
                let _ = delivery.nak(delay).await;
                Outcome::Retry
            }
        }
    }
}

impl Actor for Detector {
    type Msg = DetectorMsg;
    type State = DetectorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let pump = pump::Pump::spawn(pump::run_batches(
            self.deps.bus.clone(),
            self.consumer(),
            DETECTOR_NAME,
            64,
            myself,
            DetectorMsg::Batch,
            |m| {
                let DetectorMsg::Batch(b, _) = m;
                Some(b)
            },
        ));
        Ok(DetectorState { _pump: pump })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DetectorMsg::Batch(deliveries, done) => {
                // Store round trips run beside the mailbox.
                let this = self.clone();
                tokio::spawn(async move {
                    for d in deliveries {
                        this.process(d.as_ref()).await;
                    }
                    let _ = done.send(());
                });
                Ok(())
            }
        }
    }
}

/// What the outbox needs from the outside.
#[derive(Clone)]
pub struct OutboxDeps {
    /// Divergences and their delivery state.
    pub store: Arc<dyn DivergenceStore>,
    /// Where `rekor.checkpoints.diverged` goes.
    pub bus: Arc<dyn EventBus>,
    /// The webhook, when one is configured.
    pub webhook: Option<Arc<dyn AlertSink>>,
    /// Shared with the raiser: wakes the outbox at once.
    pub raiser: Raiser,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// The CloudEvents `source`.
    pub source: String,
}

/// The alert outbox. Config lives here; its task lives in its state.
#[derive(Clone)]
pub struct AlertOutbox {
    deps: OutboxDeps,
    poll: Duration,
}

/// Messages: none besides stopping; the work runs on the task.
pub enum OutboxMsg {}

/// The running task.
pub struct OutboxState {
    _task: pump::Pump,
}

/// The JSON a webhook receives for a divergence.
pub fn alert_json(d: &Divergence) -> serde_json::Value {
    json!({
        "id": d.id,
        "backend": d.backend,
        "origin": d.origin,
        "kind": d.kind,
        "evidence": d.evidence,
        "detected_by": d.detected_by,
        "detected_at": d.detected_at,
    })
}

impl AlertOutbox {
    /// An outbox that also looks every `poll` (divergences from before a restart).
    pub fn new(deps: OutboxDeps, poll: Duration) -> Self {
        AlertOutbox { deps, poll }
    }

    /// One pass: publishes and delivers what is due. Returns how many steps were done.
    pub async fn run_once(&self, next_try: &mut HashMap<i64, (Instant, u32)>) -> usize {
        let pending = match self
            .deps
            .store
            .undelivered_divergences(self.deps.raiser.node_id(), self.deps.webhook.is_some(), 32)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the divergence outbox");
                return 0;
            }
        };
        let mut done = 0;
        let now = Instant::now();
        for d in pending {
            if next_try.get(&d.id).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            let mut failed = false;
            if d.published_at.is_none() {
                let event = CloudEvent::new(
                    self.deps.source.clone(),
                    CheckpointDiverged {
                        backend: d.backend.clone(),
                        origin: d.origin.clone(),
                        kind: d.kind.clone(),
                        evidence: d.evidence.clone(),
                        detected_by: d.detected_by.clone(),
                    },
                );
                let subject = self.deps.subjects.subject(EventKind::CheckpointDiverged);
                let msg_id = format!("divergence-{}", d.id);
                let r =
                    match crate::trace::publish(self.deps.bus.as_ref(), &subject, &msg_id, event)
                        .await
                    {
                        Ok(()) => self.deps.store.mark_divergence_published(d.id).await,
                        Err(e) => Err(e),
                    };
                let outcome = if r.is_ok() { "sent" } else { "failed" };
                metrics::counter!("provd_rekor_alerts_total", "channel" => "event", "outcome" => outcome).increment(1);
                match r {
                    Ok(()) => done += 1,
                    Err(e) => {
                        tracing::warn!(id = d.id, error = %e, "cannot publish the divergence; will retry");
                        failed = true;
                    }
                }
            }
            if let (Some(sink), None) = (&self.deps.webhook, d.delivered_at) {
                match sink.send(&alert_json(&d)).await {
                    Ok(()) => {
                        metrics::counter!("provd_rekor_alerts_total", "channel" => "webhook", "outcome" => "sent").increment(1);
                        if let Err(e) = self.deps.store.mark_divergence_delivered(d.id).await {
                            // Sent again on the next pass: at least once, never lost.
                            tracing::warn!(id = d.id, error = %e, "cannot record the delivery");
                            failed = true;
                        } else {
                            done += 1;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("provd_rekor_alerts_total", "channel" => "webhook", "outcome" => "failed").increment(1);
                        tracing::warn!(id = d.id, error = %e, "webhook refused the divergence alert; will retry");
                        let _ = self
                            .deps
                            .store
                            .record_delivery_failure(d.id, &e.to_string())
                            .await;
                        failed = true;
                    }
                }
            }
            if failed {
                let tries = next_try.get(&d.id).map_or(0, |(_, n)| *n);
                next_try.insert(d.id, (now + pump::retry_delay(tries), tries + 1));
            } else {
                next_try.remove(&d.id);
            }
        }
        done
    }

    async fn run(self) {
        let wake = self.deps.raiser.wake();
        let mut next_try = HashMap::new();
        loop {
            self.run_once(&mut next_try).await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

impl Actor for AlertOutbox {
    type Msg = OutboxMsg;
    type State = OutboxState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OutboxState {
            _task: pump::Pump::spawn(self.clone().run()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryBus;
    use crate::testing_monitor::{FakeLog, MemoryMonitor, RecordingSink};

    fn observed(node: &str, size: u64, root: u8) -> ObservedCheckpoint {
        let root = [root; 32];
        ObservedCheckpoint {
            backend: "lab".into(),
            origin: "log.example".into(),
            tree_size: size,
            root_hash: root,
            note: crate::testing_monitor::note_for("log.example", size, &root),
            observed_by: node.into(),
        }
    }

    fn detector(store: &MemoryMonitor, node: &str) -> Detector {
        detector_with(store, node, BTreeMap::new())
    }

    fn detector_with(
        store: &MemoryMonitor,
        node: &str,
        clients: BTreeMap<String, Arc<dyn RekorClient>>,
    ) -> Detector {
        Detector::new(DetectorDeps {
            bus: Arc::new(MemoryBus::new()),
            checkpoints: Arc::new(store.clone()),
            rejects: Arc::new(crate::testing::MemoryStore::new()),
            raiser: Raiser::new(Arc::new(store.clone()), node),
            subjects: Subjects::new(""),
            clients,
        })
    }

    fn observed_from(log: &FakeLog, node: &str, size: usize) -> ObservedCheckpoint {
        let leaves = log.leaf_hashes();
        let root = crate::domain::merkle::root_from_leaf_hashes(&leaves[..size]);
        ObservedCheckpoint {
            backend: "lab".into(),
            origin: "log.example".into(),
            tree_size: size as u64,
            root_hash: root,
            note: crate::testing_monitor::note_for("log.example", size as u64, &root),
            observed_by: node.into(),
        }
    }

    #[tokio::test]
    async fn views_of_different_sizes_are_proven_consistent_through_the_log() {
        let honest = FakeLog::new("log.example");
        for i in 0..8u8 {
            honest.append(&[i]);
        }
        let store = MemoryMonitor::new();
        let clients: BTreeMap<String, Arc<dyn RekorClient>> = [(
            "lab".to_owned(),
            Arc::new(honest.clone()) as Arc<dyn RekorClient>,
        )]
        .into();
        let a = detector_with(&store, "a", clients);
        // Honest views at 5 (node b) and 8 (node a): consistent, in either order.
        let b5 = observed_from(&honest, "b", 5);
        assert_eq!(a.observe(&b5).await.unwrap(), Outcome::Consistent);
        let a8 = observed_from(&honest, "a", 8);
        assert_eq!(a.observe(&a8).await.unwrap(), Outcome::Consistent);
        // Node c was shown a fork at 6: this node's log cannot prove it consistent.
        let forked = FakeLog::new("log.example");
        for i in 0..5u8 {
            forked.append(&[i]);
        }
        forked.append(b"never in the log");
        let c6 = ObservedCheckpoint {
            observed_by: "c".into(),
            ..observed_from(&forked, "c", 6)
        };
        assert_eq!(a.observe(&c6).await.unwrap(), Outcome::Fork);
        let d = &store.open_divergences(None).await.unwrap()[0];
        assert_eq!(d.kind, "fork");
        assert_eq!(d.evidence["split_view"], true);
        assert!(!d.evidence["proof"].as_array().unwrap().is_empty());
        assert_eq!(store.open_divergences(None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_split_view_between_nodes_is_raised_once_by_whoever_sees_it() {
        let store = MemoryMonitor::new();
        let a = detector(&store, "a");
        let b = detector(&store, "b");
        assert_eq!(
            a.observe(&observed("a", 5, 1)).await.unwrap(),
            Outcome::Consistent
        );
        assert_eq!(
            b.observe(&observed("a", 5, 1)).await.unwrap(),
            Outcome::Consistent
        );
        assert_eq!(
            a.observe(&observed("a", 6, 2)).await.unwrap(),
            Outcome::Consistent
        );
        // Node b saw another root for size 6: both detectors see it, one divergence results.
        assert_eq!(
            a.observe(&observed("b", 6, 3)).await.unwrap(),
            Outcome::Fork
        );
        assert_eq!(
            b.observe(&observed("b", 6, 3)).await.unwrap(),
            Outcome::Fork
        );
        let open = store.open_divergences(None).await.unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0].kind, "fork");
        assert_eq!(open[0].evidence["split_view"], true);
        let notes: Vec<&str> = open[0].evidence["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["note"].as_str().unwrap())
            .collect();
        assert_eq!(notes.len(), 2);
        assert_ne!(notes[0], notes[1]);
    }

    #[test]
    fn observations_must_say_what_their_note_says() {
        let obs = observed("a", 5, 1);
        let mut ev = CheckpointObserved {
            backend: obs.backend.clone(),
            origin: obs.origin.clone(),
            tree_size: 5,
            root_hash: hex::encode(obs.root_hash),
            note: obs.note.clone(),
            observed_by: "a".into(),
        };
        assert_eq!(parse_observation(&ev).unwrap(), obs);
        ev.tree_size = 6;
        assert!(parse_observation(&ev).unwrap_err().contains("differs"));
        ev.tree_size = 5;
        ev.root_hash = "zz".into();
        assert!(parse_observation(&ev).unwrap_err().contains("root_hash"));
        assert_eq!(
            detector_durable("node.1 x"),
            "rekor-divergence-detector-node_1_x"
        );
    }

    #[tokio::test]
    async fn the_outbox_publishes_and_delivers_each_divergence_once_and_retries_failures() {
        let store = MemoryMonitor::new();
        let bus = Arc::new(MemoryBus::new());
        let sink = RecordingSink::new();
        let raiser = Raiser::new(Arc::new(store.clone()), "a");
        let outbox = AlertOutbox::new(
            OutboxDeps {
                store: Arc::new(store.clone()),
                bus: bus.clone(),
                webhook: Some(Arc::new(sink.clone())),
                raiser: raiser.clone(),
                subjects: Subjects::new(""),
                source: "urn:test".into(),
            },
            Duration::from_secs(60),
        );
        let raise = |key: &str| {
            raiser.raise(
                "lab",
                "log.example",
                DivergenceKind::Rollback,
                json!({"k": key}),
                key.to_owned(),
            )
        };
        assert!(raise("one").await.unwrap().is_some());
        assert!(raise("one").await.unwrap().is_none(), "deduplicated");
        sink.fail_next(1);
        let mut next = HashMap::new();
        outbox.run_once(&mut next).await;
        assert_eq!(bus.published("rekor.checkpoints.diverged").len(), 1);
        assert!(
            sink.received().is_empty(),
            "the first webhook attempt failed"
        );
        // The retry waits for its backoff; forcing it due delivers it.
        next.clear();
        outbox.run_once(&mut next).await;
        outbox.run_once(&mut next).await;
        assert_eq!(sink.received().len(), 1);
        assert_eq!(bus.published("rekor.checkpoints.diverged").len(), 1);
        assert_eq!(sink.received()[0]["kind"], "rollback");
        assert!(
            store
                .undelivered_divergences("a", true, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
