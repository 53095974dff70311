//! Air-gap proof bundles, format v1: a verdict, its evidence manifest, as many evidence
//! chunks as the density asks for, optionally the Rekor receipt of its attestation, and an
//! optional signature, so that a site without network can check all of it offline.
//!
//! The format is specified byte for byte in `docs/bundle-format.md`:
//! - the JSON members are the seed's (`version`, `exportedAt`, `density`, `digest`,
//!   `manifest`, `chunks`, `signature`) plus `entry` (the rest of the cached verdict) and
//!   `rekor` (receipt, log key and log host);
//! - the signature (ECDSA P-256 over SHA-256, DER; or pure Ed25519) covers the RFC 8785
//!   canonical JSON of the whole bundle without its `signature` member;
//! - densities: `lite` carries no chunk, `standard` the first 10 % (at least one), `strict`
//!   every chunk.
//!
//! [`BundleWriter`] writes a bundle as canonical JSON chunk by chunk, so a large strict
//! bundle never has to be held in memory, and signs it on the way (ECDSA over an
//! incremental SHA-256; Ed25519 keeps the signed bytes, as pure Ed25519 hashes its message
//! twice). [`verify_bundle_from`] runs every offline check and names the one that failed,
//! streaming the bundle: each chunk is decoded, hashed and dropped as it is read and the
//! signed bytes are rebuilt in canonical form on the way, so memory holds one chunk and the
//! manifest ([`verify_bundle`] is the same over bytes in memory). [`read_chunks`] reads the
//! chunks of a verified bundle again, for storing them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::Read;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::entry::{Entry, verdict_hash};
use super::evidence::{
    ChunkInfo, EvidenceError, Manifest, chunk_digest, format_digest, parse_digest,
    root_from_chunk_digests,
};
use super::keys::{Algorithm, KeyError, PrivateKey, PublicKey};
use super::merkle::Hash;
use super::note::Verifier;
use super::receipt::{Receipt, ReceiptError, TransparencyLogEntry, TrustedLog};

/// The only format version this code reads and writes.
pub const BUNDLE_VERSION: &str = "v1";
/// The `algorithm` of an ECDSA P-256 signature.
pub const ALG_P256: &str = "ECDSA-P256";
/// The `algorithm` of an Ed25519 signature.
pub const ALG_ED25519: &str = "Ed25519";

/// Why a bundle could not be read, written or verified. Each variant names the check that
/// failed ([`BundleError::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The bytes are not a bundle: bad JSON, a missing or unknown member, bad base64.
    #[error("format check failed: {0}")]
    Malformed(String),
    /// The bundle's `version` is not `v1`.
    #[error("format check failed: unsupported bundle version {0:?}; this provd reads \"v1\"")]
    UnsupportedVersion(String),
    /// The bundle is larger than allowed.
    #[error("limits check failed: the bundle has {size} bytes, the limit is {max}")]
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The evidence has more chunks than allowed.
    #[error("limits check failed: the manifest lists {count} chunks, the limit is {max}")]
    TooManyChunks {
        /// Chunks in the manifest.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// A key was given but the bundle carries no signature.
    #[error("signature check failed: the bundle is not signed")]
    Unsigned,
    /// The signature names an algorithm other than `ECDSA-P256` or `Ed25519`, or one that
    /// does not match the key.
    #[error("signature check failed: algorithm {found:?} does not match the key ({expected})")]
    Algorithm {
        /// What the key needs.
        expected: String,
        /// What the bundle says.
        found: String,
    },
    /// The signature's key ID is not the trusted key's.
    #[error("signature check failed: signed by key {found}, expected key {expected}")]
    WrongKey {
        /// The trusted key's ID.
        expected: String,
        /// The key ID in the bundle.
        found: String,
    },
    /// The signature does not verify over the canonical bytes.
    #[error("signature check failed: the signature does not verify with key {key_id}")]
    BadSignature {
        /// The key used.
        key_id: String,
    },
    /// `digest` disagrees with the manifest or the verdict.
    #[error("digest check failed: {0}")]
    Digest(String),
    /// The manifest contradicts itself (chunk list, sizes, or its root).
    #[error("manifest check failed: {0}")]
    Manifest(String),
    /// The chunk list is out of order, has duplicates or gaps, or does not match the density.
    #[error("chunk list check failed: {0}")]
    ChunkList(String),
    /// An included chunk's bytes do not hash to its `hash`, or its `hash` or size is not the
    /// manifest's.
    #[error("chunk hash check failed: chunk {index}: {why}")]
    ChunkHash {
        /// The chunk index.
        index: u64,
        /// What differs.
        why: String,
    },
    /// An included chunk is not included under the proof root.
    #[error("chunk inclusion check failed: chunk {index}: {why}")]
    ChunkInclusion {
        /// The chunk index.
        index: u64,
        /// Why.
        why: String,
    },
    /// With every chunk present, the root over their bytes is not the proof root.
    #[error("merkle root check failed: the chunks give {computed}, the manifest says {expected}")]
    MerkleRoot {
        /// The root over the chunk bytes.
        computed: String,
        /// The proof root.
        expected: String,
    },
    /// The Rekor receipt does not verify.
    #[error("rekor receipt check failed: {0}")]
    Receipt(String),
    /// Writing the bundle failed (I/O of the caller's writer).
    #[error("cannot write the bundle: {0}")]
    Write(String),
    /// Reading the bundle failed (I/O of the caller's reader, not the bundle's content).
    #[error("cannot read the bundle: {0}")]
    Read(String),
}

impl BundleError {
    /// The short name of the failing check, for `--json` and metric labels.
    pub fn check(&self) -> &'static str {
        match self {
            BundleError::Malformed(_) | BundleError::UnsupportedVersion(_) => "format",
            BundleError::TooLarge { .. } | BundleError::TooManyChunks { .. } => "limits",
            BundleError::Unsigned
            | BundleError::Algorithm { .. }
            | BundleError::WrongKey { .. }
            | BundleError::BadSignature { .. } => "signature",
            BundleError::Digest(_) => "digest",
            BundleError::Manifest(_) => "manifest",
            BundleError::ChunkList(_) => "chunk_list",
            BundleError::ChunkHash { .. } => "chunk_hash",
            BundleError::ChunkInclusion { .. } => "chunk_inclusion",
            BundleError::MerkleRoot { .. } => "merkle_root",
            BundleError::Receipt(_) => "rekor_receipt",
            BundleError::Write(_) => "write",
            BundleError::Read(_) => "read",
        }
    }
}

/// How much evidence a bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Density {
    /// Digest, manifest and verdict only.
    Lite,
    /// Plus the first 10 % of the chunks (at least one).
    Standard,
    /// Plus every chunk.
    Strict,
}

impl Density {
    /// Parses `lite`, `standard` or `strict`.
    pub fn parse(s: &str) -> Result<Self, BundleError> {
        match s {
            "lite" => Ok(Density::Lite),
            "standard" => Ok(Density::Standard),
            "strict" => Ok(Density::Strict),
            other => Err(BundleError::Malformed(format!(
                "density {other:?} is not lite, standard or strict"
            ))),
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Density::Lite => "lite",
            Density::Standard => "standard",
            Density::Strict => "strict",
        }
    }

    /// How many leading chunks a bundle of this density carries out of `total`:
    /// lite 0, standard ⌈10 %⌉ (at least one when there is any), strict all.
    pub fn included_chunks(self, total: u64) -> u64 {
        match self {
            Density::Lite => 0,
            Density::Standard => total.div_ceil(10).max(1).min(total),
            Density::Strict => total,
        }
    }
}

/// The seed's `digest` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleDigest {
    /// The VeriKey.
    pub veri_key: String,
    /// `sha256:` of the verdict (see [`verdict_hash`]).
    pub verdict_hash: String,
    /// The evidence Merkle root.
    pub proof_root: String,
    /// 0 to 100.
    pub trust_score: i16,
}

