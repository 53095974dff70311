//! The resilient wrapper: retries, backoff, `Retry-After` and a circuit breaker around any
//! [`RekorClient`], with a metric for every attempt.
//!
//! Only [`RekorError::Transient`] answers (connection errors, timeouts, 408, 429, 5xx and
//! Rekor v2's 503 pushback) are retried, with exponential backoff and full jitter — a delay
//! drawn uniformly from zero to the current step — but never shorter than the log's
//! `Retry-After`. Retries stay few and short (`max_attempts`, `max_elapsed`): the submission
//! queue retries for longer on its own, through naks, without holding a worker.
//!
//! The breaker counts consecutive calls that ended transient. At `threshold` it opens and
//! answers [`RekorError::CircuitOpen`] without calling the log; after `cool_down` it lets one
//! probe through (half-open): a success closes it, a failure opens it again. Answers that
//! show the log is up (a rejection, a missing entry) count as successes.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::domain::merkle::Hash;
use actors::domain::receipt::{InclusionProof, Receipt};
use actors::ports::{LogCheckpoint, RekorClient, RekorError, RekorSubmission};
use async_trait::async_trait;

use crate::config::rekor::{BreakerConfig, RetryConfig};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; `failures` consecutive calls ended transient.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One probe is in flight; other calls are refused.
    HalfOpen,
}

/// A [`RekorClient`] with retries and a circuit breaker.
pub struct Resilient {
    inner: Arc<dyn RekorClient>,
    retry: RetryConfig,
    breaker: BreakerConfig,
    state: Mutex<State>,
}

/// Permission to make one call, from the breaker.
enum Admit {
    /// A normal call.
    Call,
    /// The half-open probe.
    Probe,
}

impl Resilient {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RekorClient>, retry: RetryConfig, breaker: BreakerConfig) -> Self {
        metrics::gauge!("provd_rekor_circuit_open", "backend" => inner.backend().to_owned())
            .set(0.0);
        Resilient {
            inner,
            retry,
            breaker,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value; a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_open_gauge(&self, open: bool) {
        metrics::gauge!("provd_rekor_circuit_open", "backend" => self.inner.backend().to_owned())
            .set(if open { 1.0 } else { 0.0 });
    }

    /// Asks the breaker whether a call may go out now.
    fn admit(&self) -> Result<Admit, RekorError> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Admit::Call),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen;
                    Ok(Admit::Probe)
                } else {
                    Err(self.open_error(until - now))
                }
            }
            // The probe decides; until then the cool-down is effectively still running.
            State::HalfOpen => Err(self.open_error(Duration::ZERO)),
        }
    }

    fn open_error(&self, retry_in: Duration) -> RekorError {
        RekorError::CircuitOpen {
            backend: self.inner.backend().to_owned(),
            retry_in,
        }
    }

    /// Records how a call ended.
    fn record(&self, failed: bool) {
        let mut state = self.lock();
        let next = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.breaker.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            // A failing probe, or the threshold reached: open (again).
            (State::Closed { .. } | State::HalfOpen, true) => State::Open {
                until: Instant::now() + self.breaker.cool_down,
            },
            // A call that started before the breaker opened; the cool-down stands.
            (s @ State::Open { .. }, true) => s,
        };
        let was_open = !matches!(*state, State::Closed { .. });
        let is_open = !matches!(next, State::Closed { .. });
        *state = next;
        drop(state);
        if was_open != is_open {
            self.set_open_gauge(is_open);
            if is_open {
                tracing::warn!(backend = self.inner.backend(), cool_down = ?self.breaker.cool_down, "rekor circuit breaker opened");
            } else {
                tracing::info!(
                    backend = self.inner.backend(),
                    "rekor circuit breaker closed"
                );
            }
        }
    }

    /// The delay before retry number `retry` (0 for the first retry): full jitter over a
    /// doubling step capped at `max_backoff`, raised to the log's `Retry-After`.
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .retry
            .initial_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(self.retry.max_backoff);
        let jittered = step.mul_f64(random_fraction());
        retry_after.map_or(jittered, |after| after.max(jittered))
    }

    /// Runs one logical call with retries, breaker and metrics.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, RekorError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RekorError>>,
    {
        let backend = self.inner.backend().to_owned();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let admit = match self.admit() {
                Ok(a) => a,
                Err(e) => {
                    metrics::counter!("provd_rekor_requests_total", "backend" => backend.clone(), "outcome" => "circuit_open").increment(1);
                    return Err(e);
                }
            };
            let t0 = Instant::now();
            let result = f().await;
            metrics::histogram!("provd_rekor_request_duration_seconds", "backend" => backend.clone())
                .record(t0.elapsed().as_secs_f64());
            metrics::counter!("provd_rekor_requests_total", "backend" => backend.clone(), "outcome" => outcome(&result)).increment(1);
            let transient = matches!(result, Err(RekorError::Transient { .. }));
            if matches!(admit, Admit::Probe) {
                tracing::info!(backend = %backend, ok = !transient, "rekor circuit breaker probe");
            }
            self.record(transient);
            let Err(RekorError::Transient {
                message,
                retry_after,
            }) = result
            else {
                return result;
            };
            if attempt >= self.retry.max_attempts {
                return Err(RekorError::Transient {
                    message: format!("{message} (after {attempt} attempts)"),
                    retry_after,
                });
            }
            let wait = self.delay(attempt - 1, retry_after);
            if started.elapsed() + wait > self.retry.max_elapsed {
                // Hand the wait back to the caller (the queue naks with it) instead of
                // holding a worker past the budget.
                return Err(RekorError::Transient {
                    message: format!("{message} (gave up after {attempt} attempts)"),
                    retry_after,
                });
            }
            metrics::counter!("provd_rekor_retries_total", "backend" => backend.clone())
                .increment(1);
            tracing::debug!(backend = %backend, attempt, ?wait, error = %message, "retrying rekor request");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The metric label of a result.
fn outcome<T>(result: &Result<T, RekorError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RekorError::Transient { .. }) => "transient",
        Err(RekorError::CircuitOpen { .. }) => "circuit_open",
        Err(RekorError::Rejected { .. }) => "rejected",
        Err(RekorError::Invalid(_)) => "invalid",
        Err(RekorError::NotFound(_)) => "not_found",
        Err(RekorError::Unverified(_)) => "unverified",
        Err(RekorError::Unsupported(_)) => "unsupported",
    }
}

