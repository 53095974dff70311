//! Sigstore bundles (media types v0.1, v0.2, v0.3) and `trusted_root.json`, and offline
//! verification of a bundle's transparency-log part.
//!
//! For every `verificationMaterial.tlogEntries` item: find the trusted log by log ID, then check
//! inclusion of the canonical body, the checkpoint's signature and origin, checkpoint root ==
//! proof root, the SET for Rekor v1 entries (see [`super::receipt`]), and that the entry is
//! about the bundle's content (see [`super::entry_binding`]): an entry that proves the
//! inclusion of something else is refused. Bundles v0.2 and later must carry an inclusion
//! proof; a v0.1 bundle may carry only a SET. When a trustworthy time is known (the integrated
//! time vouched for by a SET) it must lie in the log key's validity window.
//!
//! This is the transparency-log part only: certificate chains, SCTs, RFC 3161 timestamps and
//! the signer's identity are checked by [`super::verification`], the complete verification.
//! The checkpoint's signature is found by the key hint of the entry's log ID (the first four
//! bytes of `logId.keyId`, which is how sigstore-python, sigstore-js and sigstore-rust match
//! it), so a trusted root whose `baseUrl` carries a port still finds a log that signs under
//! its bare host name.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::entry_binding::{self, BindingError, BundleContent};
use super::keys::PublicKey;
use super::note::{Checkpoint, Note};
use super::receipt::{Receipt, ReceiptError, TransparencyLogEntry, TrustedLog};

/// Why a bundle or trusted root was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SigstoreError {
    /// The bundle is not valid JSON of the expected shape.
    #[error("malformed bundle: {0}")]
    MalformedBundle(String),
    /// The bundle's media type is not a supported Sigstore bundle version.
    #[error("bundle check failed: unsupported bundle media type {0:?}")]
    UnsupportedMediaType(String),
    /// The trusted root is not valid JSON of the expected shape.
    #[error("malformed trusted root: {0}")]
    MalformedTrustedRoot(String),
    /// The bundle has no transparency-log entries.
    #[error("transparency log check failed: the bundle has no tlog entries")]
    NoTlogEntries,
    /// The bundle has neither a `messageSignature` nor a `dsseEnvelope`.
    #[error("bundle check failed: the bundle has no content (no messageSignature or dsseEnvelope)")]
    NoContent,
    /// The bundle's content or verification material is malformed.
    #[error("bundle check failed: {0}")]
    MalformedContent(String),
    /// An entry is not about the bundle's content.
    #[error("transparency log check failed: entry {index}: {source}")]
    NotAboutContent {
        /// Position of the entry in the bundle.
        index: usize,
        /// What differs.
        source: BindingError,
    },
    /// No trusted log has the entry's log ID.
    #[error(
        "trusted log check failed: entry {index} is from log {log_id}, which the trusted root does not contain"
    )]
    UnknownLog {
        /// Position of the entry in the bundle.
        index: usize,
        /// Base64 of the entry's log ID.
        log_id: String,
    },
    /// The integrated time is outside the log key's validity window.
    #[error(
        "log key validity check failed: entry {index} integrated at {time}, outside the key's validity window"
    )]
    OutsideValidity {
        /// Position of the entry in the bundle.
        index: usize,
        /// The integrated time (Unix seconds).
        time: i64,
    },
    /// A bundle of version 0.2 or later lacks an inclusion proof.
    #[error(
        "inclusion proof check failed: entry {index} has no inclusion proof (required since bundle v0.2)"
    )]
    MissingInclusionProof {
        /// Position of the entry in the bundle.
        index: usize,
    },
    /// A receipt check failed; the inner error names it.
    #[error("entry {index}: {source}")]
    Receipt {
        /// Position of the entry in the bundle.
        index: usize,
        /// The failed check.
        source: ReceiptError,
    },
}

/// A Sigstore bundle format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BundleVersion {
    /// v0.1: SET required, inclusion proof optional.
    V0_1,
    /// v0.2: inclusion proof required.
    V0_2,
    /// v0.3: inclusion proof required; single certificate instead of a chain.
    V0_3,
}

impl BundleVersion {
    /// Recognises the media type forms `application/vnd.dev.sigstore.bundle+json;version=0.N`
    /// and `application/vnd.dev.sigstore.bundle.v0.N+json`.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let version = media_type
            .strip_prefix("application/vnd.dev.sigstore.bundle+json;version=")
            .or_else(|| {
                media_type
                    .strip_prefix("application/vnd.dev.sigstore.bundle.v")
                    .and_then(|v| v.strip_suffix("+json"))
            })?;
        match version {
            "0.1" => Some(BundleVersion::V0_1),
            "0.2" => Some(BundleVersion::V0_2),
            "0.3" => Some(BundleVersion::V0_3),
            _ => None,
        }
    }
}

