//! Evidence chunks and manifests in SQLite (`prov_evidence_chunks`,
//! `prov_evidence_manifests`), with the semantics of the PostgreSQL adapter.
//!
//! An upload is one transaction: the manifest row first (`ON CONFLICT DO NOTHING`, so a
//! second upload of the same root is a no-op), then the chunks, one prepared insert each
//! (SQLite runs them in-process, so batching them into one statement buys little).

use actors::domain::evidence::{Chunk, ChunkInfo, Manifest, format_digest};
use actors::ports::{EvidenceTotals, StoredChunk};
use sqlx::{FromRow, SqliteConnection};
use uuid::Uuid;

use super::AdapterError;
use super::sqlite::{SqliteResult, SqliteStore};

#[derive(FromRow)]
struct ManifestRecord {
    proof_root: String,
    total_chunks: i64,
    total_size: i64,
    chunk_size: i64,
    content_type: String,
    chunk_hashes: String,
}

#[derive(FromRow)]
struct ChunkRecord {
    chunk_index: i64,
    chunk_hash: String,
    blob_size: i64,
}

#[derive(FromRow)]
struct BlobRecord {
    chunk_index: i64,
    chunk_hash: String,
    content_type: String,
    blob: Vec<u8>,
}

impl From<BlobRecord> for StoredChunk {
    fn from(r: BlobRecord) -> Self {
        StoredChunk {
            index: u64::try_from(r.chunk_index).unwrap_or_default(),
            hash: r.chunk_hash,
            content_type: r.content_type,
            data: r.blob,
        }
    }
}

/// Values PostgreSQL stores as INTEGER (32 bits) are refused past that width here too, so
/// both stores accept the same evidence.
pub(crate) fn to_i32(v: u64, what: &str) -> Result<i32, AdapterError> {
    i32::try_from(v).map_err(|_| AdapterError::Corrupt(format!("{what} {v} does not fit")))
}

/// Indexes past `i32::MAX` cannot be stored, so they select nothing.
fn index_bound(v: u64) -> i64 {
    i64::from(i32::try_from(v).unwrap_or(i32::MAX))
}

