//! Evidence chunks and manifests (`prov_evidence_chunks`, the seed's table, and
//! `prov_evidence_manifests`).
//!
//! An upload is one transaction: the manifest row first (`ON CONFLICT DO NOTHING`, so a
//! second upload of the same root is a no-op), then the chunks. Concurrent uploads of one
//! root are ordered by the manifest row: on PostgreSQL the second insert waits on the first's
//! uncommitted key and then inserts nothing; on SQLite the one writer connection runs them
//! one after the other. PostgreSQL takes the chunks in multi-row inserts, SQLite one
//! prepared insert each (it runs them in-process, so batching buys little).

use actors::domain::evidence::{Chunk, ChunkInfo, Manifest, format_digest};
use actors::ports::{EvidenceStore, EvidenceTotals, PortError, StoredChunk};
use async_trait::async_trait;
use sqlx::{FromRow, Postgres, QueryBuilder};
use uuid::Uuid;

use super::codec::{Id, Json};
use super::{Exec, Sql, Store, Tx, run};
use crate::adapters::AdapterError;

/// Chunks per PostgreSQL INSERT statement: 7 parameters each stays far below PostgreSQL's
/// 65 535, and a batch of 64 KiB chunks stays a few MiB.
const CHUNKS_PER_INSERT: usize = 64;

