//! Configuration: one TOML file, overridden by `PROVD_*` environment variables, then flags.
//!
//! Everything is parsed into [`RawConfig`] (all optional, unknown keys refused), the layers
//! are merged, and [`RawConfig::validate`] turns the result into a [`Config`] or a
//! [`ConfigError`] that names the offending key and what it expects.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod alerts;
pub mod bundles;
pub mod http;
pub mod otel;
pub mod rekor;
pub mod tiles;
pub mod trust;

pub use rekor::{RawRekor, RekorConfig};
pub use tiles::{RawTiles, TilesConfig};

/// Errors of the configuration layer.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is present but wrong.
    #[error("invalid configuration: `{key}` = {value}: {expected}")]
    Invalid {
        /// The key, dotted (`provcache.flush_interval`) or as an environment variable.
        key: String,
        /// The offending value, secrets masked.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

fn invalid(key: &str, value: impl fmt::Display, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: format!("{:?}", value.to_string()),
        expected: expected.into(),
    }
}

/// A scope a token can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read entries, proofs, receipts and the ledger.
    Read,
    /// Write entries and evidence, publish events.
    Write,
    /// Submit attestations to a transparency log.
    Submit,
    /// Invalidate entries.
    Invalidate,
    /// Everything, including operator actions.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Write,
        Scope::Submit,
        Scope::Invalidate,
        Scope::Admin,
    ];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Submit => "submit",
            Scope::Invalidate => "invalidate",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One API bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it (for logs).
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it may do.
    pub scopes: Vec<String>,
}

/// A validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Who holds it.
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

impl Token {
    /// Whether the token grants `scope` (admin grants everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// The provenance cache's settings (the seed's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvcacheConfig {
    /// Evidence chunk size in bytes.
    pub chunk_size: usize,
    /// Most chunks one entry's evidence may have.
    pub max_chunks_per_entry: usize,
    /// Entry lifetime when the writer gives none.
    pub default_ttl: Duration,
    /// Whether writes reach PostgreSQL through the write-behind flusher.
    pub write_behind: bool,
    /// Longest time a write waits in the write-behind queue.
    pub flush_interval: Duration,
    /// Most writes the flusher upserts in one statement.
    pub flush_batch: usize,
    /// Most entries the in-process tier holds; 0 turns the tier off.
    pub memory_entries: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// PostgreSQL URL; `None`: the SQLite file in [`Config::data_dir`] (embedded mode).
    pub database_url: Option<String>,
    /// Redis / Valkey URL; `None`: the in-process tier only.
    pub redis_url: Option<String>,
    /// NATS URL; `None`: the in-process bus, persisted in the SQLite file.
    pub nats_url: Option<String>,
    /// Where embedded mode keeps its SQLite file (`provd.db`).
    pub data_dir: PathBuf,
    /// Prefix for NATS subjects and stream names (empty: the documented names).
    pub nats_prefix: String,
    /// Largest size of each JetStream stream in bytes; JetStream reserves it up front, so
    /// small deployments and tests lower it. `None`: each stream's default (1 GiB).
    pub nats_stream_max_bytes: Option<i64>,
    /// Prefix for Redis keys.
    pub redis_prefix: String,
    /// This node's name, in events and replay checkpoints.
    pub node_id: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Longest time shutdown waits for in-flight work.
    pub shutdown_timeout: Duration,
    /// The HTTP server's timeouts and caps (`[http]`).
    pub http: http::HttpConfig,
    /// Provenance-cache settings.
    pub provcache: ProvcacheConfig,
    /// API tokens.
    pub tokens: Vec<Token>,
    /// Transparency-log backends (`[rekor]`); empty when the section is absent.
    pub rekor: RekorConfig,
    /// Where divergence alerts go (`[alerts]`).
    pub alerts: alerts::AlertsConfig,
    /// OpenTelemetry trace export (`[otel]`); off unless an endpoint is set.
    pub otel: otel::OtelConfig,
    /// Air-gap bundle limits and trusted keys (`[bundles]`).
    pub bundles: bundles::BundlesConfig,
    /// The tile cache and proxy (`[tiles]`); `None` when no cache directory is set.
    pub tiles: Option<TilesConfig>,
    /// Where Sigstore trust roots come from and how old they may be (`[trust]`).
    pub trust: trust::TrustConfig,
}

