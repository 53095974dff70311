//! The provenance cache's read and write paths over the tiers.
//!
//! Reads go top down (in-process, Valkey/Redis, the durable store) and a hit below fills
//! the tiers above. Writes go to the hot tiers and the write-behind stream, or straight to
//! the durable store when write-behind is off or a hot tier or the bus is down. A tier that
//! fails is skipped for a short while, so an outage costs one slow request, not every one;
//! it is tried again afterwards, and read hits from below refill it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use metrics::Counter;

use crate::domain::entry::{Entry, EntryWrite};
use crate::figures;
use crate::ports::{EntryStore, EntryTier, EventBus, HotCachePurge, PortError};

/// Errors of the cache service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The durable store failed, and no tier above could answer.
    #[error("the durable store is unavailable: {0}")]
    Store(PortError),
}

/// Where a read was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// A hot tier, by name (`memory`, `valkey`).
    Tier(&'static str),
    /// The durable store, by name (`postgres`, `sqlite`).
    Durable(&'static str),
}

impl Served {
    /// The `X-Provcache-Tier` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Tier(name) | Served::Durable(name) => name,
        }
    }
}

/// How far a write got before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// In the hot tiers and the write-behind stream (202).
    Queued,
    /// Committed to the durable store (201).
    Committed,
}

/// Which tier operation failed, for the error counter's `op` label.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
    Remove,
}

struct TierSlot {
    tier: Arc<dyn EntryTier>,
    name: &'static str,
    /// Unix milliseconds until which the tier is skipped after a failure.
    down_until: AtomicI64,
    /// Metric handles, registered once: a hit must not build label sets.
    hits: figures::Count,
    misses: figures::Count,
    errors: [Counter; 3],
}

/// Metric handles of the cache as a whole.
struct Meters {
    durable_hits: figures::Count,
    durable_misses: figures::Count,
    queued: Counter,
    direct: Counter,
    fallbacks: Counter,
    taken_back: Counter,
    recheck_errors: Counter,
}

impl Meters {
    fn new(durable: &'static str) -> Self {
        Meters {
            durable_hits: figures::cache_hits(durable),
            durable_misses: figures::cache_misses(durable),
            queued: metrics::counter!("provd_provcache_writes_total", "path" => "write_behind"),
            direct: metrics::counter!("provd_provcache_writes_total", "path" => "direct"),
            fallbacks: metrics::counter!("provd_provcache_write_behind_fallbacks_total"),
            taken_back: metrics::counter!("provd_provcache_stale_removed_total"),
            recheck_errors: metrics::counter!("provd_provcache_recheck_errors_total"),
        }
    }
}

/// The cache service the HTTP handlers call.
///
/// Metric handles are taken when the cache is built, so the process's recorder must be
/// installed before (as `App::start` does).
pub struct ProvCache {
    tiers: Vec<TierSlot>,
    store: Arc<dyn EntryStore>,
    bus: Arc<dyn EventBus>,
    write_subject: String,
    write_behind: bool,
    retry_after: Duration,
    /// Bumped by every purge between tiers, so a read that copied an entry upwards while a
    /// purge ran can tell and take its copies back.
    purges: AtomicU64,
    /// Unix milliseconds until which queued writes are not re-checked after a failure.
    recheck_down_until: AtomicI64,
    meters: Meters,
}

/// Longest wait for the re-check of a queued write.
const RECHECK_TIMEOUT: Duration = Duration::from_millis(500);

