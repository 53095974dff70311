//! The Rekor v2 (rekor-tiles) client: writes through `POST /api/v2/log/entries`, reads
//! through C2SP tlog-tiles.
//!
//! A DSSE envelope is logged as a `hashedRekordRequestV002` over SHA-256 of its PAE, signed by
//! the envelope's own signature. Rekor v2 refuses pure Ed25519, so only ECDSA P-256 signers
//! are accepted, and an Ed25519 one is refused here before anything is sent. A write blocks
//! until the log publishes a checkpoint covering the entry, so its timeout is long.
//!
//! Reads fetch the checkpoint, verify it, then fetch exactly the tiles a proof needs (falling
//! back from a missing partial tile to the full one) and compute the proof with the domain's
//! [`TiledTree`]; nothing read from a tile is believed until it leads to the verified root.

use std::time::Duration;

use actors::domain::keys::PublicKey;
use actors::domain::merkle::{self, Hash};
use actors::domain::receipt::{InclusionProof, Receipt, TransparencyLogEntry};
use actors::domain::tiles::{self, Tile, TileError, TileKind, TiledTree};
use actors::ports::{LogCheckpoint, RekorClient, RekorError, RekorSubmission};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{BuildError, MAX_JSON_BYTES, Trust, read_body, status_error, transport_error};
use crate::adapters::tiles::client::{FetchedTiles, TileClient, tile_error, tile_of};
use crate::config::rekor::RekorBackendConfig;

/// A Rekor v2 log.
pub struct V2Client {
    name: String,
    base: reqwest::Url,
    http: reqwest::Client,
    trust: Trust,
    tiles: TileClient,
    write_timeout: Duration,
}

impl V2Client {
    /// A client for the backend's shard URL and trusted keys.
    pub fn new(backend: &RekorBackendConfig) -> Result<Self, BuildError> {
        let http = super::http_client(backend)?;
        Ok(V2Client {
            name: backend.name.clone(),
            base: super::base_url(backend)?,
            trust: Trust::new(&backend.name, &backend.origin, false, &backend.keys)?,
            tiles: TileClient::with_http(backend, http.clone())?,
            http,
            write_timeout: backend.write_timeout,
        })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, RekorError> {
        self.base
            .join(path)
            .map_err(|e| RekorError::Invalid(format!("bad request path {path:?}: {e}")))
    }

    /// The latest checkpoint, verified, with the log ID of the key that signed it.
    async fn verified_checkpoint(&self) -> Result<(LogCheckpoint, Vec<u8>), RekorError> {
        let body = self.tiles.checkpoint().await?;
        let note = String::from_utf8(body)
            .map_err(|_| RekorError::Unverified("checkpoint is not UTF-8".into()))?;
        let (checkpoint, log_id) = self.trust.checkpoint(&note)?;
        Ok((LogCheckpoint { note, checkpoint }, log_id))
    }

    /// Runs `op` on the tree of `size` leaves, fetching each tile it asks for until it
    /// succeeds.
    async fn with_tiles<T>(
        &self,
        cache: &mut FetchedTiles,
        size: u64,
        mut op: impl FnMut(&mut TiledTree<&mut FetchedTiles>) -> Result<T, TileError>,
    ) -> Result<T, RekorError> {
        crate::adapters::tiles::client::with_tiles(&self.tiles, cache, |fetched| {
            let mut tree = TiledTree::new(fetched, size);
            op(&mut tree)
        })
        .await
    }

    /// The entry bytes at `index` in a tree of `size`, from its entry bundle.
    async fn entry_bytes(
        &self,
        cache: &mut FetchedTiles,
        index: u64,
        size: u64,
    ) -> Result<Vec<u8>, RekorError> {
        let (bundle, offset) = tile_of(index);
        let width = tiles::tile_width(0, bundle, size)
            .ok_or_else(|| RekorError::NotFound(format!("index {index} in size {size}")))?;
        let tile = Tile::new(TileKind::Entries, bundle, width).map_err(tile_error)?;
        // At most: the partial bundle (missing), the full bundle, then the read.
        for _ in 0..4 {
            match tiles::read_entry_bundle(&mut *cache, &tile) {
                Ok(mut entries) => {
                    if offset >= entries.len() {
                        break;
                    }
                    return Ok(entries.swap_remove(offset));
                }
                Err(e) => match cache.take_wanted() {
                    Some(t) => cache.fetch_from(&self.tiles, t).await?,
                    None => return Err(tile_error(e)),
                },
            }
        }
        Err(RekorError::Unverified(format!(
            "entry bundle {} does not hold index {index}",
            tile.path()
        )))
    }

    /// Parses a Rekor v2 write answer (a protobuf-JSON `TransparencyLogEntry`) and verifies
    /// it with this backend's trusted keys and origin.
    pub fn receipt_from(&self, body: &[u8]) -> Result<Receipt, RekorError> {
        let tle: TransparencyLogEntry = serde_json::from_slice(body)
            .map_err(|e| RekorError::Unverified(format!("log entry: {e}")))?;
        let receipt = Receipt::from_tle(&tle)
            .map_err(|e| RekorError::Unverified(format!("log entry: {e}")))?;
        self.trust.receipt(&receipt)?;
        Ok(receipt)
    }

    /// A verified receipt for the entry at `index`, against the latest checkpoint.
    async fn read_entry(&self, index: u64) -> Result<Receipt, RekorError> {
        let (checkpoint, log_id) = self.verified_checkpoint().await?;
        let size = checkpoint.checkpoint.size;
        if index >= size {
            return Err(RekorError::NotFound(format!(
                "index {index}: the log's checkpoint has {size} entries"
            )));
        }
        let mut cache = FetchedTiles::default();
        let hashes = self
            .with_tiles(&mut cache, size, |t| t.inclusion_proof(index, size))
            .await?;
        let body = self.entry_bytes(&mut cache, index, size).await?;
        let receipt = Receipt {
            log_id,
            log_index: index,
            tree_id: None,
            integrated_time: None,
            kind_version: kind_version_of(&body),
            canonical_body: body,
            inclusion_proof: Some(InclusionProof {
                log_index: index,
                tree_size: size,
                root_hash: checkpoint.checkpoint.root,
                hashes,
                checkpoint: Some(checkpoint.note),
            }),
            signed_entry_timestamp: None,
        };
        self.trust.receipt(&receipt)?;
        Ok(receipt)
    }
}

fn kind_version_of(body: &[u8]) -> Option<actors::domain::receipt::KindVersion> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(actors::domain::receipt::KindVersion {
        kind: v.get("kind")?.as_str()?.to_owned(),
        version: v.get("apiVersion")?.as_str()?.to_owned(),
    })
}