#[derive(FromRow)]
struct ManifestRecord {
    proof_root: String,
    total_chunks: i32,
    total_size: i64,
    chunk_size: i32,
    content_type: String,
    chunk_hashes: Json,
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

/// Values PostgreSQL stores as INTEGER (32 bits) are refused past that width on SQLite too,
/// so both databases accept the same evidence.
pub(crate) fn to_i32(v: u64, what: &str) -> Result<i32, AdapterError> {
    i32::try_from(v).map_err(|_| AdapterError::Corrupt(format!("{what} {v} does not fit")))
}

/// Indexes past `i32::MAX` cannot be stored, so they select nothing.
fn index_bound(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn page_limit(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One chunk as it is inserted: index and size as stored, hash, bytes.
pub(crate) struct ChunkRow<'a> {
    index: i32,
    size: i32,
    hash: String,
    data: &'a [u8],
}

impl<'a> ChunkRow<'a> {
    /// The chunk at `index` with `data` and its `sha256:<hex>` hash; refused when the index or
    /// the size does not fit the 32-bit columns.
    pub(crate) fn new(index: u64, hash: String, data: &'a [u8]) -> Result<Self, AdapterError> {
        Ok(ChunkRow {
            index: to_i32(index, "chunk index")?,
            size: to_i32(data.len() as u64, "chunk size")?,
            hash,
            data,
        })
    }
}

const INSERT_MANIFEST: Sql = Sql::new(
    "INSERT INTO provcache.prov_evidence_manifests \
     (proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (proof_root) DO NOTHING",
    "INSERT INTO prov_evidence_manifests \
     (proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (proof_root) DO NOTHING",
);

const INSERT_CHUNK: Sql = Sql::new(
    "INSERT INTO provcache.prov_evidence_chunks \
     (chunk_id, proof_root, chunk_index, chunk_hash, blob, blob_size, content_type) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (proof_root, chunk_index) DO NOTHING",
    "INSERT INTO prov_evidence_chunks \
     (chunk_id, proof_root, chunk_index, chunk_hash, blob, blob_size, content_type) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (proof_root, chunk_index) DO NOTHING",
);

/// Inserts a manifest unless its root is stored; `true` when it was new.
pub(crate) async fn insert_manifest(
    tx: &mut Tx,
    manifest: &Manifest,
) -> Result<bool, AdapterError> {
    let chunk_hashes =
        serde_json::to_value(&manifest.chunks).map_err(|e| AdapterError::Corrupt(e.to_string()))?;
    let inserted = run!(
        exec,
        tx.exec(),
        INSERT_MANIFEST,
        &manifest.proof_root,
        to_i32(manifest.total_chunks, "total_chunks")?,
        i64::try_from(manifest.total_size).unwrap_or(i64::MAX),
        to_i32(manifest.chunk_size, "chunk_size")?,
        &manifest.content_type,
        Json(chunk_hashes)
    )?;
    Ok(inserted == 1)
}

/// Inserts one chunk of a root (an index already stored is kept: same root, same bytes);
/// `true` when it was new.
pub(crate) async fn insert_chunk(
    exec: Exec<'_>,
    manifest: &Manifest,
    chunk: &ChunkRow<'_>,
) -> Result<bool, AdapterError> {
    let n = run!(
        exec,
        exec,
        INSERT_CHUNK,
        Id(Uuid::now_v7()),
        &manifest.proof_root,
        chunk.index,
        &chunk.hash,
        chunk.data,
        chunk.size,
        &manifest.content_type
    )?;
    Ok(n == 1)
}

/// Inserts chunks of a root whose manifest row is in `tx` or stored (an index already stored
/// is kept: same root, same bytes); returns how many were new.
pub(crate) async fn insert_chunks(
    tx: &mut Tx,
    manifest: &Manifest,
    chunks: &[ChunkRow<'_>],
) -> Result<u64, AdapterError> {
    let mut inserted = 0;
    // PostgreSQL takes a batch per statement, one round trip each; SQLite runs its
    // statements in-process, so one prepared insert per chunk costs little there.
    match tx {
        Tx::Pg(pg) => {
            for batch in chunks.chunks(CHUNKS_PER_INSERT) {
                let mut q = QueryBuilder::<Postgres>::new(
                    "INSERT INTO provcache.prov_evidence_chunks \
                     (chunk_id, proof_root, chunk_index, chunk_hash, blob, blob_size, \
                     content_type) ",
                );
                q.push_values(batch, |mut b, c| {
                    b.push_bind(Uuid::now_v7())
                        .push_bind(&manifest.proof_root)
                        .push_bind(c.index)
                        .push_bind(&c.hash)
                        .push_bind(c.data)
                        .push_bind(c.size)
                        .push_bind(&manifest.content_type);
                });
                q.push(" ON CONFLICT (proof_root, chunk_index) DO NOTHING");
                inserted += q
                    .build()
                    .execute(&mut **pg)
                    .await
                    .map_err(AdapterError::Postgres)?
                    .rows_affected();
            }
        }
        Tx::Lite(lite) => {
            for c in chunks {
                inserted += u64::from(insert_chunk(Exec::Lite(lite), manifest, c).await?);
            }
        }
    }
    Ok(inserted)
}

impl Store {
    /// Stores a manifest and its chunks in one transaction; `false` when the root was
    /// already stored (nothing changes then).
    pub async fn put_evidence(
        &self,
        manifest: &Manifest,
        chunks: &[Chunk],
    ) -> Result<bool, AdapterError> {
        let mut tx = self.begin().await?;
        if !insert_manifest(&mut tx, manifest).await? {
            // Same root, same bytes: the stored copy already is this evidence.
            tx.rollback().await?;
            return Ok(false);
        }
        let rows = chunks
            .iter()
            .map(|c| ChunkRow::new(c.index, format_digest(&c.digest), &c.data))
            .collect::<Result<Vec<_>, _>>()?;
        // A concurrent upload of the same root loses at the manifest row, so chunk
        // conflicts cannot happen; they are tolerated anyway rather than fail the upload.
        insert_chunks(&mut tx, manifest, &rows).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The manifest of a root, if stored.
    pub async fn evidence_manifest(
        &self,
        proof_root: &str,
    ) -> Result<Option<Manifest>, AdapterError> {
        let row: Option<ManifestRecord> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                "SELECT proof_root, total_chunks, total_size, chunk_size, content_type, \
                 chunk_hashes FROM provcache.prov_evidence_manifests WHERE proof_root = $1",
                "SELECT proof_root, total_chunks, total_size, chunk_size, content_type, \
                 chunk_hashes FROM prov_evidence_manifests WHERE proof_root = ?1",
            ),
            proof_root
        )?;
        row.map(|r| {
            let chunks: Vec<ChunkInfo> = serde_json::from_value(r.chunk_hashes.0)
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
        let rows: Vec<ChunkRecord> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                "SELECT chunk_index, chunk_hash, blob_size FROM provcache.prov_evidence_chunks \
                 WHERE proof_root = $1 AND chunk_index >= $2 ORDER BY chunk_index LIMIT $3",
                "SELECT chunk_index, chunk_hash, blob_size FROM prov_evidence_chunks \
                 WHERE proof_root = ?1 AND chunk_index >= ?2 ORDER BY chunk_index LIMIT ?3",
            ),
            proof_root,
            index_bound(from),
            page_limit(limit)
        )?;
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
        let rows: Vec<BlobRecord> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                "SELECT chunk_index, chunk_hash, content_type, blob \
                 FROM provcache.prov_evidence_chunks \
                 WHERE proof_root = $1 AND chunk_index >= $2 ORDER BY chunk_index LIMIT $3",
                "SELECT chunk_index, chunk_hash, content_type, blob FROM prov_evidence_chunks \
                 WHERE proof_root = ?1 AND chunk_index >= ?2 ORDER BY chunk_index LIMIT ?3",
            ),
            proof_root,
            index_bound(from),
            page_limit(limit)
        )?;
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
        let row: Option<BlobRecord> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                "SELECT chunk_index, chunk_hash, content_type, blob \
                 FROM provcache.prov_evidence_chunks WHERE proof_root = $1 AND chunk_index = $2",
                "SELECT chunk_index, chunk_hash, content_type, blob FROM prov_evidence_chunks \
                 WHERE proof_root = ?1 AND chunk_index = ?2",
            ),
            proof_root,
            index
        )?;
        Ok(row.map(StoredChunk::from))
    }

    /// Totals over all stored evidence: roots, chunks and bytes (for the stats endpoint).
    pub async fn evidence_totals(&self) -> Result<EvidenceTotals, AdapterError> {
        let (roots, chunks, bytes): (i64, i64, i64) = run!(
            rows fetch_one,
            self.read(),
            // Sums saturate at the largest BIGINT instead of failing: sizes come from
            // outside (imports), and a stats answer must not turn into an error forever.
            Sql::new(
                "SELECT count(*), \
                 LEAST(COALESCE(sum(total_chunks), 0), 9223372036854775807)::BIGINT, \
                 LEAST(COALESCE(sum(total_size), 0), 9223372036854775807)::BIGINT \
                 FROM provcache.prov_evidence_manifests",
                // SQLite's sum() fails on overflow; total() is a float and cannot, and is
                // exact up to 2^53.
                "SELECT count(*), \
                 CAST(min(total(total_chunks), 9223372036854775807.0) AS INTEGER), \
                 CAST(min(total(total_size), 9223372036854775807.0) AS INTEGER) \
                 FROM prov_evidence_manifests",
            )
        )?;
        let n = |v: i64| u64::try_from(v).unwrap_or_default();
        Ok(EvidenceTotals {
            roots: n(roots),
            chunks: n(chunks),
            bytes: n(bytes),
        })
    }
}

#[async_trait]
impl EvidenceStore for Store {
    async fn put_evidence(&self, manifest: &Manifest, chunks: &[Chunk]) -> Result<bool, PortError> {
        Ok(Store::put_evidence(self, manifest, chunks).await?)
    }

    async fn manifest(&self, proof_root: &str) -> Result<Option<Manifest>, PortError> {
        Ok(self.evidence_manifest(proof_root).await?)
    }

    async fn chunk_infos(
        &self,
        proof_root: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<ChunkInfo>, PortError> {
        Ok(self.evidence_chunk_infos(proof_root, from, limit).await?)
    }

    async fn chunks(
        &self,
        proof_root: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<StoredChunk>, PortError> {
        Ok(self.evidence_chunks(proof_root, from, limit).await?)
    }

    async fn chunk(&self, proof_root: &str, index: u64) -> Result<Option<StoredChunk>, PortError> {
        Ok(self.evidence_chunk(proof_root, index).await?)
    }

    async fn evidence_totals(&self) -> Result<EvidenceTotals, PortError> {
        Ok(Store::evidence_totals(self).await?)
    }
}
