//! Rekor submissions and receipts in embedded mode's SQLite file (`rekor_submissions`,
//! `rekor_entries`), with the PostgreSQL adapter's semantics.
//!
//! As there, a receipt is stored column by column (log ID, indices, body, the inclusion proof
//! in the Sigstore bundle's protobuf-JSON form, the checkpoint, the SET) and rebuilt from
//! them through the bundle form. Every write goes through the one writer connection; a write
//! whose result is read back reads it inside the same transaction.

use actors::domain::receipt::{
    InclusionPromise, LogId, Receipt, TleInclusionProof, TransparencyLogEntry,
};
use actors::domain::submission::SubmissionStatus;
use actors::ports::{NewSubmission, PortError, StoredReceipt, SubmissionRecord, SubmissionStore};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::Utc;
use sqlx::{FromRow, SqliteConnection};

use super::AdapterError;
use super::sqlite::{SqliteResult, SqliteStore, from_micros, to_micros};

#[derive(FromRow)]
struct SubmissionRow {
    submission_id: String,
    backend: String,
    status: String,
    envelope: String,
    verifier_keys: String,
    attempts: i64,
    last_error: Option<String>,
    entry_uuid: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<SubmissionRow> for SubmissionRecord {
    type Error = AdapterError;
    fn try_from(r: SubmissionRow) -> Result<Self, AdapterError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            AdapterError::Corrupt(format!(
                "rekor_submissions.{what} of {}: {e}",
                r.submission_id
            ))
        };
        Ok(SubmissionRecord {
            status: SubmissionStatus::parse(&r.status)
                .map_err(|e| AdapterError::Corrupt(e.to_string()))?,
            envelope: serde_json::from_str(&r.envelope).map_err(|e| corrupt("envelope", &e))?,
            verifier_keys: serde_json::from_str(&r.verifier_keys)
                .map_err(|e| corrupt("verifier_keys", &e))?,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            id: r.submission_id,
            backend: r.backend,
            last_error: r.last_error,
            entry_uuid: r.entry_uuid,
            created_at: from_micros(r.created_at),
            updated_at: from_micros(r.updated_at),
        })
    }
}

/// A `rekor_entries` row as [`ENTRY_COLUMNS`] selects it.
#[derive(FromRow)]
pub(super) struct EntryRow {
    uuid: String,
    backend: String,
    submission_id: Option<String>,
    log_id: String,
    log_index: i64,
    integrated_time: Option<i64>,
    body: Vec<u8>,
    inclusion_proof: String,
    signed_entry_timestamp: Option<String>,
    verified_at: Option<i64>,
    created_at: i64,
}

/// The receipt columns, in [`EntryRow`]'s order.
pub(super) const ENTRY_COLUMNS: &str = "uuid, backend, submission_id, log_id, log_index, \
     integrated_time, body, inclusion_proof, signed_entry_timestamp, verified_at, created_at";

impl TryFrom<EntryRow> for StoredReceipt {
    type Error = AdapterError;
    fn try_from(r: EntryRow) -> Result<Self, AdapterError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            AdapterError::Corrupt(format!("rekor_entries.{what} of {}: {e}", r.uuid))
        };
        let log_id = hex::decode(&r.log_id).map_err(|e| corrupt("log_id", &e))?;
        let proof: serde_json::Value =
            serde_json::from_str(&r.inclusion_proof).map_err(|e| corrupt("inclusion_proof", &e))?;
        let proof: Option<TleInclusionProof> = if proof.is_null() {
            None
        } else {
            Some(serde_json::from_value(proof).map_err(|e| corrupt("inclusion_proof", &e))?)
        };
        // The bundle form is the one lossless shape both ways; reuse its conversion, as the
        // PostgreSQL adapter does, so both stores rebuild the same receipt.
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
            created_at: from_micros(r.created_at),
            verified_at: r.verified_at.map(from_micros),
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