/// The rest of the cached entry: the verdict and what the cache keys and invalidates on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleEntry {
    /// The verdict JSON.
    pub verdict: Value,
    /// Hash of the policy bundle.
    pub policy_hash: String,
    /// Hash of the signer set.
    pub signer_set_hash: String,
    /// Key IDs of the signer set.
    pub signer_key_ids: Vec<String>,
    /// The vulnerability feed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_id: Option<String>,
    /// Its epoch, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_epoch: Option<String>,
    /// When the entry was written (RFC 3339).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it stops being served (RFC 3339).
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// One chunk's line in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleChunkInfo {
    /// Position, from 0.
    pub index: u64,
    /// `sha256:<hex>` of the chunk's bytes.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// The evidence manifest (the seed's camelCase spelling of [`Manifest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleManifest {
    /// The Merkle root over the chunk hashes.
    pub proof_root: String,
    /// Number of chunks.
    pub total_chunks: u64,
    /// Evidence size in bytes.
    pub total_size: u64,
    /// The chunk size it was split with.
    pub chunk_size: u64,
    /// The media type.
    pub content_type: String,
    /// Every chunk, in order.
    pub chunks: Vec<BundleChunkInfo>,
}

impl From<&Manifest> for BundleManifest {
    fn from(m: &Manifest) -> Self {
        BundleManifest {
            proof_root: m.proof_root.clone(),
            total_chunks: m.total_chunks,
            total_size: m.total_size,
            chunk_size: m.chunk_size,
            content_type: m.content_type.clone(),
            chunks: m
                .chunks
                .iter()
                .map(|c| BundleChunkInfo {
                    index: c.index,
                    hash: c.hash.clone(),
                    size: c.size,
                })
                .collect(),
        }
    }
}

impl BundleManifest {
    /// The evidence manifest.
    pub fn to_manifest(&self) -> Manifest {
        Manifest {
            proof_root: self.proof_root.clone(),
            total_chunks: self.total_chunks,
            total_size: self.total_size,
            chunk_size: self.chunk_size,
            content_type: self.content_type.clone(),
            chunks: self
                .chunks
                .iter()
                .map(|c| ChunkInfo {
                    index: c.index,
                    hash: c.hash.clone(),
                    size: c.size,
                })
                .collect(),
        }
    }
}

/// One included chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleChunk {
    /// Position, from 0.
    pub index: u64,
    /// Standard base64 (with padding) of the bytes.
    pub data: String,
    /// `sha256:<hex>` of the bytes.
    pub hash: String,
}

/// The Rekor receipt of the verdict's attestation, with what is needed to check it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRekor {
    /// The receipt as a Sigstore `TransparencyLogEntry` (protobuf-JSON).
    pub log_entry: TransparencyLogEntry,
    /// The log's public key (PEM SubjectPublicKeyInfo).
    pub log_public_key: String,
    /// The log's host name: the checkpoint signature name and origin (or origin prefix).
    pub log_host: String,
}

/// The signature block (not itself signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleSignature {
    /// `ECDSA-P256` or `Ed25519`.
    pub algorithm: String,
    /// Lowercase hex SHA-256 of the signer's DER SubjectPublicKeyInfo.
    pub key_id: String,
    /// Standard base64 of the signature (DER for ECDSA, 64 bytes for Ed25519).
    pub signature: String,
    /// When it was signed (RFC 3339).
    pub signed_at: String,
}

/// A bundle, format v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    /// Always `v1`.
    pub version: String,
    /// When it was exported (RFC 3339).
    pub exported_at: String,
    /// How much evidence it carries.
    pub density: Density,
    /// The seed's digest block.
    pub digest: BundleDigest,
    /// The verdict and the rest of the entry.
    pub entry: BundleEntry,
    /// The evidence manifest.
    pub manifest: BundleManifest,
    /// The included chunks, ascending from index 0.
    pub chunks: Vec<BundleChunk>,
    /// The Rekor receipt of the verdict's attestation, when it was logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekor: Option<BundleRekor>,
    /// The signature, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<BundleSignature>,
}

/// The lowercase hex key ID of a public key: SHA-256 of its DER SubjectPublicKeyInfo.
pub fn key_id(key: &PublicKey) -> String {
    hex::encode(key.spki_sha256())
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::P256 => ALG_P256,
        Algorithm::Ed25519 => ALG_ED25519,
    }
}

/// RFC 8785 canonical JSON of any value.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, BundleError> {
    serde_json_canonicalizer::to_vec(value)
        .map_err(|e| BundleError::Malformed(format!("cannot canonicalise: {e}")))
}

/// The bytes a signature covers: the canonical JSON of the bundle object without its
/// `signature` member.
pub fn signed_bytes(bundle: &Value) -> Result<Vec<u8>, BundleError> {
    let Value::Object(map) = bundle else {
        return Err(BundleError::Malformed("a bundle is a JSON object".into()));
    };
    let mut unsigned = map.clone();
    unsigned.remove("signature");
    canonical_json(&Value::Object(unsigned))
}

impl Bundle {
    /// The head of a bundle (everything but chunks and signature) for an entry and its
    /// evidence manifest.
    pub fn head(
        entry: &Entry,
        manifest: &Manifest,
        density: Density,
        exported_at: chrono::DateTime<chrono::Utc>,
        rekor: Option<BundleRekor>,
    ) -> Result<Bundle, BundleError> {
        let proof_root = entry.proof_root.clone().ok_or_else(|| {
            BundleError::Digest("the entry has no evidence (no proof root)".into())
        })?;
        if proof_root != manifest.proof_root {
            return Err(BundleError::Digest(format!(
                "the entry's proof root {proof_root} is not the manifest's {}",
                manifest.proof_root
            )));
        }
        Ok(Bundle {
            version: BUNDLE_VERSION.to_owned(),
            exported_at: rfc3339(exported_at),
            density,
            digest: BundleDigest {
                veri_key: entry.veri_key.clone(),
                verdict_hash: entry.verdict_hash.clone(),
                proof_root,
                trust_score: entry.trust_score,
            },
            entry: BundleEntry {
                verdict: entry.verdict.clone(),
                policy_hash: entry.policy_hash.clone(),
                signer_set_hash: entry.signer_set_hash.clone(),
                signer_key_ids: entry.signer_key_ids.clone(),
                feed_id: entry.feed_id.clone(),
                feed_epoch: entry.feed_epoch.clone(),
                created_at: entry.created_at,
                expires_at: entry.expires_at,
            },
            manifest: BundleManifest::from(manifest),
            chunks: Vec::new(),
            rekor,
            signature: None,
        })
    }

    /// The cache entry the bundle carries.
    pub fn to_entry(&self) -> Entry {
        Entry {
            veri_key: self.digest.veri_key.clone(),
            verdict: self.entry.verdict.clone(),
            verdict_hash: self.digest.verdict_hash.clone(),
            proof_root: Some(self.digest.proof_root.clone()),
            trust_score: self.digest.trust_score,
            policy_hash: self.entry.policy_hash.clone(),
            signer_set_hash: self.entry.signer_set_hash.clone(),
            signer_key_ids: self.entry.signer_key_ids.clone(),
            feed_id: self.entry.feed_id.clone(),
            feed_epoch: self.entry.feed_epoch.clone(),
            created_at: self.entry.created_at,
            expires_at: self.entry.expires_at,
        }
    }

    /// The bytes of an included chunk.
    pub fn chunk_bytes(chunk: &BundleChunk) -> Result<Vec<u8>, BundleError> {
        B64.decode(&chunk.data).map_err(|_| {
            BundleError::Malformed(format!(
                "chunk {}: `data` is not standard base64",
                chunk.index
            ))
        })
    }
}

/// A timestamp as RFC 3339 UTC with whole seconds, e.g. `2026-11-22T19:30:00Z`.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Where signed bytes go while a bundle is written.
enum SignState {
    /// ECDSA P-256: SHA-256 of the signed bytes, signed as a prehash at the end.
    P256(Box<p256::ecdsa::SigningKey>, Sha256),
    /// Ed25519: pure Ed25519 needs the whole message.
    Ed25519(Box<ed25519_dalek::SigningKey>, Vec<u8>),
}

