//! The SQLite store of embedded mode: one file in the data directory holds everything the
//! PostgreSQL store holds, and the in-process bus's streams too.
//!
//! SQLite allows one writer at a time, so writes go through a pool of one connection (no
//! `SQLITE_BUSY` between provd's own writers; a write transaction is already exclusive, which
//! is what PostgreSQL's advisory locks give the distributed mode) and reads through a pool
//! of several (WAL mode lets them run beside the writer). Times are stored as integer
//! microseconds since the Unix epoch so they compare and sort as numbers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::AdapterError;

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "provd.db";

/// The SQLite-backed store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
}

/// Turns sqlx's errors into [`AdapterError::Sqlite`] (`.sq()?`), since `?` alone would
/// label them PostgreSQL's.
pub trait SqliteResult<T> {
    /// The result with a SQLite error.
    fn sq(self) -> Result<T, AdapterError>;
}

impl<T> SqliteResult<T> for Result<T, sqlx::Error> {
    fn sq(self) -> Result<T, AdapterError> {
        self.map_err(AdapterError::Sqlite)
    }
}

/// Microseconds since the Unix epoch, as stored.
pub fn to_micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time back (out-of-range values clamp to the epoch).
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl SqliteStore {
    /// Opens (creating if needed) `provd.db` in `data_dir`, which is created too.
    pub async fn open(data_dir: &Path) -> Result<Self, AdapterError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            AdapterError::Corrupt(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        Self::open_file(&data_dir.join(DB_FILE)).await
    }

    /// Opens (creating if needed) the database file at `path`.
    pub async fn open_file(path: &Path) -> Result<Self, AdapterError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .sq()?
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
            .sq()?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.read_only(true))
            .await
            .sq()?;
        Ok(SqliteStore {
            writer,
            reader,
            path: path.to_owned(),
        })
    }

    /// The pool every write goes through (one connection).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool reads go through.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), AdapterError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), AdapterError> {
        sqlx::query("SELECT 1").execute(&self.reader).await.sq()?;
        Ok(())
    }
}