/// The provcache table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvcache {
    /// See [`ProvcacheConfig::chunk_size`].
    pub chunk_size: Option<u64>,
    /// See [`ProvcacheConfig::max_chunks_per_entry`].
    pub max_chunks_per_entry: Option<u64>,
    /// See [`ProvcacheConfig::default_ttl`]; a duration such as `24h`.
    pub default_ttl: Option<String>,
    /// See [`ProvcacheConfig::write_behind`].
    pub write_behind: Option<bool>,
    /// See [`ProvcacheConfig::flush_interval`]; a duration such as `5s`.
    pub flush_interval: Option<String>,
    /// See [`ProvcacheConfig::flush_batch`].
    pub flush_batch: Option<u64>,
    /// See [`ProvcacheConfig::memory_entries`].
    pub memory_entries: Option<u64>,
}

/// The auth table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `[[auth.tokens]]`.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
}

/// The configuration as written, before validation. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// See [`Config::listen`].
    pub listen: Option<String>,
    /// See [`Config::database_url`].
    pub database_url: Option<String>,
    /// See [`Config::redis_url`].
    pub redis_url: Option<String>,
    /// See [`Config::nats_url`].
    pub nats_url: Option<String>,
    /// See [`Config::data_dir`].
    pub data_dir: Option<String>,
    /// See [`Config::nats_prefix`].
    pub nats_prefix: Option<String>,
    /// See [`Config::nats_stream_max_bytes`].
    pub nats_stream_max_bytes: Option<i64>,
    /// See [`Config::redis_prefix`].
    pub redis_prefix: Option<String>,
    /// See [`Config::node_id`].
    pub node_id: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// See [`Config::shutdown_timeout`].
    pub shutdown_timeout: Option<String>,
    /// `[http]`.
    #[serde(default)]
    pub http: http::RawHttp,
    /// `[provcache]`.
    #[serde(default)]
    pub provcache: RawProvcache,
    /// `[auth]`.
    #[serde(default)]
    pub auth: RawAuth,
    /// `[rekor]`.
    #[serde(default)]
    pub rekor: RawRekor,
    /// `[alerts]`.
    #[serde(default)]
    pub alerts: alerts::RawAlerts,
    /// `[otel]`.
    #[serde(default, skip_serializing_if = "otel::RawOtel::is_empty")]
    pub otel: otel::RawOtel,
    /// `[bundles]`.
    #[serde(default)]
    pub bundles: bundles::RawBundles,
    /// `[tiles]`.
    #[serde(default, skip_serializing_if = "RawTiles::is_empty")]
    pub tiles: RawTiles,
    /// `[trust]`.
    #[serde(default)]
    pub trust: trust::RawTrust,
    /// Set by `PROVD_ADMIN_TOKEN`: one extra token with every scope.
    #[serde(skip)]
    pub admin_token: Option<String>,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory of embedded mode.