/// The SHA-256 of the envelope's PAE, the signature and the verifier key, checked locally.
fn hashed_rekord(submission: &RekorSubmission) -> Result<(Hash, Vec<u8>, PublicKey), RekorError> {
    let (signature, key) = super::verified_signature(submission)?;
    if matches!(key, PublicKey::Ed25519(_)) {
        return Err(RekorError::Invalid(
            "Rekor v2 refuses pure Ed25519 signatures (PKIX_ED25519); sign the envelope with an \
             ECDSA P-256 key, or submit to a Rekor v1 backend"
                .into(),
        ));
    }
    let pae = submission
        .envelope
        .pae()
        .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
    Ok((Sha256::digest(&pae).into(), signature, key))
}

/// Whether a stored hashedrekord v0.0.2 body records this digest.
fn body_has_digest(body: &[u8], digest: &Hash) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/spec/hashedRekordV002/data/digest")
                .and_then(|d| d.as_str())
                .and_then(|d| B64.decode(d).ok())
        })
        .is_some_and(|d| d == digest)
}

#[async_trait]
impl RekorClient for V2Client {
    fn backend(&self) -> &str {
        &self.name
    }

    async fn submit(&self, submission: &RekorSubmission) -> Result<Receipt, RekorError> {
        let (digest, signature, key) = hashed_rekord(submission)?;
        let request = json!({"hashedRekordRequestV002": {
            "digest": B64.encode(digest),
            "signature": {
                "content": B64.encode(&signature),
                "verifier": {
                    "publicKey": {"rawBytes": B64.encode(key.to_spki_der())},
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                },
            },
        }});
        let response = self
            .http
            .post(self.url("api/v2/log/entries")?)
            .timeout(self.write_timeout)
            .json(&request)
            .send()
            .await
            .map_err(transport_error)?;
        let receipt = match response.status().as_u16() {
            200 | 201 => {
                let body = read_body(response, MAX_JSON_BYTES).await?;
                self.receipt_from(&body)?
            }
            409 => {
                let index = response
                    .headers()
                    .get("x-log-index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| RekorError::Transient {
                        message: "409 without an x-log-index header".into(),
                        retry_after: None,
                    })?;
                match self.read_entry(index).await {
                    // The log said it holds the entry; a checkpoint that does not cover it
                    // yet will soon.
                    Err(RekorError::NotFound(m)) => {
                        return Err(RekorError::Transient {
                            message: format!("existing entry not readable yet: {m}"),
                            retry_after: None,
                        });
                    }
                    other => other?,
                }
            }
            _ => return Err(status_error(response, "submit").await),
        };
        if !body_has_digest(&receipt.canonical_body, &digest) {
            return Err(RekorError::Unverified(format!(
                "the log answered with entry {} at index {}, which does not record this envelope",
                receipt.uuid(),
                receipt.log_index
            )));
        }
        Ok(receipt)
    }

    async fn entry_by_index(&self, log_index: u64) -> Result<Receipt, RekorError> {
        self.read_entry(log_index).await
    }

    async fn entry_by_uuid(&self, uuid: &str) -> Result<Receipt, RekorError> {
        Err(RekorError::Unsupported(format!(
            "Rekor v2 has no lookup by UUID ({uuid}); read the entry by its log index"
        )))
    }

    async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, RekorError> {
        let (checkpoint, _) = self.verified_checkpoint().await?;
        let latest = checkpoint.checkpoint.size;
        let size = tree_size.unwrap_or(latest);
        if size > latest || log_index >= size {
            return Err(RekorError::NotFound(format!(
                "index {log_index} in a tree of {size}: the log's checkpoint has {latest} entries"
            )));
        }
        let mut cache = FetchedTiles::default();
        let (root, hashes) = self
            .with_tiles(&mut cache, latest, |t| {
                Ok((t.root_at(size)?, t.inclusion_proof(log_index, size)?))
            })
            .await?;
        let leaf = self
            .with_tiles(&mut cache, latest, |t| t.leaf_hash(log_index))
            .await?;
        merkle::verify_inclusion(&leaf, log_index, size, &hashes, &root)
            .map_err(|e| RekorError::Unverified(format!("inclusion proof from tiles: {e}")))?;
        // The root of a smaller tree is believed only if it is consistent with the signed one.
        if size == latest {
            if root != checkpoint.checkpoint.root {
                return Err(RekorError::Unverified(
                    "tiles do not lead to the checkpoint's root".into(),
                ));
            }
        } else {
            let proof = self
                .with_tiles(&mut cache, latest, |t| t.consistency_proof(size, latest))
                .await?;
            merkle::verify_consistency(size, latest, &proof, &root, &checkpoint.checkpoint.root)
                .map_err(|e| RekorError::Unverified(format!("tiles: {e}")))?;
        }
        Ok(InclusionProof {
            log_index,
            tree_size: size,
            root_hash: root,
            hashes,
            checkpoint: (size == latest).then_some(checkpoint.note),
        })
    }

    async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError> {
        Ok(self.verified_checkpoint().await?.0)
    }

    async fn checkpoint_note_unverified(&self) -> Result<String, RekorError> {
        let body = self.tiles.checkpoint().await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
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
        let (checkpoint, _) = self.verified_checkpoint().await?;
        let latest = checkpoint.checkpoint.size;
        if new_size > latest {
            return Err(RekorError::NotFound(format!(
                "tree size {new_size}: the log's checkpoint has {latest} entries"
            )));
        }
        let mut cache = FetchedTiles::default();
        let root = self.with_tiles(&mut cache, latest, |t| t.root()).await?;
        if root != checkpoint.checkpoint.root {
            return Err(RekorError::Unverified(
                "tiles do not lead to the checkpoint's root".into(),
            ));
        }
        self.with_tiles(&mut cache, latest, |t| {
            t.consistency_proof(old_size, new_size)
        })
        .await
    }
}
