//! Rekor entry types as a log server sees them: a proposed entry is validated, its
//! signatures are checked, and it is turned into the canonical body that becomes the Merkle
//! leaf, byte for byte as Rekor builds it.
//!
//! - Rekor v1 `hashedrekord` 0.0.1: the body has the request's shape, with the public key
//!   re-encoded as canonical PEM (64-column lines, final newline); the signature must verify
//!   over the given SHA-256 digest (ECDSA P-256 prehash).
//! - Rekor v1 `dsse` 0.0.1: from `proposedContent` (the envelope as a JSON string and its
//!   verifiers) the server derives `envelopeHash` = SHA-256 of the envelope string as sent,
//!   `payloadHash` = SHA-256 of the decoded payload, and one `{signature, verifier}` per
//!   envelope signature, sorted by signature; every signature must verify with a verifier.
//! - Rekor v2 `hashedRekordRequestV002`: the body is
//!   `{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{"hashedRekordV002":{"data":…,"signature":…}}}`;
//!   only `PKIX_ECDSA_P256_SHA_256` with a public key is accepted here (pure Ed25519 is
//!   refused by Rekor v2 too); `dsseRequestV002` is refused as Rekor v2 refuses it.
//!
//! Bodies are RFC 8785 (JCS) JSON: sorted keys, no whitespace. Certificates (Fulcio) are not
//! supported: this serves a lab log whose submitters hold keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::dsse::Envelope;
use super::keys::PublicKey;

/// Why a proposed entry was refused. Every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    /// The request is not valid JSON or a field is missing or malformed.
    #[error("{0}")]
    Malformed(String),
    /// The kind or version is not one this log accepts.
    #[error("{0}")]
    Unsupported(String),
    /// A signature does not verify with the given key(s).
    #[error("{0}")]
    BadSignature(String),
}

/// A validated entry: its canonical body, kind and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEntry {
    /// The exact leaf bytes.
    pub body: Vec<u8>,
    /// The entry kind, e.g. `hashedrekord`.
    pub kind: &'static str,
    /// The entry version, e.g. `0.0.1`.
    pub version: &'static str,
}

fn malformed(msg: impl Into<String>) -> EntryError {
    EntryError::Malformed(msg.into())
}

/// Writes `value` as RFC 8785 JSON. Object keys are sorted here rather than relying on
/// serde_json's map order, which a feature flag elsewhere in the build could change. All keys
/// are ASCII, so byte order is UTF-16 order.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out.into_bytes()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, EntryError> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(key)
            .ok_or_else(|| malformed(format!("missing field {}", path.join("."))))?;
    }
    cur.as_str()
        .ok_or_else(|| malformed(format!("field {} must be a string", path.join("."))))
}

fn b64_field(v: &Value, path: &[&str]) -> Result<Vec<u8>, EntryError> {
    B64.decode(str_at(v, path)?)
        .map_err(|_| malformed(format!("field {} is not standard base64", path.join("."))))
}

/// Decodes a base64 PEM public key (what Rekor v1 requests carry).
fn key_from_b64_pem(b64: &[u8], what: &str) -> Result<PublicKey, EntryError> {
    let pem = std::str::from_utf8(b64).map_err(|_| malformed(format!("{what} is not PEM text")))?;
    if pem.contains("BEGIN CERTIFICATE") {
        return Err(EntryError::Unsupported(format!(
            "{what}: X.509 certificates are not supported by this log; send a PEM public key"
        )));
    }
    PublicKey::from_pem(pem).map_err(|e| malformed(format!("{what}: {e}")))
}

fn canonical_pem(key: &PublicKey) -> Result<String, EntryError> {
    key.to_pem().map_err(|e| malformed(e.to_string()))
}