impl SignState {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            SignState::P256(_, h) => h.update(bytes),
            SignState::Ed25519(_, buf) => buf.extend_from_slice(bytes),
        }
    }

    fn sign(self) -> Result<Vec<u8>, BundleError> {
        match self {
            SignState::P256(key, h) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner as _;
                let digest = h.finalize();
                let sig: p256::ecdsa::Signature = key
                    .sign_prehash(&digest)
                    .map_err(|e| BundleError::Write(format!("ECDSA signing failed: {e}")))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            SignState::Ed25519(key, buf) => {
                use ed25519_dalek::Signer as _;
                Ok(key.sign(&buf).to_bytes().to_vec())
            }
        }
    }
}

/// Writes a bundle as RFC 8785 canonical JSON, one chunk at a time.
///
/// Canonical JSON sorts members, and `chunks` sorts before every other member, so the
/// output is `{"chunks":[` + each chunk + `],` + the canonical rest. The same bytes (without
/// the signature member) feed the signature as they are written.
pub struct BundleWriter<W: std::io::Write> {
    out: W,
    signer: Option<(SignState, PublicKey)>,
    next_index: u64,
    written: u64,
}

impl<W: std::io::Write> BundleWriter<W> {
    /// Starts a bundle; with a key, it will be signed.
    pub fn new(out: W, key: Option<&PrivateKey>) -> Result<Self, BundleError> {
        let signer = key.map(|k| {
            let state = match k {
                PrivateKey::P256(sk) => SignState::P256(Box::new(sk.clone()), Sha256::new()),
                PrivateKey::Ed25519(sk) => SignState::Ed25519(Box::new(sk.clone()), Vec::new()),
            };
            (state, k.public_key())
        });
        let mut w = BundleWriter {
            out,
            signer,
            next_index: 0,
            written: 0,
        };
        w.emit(b"{\"chunks\":[", true)?;
        Ok(w)
    }

    fn emit(&mut self, bytes: &[u8], signed: bool) -> Result<(), BundleError> {
        self.out
            .write_all(bytes)
            .map_err(|e| BundleError::Write(e.to_string()))?;
        self.written += bytes.len() as u64;
        if signed && let Some((s, _)) = &mut self.signer {
            s.update(bytes);
        }
        Ok(())
    }

    /// The output, e.g. to hand on what a `Vec` collected so far.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends the next chunk; chunks must come in index order from 0.
    pub fn write_chunk(&mut self, index: u64, data: &[u8]) -> Result<(), BundleError> {
        if index != self.next_index {
            return Err(BundleError::ChunkList(format!(
                "chunk {index} written where chunk {} belongs",
                self.next_index
            )));
        }
        let chunk = BundleChunk {
            index,
            data: B64.encode(data),
            hash: format_digest(&chunk_digest(data)),
        };
        let json = serde_json::to_value(&chunk)
            .map_err(|e| BundleError::Write(e.to_string()))
            .and_then(|v| canonical_json(&v))?;
        if index > 0 {
            self.emit(b",", true)?;
        }
        self.emit(&json, true)?;
        self.next_index += 1;
        Ok(())
    }

    /// Ends the bundle with its head (`head.chunks` is ignored; `head.signature` is
    /// replaced); returns the writer and the signature block, if signed.
    pub fn finish(
        mut self,
        head: &Bundle,
        signed_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(W, Option<BundleSignature>), BundleError> {
        let mut head = head.clone();
        head.chunks.clear();
        head.signature = None;
        let mut value =
            serde_json::to_value(&head).map_err(|e| BundleError::Write(e.to_string()))?;
        if let Value::Object(map) = &mut value {
            map.remove("chunks");
        }
        let rest = canonical_json(&value)?;
        // `rest` is `{...}` with at least `version`; continue the object after `chunks`.
        let tail = |rest: &[u8]| {
            let mut t = b"],".to_vec();
            t.extend_from_slice(&rest[1..]);
            t
        };
        let signature = match self.signer.take() {
            None => {
                self.emit(&tail(&rest), false)?;
                None
            }
            Some((mut state, public)) => {
                state.update(&tail(&rest));
                let sig = state.sign()?;
                let block = BundleSignature {
                    algorithm: algorithm_name(public.algorithm()).to_owned(),
                    key_id: key_id(&public),
                    signature: B64.encode(sig),
                    signed_at: rfc3339(signed_at),
                };
                if let Value::Object(map) = &mut value {
                    map.insert(
                        "signature".into(),
                        serde_json::to_value(&block)
                            .map_err(|e| BundleError::Write(e.to_string()))?,
                    );
                }
                let rest = canonical_json(&value)?;
                self.emit(&tail(&rest), false)?;
                Some(block)
            }
        };
        self.out
            .flush()
            .map_err(|e| BundleError::Write(e.to_string()))?;
        Ok((self.out, signature))
    }
}

/// Writes a whole bundle (head plus the chunks given as `(index, bytes)`) into memory.
pub fn write_bundle(
    head: &Bundle,
    chunks: &[(u64, Vec<u8>)],
    key: Option<&PrivateKey>,
    signed_at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<u8>, BundleError> {
    let mut w = BundleWriter::new(Vec::new(), key)?;
    for (i, data) in chunks {
        w.write_chunk(*i, data)?;
    }
    Ok(w.finish(head, signed_at)?.0)
}

// ---------------------------------------------------------------------------------------------
// Reading and verifying.

/// Limits applied before and while a bundle is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Largest bundle in bytes.
    pub max_bundle_bytes: u64,
    /// Most chunks its manifest may list.
    pub max_chunks: u64,
}

impl BundleLimits {
    /// Refuses a bundle of `size` bytes before it is read.
    pub fn check_size(&self, size: u64) -> Result<(), BundleError> {
        if size > self.max_bundle_bytes {
            return Err(BundleError::TooLarge {
                size,
                max: self.max_bundle_bytes,
            });
        }
        Ok(())
    }
}

/// How the signature fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// The bundle is not signed and no key was given.
    Unsigned,
    /// Signed, but no key was given: "signature not checked".
    NotChecked {
        /// The key ID the bundle names.
        key_id: String,
    },
    /// Signed and verified with the given key.
    Verified {
        /// The key's ID.
        key_id: String,
        /// `ECDSA-P256` or `Ed25519`.
        algorithm: String,
    },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifiedBundle {
    /// The parsed bundle without its chunks (they are checked as they stream by, not
    /// kept): `chunks` is empty.
    #[serde(skip)]
    pub bundle: Bundle,
    /// The VeriKey.
    pub veri_key: String,
    /// The proof root.
    pub proof_root: String,
    /// The density.
    pub density: Density,
    /// Chunks the manifest lists.
    pub total_chunks: u64,
    /// Chunks included (and verified).
    pub included_chunks: u64,
    /// Whether every chunk is included (then the Merkle root was recomputed from them).
    pub complete: bool,
    /// The signature's status.
    pub signature: SignatureStatus,
    /// Whether a Rekor receipt was present (and verified).
    pub rekor_receipt: bool,
    /// The checks that ran and passed, in order.
    pub checks: Vec<&'static str>,
}

/// What the checks need of one carried chunk; its bytes are hashed as they stream by and
/// dropped.
struct ChunkSeen {
    /// The chunk's `index`.
    index: u64,
    /// The chunk's `hash`, as written.
    hash: String,
    /// SHA-256 and length of the decoded bytes; `None` when `data` is not standard base64.
    bytes: Option<(Hash, u64)>,
}

/// Counts the bytes read and fails the read once they pass the limit.
struct Limited<R> {
    inner: R,
    read: u64,
    max: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(std::io::Error::other("the bundle is over the size limit"));
        }
        Ok(n)
    }
}

/// Where each element of `chunks` goes as it is parsed.
type OnChunk<'a> = &'a mut dyn FnMut(BundleChunk) -> Result<(), BundleError>;

