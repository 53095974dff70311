//! Rekor submissions and receipts in PostgreSQL (`rekor_submissions`, `rekor_entries`).
//!
//! A receipt is stored column by column (log ID, indices, body, the inclusion proof in the
//! Sigstore bundle's protobuf-JSON form, the checkpoint, the SET) so it can be queried, and
//! it is rebuilt losslessly from them.

use actors::domain::receipt::{Receipt, TleInclusionProof, TransparencyLogEntry};
use actors::domain::submission::SubmissionStatus;
use actors::ports::{NewSubmission, PortError, StoredReceipt, SubmissionRecord, SubmissionStore};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::AdapterError;
use super::postgres::PgStore;

#[derive(FromRow)]
struct SubmissionRow {
    submission_id: String,
    backend: String,
    status: String,
    envelope: serde_json::Value,
    verifier_keys: serde_json::Value,
    attempts: i32,
    last_error: Option<String>,
    entry_uuid: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SubmissionRow> for SubmissionRecord {
    type Error = AdapterError;
    fn try_from(r: SubmissionRow) -> Result<Self, AdapterError> {
        Ok(SubmissionRecord {
            status: SubmissionStatus::parse(&r.status)
                .map_err(|e| AdapterError::Corrupt(e.to_string()))?,
            verifier_keys: serde_json::from_value(r.verifier_keys).map_err(|e| {
                AdapterError::Corrupt(format!("rekor_submissions.verifier_keys: {e}"))
            })?,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            id: r.submission_id,
            backend: r.backend,
            envelope: r.envelope,
            last_error: r.last_error,
            entry_uuid: r.entry_uuid,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct EntryRow {
    uuid: String,
    backend: String,
    submission_id: Option<String>,
    log_id: String,
    log_index: i64,
    integrated_time: Option<i64>,
    body: Vec<u8>,
    inclusion_proof: serde_json::Value,
    signed_entry_timestamp: Option<String>,
    verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<EntryRow> for StoredReceipt {
    type Error = AdapterError;
    fn try_from(r: EntryRow) -> Result<Self, AdapterError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            AdapterError::Corrupt(format!("rekor_entries.{what} of {}: {e}", r.uuid))
        };
        let log_id = hex::decode(&r.log_id).map_err(|e| corrupt("log_id", &e))?;
        let proof: Option<TleInclusionProof> = if r.inclusion_proof.is_null() {
            None
        } else {
            Some(
                serde_json::from_value(r.inclusion_proof.clone())
                    .map_err(|e| corrupt("inclusion_proof", &e))?,
            )
        };
        // The bundle form is the one lossless shape both ways; reuse its conversion.
        let tle = TransparencyLogEntry {
            log_index: r.log_index,
            log_id: actors::domain::receipt::LogId {
                key_id: B64.encode(&log_id),
            },
            kind_version: None,
            integrated_time: r.integrated_time.unwrap_or(0),
            inclusion_promise: r.signed_entry_timestamp.clone().map(|s| {
                actors::domain::receipt::InclusionPromise {
                    signed_entry_timestamp: s,
                }
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
            created_at: r.created_at,
            verified_at: r.verified_at,
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

impl PgStore {
    async fn submission_row(&self, id: &str) -> Result<Option<SubmissionRecord>, AdapterError> {
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "SELECT",
            submission_columns!(),
            "FROM rekor_submissions WHERE submission_id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(SubmissionRecord::try_from).transpose()
    }
}

#[async_trait]
impl SubmissionStore for PgStore {
    async fn ensure_submission(&self, new: &NewSubmission) -> Result<SubmissionRecord, PortError> {
        let keys = serde_json::to_value(&new.verifier_keys)
            .map_err(|e| PortError::Rejected(e.to_string()))?;
        sqlx::query(
            "INSERT INTO rekor_submissions (submission_id, backend, status, envelope, verifier_keys) \
             VALUES ($1, $2, 'queued', $3, $4) ON CONFLICT (submission_id) DO NOTHING",
        )
        .bind(&new.id)
        .bind(&new.backend)
        .bind(&new.envelope)
        .bind(keys)
        .execute(self.pool())
        .await
        .map_err(AdapterError::from)?;
        self.submission_row(&new.id)
            .await?
            .ok_or_else(|| not_found(&new.id))
    }

    async fn begin_attempt(&self, id: &str) -> Result<SubmissionRecord, PortError> {
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "UPDATE rekor_submissions SET status = 'submitting', attempts = attempts + 1, \
             updated_at = now() WHERE submission_id = $1 RETURNING",
            submission_columns!()
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
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
        let mut tx = self.pool().begin().await.map_err(AdapterError::from)?;
        let backend: Option<(String,)> = sqlx::query_as(
            "SELECT backend FROM rekor_submissions WHERE submission_id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(AdapterError::from)?;
        let Some((backend,)) = backend else {
            return Err(not_found(id));
        };
        sqlx::query(
            "INSERT INTO rekor_entries (uuid, backend, submission_id, log_id, log_index, \
             shard_log_index, tree_id, integrated_time, body, inclusion_proof, checkpoint, \
             signed_entry_timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
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
        .execute(&mut *tx)
        .await
        .map_err(AdapterError::from)?;
        sqlx::query(
            "UPDATE rekor_submissions SET status = 'logged', entry_uuid = $2, last_error = NULL, \
             updated_at = now() WHERE submission_id = $1",
        )
        .bind(id)
        .bind(uuid)
        .execute(&mut *tx)
        .await
        .map_err(AdapterError::from)?;
        tx.commit().await.map_err(AdapterError::from)?;
        Ok(())
    }

    async fn record_failure(
        &self,
        id: &str,
        status: SubmissionStatus,
        error: &str,
    ) -> Result<SubmissionRecord, PortError> {
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "UPDATE rekor_submissions SET status = $2, last_error = $3, updated_at = now() \
             WHERE submission_id = $1 RETURNING",
            submission_columns!()
        ))
        .bind(id)
        .bind(status.as_str())
        .bind(error)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(row
            .map(SubmissionRecord::try_from)
            .transpose()?
            .ok_or_else(|| not_found(id))?)
    }

    async fn submission(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        Ok(self.submission_row(id).await?)
    }

    async fn stored_receipt(&self, uuid: &str) -> Result<Option<StoredReceipt>, PortError> {
        // A Rekor v1 entry ID is the tree ID (16 hex) and the UUID; accept either form.
        let uuid = uuid.to_ascii_lowercase();
        let row: Option<EntryRow> = sqlx::query_as(
            "SELECT uuid, backend, submission_id, log_id, log_index, integrated_time, body, \
             inclusion_proof, signed_entry_timestamp, verified_at, created_at \
             FROM rekor_entries WHERE uuid = $1 OR right(uuid, 64) = $1 \
             ORDER BY created_at LIMIT 1",
        )
        .bind(uuid)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(row.map(StoredReceipt::try_from).transpose()?)
    }

    async fn requeue(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        let row: Option<SubmissionRow> = sqlx::query_as(concat!(
            "UPDATE rekor_submissions SET status = 'queued', attempts = 0, updated_at = now() \
             WHERE submission_id = $1 AND status IN ('dead_lettered', 'queued') \
             RETURNING",
            submission_columns!()
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(AdapterError::from)?;
        match row {
            Some(r) => Ok(Some(SubmissionRecord::try_from(r)?)),
            None => Ok(self.submission_row(id).await?),
        }
    }
}

#[async_trait]
impl crate::evaluate::ReceiptStore for PgStore {
    async fn store_receipt(
        &self,
        log: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
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
        // No submission: the receipt came with an attestation someone else logged. Either
        // unique key (UUID, or log and index) already stored means it is stored.
        sqlx::query(
            "INSERT INTO rekor_entries (uuid, backend, submission_id, log_id, log_index, \
             shard_log_index, tree_id, integrated_time, body, inclusion_proof, checkpoint, \
             signed_entry_timestamp) VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT DO NOTHING",
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
        .execute(self.pool())
        .await
        .map_err(AdapterError::from)?;
        Ok(())
    }
}
