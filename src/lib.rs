//! provd: Rekor transparency-log anchoring and a provenance cache of policy verdicts.
//!
//! This package holds everything that touches the outside world:
//!
//! * [`adapters`]: `actors`' ports on Redis/Valkey, NATS JetStream and the in-process bus,
//!   and the Rekor clients; their errors (and the store's) map onto the ports' kinds.
//! * [`airgap`]: signed air-gap bundles: import, lazy chunk fetch, the storage they need.
//! * [`app`]: the composition root that builds either mode from the configuration.
//! * [`cli`]: the command line; the binary's `main` only parses it and hands over to
//!   [`cli::run`].
//! * [`config`]: the configuration file, environment and flags.
//! * [`devlog`]: the local Rekor-compatible log (`provd dev-log`).
//! * [`evaluate`]: verify-then-cache: verdicts decided by verifying attestations against
//!   stored policies.
//! * [`http`]: the HTTP API, its errors and its OpenAPI document.
//! * [`ops`]: the status report and the metrics catalogue.
//! * [`storage`]: the durable store, one module per capability over PostgreSQL or SQLite,
//!   only the SQL differing.
//! * [`telemetry`]: logs and metrics.
//! * [`trust`]: Sigstore trust roots kept fresh through TUF and carried across air gaps.

pub mod adapters;
pub mod airgap;
pub mod app;
pub mod cli;
pub mod config;
pub mod devlog;
pub mod evaluate;
pub mod http;
pub mod ops;
pub mod storage;
pub mod telemetry;
pub mod trust;
