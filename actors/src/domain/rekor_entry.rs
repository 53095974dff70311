//! Rekor entry types as a log server sees them: a proposed entry is validated, its
//! signatures are checked, and it is turned into the canonical body that becomes the Merkle
//! leaf, byte for byte as Rekor builds it.
//!
//! - Rekor v1 `hashedrekord` 0.0.1: the body has the request's shape, with the verifier
//!   re-encoded as canonical PEM (64-column lines, final newline); the signature must verify
//!   over the given SHA-256 digest (ECDSA P-256 prehash).
//! - Rekor v1 `dsse` 0.0.1: from `proposedContent` (the envelope as a JSON string and its
//!   verifiers) the server derives `envelopeHash` = SHA-256 of the envelope string as sent,
//!   `payloadHash` = SHA-256 of the decoded payload, and one `{signature, verifier}` per
//!   envelope signature, sorted by signature; every signature must verify with a verifier.
//! - Rekor v1 `intoto` 0.0.2 (sigstore-js's DSSE entries): the envelope with its payload and
//!   signatures double base64 encoded, each signature with its own verifier; every signature
//!   must verify over the PAE and every verifier must verify one. The body drops the payload,
//!   keeps the signatures and the client's envelope `hash` as sent, and carries `payloadHash`
//!   = SHA-256 of the payload computed here (Rekor's `Canonicalize`).
//! - Rekor v2 `hashedRekordRequestV002`: the body is
//!   `{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{"hashedRekordV002":{"data":…,"signature":…}}}`;
//!   only `PKIX_ECDSA_P256_SHA_256` is accepted here (pure Ed25519 is refused by Rekor v2
//!   too); `dsseRequestV002` is refused as Rekor v2 refuses it.
//!
//! A v1 verifier is what Rekor's `x509.NewPublicKey` reads: a PEM public key, a PEM X.509
//! certificate, or a chain of up to 10 PEM certificates; a v2 verifier is a DER public key or
//! a DER certificate. A certificate's public key checks the signature, as Rekor does; the
//! chain, validity and identity are the client's to check, not the log's. JSON `null` means
//! absent everywhere in a request, as Go's decoder (Rekor) and protojson (Rekor v2) read it.
//!
//! Bodies are RFC 8785 (JCS) JSON: sorted keys, no whitespace.

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

/// The most certificates a v1 verifier chain may hold (Rekor's limit).
const MAX_CHAIN: usize = 10;

/// A v1 verifier as Rekor reads it (`x509.NewPublicKey`).
struct Verifier {
    /// The key that checks signatures: the public key, or the first certificate's.
    key: PublicKey,
    /// The PEM Rekor stores for it (`CanonicalValue`): the key, or every certificate, in
    /// 64-column PEM with a final newline.
    canonical_pem: String,
}

/// Removes every object member whose value is JSON `null`, at any depth: Go's decoder and
/// protojson read them as absent, and clients send computed fields as `null`.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Every PEM block of `text` (label and DER), in order; only whitespace may lie between them.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, &'static str> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let label = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or("text outside a PEM block")?;
        let mut body = String::new();
        loop {
            let line = lines.next().ok_or("a PEM block has no END line")?;
            if let Some(end) = line
                .strip_prefix("-----END ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                if end != label {
                    return Err("a PEM END line does not match its BEGIN line");
                }
                break;
            }
            body.push_str(line);
        }
        let der = B64.decode(&body).map_err(|_| "a PEM body is not base64")?;
        blocks.push((label.to_owned(), der));
    }
    if blocks.is_empty() {
        return Err("no PEM block");
    }
    Ok(blocks)
}