impl std::fmt::Debug for ProvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvCache")
            .field("write_subject", &self.write_subject)
            .field("write_behind", &self.write_behind)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl ProvCache {
    /// The durable tier's name (`postgres`, `sqlite`): its `tier` label and header value.
    pub fn durable_tier(&self) -> &'static str {
        self.store.name()
    }

    /// A cache over `tiers` (top first) and `store`. Writes are published on
    /// `write_subject` when `write_behind` is on.
    pub fn new(
        tiers: Vec<Arc<dyn EntryTier>>,
        store: Arc<dyn EntryStore>,
        bus: Arc<dyn EventBus>,
        write_subject: String,
        write_behind: bool,
    ) -> Self {
        let meters = Meters::new(store.name());
        ProvCache {
            tiers: tiers
                .into_iter()
                .map(|tier| {
                    let name = tier.name();
                    let error = |op: &'static str| {
                        metrics::counter!("provd_provcache_tier_errors_total", "tier" => name, "op" => op)
                    };
                    TierSlot {
                        hits: figures::cache_hits(name),
                        misses: figures::cache_misses(name),
                        errors: [error("get"), error("put"), error("remove")],
                        tier,
                        name,
                        down_until: AtomicI64::new(0),
                    }
                })
                .collect(),
            store,
            bus,
            write_subject,
            write_behind,
            retry_after: Duration::from_secs(1),
            purges: AtomicU64::new(0),
            recheck_down_until: AtomicI64::new(0),
            meters,
        }
    }

    /// How long a failed tier is skipped (one second by default).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    fn usable(slot: &TierSlot, now_ms: i64) -> bool {
        slot.down_until.load(Ordering::Relaxed) <= now_ms
    }

    fn failed(&self, slot: &TierSlot, op: Op, e: &PortError) {
        slot.errors[op as usize].increment(1);
        let now = now_ms();
        let until = now + i64::try_from(self.retry_after.as_millis()).unwrap_or(1000);
        let was = slot.down_until.swap(until, Ordering::Relaxed);
        // Log once per outage window, not once per request.
        if was <= now {
            let op = ["get", "put", "remove"][op as usize];
            tracing::warn!(tier = slot.name, op, error = %e, "cache tier failed; using the tiers below");
        }
    }

    /// The live entry and where it came from, or `None` on a miss.
    pub async fn get(&self, veri_key: &str) -> Result<Option<(Arc<Entry>, Served)>, CacheError> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let purges = self.purges.load(Ordering::Acquire);
        for (i, slot) in self.tiers.iter().enumerate() {
            if !Self::usable(slot, now_ms) {
                continue;
            }
            match slot.tier.get(veri_key).await {
                Ok(Some(e)) if e.is_live(now) => {
                    slot.hits.increment(1);
                    if i > 0 && self.fill(&self.tiers[..i], &e).await {
                        // A purge that ran between this read and the copies above (this
                        // node's purges go bottom-up and bump the counter between tiers)
                        // may have missed the copies: take them back.
                        if self.purges.load(Ordering::Acquire) != purges {
                            self.take_back(&self.tiers[..i], veri_key).await;
                        }
                    }
                    return Ok(Some((e, Served::Tier(slot.name))));
                }
                Ok(_) => slot.misses.increment(1),
                Err(e) => self.failed(slot, Op::Get, &e),
            }
        }
        match self.store.get_entry(veri_key).await {
            Ok(Some(e)) if e.is_live(now) => {
                self.meters.durable_hits.increment(1);
                let e = Arc::new(e);
                if self.fill(&self.tiers, &e).await {
                    // An invalidation may have deleted the entry and purged the hot tiers
                    // (on any node) between the read and the copies. It commits before it
                    // purges, so reading again after copying either sees the entry gone,
                    // or the purge comes after the copies and removes them.
                    match self.store.get_entry(veri_key).await {
                        Ok(Some(_)) => {}
                        Ok(None) => self.take_back(&self.tiers, veri_key).await,
                        Err(err) => {
                            self.meters.recheck_errors.increment(1);
                            tracing::debug!(veri_key, error = %err, "cannot re-read a filled entry; taking the copies back");
                            self.take_back(&self.tiers, veri_key).await;
                        }
                    }
                }
                Ok(Some((e, Served::Durable(self.store.name()))))
            }
            Ok(_) => {
                self.meters.durable_misses.increment(1);
                Ok(None)
            }
            Err(e) => Err(CacheError::Store(e)),
        }
    }

    /// Copies an entry into `slots`; whether any copy was made.
    async fn fill(&self, slots: &[TierSlot], e: &Arc<Entry>) -> bool {
        let now_ms = now_ms();
        let mut filled = false;
        for slot in slots {
            if Self::usable(slot, now_ms) {
                match slot.tier.put(e).await {
                    Ok(()) => filled = true,
                    Err(err) => self.failed(slot, Op::Put, &err),
                }
            }
        }
        filled
    }

    /// Removes a key that raced with an invalidation from `slots`.
    async fn take_back(&self, slots: &[TierSlot], veri_key: &str) {
        self.meters.taken_back.increment(1);
        let keys = [veri_key.to_owned()];
        for slot in slots.iter().rev() {
            if let Err(err) = slot.tier.remove(&keys).await {
                self.failed(slot, Op::Remove, &err);
            }
        }
    }

    /// Accepts a write: hot tiers and the write-behind stream, or a direct commit.
    pub async fn put(&self, entry: Entry) -> Result<Accepted, CacheError> {
        // The write is stamped before it reaches any tier, so an invalidation recorded after
        // this instant is seen by the flusher as newer and drops the write (see
        // `EntryStore::upsert_entries`).
        let write = EntryWrite {
            write_id: uuid::Uuid::now_v7(),
            accepted_at: Utc::now(),
            entry,
        };
        let shared = Arc::new(write.entry.clone());
        let now_ms = now_ms();
        let mut hot_ok = true;
        for slot in &self.tiers {
            if !Self::usable(slot, now_ms) {
                hot_ok = false;
                continue;
            }
            if let Err(err) = slot.tier.put(&shared).await {
                self.failed(slot, Op::Put, &err);
                hot_ok = false;
            }
        }
        if self.write_behind && hot_ok {
            match self
                .bus
                .publish(
                    &self.write_subject,
                    &write.write_id.to_string(),
                    write.to_json(),
                )
                .await
            {
                Ok(()) => {
                    self.meters.queued.increment(1);
                    self.recheck(&write).await;
                    return Ok(Accepted::Queued);
                }
                Err(e) => {
                    self.meters.fallbacks.increment(1);
                    tracing::warn!(error = %e, "cannot queue the write; committing it directly");
                }
            }
        } else if self.write_behind {
            // Without the shared hot tier a queued write would be invisible to readers
            // until it is flushed, so it is committed before the answer instead.
            self.meters.fallbacks.increment(1);
        }
        match self
            .store
            .upsert_entries(std::slice::from_ref(&write))
            .await
        {
            Ok(outcome) => {
                self.meters.direct.increment(1);
                if outcome.invalidated > 0 {
                    // Invalidated between the stamp and the commit: the purge did not know
                    // the copies just put in the hot tiers.
                    self.take_back(&self.tiers, &write.entry.veri_key).await;
                }
                Ok(Accepted::Committed)
            }
            Err(e) => {
                // Nothing durable holds it: take it back out of the hot tiers.
                let keys = [write.entry.veri_key.clone()];
                for slot in &self.tiers {
                    let _ = slot.tier.remove(&keys).await;
                }
                Err(CacheError::Store(e))
            }
        }
    }

    /// After a queued write reached the hot tiers: an invalidation recorded between its
    /// stamp and its copies purged only what it deleted from the durable tier, so the
    /// copies would outlive it. Asking after the copies closes that window: an invalidation
    /// committed before the question is seen, and one committed after it purges after the
    /// copies. Should the question fail, the flusher drops the write and purges its key.
    async fn recheck(&self, write: &EntryWrite) {
        // With PostgreSQL down a write must still be answered at once: the question is
        // bounded and skipped for a while after a failure (the flusher is the backstop).
        if self.recheck_down_until.load(Ordering::Relaxed) > now_ms() {
            self.meters.recheck_errors.increment(1);
            return;
        }
        let asked = tokio::time::timeout(RECHECK_TIMEOUT, self.store.invalidated_after(write));
        let error = match asked.await {
            Ok(Ok(false)) => return,
            Ok(Ok(true)) => {
                self.take_back(&self.tiers, &write.entry.veri_key).await;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {RECHECK_TIMEOUT:?}"),
        };
        self.meters.recheck_errors.increment(1);
        let until = now_ms() + i64::try_from(self.retry_after.as_millis()).unwrap_or(1000);
        self.recheck_down_until.store(until, Ordering::Relaxed);
        tracing::debug!(
            error,
            "cannot re-check a queued write against invalidations; the flusher will"
        );
    }
}

