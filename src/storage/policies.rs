//! Named policy documents (`prov_policies`): every version of every name kept, the highest
//! version current.
//!
//! A PUT reads the current version and inserts the next in one transaction, so concurrent
//! PUTs of one name run one after the other: versions 1, 2, 3… with no gap or duplicate and
//! no error to either caller. PostgreSQL orders them with a per-name advisory lock (a row
//! lock cannot serve: a new name has no row yet); SQLite's one writer connection already
//! does. The values are checked before any SQL ([`check_policy_row`]), so a refusal by the
//! database should not happen.

use actors::domain::policy;
use actors::ports::{PolicyPut, PolicyStore, PortError, StoredPolicy};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::FromRow;

use super::codec::{Json, Time};
use super::{Backend, Sql, Store, run};

/// The first key of the per-name advisory lock (`pg_advisory_xact_lock(int4, int4)`, whose
/// key space is apart from the single-`bigint` locks such as the flush lock); the second is
/// `hashtext(name)`. Two names sharing a hash only wait for each other.
const POLICY_LOCK_CLASS: i32 = 0x706f_6c69;

#[derive(FromRow)]
struct PolicyRow {
    name: String,
    version: i64,
    policy_hash: String,
    document: Json,
    created_at: Time,
}

impl From<PolicyRow> for StoredPolicy {
    fn from(r: PolicyRow) -> Self {
        StoredPolicy {
            name: r.name,
            version: r.version,
            policy_hash: r.policy_hash,
            document: r.document.0,
            created_at: r.created_at.0,
        }
    }
}

const CURRENT: Sql = Sql::new(
    "SELECT name, version, policy_hash, document, created_at FROM provcache.prov_policies \
     WHERE name = $1 ORDER BY version DESC LIMIT 1",
    "SELECT name, version, policy_hash, document, created_at FROM prov_policies \
     WHERE name = ?1 ORDER BY version DESC LIMIT 1",
);

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

#[async_trait]
impl PolicyStore for Store {
    async fn put_policy(
        &self,
        name: &str,
        policy_hash: &str,
        document: &serde_json::Value,
    ) -> Result<PolicyPut, PortError> {
        check_policy_row(name, policy_hash, document)?;
        let mut tx = self.begin().await?;
        if tx.backend() == Backend::Postgres {
            run!(
                exec,
                tx.exec(),
                Sql::new("SELECT pg_advisory_xact_lock($1, hashtext($2))", ""),
                POLICY_LOCK_CLASS,
                name
            )?;
        }
        let current: Option<PolicyRow> = run!(rows fetch_optional, tx.exec(), CURRENT, name)?;
        let current = match current {
            Some(c) if c.policy_hash == policy_hash => {
                tx.rollback().await?;
                return Ok(PolicyPut::Unchanged(c.into()));
            }
            other => other,
        };
        let version = current.as_ref().map_or(1, |c| c.version + 1);
        // Stamped after the lock: a later version never looks older than the one it
        // replaced.
        let stored: PolicyRow = run!(
            rows fetch_one,
            tx.exec(),
            Sql::new(
                "INSERT INTO provcache.prov_policies (name, version, policy_hash, document, \
                 created_at) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING name, version, policy_hash, document, created_at",
                "INSERT INTO prov_policies (name, version, policy_hash, document, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 RETURNING name, version, policy_hash, document, created_at",
            ),
            name,
            version,
            policy_hash,
            Json(document.clone()),
            Time(Utc::now())
        )?;
        tx.commit().await?;
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
        let row: Option<PolicyRow> = run!(rows fetch_optional, self.read(), CURRENT, name)?;
        Ok(row.map(StoredPolicy::from))
    }

    async fn policies(&self) -> Result<Vec<StoredPolicy>, PortError> {
        let rows: Vec<PolicyRow> = run!(
            rows fetch_all,
            self.read(),
            Sql::new(
                "SELECT DISTINCT ON (name) name, version, policy_hash, document, created_at \
                 FROM provcache.prov_policies ORDER BY name, version DESC",
                // DISTINCT ON's equivalent: the highest version of each name, by the key.
                "SELECT name, version, policy_hash, document, created_at FROM prov_policies \
                 AS p WHERE version = \
                 (SELECT MAX(version) FROM prov_policies WHERE name = p.name) ORDER BY name",
            )
        )?;
        Ok(rows.into_iter().map(StoredPolicy::from).collect())
    }

    async fn policy_by_hash(&self, policy_hash: &str) -> Result<Option<StoredPolicy>, PortError> {
        if !policy::is_policy_hash(policy_hash) {
            return Ok(None);
        }
        // The newest version with the hash: a document stored under several names (or
        // again after another) is the same policy whichever row answers.
        let row: Option<PolicyRow> = run!(
            rows fetch_optional,
            self.read(),
            Sql::new(
                "SELECT name, version, policy_hash, document, created_at \
                 FROM provcache.prov_policies WHERE policy_hash = $1 \
                 ORDER BY created_at DESC, name, version DESC LIMIT 1",
                "SELECT name, version, policy_hash, document, created_at FROM prov_policies \
                 WHERE policy_hash = ?1 ORDER BY created_at DESC, name, version DESC LIMIT 1",
            ),
            policy_hash
        )?;
        Ok(row.map(StoredPolicy::from))
    }
}
