//! The `[rekor]` section: transparency-log backends by name.
//!
//! ```toml
//! [rekor]
//! default_backend = "sigstore"
//!
//! [rekor.backends.sigstore]
//! kind = "public"                     # public (https only) | private | stub
//! api = "v1"                          # v1 | v2
//! url = "https://rekor.sigstore.dev"
//! keys = ["rekor.pub.pem"]            # PEM text, a C2SP vkey, or a file holding either
//! # trusted_root = "trusted_root.json" # or/and: the tlogs of a Sigstore trusted root
//! ```
//!
//! Trusted keys are parsed here, at load, so a bad key is a configuration error naming its
//! key, never a failure on the first request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actors::domain::keys::PublicKey;
use actors::domain::note::Verifier;
use actors::domain::sigstore::TrustedRoot;
use serde::{Deserialize, Serialize};

use actors::submitter::SubmitterConfig;

use super::{ConfigError, duration, invalid};

/// The `[rekor]` table as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRekor {
    /// See [`RekorConfig::default_backend`].
    pub default_backend: Option<String>,
    /// `[rekor.backends.<name>]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, RawRekorBackend>,
    /// `[rekor.queue]`: the submission queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<RawRekorQueue>,
}

/// `[rekor.queue]` as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRekorQueue {
    /// Most submissions held at once, pulled and not yet settled (default 32).
    pub batch_size: Option<usize>,
    /// Most calls to the logs at once (default 8).
    pub concurrency: Option<usize>,
    /// Failed attempts (each after the client's own retries) before a submission is
    /// dead-lettered (default 8).
    pub max_attempts: Option<u32>,
    /// How long one attempt may hold its queue message before redelivery (default 5m).
    pub ack_wait: Option<String>,
}

/// One `[rekor.backends.<name>]` table as written in TOML. Durations are strings such as
/// `500ms` or `30s`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRekorBackend {
    /// `public`, `private` or `stub`.
    pub kind: Option<String>,
    /// `v1` or `v2` (default `v1`).
    pub api: Option<String>,
    /// The log's base URL (the shard URL for Rekor v2).
    pub url: Option<String>,
    /// Trusted log keys: PEM text, a C2SP verifier key (`name+hint+base64`), or the path of
    /// a file holding either.
    pub keys: Option<Vec<String>>,
    /// A Sigstore `trusted_root.json`; its tlogs whose host is the origin's are trusted.
    pub trusted_root: Option<String>,
    /// The expected checkpoint origin (Rekor v1: the host; its origins are `<host> - <tree>`).
    pub origin: Option<String>,
    /// Rekor v1 entry kind for submissions: `dsse` (default) or `hashedrekord`.
    pub entry_kind: Option<String>,
    /// TCP/TLS connect timeout (default 5s).
    pub connect_timeout: Option<String>,
    /// Timeout of a read request (default 30s).
    pub read_timeout: Option<String>,
    /// Timeout of a submission (default 30s for v1, 60s for v2, which must be at least 30s).
    pub write_timeout: Option<String>,
    /// Attempts per call inside the resilient wrapper, including the first (default 3).
    pub max_attempts: Option<u32>,
    /// First retry delay before jitter (default 250ms).
    pub initial_backoff: Option<String>,
    /// Longest retry delay before jitter (default 5s).
    pub max_backoff: Option<String>,
    /// Longest total time one call may spend retrying (default 30s).
    pub max_elapsed: Option<String>,
    /// Consecutive failed calls that open the circuit breaker (default 5).
    pub breaker_threshold: Option<u32>,
    /// How long an open breaker waits before letting one probe through (default 30s).
    pub breaker_cool_down: Option<String>,
    /// How often the log-sync actor polls the checkpoint (default 10s, at least 100ms).
    pub sync_interval: Option<String>,
    /// Extra HTTP headers sent with every request to this log (e.g. authentication to a
    /// private log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// What a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A public log (e.g. rekor.sigstore.dev): HTTPS only.
    Public,
    /// A private or local log (HTTP allowed).
    Private,
    /// The deterministic in-memory log, for tests and demos.
    Stub,
}

