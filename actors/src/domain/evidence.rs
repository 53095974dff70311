//! Merkle-chunked evidence: chunking, the manifest, per-chunk inclusion proofs and
//! verification of stored chunks.
//!
//! The exact bytes are specified in `docs/evidence.md`:
//! - evidence is split into chunks of `chunk_size` bytes (the last one may be shorter);
//! - a chunk's hash is `SHA256(chunk bytes)`, written `sha256:<64 lowercase hex>`;
//! - the Merkle leaves are the RFC 6962 leaf hashes of the 32-byte chunk digests,
//!   `SHA256(0x00 || digest)`, and the tree is RFC 6962's ([`crate::domain::merkle`]);
//! - the proof root is the tree's root, written `sha256:<64 lowercase hex>`.
//!
//! [`ChunkBuilder`] takes bytes as they arrive and hands out whole chunks, so a caller never
//! needs the evidence as one contiguous buffer. [`ManifestVerifier`] checks stored chunks one
//! at a time against a manifest.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::domain::limits::{self, LimitError};
use crate::domain::merkle::{self, CompactRange, Hash, MerkleError};

/// The prefix of every digest and proof root in text form.
pub const SHA256_PREFIX: &str = "sha256:";

/// Why an evidence operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvidenceError {
    /// The chunk size or the chunk limit is zero.
    #[error("invalid evidence limits: {0}")]
    InvalidLimits(String),
    /// The evidence needs more chunks than allowed.
    #[error("evidence exceeds {max_chunks} chunks of {chunk_size} bytes ({max_bytes} bytes)")]
    TooLarge {
        /// The most chunks allowed.
        max_chunks: u64,
        /// The chunk size in bytes.
        chunk_size: u64,
        /// The largest evidence allowed, in bytes.
        max_bytes: u64,
    },
    /// The evidence has no bytes.
    #[error("evidence must not be empty")]
    Empty,
    /// A digest or proof root is not `sha256:` followed by 64 lowercase hex digits.
    #[error("malformed digest {0:?}: expected `sha256:` and 64 lowercase hex digits")]
    MalformedDigest(String),
    /// A chunk index is outside the evidence.
    #[error("chunk {index} does not exist; the evidence has {total_chunks} chunks")]
    NoSuchChunk {
        /// The requested index.
        index: u64,
        /// The number of chunks.
        total_chunks: u64,
    },
    /// A manifest contradicts itself (chunk list, sizes or root).
    #[error("inconsistent manifest: {0}")]
    InconsistentManifest(String),
    /// A Merkle operation failed.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// A field is outside what the stores can hold.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Chunking limits: the chunk size and the most chunks one piece of evidence may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceLimits {
    chunk_size: u64,
    max_chunks: u64,
}

impl EvidenceLimits {
    /// Limits with `chunk_size` bytes per chunk and at most `max_chunks` chunks.
    pub fn new(chunk_size: u64, max_chunks: u64) -> Result<Self, EvidenceError> {
        if chunk_size == 0 || max_chunks == 0 {
            return Err(EvidenceError::InvalidLimits(
                "chunk size and chunk limit must be positive".into(),
            ));
        }
        if chunk_size.checked_mul(max_chunks).is_none() {
            return Err(EvidenceError::InvalidLimits(
                "chunk size times chunk limit overflows".into(),
            ));
        }
        Ok(Self {
            chunk_size,
            max_chunks,
        })
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The most chunks allowed.
    pub fn max_chunks(&self) -> u64 {
        self.max_chunks
    }

    /// The largest evidence allowed, in bytes: `chunk_size × max_chunks`.
    pub fn max_bytes(&self) -> u64 {
        self.chunk_size * self.max_chunks
    }

    fn too_large(&self) -> EvidenceError {
        EvidenceError::TooLarge {
            max_chunks: self.max_chunks,
            chunk_size: self.chunk_size,
            max_bytes: self.max_bytes(),
        }
    }
}

/// `SHA256(bytes)`: the hash of one chunk.
///
/// Chunk hashing is where evidence spends its time, so it uses AWS-LC's assembly SHA-256
/// (about twice the portable code's rate on CPUs without SHA extensions); the tests check it
/// against `sha2`.
pub fn chunk_digest(bytes: &[u8]) -> Hash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The Merkle leaf of a chunk: the RFC 6962 leaf hash of its 32-byte digest.
pub fn chunk_leaf(digest: &Hash) -> Hash {
    merkle::leaf_hash(digest)
}

/// Writes a digest as `sha256:<hex>`.
pub fn format_digest(digest: &Hash) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(digest))
}

