//! Whether a transparency-log entry is about a Sigstore bundle's content.
//!
//! An inclusion proof shows that *some* entry is in the log; it says nothing about the
//! bundle it travels in. A bundle is only backed by its entry when the entry's body records
//! the same content: the same digest and signature for a message signature (`hashedrekord`),
//! the same payload hash and signature for a DSSE envelope (`dsse`, `intoto`, or Rekor v2's
//! `hashedrekord` over the envelope's PAE), and the same certificate or key. The log checked
//! the signature against that key and digest when it accepted the entry, so a bundle whose
//! content differs from its entry's (another artifact, envelope, signature or signer) is
//! refused here, before anything else about it is believed.
//!
//! The body forms follow Rekor's types: `hashedrekord` 0.0.1 (hex digest, base64 signature,
//! base64 PEM key or certificate), `hashedrekord` 0.0.2 (base64 digest, DER verifier),
//! `dsse` 0.0.1 (hex payload hash, base64 PEM verifiers), `dsse` 0.0.2 (base64 payload hash,
//! DER verifiers) and `intoto` 0.0.2 (hex payload hash, doubly base64-encoded signatures).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::dsse;

/// What a bundle says was signed (`messageSignature` or `dsseEnvelope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleContent {
    /// A signature over an artifact, with the artifact's digest when the bundle gives it.
    Message {
        /// `messageDigest`: algorithm (lower case, e.g. `sha256`) and digest bytes.
        digest: Option<(String, Vec<u8>)>,
        /// The signature bytes.
        signature: Vec<u8>,
    },
    /// A DSSE envelope.
    Dsse {
        /// The payload type.
        payload_type: String,
        /// The payload bytes.
        payload: Vec<u8>,
        /// The envelope's signatures.
        signatures: Vec<Vec<u8>>,
    },
}

/// Why an entry is not about the bundle's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The bundle's `messageSignature` or `dsseEnvelope` is malformed.
    #[error("the bundle's content is malformed: {0}")]
    MalformedContent(String),
    /// The entry body is not JSON of a known kind, or lacks a field the check needs.
    #[error("the entry body cannot be read: {0}")]
    MalformedBody(String),
    /// The entry's kind cannot record this kind of content.
    #[error("the entry is a {kind} {version} entry, which cannot record a {content}")]
    WrongKind {
        /// The entry kind.
        kind: String,
        /// The entry version.
        version: String,
        /// What the bundle holds.
        content: &'static str,
    },
    /// The entry records another artifact digest.
    #[error("the entry is for another artifact (entry {entry}, bundle {bundle})")]
    OtherArtifact {
        /// The entry's digest, `alg:hex`.
        entry: String,
        /// The bundle's digest, `alg:hex`.
        bundle: String,
    },
    /// The entry records another DSSE payload.
    #[error(
        "the entry is for another envelope (payload hash {entry} in the entry, {bundle} for the bundle's payload)"
    )]
    OtherEnvelope {
        /// The entry's payload hash, `alg:hex`.
        entry: String,
        /// The bundle payload's hash, `alg:hex`.
        bundle: String,
    },
    /// The entry records another signature.
    #[error("the entry records another signature than the bundle's")]
    OtherSignature,
    /// The entry records another certificate or key.
    #[error("the entry records another signing certificate or key than the bundle's")]
    OtherSigner,
}