#[async_trait]
impl HotCachePurge for ProvCache {
    async fn purge(&self, veri_keys: &[String]) -> Result<(), PortError> {
        // Bottom-up, counting each tier: a read that copied from a lower tier before its
        // purge into a higher tier after that tier's purge sees the count move.
        let mut first_err = None;
        for slot in self.tiers.iter().rev() {
            if let Err(e) = slot.tier.remove(veri_keys).await {
                first_err.get_or_insert(e);
            }
            self.purges.fetch_add(1, Ordering::AcqRel);
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use chrono::DateTime;

    use super::*;
    use crate::domain::entry::{invalidated_after_accept, verdict_hash};
    use crate::domain::invalidation::Criterion;
    use crate::ports::UpsertOutcome;
    use crate::testing::MemoryBus;

    type Hook = Mutex<Option<Box<dyn FnOnce() + Send>>>;

    #[derive(Default)]
    struct FakeTier {
        name: &'static str,
        entries: Mutex<HashMap<String, Arc<Entry>>>,
        down: AtomicBool,
        /// Runs once, at the start of the next put.
        before_put: Hook,
    }

    impl FakeTier {
        fn named(name: &'static str) -> Arc<Self> {
            Arc::new(FakeTier {
                name,
                ..Default::default()
            })
        }
        fn check(&self) -> Result<(), PortError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(PortError::Unavailable {
                    service: "redis",
                    message: "down".into(),
                });
            }
            Ok(())
        }
        fn has(&self, k: &str) -> bool {
            self.entries.lock().expect("lock").contains_key(k)
        }
        fn clear(&self) {
            self.entries.lock().expect("lock").clear();
        }
    }

