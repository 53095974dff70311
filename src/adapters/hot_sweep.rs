//! Purging a node's hot tiers by revocation criterion.
//!
//! A revocation made on another node (or while this one was away) names a criterion, not
//! the VeriKeys this node's tiers hold. The in-process tier is swept in one pass over its
//! entries. Valkey/Redis keeps small indexes beside each entry, written in the same
//! `MULTI` as the entry and expiring no earlier than it:
//!
//! | key | type | members |
//! |---|---|---|
//! | `<prefix>ix:ss:<signer_set_hash>` | set | VeriKeys |
//! | `<prefix>ix:pol:<policy_hash>` | set | VeriKeys |
//! | `<prefix>ix:kid:<key_id>` | set | signer-set hashes containing the key |
//! | `<prefix>ix:fep:<feed_id>` (`ix:fep0` without a feed) | set | the feed's epochs in use |
//! | `<prefix>ix:fev:<feed_id>:<epoch>` (`ix:fev0:<epoch>`) | set | VeriKeys at that epoch |
//! | `<prefix>ix:feeds` | set | the epoch sets' names |
//!
//! Entries are grouped by epoch because a feed holds many entries but few epochs: a sweep
//! compares each epoch once and reads only the VeriKeys of the epochs it removes.
//!
//! A stale index member (an entry that expired or was removed) costs one `DEL` of a key
//! that is gone; an entry is never missed, because it cannot be written without its index.

use std::collections::{BTreeSet, HashMap, HashSet};

use actors::domain::entry::Entry;
use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::Criterion;
use actors::ledger_replay::CriteriaSet;
use actors::ports::{HotTierSweep, PortError};
use async_trait::async_trait;

use super::AdapterError;
use super::memory::MemoryTier;
use super::redis::RedisCache;

/// Commands per pipeline when deleting.
const PIPELINE: usize = 5000;

impl RedisCache {
    fn ix(&self, kind: &str, value: &str) -> String {
        format!("{}ix:{kind}:{value}", self.prefix)
    }

    /// The set of epochs in use for a feed.
    fn feed_epochs(&self, feed_id: Option<&str>) -> String {
        match feed_id {
            Some(f) => self.ix("fep", f),
            None => format!("{}ix:fep0", self.prefix),
        }
    }

    /// The set of VeriKeys at one epoch of a feed, named after the feed's epoch set.
    fn feed_epoch_members(&self, epochs_key: &str, epoch: &str) -> String {
        let feed = &epochs_key[self.prefix.len()..];
        match feed.strip_prefix("ix:fep:") {
            Some(f) => format!("{}ix:fev:{f}:{epoch}", self.prefix),
            None => format!("{}ix:fev0:{epoch}", self.prefix),
        }
    }

    fn feeds_key(&self) -> String {
        format!("{}ix:feeds", self.prefix)
    }

    /// Stores an entry's bytes for `ttl_ms` together with its criterion indexes.
    pub(crate) async fn put_indexed(
        &self,
        entry: &Entry,
        bytes: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), AdapterError> {
        let vk = &entry.veri_key;
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("SET")
            .arg(self.entry_key(vk))
            .arg(bytes)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        let ss = self.ix("ss", &entry.signer_set_hash);
        let pol = self.ix("pol", &entry.policy_hash);
        p.sadd(&ss, vk).ignore();
        p.sadd(&pol, vk).ignore();
        let mut indexes = vec![ss, pol];
        for k in &entry.signer_key_ids {
            let kid = self.ix("kid", k);
            p.sadd(&kid, &entry.signer_set_hash).ignore();
            indexes.push(kid);
        }
        if let Some(epoch) = &entry.feed_epoch {
            let epochs = self.feed_epochs(entry.feed_id.as_deref());
            let members = self.feed_epoch_members(&epochs, epoch);
            p.sadd(&members, vk).ignore();
            p.sadd(&epochs, epoch).ignore();
            p.sadd(self.feeds_key(), &epochs).ignore();
            indexes.push(members);
            indexes.push(epochs);
            indexes.push(self.feeds_key());
        }
        // An index lives at least as long as the longest-lived entry it names: NX sets a
        // first expiry, GT only ever lengthens it.
        for key in &indexes {
            p.cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("NX").ignore();
            p.cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("GT").ignore();
        }
        let mut c = self.conn().await?;
        let () = p.query_async(&mut c).await?;
        Ok(())
    }