/// Verifies an ECDSA P-256 signature over a SHA-256 digest (hashedrekord's prehash form).
fn verify_digest(key: &PublicKey, digest: &[u8], sig: &[u8], what: &str) -> Result<(), EntryError> {
    let PublicKey::P256(k) = key else {
        return Err(EntryError::Unsupported(format!(
            "{what}: only ECDSA P-256 keys are supported for hashedrekord entries"
        )));
    };
    let sig = p256::ecdsa::Signature::from_der(sig)
        .map_err(|_| EntryError::BadSignature(format!("{what}: signature is not DER ECDSA")))?;
    k.verify_prehash(digest, &sig).map_err(|_| {
        EntryError::BadSignature(format!(
            "{what}: signature does not verify with the given public key over the given digest"
        ))
    })
}

/// Validates a Rekor v1 `ProposedEntry` and returns its canonical body.
pub fn canonicalize_v1(request: &[u8]) -> Result<CanonicalEntry, EntryError> {
    let v: Value = serde_json::from_slice(request)
        .map_err(|e| malformed(format!("request body is not valid JSON: {e}")))?;
    let kind = str_at(&v, &["kind"])?;
    let version = str_at(&v, &["apiVersion"])?;
    let spec = v
        .get("spec")
        .ok_or_else(|| malformed("missing field spec"))?;
    match (kind, version) {
        ("hashedrekord", "0.0.1") => hashedrekord_v001(spec),
        ("dsse", "0.0.1") => dsse_v001(spec),
        ("hashedrekord" | "dsse", other) => Err(EntryError::Unsupported(format!(
            "unsupported apiVersion {other:?} for kind {kind}; this log accepts 0.0.1"
        ))),
        (other, _) => Err(EntryError::Unsupported(format!(
            "unsupported entry kind {other:?}; this log accepts hashedrekord and dsse"
        ))),
    }
}

fn hashedrekord_v001(spec: &Value) -> Result<CanonicalEntry, EntryError> {
    let algorithm = str_at(spec, &["data", "hash", "algorithm"])?;
    if algorithm != "sha256" {
        return Err(EntryError::Unsupported(format!(
            "entry algorithms are not allowed: hash algorithm {algorithm:?} (this log accepts sha256)"
        )));
    }
    let value = str_at(spec, &["data", "hash", "value"])?;
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("spec.data.hash.value must be 64 hex digits"));
    }
    let digest = hex::decode(value).map_err(|_| malformed("spec.data.hash.value is not hex"))?;
    let sig_b64 = str_at(spec, &["signature", "content"])?;
    let sig = b64_field(spec, &["signature", "content"])?;
    let key_pem = b64_field(spec, &["signature", "publicKey", "content"])?;
    let key = key_from_b64_pem(&key_pem, "spec.signature.publicKey.content")?;
    verify_digest(&key, &digest, &sig, "hashedrekord signature")?;
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": value}},
            "signature": {
                "content": sig_b64,
                "publicKey": {"content": B64.encode(canonical_pem(&key)?)},
            },
        },
    });
    Ok(CanonicalEntry {
        body: canonical_json(&body),
        kind: "hashedrekord",
        version: "0.0.1",
    })
}

