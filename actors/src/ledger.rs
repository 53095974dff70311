//! The revocation ledger's two actors: the outbox publisher and the per-node consumer.
//!
//! * [`LedgerOutbox`] publishes every committed ledger row, in `seq_no` order, to
//!   `prov.ledger.revocations` with `Nats-Msg-Id` = revocation id, and then records how far
//!   it got in the database. A crash between the commit of a row and its publication only
//!   delays the event: the next run publishes from the recorded position again.
//!   Several nodes run it at once without coordination: each publishes in `seq_no` order
//!   from the stored position, JetStream drops the copies by their `Nats-Msg-Id`, and the
//!   position only moves forward. That costs a few duplicate publishes, but needs no lock
//!   held across a network call, and a node that dies mid-batch leaves nothing to recover.
//!   Rows commit in `seq_no` order because every invalidation takes the same exclusive
//!   advisory lock before it appends, so the position never skips a row still in flight.
//! * [`LedgerConsumer`] runs on every node under a durable consumer named after the node.
//!   Before the node reports ready, and again after every NATS reconnect, it catches up
//!   from the ledger in PostgreSQL ([`crate::ledger_replay`]); then it applies each published
//!   row to its own hot tiers and saves its checkpoint. A purge failure naks the batch with
//!   a delay: the revocation is retried, never lost. A row beyond the checkpoint's next one
//!   means rows were missed (the stream aged out, or the node was cut off), and it replays
//!   from PostgreSQL instead.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::data::RevocationRecorded;
use events::{CloudEvent, EventKind, RejectReason, Subjects, decode_as, streams};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use crate::domain::invalidation::{Criterion, LedgerRow};
use crate::health::{ChildStatus, Health};
use crate::ledger_replay::{ReplayError, ReplayOptions, Replayer, criteria_of};
use crate::ports::{
    ConsumerSpec, Delivery, EventBus, LedgerOutboxStore, PortError, RejectedEventStore,
    ReplayStore, StartPosition,
};
use crate::trace::{self, TraceContext};
use crate::{pump, rejected};

/// The outbox actor's name.
pub const OUTBOX_NAME: &str = "ledger-outbox";
/// The consumer actor's name.
pub const CONSUMER_NAME: &str = "ledger-consumer";
/// The readiness gate the consumer holds closed while it catches up.
pub const CATCH_UP_GATE: &str = "ledger-catch-up";

/// Describes the ledger's metrics and creates every series at zero, so dashboards and
/// `rate()` see them from the start.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    for (name, help) in [
        (
            "provd_ledger_head_seq_no",
            "The highest revocation-ledger seq_no this node has seen.",
        ),
        (
            "provd_ledger_replay_lag",
            "Ledger rows this node has not applied to its hot tiers yet (head minus checkpoint).",
        ),
        (
            "provd_ledger_consumer_pending",
            "Ledger events waiting on this node's durable consumer.",
        ),
        (
            "provd_ledger_published_seq_no",
            "The highest ledger seq_no the outbox has published.",
        ),
    ] {
        describe_gauge!(name, help);
        metrics::gauge!(name).increment(0.0);
    }
    for (name, help) in [
        (
            "provd_ledger_revocations_published_total",
            "Ledger rows published to prov.ledger.revocations by this node's outbox.",
        ),
        (
            "provd_ledger_applied_revocations_total",
            "Published ledger rows applied to this node's hot tiers.",
        ),
        (
            "provd_ledger_replayed_revocations_total",
            "Ledger rows re-applied by a catch-up or provd replay.",
        ),
        (
            "provd_ledger_hot_entries_purged_total",
            "Hot-tier entries removed by the ledger consumer.",
        ),
        (
            "provd_ledger_apply_errors_total",
            "Ledger batches that failed and were retried.",
        ),
    ] {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    describe_counter!(
        "provd_ledger_catch_ups_total",
        "Replays of the ledger from this node's checkpoint, by trigger (start, reconnect)."
    );
    for trigger in ["start", "reconnect"] {
        metrics::counter!("provd_ledger_catch_ups_total", "trigger" => trigger).increment(0);
    }
}