impl BackendKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Public => "public",
            BackendKind::Private => "private",
            BackendKind::Stub => "stub",
        }
    }
}

/// Which Rekor API a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// Rekor v1 REST.
    V1,
    /// Rekor v2 (rekor-tiles): write API plus C2SP tiles.
    V2,
}

impl ApiVersion {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V2 => "v2",
        }
    }
}

/// The Rekor v1 entry kind provd submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1EntryKind {
    /// `dsse` 0.0.1: the envelope and its verifiers.
    Dsse,
    /// `hashedrekord` 0.0.1 over SHA-256 of the envelope's PAE.
    HashedRekord,
}

impl V1EntryKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            V1EntryKind::Dsse => "dsse",
            V1EntryKind::HashedRekord => "hashedrekord",
        }
    }
}

/// One trusted log key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedLogKey {
    /// The checkpoint signature name (the host for Rekor v1, the origin for v2).
    pub name: String,
    /// The public key.
    pub key: PublicKey,
    /// The log ID receipts carry: SHA-256 of the SPKI (v1, ECDSA), or the note key ID
    /// (v2 Ed25519), or as listed in a trusted root.
    pub log_id: Vec<u8>,
}

/// Retry settings of the resilient wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    /// First delay before jitter.
    pub initial_backoff: Duration,
    /// Largest delay before jitter.
    pub max_backoff: Duration,
    /// Longest total time one call spends retrying.
    pub max_elapsed: Duration,
}

/// Circuit-breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open it.
    pub threshold: u32,
    /// Time before an open breaker lets one probe through.
    pub cool_down: Duration,
}

/// One validated backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekorBackendConfig {
    /// The backend's name.
    pub name: String,
    /// What it is.
    pub kind: BackendKind,
    /// Which API it speaks (ignored by the stub).
    pub api: ApiVersion,
    /// Base URL without a trailing slash (empty for the stub).
    pub url: String,
    /// The expected checkpoint origin (Rekor v1: the host part).
    pub origin: String,
    /// The trusted keys (empty for the stub, which has its own).
    pub keys: Vec<TrustedLogKey>,
    /// The `keys` entries as written, for `config check`.
    pub key_sources: Vec<String>,
    /// The trusted root file, if one was given.
    pub trusted_root: Option<PathBuf>,
    /// Rekor v1 entry kind for submissions.
    pub entry_kind: V1EntryKind,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
    /// Submission timeout.
    pub write_timeout: Duration,
    /// Retry settings.
    pub retry: RetryConfig,
    /// Circuit-breaker settings.
    pub breaker: BreakerConfig,
    /// Checkpoint polling interval of the log-sync actor.
    pub sync_interval: Duration,
    /// Extra HTTP headers sent with every request.
    pub headers: BTreeMap<String, String>,
}

/// The validated `[rekor]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekorConfig {
    /// The backend used when a request names none; `None` only when there are no backends.
    pub default_backend: Option<String>,
    /// Every backend by name.
    pub backends: BTreeMap<String, RekorBackendConfig>,
    /// The submission queue's tuning.
    pub queue: SubmitterConfig,
}

/// The stub's origin when none is configured.
pub const STUB_ORIGIN: &str = "stub.provd.invalid";

