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
//! | `<prefix>ix:feed:<feed_id>` (`ix:feed0` without a feed) | hash | VeriKey → epoch |
//! | `<prefix>ix:feeds` | set | the feed hashes' names |
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

    fn feed_hash(&self, feed_id: Option<&str>) -> String {
        match feed_id {
            Some(f) => self.ix("feed", f),
            None => format!("{}ix:feed0", self.prefix),
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
            let h = self.feed_hash(entry.feed_id.as_deref());
            p.hset(&h, vk, epoch).ignore();
            p.sadd(self.feeds_key(), &h).ignore();
            indexes.push(h);
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
        let mut feed_doomed: Vec<(String, Vec<String>)> = Vec::new();
        if !feed_rules.is_empty() {
            let mut hashes: BTreeSet<String> = feed_rules
                .iter()
                .filter_map(|(f, _)| f.map(|f| self.feed_hash(Some(f))))
                .collect();
            if feed_rules.iter().any(|(f, _)| f.is_none()) {
                let all: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(self.feeds_key())
                    .query_async(&mut c)
                    .await?;
                hashes.extend(all);
            }
            let hashes: Vec<String> = hashes.into_iter().collect();
            let mut p = redis::pipe();
            for h in &hashes {
                p.hgetall(h);
            }
            let contents: Vec<HashMap<String, String>> = p.query_async(&mut c).await?;
            // Each rule's hash name once, not once per hash.
            let named: Vec<(Option<String>, &FeedEpoch)> = feed_rules
                .iter()
                .map(|(f, b)| (f.map(|f| self.feed_hash(Some(f))), *b))
                .collect();
            for (h, m) in hashes.into_iter().zip(contents) {
                let rules: Vec<&FeedEpoch> = named
                    .iter()
                    .filter(|(name, _)| name.as_ref().is_none_or(|n| *n == h))
                    .map(|(_, b)| *b)
                    .collect();
                let gone: Vec<String> = m
                    .into_iter()
                    .filter(|(_, epoch)| {
                        FeedEpoch::parse(epoch)
                            .is_ok_and(|e| rules.iter().any(|before| e.is_before(before)))
                    })
                    .map(|(vk, _)| vk)
                    .collect();
                doomed.extend(gone.iter().cloned());
                feed_doomed.push((h, gone));
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
        for (h, m) in feed_doomed.iter().filter(|(_, m)| !m.is_empty()) {
            p.hdel(h, m).ignore();
            any = true;
        }
        if any {
            let () = p.query_async(&mut c).await?;
        }
        Ok(removed)
    }
}

/// A node's hot tiers: the optional in-process tier and Valkey/Redis.
#[derive(Debug, Clone)]
pub struct HotTiers {
    memory: Option<MemoryTier>,
    redis: RedisCache,
}

impl HotTiers {
    /// The tiers a sweep purges.
    pub fn new(memory: Option<MemoryTier>, redis: RedisCache) -> Self {
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
        let mut removed: HashSet<String> = HashSet::new();
        if let Some(m) = &self.memory {
            let set = CriteriaSet::new(criteria, veri_keys);
            if !set.is_empty() {
                removed.extend(m.remove_matching(|e| set.matches(e)).await);
            }
        }
        removed.extend(self.redis.sweep_criteria(criteria, veri_keys).await?);
        Ok(removed.into_iter().collect())
    }
}
