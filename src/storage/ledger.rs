//! The revocation ledger's outbox position (`prov_ledger_outbox`), the per-node replay
//! checkpoints (`prov_replay_checkpoints`), and the batched re-application of ledger rows
//! to the durable tier (`provcache_items`).
//!
//! The outbox position and the checkpoints only move forward (an upsert keeping the
//! greater value), so concurrent writers need no lock on either database. A replay deletes
//! in one transaction: on PostgreSQL with one statement per criterion column, the values
//! bound as arrays; on SQLite inside the single writer connection's transaction, which
//! already runs alone, one statement per value.

use std::collections::{HashMap, HashSet};

use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, LedgerRow};
use actors::ports::{LedgerOutboxStore, PortError, ReplayStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;

use super::codec::{List, Time};
use super::{Sql, Store, Tx, run};
use crate::adapters::AdapterError;

/// How far provd's clock (which stamps accepted writes) and the clock that stamps ledger
/// rows may be apart: the same margin the write-behind flusher uses, on the side of
/// deleting. A write accepted later than this after the revocation survives a replay.
const REPLAY_MARGIN: chrono::Duration = chrono::Duration::seconds(2);

/// The columns a replay can delete by with an equality match (a signer key ID through the
/// signer sets that hold it): an entry goes when it was accepted (`updated_at`) no later
/// than the cutoff.
#[derive(Clone, Copy)]
enum Column {
    VeriKey,
    SignerSetHash,
    PolicyHash,
    SignerKeyId,
}

impl Column {
    const ALL: [Column; 4] = [
        Column::VeriKey,
        Column::SignerSetHash,
        Column::PolicyHash,
        Column::SignerKeyId,
    ];

    /// PostgreSQL's statement for all of a column's values at once (`$1` the values, `$2`
    /// their cutoffs). `= ANY($1)` lets PostgreSQL find the rows through the column's index
    /// (an UNNEST join is planned as a hash join over the whole table, slow once it holds
    /// dead rows after a large invalidation); the cutoff of each row is looked up only for
    /// the rows found.
    fn pg(self) -> &'static str {
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
            Column::SignerKeyId => {
                "DELETE FROM provcache.provcache_items i WHERE i.signer_set_hash IN \
                 (SELECT m.signer_set_hash FROM provcache.prov_signer_set_members m \
                  WHERE m.key_id = ANY($1)) \
                 AND i.updated_at <= (SELECT max(r.at) \
                  FROM UNNEST($1::text[], $2::timestamptz[]) AS r(k, at) \
                  JOIN provcache.prov_signer_set_members m ON m.key_id = r.k \
                  WHERE m.signer_set_hash = i.signer_set_hash) \
                 RETURNING i.veri_key"
            }
        }
    }

    /// SQLite's statement for one value (`?1`) and its cutoff (`?2`).
    fn lite(self) -> &'static str {
        match self {
            Column::VeriKey => {
                "DELETE FROM provcache_items WHERE veri_key = ?1 AND updated_at <= ?2 \
                 RETURNING veri_key"
            }
            Column::SignerSetHash => {
                "DELETE FROM provcache_items WHERE signer_set_hash = ?1 AND updated_at <= ?2 \
                 RETURNING veri_key"
            }
            Column::PolicyHash => {
                "DELETE FROM provcache_items WHERE policy_hash = ?1 AND updated_at <= ?2 \
                 RETURNING veri_key"
            }
            Column::SignerKeyId => {
                "DELETE FROM provcache_items WHERE signer_set_hash IN \
                 (SELECT signer_set_hash FROM prov_signer_set_members WHERE key_id = ?1) \
                 AND updated_at <= ?2 RETURNING veri_key"
            }
        }
    }
}

/// Per value, the latest cutoff: deleting with it removes everything an earlier row of the
/// same value would (PostgreSQL's statements take the greatest cutoff of a value anyway).
/// Values keep their first-seen order.
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
        let at = row.revoked_at + REPLAY_MARGIN;
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

/// Deletes by one column's values in PostgreSQL, all in one statement.
async fn delete_pg(
    conn: &mut PgConnection,
    column: Column,
    cutoffs: &[(String, DateTime<Utc>)],
) -> Result<Vec<String>, AdapterError> {
    let (values, ats): (Vec<&str>, Vec<DateTime<Utc>>) =
        cutoffs.iter().map(|(v, at)| (v.as_str(), *at)).unzip();
    sqlx::query_scalar(column.pg())
        .bind(&values)
        .bind(&ats)
        .fetch_all(conn)
        .await
        .map_err(AdapterError::Postgres)
}

