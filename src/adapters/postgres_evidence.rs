//! Evidence chunks and manifests in PostgreSQL (`provcache.prov_evidence_chunks`, the seed's
//! table, and `provcache.prov_evidence_manifests`).
//!
//! An upload is one transaction: the manifest row first (`ON CONFLICT DO NOTHING`, so a
//! second upload of the same root is a no-op), then the chunks in multi-row inserts.

use actors::domain::evidence::{Chunk, ChunkInfo, Manifest, format_digest};
use actors::ports::{EvidenceTotals, StoredChunk};
use sqlx::{FromRow, QueryBuilder};
use uuid::Uuid;

use super::AdapterError;
use super::postgres::PgStore;

/// Chunks per INSERT statement: 6 parameters each stays far below PostgreSQL's 65 535, and
/// a batch of 64 KiB chunks stays a few MiB.
const CHUNKS_PER_INSERT: usize = 64;

#[derive(FromRow)]
struct ManifestRecord {
    proof_root: String,
    total_chunks: i32,
    total_size: i64,
    chunk_size: i32,
    content_type: String,
    chunk_hashes: serde_json::Value,
}

#[derive(FromRow)]
struct ChunkRecord {
    chunk_index: i32,
    chunk_hash: String,
    blob_size: i32,
}

#[derive(FromRow)]
struct BlobRecord {
    chunk_index: i32,
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

fn to_i32(v: u64, what: &str) -> Result<i32, AdapterError> {
    i32::try_from(v).map_err(|_| AdapterError::Corrupt(format!("{what} {v} does not fit")))
}

/// Indexes past `i32::MAX` cannot be stored, so they select nothing.
fn index_bound(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn page_limit(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Stores a manifest and its chunks in one transaction; `false` when the root was
    /// already stored (nothing changes then).
    pub async fn put_evidence(
        &self,
        manifest: &Manifest,
        chunks: &[Chunk],
    ) -> Result<bool, AdapterError> {
        let mut tx = self.pool().begin().await?;
        let chunk_hashes = serde_json::to_value(&manifest.chunks)
            .map_err(|e| AdapterError::Corrupt(e.to_string()))?;
        let inserted = sqlx::query(
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
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            // Same root, same bytes: the stored copy already is this evidence.
            tx.rollback().await?;
            return Ok(false);
        }
        for batch in chunks.chunks(CHUNKS_PER_INSERT) {
            let mut q = QueryBuilder::new(
                "INSERT INTO provcache.prov_evidence_chunks \
                 (chunk_id, proof_root, chunk_index, chunk_hash, blob, blob_size, content_type) ",
            );
            let mut rows = Vec::with_capacity(batch.len());
            for c in batch {
                rows.push((
                    to_i32(c.index, "chunk index")?,
                    to_i32(c.data.len() as u64, "chunk size")?,
                    format_digest(&c.digest),
                    c,
                ));
            }
            q.push_values(rows, |mut b, (index, size, hash, c)| {
                b.push_bind(Uuid::now_v7())
                    .push_bind(&manifest.proof_root)
                    .push_bind(index)
                    .push_bind(hash)
                    .push_bind(c.data.as_slice())
                    .push_bind(size)
                    .push_bind(&manifest.content_type);
            });
            // A concurrent upload of the same root loses at the manifest row, so chunk
            // conflicts cannot happen; tolerate them anyway rather than fail the upload.
            q.push(" ON CONFLICT (proof_root, chunk_index) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The manifest of a root, if stored.
    pub async fn evidence_manifest(
        &self,
        proof_root: &str,
    ) -> Result<Option<Manifest>, AdapterError> {
        let row: Option<ManifestRecord> = sqlx::query_as(
            "SELECT proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes \
             FROM provcache.prov_evidence_manifests WHERE proof_root = $1",
        )
        .bind(proof_root)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let chunks: Vec<ChunkInfo> = serde_json::from_value(r.chunk_hashes)
                .map_err(|e| AdapterError::Corrupt(format!("manifest chunk list: {e}")))?;
            let num = |v: i64, what: &str| {
                u64::try_from(v).map_err(|_| AdapterError::Corrupt(format!("negative {what}")))
            };
            Ok(Manifest {
                proof_root: r.proof_root,
                total_chunks: num(i64::from(r.total_chunks), "total_chunks")?,
                total_size: num(r.total_size, "total_size")?,
                chunk_size: num(i64::from(r.chunk_size), "chunk_size")?,
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
            "SELECT chunk_index, chunk_hash, blob_size FROM provcache.prov_evidence_chunks \
             WHERE proof_root = $1 AND chunk_index >= $2 ORDER BY chunk_index LIMIT $3",
        )
        .bind(proof_root)
        .bind(index_bound(from))
        .bind(page_limit(limit))
        .fetch_all(self.pool())
        .await?;
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
            "SELECT chunk_index, chunk_hash, content_type, blob \
             FROM provcache.prov_evidence_chunks \
             WHERE proof_root = $1 AND chunk_index >= $2 ORDER BY chunk_index LIMIT $3",
        )
        .bind(proof_root)
        .bind(index_bound(from))
        .bind(page_limit(limit))
        .fetch_all(self.pool())
        .await?;
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
            "SELECT chunk_index, chunk_hash, content_type, blob \
             FROM provcache.prov_evidence_chunks WHERE proof_root = $1 AND chunk_index = $2",
        )
        .bind(proof_root)
        .bind(index)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(StoredChunk::from))
    }

    /// Totals over all stored evidence: roots, chunks and bytes (for the stats endpoint).
    pub async fn evidence_totals(&self) -> Result<EvidenceTotals, AdapterError> {
        let (roots, chunks, bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(sum(total_chunks), 0)::BIGINT, \
             COALESCE(sum(total_size), 0)::BIGINT FROM provcache.prov_evidence_manifests",
        )
        .fetch_one(self.pool())
        .await?;
        let n = |v: i64| u64::try_from(v).unwrap_or_default();
        Ok(EvidenceTotals {
            roots: n(roots),
            chunks: n(chunks),
            bytes: n(bytes),
        })
    }
}

super::via_inherent::evidence_store!(PgStore);
