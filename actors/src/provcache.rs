//! The provenance cache's read and write paths over the tiers.
//!
//! Reads go top down (in-process, Valkey/Redis, the durable store) and a hit below fills
//! the tiers above. Writes go to the hot tiers and the write-behind stream, or straight to
//! the durable store when write-behind is off or a hot tier or the bus is down. A tier that
//! fails is skipped for a short while, so an outage costs one slow request, not every one;
//! it is tried again afterwards, and read hits from below refill it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::domain::entry::{Entry, EntryWrite};
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
    /// The durable store.
    Durable,
}

impl Served {
    /// The `X-Provcache-Tier` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Tier(name) => name,
            Served::Durable => "postgres",
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

struct TierSlot {
    tier: Arc<dyn EntryTier>,
    /// Unix milliseconds until which the tier is skipped after a failure.
    down_until: AtomicI64,
}

/// The cache service the HTTP handlers call.
pub struct ProvCache {
    tiers: Vec<TierSlot>,
    store: Arc<dyn EntryStore>,
    bus: Arc<dyn EventBus>,
    write_subject: String,
    write_behind: bool,
    retry_after: Duration,
}

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
    /// A cache over `tiers` (top first) and `store`. Writes are published on
    /// `write_subject` when `write_behind` is on.
    pub fn new(
        tiers: Vec<Arc<dyn EntryTier>>,
        store: Arc<dyn EntryStore>,
        bus: Arc<dyn EventBus>,
        write_subject: String,
        write_behind: bool,
    ) -> Self {
        ProvCache {
            tiers: tiers
                .into_iter()
                .map(|tier| TierSlot {
                    tier,
                    down_until: AtomicI64::new(0),
                })
                .collect(),
            store,
            bus,
            write_subject,
            write_behind,
            retry_after: Duration::from_secs(1),
        }
    }

