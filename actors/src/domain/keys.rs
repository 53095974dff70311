//! Signing and verification keys for the two algorithms the transparency-log layer speaks:
//! ECDSA P-256 with SHA-256 (Rekor v1 checkpoints and SETs, most DSSE signers) and Ed25519
//! (Rekor v2 checkpoints, C2SP signed notes).
//!
//! Keys travel as PEM: PKCS#8 for private keys and SubjectPublicKeyInfo for public keys. ECDSA
//! signatures are ASN.1 DER over SHA-256 of the message, as Sigstore produces them; Ed25519
//! signatures are the plain 64-byte form over the message itself.

use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::LineEnding;
use sha2::{Digest, Sha256};

/// Why a key could not be loaded, generated or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not a PEM private key of a supported algorithm (PKCS#8 P-256 or Ed25519).
    #[error("not a PKCS#8 PEM private key for ECDSA P-256 or Ed25519")]
    UnsupportedPrivateKey,
    /// The bytes are not a SubjectPublicKeyInfo of a supported algorithm (P-256 or Ed25519).
    #[error("not a public key for ECDSA P-256 or Ed25519")]
    UnsupportedPublicKey,
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// Encoding a key as PEM or DER failed.
    #[error("cannot encode key: {0}")]
    Encoding(String),
    /// The signature is malformed or does not verify with this key.
    #[error("signature does not verify")]
    BadSignature,
}

/// A signature algorithm supported by provd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256, DER-encoded signatures.
    P256,
    /// Ed25519 (pure, RFC 8032).
    Ed25519,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Algorithm::P256 => "p256",
            Algorithm::Ed25519 => "ed25519",
        })
    }
}

/// A private signing key.
#[derive(Clone)]
pub enum PrivateKey {
    /// An ECDSA P-256 key.
    P256(p256::ecdsa::SigningKey),
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for PrivateKey {
    // Never print key material, only what kind of key this is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.algorithm())
    }
}

