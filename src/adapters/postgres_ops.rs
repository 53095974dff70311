//! What operators see of the database: the figures `/api/v1/status`, the dashboard and the
//! sampled gauges read (latest checkpoints, open divergences, invalidations per hour, replay
//! checkpoints per node, submissions by status, the outbox position).
//!
//! Every query is small and bounded (grouped counts, `LIMIT`ed lists), so the status page
//! can be polled every few seconds without weighing on the store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::AdapterError;
use super::postgres::PgStore;

/// Most open divergences listed (the count is always exact).
const MAX_DIVERGENCES: i64 = 50;
/// Hours of invalidation history shown.
pub const INVALIDATION_HOURS: i64 = 24;

/// The latest verified checkpoint of one log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointView {
    /// The configured backend name.
    pub backend: String,
    /// The checkpoint's origin line.
    pub origin: String,
    /// Its tree size.
    pub tree_size: i64,
    /// Its root hash (hex).
    pub root_hash: String,
    /// When it was observed.
    pub observed_at: DateTime<Utc>,
}

/// One divergence not yet acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DivergenceView {
    /// Its id.
    pub id: i64,
    /// The backend.
    pub backend: String,
    /// The log's origin.
    pub origin: String,
    /// What diverged (e.g. `fork`, `rollback`).
    pub kind: String,
    /// When it was detected.
    pub detected_at: DateTime<Utc>,
}

/// One node's replay checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplayView {
    /// The node.
    pub node_id: String,
    /// The last ledger `seq_no` it applied.
    pub checkpoint: i64,
    /// Ledger rows it has not applied (head − checkpoint).
    pub lag: i64,
    /// When the checkpoint last moved.
    pub updated_at: DateTime<Utc>,
}

/// Invalidations recorded in one hour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HourCount {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    /// Ledger rows recorded in it.
    pub count: i64,
}

/// Messages refused for good on one subject for one reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectedCount {
    /// The subject they arrived on.
    pub subject: String,
    /// Why (a `provd_events_rejected_total` reason).
    pub reason: String,
    /// How many are recorded.
    pub count: i64,
}

/// Counts recorded rejections by subject and reason; the same SQL in both stores.
pub(crate) const REJECTED_COUNTS_SQL: &str = "SELECT subject, reason, count(*) AS n \
     FROM prov_rejected_events GROUP BY subject, reason ORDER BY subject, reason";

/// Everything the status page reads from PostgreSQL at once.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct OpsSnapshot {
    /// The latest checkpoint of each (backend, origin).
    pub checkpoints: Vec<CheckpointView>,
    /// How many divergences are open.
    pub open_divergences: i64,
    /// The newest open divergences (at most 50).
    pub divergences: Vec<DivergenceView>,
    /// The ledger's head `seq_no` (0 when empty).
    pub ledger_head: i64,
    /// How far the outbox has published.
    pub outbox_published: i64,
    /// Every node's replay checkpoint.
    pub replay: Vec<ReplayView>,
    /// Invalidations per hour over the last 24 hours (hours without any are absent).
    pub invalidations_per_hour: Vec<HourCount>,
    /// Rekor submissions by status.
    pub submissions_by_status: Vec<(String, i64)>,
    /// Recorded rejections (events, writes, ledger rows) by subject and reason.
    pub rejected: Vec<RejectedCount>,
}

/// The part of [`OpsSnapshot`] the gauge sampler reads every few seconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampledFigures {
    /// The ledger's head `seq_no` (0 when empty).
    pub ledger_head: i64,
    /// How far the outbox has published.
    pub outbox_published: i64,
    /// Every node's replay checkpoint.
    pub replay: Vec<ReplayView>,
    /// Rekor submissions by status.
    pub submissions_by_status: Vec<(String, i64)>,
}

impl PgStore {
    /// Reads the figures behind the sampled gauges.
    pub async fn sampled_figures(&self) -> Result<SampledFigures, AdapterError> {
        let pool = self.pool();
        let ledger_head: i64 =
            sqlx::query_scalar("SELECT coalesce(max(seq_no), 0) FROM provcache.prov_revocations")
                .fetch_one(pool)
                .await?;
        let outbox_published: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(published_seq_no), 0) FROM provcache.prov_ledger_outbox",
        )
        .fetch_one(pool)
        .await?;
        let replay = sqlx::query(
            "SELECT node_id, last_seq_no, updated_at FROM provcache.prov_replay_checkpoints \
             ORDER BY node_id",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            let checkpoint: i64 = r.try_get("last_seq_no")?;
            Ok(ReplayView {
                node_id: r.try_get("node_id")?,
                checkpoint,
                lag: (ledger_head - checkpoint).max(0),
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let submissions_by_status = sqlx::query(
            "SELECT status, count(*) AS n FROM rekor_submissions GROUP BY status ORDER BY status",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(SampledFigures {
            ledger_head,
            outbox_published,
            replay,
            submissions_by_status,
        })
    }

    /// Reads the operator's view of the database.
    pub async fn ops_snapshot(&self) -> Result<OpsSnapshot, AdapterError> {
        let SampledFigures {
            ledger_head,
            outbox_published,
            replay,
            submissions_by_status,
        } = self.sampled_figures().await?;
        let pool = self.pool();
        let checkpoints = sqlx::query(
            "SELECT DISTINCT ON (backend, origin) backend, origin, tree_size, root_hash, observed_at \
             FROM rekor_checkpoints ORDER BY backend, origin, tree_size DESC, observed_at DESC",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(CheckpointView {
                backend: r.try_get("backend")?,
                origin: r.try_get("origin")?,
                tree_size: r.try_get("tree_size")?,
                root_hash: r.try_get("root_hash")?,
                observed_at: r.try_get("observed_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let open_divergences: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM rekor_divergences WHERE acknowledged_at IS NULL",
        )
        .fetch_one(pool)
        .await?;
        let divergences = sqlx::query(
            "SELECT id, backend, origin, kind, detected_at FROM rekor_divergences \
             WHERE acknowledged_at IS NULL ORDER BY detected_at DESC, id DESC LIMIT $1",
        )
        .bind(MAX_DIVERGENCES)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(DivergenceView {
                id: r.try_get("id")?,
                backend: r.try_get("backend")?,
                origin: r.try_get("origin")?,
                kind: r.try_get("kind")?,
                detected_at: r.try_get("detected_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let invalidations_per_hour = sqlx::query(
            "SELECT date_trunc('hour', revoked_at) AS hour, count(*) AS n \
             FROM provcache.prov_revocations \
             WHERE revoked_at > now() - make_interval(hours => $1::int) \
             GROUP BY 1 ORDER BY 1",
        )
        .bind(INVALIDATION_HOURS as i32)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(HourCount {
                hour: r.try_get("hour")?,
                count: r.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let rejected = sqlx::query(sqlx::AssertSqlSafe(
            REJECTED_COUNTS_SQL.replace("FROM ", "FROM provcache."),
        ))
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(RejectedCount {
                subject: r.try_get("subject")?,
                reason: r.try_get("reason")?,
                count: r.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(OpsSnapshot {
            checkpoints,
            open_divergences,
            divergences,
            ledger_head,
            outbox_published,
            replay,
            invalidations_per_hour,
            submissions_by_status,
            rejected,
        })
    }
}
