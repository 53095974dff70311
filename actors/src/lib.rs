//! provd's core: the pure domain, the ports it needs, and the supervised actors.
//!
//! * [`domain`]: synchronous logic with no I/O (Merkle, notes, VeriKey, invalidation rules,
//!   the limits of what provd accepts).
//! * [`ports`]: the narrow async traits actors use to reach stores, caches and the bus, and
//!   the kinds of failure they report.
//! * [`supervisor`]: starts the actors and restarts them; [`health`] is what `/readyz` reads.
//! * The actors: [`invalidator`] (one per trigger), [`write_behind`] (the flusher),
//!   [`ledger`] (the outbox publisher and the per-node consumer), [`submitter`] (the Rekor
//!   submission queue), [`log_sync`] and [`divergence`] (transparency-log monitoring),
//!   [`tile_sync`] (tile mirroring).
//! * [`pump`]: the task that pulls batches from the bus beside an actor's mailbox;
//!   [`rejected`]: how a consumer refuses a message for good (recorded, counted, settled).
//! * [`provcache`]: the cache's read and write paths over the tiers.
//! * [`ledger_replay`]: catch-up from the revocation ledger (start-up, reconnect, CLI).
//! * [`figures`]: the figures shown in several places, counted once with their metrics.
//! * [`trace`]: W3C trace context on what actors publish and consume, so one trace follows
//!   a request across the bus and the nodes.
//! * `testing`, `testing_monitor` (feature): in-memory fakes of the ports for unit tests.
//!
//! This crate never names a database, cache, broker or HTTP library: adapters live in the
//! `provd` package.

pub mod divergence;
pub mod domain;
pub mod figures;
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
pub mod trace;
pub mod write_behind;
