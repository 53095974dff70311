//! What air-gap bundles need from PostgreSQL: importing an entry with its manifest and the
//! chunks it carries in one transaction, storing lazily fetched chunks, listing which
//! chunks of a root are stored, and the entry → Rekor receipt link
//! (`provcache.prov_entry_receipts`).

use actors::domain::entry::{Entry, EntryWrite, invalidated_after_accept};
use actors::domain::evidence::{Manifest, chunk_digest, format_digest};
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::AdapterError;
use super::postgres::{FLUSH_LOCK, PgStore, recent_revocations};

/// Chunks per INSERT: 7 parameters each, far below PostgreSQL's 65 535.
const CHUNKS_PER_INSERT: usize = 64;

fn to_i32(v: u64, what: &str) -> Result<i32, AdapterError> {
    i32::try_from(v).map_err(|_| AdapterError::Corrupt(format!("{what} {v} does not fit")))
}

async fn insert_manifest(
    tx: &mut Transaction<'_, Postgres>,
    manifest: &Manifest,
) -> Result<(), AdapterError> {
    let chunk_hashes =
        serde_json::to_value(&manifest.chunks).map_err(|e| AdapterError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO provcache.prov_evidence_manifests \
         (proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (proof_root) DO NOTHING",
    )
    .bind(&manifest.proof_root)
    .bind(to_i32(manifest.total_chunks, "total_chunks")?)
    .bind(i64::try_from(manifest.total_size).unwrap_or(i64::MAX))
    .bind(to_i32(manifest.chunk_size, "chunk_size")?)
    .bind(&manifest.content_type)
    .bind(chunk_hashes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts chunks (already checked against the manifest); returns how many were new.
async fn insert_chunks(
    tx: &mut Transaction<'_, Postgres>,
    manifest: &Manifest,
    chunks: &[(u64, Vec<u8>)],
) -> Result<u64, AdapterError> {
    let mut inserted = 0;
    for batch in chunks.chunks(CHUNKS_PER_INSERT) {
        let mut rows = Vec::with_capacity(batch.len());
        for (index, data) in batch {
            rows.push((
                to_i32(*index, "chunk index")?,
                to_i32(data.len() as u64, "chunk size")?,
                format_digest(&chunk_digest(data)),
                data,
            ));
        }
        let mut q = QueryBuilder::new(
            "INSERT INTO provcache.prov_evidence_chunks \
             (chunk_id, proof_root, chunk_index, chunk_hash, blob, blob_size, content_type) ",
        );
        q.push_values(rows, |mut b, (index, size, hash, data)| {
            b.push_bind(Uuid::now_v7())
                .push_bind(&manifest.proof_root)
                .push_bind(index)
                .push_bind(hash)
                .push_bind(data.as_slice())
                .push_bind(size)
                .push_bind(&manifest.content_type);
        });
        // A chunk stored by an earlier, interrupted fetch is the same bytes (same hash).
        q.push(" ON CONFLICT (proof_root, chunk_index) DO NOTHING");
        inserted += q.build().execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

impl PgStore {
    /// Stores an imported entry, its manifest and the chunks the bundle carried in one
    /// transaction. A newer stored version of the entry is kept (newest `updated_at` wins).
    ///
    /// An entry that this node's ledger invalidated after it was written (its `created_at`,
    /// with the flusher's clock-skew margin) is refused with nothing stored: an invalidated
    /// entry never comes back, not through an import either. The flush lock is held shared,
    /// as a flush does, so an invalidation cannot slip in between the check and the commit.
    pub async fn import_bundle(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<Result<(), String>, AdapterError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(FLUSH_LOCK)
            .execute(&mut *tx)
            .await?;
        let revocations = recent_revocations(&mut tx, entry.created_at).await?;
        let as_write = EntryWrite {
            write_id: Uuid::nil(),
            accepted_at: entry.created_at,
            entry: entry.clone(),
        };
        if invalidated_after_accept(&as_write, &revocations) {
            tx.rollback().await?;
            return Ok(Err(format!(
                "entry {} was invalidated on this node after it was written; not imported",
                entry.veri_key
            )));
        }
        sqlx::query(
            "INSERT INTO provcache.provcache_items \
             (veri_key, verdict, verdict_hash, proof_root, trust_score, policy_hash, \
              signer_set_hash, feed_id, feed_epoch, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11) \
             ON CONFLICT (veri_key) DO UPDATE SET verdict = EXCLUDED.verdict, \
              verdict_hash = EXCLUDED.verdict_hash, proof_root = EXCLUDED.proof_root, \
              trust_score = EXCLUDED.trust_score, policy_hash = EXCLUDED.policy_hash, \
              signer_set_hash = EXCLUDED.signer_set_hash, feed_id = EXCLUDED.feed_id, \
              feed_epoch = EXCLUDED.feed_epoch, created_at = EXCLUDED.created_at, \
              updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at \
             WHERE provcache.provcache_items.updated_at <= EXCLUDED.updated_at",
        )
        .bind(&entry.veri_key)
        .bind(&entry.verdict)
        .bind(&entry.verdict_hash)
        .bind(&entry.proof_root)
        .bind(entry.trust_score)
        .bind(&entry.policy_hash)
        .bind(&entry.signer_set_hash)
        .bind(&entry.feed_id)
        .bind(&entry.feed_epoch)
        .bind(entry.created_at)
        .bind(entry.expires_at)
        .execute(&mut *tx)
        .await?;
        for key in &entry.signer_key_ids {
            sqlx::query(
                "INSERT INTO provcache.prov_signer_set_members (signer_set_hash, key_id) \
                 VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&entry.signer_set_hash)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        insert_manifest(&mut tx, manifest).await?;
        insert_chunks(&mut tx, manifest, chunks).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Stores fetched chunks of a root whose manifest is stored; returns how many were new.
    pub async fn store_fetched_chunks(
        &self,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<u64, AdapterError> {
        let mut tx = self.pool().begin().await?;
        let n = insert_chunks(&mut tx, manifest, chunks).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The indexes of the stored chunks of a root, ascending.
    pub async fn stored_chunk_indexes(&self, proof_root: &str) -> Result<Vec<u64>, AdapterError> {
        let rows: Vec<i32> = sqlx::query_scalar(
            "SELECT chunk_index FROM provcache.prov_evidence_chunks WHERE proof_root = $1 \
             ORDER BY chunk_index",
        )
        .bind(proof_root)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|i| u64::try_from(i).ok())
            .collect())
    }
}

impl PgStore {
    /// Links an entry to the Rekor receipt of its attestation (the newest link wins).
    pub async fn link_entry_receipt(
        &self,
        veri_key: &str,
        rekor_uuid: &str,
    ) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO provcache.prov_entry_receipts (veri_key, rekor_uuid) VALUES ($1, $2) \
             ON CONFLICT (veri_key) DO UPDATE SET rekor_uuid = EXCLUDED.rekor_uuid, \
             linked_at = now()",
        )
        .bind(veri_key)
        .bind(rekor_uuid)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The Rekor receipt linked to an entry.
    pub async fn entry_receipt(&self, veri_key: &str) -> Result<Option<String>, AdapterError> {
        Ok(sqlx::query_scalar(
            "SELECT rekor_uuid FROM provcache.prov_entry_receipts WHERE veri_key = $1",
        )
        .bind(veri_key)
        .fetch_optional(self.pool())
        .await?)
    }
}

super::via_inherent::bundle_store!(PgStore);
