//! Fault modes of the dev log, set at start (flags) and at run time (`POST /__faults`).
//!
//! The JSON shape is [`Faults`]; a POST replaces the whole set (missing fields take their
//! defaults, so `{}` clears everything) and answers with the new set.

use serde::{Deserialize, Serialize};

/// Which requests see the forked view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ForkFault {
    /// Requests that carry this header (any value) see the fork.
    Header {
        /// The header name, e.g. `x-dev-log-fork`.
        header: String,
    },
    /// Every other read request sees the fork.
    Alternate,
}

/// The fault settings. `Faults::default()` is an honest log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added latency before every request is handled, in milliseconds.
    pub latency_ms: u64,
    /// The next N requests fail with `fail_status` and `Retry-After`.
    pub fail_next: u32,
    /// The status of the failure burst: 429 or 503.
    pub fail_status: u16,
    /// The `Retry-After` value, in seconds, of burst and down responses.
    pub retry_after_secs: u32,
    /// The next N writes (v1 or v2) are committed, then their connection is dropped
    /// without a response.
    pub drop_next_writes: u32,
    /// Every request fails with 503 until this is cleared.
    pub down: bool,
    /// A second tree served to some readers: the log's entries except the last, plus a
    /// different last entry, correctly signed.
    pub fork: Option<ForkFault>,
    /// Checkpoints and tree heads show this older size instead of the current one.
    pub rollback_to: Option<u64>,
    /// Checkpoints are signed with a wrong key under the log's name and key hint.
    pub wrong_key: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            fail_next: 0,
            fail_status: 503,
            retry_after_secs: 1,
            drop_next_writes: 0,
            down: false,
            fork: None,
            rollback_to: None,
            wrong_key: false,
        }
    }
}

impl Faults {
    /// Whether any fault is set.
    pub fn any(&self) -> bool {
        let honest = Faults {
            fail_status: self.fail_status,
            retry_after_secs: self.retry_after_secs,
            ..Faults::default()
        };
        *self != honest
    }

    /// Checks values that would make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.fail_status, 429 | 503) {
            return Err(format!(
                "fail_status must be 429 or 503, got {}",
                self.fail_status
            ));
        }
        if let Some(ForkFault::Header { header }) = &self.fork
            && axum::http::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(format!("fork header {header:?} is not a valid header name"));
        }
        Ok(())
    }
}
