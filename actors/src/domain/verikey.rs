//! VeriKey: the cache key of a policy verdict, a hash over the verdict's exact inputs.
//!
//! The encoding is documented byte for byte in `docs/verikey.md` so other services can
//! compute the same key. Every field is length-prefixed, so no two different inputs
//! encode to the same bytes, and the encoding starts with a domain tag, so the hash cannot
//! collide with a hash of another kind of document.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The domain-separation tag that starts every encoding.
pub const DOMAIN_TAG: &str = "provd:verikey:v1";

/// Longest accepted input field, in bytes.
pub const MAX_FIELD_LEN: usize = 512;

/// Most VEX digests in one key.
pub const MAX_VEX_DIGESTS: usize = 1024;

/// Errors of VeriKey inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VeriKeyError {
    /// A required field is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A field is longer than [`MAX_FIELD_LEN`] bytes.
    #[error("`{0}` is longer than {MAX_FIELD_LEN} bytes")]
    TooLong(&'static str),
    /// More than [`MAX_VEX_DIGESTS`] VEX digests.
    #[error("more than {MAX_VEX_DIGESTS} VEX digests")]
    TooManyVex,
    /// The time window ends before it starts.
    #[error("`time_window` must end after it starts")]
    BadWindow,
    /// A string is not a VeriKey (`sha256:` and 64 lowercase hex digits).
    #[error("not a VeriKey (expected `sha256:` and 64 lowercase hex digits): {0:?}")]
    Malformed(String),
}

/// A validity window of a verdict, in Unix seconds (start inclusive, end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    /// First second the verdict applies to.
    pub start: i64,
    /// First second it no longer applies to.
    pub end: i64,
}

/// What a verdict was decided on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeriKeyInputs {
    /// Digest of the source artifact (e.g. `sha256:…` of an image).
    pub source_artifact_digest: String,
    /// Digest of the SBOM.
    pub sbom_digest: String,
    /// Digests of the VEX documents, in any order (they are sorted and deduplicated).
    #[serde(default)]
    pub vex_digests: Vec<String>,
    /// Hash of the policy bundle.
    pub policy_hash: String,
    /// Hash of the signer set.
    pub signer_set_hash: String,
    /// Vulnerability-feed epoch.
    pub feed_epoch: String,
    /// Optional validity window.
    #[serde(default)]
    pub time_window: Option<TimeWindow>,
}

fn check(name: &'static str, v: &str) -> Result<(), VeriKeyError> {
    if v.is_empty() {
        return Err(VeriKeyError::Empty(name));
    }
    if v.len() > MAX_FIELD_LEN {
        return Err(VeriKeyError::TooLong(name));
    }
    Ok(())
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by MAX_FIELD_LEN, so they always fit in 32 bits.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl VeriKeyInputs {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), VeriKeyError> {
        check("source_artifact_digest", &self.source_artifact_digest)?;
        check("sbom_digest", &self.sbom_digest)?;
        check("policy_hash", &self.policy_hash)?;
        check("signer_set_hash", &self.signer_set_hash)?;
        check("feed_epoch", &self.feed_epoch)?;
        if self.vex_digests.len() > MAX_VEX_DIGESTS {
            return Err(VeriKeyError::TooManyVex);
        }
        for v in &self.vex_digests {
            check("vex_digests", v)?;
        }
        if let Some(w) = self.time_window
            && w.end <= w.start
        {
            return Err(VeriKeyError::BadWindow);
        }
        Ok(())
    }

    /// The exact bytes that are hashed (see `docs/verikey.md`).
    pub fn encode(&self) -> Result<Vec<u8>, VeriKeyError> {
        self.validate()?;
        let mut vex: Vec<&str> = self.vex_digests.iter().map(String::as_str).collect();
        vex.sort_unstable();
        vex.dedup();
        let mut out = Vec::with_capacity(256);
        put_field(&mut out, DOMAIN_TAG.as_bytes());
        put_field(&mut out, self.source_artifact_digest.as_bytes());
        put_field(&mut out, self.sbom_digest.as_bytes());
        out.extend_from_slice(&(vex.len() as u32).to_be_bytes());
        for v in vex {
            put_field(&mut out, v.as_bytes());
        }
        put_field(&mut out, self.policy_hash.as_bytes());
        put_field(&mut out, self.signer_set_hash.as_bytes());
        put_field(&mut out, self.feed_epoch.as_bytes());
        match self.time_window {
            None => out.push(0),
            Some(w) => {
                out.push(1);
                out.extend_from_slice(&w.start.to_be_bytes());
                out.extend_from_slice(&w.end.to_be_bytes());
            }
        }
        Ok(out)
    }

    /// The VeriKey: `sha256:` and the lowercase hex SHA-256 of [`VeriKeyInputs::encode`].
    pub fn veri_key(&self) -> Result<String, VeriKeyError> {
        let bytes = self.encode()?;
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
    }
}

