//! Operations: the metrics catalogue and what keeps it complete, the sampled gauges, and the
//! status report behind `GET /api/v1/status`, `/dashboard` and `provd status`.
//!
//! * [`catalogue`]: describes every metric provd exports (so `# HELP`/`# TYPE` lines are
//!   right) and creates every series whose label values are known at start at zero, so
//!   `/metrics` lists the same names before and after traffic (`docs/metrics.md` lists them).
//! * [`sampler`]: gauges that are read from PostgreSQL and JetStream every few seconds
//!   (submissions by status, outbox lag, this node's replay checkpoint, consumer pending,
//!   checkpoint age, open divergences).
//! * [`status`]: the status report: health of every service and actor plus the figures an
//!   on-call engineer looks at first.

pub mod catalogue;
pub mod sampler;
pub mod status;
