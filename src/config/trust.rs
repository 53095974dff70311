//! The `[trust]` section: where Sigstore verification's `trusted_root.json` comes from and how
//! old it may be.
//!
//! ```toml
//! [trust]
//! trusted_root = "/etc/provd/trusted_root.json"  # a fixed file; beats the TUF cache
//! instance = "production"                        # or "staging"
//! # tuf_url = "https://tuf.example.internal"     # a custom TUF repository ...
//! # tuf_root = "/etc/provd/tuf-root.json"        # ... and its initial root (both or neither)
//! max_age = "30d"                                # older roots are reported (at least 1h)
//! refuse_stale = false                           # true: older roots are refused
//! ```
//!
//! Files are checked at load, so a missing one is a configuration error naming its key.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, duration, invalid};
use crate::trust::freshness::{FreshnessPolicy, compact_duration};
use crate::trust::{DEFAULT_MAX_AGE, Instance};

/// The `[trust]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// See [`TrustConfig::trusted_root`].
    pub trusted_root: Option<String>,
    /// `production` or `staging`; see [`TrustConfig::instance`].
    pub instance: Option<String>,
    /// A custom TUF repository's URL; see [`TrustConfig::instance`].
    pub tuf_url: Option<String>,
    /// See [`TrustConfig::tuf_root`].
    pub tuf_root: Option<String>,
    /// See [`FreshnessPolicy::max_age`]; a duration such as `30d`.
    pub max_age: Option<String>,
    /// See [`FreshnessPolicy::refuse_stale`].
    pub refuse_stale: Option<bool>,
}

/// The validated `[trust]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    /// A `trusted_root.json` used instead of the TUF cache and the embedded root.
    pub trusted_root: Option<PathBuf>,
    /// The Sigstore instance whose TUF repository keeps the root fresh.
    pub instance: Instance,
    /// The initial TUF root of a custom repository (`Some` exactly when the instance is
    /// custom).
    pub tuf_root: Option<PathBuf>,
    /// How old a root may be, and whether an older one is refused.
    pub policy: FreshnessPolicy,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            trusted_root: None,
            instance: Instance::Production,
            tuf_root: None,
            policy: FreshnessPolicy::default(),
        }
    }
}

/// A path that must name an existing file.
fn existing_file(key: &str, value: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let path = PathBuf::from(v.trim());
    if v.trim().is_empty() || !path.is_file() {
        return Err(invalid(key, &v, "expected an existing file"));
    }
    Ok(Some(path))
}

impl RawTrust {
    /// Validates the section; every error names its key.
    pub fn validate(self) -> Result<TrustConfig, ConfigError> {
        let trusted_root = existing_file("trust.trusted_root", self.trusted_root)?;
        let tuf_root = existing_file("trust.tuf_root", self.tuf_root)?;
        let instance = match (self.instance.as_deref(), self.tuf_url) {
            (Some(i), Some(_)) => {
                return Err(invalid(
                    "trust.tuf_url",
                    i,
                    "expected either trust.instance or trust.tuf_url, not both",
                ));
            }
            (None | Some("production"), None) => Instance::Production,
            (Some("staging"), None) => Instance::Staging,
            (Some(other), None) => {
                return Err(invalid(
                    "trust.instance",
                    other,
                    "expected production or staging",
                ));
            }
            (None, Some(url)) => Instance::custom(&url)
                .map_err(|e| invalid("trust.tuf_url", &url, format!("expected {e}")))?,
        };
        match (&instance, &tuf_root) {
            (Instance::Custom { .. }, None) => {
                return Err(invalid(
                    "trust.tuf_root",
                    "",
                    "expected the custom repository's initial root.json (trust.tuf_url needs it)",
                ));
            }
            (Instance::Production | Instance::Staging, Some(p)) => {
                return Err(invalid(
                    "trust.tuf_root",
                    p.display(),
                    "expected trust.tuf_url with it (the embedded instances carry their own root)",
                ));
            }
            _ => {}
        }
        let max_age = duration(
            "trust.max_age",
            self.max_age.as_deref(),
            &compact_duration(DEFAULT_MAX_AGE),
        )?;
        if max_age < Duration::from_secs(3600) {
            return Err(invalid(
                "trust.max_age",
                compact_duration(max_age),
                "expected at least 1h",
            ));
        }
        Ok(TrustConfig {
            trusted_root,
            instance,
            tuf_root,
            policy: FreshnessPolicy {
                max_age,
                refuse_stale: self.refuse_stale.unwrap_or(false),
            },
        })
    }
}

impl TrustConfig {
    /// The section as written, for `config check`.
    pub fn to_raw(&self) -> RawTrust {
        let (instance, tuf_url) = match &self.instance {
            Instance::Custom { url } => (None, Some(url.clone())),
            other => (Some(other.kind().to_owned()), None),
        };
        RawTrust {
            trusted_root: self.trusted_root.as_ref().map(|p| p.display().to_string()),
            instance,
            tuf_url,
            tuf_root: self.tuf_root.as_ref().map(|p| p.display().to_string()),
            max_age: Some(compact_duration(self.policy.max_age)),
            refuse_stale: Some(self.policy.refuse_stale),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<TrustConfig, ConfigError> {
        let raw: RawTrust = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    #[test]
    fn defaults_are_production_and_thirty_days() {
        let c = load("").unwrap();
        assert_eq!(c, TrustConfig::default());
        assert_eq!(c.policy.max_age, Duration::from_secs(30 * 86_400));
        assert!(!c.policy.refuse_stale);
        assert_eq!(
            load("instance = \"staging\"").unwrap().instance,
            Instance::Staging
        );
    }

    #[test]
    fn a_custom_repository_and_its_round_trip_through_to_raw() {
        let root = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "tuf_url = \"https://tuf.example.com/repo/\"\ntuf_root = {:?}\nmax_age = \"36h\"\nrefuse_stale = true\n",
            root.path().display().to_string()
        );
        let c = load(&text).unwrap();
        assert_eq!(
            c.instance,
            Instance::Custom {
                url: "https://tuf.example.com/repo".into()
            }
        );
        assert_eq!(c.policy.max_age, Duration::from_secs(36 * 3600));
        let again = c.to_raw().validate().unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_their_key() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let f = file.path().display().to_string();
        for (text, key) in [
            ("instance = \"dev\"".to_owned(), "trust.instance"),
            ("max_age = \"30m\"".to_owned(), "trust.max_age"),
            ("max_age = \"soon\"".to_owned(), "trust.max_age"),
            (
                "trusted_root = \"/nonexistent/trusted_root.json\"".to_owned(),
                "trust.trusted_root",
            ),
            (
                "tuf_url = \"https://tuf.example.com\"".to_owned(),
                "trust.tuf_root",
            ),
            (format!("tuf_root = {f:?}"), "trust.tuf_root"),
            (
                format!("tuf_url = \"ftp://tuf.example.com\"\ntuf_root = {f:?}"),
                "trust.tuf_url",
            ),
            (
                format!(
                    "instance = \"staging\"\ntuf_url = \"https://x.example\"\ntuf_root = {f:?}"
                ),
                "trust.tuf_url",
            ),
        ] {
            let err = load(&text).expect_err(&text).to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
        assert!(
            load("max_ages = \"1d\"").is_err(),
            "unknown keys are refused"
        );
    }
}
