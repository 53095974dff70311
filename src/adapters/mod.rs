//! Adapters: the ports of `actors` implemented on real services. The durable store is
//! [`crate::storage`], one module per capability over PostgreSQL or SQLite; the rest is here.
//!
//! * [`bus`]: the trait each deployment mode's event bus implements as a whole.
//! * [`hot_sweep`]: purging the hot tiers by revocation criterion (Redis indexes).
//! * [`webhook`]: the divergence alert webhook.
//! * [`redis`]: the hot tier (Valkey/Redis).
//! * [`memory`]: the in-process tier (moka).
//! * [`jetstream`]: the event bus on NATS JetStream.
//! * [`local_bus`]: the embedded mode's durable in-process bus, JetStream's semantics on
//!   the SQLite file.
//! * [`rekor`]: transparency-log clients (Rekor v1, Rekor v2, stub) behind the resilient
//!   wrapper, and `build_backends` for the configured ones.
//! * [`tiles`]: C2SP tile logs: the tile client, the filesystem tile cache, the mirror and
//!   the proof builder.
//! * [`tcp_nodelay`]: turns Nagle off on sqlx's PostgreSQL sockets.

pub mod bus;
pub mod hot_sweep;
pub mod jetstream;
pub mod local_bus;
pub mod memory;
pub mod redis;
pub mod rekor;
pub mod tcp_nodelay;
pub mod tiles;
pub mod webhook;

use actors::ports::PortError;

/// The services and stores provd runs on, by the one name probes (`/readyz`), metrics
/// (`provd_service_up{service}`, the durable tier's `tier` label) and logs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// PostgreSQL, the distributed mode's store.
    Postgres,
    /// The SQLite file, the embedded mode's store.
    Sqlite,
    /// Valkey/Redis, the distributed hot tier.
    Redis,
    /// NATS JetStream, the distributed bus.
    Nats,
    /// The in-process bus on the SQLite file.
    LocalBus,
}

impl Service {
    /// The name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::Sqlite => "sqlite",
            Service::Redis => "redis",
            Service::Nats => "nats",
            Service::LocalBus => "local-bus",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// A JetStream stream of this deployment, or a consumer on one, belongs to another
    /// deployment.
    #[error("{0}")]
    ForeignOwner(Box<jetstream::ForeignOwner>),
}

impl From<AdapterError> for PortError {
    fn from(e: AdapterError) -> Self {
        let unavailable = |service: Service, e: &AdapterError| PortError::Unavailable {
            service: service.as_str(),
            message: e.to_string(),
        };
        match &e {
            AdapterError::Postgres(err) => match sql_kind(err, Dialect::Postgres) {
                SqlKind::Unavailable => unavailable(Service::Postgres, &e),
                SqlKind::Conflict => PortError::Conflict(e.to_string()),
                SqlKind::NotFound => PortError::NotFound(e.to_string()),
                SqlKind::Refused => PortError::Rejected(e.to_string()),
            },
            AdapterError::Sqlite(err) => match sql_kind(err, Dialect::Sqlite) {
                SqlKind::Unavailable => unavailable(Service::Sqlite, &e),
                SqlKind::Conflict => PortError::Conflict(e.to_string()),
                SqlKind::NotFound => PortError::NotFound(e.to_string()),
                SqlKind::Refused => PortError::Rejected(e.to_string()),
            },
            AdapterError::Migrate(_) => unavailable(Service::Postgres, &e),
            AdapterError::Redis(_) => unavailable(Service::Redis, &e),
            AdapterError::Nats(_) => unavailable(Service::Nats, &e),
            AdapterError::Corrupt(_) => PortError::Rejected(e.to_string()),
            // Waiting cannot help: the other deployment keeps the consumer.
            AdapterError::ForeignOwner(_) => PortError::Conflict(e.to_string()),
        }
    }
}

