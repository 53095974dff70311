//! Log monitoring: verified checkpoints (`rekor_checkpoints`), divergences and their outbox
//! (`rekor_divergences`), and the re-verification mark of receipts
//! (`rekor_entries.verified_at`).
//!
//! A checkpoint is inserted once per backend, origin, size, root and observer, and a
//! divergence once per dedupe key (`ON CONFLICT DO NOTHING` on a unique index), so several
//! nodes sharing the database, or a split view served on every tick, raise it once. Every
//! write is one statement, which the unique indexes make safe between concurrent writers on
//! PostgreSQL and which SQLite's one writer connection runs one at a time; an acknowledgement
//! reads its row back in the write's transaction, so it returns the row that write left.

use actors::domain::merkle::Hash;
use actors::ports::{
    CheckpointQuery, CheckpointStore, Divergence, DivergenceStore, NewDivergence,
    ObservedCheckpoint, PortError, StoredCheckpoint, StoredReceipt,
};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::FromRow;

use super::codec::{Json, List, Time};
use super::rekor::{EntryRow, entry_columns};
use super::{Sql, Store, run};
use crate::adapters::AdapterError;

#[derive(FromRow)]
struct CheckpointRow {
    id: i64,
    backend: String,
    origin: String,
    tree_size: i64,
    root_hash: String,
    note: String,
    observed_by: String,
    observed_at: Time,
}

impl TryFrom<CheckpointRow> for StoredCheckpoint {
    type Error = AdapterError;
    fn try_from(r: CheckpointRow) -> Result<Self, AdapterError> {
        let root_hash: Hash = hex::decode(&r.root_hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| {
                AdapterError::Corrupt(format!("rekor_checkpoints.root_hash of row {}", r.id))
            })?;
        Ok(StoredCheckpoint {
            id: r.id,
            checkpoint: ObservedCheckpoint {
                backend: r.backend,
                origin: r.origin,
                tree_size: u64::try_from(r.tree_size).unwrap_or(0),
                root_hash,
                note: r.note,
                observed_by: r.observed_by,
            },
            observed_at: r.observed_at.0,
        })
    }
}

/// The checkpoint columns, in [`CheckpointRow`]'s order.
macro_rules! checkpoint_columns {
    () => {
        " id, backend, origin, tree_size, root_hash, note, observed_by, observed_at "
    };
}

#[derive(FromRow)]
struct DivergenceRow {
    id: i64,
    backend: String,
    origin: String,
    kind: String,
    evidence: Json,
    detected_by: String,
    detected_at: Time,
    acknowledged_at: Option<Time>,
    acknowledged_by: Option<String>,
    published_at: Option<Time>,
    delivered_at: Option<Time>,
    // INTEGER on PostgreSQL; SQLite's INTEGER decodes as i32 too.
    delivery_attempts: i32,
    last_delivery_error: Option<String>,
}

impl From<DivergenceRow> for Divergence {
    fn from(r: DivergenceRow) -> Self {
        Divergence {
            id: r.id,
            backend: r.backend,
            origin: r.origin,
            kind: r.kind,
            evidence: r.evidence.0,
            detected_by: r.detected_by,
            detected_at: r.detected_at.0,
            acknowledged_at: r.acknowledged_at.map(|t| t.0),
            acknowledged_by: r.acknowledged_by,
            published_at: r.published_at.map(|t| t.0),
            delivered_at: r.delivered_at.map(|t| t.0),
            delivery_attempts: u32::try_from(r.delivery_attempts).unwrap_or(0),
            last_delivery_error: r.last_delivery_error,
        }
    }
}

/// The divergence columns, in [`DivergenceRow`]'s order.
macro_rules! divergence_columns {
    () => {
        " id, backend, origin, kind, evidence, detected_by, detected_at, acknowledged_at, \
         acknowledged_by, published_at, delivered_at, delivery_attempts, last_delivery_error "
    };
}

