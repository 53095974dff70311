//! The write-behind flusher: carries accepted cache writes from the write-behind stream to
//! the durable store.
//!
//! A pump task pulls messages and gathers them until it holds `flush_batch` writes or the
//! oldest has waited `flush_interval`, whichever comes first, then hands the batch to the
//! actor. The actor upserts the whole batch in one statement in a task of its own and acks
//! every message only after the commit; an upsert that fails because the store is
//! unavailable naks them all, so a crash or an outage loses nothing (the bus redelivers,
//! and the upsert is idempotent). An upsert the store refuses for good (its data, not its
//! state) is split in halves until the refused writes are found; each is recorded as a
//! rejected message and terminated, and the others commit, so one bad write never blocks
//! a queue. Up to
//! `in_flight` flushes run at once (two by default: one commits while the next writes), and
//! the pump gathers the next batch meanwhile; the newest version still wins, because the
//! upsert compares accepted times, and concurrent flushes lock rows in VeriKey order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use events::streams::{PROVCACHE_WRITES, PROVCACHE_WRITES_SUBJECT};
use events::{RejectReason, Subjects};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::domain::entry::EntryWrite;
use crate::health::{ChildStatus, Health};
use crate::ports::{
    Backlog, ConsumerSpec, Delivery, EntryStore, EventBus, HotCachePurge, RejectedEventStore,
    StartPosition, UpsertOutcome,
};
use crate::{pump, rejected};

/// The actor's name and durable consumer name.
pub const NAME: &str = "write-behind-flusher";

/// What the flusher needs from the outside.
#[derive(Clone)]
pub struct WriteBehindDeps {
    /// The event bus holding the write-behind stream.
    pub bus: Arc<dyn EventBus>,
    /// The durable store.
    pub store: Arc<dyn EntryStore>,
    /// The hot tiers, purged of writes the store dropped as invalidated: they were put
    /// there before the invalidation, which only purged what it deleted from the store.
    pub cache: Arc<dyn HotCachePurge>,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// Where writes the store refuses for good are recorded.
    pub rejects: Arc<dyn RejectedEventStore>,
    /// Where the queue's progress is shown: [`QUEUE_GATE`] turns `Stalled` while writes wait
    /// and none has been settled for [`STALL_AFTER`], which `/readyz` and the status report
    /// show.
    pub health: Health,
}

/// The readiness gate that shows whether the write-behind queue advances.
pub const QUEUE_GATE: &str = "write-behind-queue";

/// How long writes may wait without any being settled before the queue counts as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// The flusher. Config lives here; the pump lives in [`WriteBehindState`].
#[derive(Clone)]
pub struct WriteBehind {
    deps: WriteBehindDeps,
    flush_batch: usize,
    flush_interval: Duration,
    in_flight: usize,
    stall_after: Duration,
}

impl WriteBehind {
    /// A flusher that flushes at `flush_batch` writes or after `flush_interval`, with up to
    /// two flushes in flight.
    pub fn new(deps: WriteBehindDeps, flush_batch: usize, flush_interval: Duration) -> Self {
        WriteBehind {
            deps,
            flush_batch: flush_batch.max(1),
            flush_interval,
            in_flight: 2,
            stall_after: STALL_AFTER,
        }
    }

    /// Shows the queue as stalled after `d` without progress instead of [`STALL_AFTER`].
    pub fn with_stall_after(mut self, d: Duration) -> Self {
        self.stall_after = d;
        self
    }

    /// At most `n` flushes at once (at least one).
    pub fn with_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// The durable consumer on the write-behind stream.
    pub fn consumer(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: self.deps.subjects.stream_name(&PROVCACHE_WRITES),
            durable: NAME.to_owned(),
            filter_subject: self.deps.subjects.prefixed(PROVCACHE_WRITES_SUBJECT),
            // Every accepted write must reach the store, including those queued before
            // this consumer existed.
            start: StartPosition::All,
            // A batch may wait a whole interval before its flush starts; after a crash the
            // writes it held come back once this has passed.
            ack_wait: self.flush_interval * 2 + Duration::from_secs(10),
            // A write is never given up on: an outage only delays it.
            max_deliver: -1,
            // Every batch in flight and the one being gathered are unacknowledged.
            max_ack_pending: i64::try_from(self.flush_batch * (self.in_flight + 1))
                .unwrap_or(i64::MAX),
        }
    }
}