    /// Removes every entry matching `criteria`, and `veri_keys`; returns the VeriKeys that
    /// were present.
    pub async fn sweep_criteria(
        &self,
        criteria: &[Criterion],
        veri_keys: &[String],
    ) -> Result<Vec<String>, AdapterError> {
        let mut c = self.conn().await?;
        let mut doomed: BTreeSet<String> = veri_keys.iter().cloned().collect();
        let mut set_keys: Vec<String> = Vec::new();
        let mut kid_keys: Vec<String> = Vec::new();
        let mut feed_rules: Vec<(Option<&str>, &FeedEpoch)> = Vec::new();
        for cr in criteria {
            match cr {
                Criterion::VeriKey(k) => {
                    doomed.insert(k.clone());
                }
                Criterion::SignerSetHash(h) => set_keys.push(self.ix("ss", h)),
                Criterion::PolicyHash(h) => set_keys.push(self.ix("pol", h)),
                Criterion::SignerKeyId(k) => kid_keys.push(self.ix("kid", k)),
                Criterion::FeedEpochBefore { feed_id, before } => {
                    feed_rules.push((feed_id.as_deref(), before));
                }
            }
        }
        // Signer key → signer sets first; their VeriKeys come with the other sets.
        if !kid_keys.is_empty() {
            let mut p = redis::pipe();
            for k in &kid_keys {
                p.smembers(k);
            }
            let sets: Vec<Vec<String>> = p.query_async(&mut c).await?;
            for h in sets.into_iter().flatten() {
                set_keys.push(self.ix("ss", &h));
            }
        }
        set_keys.sort_unstable();
        set_keys.dedup();
        let mut fetched: Vec<(String, Vec<String>)> = Vec::new();
        if !set_keys.is_empty() {
            let mut p = redis::pipe();
            for k in &set_keys {
                p.smembers(k);
            }
            let members: Vec<Vec<String>> = p.query_async(&mut c).await?;
            for (k, m) in set_keys.into_iter().zip(members) {
                doomed.extend(m.iter().cloned());
                fetched.push((k, m));
            }
        }
        if !feed_rules.is_empty() {
            fetched.extend(self.feed_members_before(&mut c, &feed_rules).await?);
            for (_, m) in &fetched {
                doomed.extend(m.iter().cloned());
            }
        }
        let doomed: Vec<String> = doomed.into_iter().collect();
        let mut removed = Vec::new();
        for chunk in doomed.chunks(PIPELINE) {
            let mut p = redis::pipe();
            for k in chunk {
                p.del(self.entry_key(k));
            }
            let n: Vec<i64> = p.query_async(&mut c).await?;
            removed.extend(
                chunk
                    .iter()
                    .zip(n)
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, _)| k.clone()),
            );
        }
        // The index members just acted on are done with; members added meanwhile stay.
        let mut p = redis::pipe();
        let mut any = false;
        for (k, m) in fetched.iter().filter(|(_, m)| !m.is_empty()) {
            p.srem(k, m).ignore();
            any = true;
        }
        if any {
            let () = p.query_async(&mut c).await?;
        }
        Ok(removed)
    }
}

impl RedisCache {
    /// The epoch sets of the feeds `rules` name (every feed for a rule without one) whose
    /// epoch comes before an applicable rule's, with their VeriKeys.
    async fn feed_members_before(
        &self,
        c: &mut redis::aio::ConnectionManager,
        rules: &[(Option<&str>, &FeedEpoch)],
    ) -> Result<Vec<(String, Vec<String>)>, AdapterError> {
        // Only the latest epoch of each kind matters per feed: an epoch before any rule is
        // before the greatest one of its kind.
        let mut strongest: HashMap<Option<String>, Vec<&FeedEpoch>> = HashMap::new();
        for (feed, before) in rules {
            let kept = strongest
                .entry(feed.map(|f| self.feed_epochs(Some(f))))
                .or_default();
            match kept.iter_mut().find(|k| k.compare(before).is_some()) {
                Some(k) if k.is_before(before) => *k = before,
                Some(_) => {}
                None => kept.push(before),
            }
        }
        let mut epoch_sets: BTreeSet<String> = strongest.keys().flatten().cloned().collect();
        if strongest.contains_key(&None) {
            let all: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.feeds_key())
                .query_async(c)
                .await?;
            epoch_sets.extend(all);
        }
        let epoch_sets: Vec<String> = epoch_sets.into_iter().collect();
        let mut p = redis::pipe();
        for k in &epoch_sets {
            p.smembers(k);
        }
        let epochs: Vec<Vec<String>> = p.query_async(c).await?;
        let every_feed = strongest.get(&None);
        let mut member_sets: Vec<String> = Vec::new();
        for (set, epochs) in epoch_sets.iter().zip(epochs) {
            let rules: Vec<&FeedEpoch> = strongest
                .get(&Some(set.clone()))
                .into_iter()
                .chain(every_feed)
                .flatten()
                .copied()
                .collect();
            for epoch in epochs {
                if FeedEpoch::parse(&epoch).is_ok_and(|e| rules.iter().any(|b| e.is_before(b))) {
                    member_sets.push(self.feed_epoch_members(set, &epoch));
                }
            }
        }
        if member_sets.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for k in &member_sets {
            p.smembers(k);
        }
        let members: Vec<Vec<String>> = p.query_async(c).await?;
        Ok(member_sets.into_iter().zip(members).collect())
    }
}

/// A node's hot tiers: the in-process tier and Valkey/Redis, each when it runs.
#[derive(Debug, Clone)]
pub struct HotTiers {
    memory: Option<MemoryTier>,
    redis: Option<RedisCache>,
}

impl HotTiers {
    /// The tiers a sweep purges.
    pub fn new(memory: Option<MemoryTier>, redis: Option<RedisCache>) -> Self {
        HotTiers { memory, redis }
    }
}

#[async_trait]
impl HotTierSweep for HotTiers {
    async fn sweep(
        &self,
        criteria: &[Criterion],
        veri_keys: &[String],
    ) -> Result<Vec<String>, PortError> {
        // The two tiers are independent: both are swept at once, Valkey/Redis polled first
        // so its round trip is under way while the in-process tier is scanned.
        let memory = async {
            match &self.memory {
                Some(m) => {
                    let set = CriteriaSet::new(criteria, veri_keys);
                    if set.is_empty() {
                        Vec::new()
                    } else {
                        m.remove_matching(|e| set.matches(e)).await
                    }
                }
                None => Vec::new(),
            }
        };
        let redis = async {
            match &self.redis {
                Some(r) => r.sweep_criteria(criteria, veri_keys).await,
                None => Ok(Vec::new()),
            }
        };
        let (from_redis, from_memory) = tokio::join!(redis, memory);
        let mut removed: HashSet<String> = from_memory.into_iter().collect();
        removed.extend(from_redis?);
        Ok(removed.into_iter().collect())
    }
}