/// The parts of a Sigstore bundle this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The media type as written.
    pub media_type: String,
    /// The format version it names.
    pub version: BundleVersion,
    /// `verificationMaterial.tlogEntries`.
    pub tlog_entries: Vec<TransparencyLogEntry>,
    /// What was signed; `None` for a bundle without content, which nothing can verify.
    pub content: Option<BundleContent>,
    /// The DER of the signing certificate (the leaf of a chain), when the bundle has one.
    pub certificate: Option<Vec<u8>>,
    /// `verificationMaterial.publicKey.hint`, for a bundle signed with a managed key.
    pub key_hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    #[serde(default)]
    message_signature: Option<RawMessageSignature>,
    #[serde(default)]
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    #[serde(default)]
    tlog_entries: Vec<TransparencyLogEntry>,
    #[serde(default)]
    certificate: Option<RawCertificate>,
    #[serde(default)]
    x509_certificate_chain: Option<RawChain>,
    #[serde(default)]
    public_key: Option<RawKeyHint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawChain {
    #[serde(default)]
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
struct RawKeyHint {
    #[serde(default)]
    hint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessageSignature {
    #[serde(default)]
    message_digest: Option<RawDigest>,
    #[serde(default)]
    signature: String,
}

#[derive(Deserialize)]
struct RawDigest {
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    #[serde(default)]
    payload: String,
    #[serde(default)]
    payload_type: String,
    #[serde(default)]
    signatures: Vec<RawEnvelopeSignature>,
}

#[derive(Deserialize)]
struct RawEnvelopeSignature {
    #[serde(default)]
    sig: String,
}

/// Decodes a base64 field of the bundle, naming it when it is not base64.
fn bundle_b64(value: &str, what: &str) -> Result<Vec<u8>, SigstoreError> {
    B64.decode(value)
        .map_err(|_| SigstoreError::MalformedContent(format!("{what} is not base64")))
}

/// The bundle's protobuf `HashAlgorithm` name as the entry bodies spell it.
fn digest_algorithm(name: &str) -> Result<String, SigstoreError> {
    match name {
        "SHA2_256" => Ok("sha256".into()),
        "SHA2_384" => Ok("sha384".into()),
        "SHA2_512" => Ok("sha512".into()),
        other => Err(SigstoreError::MalformedContent(format!(
            "messageDigest.algorithm {other:?} is not SHA2_256, SHA2_384 or SHA2_512"
        ))),
    }
}

impl Bundle {
    /// Parses bundle JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, SigstoreError> {
        let raw: RawBundle = serde_json::from_slice(json)
            .map_err(|e| SigstoreError::MalformedBundle(e.to_string()))?;
        let version = BundleVersion::from_media_type(&raw.media_type)
            .ok_or_else(|| SigstoreError::UnsupportedMediaType(raw.media_type.clone()))?;
        let content = match (raw.message_signature, raw.dsse_envelope) {
            (Some(_), Some(_)) => {
                return Err(SigstoreError::MalformedContent(
                    "the bundle has both a messageSignature and a dsseEnvelope".into(),
                ));
            }
            (Some(m), None) => Some(BundleContent::Message {
                digest: m
                    .message_digest
                    .map(|d| -> Result<_, SigstoreError> {
                        Ok((
                            digest_algorithm(&d.algorithm)?,
                            bundle_b64(&d.digest, "messageDigest.digest")?,
                        ))
                    })
                    .transpose()?,
                signature: bundle_b64(&m.signature, "messageSignature.signature")?,
            }),
            (None, Some(e)) => Some(BundleContent::Dsse {
                payload: bundle_b64(&e.payload, "dsseEnvelope.payload")?,
                payload_type: e.payload_type,
                signatures: e
                    .signatures
                    .iter()
                    .map(|s| bundle_b64(&s.sig, "dsseEnvelope.signatures[].sig"))
                    .collect::<Result<_, _>>()?,
            }),
            (None, None) => None,
        };
        let material = raw.verification_material;
        let certificate = match (material.certificate, material.x509_certificate_chain) {
            (Some(c), _) => Some(bundle_b64(&c.raw_bytes, "certificate.rawBytes")?),
            (None, Some(chain)) => chain
                .certificates
                .first()
                .map(|c| bundle_b64(&c.raw_bytes, "x509CertificateChain.certificates[0]"))
                .transpose()?,
            (None, None) => None,
        };
        Ok(Bundle {
            media_type: raw.media_type,
            version,
            tlog_entries: material.tlog_entries,
            content,
            certificate,
            key_hint: material.public_key.map(|k| k.hint),
        })
    }
}

/// One transparency log from a trusted root.
#[derive(Debug, Clone)]
pub struct TlogInstance {
    /// The log's base URL, e.g. `https://rekor.sigstore.dev`.
    pub base_url: String,
    /// The log ID (`logId.keyId`).
    pub log_id: Vec<u8>,
    /// The log's public key.
    pub key: PublicKey,
    /// Start of the key's validity (Unix seconds), if given.
    pub valid_from: Option<i64>,
    /// End of the key's validity (Unix seconds), if given.
    pub valid_until: Option<i64>,
}

impl TlogInstance {
    /// The log's host name: the base URL without scheme, port or path (as Go's
    /// `url.Hostname()` gives it, which sigstore-go uses as the checkpoint signature name).
    /// It is the log's name when its checkpoints carry no signature under its log ID's hint.
    pub fn host(&self) -> &str {
        let rest = self
            .base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        authority.split(':').next().unwrap_or(authority)
    }

    /// Whether `time` (Unix seconds) is inside the validity window.
    pub fn valid_at(&self, time: i64) -> bool {
        self.valid_from.is_none_or(|from| time >= from)
            && self.valid_until.is_none_or(|until| time <= until)
    }

    /// This instance as the trust input of a receipt check.
    pub fn trusted_log(&self) -> TrustedLog {
        TrustedLog {
            log_id: self.log_id.clone(),
            key: self.key.clone(),
            host: self.host().to_owned(),
        }
    }
}

/// The transparency-log part of a Sigstore `trusted_root.json`.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// The trusted logs.
    pub tlogs: Vec<TlogInstance>,
}

