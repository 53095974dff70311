//! The Rekor v1 REST client.
//!
//! Rekor v1 numbers entries with a **virtual** index across its shards, while an entry's
//! inclusion proof uses the **shard-local** index and tree size; the SET signs the virtual
//! index. [`Receipt::verify`] knows this, so the client only checks that the log answered
//! for the index or UUID that was asked.

use std::time::Duration;

use actors::domain::merkle::Hash;
use actors::domain::receipt::{InclusionProof, Receipt, parse_v1_response};
use actors::ports::{LogCheckpoint, RekorClient, RekorError, RekorSubmission};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{BuildError, MAX_JSON_BYTES, Trust, read_body, status_error, transport_error};
use crate::config::rekor::{RekorBackendConfig, V1EntryKind};

/// A Rekor v1 log.
pub struct V1Client {
    name: String,
    base: reqwest::Url,
    http: reqwest::Client,
    trust: Trust,
    entry_kind: V1EntryKind,
    read_timeout: Duration,
    write_timeout: Duration,
}

/// `GET /api/v1/log`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogInfo {
    root_hash: String,
    tree_size: u64,
    signed_tree_head: String,
}

/// `GET /api/v1/log/proof`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyProof {
    #[serde(default)]
    hashes: Vec<String>,
}

fn hex_hash(s: &str, what: &str) -> Result<Hash, RekorError> {
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| RekorError::Unverified(format!("{what} is not 32 bytes of hex")))
}

