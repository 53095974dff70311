//! A deterministic in-memory transparency log for unit tests and demos (`kind = "stub"`).
//!
//! It is a real log, only small: entries are Rekor-style `dsse` 0.0.1 bodies, the tree is the
//! domain's RFC 6962 Merkle tree, checkpoints are signed notes, and every entry carries a SET,
//! all with an ECDSA P-256 key derived from a fixed seed. Its receipts therefore verify with
//! the same domain code as Rekor's ([`Receipt::verify`] against [`StubLog::trusted_log`]).
//! The same submissions in the same order give byte-identical receipts; integrated times are
//! a fixed base plus the index. Nothing is persisted.

use std::collections::HashMap;
use std::sync::Mutex;

use actors::domain::keys::{Algorithm, PrivateKey};
use actors::domain::merkle::{self, Hash};
use actors::domain::note::{Checkpoint, Signer, Verifier, sign_note};
use actors::domain::receipt::{InclusionProof, KindVersion, Receipt, TrustedLog};
use actors::ports::{LogCheckpoint, RekorClient, RekorError, RekorSubmission};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

/// The stub's integrated time of entry 0 (2024-01-01T00:00:00Z); entry `i` gets this + `i`.
pub const BASE_TIME: i64 = 1_704_067_200;

/// The fixed seed of the stub's key.
const SEED: &[u8] = b"provd rekor stub log key v1";

/// The in-memory log.
pub struct StubLog {
    name: String,
    origin: String,
    key: PrivateKey,
    signer: Signer,
    log_id: Vec<u8>,
    state: Mutex<Entries>,
}

/// The log's entries.
#[derive(Default)]
struct Entries {
    bodies: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    by_leaf: HashMap<Hash, u64>,
}

/// The stub's deterministic key.
fn stub_key() -> PrivateKey {
    let mut counter = 0u32;
    let mut fill = |buf: &mut [u8]| {
        let mut h = Sha256::new();
        h.update(SEED);
        h.update(counter.to_be_bytes());
        counter += 1;
        let digest = h.finalize();
        buf.copy_from_slice(&digest[..buf.len()]);
        Ok(())
    };
    // P-256 generation only needs 32 bytes per try; a hash always provides them.
    PrivateKey::generate(Algorithm::P256, &mut fill).expect("a SHA-256 output is a P-256 seed")
}

impl StubLog {
    /// A new, empty stub log. `origin` is its checkpoint origin and signature name.
    pub fn new(name: &str, origin: &str) -> Self {
        let key = stub_key();
        let signer =
            Signer::new(origin, key.clone()).expect("the origin was validated by the config");
        StubLog {
            name: name.to_owned(),
            origin: origin.to_owned(),
            log_id: key.public_key().spki_sha256().to_vec(),
            key,
            signer,
            state: Mutex::new(Entries::default()),
        }
    }

    /// What a verifier must trust to check this log's receipts.
    pub fn trusted_log(&self) -> TrustedLog {
        TrustedLog {
            log_id: self.log_id.clone(),
            key: self.key.public_key(),
            host: self.origin.clone(),
        }
    }

    /// The checkpoint verifier key.
    pub fn verifier(&self) -> &Verifier {
        self.signer.verifier()
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.lock().leaves.len() as u64
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Entries are only ever pushed whole, so a poisoned lock still holds a valid log.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The signed checkpoint of the first `size` leaves.
    fn signed_checkpoint(&self, entries: &Entries, size: u64) -> Result<LogCheckpoint, RekorError> {
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: merkle::root_from_leaf_hashes(&entries.leaves[..size as usize]),
            extensions: vec![],
        };
        let note = sign_note(&checkpoint.to_text(), &[&self.signer])
            .map_err(|e| RekorError::Unverified(format!("stub checkpoint: {e}")))?;
        Ok(LogCheckpoint { note, checkpoint })
    }

    /// The receipt of entry `index` against the tree of `size` leaves.
    fn receipt(&self, entries: &Entries, index: u64, size: u64) -> Result<Receipt, RekorError> {
        let proof = self.proof(entries, index, size)?;
        let body = entries.bodies[index as usize].clone();
        let mut receipt = Receipt {
            log_id: self.log_id.clone(),
            log_index: index,
            tree_id: None,
            integrated_time: Some(BASE_TIME + index as i64),
            kind_version: Some(KindVersion {
                kind: "dsse".into(),
                version: "0.0.1".into(),
            }),
            canonical_body: body,
            inclusion_proof: Some(proof),
            signed_entry_timestamp: None,
        };
        receipt.sign_set(&self.key);
        Ok(receipt)
    }

