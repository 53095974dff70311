//! The provenance cache in SQLite (embedded mode): entries, invalidations with their
//! ledger rows, and rejected events, with the semantics of the PostgreSQL adapter.
//!
//! PostgreSQL orders write-behind flushes against invalidations with an advisory lock
//! (`FLUSH_LOCK`); here every write goes through the writer pool's single connection, so
//! write transactions already run one at a time and no lock is needed. Reads whose result
//! decides what a write does (the ledger an upsert checks, the rows an invalidation
//! deletes) run inside that write transaction. Ledger rows are stamped with provd's clock,
//! the same one that stamps accepted writes; the 2 s margin is kept anyway, so a write is
//! dropped by exactly the rule PostgreSQL applies.

use actors::domain::entry::{Entry, EntryWrite, invalidated_after_accept, newest_per_key_ref};
use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, Invalidation, LedgerRow};
use actors::ports::{
    EntryStore, InvalidationOutcome, InvalidationStore, PortError, RejectedEvent,
    RejectedEventStore, UpsertOutcome,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, SqliteConnection};
use uuid::Uuid;

use super::AdapterError;
use super::postgres::{LedgerStats, NewItem};
use super::sqlite::{SqliteResult, SqliteStore, from_micros, to_micros};

/// How far apart the clock that stamps accepted writes and the one that stamps ledger rows
/// may be: PostgreSQL's margin, so both stores drop the same writes.
pub(crate) const CLOCK_SKEW_MARGIN: chrono::Duration = chrono::Duration::seconds(2);

/// The ledger's columns, in [`LedgerRecord`]'s order.
macro_rules! ledger_columns {
    () => {
        "seq_no, revocation_id, revocation_type, revoked_key, reason, entries_invalidated, \
         source, correlation_id, revoked_at, metadata"
    };
}

#[derive(FromRow)]
pub(crate) struct LedgerRecord {
    seq_no: i64,
    revocation_id: String,
    revocation_type: String,
    revoked_key: String,
    reason: Option<String>,
    entries_invalidated: i64,
    source: String,
    correlation_id: Option<String>,
    revoked_at: i64,
    metadata: Option<String>,
}

impl TryFrom<LedgerRecord> for LedgerRow {
    type Error = AdapterError;

    fn try_from(r: LedgerRecord) -> Result<Self, AdapterError> {
        let revocation_id = Uuid::parse_str(&r.revocation_id).map_err(|e| {
            AdapterError::Corrupt(format!("revocation id {:?}: {e}", r.revocation_id))
        })?;
        let metadata = match r.metadata {
            Some(m) => serde_json::from_str(&m)
                .map_err(|e| AdapterError::Corrupt(format!("ledger row {}: {e}", r.seq_no)))?,
            None => serde_json::Value::Null,
        };
        Ok(LedgerRow {
            seq_no: r.seq_no,
            revocation_id,
            revocation_type: r.revocation_type,
            revoked_key: r.revoked_key,
            reason: r.reason,
            entries_invalidated: r.entries_invalidated,
            source: r.source,
            correlation_id: r.correlation_id,
            revoked_at: from_micros(r.revoked_at),
            metadata,
        })
    }
}

fn ledger_rows(rows: Vec<LedgerRecord>) -> Result<Vec<LedgerRow>, AdapterError> {
    rows.into_iter().map(LedgerRow::try_from).collect()
}

#[derive(FromRow)]
struct RejectedRecord {
    subject: String,
    event_id: Option<String>,
    reason: String,
    detail: String,
    payload: Vec<u8>,
    rejected_at: i64,
}