impl PrivateKey {
    /// Generates a fresh key from the random bytes `fill` supplies. The caller owns the
    /// entropy source (the operating system's generator in the CLI), which keeps the domain
    /// free of I/O.
    pub fn generate(
        algorithm: Algorithm,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), String>,
    ) -> Result<Self, KeyError> {
        let mut fill_random = |buf: &mut [u8]| fill(buf).map_err(KeyError::Random);
        match algorithm {
            Algorithm::Ed25519 => {
                let mut seed = [0u8; 32];
                fill_random(&mut seed)?;
                Ok(PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                    &seed,
                )))
            }
            Algorithm::P256 => {
                // A random 32-byte string is a valid scalar except with negligible probability;
                // retry rather than bias the distribution.
                loop {
                    let mut bytes = [0u8; 32];
                    fill_random(&mut bytes)?;
                    if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                        return Ok(PrivateKey::P256(key));
                    }
                }
            }
        }
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`) of either algorithm.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::P256(key));
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::Ed25519(key));
        }
        Err(KeyError::UnsupportedPrivateKey)
    }

    /// Encodes the key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let pem = match self {
            PrivateKey::P256(key) => key.to_pkcs8_pem(LineEnding::LF),
            PrivateKey::Ed25519(key) => key.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|e| KeyError::Encoding(e.to_string()))?;
        Ok(pem.to_string())
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::P256(_) => Algorithm::P256,
            PrivateKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::P256(key) => PublicKey::P256(*key.verifying_key()),
            PrivateKey::Ed25519(key) => PublicKey::Ed25519(key.verifying_key()),
        }
    }

    /// Signs `message`: ECDSA gives a DER signature over SHA-256(message) (RFC 6979, so
    /// deterministic), Ed25519 the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_der().as_bytes().to_vec()
            }
            PrivateKey::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(message).to_bytes().to_vec()
            }
        }
    }
}

/// A public verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An ECDSA P-256 key.
    P256(p256::ecdsa::VerifyingKey),
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// Loads a PEM public key (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::P256(key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::Ed25519(key));
        }
        Err(KeyError::UnsupportedPublicKey)
    }

    /// Loads a DER SubjectPublicKeyInfo, the form Sigstore's `trusted_root.json` carries.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(key));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(key));
        }
        Err(KeyError::UnsupportedPublicKey)
    }

    /// The canonical DER SubjectPublicKeyInfo (uncompressed point for P-256).
    pub fn to_spki_der(&self) -> Vec<u8> {
        // Encoding a valid in-memory key cannot fail; an empty result would only make hints
        // mismatch, never verify something wrongly.
        match self {
            PublicKey::P256(key) => key.to_public_key_der().map(|d| d.as_bytes().to_vec()),
            PublicKey::Ed25519(key) => key.to_public_key_der().map(|d| d.as_bytes().to_vec()),
        }
        .unwrap_or_default()
    }

    /// Encodes the key as SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        match self {
            PublicKey::P256(key) => key.to_public_key_pem(LineEnding::LF),
            PublicKey::Ed25519(key) => key.to_public_key_pem(LineEnding::LF),
        }
        .map_err(|e| KeyError::Encoding(e.to_string()))
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::P256(_) => Algorithm::P256,
            PublicKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo: Rekor v1's log ID, and the source of its
    /// 4-byte checkpoint key hint.
    pub fn spki_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.to_spki_der()).into()
    }

    /// Verifies a DER ECDSA P-256 `signature` over a message given as its SHA-256, so a
    /// message too large to hold can be hashed as it streams by. Ed25519 keys refuse: pure
    /// Ed25519 hashes the signature's `R` before the message ([`Self::ed25519_stream`]).
    pub fn verify_sha256_prehash(
        &self,
        message_sha256: &[u8; 32],
        signature: &[u8],
    ) -> Result<(), KeyError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        let PublicKey::P256(key) = self else {
            return Err(KeyError::BadSignature);
        };
        let signature =
            p256::ecdsa::Signature::from_der(signature).map_err(|_| KeyError::BadSignature)?;
        key.verify_prehash(message_sha256, &signature)
            .map_err(|_| KeyError::BadSignature)
    }

    /// Starts a pure Ed25519 verification of `signature` whose message is fed piece by piece
    /// ([`Ed25519Stream::update`]), as strict as [`Self::verify`]. P-256 keys refuse.
    pub fn ed25519_stream(&self, signature: &[u8]) -> Result<Ed25519Stream, KeyError> {
        let PublicKey::Ed25519(key) = self else {
            return Err(KeyError::BadSignature);
        };
        let signature =
            ed25519_dalek::Signature::from_slice(signature).map_err(|_| KeyError::BadSignature)?;
        // `verify_strict` refuses a weak key and a small-order or undecodable `R`; the stream
        // verifier checks neither, so they are checked here.
        let r = ed25519_dalek::VerifyingKey::from_bytes(signature.r_bytes())
            .map_err(|_| KeyError::BadSignature)?;
        if key.is_weak() || r.is_weak() {
            return Err(KeyError::BadSignature);
        }
        let inner = key
            .verify_stream(&signature)
            .map_err(|_| KeyError::BadSignature)?;
        Ok(Ed25519Stream(inner))
    }

    /// Verifies `signature` over `message` (DER ECDSA over SHA-256, or pure Ed25519).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        match self {
            PublicKey::P256(key) => {
                let signature = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| KeyError::BadSignature)?;
                key.verify(message, &signature)
                    .map_err(|_| KeyError::BadSignature)
            }
            PublicKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| KeyError::BadSignature)?;
                key.verify_strict(message, &signature)
                    .map_err(|_| KeyError::BadSignature)
            }
        }
    }
}

/// A pure Ed25519 verification fed its message piece by piece
/// ([`PublicKey::ed25519_stream`]).
pub struct Ed25519Stream(ed25519_dalek::StreamVerifier);

impl Ed25519Stream {
    /// Feeds the next bytes of the message.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Whether the signature verifies over everything fed.
    pub fn verify(self) -> Result<(), KeyError> {
        self.0
            .finalize_and_verify()
            .map_err(|_| KeyError::BadSignature)
    }
}

/// The operating system's random number generator, for tests.
#[cfg(test)]
pub(crate) fn os_random(buf: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_sign() {
        for alg in [Algorithm::P256, Algorithm::Ed25519] {
            let key = PrivateKey::generate(alg, &mut crate::domain::keys::os_random).unwrap();
            let again = PrivateKey::from_pem(&key.to_pem().unwrap()).unwrap();
            assert_eq!(again.algorithm(), alg);
            let public = PublicKey::from_pem(&key.public_key().to_pem().unwrap()).unwrap();
            assert_eq!(public, key.public_key());
            let sig = again.sign(b"message");
            public.verify(b"message", &sig).unwrap();
            assert_eq!(public.verify(b"messagE", &sig), Err(KeyError::BadSignature));
            assert_eq!(
                PublicKey::from_spki_der(&public.to_spki_der()).unwrap(),
                public
            );
        }
    }

    #[test]
    fn streamed_checks_agree_with_whole_message_checks() {
        let message = b"a message fed in pieces";
        let p256 = PrivateKey::generate(Algorithm::P256, &mut os_random).unwrap();
        let sig = p256.sign(message);
        let public = p256.public_key();
        let digest: [u8; 32] = Sha256::digest(message).into();
        public.verify_sha256_prehash(&digest, &sig).unwrap();
        let other: [u8; 32] = Sha256::digest(b"another").into();
        assert_eq!(
            public.verify_sha256_prehash(&other, &sig),
            Err(KeyError::BadSignature)
        );

        let ed = PrivateKey::generate(Algorithm::Ed25519, &mut os_random).unwrap();
        let sig = ed.sign(message);
        let public = ed.public_key();
        let stream = |pieces: &[&[u8]], sig: &[u8]| {
            let mut v = public.ed25519_stream(sig)?;
            for p in pieces {
                v.update(p);
            }
            v.verify()
        };
        stream(&[&message[..5], &message[5..]], &sig).unwrap();
        assert_eq!(stream(&[&message[..5]], &sig), Err(KeyError::BadSignature));
        // A small-order R (the identity) is refused as verify_strict refuses it.
        let mut weak = sig.clone();
        weak[..32].copy_from_slice(&{
            let mut identity = [0u8; 32];
            identity[0] = 1;
            identity
        });
        assert_eq!(stream(&[message], &weak), Err(KeyError::BadSignature));
        // Each algorithm's streamed check refuses the other's keys.
        assert!(public.verify_sha256_prehash(&digest, &sig).is_err());
        assert!(p256.public_key().ed25519_stream(&sig).is_err());
    }

    #[test]
    fn rekor_v1_log_id_is_sha256_of_spki() {
        let pem = "-----BEGIN PUBLIC KEY-----\n\
            MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwr\n\
            kBbmLSGtks4L3qX6yYY0zufBnhC8Ur/iy55GhWP/9A/bY2LhC30M9+RYtw==\n\
            -----END PUBLIC KEY-----\n";
        let key = PublicKey::from_pem(pem).unwrap();
        assert_eq!(
            hex::encode(key.spki_sha256()),
            "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(
            PrivateKey::from_pem("nope").unwrap_err(),
            KeyError::UnsupportedPrivateKey
        );
        assert_eq!(
            PublicKey::from_pem("nope").unwrap_err(),
            KeyError::UnsupportedPublicKey
        );
        assert_eq!(
            PublicKey::from_spki_der(&[0x30, 0x00]).unwrap_err(),
            KeyError::UnsupportedPublicKey
        );
    }
}
