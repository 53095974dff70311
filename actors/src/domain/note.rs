//! C2SP signed notes and tlog checkpoints.
//!
//! A signed note is UTF-8 text followed by a blank line and one or more signature lines
//! `— <name> <base64(key hint || signature)>`. The signed message is the text exactly as
//! received, up to and including its final newline; it is never re-serialised before a
//! signature is checked. A checkpoint is a note whose text is `origin`, tree size, base64 root
//! hash and optional extension lines.
//!
//! Keys and their 4-byte hints:
//! - Ed25519 note keys (type 0x01): hint = SHA-256(name || "\n" || 0x01 || key)[:4];
//! - ECDSA P-256 keys as Rekor v1 uses them (type 0x02): hint = SHA-256(DER SPKI)[:4];
//! - Ed25519 witness cosignatures v1 (type 0x04): hint = SHA-256(name || "\n" || 0x04 || key)[:4],
//!   signature = 8-byte big-endian timestamp || Ed25519 signature over
//!   `"cosignature/v1\ntime <ts>\n" || text`.
//!
//! Verification follows C2SP: lines whose (name, hint) pair matches no known key are ignored,
//! in any order; a line that matches a known key must verify or the whole note is rejected; at
//! least one known key must verify.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::keys::{KeyError, PrivateKey, PublicKey};
use super::merkle::Hash;

/// Go's reference implementation rejects notes with more signatures than this; C2SP asks
/// verifiers to accept at least 16.
pub const MAX_SIGNATURES: usize = 100;

