//! Durable storage by capability: one [`Store`] over PostgreSQL (distributed mode) or a
//! SQLite file (embedded mode), and one module per capability holding its row types, their
//! mappings and the port implementations once; only the SQL text differs between the two
//! databases ([`Sql`]).
//!
//! * [`codec`]: column types both databases hold, each in its own representation.
//! * [`deployment`]: this deployment's id, made at the first migration.
//! * [`entries`]: provenance-cache entries, invalidations with their ledger rows, rejected
//!   events.
//! * [`evidence`]: evidence chunks and manifests.
//! * [`bundles`]: air-gap bundle imports, fetched chunks and entry → receipt links.
//! * [`ledger`]: the ledger outbox position, replay checkpoints and batched replay.
//! * [`rekor`]: Rekor submissions and receipts.
//! * [`monitor`]: verified checkpoints, divergences and their outbox.
//! * [`policies`]: named policy documents, every version kept.
//! * [`ops`]: the operator figures behind `/api/v1/status` and the sampled gauges.
//!
//! A capability runs a statement with [`run!`](crate::storage::run), which expands the same
//! binds and row mapping for whichever database the [`Exec`] is. Where the two databases
//! order concurrent writers differently (PostgreSQL takes advisory locks, SQLite has one
//! writer connection) the capability says so beside the statement.

pub mod bundles;
pub mod codec;
pub mod deployment;
pub mod entries;
pub mod evidence;
pub mod ledger;
pub mod monitor;
pub mod ops;
pub mod policies;
pub mod rekor;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::adapters::{AdapterError, Service};

/// The PostgreSQL migrations, embedded at build time.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQLite migrations, embedded at build time.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite database file's name inside the data directory.
pub const DB_FILE: &str = "provd.db";

/// Everything provd keeps durably, in one database: PostgreSQL or a SQLite file.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

#[derive(Debug, Clone)]
enum Db {
    Pg(PgPool),
    /// SQLite allows one writer at a time, so writes go through a pool of one connection
    /// (no `SQLITE_BUSY` between provd's own writers; a write transaction is already
    /// exclusive, which is what PostgreSQL's advisory locks give the distributed mode) and
    /// reads through a pool of several (WAL mode lets them run beside the writer).
    Lite {
        writer: SqlitePool,
        reader: SqlitePool,
        path: PathBuf,
    },
}