    #[async_trait]
    impl EntryTier for FakeTier {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn get(&self, k: &str) -> Result<Option<Arc<Entry>>, PortError> {
            self.check()?;
            Ok(self.entries.lock().expect("lock").get(k).cloned())
        }
        async fn put(&self, e: &Arc<Entry>) -> Result<(), PortError> {
            self.check()?;
            let hook = self.before_put.lock().expect("lock").take();
            if let Some(hook) = hook {
                hook();
            }
            self.entries
                .lock()
                .expect("lock")
                .insert(e.veri_key.clone(), e.clone());
            Ok(())
        }
        async fn remove(&self, keys: &[String]) -> Result<(), PortError> {
            self.check()?;
            let mut m = self.entries.lock().expect("lock");
            for k in keys {
                m.remove(k);
            }
            Ok(())
        }
    }

    /// A durable tier with the real drop rule: a write is dropped when an invalidation
    /// matching it was recorded after it was accepted.
    #[derive(Default)]
    struct FakeStore {
        entries: Mutex<HashMap<String, Entry>>,
        revocations: Mutex<Vec<(Criterion, DateTime<Utc>)>>,
        /// Runs once, right after the next read.
        after_get: Hook,
    }

    impl FakeStore {
        /// Records an invalidation now and deletes what it matches, as the real store does.
        fn invalidate(&self, c: Criterion) {
            self.entries
                .lock()
                .expect("lock")
                .retain(|_, e| !e.matches(&c));
            self.revocations.lock().expect("lock").push((c, Utc::now()));
        }
    }

