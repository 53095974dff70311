//! Catch-up from the revocation ledger: the one replay used at start-up, after a NATS
//! reconnect, by the ledger consumer when it sees a gap, and by `provd replay`.
//!
//! A replay reads the ledger after a checkpoint in batches, re-applies each batch to the
//! durable tier (idempotent: only entries accepted before the revocation go) and to this
//! node's hot tiers (by criterion, so entries the durable tier never held go too), and
//! saves the checkpoint after each batch, so an interrupted replay resumes where it stopped.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::domain::invalidation::{Criterion, LedgerRow};
use crate::ports::{HotTierSweep, PortError, ReplayStore};

/// Errors of a replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The ledger or the checkpoint could not be read or written.
    #[error("ledger store: {0}")]
    Store(PortError),
    /// A hot tier could not be purged; the checkpoint was not advanced past the batch.
    #[error("hot tier: {0}")]
    HotTier(PortError),
}

/// Where a replay starts and how it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Replay rows after this `seq_no`; `None`: after this node's checkpoint.
    pub since: Option<i64>,
    /// Rows per batch (and per checkpoint save).
    pub batch_size: usize,
    /// Read and count only: nothing is deleted and the checkpoint stays.
    pub dry_run: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        // The seed's default batch.
        ReplayOptions {
            since: None,
            batch_size: 1000,
            dry_run: false,
        }
    }
}

/// How far a replay is, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// The first `seq_no` after which rows are replayed.
    pub from: i64,
    /// The last `seq_no` replayed so far.
    pub at: i64,
    /// The ledger head when the replay started.
    pub head: i64,
    /// Revocations replayed so far.
    pub revocations: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Ledger rows replayed.
    pub revocations: u64,
    /// Distinct entries removed from the durable and hot tiers (dry run: the entries the
    /// rows recorded as invalidated).
    pub entries_invalidated: u64,
    /// This node's checkpoint afterwards (dry run: unchanged).
    pub checkpoint: i64,
    /// The ledger head when the replay started.
    pub head: i64,
}

/// The replay of one node.
#[derive(Clone)]
pub struct Replayer {
    store: Arc<dyn ReplayStore>,
    hot: Arc<dyn HotTierSweep>,
    node_id: String,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The criteria of ledger rows, skipping (and logging) rows whose metadata cannot be read:
/// such a row was never re-applicable, and stalling every later row on it would be worse.
pub fn criteria_of(rows: &[LedgerRow]) -> Vec<Criterion> {
    rows.iter()
        .filter_map(|r| match Criterion::from_metadata(&r.metadata) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(seq_no = r.seq_no, error = %e, "ledger row cannot be re-applied; skipped");
                None
            }
        })
        .collect()
}

impl Replayer {
    /// A replay for `node_id` over `store` and this node's hot tiers.
    pub fn new(
        store: Arc<dyn ReplayStore>,
        hot: Arc<dyn HotTierSweep>,
        node_id: impl Into<String>,
    ) -> Self {
        Replayer {
            store,
            hot,
            node_id: node_id.into(),
        }
    }