/// Which database a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// Where one statement runs: a pool or an open transaction, of either database.
#[derive(Debug)]
pub enum Exec<'a> {
    /// A PostgreSQL pool.
    PgPool(&'a PgPool),
    /// A SQLite pool.
    LitePool(&'a SqlitePool),
    /// A PostgreSQL connection (inside a transaction).
    Pg(&'a mut PgConnection),
    /// A SQLite connection (inside a transaction).
    Lite(&'a mut SqliteConnection),
}

/// An open transaction of either database.
#[derive(Debug)]
pub enum Tx {
    /// On PostgreSQL.
    Pg(Transaction<'static, Postgres>),
    /// On SQLite.
    Lite(Transaction<'static, Sqlite>),
}

impl Tx {
    /// Where the transaction's statements run.
    pub fn exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Pg(tx) => Exec::Pg(&mut *tx),
            Tx::Lite(tx) => Exec::Lite(&mut *tx),
        }
    }

    /// The transaction's database.
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Pg(_) => Backend::Postgres,
            Tx::Lite(_) => Backend::Sqlite,
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), AdapterError> {
        match self {
            Tx::Pg(tx) => tx.commit().await.map_err(AdapterError::Postgres),
            Tx::Lite(tx) => tx.commit().await.map_err(AdapterError::Sqlite),
        }
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), AdapterError> {
        match self {
            Tx::Pg(tx) => tx.rollback().await.map_err(AdapterError::Postgres),
            Tx::Lite(tx) => tx.rollback().await.map_err(AdapterError::Sqlite),
        }
    }
}

/// One statement's text for each database.
#[derive(Debug, Clone)]
pub struct Sql {
    /// For PostgreSQL (`$1` placeholders, `provcache.` schema).
    pub pg: Cow<'static, str>,
    /// For SQLite (`?` placeholders).
    pub lite: Cow<'static, str>,
}

impl Sql {
    /// A statement with different text on each database.
    pub const fn new(pg: &'static str, lite: &'static str) -> Self {
        Sql {
            pg: Cow::Borrowed(pg),
            lite: Cow::Borrowed(lite),
        }
    }

    /// A statement whose text both databases take.
    pub const fn both(sql: &'static str) -> Self {
        Self::new(sql, sql)
    }

    /// A statement built at run time.
    pub fn owned(pg: String, lite: String) -> Self {
        Sql {
            pg: Cow::Owned(pg),
            lite: Cow::Owned(lite),
        }
    }
}

/// Runs one statement on whichever database an [`Exec`] is, with the same binds, and maps
/// sqlx's error to the database's [`AdapterError`] variant.
///
/// * `run!(rows fetch_all, exec, sql, args…)`: rows as a `FromRow` type (`fetch_all`,
///   `fetch_optional`, `fetch_one`);
/// * `run!(scalar fetch_one, exec, sql, args…)`: one column;
/// * `run!(exec, exec, sql, args…)`: rows affected.
macro_rules! run {
    (rows $how:ident, $exec:expr, $sql:expr $(, $arg:expr)* $(,)?) => {{
        let sql: &$crate::storage::Sql = &$sql;
        match $exec {
            $crate::storage::Exec::PgPool(e) => sqlx::query_as(sqlx::AssertSqlSafe(&*sql.pg))
                $(.bind($arg))*.$how(e).await.map_err($crate::adapters::AdapterError::Postgres),
            $crate::storage::Exec::Pg(e) => sqlx::query_as(sqlx::AssertSqlSafe(&*sql.pg))
                $(.bind($arg))*.$how(&mut *e).await.map_err($crate::adapters::AdapterError::Postgres),
            $crate::storage::Exec::LitePool(e) => sqlx::query_as(sqlx::AssertSqlSafe(&*sql.lite))
                $(.bind($arg))*.$how(e).await.map_err($crate::adapters::AdapterError::Sqlite),
            $crate::storage::Exec::Lite(e) => sqlx::query_as(sqlx::AssertSqlSafe(&*sql.lite))
                $(.bind($arg))*.$how(&mut *e).await.map_err($crate::adapters::AdapterError::Sqlite),
        }
    }};
    (scalar $how:ident, $exec:expr, $sql:expr $(, $arg:expr)* $(,)?) => {{
        let sql: &$crate::storage::Sql = &$sql;
        match $exec {
            $crate::storage::Exec::PgPool(e) => sqlx::query_scalar(sqlx::AssertSqlSafe(&*sql.pg))
                $(.bind($arg))*.$how(e).await.map_err($crate::adapters::AdapterError::Postgres),
            $crate::storage::Exec::Pg(e) => sqlx::query_scalar(sqlx::AssertSqlSafe(&*sql.pg))
                $(.bind($arg))*.$how(&mut *e).await.map_err($crate::adapters::AdapterError::Postgres),
            $crate::storage::Exec::LitePool(e) => sqlx::query_scalar(sqlx::AssertSqlSafe(&*sql.lite))
                $(.bind($arg))*.$how(e).await.map_err($crate::adapters::AdapterError::Sqlite),
            $crate::storage::Exec::Lite(e) => sqlx::query_scalar(sqlx::AssertSqlSafe(&*sql.lite))
                $(.bind($arg))*.$how(&mut *e).await.map_err($crate::adapters::AdapterError::Sqlite),
        }
    }};
    (exec, $exec:expr, $sql:expr $(, $arg:expr)* $(,)?) => {{
        let sql: &$crate::storage::Sql = &$sql;
        match $exec {
            $crate::storage::Exec::PgPool(e) => sqlx::query(sqlx::AssertSqlSafe(&*sql.pg))
                $(.bind($arg))*.execute(e).await.map(|r| r.rows_affected())
                .map_err($crate::adapters::AdapterError::Postgres),
            $crate::storage::Exec::Pg(e) => sqlx::query(sqlx::AssertSqlSafe(&*sql.pg))
                $(.bind($arg))*.execute(&mut *e).await.map(|r| r.rows_affected())
                .map_err($crate::adapters::AdapterError::Postgres),
            $crate::storage::Exec::LitePool(e) => sqlx::query(sqlx::AssertSqlSafe(&*sql.lite))
                $(.bind($arg))*.execute(e).await.map(|r| r.rows_affected())
                .map_err($crate::adapters::AdapterError::Sqlite),
            $crate::storage::Exec::Lite(e) => sqlx::query(sqlx::AssertSqlSafe(&*sql.lite))
                $(.bind($arg))*.execute(&mut *e).await.map(|r| r.rows_affected())
                .map_err($crate::adapters::AdapterError::Sqlite),
        }
    }};
}
pub(crate) use run;

impl Store {
    /// Connects to PostgreSQL, creating the database first if it does not exist.
    pub async fn connect_postgres(url: &str) -> Result<Self, AdapterError> {
        if !Postgres::database_exists(url).await? {
            tracing::info!("creating database");
            Postgres::create_database(url).await?;
        }
        let opts = PgConnectOptions::from_str(url)?;
        let port = opts.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx 0.9.0 leaves Nagle on; see `tcp_nodelay`.
            .after_connect(move |_conn, _meta| {
                Box::pin(async move {
                    crate::adapters::tcp_nodelay::set_on_sockets_to(port);
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(Store::from_pg_pool(pool))
    }

    /// A store on an existing PostgreSQL pool.
    pub fn from_pg_pool(pool: PgPool) -> Self {
        Store { db: Db::Pg(pool) }
    }

    /// Opens (creating if needed) `provd.db` in `data_dir`, which is created too.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, AdapterError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            AdapterError::Corrupt(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        Self::open_sqlite_file(&data_dir.join(DB_FILE)).await
    }

    /// Opens (creating if needed) the SQLite database file at `path`.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, AdapterError> {
        let lite = |e| AdapterError::Sqlite(e);
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(lite)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction when the process dies (a
            // power loss may take the last ones, as JetStream's periodic sync may); FULL
            // would fsync every commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await
            .map_err(lite)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.read_only(true))
            .await
            .map_err(lite)?;
        Ok(Store {
            db: Db::Lite {
                writer,
                reader,
                path: path.to_owned(),
            },
        })
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Pg(_) => Backend::Postgres,
            Db::Lite { .. } => Backend::Sqlite,
        }
    }

    /// `postgres` or `sqlite`: the service in probes, metrics and messages.
    pub fn service(&self) -> Service {
        match self.db {
            Db::Pg(_) => Service::Postgres,
            Db::Lite { .. } => Service::Sqlite,
        }
    }

    /// The PostgreSQL pool, in distributed mode.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Pg(pool) => Some(pool),
            Db::Lite { .. } => None,
        }
    }

    /// The SQLite pool every write goes through (one connection), in embedded mode: the
    /// in-process bus shares it, so its streams and the store's rows commit one at a time.
    pub fn sqlite_writer(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Pg(_) => None,
            Db::Lite { writer, .. } => Some(writer),
        }
    }

    /// The SQLite pool reads go through, in embedded mode.
    pub fn sqlite_reader(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Pg(_) => None,
            Db::Lite { reader, .. } => Some(reader),
        }
    }

    /// The SQLite database file, in embedded mode.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.db {
            Db::Pg(_) => None,
            Db::Lite { path, .. } => Some(path),
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), AdapterError> {
        match &self.db {
            Db::Pg(pool) => PG_MIGRATOR.run(pool).await?,
            Db::Lite { writer, .. } => SQLITE_MIGRATOR.run(writer).await?,
        }
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), AdapterError> {
        run!(exec, self.read(), Sql::both("SELECT 1"))?;
        Ok(())
    }

    /// Where a read runs: the pool (PostgreSQL) or the readers (SQLite).
    pub fn read(&self) -> Exec<'_> {
        match &self.db {
            Db::Pg(pool) => Exec::PgPool(pool),
            Db::Lite { reader, .. } => Exec::LitePool(reader),
        }
    }

    /// Where a write outside a transaction runs: the pool (PostgreSQL) or the one writer
    /// connection (SQLite).
    pub fn write(&self) -> Exec<'_> {
        match &self.db {
            Db::Pg(pool) => Exec::PgPool(pool),
            Db::Lite { writer, .. } => Exec::LitePool(writer),
        }
    }

    /// Begins a write transaction (on SQLite, on the one writer connection).
    pub async fn begin(&self) -> Result<Tx, AdapterError> {
        self.begin_on(false).await
    }

    /// Begins a read-only snapshot: several reads that see one state of the database.
    pub async fn begin_read(&self) -> Result<Tx, AdapterError> {
        self.begin_on(true).await
    }

    /// Begins a write transaction whose commit does not wait for PostgreSQL's WAL flush
    /// (`synchronous_commit = off`): for writes a crash may lose because they are redone
    /// (a replay, a replay checkpoint), and the WAL never keeps a later one without them.
    pub async fn begin_relaxed(&self) -> Result<Tx, AdapterError> {
        let mut tx = self.begin().await?;
        if tx.backend() == Backend::Postgres {
            run!(
                exec,
                tx.exec(),
                Sql::new("SET LOCAL synchronous_commit = off", "")
            )?;
        }
        Ok(tx)
    }

    async fn begin_on(&self, read: bool) -> Result<Tx, AdapterError> {
        match &self.db {
            Db::Pg(pool) => pool
                .begin()
                .await
                .map(Tx::Pg)
                .map_err(AdapterError::Postgres),
            Db::Lite { writer, reader, .. } => if read { reader } else { writer }
                .begin()
                .await
                .map(Tx::Lite)
                .map_err(AdapterError::Sqlite),
        }
    }
}
