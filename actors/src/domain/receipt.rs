//! Rekor receipts: proof that an entry is in a transparency log.
//!
//! One [`Receipt`] type converts to and from both wire forms:
//! - the Rekor v1 REST `LogEntry` ([`V1LogEntry`]): hex log ID, root and hashes, base64 body
//!   and SET, a **virtual** `logIndex` across shards but a **shard-local** index, size and root
//!   in the inclusion proof, keyed by an 80-hex entry ID (`%016x` tree ID + 64-hex UUID);
//! - the Sigstore bundle / Rekor v2 `TransparencyLogEntry` in protobuf-JSON
//!   ([`TransparencyLogEntry`]): int64 values as decimal strings, bytes as standard base64.
//!
//! Verification ([`Receipt::verify`]) checks the RFC 6962 inclusion of the leaf hash of the
//! canonical body with the shard-local index, the checkpoint's signature by the trusted log key
//! and its origin, that the checkpoint's root and size equal the proof's, and for Rekor v1 the
//! signed entry timestamp (SET) over the virtual index.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::keys::{PrivateKey, PublicKey};
use super::merkle::{self, Hash};
use super::note::{self, Checkpoint, NoteError, Verifier};

/// Why a receipt could not be decoded or did not verify. Each verification variant names the
/// check that failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// A field is missing or malformed in the wire form.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// The entry's log ID is not the trusted log's.
    #[error("log ID check failed: entry is from log {found}, expected {expected}")]
    LogIdMismatch {
        /// Hex of the trusted log ID.
        expected: String,
        /// Hex of the entry's log ID.
        found: String,
    },
    /// The entry carries no inclusion proof.
    #[error("inclusion proof check failed: the entry has no inclusion proof")]
    MissingInclusionProof,
    /// The inclusion proof does not lead from the leaf to the root.
    #[error("inclusion proof check failed: {0}")]
    InclusionProof(merkle::MerkleError),
    /// The inclusion proof carries no signed checkpoint.
    #[error("checkpoint check failed: the inclusion proof has no checkpoint")]
    MissingCheckpoint,
    /// The checkpoint is malformed or its signature does not verify.
    #[error("checkpoint check failed: {0}")]
    Checkpoint(NoteError),
    /// The checkpoint's origin is not the trusted log's.
    #[error("checkpoint origin check failed: {found:?} is not {expected}")]
    CheckpointOrigin {
        /// What the origin must look like.
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
    /// The checkpoint's root hash or tree size differs from the inclusion proof's.
    #[error(
        "checkpoint/proof consistency check failed: checkpoint has size {checkpoint_size} root \
         {checkpoint_root}, proof has size {proof_size} root {proof_root}"
    )]
    CheckpointMismatch {
        /// Checkpoint tree size.
        checkpoint_size: u64,
        /// Hex of the checkpoint root.
        checkpoint_root: String,
        /// Proof tree size.
        proof_size: u64,
        /// Hex of the proof root.
        proof_root: String,
    },
    /// A Rekor v1 entry with an integrated time carries no SET.
    #[error("signed entry timestamp check failed: the entry has no SET")]
    MissingSet,
    /// The SET does not verify with the log key.
    #[error("signed entry timestamp check failed: signature does not verify")]
    InvalidSet,
}

/// The kind and version of a log entry body, e.g. `hashedrekord` `0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindVersion {
    /// The entry kind.
    pub kind: String,
    /// The entry version.
    pub version: String,
}

/// An RFC 6962 inclusion proof as Rekor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Leaf index inside the shard's tree (Rekor v1: shard-local, not the virtual index).
    pub log_index: u64,
    /// Size of the shard's tree the proof is for.
    pub tree_size: u64,
    /// The root hash the proof leads to.
    pub root_hash: Hash,
    /// Sibling hashes from leaf to root.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint (note text) for `tree_size` and `root_hash`.
    pub checkpoint: Option<String>,
}

