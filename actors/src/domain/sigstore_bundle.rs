//! The Sigstore bundle of an attestation provd logged: its DSSE envelope, the managed key
//! that signed it (named by its hint) and the log's receipt, in the form every Sigstore
//! client verifies (`application/vnd.dev.sigstore.bundle.v0.3+json`).
//!
//! - `verificationMaterial.publicKey.hint` is base64 of SHA-256 of the key's DER SPKI, the
//!   form sigstore-python and cosign write and provd's `--key` check compares;
//! - `verificationMaterial.tlogEntries` holds the one entry, in protobuf-JSON
//!   ([`Receipt::to_tle`]): inclusion proof and signed checkpoint always; for Rekor v1 (a
//!   `dsse` 0.0.1 entry, what provd's v1 client submits by default) also the integrated time
//!   and its SET; Rekor v2 (a `hashedrekord` 0.0.2 entry over SHA-256 of the envelope's PAE)
//!   has neither, so such a bundle carries no trusted time of its own;
//! - `dsseEnvelope` is the envelope, in standard base64.
//!
//! [`build`] refuses what would make a bundle nobody can verify: an envelope with other than
//! one signature (a bundle names one key), a key that does not verify that signature over the
//! PAE, a receipt without a signed checkpoint, an entry of another kind (a Rekor v1
//! `hashedrekord` over the PAE, which provd's v1 client writes with `entry_kind =
//! "hashedrekord"`: no client binds it to an envelope), or an entry that does not record this
//! envelope and key ([`entry_binding::check`]). The receipt itself was verified against the log's key
//! when it arrived; a verifier checks it again against its own trusted root.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dsse::Envelope;
use super::entry_binding::{self, BindingError, BundleContent};
use super::keys::PublicKey;
use super::receipt::{Receipt, TransparencyLogEntry};

/// The media type of the bundles [`build`] makes.
pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Why no bundle can be built from an envelope, key and receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleBuildError {
    /// The envelope's payload or signature is not base64.
    #[error("the envelope cannot be read: {0}")]
    Envelope(String),
    /// A bundle names one key and carries one signature; the envelope has another number.
    #[error("the envelope has {0} signatures; a Sigstore bundle carries exactly one")]
    SignatureCount(usize),
    /// The key is not a DER SPKI provd can use (ECDSA P-256 or Ed25519).
    #[error("the key is not a P-256 or Ed25519 DER public key: {0}")]
    Key(String),
    /// The key does not verify the envelope's signature over its PAE.
    #[error("the key does not verify the envelope's signature")]
    KeyMismatch,
    /// The receipt lacks the inclusion proof and signed checkpoint a v0.3 bundle requires.
    #[error("the receipt has no inclusion proof with a signed checkpoint")]
    NoInclusionProof,
    /// The entry's kind cannot back a DSSE envelope in a bundle: Sigstore clients (provd's
    /// verification among them) bind an envelope to a `dsse` 0.0.1 entry (Rekor v1) or a
    /// `hashedrekord` 0.0.2 entry over its PAE (Rekor v2), and refuse a v1 `hashedrekord`.
    #[error(
        "the log entry is a {0} entry, which Sigstore clients do not accept for a DSSE \
         envelope (they take dsse 0.0.1 from Rekor v1, hashedrekord 0.0.2 from Rekor v2)"
    )]
    UnsupportedEntry(String),
    /// The log entry records another envelope, signature or key.
    #[error("the log entry does not record this envelope: {0}")]
    NotAboutEnvelope(BindingError),
}

/// A Sigstore bundle v0.3 with a DSSE envelope signed by a managed key, in protobuf-JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigstoreBundle {
    /// Always [`MEDIA_TYPE`].
    pub media_type: String,
    /// The key hint and the log entry.
    pub verification_material: VerificationMaterial,
    /// What was signed.
    pub dsse_envelope: BundleEnvelope,
}

/// `dev.sigstore.bundle.v1.VerificationMaterial` for a managed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    /// Which key signed.
    pub public_key: PublicKeyIdentifier,
    /// The log entries (one).
    pub tlog_entries: Vec<TransparencyLogEntry>,
}

/// `dev.sigstore.common.v1.PublicKeyIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    /// Base64 of SHA-256 of the key's DER SPKI.
    pub hint: String,
}