    #[async_trait]
    impl EntryStore for FakeStore {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn get_entry(&self, k: &str) -> Result<Option<Entry>, PortError> {
            let got = self.entries.lock().expect("lock").get(k).cloned();
            let hook = self.after_get.lock().expect("lock").take();
            if let Some(hook) = hook {
                hook();
            }
            Ok(got)
        }
        async fn upsert_entries(&self, w: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
            let revocations = self.revocations.lock().expect("lock").clone();
            let mut m = self.entries.lock().expect("lock");
            let mut out = UpsertOutcome::default();
            for w in w {
                if invalidated_after_accept(w, &revocations) {
                    out.invalidated += 1;
                    out.invalidated_keys.push(w.entry.veri_key.clone());
                } else {
                    out.written += 1;
                    m.insert(w.entry.veri_key.clone(), w.entry.clone());
                }
            }
            Ok(out)
        }
        async fn invalidated_after(&self, w: &EntryWrite) -> Result<bool, PortError> {
            let revocations = self.revocations.lock().expect("lock");
            Ok(invalidated_after_accept(w, &revocations))
        }
    }

    fn entry(ttl: chrono::Duration) -> Entry {
        let now = Utc::now();
        let verdict = serde_json::json!({"decision": "allow"});
        Entry {
            veri_key: format!("sha256:{}", "1".repeat(64)),
            verdict_hash: verdict_hash(&verdict),
            verdict,
            proof_root: None,
            trust_score: 1,
            policy_hash: "sha256:p".into(),
            signer_set_hash: "sha256:s".into(),
            signer_key_ids: vec![],
            feed_id: None,
            feed_epoch: None,
            created_at: now,
            expires_at: now + ttl,
        }
    }

    fn cache(
        tiers: &[&Arc<FakeTier>],
        store: &Arc<FakeStore>,
        write_behind: bool,
    ) -> (ProvCache, MemoryBus) {
        let bus = MemoryBus::new();
        let tiers = tiers
            .iter()
            .map(|t| Arc::clone(*t) as Arc<dyn EntryTier>)
            .collect();
        let cache = ProvCache::new(
            tiers,
            store.clone(),
            Arc::new(bus.clone()),
            "t.provcache.writes".into(),
            write_behind,
        );
        (cache, bus)
    }