/// Checks that the canonical `body` of a log entry records `content`, signed by
/// `signer_der` (the bundle's leaf certificate or key, DER) when the bundle carries one.
pub fn check(
    body: &[u8],
    content: &BundleContent,
    signer_der: Option<&[u8]>,
) -> Result<(), BindingError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| BindingError::MalformedBody(format!("not JSON: {e}")))?;
    let kind = str_at(&body, &["kind"])?;
    let version = str_at(&body, &["apiVersion"])?;
    let spec = body
        .get("spec")
        .ok_or_else(|| BindingError::MalformedBody("no `spec`".into()))?;
    let wrong = |content: &'static str| BindingError::WrongKind {
        kind: kind.to_owned(),
        version: version.to_owned(),
        content,
    };
    let recorded = match (kind, version) {
        ("hashedrekord", "0.0.1") => hashedrekord_v1(spec)?,
        ("hashedrekord", "0.0.2") => hashedrekord_v2(spec)?,
        ("dsse", "0.0.1") => dsse_v1(spec)?,
        ("dsse", "0.0.2") => dsse_v2(spec)?,
        ("intoto", "0.0.2") => intoto_v2(spec)?,
        _ => {
            return Err(wrong(match content {
                BundleContent::Message { .. } => "message signature",
                BundleContent::Dsse { .. } => "DSSE envelope",
            }));
        }
    };
    match content {
        BundleContent::Message { digest, signature } => {
            let Recorded::Digest {
                digest: entry_digest,
                signatures,
            } = recorded
            else {
                return Err(wrong("message signature"));
            };
            if let Some(bundle_digest) = digest
                && *bundle_digest != entry_digest
            {
                return Err(BindingError::OtherArtifact {
                    entry: spell(&entry_digest),
                    bundle: spell(bundle_digest),
                });
            }
            match_signature(&signatures, std::slice::from_ref(signature), signer_der)
        }
        BundleContent::Dsse {
            payload_type,
            payload,
            signatures,
        } => match recorded {
            // Rekor v2 logs a DSSE envelope as a hashedrekord over its PAE.
            Recorded::Digest {
                digest,
                signatures: entry_sigs,
            } => {
                let pae = dsse::pae(payload_type, payload);
                let ours = (digest.0.clone(), hash_as(&digest.0, &pae)?);
                if ours != digest {
                    return Err(BindingError::OtherEnvelope {
                        entry: spell(&digest),
                        bundle: spell(&ours),
                    });
                }
                match_signature(&entry_sigs, signatures, signer_der)
            }
            Recorded::Payload {
                payload_hash,
                signatures: entry_sigs,
            } => {
                let ours = (payload_hash.0.clone(), hash_as(&payload_hash.0, payload)?);
                if ours != payload_hash {
                    return Err(BindingError::OtherEnvelope {
                        entry: spell(&payload_hash),
                        bundle: spell(&ours),
                    });
                }
                match_signature(&entry_sigs, signatures, signer_der)
            }
        },
    }
}

/// What an entry body records, reduced to what the check compares.
enum Recorded {
    /// A digest of the signed message (hashedrekord) and its signatures.
    Digest {
        digest: (String, Vec<u8>),
        signatures: Vec<EntrySignature>,
    },
    /// The hash of a DSSE payload and the envelope's signatures.
    Payload {
        payload_hash: (String, Vec<u8>),
        signatures: Vec<EntrySignature>,
    },
}

/// One signature of an entry and the DER of its verifier, when the body names one.
struct EntrySignature {
    signature: Vec<u8>,
    verifier: Option<Vec<u8>>,
}

/// Every bundle signature must be in the entry, with the bundle's signer as its verifier.
fn match_signature(
    entry: &[EntrySignature],
    bundle: &[Vec<u8>],
    signer_der: Option<&[u8]>,
) -> Result<(), BindingError> {
    if bundle.is_empty() {
        return Err(BindingError::MalformedContent("no signature".into()));
    }
    for sig in bundle {
        let Some(found) = entry.iter().find(|e| e.signature == *sig) else {
            return Err(BindingError::OtherSignature);
        };
        if let (Some(ours), Some(theirs)) = (signer_der, found.verifier.as_deref())
            && ours != theirs
        {
            return Err(BindingError::OtherSigner);
        }
    }
    Ok(())
}

fn hashedrekord_v1(spec: &Value) -> Result<Recorded, BindingError> {
    let alg = str_at(spec, &["data", "hash", "algorithm"])?.to_ascii_lowercase();
    let value = hex_at(spec, &["data", "hash", "value"])?;
    let signature = b64_at(spec, &["signature", "content"])?;
    let verifier = match spec.pointer("/signature/publicKey/content") {
        Some(Value::String(s)) => Some(pem_to_der(&b64(s, "signature.publicKey.content")?)?),
        _ => None,
    };
    Ok(Recorded::Digest {
        digest: (alg, value),
        signatures: vec![EntrySignature {
            signature,
            verifier,
        }],
    })
}

fn hashedrekord_v2(spec: &Value) -> Result<Recorded, BindingError> {
    let spec = spec
        .get("hashedRekordV002")
        .ok_or_else(|| BindingError::MalformedBody("no `hashedRekordV002`".into()))?;
    let alg = v2_algorithm(str_at(spec, &["data", "algorithm"])?)?;
    let digest = b64_at(spec, &["data", "digest"])?;
    let signature = b64_at(spec, &["signature", "content"])?;
    let verifier = v2_verifier(spec.pointer("/signature/verifier"))?;
    Ok(Recorded::Digest {
        digest: (alg, digest),
        signatures: vec![EntrySignature {
            signature,
            verifier,
        }],
    })
}