/// The em dash and space that open every signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Key type bytes used in vkeys and key-hint derivations.
const TYPE_ED25519: u8 = 0x01;
const TYPE_ECDSA: u8 = 0x02;
const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// Why a note or checkpoint could not be parsed, signed or verified.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// The note is not valid UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note has no blank line separating text from signatures.
    #[error("note has no blank line before its signatures")]
    MissingSeparator,
    /// The note text is empty, lacks a final newline, or contains control characters.
    #[error("malformed note text: {0}")]
    MalformedText(&'static str),
    /// The note has no signature lines at all.
    #[error("note has no signature lines")]
    NoSignatures,
    /// The note has more signature lines than [`MAX_SIGNATURES`].
    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    /// A signature line does not have the form `— <name> <base64>`.
    #[error("malformed signature line {line}: {reason}")]
    MalformedSignatureLine {
        /// One-based position of the line among the signature lines.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key name is empty or contains spaces or `+`.
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// A verifier or signer key string is malformed.
    #[error("malformed key string: {0}")]
    MalformedKey(&'static str),
    /// A key string's hint does not match the hint computed from its name and key.
    #[error("key hint {given:08x} does not match the key (expected {computed:08x})")]
    KeyHintMismatch {
        /// The hint written in the key string.
        given: u32,
        /// The hint derived from the key.
        computed: u32,
    },
    /// A key has an algorithm this module does not support.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// A signature line matches a known key (name and hint) but does not verify.
    #[error("signature by {name} (key hint {key_hint:08x}) does not verify")]
    InvalidSignature {
        /// The key name of the failing line.
        name: String,
        /// The key hint of the failing line.
        key_hint: u32,
    },
    /// No signature line verifies with a trusted (non-cosigner) key.
    #[error("no signature from a trusted key (signature lines: {0})")]
    NoTrustedSignature(String),
    /// The checkpoint text is malformed.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// The checkpoint origin is not the expected one.
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    OriginMismatch {
        /// The origin the caller trusts.
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
    /// A cosignature could only be made with an Ed25519 key.
    #[error("cosignatures need an Ed25519 key")]
    CosignerNotEd25519,
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The 4-byte key hint, big-endian.
    pub key_hint: u32,
    /// The signature bytes that follow the hint.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Formats the line, including its final newline.
    pub fn to_line(&self) -> String {
        let mut bytes = self.key_hint.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(bytes))
    }
}

/// A parsed signed note: its text exactly as received, and its signature lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note. Nothing is verified here.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        // Split at the last blank line: signature lines never contain one, while the text may
        // (and extension lines may even contain the em dash).
        let split = s.rfind("\n\n").ok_or(NoteError::MissingSeparator)?;
        let text = &s[..split + 1];
        validate_text(text)?;
        let block = &s[split + 2..];
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let Some(block) = block.strip_suffix('\n') else {
            return Err(NoteError::MalformedSignatureLine {
                line: block.split('\n').count(),
                reason: "missing final newline",
            });
        };
        let mut signatures = Vec::new();
        for (i, line) in block.split('\n').enumerate() {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(parse_signature_line(line, i + 1)?);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Builds a note from text and signatures, checking the text is well formed.
    pub fn new(text: &str, signatures: Vec<NoteSignature>) -> Result<Self, NoteError> {
        validate_text(text)?;
        for s in &signatures {
            validate_name(&s.name)?;
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Formats the note: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }
}

/// Checks note text: non-empty, ends in a newline, no control characters but newline.
fn validate_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || text == "\n" {
        return Err(NoteError::MalformedText("empty"));
    }
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedText("no final newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::MalformedText("control character"));
    }
    Ok(())
}

/// Checks a key name: non-empty, no Unicode spaces, no `+`.
fn validate_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(|c| c.is_whitespace()) {
        return Err(NoteError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

/// Parses one signature line (without its newline).
fn parse_signature_line(line: &str, number: usize) -> Result<NoteSignature, NoteError> {
    let malformed = |reason| NoteError::MalformedSignatureLine {
        line: number,
        reason,
    };
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(malformed("does not start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(malformed("no space between name and signature"))?;
    validate_name(name).map_err(|_| malformed("invalid key name"))?;
    let raw = B64
        .decode(b64)
        .map_err(|_| malformed("signature is not standard base64"))?;
    if raw.len() < 5 {
        return Err(malformed("signature too short"));
    }
    let key_hint = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_hint,
        signature: raw[4..].to_vec(),
    })
}

/// First four bytes of a SHA-256 digest, big-endian.
fn hint_of(digest: &[u8]) -> u32 {
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// SHA-256(name || "\n" || type || key), the C2SP key ID for name-bound key types.
fn named_key_id(name: &str, key_type: u8, key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([key_type]);
    h.update(key);
    h.finalize().into()
}

/// The message an Ed25519 v1 cosignature signs.
fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// What kind of signature a verifier checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierKind {
    /// An Ed25519 note signature (type 0x01).
    Ed25519,
    /// An ECDSA P-256 note signature with Rekor's SPKI-derived hint (type 0x02).
    EcdsaP256,
    /// An Ed25519 witness cosignature v1 (type 0x04).
    Cosignature,
}

/// A trusted note key: a name, its 4-byte hint, and the public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_hint: u32,
    kind: VerifierKind,
    key: PublicKey,
}

impl Verifier {
    /// Parses a C2SP verifier key string `<name>+<8 hex hint>+<base64(type || key)>`.
    /// Types 0x01 (Ed25519), 0x02 (ECDSA P-256 SPKI) and 0x04 (cosignature v1) are
    /// supported; the hint must match the key.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        // Base64 may itself contain '+', so only the first two are separators.
        let mut parts = vkey.trim_end_matches(['\n', '\r']).splitn(3, '+');
        let (Some(name), Some(hint), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected name+hint+key"));
        };
        validate_name(name)?;
        let given = parse_hint(hint)?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::MalformedKey("key is not standard base64"))?;
        let (&key_type, key) = raw
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key"))?;
        let verifier = match key_type {
            TYPE_ED25519 | TYPE_COSIGNATURE_V1 => {
                let bytes: [u8; 32] = key
                    .try_into()
                    .map_err(|_| NoteError::MalformedKey("Ed25519 key is not 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| NoteError::MalformedKey("invalid Ed25519 key"))?;
                if key_type == TYPE_ED25519 {
                    Verifier::ed25519(name, key)?
                } else {
                    Verifier::cosigner(name, key)?
                }
            }
            TYPE_ECDSA => {
                let key = PublicKey::from_spki_der(key)
                    .map_err(|_| NoteError::MalformedKey("invalid ECDSA SPKI"))?;
                Verifier::from_public_key(name, key)?
            }
            _ => {
                return Err(NoteError::UnsupportedKey(format!(
                    "key type 0x{key_type:02x}"
                )));
            }
        };
        if verifier.key_hint != given {
            return Err(NoteError::KeyHintMismatch {
                given,
                computed: verifier.key_hint,
            });
        }
        Ok(verifier)
    }

    /// Builds a verifier from a PEM public key (SubjectPublicKeyInfo). `name` is the key name
    /// on the signature lines: the origin for Rekor v2 and most logs, the bare hostname for
    /// Rekor v1 (whose origin is `<host> - <tree ID>`).
    pub fn from_pem(name: &str, pem: &str) -> Result<Self, NoteError> {
        let key = PublicKey::from_pem(pem).map_err(|e| NoteError::UnsupportedKey(e.to_string()))?;
        Verifier::from_public_key(name, key)
    }

    /// Builds a log-signature verifier from a public key: Ed25519 keys get the C2SP 0x01 hint,
    /// P-256 keys Rekor's SPKI hint.
    pub fn from_public_key(name: &str, key: PublicKey) -> Result<Self, NoteError> {
        match key {
            PublicKey::Ed25519(key) => Verifier::ed25519(name, key),
            PublicKey::P256(_) => {
                validate_name(name)?;
                let key_hint = hint_of(&key.spki_sha256());
                Ok(Verifier {
                    name: name.to_owned(),
                    key_hint,
                    kind: VerifierKind::EcdsaP256,
                    key,
                })
            }
        }
    }

    /// An Ed25519 note verifier (type 0x01).
    pub fn ed25519(name: &str, key: ed25519_dalek::VerifyingKey) -> Result<Self, NoteError> {
        validate_name(name)?;
        Ok(Verifier {
            name: name.to_owned(),
            key_hint: hint_of(&named_key_id(name, TYPE_ED25519, key.as_bytes())),
            kind: VerifierKind::Ed25519,
            key: PublicKey::Ed25519(key),
        })
    }

    /// An Ed25519 witness cosignature v1 verifier (type 0x04).
    pub fn cosigner(name: &str, key: ed25519_dalek::VerifyingKey) -> Result<Self, NoteError> {
        validate_name(name)?;
        Ok(Verifier {
            name: name.to_owned(),
            key_hint: hint_of(&named_key_id(name, TYPE_COSIGNATURE_V1, key.as_bytes())),
            kind: VerifierKind::Cosignature,
            key: PublicKey::Ed25519(key),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key hint, big-endian.
    pub fn key_hint(&self) -> u32 {
        self.key_hint
    }

    /// What this verifier checks.
    pub fn kind(&self) -> VerifierKind {
        self.kind
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The full 32-byte key ID whose first 4 bytes are the hint: SHA-256 of the DER SPKI for
    /// ECDSA keys, SHA-256(name || "\n" || type || key) for Ed25519 keys. Rekor v2 reports it
    /// as `logId.keyId`, and a Sigstore trusted root lists it as the log ID.
    pub fn key_id(&self) -> [u8; 32] {
        match (&self.kind, &self.key) {
            (VerifierKind::Ed25519, PublicKey::Ed25519(k)) => {
                named_key_id(&self.name, TYPE_ED25519, k.as_bytes())
            }
            (VerifierKind::Cosignature, PublicKey::Ed25519(k)) => {
                named_key_id(&self.name, TYPE_COSIGNATURE_V1, k.as_bytes())
            }
            (_, key) => key.spki_sha256(),
        }
    }

    /// The C2SP verifier key string `<name>+<hint>+<base64(type || key)>`.
    pub fn to_vkey(&self) -> String {
        let mut raw = Vec::new();
        match (&self.kind, &self.key) {
            (VerifierKind::Ed25519, PublicKey::Ed25519(k)) => {
                raw.push(TYPE_ED25519);
                raw.extend_from_slice(k.as_bytes());
            }
            (VerifierKind::Cosignature, PublicKey::Ed25519(k)) => {
                raw.push(TYPE_COSIGNATURE_V1);
                raw.extend_from_slice(k.as_bytes());
            }
            (_, key) => {
                raw.push(TYPE_ECDSA);
                raw.extend_from_slice(&key.to_spki_der());
            }
        }
        format!("{}+{:08x}+{}", self.name, self.key_hint, B64.encode(raw))
    }

    /// Whether `sig` claims to be by this key (name and hint both match).
    fn matches(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name && sig.key_hint == self.key_hint
    }

    /// Checks `sig` over `text`; returns the cosignature timestamp for cosignatures.
    fn check(&self, text: &str, sig: &NoteSignature) -> Result<Option<u64>, KeyError> {
        match self.kind {
            VerifierKind::Ed25519 | VerifierKind::EcdsaP256 => self
                .key
                .verify(text.as_bytes(), &sig.signature)
                .map(|()| None),
            VerifierKind::Cosignature => {
                if sig.signature.len() != 8 + 64 {
                    return Err(KeyError::BadSignature);
                }
                let (ts, raw) = sig.signature.split_at(8);
                let ts = u64::from_be_bytes(ts.try_into().map_err(|_| KeyError::BadSignature)?);
                self.key.verify(&cosigned_message(text, ts), raw)?;
                Ok(Some(ts))
            }
        }
    }
}

/// Parses an 8-hex-digit key hint.
fn parse_hint(hint: &str) -> Result<u32, NoteError> {
    if hint.len() != 8 || !hint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("hint is not 8 hex digits"));
    }
    u32::from_str_radix(hint, 16).map_err(|_| NoteError::MalformedKey("hint is not hex"))
}

/// A note signer: an Ed25519 (type 0x01) or ECDSA P-256 (Rekor-style hint) private key under
/// a name.
#[derive(Debug, Clone)]
pub struct Signer {
    key: PrivateKey,
    verifier: Verifier,
}

impl Signer {
    /// A signer for `key` under `name`.
    pub fn new(name: &str, key: PrivateKey) -> Result<Self, NoteError> {
        let verifier = Verifier::from_public_key(name, key.public_key())?;
        Ok(Signer { key, verifier })
    }

    /// Parses a Go/C2SP signer key string `PRIVATE+KEY+<name>+<hint>+<base64(0x01 || seed)>`.
    pub fn from_skey(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .trim_end_matches(['\n', '\r'])
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey("missing PRIVATE+KEY+ prefix"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hint), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected name+hint+key"));
        };
        let given = parse_hint(hint)?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::MalformedKey("key is not standard base64"))?;
        let (&key_type, seed) = raw
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key"))?;
        if key_type != TYPE_ED25519 {
            return Err(NoteError::UnsupportedKey(format!(
                "signer key type 0x{key_type:02x}"
            )));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::MalformedKey("Ed25519 seed is not 32 bytes"))?;
        let signer = Signer::new(
            name,
            PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)),
        )?;
        if signer.verifier.key_hint != given {
            return Err(NoteError::KeyHintMismatch {
                given,
                computed: signer.verifier.key_hint,
            });
        }
        Ok(signer)
    }

    /// The verifier for this signer's signatures.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Signs note text (which must end in a newline) and returns the signature line.
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        validate_text(text)?;
        Ok(NoteSignature {
            name: self.verifier.name.clone(),
            key_hint: self.verifier.key_hint,
            signature: self.key.sign(text.as_bytes()),
        })
    }
}