    #[tokio::test]
    async fn reads_fall_through_fill_up_and_a_dead_tier_refills_when_it_returns() {
        let memory = FakeTier::named("memory");
        let valkey = FakeTier::named("valkey");
        let store = Arc::new(FakeStore::default());
        let (cache, _bus) = cache(&[&memory, &valkey], &store, true);
        let cache = cache.with_retry_after(Duration::from_millis(20));
        let e = entry(chrono::Duration::hours(1));
        let key = e.veri_key.clone();

        // Valkey down: the write is committed, not queued, and reads come from below.
        valkey.down.store(true, Ordering::Relaxed);
        assert_eq!(cache.put(e.clone()).await, Ok(Accepted::Committed));
        memory
            .remove(std::slice::from_ref(&key))
            .await
            .expect("remove");
        let (got, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Durable("fake"));
        assert_eq!(*got, e);
        assert!(!valkey.has(&key));

        // Valkey back: after the skip window a durable hit refills it.
        valkey.down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        memory
            .remove(std::slice::from_ref(&key))
            .await
            .expect("remove");
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Durable("fake"));
        assert!(valkey.has(&key));
        memory
            .remove(std::slice::from_ref(&key))
            .await
            .expect("remove");
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Tier("valkey"));
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Tier("memory"));

        // With every tier up a write is queued on the bus, and a purge empties the tiers.
        assert_eq!(cache.put(e.clone()).await, Ok(Accepted::Queued));
        assert!(memory.has(&key) && valkey.has(&key));
        cache
            .purge(std::slice::from_ref(&key))
            .await
            .expect("purge");
        assert!(!memory.has(&key) && !valkey.has(&key));
    }

    #[tokio::test]
    async fn expired_entries_are_misses_in_every_tier() {
        let memory = FakeTier::named("memory");
        let store = Arc::new(FakeStore::default());
        let (cache, _bus) = cache(&[&memory], &store, false);
        let mut e = entry(chrono::Duration::hours(1));
        e.expires_at = Utc::now() - chrono::Duration::seconds(1);
        memory.put(&Arc::new(e.clone())).await.expect("put");
        store
            .entries
            .lock()
            .expect("lock")
            .insert(e.veri_key.clone(), e.clone());
        assert_eq!(cache.get(&e.veri_key).await, Ok(None));
    }

    #[tokio::test]
    async fn an_invalidation_between_the_stamp_and_the_hot_put_does_not_leave_the_entry_hot() {
        let memory = FakeTier::named("memory");
        let valkey = FakeTier::named("valkey");
        let store = Arc::new(FakeStore::default());
        let (cache, bus) = cache(&[&memory, &valkey], &store, true);
        let e = entry(chrono::Duration::hours(1));
        let key = e.veri_key.clone();
        // The invalidation lands after the write was stamped, before its copies: it deletes
        // nothing durable (the write is not flushed yet) and so purges nothing.
        let s = store.clone();
        *memory.before_put.lock().expect("lock") = Some(Box::new(move || {
            s.invalidate(Criterion::PolicyHash("sha256:p".into()));
        }));
        assert_eq!(cache.put(e).await, Ok(Accepted::Queued));
        assert!(
            !memory.has(&key),
            "the in-process copy outlived the invalidation"
        );
        assert!(
            !valkey.has(&key),
            "the Valkey copy outlived the invalidation"
        );
        assert_eq!(cache.get(&key).await, Ok(None));
        // The write is still queued; the flusher drops it (and purges its key again).
        assert_eq!(bus.published_count(), 1);

        // A write stamped after the invalidation stays.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            cache.put(entry(chrono::Duration::hours(1))).await,
            Ok(Accepted::Queued)
        );
        assert!(memory.has(&key) && valkey.has(&key));
    }

    #[tokio::test]
    async fn a_direct_write_dropped_by_a_racing_invalidation_leaves_no_hot_copy() {
        let memory = FakeTier::named("memory");
        let store = Arc::new(FakeStore::default());
        let (cache, _bus) = cache(&[&memory], &store, false);
        let e = entry(chrono::Duration::hours(1));
        let key = e.veri_key.clone();
        let s = store.clone();
        *memory.before_put.lock().expect("lock") = Some(Box::new(move || {
            s.invalidate(Criterion::PolicyHash("sha256:p".into()));
        }));
        assert_eq!(cache.put(e).await, Ok(Accepted::Committed));
        assert!(!memory.has(&key));
        assert!(store.entries.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_fill_racing_an_invalidation_is_taken_back() {
        let memory = FakeTier::named("memory");
        let valkey = FakeTier::named("valkey");
        let store = Arc::new(FakeStore::default());
        let (cache, _bus) = cache(&[&memory, &valkey], &store, false);
        let e = entry(chrono::Duration::hours(1));
        let key = e.veri_key.clone();
        store
            .entries
            .lock()
            .expect("lock")
            .insert(key.clone(), e.clone());
        // Read from PostgreSQL, then the invalidation commits and purges (on another node)
        // before the read copies the entry into the hot tiers.
        let (s, m, v) = (store.clone(), memory.clone(), valkey.clone());
        *store.after_get.lock().expect("lock") = Some(Box::new(move || {
            s.invalidate(Criterion::VeriKey(format!("sha256:{}", "1".repeat(64))));
            m.clear();
            v.clear();
        }));
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Durable("fake"));
        assert!(
            !memory.has(&key) && !valkey.has(&key),
            "the fill resurrected it"
        );
        assert_eq!(cache.get(&key).await, Ok(None));

        // The same race one level up, on this node: read from Valkey, purged, then copied
        // into memory.
        let e = Arc::new(e);
        valkey.put(&e).await.expect("put");
        let purge_after_read = Arc::new(AtomicBool::new(true));
        let cache = Arc::new(cache);
        let (c, k, flag) = (cache.clone(), key.clone(), purge_after_read.clone());
        *memory.before_put.lock().expect("lock") = Some(Box::new(move || {
            if flag.swap(false, Ordering::Relaxed) {
                // A purge completes between the Valkey read and the memory copy.
                futures::executor::block_on(c.purge(std::slice::from_ref(&k))).expect("purge");
            }
        }));
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Tier("valkey"));
        assert!(!memory.has(&key), "the memory copy outlived the purge");
    }
}