fn dsse_v001(spec: &Value) -> Result<CanonicalEntry, EntryError> {
    for derived in ["signatures", "envelopeHash", "payloadHash"] {
        if spec.get(derived).is_some() {
            return Err(malformed(format!(
                "spec.{derived} is computed by the log: send proposedContent only, not both"
            )));
        }
    }
    let envelope_str = str_at(spec, &["proposedContent", "envelope"])?;
    let verifiers = spec
        .pointer("/proposedContent/verifiers")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| malformed("spec.proposedContent.verifiers must be a non-empty array"))?;
    let keys = verifiers
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let what = format!("spec.proposedContent.verifiers[{i}]");
            let b64 = v
                .as_str()
                .ok_or_else(|| malformed(format!("{what} must be a string")))?;
            let pem = B64
                .decode(b64)
                .map_err(|_| malformed(format!("{what} is not standard base64")))?;
            key_from_b64_pem(&pem, &what)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = Envelope::from_json(envelope_str.as_bytes())
        .map_err(|e| malformed(format!("spec.proposedContent.envelope: {e}")))?;
    if envelope.signatures.is_empty() {
        return Err(malformed("spec.proposedContent.envelope has no signatures"));
    }
    let payload = envelope
        .payload_bytes()
        .map_err(|e| malformed(format!("spec.proposedContent.envelope: {e}")))?;
    let pae = envelope
        .pae()
        .map_err(|e| malformed(format!("spec.proposedContent.envelope: {e}")))?;
    let mut signatures = Vec::with_capacity(envelope.signatures.len());
    for (i, s) in envelope.signatures.iter().enumerate() {
        let raw = B64
            .decode(&s.sig)
            .map_err(|_| malformed(format!("envelope signature {i} is not base64")))?;
        let key = keys
            .iter()
            .find(|k| k.verify(&pae, &raw).is_ok())
            .ok_or_else(|| {
                EntryError::BadSignature(format!(
                    "envelope signature {i} does not verify with any of the {} verifier(s)",
                    keys.len()
                ))
            })?;
        signatures.push((s.sig.clone(), B64.encode(canonical_pem(key)?)));
    }
    signatures.sort();
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(envelope_str.as_bytes()))},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
            "signatures": signatures
                .into_iter()
                .map(|(signature, verifier)| serde_json::json!({"signature": signature, "verifier": verifier}))
                .collect::<Vec<_>>(),
        },
    });
    Ok(CanonicalEntry {
        body: canonical_json(&body),
        kind: "dsse",
        version: "0.0.1",
    })
}