/// A transparency-log receipt, independent of the wire form it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The log ID: SHA-256 of the log key's SPKI (v1), or the checkpoint key ID (v2).
    pub log_id: Vec<u8>,
    /// The entry's log index: virtual (across shards) for Rekor v1, the leaf index for v2.
    pub log_index: u64,
    /// The Rekor v1 shard tree ID, when known (from the entry ID or the checkpoint origin).
    pub tree_id: Option<u64>,
    /// Unix seconds when Rekor v1 integrated the entry; `None` for Rekor v2, which has none.
    pub integrated_time: Option<i64>,
    /// The kind and version of the body, when reported.
    pub kind_version: Option<KindVersion>,
    /// The canonical entry body: the exact bytes of the Merkle leaf.
    pub canonical_body: Vec<u8>,
    /// The inclusion proof.
    pub inclusion_proof: Option<InclusionProof>,
    /// The Rekor v1 signed entry timestamp (DER ECDSA), if present.
    pub signed_entry_timestamp: Option<Vec<u8>>,
}

/// The log a receipt must come from.
#[derive(Debug, Clone)]
pub struct TrustedLog {
    /// The expected log ID.
    pub log_id: Vec<u8>,
    /// The log's public key: signs checkpoints, and SETs for Rekor v1.
    pub key: PublicKey,
    /// The log's host name (scheme-less, with port if any), e.g. `rekor.sigstore.dev`. It is
    /// the checkpoint signature name, and the checkpoint origin is either exactly this
    /// (Rekor v2, C2SP logs) or `<host> - <tree ID>` (Rekor v1).
    pub host: String,
}

impl TrustedLog {
    /// Whether `origin` is an acceptable checkpoint origin for this log; returns the Rekor v1
    /// tree ID when the origin carries one.
    fn check_origin(&self, origin: &str) -> Result<Option<u64>, ReceiptError> {
        if origin == self.host {
            return Ok(None);
        }
        let tree = origin
            .strip_prefix(self.host.as_str())
            .and_then(|rest| rest.strip_prefix(" - "))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|id| id.parse::<u64>().ok());
        match tree {
            Some(id) => Ok(Some(id)),
            None => Err(ReceiptError::CheckpointOrigin {
                expected: format!("{0:?} or \"{0} - <tree ID>\"", self.host),
                found: origin.to_owned(),
            }),
        }
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The verified checkpoint the entry is included in.
    pub checkpoint: Checkpoint,
    /// The integrated time, present only when a SET vouched for it.
    pub integrated_time: Option<i64>,
}

