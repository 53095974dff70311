//! Air gap: importing verified proof bundles, and fetching the evidence chunks a lite or
//! standard bundle left out (lazily, from another provd over HTTP or from a chunks
//! directory carried across the gap).
//!
//! The bundle format and every offline check are in the domain
//! (`actors::domain::bundle`); this module adds the storage ([`BundleStore`], implemented on
//! PostgreSQL in `adapters/postgres_bundles.rs`) and the I/O. The HTTP API
//! (`http/bundles.rs`) and the CLI (`cli/bundle.rs`) share it.

pub mod fetch;

use std::path::Path;

use actors::domain::bundle::{
    BundleError, BundleLimits, SignatureStatus, VerifiedBundle, read_chunks, verify_bundle_from,
};
use actors::domain::entry::Entry;
use actors::domain::evidence::Manifest;
use actors::domain::keys::PublicKey;
use actors::ports::PortError;
use async_trait::async_trait;
use serde::Serialize;

/// Why an import or a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum AirgapError {
    /// The bundle failed a check; nothing was stored.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The store failed; nothing of this step was stored.
    #[error("store: {0}")]
    Store(#[from] PortError),
    /// No manifest is stored for the root, so there is nothing to fetch chunks for.
    #[error("no evidence manifest stored for {0}; import its bundle first")]
    NoManifest(String),
    /// This node refuses the (valid) bundle: its entry was invalidated here after it was
    /// written. Nothing was stored.
    #[error("import refused: {0}")]
    Refused(String),
    /// A chunk source cannot be used at all (the directory is missing, the URL is bad).
    #[error("chunk source: {0}")]
    Source(String),
}

/// Chunks as `(index, bytes)`, in index order.
pub type ChunkBatch = Vec<(u64, Vec<u8>)>;

/// The chunks an import stores, a batch at a time, each already checked against the
/// manifest, in index order.
#[async_trait]
pub trait ChunkBatches: Send {
    /// The next batch, or `None` after the last. An error ends the import with nothing
    /// stored.
    async fn next_batch(&mut self) -> Result<Option<ChunkBatch>, PortError>;
}

/// Chunks already in memory, as one batch.
struct InMemory(Option<ChunkBatch>);

#[async_trait]
impl ChunkBatches for InMemory {
    async fn next_batch(&mut self) -> Result<Option<ChunkBatch>, PortError> {
        Ok(self.0.take())
    }
}

/// The storage an import and a lazy fetch need.
#[async_trait]
pub trait BundleStore: Send + Sync + 'static {
    /// Stores the entry, its manifest and the chunks `chunks` yields in one transaction,
    /// taking one batch at a time; `PortError::Conflict` (nothing stored) when this node
    /// invalidated the entry after it was written, and nothing stored when `chunks` fails.
    async fn import_batches(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &mut dyn ChunkBatches,
    ) -> Result<(), PortError>;
    /// [`BundleStore::import_batches`] for chunks already in memory (copied once).
    async fn import(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<(), PortError> {
        self.import_batches(entry, manifest, &mut InMemory(Some(chunks.to_vec())))
            .await
    }
    /// Stores chunks (checked against the stored manifest); returns how many were new.
    async fn store_chunks(
        &self,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<u64, PortError>;
    /// Indexes of the stored chunks of a root, ascending.
    async fn stored_indexes(&self, proof_root: &str) -> Result<Vec<u64>, PortError>;
    /// The stored manifest of a root.
    async fn manifest(&self, proof_root: &str) -> Result<Option<Manifest>, PortError>;
    /// Records that the entry's attestation is the stored Rekor receipt `rekor_uuid`.
    async fn link_receipt(&self, veri_key: &str, rekor_uuid: &str) -> Result<(), PortError>;
    /// The Rekor receipt linked to the entry, if any.
    async fn linked_receipt(&self, veri_key: &str) -> Result<Option<String>, PortError>;
}

/// Registers the air-gap metrics' help texts.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "provd_bundle_exports_total",
        "Bundles exported over HTTP, by density."
    );
    metrics::describe_counter!(
        "provd_bundle_imports_total",
        "Bundle imports by outcome: imported, invalidated, busy (turned away at the concurrency limit), or the name of the failing check."
    );
    metrics::describe_counter!(
        "provd_bundle_chunks_fetched_total",
        "Lazily fetched evidence chunks by outcome (stored, refused)."
    );
    // The series whose labels are known at start, at zero.
    for density in ["lite", "standard", "strict"] {
        metrics::counter!("provd_bundle_exports_total", "density" => density).increment(0);
    }
    for outcome in ["imported", "invalidated", "busy"] {
        metrics::counter!("provd_bundle_imports_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["stored", "refused"] {
        metrics::counter!("provd_bundle_chunks_fetched_total", "outcome" => outcome).increment(0);
    }
}