fn dsse_v1(spec: &Value) -> Result<Recorded, BindingError> {
    let alg = str_at(spec, &["payloadHash", "algorithm"])?.to_ascii_lowercase();
    let value = hex_at(spec, &["payloadHash", "value"])?;
    let signatures = array_at(spec, "signatures")?
        .iter()
        .map(|s| {
            Ok(EntrySignature {
                signature: b64_at(s, &["signature"])?,
                verifier: match s.get("verifier") {
                    Some(Value::String(v)) => Some(pem_to_der(&b64(v, "verifier")?)?),
                    _ => None,
                },
            })
        })
        .collect::<Result<_, BindingError>>()?;
    Ok(Recorded::Payload {
        payload_hash: (alg, value),
        signatures,
    })
}

fn dsse_v2(spec: &Value) -> Result<Recorded, BindingError> {
    let spec = spec
        .get("dsseV002")
        .ok_or_else(|| BindingError::MalformedBody("no `dsseV002`".into()))?;
    let alg = v2_algorithm(str_at(spec, &["payloadHash", "algorithm"])?)?;
    let digest = b64_at(spec, &["payloadHash", "digest"])?;
    let signatures = array_at(spec, "signatures")?
        .iter()
        .map(|s| {
            Ok(EntrySignature {
                signature: b64_at(s, &["content"])?,
                verifier: v2_verifier(s.get("verifier"))?,
            })
        })
        .collect::<Result<_, BindingError>>()?;
    Ok(Recorded::Payload {
        payload_hash: (alg, digest),
        signatures,
    })
}

fn intoto_v2(spec: &Value) -> Result<Recorded, BindingError> {
    let content = spec
        .get("content")
        .ok_or_else(|| BindingError::MalformedBody("no `content`".into()))?;
    let alg = str_at(content, &["payloadHash", "algorithm"])?.to_ascii_lowercase();
    let value = hex_at(content, &["payloadHash", "value"])?;
    let signatures = content
        .pointer("/envelope/signatures")
        .and_then(Value::as_array)
        .ok_or_else(|| BindingError::MalformedBody("no `content.envelope.signatures`".into()))?
        .iter()
        .map(|s| {
            // intoto 0.0.2 stores each signature base64-encoded twice.
            let once = b64_at(s, &["sig"])?;
            let text = String::from_utf8(once)
                .map_err(|_| BindingError::MalformedBody("`sig` is not base64 text".into()))?;
            Ok(EntrySignature {
                signature: b64(&text, "sig")?,
                verifier: match s.get("publicKey") {
                    Some(Value::String(v)) => Some(pem_to_der(&b64(v, "publicKey")?)?),
                    _ => None,
                },
            })
        })
        .collect::<Result<_, BindingError>>()?;
    Ok(Recorded::Payload {
        payload_hash: (alg, value),
        signatures,
    })
}

/// The DER of a Rekor v2 verifier (`x509Certificate.rawBytes` or `publicKey.rawBytes`).
fn v2_verifier(verifier: Option<&Value>) -> Result<Option<Vec<u8>>, BindingError> {
    let Some(v) = verifier else {
        return Ok(None);
    };
    for path in [
        &["x509Certificate", "rawBytes"][..],
        &["publicKey", "rawBytes"],
    ] {
        if let Some(Value::String(s)) = walk(v, path) {
            return b64(s, "verifier.rawBytes").map(Some);
        }
    }
    Ok(None)
}

/// Rekor v2's `HashAlgorithm` enum names, spelled as the bundle spells them.
fn v2_algorithm(name: &str) -> Result<String, BindingError> {
    match name {
        "SHA2_256" => Ok("sha256".into()),
        "SHA2_384" => Ok("sha384".into()),
        "SHA2_512" => Ok("sha512".into()),
        other => Err(BindingError::MalformedBody(format!(
            "unknown hash algorithm {other:?}"
        ))),
    }
}

/// Hashes `data` with the named algorithm (the ones provd can compute).
fn hash_as(alg: &str, data: &[u8]) -> Result<Vec<u8>, BindingError> {
    match alg {
        "sha256" => Ok(Sha256::digest(data).to_vec()),
        "sha512" => Ok(sha2::Sha512::digest(data).to_vec()),
        "sha384" => Ok(sha2::Sha384::digest(data).to_vec()),
        other => Err(BindingError::MalformedBody(format!(
            "unsupported hash algorithm {other:?}"
        ))),
    }
}