impl Receipt {
    /// The RFC 6962 leaf hash of the canonical body.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.canonical_body)
    }

    /// The 64-hex entry UUID (hex of the leaf hash).
    pub fn uuid(&self) -> String {
        hex::encode(self.leaf_hash())
    }

    /// The 80-hex Rekor v1 entry ID (`%016x` tree ID + UUID), or the UUID if the tree is
    /// unknown.
    pub fn entry_id(&self) -> String {
        match self.tree_id {
            Some(tree) => format!("{tree:016x}{}", self.uuid()),
            None => self.uuid(),
        }
    }

    /// The exact bytes a Rekor v1 SET signs: RFC 8785 JSON of body, integratedTime, logID and
    /// the **virtual** logIndex. All values are ASCII strings or integers, so sorted-key
    /// compact JSON is the canonical form.
    pub fn set_payload(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct SetPayload<'a> {
            body: &'a str,
            #[serde(rename = "integratedTime")]
            integrated_time: i64,
            #[serde(rename = "logID")]
            log_id: &'a str,
            #[serde(rename = "logIndex")]
            log_index: u64,
        }
        let body = B64.encode(&self.canonical_body);
        let log_id = hex::encode(&self.log_id);
        let payload = SetPayload {
            body: &body,
            integrated_time: self.integrated_time.unwrap_or(0),
            log_id: &log_id,
            log_index: self.log_index,
        };
        // Strings and integers always serialise.
        serde_json::to_vec(&payload).unwrap_or_default()
    }

    /// Signs the SET with the log's key (for the local Rekor-compatible log).
    pub fn sign_set(&mut self, key: &PrivateKey) {
        self.signed_entry_timestamp = Some(key.sign(&self.set_payload()));
    }

    /// Checks the SET with the log key.
    pub fn verify_set(&self, key: &PublicKey) -> Result<(), ReceiptError> {
        let set = self
            .signed_entry_timestamp
            .as_ref()
            .ok_or(ReceiptError::MissingSet)?;
        key.verify(&self.set_payload(), set)
            .map_err(|_| ReceiptError::InvalidSet)
    }

    /// Checks the inclusion proof against its own root, with the shard-local index.
    pub fn verify_inclusion_proof(&self) -> Result<&InclusionProof, ReceiptError> {
        let proof = self
            .inclusion_proof
            .as_ref()
            .ok_or(ReceiptError::MissingInclusionProof)?;
        merkle::verify_inclusion(
            &self.leaf_hash(),
            proof.log_index,
            proof.tree_size,
            &proof.hashes,
            &proof.root_hash,
        )
        .map_err(ReceiptError::InclusionProof)?;
        Ok(proof)
    }

    /// Checks the proof's checkpoint: signed by the log, acceptable origin, same root and
    /// size as the proof.
    pub fn verify_checkpoint(&self, log: &TrustedLog) -> Result<Checkpoint, ReceiptError> {
        let proof = self
            .inclusion_proof
            .as_ref()
            .ok_or(ReceiptError::MissingInclusionProof)?;
        let text = proof
            .checkpoint
            .as_ref()
            .ok_or(ReceiptError::MissingCheckpoint)?;
        let verifier = Verifier::from_public_key(&log.host, log.key.clone())
            .map_err(ReceiptError::Checkpoint)?;
        let checkpoint = note::verify_checkpoint(text.as_bytes(), &[verifier], None)
            .map_err(ReceiptError::Checkpoint)?;
        log.check_origin(&checkpoint.origin)?;
        if checkpoint.root != proof.root_hash || checkpoint.size != proof.tree_size {
            return Err(ReceiptError::CheckpointMismatch {
                checkpoint_size: checkpoint.size,
                checkpoint_root: hex::encode(checkpoint.root),
                proof_size: proof.tree_size,
                proof_root: hex::encode(proof.root_hash),
            });
        }
        Ok(checkpoint)
    }

    /// Full verification against a trusted log: log ID, inclusion, checkpoint, and the SET
    /// when the entry has an integrated time (Rekor v1).
    pub fn verify(&self, log: &TrustedLog) -> Result<VerifiedReceipt, ReceiptError> {
        if self.log_id != log.log_id {
            return Err(ReceiptError::LogIdMismatch {
                expected: hex::encode(&log.log_id),
                found: hex::encode(&self.log_id),
            });
        }
        self.verify_inclusion_proof()?;
        let checkpoint = self.verify_checkpoint(log)?;
        let integrated_time = match self.integrated_time {
            Some(t) => {
                self.verify_set(&log.key)?;
                Some(t)
            }
            None => None,
        };
        Ok(VerifiedReceipt {
            checkpoint,
            integrated_time,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rekor v1 REST form.

/// Rekor v1 REST `LogEntry` value (the object under the entry-ID key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V1LogEntry {
    /// Base64 of the canonical body.
    pub body: String,
    /// Unix seconds.
    pub integrated_time: i64,
    /// Hex SHA-256 of the log key's SPKI.
    #[serde(rename = "logID")]
    pub log_id: String,
    /// The virtual log index.
    pub log_index: u64,
    /// Proof and SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<V1Verification>,
    /// Optional attestation storage; not covered by the SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<serde_json::Value>,
}

/// Rekor v1 `verification` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V1Verification {
    /// The inclusion proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion_proof: Option<V1InclusionProof>,
    /// Base64 DER ECDSA SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_entry_timestamp: Option<String>,
}

/// Rekor v1 inclusion proof (shard-local index and size; hex hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V1InclusionProof {
    /// The signed checkpoint text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Hex sibling hashes, leaf to root.
    pub hashes: Vec<String>,
    /// Shard-local leaf index.
    pub log_index: u64,
    /// Hex root hash.
    pub root_hash: String,
    /// Shard tree size.
    pub tree_size: u64,
}

