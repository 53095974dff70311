//! The trust data compiled into provd: each Sigstore instance's `trusted_root.json` (the
//! last resort of [`super::load_root`]) and its TUF initial root (what `update` and `import`
//! start the root chain from). Sources and dates are in `embedded/README.md`.

use jiff::Timestamp;

/// One Sigstore instance's compiled-in data.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    /// The Sigstore `trusted_root.json`.
    pub trusted_root: &'static [u8],
    /// When the trusted root was taken, RFC 3339 (its age counts from here).
    pub taken: &'static str,
    /// The TUF root metadata the TUF client trusts first.
    pub tuf_root: &'static [u8],
}

impl Embedded {
    /// When the trusted root was taken.
    pub fn taken_at(&self) -> Timestamp {
        // A unit test parses every constant, so this never falls back in a release.
        self.taken.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// Production: https://tuf-repo-cdn.sigstore.dev.
pub const PRODUCTION: Embedded = Embedded {
    trusted_root: include_bytes!("embedded/production_trusted_root.json"),
    taken: "2026-08-20T03:41:51Z",
    tuf_root: include_bytes!("embedded/production_tuf_root.json"),
};

/// Staging: https://tuf-repo-cdn.sigstage.dev.
pub const STAGING: Embedded = Embedded {
    trusted_root: include_bytes!("embedded/staging_trusted_root.json"),
    taken: "2026-08-20T03:41:51Z",
    tuf_root: include_bytes!("embedded/staging_tuf_root.json"),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dates_parse_and_the_files_are_what_they_claim() {
        for e in [PRODUCTION, STAGING] {
            assert_eq!(e.taken_at(), e.taken.parse::<Timestamp>().unwrap());
            let root: serde_json::Value = serde_json::from_slice(e.trusted_root).unwrap();
            assert!(
                root["mediaType"]
                    .as_str()
                    .unwrap()
                    .starts_with("application/vnd.dev.sigstore.trustedroot")
            );
            let tuf: serde_json::Value = serde_json::from_slice(e.tuf_root).unwrap();
            assert_eq!(tuf["signed"]["_type"], "root");
        }
    }

    #[test]
    fn the_tuf_roots_are_self_signed_to_threshold() {
        for (e, version) in [(PRODUCTION, 16), (STAGING, 15)] {
            let set = sigstore_tuf::TrustedMetadataSet::from_root(e.tuf_root).unwrap();
            assert_eq!(set.root().version, version);
        }
    }
}
