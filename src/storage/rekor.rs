//! Rekor submissions and receipts (`rekor_submissions`, `rekor_entries`).
//!
//! A submission is logged exactly once: it is inserted once per ID, every attempt is counted
//! before Rekor is called, a failure records its status (`retrying` or `dead_lettered`) and
//! error, and the receipt and the `logged` status are written in one transaction. That
//! transaction first sets the status, which returns the submission's backend for the
//! receipt and locks the row on PostgreSQL; SQLite begins `IMMEDIATE` so the one writer
//! connection holds the write lock from the start. Every other write is one
//! statement, so it is one commit: recording a submission returns the new row itself, and
//! starting an attempt records the submission and counts the attempt in one upsert (a row
//! it leaves alone, one already there, is read after it). Requeueing reads back in its
//! write's transaction.
//!
//! A receipt is stored column by column (log ID, indices, body, the inclusion proof in the
//! Sigstore bundle's protobuf-JSON form, the checkpoint, the SET) so it can be queried, and
//! it is rebuilt losslessly from them through the bundle form.

use actors::domain::receipt::{
    InclusionPromise, LogId, Receipt, TleInclusionProof, TransparencyLogEntry,
};
use actors::domain::submission::SubmissionStatus;
use actors::ports::{
    AttemptStart, NewSubmission, PortError, StoredReceipt, SubmissionRecord, SubmissionStore,
};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use sqlx::FromRow;

use super::codec::{Json, Time};
use super::{Exec, Sql, Store, Tx, run};
use crate::adapters::AdapterError;

#[derive(FromRow)]
struct SubmissionRow {
    submission_id: String,
    backend: String,
    status: String,
    envelope: Json,
    verifier_keys: Json,
    // INTEGER on PostgreSQL; SQLite's INTEGER decodes as i32 too.
    attempts: i32,
    last_error: Option<String>,
    entry_uuid: Option<String>,
    created_at: Time,
    updated_at: Time,
}