/// The CloudEvent of one ledger row, with the revocation id as its id.
pub fn revocation_event(row: &LedgerRow, source: &str) -> CloudEvent<RevocationRecorded> {
    let mut ev =
        CloudEvent::new(source, row.clone()).with_correlation_id(row.correlation_id.clone());
    ev.id = row.revocation_id.to_string();
    ev.time = Some(row.revoked_at);
    ev
}

/// What the outbox needs.
#[derive(Clone)]
pub struct LedgerOutboxDeps {
    /// The bus to publish on.
    pub bus: Arc<dyn EventBus>,
    /// The ledger and the published position.
    pub store: Arc<dyn LedgerOutboxStore>,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// The events' `source` (`urn:provd:<node>`).
    pub source: String,
}

/// The outbox publisher. Config lives here; the polling task lives in its state.
#[derive(Clone)]
pub struct LedgerOutbox {
    deps: LedgerOutboxDeps,
    interval: Duration,
    batch: i64,
}

impl LedgerOutbox {
    /// An outbox that looks for new rows every `interval`.
    pub fn new(deps: LedgerOutboxDeps, interval: Duration) -> Self {
        LedgerOutbox {
            deps,
            interval,
            batch: 500,
        }
    }

    /// Publishes the rows after the stored position (one batch); returns how many.
    pub async fn publish_pending(&self) -> Result<usize, PortError> {
        let d = &self.deps;
        let from = d.store.published_seq_no().await?;
        let rows = d.store.ledger_rows(from, self.batch).await?;
        let Some(last) = rows.last().map(|r| r.seq_no) else {
            return Ok(0);
        };
        let subject = d.subjects.subject(EventKind::RevocationRecorded);
        for row in &rows {
            let ev = revocation_event(row, &d.source);
            let id = ev.id.clone();
            // The publish continues the trace of the invalidation that recorded the row.
            let span = tracing::info_span!("ledger outbox", seq_no = row.seq_no);
            let recorded = row.metadata.get("traceparent").and_then(|v| v.as_str());
            trace::adopt(&span, TraceContext::from_headers(recorded, None).as_ref());
            trace::publish(d.bus.as_ref(), &subject, &id, ev)
                .instrument(span)
                .await?;
            metrics::counter!("provd_ledger_revocations_published_total").increment(1);
        }
        d.store.set_published_seq_no(last).await?;
        metrics::gauge!("provd_ledger_published_seq_no").set(last as f64);
        Ok(rows.len())
    }
}

/// The outbox's state: its polling task.
pub struct LedgerOutboxState {
    pump: Option<pump::Pump>,
}