/// A uniform random number in [0, 1) from the operating system; jitter needs no more.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[async_trait]
impl RekorClient for Resilient {
    fn backend(&self) -> &str {
        self.inner.backend()
    }

    async fn submit(&self, submission: &RekorSubmission) -> Result<Receipt, RekorError> {
        self.call(|| self.inner.submit(submission)).await
    }

    async fn entry_by_index(&self, log_index: u64) -> Result<Receipt, RekorError> {
        self.call(|| self.inner.entry_by_index(log_index)).await
    }

    async fn entry_by_uuid(&self, uuid: &str) -> Result<Receipt, RekorError> {
        self.call(|| self.inner.entry_by_uuid(uuid)).await
    }

    async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, RekorError> {
        self.call(|| self.inner.inclusion_proof(log_index, tree_size))
            .await
    }

    async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError> {
        self.call(|| self.inner.checkpoint()).await
    }

    async fn checkpoint_note_unverified(&self) -> Result<String, RekorError> {
        self.call(|| self.inner.checkpoint_note_unverified()).await
    }

    async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, RekorError> {
        self.call(|| self.inner.consistency_proof(old_size, new_size))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::rekor::stub::StubLog;

    fn wrapper() -> Resilient {
        Resilient::new(
            Arc::new(StubLog::new("unit", "stub.provd.invalid")),
            RetryConfig {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(800),
                max_elapsed: Duration::from_secs(30),
            },
            BreakerConfig {
                threshold: 2,
                cool_down: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn delays_are_full_jitter_under_a_doubling_capped_step_and_respect_retry_after() {
        let w = wrapper();
        for retry in 0..8u32 {
            let cap = Duration::from_millis(100 * (1u64 << retry)).min(Duration::from_millis(800));
            for _ in 0..50 {
                assert!(w.delay(retry, None) <= cap, "retry {retry}");
            }
            let after = Duration::from_secs(2);
            assert!(w.delay(retry, Some(after)) >= after);
        }
    }

    #[test]
    fn breaker_opens_at_the_threshold_and_a_success_closes_it() {
        let w = wrapper();
        assert!(matches!(w.admit(), Ok(Admit::Call)));
        w.record(true);
        assert!(
            matches!(w.admit(), Ok(Admit::Call)),
            "one failure keeps it closed"
        );
        w.record(false);
        w.record(true);
        assert!(
            matches!(w.admit(), Ok(Admit::Call)),
            "a success reset the count"
        );
        w.record(true);
        match w.admit() {
            Err(RekorError::CircuitOpen { backend, retry_in }) => {
                assert_eq!(backend, "unit");
                assert!(retry_in > Duration::from_secs(50));
            }
            _ => panic!("expected the breaker open"),
        }
        // Past the cool-down: exactly one probe, then a success closes it.
        *w.lock() = State::Open {
            until: Instant::now(),
        };
        assert!(matches!(w.admit(), Ok(Admit::Probe)));
        assert!(matches!(w.admit(), Err(RekorError::CircuitOpen { .. })));
        w.record(false);
        assert!(matches!(w.admit(), Ok(Admit::Call)));
    }
}