/// Parses a Rekor v1 REST response: an object mapping entry IDs (or UUIDs) to entries.
pub fn parse_v1_response(json: &[u8]) -> Result<Vec<(String, V1LogEntry)>, ReceiptError> {
    let map: std::collections::BTreeMap<String, V1LogEntry> =
        serde_json::from_slice(json).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    Ok(map.into_iter().collect())
}

/// Decodes a 32-byte hash from hex.
fn hash_from_hex(s: &str, what: &str) -> Result<Hash, ReceiptError> {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReceiptError::Malformed(format!("{what} is not 32 bytes of hex")))
}

/// Decodes a 32-byte hash from standard base64.
fn hash_from_b64(s: &str, what: &str) -> Result<Hash, ReceiptError> {
    B64.decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ReceiptError::Malformed(format!("{what} is not 32 bytes of base64")))
}

/// Decodes standard base64.
fn b64(s: &str, what: &str) -> Result<Vec<u8>, ReceiptError> {
    B64.decode(s)
        .map_err(|_| ReceiptError::Malformed(format!("{what} is not base64")))
}

/// The tree ID of a Rekor v1 checkpoint origin `<host> - <tree ID>`.
fn tree_id_from_origin(checkpoint: &str) -> Option<u64> {
    let origin = checkpoint.split('\n').next()?;
    origin.rsplit_once(" - ")?.1.parse().ok()
}

/// Reads `kind`/`apiVersion` from a canonical body, if it is JSON that has them.
fn kind_version_of(body: &[u8]) -> Option<KindVersion> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(KindVersion {
        kind: v.get("kind")?.as_str()?.to_owned(),
        version: v.get("apiVersion")?.as_str()?.to_owned(),
    })
}

impl Receipt {
    /// Builds a receipt from a Rekor v1 entry and its key (an 80-hex entry ID or a 64-hex UUID).
    pub fn from_v1(entry_id: &str, entry: &V1LogEntry) -> Result<Self, ReceiptError> {
        let id_ok =
            matches!(entry_id.len(), 64 | 80) && entry_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !id_ok {
            return Err(ReceiptError::Malformed(
                "entry ID is not 64 or 80 hex digits".into(),
            ));
        }
        let canonical_body = b64(&entry.body, "body")?;
        let log_id = hex::decode(&entry.log_id)
            .map_err(|_| ReceiptError::Malformed("logID is not hex".into()))?;
        let verification = entry.verification.as_ref();
        let inclusion_proof = verification
            .and_then(|v| v.inclusion_proof.as_ref())
            .map(|p| -> Result<InclusionProof, ReceiptError> {
                Ok(InclusionProof {
                    log_index: p.log_index,
                    tree_size: p.tree_size,
                    root_hash: hash_from_hex(&p.root_hash, "rootHash")?,
                    hashes: p
                        .hashes
                        .iter()
                        .map(|h| hash_from_hex(h, "proof hash"))
                        .collect::<Result<_, _>>()?,
                    checkpoint: p.checkpoint.clone(),
                })
            })
            .transpose()?;
        let signed_entry_timestamp = verification
            .and_then(|v| v.signed_entry_timestamp.as_deref())
            .map(|s| b64(s, "signedEntryTimestamp"))
            .transpose()?;
        // The tree ID part of an entry ID; all zeros means "plain UUID".
        let tree_id = (entry_id.len() == 80)
            .then(|| u64::from_str_radix(&entry_id[..16], 16).ok())
            .flatten()
            .filter(|&t| t != 0)
            .or_else(|| {
                inclusion_proof
                    .as_ref()
                    .and_then(|p| p.checkpoint.as_deref())
                    .and_then(tree_id_from_origin)
            });
        let receipt = Receipt {
            log_id,
            log_index: entry.log_index,
            tree_id,
            integrated_time: Some(entry.integrated_time),
            kind_version: kind_version_of(&canonical_body),
            canonical_body,
            inclusion_proof,
            signed_entry_timestamp,
        };
        if !entry_id.to_ascii_lowercase().ends_with(&receipt.uuid()) {
            return Err(ReceiptError::Malformed(
                "entry UUID is not the leaf hash of the body".into(),
            ));
        }
        Ok(receipt)
    }

