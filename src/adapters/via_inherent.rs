//! Port implementations that only call the store's inherent methods of the same job.
//!
//! PostgreSQL and SQLite stores give these ports the same inherent methods (each with its own
//! SQL), so the trait side is written once here and stated for each store.

/// `EvidenceStore` through `put_evidence`, `evidence_manifest`, `evidence_chunk_infos`,
/// `evidence_chunks`, `evidence_chunk` and `evidence_totals`.
macro_rules! evidence_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl actors::ports::EvidenceStore for $ty {
            async fn put_evidence(
                &self,
                manifest: &actors::domain::evidence::Manifest,
                chunks: &[actors::domain::evidence::Chunk],
            ) -> Result<bool, actors::ports::PortError> {
                Ok(<$ty>::put_evidence(self, manifest, chunks).await?)
            }

            async fn manifest(
                &self,
                proof_root: &str,
            ) -> Result<Option<actors::domain::evidence::Manifest>, actors::ports::PortError> {
                Ok(self.evidence_manifest(proof_root).await?)
            }

            async fn chunk_infos(
                &self,
                proof_root: &str,
                from: u64,
                limit: u64,
            ) -> Result<Vec<actors::domain::evidence::ChunkInfo>, actors::ports::PortError> {
                Ok(self.evidence_chunk_infos(proof_root, from, limit).await?)
            }

            async fn chunks(
                &self,
                proof_root: &str,
                from: u64,
                limit: u64,
            ) -> Result<Vec<actors::ports::StoredChunk>, actors::ports::PortError> {
                Ok(self.evidence_chunks(proof_root, from, limit).await?)
            }

            async fn chunk(
                &self,
                proof_root: &str,
                index: u64,
            ) -> Result<Option<actors::ports::StoredChunk>, actors::ports::PortError> {
                Ok(self.evidence_chunk(proof_root, index).await?)
            }

            async fn evidence_totals(
                &self,
            ) -> Result<actors::ports::EvidenceTotals, actors::ports::PortError> {
                Ok(<$ty>::evidence_totals(self).await?)
            }
        }
    };
}
pub(crate) use evidence_store;

/// `LedgerOutboxStore` and `ReplayStore` through `outbox_position`, `set_outbox_position`,
/// `revocations`, `ledger_head`, `replay_checkpoint`, `save_replay_checkpoint` and
/// `reapply_rows`.
macro_rules! ledger_stores {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl actors::ports::LedgerOutboxStore for $ty {
            async fn published_seq_no(&self) -> Result<i64, actors::ports::PortError> {
                Ok(self.outbox_position().await?)
            }
            async fn set_published_seq_no(
                &self,
                seq_no: i64,
            ) -> Result<(), actors::ports::PortError> {
                Ok(self.set_outbox_position(seq_no).await?)
            }
            async fn ledger_rows(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<actors::domain::invalidation::LedgerRow>, actors::ports::PortError>
            {
                Ok(<$ty>::revocations(self, after, limit).await?)
            }
        }

        #[async_trait::async_trait]
        impl actors::ports::ReplayStore for $ty {
            async fn ledger_rows(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<actors::domain::invalidation::LedgerRow>, actors::ports::PortError>
            {
                Ok(<$ty>::revocations(self, after, limit).await?)
            }
            async fn ledger_head(&self) -> Result<i64, actors::ports::PortError> {
                Ok(<$ty>::ledger_head(self).await?)
            }
            async fn checkpoint(&self, node_id: &str) -> Result<i64, actors::ports::PortError> {
                Ok(self.replay_checkpoint(node_id).await?)
            }
            async fn save_checkpoint(
                &self,
                node_id: &str,
                seq_no: i64,
            ) -> Result<i64, actors::ports::PortError> {
                Ok(self.save_replay_checkpoint(node_id, seq_no).await?)
            }
            async fn reapply(
                &self,
                rows: &[actors::domain::invalidation::LedgerRow],
            ) -> Result<Vec<String>, actors::ports::PortError> {
                Ok(self.reapply_rows(rows).await?)
            }
        }
    };
}
pub(crate) use ledger_stores;

/// `BundleStore` through `import_bundle`, `store_fetched_chunks`, `stored_chunk_indexes`,
/// `evidence_manifest`, `link_entry_receipt` and `entry_receipt`.
macro_rules! bundle_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl crate::airgap::BundleStore for $ty {
            async fn import(
                &self,
                entry: &actors::domain::entry::Entry,
                manifest: &actors::domain::evidence::Manifest,
                chunks: &[(u64, Vec<u8>)],
            ) -> Result<(), actors::ports::PortError> {
                self.import_bundle(entry, manifest, chunks)
                    .await?
                    .map_err(actors::ports::PortError::Rejected)
            }

            async fn store_chunks(
                &self,
                manifest: &actors::domain::evidence::Manifest,
                chunks: &[(u64, Vec<u8>)],
            ) -> Result<u64, actors::ports::PortError> {
                Ok(self.store_fetched_chunks(manifest, chunks).await?)
            }

            async fn stored_indexes(
                &self,
                proof_root: &str,
            ) -> Result<Vec<u64>, actors::ports::PortError> {
                Ok(self.stored_chunk_indexes(proof_root).await?)
            }

            async fn manifest(
                &self,
                proof_root: &str,
            ) -> Result<Option<actors::domain::evidence::Manifest>, actors::ports::PortError> {
                Ok(self.evidence_manifest(proof_root).await?)
            }

            async fn link_receipt(
                &self,
                veri_key: &str,
                rekor_uuid: &str,
            ) -> Result<(), actors::ports::PortError> {
                Ok(self.link_entry_receipt(veri_key, rekor_uuid).await?)
            }

            async fn linked_receipt(
                &self,
                veri_key: &str,
            ) -> Result<Option<String>, actors::ports::PortError> {
                Ok(self.entry_receipt(veri_key).await?)
            }
        }
    };
}
pub(crate) use bundle_store;