impl Actor for LedgerOutbox {
    type Msg = ();
    type State = LedgerOutboxState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(LedgerOutboxState { pump: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let me = self.clone();
        // The polling runs beside the mailbox: a slow database or broker never blocks it.
        state.pump = Some(pump::Pump::spawn(async move {
            let mut failures = 0u32;
            while pump::actor_alive(&myself) {
                match me.publish_pending().await {
                    Ok(n) => {
                        failures = 0;
                        if n < usize::try_from(me.batch).unwrap_or(usize::MAX) {
                            tokio::time::sleep(me.interval).await;
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let delay = pump::retry_delay(failures);
                        tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "ledger outbox cannot publish; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        _msg: (),
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// What the per-node consumer needs.
#[derive(Clone)]
pub struct LedgerConsumerDeps {
    /// The bus.
    pub bus: Arc<dyn EventBus>,
    /// The ledger and this node's checkpoint.
    pub store: Arc<dyn ReplayStore>,
    /// Where ledger events that can never be applied are recorded.
    pub rejects: Arc<dyn RejectedEventStore>,
    /// The replay over this node's tiers.
    pub replayer: Replayer,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// When this process started: a new durable consumer starts there (earlier rows are
    /// caught up from PostgreSQL).
    pub started_at: DateTime<Utc>,
    /// Where the catch-up gate is reported for `/readyz`.
    pub health: Health,
    /// Counts NATS reconnects; a change starts a catch-up.
    pub reconnects: Option<watch::Receiver<u64>>,
}

/// The per-node ledger consumer.
#[derive(Clone)]
pub struct LedgerConsumer {
    deps: LedgerConsumerDeps,
    batch_size: usize,
}

/// Messages the consumer handles.
pub enum LedgerConsumerMsg {
    /// A batch from the bus; reply when every delivery is settled.
    Batch(Vec<Box<dyn Delivery>>, oneshot::Sender<()>),
    /// Sweep the hot tiers again by these criteria (see [`RESWEEP_AFTER`]).
    Resweep(Vec<Criterion>),
}

/// How long after applying a revocation the consumer sweeps its hot tiers once more. A read
/// that found the entry in PostgreSQL just before the revocation committed, or a write
/// accepted just before it, may fill a hot tier after the first sweep; the second one
/// removes it. The same margin the flusher and the replay allow for clock skew.
pub const RESWEEP_AFTER: Duration = Duration::from_secs(2);

/// The consumer's state: its pump.
pub struct LedgerConsumerState {
    pump: Option<pump::Pump>,
}

/// A durable consumer name for `node_id` (JetStream allows letters, digits, `-` and `_`).
pub fn durable_name(node_id: &str) -> String {
    let clean: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("ledger-{clean}")
}

fn nak_delay(delivered: u64) -> Duration {
    let shift = u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(6)
        .min(6);
    Duration::from_millis(500 * (1 << shift)).min(Duration::from_secs(30))
}

impl LedgerConsumer {
    /// A consumer for this node.
    pub fn new(deps: LedgerConsumerDeps) -> Self {
        LedgerConsumer {
            deps,
            batch_size: 256,
        }
    }

    /// This node's durable consumer on the ledger stream.
    pub fn consumer(&self) -> ConsumerSpec {
        let s = &self.deps.subjects;
        ConsumerSpec {
            stream: s.stream_name(streams::stream_of(EventKind::RevocationRecorded)),
            durable: durable_name(self.deps.replayer.node_id()),
            filter_subject: s.subject(EventKind::RevocationRecorded),
            start: StartPosition::Since(self.deps.started_at),
            ack_wait: Duration::from_secs(60),
            // A revocation is never given up on: an outage only delays it.
            max_deliver: -1,
            max_ack_pending: 0,
        }
    }

    /// Catches up from the ledger until it succeeds, holding the readiness gate closed.
    /// `trigger` (`start` or `reconnect`) labels the metric.
    async fn catch_up(deps: &LedgerConsumerDeps, trigger: &'static str) {
        metrics::counter!("provd_ledger_catch_ups_total", "trigger" => trigger).increment(1);
        deps.health.set(CATCH_UP_GATE, true, ChildStatus::Starting);
        let mut failures = 0u32;
        loop {
            match deps.replayer.replay(ReplayOptions::default(), |_| {}).await {
                Ok(r) => {
                    tracing::info!(
                        revocations = r.revocations,
                        entries = r.entries_invalidated,
                        checkpoint = r.checkpoint,
                        "ledger caught up"
                    );
                    deps.health.set(CATCH_UP_GATE, true, ChildStatus::Running);
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = pump::retry_delay(failures);
                    deps.health.set(
                        CATCH_UP_GATE,
                        true,
                        ChildStatus::Restarting(format!("catch-up failed: {e}")),
                    );
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "ledger catch-up failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Applies one batch to this node's hot tiers and moves the checkpoint.
    async fn process(&self, deliveries: &[Box<dyn Delivery>]) -> Vec<Criterion> {
        let mut rows: Vec<LedgerRow> = Vec::new();
        let mut keep: Vec<&dyn Delivery> = Vec::new();
        let mut traces: Vec<Option<TraceContext>> = Vec::new();
        for d in deliveries {
            let base_subject = EventKind::RevocationRecorded.base_subject();
            match decode_as::<RevocationRecorded>(d.payload()) {
                // A row whose criterion cannot be rebuilt could never be applied here.
                Ok(ev) => match Criterion::from_metadata(&ev.data.metadata) {
                    Ok(_) => {
                        traces.push(TraceContext::of_event(&ev));
                        rows.push(ev.data);
                        keep.push(d.as_ref());
                    }
                    Err(e) => {
                        let detail =
                            format!("ledger row {} cannot be applied: {e}", ev.data.seq_no);
                        rejected::reject(
                            self.deps.rejects.as_ref(),
                            d.as_ref(),
                            base_subject,
                            RejectReason::InvalidData.as_str(),
                            detail,
                            Some(ev.id),
                        )
                        .await;
                    }
                },
                Err(e) => {
                    // Only provd publishes here; a row it cannot read must not stall the
                    // rest, and is recorded for operators.
                    rejected::reject(
                        self.deps.rejects.as_ref(),
                        d.as_ref(),
                        base_subject,
                        e.reason.as_str(),
                        e.detail,
                        e.event_id,
                    )
                    .await;
                }
            }
        }
        if let Some(p) = deliveries.last().and_then(|d| d.pending()) {
            metrics::gauge!("provd_ledger_consumer_pending").set(p as f64);
        }
        let criteria = criteria_of(&rows);
        // One span for the batch's purge, in the trace of its first row (the rest are
        // linked), so an invalidation's trace reaches every node's purge.
        let span = tracing::info_span!(
            "ledger purge",
            otel.kind = "consumer",
            node_id = %self.deps.replayer.node_id(),
            rows = rows.len(),
        );
        let mut contexts = keep
            .iter()
            .zip(&traces)
            .filter_map(|(d, t)| trace::parent_of(*d, t.as_ref()));
        trace::adopt(&span, contexts.next().as_ref());
        for other in contexts {
            trace::link(&span, &other);
        }
        let ok = self.apply(rows).instrument(span).await;
        for d in keep {
            let r = if ok {
                d.ack().await
            } else {
                d.nak(nak_delay(d.delivered())).await
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot settle a ledger event; the bus redelivers it");
            }
        }
        if ok { criteria } else { Vec::new() }
    }

    async fn apply(&self, mut rows: Vec<LedgerRow>) -> bool {
        let d = &self.deps;
        let node = d.replayer.node_id();
        let result: Result<(), ReplayError> = async {
            let checkpoint = d.store.checkpoint(node).await.map_err(ReplayError::Store)?;
            rows.sort_by_key(|r| r.seq_no);
            rows.retain(|r| r.seq_no > checkpoint);
            let Some(first) = rows.first().map(|r| r.seq_no) else {
                return Ok(());
            };
            let contiguous = rows.windows(2).all(|w| w[1].seq_no == w[0].seq_no + 1);
            if first > checkpoint + 1 || !contiguous {
                // Rows between the checkpoint and these never arrived here (or their
                // numbers were rolled back): PostgreSQL has the truth, in order.
                d.replayer.replay(ReplayOptions::default(), |_| {}).await?;
                return Ok(());
            }
            let last = rows.last().map_or(first, |r| r.seq_no);
            let removed = d.replayer.apply(&rows, false).await?;
            let checkpoint = d
                .store
                .save_checkpoint(node, last)
                .await
                .map_err(ReplayError::Store)?;
            metrics::counter!("provd_ledger_applied_revocations_total")
                .increment(rows.len() as u64);
            metrics::counter!("provd_ledger_hot_entries_purged_total").increment(removed);
            let head = d.store.ledger_head().await.map_err(ReplayError::Store)?;
            metrics::gauge!("provd_ledger_head_seq_no").set(head as f64);
            metrics::gauge!("provd_ledger_replay_lag").set((head - checkpoint).max(0) as f64);
            Ok(())
        }
        .await;
        match result {
            Ok(()) => true,
            Err(e) => {
                metrics::counter!("provd_ledger_apply_errors_total").increment(1);
                tracing::warn!(error = %e, "cannot apply ledger events; they come back after a delay");
                false
            }
        }
    }
}

impl Actor for LedgerConsumer {
    type Msg = LedgerConsumerMsg;
    type State = LedgerConsumerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(LedgerConsumerState { pump: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let deps = self.deps.clone();
        let spec = self.consumer();
        let batch = self.batch_size;
        state.pump = Some(pump::Pump::spawn(async move {
            let mut reconnects = deps.reconnects.clone();
            if let Some(r) = reconnects.as_mut() {
                r.mark_unchanged();
            }
            let mut trigger = "start";
            loop {
                // Catch up before consuming (and before the node reports ready).
                Self::catch_up(&deps, trigger).await;
                trigger = "reconnect";
                let mut sub = pump::subscribe(deps.bus.as_ref(), &spec, CONSUMER_NAME).await;
                let mut failures: u32 = 0;
                loop {
                    if !pump::actor_alive(&myself) {
                        return;
                    }
                    if let Some(r) = reconnects.as_mut()
                        && r.has_changed().unwrap_or(false)
                    {
                        r.mark_unchanged();
                        tracing::info!("NATS connection is back; catching up from the ledger");
                        break;
                    }
                    match sub.next_batch(batch, Duration::from_secs(1)).await {
                        Ok(b) if b.is_empty() => failures = 0,
                        Ok(b) => {
                            failures = 0;
                            let handed = pump::hand_over(
                                &myself,
                                b,
                                LedgerConsumerMsg::Batch,
                                |m| match m {
                                    LedgerConsumerMsg::Batch(b, _) => Some(b),
                                    LedgerConsumerMsg::Resweep(_) => None,
                                },
                            )
                            .await;
                            if !handed {
                                return;
                            }
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let delay = pump::retry_delay(failures);
                            tracing::warn!(actor = CONSUMER_NAME, error = %e, delay_ms = delay.as_millis() as u64, "ledger subscription failed; resubscribing");
                            tokio::time::sleep(delay).await;
                            sub = pump::subscribe(deps.bus.as_ref(), &spec, CONSUMER_NAME).await;
                        }
                    }
                }
            }
        }));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LedgerConsumerMsg::Batch(deliveries, done) => {
                let criteria = self.process(&deliveries).await;
                let _ = done.send(());
                if !criteria.is_empty() {
                    myself.send_after(RESWEEP_AFTER, move || LedgerConsumerMsg::Resweep(criteria));
                }
                Ok(())
            }
            LedgerConsumerMsg::Resweep(criteria) => {
                match self.deps.replayer.sweep(&criteria).await {
                    Ok(n) => {
                        metrics::counter!("provd_ledger_hot_entries_purged_total").increment(n);
                    }
                    Err(e) => {
                        // The first sweep succeeded; this one only narrows a race window.
                        metrics::counter!("provd_ledger_apply_errors_total").increment(1);
                        tracing::warn!(error = %e, "second hot-tier sweep failed");
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::domain::entry::Entry;
    use crate::ledger_replay::CriteriaSet;
    use crate::ports::HotTierSweep;
    use crate::testing::{MemoryBus, Settlement};

    #[derive(Default)]
    struct FakeLedger {
        rows: Mutex<Vec<LedgerRow>>,
        published: Mutex<i64>,
        checkpoints: Mutex<HashMap<String, i64>>,
    }

    impl FakeLedger {
        fn append(&self, criterion: serde_json::Value) -> LedgerRow {
            let mut rows = self.rows.lock().expect("lock");
            let row = LedgerRow {
                seq_no: rows.len() as i64 + 1,
                revocation_id: uuid::Uuid::now_v7(),
                revocation_type: "signer".into(),
                revoked_key: "k".into(),
                reason: None,
                entries_invalidated: 1,
                source: "urn:test".into(),
                correlation_id: None,
                revoked_at: Utc::now(),
                metadata: criterion,
            };
            rows.push(row.clone());
            row
        }
        fn after(&self, after: i64, limit: i64) -> Vec<LedgerRow> {
            let rows = self.rows.lock().expect("lock");
            rows.iter()
                .filter(|r| r.seq_no > after)
                .take(limit as usize)
                .cloned()
                .collect()
        }
    }

    #[async_trait]
    impl LedgerOutboxStore for FakeLedger {
        async fn published_seq_no(&self) -> Result<i64, PortError> {
            Ok(*self.published.lock().expect("lock"))
        }
        async fn set_published_seq_no(&self, seq_no: i64) -> Result<(), PortError> {
            let mut p = self.published.lock().expect("lock");
            *p = (*p).max(seq_no);
            Ok(())
        }
        async fn ledger_rows(&self, after: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError> {
            Ok(self.after(after, limit))
        }
    }

    #[async_trait]
    impl ReplayStore for FakeLedger {
        async fn ledger_rows(&self, after: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError> {
            Ok(self.after(after, limit))
        }
        async fn ledger_head(&self) -> Result<i64, PortError> {
            Ok(self.rows.lock().expect("lock").len() as i64)
        }
        async fn checkpoint(&self, node_id: &str) -> Result<i64, PortError> {
            Ok(*self
                .checkpoints
                .lock()
                .expect("lock")
                .get(node_id)
                .unwrap_or(&0))
        }
        async fn save_checkpoint(&self, node_id: &str, seq_no: i64) -> Result<i64, PortError> {
            let mut m = self.checkpoints.lock().expect("lock");
            let cp = m.entry(node_id.to_owned()).or_insert(0);
            *cp = (*cp).max(seq_no);
            Ok(*cp)
        }
        async fn reapply(&self, _rows: &[LedgerRow]) -> Result<Vec<String>, PortError> {
            Ok(Vec::new())
        }
    }

    #[derive(Default)]
    struct FakeHot {
        entries: Mutex<Vec<Entry>>,
        down: AtomicBool,
    }

    impl FakeHot {
        fn put(&self, key: &str, signer_key: &str) {
            let now = Utc::now();
            self.entries.lock().expect("lock").push(Entry {
                veri_key: key.into(),
                verdict: json!({}),
                verdict_hash: "sha256:v".into(),
                proof_root: None,
                trust_score: 1,
                policy_hash: "sha256:p".into(),
                signer_set_hash: "sha256:s".into(),
                signer_key_ids: vec![signer_key.into()],
                feed_id: None,
                feed_epoch: None,
                created_at: now,
                expires_at: now + chrono::Duration::hours(1),
            });
        }
        fn has(&self, key: &str) -> bool {
            self.entries
                .lock()
                .expect("lock")
                .iter()
                .any(|e| e.veri_key == key)
        }
    }

    #[async_trait]
    impl HotTierSweep for FakeHot {
        async fn sweep(
            &self,
            criteria: &[Criterion],
            veri_keys: &[String],
        ) -> Result<Vec<String>, PortError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(PortError::Unavailable {
                    service: "redis",
                    message: "down".into(),
                });
            }
            let set = CriteriaSet::new(criteria, veri_keys);
            let mut entries = self.entries.lock().expect("lock");
            let gone: Vec<String> = entries
                .iter()
                .filter(|e| set.matches(e))
                .map(|e| e.veri_key.clone())
                .collect();
            entries.retain(|e| !set.matches(e));
            Ok(gone)
        }
    }

    async fn eventually(f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "condition not met");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn key_criterion(k: &str) -> serde_json::Value {
        json!({"criterion": "signer_key_id", "value": k})
    }

    #[tokio::test]
    async fn a_replay_goes_in_batches_a_dry_run_changes_nothing_and_checkpoints_never_go_back() {
        let ledger = Arc::new(FakeLedger::default());
        let hot = Arc::new(FakeHot::default());
        for i in 0..5 {
            hot.put(&format!("sha256:{i}"), &format!("key-{i}"));
            ledger.append(key_criterion(&format!("key-{i}")));
        }
        let replayer = Replayer::new(ledger.clone(), hot.clone(), "n1");
        let mut seen = Vec::new();
        let dry = replayer
            .replay(
                ReplayOptions {
                    since: None,
                    batch_size: 2,
                    dry_run: true,
                },
                |p| seen.push(p.at),
            )
            .await
            .expect("dry run");
        assert_eq!(
            (dry.revocations, dry.entries_invalidated, dry.checkpoint),
            (5, 5, 0)
        );
        assert_eq!(seen, vec![0, 2, 4, 5]);
        assert!(hot.has("sha256:0"));

        let from_3 = replayer
            .replay(
                ReplayOptions {
                    since: Some(3),
                    batch_size: 2,
                    dry_run: false,
                },
                |_| {},
            )
            .await
            .expect("replay");
        assert_eq!((from_3.revocations, from_3.entries_invalidated), (2, 2));
        assert_eq!(from_3.checkpoint, 5);
        assert!(hot.has("sha256:2") && !hot.has("sha256:4"));

        // From 0: everything again (idempotent), and the checkpoint stays at the head.
        let all = replayer
            .replay(
                ReplayOptions {
                    since: Some(0),
                    batch_size: 1000,
                    dry_run: false,
                },
                |_| {},
            )
            .await
            .expect("replay");
        assert_eq!(
            (all.revocations, all.entries_invalidated, all.checkpoint),
            (5, 3, 5)
        );
        assert!(hot.entries.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn the_outbox_publishes_each_row_once_in_order_and_moves_its_position() {
        let bus = MemoryBus::new();
        let ledger = Arc::new(FakeLedger::default());
        let r1 = ledger.append(key_criterion("a"));
        let r2 = ledger.append(key_criterion("b"));
        let outbox = LedgerOutbox::new(
            LedgerOutboxDeps {
                bus: Arc::new(bus.clone()),
                store: ledger.clone(),
                subjects: Subjects::new("t"),
                source: "urn:provd:n1".into(),
            },
            Duration::from_millis(10),
        );
        assert_eq!(outbox.publish_pending().await, Ok(2));
        assert_eq!(outbox.publish_pending().await, Ok(0));
        assert_eq!(*ledger.published.lock().expect("lock"), 2);
        // What a consumer reads back: the rows in order, the revocation id as event id.
        let mut sub = bus
            .subscribe(&ConsumerSpec {
                stream: "t_PROV_LEDGER".into(),
                durable: "reader".into(),
                filter_subject: "t.prov.ledger.revocations".into(),
                start: StartPosition::All,
                ack_wait: Duration::from_secs(1),
                max_deliver: -1,
                max_ack_pending: 0,
            })
            .await
            .expect("subscribe");
        let got = sub
            .next_batch(10, Duration::from_millis(10))
            .await
            .expect("batch");
        let events: Vec<CloudEvent<RevocationRecorded>> = got
            .iter()
            .map(|d| decode_as::<RevocationRecorded>(d.payload()).expect("decodes"))
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, r1.revocation_id.to_string());
        assert_eq!(events[0].data, r1);
        assert_eq!(events[1].data, r2);
    }

    #[tokio::test]
    async fn the_consumer_catches_up_before_ready_and_a_failed_purge_is_retried() {
        let bus = MemoryBus::new();
        let ledger = Arc::new(FakeLedger::default());
        let hot = Arc::new(FakeHot::default());
        let health = Health::new();
        hot.put("sha256:old", "key-old");
        hot.put("sha256:new", "key-new");
        hot.put("sha256:kept", "key-kept");
        // Recorded while the node was away.
        ledger.append(key_criterion("key-old"));
        let deps = LedgerConsumerDeps {
            bus: Arc::new(bus.clone()),
            store: ledger.clone(),
            rejects: Arc::new(crate::testing::MemoryStore::default()),
            replayer: Replayer::new(ledger.clone(), hot.clone(), "n1"),
            subjects: Subjects::new("t"),
            started_at: Utc::now(),
            health: health.clone(),
            reconnects: None,
        };
        let (actor, _h) = Actor::spawn(None, LedgerConsumer::new(deps), ())
            .await
            .expect("starts");
        eventually(|| health.get(CATCH_UP_GATE).map(|c| c.status) == Some(ChildStatus::Running))
            .await;
        assert!(!hot.has("sha256:old"));
        assert_eq!(
            *ledger
                .checkpoints
                .lock()
                .expect("lock")
                .get("n1")
                .expect("cp"),
            1
        );

        // A new row arrives while the hot tier is down: naked, then applied once it is back.
        hot.down.store(true, Ordering::Relaxed);
        let row = ledger.append(key_criterion("key-new"));
        let ev = revocation_event(&row, "urn:provd:n2");
        bus.publish_raw("t.prov.ledger.revocations", ev.to_json());
        eventually(|| bus.settlements().first() == Some(&Settlement::Nak)).await;
        assert!(hot.has("sha256:new"));
        hot.down.store(false, Ordering::Relaxed);
        eventually(|| bus.settlements().contains(&Settlement::Ack)).await;
        assert!(!hot.has("sha256:new"));
        assert!(hot.has("sha256:kept"));
        assert_eq!(
            *ledger
                .checkpoints
                .lock()
                .expect("lock")
                .get("n1")
                .expect("cp"),
            2
        );
        actor.stop(None);
    }
}
