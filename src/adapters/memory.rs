//! The in-process tier: a bounded cache (moka) in front of Valkey/Redis.
//!
//! Each entry leaves the cache at its own `expires_at`, and the least recently used go
//! first when the cache is full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::domain::entry::Entry;
use actors::ports::{EntryTier, PortError};
use async_trait::async_trait;
use chrono::Utc;
use moka::Expiry;
use moka::future::Cache;

/// Expires each entry at its own `expires_at`.
struct EntryExpiry;

impl Expiry<String, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(left(value))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(left(value))
    }
}

fn left(e: &Entry) -> Duration {
    (e.expires_at - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// Purges of at least this many keys may clear the whole tier instead (`invalidate_keys`).
const CLEAR_AT_LEAST: usize = 1000;

/// The in-process tier.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<String, Arc<Entry>>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        MemoryTier {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(EntryExpiry)
                .build(),
        }
    }
}

impl MemoryTier {
    /// Removes every entry `doomed` picks; returns their VeriKeys. One pass over the tier,
    /// so a ledger sweep matches a whole batch of revocations at once.
    pub async fn remove_matching(&self, doomed: impl Fn(&Entry) -> bool) -> Vec<String> {
        let keys: Vec<String> = self
            .cache
            .iter()
            .filter(|(_, e)| doomed(e))
            .map(|(k, _)| String::clone(&k))
            .collect();
        self.invalidate_keys(&keys).await;
        keys
    }

    /// Removes `keys`, or clears the whole tier when they are at least half of it (see
    /// `remove`).
    async fn invalidate_keys(&self, keys: &[String]) {
        // Removing keys one by one costs several microseconds each (0.6 s for 100 000).
        // When a purge names at least half of the tier, clearing it is immediate, and the
        // entries it was not meant to remove are only misses that refill from the tiers
        // below.
        if keys.len() >= CLEAR_AT_LEAST && keys.len() as u64 * 2 >= self.cache.entry_count() {
            self.cache.invalidate_all();
            return;
        }
        for k in keys {
            self.cache.invalidate(k).await;
        }
    }
}

#[async_trait]
impl EntryTier for MemoryTier {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, veri_key: &str) -> Result<Option<Arc<Entry>>, PortError> {
        // moka drops each entry at its own `expires_at` (see `EntryExpiry`), so a hit is
        // live without reading the clock here; the caller checks `is_live` once more.
        Ok(self.cache.get(veri_key).await)
    }

    async fn put(&self, entry: &Arc<Entry>) -> Result<(), PortError> {
        self.cache
            .insert(entry.veri_key.clone(), Arc::clone(entry))
            .await;
        Ok(())
    }

    async fn remove(&self, veri_keys: &[String]) -> Result<(), PortError> {
        self.invalidate_keys(veri_keys).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::domain::entry::verdict_hash;

    fn entry(i: usize) -> Arc<Entry> {
        let now = Utc::now();
        let verdict = serde_json::json!({"n": i});
        Arc::new(Entry {
            veri_key: format!("sha256:{i:064x}"),
            verdict_hash: verdict_hash(&verdict),
            verdict,
            proof_root: None,
            trust_score: 80,
            policy_hash: "sha256:pol".into(),
            signer_set_hash: "sha256:set".into(),
            signer_key_ids: vec!["key".into()],
            feed_id: None,
            feed_epoch: None,
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
        })
    }

    async fn held(tier: &MemoryTier, n: usize) -> usize {
        let mut held = 0;
        for i in 0..n {
            if tier.get(&entry(i).veri_key).await.expect("get").is_some() {
                held += 1;
            }
        }
        held
    }

    #[tokio::test]
    async fn a_small_purge_removes_exactly_its_keys_and_a_large_one_clears_the_tier() {
        let tier = MemoryTier::new(10_000);
        for i in 0..4000 {
            tier.put(&entry(i)).await.expect("put");
        }
        tier.cache.run_pending_tasks().await;
        // Fewer than CLEAR_AT_LEAST keys: exactly those go.
        let few: Vec<String> = (0..10).map(|i| entry(i).veri_key.clone()).collect();
        tier.remove(&few).await.expect("remove");
        assert_eq!(held(&tier, 4000).await, 3990);
        assert!(tier.get(&few[3]).await.expect("get").is_none());
        // A purge of most of the tier clears it; what it named is gone either way.
        let most: Vec<String> = (10..3000).map(|i| entry(i).veri_key.clone()).collect();
        tier.remove(&most).await.expect("remove");
        assert_eq!(held(&tier, 4000).await, 0);
        // A large purge of a small share of a big tier stays exact.
        for i in 0..4000 {
            tier.put(&entry(i)).await.expect("put");
        }
        tier.cache.run_pending_tasks().await;
        let some: Vec<String> = (0..1500).map(|i| entry(i).veri_key.clone()).collect();
        tier.remove(&some).await.expect("remove");
        assert_eq!(held(&tier, 4000).await, 2500);
    }
}
