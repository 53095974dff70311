//! The provenance cache's durable tier: entries (`provcache_items` and the signer-set
//! members they name), invalidations with their rows in the append-only revocation ledger
//! (`prov_revocations`), and rejected inbound events (`prov_rejected_events`).
//!
//! Write-behind flushes and invalidations must never let an invalidated entry come back
//! from a batch that was in flight. PostgreSQL orders them with an advisory lock
//! ([`FLUSH_LOCK`]): a flush holds it shared, an invalidation exclusively. SQLite needs no
//! lock: every write goes through the single writer connection, so write transactions
//! already run one at a time, and the reads whose result decides a write (the ledger an
//! upsert checks, the rows an invalidation deletes) run inside that write transaction.
//! Either way a flush also drops the writes an invalidation recorded after their
//! acceptance matches ([`CLOCK_SKEW_MARGIN`]), and keeps the newest write per VeriKey,
//! also against the stored version.

use std::sync::OnceLock;

use actors::domain::entry::{Entry, EntryWrite, invalidated_after_accept, newest_per_key_ref};
use actors::domain::epoch::FeedEpoch;
use actors::domain::invalidation::{Criterion, Invalidation, LedgerRow};
use actors::ports::{
    EntryStore, InvalidationOutcome, InvalidationStore, PortError, RejectedEvent,
    RejectedEventStore, UpsertOutcome,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::codec::{Id, Json, List, Time};
use super::{Backend, Exec, Sql, Store, Tx, run};
use crate::adapters::AdapterError;

/// The advisory lock that orders write-behind flushes against invalidations: a flush holds
/// it shared, an invalidation exclusively. So an invalidation either commits before a flush
/// reads the ledger (and the flush drops the writes it matches) or waits until the flush
/// has committed (and then deletes what the flush wrote). Either way an invalidated entry
/// never comes back from a batch that was in flight.
pub(crate) const FLUSH_LOCK: i64 = 0x7072_6f76_6361_6368;

/// How far apart the clock that stamps accepted writes and the one that stamps ledger rows
/// may be. A write accepted up to this long after a matching invalidation is dropped as
/// well: a dropped write is only a later cache miss, a resurrected one is wrong.
pub(crate) const CLOCK_SKEW_MARGIN: chrono::Duration = chrono::Duration::seconds(2);

/// The ledger's columns, in [`LedgerRecord`]'s order.
macro_rules! ledger_columns {
    () => {
        "seq_no, revocation_id, revocation_type, revoked_key, reason, entries_invalidated, \
         source, correlation_id, revoked_at, metadata"
    };
}

#[derive(FromRow)]
struct LedgerRecord {
    seq_no: i64,
    revocation_id: Id,
    revocation_type: String,
    revoked_key: String,
    reason: Option<String>,
    // PostgreSQL's column is INTEGER.
    entries_invalidated: i32,
    source: String,
    correlation_id: Option<String>,
    revoked_at: Time,
    metadata: Option<Json>,
}

impl From<LedgerRecord> for LedgerRow {
    fn from(r: LedgerRecord) -> Self {
        LedgerRow {
            seq_no: r.seq_no,
            revocation_id: r.revocation_id.0,
            revocation_type: r.revocation_type,
            revoked_key: r.revoked_key,
            reason: r.reason,
            entries_invalidated: i64::from(r.entries_invalidated),
            source: r.source,
            correlation_id: r.correlation_id,
            revoked_at: r.revoked_at.0,
            metadata: r.metadata.map_or(serde_json::Value::Null, |m| m.0),
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
    rejected_at: Time,
}

impl From<RejectedRecord> for RejectedEvent {
    fn from(r: RejectedRecord) -> Self {
        RejectedEvent {
            subject: r.subject,
            event_id: r.event_id,
            reason: r.reason,
            detail: r.detail,
            payload: r.payload,
            rejected_at: r.rejected_at.0,
        }
    }
}

#[derive(FromRow)]
struct EntryRecord {
    veri_key: String,
    verdict: Json,
    verdict_hash: String,
    proof_root: Option<String>,
    trust_score: i16,
    policy_hash: String,
    signer_set_hash: String,
    signer_key_ids: List,
    feed_id: Option<String>,
    feed_epoch: Option<String>,
    created_at: Time,
    expires_at: Time,
}

impl From<EntryRecord> for Entry {
    fn from(r: EntryRecord) -> Self {
        Entry {
            veri_key: r.veri_key,
            verdict: r.verdict.0,
            verdict_hash: r.verdict_hash,
            proof_root: r.proof_root,
            trust_score: r.trust_score,
            policy_hash: r.policy_hash,
            signer_set_hash: r.signer_set_hash,
            signer_key_ids: r.signer_key_ids.0,
            feed_id: r.feed_id,
            feed_epoch: r.feed_epoch,
            created_at: r.created_at.0,
            expires_at: r.expires_at.0,
        }
    }
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

/// The first `max_chars` characters: PostgreSQL's column widths, kept on both databases so
/// both hold the same values.
fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Invalidations recorded since `oldest` was accepted (less the clock-skew margin), with
/// their times moved forward by the margin: the rule that drops writes accepted before
/// them. Few rows, and indexed by `revoked_at`. A write decided by the answer runs it in
/// its own transaction (after the shared [`FLUSH_LOCK`] on PostgreSQL).
pub(crate) async fn recent_revocations(
    exec: Exec<'_>,
    oldest: DateTime<Utc>,
) -> Result<Vec<(Criterion, DateTime<Utc>)>, AdapterError> {
    // Metadata is read as text and parsed here, so a row whose metadata names no criterion
    // (or, on SQLite, is not JSON) is skipped rather than failing every flush.
    let recent: Vec<(Time, Option<String>)> = run!(
        rows fetch_all,
        exec,
        Sql::new(
            "SELECT revoked_at, metadata::text FROM provcache.prov_revocations \
             WHERE revoked_at >= $1",
            "SELECT revoked_at, metadata FROM prov_revocations WHERE revoked_at >= ?1",
        ),
        Time(oldest - CLOCK_SKEW_MARGIN)
    )?;
    Ok(recent
        .into_iter()
        .filter_map(|(at, meta)| {
            let meta: serde_json::Value = serde_json::from_str(&meta?).ok()?;
            let c = Criterion::from_metadata(&meta).ok()?;
            Some((c, at.0 + CLOCK_SKEW_MARGIN))
        })
        .collect())
}

/// Inserts a signer set's members (already present ones are kept), in one statement.
pub(crate) async fn insert_members(
    exec: Exec<'_>,
    signer_set_hash: &str,
    key_ids: &[String],
) -> Result<(), AdapterError> {
    run!(
        exec,
        exec,
        Sql::new(
            "INSERT INTO provcache.prov_signer_set_members (signer_set_hash, key_id) \
             SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            // SQLite reads an upsert's `ON` after a bare `FROM` as a join: `WHERE true`
            // ends the SELECT.
            "INSERT INTO prov_signer_set_members (signer_set_hash, key_id) \
             SELECT ?1, value FROM json_each(?2) WHERE true ON CONFLICT DO NOTHING",
        ),
        signer_set_hash,
        List(key_ids.to_vec())
    )?;
    Ok(())
}

/// The ledger row of a revocation id.
async fn existing_revocation(
    exec: Exec<'_>,
    revocation_id: uuid::Uuid,
) -> Result<Option<LedgerRow>, AdapterError> {
    let row: Option<LedgerRecord> = run!(
        rows fetch_optional,
        exec,
        Sql::new(
            concat!(
                "SELECT ",
                ledger_columns!(),
                " FROM provcache.prov_revocations WHERE revocation_id = $1"
            ),
            concat!(
                "SELECT ",
                ledger_columns!(),
                " FROM prov_revocations WHERE revocation_id = ?1"
            ),
        ),
        Id(revocation_id)
    )?;
    Ok(row.map(LedgerRow::from))
}

/// The start of the SQLite upsert of entries, up to its `VALUES` rows: shared by the
/// one-row statement of [`upsert_item`] and the multi-row ones of [`upsert_values`].
macro_rules! lite_items_insert {
    () => {
        "INSERT INTO provcache_items \
         (veri_key, verdict, verdict_hash, proof_root, trust_score, policy_hash, \
          signer_set_hash, feed_id, feed_epoch, created_at, updated_at, expires_at) VALUES "
    };
}

/// The end of the SQLite upsert of entries: the stored version is replaced only by a write
/// accepted no earlier than it, and each written row returns one row.
macro_rules! lite_items_conflict {
    () => {
        " ON CONFLICT (veri_key) DO UPDATE SET verdict = excluded.verdict, \
          verdict_hash = excluded.verdict_hash, proof_root = excluded.proof_root, \
          trust_score = excluded.trust_score, policy_hash = excluded.policy_hash, \
          signer_set_hash = excluded.signer_set_hash, feed_id = excluded.feed_id, \
          feed_epoch = excluded.feed_epoch, created_at = excluded.created_at, \
          updated_at = excluded.updated_at, expires_at = excluded.expires_at \
         WHERE provcache_items.updated_at <= excluded.updated_at \
         RETURNING 1"
    };
}

/// Most entries one SQLite upsert statement carries (a power of two; 12 binds a row).
const ITEM_ROWS: usize = 64;

/// Upserts one entry and its signer-set members as the version accepted at `accepted_at`
/// (`updated_at`), unless the stored version is newer: whether the entry was written. The
/// SQLite batch loops over these in its transaction; a bundle import writes one.
pub(crate) async fn upsert_item(
    tx: &mut Tx,
    e: &Entry,
    accepted_at: DateTime<Utc>,
) -> Result<bool, AdapterError> {
    let stored: Option<i32> = run!(
        scalar fetch_optional,
        tx.exec(),
        Sql::new(
            "INSERT INTO provcache.provcache_items \
             (veri_key, verdict, verdict_hash, proof_root, trust_score, policy_hash, \
              signer_set_hash, feed_id, feed_epoch, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (veri_key) DO UPDATE SET verdict = EXCLUDED.verdict, \
              verdict_hash = EXCLUDED.verdict_hash, proof_root = EXCLUDED.proof_root, \
              trust_score = EXCLUDED.trust_score, policy_hash = EXCLUDED.policy_hash, \
              signer_set_hash = EXCLUDED.signer_set_hash, feed_id = EXCLUDED.feed_id, \
              feed_epoch = EXCLUDED.feed_epoch, created_at = EXCLUDED.created_at, \
              updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at \
             WHERE provcache.provcache_items.updated_at <= EXCLUDED.updated_at \
             RETURNING 1",
            concat!(
                lite_items_insert!(),
                "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                lite_items_conflict!()
            ),
        ),
        &e.veri_key,
        Json(&e.verdict),
        &e.verdict_hash,
        &e.proof_root,
        e.trust_score,
        &e.policy_hash,
        &e.signer_set_hash,
        &e.feed_id,
        &e.feed_epoch,
        Time(e.created_at),
        Time(accepted_at),
        Time(e.expires_at)
    )?;
    insert_members(tx.exec(), &e.signer_set_hash, &e.signer_key_ids).await?;
    Ok(stored.is_some())
}

/// Upserts the kept writes and their signer-set members on SQLite: as few statements as
/// the binary digits of their count, each a power of two of rows up to [`ITEM_ROWS`] (so a
/// handful of statement texts serve every batch and stay prepared in the connection's
/// cache), and every member in one statement. Returns how many items were written.
async fn upsert_values(
    conn: &mut SqliteConnection,
    kept: &[&EntryWrite],
) -> Result<u64, AdapterError> {
    static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        (0..=ITEM_ROWS.trailing_zeros())
            .map(|bit| {
                // Anonymous `?` parameters: sqlx asks SQLite for every numbered
                // parameter's name, a scan of all the statement's names each, which made
                // binding quadratic in the rows.
                let rows = vec![format!("({})", ["?"; 12].join(", ")); 1usize << bit];
                format!(
                    "{}{}{}",
                    lite_items_insert!(),
                    rows.join(", "),
                    lite_items_conflict!()
                )
            })
            .collect()
    });
    let mut written = 0u64;
    let mut rest = kept;
    while !rest.is_empty() {
        let bit = rest.len().min(ITEM_ROWS).ilog2();
        let (chunk, tail) = rest.split_at(1 << bit);
        let mut q = sqlx::query(texts[bit as usize].as_str());
        for w in chunk {
            let e = &w.entry;
            q = q
                .bind(&e.veri_key)
                .bind(Json(&e.verdict))
                .bind(&e.verdict_hash)
                .bind(&e.proof_root)
                .bind(e.trust_score)
                .bind(&e.policy_hash)
                .bind(&e.signer_set_hash)
                .bind(&e.feed_id)
                .bind(&e.feed_epoch)
                .bind(Time(e.created_at))
                .bind(Time(w.accepted_at))
                .bind(Time(e.expires_at));
        }
        let rows = q
            .fetch_all(&mut *conn)
            .await
            .map_err(AdapterError::Sqlite)?;
        written += rows.len() as u64;
        rest = tail;
    }
    let mut members: Vec<(&str, &str)> = kept
        .iter()
        .flat_map(|w| {
            let e = &w.entry;
            e.signer_key_ids
                .iter()
                .map(|k| (e.signer_set_hash.as_str(), k.as_str()))
        })
        .collect();
    members.sort_unstable();
    members.dedup();
    if !members.is_empty() {
        let pairs = serde_json::to_string(&members)
            .map_err(|e| AdapterError::Corrupt(format!("signer-set members as JSON: {e}")))?;
        // SQLite reads an upsert's `ON` after a bare `FROM` as a join: `WHERE true` ends
        // the SELECT.
        sqlx::query(
            "INSERT INTO prov_signer_set_members (signer_set_hash, key_id) \
             SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(pairs)
        .execute(&mut *conn)
        .await
        .map_err(AdapterError::Sqlite)?;
    }
    Ok(written)
}

/// Upserts the kept writes and their signer-set members on PostgreSQL in one statement,
/// each column bound as an array; returns how many items were written.
async fn upsert_unnest(conn: &mut PgConnection, kept: &[&EntryWrite]) -> Result<i64, AdapterError> {
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
    for w in kept {
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
    sqlx::query_scalar(
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
    .fetch_one(conn)
    .await
    .map_err(AdapterError::Postgres)
}

impl Store {
    /// Begins the write transaction of a flush (or of an import, which writes an entry as
    /// a flush does): on PostgreSQL it holds [`FLUSH_LOCK`] shared, so no invalidation
    /// commits until it has; on SQLite the one writer connection already keeps them apart.
    pub(crate) async fn begin_flush(&self) -> Result<Tx, AdapterError> {
        let mut tx = self.begin().await?;
        if tx.backend() == Backend::Postgres {
            run!(
                exec,
                tx.exec(),
                Sql::new("SELECT pg_advisory_xact_lock_shared($1)", ""),
                FLUSH_LOCK
            )?;
        }
        Ok(tx)
    }

    /// Ledger rows with `seq_no > since`, oldest first, at most `limit`.
    pub async fn revocations(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, AdapterError> {
        let rows: Vec<LedgerRecord> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT ",
                    ledger_columns!(),
                    " FROM provcache.prov_revocations WHERE seq_no > $1 ORDER BY seq_no LIMIT $2"
                ),
                concat!(
                    "SELECT ",
                    ledger_columns!(),
                    " FROM prov_revocations WHERE seq_no > ?1 ORDER BY seq_no LIMIT ?2"
                ),
            ),
            since,
            limit
        )?;
        Ok(rows.into_iter().map(LedgerRow::from).collect())
    }

    /// The seed's ledger statistics: total rows, rows by type, entries invalidated, head.
    pub async fn ledger_stats(&self) -> Result<LedgerStats, AdapterError> {
        // One read transaction: on SQLite one snapshot, so the head matches the counts
        // (PostgreSQL's READ COMMITTED reads each statement apart, as it always did).
        let mut tx = self.begin_read().await?;
        let by_type: Vec<(String, i64, i64)> = run!(
            rows fetch_all,
            tx.exec(),
            Sql::new(
                "SELECT revocation_type, count(*), coalesce(sum(entries_invalidated), 0)::bigint \
                 FROM provcache.prov_revocations GROUP BY revocation_type ORDER BY revocation_type",
                "SELECT revocation_type, count(*), coalesce(sum(entries_invalidated), 0) \
                 FROM prov_revocations GROUP BY revocation_type ORDER BY revocation_type",
            )
        )?;
        let head: Option<i64> = run!(
            scalar fetch_one,
            tx.exec(),
            Sql::new(
                "SELECT max(seq_no) FROM provcache.prov_revocations",
                "SELECT max(seq_no) FROM prov_revocations",
            )
        )?;
        tx.rollback().await?;
        Ok(LedgerStats {
            total_entries: by_type.iter().map(|(_, n, _)| n).sum(),
            total_entries_invalidated: by_type.iter().map(|(_, _, e)| e).sum(),
            entries_by_type: by_type.into_iter().map(|(t, n, _)| (t, n)).collect(),
            head_seq_no: head.unwrap_or(0),
        })
    }

    /// How many items the durable tier holds (expired ones included).
    pub async fn count_items(&self) -> Result<i64, AdapterError> {
        run!(
            scalar fetch_one,
            self.read(),
            Sql::new(
                "SELECT count(*) FROM provcache.provcache_items",
                "SELECT count(*) FROM provcache_items",
            )
        )
    }

    /// The most recent rejected events, newest first.
    pub async fn rejected_events(&self, limit: i64) -> Result<Vec<RejectedEvent>, AdapterError> {
        let rows: Vec<RejectedRecord> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                "SELECT subject, event_id, reason, detail, payload, rejected_at \
                 FROM provcache.prov_rejected_events ORDER BY id DESC LIMIT $1",
                "SELECT subject, event_id, reason, detail, payload, rejected_at \
                 FROM prov_rejected_events ORDER BY id DESC LIMIT ?1",
            ),
            limit
        )?;
        Ok(rows.into_iter().map(RejectedEvent::from).collect())
    }

    /// Upserts a batch of writes in one transaction (see [`EntryStore::upsert_entries`]):
    /// the newest `accepted_at` per VeriKey wins, also against the stored version, and a
    /// write matched by an invalidation recorded after it was accepted is dropped.
    ///
    /// Rows go in VeriKey order, so concurrent PostgreSQL flushes lock rows in the same
    /// order and cannot deadlock; the batch is prepared before the transaction, so the
    /// shared flush lock is held for the SQL only.
    pub async fn upsert_writes(
        &self,
        writes: &[EntryWrite],
    ) -> Result<UpsertOutcome, AdapterError> {
        let Some(oldest) = writes.iter().map(|w| w.accepted_at).min() else {
            return Ok(UpsertOutcome::default());
        };
        let mut newest = newest_per_key_ref(writes);
        newest.sort_unstable_by(|a, b| a.entry.veri_key.cmp(&b.entry.veri_key));
        let mut tx = self.begin_flush().await?;
        // Read in the write transaction: no invalidation can commit between this check and
        // the upsert (PostgreSQL: it waits for the flush lock; SQLite: it would need the
        // single writer connection).
        let revocations = recent_revocations(tx.exec(), oldest).await?;
        let (kept, dropped): (Vec<&EntryWrite>, Vec<&EntryWrite>) = if revocations.is_empty() {
            (newest, Vec::new())
        } else {
            newest
                .into_iter()
                .partition(|w| !invalidated_after_accept(w, &revocations))
        };
        // PostgreSQL takes the batch as column arrays in one statement; SQLite has no
        // array binds, so it takes it as multi-row statements.
        let written = match &mut tx {
            Tx::Pg(pg) => u64::try_from(upsert_unnest(pg, &kept).await?).unwrap_or(0),
            Tx::Lite(lite) => upsert_values(lite, &kept).await?,
        };
        tx.commit().await?;
        Ok(UpsertOutcome {
            written,
            invalidated: dropped.len() as u64,
            invalidated_keys: dropped.iter().map(|w| w.entry.veri_key.clone()).collect(),
        })
    }

    /// The live entry with this VeriKey.
    pub async fn entry(&self, veri_key: &str) -> Result<Option<Entry>, AdapterError> {
        // Live by provd's clock on both databases (PostgreSQL's `now()` before).
        let row: Option<EntryRecord> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                "SELECT i.veri_key, i.verdict, i.verdict_hash, i.proof_root, i.trust_score, \
                  i.policy_hash, i.signer_set_hash, \
                  ARRAY(SELECT m.key_id::text FROM provcache.prov_signer_set_members m \
                        WHERE m.signer_set_hash = i.signer_set_hash ORDER BY m.key_id) \
                    AS signer_key_ids, \
                  i.feed_id, i.feed_epoch, i.created_at, i.expires_at \
                 FROM provcache.provcache_items i WHERE i.veri_key = $1 AND i.expires_at > $2",
                "SELECT i.veri_key, i.verdict, i.verdict_hash, i.proof_root, i.trust_score, \
                  i.policy_hash, i.signer_set_hash, \
                  (SELECT json_group_array(key_id) FROM (SELECT m.key_id FROM \
                    prov_signer_set_members m WHERE m.signer_set_hash = i.signer_set_hash \
                    ORDER BY m.key_id)) AS signer_key_ids, \
                  i.feed_id, i.feed_epoch, i.created_at, i.expires_at \
                 FROM provcache_items i WHERE i.veri_key = ?1 AND i.expires_at > ?2",
            ),
            veri_key,
            Time(Utc::now())
        )?;
        Ok(row.map(Entry::from))
    }

    /// Deletes the entries an invalidation matches and appends its ledger row, in one
    /// transaction; a revocation id already in the ledger changes nothing.
    pub async fn invalidate_entries(
        &self,
        inv: &Invalidation,
    ) -> Result<InvalidationOutcome, AdapterError> {
        let mut tx = self.begin().await?;
        if let Some(row) = existing_revocation(tx.exec(), inv.revocation_id).await? {
            tx.rollback().await?;
            return Ok(InvalidationOutcome {
                row,
                deleted_keys: Vec::new(),
                duplicate: true,
            });
        }
        if tx.backend() == Backend::Postgres {
            // Waits for write-behind flushes in progress, and holds new ones off until
            // commit.
            run!(
                exec,
                tx.exec(),
                Sql::new("SELECT pg_advisory_xact_lock($1)", ""),
                FLUSH_LOCK
            )?;
        }
        let deleted: Vec<String> = match &inv.criterion {
            Criterion::VeriKey(k) => run!(
                scalar fetch_all,
                tx.exec(),
                Sql::new(
                    "DELETE FROM provcache.provcache_items WHERE veri_key = $1 RETURNING veri_key",
                    "DELETE FROM provcache_items WHERE veri_key = ?1 RETURNING veri_key",
                ),
                k
            )?,
            Criterion::SignerSetHash(h) => run!(
                scalar fetch_all,
                tx.exec(),
                Sql::new(
                    "DELETE FROM provcache.provcache_items WHERE signer_set_hash = $1 \
                     RETURNING veri_key",
                    "DELETE FROM provcache_items WHERE signer_set_hash = ?1 RETURNING veri_key",
                ),
                h
            )?,
            Criterion::PolicyHash(h) => run!(
                scalar fetch_all,
                tx.exec(),
                Sql::new(
                    "DELETE FROM provcache.provcache_items WHERE policy_hash = $1 \
                     RETURNING veri_key",
                    "DELETE FROM provcache_items WHERE policy_hash = ?1 RETURNING veri_key",
                ),
                h
            )?,
            Criterion::SignerKeyId(k) => run!(
                scalar fetch_all,
                tx.exec(),
                Sql::new(
                    "DELETE FROM provcache.provcache_items WHERE signer_set_hash IN \
                     (SELECT signer_set_hash FROM provcache.prov_signer_set_members \
                      WHERE key_id = $1) RETURNING veri_key",
                    "DELETE FROM provcache_items WHERE signer_set_hash IN \
                     (SELECT signer_set_hash FROM prov_signer_set_members WHERE key_id = ?1) \
                     RETURNING veri_key",
                ),
                k
            )?,
            Criterion::FeedEpochBefore { feed_id, before } => {
                // Epochs compare as versions or instants, which SQL cannot do on the stored
                // text: candidates are locked (PostgreSQL; SQLite's writer already excludes
                // others), compared here, and deleted by key, all in this transaction.
                let candidates: Vec<(String, String)> = run!(
                    rows fetch_all,
                    tx.exec(),
                    Sql::new(
                        "SELECT veri_key, feed_epoch FROM provcache.provcache_items \
                         WHERE feed_epoch IS NOT NULL AND ($1::text IS NULL OR feed_id = $1) \
                         FOR UPDATE",
                        "SELECT veri_key, feed_epoch FROM provcache_items \
                         WHERE feed_epoch IS NOT NULL AND (?1 IS NULL OR feed_id = ?1)",
                    ),
                    feed_id
                )?;
                let doomed: Vec<String> = candidates
                    .into_iter()
                    .filter(|(_, e)| FeedEpoch::parse(e).is_ok_and(|e| e.is_before(before)))
                    .map(|(k, _)| k)
                    .collect();
                run!(
                    scalar fetch_all,
                    tx.exec(),
                    Sql::new(
                        "DELETE FROM provcache.provcache_items WHERE veri_key = ANY($1) \
                         RETURNING veri_key",
                        "DELETE FROM provcache_items WHERE veri_key IN \
                         (SELECT value FROM json_each(?1)) RETURNING veri_key",
                    ),
                    List(doomed)
                )?
            }
        };
        // PostgreSQL's column is INTEGER.
        let count = i32::try_from(deleted.len()).unwrap_or(i32::MAX);
        // Stamped with provd's clock, the one that stamps accepted writes, on both
        // databases.
        let row: Option<LedgerRecord> = run!(
            rows fetch_optional,
            tx.exec(),
            Sql::new(
                concat!(
                    "INSERT INTO provcache.prov_revocations \
                     (revocation_id, revocation_type, revoked_key, reason, entries_invalidated, \
                      source, correlation_id, revoked_at, metadata) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (revocation_id) DO NOTHING RETURNING ",
                    ledger_columns!()
                ),
                concat!(
                    "INSERT INTO prov_revocations \
                     (revocation_id, revocation_type, revoked_key, reason, entries_invalidated, \
                      source, correlation_id, revoked_at, metadata) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (revocation_id) DO NOTHING RETURNING ",
                    ledger_columns!()
                ),
            ),
            Id(inv.revocation_id),
            inv.revocation_type.as_str(),
            truncate(&inv.criterion.value(), 512),
            inv.reason.as_deref().map(|r| truncate(r, 1024)),
            count,
            truncate(&inv.source, 128),
            inv.correlation_id.as_deref().map(|c| truncate(c, 128)),
            Time(Utc::now()),
            Json(inv.metadata())
        )?;
        match row {
            Some(row) => {
                tx.commit().await?;
                Ok(InvalidationOutcome {
                    row: row.into(),
                    deleted_keys: deleted,
                    duplicate: false,
                })
            }
            // Someone recorded this revocation concurrently (PostgreSQL only: SQLite's
            // single writer read the ledger in this transaction): undo our deletes.
            None => {
                tx.rollback().await?;
                let row = existing_revocation(self.read(), inv.revocation_id)
                    .await?
                    .ok_or_else(|| {
                        AdapterError::Corrupt(format!(
                            "revocation {} conflicted but cannot be read",
                            inv.revocation_id
                        ))
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
impl EntryStore for Store {
    fn name(&self) -> &'static str {
        self.service().as_str()
    }

    async fn get_entry(&self, veri_key: &str) -> Result<Option<Entry>, PortError> {
        Ok(self.entry(veri_key).await?)
    }

    async fn upsert_entries(&self, writes: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
        Ok(self.upsert_writes(writes).await?)
    }

    async fn invalidated_after(&self, write: &EntryWrite) -> Result<bool, PortError> {
        let revocations = recent_revocations(self.read(), write.accepted_at).await?;
        Ok(invalidated_after_accept(write, &revocations))
    }
}

#[async_trait]
impl InvalidationStore for Store {
    async fn invalidate(&self, inv: &Invalidation) -> Result<InvalidationOutcome, PortError> {
        Ok(self.invalidate_entries(inv).await?)
    }
}

#[async_trait]
impl RejectedEventStore for Store {
    async fn record_rejected(&self, e: &RejectedEvent) -> Result<(), PortError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "INSERT INTO provcache.prov_rejected_events \
                 (subject, event_id, reason, detail, payload, rejected_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                "INSERT INTO prov_rejected_events \
                 (subject, event_id, reason, detail, payload, rejected_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            ),
            truncate(&e.subject, 256),
            e.event_id.as_deref().map(|i| truncate(i, 128)),
            &e.reason,
            &e.detail,
            &e.payload,
            Time(e.rejected_at)
        )?;
        Ok(())
    }
}
