//! The revocation ledger's outbox position, the per-node replay checkpoints, and the
//! batched re-application of ledger rows, on the same PostgreSQL pool as [`PgStore`].

use std::collections::{HashMap, HashSet};

use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, LedgerRow};
use chrono::{DateTime, Utc};

use super::AdapterError;
use super::postgres::PgStore;

/// How far provd's clock (which stamps accepted writes) and PostgreSQL's (which stamps
/// ledger rows) may be apart: the same margin the write-behind flusher uses, on the side of
/// deleting. A write accepted later than this after the revocation survives a replay.
const REPLAY_MARGIN: chrono::Duration = chrono::Duration::seconds(2);

/// The columns a replay can delete by with an equality match.
#[derive(Clone, Copy)]
enum Column {
    VeriKey,
    SignerSetHash,
    PolicyHash,
}

impl Column {
    // `= ANY($1)` lets PostgreSQL find the rows through the column's index (an UNNEST
    // join is planned as a hash join over the whole table, slow once it holds dead rows
    // after a large invalidation); the cutoff of each row is looked up only for the rows
    // found.
    fn sql(self) -> &'static str {
        match self {
            Column::VeriKey => {
                "DELETE FROM provcache.provcache_items i WHERE i.veri_key = ANY($1) \
                 AND i.updated_at <= (SELECT max(r.at) FROM UNNEST($1::text[], \
                   $2::timestamptz[]) AS r(v, at) WHERE r.v = i.veri_key) \
                 RETURNING i.veri_key"
            }
            Column::SignerSetHash => {
                "DELETE FROM provcache.provcache_items i WHERE i.signer_set_hash = ANY($1) \
                 AND i.updated_at <= (SELECT max(r.at) FROM UNNEST($1::text[], \
                   $2::timestamptz[]) AS r(v, at) WHERE r.v = i.signer_set_hash) \
                 RETURNING i.veri_key"
            }
            Column::PolicyHash => {
                "DELETE FROM provcache.provcache_items i WHERE i.policy_hash = ANY($1) \
                 AND i.updated_at <= (SELECT max(r.at) FROM UNNEST($1::text[], \
                   $2::timestamptz[]) AS r(v, at) WHERE r.v = i.policy_hash) \
                 RETURNING i.veri_key"
            }
        }
    }
}

#[derive(Default)]
struct Grouped {
    veri_keys: (Vec<String>, Vec<DateTime<Utc>>),
    signer_sets: (Vec<String>, Vec<DateTime<Utc>>),
    policies: (Vec<String>, Vec<DateTime<Utc>>),
    key_ids: (Vec<String>, Vec<DateTime<Utc>>),
    feeds: Vec<(Option<String>, FeedEpoch, DateTime<Utc>)>,
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
        let at = row.revoked_at + REPLAY_MARGIN;
        let push = |(v, a): &mut (Vec<String>, Vec<DateTime<Utc>>), s: String| {
            v.push(s);
            a.push(at);
        };
        match c {
            Criterion::VeriKey(k) => push(&mut g.veri_keys, k),
            Criterion::SignerSetHash(h) => push(&mut g.signer_sets, h),
            Criterion::PolicyHash(h) => push(&mut g.policies, h),
            Criterion::SignerKeyId(k) => push(&mut g.key_ids, k),
            Criterion::FeedEpochBefore { feed_id, before } => g.feeds.push((feed_id, before, at)),
        }
    }
    g
}

