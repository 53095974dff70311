//! Policies in embedded mode's SQLite file (`prov_policies`), with the PostgreSQL adapter's
//! semantics: every version kept, the highest current.
//!
//! A PUT reads the current version and inserts the next in one transaction on the store's
//! single writer connection, so concurrent PUTs are serialised without a lock of their own.

use actors::domain::policy;
use actors::ports::{PolicyPut, PolicyStore, PortError, StoredPolicy};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::FromRow;

use super::AdapterError;
use super::postgres_policies::check_policy_row;
use super::sqlite::{SqliteStore, from_micros, to_micros};

#[derive(FromRow)]
struct PolicyRow {
    name: String,
    version: i64,
    policy_hash: String,
    document: String,
    created_at: i64,
}

impl TryFrom<PolicyRow> for StoredPolicy {
    type Error = PortError;
    fn try_from(r: PolicyRow) -> Result<Self, PortError> {
        let document = serde_json::from_str(&r.document).map_err(|e| {
            PortError::from(AdapterError::Corrupt(format!(
                "prov_policies.document of {} version {}: {e}",
                r.name, r.version
            )))
        })?;
        Ok(StoredPolicy {
            name: r.name,
            version: r.version,
            policy_hash: r.policy_hash,
            document,
            created_at: from_micros(r.created_at),
        })
    }
}

const COLUMNS: &str = "name, version, policy_hash, document, created_at";

fn select(rest: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM prov_policies {rest}"))
}

/// The store's one classification of database errors ([`super::AdapterError`]).
fn sqlite_error(e: sqlx::Error) -> PortError {
    super::AdapterError::Sqlite(e).into()
}

fn stored(rows: Vec<PolicyRow>) -> Result<Vec<StoredPolicy>, PortError> {
    rows.into_iter().map(StoredPolicy::try_from).collect()
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn put_policy(
        &self,
        name: &str,
        policy_hash: &str,
        document: &serde_json::Value,
    ) -> Result<PolicyPut, PortError> {
        check_policy_row(name, policy_hash, document)?;
        let text = serde_json::to_string(document)
            .map_err(|e| PortError::Rejected(format!("cannot encode the document: {e}")))?;
        let mut tx = self.writer().begin().await.map_err(sqlite_error)?;
        let current: Option<PolicyRow> =
            sqlx::query_as(select("WHERE name = ?1 ORDER BY version DESC LIMIT 1"))
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sqlite_error)?;
        let current = match current {
            Some(c) if c.policy_hash == policy_hash => {
                tx.rollback().await.map_err(sqlite_error)?;
                return Ok(PolicyPut::Unchanged(c.try_into()?));
            }
            other => other,
        };
        let version = current.as_ref().map_or(1, |c| c.version + 1);
        let row: PolicyRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO prov_policies (name, version, policy_hash, document, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {COLUMNS}"
        )))
        .bind(name)
        .bind(version)
        .bind(policy_hash)
        .bind(text)
        .bind(to_micros(Utc::now()))
        .fetch_one(&mut *tx)
        .await
        .map_err(sqlite_error)?;
        tx.commit().await.map_err(sqlite_error)?;
        Ok(match current {
            None => PolicyPut::Created(row.try_into()?),
            Some(previous) => PolicyPut::Replaced {
                current: row.try_into()?,
                previous: previous.try_into()?,
            },
        })
    }

    async fn policy(&self, name: &str) -> Result<Option<StoredPolicy>, PortError> {
        if policy::check_name(name).is_err() {
            return Ok(None);
        }
        let row: Option<PolicyRow> =
            sqlx::query_as(select("WHERE name = ?1 ORDER BY version DESC LIMIT 1"))
                .bind(name)
                .fetch_optional(self.reader())
                .await
                .map_err(sqlite_error)?;
        row.map(StoredPolicy::try_from).transpose()
    }

    async fn policies(&self) -> Result<Vec<StoredPolicy>, PortError> {
        // PostgreSQL's DISTINCT ON: the highest version of each name, served by the key.
        let rows: Vec<PolicyRow> = sqlx::query_as(select(
            "AS p WHERE version = (SELECT MAX(version) FROM prov_policies WHERE name = p.name) \
             ORDER BY name",
        ))
        .fetch_all(self.reader())
        .await
        .map_err(sqlite_error)?;
        stored(rows)
    }

    async fn policy_by_hash(&self, policy_hash: &str) -> Result<Option<StoredPolicy>, PortError> {
        if !policy::is_policy_hash(policy_hash) {
            return Ok(None);
        }
        let row: Option<PolicyRow> = sqlx::query_as(select(
            "WHERE policy_hash = ?1 ORDER BY created_at DESC, name, version DESC LIMIT 1",
        ))
        .bind(policy_hash)
        .fetch_optional(self.reader())
        .await
        .map_err(sqlite_error)?;
        row.map(StoredPolicy::try_from).transpose()
    }
}
