//! Transparency-log clients: the `RekorClient` port on Rekor v1 REST, Rekor v2 (write API and
//! C2SP tiles), and a deterministic in-memory stub, each behind the resilient wrapper.
//!
//! * [`v1`]: `POST /api/v1/log/entries` (`dsse` or `hashedrekord` 0.0.1), entries by virtual
//!   index and by UUID, the signed tree head and consistency proofs.
//! * [`v2`]: `POST /api/v2/log/entries` (`hashedRekordRequestV002` over the envelope's PAE,
//!   ECDSA P-256 signers only), reads through `/checkpoint` and `/tile/...`.
//! * [`resilient`]: retries with full-jitter backoff, `Retry-After`, a circuit breaker and the
//!   request metrics.
//! * [`stub`]: an in-memory log with real Merkle proofs and signed checkpoints.
//!
//! Every answer is verified against the backend's trusted keys before it is returned: a
//! receipt must carry an inclusion proof leading to a checkpoint signed by a trusted key with
//! the expected origin (and, for Rekor v1, a valid SET); anything else is
//! [`RekorError::Unverified`].

pub mod resilient;
pub mod stub;
pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::note::{self, Checkpoint, Verifier};
use actors::domain::receipt::{Receipt, TrustedLog, VerifiedReceipt};
use actors::ports::{LogCheckpoint, RekorBackends, RekorClient, RekorError};

use crate::config::RekorConfig;
use crate::config::rekor::{ApiVersion, BackendKind, RekorBackendConfig, TrustedLogKey};

/// Why the backends could not be built from a validated configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client could not be created (TLS setup).
    #[error("rekor backend {backend}: cannot create the HTTP client: {message}")]
    Http {
        /// The backend name.
        backend: String,
        /// Why.
        message: String,
    },
    /// A trusted key cannot be used as a checkpoint verifier.
    #[error("rekor backend {backend}: unusable trusted key: {message}")]
    Key {
        /// The backend name.
        backend: String,
        /// Why.
        message: String,
    },
}

/// Builds every configured backend, each wrapped in the resilient wrapper. With no `[rekor]`
/// section the result has no clients and an empty default name.
pub fn build_backends(config: &RekorConfig) -> Result<RekorBackends, BuildError> {
    let mut clients: BTreeMap<String, Arc<dyn RekorClient>> = BTreeMap::new();
    for (name, backend) in &config.backends {
        clients.insert(name.clone(), build_backend(backend)?);
    }
    Ok(RekorBackends {
        default: config.default_backend.clone().unwrap_or_default(),
        clients,
    })
}

/// Builds one backend, wrapped in the resilient wrapper.
pub fn build_backend(backend: &RekorBackendConfig) -> Result<Arc<dyn RekorClient>, BuildError> {
    let inner: Arc<dyn RekorClient> = match (backend.kind, backend.api) {
        (BackendKind::Stub, _) => Arc::new(stub::StubLog::new(&backend.name, &backend.origin)),
        (_, ApiVersion::V1) => Arc::new(v1::V1Client::new(backend)?),
        (_, ApiVersion::V2) => Arc::new(v2::V2Client::new(backend)?),
    };
    Ok(Arc::new(resilient::Resilient::new(
        inner,
        backend.retry,
        backend.breaker,
    )))
}

/// What a backend trusts: its keys and expected origin.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    /// The expected origin (Rekor v1: the host; `<host> - <tree ID>` is accepted too).
    origin: String,
    /// Rekor v1 origins carry a tree ID suffix.
    v1: bool,
    /// One trusted log per key.
    logs: Vec<TrustedLog>,
    /// The same keys as checkpoint verifiers.
    verifiers: Vec<Verifier>,
}

impl Trust {
    /// Builds the trust of a backend from its configured keys.
    pub(crate) fn new(
        backend: &str,
        origin: &str,
        v1: bool,
        keys: &[TrustedLogKey],
    ) -> Result<Self, BuildError> {
        let mut logs = Vec::new();
        let mut verifiers = Vec::new();
        for k in keys {
            verifiers.push(
                Verifier::from_public_key(&k.name, k.key.clone()).map_err(|e| BuildError::Key {
                    backend: backend.to_owned(),
                    message: e.to_string(),
                })?,
            );
            logs.push(TrustedLog {
                log_id: k.log_id.clone(),
                key: k.key.clone(),
                host: k.name.clone(),
            });
        }
        Ok(Trust {
            origin: origin.to_owned(),
            v1,
            logs,
            verifiers,
        })
    }

