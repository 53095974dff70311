//! Air gap: importing verified proof bundles, and fetching the evidence chunks a lite or
//! standard bundle left out (lazily, from another provd over HTTP or from a chunks
//! directory carried across the gap).
//!
//! The bundle format and every offline check are in the domain
//! (`actors::domain::bundle`); this module adds the storage ([`BundleStore`], implemented on
//! PostgreSQL in `adapters/postgres_bundles.rs`) and the I/O. The HTTP API
//! (`http/bundles.rs`) and the CLI (`cli/bundle.rs`) share it.

pub mod fetch;

use actors::domain::bundle::{
    BundleError, BundleLimits, SignatureStatus, VerifiedBundle, verify_bundle,
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

/// The storage an import and a lazy fetch need.
#[async_trait]
pub trait BundleStore: Send + Sync + 'static {
    /// Stores the entry, its manifest and the given chunks in one transaction;
    /// `PortError::Conflict` (nothing stored) when this node invalidated the entry after it
    /// was written.
    async fn import(
        &self,
        entry: &Entry,
        manifest: &Manifest,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<(), PortError>;
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
        "Bundle imports by outcome: imported, or the name of the failing check."
    );
    metrics::describe_counter!(
        "provd_bundle_chunks_fetched_total",
        "Lazily fetched evidence chunks by outcome (stored, refused)."
    );
    // The series whose labels are known at start, at zero.
    for density in ["lite", "standard", "strict"] {
        metrics::counter!("provd_bundle_exports_total", "density" => density).increment(0);
    }
    for outcome in ["imported", "invalidated"] {
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

/// Picks the key to check the signature with: the trusted key whose ID the bundle names,
/// else the first one (which then fails, naming both keys). No trusted keys: not checked.
pub fn pick_key<'k>(bytes: &[u8], trusted: &'k [PublicKey]) -> Option<&'k PublicKey> {
    #[derive(serde::Deserialize)]
    struct Sig {
        #[serde(rename = "keyId")]
        key_id: String,
    }
    #[derive(serde::Deserialize)]
    struct Peek {
        signature: Option<Sig>,
    }
    let named = serde_json::from_slice::<Peek>(bytes)
        .ok()
        .and_then(|p| p.signature)
        .map(|s| s.key_id);
    named
        .and_then(|id| {
            trusted
                .iter()
                .find(|k| actors::domain::bundle::key_id(k) == id)
        })
        .or(trusted.first())
}

/// Verifies a bundle (every offline check; the signature with one of `trusted` when any is
/// given) and only then stores its entry, manifest and chunks in one transaction.
pub async fn import_bundle(
    store: &dyn BundleStore,
    bytes: &[u8],
    limits: &BundleLimits,
    trusted: &[PublicKey],
) -> Result<(VerifiedBundle, ImportOutcome), AirgapError> {
    let verified = match verify_bundle(bytes, limits, pick_key(bytes, trusted)) {
        Ok(v) => v,
        Err(e) => {
            metrics::counter!("provd_bundle_imports_total", "outcome" => e.check()).increment(1);
            return Err(e.into());
        }
    };
    let bundle = &verified.bundle;
    let manifest = bundle.manifest.to_manifest();
    let mut chunks = Vec::with_capacity(bundle.chunks.len());
    for c in &bundle.chunks {
        chunks.push((c.index, actors::domain::bundle::Bundle::chunk_bytes(c)?));
    }
    store
        .import(&bundle.to_entry(), &manifest, &chunks)
        .await
        .map_err(|e| match e {
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