    /// The Rekor v1 REST form: (entry ID, entry).
    pub fn to_v1(&self) -> (String, V1LogEntry) {
        let verification = V1Verification {
            inclusion_proof: self.inclusion_proof.as_ref().map(|p| V1InclusionProof {
                checkpoint: p.checkpoint.clone(),
                hashes: p.hashes.iter().map(hex::encode).collect(),
                log_index: p.log_index,
                root_hash: hex::encode(p.root_hash),
                tree_size: p.tree_size,
            }),
            signed_entry_timestamp: self.signed_entry_timestamp.as_ref().map(|s| B64.encode(s)),
        };
        let entry = V1LogEntry {
            body: B64.encode(&self.canonical_body),
            integrated_time: self.integrated_time.unwrap_or(0),
            log_id: hex::encode(&self.log_id),
            log_index: self.log_index,
            verification: Some(verification),
            attestation: None,
        };
        (self.entry_id(), entry)
    }
}

// ---------------------------------------------------------------------------------------------
// Sigstore bundle / Rekor v2 form (protobuf-JSON).

/// An int64 in protobuf-JSON: written as a decimal string, accepted as string or number.
mod int64 {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        Str(String),
        Num(i64),
    }

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match StrOrNum::deserialize(d)? {
            StrOrNum::Num(n) => Ok(n),
            StrOrNum::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `dev.sigstore.common.v1.LogId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogId {
    /// Base64 of the log ID bytes.
    pub key_id: String,
}

/// `dev.sigstore.rekor.v1.InclusionPromise`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InclusionPromise {
    /// Base64 of the SET.
    pub signed_entry_timestamp: String,
}

/// `dev.sigstore.rekor.v1.Checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEnvelope {
    /// The signed note text.
    pub envelope: String,
}

/// `dev.sigstore.rekor.v1.InclusionProof`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TleInclusionProof {
    /// Leaf index (shard-local for Rekor v1). protobuf-JSON omits a zero, so absent is 0.
    #[serde(default, with = "int64")]
    pub log_index: i64,
    /// Base64 root hash.
    pub root_hash: String,
    /// Tree size.
    #[serde(with = "int64")]
    pub tree_size: i64,
    /// Base64 sibling hashes.
    #[serde(default)]
    pub hashes: Vec<String>,
    /// The signed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointEnvelope>,
}

/// `dev.sigstore.rekor.v1.TransparencyLogEntry` in protobuf-JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransparencyLogEntry {
    /// The (virtual, for v1) log index. protobuf-JSON omits a zero, so the first entry of a
    /// log has no `logIndex` member at all.
    #[serde(default, with = "int64")]
    pub log_index: i64,
    /// The log ID.
    pub log_id: LogId,
    /// Kind and version of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_version: Option<KindVersion>,
    /// Unix seconds; 0 (or absent) for Rekor v2.
    #[serde(default, with = "int64")]
    pub integrated_time: i64,
    /// The v1 SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion_promise: Option<InclusionPromise>,
    /// The inclusion proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion_proof: Option<TleInclusionProof>,
    /// Base64 of the canonical body.
    pub canonicalized_body: String,
}

/// Converts a protobuf int64 that must be non-negative.
fn non_negative(v: i64, what: &str) -> Result<u64, ReceiptError> {
    u64::try_from(v).map_err(|_| ReceiptError::Malformed(format!("{what} is negative")))
}

