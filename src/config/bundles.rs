//! The `[bundles]` section: limits and trust for air-gap proof bundles.
//!
//! ```toml
//! [bundles]
//! max_bundle_bytes = 134217728          # 128 MiB: larger bundles are refused unread
//! max_chunks = 1000                     # most chunks a bundle's manifest may list
//! max_concurrent_imports = 2            # imports at once; more are answered 503 + Retry-After
//! trusted_keys = ["/etc/provd/exporter.pub.pem"]  # when set, imports must be signed by one
//! ```
//!
//! Keys are read and parsed at load, so a bad key is a configuration error naming its key.

use actors::domain::bundle::BundleLimits;
use actors::domain::keys::PublicKey;
use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Default largest bundle: 128 MiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 128 * 1024 * 1024;
/// Default most chunks in a bundle's manifest.
pub const DEFAULT_MAX_CHUNKS: u64 = 1000;
/// Default most imports running at once over HTTP.
pub const DEFAULT_MAX_CONCURRENT_IMPORTS: u32 = 2;
/// Most `max_concurrent_imports` accepted: each import holds a batch of chunks in memory.
const MAX_CONCURRENT_IMPORTS: u32 = 64;

/// The `[bundles]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundles {
    /// See [`BundleLimits::max_bundle_bytes`].
    pub max_bundle_bytes: Option<u64>,
    /// See [`BundleLimits::max_chunks`].
    pub max_chunks: Option<u64>,
    /// See [`BundlesConfig::max_concurrent_imports`].
    pub max_concurrent_imports: Option<u32>,
    /// PEM files (or PEM text) of the keys whose signatures imports accept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
}

/// The validated `[bundles]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlesConfig {
    /// Size and chunk limits.
    pub limits: BundleLimits,
    /// Most `POST /api/v1/provcache/import` requests running at once; one more is answered
    /// 503 with `Retry-After`, so memory stays bounded however many clients upload.
    pub max_concurrent_imports: u32,
    /// Keys whose signatures `POST /api/v1/provcache/import` accepts; when empty, bundles
    /// are imported after every other check and their signature is reported not checked.
    pub trusted_keys: Vec<PublicKey>,
    /// The `trusted_keys` entries as written (for `config show`).
    pub trusted_key_sources: Vec<String>,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            limits: BundleLimits {
                max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
                max_chunks: DEFAULT_MAX_CHUNKS,
            },
            max_concurrent_imports: DEFAULT_MAX_CONCURRENT_IMPORTS,
            trusted_keys: Vec::new(),
            trusted_key_sources: Vec::new(),
        }
    }
}

/// Reads a public key from PEM text or from a file holding it.
pub fn load_public_key(source: &str) -> Result<PublicKey, String> {
    let text = if source.contains("-----BEGIN") {
        source.to_owned()
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("cannot read {source}: {e}"))?
    };
    PublicKey::from_pem(&text).map_err(|e| e.to_string())
}

impl RawBundles {
    /// Validates and fills defaults.
    pub fn validate(self) -> Result<BundlesConfig, ConfigError> {
        let max_bundle_bytes = self.max_bundle_bytes.unwrap_or(DEFAULT_MAX_BUNDLE_BYTES);
        if max_bundle_bytes < 1024 {
            return Err(invalid(
                "bundles.max_bundle_bytes",
                max_bundle_bytes,
                "expected at least 1024",
            ));
        }
        let max_chunks = self.max_chunks.unwrap_or(DEFAULT_MAX_CHUNKS);
        if max_chunks == 0 || max_chunks > i32::MAX as u64 {
            return Err(invalid(
                "bundles.max_chunks",
                max_chunks,
                "expected a whole number from 1 to 2147483647",
            ));
        }
        let max_concurrent_imports = self
            .max_concurrent_imports
            .unwrap_or(DEFAULT_MAX_CONCURRENT_IMPORTS);
        if !(1..=MAX_CONCURRENT_IMPORTS).contains(&max_concurrent_imports) {
            return Err(invalid(
                "bundles.max_concurrent_imports",
                max_concurrent_imports,
                format!("expected a whole number from 1 to {MAX_CONCURRENT_IMPORTS}"),
            ));
        }
        let trusted_keys = self
            .trusted_keys
            .iter()
            .map(|s| {
                load_public_key(s).map_err(|e| {
                    invalid(
                        "bundles.trusted_keys",
                        s.chars().take(80).collect::<String>(),
                        format!("expected a PEM public key (P-256 or Ed25519) or its file: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BundlesConfig {
            limits: BundleLimits {
                max_bundle_bytes,
                max_chunks,
            },
            max_concurrent_imports,
            trusted_keys,
            trusted_key_sources: self.trusted_keys,
        })
    }
}

impl BundlesConfig {
    /// The section as written.
    pub fn to_raw(&self) -> RawBundles {
        RawBundles {
            max_bundle_bytes: Some(self.limits.max_bundle_bytes),
            max_chunks: Some(self.limits.max_chunks),
            max_concurrent_imports: Some(self.max_concurrent_imports),
            trusted_keys: self.trusted_key_sources.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let e = RawBundles {
            max_bundle_bytes: Some(10),
            ..RawBundles::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("bundles.max_bundle_bytes"), "{e}");
        for bad in [0, 65] {
            let e = RawBundles {
                max_concurrent_imports: Some(bad),
                ..RawBundles::default()
            }
            .validate()
            .unwrap_err();
            assert!(
                e.to_string().contains("bundles.max_concurrent_imports"),
                "{e}"
            );
        }
        let e = RawBundles {
            trusted_keys: vec!["/nonexistent.pem".into()],
            ..RawBundles::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("bundles.trusted_keys"), "{e}");
        let ok = RawBundles::default().validate().unwrap();
        assert_eq!(ok, BundlesConfig::default());
    }
}
