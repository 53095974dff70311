//! What air-gap bundles need from the store: importing an entry with its manifest and the
//! chunks it carries in one transaction, storing lazily fetched chunks, listing which chunks
//! of a root are stored, and the entry → Rekor receipt link (`prov_entry_receipts`).
//!
//! An import checks the ledger and writes in one transaction, so no invalidation commits
//! between the check and the import: PostgreSQL holds the flush lock shared, as a flush does
//! (an invalidation takes it exclusively); SQLite's one writer connection already runs the
//! check and the writes alone. The ledger check and the signer-set members are the flusher's
//! ([`super::entries`]); chunks and manifests go through the evidence module's inserts
//! ([`super::evidence`]), so a root stored twice keeps its first copy.

use actors::domain::entry::{Entry, EntryWrite, invalidated_after_accept};
use actors::domain::evidence::{Manifest, chunk_digest, format_digest};
use actors::ports::PortError;
use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::codec::Time;
use super::entries::{recent_revocations, upsert_item};
use super::evidence::{ChunkRow, insert_chunks, insert_manifest};
use super::{Sql, Store, run};
use crate::adapters::AdapterError;
use crate::airgap::{BundleStore, ChunkBatches};

/// Chunks (already checked against the manifest) as inserted, each with the hash of its
/// bytes.
fn chunk_rows(chunks: &[(u64, Vec<u8>)]) -> Result<Vec<ChunkRow<'_>>, AdapterError> {
    chunks
        .iter()
        .map(|(index, data)| ChunkRow::new(*index, format_digest(&chunk_digest(data)), data))
        .collect()
}

impl Store {
    /// Stores an imported entry, its manifest and the chunks the bundle carried in one
    /// transaction, the chunks a batch at a time as `chunks` yields them. A newer stored
    /// version of the entry is kept (newest `updated_at` wins). A failing `chunks` rolls
    /// everything back.
    ///
    /// An entry that this node's ledger invalidated after it was written (its `created_at`,
    /// with the flusher's clock-skew margin) is refused (`PortError::Conflict`) with nothing
    /// stored: an invalidated entry never comes back, not through an import either. On
    /// PostgreSQL the flush lock is held shared, as a flush does; on SQLite the check runs in
    /// the write transaction. So an invalidation cannot slip in between the check and the
    /// commit.
    pub async fn import_bundle(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &mut dyn ChunkBatches,
    ) -> Result<(), PortError> {
        let mut tx = self.begin_flush().await?;
        let revocations = recent_revocations(tx.exec(), entry.created_at).await?;
        let as_write = EntryWrite {
            write_id: Uuid::nil(),
            accepted_at: entry.created_at,
            entry: entry.clone(),
        };
        if invalidated_after_accept(&as_write, &revocations) {
            tx.rollback().await?;
            return Err(PortError::Conflict(format!(
                "entry {} was invalidated on this node after it was written; not imported",
                entry.veri_key
            )));
        }
        // The import is this node's write of the entry, stamped now.
        upsert_item(&mut tx, entry, Utc::now()).await?;
        insert_manifest(&mut tx, manifest).await?;
        loop {
            let batch = match chunks.next_batch().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    tx.rollback().await?;
                    return Err(e);
                }
            };
            // A chunk stored by an earlier, interrupted fetch is the same bytes (same hash).
            insert_chunks(&mut tx, manifest, &chunk_rows(&batch)?).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores fetched chunks of a root whose manifest is stored; returns how many were new.
    pub async fn store_fetched_chunks(
        &self,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<u64, AdapterError> {
        let rows = chunk_rows(chunks)?;
        let mut tx = self.begin().await?;
        let n = insert_chunks(&mut tx, manifest, &rows).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The indexes of the stored chunks of a root, ascending.
    pub async fn stored_chunk_indexes(&self, proof_root: &str) -> Result<Vec<u64>, AdapterError> {
        let rows: Vec<i32> = run!(
            scalar fetch_all,
            self.read(),
            Sql::new(
                "SELECT chunk_index FROM provcache.prov_evidence_chunks WHERE proof_root = $1 \
                 ORDER BY chunk_index",
                "SELECT chunk_index FROM prov_evidence_chunks WHERE proof_root = ?1 \
                 ORDER BY chunk_index",
            ),
            proof_root
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|i| u64::try_from(i).ok())
            .collect())
    }

    /// Links an entry to the Rekor receipt of its attestation (the newest link wins).
    pub async fn link_entry_receipt(
        &self,
        veri_key: &str,
        rekor_uuid: &str,
    ) -> Result<(), AdapterError> {
        run!(
            exec,
            self.write(),
            Sql::new(
                "INSERT INTO provcache.prov_entry_receipts (veri_key, rekor_uuid, linked_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (veri_key) DO UPDATE SET \
                 rekor_uuid = EXCLUDED.rekor_uuid, linked_at = EXCLUDED.linked_at",
                "INSERT INTO prov_entry_receipts (veri_key, rekor_uuid, linked_at) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (veri_key) DO UPDATE SET \
                 rekor_uuid = excluded.rekor_uuid, linked_at = excluded.linked_at",
            ),
            veri_key,
            rekor_uuid,
            Time(Utc::now())
        )?;
        Ok(())
    }

    /// The Rekor receipt linked to an entry.
    pub async fn entry_receipt(&self, veri_key: &str) -> Result<Option<String>, AdapterError> {
        run!(
            scalar fetch_optional,
            self.read(),
            Sql::new(
                "SELECT rekor_uuid FROM provcache.prov_entry_receipts WHERE veri_key = $1",
                "SELECT rekor_uuid FROM prov_entry_receipts WHERE veri_key = ?1",
            ),
            veri_key
        )
    }
}

#[async_trait]
impl BundleStore for Store {
    async fn import_batches(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &mut dyn ChunkBatches,
    ) -> Result<(), PortError> {
        self.import_bundle(entry, manifest, chunks).await
    }

    async fn store_chunks(
        &self,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<u64, PortError> {
        Ok(self.store_fetched_chunks(manifest, chunks).await?)
    }

    async fn stored_indexes(&self, proof_root: &str) -> Result<Vec<u64>, PortError> {
        Ok(self.stored_chunk_indexes(proof_root).await?)
    }

    async fn manifest(&self, proof_root: &str) -> Result<Option<Manifest>, PortError> {
        Ok(self.evidence_manifest(proof_root).await?)
    }

    async fn link_receipt(&self, veri_key: &str, rekor_uuid: &str) -> Result<(), PortError> {
        Ok(self.link_entry_receipt(veri_key, rekor_uuid).await?)
    }

    async fn linked_receipt(&self, veri_key: &str) -> Result<Option<String>, PortError> {
        Ok(self.entry_receipt(veri_key).await?)
    }
}