/// Parses `sha256:<64 lowercase hex>`; anything else is [`EvidenceError::MalformedDigest`].
pub fn parse_digest(text: &str) -> Result<Hash, EvidenceError> {
    let malformed = || EvidenceError::MalformedDigest(text.chars().take(80).collect());
    let hex_part = text.strip_prefix(SHA256_PREFIX).ok_or_else(malformed)?;
    // Only one spelling is accepted, so a root names its row in the database exactly.
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(malformed());
    }
    let bytes = hex::decode(hex_part).map_err(|_| malformed())?;
    merkle::hash_from_slice(&bytes).map_err(|_| malformed())
}

/// The proof root over a list of chunk digests.
pub fn root_from_chunk_digests(digests: &[Hash]) -> Hash {
    let leaves: Vec<Hash> = digests.iter().map(chunk_leaf).collect();
    merkle::root_from_leaf_hashes(&leaves)
}

/// One chunk as it comes out of a [`ChunkBuilder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position, from 0.
    pub index: u64,
    /// `SHA256(data)`.
    pub digest: Hash,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A chunk's entry in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Position, from 0.
    pub index: u64,
    /// `sha256:<hex>` of the chunk's bytes.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a piece of evidence consists of, and the root that commits to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The Merkle root over the chunk hashes, `sha256:<hex>`.
    pub proof_root: String,
    /// Number of chunks.
    pub total_chunks: u64,
    /// Size of the evidence in bytes.
    pub total_size: u64,
    /// The chunk size it was split with.
    pub chunk_size: u64,
    /// The media type the uploader gave.
    pub content_type: String,
    /// Every chunk, in order.
    pub chunks: Vec<ChunkInfo>,
}

impl Manifest {
    /// The chunk digests, parsed, in order.
    pub fn chunk_digests(&self) -> Result<Vec<Hash>, EvidenceError> {
        self.chunks.iter().map(|c| parse_digest(&c.hash)).collect()
    }

    /// Checks that the chunk list is complete and ordered, the sizes add up, and the proof
    /// root is the root over the chunk hashes.
    pub fn check(&self) -> Result<(), EvidenceError> {
        let bad = |m: String| Err(EvidenceError::InconsistentManifest(m));
        // What both stores can hold: the sizes are SQL integers, the type bounded text.
        let max = i128::from(limits::MAX_CHUNK_FIELD);
        limits::range("chunkSize", i128::from(self.chunk_size), 1, max)?;
        limits::range("totalChunks", i128::from(self.total_chunks), 0, max)?;
        limits::range(
            "totalSize",
            i128::from(self.total_size),
            0,
            i128::from(i64::MAX),
        )?;
        limits::required("contentType", &self.content_type, limits::CONTENT_TYPE_LEN)?;
        limits::required("proofRoot", &self.proof_root, limits::HASH_LEN)?;
        if let Some(c) = self.chunks.iter().find(|c| c.size > self.chunk_size) {
            return bad(format!(
                "chunk {} has {} bytes, more than `chunkSize` {}",
                c.index, c.size, self.chunk_size
            ));
        }
        if self.chunks.len() as u64 != self.total_chunks {
            return bad(format!(
                "{} chunks listed, total_chunks is {}",
                self.chunks.len(),
                self.total_chunks
            ));
        }
        if let Some(c) = self
            .chunks
            .iter()
            .enumerate()
            .find(|(i, c)| c.index != *i as u64)
        {
            return bad(format!("chunk at position {} has index {}", c.0, c.1.index));
        }
        // Checked: declared sizes come from outside and must not wrap.
        let sum = self
            .chunks
            .iter()
            .try_fold(0u64, |acc, c| acc.checked_add(c.size));
        let Some(sum) = sum else {
            return bad("chunk sizes add up to more than 2^64 bytes".into());
        };
        if sum != self.total_size {
            return bad(format!(
                "chunk sizes add up to {sum}, total_size is {}",
                self.total_size
            ));
        }
        let root = parse_digest(&self.proof_root)?;
        if root_from_chunk_digests(&self.chunk_digests()?) != root {
            return bad("the proof root is not the root over the chunk hashes".into());
        }
        Ok(())
    }

