//! Lazy fetching of missing evidence chunks, and the chunks directory (sneakernet) layout.
//!
//! [`lazy_fetch`] reads which chunks of a root are missing from the store (so a run after
//! an interruption resumes where the last one stopped), fetches them in batches from a
//! [`ChunkSource`], checks every chunk against the stored manifest before storing it (always;
//! there is no switch), stores each batch's good chunks in one transaction, and reports a
//! bad or unreadable chunk without stopping the others.
//!
//! Sources: [`HttpSource`] (another provd's `GET /api/v1/proofs/{root}/chunks/{i}`) and
//! [`DirSource`], which reads the layout [`ChunksDirWriter`] writes (`provd export
//! --chunks-dir`), documented in `docs/bundle-format.md`:
//!
//! ```text
//! <dir>/<64 hex digits of the proof root>/index.json
//! <dir>/<64 hex digits of the proof root>/chunks/<index>
//! ```
//!
//! `index.json` is `{"proofRoot": "sha256:…", "chunks": [{"index": 0, "hash": "sha256:…",
//! "path": "chunks/0"}, …]}`. A `path` must be relative and stay inside the root's directory
//! (no `..`, no absolute path, no symbolic link leading out); anything else is refused.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use actors::domain::bundle::check_chunk_against_manifest;
use actors::domain::evidence::{Manifest, chunk_digest, format_digest, parse_digest};
use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{AirgapError, BundleStore, missing_of};

/// Where missing chunks come from.
#[async_trait]
pub trait ChunkSource: Send + Sync {
    /// A short description for messages (`http://host:port`, `dir /mnt/usb`).
    fn describe(&self) -> String;
    /// The bytes of chunk `index` of `proof_root`, at most `max_bytes` of them.
    async fn fetch(&self, proof_root: &str, index: u64, max_bytes: u64) -> Result<Vec<u8>, String>;
}

/// Another provd, over HTTP.
pub struct HttpSource {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl HttpSource {
    /// A source at `base` (e.g. `http://10.0.0.5:8080`), with an optional bearer token
    /// (scope `read`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, AirgapError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(AirgapError::Source(format!(
                "backend {base:?} must be an http:// or https:// URL"
            )));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| AirgapError::Source(e.to_string()))?;
        Ok(HttpSource {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }
}

#[async_trait]
impl ChunkSource for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    async fn fetch(&self, proof_root: &str, index: u64, max_bytes: u64) -> Result<Vec<u8>, String> {
        let url = format!("{}/api/v1/proofs/{proof_root}/chunks/{index}", self.base);
        let mut req = self.client.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(format!("GET {url}: more than {max_bytes} bytes"));
        }
        // Read at most one byte past the limit, whatever the server claims.
        let mut out = Vec::new();
        let mut resp = resp;
        while let Some(part) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            out.extend_from_slice(&part);
            if out.len() as u64 > max_bytes {
                return Err(format!("GET {url}: more than {max_bytes} bytes"));
            }
        }
        Ok(out)
    }
}

/// `index.json` of a chunks directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirIndex {
    /// The proof root.
    pub proof_root: String,
    /// Where each chunk is.
    pub chunks: Vec<DirChunk>,
}

/// One chunk's line in `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirChunk {
    /// The chunk index.
    pub index: u64,
    /// `sha256:<hex>` of its bytes.
    pub hash: String,
    /// Its file, relative to the root's directory.
    pub path: String,
}

/// The directory of one root inside a chunks directory: the root's 64 hex digits.
fn root_dir_name(proof_root: &str) -> Result<String, String> {
    parse_digest(proof_root)
        .map(hex::encode)
        .map_err(|e| e.to_string())
}

/// A chunks directory (sneakernet).
pub struct DirSource {
    dir: PathBuf,
    indexes: Mutex<HashMap<String, DirIndex>>,
}

impl DirSource {
    /// A source reading `dir`, which must exist.
    pub fn new(dir: &Path) -> Result<Self, AirgapError> {
        let dir = dir
            .canonicalize()
            .map_err(|e| AirgapError::Source(format!("chunks directory {}: {e}", dir.display())))?;
        Ok(DirSource {
            dir,
            indexes: Mutex::new(HashMap::new()),
        })
    }