/// A witness cosigner: an Ed25519 key that makes v1 cosignatures (type 0x04).
#[derive(Debug, Clone)]
pub struct Cosigner {
    key: ed25519_dalek::SigningKey,
    verifier: Verifier,
}

impl Cosigner {
    /// A cosigner for an Ed25519 `key` under `name`.
    pub fn new(name: &str, key: PrivateKey) -> Result<Self, NoteError> {
        let PrivateKey::Ed25519(key) = key else {
            return Err(NoteError::CosignerNotEd25519);
        };
        let verifier = Verifier::cosigner(name, key.verifying_key())?;
        Ok(Cosigner { key, verifier })
    }

    /// The verifier for this cosigner.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Cosigns checkpoint text at `timestamp` (Unix seconds).
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
        use ed25519_dalek::Signer as _;
        validate_text(text)?;
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(&self.key.sign(&cosigned_message(text, timestamp)).to_bytes());
        Ok(NoteSignature {
            name: self.verifier.name.clone(),
            key_hint: self.verifier.key_hint,
            signature,
        })
    }
}

/// Signs `text` with every signer and returns the complete signed note.
pub fn sign_note(text: &str, signers: &[&Signer]) -> Result<String, NoteError> {
    let signatures = signers
        .iter()
        .map(|s| s.sign(text))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Note::new(text, signatures)?.to_text())
}