/// Whether `s` is a 64-hex UUID or an 80-hex entry ID.
fn is_entry_id(s: &str) -> bool {
    matches!(s.len(), 64 | 80) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl V1Client {
    /// A client for the backend's URL and trusted keys.
    pub fn new(backend: &RekorBackendConfig) -> Result<Self, BuildError> {
        Ok(V1Client {
            name: backend.name.clone(),
            base: super::base_url(backend)?,
            http: super::http_client(backend)?,
            trust: Trust::new(&backend.name, &backend.origin, true, &backend.keys)?,
            entry_kind: backend.entry_kind,
            read_timeout: backend.read_timeout,
            write_timeout: backend.write_timeout,
        })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, RekorError> {
        self.base
            .join(path)
            .map_err(|e| RekorError::Invalid(format!("bad request path {path:?}: {e}")))
    }

    /// GETs JSON, mapping failures to classified errors.
    async fn get(&self, url: reqwest::Url, what: &str) -> Result<Vec<u8>, RekorError> {
        let response = self
            .http
            .get(url)
            .timeout(self.read_timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(status_error(response, what).await);
        }
        read_body(response, MAX_JSON_BYTES).await
    }

    /// Parses a Rekor v1 `LogEntry` answer (one entry) and verifies it with this backend's
    /// trusted keys and origin. Returns the entry ID the log keyed it by and the receipt.
    pub fn receipt_from(&self, body: &[u8]) -> Result<(String, Receipt), RekorError> {
        let mut entries = parse_v1_response(body)
            .map_err(|e| RekorError::Unverified(format!("log entry: {e}")))?;
        if entries.len() != 1 {
            return Err(RekorError::Unverified(format!(
                "expected one log entry, got {}",
                entries.len()
            )));
        }
        let (id, entry) = entries.remove(0);
        let receipt = Receipt::from_v1(&id, &entry)
            .map_err(|e| RekorError::Unverified(format!("log entry {id}: {e}")))?;
        self.trust.receipt(&receipt)?;
        Ok((id, receipt))
    }

    /// The ProposedEntry JSON for a submission.
    fn proposed_entry(
        &self,
        submission: &RekorSubmission,
    ) -> Result<serde_json::Value, RekorError> {
        let (signature, key) = super::verified_signature(submission)?;
        let pem = |k: &actors::domain::keys::PublicKey| {
            k.to_pem()
                .map(|p| B64.encode(p))
                .map_err(|e| RekorError::Invalid(format!("verifier key: {e}")))
        };
        Ok(match self.entry_kind {
            V1EntryKind::Dsse => json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {"proposedContent": {
                    "envelope": submission.envelope.to_json(),
                    "verifiers": submission.verifiers.iter().map(pem).collect::<Result<Vec<_>, _>>()?,
                }},
            }),
            V1EntryKind::HashedRekord => {
                let pae = submission
                    .envelope
                    .pae()
                    .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
                json!({
                    "apiVersion": "0.0.1",
                    "kind": "hashedrekord",
                    "spec": {
                        "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&pae))}},
                        "signature": {"content": B64.encode(&signature), "publicKey": {"content": pem(&key)?}},
                    },
                })
            }
        })
    }

    /// Checks that a receipt records this submission (a log must not answer with another
    /// entry): the payload hash for `dsse`, the PAE digest for `hashedrekord`.
    fn check_is_ours(
        &self,
        receipt: &Receipt,
        submission: &RekorSubmission,
    ) -> Result<(), RekorError> {
        let body: serde_json::Value = serde_json::from_slice(&receipt.canonical_body)
            .map_err(|_| RekorError::Unverified("entry body is not JSON".into()))?;
        let expected = match self.entry_kind {
            V1EntryKind::Dsse => {
                let payload = submission
                    .envelope
                    .payload_bytes()
                    .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
                (
                    body.pointer("/spec/payloadHash/value"),
                    hex::encode(Sha256::digest(payload)),
                )
            }
            V1EntryKind::HashedRekord => {
                let pae = submission
                    .envelope
                    .pae()
                    .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
                (
                    body.pointer("/spec/data/hash/value"),
                    hex::encode(Sha256::digest(pae)),
                )
            }
        };
        match expected {
            (Some(found), want) if found.as_str() == Some(want.as_str()) => Ok(()),
            _ => Err(RekorError::Unverified(format!(
                "the log answered with entry {}, which does not record this envelope",
                receipt.uuid()
            ))),
        }
    }

    /// Reads the entry a 409 points at: the `Location` header, or the entry ID in the message.
    async fn existing_entry(&self, response: reqwest::Response) -> Result<Receipt, RekorError> {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_body(response, 64 << 10).await.unwrap_or_default();
        let from_message = super::log_message(&body)
            .split_whitespace()
            .last()
            .filter(|id| is_entry_id(id))
            .map(str::to_owned);
        let url = match (location, from_message) {
            (Some(loc), _) => self.url(&loc)?,
            (None, Some(id)) => self.url(&format!("api/v1/log/entries/{id}"))?,
            (None, None) => {
                return Err(RekorError::Transient {
                    message: "409 without a Location header or entry ID".into(),
                    retry_after: None,
                });
            }
        };
        let body = match self.get(url, "existing entry").await {
            // The log just said the entry exists; a 404 here is a lagging replica.
            Err(RekorError::NotFound(m)) => {
                return Err(RekorError::Transient {
                    message: format!("existing entry not readable yet: {m}"),
                    retry_after: None,
                });
            }
            other => other?,
        };
        Ok(self.receipt_from(&body)?.1)
    }
}

#[async_trait]
impl RekorClient for V1Client {
    fn backend(&self) -> &str {
        &self.name
    }

    async fn submit(&self, submission: &RekorSubmission) -> Result<Receipt, RekorError> {
        let entry = self.proposed_entry(submission)?;
        let response = self
            .http
            .post(self.url("api/v1/log/entries")?)
            .timeout(self.write_timeout)
            .json(&entry)
            .send()
            .await
            .map_err(transport_error)?;
        let receipt = match response.status().as_u16() {
            200 | 201 => {
                let body = read_body(response, MAX_JSON_BYTES).await?;
                self.receipt_from(&body)?.1
            }
            409 => self.existing_entry(response).await?,
            _ => return Err(status_error(response, "submit").await),
        };
        self.check_is_ours(&receipt, submission)?;
        Ok(receipt)
    }