/// Reads one submission on `conn` (the writer's transaction when it must see a write).
async fn submission_on(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<SubmissionRecord>, AdapterError> {
    let row: Option<SubmissionRow> = sqlx::query_as(concat!(
        "SELECT",
        submission_columns!(),
        "FROM rekor_submissions WHERE submission_id = ?1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .sq()?;
    row.map(SubmissionRecord::try_from).transpose()
}

#[async_trait]
impl SubmissionStore for SqliteStore {
    async fn ensure_submission(&self, new: &NewSubmission) -> Result<SubmissionRecord, PortError> {
        let keys = serde_json::to_string(&new.verifier_keys)
            .map_err(|e| PortError::Rejected(e.to_string()))?;
        let envelope =
            serde_json::to_string(&new.envelope).map_err(|e| PortError::Rejected(e.to_string()))?;
        let now = to_micros(Utc::now());
        let mut tx = self.writer().begin().await.sq()?;
        sqlx::query(
            "INSERT INTO rekor_submissions (submission_id, backend, status, envelope, \
             verifier_keys, created_at, updated_at) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?5) \
             ON CONFLICT (submission_id) DO NOTHING",
        )
        .bind(&new.id)
        .bind(&new.backend)
        .bind(envelope)
        .bind(keys)
        .bind(now)
        .execute(&mut *tx)
        .await
        .sq()?;
        let row = submission_on(&mut tx, &new.id).await?;
        tx.commit().await.sq()?;
        row.ok_or_else(|| not_found(&new.id))
    }

    async fn begin_attempt(&self, id: &str) -> Result<SubmissionRecord, PortError> {
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "UPDATE rekor_submissions SET status = 'submitting', attempts = attempts + 1, \
             updated_at = ?2 WHERE submission_id = ?1 RETURNING",
            submission_columns!()
        ))
        .bind(id)
        .bind(to_micros(Utc::now()))
        .fetch_optional(self.writer())
        .await
        .sq()?;
        Ok(row
            .map(SubmissionRecord::try_from)
            .transpose()?
            .ok_or_else(|| not_found(id))?)
    }

    async fn record_logged(
        &self,
        id: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
        let tle = receipt.to_tle();
        let proof = match &tle.inclusion_proof {
            Some(p) => serde_json::to_string(p).map_err(|e| PortError::Rejected(e.to_string()))?,
            None => "null".to_owned(),
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
        let now = to_micros(Utc::now());
        // IMMEDIATE takes the write lock at once: the submission read below is then the one
        // the update acts on, as PostgreSQL's `FOR UPDATE` guarantees.
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await.sq()?;
        let backend: Option<(String,)> =
            sqlx::query_as("SELECT backend FROM rekor_submissions WHERE submission_id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .sq()?;
        let Some((backend,)) = backend else {
            return Err(not_found(id));
        };
        sqlx::query(
            "INSERT INTO rekor_entries (uuid, backend, submission_id, log_id, log_index, \
             shard_log_index, tree_id, integrated_time, body, inclusion_proof, checkpoint, \
             signed_entry_timestamp, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT (uuid) DO NOTHING",
        )
        .bind(uuid)
        .bind(&backend)
        .bind(id)
        .bind(hex::encode(&receipt.log_id))
        .bind(i(receipt.log_index))
        .bind(i(shard_index))
        .bind(receipt.tree_id.map(|t| t.to_string()))
        .bind(receipt.integrated_time)
        .bind(&receipt.canonical_body)
        .bind(proof)
        .bind(checkpoint)
        .bind(tle.inclusion_promise.map(|p| p.signed_entry_timestamp))
        .bind(now)
        .execute(&mut *tx)
        .await
        .sq()?;
        sqlx::query(
            "UPDATE rekor_submissions SET status = 'logged', entry_uuid = ?2, last_error = NULL, \
             updated_at = ?3 WHERE submission_id = ?1",
        )
        .bind(id)
        .bind(uuid)
        .bind(now)
        .execute(&mut *tx)
        .await
        .sq()?;
        tx.commit().await.sq()?;
        Ok(())
    }

    async fn record_failure(
        &self,
        id: &str,
        status: SubmissionStatus,
        error: &str,
    ) -> Result<SubmissionRecord, PortError> {
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "UPDATE rekor_submissions SET status = ?2, last_error = ?3, updated_at = ?4 \
             WHERE submission_id = ?1 RETURNING",
            submission_columns!()
        ))
        .bind(id)
        .bind(status.as_str())
        .bind(error)
        .bind(to_micros(Utc::now()))
        .fetch_optional(self.writer())
        .await
        .sq()?;
        Ok(row
            .map(SubmissionRecord::try_from)
            .transpose()?
            .ok_or_else(|| not_found(id))?)
    }

    async fn submission(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        let mut conn = self.reader().acquire().await.sq()?;
        Ok(submission_on(&mut conn, id).await?)
    }

    async fn stored_receipt(&self, uuid: &str) -> Result<Option<StoredReceipt>, PortError> {
        // A Rekor v1 entry ID is the tree ID (16 hex) and the UUID; accept either form.
        // `substr(uuid, -64)` is the indexed expression (PostgreSQL's `right(uuid, 64)`).
        let uuid = uuid.to_ascii_lowercase();
        let row: Option<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENTRY_COLUMNS} FROM rekor_entries \
             WHERE uuid = ?1 OR substr(uuid, -64) = ?1 ORDER BY created_at LIMIT 1"
        )))
        .bind(uuid)
        .fetch_optional(self.reader())
        .await
        .sq()?;
        Ok(row.map(StoredReceipt::try_from).transpose()?)
    }

    async fn requeue(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        let mut tx = self.writer().begin().await.sq()?;
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "UPDATE rekor_submissions SET status = 'queued', attempts = 0, updated_at = ?2 \
             WHERE submission_id = ?1 AND status IN ('dead_lettered', 'queued') \
             RETURNING",
            submission_columns!()
        ))
        .bind(id)
        .bind(to_micros(Utc::now()))
        .fetch_optional(&mut *tx)
        .await
        .sq()?;
        let record = match row {
            Some(r) => Some(SubmissionRecord::try_from(r)?),
            None => submission_on(&mut tx, id).await?,
        };
        tx.commit().await.sq()?;
        Ok(record)
    }
}

#[async_trait]
impl crate::evaluate::ReceiptStore for SqliteStore {
    async fn store_receipt(
        &self,
        log: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
        let tle = receipt.to_tle();
        let proof = match &tle.inclusion_proof {
            Some(p) => serde_json::to_string(p).map_err(|e| PortError::Rejected(e.to_string()))?,
            None => "null".to_owned(),
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
        // No submission: the receipt came with an attestation someone else logged. Either
        // unique key (UUID, or log and index) already stored means it is stored.
        sqlx::query(
            "INSERT OR IGNORE INTO rekor_entries (uuid, backend, submission_id, log_id, \
             log_index, shard_log_index, tree_id, integrated_time, body, inclusion_proof, \
             checkpoint, signed_entry_timestamp, created_at) \
             VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(uuid)
        .bind(log)
        .bind(hex::encode(&receipt.log_id))
        .bind(i(receipt.log_index))
        .bind(i(shard_index))
        .bind(receipt.tree_id.map(|t| t.to_string()))
        .bind(receipt.integrated_time)
        .bind(&receipt.canonical_body)
        .bind(proof)
        .bind(checkpoint)
        .bind(tle.inclusion_promise.map(|p| p.signed_entry_timestamp))
        .bind(to_micros(Utc::now()))
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }
}