fn backend_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl RawRekor {
    /// Validates the section; every error names its key.
    pub fn validate(self) -> Result<RekorConfig, ConfigError> {
        let mut backends = BTreeMap::new();
        for (name, raw) in self.backends {
            let prefix = format!("rekor.backends.{name}");
            if !backend_name_ok(&name) {
                return Err(invalid(
                    &prefix,
                    &name,
                    "expected a backend name of 1 to 64 lowercase letters, digits, '-' or '_'",
                ));
            }
            let backend = raw.validate(&name, &prefix)?;
            backends.insert(name, backend);
        }
        let default_backend = match self.default_backend {
            Some(d) if backends.contains_key(&d) => Some(d),
            Some(d) => {
                return Err(invalid(
                    "rekor.default_backend",
                    &d,
                    format!(
                        "expected one of the configured backends ({})",
                        if backends.is_empty() {
                            "none configured".to_owned()
                        } else {
                            backends.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ));
            }
            None if backends.len() == 1 => backends.keys().next().cloned(),
            None if backends.is_empty() => None,
            None => {
                return Err(invalid(
                    "rekor.default_backend",
                    "",
                    "expected the name of the default backend when several are configured",
                ));
            }
        };
        let q = self.queue.unwrap_or_default();
        let defaults = SubmitterConfig::default();
        let positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(invalid(key, 0, "expected a positive number")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let queue = SubmitterConfig {
            batch_size: positive("rekor.queue.batch_size", q.batch_size, defaults.batch_size)?,
            concurrency: positive(
                "rekor.queue.concurrency",
                q.concurrency,
                defaults.concurrency,
            )?,
            max_attempts: u32::try_from(positive(
                "rekor.queue.max_attempts",
                q.max_attempts.map(|n| n as usize),
                defaults.max_attempts as usize,
            )?)
            .unwrap_or(u32::MAX),
            ack_wait: duration("rekor.queue.ack_wait", q.ack_wait.as_deref(), "5m")?,
        };
        if queue.ack_wait < Duration::from_secs(10) {
            return Err(invalid(
                "rekor.queue.ack_wait",
                humantime::format_duration(queue.ack_wait),
                "expected at least 10s: an attempt holds its message while the log answers",
            ));
        }
        Ok(RekorConfig {
            default_backend,
            backends,
            queue,
        })
    }
}

impl RawRekorBackend {
    fn validate(self, name: &str, prefix: &str) -> Result<RekorBackendConfig, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let kind = match self.kind.as_deref() {
            Some("public") => BackendKind::Public,
            Some("private") => BackendKind::Private,
            Some("stub") => BackendKind::Stub,
            Some(other) => {
                return Err(invalid(
                    &key("kind"),
                    other,
                    "expected public, private or stub",
                ));
            }
            None => {
                return Err(invalid(
                    &key("kind"),
                    "",
                    "expected public, private or stub",
                ));
            }
        };
        let api = match self.api.as_deref().unwrap_or("v1") {
            "v1" => ApiVersion::V1,
            "v2" => ApiVersion::V2,
            other => return Err(invalid(&key("api"), other, "expected v1 or v2")),
        };
        let entry_kind = match self.entry_kind.as_deref().unwrap_or("dsse") {
            "dsse" => V1EntryKind::Dsse,
            "hashedrekord" => V1EntryKind::HashedRekord,
            other => {
                return Err(invalid(
                    &key("entry_kind"),
                    other,
                    "expected dsse or hashedrekord",
                ));
            }
        };
        if entry_kind != V1EntryKind::Dsse && api == ApiVersion::V2 {
            return Err(invalid(
                &key("entry_kind"),
                entry_kind.as_str(),
                "is for Rekor v1 only; Rekor v2 always takes hashedrekord",
            ));
        }
        let connect_timeout = duration(
            &key("connect_timeout"),
            self.connect_timeout.as_deref(),
            "5s",
        )?;
        let read_timeout = duration(&key("read_timeout"), self.read_timeout.as_deref(), "30s")?;
        let write_default = if api == ApiVersion::V2 { "60s" } else { "30s" };
        let write_timeout = duration(
            &key("write_timeout"),
            self.write_timeout.as_deref(),
            write_default,
        )?;
        for (k, d) in [
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(invalid(
                    &key(k),
                    humantime::format_duration(d),
                    "expected more than zero and at most 10m",
                ));
            }
        }
        if api == ApiVersion::V2 && kind != BackendKind::Stub && write_timeout.as_secs() < 30 {
            return Err(invalid(
                &key("write_timeout"),
                humantime::format_duration(write_timeout),
                "expected at least 30s: Rekor v2 answers a write only after its next checkpoint",
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=10).contains(&max_attempts) {
            return Err(invalid(
                &key("max_attempts"),
                max_attempts,
                "expected 1 to 10 attempts",
            ));
        }
        let retry = RetryConfig {
            max_attempts,
            initial_backoff: duration(
                &key("initial_backoff"),
                self.initial_backoff.as_deref(),
                "250ms",
            )?,
            max_backoff: duration(&key("max_backoff"), self.max_backoff.as_deref(), "5s")?,
            max_elapsed: duration(&key("max_elapsed"), self.max_elapsed.as_deref(), "30s")?,
        };
        if retry.initial_backoff.is_zero() || retry.initial_backoff > retry.max_backoff {
            return Err(invalid(
                &key("initial_backoff"),
                humantime::format_duration(retry.initial_backoff),
                "expected more than zero and at most max_backoff",
            ));
        }
        if retry.max_elapsed > Duration::from_secs(600) {
            return Err(invalid(
                &key("max_elapsed"),
                humantime::format_duration(retry.max_elapsed),
                "expected at most 10m; the submission queue has its own, longer retries",
            ));
        }
        let threshold = self.breaker_threshold.unwrap_or(5);
        if threshold == 0 {
            return Err(invalid(
                &key("breaker_threshold"),
                threshold,
                "expected at least 1 consecutive failure",
            ));
        }
        let breaker = BreakerConfig {
            threshold,
            cool_down: duration(
                &key("breaker_cool_down"),
                self.breaker_cool_down.as_deref(),
                "30s",
            )?,
        };
        let sync_interval = duration(&key("sync_interval"), self.sync_interval.as_deref(), "10s")?;
        if sync_interval < Duration::from_millis(100) {
            return Err(invalid(
                &key("sync_interval"),
                humantime::format_duration(sync_interval),
                "expected at least 100ms",
            ));
        }
        let headers = self.headers.unwrap_or_default();
        for (name, value) in &headers {
            let k = format!("{prefix}.headers.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(&k, name, "expected an HTTP header name"));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err(invalid(
                    &k,
                    "<value>",
                    "expected a header value of visible ASCII characters",
                ));
            }
        }

        let mut config = RekorBackendConfig {
            name: name.to_owned(),
            kind,
            api,
            url: String::new(),
            origin: String::new(),
            keys: Vec::new(),
            key_sources: Vec::new(),
            trusted_root: None,
            entry_kind,
            connect_timeout,
            read_timeout,
            write_timeout,
            retry,
            breaker,
            sync_interval,
            headers,
        };
        if kind == BackendKind::Stub {
            for (k, set) in [
                ("url", self.url.is_some()),
                ("keys", self.keys.is_some()),
                ("trusted_root", self.trusted_root.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        &key(k),
                        "",
                        "is not used by kind = \"stub\" (the stub has its own key); remove it",
                    ));
                }
            }
            config.origin = self.origin.unwrap_or_else(|| STUB_ORIGIN.to_owned());
            check_origin(&key("origin"), &config.origin)?;
            return Ok(config);
        }

        let url = self
            .url
            .ok_or_else(|| invalid(&key("url"), "", "expected the log's base URL"))?;
        let url = url.trim_end_matches('/').to_owned();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
        let scheme_ok = match kind {
            BackendKind::Public => scheme == "https",
            _ => scheme == "https" || scheme == "http",
        };
        if !scheme_ok || rest.is_empty() || reqwest::Url::parse(&url).is_err() {
            return Err(invalid(
                &key("url"),
                &url,
                if kind == BackendKind::Public {
                    "expected an https:// URL (kind = \"public\")"
                } else {
                    "expected an http:// or https:// URL"
                },
            ));
        }
        // Rekor logs use the scheme-less URL as origin and key name.
        let origin = self.origin.unwrap_or_else(|| rest.to_owned());
        check_origin(&key("origin"), &origin)?;
        config.url = url;
        config.origin = origin;

        for (i, source) in self.keys.clone().unwrap_or_default().iter().enumerate() {
            let k = format!("{prefix}.keys[{i}]");
            config
                .keys
                .push(parse_key(&k, source, &config.origin, api)?);
        }
        config.key_sources = self.keys.unwrap_or_default();
        if let Some(path) = self.trusted_root {
            let k = key("trusted_root");
            let bytes = std::fs::read(&path)
                .map_err(|e| invalid(&k, &path, format!("cannot read the file: {e}")))?;
            let root =
                TrustedRoot::from_json(&bytes).map_err(|e| invalid(&k, &path, e.to_string()))?;
            let host = host_of(&config.origin);
            // A trusted root's host names carry no port; the origin's host may.
            let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let before = config.keys.len();
            for tlog in root.tlogs.iter().filter(|t| t.host() == bare) {
                config.keys.push(TrustedLogKey {
                    name: host.to_owned(),
                    key: tlog.key.clone(),
                    log_id: tlog.log_id.clone(),
                });
            }
            if config.keys.len() == before {
                return Err(invalid(
                    &k,
                    &path,
                    format!("no tlog in this trusted root has the host {host:?} of the origin"),
                ));
            }
            config.trusted_root = Some(PathBuf::from(path));
        }
        if config.keys.is_empty() {
            return Err(invalid(
                &key("keys"),
                "[]",
                "expected at least one trusted log key (keys or trusted_root): answers are \
                 never believed without one",
            ));
        }
        Ok(config)
    }
}

