//! Log monitoring in PostgreSQL: verified checkpoints (`rekor_checkpoints`), divergences
//! and their outbox (`rekor_divergences`), and the re-verification mark of receipts
//! (`rekor_entries.verified_at`).
//!
//! A divergence is inserted once per dedupe key (`ON CONFLICT DO NOTHING` on a unique
//! index), so several nodes sharing the database raise a split view once.

use actors::domain::merkle::Hash;
use actors::ports::{
    CheckpointQuery, CheckpointStore, Divergence, DivergenceStore, NewDivergence,
    ObservedCheckpoint, PortError, StoredCheckpoint, StoredReceipt,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::AdapterError;
use super::postgres::PgStore;

#[derive(FromRow)]
struct CheckpointRow {
    id: i64,
    backend: String,
    origin: String,
    tree_size: i64,
    root_hash: String,
    note: String,
    observed_by: String,
    observed_at: DateTime<Utc>,
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
            observed_at: r.observed_at,
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
    evidence: serde_json::Value,
    detected_by: String,
    detected_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
    published_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
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
            evidence: r.evidence,
            detected_by: r.detected_by,
            detected_at: r.detected_at,
            acknowledged_at: r.acknowledged_at,
            acknowledged_by: r.acknowledged_by,
            published_at: r.published_at,
            delivered_at: r.delivered_at,
            delivery_attempts: u32::try_from(r.delivery_attempts).unwrap_or(0),
            last_delivery_error: r.last_delivery_error,
        }
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

#[async_trait]
impl CheckpointStore for PgStore {
    async fn record_checkpoint(&self, cp: &ObservedCheckpoint) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO rekor_checkpoints (backend, origin, tree_size, root_hash, note, \
             observed_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT ON CONSTRAINT \
             uk_rekor_checkpoint DO NOTHING",
        )
        .bind(&cp.backend)
        .bind(&cp.origin)
        .bind(size(cp.tree_size))
        .bind(hex::encode(cp.root_hash))
        .bind(&cp.note)
        .bind(&cp.observed_by)
        .execute(self.pool())
        .await
        .map_err(AdapterError::from)?;
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
            "FROM rekor_checkpoints WHERE backend = $1 AND origin = $2 AND observed_by = $3 \
             ORDER BY tree_size DESC, id DESC LIMIT 1",
        ))
        .bind(backend)
        .bind(origin)
        .bind(observed_by)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
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
            "FROM rekor_checkpoints WHERE origin = $1 AND tree_size = $2 AND root_hash <> $3 \
             ORDER BY id LIMIT 1",
        ))
        .bind(origin)
        .bind(size(tree_size))
        .bind(hex::encode(root))
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn latest_foreign_checkpoint(
        &self,
        origin: &str,
        exclude: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        let row: Option<CheckpointRow> = sqlx::query_as(select(
            CHECKPOINT_COLUMNS,
            "FROM rekor_checkpoints WHERE origin = $1 AND observed_by <> $2 \
             ORDER BY id DESC LIMIT 1",
        ))
        .bind(origin)
        .bind(exclude)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(row.map(StoredCheckpoint::try_from).transpose()?)
    }

    async fn checkpoints(&self, q: &CheckpointQuery) -> Result<Vec<StoredCheckpoint>, PortError> {
        let rows: Vec<CheckpointRow> = sqlx::query_as(select(
            CHECKPOINT_COLUMNS,
            "FROM rekor_checkpoints WHERE ($1::text IS NULL OR backend = $1) \
             AND ($2::text IS NULL OR origin = $2) AND ($3::bigint IS NULL OR tree_size = $3) \
             ORDER BY id DESC LIMIT $4",
        ))
        .bind(q.backend.as_deref())
        .bind(q.origin.as_deref())
        .bind(q.tree_size.map(size))
        .bind(i64::from(q.limit))
        .fetch_all(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(rows
            .into_iter()
            .map(StoredCheckpoint::try_from)
            .collect::<Result<_, _>>()?)
    }

    async fn unverified_receipts(
        &self,
        backend: &str,
        origin: &str,
        tree_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, PortError> {
        // The origin is the first line of the receipt's checkpoint note.
        let uuids: Vec<(String,)> = sqlx::query_as(
            "SELECT uuid FROM rekor_entries WHERE backend = $1 AND verified_at IS NULL \
             AND shard_log_index < $2 AND split_part(checkpoint, E'\\n', 1) = $3 \
             ORDER BY shard_log_index LIMIT $4",
        )
        .bind(backend)
        .bind(size(tree_size))
        .bind(origin)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(AdapterError::from)?;
        let mut out = Vec::with_capacity(uuids.len());
        for (uuid,) in uuids {
            if let Some(r) = actors::ports::SubmissionStore::stored_receipt(self, &uuid).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn mark_receipts_verified(&self, uuids: &[String]) -> Result<(), PortError> {
        sqlx::query("UPDATE rekor_entries SET verified_at = now() WHERE uuid = ANY($1)")
            .bind(uuids)
            .execute(self.pool())
            .await
            .map_err(AdapterError::from)?;
        Ok(())
    }
}

#[async_trait]
impl DivergenceStore for PgStore {
    async fn raise_divergence(&self, new: &NewDivergence) -> Result<Option<Divergence>, PortError> {
        let row: Option<DivergenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rekor_divergences (backend, origin, kind, evidence, detected_by, \
             dedupe_key) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING \
             RETURNING {DIVERGENCE_COLUMNS}"
        )))
        .bind(&new.backend)
        .bind(&new.origin)
        .bind(new.kind.as_str())
        .bind(&new.evidence)
        .bind(&new.detected_by)
        .bind(&new.dedupe_key)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(row.map(Divergence::from))
    }

    async fn open_divergences(&self, backend: Option<&str>) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE acknowledged_at IS NULL \
             AND ($1::text IS NULL OR backend = $1) ORDER BY id",
        ))
        .bind(backend)
        .fetch_all(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(rows.into_iter().map(Divergence::from).collect())
    }

    async fn divergences(&self, open_only: bool, limit: u32) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE (NOT $1 OR acknowledged_at IS NULL) \
             ORDER BY id DESC LIMIT $2",
        ))
        .bind(open_only)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(rows.into_iter().map(Divergence::from).collect())
    }

    async fn acknowledge_divergence(
        &self,
        id: i64,
        by: &str,
    ) -> Result<Option<Divergence>, PortError> {
        sqlx::query(
            "UPDATE rekor_divergences SET acknowledged_at = now(), acknowledged_by = $2 \
             WHERE id = $1 AND acknowledged_at IS NULL",
        )
        .bind(id)
        .bind(by)
        .execute(self.pool())
        .await
        .map_err(AdapterError::from)?;
        let row: Option<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE id = $1",
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(row.map(Divergence::from))
    }

    async fn undelivered_divergences(
        &self,
        detected_by: &str,
        webhook: bool,
        limit: u32,
    ) -> Result<Vec<Divergence>, PortError> {
        let rows: Vec<DivergenceRow> = sqlx::query_as(select(
            DIVERGENCE_COLUMNS,
            "FROM rekor_divergences WHERE detected_by = $1 \
             AND (published_at IS NULL OR ($2 AND delivered_at IS NULL)) ORDER BY id LIMIT $3",
        ))
        .bind(detected_by)
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(rows.into_iter().map(Divergence::from).collect())
    }

    async fn mark_divergence_published(&self, id: i64) -> Result<(), PortError> {
        sqlx::query("UPDATE rekor_divergences SET published_at = now() WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(AdapterError::from)?;
        Ok(())
    }

    async fn mark_divergence_delivered(&self, id: i64) -> Result<(), PortError> {
        sqlx::query("UPDATE rekor_divergences SET delivered_at = now() WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(AdapterError::from)?;
        Ok(())
    }

    async fn record_delivery_failure(&self, id: i64, error: &str) -> Result<(), PortError> {
        sqlx::query(
            "UPDATE rekor_divergences SET delivery_attempts = delivery_attempts + 1, \
             last_delivery_error = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(error.chars().take(1000).collect::<String>())
        .execute(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(())
    }
}
