//! Policies in PostgreSQL (`provcache.prov_policies`): every version of every named policy
//! document, the highest version current.
//!
//! A PUT runs in one transaction under a per-name advisory lock, so concurrent PUTs of one
//! name read and insert one after the other: versions 1, 2, 3… with no gap or duplicate and
//! no error to either caller (a row lock cannot serve: a new name has no row yet). The
//! errors say who is at fault: `Unavailable` when the database cannot be reached or asks
//! for another try, `Rejected` when it refuses the values, which are checked before any SQL
//! ([`check_policy_row`]) so that should not happen.

use actors::domain::policy;
use actors::ports::{PolicyPut, PolicyStore, PortError, StoredPolicy};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::postgres::PgStore;

/// The first key of the per-name advisory lock (`pg_advisory_xact_lock(int4, int4)`, whose
/// key space is apart from the single-`bigint` locks such as the flush lock); the second is
/// `hashtext(name)`. Two names sharing a hash only wait for each other.
const POLICY_LOCK_CLASS: i32 = 0x706f_6c69;

#[derive(FromRow)]
struct PolicyRow {
    name: String,
    version: i64,
    policy_hash: String,
    document: serde_json::Value,
    created_at: DateTime<Utc>,
}

impl From<PolicyRow> for StoredPolicy {
    fn from(r: PolicyRow) -> Self {
        StoredPolicy {
            name: r.name,
            version: r.version,
            policy_hash: r.policy_hash,
            document: r.document,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "name, version, policy_hash, document, created_at";

fn select(rest: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM provcache.prov_policies {rest}"
    ))
}

/// Refuses what the schema would refuse, before any SQL: a bad name, a hash in another
/// spelling, a document that is not a JSON object.
pub(crate) fn check_policy_row(
    name: &str,
    policy_hash: &str,
    document: &serde_json::Value,
) -> Result<(), PortError> {
    policy::check_name(name).map_err(|e| PortError::Rejected(e.to_string()))?;
    if !policy::is_policy_hash(policy_hash) {
        return Err(PortError::Rejected(format!(
            "policy hash {policy_hash:?} is not `sha256:` and 64 lowercase hex digits"
        )));
    }
    if !document.is_object() {
        return Err(PortError::Rejected(
            "a policy document is a JSON object".into(),
        ));
    }
    Ok(())
}

/// The store's one classification of database errors ([`super::AdapterError`]).
fn pg_error(e: sqlx::Error) -> PortError {
    super::AdapterError::Postgres(e).into()
}

#[async_trait]
impl PolicyStore for PgStore {
    async fn put_policy(
        &self,
        name: &str,
        policy_hash: &str,
        document: &serde_json::Value,
    ) -> Result<PolicyPut, PortError> {
        check_policy_row(name, policy_hash, document)?;
        let mut tx = self.pool().begin().await.map_err(pg_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(POLICY_LOCK_CLASS)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let current: Option<PolicyRow> =
            sqlx::query_as(select("WHERE name = $1 ORDER BY version DESC LIMIT 1"))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
        let current = match current {
            Some(c) if c.policy_hash == policy_hash => {
                tx.rollback().await.map_err(pg_error)?;
                return Ok(PolicyPut::Unchanged(c.into()));
            }
            other => other,
        };
        let version = current.as_ref().map_or(1, |c| c.version + 1);
        // clock_timestamp(), not now(): the transaction may have waited for the lock, and a
        // later version should not look older than the one it replaced.
        let stored: PolicyRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO provcache.prov_policies (name, version, policy_hash, document, \
             created_at) VALUES ($1, $2, $3, $4, clock_timestamp()) RETURNING {COLUMNS}"
        )))
        .bind(name)
        .bind(version)
        .bind(policy_hash)
        .bind(document)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(match current {
            None => PolicyPut::Created(stored.into()),
            Some(previous) => PolicyPut::Replaced {
                current: stored.into(),
                previous: previous.into(),
            },
        })
    }

    async fn policy(&self, name: &str) -> Result<Option<StoredPolicy>, PortError> {
        if policy::check_name(name).is_err() {
            return Ok(None);
        }
        let row: Option<PolicyRow> =
            sqlx::query_as(select("WHERE name = $1 ORDER BY version DESC LIMIT 1"))
                .bind(name)
                .fetch_optional(self.pool())
                .await
                .map_err(pg_error)?;
        Ok(row.map(StoredPolicy::from))
    }

    async fn policies(&self) -> Result<Vec<StoredPolicy>, PortError> {
        let rows: Vec<PolicyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT ON (name) {COLUMNS} FROM provcache.prov_policies \
             ORDER BY name, version DESC"
        )))
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(rows.into_iter().map(StoredPolicy::from).collect())
    }

    async fn policy_by_hash(&self, policy_hash: &str) -> Result<Option<StoredPolicy>, PortError> {
        if !policy::is_policy_hash(policy_hash) {
            return Ok(None);
        }
        // The newest version with the hash: a document stored under several names (or
        // again after another) is the same policy whichever row answers.
        let row: Option<PolicyRow> = sqlx::query_as(select(
            "WHERE policy_hash = $1 ORDER BY created_at DESC, name, version DESC LIMIT 1",
        ))
        .bind(policy_hash)
        .fetch_optional(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(row.map(StoredPolicy::from))
    }
}
