//! provd: Rekor transparency-log anchoring and a provenance cache of policy verdicts.
//!
//! This package holds everything that touches the outside world: the adapters that
//! implement `actors`' ports on PostgreSQL, Redis and NATS JetStream ([`adapters`]), the
//! HTTP API ([`http`]), configuration ([`config`]), logs and metrics ([`telemetry`]),
//! Sigstore trust roots kept fresh through TUF ([`trust`]), the command line ([`cli`]) and
//! the composition root ([`app`]). [`evaluate`] is verify-then-cache: verdicts decided by
//! verifying attestations against stored policies. The binary's `main` only parses the
//! command line and hands over to [`cli::run`].

pub mod adapters;
pub mod airgap;
pub mod app;
pub mod cli;
pub mod config;
pub mod devlog;
pub mod evaluate;
pub mod http;
pub mod ops;
pub mod telemetry;
pub mod trust;
