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
        for k in &keys {
            self.cache.invalidate(k).await;
        }
        keys
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
        for k in veri_keys {
            self.cache.invalidate(k).await;
        }
        Ok(())
    }
}