/// Deletes the entries one column's values match, each accepted no later than its value's
/// cutoff; returns their VeriKeys.
async fn delete_by(
    tx: &mut Tx,
    column: Column,
    cutoffs: &[(String, DateTime<Utc>)],
) -> Result<Vec<String>, AdapterError> {
    if cutoffs.is_empty() {
        return Ok(Vec::new());
    }
    // PostgreSQL takes the values as arrays in one statement (one round trip); SQLite has
    // no array binds and no round trips, so it loops in its transaction.
    match tx {
        Tx::Pg(pg) => delete_pg(pg, column, cutoffs).await,
        Tx::Lite(_) => {
            let mut deleted = Vec::new();
            for (value, at) in cutoffs {
                let keys: Vec<String> = run!(
                    scalar fetch_all,
                    tx.exec(),
                    Sql::new("", column.lite()),
                    value,
                    Time(*at)
                )?;
                deleted.extend(keys);
            }
            Ok(deleted)
        }
    }
}

impl Store {
    /// Re-applies ledger rows to the durable tier in one transaction (see
    /// [`ReplayStore::reapply`]); returns the VeriKeys deleted.
    pub async fn reapply_rows(&self, rows: &[LedgerRow]) -> Result<Vec<String>, AdapterError> {
        let g = group(rows);
        // A replay may be lost in a crash: the ledger is durable and re-applying is
        // idempotent. Not waiting for the WAL flush halves a batch's cost; WAL order keeps a
        // lost re-application from being overtaken by a checkpoint that survived.
        let mut tx = self.begin_relaxed().await?;
        let mut deleted: Vec<String> = Vec::new();
        for column in Column::ALL {
            let cutoffs = &g.by_column[column as usize].0;
            deleted.extend(delete_by(&mut tx, column, cutoffs).await?);
        }
        if !g.feeds.is_empty() {
            // Epochs compare as versions or instants, which SQL cannot do on the stored
            // text: candidates are read in this transaction, compared here (each parsed
            // once, against the rules of its own feed and of every feed), and deleted by
            // key and cutoff.
            let mut rules: HashMap<Option<&str>, Vec<(&FeedEpoch, DateTime<Utc>)>> = HashMap::new();
            for (f, before, at) in &g.feeds {
                rules.entry(f.as_deref()).or_default().push((before, *at));
            }
            // Only the named feeds' entries, unless a row applies to every feed.
            let any_feed = rules.contains_key(&None);
            let feed_ids = List(rules.keys().filter_map(|f| f.map(str::to_owned)).collect());
            let candidates: Vec<(String, Option<String>, String, Time)> = run!(
                rows fetch_all,
                tx.exec(),
                Sql::new(
                    "SELECT veri_key, feed_id, feed_epoch, updated_at \
                     FROM provcache.provcache_items \
                     WHERE feed_epoch IS NOT NULL AND ($1 OR feed_id = ANY($2))",
                    // The list of feeds goes in as one JSON array.
                    "SELECT veri_key, feed_id, feed_epoch, updated_at FROM provcache_items \
                     WHERE feed_epoch IS NOT NULL \
                     AND (?1 OR feed_id IN (SELECT value FROM json_each(?2)))",
                ),
                any_feed,
                feed_ids
            )?;
            let mut doomed: Cutoffs = Vec::new();
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
                if let Some(at) = cutoff.filter(|at| updated.0 <= *at) {
                    doomed.push((key, at));
                }
            }
            deleted.extend(delete_by(&mut tx, Column::VeriKey, &doomed).await?);
        }
        tx.commit().await?;
        let mut seen = HashSet::with_capacity(deleted.len());
        deleted.retain(|k| seen.insert(k.clone()));
        Ok(deleted)
    }

    /// The highest `seq_no` in the ledger (0 when empty).
    pub async fn ledger_head(&self) -> Result<i64, AdapterError> {
        run!(
            scalar fetch_one,
            self.read(),
            Sql::new(
                "SELECT coalesce(max(seq_no), 0)::bigint FROM provcache.prov_revocations",
                "SELECT coalesce(max(seq_no), 0) FROM prov_revocations",
            )
        )
    }

    /// This node's replay checkpoint (0 when it has none).
    pub async fn replay_checkpoint(&self, node_id: &str) -> Result<i64, AdapterError> {
        let cp: Option<i64> = run!(
            scalar fetch_optional,
            self.read(),
            Sql::new(
                "SELECT last_seq_no FROM provcache.prov_replay_checkpoints WHERE node_id = $1",
                "SELECT last_seq_no FROM prov_replay_checkpoints WHERE node_id = ?1",
            ),
            node_id
        )?;
        Ok(cp.unwrap_or(0))
    }

    /// Moves this node's checkpoint forward to `seq_no` (never back); returns the stored one.
    pub async fn save_replay_checkpoint(
        &self,
        node_id: &str,
        seq_no: i64,
    ) -> Result<i64, AdapterError> {
        // A checkpoint lost in a crash only means re-applying some rows (idempotent); the
        // WAL never keeps it while losing what it covers, which committed earlier.
        let mut tx = self.begin_relaxed().await?;
        let saved: i64 = run!(
            scalar fetch_one,
            tx.exec(),
            Sql::new(
                "INSERT INTO provcache.prov_replay_checkpoints (node_id, last_seq_no, updated_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (node_id) DO UPDATE SET \
                 last_seq_no = GREATEST(provcache.prov_replay_checkpoints.last_seq_no, \
                                        EXCLUDED.last_seq_no), updated_at = EXCLUDED.updated_at \
                 RETURNING last_seq_no",
                "INSERT INTO prov_replay_checkpoints (node_id, last_seq_no, updated_at) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (node_id) DO UPDATE SET \
                 last_seq_no = max(prov_replay_checkpoints.last_seq_no, excluded.last_seq_no), \
                 updated_at = excluded.updated_at \
                 RETURNING last_seq_no",
            ),
            node_id,
            seq_no,
            Time(Utc::now())
        )?;
        tx.commit().await?;
        Ok(saved)
    }

    /// The highest `seq_no` the outbox has published.
    pub async fn outbox_position(&self) -> Result<i64, AdapterError> {
        let p: Option<i64> = run!(
            scalar fetch_optional,
            self.read(),
            Sql::new(
                "SELECT published_seq_no FROM provcache.prov_ledger_outbox WHERE id = 1",
                "SELECT published_seq_no FROM prov_ledger_outbox WHERE id = 1",
            )
        )?;
        Ok(p.unwrap_or(0))
    }

    /// Moves the outbox position forward to `seq_no` (never back).
    pub async fn set_outbox_position(&self, seq_no: i64) -> Result<(), AdapterError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "INSERT INTO provcache.prov_ledger_outbox (id, published_seq_no, updated_at) \
                 VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET published_seq_no = \
                 GREATEST(provcache.prov_ledger_outbox.published_seq_no, \
                 EXCLUDED.published_seq_no), updated_at = EXCLUDED.updated_at",
                "INSERT INTO prov_ledger_outbox (id, published_seq_no, updated_at) \
                 VALUES (1, ?1, ?2) ON CONFLICT (id) DO UPDATE SET published_seq_no = \
                 max(prov_ledger_outbox.published_seq_no, excluded.published_seq_no), \
                 updated_at = excluded.updated_at",
            ),
            seq_no,
            Time(Utc::now())
        )?;
        Ok(())
    }
}

#[async_trait]
impl LedgerOutboxStore for Store {
    async fn published_seq_no(&self) -> Result<i64, PortError> {
        Ok(self.outbox_position().await?)
    }

    async fn set_published_seq_no(&self, seq_no: i64) -> Result<(), PortError> {
        Ok(self.set_outbox_position(seq_no).await?)
    }

    async fn ledger_rows(&self, after: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError> {
        Ok(self.revocations(after, limit).await?)
    }
}

#[async_trait]
impl ReplayStore for Store {
    async fn ledger_rows(&self, after: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError> {
        Ok(self.revocations(after, limit).await?)
    }

    async fn ledger_head(&self) -> Result<i64, PortError> {
        Ok(Store::ledger_head(self).await?)
    }

    async fn checkpoint(&self, node_id: &str) -> Result<i64, PortError> {
        Ok(self.replay_checkpoint(node_id).await?)
    }

    async fn save_checkpoint(&self, node_id: &str, seq_no: i64) -> Result<i64, PortError> {
        Ok(self.save_replay_checkpoint(node_id, seq_no).await?)
    }

    async fn reapply(&self, rows: &[LedgerRow]) -> Result<Vec<String>, PortError> {
        Ok(self.reapply_rows(rows).await?)
    }
}
