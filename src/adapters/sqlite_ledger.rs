//! The revocation ledger's outbox position, the per-node replay checkpoints, and the
//! batched re-application of ledger rows, in SQLite with the semantics of the PostgreSQL
//! adapter.

use std::collections::{HashMap, HashSet};

use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, LedgerRow};
use chrono::{DateTime, Utc};

use super::AdapterError;
use super::sqlite::{SqliteResult, SqliteStore, from_micros, to_micros};
use super::sqlite_provcache::CLOCK_SKEW_MARGIN;

/// The columns a replay can delete by with an equality match, and their statements: an
/// entry goes when it was accepted (`updated_at`) no later than the cutoff.
#[derive(Clone, Copy)]
enum Column {
    VeriKey,
    SignerSetHash,
    PolicyHash,
    SignerKeyId,
}

impl Column {
    fn sql(self) -> &'static str {
        match self {
            Column::VeriKey => {
                "DELETE FROM provcache_items WHERE veri_key = ? AND updated_at <= ? \
                 RETURNING veri_key"
            }
            Column::SignerSetHash => {
                "DELETE FROM provcache_items WHERE signer_set_hash = ? AND updated_at <= ? \
                 RETURNING veri_key"
            }
            Column::PolicyHash => {
                "DELETE FROM provcache_items WHERE policy_hash = ? AND updated_at <= ? \
                 RETURNING veri_key"
            }
            Column::SignerKeyId => {
                "DELETE FROM provcache_items WHERE signer_set_hash IN \
                 (SELECT signer_set_hash FROM prov_signer_set_members WHERE key_id = ?) \
                 AND updated_at <= ? RETURNING veri_key"
            }
        }
    }
}

/// Per value, the latest cutoff: deleting with it removes everything an earlier row of the
/// same value would. Values keep their first-seen order.
type Cutoffs = Vec<(String, DateTime<Utc>)>;

#[derive(Default)]
struct Grouped {
    by_column: [(Cutoffs, HashMap<String, usize>); 4],
    feeds: Vec<(Option<String>, FeedEpoch, DateTime<Utc>)>,
}

impl Grouped {
    fn push(&mut self, column: Column, value: String, at: DateTime<Utc>) {
        let (cutoffs, index) = &mut self.by_column[column as usize];
        match index.get(&value) {
            Some(&i) => cutoffs[i].1 = cutoffs[i].1.max(at),
            None => {
                index.insert(value.clone(), cutoffs.len());
                cutoffs.push((value, at));
            }
        }
    }
}

fn group(rows: &[LedgerRow]) -> Grouped {
    let mut g = Grouped::default();
    for row in rows {
        let Ok(c) = Criterion::from_metadata(&row.metadata) else {
            tracing::warn!(
                seq_no = row.seq_no,
                "ledger row without a readable criterion; skipped"
            );
            continue;
        };
        let at = row.revoked_at + CLOCK_SKEW_MARGIN;
        match c {
            Criterion::VeriKey(k) => g.push(Column::VeriKey, k, at),
            Criterion::SignerSetHash(h) => g.push(Column::SignerSetHash, h, at),
            Criterion::PolicyHash(h) => g.push(Column::PolicyHash, h, at),
            Criterion::SignerKeyId(k) => g.push(Column::SignerKeyId, k, at),
            Criterion::FeedEpochBefore { feed_id, before } => g.feeds.push((feed_id, before, at)),
        }
    }
    g
}