impl Receipt {
    /// Builds a receipt from a bundle's `TransparencyLogEntry`.
    pub fn from_tle(tle: &TransparencyLogEntry) -> Result<Self, ReceiptError> {
        let canonical_body = b64(&tle.canonicalized_body, "canonicalizedBody")?;
        let inclusion_proof = tle
            .inclusion_proof
            .as_ref()
            .map(|p| -> Result<InclusionProof, ReceiptError> {
                Ok(InclusionProof {
                    log_index: non_negative(p.log_index, "inclusionProof.logIndex")?,
                    tree_size: non_negative(p.tree_size, "inclusionProof.treeSize")?,
                    root_hash: hash_from_b64(&p.root_hash, "rootHash")?,
                    hashes: p
                        .hashes
                        .iter()
                        .map(|h| hash_from_b64(h, "proof hash"))
                        .collect::<Result<_, _>>()?,
                    checkpoint: p.checkpoint.as_ref().map(|c| c.envelope.clone()),
                })
            })
            .transpose()?;
        let tree_id = inclusion_proof
            .as_ref()
            .and_then(|p| p.checkpoint.as_deref())
            .and_then(tree_id_from_origin);
        Ok(Receipt {
            log_id: b64(&tle.log_id.key_id, "logId.keyId")?,
            log_index: non_negative(tle.log_index, "logIndex")?,
            tree_id,
            integrated_time: (tle.integrated_time != 0).then_some(tle.integrated_time),
            kind_version: tle.kind_version.clone(),
            canonical_body,
            inclusion_proof,
            signed_entry_timestamp: tle
                .inclusion_promise
                .as_ref()
                .map(|p| b64(&p.signed_entry_timestamp, "signedEntryTimestamp"))
                .transpose()?,
        })
    }

