//! DSSE (Dead Simple Signing Envelope) v1: the envelope model, the pre-authentication
//! encoding (PAE) and signing and verification with P-256 and Ed25519 keys.
//!
//! Signatures are always over `PAE(payloadType, payload)`, never over the raw payload, so a
//! signature cannot be replayed under another payload type:
//! `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in ASCII decimal.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE as B64URL};
use serde::{Deserialize, Serialize};

use super::keys::{PrivateKey, PublicKey};

/// Why an envelope could not be parsed, signed or verified.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    /// The envelope is not valid DSSE JSON.
    #[error("malformed DSSE envelope: {0}")]
    Malformed(String),
    /// The payload is not base64.
    #[error("DSSE payload is not base64")]
    PayloadEncoding,
    /// The envelope has no signatures.
    #[error("DSSE envelope has no signatures")]
    NoSignatures,
    /// No signature verifies with any of the given keys.
    #[error("no DSSE signature verifies with the given keys")]
    NoValidSignature,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// An optional, unauthenticated hint of which key signed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// Base64 of the signature bytes.
    pub sig: String,
}

impl Signature {
    /// The decoded signature bytes (standard base64; URL-safe is accepted as DSSE allows).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        decode_b64(&self.sig)
    }
}

/// A DSSE envelope, as JSON (`payloadType`, `payload`, `signatures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 of the payload bytes.
    pub payload: String,
    /// The payload's media type, e.g. `application/vnd.in-toto+json`.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The signatures.
    pub signatures: Vec<Signature>,
}

/// The pre-authentication encoding that DSSE signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` with `key` and returns a one-signature envelope.
    pub fn sign(payload_type: &str, payload: &[u8], key: &PrivateKey, keyid: &str) -> Self {
        let sig = key.sign(&pae(payload_type, payload));
        Envelope {
            payload: B64.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: vec![Signature {
                keyid: keyid.to_owned(),
                sig: B64.encode(sig),
            }],
        }
    }

    /// Parses envelope JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, DsseError> {
        serde_json::from_slice(json).map_err(|e| DsseError::Malformed(e.to_string()))
    }

    /// Serialises the envelope as compact JSON.
    pub fn to_json(&self) -> String {
        // Plain strings and vectors always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The decoded payload bytes (standard base64; URL-safe is accepted as DSSE allows).
    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        decode_b64(&self.payload).ok_or(DsseError::PayloadEncoding)
    }

    /// The PAE bytes the signatures cover.
    pub fn pae(&self) -> Result<Vec<u8>, DsseError> {
        Ok(pae(&self.payload_type, &self.payload_bytes()?))
    }

    /// Verifies that at least one signature verifies with one of `keys`. Returns the indices
    /// of the signatures that verified; others are ignored, as DSSE's threshold-of-one allows.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<Vec<usize>, DsseError> {
        if self.signatures.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        let message = self.pae()?;
        let valid: Vec<usize> = self
            .signatures
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                decode_b64(&s.sig)
                    .is_some_and(|sig| keys.iter().any(|k| k.verify(&message, &sig).is_ok()))
            })
            .map(|(i, _)| i)
            .collect();
        if valid.is_empty() {
            return Err(DsseError::NoValidSignature);
        }
        Ok(valid)
    }
}

/// Decodes standard or URL-safe padded base64.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).or_else(|_| B64URL.decode(s)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::Algorithm;

    #[test]
    fn pae_matches_the_spec_example() {
        // The worked example from the DSSE protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sign_verify_round_trip_both_algorithms() {
        for alg in [Algorithm::P256, Algorithm::Ed25519] {
            let key = PrivateKey::generate(alg, &mut crate::domain::keys::os_random).unwrap();
            let other = PrivateKey::generate(alg, &mut crate::domain::keys::os_random).unwrap();
            let env = Envelope::sign("application/vnd.in-toto+json", b"{}", &key, "");
            let env = Envelope::from_json(env.to_json().as_bytes()).unwrap();
            assert_eq!(env.verify(&[key.public_key()]).unwrap(), vec![0]);
            assert_eq!(
                env.verify(&[other.public_key()]),
                Err(DsseError::NoValidSignature)
            );
            let mut tampered = env.clone();
            tampered.payload_type = "text/plain".into();
            assert_eq!(
                tampered.verify(&[key.public_key()]),
                Err(DsseError::NoValidSignature)
            );
        }
    }

    #[test]
    fn malformed_envelopes() {
        assert!(Envelope::from_json(b"{}").is_err());
        let env = Envelope {
            payload: "!!".into(),
            payload_type: "t".into(),
            signatures: vec![],
        };
        assert_eq!(env.verify(&[]), Err(DsseError::NoSignatures));
    }
}