/// `io.intoto.Envelope` as a bundle carries it: bytes in standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEnvelope {
    /// Base64 of the payload.
    pub payload: String,
    /// The payload's media type.
    pub payload_type: String,
    /// The one signature.
    pub signatures: Vec<BundleSignature>,
}

/// `io.intoto.Signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSignature {
    /// Base64 of the signature.
    pub sig: String,
    /// The envelope's unauthenticated key id; protobuf-JSON leaves an empty one out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
}

/// The hint a bundle names a managed key by: base64 of SHA-256 of its DER SPKI.
pub fn key_hint(key_der: &[u8]) -> String {
    B64.encode(Sha256::digest(key_der))
}

/// Builds the bundle of `envelope`, signed by the key `key_der` (DER SPKI) and logged as
/// `receipt`.
pub fn build(
    envelope: &Envelope,
    key_der: &[u8],
    receipt: &Receipt,
) -> Result<SigstoreBundle, BundleBuildError> {
    let payload = envelope
        .payload_bytes()
        .map_err(|e| BundleBuildError::Envelope(e.to_string()))?;
    let [signature] = envelope.signatures.as_slice() else {
        return Err(BundleBuildError::SignatureCount(envelope.signatures.len()));
    };
    let sig = signature
        .bytes()
        .ok_or_else(|| BundleBuildError::Envelope("the signature is not base64".into()))?;
    let key =
        PublicKey::from_spki_der(key_der).map_err(|e| BundleBuildError::Key(e.to_string()))?;
    key.verify(&super::dsse::pae(&envelope.payload_type, &payload), &sig)
        .map_err(|_| BundleBuildError::KeyMismatch)?;
    if receipt
        .inclusion_proof
        .as_ref()
        .is_none_or(|p| p.checkpoint.is_none())
    {
        return Err(BundleBuildError::NoInclusionProof);
    }
    let tle = receipt.to_tle();
    let kind = tle
        .kind_version
        .as_ref()
        .map(|k| (k.kind.as_str(), k.version.as_str()));
    if !matches!(kind, Some(("dsse", "0.0.1") | ("hashedrekord", "0.0.2"))) {
        let (kind, version) = kind.unwrap_or(("unknown", "kind"));
        return Err(BundleBuildError::UnsupportedEntry(format!(
            "{kind} {version}"
        )));
    }
    let content = BundleContent::Dsse {
        payload_type: envelope.payload_type.clone(),
        payload: payload.clone(),
        signatures: vec![sig.clone()],
    };
    entry_binding::check(&receipt.canonical_body, &content, Some(key_der))
        .map_err(BundleBuildError::NotAboutEnvelope)?;
    Ok(SigstoreBundle {
        media_type: MEDIA_TYPE.to_owned(),
        verification_material: VerificationMaterial {
            public_key: PublicKeyIdentifier {
                hint: key_hint(key_der),
            },
            tlog_entries: vec![tle],
        },
        dsse_envelope: BundleEnvelope {
            // Re-encoded: DSSE allows URL-safe base64, a bundle's bytes are standard base64.
            payload: B64.encode(&payload),
            payload_type: envelope.payload_type.clone(),
            signatures: vec![BundleSignature {
                sig: B64.encode(&sig),
                keyid: signature.keyid.clone(),
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dsse::Signature;
    use crate::domain::keys::{Algorithm, PrivateKey, os_random};
    use crate::domain::log::{LogTree, signed_checkpoint};
    use crate::domain::note::Signer;
    use crate::domain::receipt::InclusionProof;
    use crate::domain::rekor_entry::{canonicalize_v1, canonicalize_v2};
    use crate::domain::sigstore::{self, TrustedRoot};
    use crate::domain::verification::{
        self, Artifact, ArtifactDigest, Request, SignerPolicy, Thresholds, TrustMaterial,
    };
    use serde_json::json;

    const HOST: &str = "log.test";
    const TREE: u64 = 7;
    const SUBJECT: &[u8] = b"the artifact";

    fn key(alg: Algorithm) -> PrivateKey {
        PrivateKey::generate(alg, &mut os_random).unwrap()
    }

    fn envelope(signer: &PrivateKey) -> Envelope {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "artifact", "digest": {"sha256": hex::encode(Sha256::digest(SUBJECT))}}],
            "predicateType": "https://example.test/predicate/v1",
            "predicate": {},
        });
        Envelope::sign(
            "application/vnd.in-toto+json",
            statement.to_string().as_bytes(),
            signer,
            "",
        )
    }

    /// A one-entry log signed with `log_key`: v1 with a tree ID, integrated time and SET,
    /// v2 without.
    fn receipt(
        v1: bool,
        envelope: &Envelope,
        signer: &PrivateKey,
        log_key: &PrivateKey,
    ) -> Receipt {
        let pem = signer.public_key().to_pem().unwrap();
        let body = if v1 {
            let request = json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
                "envelope": envelope.to_json(), "verifiers": [B64.encode(&pem)]}}});
            canonicalize_v1(request.to_string().as_bytes())
                .unwrap()
                .body
        } else {
            let request = json!({"hashedRekordRequestV002": {
                "digest": B64.encode(Sha256::digest(envelope.pae().unwrap())),
                "signature": {"content": envelope.signatures[0].sig, "verifier": {
                    "publicKey": {"rawBytes": B64.encode(signer.public_key().to_spki_der())},
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}});
            canonicalize_v2(request.to_string().as_bytes())
                .unwrap()
                .body
        };
        let mut tree = LogTree::new();
        tree.append(br#"{"an":"earlier entry"}"#.to_vec()).unwrap();
        let index = tree.append(body.clone()).unwrap();
        let origin = if v1 {
            format!("{HOST} - {TREE}")
        } else {
            HOST.to_owned()
        };
        let checkpoint = tree.checkpoint(&origin, tree.size()).unwrap();
        let note_signer = Signer::new(HOST, log_key.clone()).unwrap();
        let log_id = if v1 {
            log_key.public_key().spki_sha256().to_vec()
        } else {
            note_signer.verifier().key_id().to_vec()
        };
        let mut receipt = Receipt {
            log_id,
            log_index: index,
            tree_id: v1.then_some(TREE),
            integrated_time: v1.then_some(1_700_000_000),
            kind_version: None,
            canonical_body: body,
            inclusion_proof: Some(InclusionProof {
                log_index: index,
                tree_size: tree.size(),
                root_hash: tree.root(),
                hashes: tree.inclusion_proof(index, tree.size()).unwrap(),
                checkpoint: Some(signed_checkpoint(&checkpoint, &[&note_signer]).unwrap()),
            }),
            signed_entry_timestamp: None,
        };
        if v1 {
            receipt.sign_set(log_key);
        }
        receipt
    }

    fn trusted_root(log_key: &PrivateKey, log_id: &[u8]) -> Vec<u8> {
        let details = match log_key.algorithm() {
            Algorithm::P256 => "PKIX_ECDSA_P256_SHA_256",
            Algorithm::Ed25519 => "PKIX_ED25519",
        };
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": format!("http://{HOST}"),
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(log_key.public_key().to_spki_der()),
                              "keyDetails": details, "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(log_id)},
            }],
            "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": [],
        })
        .to_string()
        .into_bytes()
    }

    /// The bundle of each log version passes provd's transparency-log check and its complete
    /// verification with the signer's key and the statement's subject.
    #[test]
    fn bundles_of_both_log_versions_verify_completely() {
        for v1 in [true, false] {
            let signer = key(Algorithm::P256);
            let log_key = key(if v1 {
                Algorithm::P256
            } else {
                Algorithm::Ed25519
            });
            let envelope = envelope(&signer);
            let receipt = receipt(v1, &envelope, &signer, &log_key);
            let der = signer.public_key().to_spki_der();
            let bundle = build(&envelope, &der, &receipt).unwrap();
            let json = serde_json::to_vec(&bundle).unwrap();
            let text = String::from_utf8(json.clone()).unwrap();
            assert!(text.contains(MEDIA_TYPE), "{text}");
            assert_eq!(bundle.verification_material.public_key.hint, key_hint(&der));
            assert_eq!(
                bundle.verification_material.tlog_entries[0]
                    .inclusion_promise
                    .is_some(),
                v1,
                "a SET only from Rekor v1"
            );

            let root = trusted_root(&log_key, &receipt.log_id);
            let parsed = sigstore::Bundle::from_json(&json).unwrap();
            let entries =
                sigstore::verify_bundle_tlog(&parsed, &TrustedRoot::from_json(&root).unwrap())
                    .unwrap();
            assert_eq!(entries[0].log_index, 1);
            assert_eq!(entries[0].integrated_time.is_some(), v1);

            let trust = TrustMaterial::from_json(&root).unwrap();
            let digest: ArtifactDigest = format!("sha256:{}", hex::encode(Sha256::digest(SUBJECT)))
                .parse()
                .unwrap();
            let policy = SignerPolicy::Key(der.clone());
            // A Rekor v2 entry brings no trusted time, and this log has no TSA.
            let thresholds = Thresholds {
                tlog_entries: 1,
                timestamps: usize::from(v1),
            };
            let report = verification::verify(
                &trust,
                &Request {
                    bundle: &json,
                    artifact: Artifact::Digest(&digest),
                    signer: &policy,
                    thresholds,
                },
            );
            assert!(report.valid, "v1 {v1}: {:?}", report.error);

            // One flipped signature bit and the same verification refuses it.
            let mut tampered = bundle.clone();
            let mut sig = B64
                .decode(&tampered.dsse_envelope.signatures[0].sig)
                .unwrap();
            let last = sig.len() - 1;
            sig[last] ^= 1;
            tampered.dsse_envelope.signatures[0].sig = B64.encode(sig);
            let tampered = serde_json::to_vec(&tampered).unwrap();
            let report = verification::verify(
                &trust,
                &Request {
                    bundle: &tampered,
                    artifact: Artifact::Digest(&digest),
                    signer: &policy,
                    thresholds,
                },
            );
            assert!(!report.valid, "v1 {v1}: a tampered signature verified");
        }
    }

    #[test]
    fn what_no_one_could_verify_is_refused() {
        let signer = key(Algorithm::P256);
        let log_key = key(Algorithm::P256);
        let envelope = envelope(&signer);
        let receipt = receipt(true, &envelope, &signer, &log_key);
        let der = signer.public_key().to_spki_der();

        let other = key(Algorithm::P256).public_key().to_spki_der();
        assert_eq!(
            build(&envelope, &other, &receipt),
            Err(BundleBuildError::KeyMismatch)
        );
        assert!(matches!(
            build(&envelope, b"not a key", &receipt),
            Err(BundleBuildError::Key(_))
        ));

        let mut two = envelope.clone();
        two.signatures.push(Signature {
            keyid: String::new(),
            sig: two.signatures[0].sig.clone(),
        });
        assert_eq!(
            build(&two, &der, &receipt),
            Err(BundleBuildError::SignatureCount(2))
        );

        let mut bare = receipt.clone();
        bare.inclusion_proof.as_mut().unwrap().checkpoint = None;
        assert_eq!(
            build(&envelope, &der, &bare),
            Err(BundleBuildError::NoInclusionProof)
        );

        // Rekor v1 `hashedrekord` over the PAE: a real entry of this envelope, of a kind no
        // client accepts for one.
        let request = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256",
                              "value": hex::encode(Sha256::digest(envelope.pae().unwrap()))}},
            "signature": {"content": envelope.signatures[0].sig,
                          "publicKey": {"content": B64.encode(signer.public_key().to_pem().unwrap())}}}});
        let mut hashedrekord = receipt.clone();
        hashedrekord.canonical_body = canonicalize_v1(request.to_string().as_bytes())
            .unwrap()
            .body;
        hashedrekord.kind_version = None;
        assert_eq!(
            build(&envelope, &der, &hashedrekord),
            Err(BundleBuildError::UnsupportedEntry(
                "hashedrekord 0.0.1".into()
            ))
        );

        // Another envelope by the same key, with this one's receipt.
        let another = Envelope::sign("application/vnd.in-toto+json", b"{}", &signer, "");
        assert!(matches!(
            build(&another, &der, &receipt),
            Err(BundleBuildError::NotAboutEnvelope(_))
        ));
    }

    #[test]
    fn url_safe_envelopes_are_written_in_standard_base64() {
        let signer = key(Algorithm::P256);
        let log_key = key(Algorithm::Ed25519);
        let envelope = envelope(&signer);
        let receipt = receipt(false, &envelope, &signer, &log_key);
        let mut url_safe = envelope.clone();
        let engine = base64::engine::general_purpose::URL_SAFE;
        url_safe.payload = engine.encode(envelope.payload_bytes().unwrap());
        url_safe.signatures[0].sig = engine.encode(envelope.signatures[0].bytes().unwrap());
        let bundle = build(&url_safe, &signer.public_key().to_spki_der(), &receipt).unwrap();
        assert_eq!(bundle.dsse_envelope.payload, envelope.payload);
        assert_eq!(
            bundle.dsse_envelope.signatures[0].sig,
            envelope.signatures[0].sig
        );
    }
}