    /// The bundle `TransparencyLogEntry` form.
    pub fn to_tle(&self) -> TransparencyLogEntry {
        // Indices beyond i64::MAX cannot occur in a real log; saturate rather than wrap.
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        TransparencyLogEntry {
            log_index: i(self.log_index),
            log_id: LogId {
                key_id: B64.encode(&self.log_id),
            },
            kind_version: self
                .kind_version
                .clone()
                .or_else(|| kind_version_of(&self.canonical_body)),
            integrated_time: self.integrated_time.unwrap_or(0),
            inclusion_promise: self
                .signed_entry_timestamp
                .as_ref()
                .map(|s| InclusionPromise {
                    signed_entry_timestamp: B64.encode(s),
                }),
            inclusion_proof: self.inclusion_proof.as_ref().map(|p| TleInclusionProof {
                log_index: i(p.log_index),
                root_hash: B64.encode(p.root_hash),
                tree_size: i(p.tree_size),
                hashes: p.hashes.iter().map(|h| B64.encode(h)).collect(),
                checkpoint: p.checkpoint.as_ref().map(|c| CheckpointEnvelope {
                    envelope: c.clone(),
                }),
            }),
            canonicalized_body: B64.encode(&self.canonical_body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::Algorithm;
    use crate::domain::note::{Signer, sign_note};

    /// A one-entry local log signed with `key`, as a Rekor v1-style receipt.
    fn local_receipt(key: &PrivateKey) -> (Receipt, TrustedLog) {
        let body = br#"{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}"#.to_vec();
        let leaf = merkle::leaf_hash(&body);
        let cp = Checkpoint {
            origin: "local.test - 7".into(),
            size: 1,
            root: leaf,
            extensions: vec![],
        };
        let signer = Signer::new("local.test", key.clone()).unwrap();
        let checkpoint = sign_note(&cp.to_text(), &[&signer]).unwrap();
        let log = TrustedLog {
            log_id: key.public_key().spki_sha256().to_vec(),
            key: key.public_key(),
            host: "local.test".into(),
        };
        let mut receipt = Receipt {
            log_id: log.log_id.clone(),
            log_index: 10,
            tree_id: Some(7),
            integrated_time: Some(1_700_000_000),
            kind_version: None,
            canonical_body: body,
            inclusion_proof: Some(InclusionProof {
                log_index: 0,
                tree_size: 1,
                root_hash: leaf,
                hashes: vec![],
                checkpoint: Some(checkpoint),
            }),
            signed_entry_timestamp: None,
        };
        receipt.sign_set(key);
        (receipt, log)
    }

    #[test]
    fn local_receipt_verifies_and_round_trips_both_forms() {
        let key =
            PrivateKey::generate(Algorithm::P256, &mut crate::domain::keys::os_random).unwrap();
        let (receipt, log) = local_receipt(&key);
        let verified = receipt.verify(&log).unwrap();
        assert_eq!(verified.integrated_time, Some(1_700_000_000));

        let (id, v1) = receipt.to_v1();
        assert_eq!(id.len(), 80);
        assert!(id.starts_with("0000000000000007"));
        let json = serde_json::to_vec(&std::collections::BTreeMap::from([(id, v1)])).unwrap();
        let (id, v1) = parse_v1_response(&json).unwrap().remove(0);
        let mut back = Receipt::from_v1(&id, &v1).unwrap();
        back.kind_version = None;
        assert_eq!(back, receipt);

        let tle = receipt.to_tle();
        let json = serde_json::to_string(&tle).unwrap();
        assert!(json.contains(r#""logIndex":"10""#));
        let tle: TransparencyLogEntry = serde_json::from_str(&json).unwrap();
        let mut back = Receipt::from_tle(&tle).unwrap();
        back.kind_version = None;
        assert_eq!(back, receipt);
    }

    #[test]
    fn each_check_is_named() {
        let key =
            PrivateKey::generate(Algorithm::P256, &mut crate::domain::keys::os_random).unwrap();
        let (receipt, log) = local_receipt(&key);

        let mut r = receipt.clone();
        r.log_index += 1;
        assert_eq!(r.verify(&log), Err(ReceiptError::InvalidSet));

        let mut r = receipt.clone();
        r.canonical_body.push(b' ');
        assert!(matches!(
            r.verify(&log),
            Err(ReceiptError::InclusionProof(_))
        ));

        let mut r = receipt.clone();
        r.signed_entry_timestamp = None;
        assert_eq!(r.verify(&log), Err(ReceiptError::MissingSet));

        let mut r = receipt.clone();
        r.inclusion_proof.as_mut().unwrap().checkpoint = None;
        assert_eq!(r.verify(&log), Err(ReceiptError::MissingCheckpoint));

        let other =
            PrivateKey::generate(Algorithm::P256, &mut crate::domain::keys::os_random).unwrap();
        let wrong_log = TrustedLog {
            key: other.public_key(),
            ..log.clone()
        };
        assert!(matches!(
            receipt.verify(&wrong_log),
            Err(ReceiptError::Checkpoint(_))
        ));

        let wrong_host = TrustedLog {
            host: "other.test".into(),
            ..log.clone()
        };
        assert!(matches!(
            receipt.verify(&wrong_host),
            Err(ReceiptError::Checkpoint(_))
        ));

        let mut r = receipt.clone();
        r.log_id[0] ^= 1;
        assert!(matches!(
            r.verify(&log),
            Err(ReceiptError::LogIdMismatch { .. })
        ));
    }

    #[test]
    fn v1_entry_id_must_match_body() {
        let key =
            PrivateKey::generate(Algorithm::P256, &mut crate::domain::keys::os_random).unwrap();
        let (receipt, _) = local_receipt(&key);
        let (_, v1) = receipt.to_v1();
        assert!(Receipt::from_v1(&"0".repeat(64), &v1).is_err());
        assert!(Receipt::from_v1("xyz", &v1).is_err());
        assert!(Receipt::from_v1(&receipt.uuid(), &v1).is_ok());
    }
}