    /// Whether a checkpoint origin is this log's.
    fn origin_ok(&self, origin: &str) -> bool {
        if origin == self.origin {
            return true;
        }
        self.v1
            && origin
                .strip_prefix(self.origin.as_str())
                .and_then(|rest| rest.strip_prefix(" - "))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Verifies a signed checkpoint: a trusted signature and this log's origin. Returns the
    /// checkpoint and the log ID of the key that signed it.
    pub(crate) fn checkpoint(&self, note_text: &str) -> Result<(Checkpoint, Vec<u8>), RekorError> {
        let opened = note::open_checkpoint(note_text.as_bytes(), &self.verifiers, None)
            .map_err(|e| RekorError::Unverified(format!("checkpoint: {e}")))?;
        if !self.origin_ok(&opened.checkpoint.origin) {
            return Err(RekorError::Unverified(format!(
                "checkpoint origin {:?} is not the expected {:?}",
                opened.checkpoint.origin, self.origin
            )));
        }
        let log_id = opened
            .opened
            .verified
            .iter()
            .find_map(|sig| {
                self.verifiers
                    .iter()
                    .zip(&self.logs)
                    .find(|(v, _)| v.name() == sig.name && v.key_hint() == sig.key_hint)
                    .map(|(_, log)| log.log_id.clone())
            })
            .unwrap_or_default();
        Ok((opened.checkpoint, log_id))
    }

    /// Verifies a signed checkpoint and returns it in the port's form.
    pub(crate) fn log_checkpoint(&self, note_text: String) -> Result<LogCheckpoint, RekorError> {
        let (checkpoint, _) = self.checkpoint(&note_text)?;
        Ok(LogCheckpoint {
            note: note_text,
            checkpoint,
        })
    }

    /// Fully verifies a receipt with the trusted key its log ID names, and the origin.
    pub(crate) fn receipt(&self, receipt: &Receipt) -> Result<VerifiedReceipt, RekorError> {
        let log = self
            .logs
            .iter()
            .find(|l| l.log_id == receipt.log_id)
            .ok_or_else(|| {
                RekorError::Unverified(format!(
                    "entry is from log {}, which this backend does not trust",
                    hex::encode(&receipt.log_id)
                ))
            })?;
        let verified = receipt
            .verify(log)
            .map_err(|e| RekorError::Unverified(e.to_string()))?;
        if !self.origin_ok(&verified.checkpoint.origin) {
            return Err(RekorError::Unverified(format!(
                "checkpoint origin {:?} is not the expected {:?}",
                verified.checkpoint.origin, self.origin
            )));
        }
        Ok(verified)
    }
}

/// Limits on response bodies, so a hostile or broken log cannot exhaust memory.
pub(crate) const MAX_JSON_BYTES: usize = 16 << 20;
/// The largest entry bundle: 256 entries of at most 65 535 bytes, plus length prefixes.
pub(crate) const MAX_TILE_BYTES: usize = 256 * (2 + 65_535);

/// The backend's URL as the base that API paths are joined to.
pub(crate) fn base_url(backend: &RekorBackendConfig) -> Result<reqwest::Url, BuildError> {
    reqwest::Url::parse(&format!("{}/", backend.url)).map_err(|e| BuildError::Http {
        backend: backend.name.clone(),
        message: format!("bad url: {e}"),
    })
}

/// Builds a reqwest client with the backend's connect timeout.
pub(crate) fn http_client(backend: &RekorBackendConfig) -> Result<reqwest::Client, BuildError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &backend.headers {
        // Validated at load; a bad one here is a build error, not a panic.
        let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) else {
            return Err(BuildError::Http {
                backend: backend.name.clone(),
                message: format!("invalid header {name:?}"),
            });
        };
        headers.insert(n, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(backend.connect_timeout)
        .user_agent(concat!("provd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::Http {
            backend: backend.name.clone(),
            message: e.to_string(),
        })
}

/// Maps a transport error (connect, timeout, reset) to a transient error.
pub(crate) fn transport_error(e: reqwest::Error) -> RekorError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    RekorError::Transient {
        message: format!("{what}: {}", without_url(&e)),
        retry_after: None,
    }
}

/// The error's text without the URL reqwest appends (it may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}

/// Reads a response body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, RekorError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(RekorError::Unverified(format!(
            "response body larger than {limit} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(RekorError::Unverified(format!(
                "response body larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Classifies an unsuccessful HTTP answer (not 409, which each API handles itself): 408, 429
/// and 5xx are transient (with `Retry-After`), 404 is not found, other 4xx are rejections
/// with the log's own message.
pub(crate) async fn status_error(response: reqwest::Response, what: &str) -> RekorError {
    let status = response.status();
    let after = retry_after(response.headers());
    let body = read_body(response, 64 << 10).await.unwrap_or_default();
    let message = log_message(&body);
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        RekorError::Transient {
            message: format!("{what}: HTTP {code}{}", suffix(&message)),
            retry_after: after,
        }
    } else if code == 404 {
        RekorError::NotFound(format!("{what}{}", suffix(&message)))
    } else {
        RekorError::Rejected {
            status: code,
            message: if message.is_empty() {
                status.canonical_reason().unwrap_or("").to_owned()
            } else {
                message
            },
        }
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The `message` of a Rekor / grpc-gateway error body, or the body's first line.
pub(crate) fn log_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(m) = v.get("message").and_then(|m| m.as_str())
    {
        return m.chars().take(500).collect();
    }
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}

/// Checks that an envelope verifies with the given keys before it is sent, and returns the
/// first (signature bytes, key) pair that verifies.
pub(crate) fn verified_signature(
    submission: &actors::ports::RekorSubmission,
) -> Result<(Vec<u8>, actors::domain::keys::PublicKey), RekorError> {
    use base64::Engine as _;
    let envelope = &submission.envelope;
    if submission.verifiers.is_empty() {
        return Err(RekorError::Invalid(
            "no verifier keys: give the public key that signed the envelope".into(),
        ));
    }
    let pae = envelope
        .pae()
        .map_err(|e| RekorError::Invalid(format!("envelope: {e}")))?;
    for sig in &envelope.signatures {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD
            .decode(&sig.sig)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&sig.sig))
        else {
            continue;
        };
        if let Some(key) = submission
            .verifiers
            .iter()
            .find(|k| k.verify(&pae, &bytes).is_ok())
        {
            return Ok((bytes, key.clone()));
        }
    }
    Err(RekorError::Invalid(
        "no envelope signature verifies with the given verifier keys".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_in_seconds_or_as_an_http_date() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn log_messages_from_rekor_and_grpc_gateway_bodies() {
        assert_eq!(
            log_message(br#"{"code":400,"message":"invalid hashedrekord request"}"#),
            "invalid hashedrekord request"
        );
        assert_eq!(
            log_message(b"upstream timed out\nmore"),
            "upstream timed out"
        );
        assert_eq!(log_message(b""), "");
    }
}
