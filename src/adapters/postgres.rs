//! The PostgreSQL store.
//!
//! Queries are runtime (`query` / `query_as`), so the build needs no database. Every table
//! of the provenance cache is qualified with the `provcache` schema.

use std::str::FromStr;
use std::time::Duration;

use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, Invalidation, LedgerRow};
use actors::ports::{
    InvalidationOutcome, InvalidationStore, PortError, RejectedEvent, RejectedEventStore,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{FromRow, Postgres};
use uuid::Uuid;

use super::AdapterError;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL-backed store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

#[derive(FromRow)]
struct LedgerRecord {
    seq_no: i64,
    revocation_id: Uuid,
    revocation_type: String,
    revoked_key: String,
    reason: Option<String>,
    entries_invalidated: i32,
    source: String,
    correlation_id: Option<String>,
    revoked_at: DateTime<Utc>,
    metadata: Option<serde_json::Value>,
}

impl From<LedgerRecord> for LedgerRow {
    fn from(r: LedgerRecord) -> Self {
        LedgerRow {
            seq_no: r.seq_no,
            revocation_id: r.revocation_id,
            revocation_type: r.revocation_type,
            revoked_key: r.revoked_key,
            reason: r.reason,
            entries_invalidated: i64::from(r.entries_invalidated),
            source: r.source,
            correlation_id: r.correlation_id,
            revoked_at: r.revoked_at,
            metadata: r.metadata.unwrap_or(serde_json::Value::Null),
        }
    }
}

#[derive(FromRow)]
struct RejectedRecord {
    subject: String,
    event_id: Option<String>,
    reason: String,
    detail: String,
    payload: Vec<u8>,
    rejected_at: DateTime<Utc>,
}

/// The ledger's columns, in [`LedgerRecord`]'s order.
macro_rules! ledger_columns {
    () => {
        "seq_no, revocation_id, revocation_type, revoked_key, reason, entries_invalidated, \
         source, correlation_id, revoked_at, metadata"
    };
}

/// The revocation ledger's statistics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerStats {
    /// Rows in the ledger.
    pub total_entries: i64,
    /// Rows per revocation type.
    pub entries_by_type: std::collections::BTreeMap<String, i64>,
    /// Cache entries deleted by all revocations together.
    pub total_entries_invalidated: i64,
    /// The highest `seq_no` (0 when empty).
    pub head_seq_no: i64,
}

/// A provcache item to insert (used by tests until the write path lands).
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The VeriKey.
    pub veri_key: String,
    /// The verdict.
    pub verdict: serde_json::Value,
    /// Hash of the verdict.
    pub verdict_hash: String,
    /// 0 to 100.
    pub trust_score: i16,
    /// Policy hash.
    pub policy_hash: String,
    /// Signer-set hash.
    pub signer_set_hash: String,
    /// Key IDs of the signer set.
    pub signer_key_ids: Vec<String>,
    /// Feed identifier.
    pub feed_id: Option<String>,
    /// Feed epoch.
    pub feed_epoch: Option<String>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

