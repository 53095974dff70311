//! The `[alerts]` section: where divergence alerts are POSTed.
//!
//! ```toml
//! [alerts]
//! webhook_url = "https://alerts.example/provd"   # http:// or https://; none: no webhook
//! timeout = "5s"                                 # per attempt; failures retry with backoff
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, duration, invalid, mask_url};

/// The `[alerts]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// See [`AlertsConfig::webhook_url`].
    pub webhook_url: Option<String>,
    /// See [`AlertsConfig::timeout`].
    pub timeout: Option<String>,
}

/// The validated `[alerts]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// Every divergence is POSTed here as JSON, once; `None`: no webhook.
    pub webhook_url: Option<String>,
    /// Timeout of one delivery attempt.
    pub timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl RawAlerts {
    /// Validates the section; every error names its key.
    pub fn validate(self) -> Result<AlertsConfig, ConfigError> {
        let webhook_url = match self.webhook_url {
            None => None,
            Some(u) => {
                let ok = reqwest::Url::parse(&u)
                    .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host());
                if !ok {
                    return Err(invalid(
                        "alerts.webhook_url",
                        mask_url(&u),
                        "expected an http:// or https:// URL",
                    ));
                }
                Some(u)
            }
        };
        let timeout = duration("alerts.timeout", self.timeout.as_deref(), "5s")?;
        if timeout.is_zero() || timeout > Duration::from_secs(120) {
            return Err(invalid(
                "alerts.timeout",
                humantime::format_duration(timeout),
                "expected more than zero and at most 2m",
            ));
        }
        Ok(AlertsConfig {
            webhook_url,
            timeout,
        })
    }
}

impl AlertsConfig {
    /// The section as written, for `config check` (the URL masked).
    pub fn to_raw(&self) -> RawAlerts {
        RawAlerts {
            webhook_url: self.webhook_url.as_deref().map(mask_url),
            timeout: Some(humantime::format_duration(self.timeout).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<AlertsConfig, ConfigError> {
        let raw: RawAlerts = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    #[test]
    fn defaults_and_bad_values_name_their_key() {
        assert_eq!(load("").unwrap(), AlertsConfig::default());
        let c = load("webhook_url = \"https://a.example/hook\"\ntimeout = \"2s\"").unwrap();
        assert_eq!(c.webhook_url.as_deref(), Some("https://a.example/hook"));
        assert_eq!(c.timeout, Duration::from_secs(2));
        for (text, key) in [
            ("webhook_url = \"ftp://x\"", "alerts.webhook_url"),
            ("webhook_url = \"not a url\"", "alerts.webhook_url"),
            ("timeout = \"0s\"", "alerts.timeout"),
        ] {
            let err = load(text).expect_err(text).to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
        assert!(load("retries = 3").is_err(), "unknown keys are refused");
    }
}
