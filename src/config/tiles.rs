//! The `[tiles]` section: the filesystem tile cache, the tile proxy and the tile-sync actor.
//!
//! ```toml
//! [tiles]
//! cache_dir = "/var/lib/provd/tiles"  # turns the cache and the proxy on
//! max_bytes = 10737418240             # size budget (default 1 GiB)
//! backends = ["rekor2"]               # default: every Rekor v2 backend
//! prefetch = true                     # prefetch tiles of each verified checkpoint
//! require_token = false               # true: the proxy needs a `read` token
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rekor::{ApiVersion, BackendKind, RekorConfig};
use super::{ConfigError, invalid};

/// The `[tiles]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiles {
    /// See [`TilesConfig::cache_dir`].
    pub cache_dir: Option<String>,
    /// See [`TilesConfig::max_bytes`].
    pub max_bytes: Option<u64>,
    /// See [`TilesConfig::backends`].
    pub backends: Option<Vec<String>>,
    /// See [`TilesConfig::prefetch`].
    pub prefetch: Option<bool>,
    /// See [`TilesConfig::require_token`].
    pub require_token: Option<bool>,
}

/// The validated `[tiles]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilesConfig {
    /// The cache directory; each log's tiles are under `<cache_dir>/<backend>/` in the C2SP
    /// layout (`checkpoint`, `tile/...`).
    pub cache_dir: PathBuf,
    /// The size budget in bytes: past it, tiles are still verified and served but no longer
    /// stored.
    pub max_bytes: u64,
    /// The Rekor v2 backends whose tiles are cached and proxied.
    pub backends: Vec<String>,
    /// Whether the tile-sync actor prefetches the tiles of each observed checkpoint.
    pub prefetch: bool,
    /// Whether the proxy requires a bearer token with the `read` scope.
    pub require_token: bool,
}

/// The default size budget: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

impl RawTiles {
    /// Whether the section is absent (nothing set).
    pub fn is_empty(&self) -> bool {
        *self == RawTiles::default()
    }

    /// Validates the section against the validated `[rekor]` backends. `None` when no cache
    /// directory is set (the cache and the proxy are off).
    pub fn validate(self, rekor: &RekorConfig) -> Result<Option<TilesConfig>, ConfigError> {
        let Some(dir) = self.cache_dir else {
            if self.is_empty() {
                return Ok(None);
            }
            return Err(invalid(
                "tiles.cache_dir",
                "",
                "expected a directory: the other [tiles] keys need it",
            ));
        };
        if dir.trim().is_empty() {
            return Err(invalid("tiles.cache_dir", &dir, "expected a directory"));
        }
        let max_bytes = self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes < 1 << 20 {
            return Err(invalid(
                "tiles.max_bytes",
                max_bytes,
                "expected at least 1048576 (1 MiB)",
            ));
        }
        let is_tile_log = |name: &str| {
            rekor
                .backends
                .get(name)
                .is_some_and(|b| b.api == ApiVersion::V2 && b.kind != BackendKind::Stub)
        };
        let backends = match self.backends {
            Some(names) => {
                for name in &names {
                    if !is_tile_log(name) {
                        return Err(invalid(
                            "tiles.backends",
                            name,
                            "expected the name of a [rekor.backends.<name>] with api = \"v2\" \
                             (a C2SP tile log) and kind public or private",
                        ));
                    }
                }
                names
            }
            None => rekor
                .backends
                .keys()
                .filter(|n| is_tile_log(n))
                .cloned()
                .collect(),
        };
        Ok(Some(TilesConfig {
            cache_dir: PathBuf::from(dir),
            max_bytes,
            backends,
            prefetch: self.prefetch.unwrap_or(true),
            require_token: self.require_token.unwrap_or(false),
        }))
    }
}

impl TilesConfig {
    /// The section as written in TOML (for `config check`).
    pub fn to_raw(&self) -> RawTiles {
        RawTiles {
            cache_dir: Some(self.cache_dir.display().to_string()),
            max_bytes: Some(self.max_bytes),
            backends: Some(self.backends.clone()),
            prefetch: Some(self.prefetch),
            require_token: Some(self.require_token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawRekor;
    use crate::config::rekor::RawRekorBackend;

    fn rekor() -> RekorConfig {
        let backend = |api: &str| RawRekorBackend {
            kind: Some("private".into()),
            api: Some(api.into()),
            url: Some("http://127.0.0.1:1".into()),
            keys: Some(vec![
                "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k".into(),
            ]),
            origin: Some("example.com/foo".into()),
            ..RawRekorBackend::default()
        };
        RawRekor {
            default_backend: Some("two".into()),
            backends: [
                (
                    "one".into(),
                    RawRekorBackend {
                        kind: Some("stub".into()),
                        ..RawRekorBackend::default()
                    },
                ),
                ("two".into(), backend("v2")),
            ]
            .into(),
            queue: None,
        }
        .validate()
        .expect("valid rekor")
    }

    #[test]
    fn defaults_and_errors_name_their_key() {
        let rekor = rekor();
        assert_eq!(RawTiles::default().validate(&rekor).unwrap(), None);
        let c = RawTiles {
            cache_dir: Some("/tmp/x".into()),
            ..RawTiles::default()
        }
        .validate(&rekor)
        .unwrap()
        .unwrap();
        assert_eq!(c.backends, ["two"]);
        assert_eq!(c.max_bytes, DEFAULT_MAX_BYTES);
        assert!(c.prefetch && !c.require_token);
        let err = |raw: RawTiles| raw.validate(&rekor).unwrap_err().to_string();
        assert!(
            err(RawTiles {
                max_bytes: Some(5),
                ..RawTiles::default()
            })
            .contains("tiles.cache_dir")
        );
        let e = err(RawTiles {
            cache_dir: Some("/tmp/x".into()),
            backends: Some(vec!["one".into()]),
            ..RawTiles::default()
        });
        assert!(e.contains("tiles.backends") && e.contains("\"one\""), "{e}");
        assert!(
            err(RawTiles {
                cache_dir: Some("/tmp/x".into()),
                max_bytes: Some(10),
                ..RawTiles::default()
            })
            .contains("tiles.max_bytes")
        );
    }
}