    /// The inclusion proof of chunk `index` under the proof root.
    pub fn chunk_proof(&self, index: u64) -> Result<ChunkProof, EvidenceError> {
        if index >= self.total_chunks {
            return Err(EvidenceError::NoSuchChunk {
                index,
                total_chunks: self.total_chunks,
            });
        }
        let leaves: Vec<Hash> = self.chunk_digests()?.iter().map(chunk_leaf).collect();
        let path = merkle::inclusion_proof(&leaves, index)?;
        Ok(ChunkProof {
            proof_root: self.proof_root.clone(),
            index,
            tree_size: self.total_chunks,
            chunk_hash: self.chunks[index as usize].hash.clone(),
            leaf_hash: hex::encode(leaves[index as usize]),
            audit_path: path.iter().map(hex::encode).collect(),
        })
    }
}

/// The inclusion proof of one chunk: enough to verify that chunk alone against the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkProof {
    /// The root, `sha256:<hex>`.
    pub proof_root: String,
    /// The chunk's index (the leaf index).
    pub index: u64,
    /// The number of chunks (the tree size).
    pub tree_size: u64,
    /// `sha256:<hex>` of the chunk's bytes.
    pub chunk_hash: String,
    /// The leaf, `SHA256(0x00 || chunk digest)`, as 64 hex digits.
    pub leaf_hash: String,
    /// Sibling hashes from the leaf up to the root (RFC 9162 order), 64 hex digits each.
    pub audit_path: Vec<String>,
}

impl ChunkProof {
    /// Verifies that `chunk` is chunk `index` of the evidence with this proof's root.
    pub fn verify(&self, chunk: &[u8]) -> Result<(), EvidenceError> {
        self.verify_digest(&chunk_digest(chunk))
    }

    /// [`ChunkProof::verify`] for a chunk already hashed ([`chunk_digest`] of its bytes).
    pub fn verify_digest(&self, digest: &Hash) -> Result<(), EvidenceError> {
        let digest = *digest;
        if format_digest(&digest) != self.chunk_hash {
            return Err(EvidenceError::Merkle(MerkleError::RootMismatch));
        }
        let root = parse_digest(&self.proof_root)?;
        let path = self
            .audit_path
            .iter()
            .map(|h| {
                hex::decode(h)
                    .map_err(|_| EvidenceError::MalformedDigest(h.clone()))
                    .and_then(|b| Ok(merkle::hash_from_slice(&b)?))
            })
            .collect::<Result<Vec<Hash>, _>>()?;
        merkle::verify_inclusion(
            &chunk_leaf(&digest),
            self.index,
            self.tree_size,
            &path,
            &root,
        )?;
        Ok(())
    }
}

/// Splits evidence into chunks as its bytes arrive and builds the manifest at the end.
///
/// Only the current partial chunk is buffered; whole chunks are handed back from
/// [`ChunkBuilder::push`] and never copied again. The limits are checked before a byte past
/// them is accepted, so oversize evidence fails as early as possible.
///
/// With [`ChunkBuilder::with_threads`] the chunks one `push` completes are hashed on several
/// scoped threads; the result is the same bytes-for-bytes, only the wall time changes.
#[derive(Debug)]
pub struct ChunkBuilder {
    limits: EvidenceLimits,
    content_type: String,
    buf: Vec<u8>,
    tree: CompactRange,
    chunks: Vec<ChunkInfo>,
    total_size: u64,
    threads: usize,
}

impl ChunkBuilder {
    /// A builder for evidence of this media type.
    pub fn new(limits: EvidenceLimits, content_type: impl Into<String>) -> Self {
        Self {
            limits,
            content_type: content_type.into(),
            buf: Vec::new(),
            tree: CompactRange::new(),
            chunks: Vec::new(),
            total_size: 0,
            threads: 1,
        }
    }