pub const DEFAULT_DATA_DIR: &str = "./provd-data";

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Applies `PROVD_*` variables from `vars` (normally `std::env::vars()`).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("PROVD_") else {
                continue;
            };
            let v = Some(value.clone());
            match key {
                "LISTEN" => self.listen = v,
                "DATABASE_URL" => self.database_url = v,
                "REDIS_URL" => self.redis_url = v,
                "NATS_URL" => self.nats_url = v,
                "DATA_DIR" => self.data_dir = v,
                "NATS_PREFIX" => self.nats_prefix = v,
                "NATS_STREAM_MAX_BYTES" => {
                    let n = parse_env_u64(&name, &value)?;
                    self.nats_stream_max_bytes = Some(i64::try_from(n).unwrap_or(i64::MAX));
                }
                "REDIS_PREFIX" => self.redis_prefix = v,
                "NODE_ID" => self.node_id = v,
                "LOG_FORMAT" => self.log_format = v,
                "SHUTDOWN_TIMEOUT" => self.shutdown_timeout = v,
                "HTTP_HEADER_READ_TIMEOUT" => self.http.header_read_timeout = v,
                "HTTP_IDLE_TIMEOUT" => self.http.idle_timeout = v,
                "HTTP_MAX_CONNECTIONS" => {
                    self.http.max_connections = Some(parse_env_u64(&name, &value)?);
                }
                "HTTP_MAX_REQUESTS_IN_FLIGHT" => {
                    self.http.max_requests_in_flight = Some(parse_env_u64(&name, &value)?);
                }
                "ADMIN_TOKEN" => self.admin_token = v,
                "REKOR_DEFAULT_BACKEND" => self.rekor.default_backend = v,
                "TILES_CACHE_DIR" => self.tiles.cache_dir = v,
                "OTEL_ENDPOINT" => self.otel.endpoint = v,
                "OTEL_SERVICE_NAME" => self.otel.service_name = v,
                "TRUST_TRUSTED_ROOT" => self.trust.trusted_root = v,
                "TRUST_INSTANCE" => self.trust.instance = v,
                "TRUST_TUF_URL" => self.trust.tuf_url = v,
                "TRUST_TUF_ROOT" => self.trust.tuf_root = v,
                "TRUST_MAX_AGE" => self.trust.max_age = v,
                "TRUST_REFUSE_STALE" => {
                    self.trust.refuse_stale = Some(parse_env_bool(&name, &value)?)
                }
                "PROVCACHE_DEFAULT_TTL" => self.provcache.default_ttl = v,
                "PROVCACHE_FLUSH_INTERVAL" => self.provcache.flush_interval = v,
                "PROVCACHE_FLUSH_BATCH" => {
                    self.provcache.flush_batch = Some(parse_env_u64(&name, &value)?);
                }
                "PROVCACHE_MEMORY_ENTRIES" => {
                    self.provcache.memory_entries = Some(parse_env_u64(&name, &value)?);
                }
                "PROVCACHE_CHUNK_SIZE" => {
                    self.provcache.chunk_size = Some(parse_env_u64(&name, &value)?);
                }
                "PROVCACHE_MAX_CHUNKS_PER_ENTRY" => {
                    self.provcache.max_chunks_per_entry = Some(parse_env_u64(&name, &value)?);
                }
                "BUNDLES_MAX_CONCURRENT_IMPORTS" => {
                    let n = parse_env_u64(&name, &value)?;
                    self.bundles.max_concurrent_imports =
                        Some(u32::try_from(n).unwrap_or(u32::MAX));
                }
                "PROVCACHE_WRITE_BEHIND" => {
                    self.provcache.write_behind = Some(parse_env_bool(&name, &value)?);
                }
                // Variables read elsewhere (tests, the CLI) or by other tools.
                _ => {}
            }
        }
        Ok(())
    }

    /// Validates and fills defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen_s = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "listen",
                &listen_s,
                "expected an address and port such as 127.0.0.1:8080",
            )
        })?;
        let database_url = url_with_scheme(
            "database_url",
            self.database_url,
            &["postgres", "postgresql"],
        )?;
        let redis_url = url_with_scheme(
            "redis_url",
            self.redis_url,
            &["redis", "rediss", "valkey", "valkeys"],
        )?;
        let nats_url = url_with_scheme("nats_url", self.nats_url, &["nats", "tls"])?;
        let data_dir = match self.data_dir.as_deref().map(str::trim) {
            None | Some("") => PathBuf::from(DEFAULT_DATA_DIR),
            Some(d) => PathBuf::from(d),
        };
        if data_dir.is_file() {
            return Err(invalid(
                "data_dir",
                data_dir.display(),
                "expected a directory, found a file",
            ));
        }
        let nats_prefix = self.nats_prefix.unwrap_or_default();
        if !nats_prefix.split('.').filter(|t| !t.is_empty()).all(|t| {
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) || nats_prefix.starts_with('.')
        {
            return Err(invalid(
                "nats_prefix",
                &nats_prefix,
                "expected dot-separated tokens of letters, digits, '_' or '-'",
            ));
        }
        let redis_prefix = self.redis_prefix.unwrap_or_else(|| "provd:".to_owned());
        let node_id = match self.node_id {
            Some(n) => n,
            None => hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "provd".to_owned()),
        };
        if node_id.is_empty()
            || node_id.len() > 128
            || !node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(
                "node_id",
                &node_id,
                "expected 1 to 128 letters, digits, '.', '_' or '-'",
            ));
        }
        // Unset: people at a terminal read text, log collectors read JSON.
        let log_format = match self.log_format.as_deref() {
            None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => LogFormat::Text,
            None => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("log_format", other, "expected text or json")),
        };
        let shutdown_timeout =
            duration("shutdown_timeout", self.shutdown_timeout.as_deref(), "30s")?;

        let p = self.provcache;
        let chunk_size = p.chunk_size.unwrap_or(65_536);
        if !(1024..=16 * 1024 * 1024).contains(&chunk_size) {
            return Err(invalid(
                "provcache.chunk_size",
                chunk_size,
                "expected a size in bytes between 1024 and 16777216",
            ));
        }
        let max_chunks = p.max_chunks_per_entry.unwrap_or(1000);
        if !(1..=1_000_000).contains(&max_chunks) {
            return Err(invalid(
                "provcache.max_chunks_per_entry",
                max_chunks,
                "expected a number between 1 and 1000000",
            ));
        }
        let default_ttl = duration("provcache.default_ttl", p.default_ttl.as_deref(), "24h")?;
        let flush_interval = duration(
            "provcache.flush_interval",
            p.flush_interval.as_deref(),
            "5s",
        )?;
        if default_ttl.is_zero() {
            return Err(invalid(
                "provcache.default_ttl",
                "0s",
                "expected more than zero",
            ));
        }
        if flush_interval.is_zero() || flush_interval > Duration::from_secs(3600) {
            return Err(invalid(
                "provcache.flush_interval",
                humantime::format_duration(flush_interval),
                "expected more than zero and at most 1h",
            ));
        }
        let flush_batch = p.flush_batch.unwrap_or(5000);
        if !(1..=100_000).contains(&flush_batch) {
            return Err(invalid(
                "provcache.flush_batch",
                flush_batch,
                "expected a number of entries between 1 and 100000",
            ));
        }
        let memory_entries = p.memory_entries.unwrap_or(100_000);
        if memory_entries > 100_000_000 {
            return Err(invalid(
                "provcache.memory_entries",
                memory_entries,
                "expected a number of entries up to 100000000 (0 turns the tier off)",
            ));
        }

        let mut tokens = Vec::new();
        for (i, t) in self.auth.tokens.into_iter().enumerate() {
            let key = format!("auth.tokens[{i}]");
            if t.name.trim().is_empty() {
                return Err(invalid(&format!("{key}.name"), "", "expected a name"));
            }
            if t.token.len() < 16 {
                return Err(invalid(
                    &format!("{key}.token"),
                    "****",
                    "expected a secret of at least 16 characters",
                ));
            }
            let mut scopes = BTreeSet::new();
            for s in &t.scopes {
                scopes.insert(Scope::parse(s).ok_or_else(|| {
                    invalid(
                        &format!("{key}.scopes"),
                        s,
                        "expected read, write, submit, invalidate or admin",
                    )
                })?);
            }
            if scopes.is_empty() {
                return Err(invalid(
                    &format!("{key}.scopes"),
                    "[]",
                    "expected at least one scope",
                ));
            }
            tokens.push(Token {
                name: t.name,
                token: t.token,
                scopes,
            });
        }
        if let Some(admin) = self.admin_token {
            if admin.len() < 16 {
                return Err(invalid(
                    "PROVD_ADMIN_TOKEN",
                    "****",
                    "expected a secret of at least 16 characters",
                ));
            }
            tokens.push(Token {
                name: "admin (PROVD_ADMIN_TOKEN)".to_owned(),
                token: admin,
                scopes: Scope::ALL.into_iter().collect(),
            });
        }
        let mut seen = BTreeSet::new();
        for t in &tokens {
            if !seen.insert(t.token.as_str()) {
                return Err(invalid(
                    "auth.tokens",
                    "****",
                    format!(
                        "token of {:?} is used twice; every token must be unique",
                        t.name
                    ),
                ));
            }
        }

        let http = self.http.validate()?;
        let rekor = self.rekor.validate()?;
        let alerts = self.alerts.validate()?;
        let otel = self.otel.validate()?;
        let bundles = self.bundles.validate()?;
        let tiles = self.tiles.validate(&rekor)?;
        let trust = self.trust.validate()?;
        let nats_stream_max_bytes = match self.nats_stream_max_bytes {
            Some(n) if n < 1024 * 1024 => {
                return Err(invalid(
                    "nats_stream_max_bytes",
                    n,
                    "expected at least 1048576 (1 MiB)",
                ));
            }
            other => other,
        };

        Ok(Config {
            listen,
            database_url,
            redis_url,
            nats_url,
            data_dir,
            nats_prefix,
            nats_stream_max_bytes,
            redis_prefix,
            node_id,
            log_format,
            shutdown_timeout,
            http,
            provcache: ProvcacheConfig {
                chunk_size: chunk_size as usize,
                max_chunks_per_entry: max_chunks as usize,
                default_ttl,
                write_behind: p.write_behind.unwrap_or(true),
                flush_interval,
                flush_batch: flush_batch as usize,
                memory_entries,
            },
            tokens,
            rekor,
            alerts,
            otel,
            bundles,
            tiles,
            trust,
        })
    }
}