/// `der` as PEM the way Go's `pem.Encode` writes it: 64-column lines, a final newline.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The public key of a DER X.509 certificate. Nothing else about the certificate is checked:
/// the log records who signed, and clients judge the certificate.
fn certificate_key(der: &[u8], what: &str) -> Result<PublicKey, EntryError> {
    use x509_cert::der::{Decode as _, Encode as _};
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| malformed(format!("{what} is not a DER X.509 certificate: {e}")))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| malformed(format!("{what}: the certificate's public key: {e}")))?;
    PublicKey::from_spki_der(&spki).map_err(|_| {
        EntryError::Unsupported(format!(
            "{what}: the certificate's public key is not ECDSA P-256 or Ed25519"
        ))
    })
}

/// Reads a decoded v1 verifier: a PEM public key, certificate or certificate chain.
fn verifier_from_pem(pem: &[u8], what: &str) -> Result<Verifier, EntryError> {
    let text =
        std::str::from_utf8(pem).map_err(|_| malformed(format!("{what} is not PEM text")))?;
    let blocks = pem_blocks(text).map_err(|e| malformed(format!("{what}: {e}")))?;
    match blocks.as_slice() {
        [(label, der)] if label == "PUBLIC KEY" => {
            let key =
                PublicKey::from_spki_der(der).map_err(|e| malformed(format!("{what}: {e}")))?;
            let canonical_pem = canonical_pem(&key)?;
            Ok(Verifier { key, canonical_pem })
        }
        certs if certs.iter().all(|(label, _)| label == "CERTIFICATE") => {
            if certs.len() > MAX_CHAIN {
                return Err(malformed(format!(
                    "{what}: a certificate chain holds at most {MAX_CHAIN} certificates"
                )));
            }
            let key = certificate_key(&certs[0].1, what)?;
            let mut canonical_pem = String::new();
            for (i, (_, der)) in certs.iter().enumerate() {
                if i > 0 {
                    // Rekor parses every certificate of a chain; so does this log.
                    x509_cert::der::Decode::from_der(der)
                        .map(|_: x509_cert::Certificate| ())
                        .map_err(|e| {
                            malformed(format!("{what}: certificate {i} of the chain: {e}"))
                        })?;
                }
                canonical_pem.push_str(&pem_encode("CERTIFICATE", der));
            }
            Ok(Verifier { key, canonical_pem })
        }
        _ => Err(malformed(format!(
            "{what} must be a PEM public key, a PEM certificate or a PEM certificate chain"
        ))),
    }
}