    /// Hashes the chunks completed by one `push` on up to `threads` threads (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Bytes accepted so far.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Takes the next bytes and returns every chunk they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Chunk>, EvidenceError> {
        if self.total_size + bytes.len() as u64 > self.limits.max_bytes() {
            return Err(self.limits.too_large());
        }
        self.total_size += bytes.len() as u64;
        let chunk_size = self.limits.chunk_size as usize;
        let mut full = Vec::new();
        while !bytes.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(chunk_size);
            }
            let take = (chunk_size - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == chunk_size {
                full.push(std::mem::take(&mut self.buf));
            }
        }
        let digests = digest_all(&full, self.threads);
        full.into_iter()
            .zip(digests)
            .map(|(data, digest)| self.seal(data, digest))
            .collect()
    }

    fn seal(&mut self, data: Vec<u8>, digest: Hash) -> Result<Chunk, EvidenceError> {
        let index = self.chunks.len() as u64;
        self.tree.push(chunk_leaf(&digest))?;
        self.chunks.push(ChunkInfo {
            index,
            hash: format_digest(&digest),
            size: data.len() as u64,
        });
        Ok(Chunk {
            index,
            digest,
            data,
        })
    }

    /// Ends the evidence: returns the last, partial chunk (if any) and the manifest.
    pub fn finish(mut self) -> Result<(Option<Chunk>, Manifest), EvidenceError> {
        let last = if self.buf.is_empty() {
            None
        } else {
            let data = std::mem::take(&mut self.buf);
            let digest = chunk_digest(&data);
            Some(self.seal(data, digest)?)
        };
        if self.chunks.is_empty() {
            return Err(EvidenceError::Empty);
        }
        let manifest = Manifest {
            proof_root: format_digest(&self.tree.root()),
            total_chunks: self.chunks.len() as u64,
            total_size: self.total_size,
            chunk_size: self.limits.chunk_size,
            content_type: self.content_type,
            chunks: self.chunks,
        };
        Ok((last, manifest))
    }
}

/// The digests of `chunks`, in order, computed on up to `threads` scoped threads.
fn digest_all(chunks: &[Vec<u8>], threads: usize) -> Vec<Hash> {
    if threads <= 1 || chunks.len() <= 1 {
        return chunks.iter().map(|c| chunk_digest(c)).collect();
    }
    let per_thread = chunks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = chunks
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || part.iter().map(|c| chunk_digest(c)).collect::<Vec<Hash>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| {
                // A hashing thread only panics if SHA-256 itself does; pass that on.
                h.join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                    .into_iter()
            })
            .collect::<Vec<Hash>>()
    })
}

/// Chunks a whole buffer at once (for tests and tools; servers use [`ChunkBuilder`]).
pub fn chunk_all(
    limits: EvidenceLimits,
    content_type: &str,
    bytes: &[u8],
) -> Result<(Vec<Chunk>, Manifest), EvidenceError> {
    let mut builder = ChunkBuilder::new(limits, content_type);
    let mut chunks = builder.push(bytes)?;
    let (last, manifest) = builder.finish()?;
    chunks.extend(last);
    Ok((chunks, manifest))
}

/// The outcome of checking stored chunks against their manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The root checked.
    pub proof_root: String,
    /// True when every chunk is present and intact and the root matches.
    pub valid: bool,
    /// Chunks the manifest lists.
    pub total_chunks: u64,
    /// Stored chunks whose bytes were hashed.
    pub checked_chunks: u64,
    /// Indexes whose stored bytes do not hash to the manifest's hash (or whose stored hash or
    /// size disagrees with it), ascending.
    pub bad_chunks: Vec<u64>,
    /// Indexes the manifest lists but the store lacks, ascending.
    pub missing_chunks: Vec<u64>,
    /// The root recomputed from the stored bytes (missing chunks count with the manifest's
    /// hash), `sha256:<hex>`.
    pub computed_root: String,
    /// Whether the manifest's own chunk hashes give its proof root.
    pub manifest_root_matches: bool,
}

/// Checks stored chunks, fed one at a time in ascending index order, against a manifest.
#[derive(Debug)]
pub struct ManifestVerifier {
    manifest_digests: Vec<Hash>,
    manifest: Manifest,
    computed: Vec<Option<Hash>>,
    bad: Vec<u64>,
    checked: u64,
}

impl ManifestVerifier {
    /// A verifier for this manifest; fails if its hashes are malformed.
    pub fn new(manifest: Manifest) -> Result<Self, EvidenceError> {
        let manifest_digests = manifest.chunk_digests()?;
        parse_digest(&manifest.proof_root)?;
        Ok(Self {
            computed: vec![None; manifest_digests.len()],
            manifest_digests,
            manifest,
            bad: Vec::new(),
            checked: 0,
        })
    }