/// What an import stored.
#[derive(Debug, Clone, Serialize)]
pub struct ImportOutcome {
    /// The VeriKey.
    pub veri_key: String,
    /// The proof root.
    pub proof_root: String,
    /// The bundle's density.
    pub density: String,
    /// Chunks the manifest lists.
    pub total_chunks: u64,
    /// Chunks stored for the root now (from this bundle or before).
    pub stored_chunks: u64,
    /// Chunks still missing, ascending.
    pub missing_chunks: Vec<u64>,
    /// Whether every chunk is stored.
    pub complete: bool,
    /// The signature's status.
    pub signature: SignatureStatus,
    /// Whether a Rekor receipt was verified.
    pub rekor_receipt: bool,
}

/// Decoded chunk bytes handed from the reading thread to the store per batch (a chunk larger
/// than this goes alone): what an import holds besides the manifest.
const IMPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The chunks of a verified bundle as read again from its file, batch by batch, on a
/// blocking thread. Ends with an error (so the store rolls back) if the reader failed or
/// stopped before every chunk the bundle carries arrived.
struct SpooledChunks {
    rx: tokio::sync::mpsc::Receiver<Result<ChunkBatch, BundleError>>,
    expected: u64,
    received: u64,
    failure: Option<BundleError>,
}

#[async_trait]
impl ChunkBatches for SpooledChunks {
    async fn next_batch(&mut self) -> Result<Option<ChunkBatch>, PortError> {
        let failed = |me: &mut Self, e: BundleError| {
            let message = e.to_string();
            me.failure = Some(e);
            Err(PortError::Rejected(message))
        };
        match self.rx.recv().await {
            Some(Ok(batch)) => {
                self.received += batch.len() as u64;
                Ok(Some(batch))
            }
            Some(Err(e)) => failed(self, e),
            None if self.received != self.expected => {
                let e = BundleError::Read(format!(
                    "the bundle's chunks ended after {} of {}",
                    self.received, self.expected
                ));
                failed(self, e)
            }
            None => Ok(None),
        }
    }
}

/// A blocking task's panic, as a read failure (nothing is stored).
fn stopped(e: tokio::task::JoinError) -> AirgapError {
    AirgapError::Bundle(BundleError::Read(format!("the import stopped: {e}")))
}