/// Messages the flusher handles.
pub enum WriteBehindMsg {
    /// A gathered batch; reply when every delivery is settled, with whether any of them
    /// was settled for good (committed or recorded as rejected) rather than put back.
    Flush(Vec<Box<dyn Delivery>>, oneshot::Sender<bool>),
}

/// The running pump.
pub struct WriteBehindState {
    pump: Option<pump::Pump>,
}

impl WriteBehind {
    /// Flushes a batch; `true` when the queue advanced (anything was committed or
    /// recorded as rejected), `false` when everything was put back.
    async fn flush(&self, deliveries: Vec<Box<dyn Delivery>>) -> bool {
        let mut advanced = false;
        let mut writes = Vec::with_capacity(deliveries.len());
        let mut good = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            // The API checked the write; a message from elsewhere (a bug, a foreign
            // publisher, an older version) is checked again, so it cannot block the rest.
            match EntryWrite::from_json(d.payload()).and_then(|w| w.entry.validate().map(|()| w)) {
                Ok(w) => {
                    writes.push(w);
                    good.push(d);
                }
                Err(e) => {
                    advanced = true;
                    let reason = match e {
                        crate::domain::entry::EntryError::MalformedWrite(_) => {
                            RejectReason::InvalidJson
                        }
                        _ => RejectReason::InvalidData,
                    };
                    self.reject(d.as_ref(), reason, e.to_string(), None).await;
                }
            }
        }
        if writes.is_empty() {
            return advanced;
        }
        metrics::histogram!("provd_write_behind_batch_size").record(writes.len() as f64);
        // A batch the store refuses is split until the writes it refuses are found: each is
        // recorded and settled, and the rest commit. Only an unavailable store naks.
        let mut pending = vec![(writes, good)];
        while let Some((writes, good)) = pending.pop() {
            let oldest = writes.iter().map(|w| w.accepted_at).min();
            let started = Instant::now();
            match self.deps.store.upsert_entries(&writes).await {
                Ok(outcome) => {
                    metrics::histogram!("provd_write_behind_flush_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("provd_write_behind_flushed_total")
                        .increment(outcome.written);
                    metrics::counter!("provd_write_behind_invalidated_total")
                        .increment(outcome.invalidated);
                    if let Some(oldest) = oldest {
                        let lag = (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0;
                        metrics::gauge!("provd_write_behind_flushed_lag_seconds").set(lag);
                    }
                    self.settle(&writes, good, &outcome).await;
                    advanced = true;
                }
                Err(e) if e.is_transient() => {
                    let delay = pump::retry_delay(good[0].delivered().min(8) as u32);
                    metrics::counter!("provd_write_behind_flush_errors_total").increment(1);
                    tracing::warn!(error = %e, writes = good.len(), delay_ms = delay.as_millis() as u64, "flush failed; will retry");
                    let naks = good.iter().map(|d| d.nak(delay));
                    let _ = futures::future::join_all(naks).await;
                }
                Err(e) if writes.len() == 1 => {
                    advanced = true;
                    let id = writes[0].write_id.to_string();
                    let detail = format!(
                        "the store refused the write of {}: {e}",
                        writes[0].entry.veri_key
                    );
                    self.reject(
                        good[0].as_ref(),
                        RejectReason::StoreRefused,
                        detail,
                        Some(id),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, writes = writes.len(), "the store refused a batch; splitting it to find the writes it refuses");
                    let mut writes = writes;
                    let mut good = good;
                    let half = writes.len() / 2;
                    let later_writes = writes.split_off(half);
                    let later = good.split_off(half);
                    pending.push((later_writes, later));
                    pending.push((writes, good));
                }
            }
        }
        advanced
    }

    /// Records a write that can never be stored, counts it and settles it, so it never
    /// blocks the writes behind it and stays visible to operators.
    async fn reject(
        &self,
        delivery: &dyn Delivery,
        reason: RejectReason,
        detail: String,
        write_id: Option<String>,
    ) {
        let settled = rejected::reject(
            self.deps.rejects.as_ref(),
            delivery,
            PROVCACHE_WRITES_SUBJECT,
            reason.as_str(),
            detail,
            write_id,
        )
        .await;
        if settled {
            metrics::counter!("provd_write_behind_rejected_total").increment(1);
        }
    }
}

impl WriteBehind {
    /// Purges the dropped writes' keys from the hot tiers, then acks. A failed purge naks
    /// just the dropped writes, so their redelivery (dropped again) retries the purge while
    /// the rest of the batch is done.
    async fn settle(
        &self,
        writes: &[EntryWrite],
        good: Vec<Box<dyn Delivery>>,
        outcome: &UpsertOutcome,
    ) {
        let mut retry: Vec<Box<dyn Delivery>> = Vec::new();
        let mut done = good;
        if !outcome.invalidated_keys.is_empty()
            && let Err(e) = self.deps.cache.purge(&outcome.invalidated_keys).await
        {
            metrics::counter!("provd_hot_cache_purge_errors_total").increment(1);
            tracing::warn!(error = %e, keys = outcome.invalidated_keys.len(), "cannot purge dropped writes from the hot tiers; will retry");
            let dropped: std::collections::HashSet<&str> = outcome
                .invalidated_keys
                .iter()
                .map(String::as_str)
                .collect();
            let (again, rest): (Vec<_>, Vec<_>) = done
                .into_iter()
                .zip(writes)
                .partition(|(_, w)| dropped.contains(w.entry.veri_key.as_str()));
            retry = again.into_iter().map(|(d, _)| d).collect();
            done = rest.into_iter().map(|(d, _)| d).collect();
        }
        // Acks go out together; a lost one only costs an idempotent redelivery.
        let acks = done.iter().map(|d| d.ack());
        for r in futures::future::join_all(acks).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "ack failed; the write will be redelivered");
            }
        }
        if let Some(first) = retry.first() {
            let delay = pump::retry_delay(first.delivered().min(8) as u32);
            let naks = retry.iter().map(|d| d.nak(delay));
            let _ = futures::future::join_all(naks).await;
        }
    }
}

