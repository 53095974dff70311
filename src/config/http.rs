//! The `[http]` section: how long the HTTP server waits for clients and how many it serves.
//!
//! ```toml
//! [http]
//! header_read_timeout = "10s"     # from connecting, or a request's first byte, to its last header
//! idle_timeout = "75s"            # a kept-alive connection's wait for its next request; 0s: no keep-alive
//! max_connections = 4096          # default: 4096, or half the open-file limit when that is lower
//! max_requests_in_flight = 1024   # more are answered 503 overloaded; /healthz, /readyz, /metrics exempt
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, duration, invalid};

/// Default time a client has to send a request's head.
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
/// Default time a kept-alive connection may wait for its next request: longer than the 60 s
/// idle timeout of common load balancers, so the balancer, not provd, closes an idle
/// connection and never sends a request on one provd is closing.
pub const DEFAULT_IDLE_TIMEOUT: &str = "75s";
/// Most open connections by default (lowered to half the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: u64 = 4096;
/// Most requests handled at once by default.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: u64 = 1024;
/// Largest value accepted for either cap.
const MAX_CAP: u64 = 1_000_000;
/// Longest timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `[http]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// See [`HttpConfig::header_read_timeout`]; a duration such as `10s`.
    pub header_read_timeout: Option<String>,
    /// See [`HttpConfig::idle_timeout`]; a duration such as `75s`.
    pub idle_timeout: Option<String>,
    /// See [`HttpConfig::max_connections`].
    pub max_connections: Option<u64>,
    /// See [`HttpConfig::max_requests_in_flight`].
    pub max_requests_in_flight: Option<u64>,
}

/// The validated `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Longest time from a new connection, or from the first byte of a later request on a
    /// kept-alive one, until the request's line and headers are all in; then the connection
    /// is closed.
    pub header_read_timeout: Duration,
    /// Longest time a kept-alive connection waits for the first byte of its next request;
    /// zero turns keep-alive off (one request per connection).
    pub idle_timeout: Duration,
    /// Most connections open at once. A connection beyond it makes room by closing the
    /// connection that has waited longest for a request; when every connection has a
    /// request in progress, the new one is answered 503 and closed.
    pub max_connections: usize,
    /// Most requests handled at once; beyond it a request is answered 503 `overloaded` with
    /// `Retry-After`. `/healthz`, `/readyz` and `/metrics` are never counted nor refused.
    pub max_requests_in_flight: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        RawHttp::default()
            .validate()
            .expect("the defaults are valid")
    }
}

/// The open-file limit (soft) of this process, when it can be read.
#[cfg(unix)]
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Elsewhere there is no limit to read.
#[cfg(not(unix))]
pub fn open_file_limit() -> Option<u64> {
    None
}

/// The default connection cap: [`DEFAULT_MAX_CONNECTIONS`], or half the open-file limit when
/// that is lower, so the database, Valkey/Redis and NATS connections and the files provd
/// opens always have descriptors left (at least 16).
pub fn default_max_connections() -> u64 {
    open_file_limit()
        .map_or(DEFAULT_MAX_CONNECTIONS, |n| {
            DEFAULT_MAX_CONNECTIONS.min(n / 2)
        })
        .max(16)
}

impl RawHttp {
    /// Validates the section and fills defaults; every error names its key.
    pub fn validate(self) -> Result<HttpConfig, ConfigError> {
        let header_read_timeout = duration(
            "http.header_read_timeout",
            self.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        )?;
        if header_read_timeout.is_zero() || header_read_timeout > MAX_TIMEOUT {
            return Err(invalid(
                "http.header_read_timeout",
                humantime::format_duration(header_read_timeout),
                "expected more than zero and at most 1h",
            ));
        }
        let idle_timeout = duration(
            "http.idle_timeout",
            self.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        )?;
        if idle_timeout > MAX_TIMEOUT {
            return Err(invalid(
                "http.idle_timeout",
                humantime::format_duration(idle_timeout),
                "expected at most 1h (0s turns keep-alive off)",
            ));
        }
        let max_connections = self.max_connections.unwrap_or_else(default_max_connections);
        if !(1..=MAX_CAP).contains(&max_connections) {
            return Err(invalid(
                "http.max_connections",
                max_connections,
                format!("expected a number of connections between 1 and {MAX_CAP}"),
            ));
        }
        let max_requests_in_flight = self
            .max_requests_in_flight
            .unwrap_or(DEFAULT_MAX_REQUESTS_IN_FLIGHT);
        if !(1..=MAX_CAP).contains(&max_requests_in_flight) {
            return Err(invalid(
                "http.max_requests_in_flight",
                max_requests_in_flight,
                format!("expected a number of requests between 1 and {MAX_CAP}"),
            ));
        }
        Ok(HttpConfig {
            header_read_timeout,
            idle_timeout,
            max_connections: max_connections as usize,
            max_requests_in_flight: max_requests_in_flight as usize,
        })
    }
}

impl HttpConfig {
    /// The section as written.
    pub fn to_raw(&self) -> RawHttp {
        RawHttp {
            header_read_timeout: Some(
                humantime::format_duration(self.header_read_timeout).to_string(),
            ),
            idle_timeout: Some(humantime::format_duration(self.idle_timeout).to_string()),
            max_connections: Some(self.max_connections as u64),
            max_requests_in_flight: Some(self.max_requests_in_flight as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_descriptors_for_everything_else() {
        let c = HttpConfig::default();
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.max_requests_in_flight, 1024);
        assert!(c.max_connections as u64 <= DEFAULT_MAX_CONNECTIONS);
        if let Some(limit) = open_file_limit() {
            assert!(
                c.max_connections as u64 <= (limit / 2).max(16),
                "{} connections under an open-file limit of {limit}",
                c.max_connections
            );
        }
        assert_eq!(c.to_raw().validate().expect("round trips"), c);
    }

    #[test]
    fn zero_idle_timeout_is_accepted_and_bad_values_name_their_key() {
        let c = RawHttp {
            idle_timeout: Some("0s".into()),
            ..RawHttp::default()
        }
        .validate()
        .expect("keep-alive off");
        assert!(c.idle_timeout.is_zero());
        for (raw, key) in [
            (
                RawHttp {
                    header_read_timeout: Some("0s".into()),
                    ..RawHttp::default()
                },
                "http.header_read_timeout",
            ),
            (
                RawHttp {
                    header_read_timeout: Some("soon".into()),
                    ..RawHttp::default()
                },
                "http.header_read_timeout",
            ),
            (
                RawHttp {
                    idle_timeout: Some("2h".into()),
                    ..RawHttp::default()
                },
                "http.idle_timeout",
            ),
            (
                RawHttp {
                    max_connections: Some(0),
                    ..RawHttp::default()
                },
                "http.max_connections",
            ),
            (
                RawHttp {
                    max_requests_in_flight: Some(0),
                    ..RawHttp::default()
                },
                "http.max_requests_in_flight",
            ),
        ] {
            let e = raw.validate().expect_err(key).to_string();
            assert!(e.contains(key), "{e} should name {key}");
        }
    }
}