fn size(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn checkpoints(rows: Vec<CheckpointRow>) -> Result<Vec<StoredCheckpoint>, PortError> {
    Ok(rows
        .into_iter()
        .map(StoredCheckpoint::try_from)
        .collect::<Result<_, _>>()?)
}

fn divergences(rows: Vec<DivergenceRow>) -> Vec<Divergence> {
    rows.into_iter().map(Divergence::from).collect()
}

#[async_trait]
impl CheckpointStore for Store {
    async fn record_checkpoint(&self, cp: &ObservedCheckpoint) -> Result<(), PortError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "INSERT INTO rekor_checkpoints (backend, origin, tree_size, root_hash, note, \
                 observed_by, observed_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT ON CONSTRAINT uk_rekor_checkpoint DO NOTHING",
                "INSERT INTO rekor_checkpoints (backend, origin, tree_size, root_hash, note, \
                 observed_by, observed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (backend, origin, tree_size, root_hash, observed_by) DO NOTHING",
            ),
            &cp.backend,
            &cp.origin,
            size(cp.tree_size),
            hex::encode(cp.root_hash),
            &cp.note,
            &cp.observed_by,
            Time(Utc::now())
        )?;
        Ok(())
    }

    async fn latest_checkpoint(
        &self,
        backend: &str,
        origin: &str,
        observed_by: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE backend = $1 AND origin = $2 \
                     AND observed_by = $3 ORDER BY tree_size DESC, id DESC LIMIT 1"
                ),
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE backend = ?1 AND origin = ?2 \
                     AND observed_by = ?3 ORDER BY tree_size DESC, id DESC LIMIT 1"
                ),
            ),
            backend,
            origin,
            observed_by
        )?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn conflicting_checkpoint(
        &self,
        origin: &str,
        tree_size: u64,
        root: &Hash,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE origin = $1 AND tree_size = $2 \
                     AND root_hash <> $3 ORDER BY id LIMIT 1"
                ),
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE origin = ?1 AND tree_size = ?2 \
                     AND root_hash <> ?3 ORDER BY id LIMIT 1"
                ),
            ),
            origin,
            size(tree_size),
            hex::encode(root)
        )?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn latest_foreign_checkpoint(
        &self,
        origin: &str,
        exclude: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE origin = $1 AND observed_by <> $2 \
                     ORDER BY id DESC LIMIT 1"
                ),
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE origin = ?1 AND observed_by <> ?2 \
                     ORDER BY id DESC LIMIT 1"
                ),
            ),
            origin,
            exclude
        )?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn checkpoints(&self, q: &CheckpointQuery) -> Result<Vec<StoredCheckpoint>, PortError> {
        let rows: Vec<CheckpointRow> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE ($1::text IS NULL OR backend = $1) \
                     AND ($2::text IS NULL OR origin = $2) \
                     AND ($3::bigint IS NULL OR tree_size = $3) ORDER BY id DESC LIMIT $4"
                ),
                concat!(
                    "SELECT",
                    checkpoint_columns!(),
                    "FROM rekor_checkpoints WHERE (?1 IS NULL OR backend = ?1) \
                     AND (?2 IS NULL OR origin = ?2) AND (?3 IS NULL OR tree_size = ?3) \
                     ORDER BY id DESC LIMIT ?4"
                ),
            ),
            q.backend.as_deref(),
            q.origin.as_deref(),
            q.tree_size.map(size),
            i64::from(q.limit)
        )?;
        checkpoints(rows)
    }

    async fn unverified_receipts(
        &self,
        backend: &str,
        origin: &str,
        tree_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, PortError> {
        // The origin is the first line of the receipt's checkpoint note; SQLite has no
        // `split_part`, so it cuts at the first newline itself.
        let rows: Vec<EntryRow> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    entry_columns!(),
                    "FROM rekor_entries WHERE backend = $1 AND verified_at IS NULL \
                     AND shard_log_index < $2 AND split_part(checkpoint, E'\\n', 1) = $3 \
                     ORDER BY shard_log_index LIMIT $4"
                ),
                concat!(
                    "SELECT",
                    entry_columns!(),
                    "FROM rekor_entries WHERE backend = ?1 AND verified_at IS NULL \
                     AND shard_log_index < ?2 \
                     AND (CASE WHEN instr(checkpoint, char(10)) > 0 \
                     THEN substr(checkpoint, 1, instr(checkpoint, char(10)) - 1) \
                     ELSE checkpoint END) = ?3 \
                     ORDER BY shard_log_index LIMIT ?4"
                ),
            ),
            backend,
            size(tree_size),
            origin,
            i64::from(limit)
        )?;
        Ok(rows
            .into_iter()
            .map(StoredReceipt::try_from)
            .collect::<Result<_, _>>()?)
    }

    async fn mark_receipts_verified(&self, uuids: &[String]) -> Result<(), PortError> {
        // The list binds as a text array on PostgreSQL and as one JSON array on SQLite,
        // which has no array parameters.
        run!(
            exec,
            self.write(),
            Sql::new(
                "UPDATE rekor_entries SET verified_at = $2 WHERE uuid = ANY($1)",
                "UPDATE rekor_entries SET verified_at = ?2 \
                 WHERE uuid IN (SELECT value FROM json_each(?1))",
            ),
            List(uuids.to_vec()),
            Time(Utc::now())
        )?;
        Ok(())
    }
}

