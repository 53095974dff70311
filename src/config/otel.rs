//! The `[otel]` section: OpenTelemetry traces over OTLP/HTTP (protobuf), off by default.
//!
//! ```toml
//! [otel]
//! endpoint = "http://otel-collector:4318"   # the OTLP/HTTP base URL; spans go to /v1/traces
//! service_name = "provd"                    # resource attribute service.name
//! ```
//!
//! Each node reports `service.instance.id` = its `node_id`, so a trace that crosses nodes
//! shows which node did what.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, mask_url};

/// The `[otel]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtel {
    /// See [`OtelConfig::endpoint`].
    pub endpoint: Option<String>,
    /// See [`OtelConfig::service_name`].
    pub service_name: Option<String>,
}

impl RawOtel {
    /// Whether nothing is set (the section is left out of `config check`).
    pub fn is_empty(&self) -> bool {
        *self == RawOtel::default()
    }

    /// Validates the section; every error names its key.
    pub fn validate(self) -> Result<OtelConfig, ConfigError> {
        let endpoint = match self.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => {
                let ok = reqwest::Url::parse(u)
                    .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host());
                if !ok {
                    return Err(invalid(
                        "otel.endpoint",
                        mask_url(u),
                        "expected the http:// or https:// base URL of an OTLP/HTTP receiver, \
                         such as http://127.0.0.1:4318",
                    ));
                }
                Some(u.trim_end_matches('/').to_owned())
            }
        };
        let service_name = match self.service_name.as_deref().map(str::trim) {
            None => "provd".to_owned(),
            Some(n) if !n.is_empty() && n.len() <= 255 => n.to_owned(),
            Some(n) => {
                return Err(invalid(
                    "otel.service_name",
                    n,
                    "expected 1 to 255 characters",
                ));
            }
        };
        Ok(OtelConfig {
            endpoint,
            service_name,
        })
    }
}

/// The validated `[otel]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    /// The OTLP/HTTP receiver's base URL (spans are POSTed to `<endpoint>/v1/traces`);
    /// `None`: no traces are exported.
    pub endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            endpoint: None,
            service_name: "provd".to_owned(),
        }
    }
}

impl OtelConfig {
    /// The section as written, for `config check` (the URL masked); empty when off.
    pub fn to_raw(&self) -> RawOtel {
        match &self.endpoint {
            None => RawOtel::default(),
            Some(e) => RawOtel {
                endpoint: Some(mask_url(e)),
                service_name: Some(self.service_name.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<OtelConfig, ConfigError> {
        let raw: RawOtel = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    #[test]
    fn off_by_default_and_bad_values_name_their_key() {
        assert_eq!(load("").unwrap(), OtelConfig::default());
        let c = load("endpoint = \"http://collector:4318/\"\nservice_name = \"provd-eu\"").unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(c.service_name, "provd-eu");
        for (text, key) in [
            ("endpoint = \"grpc://x:4317\"", "otel.endpoint"),
            ("endpoint = \"not a url\"", "otel.endpoint"),
            ("service_name = \"\"", "otel.service_name"),
        ] {
            let err = load(text).expect_err(text).to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
        assert!(
            load("protocol = \"grpc\"").is_err(),
            "unknown keys are refused"
        );
    }
}