/// Validates a Rekor v2 `CreateEntryRequest` and returns its canonical body.
pub fn canonicalize_v2(request: &[u8]) -> Result<CanonicalEntry, EntryError> {
    let v: Value = serde_json::from_slice(request)
        .map_err(|e| malformed(format!("request body is not valid JSON: {e}")))?;
    if v.get("dsseRequestV002").is_some() {
        return Err(EntryError::Unsupported(
            "invalid type, must be hashedrekord (submit a DSSE envelope as a hashedrekord over \
             SHA-256 of its PAE)"
                .into(),
        ));
    }
    let req = v.get("hashedRekordRequestV002").ok_or_else(|| {
        malformed("invalid hashedrekord request: missing hashedRekordRequestV002")
    })?;
    let bad = |m: &str| malformed(format!("invalid hashedrekord request: {m}"));
    let details = str_at(req, &["signature", "verifier", "keyDetails"])?;
    if details != "PKIX_ECDSA_P256_SHA_256" {
        return Err(EntryError::Unsupported(format!(
            "invalid hashedrekord request: unsupported keyDetails {details:?}; this log accepts \
             PKIX_ECDSA_P256_SHA_256"
        )));
    }
    let verifier = req.pointer("/signature/verifier").unwrap_or(&Value::Null);
    if verifier.get("x509Certificate").is_some() {
        return Err(EntryError::Unsupported(
            "invalid hashedrekord request: X.509 certificates are not supported by this log; \
             send verifier.publicKey.rawBytes"
                .into(),
        ));
    }
    let digest_b64 = str_at(req, &["digest"])?;
    let digest = B64
        .decode(digest_b64)
        .map_err(|_| bad("digest is not standard base64"))?;
    if digest.len() != 32 {
        return Err(bad("digest length must be 32 bytes for SHA2_256"));
    }
    let sig_b64 = str_at(req, &["signature", "content"])?;
    let sig = B64
        .decode(sig_b64)
        .map_err(|_| bad("signature.content is not standard base64"))?;
    let raw_b64 = str_at(req, &["signature", "verifier", "publicKey", "rawBytes"])?;
    let raw = B64
        .decode(raw_b64)
        .map_err(|_| bad("verifier.publicKey.rawBytes is not standard base64"))?;
    let key = PublicKey::from_spki_der(&raw)
        .map_err(|_| bad("verifier.publicKey.rawBytes is not a DER public key"))?;
    verify_digest(&key, &digest, &sig, "invalid hashedrekord request")?;
    let body = serde_json::json!({
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": digest_b64},
            "signature": {
                "content": sig_b64,
                "verifier": {"keyDetails": details, "publicKey": {"rawBytes": raw_b64}},
            },
        }},
    });
    Ok(CanonicalEntry {
        body: canonical_json(&body),
        kind: "hashedrekord",
        version: "0.0.2",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::{Algorithm, PrivateKey, os_random};

    fn p256() -> PrivateKey {
        PrivateKey::generate(Algorithm::P256, &mut os_random).unwrap()
    }

    fn pem_b64(key: &PrivateKey) -> String {
        B64.encode(key.public_key().to_pem().unwrap())
    }

    fn hashedrekord(key: &PrivateKey, artifact: &[u8], signer: &PrivateKey) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(artifact))}},
                     "signature": {"content": B64.encode(signer.sign(artifact)),
                                   "publicKey": {"content": pem_b64(key)}}}
        }))
        .unwrap()
    }

    #[test]
    fn hashedrekord_body_has_the_request_shape_in_jcs() {
        let key = p256();
        let req = hashedrekord(&key, b"artifact", &key);
        let entry = canonicalize_v1(&req).unwrap();
        let v: Value = serde_json::from_slice(&req).unwrap();
        assert_eq!(entry.body, canonical_json(&v));
        let text = String::from_utf8(entry.body).unwrap();
        assert!(text.starts_with(r#"{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":"#));
        let other = p256();
        assert!(matches!(
            canonicalize_v1(&hashedrekord(&key, b"artifact", &other)),
            Err(EntryError::BadSignature(_))
        ));
    }

    #[test]
    fn dsse_body_is_derived() {
        let key = p256();
        let env = Envelope::sign("application/vnd.in-toto+json", b"{}", &key, "");
        let env_str = env.to_json();
        let req = serde_json::json!({"apiVersion":"0.0.1","kind":"dsse","spec":{"proposedContent":{
            "envelope": env_str, "verifiers": [pem_b64(&key)]}}});
        let entry = canonicalize_v1(&serde_json::to_vec(&req).unwrap()).unwrap();
        let expected = format!(
            r#"{{"apiVersion":"0.0.1","kind":"dsse","spec":{{"envelopeHash":{{"algorithm":"sha256","value":"{}"}},"payloadHash":{{"algorithm":"sha256","value":"{}"}},"signatures":[{{"signature":"{}","verifier":"{}"}}]}}}}"#,
            hex::encode(Sha256::digest(env_str.as_bytes())),
            hex::encode(Sha256::digest(b"{}")),
            env.signatures[0].sig,
            pem_b64(&key),
        );
        assert_eq!(String::from_utf8(entry.body).unwrap(), expected);
        let wrong = serde_json::json!({"apiVersion":"0.0.1","kind":"dsse","spec":{"proposedContent":{
            "envelope": env_str, "verifiers": [pem_b64(&p256())]}}});
        assert!(matches!(
            canonicalize_v1(&serde_json::to_vec(&wrong).unwrap()),
            Err(EntryError::BadSignature(_))
        ));
    }

    #[test]
    fn v2_hashedrekord_over_pae() {
        let key = p256();
        let env = Envelope::sign("application/vnd.in-toto+json", b"{}", &key, "");
        let digest = Sha256::digest(env.pae().unwrap());
        let req = serde_json::json!({"hashedRekordRequestV002": {
            "digest": B64.encode(digest),
            "signature": {"content": env.signatures[0].sig,
                          "verifier": {"publicKey": {"rawBytes": B64.encode(key.public_key().to_spki_der())},
                                       "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}});
        let entry = canonicalize_v2(&serde_json::to_vec(&req).unwrap()).unwrap();
        let text = String::from_utf8(entry.body).unwrap();
        assert!(text.starts_with(
            r#"{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{"hashedRekordV002":{"data":{"algorithm":"SHA2_256","digest":""#
        ));
        let dsse = serde_json::json!({"dsseRequestV002": {}});
        assert!(matches!(
            canonicalize_v2(&serde_json::to_vec(&dsse).unwrap()),
            Err(EntryError::Unsupported(_))
        ));
    }
}
