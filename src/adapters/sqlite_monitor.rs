//! Log monitoring in embedded mode's SQLite file: verified checkpoints (`rekor_checkpoints`),
//! divergences and their outbox (`rekor_divergences`), and the re-verification mark of
//! receipts (`rekor_entries.verified_at`), with the PostgreSQL adapter's semantics.
//!
//! A divergence is inserted once per dedupe key (`ON CONFLICT DO NOTHING` on the same unique
//! index as PostgreSQL's), so a split view served on every tick is raised once.

use actors::domain::merkle::Hash;
use actors::ports::{
    CheckpointQuery, CheckpointStore, Divergence, DivergenceStore, NewDivergence,
    ObservedCheckpoint, PortError, StoredCheckpoint, StoredReceipt,
};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::FromRow;

use super::AdapterError;
use super::sqlite::{SqliteResult, SqliteStore, from_micros, to_micros};
use super::sqlite_rekor::{ENTRY_COLUMNS, EntryRow};

#[derive(FromRow)]
struct CheckpointRow {
    id: i64,
    backend: String,
    origin: String,
    tree_size: i64,
    root_hash: String,
    note: String,
    observed_by: String,
    observed_at: i64,
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
            observed_at: from_micros(r.observed_at),
        })
    }
}

const CHECKPOINT_COLUMNS: &str =
    "id, backend, origin, tree_size, root_hash, note, observed_by, observed_at";

#[derive(FromRow)]
struct DivergenceRow {
    id: i64,
    backend: String,
    origin: String,
    kind: String,
    evidence: String,
    detected_by: String,
    detected_at: i64,
    acknowledged_at: Option<i64>,
    acknowledged_by: Option<String>,
    published_at: Option<i64>,
    delivered_at: Option<i64>,
    delivery_attempts: i64,
    last_delivery_error: Option<String>,
}

impl TryFrom<DivergenceRow> for Divergence {
    type Error = AdapterError;
    fn try_from(r: DivergenceRow) -> Result<Self, AdapterError> {
        Ok(Divergence {
            evidence: serde_json::from_str(&r.evidence).map_err(|e| {
                AdapterError::Corrupt(format!("rekor_divergences.evidence of row {}: {e}", r.id))
            })?,
            id: r.id,
            backend: r.backend,
            origin: r.origin,
            kind: r.kind,
            detected_by: r.detected_by,
            detected_at: from_micros(r.detected_at),
            acknowledged_at: r.acknowledged_at.map(from_micros),
            acknowledged_by: r.acknowledged_by,
            published_at: r.published_at.map(from_micros),
            delivered_at: r.delivered_at.map(from_micros),
            delivery_attempts: u32::try_from(r.delivery_attempts).unwrap_or(0),
            last_delivery_error: r.last_delivery_error,
        })
    }
}

const DIVERGENCE_COLUMNS: &str = "id, backend, origin, kind, evidence, detected_by, detected_at, \
     acknowledged_at, acknowledged_by, published_at, delivered_at, delivery_attempts, \
     last_delivery_error";