fn spell((alg, value): &(String, Vec<u8>)) -> String {
    format!("{alg}:{}", hex::encode(value))
}

fn walk<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, BindingError> {
    walk(v, path)
        .and_then(Value::as_str)
        .ok_or_else(|| BindingError::MalformedBody(format!("no `{}`", path.join("."))))
}

fn array_at<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>, BindingError> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| BindingError::MalformedBody(format!("no `{key}`")))
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, BindingError> {
    B64.decode(s)
        .map_err(|_| BindingError::MalformedBody(format!("`{what}` is not base64")))
}

fn b64_at(v: &Value, path: &[&str]) -> Result<Vec<u8>, BindingError> {
    b64(str_at(v, path)?, &path.join("."))
}

fn hex_at(v: &Value, path: &[&str]) -> Result<Vec<u8>, BindingError> {
    hex::decode(str_at(v, path)?)
        .map_err(|_| BindingError::MalformedBody(format!("`{}` is not hex", path.join("."))))
}

/// The DER inside the first PEM block of `pem` (a certificate or a public key).
fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, BindingError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| BindingError::MalformedBody("a verifier is not PEM text".into()))?;
    pem_block(text)
        .map(|(_, der)| der)
        .ok_or_else(|| BindingError::MalformedBody("a verifier is not PEM text".into()))
}

/// The label and the DER of the first PEM block in `text` (`-----BEGIN <label>-----`), or
/// `None` when there is no block or its body is not base64.
pub fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "));
    let label = lines
        .next()?
        .strip_prefix("-----BEGIN ")?
        .strip_suffix("-----")?
        .to_owned();
    let body: String = lines.take_while(|l| !l.starts_with("-----END ")).collect();
    if body.is_empty() {
        return None;
    }
    B64.decode(body).ok().map(|der| (label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashedrekord(digest_hex: &str, sig: &[u8], pem: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest_hex}},
                "signature": {"content": B64.encode(sig), "publicKey": {"content": B64.encode(pem)}}
            }
        }))
        .unwrap()
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";

    #[test]
    fn message_binding_names_what_differs() {
        let digest = vec![7u8; 32];
        let body = hashedrekord(&hex::encode(&digest), b"sig", PEM);
        let content = |d: Vec<u8>, s: &[u8]| BundleContent::Message {
            digest: Some(("sha256".into(), d)),
            signature: s.to_vec(),
        };
        assert_eq!(
            check(&body, &content(digest.clone(), b"sig"), Some(&[1, 2, 3])),
            Ok(())
        );
        assert!(matches!(
            check(&body, &content(vec![8u8; 32], b"sig"), None),
            Err(BindingError::OtherArtifact { .. })
        ));
        assert_eq!(
            check(&body, &content(digest.clone(), b"other"), None),
            Err(BindingError::OtherSignature)
        );
        assert_eq!(
            check(&body, &content(digest, b"sig"), Some(&[9, 9])),
            Err(BindingError::OtherSigner)
        );
    }

    #[test]
    fn dsse_content_against_a_hashedrekord_entry_is_checked_over_the_pae() {
        let payload = b"{}".to_vec();
        let pae = dsse::pae("application/vnd.in-toto+json", &payload);
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "0.0.2", "kind": "hashedrekord",
            "spec": {"hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(&pae))},
                "signature": {"content": B64.encode(b"s"), "verifier": {"x509Certificate": {"rawBytes": B64.encode([1, 2, 3])}}}
            }}
        }))
        .unwrap();
        let content = |p: &[u8]| BundleContent::Dsse {
            payload_type: "application/vnd.in-toto+json".into(),
            payload: p.to_vec(),
            signatures: vec![b"s".to_vec()],
        };
        assert_eq!(check(&body, &content(&payload), Some(&[1, 2, 3])), Ok(()));
        assert!(matches!(
            check(&body, &content(b"[]"), None),
            Err(BindingError::OtherEnvelope { .. })
        ));
    }

    #[test]
    fn a_message_is_never_bound_to_an_envelope_entry() {
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {"payloadHash": {"algorithm": "sha256", "value": hex::encode([0u8; 32])},
                     "signatures": [{"signature": B64.encode(b"s")}]}
        }))
        .unwrap();
        let content = BundleContent::Message {
            digest: None,
            signature: b"s".to_vec(),
        };
        assert!(matches!(
            check(&body, &content, None),
            Err(BindingError::WrongKind { .. })
        ));
    }
}