/// The host part of an origin: the origin itself, or its first path component's host.
fn host_of(origin: &str) -> &str {
    origin.split('/').next().unwrap_or(origin)
}

fn check_origin(key: &str, origin: &str) -> Result<(), ConfigError> {
    if origin.is_empty() || origin.contains(char::is_whitespace) || origin.contains('+') {
        return Err(invalid(
            key,
            origin,
            "expected a non-empty origin without spaces or '+', e.g. log2025-1.rekor.sigstore.dev",
        ));
    }
    Ok(())
}

/// Parses one `keys` entry: PEM text, a vkey, or a file holding either.
fn parse_key(
    key: &str,
    source: &str,
    origin: &str,
    api: ApiVersion,
) -> Result<TrustedLogKey, ConfigError> {
    let looks_inline = source.contains("-----BEGIN") || Verifier::from_vkey(source.trim()).is_ok();
    let text = if looks_inline {
        source.to_owned()
    } else {
        std::fs::read_to_string(Path::new(source)).map_err(|e| {
            invalid(
                key,
                source,
                format!("is neither a PEM key, a vkey nor a readable file: {e}"),
            )
        })?
    };
    // The signature name: Rekor v1 signs with the bare host, v2 and C2SP logs with the origin.
    let sig_name = match api {
        ApiVersion::V1 => host_of(origin),
        ApiVersion::V2 => origin,
    };
    let verifier = if text.contains("-----BEGIN") {
        Verifier::from_pem(sig_name, &text).map_err(|e| invalid(key, source, e.to_string()))?
    } else {
        let v =
            Verifier::from_vkey(text.trim()).map_err(|e| invalid(key, source, e.to_string()))?;
        if v.name() != sig_name {
            return Err(invalid(
                key,
                source,
                format!(
                    "the vkey is named {:?}, but this backend's checkpoints are signed as {sig_name:?} (set origin)",
                    v.name()
                ),
            ));
        }
        v
    };
    let log_id = match api {
        ApiVersion::V1 => verifier.public_key().spki_sha256().to_vec(),
        ApiVersion::V2 => verifier.key_id().to_vec(),
    };
    Ok(TrustedLogKey {
        name: verifier.name().to_owned(),
        key: verifier.public_key().clone(),
        log_id,
    })
}