fn size(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn select(columns: &str, rest: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {columns} {rest}"))
}

fn checkpoints(rows: Vec<CheckpointRow>) -> Result<Vec<StoredCheckpoint>, PortError> {
    Ok(rows
        .into_iter()
        .map(StoredCheckpoint::try_from)
        .collect::<Result<_, _>>()?)
}

fn divergences(rows: Vec<DivergenceRow>) -> Result<Vec<Divergence>, PortError> {
    Ok(rows
        .into_iter()
        .map(Divergence::try_from)
        .collect::<Result<_, _>>()?)
}

#[async_trait]
impl CheckpointStore for SqliteStore {
    async fn record_checkpoint(&self, cp: &ObservedCheckpoint) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO rekor_checkpoints (backend, origin, tree_size, root_hash, note, \
             observed_by, observed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (backend, origin, tree_size, root_hash, observed_by) DO NOTHING",
        )
        .bind(&cp.backend)
        .bind(&cp.origin)
        .bind(size(cp.tree_size))
        .bind(hex::encode(cp.root_hash))
        .bind(&cp.note)
        .bind(&cp.observed_by)
        .bind(to_micros(Utc::now()))
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }

    async fn latest_checkpoint(
        &self,
        backend: &str,
        origin: &str,
        observed_by: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = sqlx::query_as(select(
            CHECKPOINT_COLUMNS,
            "FROM rekor_checkpoints WHERE backend = ?1 AND origin = ?2 AND observed_by = ?3 \
             ORDER BY tree_size DESC, id DESC LIMIT 1",
        ))
        .bind(backend)
        .bind(origin)
        .bind(observed_by)
        .fetch_optional(self.reader())
        .await
        .sq()?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn conflicting_checkpoint(
        &self,
        origin: &str,
        tree_size: u64,
        root: &Hash,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = sqlx::query_as(select(
            CHECKPOINT_COLUMNS,
            "FROM rekor_checkpoints WHERE origin = ?1 AND tree_size = ?2 AND root_hash <> ?3 \
             ORDER BY id LIMIT 1",
        ))
        .bind(origin)
        .bind(size(tree_size))
        .bind(hex::encode(root))
        .fetch_optional(self.reader())
        .await
        .sq()?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn latest_foreign_checkpoint(
        &self,
        origin: &str,
        exclude: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = sqlx::query_as(select(
            CHECKPOINT_COLUMNS,
            "FROM rekor_checkpoints WHERE origin = ?1 AND observed_by <> ?2 \
             ORDER BY id DESC LIMIT 1",
        ))
        .bind(origin)
        .bind(exclude)
        .fetch_optional(self.reader())
        .await
        .sq()?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn checkpoints(&self, q: &CheckpointQuery) -> Result<Vec<StoredCheckpoint>, PortError> {
        let rows: Vec<CheckpointRow> = sqlx::query_as(select(
            CHECKPOINT_COLUMNS,
            "FROM rekor_checkpoints WHERE (?1 IS NULL OR backend = ?1) \
             AND (?2 IS NULL OR origin = ?2) AND (?3 IS NULL OR tree_size = ?3) \
             ORDER BY id DESC LIMIT ?4",
        ))
        .bind(q.backend.as_deref())
        .bind(q.origin.as_deref())
        .bind(q.tree_size.map(size))
        .bind(i64::from(q.limit))
        .fetch_all(self.reader())
        .await
        .sq()?;
        checkpoints(rows)
    }

    async fn unverified_receipts(
        &self,
        backend: &str,
        origin: &str,
        tree_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, PortError> {
        // The origin is the first line of the receipt's checkpoint note (PostgreSQL's
        // `split_part(checkpoint, E'\n', 1)`). The rows come whole in one query, where
        // PostgreSQL looks each receipt up again by UUID: the same receipts.
        let rows: Vec<EntryRow> = sqlx::query_as(select(
            ENTRY_COLUMNS,
            "FROM rekor_entries WHERE backend = ?1 AND verified_at IS NULL \
             AND shard_log_index < ?2 \
             AND (CASE WHEN instr(checkpoint, char(10)) > 0 \
                  THEN substr(checkpoint, 1, instr(checkpoint, char(10)) - 1) \
                  ELSE checkpoint END) = ?3 \
             ORDER BY shard_log_index LIMIT ?4",
        ))
        .bind(backend)
        .bind(size(tree_size))
        .bind(origin)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .sq()?;
        Ok(rows
            .into_iter()
            .map(StoredReceipt::try_from)
            .collect::<Result<_, _>>()?)
    }

    async fn mark_receipts_verified(&self, uuids: &[String]) -> Result<(), PortError> {
        // The list travels as one JSON array (SQLite has no array parameters).
        let list = serde_json::to_string(uuids).map_err(|e| PortError::Rejected(e.to_string()))?;
        sqlx::query(
            "UPDATE rekor_entries SET verified_at = ?2 \
             WHERE uuid IN (SELECT value FROM json_each(?1))",
        )
        .bind(list)
        .bind(to_micros(Utc::now()))
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }
}

#[async_trait]
impl DivergenceStore for SqliteStore {
    async fn raise_divergence(&self, new: &NewDivergence) -> Result<Option<Divergence>, PortError> {
        let evidence =
            serde_json::to_string(&new.evidence).map_err(|e| PortError::Rejected(e.to_string()))?;
        let row: Option<DivergenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rekor_divergences (backend, origin, kind, evidence, detected_by, \
             dedupe_key, detected_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING {DIVERGENCE_COLUMNS}"
        )))
        .bind(&new.backend)
        .bind(&new.origin)
        .bind(new.kind.as_str())
        .bind(evidence)
        .bind(&new.detected_by)
        .bind(&new.dedupe_key)
        .bind(to_micros(Utc::now()))
        .fetch_optional(self.writer())
        .await
        .sq()?;
        Ok(row.map(Divergence::try_from).transpose()?)
    }

    async fn open_divergences(&self, backend: Option<&str>) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE acknowledged_at IS NULL \
             AND (?1 IS NULL OR backend = ?1) ORDER BY id",
        ))
        .bind(backend)
        .fetch_all(self.reader())
        .await
        .sq()?;
        divergences(rows)
    }

    async fn divergences(&self, open_only: bool, limit: u32) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE (NOT ?1 OR acknowledged_at IS NULL) \
             ORDER BY id DESC LIMIT ?2",
        ))
        .bind(open_only)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .sq()?;
        divergences(rows)
    }

    async fn acknowledge_divergence(
        &self,
        id: i64,
        by: &str,
    ) -> Result<Option<Divergence>, PortError> {
        // The row read back must be the one this write left, so both run in the write
        // transaction.
        let mut tx = self.writer().begin().await.sq()?;
        sqlx::query(
            "UPDATE rekor_divergences SET acknowledged_at = ?3, acknowledged_by = ?2 \
             WHERE id = ?1 AND acknowledged_at IS NULL",
        )
        .bind(id)
        .bind(by)
        .bind(to_micros(Utc::now()))
        .execute(&mut *tx)
        .await
        .sq()?;
        let row: Option<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE id = ?1",
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .sq()?;
        tx.commit().await.sq()?;
        Ok(row.map(Divergence::try_from).transpose()?)
    }

    async fn undelivered_divergences(
        &self,
        detected_by: &str,
        webhook: bool,
        limit: u32,
    ) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE detected_by = ?1 \
             AND (published_at IS NULL OR (?2 AND delivered_at IS NULL)) ORDER BY id LIMIT ?3",
        ))
        .bind(detected_by)
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .sq()?;
        divergences(rows)
    }

    async fn mark_divergence_published(&self, id: i64) -> Result<(), PortError> {
        sqlx::query("UPDATE rekor_divergences SET published_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(to_micros(Utc::now()))
            .execute(self.writer())
            .await
            .sq()?;
        Ok(())
    }

    async fn mark_divergence_delivered(&self, id: i64) -> Result<(), PortError> {
        sqlx::query("UPDATE rekor_divergences SET delivered_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(to_micros(Utc::now()))
            .execute(self.writer())
            .await
            .sq()?;
        Ok(())
    }

    async fn record_delivery_failure(&self, id: i64, error: &str) -> Result<(), PortError> {
        sqlx::query(
            "UPDATE rekor_divergences SET delivery_attempts = delivery_attempts + 1, \
             last_delivery_error = ?2 WHERE id = ?1",
        )
        .bind(id)
        .bind(error.chars().take(1000).collect::<String>())
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }
}