    /// Checks one stored chunk: its bytes and the hash stored beside them.
    pub fn check_chunk(&mut self, index: u64, stored_hash: &str, data: &[u8]) {
        let Some(slot) = self.computed.get_mut(index as usize) else {
            // A stored row outside the manifest is not part of the evidence; flag it.
            self.bad.push(index);
            return;
        };
        let digest = chunk_digest(data);
        *slot = Some(digest);
        self.checked += 1;
        let expected = &self.manifest_digests[index as usize];
        let info = &self.manifest.chunks[index as usize];
        if digest != *expected || stored_hash != info.hash || data.len() as u64 != info.size {
            self.bad.push(index);
        }
    }

    /// The report.
    pub fn finish(mut self) -> VerifyReport {
        let missing: Vec<u64> = self
            .computed
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_none())
            .map(|(i, _)| i as u64)
            .collect();
        let recomputed: Vec<Hash> = self
            .computed
            .iter()
            .zip(&self.manifest_digests)
            .map(|(c, m)| c.unwrap_or(*m))
            .collect();
        let computed_root = format_digest(&root_from_chunk_digests(&recomputed));
        let manifest_root = format_digest(&root_from_chunk_digests(&self.manifest_digests));
        let manifest_root_matches = manifest_root == self.manifest.proof_root;
        self.bad.sort_unstable();
        self.bad.dedup();
        let valid = self.bad.is_empty()
            && missing.is_empty()
            && manifest_root_matches
            && computed_root == self.manifest.proof_root;
        VerifyReport {
            proof_root: self.manifest.proof_root,
            valid,
            total_chunks: self.manifest.total_chunks,
            checked_chunks: self.checked,
            bad_chunks: self.bad,
            missing_chunks: missing,
            computed_root,
            manifest_root_matches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(chunk: u64, max: u64) -> EvidenceLimits {
        EvidenceLimits::new(chunk, max).expect("limits")
    }

    /// The worked example of `docs/evidence.md`.
    #[test]
    fn documented_example() {
        let (chunks, m) = chunk_all(limits(4, 10), "text/plain", b"hello world").expect("chunks");
        assert_eq!(chunks.len(), 3);
        let hashes: Vec<&str> = m.chunks.iter().map(|c| c.hash.as_str()).collect();
        assert_eq!(
            hashes,
            [
                "sha256:0ebdc3317b75839f643387d783535adc360ca01f33c75f7c1e7373adcd675c0b",
                "sha256:8af8e662a3b251ef02d2ed85745535086af77aa1ac63a4f5f800f501c8e5d093",
                "sha256:85c76dcae2299d2235c793fe3425bd88376f5c4721cfddc1c9a9c452c20c5d33",
            ]
        );
        assert_eq!(
            m.proof_root,
            "sha256:2af22b3a0aecb656c889dabc2fd11affb6e06216989921d80dd2223a22816a50"
        );
        let p = m.chunk_proof(2).expect("proof");
        assert_eq!(
            p.audit_path,
            ["f82f2c0c759cda3d87156fef652c2c72abf3c469dd6ec3e38ea6bc69f2226192"]
        );
        assert_eq!(
            p.leaf_hash,
            "b713b593498e5b98d314d2679987b1ddd9b9258dde345e2e21ecca8c4a6c49f5"
        );
    }

    #[test]
    fn builder_matches_whole_buffer_for_any_split() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_, whole) = chunk_all(limits(1024, 100), "a/b", &data).expect("whole");
        for step in [1usize, 7, 1023, 1024, 1025, 4096] {
            let mut b = ChunkBuilder::new(limits(1024, 100), "a/b");
            let mut n = 0;
            for piece in data.chunks(step) {
                n += b.push(piece).expect("push").len();
            }
            let (last, m) = b.finish().expect("finish");
            n += usize::from(last.is_some());
            assert_eq!(m, whole, "step {step}");
            assert_eq!(n as u64, m.total_chunks);
        }
        assert_eq!(whole.total_chunks, 10);
        assert_eq!(whole.chunks[9].size, 10_000 - 9 * 1024);
        whole.check().expect("consistent");
    }

    #[test]
    fn threads_change_nothing_but_speed() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let (_, one) = chunk_all(limits(1024, 100), "a/b", &data).expect("one thread");
        for threads in [2, 3, 8] {
            let mut b = ChunkBuilder::new(limits(1024, 100), "a/b").with_threads(threads);
            let mut chunks = Vec::new();
            for piece in data.chunks(9_000) {
                chunks.extend(b.push(piece).expect("push"));
            }
            let (last, m) = b.finish().expect("finish");
            chunks.extend(last);
            assert_eq!(m, one, "{threads} threads");
            assert!(
                chunks
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.index == i as u64 && c.digest == chunk_digest(&c.data))
            );
        }
    }

    #[test]
    fn root_is_rfc6962_over_digest_leaves() {
        let (chunks, m) = chunk_all(limits(2, 10), "x", b"abcde").expect("chunks");
        let leaves: Vec<Hash> = chunks
            .iter()
            .map(|c| merkle::leaf_hash(&chunk_digest(&c.data)))
            .collect();
        let root = merkle::node_hash(&merkle::node_hash(&leaves[0], &leaves[1]), &leaves[2]);
        assert_eq!(m.proof_root, format_digest(&root));
    }

    #[test]
    fn limits_are_enforced() {
        let mut b = ChunkBuilder::new(limits(4, 2), "x");
        b.push(b"12345678").expect("exactly the limit");
        assert!(matches!(
            b.push(b"9"),
            Err(EvidenceError::TooLarge { max_bytes: 8, .. })
        ));
        assert_eq!(
            ChunkBuilder::new(limits(4, 2), "x").finish().unwrap_err(),
            EvidenceError::Empty
        );
        assert!(EvidenceLimits::new(0, 1).is_err());
        assert!(EvidenceLimits::new(u64::MAX, 2).is_err());
    }

    #[test]
    fn every_chunk_proof_verifies_and_a_wrong_chunk_does_not() {
        for n in 1..=9u64 {
            let data: Vec<u8> = (0..n * 3).map(|i| i as u8).collect();
            let (chunks, m) = chunk_all(limits(3, 20), "x", &data).expect("chunks");
            for c in &chunks {
                let p = m.chunk_proof(c.index).expect("proof");
                p.verify(&c.data).expect("verifies");
                assert!(p.verify(b"zzz").is_err());
            }
            assert!(matches!(
                m.chunk_proof(n),
                Err(EvidenceError::NoSuchChunk { .. })
            ));
        }
    }

    #[test]
    fn chunk_digest_is_plain_sha256() {
        use sha2::{Digest, Sha256};
        for len in [0usize, 1, 55, 56, 64, 65_536, 100_001] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let expected: Hash = Sha256::digest(&data).into();
            assert_eq!(chunk_digest(&data), expected, "length {len}");
        }
    }

    #[test]
    fn digests_parse_strictly() {
        let d = chunk_digest(b"x");
        assert_eq!(parse_digest(&format_digest(&d)), Ok(d));
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            &format_digest(&d).to_uppercase(),
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "0".repeat(63)),
            &format!("sha256:{}", "0".repeat(65)),
        ] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verifier_names_bad_and_missing_chunks() {
        let (chunks, m) = chunk_all(limits(2, 20), "x", b"abcdefghij").expect("chunks");
        let mut v = ManifestVerifier::new(m.clone()).expect("verifier");
        for c in &chunks {
            v.check_chunk(c.index, &format_digest(&c.digest), &c.data);
        }
        let ok = v.finish();
        assert!(ok.valid);
        assert_eq!(ok.computed_root, m.proof_root);

        let mut v = ManifestVerifier::new(m.clone()).expect("verifier");
        for c in &chunks {
            let data = if c.index == 3 {
                b"XX".to_vec()
            } else {
                c.data.clone()
            };
            if c.index != 1 {
                v.check_chunk(c.index, &format_digest(&c.digest), &data);
            }
        }
        let r = v.finish();
        assert!(!r.valid);
        assert_eq!(r.bad_chunks, [3]);
        assert_eq!(r.missing_chunks, [1]);
        assert_ne!(r.computed_root, m.proof_root);
        assert!(r.manifest_root_matches);
    }

    #[test]
    fn manifest_check_catches_tampering() {
        let (_, mut m) = chunk_all(limits(2, 20), "x", b"abcdef").expect("chunks");
        m.check().expect("fresh manifest is consistent");
        m.chunks[1].hash = format_digest(&chunk_digest(b"zz"));
        assert!(m.check().is_err());
    }
}