/// Decodes and reads a base64 v1 verifier.
fn verifier_from_b64(b64: &str, what: &str) -> Result<Verifier, EntryError> {
    let pem = B64
        .decode(b64)
        .map_err(|_| malformed(format!("{what} is not standard base64")))?;
    verifier_from_pem(&pem, what)
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
    let mut v: Value = serde_json::from_slice(request)
        .map_err(|e| malformed(format!("request body is not valid JSON: {e}")))?;
    strip_nulls(&mut v);
    let kind = str_at(&v, &["kind"])?;
    let version = str_at(&v, &["apiVersion"])?;
    let spec = v
        .get("spec")
        .ok_or_else(|| malformed("missing field spec"))?;
    match (kind, version) {
        ("hashedrekord", "0.0.1") => hashedrekord_v001(spec),
        ("dsse", "0.0.1") => dsse_v001(spec),
        ("intoto", "0.0.2") => intoto_v002(spec),
        ("hashedrekord" | "dsse", other) => Err(EntryError::Unsupported(format!(
            "unsupported apiVersion {other:?} for kind {kind}; this log accepts 0.0.1"
        ))),
        ("intoto", other) => Err(EntryError::Unsupported(format!(
            "unsupported apiVersion {other:?} for kind intoto; this log accepts 0.0.2"
        ))),
        (other, _) => Err(EntryError::Unsupported(format!(
            "unsupported entry kind {other:?}; this log accepts hashedrekord, dsse and intoto"
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
    let verifier = verifier_from_b64(
        str_at(spec, &["signature", "publicKey", "content"])?,
        "spec.signature.publicKey.content",
    )?;
    verify_digest(&verifier.key, &digest, &sig, "hashedrekord signature")?;
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": value}},
            "signature": {
                "content": sig_b64,
                "publicKey": {"content": B64.encode(&verifier.canonical_pem)},
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
            verifier_from_b64(b64, &what)
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
        let verifier = keys
            .iter()
            .find(|v| v.key.verify(&pae, &raw).is_ok())
            .ok_or_else(|| {
                EntryError::BadSignature(format!(
                    "envelope signature {i} does not verify with any of the {} verifier(s)",
                    keys.len()
                ))
            })?;
        signatures.push((s.sig.clone(), B64.encode(&verifier.canonical_pem)));
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

/// The `intoto` 0.0.2 entry: Rekor's `Unmarshal` (signatures checked, `payloadHash`
/// computed) and `Canonicalize` (payload dropped, the rest as sent).
fn intoto_v002(spec: &Value) -> Result<CanonicalEntry, EntryError> {
    let envelope = spec
        .pointer("/content/envelope")
        .filter(|e| e.is_object())
        .ok_or_else(|| malformed("missing field content.envelope"))?;
    let payload_type = str_at(envelope, &["payloadType"])
        .map_err(|_| malformed("content.envelope.payloadType must be a string"))?;
    if payload_type.is_empty() {
        return Err(malformed("content.envelope.payloadType must not be empty"));
    }
    // Rekor accepts an entry without a payload unverified; this log checks every signature,
    // so it needs the payload.
    let payload_field = str_at(envelope, &["payload"]).map_err(|_| {
        malformed("content.envelope.payload is required: this log verifies every signature")
    })?;
    // The double encoding is Rekor's: the field is base64 of the DSSE payload string, which
    // is itself base64 of the payload.
    let payload = B64
        .decode(payload_field)
        .ok()
        .and_then(|inner| B64.decode(inner).ok())
        .ok_or_else(|| {
            malformed("content.envelope.payload must be base64 of the base64 DSSE payload")
        })?;
    let signatures = envelope
        .get("signatures")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| malformed("content.envelope.signatures must be a non-empty array"))?;
    let pae = super::dsse::pae(payload_type, &payload);
    let mut stored = Vec::with_capacity(signatures.len());
    let mut verifiers = Vec::with_capacity(signatures.len());
    let mut raw_sigs = Vec::with_capacity(signatures.len());
    for (i, sig) in signatures.iter().enumerate() {
        let what = format!("content.envelope.signatures[{i}]");
        if !sig.is_object() {
            return Err(malformed(format!("{what} must be an object")));
        }
        let sig_field =
            str_at(sig, &["sig"]).map_err(|_| malformed(format!("{what}.sig must be a string")))?;
        let sig_string = B64
            .decode(sig_field)
            .map_err(|_| malformed(format!("{what}.sig is not standard base64")))?;
        let raw = B64.decode(&sig_string).map_err(|_| {
            malformed(format!(
                "{what}.sig must be base64 of the base64 DSSE signature"
            ))
        })?;
        let key_field = str_at(sig, &["publicKey"])
            .map_err(|_| malformed(format!("{what}.publicKey must be a string")))?;
        let key_pem = B64
            .decode(key_field)
            .map_err(|_| malformed(format!("{what}.publicKey is not standard base64")))?;
        verifiers.push(verifier_from_pem(&key_pem, &format!("{what}.publicKey"))?);
        let mut entry = serde_json::Map::new();
        // Go omits an empty keyid when it writes the body.
        match sig.get("keyid") {
            Some(Value::String(id)) if !id.is_empty() => {
                entry.insert("keyid".into(), Value::String(id.clone()));
            }
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(malformed(format!("{what}.keyid must be a string"))),
        }
        // Rekor stores the decoded bytes and writes them back as standard base64.
        entry.insert("publicKey".into(), Value::String(B64.encode(&key_pem)));
        entry.insert("sig".into(), Value::String(B64.encode(&sig_string)));
        stored.push(Value::Object(entry));
        raw_sigs.push(raw);
    }
    // Every signature must verify with some verifier, and every verifier must verify some
    // signature (a DSSE verifier with no accepted signature fails in Rekor).
    for (i, raw) in raw_sigs.iter().enumerate() {
        if !verifiers.iter().any(|v| v.key.verify(&pae, raw).is_ok()) {
            return Err(EntryError::BadSignature(format!(
                "envelope signature {i} does not verify with any of the {} verifier(s)",
                verifiers.len()
            )));
        }
    }
    for (i, v) in verifiers.iter().enumerate() {
        if !raw_sigs.iter().any(|raw| v.key.verify(&pae, raw).is_ok()) {
            return Err(EntryError::BadSignature(format!(
                "content.envelope.signatures[{i}].publicKey verifies no envelope signature"
            )));
        }
    }
    // The envelope hash is the client's (Rekor never computes it) but must be present.
    let algorithm = str_at(spec, &["content", "hash", "algorithm"])
        .map_err(|_| malformed("missing envelope digest: content.hash.algorithm is required"))?;
    if algorithm != "sha256" {
        return Err(EntryError::Unsupported(format!(
            "content.hash.algorithm {algorithm:?} is not allowed (this log accepts sha256)"
        )));
    }
    let value = str_at(spec, &["content", "hash", "value"])
        .map_err(|_| malformed("missing envelope digest: content.hash.value is required"))?;
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("content.hash.value must be 64 hex digits"));
    }
    let body = serde_json::json!({
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {"content": {
            "envelope": {"payloadType": payload_type, "signatures": stored},
            "hash": {"algorithm": "sha256", "value": value},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
        }},
    });
    Ok(CanonicalEntry {
        body: canonical_json(&body),
        kind: "intoto",
        version: "0.0.2",
    })
}

/// Validates a Rekor v2 `CreateEntryRequest` and returns its canonical body.
pub fn canonicalize_v2(request: &[u8]) -> Result<CanonicalEntry, EntryError> {
    let mut v: Value = serde_json::from_slice(request)
        .map_err(|e| malformed(format!("request body is not valid JSON: {e}")))?;
    strip_nulls(&mut v);
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
    let verifier = req.pointer("/signature/verifier").unwrap_or(&Value::Null);
    // Exactly one of the two verifier forms (a protobuf oneof).
    let (key, stored_verifier) = match (verifier.get("publicKey"), verifier.get("x509Certificate"))
    {
        (Some(_), None) => {
            let raw_b64 = str_at(req, &["signature", "verifier", "publicKey", "rawBytes"])?;
            let raw = B64
                .decode(raw_b64)
                .map_err(|_| bad("verifier.publicKey.rawBytes is not standard base64"))?;
            let key = PublicKey::from_spki_der(&raw)
                .map_err(|_| bad("verifier.publicKey.rawBytes is not a DER public key"))?;
            (
                key,
                serde_json::json!({"publicKey": {"rawBytes": B64.encode(&raw)}}),
            )
        }
        (None, Some(_)) => {
            let raw_b64 = str_at(
                req,
                &["signature", "verifier", "x509Certificate", "rawBytes"],
            )?;
            let raw = B64
                .decode(raw_b64)
                .map_err(|_| bad("verifier.x509Certificate.rawBytes is not standard base64"))?;
            let key = certificate_key(
                &raw,
                "invalid hashedrekord request: verifier.x509Certificate.rawBytes",
            )?;
            (
                key,
                serde_json::json!({"x509Certificate": {"rawBytes": B64.encode(&raw)}}),
            )
        }
        _ => {
            return Err(bad(
                "signature.verifier needs exactly one of publicKey and x509Certificate",
            ));
        }
    };
    verify_digest(&key, &digest, &sig, "invalid hashedrekord request")?;
    let mut stored_verifier = stored_verifier;
    stored_verifier["keyDetails"] = Value::String(details.to_owned());
    let body = serde_json::json!({
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": digest_b64},
            "signature": {
                "content": sig_b64,
                "verifier": stored_verifier,
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

    /// A throwaway self-signed P-256 certificate and its key, made for these tests with
    /// `openssl req -x509` (nothing trusts it).
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPY1vmfnFjyWzxQMK\nqnYJogcR3QhYJMyQLU09/XhiNpShRANCAASWmiMKo/L25licFAU/LlmuG2D1TtZ6\nVwLC9gOZUnQElfg5gbGetnqq7X+Bn9749iyn8LKqnFpZRaYMhjHBfKDI\n-----END PRIVATE KEY-----\n";
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBizCCATGgAwIBAgIUD4MUv+FCsCX8W40IOS69wm5TCxkwCgYIKoZIzj0EAwIw\nGjEYMBYGA1UEAwwPcHJvdmQgdW5pdCB0ZXN0MCAXDTI2MTIwMzE0NTU0OVoYDzIx\nMjYxMTA5MTQ1NTQ5WjAaMRgwFgYDVQQDDA9wcm92ZCB1bml0IHRlc3QwWTATBgcq\nhkjOPQIBBggqhkjOPQMBBwNCAASWmiMKo/L25licFAU/LlmuG2D1TtZ6VwLC9gOZ\nUnQElfg5gbGetnqq7X+Bn9749iyn8LKqnFpZRaYMhjHBfKDIo1MwUTAdBgNVHQ4E\nFgQU2VqvSF5MY57NXDAIflNWbUPvPLAwHwYDVR0jBBgwFoAU2VqvSF5MY57NXDAI\nflNWbUPvPLAwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAlIaL\nFv/gzg1zTsWZfgjlz+jXQb09PpJqvzLXjOOG+vcCICYd5gEnzHuCHIfcqxN0ZNIy\naEHBUamrl5dTz0//zQh6\n-----END CERTIFICATE-----\n";

    #[test]
    fn certificates_verify_with_their_key_and_are_stored_as_canonical_pem() {
        let key = PrivateKey::from_pem(TEST_KEY).unwrap();
        // Extra whitespace and CRLF line ends are not canonical; the stored PEM is.
        let sent = TEST_CERT.replace('\n', "\r\n");
        let req = serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {"data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(b"a"))}},
                     "signature": {"content": B64.encode(key.sign(b"a")),
                                   "publicKey": {"content": B64.encode(format!("\n{sent}\n"))}}}
        });
        let entry = canonicalize_v1(&serde_json::to_vec(&req).unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&entry.body).unwrap();
        assert_eq!(
            body["spec"]["signature"]["publicKey"]["content"],
            B64.encode(TEST_CERT)
        );
        // A chain: the first certificate's key signs; every certificate is stored.
        let chain = format!("{TEST_CERT}{TEST_CERT}");
        let mut req2 = req.clone();
        req2["spec"]["signature"]["publicKey"]["content"] = Value::String(B64.encode(&chain));
        let entry = canonicalize_v1(&serde_json::to_vec(&req2).unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&entry.body).unwrap();
        assert_eq!(
            body["spec"]["signature"]["publicKey"]["content"],
            B64.encode(&chain)
        );
        // Another key's signature is refused.
        let mut bad = req.clone();
        bad["spec"]["signature"]["content"] = Value::String(B64.encode(p256().sign(b"a")));
        assert!(matches!(
            canonicalize_v1(&serde_json::to_vec(&bad).unwrap()),
            Err(EntryError::BadSignature(_))
        ));
        // Rekor v2: the DER certificate, kept as sent.
        let der = super::super::entry_binding::pem_block(TEST_CERT).unwrap().1;
        let v2 = serde_json::json!({"hashedRekordRequestV002": {
            "digest": B64.encode(Sha256::digest(b"a")),
            "signature": {"content": B64.encode(key.sign(b"a")),
                          "verifier": {"x509Certificate": {"rawBytes": B64.encode(&der)},
                                       "publicKey": null,
                                       "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}}});
        let entry = canonicalize_v2(&serde_json::to_vec(&v2).unwrap()).unwrap();
        let expected = format!(
            r#"{{"apiVersion":"0.0.2","kind":"hashedrekord","spec":{{"hashedRekordV002":{{"data":{{"algorithm":"SHA2_256","digest":"{}"}},"signature":{{"content":"{}","verifier":{{"keyDetails":"PKIX_ECDSA_P256_SHA_256","x509Certificate":{{"rawBytes":"{}"}}}}}}}}}}}}"#,
            B64.encode(Sha256::digest(b"a")),
            v2["hashedRekordRequestV002"]["signature"]["content"]
                .as_str()
                .unwrap(),
            B64.encode(&der),
        );
        assert_eq!(String::from_utf8(entry.body).unwrap(), expected);
    }

    #[test]
    fn nulls_are_absent_in_v1_requests() {
        let key = p256();
        let env = Envelope::sign("application/vnd.in-toto+json", b"{}", &key, "");
        let req = serde_json::json!({"apiVersion":"0.0.1","kind":"dsse","spec":{
            "proposedContent": {"envelope": env.to_json(), "verifiers": [pem_b64(&key)]},
            "signatures": null, "envelopeHash": null, "payloadHash": null}});
        assert!(canonicalize_v1(&serde_json::to_vec(&req).unwrap()).is_ok());
        // A computed field that is not null is still refused beside proposedContent.
        let mut both = req.clone();
        both["spec"]["signatures"] = serde_json::json!([]);
        assert!(matches!(
            canonicalize_v1(&serde_json::to_vec(&both).unwrap()),
            Err(EntryError::Malformed(_))
        ));
    }

    #[test]
    fn intoto_body_is_rekors_canonical_form() {
        let key = p256();
        let payload = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
        let sig = B64.encode(key.sign(&crate::domain::dsse::pae(
            "application/vnd.in-toto+json",
            payload,
        )));
        let hash = hex::encode(Sha256::digest(b"the client's envelope hash"));
        let req = serde_json::json!({"apiVersion":"0.0.2","kind":"intoto","spec":{"content":{
            "envelope": {"payloadType": "application/vnd.in-toto+json",
                         "payload": B64.encode(B64.encode(payload)),
                         "signatures": [{"keyid": "", "sig": B64.encode(&sig), "publicKey": pem_b64(&key)}]},
            "hash": {"algorithm": "sha256", "value": hash},
            "payloadHash": {"algorithm": "sha256", "value": "00"}}}});
        let entry = canonicalize_v1(&serde_json::to_vec(&req).unwrap()).unwrap();
        let expected = format!(
            r#"{{"apiVersion":"0.0.2","kind":"intoto","spec":{{"content":{{"envelope":{{"payloadType":"application/vnd.in-toto+json","signatures":[{{"publicKey":"{}","sig":"{}"}}]}},"hash":{{"algorithm":"sha256","value":"{hash}"}},"payloadHash":{{"algorithm":"sha256","value":"{}"}}}}}}}}"#,
            pem_b64(&key),
            B64.encode(&sig),
            hex::encode(Sha256::digest(payload)),
        );
        assert_eq!(String::from_utf8(entry.body).unwrap(), expected);
        assert_eq!((entry.kind, entry.version), ("intoto", "0.0.2"));
        // Another key, a missing hash, a missing payload: refused.
        let mut other = req.clone();
        other["spec"]["content"]["envelope"]["signatures"][0]["publicKey"] =
            Value::String(pem_b64(&p256()));
        assert!(matches!(
            canonicalize_v1(&serde_json::to_vec(&other).unwrap()),
            Err(EntryError::BadSignature(_))
        ));
        for missing in ["/spec/content/hash", "/spec/content/envelope/payload"] {
            let mut r = req.clone();
            let (parent, field) = missing.rsplit_once('/').unwrap();
            r.pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(field);
            assert!(
                matches!(
                    canonicalize_v1(&serde_json::to_vec(&r).unwrap()),
                    Err(EntryError::Malformed(_))
                ),
                "{missing}"
            );
        }
    }
}