    async fn entry_by_index(&self, log_index: u64) -> Result<Receipt, RekorError> {
        let mut url = self.url("api/v1/log/entries")?;
        url.query_pairs_mut()
            .append_pair("logIndex", &log_index.to_string());
        let body = self
            .get(url, &format!("entry at index {log_index}"))
            .await?;
        let (_, receipt) = self.receipt_from(&body)?;
        if receipt.log_index != log_index {
            return Err(RekorError::Unverified(format!(
                "asked for index {log_index}, the log answered with index {}",
                receipt.log_index
            )));
        }
        Ok(receipt)
    }

    async fn entry_by_uuid(&self, uuid: &str) -> Result<Receipt, RekorError> {
        if !is_entry_id(uuid) {
            return Err(RekorError::Invalid(format!(
                "{uuid:?} is not a 64-hex UUID or an 80-hex entry ID"
            )));
        }
        let url = self.url(&format!("api/v1/log/entries/{uuid}"))?;
        let body = self.get(url, &format!("entry {uuid}")).await?;
        let (_, receipt) = self.receipt_from(&body)?;
        if !uuid.to_ascii_lowercase().ends_with(&receipt.uuid()) {
            return Err(RekorError::Unverified(format!(
                "asked for {uuid}, the log answered with {}",
                receipt.uuid()
            )));
        }
        Ok(receipt)
    }

    async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, RekorError> {
        let receipt = self.entry_by_index(log_index).await?;
        let proof = receipt
            .inclusion_proof
            .ok_or_else(|| RekorError::Unverified("entry has no inclusion proof".into()))?;
        match tree_size {
            Some(size) if size != proof.tree_size => Err(RekorError::Unsupported(format!(
                "Rekor v1 proves inclusion only in its current tree (size {}), not size {size}",
                proof.tree_size
            ))),
            _ => Ok(proof),
        }
    }

    async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError> {
        let body = self.get(self.url("api/v1/log")?, "log info").await?;
        let info: LogInfo = serde_json::from_slice(&body)
            .map_err(|e| RekorError::Unverified(format!("log info: {e}")))?;
        let checkpoint = self.trust.log_checkpoint(info.signed_tree_head)?;
        let root = hex_hash(&info.root_hash, "rootHash")?;
        if checkpoint.checkpoint.size != info.tree_size || checkpoint.checkpoint.root != root {
            return Err(RekorError::Unverified(format!(
                "log info says size {} root {}, its signed tree head says size {} root {}",
                info.tree_size,
                info.root_hash,
                checkpoint.checkpoint.size,
                hex::encode(checkpoint.checkpoint.root)
            )));
        }
        Ok(checkpoint)
    }

    async fn checkpoint_note_unverified(&self) -> Result<String, RekorError> {
        let body = self.get(self.url("api/v1/log")?, "log info").await?;
        let info: LogInfo = serde_json::from_slice(&body)
            .map_err(|e| RekorError::Unverified(format!("log info: {e}")))?;
        Ok(info.signed_tree_head)
    }

    async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, RekorError> {
        if old_size == 0 || old_size > new_size {
            return Err(RekorError::Invalid(format!(
                "no consistency proof from size {old_size} to {new_size}: need 0 < old <= new"
            )));
        }
        if old_size == new_size {
            return Ok(Vec::new());
        }
        let mut url = self.url("api/v1/log/proof")?;
        url.query_pairs_mut()
            .append_pair("firstSize", &old_size.to_string())
            .append_pair("lastSize", &new_size.to_string());
        let body = self.get(url, "consistency proof").await?;
        let proof: ConsistencyProof = serde_json::from_slice(&body)
            .map_err(|e| RekorError::Unverified(format!("consistency proof: {e}")))?;
        proof
            .hashes
            .iter()
            .map(|h| hex_hash(h, "consistency proof hash"))
            .collect()
    }
}