/// Reads the top-level object: every member but `chunks` is collected; each element of
/// `chunks` is handed to `on_chunk` as soon as it is parsed and not kept.
struct Members<'a> {
    on_chunk: OnChunk<'a>,
    failed: &'a mut Option<BundleError>,
}

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = (Map<String, Value>, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = (Map<String, Value>, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a bundle (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rest = Map::new();
        let mut saw_chunks = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "chunks" {
                // A second list could not be checked against the first one's signature bytes.
                if saw_chunks {
                    return Err(serde::de::Error::duplicate_field("chunks"));
                }
                saw_chunks = true;
                map.next_value_seed(Chunks {
                    on_chunk: &mut *self.on_chunk,
                    failed: &mut *self.failed,
                })?;
            } else {
                let value: Value = map.next_value()?;
                rest.insert(key, value);
            }
        }
        Ok((rest, saw_chunks))
    }
}

/// The `chunks` array, element by element.
struct Chunks<'a> {
    on_chunk: OnChunk<'a>,
    failed: &'a mut Option<BundleError>,
}

impl<'de> DeserializeSeed<'de> for Chunks<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Chunks<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of chunks")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(chunk) = seq.next_element::<BundleChunk>()? {
            if let Err(e) = (self.on_chunk)(chunk) {
                *self.failed = Some(e);
                return Err(serde::de::Error::custom("chunk refused"));
            }
        }
        Ok(())
    }
}

/// Reads a bundle from `reader` in one pass: returns its members but `chunks` (and whether
/// `chunks` was there), handing each chunk to `on_chunk` as it is parsed. At most
/// `limits.max_bundle_bytes` are read; memory holds one chunk and the other members.
fn read_members<R: Read>(
    reader: R,
    limits: &BundleLimits,
    on_chunk: OnChunk<'_>,
) -> Result<(Map<String, Value>, bool), BundleError> {
    let mut limited = Limited {
        inner: reader,
        read: 0,
        max: limits.max_bundle_bytes,
    };
    let mut failed = None;
    let result = {
        let buffered = std::io::BufReader::with_capacity(64 * 1024, &mut limited);
        let mut de = serde_json::Deserializer::from_reader(buffered);
        Members {
            on_chunk,
            failed: &mut failed,
        }
        .deserialize(&mut de)
        .and_then(|members| de.end().map(|()| members))
    };
    if limited.read > limits.max_bundle_bytes {
        return Err(BundleError::TooLarge {
            size: limited.read,
            max: limits.max_bundle_bytes,
        });
    }
    if let Some(e) = failed {
        return Err(e);
    }
    result.map_err(|e| {
        if e.is_io() {
            BundleError::Read(e.to_string())
        } else if e.is_data() {
            BundleError::Malformed(e.to_string())
        } else {
            BundleError::Malformed(format!("not JSON: {e}"))
        }
    })
}

/// Feeds the RFC 8785 canonical JSON of a chunk to `out`, without copying its data.
fn canonical_chunk(chunk: &BundleChunk, out: &mut dyn FnMut(&[u8])) -> Result<(), BundleError> {
    out(b"{\"data\":");
    let plain = chunk
        .data
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if plain {
        // Base64 needs no escaping: the canonical string is the text in quotes.
        out(b"\"");
        out(chunk.data.as_bytes());
        out(b"\"");
    } else {
        out(&canonical_json(&Value::String(chunk.data.clone()))?);
    }
    out(b",\"hash\":");
    out(&canonical_json(&Value::String(chunk.hash.clone()))?);
    out(b",\"index\":");
    out(&canonical_json(&Value::from(chunk.index))?);
    out(b"}");
    Ok(())
}

/// The opening of the signed bytes: canonical JSON sorts `chunks` before every other member.
const SIGNED_HEAD: &[u8] = b"{\"chunks\":[";

/// The signed bytes after the chunks: `],` and the canonical JSON of the other members but
/// `signature`, without its opening brace.
fn signed_tail(members: &Map<String, Value>) -> Result<Vec<u8>, BundleError> {
    let mut rest = members.clone();
    rest.remove("chunks");
    rest.remove("signature");
    let canonical = canonical_json(&Value::Object(rest))?;
    let mut tail = b"],".to_vec();
    tail.extend_from_slice(&canonical[1..]);
    Ok(tail)
}

/// The first pass: the members, what each chunk carried, and the SHA-256 of the signed bytes
/// up to the end of the chunks.
struct FirstPass {
    bundle: Bundle,
    members: Map<String, Value>,
    chunks: Vec<ChunkSeen>,
    chunk_count: u64,
    signed_chunks: Sha256,
}

/// Reads a bundle once: limits and format. Chunks are hashed and dropped as they arrive;
/// beyond `limits.max_chunks` they are only counted (such a list fails the chunk list check).
fn first_pass<R: Read>(reader: R, limits: &BundleLimits) -> Result<FirstPass, BundleError> {
    let mut signed = Sha256::new();
    signed.update(SIGNED_HEAD);
    let mut seen: Vec<ChunkSeen> = Vec::new();
    let mut count = 0u64;
    let mut decoded = Vec::new();
    let (mut members, saw_chunks) = read_members(reader, limits, &mut |c: BundleChunk| {
        if count > 0 {
            signed.update(b",");
        }
        canonical_chunk(&c, &mut |b| signed.update(b))?;
        count += 1;
        if seen.len() as u64 >= limits.max_chunks {
            return Ok(());
        }
        decoded.clear();
        let bytes = B64
            .decode_vec(c.data.as_bytes(), &mut decoded)
            .ok()
            .map(|()| (chunk_digest(&decoded), decoded.len() as u64));
        seen.push(ChunkSeen {
            index: c.index,
            hash: c.hash,
            bytes,
        });
        Ok(())
    })?;
    if let Some(v) = members.get("version").and_then(Value::as_str)
        && v != BUNDLE_VERSION
    {
        return Err(BundleError::UnsupportedVersion(v.to_owned()));
    }
    // The typed head is read with an empty chunk list standing in for the streamed one.
    if saw_chunks {
        members.insert("chunks".into(), Value::Array(Vec::new()));
    }
    let value = Value::Object(members);
    let bundle = Bundle::deserialize(&value).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let Value::Object(members) = value else {
        unreachable!("built as an object above");
    };
    if bundle.manifest.total_chunks > limits.max_chunks
        || bundle.manifest.chunks.len() as u64 > limits.max_chunks
    {
        return Err(BundleError::TooManyChunks {
            count: bundle
                .manifest
                .total_chunks
                .max(bundle.manifest.chunks.len() as u64),
            max: limits.max_chunks,
        });
    }
    Ok(FirstPass {
        bundle,
        members,
        chunks: seen,
        chunk_count: count,
        signed_chunks: signed,
    })
}

/// Picks the key to check the signature with: the trusted key whose ID the bundle names,
/// else the first one (which then fails, naming both keys). No trusted keys: not checked.
fn pick_key<'k>(bundle: &Bundle, trusted: &'k [PublicKey]) -> Option<&'k PublicKey> {
    bundle
        .signature
        .as_ref()
        .and_then(|s| trusted.iter().find(|k| key_id(k) == s.key_id))
        .or(trusted.first())
}

