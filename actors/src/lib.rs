//! provd's core: the pure domain, the ports it needs, and the supervised actors.
//!
//! * [`domain`]: synchronous logic with no I/O (Merkle, notes, VeriKey, invalidation rules).
//! * [`ports`]: the narrow async traits actors use to reach stores, caches and the bus.
//! * [`supervisor`], [`invalidator`], [`write_behind`], [`ledger`]: the actors; [`health`] is what
//!   `/readyz` reads.
//! * [`provcache`]: the cache's read and write paths over the tiers.
//! * [`ledger_replay`]: catch-up from the revocation ledger (start-up, reconnect, CLI).
//! * [`log_sync`], [`divergence`]: transparency-log monitoring (checkpoint sync per backend,
//!   cross-node divergence detection, the alert outbox).
//! * `testing` (feature): in-memory fakes of the ports for unit tests.
//!
//! This crate never names a database, cache, broker or HTTP library: adapters live in the
//! `provd` package.

pub mod divergence;
pub mod domain;
pub mod health;
pub mod invalidator;
pub mod ledger;
pub mod ledger_replay;
pub mod log_sync;
pub mod ports;
pub mod provcache;
pub mod pump;
pub mod rejected;
pub mod submitter;
pub mod supervisor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(any(test, feature = "testing"))]
pub mod testing_monitor;
pub mod tile_sync;
pub mod write_behind;