/// Which SQL dialect produced an error; their codes differ.
#[derive(Clone, Copy)]
enum Dialect {
    Postgres,
    Sqlite,
}

/// What kind of failure a database error is.
#[derive(Debug, PartialEq, Eq)]
enum SqlKind {
    /// Down, busy, timed out, or a transaction that lost a race: another try may succeed.
    Unavailable,
    /// A unique key already holds another row.
    Conflict,
    /// No row where one was required.
    NotFound,
    /// The data itself is refused (too long, NUL, out of range, a check): never retried.
    Refused,
}

/// Classifies a database error by its code, so a write the schema refuses is never
/// retried as if the store were down, and an outage is never reported as bad data.
fn sql_kind(err: &sqlx::Error, dialect: Dialect) -> SqlKind {
    match err {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return SqlKind::Conflict;
            }
            let code = db.code().unwrap_or_default();
            match dialect {
                // SQLSTATE class 22 is a data exception (string too long, NUL or an
                // unsupported escape, numeric out of range), class 23 an integrity
                // constraint (check, not null, foreign key).
                Dialect::Postgres if code.starts_with("22") || code.starts_with("23") => {
                    SqlKind::Refused
                }
                Dialect::Postgres => SqlKind::Unavailable,
                // SQLite's primary result codes: CONSTRAINT (19), TOOBIG (18),
                // MISMATCH (20), RANGE (25); extended codes carry the primary one in their
                // low byte.
                Dialect::Sqlite => match code.parse::<i32>().map(|c| c & 0xff) {
                    Ok(18 | 19 | 20 | 25) => SqlKind::Refused,
                    _ => SqlKind::Unavailable,
                },
            }
        }
        sqlx::Error::RowNotFound => SqlKind::NotFound,
        sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::InvalidArgument(_) => SqlKind::Refused,
        // I/O, TLS, protocol, pool timeouts and closed pools, crashed workers.
        _ => SqlKind::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database error with a given code, as a driver reports it (`true`: a unique
    /// violation).
    #[derive(Debug)]
    struct Coded(&'static str, bool);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "code {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            if self.1 {
                sqlx::error::ErrorKind::UniqueViolation
            } else {
                sqlx::error::ErrorKind::Other
            }
        }
    }

    fn db(code: &'static str, unique: bool) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code, unique)))
    }

    #[test]
    fn database_errors_are_classified_by_code() {
        let (other, unique) = (false, true);
        let pg = |e| PortError::from(AdapterError::Postgres(e));
        let lite = |e| PortError::from(AdapterError::Sqlite(e));
        // PostgreSQL: string too long, NUL, numeric out of range, a check: the data.
        for code in ["22001", "22021", "22P05", "22003", "23514", "23502"] {
            assert!(
                matches!(pg(db(code, other)), PortError::Rejected(_)),
                "{code}"
            );
        }
        assert!(matches!(pg(db("23505", unique)), PortError::Conflict(_)));
        // A lost connection, a serialisation failure, too many clients: worth a retry.
        for code in ["08006", "40001", "40P01", "53300", "57P01"] {
            assert!(pg(db(code, other)).is_transient(), "{code}");
        }
        assert!(pg(sqlx::Error::PoolTimedOut).is_transient());
        assert!(matches!(
            pg(sqlx::Error::RowNotFound),
            PortError::NotFound(_)
        ));
        // SQLite: CONSTRAINT_CHECK (275), TOOBIG (18), MISMATCH (20) are the data;
        // BUSY (5), LOCKED (6), IOERR (10) are not.
        for code in ["275", "18", "20", "19"] {
            assert!(
                matches!(lite(db(code, other)), PortError::Rejected(_)),
                "{code}"
            );
        }
        assert!(matches!(lite(db("2067", unique)), PortError::Conflict(_)));
        for code in ["5", "6", "10", "261"] {
            assert!(lite(db(code, other)).is_transient(), "{code}");
        }
    }
}