/// Checks that `s` has the VeriKey shape.
pub fn parse_veri_key(s: &str) -> Result<&str, VeriKeyError> {
    let ok = s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(s)
    } else {
        Err(VeriKeyError::Malformed(s.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of `docs/verikey.md`.
    pub(crate) fn example() -> VeriKeyInputs {
        VeriKeyInputs {
            source_artifact_digest: "sha256:aaaa".into(),
            sbom_digest: "sha256:bbbb".into(),
            vex_digests: vec!["sha256:dddd".into(), "sha256:cccc".into()],
            policy_hash: "sha256:eeee".into(),
            signer_set_hash: "sha256:ffff".into(),
            feed_epoch: "2026.11.22".into(),
            time_window: Some(TimeWindow {
                start: 1_767_225_600,
                end: 1_767_312_000,
            }),
        }
    }

    #[test]
    fn the_documented_example_has_the_documented_bytes_and_key() {
        let inputs = example();
        let bytes = inputs.encode().expect("valid");
        let doc = include_str!("../../../docs/verikey.md");
        let hex_bytes = hex::encode(&bytes);
        assert!(
            doc.contains(&hex_bytes),
            "docs/verikey.md must show the encoding {hex_bytes}"
        );
        let key = inputs.veri_key().expect("valid");
        assert!(
            doc.contains(&key),
            "docs/verikey.md must show the key {key}"
        );
    }

    #[test]
    fn vex_order_and_duplicates_do_not_matter() {
        let a = example();
        let mut b = example();
        b.vex_digests = vec![
            "sha256:cccc".into(),
            "sha256:dddd".into(),
            "sha256:cccc".into(),
        ];
        assert_eq!(a.veri_key(), b.veri_key());
    }

    #[test]
    fn every_field_changes_the_key_and_fields_cannot_slide() {
        let base = example().veri_key().expect("valid");
        let mut moved = example();
        // Moving a byte from one field to the next must change the key (length prefixes).
        moved.source_artifact_digest = "sha256:aaa".into();
        moved.sbom_digest = "asha256:bbbb".into();
        assert_ne!(moved.veri_key().expect("valid"), base);
        let mut no_window = example();
        no_window.time_window = None;
        assert_ne!(no_window.veri_key().expect("valid"), base);
        let mut epoch = example();
        epoch.feed_epoch = "2026.11.23".into();
        assert_ne!(epoch.veri_key().expect("valid"), base);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut e = example();
        e.policy_hash.clear();
        assert_eq!(e.veri_key(), Err(VeriKeyError::Empty("policy_hash")));
        let mut w = example();
        w.time_window = Some(TimeWindow { start: 5, end: 5 });
        assert_eq!(w.veri_key(), Err(VeriKeyError::BadWindow));
        assert!(parse_veri_key(&example().veri_key().expect("valid")).is_ok());
        assert!(parse_veri_key("sha256:ABC").is_err());
    }
}
