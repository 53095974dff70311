//! Adapters: the ports of `actors` implemented on real services.
//!
//! * [`postgres`]: the durable store (provcache items, ledger, rejected events).
//! * [`postgres_evidence`]: evidence chunks and manifests in the same database.
//! * [`postgres_ledger`]: the ledger outbox position, replay checkpoints and batched replay.
//! * [`hot_sweep`]: purging the hot tiers by revocation criterion (Redis indexes).
//! * [`postgres_ops`]: the operator figures behind `/api/v1/status` and the sampled gauges.
//! * [`postgres_rekor`]: Rekor submissions and receipts in the same database.
//! * [`postgres_monitor`]: verified checkpoints, divergences and their outbox.
//! * [`postgres_policies`]: named policy documents, every version kept.
//! * [`webhook`]: the divergence alert webhook.
//! * [`sqlite`]: the embedded mode's store (SQLite file in the data directory).
//! * [`sqlite_provcache`]: provcache entries, invalidations with their ledger rows, and
//!   rejected events in SQLite.
//! * [`sqlite_evidence`]: evidence chunks and manifests in SQLite.
//! * [`sqlite_ledger`]: the ledger outbox position, replay checkpoints and batched replay
//!   in SQLite.
//! * [`sqlite_bundles`]: air-gap bundle imports, fetched chunks and receipt links in SQLite.
//! * [`sqlite_rekor`]: Rekor submissions and receipts in the SQLite file.
//! * [`sqlite_monitor`]: verified checkpoints, divergences and their outbox in the SQLite
//!   file.
//! * [`sqlite_ops`]: the operator figures read from the SQLite file.
//! * [`sqlite_policies`]: named policy documents, every version kept, in the SQLite file.
//! * [`durable`]: the store and bus traits each deployment mode implements as a whole.
//! * [`redis`]: the hot tier (Valkey/Redis).
//! * [`memory`]: the in-process tier (moka).
//! * [`jetstream`]: the event bus on NATS JetStream.
//! * [`local_bus`]: the embedded mode's durable in-process bus, JetStream's semantics on
//!   the SQLite file.
//! * [`rekor`]: transparency-log clients (Rekor v1, Rekor v2, stub) behind the resilient
//!   wrapper, and `build_backends` for the configured ones.
//! * [`tiles`]: C2SP tile logs: the tile client, the filesystem tile cache, the mirror and
//!   the proof builder.

pub mod durable;
pub mod hot_sweep;
pub mod jetstream;
pub mod local_bus;
pub mod memory;
pub mod postgres;
pub mod postgres_bundles;
pub mod postgres_evidence;
pub mod postgres_ledger;
pub mod postgres_monitor;
pub mod postgres_ops;
pub mod postgres_policies;
pub mod postgres_rekor;
pub mod redis;
pub mod rekor;
pub mod sqlite;
pub mod sqlite_bundles;
pub mod sqlite_evidence;
pub mod sqlite_ledger;
pub mod sqlite_monitor;
pub mod sqlite_ops;
pub mod sqlite_policies;
pub mod sqlite_provcache;
pub mod sqlite_rekor;
pub mod tcp_nodelay;
pub mod tiles;
mod via_inherent;
pub mod webhook;

use actors::ports::PortError;

/// Errors of the adapter layer.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// SQLite failed (embedded mode).
    #[error("sqlite: {0}")]
    Sqlite(#[source] sqlx::Error),
    /// A migration failed.
    #[error("postgres migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// NATS or JetStream failed.
    #[error("nats: {0}")]
    Nats(String),
    /// A stored value could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<AdapterError> for PortError {
    fn from(e: AdapterError) -> Self {
        match &e {
            AdapterError::Postgres(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                PortError::Rejected(e.to_string())
            }
            AdapterError::Postgres(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => PortError::Unavailable {
                service: "postgres",
                message: e.to_string(),
            },
            // Other database errors (serialisation failures, deadlocks, restarts) are worth
            // one more try too; a real schema problem will keep failing and be visible.
            AdapterError::Postgres(_) | AdapterError::Migrate(_) => PortError::Unavailable {
                service: "postgres",
                message: e.to_string(),
            },
            AdapterError::Sqlite(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                PortError::Rejected(e.to_string())
            }
            // Busy, locked, full disk or I/O: another try may succeed.
            AdapterError::Sqlite(_) => PortError::Unavailable {
                service: "sqlite",
                message: e.to_string(),
            },
            AdapterError::Redis(_) => PortError::Unavailable {
                service: "redis",
                message: e.to_string(),
            },
            AdapterError::Nats(_) => PortError::Unavailable {
                service: "nats",
                message: e.to_string(),
            },
            AdapterError::Corrupt(_) => PortError::Rejected(e.to_string()),
        }
    }
}