/// A signature line that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The key name.
    pub name: String,
    /// The key hint.
    pub key_hint: u32,
    /// What kind of key verified it.
    pub kind: VerifierKind,
    /// For cosignatures, the witness's timestamp (Unix seconds).
    pub timestamp: Option<u64>,
}

/// A note whose signatures have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The parsed note.
    pub note: Note,
    /// Lines that verified with a known key.
    pub verified: Vec<VerifiedSignature>,
    /// Lines from unknown keys, which were ignored.
    pub unverified: Vec<NoteSignature>,
}

/// Parses `note` and checks its signatures against `verifiers`. Fails if a line from a known
/// key does not verify, or if no line from a known non-cosigner key verifies.
pub fn open(note: &[u8], verifiers: &[Verifier]) -> Result<OpenedNote, NoteError> {
    check_signatures(Note::parse(note)?, verifiers)
}

/// The signature checks of [`open`], on an already parsed note.
fn check_signatures(note: Note, verifiers: &[Verifier]) -> Result<OpenedNote, NoteError> {
    let mut verified = Vec::new();
    let mut unverified = Vec::new();
    for sig in note.signatures() {
        let Some(verifier) = verifiers.iter().find(|v| v.matches(sig)) else {
            unverified.push(sig.clone());
            continue;
        };
        let timestamp =
            verifier
                .check(note.text(), sig)
                .map_err(|_| NoteError::InvalidSignature {
                    name: sig.name.clone(),
                    key_hint: sig.key_hint,
                })?;
        verified.push(VerifiedSignature {
            name: sig.name.clone(),
            key_hint: sig.key_hint,
            kind: verifier.kind,
            timestamp,
        });
    }
    if !verified.iter().any(|v| v.kind != VerifierKind::Cosignature) {
        let seen = note
            .signatures()
            .iter()
            .map(|s| format!("{} {:08x}", s.name, s.key_hint))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NoteError::NoTrustedSignature(seen));
    }
    Ok(OpenedNote {
        note,
        verified,
        unverified,
    })
}