#[async_trait]
impl DivergenceStore for Store {
    async fn raise_divergence(&self, new: &NewDivergence) -> Result<Option<Divergence>, PortError> {
        let row: Option<DivergenceRow> = run!(
            rows fetch_optional,
            self.write(),
            Sql::new(
                concat!(
                    "INSERT INTO rekor_divergences (backend, origin, kind, evidence, detected_by, \
                     dedupe_key, detected_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (dedupe_key) DO NOTHING RETURNING",
                    divergence_columns!()
                ),
                concat!(
                    "INSERT INTO rekor_divergences (backend, origin, kind, evidence, detected_by, \
                     dedupe_key, detected_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (dedupe_key) DO NOTHING RETURNING",
                    divergence_columns!()
                ),
            ),
            &new.backend,
            &new.origin,
            new.kind.as_str(),
            Json(new.evidence.clone()),
            &new.detected_by,
            &new.dedupe_key,
            Time(Utc::now())
        )?;
        Ok(row.map(Divergence::from))
    }

    async fn open_divergences(&self, backend: Option<&str>) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE acknowledged_at IS NULL \
                     AND ($1::text IS NULL OR backend = $1) ORDER BY id"
                ),
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE acknowledged_at IS NULL \
                     AND (?1 IS NULL OR backend = ?1) ORDER BY id"
                ),
            ),
            backend
        )?;
        Ok(divergences(rows))
    }

    async fn divergences(&self, open_only: bool, limit: u32) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE (NOT $1 OR acknowledged_at IS NULL) \
                     ORDER BY id DESC LIMIT $2"
                ),
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE (NOT ?1 OR acknowledged_at IS NULL) \
                     ORDER BY id DESC LIMIT ?2"
                ),
            ),
            open_only,
            i64::from(limit)
        )?;
        Ok(divergences(rows))
    }

    async fn acknowledge_divergence(
        &self,
        id: i64,
        by: &str,
    ) -> Result<Option<Divergence>, PortError> {
        // The row read back must be the one this write left, so both run in the write
        // transaction.
        let mut tx = self.begin().await?;
        run!(
            exec,
            tx.exec(),
            Sql::new(
                "UPDATE rekor_divergences SET acknowledged_at = $3, acknowledged_by = $2 \
                 WHERE id = $1 AND acknowledged_at IS NULL",
                "UPDATE rekor_divergences SET acknowledged_at = ?3, acknowledged_by = ?2 \
                 WHERE id = ?1 AND acknowledged_at IS NULL",
            ),
            id,
            by,
            Time(Utc::now())
        )?;
        let row: Option<DivergenceRow> = run!(
            rows fetch_optional,
            tx.exec(),
            Sql::new(
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE id = $1"
                ),
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE id = ?1"
                ),
            ),
            id
        )?;
        tx.commit().await?;
        Ok(row.map(Divergence::from))
    }

    async fn undelivered_divergences(
        &self,
        detected_by: &str,
        webhook: bool,
        limit: u32,
    ) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE detected_by = $1 \
                     AND (published_at IS NULL OR ($2 AND delivered_at IS NULL)) \
                     ORDER BY id LIMIT $3"
                ),
                concat!(
                    "SELECT",
                    divergence_columns!(),
                    "FROM rekor_divergences WHERE detected_by = ?1 \
                     AND (published_at IS NULL OR (?2 AND delivered_at IS NULL)) \
                     ORDER BY id LIMIT ?3"
                ),
            ),
            detected_by,
            webhook,
            i64::from(limit)
        )?;
        Ok(divergences(rows))
    }

    async fn mark_divergence_published(&self, id: i64) -> Result<(), PortError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "UPDATE rekor_divergences SET published_at = $2 WHERE id = $1",
                "UPDATE rekor_divergences SET published_at = ?2 WHERE id = ?1",
            ),
            id,
            Time(Utc::now())
        )?;
        Ok(())
    }

    async fn mark_divergence_delivered(&self, id: i64) -> Result<(), PortError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "UPDATE rekor_divergences SET delivered_at = $2 WHERE id = $1",
                "UPDATE rekor_divergences SET delivered_at = ?2 WHERE id = ?1",
            ),
            id,
            Time(Utc::now())
        )?;
        Ok(())
    }

    async fn record_delivery_failure(&self, id: i64, error: &str) -> Result<(), PortError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "UPDATE rekor_divergences SET delivery_attempts = delivery_attempts + 1, \
                 last_delivery_error = $2 WHERE id = $1",
                "UPDATE rekor_divergences SET delivery_attempts = delivery_attempts + 1, \
                 last_delivery_error = ?2 WHERE id = ?1",
            ),
            id,
            error.chars().take(1000).collect::<String>()
        )?;
        Ok(())
    }
}