#[derive(Deserialize)]
struct RawRoot {
    #[serde(default)]
    tlogs: Vec<RawTlog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTlog {
    #[serde(default)]
    base_url: String,
    public_key: RawPublicKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

/// `TimeRange`: its start is required (a missing start is a malformed root, never an
/// unbounded window); its end is optional.
#[derive(Deserialize)]
struct RawValidity {
    start: String,
    #[serde(default)]
    end: Option<String>,
}

/// Parses an RFC 3339 timestamp to Unix seconds.
fn unix_seconds(s: &str) -> Result<i64, SigstoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|e| SigstoreError::MalformedTrustedRoot(format!("bad timestamp {s:?}: {e}")))
}

impl TrustedRoot {
    /// Parses `trusted_root.json`, keeping its `tlogs`.
    pub fn from_json(json: &[u8]) -> Result<Self, SigstoreError> {
        let raw: RawRoot = serde_json::from_slice(json)
            .map_err(|e| SigstoreError::MalformedTrustedRoot(e.to_string()))?;
        let tlogs = raw
            .tlogs
            .into_iter()
            .map(|t| {
                let bad = |what: &str| {
                    SigstoreError::MalformedTrustedRoot(format!("{what} of {}", t.base_url))
                };
                let der = B64
                    .decode(&t.public_key.raw_bytes)
                    .map_err(|_| bad("publicKey.rawBytes is not base64"))?;
                let key = PublicKey::from_spki_der(&der)
                    .map_err(|_| bad("publicKey is not a P-256 or Ed25519 SPKI"))?;
                let log_id = B64
                    .decode(&t.log_id.key_id)
                    .map_err(|_| bad("logId.keyId is not base64"))?;
                let (valid_from, valid_until) = match &t.public_key.valid_for {
                    Some(v) => (
                        Some(unix_seconds(&v.start)?),
                        v.end.as_deref().map(unix_seconds).transpose()?,
                    ),
                    None => (None, None),
                };
                Ok(TlogInstance {
                    base_url: t.base_url.clone(),
                    log_id,
                    key,
                    valid_from,
                    valid_until,
                })
            })
            .collect::<Result<_, SigstoreError>>()?;
        Ok(TrustedRoot { tlogs })
    }

    /// The trusted log with this log ID.
    pub fn find(&self, log_id: &[u8]) -> Option<&TlogInstance> {
        self.tlogs.iter().find(|t| t.log_id == log_id)
    }
}

/// What was verified for one tlog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    /// The log's base URL.
    pub log_url: String,
    /// The entry's (virtual, for v1) log index.
    pub log_index: u64,
    /// The verified checkpoint, if the entry had an inclusion proof.
    pub checkpoint: Option<Checkpoint>,
    /// The integrated time vouched for by a SET, if any.
    pub integrated_time: Option<i64>,
}

/// Verifies the transparency-log part of `bundle` against `root`. Every entry must verify
/// and be about the bundle's content.
pub fn verify_bundle_tlog(
    bundle: &Bundle,
    root: &TrustedRoot,
) -> Result<Vec<VerifiedEntry>, SigstoreError> {
    let content = bundle.content.as_ref().ok_or(SigstoreError::NoContent)?;
    if bundle.tlog_entries.is_empty() {
        return Err(SigstoreError::NoTlogEntries);
    }
    bundle
        .tlog_entries
        .iter()
        .enumerate()
        .map(|(index, tle)| {
            let verified = verify_entry(bundle.version, index, tle, root)?;
            let body = B64
                .decode(&tle.canonicalized_body)
                .map_err(|_| SigstoreError::Receipt {
                    index,
                    source: ReceiptError::Malformed("canonicalizedBody is not base64".into()),
                })?;
            entry_binding::check(&body, content, bundle.certificate.as_deref())
                .map_err(|source| SigstoreError::NotAboutContent { index, source })?;
            Ok(verified)
        })
        .collect()
}