impl SqliteStore {
    /// Re-applies ledger rows to the durable tier in one transaction (see
    /// [`ReplayStore::reapply`]); returns the VeriKeys deleted.
    pub async fn reapply_rows(&self, rows: &[LedgerRow]) -> Result<Vec<String>, AdapterError> {
        let g = group(rows);
        let mut tx = self.writer().begin().await.sq()?;
        let mut deleted: Vec<String> = Vec::new();
        for column in [
            Column::VeriKey,
            Column::SignerSetHash,
            Column::PolicyHash,
            Column::SignerKeyId,
        ] {
            for (value, at) in &g.by_column[column as usize].0 {
                let keys: Vec<String> = sqlx::query_scalar(column.sql())
                    .bind(value)
                    .bind(to_micros(*at))
                    .fetch_all(&mut *tx)
                    .await
                    .sq()?;
                deleted.extend(keys);
            }
        }
        if !g.feeds.is_empty() {
            // Epochs compare as versions or instants, which SQL cannot do on the stored
            // text: candidates are read in this transaction, compared here (against the
            // rules of their own feed and of every feed), and deleted by key and cutoff.
            let mut rules: HashMap<Option<&str>, Vec<(&FeedEpoch, DateTime<Utc>)>> = HashMap::new();
            for (f, before, at) in &g.feeds {
                rules.entry(f.as_deref()).or_default().push((before, *at));
            }
            // Only the named feeds' entries, unless a row applies to every feed; the list
            // goes in as one JSON array.
            let any_feed = rules.contains_key(&None);
            let feed_ids: Vec<&str> = rules.keys().filter_map(|f| *f).collect();
            let feed_ids = serde_json::to_string(&feed_ids)
                .map_err(|e| AdapterError::Corrupt(e.to_string()))?;
            let candidates: Vec<(String, Option<String>, String, i64)> = sqlx::query_as(
                "SELECT veri_key, feed_id, feed_epoch, updated_at FROM provcache_items \
                 WHERE feed_epoch IS NOT NULL \
                 AND (? OR feed_id IN (SELECT value FROM json_each(?)))",
            )
            .bind(any_feed)
            .bind(feed_ids)
            .fetch_all(&mut *tx)
            .await
            .sq()?;
            for (key, feed, epoch, updated) in candidates {
                let Ok(epoch) = FeedEpoch::parse(&epoch) else {
                    continue;
                };
                let applicable = rules
                    .get(&None)
                    .into_iter()
                    .chain(feed.as_deref().and_then(|f| rules.get(&Some(f))))
                    .flatten();
                // The latest revocation that removes this entry decides its cutoff.
                let cutoff = applicable
                    .filter(|(before, _)| epoch.is_before(before))
                    .map(|(_, at)| *at)
                    .max();
                if cutoff.is_some_and(|at| from_micros(updated) <= at) {
                    sqlx::query("DELETE FROM provcache_items WHERE veri_key = ?")
                        .bind(&key)
                        .execute(&mut *tx)
                        .await
                        .sq()?;
                    deleted.push(key);
                }
            }
        }
        tx.commit().await.sq()?;
        let mut seen = HashSet::with_capacity(deleted.len());
        deleted.retain(|k| seen.insert(k.clone()));
        Ok(deleted)
    }

    /// The highest `seq_no` in the ledger (0 when empty).
    pub async fn ledger_head(&self) -> Result<i64, AdapterError> {
        sqlx::query_scalar("SELECT coalesce(max(seq_no), 0) FROM prov_revocations")
            .fetch_one(self.reader())
            .await
            .sq()
    }

    /// This node's replay checkpoint (0 when it has none).
    pub async fn replay_checkpoint(&self, node_id: &str) -> Result<i64, AdapterError> {
        let cp: Option<i64> =
            sqlx::query_scalar("SELECT last_seq_no FROM prov_replay_checkpoints WHERE node_id = ?")
                .bind(node_id)
                .fetch_optional(self.reader())
                .await
                .sq()?;
        Ok(cp.unwrap_or(0))
    }

    /// Moves this node's checkpoint forward to `seq_no` (never back); returns the stored one.
    pub async fn save_replay_checkpoint(
        &self,
        node_id: &str,
        seq_no: i64,
    ) -> Result<i64, AdapterError> {
        sqlx::query_scalar(
            "INSERT INTO prov_replay_checkpoints (node_id, last_seq_no, updated_at) \
             VALUES (?1, ?2, ?3) ON CONFLICT (node_id) DO UPDATE SET \
             last_seq_no = max(prov_replay_checkpoints.last_seq_no, excluded.last_seq_no), \
             updated_at = excluded.updated_at \
             RETURNING last_seq_no",
        )
        .bind(node_id)
        .bind(seq_no)
        .bind(to_micros(Utc::now()))
        .fetch_one(self.writer())
        .await
        .sq()
    }

    /// The highest `seq_no` the outbox has published.
    pub async fn outbox_position(&self) -> Result<i64, AdapterError> {
        let p: Option<i64> =
            sqlx::query_scalar("SELECT published_seq_no FROM prov_ledger_outbox WHERE id = 1")
                .fetch_optional(self.reader())
                .await
                .sq()?;
        Ok(p.unwrap_or(0))
    }

    /// Moves the outbox position forward to `seq_no` (never back).
    pub async fn set_outbox_position(&self, seq_no: i64) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO prov_ledger_outbox (id, published_seq_no, updated_at) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET published_seq_no = \
             max(prov_ledger_outbox.published_seq_no, excluded.published_seq_no), \
             updated_at = excluded.updated_at",
        )
        .bind(seq_no)
        .bind(to_micros(Utc::now()))
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }
}

super::via_inherent::ledger_stores!(SqliteStore);