#[derive(FromRow)]
struct EntryRecord {
    veri_key: String,
    verdict: String,
    verdict_hash: String,
    proof_root: Option<String>,
    trust_score: i16,
    policy_hash: String,
    signer_set_hash: String,
    signer_key_ids: String,
    feed_id: Option<String>,
    feed_epoch: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<EntryRecord> for Entry {
    type Error = AdapterError;

    fn try_from(r: EntryRecord) -> Result<Self, AdapterError> {
        let corrupt = |what: &str, e: serde_json::Error| {
            AdapterError::Corrupt(format!("entry {} {what}: {e}", r.veri_key))
        };
        let verdict = serde_json::from_str(&r.verdict).map_err(|e| corrupt("verdict", e))?;
        let signer_key_ids =
            serde_json::from_str(&r.signer_key_ids).map_err(|e| corrupt("signer keys", e))?;
        Ok(Entry {
            verdict,
            signer_key_ids,
            veri_key: r.veri_key,
            verdict_hash: r.verdict_hash,
            proof_root: r.proof_root,
            trust_score: r.trust_score,
            policy_hash: r.policy_hash,
            signer_set_hash: r.signer_set_hash,
            feed_id: r.feed_id,
            feed_epoch: r.feed_epoch,
            created_at: from_micros(r.created_at),
            expires_at: from_micros(r.expires_at),
        })
    }
}

/// JSON as stored (TEXT).
pub(crate) fn json_text(v: &serde_json::Value) -> Result<String, AdapterError> {
    serde_json::to_string(v).map_err(|e| AdapterError::Corrupt(e.to_string()))
}

/// The first `max_chars` characters: PostgreSQL's column widths, kept so both stores hold
/// the same values.
fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Invalidations recorded since `oldest` was accepted (less the clock-skew margin), with
/// their times moved forward by the margin: the rule that drops writes accepted before
/// them. Run inside the write transaction that acts on the answer.
pub(crate) async fn recent_revocations(
    conn: &mut SqliteConnection,
    oldest: DateTime<Utc>,
) -> Result<Vec<(Criterion, DateTime<Utc>)>, AdapterError> {
    let recent: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT revoked_at, metadata FROM prov_revocations WHERE revoked_at >= ?")
            .bind(to_micros(oldest - CLOCK_SKEW_MARGIN))
            .fetch_all(conn)
            .await
            .sq()?;
    Ok(recent
        .into_iter()
        .filter_map(|(at, meta)| {
            let meta: serde_json::Value = serde_json::from_str(&meta?).ok()?;
            let c = Criterion::from_metadata(&meta).ok()?;
            Some((c, from_micros(at) + CLOCK_SKEW_MARGIN))
        })
        .collect())
}

/// Inserts a signer set's members (already present ones are kept).
pub(crate) async fn insert_members(
    conn: &mut SqliteConnection,
    signer_set_hash: &str,
    key_ids: &[String],
) -> Result<(), AdapterError> {
    for key in key_ids {
        sqlx::query(
            "INSERT INTO prov_signer_set_members (signer_set_hash, key_id) VALUES (?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(signer_set_hash)
        .bind(key)
        .execute(&mut *conn)
        .await
        .sq()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Ledger rows with `seq_no > since`, oldest first, at most `limit`.
    pub async fn revocations(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, AdapterError> {
        let rows: Vec<LedgerRecord> = sqlx::query_as(concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM prov_revocations WHERE seq_no > ? ORDER BY seq_no LIMIT ?"
        ))
        .bind(since)
        .bind(limit)
        .fetch_all(self.reader())
        .await
        .sq()?;
        ledger_rows(rows)
    }

    /// The seed's ledger statistics: total rows, rows by type, entries invalidated, head.
    pub async fn ledger_stats(&self) -> Result<LedgerStats, AdapterError> {
        // One read transaction, so the head matches the counts.
        let mut tx = self.reader().begin().await.sq()?;
        let by_type: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT revocation_type, count(*), coalesce(sum(entries_invalidated), 0) \
             FROM prov_revocations GROUP BY revocation_type ORDER BY revocation_type",
        )
        .fetch_all(&mut *tx)
        .await
        .sq()?;
        let head: Option<i64> = sqlx::query_scalar("SELECT max(seq_no) FROM prov_revocations")
            .fetch_one(&mut *tx)
            .await
            .sq()?;
        tx.rollback().await.sq()?;
        Ok(LedgerStats {
            total_entries: by_type.iter().map(|(_, n, _)| n).sum(),
            total_entries_invalidated: by_type.iter().map(|(_, _, e)| e).sum(),
            entries_by_type: by_type.into_iter().map(|(t, n, _)| (t, n)).collect(),
            head_seq_no: head.unwrap_or(0),
        })
    }

    /// Inserts or replaces an item and its signer-set members.
    pub async fn insert_item(&self, item: &NewItem) -> Result<(), AdapterError> {
        let now = to_micros(Utc::now());
        let mut tx = self.writer().begin().await.sq()?;
        sqlx::query(
            "INSERT INTO provcache_items \
             (veri_key, verdict, verdict_hash, trust_score, policy_hash, signer_set_hash, \
              feed_id, feed_epoch, created_at, updated_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (veri_key) DO UPDATE SET verdict = excluded.verdict, \
              verdict_hash = excluded.verdict_hash, trust_score = excluded.trust_score, \
              policy_hash = excluded.policy_hash, signer_set_hash = excluded.signer_set_hash, \
              feed_id = excluded.feed_id, feed_epoch = excluded.feed_epoch, \
              expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        )
        .bind(&item.veri_key)
        .bind(json_text(&item.verdict)?)
        .bind(&item.verdict_hash)
        .bind(item.trust_score)
        .bind(&item.policy_hash)
        .bind(&item.signer_set_hash)
        .bind(&item.feed_id)
        .bind(&item.feed_epoch)
        .bind(now)
        .bind(now)
        .bind(to_micros(item.expires_at))
        .execute(&mut *tx)
        .await
        .sq()?;
        insert_members(&mut tx, &item.signer_set_hash, &item.signer_key_ids).await?;
        tx.commit().await.sq()?;
        Ok(())
    }

    /// Whether an item with this VeriKey exists.
    pub async fn item_exists(&self, veri_key: &str) -> Result<bool, AdapterError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM provcache_items WHERE veri_key = ?")
            .bind(veri_key)
            .fetch_one(self.reader())
            .await
            .sq()?;
        Ok(n > 0)
    }

    /// How many items the durable tier holds (expired ones included).
    pub async fn count_items(&self) -> Result<i64, AdapterError> {
        sqlx::query_scalar("SELECT count(*) FROM provcache_items")
            .fetch_one(self.reader())
            .await
            .sq()
    }

    /// The most recent rejected events, newest first.
    pub async fn rejected_events(&self, limit: i64) -> Result<Vec<RejectedEvent>, AdapterError> {
        let rows: Vec<RejectedRecord> = sqlx::query_as(
            "SELECT subject, event_id, reason, detail, payload, rejected_at \
             FROM prov_rejected_events ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(self.reader())
        .await
        .sq()?;
        Ok(rows
            .into_iter()
            .map(|r| RejectedEvent {
                subject: r.subject,
                event_id: r.event_id,
                reason: r.reason,
                detail: r.detail,
                payload: r.payload,
                rejected_at: from_micros(r.rejected_at),
            })
            .collect())
    }

    /// Upserts a batch of writes in one transaction (see [`EntryStore::upsert_entries`]):
    /// the newest `accepted_at` per VeriKey wins, also against the stored version, and a
    /// write matched by an invalidation recorded after it was accepted is dropped.
    pub async fn upsert_writes(
        &self,
        writes: &[EntryWrite],
    ) -> Result<UpsertOutcome, AdapterError> {
        let Some(oldest) = writes.iter().map(|w| w.accepted_at).min() else {
            return Ok(UpsertOutcome::default());
        };
        let newest = newest_per_key_ref(writes);
        let mut tx = self.writer().begin().await.sq()?;
        // Read in the write transaction: no invalidation can commit between this check and
        // the upsert, since it would need the same (single) writer connection.
        let revocations = recent_revocations(&mut tx, oldest).await?;
        let (kept, dropped): (Vec<&EntryWrite>, Vec<&EntryWrite>) = newest
            .into_iter()
            .partition(|w| !invalidated_after_accept(w, &revocations));
        let mut written = 0u64;
        for w in &kept {
            let e = &w.entry;
            let stored: Option<i64> = sqlx::query_scalar(
                "INSERT INTO provcache_items \
                 (veri_key, verdict, verdict_hash, proof_root, trust_score, policy_hash, \
                  signer_set_hash, feed_id, feed_epoch, created_at, updated_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (veri_key) DO UPDATE SET verdict = excluded.verdict, \
                  verdict_hash = excluded.verdict_hash, proof_root = excluded.proof_root, \
                  trust_score = excluded.trust_score, policy_hash = excluded.policy_hash, \
                  signer_set_hash = excluded.signer_set_hash, feed_id = excluded.feed_id, \
                  feed_epoch = excluded.feed_epoch, created_at = excluded.created_at, \
                  updated_at = excluded.updated_at, expires_at = excluded.expires_at \
                 WHERE provcache_items.updated_at <= excluded.updated_at \
                 RETURNING 1",
            )
            .bind(&e.veri_key)
            .bind(json_text(&e.verdict)?)
            .bind(&e.verdict_hash)
            .bind(&e.proof_root)
            .bind(e.trust_score)
            .bind(&e.policy_hash)
            .bind(&e.signer_set_hash)
            .bind(&e.feed_id)
            .bind(&e.feed_epoch)
            .bind(to_micros(e.created_at))
            .bind(to_micros(w.accepted_at))
            .bind(to_micros(e.expires_at))
            .fetch_optional(&mut *tx)
            .await
            .sq()?;
            written += u64::from(stored.is_some());
            insert_members(&mut tx, &e.signer_set_hash, &e.signer_key_ids).await?;
        }
        tx.commit().await.sq()?;
        Ok(UpsertOutcome {
            written,
            invalidated: dropped.len() as u64,
            invalidated_keys: dropped.iter().map(|w| w.entry.veri_key.clone()).collect(),
        })
    }

    /// The live entry with this VeriKey.
    pub async fn entry(&self, veri_key: &str) -> Result<Option<Entry>, AdapterError> {
        let row: Option<EntryRecord> = sqlx::query_as(
            "SELECT i.veri_key, i.verdict, i.verdict_hash, i.proof_root, i.trust_score, \
              i.policy_hash, i.signer_set_hash, \
              (SELECT json_group_array(key_id) FROM (SELECT m.key_id FROM \
                prov_signer_set_members m WHERE m.signer_set_hash = i.signer_set_hash \
                ORDER BY m.key_id)) AS signer_key_ids, \
              i.feed_id, i.feed_epoch, i.created_at, i.expires_at \
             FROM provcache_items i WHERE i.veri_key = ? AND i.expires_at > ?",
        )
        .bind(veri_key)
        .bind(to_micros(Utc::now()))
        .fetch_optional(self.reader())
        .await
        .sq()?;
        row.map(Entry::try_from).transpose()
    }

    /// The ledger row of a revocation id, read on `conn`.
    async fn existing_revocation(
        conn: &mut SqliteConnection,
        revocation_id: Uuid,
    ) -> Result<Option<LedgerRow>, AdapterError> {
        let row: Option<LedgerRecord> = sqlx::query_as(concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM prov_revocations WHERE revocation_id = ?"
        ))
        .bind(revocation_id.to_string())
        .fetch_optional(conn)
        .await
        .sq()?;
        row.map(LedgerRow::try_from).transpose()
    }

    /// Deletes the entries an invalidation matches and appends its ledger row, in one
    /// transaction; a revocation id already in the ledger changes nothing.
    pub async fn invalidate_entries(
        &self,
        inv: &Invalidation,
    ) -> Result<InvalidationOutcome, AdapterError> {
        let mut tx = self.writer().begin().await.sq()?;
        if let Some(row) = Self::existing_revocation(&mut tx, inv.revocation_id).await? {
            tx.rollback().await.sq()?;
            return Ok(InvalidationOutcome {
                row,
                deleted_keys: Vec::new(),
                duplicate: true,
            });
        }
        let deleted: Vec<String> = match &inv.criterion {
            Criterion::VeriKey(k) => sqlx::query_scalar(
                "DELETE FROM provcache_items WHERE veri_key = ? RETURNING veri_key",
            )
            .bind(k)
            .fetch_all(&mut *tx)
            .await
            .sq()?,
            Criterion::SignerSetHash(h) => sqlx::query_scalar(
                "DELETE FROM provcache_items WHERE signer_set_hash = ? RETURNING veri_key",
            )
            .bind(h)
            .fetch_all(&mut *tx)
            .await
            .sq()?,
            Criterion::PolicyHash(h) => sqlx::query_scalar(
                "DELETE FROM provcache_items WHERE policy_hash = ? RETURNING veri_key",
            )
            .bind(h)
            .fetch_all(&mut *tx)
            .await
            .sq()?,
            Criterion::SignerKeyId(k) => sqlx::query_scalar(
                "DELETE FROM provcache_items WHERE signer_set_hash IN \
                 (SELECT signer_set_hash FROM prov_signer_set_members WHERE key_id = ?) \
                 RETURNING veri_key",
            )
            .bind(k)
            .fetch_all(&mut *tx)
            .await
            .sq()?,
            Criterion::FeedEpochBefore { feed_id, before } => {
                // Epochs compare as versions or instants, which SQL cannot do on the stored
                // text: candidates are compared here and deleted by key, all in this
                // transaction.
                let candidates: Vec<(String, String)> = sqlx::query_as(
                    "SELECT veri_key, feed_epoch FROM provcache_items \
                     WHERE feed_epoch IS NOT NULL AND (?1 IS NULL OR feed_id = ?1)",
                )
                .bind(feed_id)
                .fetch_all(&mut *tx)
                .await
                .sq()?;
                let mut deleted = Vec::new();
                for (key, epoch) in candidates {
                    if FeedEpoch::parse(&epoch).is_ok_and(|e| e.is_before(before)) {
                        sqlx::query("DELETE FROM provcache_items WHERE veri_key = ?")
                            .bind(&key)
                            .execute(&mut *tx)
                            .await
                            .sq()?;
                        deleted.push(key);
                    }
                }
                deleted
            }
        };
        let count = i64::try_from(deleted.len()).unwrap_or(i64::MAX);
        let record: LedgerRecord = sqlx::query_as(concat!(
            "INSERT INTO prov_revocations \
             (revocation_id, revocation_type, revoked_key, reason, entries_invalidated, source, \
              correlation_id, revoked_at, metadata) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
            ledger_columns!()
        ))
        .bind(inv.revocation_id.to_string())
        .bind(inv.revocation_type.as_str())
        .bind(truncate(&inv.criterion.value(), 512))
        .bind(inv.reason.as_deref().map(|r| truncate(r, 1024)))
        .bind(count)
        .bind(truncate(&inv.source, 128))
        .bind(inv.correlation_id.as_deref().map(|c| truncate(c, 128)))
        .bind(to_micros(Utc::now()))
        .bind(json_text(&inv.metadata())?)
        .fetch_one(&mut *tx)
        .await
        .sq()?;
        let row = LedgerRow::try_from(record)?;
        tx.commit().await.sq()?;
        Ok(InvalidationOutcome {
            row,
            deleted_keys: deleted,
            duplicate: false,
        })
    }
}

#[async_trait]
impl EntryStore for SqliteStore {
    fn name(&self) -> &'static str {
        super::Service::Sqlite.as_str()
    }

    async fn get_entry(&self, veri_key: &str) -> Result<Option<Entry>, PortError> {
        Ok(self.entry(veri_key).await?)
    }

    async fn upsert_entries(&self, writes: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
        Ok(self.upsert_writes(writes).await?)
    }

    async fn invalidated_after(&self, write: &EntryWrite) -> Result<bool, PortError> {
        let mut conn = self.reader().acquire().await.sq()?;
        let revocations = recent_revocations(&mut conn, write.accepted_at).await?;
        Ok(invalidated_after_accept(write, &revocations))
    }
}

#[async_trait]
impl InvalidationStore for SqliteStore {
    async fn invalidate(&self, inv: &Invalidation) -> Result<InvalidationOutcome, PortError> {
        Ok(self.invalidate_entries(inv).await?)
    }
}

#[async_trait]
impl RejectedEventStore for SqliteStore {
    async fn record_rejected(&self, e: &RejectedEvent) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO prov_rejected_events \
             (subject, event_id, reason, detail, payload, rejected_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(truncate(&e.subject, 256))
        .bind(e.event_id.as_deref().map(|i| truncate(i, 128)))
        .bind(&e.reason)
        .bind(&e.detail)
        .bind(&e.payload)
        .bind(to_micros(e.rejected_at))
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }
}