/// Checks the signature against `trusted` (when given). P-256 verifies the SHA-256 of the
/// first pass; Ed25519 hashes its `R` before the message, so it reads the bundle again from
/// `open` (and refuses it if its chunks changed in between).
fn check_signature<R: Read>(
    first: &FirstPass,
    trusted: Option<&PublicKey>,
    limits: &BundleLimits,
    open: &mut dyn FnMut() -> std::io::Result<R>,
) -> Result<SignatureStatus, BundleError> {
    let bundle = &first.bundle;
    let Some(key) = trusted else {
        return Ok(match &bundle.signature {
            None => SignatureStatus::Unsigned,
            Some(s) => SignatureStatus::NotChecked {
                key_id: s.key_id.clone(),
            },
        });
    };
    let sig = bundle.signature.as_ref().ok_or(BundleError::Unsigned)?;
    let expected_alg = algorithm_name(key.algorithm());
    if sig.algorithm != expected_alg {
        return Err(BundleError::Algorithm {
            expected: expected_alg.to_owned(),
            found: sig.algorithm.clone(),
        });
    }
    let expected_id = key_id(key);
    if sig.key_id != expected_id {
        return Err(BundleError::WrongKey {
            expected: expected_id,
            found: sig.key_id.clone(),
        });
    }
    let raw = B64.decode(&sig.signature).map_err(|_| {
        BundleError::Malformed("`signature.signature` is not standard base64".into())
    })?;
    let bad = |_: KeyError| BundleError::BadSignature {
        key_id: expected_id.clone(),
    };
    let tail = signed_tail(&first.members)?;
    match key.algorithm() {
        Algorithm::P256 => {
            let mut h = first.signed_chunks.clone();
            h.update(&tail);
            key.verify_sha256_prehash(&h.finalize().into(), &raw)
                .map_err(bad)?;
        }
        Algorithm::Ed25519 => {
            let mut verifier = key.ed25519_stream(&raw).map_err(bad)?;
            let mut again = Sha256::new();
            verifier.update(SIGNED_HEAD);
            again.update(SIGNED_HEAD);
            let mut count = 0u64;
            let reader = open().map_err(|e| BundleError::Read(e.to_string()))?;
            read_members(reader, limits, &mut |c: BundleChunk| {
                let mut both = |b: &[u8]| {
                    verifier.update(b);
                    again.update(b);
                };
                if count > 0 {
                    both(b",");
                }
                count += 1;
                canonical_chunk(&c, &mut both)
            })?;
            if again.finalize() != first.signed_chunks.clone().finalize() {
                return Err(BundleError::Read(
                    "the bundle changed while it was being verified".into(),
                ));
            }
            verifier.update(&tail);
            verifier.verify().map_err(bad)?;
        }
    }
    Ok(SignatureStatus::Verified {
        key_id: expected_id,
        algorithm: expected_alg.to_owned(),
    })
}

/// Checks a fetched chunk against a (checked) manifest: its bytes must hash to the
/// manifest's hash for its index and have its size.
pub fn check_chunk_against_manifest(
    manifest: &Manifest,
    index: u64,
    data: &[u8],
) -> Result<(), BundleError> {
    check_digest_against_manifest(manifest, index, &chunk_digest(data), data.len() as u64)
}

/// [`check_chunk_against_manifest`] for bytes already hashed: `digest` and `size` must be the
/// manifest's for `index`.
fn check_digest_against_manifest(
    manifest: &Manifest,
    index: u64,
    digest: &Hash,
    size: u64,
) -> Result<(), BundleError> {
    let info = manifest
        .chunks
        .get(usize::try_from(index).unwrap_or(usize::MAX))
        .ok_or_else(|| {
            BundleError::ChunkList(format!(
                "chunk {index} is outside the manifest's {} chunks",
                manifest.total_chunks
            ))
        })?;
    let got = format_digest(digest);
    if got != info.hash {
        return Err(BundleError::ChunkHash {
            index,
            why: format!("bytes hash to {got}, the manifest says {}", info.hash),
        });
    }
    if size != info.size {
        return Err(BundleError::ChunkHash {
            index,
            why: format!("{size} bytes, the manifest says {}", info.size),
        });
    }
    Ok(())
}

fn manifest_error(e: EvidenceError) -> BundleError {
    BundleError::Manifest(e.to_string())
}

/// Every offline check of a bundle held in memory ([`verify_bundle_from`] over the bytes).
pub fn verify_bundle(
    bytes: &[u8],
    limits: &BundleLimits,
    trusted: Option<&PublicKey>,
) -> Result<VerifiedBundle, BundleError> {
    limits.check_size(bytes.len() as u64)?;
    verify_bundle_from(
        || Ok(bytes),
        limits,
        trusted.map(std::slice::from_ref).unwrap_or(&[]),
    )
}

/// Every offline check, in order: limits and format, signature (when a key is given: the
/// trusted key whose ID the bundle names, else the first), digest ↔ manifest and verdict,
/// the manifest, the chunk list against the density, every included chunk's hash, the
/// Merkle root (all chunks present) or each chunk's inclusion proof (otherwise), and the
/// Rekor receipt when present.
///
/// The bundle is streamed from `open`: each chunk is decoded, hashed and dropped as it is
/// read, so memory holds one chunk and the manifest, whatever the bundle's size. `open` is
/// called once, or twice for an Ed25519 signature (whose check must see the signature
/// before the chunks, which come first); it must give the same bytes each time.
pub fn verify_bundle_from<R: Read>(
    mut open: impl FnMut() -> std::io::Result<R>,
    limits: &BundleLimits,
    trusted: &[PublicKey],
) -> Result<VerifiedBundle, BundleError> {
    let mut checks = vec!["limits", "format"];
    let reader = open().map_err(|e| BundleError::Read(e.to_string()))?;
    let first = first_pass(reader, limits)?;
    let key = pick_key(&first.bundle, trusted);
    let signature = check_signature(&first, key, limits, &mut open)?;
    if matches!(signature, SignatureStatus::Verified { .. }) {
        checks.push("signature");
    }
    let FirstPass {
        bundle,
        chunks,
        chunk_count,
        ..
    } = first;

    // Digest: the digest block, the manifest and the verdict agree.
    let d = &bundle.digest;
    if d.proof_root != bundle.manifest.proof_root {
        return Err(BundleError::Digest(format!(
            "digest proof root {} is not the manifest's {}",
            d.proof_root, bundle.manifest.proof_root
        )));
    }
    let vh = verdict_hash(&bundle.entry.verdict);
    if vh != d.verdict_hash {
        return Err(BundleError::Digest(format!(
            "verdict hashes to {vh}, the digest says {}",
            d.verdict_hash
        )));
    }
    if !(0..=100).contains(&d.trust_score) {
        return Err(BundleError::Digest(format!(
            "trust score {} is outside 0–100",
            d.trust_score
        )));
    }
    bundle
        .to_entry()
        .validate()
        .map_err(|e| BundleError::Digest(format!("the entry is invalid: {e}")))?;
    checks.push("digest");

    // Manifest: complete, ordered, sizes add up, root over the chunk hashes.
    let manifest = bundle.manifest.to_manifest();
    parse_digest(&manifest.proof_root).map_err(manifest_error)?;
    manifest.check().map_err(manifest_error)?;
    checks.push("manifest");

    // Chunk list: exactly the density's leading chunks, ascending from 0.
    let want = bundle.density.included_chunks(manifest.total_chunks);
    if chunk_count != want {
        return Err(BundleError::ChunkList(format!(
            "a {} bundle of {} chunks carries {want}, this one carries {chunk_count}",
            bundle.density.as_str(),
            manifest.total_chunks,
        )));
    }
    if let Some((pos, c)) = chunks
        .iter()
        .enumerate()
        .find(|(i, c)| c.index != *i as u64)
    {
        return Err(BundleError::ChunkList(format!(
            "chunk at position {pos} has index {}; chunks must be in order from 0",
            c.index
        )));
    }
    checks.push("chunk_list");

    // Chunk hashes, from the digests taken while the chunks streamed by.
    let complete = want == manifest.total_chunks;
    let mut digests = Vec::with_capacity(chunks.len());
    for c in &chunks {
        let Some((digest, size)) = c.bytes else {
            return Err(BundleError::Malformed(format!(
                "chunk {}: `data` is not standard base64",
                c.index
            )));
        };
        if format_digest(&digest) != c.hash {
            return Err(BundleError::ChunkHash {
                index: c.index,
                why: format!(
                    "bytes hash to {}, the chunk says {}",
                    format_digest(&digest),
                    c.hash
                ),
            });
        }
        check_digest_against_manifest(&manifest, c.index, &digest, size)?;
        digests.push(digest);
    }
    checks.push("chunk_hash");

    if complete {
        let computed = format_digest(&root_from_chunk_digests(&digests));
        if computed != manifest.proof_root {
            return Err(BundleError::MerkleRoot {
                computed,
                expected: manifest.proof_root.clone(),
            });
        }
        checks.push("merkle_root");
    } else {
        for (c, digest) in chunks.iter().zip(&digests) {
            let inclusion = |e: EvidenceError| BundleError::ChunkInclusion {
                index: c.index,
                why: e.to_string(),
            };
            manifest
                .chunk_proof(c.index)
                .and_then(|proof| proof.verify_digest(digest))
                .map_err(inclusion)?;
        }
        checks.push("chunk_inclusion");
    }

    let rekor_receipt = match &bundle.rekor {
        None => false,
        Some(r) => {
            verify_rekor(r)?;
            checks.push("rekor_receipt");
            true
        }
    };

    Ok(VerifiedBundle {
        veri_key: bundle.digest.veri_key.clone(),
        proof_root: manifest.proof_root.clone(),
        density: bundle.density,
        total_chunks: manifest.total_chunks,
        included_chunks: want,
        complete,
        signature,
        rekor_receipt,
        checks,
        bundle,
    })
}