/// Verifies the bundle in the file at `path` (every offline check; the signature with one of
/// `trusted` when any is given) and only then stores its entry, manifest and chunks in one
/// transaction. The file is streamed twice or three times (verification, once more for an
/// Ed25519 signature, then the chunks for the store), so memory holds a batch of chunks and
/// the manifest, never the bundle; it must not change meanwhile (a change is refused).
///
/// `permit` (the HTTP import's place under `bundles.max_concurrent_imports`) is held until
/// the reading threads are done, even when the caller is dropped (a client that went away),
/// so abandoned imports cannot pile up past the limit.
pub async fn import_bundle(
    store: &dyn BundleStore,
    path: &Path,
    limits: &BundleLimits,
    trusted: &[PublicKey],
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(VerifiedBundle, ImportOutcome), AirgapError> {
    let permit = std::sync::Arc::new(permit);
    let (file, lim, keys, held) = (path.to_owned(), *limits, trusted.to_vec(), permit.clone());
    let verified = tokio::task::spawn_blocking(move || {
        let _held = held;
        verify_bundle_from(|| std::fs::File::open(&file), &lim, &keys)
    })
    .await
    .map_err(stopped)?;
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            metrics::counter!("provd_bundle_imports_total", "outcome" => e.check()).increment(1);
            return Err(e.into());
        }
    };
    let bundle = &verified.bundle;
    let manifest = bundle.manifest.to_manifest();

    // The chunks, read again on a blocking thread and handed over a batch at a time.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (file, lim, checked, held) = (path.to_owned(), *limits, manifest.clone(), permit);
    let reader = tokio::task::spawn_blocking(move || {
        let _held = held;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let read = std::fs::File::open(&file)
            .map_err(|e| BundleError::Read(e.to_string()))
            .and_then(|f| {
                read_chunks(f, &lim, &checked, |index, data| {
                    bytes += data.len();
                    batch.push((index, data));
                    if bytes >= IMPORT_BATCH_BYTES {
                        bytes = 0;
                        tx.blocking_send(Ok(std::mem::take(&mut batch)))
                            .map_err(|_| BundleError::Read("the import stopped".into()))?;
                    }
                    Ok(())
                })
            });
        // The store ends the transaction on an error or when every chunk has arrived.
        let _ = match read {
            Ok(()) if batch.is_empty() => Ok(()),
            Ok(()) => tx.blocking_send(Ok(batch)),
            Err(e) => tx.blocking_send(Err(e)),
        };
    });
    let mut chunks = SpooledChunks {
        rx,
        expected: verified.included_chunks,
        received: 0,
        failure: None,
    };
    let stored = store
        .import_batches(&bundle.to_entry(), &manifest, &mut chunks)
        .await;
    drop(chunks.rx);
    reader.await.map_err(stopped)?;
    if let Some(e) = chunks.failure {
        metrics::counter!("provd_bundle_imports_total", "outcome" => e.check()).increment(1);
        return Err(e.into());
    }
    stored.map_err(|e| match e {
        // Data the store refuses stays a store failure; only the ledger's veto is a
        // refusal of the bundle.
        PortError::Conflict(m) => {
            metrics::counter!("provd_bundle_imports_total", "outcome" => "invalidated")
                .increment(1);
            AirgapError::Refused(m)
        }
        e => AirgapError::Store(e),
    })?;
    metrics::counter!("provd_bundle_imports_total", "outcome" => "imported").increment(1);
    let outcome = status(store, &manifest).await?;
    let outcome = ImportOutcome {
        veri_key: verified.veri_key.clone(),
        density: verified.density.as_str().to_owned(),
        signature: verified.signature.clone(),
        rekor_receipt: verified.rekor_receipt,
        ..outcome
    };
    Ok((verified, outcome))
}

/// Which chunks of a stored manifest are stored and which are missing.
pub async fn status(
    store: &dyn BundleStore,
    manifest: &Manifest,
) -> Result<ImportOutcome, AirgapError> {
    let stored = store.stored_indexes(&manifest.proof_root).await?;
    let missing = missing_of(manifest.total_chunks, &stored);
    Ok(ImportOutcome {
        veri_key: String::new(),
        proof_root: manifest.proof_root.clone(),
        density: String::new(),
        total_chunks: manifest.total_chunks,
        stored_chunks: manifest.total_chunks - missing.len() as u64,
        complete: missing.is_empty(),
        missing_chunks: missing,
        signature: SignatureStatus::Unsigned,
        rekor_receipt: false,
    })
}

/// The indexes in `0..total` that `stored` (ascending) lacks.
pub fn missing_of(total: u64, stored: &[u64]) -> Vec<u64> {
    let mut it = stored.iter().peekable();
    let mut missing = Vec::new();
    for i in 0..total {
        while it.peek().is_some_and(|&&s| s < i) {
            it.next();
        }
        if it.peek() == Some(&&i) {
            it.next();
        } else {
            missing.push(i);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_chunks_are_the_gaps() {
        assert_eq!(missing_of(5, &[0, 2, 4]), [1, 3]);
        assert_eq!(missing_of(3, &[]), [0, 1, 2]);
        assert!(missing_of(2, &[0, 1]).is_empty());
    }
}
