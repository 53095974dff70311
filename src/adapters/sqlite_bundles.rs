//! What air-gap bundles need from SQLite: importing an entry with its manifest and the
//! chunks it carries in one transaction, storing lazily fetched chunks, listing which
//! chunks of a root are stored, and the entry → Rekor receipt link (`prov_entry_receipts`),
//! with the semantics of the PostgreSQL adapter.

use actors::domain::entry::{Entry, EntryWrite, invalidated_after_accept};
use actors::domain::evidence::{Manifest, chunk_digest, format_digest};
use chrono::Utc;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::AdapterError;
use super::sqlite::{SqliteResult, SqliteStore, to_micros};
use super::sqlite_evidence::{insert_chunk, insert_manifest};
use super::sqlite_provcache::{insert_members, json_text, recent_revocations};

/// Inserts chunks (already checked against the manifest); returns how many were new.
async fn insert_chunks(
    conn: &mut SqliteConnection,
    manifest: &Manifest,
    chunks: &[(u64, Vec<u8>)],
) -> Result<u64, AdapterError> {
    let mut inserted = 0;
    for (index, data) in chunks {
        // A chunk stored by an earlier, interrupted fetch is the same bytes (same hash).
        let hash = format_digest(&chunk_digest(data));
        inserted += u64::from(insert_chunk(&mut *conn, manifest, *index, &hash, data).await?);
    }
    Ok(inserted)
}

impl SqliteStore {
    /// Stores an imported entry, its manifest and the chunks the bundle carried in one
    /// transaction. A newer stored version of the entry is kept (newest `updated_at` wins).
    ///
    /// An entry that this node's ledger invalidated after it was written (its `created_at`,
    /// with the flusher's clock-skew margin) is refused with nothing stored. The check runs
    /// in the write transaction, so no invalidation can commit between it and the import.
    pub async fn import_bundle(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<Result<(), String>, AdapterError> {
        let mut tx = self.writer().begin().await.sq()?;
        let revocations = recent_revocations(&mut tx, entry.created_at).await?;
        let as_write = EntryWrite {
            write_id: Uuid::nil(),
            accepted_at: entry.created_at,
            entry: entry.clone(),
        };
        if invalidated_after_accept(&as_write, &revocations) {
            tx.rollback().await.sq()?;
            return Ok(Err(format!(
                "entry {} was invalidated on this node after it was written; not imported",
                entry.veri_key
            )));
        }
        sqlx::query(
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
             WHERE provcache_items.updated_at <= excluded.updated_at",
        )
        .bind(&entry.veri_key)
        .bind(json_text(&entry.verdict)?)
        .bind(&entry.verdict_hash)
        .bind(&entry.proof_root)
        .bind(entry.trust_score)
        .bind(&entry.policy_hash)
        .bind(&entry.signer_set_hash)
        .bind(&entry.feed_id)
        .bind(&entry.feed_epoch)
        .bind(to_micros(entry.created_at))
        // As PostgreSQL's `now()`: the import is this node's write of the entry.
        .bind(to_micros(Utc::now()))
        .bind(to_micros(entry.expires_at))
        .execute(&mut *tx)
        .await
        .sq()?;
        insert_members(&mut tx, &entry.signer_set_hash, &entry.signer_key_ids).await?;
        insert_manifest(&mut tx, manifest).await?;
        insert_chunks(&mut tx, manifest, chunks).await?;
        tx.commit().await.sq()?;
        Ok(Ok(()))
    }

    /// Stores fetched chunks of a root whose manifest is stored; returns how many were new.
    pub async fn store_fetched_chunks(
        &self,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<u64, AdapterError> {
        let mut tx = self.writer().begin().await.sq()?;
        let n = insert_chunks(&mut tx, manifest, chunks).await?;
        tx.commit().await.sq()?;
        Ok(n)
    }

    /// The indexes of the stored chunks of a root, ascending.
    pub async fn stored_chunk_indexes(&self, proof_root: &str) -> Result<Vec<u64>, AdapterError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT chunk_index FROM prov_evidence_chunks WHERE proof_root = ? \
             ORDER BY chunk_index",
        )
        .bind(proof_root)
        .fetch_all(self.reader())
        .await
        .sq()?;
        Ok(rows
            .into_iter()
            .filter_map(|i| u64::try_from(i).ok())
            .collect())
    }
}

impl SqliteStore {
    /// Links an entry to the Rekor receipt of its attestation (the newest link wins).
    pub async fn link_entry_receipt(
        &self,
        veri_key: &str,
        rekor_uuid: &str,
    ) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO prov_entry_receipts (veri_key, rekor_uuid, linked_at) VALUES (?, ?, ?) \
             ON CONFLICT (veri_key) DO UPDATE SET rekor_uuid = excluded.rekor_uuid, \
             linked_at = excluded.linked_at",
        )
        .bind(veri_key)
        .bind(rekor_uuid)
        .bind(to_micros(Utc::now()))
        .execute(self.writer())
        .await
        .sq()?;
        Ok(())
    }

    /// The Rekor receipt linked to an entry.
    pub async fn entry_receipt(&self, veri_key: &str) -> Result<Option<String>, AdapterError> {
        sqlx::query_scalar("SELECT rekor_uuid FROM prov_entry_receipts WHERE veri_key = ?")
            .bind(veri_key)
            .fetch_optional(self.reader())
            .await
            .sq()
    }
}

super::via_inherent::bundle_store!(SqliteStore);