    fn proof(
        &self,
        entries: &Entries,
        index: u64,
        size: u64,
    ) -> Result<InclusionProof, RekorError> {
        if size > entries.leaves.len() as u64 || index >= size {
            return Err(RekorError::NotFound(format!(
                "index {index} in a tree of {size}; the stub holds {} entries",
                entries.leaves.len()
            )));
        }
        let leaves = &entries.leaves[..size as usize];
        let hashes = merkle::inclusion_proof(leaves, index)
            .map_err(|e| RekorError::Unverified(format!("stub proof: {e}")))?;
        let checkpoint = self.signed_checkpoint(entries, size)?;
        Ok(InclusionProof {
            log_index: index,
            tree_size: size,
            root_hash: checkpoint.checkpoint.root,
            hashes,
            checkpoint: Some(checkpoint.note),
        })
    }
}

/// The Rekor `dsse` 0.0.1 canonical body (RFC 8785: sorted keys, no whitespace).
fn dsse_body(submission: &RekorSubmission) -> Result<Vec<u8>, RekorError> {
    let envelope = &submission.envelope;
    let payload = envelope
        .payload_bytes()
        .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
    let mut signatures = Vec::new();
    let pae = envelope
        .pae()
        .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
    for sig in &envelope.signatures {
        let Ok(bytes) = B64.decode(&sig.sig) else {
            continue;
        };
        if let Some(key) = submission
            .verifiers
            .iter()
            .find(|k| k.verify(&pae, &bytes).is_ok())
        {
            let pem = key
                .to_pem()
                .map_err(|e| RekorError::Invalid(format!("verifier key: {e}")))?;
            signatures.push((sig.sig.clone(), B64.encode(pem)));
        }
    }
    signatures.sort();
    let signatures: Vec<_> = signatures
        .into_iter()
        .map(|(signature, verifier)| serde_json::json!({"signature": signature, "verifier": verifier}))
        .collect();
    let hash = |bytes: &[u8]| serde_json::json!({"algorithm": "sha256", "value": hex::encode(Sha256::digest(bytes))});
    // serde_json's map is ordered by key, which with ASCII keys is RFC 8785 order.
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": hash(envelope.to_json().as_bytes()),
            "payloadHash": hash(&payload),
            "signatures": signatures,
        },
    });
    serde_json::to_vec(&body).map_err(|e| RekorError::Invalid(e.to_string()))
}

#[async_trait]
impl RekorClient for StubLog {
    fn backend(&self) -> &str {
        &self.name
    }

    async fn submit(&self, submission: &RekorSubmission) -> Result<Receipt, RekorError> {
        super::verified_signature(submission)?;
        let body = dsse_body(submission)?;
        let leaf = merkle::leaf_hash(&body);
        let mut entries = self.lock();
        let index = match entries.by_leaf.get(&leaf) {
            Some(&index) => index,
            None => {
                let index = entries.leaves.len() as u64;
                entries.bodies.push(body);
                entries.leaves.push(leaf);
                entries.by_leaf.insert(leaf, index);
                index
            }
        };
        let size = entries.leaves.len() as u64;
        self.receipt(&entries, index, size)
    }

    async fn entry_by_index(&self, log_index: u64) -> Result<Receipt, RekorError> {
        let entries = self.lock();
        let size = entries.leaves.len() as u64;
        self.receipt(&entries, log_index, size)
    }

    async fn entry_by_uuid(&self, uuid: &str) -> Result<Receipt, RekorError> {
        let tail = uuid
            .get(uuid.len().saturating_sub(64)..)
            .unwrap_or_default();
        let leaf: Hash = hex::decode(tail)
            .ok()
            .and_then(|b| b.try_into().ok())
            .filter(|_| matches!(uuid.len(), 64 | 80))
            .ok_or_else(|| {
                RekorError::Invalid(format!(
                    "{uuid:?} is not a 64-hex UUID or an 80-hex entry ID"
                ))
            })?;
        let entries = self.lock();
        let index = *entries
            .by_leaf
            .get(&leaf)
            .ok_or_else(|| RekorError::NotFound(format!("entry {uuid}")))?;
        let size = entries.leaves.len() as u64;
        self.receipt(&entries, index, size)
    }

    async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, RekorError> {
        let entries = self.lock();
        let size = tree_size.unwrap_or(entries.leaves.len() as u64);
        self.proof(&entries, log_index, size)
    }

    async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError> {
        let entries = self.lock();
        self.signed_checkpoint(&entries, entries.leaves.len() as u64)
    }

    async fn checkpoint_note_unverified(&self) -> Result<String, RekorError> {
        Ok(self.checkpoint().await?.note)
    }

    async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, RekorError> {
        let entries = self.lock();
        if old_size == 0 || old_size > new_size || new_size > entries.leaves.len() as u64 {
            return Err(RekorError::Invalid(format!(
                "no consistency proof from size {old_size} to {new_size} in a log of {}",
                entries.leaves.len()
            )));
        }
        merkle::consistency_proof(&entries.leaves[..new_size as usize], old_size)
            .map_err(|e| RekorError::Unverified(format!("stub proof: {e}")))
    }
}