impl PgStore {
    /// Connects, creating the database first if it does not exist.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        if !Postgres::database_exists(url).await? {
            tracing::info!("creating database");
            Postgres::create_database(url).await?;
        }
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Ok(PgStore { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// The pool, for adapters that share it.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), AdapterError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), AdapterError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Ledger rows with `seq_no > since`, oldest first, at most `limit`.
    pub async fn revocations(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, AdapterError> {
        let rows: Vec<LedgerRecord> = sqlx::query_as(concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM provcache.prov_revocations WHERE seq_no > $1 ORDER BY seq_no LIMIT $2"
        ))
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(LedgerRow::from).collect())
    }

    /// The seed's ledger statistics: total rows, rows by type, entries invalidated, head.
    pub async fn ledger_stats(&self) -> Result<LedgerStats, AdapterError> {
        let by_type: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT revocation_type, count(*), coalesce(sum(entries_invalidated), 0)::bigint \
             FROM provcache.prov_revocations GROUP BY revocation_type ORDER BY revocation_type",
        )
        .fetch_all(&self.pool)
        .await?;
        let head: Option<i64> =
            sqlx::query_scalar("SELECT max(seq_no) FROM provcache.prov_revocations")
                .fetch_one(&self.pool)
                .await?;
        Ok(LedgerStats {
            total_entries: by_type.iter().map(|(_, n, _)| n).sum(),
            total_entries_invalidated: by_type.iter().map(|(_, _, e)| e).sum(),
            entries_by_type: by_type.into_iter().map(|(t, n, _)| (t, n)).collect(),
            head_seq_no: head.unwrap_or(0),
        })
    }

    /// Inserts or replaces an item and its signer-set members.
    pub async fn insert_item(&self, item: &NewItem) -> Result<(), AdapterError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO provcache.provcache_items \
             (veri_key, verdict, verdict_hash, trust_score, policy_hash, signer_set_hash, \
              feed_id, feed_epoch, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (veri_key) DO UPDATE SET verdict = EXCLUDED.verdict, \
              verdict_hash = EXCLUDED.verdict_hash, trust_score = EXCLUDED.trust_score, \
              policy_hash = EXCLUDED.policy_hash, signer_set_hash = EXCLUDED.signer_set_hash, \
              feed_id = EXCLUDED.feed_id, feed_epoch = EXCLUDED.feed_epoch, \
              expires_at = EXCLUDED.expires_at, updated_at = now()",
        )
        .bind(&item.veri_key)
        .bind(&item.verdict)
        .bind(&item.verdict_hash)
        .bind(item.trust_score)
        .bind(&item.policy_hash)
        .bind(&item.signer_set_hash)
        .bind(&item.feed_id)
        .bind(&item.feed_epoch)
        .bind(item.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO provcache.prov_signer_set_members (signer_set_hash, key_id) \
             SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&item.signer_set_hash)
        .bind(&item.signer_key_ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether an item with this VeriKey exists.
    pub async fn item_exists(&self, veri_key: &str) -> Result<bool, AdapterError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM provcache.provcache_items WHERE veri_key = $1",
        )
        .bind(veri_key)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The most recent rejected events, newest first.
    pub async fn rejected_events(&self, limit: i64) -> Result<Vec<RejectedEvent>, AdapterError> {
        let rows: Vec<RejectedRecord> = sqlx::query_as(
            "SELECT subject, event_id, reason, detail, payload, rejected_at \
             FROM provcache.prov_rejected_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RejectedEvent {
                subject: r.subject,
                event_id: r.event_id,
                reason: r.reason,
                detail: r.detail,
                payload: r.payload,
                rejected_at: r.rejected_at,
            })
            .collect())
    }

    async fn existing_revocation(
        &self,
        revocation_id: Uuid,
    ) -> Result<Option<LedgerRow>, AdapterError> {
        let row: Option<LedgerRecord> = sqlx::query_as(concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM provcache.prov_revocations WHERE revocation_id = $1"
        ))
        .bind(revocation_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(LedgerRow::from))
    }

    async fn invalidate_tx(
        &self,
        inv: &Invalidation,
    ) -> Result<Option<(LedgerRow, Vec<String>)>, AdapterError> {
        let mut tx = self.pool.begin().await?;
        let deleted: Vec<String> =
            match &inv.criterion {
                Criterion::VeriKey(k) => sqlx::query_scalar(
                    "DELETE FROM provcache.provcache_items WHERE veri_key = $1 RETURNING veri_key",
                )
                .bind(k)
                .fetch_all(&mut *tx)
                .await?,
                Criterion::SignerSetHash(h) => {
                    sqlx::query_scalar(
                        "DELETE FROM provcache.provcache_items WHERE signer_set_hash = $1 \
                     RETURNING veri_key",
                    )
                    .bind(h)
                    .fetch_all(&mut *tx)
                    .await?
                }
                Criterion::PolicyHash(h) => {
                    sqlx::query_scalar(
                        "DELETE FROM provcache.provcache_items WHERE policy_hash = $1 \
                     RETURNING veri_key",
                    )
                    .bind(h)
                    .fetch_all(&mut *tx)
                    .await?
                }
                Criterion::SignerKeyId(k) => {
                    sqlx::query_scalar(
                        "DELETE FROM provcache.provcache_items WHERE signer_set_hash IN \
                     (SELECT signer_set_hash FROM provcache.prov_signer_set_members \
                      WHERE key_id = $1) RETURNING veri_key",
                    )
                    .bind(k)
                    .fetch_all(&mut *tx)
                    .await?
                }
                Criterion::FeedEpochBefore { feed_id, before } => {
                    // Epochs are compared as versions or times, which SQL cannot do on the
                    // stored text, so candidates are locked, compared here, and deleted by key.
                    let candidates: Vec<(String, String)> = sqlx::query_as(
                        "SELECT veri_key, feed_epoch FROM provcache.provcache_items \
                     WHERE feed_epoch IS NOT NULL AND ($1::text IS NULL OR feed_id = $1) \
                     FOR UPDATE",
                    )
                    .bind(feed_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let doomed: Vec<String> = candidates
                        .into_iter()
                        .filter(|(_, e)| FeedEpoch::parse(e).is_ok_and(|e| e.is_before(before)))
                        .map(|(k, _)| k)
                        .collect();
                    sqlx::query_scalar(
                        "DELETE FROM provcache.provcache_items WHERE veri_key = ANY($1) \
                     RETURNING veri_key",
                    )
                    .bind(&doomed)
                    .fetch_all(&mut *tx)
                    .await?
                }
            };
        let count = i32::try_from(deleted.len()).unwrap_or(i32::MAX);
        let row: Option<LedgerRecord> = sqlx::query_as(concat!(
            "INSERT INTO provcache.prov_revocations \
             (revocation_id, revocation_type, revoked_key, reason, entries_invalidated, source, \
              correlation_id, revoked_at, metadata) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8) \
             ON CONFLICT (revocation_id) DO NOTHING RETURNING ",
            ledger_columns!()
        ))
        .bind(inv.revocation_id)
        .bind(inv.revocation_type.as_str())
        .bind(truncate(&inv.criterion.value(), 512))
        .bind(inv.reason.as_deref().map(|r| truncate(r, 1024)))
        .bind(count)
        .bind(truncate(&inv.source, 128))
        .bind(inv.correlation_id.as_deref().map(|c| truncate(c, 128)))
        .bind(inv.metadata())
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(row) => {
                tx.commit().await?;
                Ok(Some((row.into(), deleted)))
            }
            // Someone recorded this revocation concurrently: undo our deletes.
            None => {
                tx.rollback().await?;
                Ok(None)
            }
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[async_trait]
impl InvalidationStore for PgStore {
    async fn invalidate(&self, inv: &Invalidation) -> Result<InvalidationOutcome, PortError> {
        if let Some(row) = self.existing_revocation(inv.revocation_id).await? {
            return Ok(InvalidationOutcome {
                row,
                deleted_keys: Vec::new(),
                duplicate: true,
            });
        }
        match self.invalidate_tx(inv).await? {
            Some((row, deleted_keys)) => Ok(InvalidationOutcome {
                row,
                deleted_keys,
                duplicate: false,
            }),
            None => {
                let row = self
                    .existing_revocation(inv.revocation_id)
                    .await?
                    .ok_or_else(|| {
                        PortError::from(AdapterError::Corrupt(format!(
                            "revocation {} conflicted but cannot be read",
                            inv.revocation_id
                        )))
                    })?;
                Ok(InvalidationOutcome {
                    row,
                    deleted_keys: Vec::new(),
                    duplicate: true,
                })
            }
        }
    }
}

#[async_trait]
impl RejectedEventStore for PgStore {
    async fn record_rejected(&self, e: &RejectedEvent) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO provcache.prov_rejected_events \
             (subject, event_id, reason, detail, payload, rejected_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(truncate(&e.subject, 256))
        .bind(e.event_id.as_deref().map(|i| truncate(i, 128)))
        .bind(&e.reason)
        .bind(&e.detail)
        .bind(&e.payload)
        .bind(e.rejected_at)
        .execute(&self.pool)
        .await
        .map_err(AdapterError::from)?;
        Ok(())
    }
}