    /// The node whose checkpoint this replay moves.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Applies one batch to the durable and hot tiers; returns the distinct entries removed.
    pub async fn apply(&self, rows: &[LedgerRow], durable: bool) -> Result<u64, ReplayError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let criteria = criteria_of(rows);
        // The two tiers are independent: both run at once.
        let (deleted, swept) = if durable {
            let (deleted, swept) =
                tokio::join!(self.store.reapply(rows), self.hot.sweep(&criteria, &[]));
            (
                deleted.map_err(ReplayError::Store)?,
                swept.map_err(ReplayError::HotTier)?,
            )
        } else {
            let swept = self
                .hot
                .sweep(&criteria, &[])
                .await
                .map_err(ReplayError::HotTier)?;
            (Vec::new(), swept)
        };
        let mut removed: BTreeSet<&String> = swept.iter().collect();
        // Entries the durable tier matched through facts this node's hot tier never saw
        // (signer-set members another node recorded) go from the hot tiers by key.
        let rest: Vec<String> = deleted
            .iter()
            .filter(|k| !removed.contains(k))
            .cloned()
            .collect();
        let extra = if rest.is_empty() {
            Vec::new()
        } else {
            self.hot
                .sweep(&[], &rest)
                .await
                .map_err(ReplayError::HotTier)?
        };
        removed.extend(deleted.iter());
        removed.extend(extra.iter());
        Ok(removed.len() as u64)
    }

    /// Sweeps this node's hot tiers by `criteria` only; returns how many entries went.
    pub async fn sweep(&self, criteria: &[Criterion]) -> Result<u64, ReplayError> {
        if criteria.is_empty() {
            return Ok(0);
        }
        let swept = self
            .hot
            .sweep(criteria, &[])
            .await
            .map_err(ReplayError::HotTier)?;
        Ok(swept.len() as u64)
    }

    /// Replays the ledger after `options.since` (or this node's checkpoint) up to the head
    /// as of the start, calling `progress` after each batch.
    pub async fn replay(
        &self,
        options: ReplayOptions,
        mut progress: impl FnMut(ReplayProgress),
    ) -> Result<ReplayReport, ReplayError> {
        let checkpoint = self
            .store
            .checkpoint(&self.node_id)
            .await
            .map_err(ReplayError::Store)?;
        let from = options.since.unwrap_or(checkpoint).max(0);
        let head = self.store.ledger_head().await.map_err(ReplayError::Store)?;
        let batch = i64::try_from(options.batch_size.max(1)).unwrap_or(i64::MAX);
        let mut report = ReplayReport {
            checkpoint,
            head,
            ..ReplayReport::default()
        };
        let mut at = from;
        progress(ReplayProgress {
            from,
            at,
            head,
            revocations: 0,
        });
        let fetch = |after: i64| async move {
            if after >= head {
                return Ok(Vec::new());
            }
            self.store
                .ledger_rows(after, batch.min(head - after))
                .await
                .map_err(ReplayError::Store)
        };
        // A batch's checkpoint is saved while the next batch is applied and the one after it
        // read: saves stay in order (each starts after its batch was applied, and the next
        // waits for it), so a saved checkpoint never covers a batch that was not applied.
        let save = |seq_no: i64| async move {
            self.store
                .save_checkpoint(&self.node_id, seq_no)
                .await
                .map_err(ReplayError::Store)
        };
        let mut pending: Option<i64> = None;
        let mut rows = fetch(at).await?;
        while let Some(last) = rows.last().map(|r| r.seq_no) {
            rows.retain(|r| r.seq_no <= head);
            // The next page is read while this one is applied.
            let next = if options.dry_run {
                report.entries_invalidated += rows
                    .iter()
                    .map(|r| u64::try_from(r.entries_invalidated).unwrap_or(0))
                    .sum::<u64>();
                fetch(last).await
            } else {
                let previous = async {
                    match pending.take() {
                        Some(seq_no) => save(seq_no).await.map(Some),
                        None => Ok(None),
                    }
                };
                let (applied, next, saved) =
                    tokio::join!(self.apply(&rows, true), fetch(last), previous);
                if let Some(saved) = saved? {
                    report.checkpoint = saved;
                }
                report.entries_invalidated += applied?;
                pending = Some(last.min(head));
                next
            };
            report.revocations += rows.len() as u64;
            at = last;
            metrics::counter!("provd_ledger_replayed_revocations_total")
                .increment(rows.len() as u64);
            progress(ReplayProgress {
                from,
                at,
                head,
                revocations: report.revocations,
            });
            rows = next?;
        }
        if let Some(seq_no) = pending {
            report.checkpoint = save(seq_no).await?;
        }
        if !options.dry_run && report.checkpoint < head && options.since.is_none() {
            // Rows rolled back before commit leave gaps in `seq_no`; the head is applied.
            report.checkpoint = self
                .store
                .save_checkpoint(&self.node_id, head)
                .await
                .map_err(ReplayError::Store)?;
        }
        metrics::gauge!("provd_ledger_head_seq_no").set(head as f64);
        if !options.dry_run {
            metrics::gauge!("provd_ledger_replay_lag")
                .set((head - report.checkpoint).max(0) as f64);
        }
        Ok(report)
    }
}

/// Many criteria at once, for matching every entry of a tier against a whole batch of
/// revocations in one pass.
#[derive(Debug, Default, Clone)]
pub struct CriteriaSet {
    veri_keys: std::collections::HashSet<String>,
    signer_sets: std::collections::HashSet<String>,
    policies: std::collections::HashSet<String>,
    key_ids: std::collections::HashSet<String>,
    /// Feed-epoch rules by feed (`None`: every feed), each epoch once.
    feeds: std::collections::HashMap<Option<String>, Vec<crate::domain::epoch::FeedEpoch>>,
}

impl CriteriaSet {
    /// The set of `criteria` and the explicit `veri_keys`.
    pub fn new(criteria: &[Criterion], veri_keys: &[String]) -> Self {
        let mut s = CriteriaSet::default();
        s.veri_keys.extend(veri_keys.iter().cloned());
        for c in criteria {
            match c {
                Criterion::VeriKey(k) => {
                    s.veri_keys.insert(k.clone());
                }
                Criterion::SignerSetHash(h) => {
                    s.signer_sets.insert(h.clone());
                }
                Criterion::PolicyHash(h) => {
                    s.policies.insert(h.clone());
                }
                Criterion::SignerKeyId(k) => {
                    s.key_ids.insert(k.clone());
                }
                Criterion::FeedEpochBefore { feed_id, before } => {
                    let rules = s.feeds.entry(feed_id.clone()).or_default();
                    if !rules.contains(before) {
                        rules.push(before.clone());
                    }
                }
            }
        }
        s
    }

    /// Whether nothing can match.
    pub fn is_empty(&self) -> bool {
        self.veri_keys.is_empty()
            && self.signer_sets.is_empty()
            && self.policies.is_empty()
            && self.key_ids.is_empty()
            && self.feeds.is_empty()
    }

    /// Whether any criterion (or explicit key) removes `entry`.
    pub fn matches(&self, entry: &crate::domain::entry::Entry) -> bool {
        self.veri_keys.contains(&entry.veri_key)
            || self.signer_sets.contains(&entry.signer_set_hash)
            || self.policies.contains(&entry.policy_hash)
            || entry
                .signer_key_ids
                .iter()
                .any(|k| self.key_ids.contains(k))
            || self.feed_matches(entry)
    }

    fn feed_matches(&self, entry: &crate::domain::entry::Entry) -> bool {
        if self.feeds.is_empty() {
            return false;
        }
        // The entry's epoch is parsed once, however many rules there are.
        let Some(epoch) = entry
            .feed_epoch
            .as_deref()
            .and_then(|e| crate::domain::epoch::FeedEpoch::parse(e).ok())
        else {
            return false;
        };
        let any = self.feeds.get(&None).into_iter().flatten();
        let own = entry
            .feed_id
            .as_ref()
            .and_then(|f| self.feeds.get(&Some(f.clone())))
            .into_iter()
            .flatten();
        any.chain(own).any(|before| epoch.is_before(before))
    }
}