fn parse_env_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, value, "expected true or false")),
    }
}

fn parse_env_u64(name: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "expected a whole number"))
}

fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    humantime::parse_duration(v.trim())
        .map_err(|_| invalid(key, v, "expected a duration such as 500ms, 5s, 10m or 24h"))
}

/// A service URL with one of `schemes`; absent or empty is `None` (the embedded part).
fn url_with_scheme(
    key: &str,
    value: Option<String>,
    schemes: &[&str],
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let ok = v
        .split_once("://")
        .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty());
    if ok {
        Ok(Some(v))
    } else {
        Err(invalid(
            key,
            mask_url(&v),
            format!(
                "expected a URL starting with {}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ))
    }
}

/// `url` with any password replaced by `****`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:****@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl Config {
    /// Loads the file (if any), then the environment, validated.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: impl FnOnce(&mut RawConfig),
    ) -> Result<Config, ConfigError> {
        let mut raw = match path {
            Some(p) => RawConfig::from_file(p)?,
            None => RawConfig::default(),
        };
        raw.apply_env(env)?;
        overrides(&mut raw);
        raw.validate()
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let raw = RawConfig {
            listen: Some(self.listen.to_string()),
            database_url: self.database_url.as_deref().map(mask_url),
            redis_url: self.redis_url.as_deref().map(mask_url),
            nats_url: self.nats_url.as_deref().map(mask_url),
            data_dir: Some(self.data_dir.display().to_string()),
            nats_prefix: Some(self.nats_prefix.clone()),
            nats_stream_max_bytes: self.nats_stream_max_bytes,
            redis_prefix: Some(self.redis_prefix.clone()),
            node_id: Some(self.node_id.clone()),
            log_format: Some(
                match self.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .to_owned(),
            ),
            shutdown_timeout: Some(humantime::format_duration(self.shutdown_timeout).to_string()),
            http: self.http.to_raw(),
            provcache: RawProvcache {
                chunk_size: Some(self.provcache.chunk_size as u64),
                max_chunks_per_entry: Some(self.provcache.max_chunks_per_entry as u64),
                default_ttl: Some(
                    humantime::format_duration(self.provcache.default_ttl).to_string(),
                ),
                write_behind: Some(self.provcache.write_behind),
                flush_interval: Some(
                    humantime::format_duration(self.provcache.flush_interval).to_string(),
                ),
                flush_batch: Some(self.provcache.flush_batch as u64),
                memory_entries: Some(self.provcache.memory_entries),
            },
            auth: RawAuth {
                tokens: self
                    .tokens
                    .iter()
                    .map(|t| ApiToken {
                        name: t.name.clone(),
                        token: "****".to_owned(),
                        scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                    })
                    .collect(),
            },
            rekor: self.rekor.to_raw(),
            alerts: self.alerts.to_raw(),
            otel: self.otel.to_raw(),
            bundles: self.bundles.to_raw(),
            tiles: self
                .tiles
                .as_ref()
                .map(TilesConfig::to_raw)
                .unwrap_or_default(),
            trust: self.trust.to_raw(),
            admin_token: None,
        };
        toml::to_string_pretty(&raw).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(toml_text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::from_toml(toml_text).map_err(|message| ConfigError::Parse {
            path: "test.toml".into(),
            message,
        })?;
        raw.apply_env(env(vars))?;
        raw.validate()
    }

    #[test]
    fn defaults_are_the_seeds() {
        let c = load("", &[("PROVD_NODE_ID", "n1")]).expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.provcache.chunk_size, 65_536);
        assert_eq!(c.provcache.max_chunks_per_entry, 1000);
        assert_eq!(c.provcache.default_ttl, Duration::from_secs(86_400));
        assert!(c.provcache.write_behind);
        assert_eq!(c.provcache.flush_interval, Duration::from_secs(5));
        assert_eq!(c.provcache.flush_batch, 5000);
        assert_eq!(c.provcache.memory_entries, 100_000);
        assert_eq!(c.node_id, "n1");
        assert!(c.tokens.is_empty());
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "listen = \"127.0.0.1:9000\"\n[provcache]\nflush_interval = \"2s\"\n",
            &[
                ("PROVD_LISTEN", "0.0.0.0:7000"),
                ("PROVD_ADMIN_TOKEN", "0123456789abcdef0123"),
                ("PROVD_TRUST_INSTANCE", "staging"),
                ("PROVD_TRUST_MAX_AGE", "2d"),
                ("PROVD_TRUST_REFUSE_STALE", "yes"),
                ("PROVD_HTTP_HEADER_READ_TIMEOUT", "3s"),
                ("PROVD_HTTP_IDLE_TIMEOUT", "0s"),
                ("PROVD_HTTP_MAX_CONNECTIONS", "100"),
                ("PROVD_HTTP_MAX_REQUESTS_IN_FLIGHT", "10"),
            ],
        )
        .expect("valid");
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(3));
        assert!(c.http.idle_timeout.is_zero());
        assert_eq!(c.http.max_connections, 100);
        assert_eq!(c.http.max_requests_in_flight, 10);
        assert_eq!(c.trust.instance, crate::trust::Instance::Staging);
        assert_eq!(c.trust.policy.max_age, Duration::from_secs(2 * 86_400));
        assert!(c.trust.policy.refuse_stale);
        assert_eq!(c.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.provcache.flush_interval, Duration::from_secs(2));
        assert!(c.tokens[0].allows(Scope::Invalidate));
    }

    #[test]
    fn bad_values_name_their_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("listen = \"nope\"", &[], "`listen`"),
            (
                "[provcache]\nflush_interval = \"5x\"",
                &[],
                "`provcache.flush_interval`",
            ),
            ("[provcache]\nchunk_size = 1", &[], "`provcache.chunk_size`"),
            (
                "",
                &[("PROVD_PROVCACHE_CHUNK_SIZE", "big")],
                "`PROVD_PROVCACHE_CHUNK_SIZE`",
            ),
            ("database_url = \"mysql://x\"", &[], "`database_url`"),
            (
                "[[auth.tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdef\"\nscopes = [\"root\"]",
                &[],
                "`auth.tokens[0].scopes`",
            ),
            ("", &[("PROVD_NODE_ID", "has space")], "`node_id`"),
            (
                "",
                &[("PROVD_TRUST_REFUSE_STALE", "maybe")],
                "`PROVD_TRUST_REFUSE_STALE`",
            ),
            ("[trust]\nmax_age = \"1m\"", &[], "`trust.max_age`"),
            ("[http]\nidle_timeout = \"2h\"", &[], "`http.idle_timeout`"),
            (
                "",
                &[("PROVD_HTTP_MAX_CONNECTIONS", "many")],
                "`PROVD_HTTP_MAX_CONNECTIONS`",
            ),
        ];
        for (text, vars, key) in cases {
            let err = load(text, vars).expect_err(text).to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
        let err = load("lisen = \"x\"", &[])
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = load("[provcache]\nchunk_size = \"big\"", &[])
            .expect_err("mistyped")
            .to_string();
        assert!(err.contains("chunk_size"), "{err}");
    }

    #[test]
    fn masked_output_hides_secrets() {
        let c = load(
            "database_url = \"postgres://u:secretpw@db/provd\"\n[[auth.tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdefXYZ\"\nscopes = [\"read\"]",
            &[("PROVD_NODE_ID", "n")],
        )
        .expect("valid");
        let out = c.to_masked_toml();
        assert!(!out.contains("secretpw"), "{out}");
        assert!(!out.contains("0123456789abcdefXYZ"), "{out}");
        assert!(out.contains("postgres://u:****@db/provd"), "{out}");
        // What config check prints is itself a valid config (with masked secrets).
        RawConfig::from_toml(&out).expect("round trips");
    }
}
