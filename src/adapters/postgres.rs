//! The PostgreSQL store.
//!
//! Queries are runtime (`query` / `query_as`), so the build needs no database. Every table
//! of the provenance cache is qualified with the `provcache` schema.

use std::str::FromStr;
use std::time::Duration;

use actors::domain::entry::{Entry, EntryWrite, invalidated_after_accept, newest_per_key_ref};
use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, Invalidation, LedgerRow};
use actors::ports::{
    EntryStore, InvalidationOutcome, InvalidationStore, PortError, RejectedEvent,
    RejectedEventStore, UpsertOutcome,
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

/// The advisory lock that orders write-behind flushes against invalidations: a flush holds
/// it shared, an invalidation exclusively. So an invalidation either commits before a flush
/// reads the ledger (and the flush drops the writes it matches) or waits until the flush
/// has committed (and then deletes what the flush wrote). Either way an invalidated entry
/// never comes back from a batch that was in flight.
pub(crate) const FLUSH_LOCK: i64 = 0x7072_6f76_6361_6368;

/// How far apart provd's clock (which stamps accepted writes) and PostgreSQL's (which stamps
/// ledger rows) may be. A write accepted up to this long after a matching invalidation is
/// dropped as well: a dropped write is only a later cache miss, a resurrected one is wrong.
const CLOCK_SKEW_MARGIN: chrono::Duration = chrono::Duration::seconds(2);

#[derive(FromRow)]
struct EntryRecord {
    veri_key: String,
    verdict: serde_json::Value,
    verdict_hash: String,
    proof_root: Option<String>,
    trust_score: i16,
    policy_hash: String,
    signer_set_hash: String,
    signer_key_ids: Vec<String>,
    feed_id: Option<String>,
    feed_epoch: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<EntryRecord> for Entry {
    fn from(r: EntryRecord) -> Self {
        Entry {
            veri_key: r.veri_key,
            verdict: r.verdict,
            verdict_hash: r.verdict_hash,
            proof_root: r.proof_root,
            trust_score: r.trust_score,
            policy_hash: r.policy_hash,
            signer_set_hash: r.signer_set_hash,
            signer_key_ids: r.signer_key_ids,
            feed_id: r.feed_id,
            feed_epoch: r.feed_epoch,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
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
        let port = opts.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx 0.9.0 leaves Nagle on; see `tcp_nodelay`.
            .after_connect(move |_conn, _meta| {
                Box::pin(async move {
                    super::tcp_nodelay::set_on_sockets_to(port);
                    Ok(())
                })
            })
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
        // Waits for write-behind flushes in progress, and holds new ones off until commit.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FLUSH_LOCK)
            .execute(&mut *tx)
            .await?;
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

/// Invalidations recorded since `oldest` was accepted (less the clock-skew margin), with
/// their times moved forward by the margin: the rule that drops writes accepted before
/// them. Few rows, and indexed by `revoked_at`.
pub(crate) async fn recent_revocations(
    conn: &mut sqlx::PgConnection,
    oldest: DateTime<Utc>,
) -> Result<Vec<(Criterion, DateTime<Utc>)>, AdapterError> {
    let recent: Vec<(DateTime<Utc>, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT revoked_at, metadata FROM provcache.prov_revocations WHERE revoked_at >= $1",
    )
    .bind(oldest - CLOCK_SKEW_MARGIN)
    .fetch_all(conn)
    .await?;
    Ok(recent
        .into_iter()
        .filter_map(|(at, meta)| {
            let c = Criterion::from_metadata(&meta?).ok()?;
            Some((c, at + CLOCK_SKEW_MARGIN))
        })
        .collect())
}

impl PgStore {
    /// Upserts a batch of writes in one transaction (see [`EntryStore::upsert_entries`]).
    ///
    /// One statement writes the items and their signer-set members. Rows go in VeriKey
    /// order, so concurrent flushes lock rows in the same order and cannot deadlock; the
    /// batch is prepared before the transaction, so the shared flush lock is held for the
    /// SQL only.
    pub async fn upsert_writes(
        &self,
        writes: &[EntryWrite],
    ) -> Result<UpsertOutcome, AdapterError> {
        let Some(oldest) = writes.iter().map(|w| w.accepted_at).min() else {
            return Ok(UpsertOutcome::default());
        };
        let mut newest = newest_per_key_ref(writes);
        newest.sort_unstable_by(|a, b| a.entry.veri_key.cmp(&b.entry.veri_key));
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(FLUSH_LOCK)
            .execute(&mut *tx)
            .await?;
        let revocations = recent_revocations(&mut tx, oldest).await?;
        let (kept, dropped): (Vec<&EntryWrite>, Vec<&EntryWrite>) = if revocations.is_empty() {
            (newest, Vec::new())
        } else {
            newest
                .into_iter()
                .partition(|w| !invalidated_after_accept(w, &revocations))
        };
        let n = kept.len();
        let mut keys: Vec<&str> = Vec::with_capacity(n);
        let mut verdicts: Vec<&serde_json::Value> = Vec::with_capacity(n);
        let mut verdict_hashes: Vec<&str> = Vec::with_capacity(n);
        let mut proof_roots: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut scores: Vec<i16> = Vec::with_capacity(n);
        let mut policies: Vec<&str> = Vec::with_capacity(n);
        let mut signer_sets: Vec<&str> = Vec::with_capacity(n);
        let mut feed_ids: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut feed_epochs: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        let mut accepted = Vec::with_capacity(n);
        let mut expires = Vec::with_capacity(n);
        let mut members: Vec<(&str, &str)> = Vec::new();
        for w in &kept {
            let e = &w.entry;
            keys.push(&e.veri_key);
            verdicts.push(&e.verdict);
            verdict_hashes.push(&e.verdict_hash);
            proof_roots.push(e.proof_root.as_deref());
            scores.push(e.trust_score);
            policies.push(&e.policy_hash);
            signer_sets.push(&e.signer_set_hash);
            feed_ids.push(e.feed_id.as_deref());
            feed_epochs.push(e.feed_epoch.as_deref());
            created.push(e.created_at);
            accepted.push(w.accepted_at);
            expires.push(e.expires_at);
            for k in &e.signer_key_ids {
                members.push((&e.signer_set_hash, k));
            }
        }
        // Sorted and unique: one row each, locked in the same order by every flush.
        members.sort_unstable();
        members.dedup();
        let (member_sets, member_keys): (Vec<&str>, Vec<&str>) = members.into_iter().unzip();
        // `updated_at` holds the accepted time of the stored version, so an older write
        // arriving late never replaces a newer one.
        let written: i64 = sqlx::query_scalar(
            "WITH items AS (\
              INSERT INTO provcache.provcache_items \
              (veri_key, verdict, verdict_hash, proof_root, trust_score, policy_hash, \
               signer_set_hash, feed_id, feed_epoch, created_at, updated_at, expires_at) \
              SELECT * FROM UNNEST(\
               $1::text[], $2::jsonb[], $3::text[], $4::text[], $5::int2[], $6::text[], \
               $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
               $12::timestamptz[]) \
              ON CONFLICT (veri_key) DO UPDATE SET verdict = EXCLUDED.verdict, \
               verdict_hash = EXCLUDED.verdict_hash, proof_root = EXCLUDED.proof_root, \
               trust_score = EXCLUDED.trust_score, policy_hash = EXCLUDED.policy_hash, \
               signer_set_hash = EXCLUDED.signer_set_hash, feed_id = EXCLUDED.feed_id, \
               feed_epoch = EXCLUDED.feed_epoch, created_at = EXCLUDED.created_at, \
               updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at \
              WHERE provcache.provcache_items.updated_at <= EXCLUDED.updated_at \
              RETURNING 1), \
             members AS (\
              INSERT INTO provcache.prov_signer_set_members (signer_set_hash, key_id) \
              SELECT * FROM UNNEST($13::text[], $14::text[]) ON CONFLICT DO NOTHING) \
             SELECT count(*) FROM items",
        )
        .bind(&keys)
        .bind(&verdicts)
        .bind(&verdict_hashes)
        .bind(&proof_roots)
        .bind(&scores)
        .bind(&policies)
        .bind(&signer_sets)
        .bind(&feed_ids)
        .bind(&feed_epochs)
        .bind(&created)
        .bind(&accepted)
        .bind(&expires)
        .bind(&member_sets)
        .bind(&member_keys)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(UpsertOutcome {
            written: u64::try_from(written).unwrap_or(0),
            invalidated: dropped.len() as u64,
            invalidated_keys: dropped.iter().map(|w| w.entry.veri_key.clone()).collect(),
        })
    }

    /// The live entry with this VeriKey.
    pub async fn entry(&self, veri_key: &str) -> Result<Option<Entry>, AdapterError> {
        let row: Option<EntryRecord> = sqlx::query_as(
            "SELECT i.veri_key, i.verdict, i.verdict_hash, i.proof_root, i.trust_score, \
              i.policy_hash, i.signer_set_hash, \
              ARRAY(SELECT m.key_id::text FROM provcache.prov_signer_set_members m \
                    WHERE m.signer_set_hash = i.signer_set_hash ORDER BY m.key_id) \
                AS signer_key_ids, \
              i.feed_id, i.feed_epoch, i.created_at, i.expires_at \
             FROM provcache.provcache_items i WHERE i.veri_key = $1 AND i.expires_at > now()",
        )
        .bind(veri_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Entry::from))
    }

    /// How many items the durable tier holds (expired ones included).
    pub async fn count_items(&self) -> Result<i64, AdapterError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM provcache.provcache_items")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[async_trait]
impl EntryStore for PgStore {
    fn name(&self) -> &'static str {
        super::Service::Postgres.as_str()
    }

    async fn get_entry(&self, veri_key: &str) -> Result<Option<Entry>, PortError> {
        Ok(self.entry(veri_key).await?)
    }

    async fn upsert_entries(&self, writes: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
        Ok(self.upsert_writes(writes).await?)
    }

    async fn invalidated_after(&self, write: &EntryWrite) -> Result<bool, PortError> {
        let mut conn = self.pool.acquire().await.map_err(AdapterError::from)?;
        let revocations = recent_revocations(&mut conn, write.accepted_at).await?;
        Ok(invalidated_after_accept(write, &revocations))
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