impl PgStore {
    /// Re-applies ledger rows to the durable tier in one transaction (see
    /// [`ReplayStore::reapply`]); returns the VeriKeys deleted.
    pub async fn reapply_rows(&self, rows: &[LedgerRow]) -> Result<Vec<String>, AdapterError> {
        let g = group(rows);
        let mut tx = self.pool().begin().await?;
        // A replay may be lost in a crash: the ledger is durable and re-applying is
        // idempotent. Not waiting for the WAL flush halves a batch's cost; WAL order keeps a
        // lost re-application from being overtaken by a checkpoint that survived.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let mut deleted: Vec<String> = Vec::new();
        for (column, (values, ats)) in [
            (Column::VeriKey, &g.veri_keys),
            (Column::SignerSetHash, &g.signer_sets),
            (Column::PolicyHash, &g.policies),
        ] {
            if values.is_empty() {
                continue;
            }
            let keys: Vec<String> = sqlx::query_scalar(column.sql())
                .bind(values)
                .bind(ats)
                .fetch_all(&mut *tx)
                .await?;
            deleted.extend(keys);
        }
        if !g.key_ids.0.is_empty() {
            let keys: Vec<String> = sqlx::query_scalar(
                "DELETE FROM provcache.provcache_items i WHERE i.signer_set_hash IN \
                 (SELECT m.signer_set_hash FROM provcache.prov_signer_set_members m \
                  WHERE m.key_id = ANY($1)) \
                 AND i.updated_at <= (SELECT max(r.at) \
                  FROM UNNEST($1::text[], $2::timestamptz[]) AS r(k, at) \
                  JOIN provcache.prov_signer_set_members m ON m.key_id = r.k \
                  WHERE m.signer_set_hash = i.signer_set_hash) \
                 RETURNING i.veri_key",
            )
            .bind(&g.key_ids.0)
            .bind(&g.key_ids.1)
            .fetch_all(&mut *tx)
            .await?;
            deleted.extend(keys);
        }
        if !g.feeds.is_empty() {
            // Epochs compare as versions or instants, which SQL cannot do on the stored
            // text: candidates are read, compared here (each parsed once, against the rules
            // of its own feed and of every feed), and deleted by key and accepted time.
            let mut rules: HashMap<Option<&str>, Vec<(&FeedEpoch, DateTime<Utc>)>> = HashMap::new();
            for (f, before, at) in &g.feeds {
                rules.entry(f.as_deref()).or_default().push((before, *at));
            }
            let any_feed = rules.contains_key(&None);
            let feed_ids: Vec<&str> = rules.keys().filter_map(|f| *f).collect();
            let candidates: Vec<(String, Option<String>, String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT veri_key, feed_id, feed_epoch, updated_at \
                     FROM provcache.provcache_items \
                     WHERE feed_epoch IS NOT NULL AND ($1 OR feed_id = ANY($2))",
            )
            .bind(any_feed)
            .bind(&feed_ids)
            .fetch_all(&mut *tx)
            .await?;
            let mut doomed: Vec<String> = Vec::new();
            let mut cutoffs: Vec<DateTime<Utc>> = Vec::new();
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
                if let Some(at) = cutoff.filter(|at| updated <= *at) {
                    doomed.push(key);
                    cutoffs.push(at);
                }
            }
            if !doomed.is_empty() {
                let keys: Vec<String> = sqlx::query_scalar(Column::VeriKey.sql())
                    .bind(&doomed)
                    .bind(&cutoffs)
                    .fetch_all(&mut *tx)
                    .await?;
                deleted.extend(keys);
            }
        }
        tx.commit().await?;
        let mut seen = HashSet::with_capacity(deleted.len());
        deleted.retain(|k| seen.insert(k.clone()));
        Ok(deleted)
    }

    /// The highest `seq_no` in the ledger (0 when empty).
    pub async fn ledger_head(&self) -> Result<i64, AdapterError> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(max(seq_no), 0)::bigint FROM provcache.prov_revocations",
        )
        .fetch_one(self.pool())
        .await?)
    }

    /// This node's replay checkpoint (0 when it has none).
    pub async fn replay_checkpoint(&self, node_id: &str) -> Result<i64, AdapterError> {
        let cp: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq_no FROM provcache.prov_replay_checkpoints WHERE node_id = $1",
        )
        .bind(node_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(cp.unwrap_or(0))
    }

    /// Moves this node's checkpoint forward to `seq_no` (never back); returns the stored one.
    pub async fn save_replay_checkpoint(
        &self,
        node_id: &str,
        seq_no: i64,
    ) -> Result<i64, AdapterError> {
        let mut tx = self.pool().begin().await?;
        // A checkpoint lost in a crash only means re-applying some rows (idempotent); the WAL
        // never keeps it while losing what it covers, which committed earlier.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        let saved = sqlx::query_scalar(
            "INSERT INTO provcache.prov_replay_checkpoints (node_id, last_seq_no, updated_at) \
             VALUES ($1, $2, now()) ON CONFLICT (node_id) DO UPDATE SET \
             last_seq_no = GREATEST(provcache.prov_replay_checkpoints.last_seq_no, \
                                    EXCLUDED.last_seq_no), updated_at = now() \
             RETURNING last_seq_no",
        )
        .bind(node_id)
        .bind(seq_no)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(saved)
    }

    /// The highest `seq_no` the outbox has published.
    pub async fn outbox_position(&self) -> Result<i64, AdapterError> {
        let p: Option<i64> = sqlx::query_scalar(
            "SELECT published_seq_no FROM provcache.prov_ledger_outbox WHERE id = 1",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(p.unwrap_or(0))
    }

    /// Moves the outbox position forward to `seq_no` (never back).
    pub async fn set_outbox_position(&self, seq_no: i64) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO provcache.prov_ledger_outbox (id, published_seq_no) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET published_seq_no = \
             GREATEST(provcache.prov_ledger_outbox.published_seq_no, EXCLUDED.published_seq_no), \
             updated_at = now()",
        )
        .bind(seq_no)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

super::via_inherent::ledger_stores!(PgStore);