/// A tlog checkpoint (C2SP tlog-checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The Merkle tree root hash.
    pub root: Hash,
    /// Extension lines, without their newlines, in order.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Parses checkpoint text (the note text, including its final newline).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedCheckpoint("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(NoteError::MalformedCheckpoint("empty origin line"));
        }
        let size = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("missing tree size line"))?;
        let size = parse_size(size)?;
        let root = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("missing root hash line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::MalformedCheckpoint(
                "root hash is not base64 of 32 bytes",
            ))?;
        let extensions = lines.map(str::to_owned).collect::<Vec<_>>();
        if extensions.iter().any(String::is_empty) {
            return Err(NoteError::MalformedCheckpoint("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Formats the checkpoint as note text (with a final newline, ready to sign).
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }
}

/// Parses a tree size: ASCII decimal with no sign and no leading zeros.
fn parse_size(s: &str) -> Result<u64, NoteError> {
    let bad = NoteError::MalformedCheckpoint("tree size is not a canonical decimal");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

/// A checkpoint together with the signature checks of its note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note and which of its signatures verified (including witness cosignatures).
    pub opened: OpenedNote,
}

/// Parses a signed checkpoint, checks the origin if one is expected, and checks signatures
/// as [`open`] does. Returns the verified checkpoint with its signature details.
pub fn open_checkpoint(
    note: &[u8],
    verifiers: &[Verifier],
    expected_origin: Option<&str>,
) -> Result<VerifiedCheckpoint, NoteError> {
    let parsed = Note::parse(note)?;
    let checkpoint = Checkpoint::parse(parsed.text())?;
    if let Some(expected) = expected_origin
        && expected != checkpoint.origin
    {
        return Err(NoteError::OriginMismatch {
            expected: expected.to_owned(),
            found: checkpoint.origin,
        });
    }
    let opened = check_signatures(parsed, verifiers)?;
    Ok(VerifiedCheckpoint { checkpoint, opened })
}

/// Verifies a signed checkpoint: well-formed, origin equal to `expected_origin` when given,
/// and signed by at least one of `verifiers` (unknown signature lines are ignored).
pub fn verify_checkpoint(
    note: &[u8],
    verifiers: &[Verifier],
    expected_origin: Option<&str>,
) -> Result<Checkpoint, NoteError> {
    open_checkpoint(note, verifiers, expected_origin).map(|v| v.checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::Algorithm;

    fn ed_signer(name: &str) -> Signer {
        Signer::new(
            name,
            PrivateKey::generate(Algorithm::Ed25519, &mut crate::domain::keys::os_random).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_sign_parse_verify() {
        let signer = ed_signer("example.com/log");
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 42,
            root: [7; 32],
            extensions: vec!["Log frozen \u{2014} now".into()],
        };
        let note = sign_note(&cp.to_text(), &[&signer]).unwrap();
        let got = verify_checkpoint(
            note.as_bytes(),
            &[signer.verifier().clone()],
            Some("example.com/log"),
        )
        .unwrap();
        assert_eq!(got, cp);
        let vkey = signer.verifier().to_vkey();
        assert_eq!(&Verifier::from_vkey(&vkey).unwrap(), signer.verifier());
    }

    #[test]
    fn ecdsa_signer_round_trip_and_vkey() {
        let signer = Signer::new(
            "local.log",
            PrivateKey::generate(Algorithm::P256, &mut crate::domain::keys::os_random).unwrap(),
        )
        .unwrap();
        let text = "local.log - 5\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n";
        let note = sign_note(text, &[&signer]).unwrap();
        let cp = verify_checkpoint(note.as_bytes(), &[signer.verifier().clone()], None).unwrap();
        assert_eq!(cp.size, 0);
        let vkey = signer.verifier().to_vkey();
        assert_eq!(&Verifier::from_vkey(&vkey).unwrap(), signer.verifier());
    }

    #[test]
    fn wrong_origin_is_rejected() {
        let signer = ed_signer("a.example");
        let note = sign_note(
            "a.example\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            &[&signer],
        )
        .unwrap();
        let err = verify_checkpoint(
            note.as_bytes(),
            &[signer.verifier().clone()],
            Some("b.example"),
        )
        .unwrap_err();
        assert!(matches!(err, NoteError::OriginMismatch { .. }));
    }

    #[test]
    fn known_key_with_bad_signature_rejects_whole_note() {
        let signer = ed_signer("a.example");
        let other = ed_signer("b.example");
        let text = "hello\n";
        let mut bad = signer.sign(text).unwrap();
        bad.signature[0] ^= 1;
        let note = Note::new(text, vec![other.sign(text).unwrap(), bad])
            .unwrap()
            .to_text();
        let err = open(
            note.as_bytes(),
            &[signer.verifier().clone(), other.verifier().clone()],
        )
        .unwrap_err();
        assert!(matches!(err, NoteError::InvalidSignature { .. }));
    }

    #[test]
    fn cosignatures_verify_but_do_not_count_as_log_signatures() {
        let log = ed_signer("log.example");
        let witness = Cosigner::new(
            "witness.example",
            PrivateKey::generate(Algorithm::Ed25519, &mut crate::domain::keys::os_random).unwrap(),
        )
        .unwrap();
        let text = "log.example\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let cosig = witness.cosign(text, 1_700_000_000).unwrap();
        let note = Note::new(text, vec![cosig.clone(), log.sign(text).unwrap()])
            .unwrap()
            .to_text();
        let verifiers = [log.verifier().clone(), witness.verifier().clone()];
        let opened = open_checkpoint(note.as_bytes(), &verifiers, None).unwrap();
        assert_eq!(opened.opened.verified.len(), 2);
        assert_eq!(opened.opened.verified[0].timestamp, Some(1_700_000_000));
        // Only the cosignature: not enough.
        let only_cosig = Note::new(text, vec![cosig]).unwrap().to_text();
        let err = verify_checkpoint(only_cosig.as_bytes(), &verifiers, None).unwrap_err();
        assert!(matches!(err, NoteError::NoTrustedSignature(_)));
        // A cosignature vkey round-trips.
        let vkey = witness.verifier().to_vkey();
        assert_eq!(&Verifier::from_vkey(&vkey).unwrap(), witness.verifier());
    }

    #[test]
    fn malformed_checkpoints() {
        for (text, _why) in [
            (
                "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                "origin",
            ),
            (
                "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                "size",
            ),
            (
                "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                "size",
            ),
            ("o\n1\nAAAA\n", "root"),
            ("o\n1\n", "root"),
            (
                "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nx\n",
                "ext",
            ),
        ] {
            assert!(Checkpoint::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn malformed_notes() {
        for note in [
            &b"no separator\n"[..],
            b"text\n\n",
            b"text\n\n\xe2\x80\x94 name AAAA\n",
            b"text\n\n- name AAAAAAAAAA==\n",
            b"text\n\n\xe2\x80\x94 name AAAAAAAAAA==",
            b"te\x01xt\n\n\xe2\x80\x94 name AAAAAAAAAA==\n",
            b"\xff\n\n\xe2\x80\x94 name AAAAAAAAAA==\n",
        ] {
            assert!(Note::parse(note).is_err(), "{note:?}");
        }
        let many = format!(
            "t\n\n{}",
            "\u{2014} n AAAAAAAAAA==\n".repeat(MAX_SIGNATURES + 1)
        );
        assert_eq!(
            Note::parse(many.as_bytes()).unwrap_err(),
            NoteError::TooManySignatures
        );
    }

    #[test]
    fn vkey_with_wrong_hint_is_rejected() {
        let good = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        assert!(Verifier::from_vkey(good).is_ok());
        let bad = good.replace("c74f20a3", "c74f20a4");
        assert!(matches!(
            Verifier::from_vkey(&bad),
            Err(NoteError::KeyHintMismatch { .. })
        ));
        // The name is part of an Ed25519 hint.
        let renamed = good.replace("PeterNeumann", "PeterNeuman");
        assert!(Verifier::from_vkey(&renamed).is_err());
    }
}