impl RekorConfig {
    /// The section as written, for `config check` (keys as they were given).
    pub fn to_raw(&self) -> RawRekor {
        let fmt = |d: Duration| Some(humantime::format_duration(d).to_string());
        RawRekor {
            default_backend: self.default_backend.clone(),
            backends: self
                .backends
                .iter()
                .map(|(name, b)| {
                    let stub = b.kind == BackendKind::Stub;
                    let raw = RawRekorBackend {
                        kind: Some(b.kind.as_str().to_owned()),
                        api: Some(b.api.as_str().to_owned()),
                        url: (!stub).then(|| b.url.clone()),
                        keys: (!b.key_sources.is_empty()).then(|| b.key_sources.clone()),
                        trusted_root: b.trusted_root.as_ref().map(|p| p.display().to_string()),
                        origin: Some(b.origin.clone()),
                        entry_kind: Some(b.entry_kind.as_str().to_owned()),
                        connect_timeout: fmt(b.connect_timeout),
                        read_timeout: fmt(b.read_timeout),
                        write_timeout: fmt(b.write_timeout),
                        max_attempts: Some(b.retry.max_attempts),
                        initial_backoff: fmt(b.retry.initial_backoff),
                        max_backoff: fmt(b.retry.max_backoff),
                        max_elapsed: fmt(b.retry.max_elapsed),
                        breaker_threshold: Some(b.breaker.threshold),
                        breaker_cool_down: fmt(b.breaker.cool_down),
                        sync_interval: fmt(b.sync_interval),
                        // Header values may be credentials: never printed.
                        headers: (!b.headers.is_empty()).then(|| {
                            b.headers
                                .keys()
                                .map(|k| (k.clone(), "***".to_owned()))
                                .collect()
                        }),
                    };
                    (name.clone(), raw)
                })
                .collect(),
            queue: Some(RawRekorQueue {
                batch_size: Some(self.queue.batch_size),
                concurrency: Some(self.queue.concurrency),
                max_attempts: Some(self.queue.max_attempts),
                ack_wait: Some(humantime::format_duration(self.queue.ack_wait).to_string()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(rel: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/vectors")
            .join(rel)
            .display()
            .to_string()
    }

    fn load(text: &str) -> Result<RekorConfig, ConfigError> {
        let raw: RawRekor = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    #[test]
    fn no_section_means_no_backends() {
        let c = load("").unwrap();
        assert!(c.backends.is_empty());
        assert_eq!(c.default_backend, None);
    }

    #[test]
    fn production_example_and_defaults() {
        let c = load(&format!(
            r#"
default_backend = "sigstore"
[backends.sigstore]
kind = "public"
url = "https://rekor.sigstore.dev/"
keys = ["{}"]
[backends.sigstore-v2]
kind = "public"
api = "v2"
url = "https://log2025-1.rekor.sigstore.dev"
trusted_root = "{}"
[backends.demo]
kind = "stub"
"#,
            vectors("rekor-prod-keys/rekor.sigstore.dev.pub.pem"),
            vectors("sigstore-python/prod_trusted_root.json"),
        ))
        .unwrap();
        let v1 = &c.backends["sigstore"];
        assert_eq!(v1.url, "https://rekor.sigstore.dev");
        assert_eq!(v1.origin, "rekor.sigstore.dev");
        assert_eq!(
            hex::encode(&v1.keys[0].log_id),
            "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
        );
        assert_eq!(v1.retry.max_attempts, 3);
        assert_eq!(v1.retry.max_elapsed, Duration::from_secs(30));
        assert_eq!(v1.sync_interval, Duration::from_secs(10));
        let v2 = &c.backends["sigstore-v2"];
        assert_eq!(v2.origin, "log2025-1.rekor.sigstore.dev");
        assert_eq!(v2.write_timeout, Duration::from_secs(60));
        assert_eq!(v2.keys.len(), 1, "only the tlog of this host");
        assert_eq!(c.backends["demo"].origin, STUB_ORIGIN);
        // What config check prints parses and validates again.
        let again = toml::to_string(&c.to_raw()).unwrap();
        assert_eq!(load(&again).unwrap(), c);
    }

    #[test]
    fn bad_values_name_their_key() {
        let pem = vectors("rekor-prod-keys/rekor.sigstore.dev.pub.pem");
        let cases: Vec<(String, &str)> = vec![
            ("[backends.a]\nurl = \"https://x\"".into(), "rekor.backends.a.kind"),
            ("[backends.a]\nkind = \"cloud\"".into(), "rekor.backends.a.kind"),
            (
                format!("[backends.a]\nkind = \"public\"\nurl = \"http://x\"\nkeys = [\"{pem}\"]"),
                "rekor.backends.a.url",
            ),
            (
                "[backends.a]\nkind = \"private\"\nurl = \"http://x\"".into(),
                "rekor.backends.a.keys",
            ),
            (
                "[backends.a]\nkind = \"private\"\nurl = \"http://x\"\nkeys = [\"/no/such/key.pem\"]"
                    .into(),
                "rekor.backends.a.keys[0]",
            ),
            (
                format!(
                    "[backends.a]\nkind = \"private\"\napi = \"v2\"\nurl = \"http://x\"\nkeys = [\"{}\"]",
                    vectors("rekor-prod-keys/log2025-1.rekor.sigstore.dev.vkey.txt")
                ),
                "rekor.backends.a.keys[0]",
            ),
            (
                format!(
                    "[backends.a]\nkind = \"private\"\napi = \"v2\"\nurl = \"http://x\"\nwrite_timeout = \"5s\"\nkeys = [\"{pem}\"]"
                ),
                "rekor.backends.a.write_timeout",
            ),
            (
                format!(
                    "[backends.a]\nkind = \"private\"\nurl = \"http://x\"\nmax_attempts = 0\nkeys = [\"{pem}\"]"
                ),
                "rekor.backends.a.max_attempts",
            ),
            (
                format!(
                    "[backends.a]\nkind = \"private\"\nurl = \"http://x\"\ntrusted_root = \"{}\"",
                    vectors("sigstore-python/prod_trusted_root.json")
                ),
                "rekor.backends.a.trusted_root",
            ),
            ("[backends.a]\nkind = \"stub\"\nurl = \"http://x\"".into(), "rekor.backends.a.url"),
            (
                "default_backend = \"b\"\n[backends.a]\nkind = \"stub\"".into(),
                "rekor.default_backend",
            ),
            (
                "[backends.a]\nkind = \"stub\"\n[backends.b]\nkind = \"stub\"".into(),
                "rekor.default_backend",
            ),
            ("[backends.A]\nkind = \"stub\"".into(), "rekor.backends.A"),
        ];
        for (text, key) in cases {
            let err = load(&text).expect_err(&text).to_string();
            assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
        }
        let err = load("[backends.a]\nkind = \"stub\"\nretries = 3")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("retries"), "{err}");
    }

    #[test]
    fn headers_are_validated_and_masked_and_sync_interval_has_a_floor() {
        let pem = vectors("rekor-prod-keys/rekor.sigstore.dev.pub.pem");
        let base =
            format!("[backends.a]\nkind = \"private\"\nurl = \"http://x\"\nkeys = [\"{pem}\"]\n");
        let c = load(&format!(
            "{base}sync_interval = \"100ms\"\nheaders = {{ authorization = \"Bearer s3cret\" }}"
        ))
        .unwrap();
        let a = &c.backends["a"];
        assert_eq!(a.sync_interval, Duration::from_millis(100));
        assert_eq!(a.headers["authorization"], "Bearer s3cret");
        let printed = toml::to_string(&c.to_raw()).unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        for (extra, key) in [
            ("sync_interval = \"50ms\"", "rekor.backends.a.sync_interval"),
            (
                "headers = { \"bad name\" = \"v\" }",
                "rekor.backends.a.headers.bad name",
            ),
            (
                "headers = { x = \"line\\nbreak\" }",
                "rekor.backends.a.headers.x",
            ),
        ] {
            let err = load(&format!("{base}{extra}"))
                .expect_err(extra)
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{err} should name {key}");
        }
    }
}