/// Reads the chunks of a verified bundle again, for storing them: each is decoded, checked
/// against `manifest` (the verified bundle's) and handed to `sink` in order, so memory holds
/// one chunk at a time. Refuses a bundle whose chunks are not the manifest's (e.g. one that
/// changed since it was verified).
pub fn read_chunks<R: Read>(
    reader: R,
    limits: &BundleLimits,
    manifest: &Manifest,
    mut sink: impl FnMut(u64, Vec<u8>) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let mut next = 0u64;
    read_members(reader, limits, &mut |c: BundleChunk| {
        if c.index != next {
            return Err(BundleError::ChunkList(format!(
                "chunk at position {next} has index {}; chunks must be in order from 0",
                c.index
            )));
        }
        next += 1;
        let data = Bundle::chunk_bytes(&c)?;
        drop(c);
        check_chunk_against_manifest(manifest, next - 1, &data)?;
        sink(next - 1, data)
    })?;
    Ok(())
}

/// Verifies the bundled Rekor receipt against the bundled log key and host.
pub fn verify_rekor(r: &BundleRekor) -> Result<(), BundleError> {
    let bad = |e: &dyn std::fmt::Display| BundleError::Receipt(e.to_string());
    let key = PublicKey::from_pem(&r.log_public_key).map_err(|e| bad(&e))?;
    let verifier = Verifier::from_public_key(&r.log_host, key.clone()).map_err(|e| bad(&e))?;
    let log = TrustedLog {
        log_id: verifier.key_id().to_vec(),
        key,
        host: r.log_host.clone(),
    };
    let receipt = Receipt::from_tle(&r.log_entry).map_err(|e: ReceiptError| bad(&e))?;
    receipt.verify(&log).map_err(|e| bad(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evidence::{EvidenceLimits, chunk_all};
    use crate::domain::keys::os_random;

    const LIMITS: BundleLimits = BundleLimits {
        max_bundle_bytes: 1 << 24,
        max_chunks: 1000,
    };

    fn entry(proof_root: &str) -> Entry {
        let verdict = serde_json::json!({"decision": "pass", "score": 0.5, "é": [1, 2]});
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .to_utc();
        Entry {
            veri_key: format!("sha256:{}", "ab".repeat(32)),
            verdict_hash: verdict_hash(&verdict),
            verdict,
            proof_root: Some(proof_root.to_owned()),
            trust_score: 85,
            policy_hash: "sha256:policy".into(),
            signer_set_hash: "sha256:signers".into(),
            signer_key_ids: vec!["key-1".into()],
            feed_id: None,
            feed_epoch: Some("2026.11.22".into()),
            created_at: t,
            expires_at: t + chrono::Duration::hours(24),
        }
    }

    fn sample(density: Density, n_bytes: usize) -> (Bundle, Vec<(u64, Vec<u8>)>) {
        let data: Vec<u8> = (0..n_bytes).map(|i| (i * 31 % 251) as u8).collect();
        let limits = EvidenceLimits::new(10, 1000).unwrap();
        let (chunks, m) = chunk_all(limits, "text/plain", &data).unwrap();
        let head = Bundle::head(&entry(&m.proof_root), &m, density, epoch(), None).unwrap();
        let n = density.included_chunks(m.total_chunks) as usize;
        let chunks = chunks[..n]
            .iter()
            .map(|c| (c.index, c.data.clone()))
            .collect();
        (head, chunks)
    }

    fn epoch() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn densities_pick_leading_chunks() {
        assert_eq!(Density::Lite.included_chunks(42), 0);
        assert_eq!(Density::Standard.included_chunks(42), 5);
        assert_eq!(Density::Standard.included_chunks(3), 1);
        assert_eq!(Density::Standard.included_chunks(10), 1);
        assert_eq!(Density::Standard.included_chunks(11), 2);
        assert_eq!(Density::Standard.included_chunks(0), 0);
        assert_eq!(Density::Strict.included_chunks(42), 42);
    }

    #[test]
    fn written_bundle_is_canonical_and_verifies_at_each_density() {
        for density in [Density::Lite, Density::Standard, Density::Strict] {
            let (head, chunks) = sample(density, 205);
            let bytes = write_bundle(&head, &chunks, None, epoch()).unwrap();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(canonical_json(&value).unwrap(), bytes, "{density:?}");
            let v = verify_bundle(&bytes, &LIMITS, None).unwrap();
            assert_eq!(v.complete, density == Density::Strict);
            assert_eq!(v.signature, SignatureStatus::Unsigned);
        }
    }

    #[test]
    fn signatures_verify_with_the_right_key_only() {
        for alg in [Algorithm::P256, Algorithm::Ed25519] {
            let key = PrivateKey::generate(alg, &mut os_random).unwrap();
            let other = PrivateKey::generate(alg, &mut os_random).unwrap();
            let (head, chunks) = sample(Density::Standard, 333);
            let bytes = write_bundle(&head, &chunks, Some(&key), epoch()).unwrap();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(canonical_json(&value).unwrap(), bytes);
            // The signature is over the canonical bytes without `signature`.
            let sig = B64
                .decode(value["signature"]["signature"].as_str().unwrap())
                .unwrap();
            key.public_key()
                .verify(&signed_bytes(&value).unwrap(), &sig)
                .unwrap();
            let ok = verify_bundle(&bytes, &LIMITS, Some(&key.public_key())).unwrap();
            assert!(matches!(ok.signature, SignatureStatus::Verified { .. }));
            let not = verify_bundle(&bytes, &LIMITS, None).unwrap();
            assert!(matches!(not.signature, SignatureStatus::NotChecked { .. }));
            let wrong = verify_bundle(&bytes, &LIMITS, Some(&other.public_key())).unwrap_err();
            assert_eq!(wrong.check(), "signature");
            // A signature by another key, relabelled with the trusted key's ID.
            let forged = write_bundle(&head, &chunks, Some(&other), epoch()).unwrap();
            let mut v: Value = serde_json::from_slice(&forged).unwrap();
            v["signature"]["keyId"] = Value::String(key_id(&key.public_key()));
            let e = verify_bundle(
                &serde_json::to_vec(&v).unwrap(),
                &LIMITS,
                Some(&key.public_key()),
            )
            .unwrap_err();
            assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
            // Any change to a signed member breaks the signature.
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            v["digest"]["trustScore"] = Value::from(99);
            let e = verify_bundle(
                &serde_json::to_vec(&v).unwrap(),
                &LIMITS,
                Some(&key.public_key()),
            )
            .unwrap_err();
            assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
        }
    }

    fn tampered(f: impl FnOnce(&mut Value)) -> BundleError {
        let (head, chunks) = sample(Density::Strict, 95);
        let bytes = write_bundle(&head, &chunks, None, epoch()).unwrap();
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        f(&mut v);
        verify_bundle(&serde_json::to_vec(&v).unwrap(), &LIMITS, None).unwrap_err()
    }

    #[test]
    fn tampering_names_the_failing_check() {
        let e = tampered(|v| {
            let data = B64
                .decode(v["chunks"][3]["data"].as_str().unwrap())
                .unwrap();
            let mut d = data.clone();
            d[0] ^= 1;
            v["chunks"][3]["data"] = Value::String(B64.encode(d));
        });
        assert_eq!(e.check(), "chunk_hash", "{e}");
        let e = tampered(|v| {
            v["manifest"]["chunks"][2]["hash"] = Value::String(format_digest(&[7u8; 32]));
        });
        assert_eq!(e.check(), "manifest", "{e}");
        let e = tampered(|v| v["digest"]["proofRoot"] = Value::String(format_digest(&[1; 32])));
        assert_eq!(e.check(), "digest", "{e}");
        let e = tampered(|v| v["digest"]["verdictHash"] = Value::String(format_digest(&[1; 32])));
        assert_eq!(e.check(), "digest", "{e}");
        let e = tampered(|v| {
            let chunks = v["chunks"].as_array_mut().unwrap();
            chunks.swap(0, 1);
        });
        assert_eq!(e.check(), "chunk_list", "{e}");
        let e = tampered(|v| {
            let chunks = v["manifest"]["chunks"].as_array_mut().unwrap();
            chunks.swap(0, 1);
        });
        assert_eq!(e.check(), "manifest", "{e}");
        let e = tampered(|v| v["version"] = Value::String("v2".into()));
        assert_eq!(e.check(), "format", "{e}");
        let e = tampered(|v| v["density"] = Value::String("lite".into()));
        assert_eq!(e.check(), "chunk_list", "{e}");
    }

    #[test]
    fn truncated_and_oversize_bundles_are_refused() {
        let (head, chunks) = sample(Density::Strict, 95);
        let bytes = write_bundle(&head, &chunks, None, epoch()).unwrap();
        let e = verify_bundle(&bytes[..bytes.len() - 10], &LIMITS, None).unwrap_err();
        assert_eq!(e.check(), "format");
        let small = BundleLimits {
            max_bundle_bytes: 100,
            max_chunks: 1000,
        };
        assert!(matches!(
            verify_bundle(&bytes, &small, None),
            Err(BundleError::TooLarge { .. })
        ));
        let few = BundleLimits {
            max_bundle_bytes: 1 << 20,
            max_chunks: 3,
        };
        assert!(matches!(
            verify_bundle(&bytes, &few, None),
            Err(BundleError::TooManyChunks { .. })
        ));
    }

    /// Hands out its bytes a few at a time, as a slow file or socket would.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn streamed(
        bytes: &[u8],
        limits: &BundleLimits,
        trusted: Option<&PublicKey>,
    ) -> Result<VerifiedBundle, BundleError> {
        let keys = trusted.map(std::slice::from_ref).unwrap_or(&[]);
        verify_bundle_from(|| Ok(Trickle(bytes)), limits, keys)
    }

    /// The same bundle with its members in another order and indented: what a verifier must
    /// canonicalise before checking the signature.
    fn reordered(bytes: &[u8]) -> Vec<u8> {
        let Value::Object(map) = serde_json::from_slice(bytes).unwrap() else {
            panic!("an object")
        };
        let members: Vec<String> = map
            .iter()
            .rev()
            .map(|(k, v)| {
                format!(
                    "{}: {}",
                    serde_json::to_string(k).unwrap(),
                    serde_json::to_string_pretty(v).unwrap()
                )
            })
            .collect();
        format!("{{\n  {}\n}}\n", members.join(",\n  ")).into_bytes()
    }

    #[test]
    fn streamed_verification_agrees_with_the_slice_for_valid_bundles() {
        for alg in [Algorithm::P256, Algorithm::Ed25519] {
            let key = PrivateKey::generate(alg, &mut os_random).unwrap();
            for density in [Density::Lite, Density::Standard, Density::Strict] {
                let (head, chunks) = sample(density, 205);
                let bytes = write_bundle(&head, &chunks, Some(&key), epoch()).unwrap();
                let public = key.public_key();
                let whole = verify_bundle(&bytes, &LIMITS, Some(&public)).unwrap();
                assert!(matches!(whole.signature, SignatureStatus::Verified { .. }));
                assert!(whole.bundle.chunks.is_empty(), "chunks are not kept");
                assert_eq!(streamed(&bytes, &LIMITS, Some(&public)).unwrap(), whole);
                // Not canonical on disk (chunks last, indented): the signature still verifies.
                let other = reordered(&bytes);
                assert!(!other.starts_with(b"{\"chunks\""));
                assert_eq!(streamed(&other, &LIMITS, Some(&public)).unwrap(), whole);
            }
        }
    }

    #[test]
    fn streamed_verification_names_the_same_check_for_each_tampering() {
        type Tamper = fn(&mut Value);
        let cases: [(Tamper, &str); 8] = [
            (
                |v| {
                    let d = B64
                        .decode(v["chunks"][3]["data"].as_str().unwrap())
                        .unwrap();
                    let mut d = d.clone();
                    d[0] ^= 1;
                    v["chunks"][3]["data"] = Value::String(B64.encode(d));
                },
                "chunk_hash",
            ),
            (
                |v| v["chunks"][3]["data"] = Value::String("not base64!".into()),
                "format",
            ),
            (
                |v| v["manifest"]["chunks"][2]["hash"] = Value::String(format_digest(&[7; 32])),
                "manifest",
            ),
            (
                |v| v["digest"]["verdictHash"] = Value::String(format_digest(&[1; 32])),
                "digest",
            ),
            (
                |v| v["chunks"].as_array_mut().unwrap().swap(0, 1),
                "chunk_list",
            ),
            (|v| v["version"] = Value::String("v2".into()), "format"),
            (
                |v| v["density"] = Value::String("lite".into()),
                "chunk_list",
            ),
            (
                |v| {
                    let extra = v["chunks"][0].clone();
                    v["chunks"].as_array_mut().unwrap().push(extra);
                },
                "chunk_list",
            ),
        ];
        let key = PrivateKey::generate(Algorithm::Ed25519, &mut os_random).unwrap();
        let public = key.public_key();
        let (head, chunks) = sample(Density::Strict, 95);
        for signed in [false, true] {
            let bytes = write_bundle(&head, &chunks, signed.then_some(&key), epoch()).unwrap();
            for (tamper, check) in cases {
                let mut v: Value = serde_json::from_slice(&bytes).unwrap();
                tamper(&mut v);
                let tampered = serde_json::to_vec(&v).unwrap();
                let whole = verify_bundle(&tampered, &LIMITS, None).unwrap_err();
                assert_eq!(whole.check(), check, "{whole}");
                assert_eq!(streamed(&tampered, &LIMITS, None).unwrap_err(), whole);
                if signed {
                    // With the key, any change to a signed member fails the signature first;
                    // only a bad version is a format error before it.
                    let e = streamed(&tampered, &LIMITS, Some(&public)).unwrap_err();
                    let expect = if v["version"] == "v1" {
                        "signature"
                    } else {
                        "format"
                    };
                    assert_eq!(e.check(), expect, "{e}");
                }
            }
        }
    }

    #[test]
    fn streamed_chunk_lists_past_the_limit_are_only_counted() {
        // Ten chunks listed twenty times: refused at the chunk list, naming the count, with
        // no more than `max_chunks` of them remembered.
        let (head, chunks) = sample(Density::Strict, 95);
        let doubled: Vec<(u64, Vec<u8>)> = chunks.iter().chain(&chunks).cloned().collect();
        let mut v: Value =
            serde_json::from_slice(&write_bundle(&head, &chunks, None, epoch()).unwrap()).unwrap();
        let listed: Vec<Value> = doubled
            .iter()
            .map(|(i, d)| {
                serde_json::json!({"index": i, "data": B64.encode(d), "hash": format_digest(&chunk_digest(d))})
            })
            .collect();
        v["chunks"] = Value::Array(listed);
        let limits = BundleLimits {
            max_bundle_bytes: 1 << 20,
            max_chunks: 10,
        };
        let e = streamed(&serde_json::to_vec(&v).unwrap(), &limits, None).unwrap_err();
        assert_eq!(e.check(), "chunk_list", "{e}");
        assert!(e.to_string().contains("carries 20"), "{e}");
    }

    #[test]
    fn streamed_bundles_over_the_size_limit_or_malformed_are_refused() {
        let (head, chunks) = sample(Density::Strict, 95);
        let bytes = write_bundle(&head, &chunks, None, epoch()).unwrap();
        let small = BundleLimits {
            max_bundle_bytes: 100,
            max_chunks: 1000,
        };
        // No size known up front: the read stops at the limit.
        assert!(matches!(
            streamed(&bytes, &small, None),
            Err(BundleError::TooLarge { .. })
        ));
        let mut twice = b"{\"chunks\":[],".to_vec();
        twice.extend_from_slice(&bytes[1..]);
        let e = streamed(&twice, &LIMITS, None).unwrap_err();
        assert_eq!(e.check(), "format", "{e}");
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b" {}");
        assert_eq!(
            streamed(&trailing, &LIMITS, None).unwrap_err().check(),
            "format"
        );
        assert_eq!(
            streamed(b"[1, 2]", &LIMITS, None).unwrap_err().check(),
            "format"
        );
        let e = verify_bundle_from(
            || Err::<&[u8], _>(std::io::Error::other("gone")),
            &LIMITS,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.check(), "read", "{e}");
    }

    #[test]
    fn truncations_and_byte_flips_are_refused_the_same_however_they_are_read() {
        let key = PrivateKey::generate(Algorithm::Ed25519, &mut os_random).unwrap();
        let public = key.public_key();
        let (head, chunks) = sample(Density::Standard, 95);
        let bytes = write_bundle(&head, &chunks, Some(&key), epoch()).unwrap();
        // Every fifth byte keeps the test quick; the positions cover every member.
        for i in (0..bytes.len()).step_by(5) {
            let cut = &bytes[..i];
            assert_eq!(
                streamed(cut, &LIMITS, Some(&public)),
                verify_bundle(cut, &LIMITS, Some(&public)),
                "cut at {i}"
            );
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x20;
            let whole = verify_bundle(&flipped, &LIMITS, Some(&public));
            assert_eq!(
                streamed(&flipped, &LIMITS, Some(&public)),
                whole,
                "flip at {i}"
            );
            // A flip may only land in insignificant bytes (an ASCII letter's case in a key
            // would make it unknown), so anything that still verifies must be the same bundle.
            if let Ok(v) = whole {
                assert_eq!(v.veri_key, head.digest.veri_key, "flip at {i}");
            }
        }
    }

    #[test]
    fn ed25519_second_read_must_see_the_same_chunks() {
        let key = PrivateKey::generate(Algorithm::Ed25519, &mut os_random).unwrap();
        let (head, chunks) = sample(Density::Strict, 95);
        let bytes = write_bundle(&head, &chunks, Some(&key), epoch()).unwrap();
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["chunks"][1]["hash"] = Value::String(format_digest(&[3; 32]));
        let changed = serde_json::to_vec(&v).unwrap();
        let mut reads = 0;
        let e = verify_bundle_from(
            || {
                reads += 1;
                Ok(if reads == 1 { &bytes[..] } else { &changed[..] })
            },
            &LIMITS,
            &[key.public_key()],
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::Read(_)), "{e}");
    }

    #[test]
    fn read_chunks_hands_over_checked_chunks_in_order() {
        let (head, chunks) = sample(Density::Standard, 333);
        let bytes = write_bundle(&head, &chunks, None, epoch()).unwrap();
        let manifest = head.manifest.to_manifest();
        let mut got = Vec::new();
        read_chunks(Trickle(&bytes), &LIMITS, &manifest, |i, d| {
            got.push((i, d));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, chunks);
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["chunks"][0]["data"] = Value::String(B64.encode(b"other bytes"));
        let e = read_chunks(
            &serde_json::to_vec(&v).unwrap()[..],
            &LIMITS,
            &manifest,
            |_, _| Ok(()),
        )
        .unwrap_err();
        assert_eq!(e.check(), "chunk_hash", "{e}");
    }

    #[test]
    fn fetched_chunks_are_checked_against_the_manifest() {
        let limits = EvidenceLimits::new(4, 10).unwrap();
        let (chunks, m) = chunk_all(limits, "x", b"hello world").unwrap();
        check_chunk_against_manifest(&m, 1, &chunks[1].data).unwrap();
        assert_eq!(
            check_chunk_against_manifest(&m, 1, b"o wX")
                .unwrap_err()
                .check(),
            "chunk_hash"
        );
        assert_eq!(
            check_chunk_against_manifest(&m, 9, b"x")
                .unwrap_err()
                .check(),
            "chunk_list"
        );
    }
}