fn page_limit(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts a manifest unless its root is stored; `true` when it was new.
pub(crate) async fn insert_manifest(
    conn: &mut SqliteConnection,
    manifest: &Manifest,
) -> Result<bool, AdapterError> {
    let chunk_hashes = serde_json::to_string(&manifest.chunks)
        .map_err(|e| AdapterError::Corrupt(e.to_string()))?;
    let inserted = sqlx::query(
        "INSERT INTO prov_evidence_manifests \
         (proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (proof_root) DO NOTHING",
    )
    .bind(&manifest.proof_root)
    .bind(to_i32(manifest.total_chunks, "total_chunks")?)
    .bind(i64::try_from(manifest.total_size).unwrap_or(i64::MAX))
    .bind(to_i32(manifest.chunk_size, "chunk_size")?)
    .bind(&manifest.content_type)
    .bind(chunk_hashes)
    .execute(conn)
    .await
    .sq()?
    .rows_affected()
        == 1;
    Ok(inserted)
}

/// Inserts one chunk of a root (an index already stored is kept: same root, same bytes);
/// `true` when it was new.
pub(crate) async fn insert_chunk(
    conn: &mut SqliteConnection,
    manifest: &Manifest,
    index: u64,
    hash: &str,
    data: &[u8],
) -> Result<bool, AdapterError> {
    let n = sqlx::query(
        "INSERT INTO prov_evidence_chunks \
         (chunk_id, proof_root, chunk_index, chunk_hash, blob, blob_size, content_type) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (proof_root, chunk_index) DO NOTHING",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(&manifest.proof_root)
    .bind(to_i32(index, "chunk index")?)
    .bind(hash)
    .bind(data)
    .bind(to_i32(data.len() as u64, "chunk size")?)
    .bind(&manifest.content_type)
    .execute(conn)
    .await
    .sq()?
    .rows_affected();
    Ok(n == 1)
}

impl SqliteStore {
    /// Stores a manifest and its chunks in one transaction; `false` when the root was
    /// already stored (nothing changes then).
    pub async fn put_evidence(
        &self,
        manifest: &Manifest,
        chunks: &[Chunk],
    ) -> Result<bool, AdapterError> {
        let mut tx = self.writer().begin().await.sq()?;
        if !insert_manifest(&mut tx, manifest).await? {
            // Same root, same bytes: the stored copy already is this evidence.
            tx.rollback().await.sq()?;
            return Ok(false);
        }
        for c in chunks {
            insert_chunk(
                &mut tx,
                manifest,
                c.index,
                &format_digest(&c.digest),
                &c.data,
            )
            .await?;
        }
        tx.commit().await.sq()?;
        Ok(true)
    }

    /// The manifest of a root, if stored.
    pub async fn evidence_manifest(
        &self,
        proof_root: &str,
    ) -> Result<Option<Manifest>, AdapterError> {
        let row: Option<ManifestRecord> = sqlx::query_as(
            "SELECT proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes \
             FROM prov_evidence_manifests WHERE proof_root = ?",
        )
        .bind(proof_root)
        .fetch_optional(self.reader())
        .await
        .sq()?;
        row.map(|r| {
            let chunks: Vec<ChunkInfo> = serde_json::from_str(&r.chunk_hashes)
                .map_err(|e| AdapterError::Corrupt(format!("manifest chunk list: {e}")))?;
            let num = |v: i64, what: &str| {
                u64::try_from(v).map_err(|_| AdapterError::Corrupt(format!("negative {what}")))
            };
            Ok(Manifest {
                proof_root: r.proof_root,
                total_chunks: num(r.total_chunks, "total_chunks")?,
                total_size: num(r.total_size, "total_size")?,
                chunk_size: num(r.chunk_size, "chunk_size")?,
                content_type: r.content_type,
                chunks,
            })
        })
        .transpose()
    }

    /// Stored chunk metadata (no bytes) with `index >= from`, ascending, at most `limit`.
    pub async fn evidence_chunk_infos(
        &self,
        proof_root: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<ChunkInfo>, AdapterError> {
        let rows: Vec<ChunkRecord> = sqlx::query_as(
            "SELECT chunk_index, chunk_hash, blob_size FROM prov_evidence_chunks \
             WHERE proof_root = ? AND chunk_index >= ? ORDER BY chunk_index LIMIT ?",
        )
        .bind(proof_root)
        .bind(index_bound(from))
        .bind(page_limit(limit))
        .fetch_all(self.reader())
        .await
        .sq()?;
        Ok(rows
            .into_iter()
            .map(|r| ChunkInfo {
                index: u64::try_from(r.chunk_index).unwrap_or_default(),
                hash: r.chunk_hash,
                size: u64::try_from(r.blob_size).unwrap_or_default(),
            })
            .collect())
    }

    /// Stored chunks with their bytes and `index >= from`, ascending, at most `limit`.
    pub async fn evidence_chunks(
        &self,
        proof_root: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<StoredChunk>, AdapterError> {
        let rows: Vec<BlobRecord> = sqlx::query_as(
            "SELECT chunk_index, chunk_hash, content_type, blob FROM prov_evidence_chunks \
             WHERE proof_root = ? AND chunk_index >= ? ORDER BY chunk_index LIMIT ?",
        )
        .bind(proof_root)
        .bind(index_bound(from))
        .bind(page_limit(limit))
        .fetch_all(self.reader())
        .await
        .sq()?;
        Ok(rows.into_iter().map(StoredChunk::from).collect())
    }

    /// One stored chunk with its bytes.
    pub async fn evidence_chunk(
        &self,
        proof_root: &str,
        index: u64,
    ) -> Result<Option<StoredChunk>, AdapterError> {
        let Ok(index) = i32::try_from(index) else {
            return Ok(None);
        };
        let row: Option<BlobRecord> = sqlx::query_as(
            "SELECT chunk_index, chunk_hash, content_type, blob FROM prov_evidence_chunks \
             WHERE proof_root = ? AND chunk_index = ?",
        )
        .bind(proof_root)
        .bind(index)
        .fetch_optional(self.reader())
        .await
        .sq()?;
        Ok(row.map(StoredChunk::from))
    }

    /// Totals over all stored evidence: roots, chunks and bytes (for the stats endpoint).
    pub async fn evidence_totals(&self) -> Result<EvidenceTotals, AdapterError> {
        let (roots, chunks, bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum(total_chunks), 0), coalesce(sum(total_size), 0) \
             FROM prov_evidence_manifests",
        )
        .fetch_one(self.reader())
        .await
        .sq()?;
        let n = |v: i64| u64::try_from(v).unwrap_or_default();
        Ok(EvidenceTotals {
            roots: n(roots),
            chunks: n(chunks),
            bytes: n(bytes),
        })
    }
}

super::via_inherent::evidence_store!(SqliteStore);