/// Whether the queue advances, shown as the [`QUEUE_GATE`] readiness gate: `Stalled` while
/// writes wait and none has been settled for [`STALL_AFTER`], `Running` otherwise.
struct Progress {
    health: Health,
    after: Duration,
    last: Instant,
    /// When a flush last put all its writes back (the store unavailable). They are not
    /// pending in the broker while they wait for redelivery, yet they are work.
    put_back_at: Option<Instant>,
    stalled: bool,
}

/// How long writes put back count as waiting: longer than the longest redelivery delay
/// (`pump::retry_delay`), so a store that stays down keeps them counted, while writes
/// another node took over stop counting.
const PUT_BACK_WINDOW: Duration = Duration::from_secs(60);

impl Progress {
    fn new(health: Health, after: Duration) -> Self {
        health.set(QUEUE_GATE, true, ChildStatus::Running);
        Progress {
            health,
            after,
            last: Instant::now(),
            put_back_at: None,
            stalled: false,
        }
    }

    /// A flush ended: it settled some writes for good, or put them all back.
    fn flushed(&mut self, advanced: bool) {
        if advanced {
            self.last = Instant::now();
            self.put_back_at = None;
            self.show(0);
        } else {
            self.put_back_at = Some(Instant::now());
        }
    }

    /// `waiting` writes are held, in flight or behind in the broker.
    fn check(&mut self, waiting: u64) {
        let put_back = self
            .put_back_at
            .is_some_and(|t| t.elapsed() < PUT_BACK_WINDOW.max(self.after));
        let waiting = waiting + u64::from(put_back);
        if waiting == 0 {
            self.last = Instant::now();
        }
        self.show(waiting);
    }

    fn show(&mut self, waiting: u64) {
        let stalled = waiting > 0 && self.last.elapsed() >= self.after;
        if stalled == self.stalled {
            return;
        }
        self.stalled = stalled;
        let status = if stalled {
            tracing::warn!(waiting, "the write-behind queue has not advanced");
            ChildStatus::Stalled(format!(
                "{waiting} write(s) waiting and none flushed for {}s",
                self.last.elapsed().as_secs()
            ))
        } else {
            ChildStatus::Running
        };
        self.health.set(QUEUE_GATE, true, status);
    }
}