/// The worked example of `docs/bundle-format.md`, rebuilt from its inputs: the document's
/// bytes must be exactly what this code writes.
#[cfg(test)]
mod documented_example {
    use super::*;
    use crate::domain::evidence::{EvidenceLimits, chunk_all};

    const DOC: &str = include_str!("../../../docs/bundle-format.md");

    /// The RFC 8032 §7.1 test 1 secret key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn block<'a>(marker: &str) -> &'a str {
        let start = DOC
            .find(marker)
            .unwrap_or_else(|| panic!("marker {marker} missing"));
        let rest = &DOC[start..];
        let open = rest.find("```").unwrap();
        let body = &rest[open..];
        let body = &body[body.find('\n').unwrap() + 1..];
        &body[..body.find("\n```").unwrap()]
    }

    fn example() -> (Vec<u8>, Vec<u8>, PrivateKey) {
        let seed: [u8; 32] = hex::decode(SEED).unwrap().try_into().unwrap();
        let key = PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed));
        let limits = EvidenceLimits::new(4, 10).unwrap();
        let (chunks, manifest) = chunk_all(limits, "text/plain", b"hello world").unwrap();
        let verdict = serde_json::json!({"decision": "pass", "findings": 0});
        let entry = Entry {
            veri_key: format!("sha256:{}", "5e".repeat(32)),
            verdict_hash: verdict_hash(&verdict),
            verdict,
            proof_root: Some(manifest.proof_root.clone()),
            trust_score: 85,
            policy_hash: "sha256:policy".into(),
            signer_set_hash: "sha256:signers".into(),
            signer_key_ids: vec!["key-1".into()],
            feed_id: None,
            feed_epoch: None,
            created_at: t("2026-11-22T10:00:00Z"),
            expires_at: t("2026-11-23T10:00:00Z"),
        };
        let head = Bundle::head(
            &entry,
            &manifest,
            Density::Standard,
            t("2026-11-22T12:00:00Z"),
            None,
        )
        .unwrap();
        let carried: Vec<(u64, Vec<u8>)> = chunks[..1]
            .iter()
            .map(|c| (c.index, c.data.clone()))
            .collect();
        let bytes = write_bundle(&head, &carried, Some(&key), t("2026-11-22T12:00:01Z")).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        (bytes, signed_bytes(&value).unwrap(), key)
    }

    #[test]
    fn document_shows_the_bytes_this_code_writes() {
        let (bytes, signed, key) = example();
        let bytes = String::from_utf8(bytes).unwrap();
        let signed = String::from_utf8(signed).unwrap();
        assert_eq!(block("<!-- example:bundle -->"), bytes, "bundle:\n{bytes}");
        assert_eq!(
            block("<!-- example:signed -->"),
            signed,
            "signed:\n{signed}"
        );
        let public = key.public_key().to_pem().unwrap();
        assert_eq!(
            block("<!-- example:public-key -->"),
            public.trim_end(),
            "key:\n{public}"
        );
        let v = verify_bundle(
            bytes.as_bytes(),
            &BundleLimits {
                max_bundle_bytes: 1 << 20,
                max_chunks: 10,
            },
            Some(&key.public_key()),
        )
        .unwrap();
        assert!(matches!(v.signature, SignatureStatus::Verified { .. }));
    }
}