impl TryFrom<SubmissionRow> for SubmissionRecord {
    type Error = AdapterError;
    fn try_from(r: SubmissionRow) -> Result<Self, AdapterError> {
        Ok(SubmissionRecord {
            status: SubmissionStatus::parse(&r.status)
                .map_err(|e| AdapterError::Corrupt(e.to_string()))?,
            verifier_keys: serde_json::from_value(r.verifier_keys.0).map_err(|e| {
                AdapterError::Corrupt(format!(
                    "rekor_submissions.verifier_keys of {}: {e}",
                    r.submission_id
                ))
            })?,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            id: r.submission_id,
            backend: r.backend,
            envelope: r.envelope.0,
            last_error: r.last_error,
            entry_uuid: r.entry_uuid,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

/// A `rekor_entries` row as [`entry_columns!`] selects it.
#[derive(FromRow)]
pub(super) struct EntryRow {
    uuid: String,
    backend: String,
    submission_id: Option<String>,
    log_id: String,
    log_index: i64,
    integrated_time: Option<i64>,
    body: Vec<u8>,
    inclusion_proof: Json,
    signed_entry_timestamp: Option<String>,
    verified_at: Option<Time>,
    created_at: Time,
}

/// The receipt columns, in [`EntryRow`]'s order.
macro_rules! entry_columns {
    () => {
        " uuid, backend, submission_id, log_id, log_index, integrated_time, body, \
         inclusion_proof, signed_entry_timestamp, verified_at, created_at "
    };
}
pub(super) use entry_columns;

impl TryFrom<EntryRow> for StoredReceipt {
    type Error = AdapterError;
    fn try_from(r: EntryRow) -> Result<Self, AdapterError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            AdapterError::Corrupt(format!("rekor_entries.{what} of {}: {e}", r.uuid))
        };
        let log_id = hex::decode(&r.log_id).map_err(|e| corrupt("log_id", &e))?;
        let proof: Option<TleInclusionProof> = if r.inclusion_proof.0.is_null() {
            None
        } else {
            Some(
                serde_json::from_value(r.inclusion_proof.0)
                    .map_err(|e| corrupt("inclusion_proof", &e))?,
            )
        };
        // The bundle form is the one lossless shape both ways; reuse its conversion.
        let tle = TransparencyLogEntry {
            log_index: r.log_index,
            log_id: LogId {
                key_id: B64.encode(&log_id),
            },
            kind_version: None,
            integrated_time: r.integrated_time.unwrap_or(0),
            inclusion_promise: r.signed_entry_timestamp.clone().map(|s| InclusionPromise {
                signed_entry_timestamp: s,
            }),
            inclusion_proof: proof,
            canonicalized_body: B64.encode(&r.body),
        };
        let receipt = Receipt::from_tle(&tle).map_err(|e| corrupt("receipt", &e))?;
        Ok(StoredReceipt {
            uuid: r.uuid,
            backend: r.backend,
            submission_id: r.submission_id,
            receipt,
            created_at: r.created_at.0,
            verified_at: r.verified_at.map(|t| t.0),
        })
    }
}

/// A receipt's `rekor_entries` columns, as both writers of a receipt bind them.
struct EntryValues<'r> {
    log_id: String,
    log_index: i64,
    shard_log_index: i64,
    tree_id: Option<String>,
    integrated_time: Option<i64>,
    body: &'r [u8],
    inclusion_proof: Json,
    checkpoint: String,
    signed_entry_timestamp: Option<String>,
}

impl<'r> EntryValues<'r> {
    fn of(receipt: &'r Receipt) -> Result<Self, PortError> {
        let tle = receipt.to_tle();
        let proof = match &tle.inclusion_proof {
            Some(p) => serde_json::to_value(p).map_err(|e| PortError::Rejected(e.to_string()))?,
            None => serde_json::Value::Null,
        };
        let checkpoint = receipt
            .inclusion_proof
            .as_ref()
            .and_then(|p| p.checkpoint.clone())
            .unwrap_or_default();
        let shard_index = receipt
            .inclusion_proof
            .as_ref()
            .map_or(receipt.log_index, |p| p.log_index);
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(EntryValues {
            log_id: hex::encode(&receipt.log_id),
            log_index: i(receipt.log_index),
            shard_log_index: i(shard_index),
            tree_id: receipt.tree_id.map(|t| t.to_string()),
            integrated_time: receipt.integrated_time,
            body: &receipt.canonical_body,
            inclusion_proof: Json(proof),
            checkpoint,
            signed_entry_timestamp: tle.inclusion_promise.map(|p| p.signed_entry_timestamp),
        })
    }
}

/// The submission columns, in [`SubmissionRow`]'s order.
macro_rules! submission_columns {
    () => {
        " submission_id, backend, status, envelope, verifier_keys, attempts, last_error, \
         entry_uuid, created_at, updated_at "
    };
}

fn not_found(id: &str) -> PortError {
    PortError::Rejected(format!("no submission {id}"))
}

/// Reads one submission where `exec` runs (the write's transaction when it must see it).
async fn submission_on(exec: Exec<'_>, id: &str) -> Result<Option<SubmissionRecord>, AdapterError> {
    let row: Option<SubmissionRow> = run!(
        rows fetch_optional,
        exec,
        Sql::new(
            concat!(
                "SELECT",
                submission_columns!(),
                "FROM rekor_submissions WHERE submission_id = $1"
            ),
            concat!(
                "SELECT",
                submission_columns!(),
                "FROM rekor_submissions WHERE submission_id = ?1"
            ),
        ),
        id
    )?;
    row.map(SubmissionRecord::try_from).transpose()
}

/// The stored row of a submission a write found already there (it is never deleted).
async fn existing(store: &Store, id: &str) -> Result<SubmissionRecord, PortError> {
    submission_on(store.read(), id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Begins a write transaction whose first read already holds what its writes act on: on
/// SQLite `BEGIN IMMEDIATE` takes the write lock at once (a deferred one would read first
/// and upgrade later); on PostgreSQL the statements lock rows themselves (`FOR UPDATE`).
async fn begin_immediate(store: &Store) -> Result<Tx, AdapterError> {
    match store.sqlite_writer() {
        Some(writer) => writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map(Tx::Lite)
            .map_err(AdapterError::Sqlite),
        None => store.begin().await,
    }
}

#[async_trait]
impl SubmissionStore for Store {
    async fn ensure_submission(&self, new: &NewSubmission) -> Result<SubmissionRecord, PortError> {
        let keys = serde_json::to_value(&new.verifier_keys)
            .map_err(|e| PortError::Rejected(e.to_string()))?;
        // A new row comes back from the insert itself; only an existing one is read after.
        let inserted: Option<SubmissionRow> = run!(
            rows fetch_optional,
            self.write(),
            Sql::new(
                concat!(
                    "INSERT INTO rekor_submissions (submission_id, backend, status, envelope, \
                     verifier_keys, created_at, updated_at) \
                     VALUES ($1, $2, 'queued', $3, $4, $5, $5) \
                     ON CONFLICT (submission_id) DO NOTHING RETURNING",
                    submission_columns!()
                ),
                concat!(
                    "INSERT INTO rekor_submissions (submission_id, backend, status, envelope, \
                     verifier_keys, created_at, updated_at) \
                     VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?5) \
                     ON CONFLICT (submission_id) DO NOTHING RETURNING",
                    submission_columns!()
                ),
            ),
            &new.id,
            &new.backend,
            Json(new.envelope.clone()),
            Json(keys),
            Time(Utc::now())
        )?;
        match inserted {
            Some(row) => Ok(SubmissionRecord::try_from(row)?),
            None => existing(self, &new.id).await,
        }
    }

    async fn begin_attempt(&self, id: &str) -> Result<SubmissionRecord, PortError> {
        let row: Option<SubmissionRow> = run!(
            rows fetch_optional,
            self.write(),
            Sql::new(
                concat!(
                    "UPDATE rekor_submissions SET status = 'submitting', \
                     attempts = attempts + 1, updated_at = $2 WHERE submission_id = $1 RETURNING",
                    submission_columns!()
                ),
                concat!(
                    "UPDATE rekor_submissions SET status = 'submitting', \
                     attempts = attempts + 1, updated_at = ?2 WHERE submission_id = ?1 RETURNING",
                    submission_columns!()
                ),
            ),
            id,
            Time(Utc::now())
        )?;
        Ok(row
            .map(SubmissionRecord::try_from)
            .transpose()?
            .ok_or_else(|| not_found(id))?)
    }

    async fn start_attempt(
        &self,
        new: &NewSubmission,
        dead_letter_is_final: bool,
    ) -> Result<AttemptStart, PortError> {
        let keys = serde_json::to_value(&new.verifier_keys)
            .map_err(|e| PortError::Rejected(e.to_string()))?;
        // One upsert records the submission and counts the attempt: one commit per attempt
        // instead of two. A row it may not touch returns nothing and is read back.
        let started: Option<SubmissionRow> = run!(
            rows fetch_optional,
            self.write(),
            Sql::new(
                concat!(
                    "INSERT INTO rekor_submissions (submission_id, backend, status, envelope, \
                     verifier_keys, attempts, created_at, updated_at) \
                     VALUES ($1, $2, 'submitting', $3, $4, 1, $5, $5) \
                     ON CONFLICT (submission_id) DO UPDATE SET status = 'submitting', \
                     attempts = rekor_submissions.attempts + 1, updated_at = EXCLUDED.updated_at \
                     WHERE rekor_submissions.status <> 'logged' \
                     AND (rekor_submissions.status <> 'dead_lettered' OR NOT $6) RETURNING",
                    submission_columns!()
                ),
                concat!(
                    "INSERT INTO rekor_submissions (submission_id, backend, status, envelope, \
                     verifier_keys, attempts, created_at, updated_at) \
                     VALUES (?1, ?2, 'submitting', ?3, ?4, 1, ?5, ?5) \
                     ON CONFLICT (submission_id) DO UPDATE SET status = 'submitting', \
                     attempts = attempts + 1, updated_at = excluded.updated_at \
                     WHERE status <> 'logged' AND (status <> 'dead_lettered' OR NOT ?6) \
                     RETURNING",
                    submission_columns!()
                ),
            ),
            &new.id,
            &new.backend,
            Json(new.envelope.clone()),
            Json(keys),
            Time(Utc::now()),
            dead_letter_is_final
        )?;
        match started {
            Some(row) => Ok(AttemptStart::Started(SubmissionRecord::try_from(row)?)),
            None => existing(self, &new.id).await.map(AttemptStart::Settled),
        }
    }

    async fn record_logged(
        &self,
        id: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
        let v = EntryValues::of(receipt)?;
        let now = Time(Utc::now());
        let mut tx = begin_immediate(self).await?;
        // The status first: the update returns the backend the receipt lands under, and
        // holds the row until the receipt is in.
        let backend: Option<String> = run!(
            scalar fetch_optional,
            tx.exec(),
            Sql::new(
                "UPDATE rekor_submissions SET status = 'logged', entry_uuid = $2, \
                 last_error = NULL, updated_at = $3 WHERE submission_id = $1 RETURNING backend",
                "UPDATE rekor_submissions SET status = 'logged', entry_uuid = ?2, \
                 last_error = NULL, updated_at = ?3 WHERE submission_id = ?1 RETURNING backend",
            ),
            id,
            uuid,
            now
        )?;
        let Some(backend) = backend else {
            return Err(not_found(id));
        };
        run!(
            exec,
            tx.exec(),
            Sql::new(
                "INSERT INTO rekor_entries (uuid, backend, submission_id, log_id, log_index, \
                 shard_log_index, tree_id, integrated_time, body, inclusion_proof, checkpoint, \
                 signed_entry_timestamp, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (uuid) DO NOTHING",
                "INSERT INTO rekor_entries (uuid, backend, submission_id, log_id, log_index, \
                 shard_log_index, tree_id, integrated_time, body, inclusion_proof, checkpoint, \
                 signed_entry_timestamp, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                 ON CONFLICT (uuid) DO NOTHING",
            ),
            uuid,
            &backend,
            id,
            &v.log_id,
            v.log_index,
            v.shard_log_index,
            &v.tree_id,
            v.integrated_time,
            v.body,
            &v.inclusion_proof,
            &v.checkpoint,
            &v.signed_entry_timestamp,
            now
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(
        &self,
        id: &str,
        status: SubmissionStatus,
        error: &str,
    ) -> Result<SubmissionRecord, PortError> {
        let row: Option<SubmissionRow> = run!(
            rows fetch_optional,
            self.write(),
            Sql::new(
                concat!(
                    "UPDATE rekor_submissions SET status = $2, last_error = $3, updated_at = $4 \
                     WHERE submission_id = $1 RETURNING",
                    submission_columns!()
                ),
                concat!(
                    "UPDATE rekor_submissions SET status = ?2, last_error = ?3, updated_at = ?4 \
                     WHERE submission_id = ?1 RETURNING",
                    submission_columns!()
                ),
            ),
            id,
            status.as_str(),
            error,
            Time(Utc::now())
        )?;
        Ok(row
            .map(SubmissionRecord::try_from)
            .transpose()?
            .ok_or_else(|| not_found(id))?)
    }

    async fn submission(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        Ok(submission_on(self.read(), id).await?)
    }

    async fn stored_receipt(&self, uuid: &str) -> Result<Option<StoredReceipt>, PortError> {
        // A Rekor v1 entry ID is the tree ID (16 hex) and the UUID; accept either form. Each
        // database indexes the suffix under its own spelling, which the lookup must match.
        let uuid = uuid.to_ascii_lowercase();
        let row: Option<EntryRow> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                concat!(
                    "SELECT",
                    entry_columns!(),
                    "FROM rekor_entries WHERE uuid = $1 OR right(uuid, 64) = $1 \
                     ORDER BY created_at LIMIT 1"
                ),
                concat!(
                    "SELECT",
                    entry_columns!(),
                    "FROM rekor_entries WHERE uuid = ?1 OR substr(uuid, -64) = ?1 \
                     ORDER BY created_at LIMIT 1"
                ),
            ),
            uuid
        )?;
        Ok(row.map(StoredReceipt::try_from).transpose()?)
    }

    async fn requeue(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        let mut tx = self.begin().await?;
        let row: Option<SubmissionRow> = run!(
            rows fetch_optional,
            tx.exec(),
            Sql::new(
                concat!(
                    "UPDATE rekor_submissions SET status = 'queued', attempts = 0, \
                     updated_at = $2 WHERE submission_id = $1 \
                     AND status IN ('dead_lettered', 'queued') RETURNING",
                    submission_columns!()
                ),
                concat!(
                    "UPDATE rekor_submissions SET status = 'queued', attempts = 0, \
                     updated_at = ?2 WHERE submission_id = ?1 \
                     AND status IN ('dead_lettered', 'queued') RETURNING",
                    submission_columns!()
                ),
            ),
            id,
            Time(Utc::now())
        )?;
        let record = match row {
            Some(r) => Some(SubmissionRecord::try_from(r)?),
            None => submission_on(tx.exec(), id).await?,
        };
        tx.commit().await?;
        Ok(record)
    }
}

#[async_trait]
impl crate::evaluate::ReceiptStore for Store {
    async fn store_receipt(
        &self,
        log: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
        let v = EntryValues::of(receipt)?;
        // No submission: the receipt came with an attestation someone else logged. Either
        // unique key (UUID, or log and index) already stored means it is stored.
        run!(
            exec,
            self.write(),
            Sql::new(
                "INSERT INTO rekor_entries (uuid, backend, submission_id, log_id, log_index, \
                 shard_log_index, tree_id, integrated_time, body, inclusion_proof, checkpoint, \
                 signed_entry_timestamp, created_at) \
                 VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT DO NOTHING",
                "INSERT OR IGNORE INTO rekor_entries (uuid, backend, submission_id, log_id, \
                 log_index, shard_log_index, tree_id, integrated_time, body, inclusion_proof, \
                 checkpoint, signed_entry_timestamp, created_at) \
                 VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            ),
            uuid,
            log,
            &v.log_id,
            v.log_index,
            v.shard_log_index,
            &v.tree_id,
            v.integrated_time,
            v.body,
            &v.inclusion_proof,
            &v.checkpoint,
            &v.signed_entry_timestamp,
            Time(Utc::now())
        )?;
        Ok(())
    }
}