    fn index(&self, proof_root: &str) -> Result<DirIndex, String> {
        if let Some(i) = self
            .indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(proof_root)
        {
            return Ok(i.clone());
        }
        let path = self.dir.join(root_dir_name(proof_root)?).join("index.json");
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let index: DirIndex = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a chunks index: {e}", path.display()))?;
        if index.proof_root != proof_root {
            return Err(format!(
                "{} is the index of {}, not {proof_root}",
                path.display(),
                index.proof_root
            ));
        }
        self.indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(proof_root.to_owned(), index.clone());
        Ok(index)
    }

    /// The file of a chunk, refused when its path leaves the root's directory.
    fn chunk_path(&self, proof_root: &str, rel: &str) -> Result<PathBuf, String> {
        let leaves = || format!("path {rel:?} leaves the chunks directory; refused");
        let p = Path::new(rel);
        if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(leaves());
        }
        let base = self.dir.join(root_dir_name(proof_root)?);
        let full = base.join(p);
        // A symbolic link may still point outside: compare the resolved paths.
        let resolved = full
            .canonicalize()
            .map_err(|e| format!("{}: {e}", full.display()))?;
        let base = base
            .canonicalize()
            .map_err(|e| format!("{}: {e}", base.display()))?;
        if !resolved.starts_with(&base) {
            return Err(leaves());
        }
        Ok(resolved)
    }
}

#[async_trait]
impl ChunkSource for DirSource {
    fn describe(&self) -> String {
        format!("dir {}", self.dir.display())
    }