/// The name the log signs its checkpoints under: the name on the signature line whose key
/// hint is the first four bytes of the log ID, or else the base URL's host name.
fn signature_name(receipt: &Receipt, instance: &TlogInstance) -> String {
    let hint = receipt
        .log_id
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes);
    receipt
        .inclusion_proof
        .as_ref()
        .and_then(|p| p.checkpoint.as_deref())
        .and_then(|text| Note::parse(text.as_bytes()).ok())
        .and_then(|note| {
            note.signatures()
                .iter()
                .find(|s| Some(s.key_hint) == hint)
                .map(|s| s.name.clone())
        })
        .unwrap_or_else(|| instance.host().to_owned())
}

/// Verifies one entry.
fn verify_entry(
    version: BundleVersion,
    index: usize,
    tle: &TransparencyLogEntry,
    root: &TrustedRoot,
) -> Result<VerifiedEntry, SigstoreError> {
    let wrap = |source| SigstoreError::Receipt { index, source };
    let receipt = Receipt::from_tle(tle).map_err(wrap)?;
    let instance = root
        .find(&receipt.log_id)
        .ok_or_else(|| SigstoreError::UnknownLog {
            index,
            log_id: tle.log_id.key_id.clone(),
        })?;
    let mut log = instance.trusted_log();
    log.host = signature_name(&receipt, instance);
    let (checkpoint, integrated_time) = if receipt.inclusion_proof.is_some() {
        let verified = receipt.verify(&log).map_err(wrap)?;
        (Some(verified.checkpoint), verified.integrated_time)
    } else if version == BundleVersion::V0_1 {
        // A v0.1 bundle may rest on the SET alone.
        receipt.verify_set(&log.key).map_err(wrap)?;
        (None, receipt.integrated_time)
    } else {
        return Err(SigstoreError::MissingInclusionProof { index });
    };
    if let Some(time) = integrated_time
        && !instance.valid_at(time)
    {
        return Err(SigstoreError::OutsideValidity { index, time });
    }
    Ok(VerifiedEntry {
        log_url: instance.base_url.clone(),
        log_index: receipt.log_index,
        checkpoint,
        integrated_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use BundleVersion::*;
        for (mt, v) in [
            (
                "application/vnd.dev.sigstore.bundle+json;version=0.1",
                Some(V0_1),
            ),
            (
                "application/vnd.dev.sigstore.bundle+json;version=0.2",
                Some(V0_2),
            ),
            (
                "application/vnd.dev.sigstore.bundle+json;version=0.3",
                Some(V0_3),
            ),
            ("application/vnd.dev.sigstore.bundle.v0.3+json", Some(V0_3)),
            ("application/vnd.dev.sigstore.bundle.v0.4+json", None),
            ("application/json", None),
        ] {
            assert_eq!(BundleVersion::from_media_type(mt), v, "{mt}");
        }
    }

    #[test]
    fn host_of_base_url() {
        let t = |url: &str| TlogInstance {
            base_url: url.into(),
            log_id: vec![],
            key: crate::domain::keys::PrivateKey::generate(
                crate::domain::keys::Algorithm::Ed25519,
                &mut crate::domain::keys::os_random,
            )
            .unwrap()
            .public_key(),
            valid_from: None,
            valid_until: None,
        };
        assert_eq!(t("https://rekor.sigstore.dev").host(), "rekor.sigstore.dev");
        assert_eq!(t("http://localhost:8000/").host(), "localhost");
        assert_eq!(t("http://[::1]:3030/api").host(), "::1");
        assert_eq!(t("log.example/x").host(), "log.example");
    }

    #[test]
    fn empty_and_malformed_bundles() {
        assert!(matches!(
            Bundle::from_json(b"{}"),
            Err(SigstoreError::MalformedBundle(_))
        ));
        let b = Bundle::from_json(
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{}}"#,
        )
        .unwrap();
        let root = TrustedRoot { tlogs: vec![] };
        assert_eq!(verify_bundle_tlog(&b, &root), Err(SigstoreError::NoContent));
        let b = Bundle::from_json(
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{},
                 "messageSignature":{"signature":"AAAA"}}"#,
        )
        .unwrap();
        assert_eq!(
            verify_bundle_tlog(&b, &root),
            Err(SigstoreError::NoTlogEntries)
        );
    }
}