/// How often the pump asks the broker for the consumer's backlog.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);

/// Publishes the queue gauges from what the pump holds and, when the bus tells, what the
/// broker counts: that includes writes delivered to a process that died, which wait
/// unacknowledged for redelivery and which the pump cannot see. Returns the depth.
fn queue_gauges(
    held: &[Box<dyn Delivery>],
    held_since: Option<Instant>,
    flushing: &VecDeque<(oneshot::Receiver<bool>, u64, Instant)>,
    backlog: Option<&Backlog>,
) -> u64 {
    let behind = held.last().and_then(|d| d.pending()).unwrap_or(0);
    let in_flight: u64 = flushing.iter().map(|(_, n, _)| n).sum();
    let mut depth = held.len() as u64 + in_flight + behind;
    let oldest = flushing.iter().map(|(_, _, t)| *t).chain(held_since).min();
    let mut lag = oldest.map_or(0.0, |t| t.elapsed().as_secs_f64());
    if let Some(b) = backlog {
        depth = depth.max(b.waiting);
        if let Some(oldest) = b.oldest {
            let age = (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0;
            lag = lag.max(age);
        }
    }
    crate::figures::set_write_behind(depth as f64, lag);
    depth
}

/// Whether any held write is a redelivery.
fn redelivered(held: &[Box<dyn Delivery>]) -> bool {
    held.iter().any(|d| d.delivered() > 1)
}

impl Actor for WriteBehind {
    type Msg = WriteBehindMsg;
    type State = WriteBehindState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WriteBehindState { pump: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let spec = self.consumer();
        let bus = self.deps.bus.clone();
        let max = self.flush_batch;
        let interval = self.flush_interval;
        let in_flight = self.in_flight;
        let mut progress = Progress::new(self.deps.health.clone(), self.stall_after);
        state.pump = Some(pump::Pump::spawn(async move {
            // Flushes handed over and not yet settled, oldest first.
            // Each with its size and since when its oldest write waits: writes in a flush
            // are not durable yet, so the queue figures count them.
            let mut flushing: VecDeque<(oneshot::Receiver<bool>, u64, Instant)> = VecDeque::new();
            // Messages the broker holds beyond those delivered, as of the last batch.
            let mut behind: u64 = 0;
            // The broker's count, refreshed every BACKLOG_EVERY.
            let mut backlog: Option<Backlog> = None;
            let mut backlog_at: Option<Instant> = None;
            loop {
                let mut sub = pump::subscribe(bus.as_ref(), &spec, NAME).await;
                let mut failures: u32 = 0;
                let mut held: Vec<Box<dyn Delivery>> = Vec::new();
                // When the oldest held message arrived; the interval runs from then.
                let mut held_since: Option<Instant> = None;
                loop {
                    if !pump::actor_alive(&myself) {
                        return;
                    }
                    let wait = match held_since {
                        Some(t) => interval.saturating_sub(t.elapsed()),
                        None => interval.min(Duration::from_secs(1)),
                    }
                    .max(Duration::from_millis(10));
                    let due =
                        held_since.is_some_and(|t| t.elapsed() >= interval) || redelivered(&held);
                    if !due && held.len() < max {
                        match sub.next_batch(max - held.len(), wait).await {
                            Ok(b) => {
                                failures = 0;
                                if !b.is_empty() && held_since.is_none() {
                                    held_since = Some(Instant::now());
                                }
                                behind = match b.last() {
                                    Some(d) => d.pending().unwrap_or(behind),
                                    // A wait that delivered nothing: nothing is behind.
                                    None => 0,
                                };
                                held.extend(b);
                            }
                            Err(e) => {
                                failures = failures.saturating_add(1);
                                let delay = pump::retry_delay(failures);
                                tracing::warn!(actor = NAME, error = %e, delay_ms = delay.as_millis() as u64, "write-behind subscription failed; resubscribing");
                                // Held messages are redelivered after ack_wait.
                                tokio::time::sleep(delay).await;
                                break;
                            }
                        }
                    }
                    if backlog_at.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                        backlog_at = Some(Instant::now());
                        backlog = match sub.backlog().await {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::debug!(actor = NAME, error = %e, "cannot read the queue's backlog");
                                None
                            }
                        };
                    }
                    // Flushes that ended meanwhile, without waiting for the others.
                    while let Some((front, _, _)) = flushing.front_mut() {
                        match front.try_recv() {
                            Ok(advanced) => {
                                flushing.pop_front();
                                progress.flushed(advanced);
                            }
                            Err(oneshot::error::TryRecvError::Empty) => break,
                            Err(oneshot::error::TryRecvError::Closed) => {
                                flushing.pop_front();
                            }
                        }
                    }
                    let depth = queue_gauges(&held, held_since, &flushing, backlog.as_ref());
                    progress.check(depth);
                    // Redelivered writes already waited (a crash, an outage): they go now.
                    let due =
                        held_since.is_some_and(|t| t.elapsed() >= interval) || redelivered(&held);
                    if held.is_empty() || (held.len() < max && !due) {
                        continue;
                    }
                    let batch = std::mem::take(&mut held);
                    let size = batch.len() as u64;
                    let since = held_since.take().unwrap_or_else(Instant::now);
                    let (done, settled) = oneshot::channel();
                    match myself.cast(WriteBehindMsg::Flush(batch, done)) {
                        Ok(()) => flushing.push_back((settled, size, since)),
                        Err(ractor::MessagingErr::SendErr(WriteBehindMsg::Flush(batch, _))) => {
                            // The actor is gone; its replacement starts a new pump. The
                            // batch goes back to the bus at once.
                            for d in batch {
                                let _ = d.nak(Duration::ZERO).await;
                            }
                            return;
                        }
                        Err(_) => return,
                    }
                    while flushing.len() >= in_flight {
                        if let Some((settled, _, _)) = flushing.pop_front() {
                            // An error means the flush ended unsettled (its deliveries come
                            // back after `ack_wait`); only a dead actor stops the pump.
                            match settled.await {
                                Ok(advanced) => progress.flushed(advanced),
                                Err(_) if !pump::actor_alive(&myself) => return,
                                Err(_) => {}
                            }
                        }
                    }
                    queue_gauges(&held, held_since, &flushing, backlog.as_ref());
                }
            }
        }));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WriteBehindMsg::Flush(deliveries, done) => {
                // In a task of its own, so a second batch can flush while this one commits;
                // the pump bounds how many run at once.
                let me = self.clone();
                tokio::spawn(async move {
                    let advanced = me.flush(deliveries).await;
                    let _ = done.send(advanced);
                });
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use ractor::Actor;

    use super::*;
    use crate::domain::entry::{Entry, verdict_hash};
    use crate::ports::{PortError, UpsertOutcome};
    use crate::testing::{MemoryBus, MemoryCache, Settlement};

    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        failures_left: Mutex<u32>,
        /// Keys whose writes the store refuses for good.
        refused: Mutex<Vec<String>>,
        /// Keys whose writes are dropped as invalidated after acceptance.
        invalidated: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl EntryStore for Recorder {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn get_entry(&self, _veri_key: &str) -> Result<Option<Entry>, PortError> {
            Ok(None)
        }
        async fn upsert_entries(&self, w: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
            let mut left = self.failures_left.lock().expect("lock");
            if *left > 0 {
                *left -= 1;
                return Err(PortError::Unavailable {
                    service: "postgres",
                    message: "down".into(),
                });
            }
            if w.iter().any(|w| {
                self.refused
                    .lock()
                    .expect("lock")
                    .contains(&w.entry.veri_key)
            }) {
                return Err(PortError::Rejected("value too long for type".into()));
            }
            let doomed = self.invalidated.lock().expect("lock").clone();
            let (dropped, kept): (Vec<_>, Vec<_>) =
                w.iter().partition(|w| doomed.contains(&w.entry.veri_key));
            self.batches
                .lock()
                .expect("lock")
                .push(kept.iter().map(|w| w.entry.veri_key.clone()).collect());
            Ok(UpsertOutcome {
                written: kept.len() as u64,
                invalidated: dropped.len() as u64,
                invalidated_keys: dropped.iter().map(|w| w.entry.veri_key.clone()).collect(),
            })
        }
        async fn invalidated_after(&self, w: &EntryWrite) -> Result<bool, PortError> {
            Ok(self
                .invalidated
                .lock()
                .expect("lock")
                .contains(&w.entry.veri_key))
        }
    }

    /// The flusher's deps on `bus` and `store`, on subjects `t`, with fresh fakes for the rest.
    fn deps(bus: &MemoryBus, store: Arc<dyn EntryStore>) -> WriteBehindDeps {
        WriteBehindDeps {
            bus: Arc::new(bus.clone()),
            store,
            cache: Arc::new(MemoryCache::new()),
            subjects: Subjects::new("t"),
            rejects: Arc::new(crate::testing::MemoryStore::default()),
            health: Health::new(),
        }
    }

    fn write(i: usize) -> Vec<u8> {
        let now = Utc::now();
        let verdict = serde_json::json!({"decision": "allow"});
        EntryWrite {
            write_id: uuid::Uuid::now_v7(),
            accepted_at: now,
            entry: Entry {
                veri_key: format!("sha256:{i:064x}"),
                verdict_hash: verdict_hash(&verdict),
                verdict,
                proof_root: None,
                trust_score: 50,
                policy_hash: "sha256:p".into(),
                signer_set_hash: "sha256:s".into(),
                signer_key_ids: vec![],
                feed_id: None,
                feed_epoch: None,
                created_at: now,
                expires_at: now + chrono::Duration::hours(1),
            },
        }
        .to_json()
    }

    async fn eventually(f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_write_the_store_refuses_is_recorded_and_the_rest_of_its_batch_commits() {
        let bus = MemoryBus::new();
        let store = Arc::new(Recorder::default());
        store
            .refused
            .lock()
            .expect("lock")
            .push(format!("sha256:{:064x}", 17));
        let rejects = crate::testing::MemoryStore::default();
        let subjects = Subjects::new("t");
        let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
        for i in 0..51 {
            bus.publish_raw(&subject, write(i));
        }
        let deps = WriteBehindDeps {
            rejects: Arc::new(rejects.clone()),
            ..deps(&bus, store.clone())
        };
        let (actor, _h) = Actor::spawn(
            None,
            WriteBehind::new(deps, 64, Duration::from_millis(50)),
            (),
        )
        .await
        .expect("starts");
        eventually(|| bus.settlements().len() == 51).await;
        let committed: usize = store
            .batches
            .lock()
            .expect("lock")
            .iter()
            .map(Vec::len)
            .sum();
        assert_eq!(committed, 50, "every other write of the batch commits");
        let settled = bus.settlements();
        assert_eq!(
            settled.iter().filter(|s| **s == Settlement::Ack).count(),
            50
        );
        assert_eq!(
            settled.iter().filter(|s| **s == Settlement::Term).count(),
            1
        );
        assert!(
            !settled.contains(&Settlement::Nak),
            "a refusal is never retried"
        );
        let recorded = rejects.rejected();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0].reason, "store_refused");
        assert!(
            recorded[0].detail.contains(&format!("{:064x}", 17)),
            "{recorded:?}"
        );
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_queue_that_does_not_advance_is_shown_stalled_until_it_does() {
        let bus = MemoryBus::new();
        let store = Arc::new(Recorder::default());
        // Unavailable for a long while: every flush puts its writes back.
        *store.failures_left.lock().expect("lock") = u32::MAX;
        let health = Health::new();
        let subjects = Subjects::new("t");
        let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
        bus.publish_raw(&subject, write(1));
        let deps = WriteBehindDeps {
            health: health.clone(),
            ..deps(&bus, store.clone())
        };
        let flusher = WriteBehind::new(deps, 8, Duration::from_millis(20))
            .with_stall_after(Duration::from_millis(300));
        let (actor, _h) = Actor::spawn(None, flusher, ()).await.expect("starts");
        let gate = || health.get(QUEUE_GATE).map(|h| h.status);
        eventually(|| matches!(gate(), Some(ChildStatus::Stalled(_)))).await;
        assert!(!health.ready(), "a stalled queue is not ready");
        // The store comes back: the write is flushed and the queue runs again.
        *store.failures_left.lock().expect("lock") = 0;
        eventually(|| gate() == Some(ChildStatus::Running)).await;
        assert!(health.ready());
        actor.stop(None);
    }

    #[tokio::test]
    async fn flushes_by_size_or_interval_acks_after_commit_and_retries_failures() {
        let bus = MemoryBus::new();
        let store = Arc::new(Recorder::default());
        *store.failures_left.lock().expect("lock") = 1;
        let subjects = Subjects::new("t");
        let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
        bus.publish_raw(&subject, b"{broken".to_vec());
        for i in 0..5 {
            bus.publish_raw(&subject, write(i));
        }
        let deps = deps(&bus, store.clone());
        let (actor, _h) = Actor::spawn(
            None,
            WriteBehind::new(deps, 3, Duration::from_millis(100)),
            (),
        )
        .await
        .expect("starts");
        eventually(|| {
            let b = store.batches.lock().expect("lock");
            b.iter().map(Vec::len).sum::<usize>() == 5
        })
        .await;
        let batches = store.batches.lock().expect("lock").clone();
        assert!(batches.iter().all(|b| b.len() <= 3), "{batches:?}");
        eventually(|| {
            bus.settlements()
                .iter()
                .filter(|s| **s == Settlement::Ack)
                .count()
                == 5
        })
        .await;
        let settled = bus.settlements();
        assert_eq!(settled[0], Settlement::Term, "{settled:?}");
        assert!(settled.contains(&Settlement::Nak), "the failed flush naks");
        actor.stop(None);
    }

    #[tokio::test]
    async fn writes_dropped_as_invalidated_are_purged_from_the_hot_tiers() {
        let bus = MemoryBus::new();
        let store = Arc::new(Recorder::default());
        let key = |i: usize| format!("sha256:{i:064x}");
        store.invalidated.lock().expect("lock").push(key(1));
        let cache = MemoryCache::new();
        // Both writes were put in the hot tiers when accepted; an invalidation recorded
        // since matched the first, which was not flushed yet, so it purged nothing.
        cache.put(&key(1));
        cache.put(&key(2));
        let subjects = Subjects::new("t");
        let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
        bus.publish_raw(&subject, write(1));
        bus.publish_raw(&subject, write(2));
        let deps = WriteBehindDeps {
            cache: Arc::new(cache.clone()),
            ..deps(&bus, store.clone())
        };
        let (actor, _h) = Actor::spawn(
            None,
            WriteBehind::new(deps, 2, Duration::from_millis(50)),
            (),
        )
        .await
        .expect("starts");
        eventually(|| {
            bus.settlements()
                .iter()
                .filter(|s| **s == Settlement::Ack)
                .count()
                == 2
        })
        .await;
        assert_eq!(store.batches.lock().expect("lock").concat(), vec![key(2)]);
        assert!(!cache.has(&key(1)), "the invalidated write is still hot");
        assert!(cache.has(&key(2)));
        actor.stop(None);
    }

    /// Holds every upsert until two are running at once.
    struct Pair(tokio::sync::Barrier, Mutex<usize>);

    #[async_trait]
    impl EntryStore for Pair {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn get_entry(&self, _veri_key: &str) -> Result<Option<Entry>, PortError> {
            Ok(None)
        }
        async fn upsert_entries(&self, w: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
            self.0.wait().await;
            *self.1.lock().expect("lock") += w.len();
            Ok(UpsertOutcome {
                written: w.len() as u64,
                ..UpsertOutcome::default()
            })
        }
        async fn invalidated_after(&self, _w: &EntryWrite) -> Result<bool, PortError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn two_flushes_run_at_once() {
        let bus = MemoryBus::new();
        let store = Arc::new(Pair(tokio::sync::Barrier::new(2), Mutex::new(0)));
        let subjects = Subjects::new("t");
        let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
        for i in 0..4 {
            bus.publish_raw(&subject, write(i));
        }
        let deps = deps(&bus, store.clone());
        // Batches of two: the first flush cannot finish until the second has started.
        let (actor, _h) = Actor::spawn(
            None,
            WriteBehind::new(deps, 2, Duration::from_millis(50)),
            (),
        )
        .await
        .expect("starts");
        eventually(|| *store.1.lock().expect("lock") == 4).await;
        actor.stop(None);
    }
}