    async fn fetch(&self, proof_root: &str, index: u64, max_bytes: u64) -> Result<Vec<u8>, String> {
        let idx = self.index(proof_root)?;
        let entry = idx
            .chunks
            .iter()
            .find(|c| c.index == index)
            .ok_or_else(|| format!("chunk {index} is not in the directory's index.json"))?;
        let path = self.chunk_path(proof_root, &entry.path)?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > max_bytes {
            return Err(format!("{}: more than {max_bytes} bytes", path.display()));
        }
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Writes the chunks directory layout for one root, chunk by chunk.
pub struct ChunksDirWriter {
    base: PathBuf,
    index: DirIndex,
}

impl ChunksDirWriter {
    /// Starts `<dir>/<root hex>/` (created if missing).
    pub fn new(dir: &Path, proof_root: &str) -> std::io::Result<Self> {
        let name = root_dir_name(proof_root).map_err(std::io::Error::other)?;
        let base = dir.join(name);
        std::fs::create_dir_all(base.join("chunks"))?;
        Ok(ChunksDirWriter {
            base,
            index: DirIndex {
                proof_root: proof_root.to_owned(),
                chunks: Vec::new(),
            },
        })
    }

    /// Writes one chunk.
    pub fn write_chunk(&mut self, index: u64, data: &[u8]) -> std::io::Result<()> {
        let rel = format!("chunks/{index}");
        std::fs::write(self.base.join(&rel), data)?;
        self.index.chunks.push(DirChunk {
            index,
            hash: format_digest(&chunk_digest(data)),
            path: rel,
        });
        Ok(())
    }

    /// Writes `index.json` last, so a half-written directory has no index.
    pub fn finish(self) -> std::io::Result<PathBuf> {
        let json = serde_json::to_vec_pretty(&self.index).map_err(std::io::Error::other)?;
        let tmp = self.base.join("index.json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, self.base.join("index.json"))?;
        Ok(self.base)
    }
}

/// A chunk that was refused or could not be fetched.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedChunk {
    /// The chunk index.
    pub index: u64,
    /// Why.
    pub reason: String,
}

/// What a lazy fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The root.
    pub proof_root: String,
    /// Where the chunks came from.
    pub source: String,
    /// Chunks the manifest lists.
    pub total_chunks: u64,
    /// Chunks already stored before this run.
    pub already_stored: u64,
    /// Chunks fetched, verified and stored by this run.
    pub fetched: u64,
    /// Chunks refused (bad bytes) or not fetched (source errors), with the reason.
    pub refused: Vec<RefusedChunk>,
    /// Chunks still missing after the run, ascending.
    pub missing_chunks: Vec<u64>,
    /// Whether every chunk is now stored.
    pub complete: bool,
}

/// Progress of a lazy fetch: chunks handled so far out of those that were missing.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Fetches every missing chunk of `proof_root` from `source` in batches of `batch_size`,
/// checking each against the stored manifest before storing it.
pub async fn lazy_fetch(
    store: &dyn BundleStore,
    proof_root: &str,
    source: &dyn ChunkSource,
    batch_size: usize,
    progress: Progress<'_>,
) -> Result<FetchReport, AirgapError> {
    let manifest = store
        .manifest(proof_root)
        .await?
        .ok_or_else(|| AirgapError::NoManifest(proof_root.to_owned()))?;
    manifest.check().map_err(|e| {
        AirgapError::Bundle(actors::domain::bundle::BundleError::Manifest(e.to_string()))
    })?;
    let stored = store.stored_indexes(proof_root).await?;
    let missing = missing_of(manifest.total_chunks, &stored);
    let todo = missing.len() as u64;
    let mut fetched = 0u64;
    let mut refused = Vec::new();
    let mut done = 0u64;
    progress(0, todo);
    for batch in missing.chunks(batch_size.max(1)) {
        let results = futures::stream::iter(batch.iter().copied())
            .map(|index| fetch_one(&manifest, source, index))
            .buffered(8)
            .collect::<Vec<_>>()
            .await;
        let mut good = Vec::with_capacity(batch.len());
        for r in results {
            match r {
                Ok(chunk) => good.push(chunk),
                Err(bad) => {
                    tracing::warn!(index = bad.index, reason = %bad.reason, "chunk refused");
                    metrics::counter!("provd_bundle_chunks_fetched_total", "outcome" => "refused")
                        .increment(1);
                    refused.push(bad);
                }
            }
        }
        if !good.is_empty() {
            store.store_chunks(&manifest, &good).await?;
            metrics::counter!("provd_bundle_chunks_fetched_total", "outcome" => "stored")
                .increment(good.len() as u64);
            fetched += good.len() as u64;
        }
        done += batch.len() as u64;
        progress(done, todo);
    }
    let stored = store.stored_indexes(proof_root).await?;
    let missing_chunks = missing_of(manifest.total_chunks, &stored);
    Ok(FetchReport {
        proof_root: proof_root.to_owned(),
        source: source.describe(),
        total_chunks: manifest.total_chunks,
        already_stored: manifest.total_chunks - todo,
        fetched,
        refused,
        complete: missing_chunks.is_empty(),
        missing_chunks,
    })
}

async fn fetch_one(
    manifest: &Manifest,
    source: &dyn ChunkSource,
    index: u64,
) -> Result<(u64, Vec<u8>), RefusedChunk> {
    let refuse = |reason: String| RefusedChunk { index, reason };
    let max = manifest
        .chunks
        .get(usize::try_from(index).unwrap_or(usize::MAX))
        .map_or(0, |c| c.size);
    let data = source
        .fetch(&manifest.proof_root, index, max)
        .await
        .map_err(refuse)?;
    check_chunk_against_manifest(manifest, index, &data).map_err(|e| refuse(e.to_string()))?;
    Ok((index, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dir_source_refuses_paths_leaving_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = format!("sha256:{}", "0a".repeat(32));
        let mut w = ChunksDirWriter::new(tmp.path(), &root).unwrap();
        w.write_chunk(0, b"abc").unwrap();
        let base = w.finish().unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        let src = DirSource::new(tmp.path()).unwrap();
        assert_eq!(src.fetch(&root, 0, 10).await.unwrap(), b"abc");
        for bad in ["../secret", "/etc/passwd", "chunks/../../secret", ""] {
            let e = src.chunk_path(&root, bad).unwrap_err();
            assert!(e.contains("leaves the chunks directory"), "{bad}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(tmp.path().join("secret"), base.join("chunks/link"))
                .unwrap();
            let e = src.chunk_path(&root, "chunks/link").unwrap_err();
            assert!(e.contains("leaves the chunks directory"), "{e}");
        }
        assert!(
            src.fetch(&root, 0, 2)
                .await
                .unwrap_err()
                .contains("more than")
        );
    }
}