    /// How long a failed tier is skipped (one second by default).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    fn usable(slot: &TierSlot) -> bool {
        slot.down_until.load(Ordering::Relaxed) <= now_ms()
    }

    fn failed(&self, slot: &TierSlot, op: &'static str, e: &PortError) {
        let name = slot.tier.name();
        metrics::counter!("provd_provcache_tier_errors_total", "tier" => name, "op" => op)
            .increment(1);
        let until = now_ms() + i64::try_from(self.retry_after.as_millis()).unwrap_or(1000);
        let was = slot.down_until.swap(until, Ordering::Relaxed);
        // Log once per outage window, not once per request.
        if was <= now_ms() {
            tracing::warn!(tier = name, op, error = %e, "cache tier failed; using the tiers below");
        }
    }

    /// The live entry and where it came from, or `None` on a miss.
    pub async fn get(&self, veri_key: &str) -> Result<Option<(Entry, Served)>, CacheError> {
        let now = Utc::now();
        for (i, slot) in self.tiers.iter().enumerate() {
            if !Self::usable(slot) {
                continue;
            }
            match slot.tier.get(veri_key).await {
                Ok(Some(e)) if e.is_live(now) => {
                    let name = slot.tier.name();
                    metrics::counter!("provd_provcache_hits_total", "tier" => name).increment(1);
                    self.fill(&self.tiers[..i], &e).await;
                    return Ok(Some((e, Served::Tier(name))));
                }
                Ok(_) => {
                    metrics::counter!("provd_provcache_misses_total", "tier" => slot.tier.name())
                        .increment(1);
                }
                Err(e) => self.failed(slot, "get", &e),
            }
        }
        match self.store.get_entry(veri_key).await {
            Ok(Some(e)) if e.is_live(now) => {
                metrics::counter!("provd_provcache_hits_total", "tier" => "postgres").increment(1);
                self.fill(&self.tiers, &e).await;
                Ok(Some((e, Served::Durable)))
            }
            Ok(_) => {
                metrics::counter!("provd_provcache_misses_total", "tier" => "postgres")
                    .increment(1);
                Ok(None)
            }
            Err(e) => Err(CacheError::Store(e)),
        }
    }

    async fn fill(&self, slots: &[TierSlot], e: &Entry) {
        for slot in slots {
            if Self::usable(slot)
                && let Err(err) = slot.tier.put(e).await
            {
                self.failed(slot, "put", &err);
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
        let mut hot_ok = true;
        for slot in &self.tiers {
            if !Self::usable(slot) {
                hot_ok = false;
                continue;
            }
            if let Err(err) = slot.tier.put(&write.entry).await {
                self.failed(slot, "put", &err);
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
                    metrics::counter!("provd_provcache_writes_total", "path" => "write_behind")
                        .increment(1);
                    return Ok(Accepted::Queued);
                }
                Err(e) => {
                    metrics::counter!("provd_provcache_write_behind_fallbacks_total").increment(1);
                    tracing::warn!(error = %e, "cannot queue the write; committing it directly");
                }
            }
        } else if self.write_behind {
            // Without the shared hot tier a queued write would be invisible to readers
            // until it is flushed, so it is committed before the answer instead.
            metrics::counter!("provd_provcache_write_behind_fallbacks_total").increment(1);
        }
        match self
            .store
            .upsert_entries(std::slice::from_ref(&write))
            .await
        {
            Ok(_) => {
                metrics::counter!("provd_provcache_writes_total", "path" => "direct").increment(1);
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
}

#[async_trait]
impl HotCachePurge for ProvCache {
    async fn purge(&self, veri_keys: &[String]) -> Result<(), PortError> {
        let mut first_err = None;
        for slot in &self.tiers {
            if let Err(e) = slot.tier.remove(veri_keys).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::domain::entry::verdict_hash;
    use crate::ports::UpsertOutcome;
    use crate::testing::MemoryBus;

    #[derive(Default)]
    struct FakeTier {
        name: &'static str,
        entries: Mutex<HashMap<String, Entry>>,
        down: AtomicBool,
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
    }

    #[async_trait]
    impl EntryTier for FakeTier {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn get(&self, k: &str) -> Result<Option<Entry>, PortError> {
            self.check()?;
            Ok(self.entries.lock().expect("lock").get(k).cloned())
        }
        async fn put(&self, e: &Entry) -> Result<(), PortError> {
            self.check()?;
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

    #[derive(Default)]
    struct FakeStore {
        entries: Mutex<HashMap<String, Entry>>,
    }

    #[async_trait]
    impl EntryStore for FakeStore {
        async fn get_entry(&self, k: &str) -> Result<Option<Entry>, PortError> {
            Ok(self.entries.lock().expect("lock").get(k).cloned())
        }
        async fn upsert_entries(&self, w: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
            let mut m = self.entries.lock().expect("lock");
            for w in w {
                m.insert(w.entry.veri_key.clone(), w.entry.clone());
            }
            Ok(UpsertOutcome {
                written: w.len() as u64,
                invalidated: 0,
            })
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

    #[tokio::test]
    async fn reads_fall_through_fill_up_and_a_dead_tier_refills_when_it_returns() {
        let memory = FakeTier::named("memory");
        let valkey = FakeTier::named("valkey");
        let store = Arc::new(FakeStore::default());
        let bus = MemoryBus::new();
        let cache = ProvCache::new(
            vec![memory.clone(), valkey.clone()],
            store.clone(),
            Arc::new(bus.clone()),
            "t.provcache.writes".into(),
            true,
        )
        .with_retry_after(Duration::from_millis(20));
        let e = entry(chrono::Duration::hours(1));
        let key = e.veri_key.clone();

        // Valkey down: the write is committed, not queued, and reads come from below.
        valkey.down.store(true, Ordering::Relaxed);
        assert_eq!(cache.put(e.clone()).await, Ok(Accepted::Committed));
        memory
            .remove(std::slice::from_ref(&key))
            .await
            .expect("remove");
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Durable);
        assert!(!valkey.has(&key));

        // Valkey back: after the skip window a durable hit refills it.
        valkey.down.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        memory
            .remove(std::slice::from_ref(&key))
            .await
            .expect("remove");
        let (_, served) = cache.get(&key).await.expect("get").expect("hit");
        assert_eq!(served, Served::Durable);
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
        let cache = ProvCache::new(
            vec![memory.clone()],
            store.clone(),
            Arc::new(MemoryBus::new()),
            "t.provcache.writes".into(),
            false,
        );
        let mut e = entry(chrono::Duration::hours(1));
        e.expires_at = Utc::now() - chrono::Duration::seconds(1);
        memory.put(&e).await.expect("put");
        store
            .entries
            .lock()
            .expect("lock")
            .insert(e.veri_key.clone(), e.clone());
        assert_eq!(cache.get(&e.veri_key).await, Ok(None));
    }
}
