//! What operators see of the database: the figures `/api/v1/status`, the dashboard and the
//! sampled gauges read (latest checkpoints, open divergences, invalidations per hour, replay
//! checkpoints per node, submissions by status, the outbox position, recorded rejections).
//!
//! Every query is small and bounded (grouped counts, `LIMIT`ed lists), so the status page
//! can be polled every few seconds without weighing on the store. Nothing here writes.
//! Each call reads in one read transaction: on SQLite its figures come from one snapshot
//! of the file (the ledger head and the replay lags computed from it agree); PostgreSQL's
//! READ COMMITTED reads each statement apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::codec::Time;
use super::{Sql, Store, Tx, run};
use crate::adapters::AdapterError;

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

/// Everything the status page reads from the database at once.
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

#[derive(FromRow)]
struct CheckpointRow {
    backend: String,
    origin: String,
    tree_size: i64,
    root_hash: String,
    observed_at: Time,
}

#[derive(FromRow)]
struct DivergenceRow {
    id: i64,
    backend: String,
    origin: String,
    kind: String,
    detected_at: Time,
}

#[derive(FromRow)]
struct ReplayRow {
    node_id: String,
    last_seq_no: i64,
    updated_at: Time,
}

#[derive(FromRow)]
struct HourRow {
    hour: Time,
    n: i64,
}

#[derive(FromRow)]
struct RejectedRow {
    subject: String,
    reason: String,
    n: i64,
}

/// Counts recorded rejections by subject and reason (the entries capability writes them;
/// the count is read here so the status page needs nothing else).
const REJECTED_COUNTS_SQL: Sql = Sql::new(
    "SELECT subject, reason, count(*) AS n FROM provcache.prov_rejected_events \
     GROUP BY subject, reason ORDER BY subject, reason",
    "SELECT subject, reason, count(*) AS n FROM prov_rejected_events \
     GROUP BY subject, reason ORDER BY subject, reason",
);

/// Reads the sampled figures inside `tx`.
async fn sampled_on(tx: &mut Tx) -> Result<SampledFigures, AdapterError> {
    let ledger_head: i64 = run!(
        scalar fetch_one,
        tx.exec(),
        Sql::new(
            "SELECT coalesce(max(seq_no), 0) FROM provcache.prov_revocations",
            "SELECT coalesce(max(seq_no), 0) FROM prov_revocations",
        )
    )?;
    let outbox_published: i64 = run!(
        scalar fetch_one,
        tx.exec(),
        Sql::new(
            "SELECT coalesce(max(published_seq_no), 0) FROM provcache.prov_ledger_outbox",
            "SELECT coalesce(max(published_seq_no), 0) FROM prov_ledger_outbox",
        )
    )?;
    let replay: Vec<ReplayRow> = run!(
        rows fetch_all,
        tx.exec(),
        Sql::new(
            "SELECT node_id, last_seq_no, updated_at FROM provcache.prov_replay_checkpoints \
             ORDER BY node_id",
            "SELECT node_id, last_seq_no, updated_at FROM prov_replay_checkpoints \
             ORDER BY node_id",
        )
    )?;
    let replay = replay
        .into_iter()
        .map(|r| ReplayView {
            node_id: r.node_id,
            checkpoint: r.last_seq_no,
            lag: (ledger_head - r.last_seq_no).max(0),
            updated_at: r.updated_at.0,
        })
        .collect();
    let submissions_by_status: Vec<(String, i64)> = run!(
        rows fetch_all,
        tx.exec(),
        Sql::both(
            "SELECT status, count(*) AS n FROM rekor_submissions GROUP BY status ORDER BY status"
        )
    )?;
    Ok(SampledFigures {
        ledger_head,
        outbox_published,
        replay,
        submissions_by_status,
    })
}

impl Store {
    /// Reads the figures behind the sampled gauges.
    pub async fn sampled_figures(&self) -> Result<SampledFigures, AdapterError> {
        let mut tx = self.begin_read().await?;
        let figures = sampled_on(&mut tx).await?;
        tx.commit().await?;
        Ok(figures)
    }

    /// Reads the operator's view of the database.
    pub async fn ops_snapshot(&self) -> Result<OpsSnapshot, AdapterError> {
        let mut tx = self.begin_read().await?;
        let SampledFigures {
            ledger_head,
            outbox_published,
            replay,
            submissions_by_status,
        } = sampled_on(&mut tx).await?;
        let checkpoints: Vec<CheckpointRow> = run!(
            rows fetch_all,
            tx.exec(),
            Sql::new(
                "SELECT DISTINCT ON (backend, origin) backend, origin, tree_size, root_hash, \
                 observed_at FROM rekor_checkpoints \
                 ORDER BY backend, origin, tree_size DESC, observed_at DESC",
                // DISTINCT ON's equivalent: the first row of each pair in the same order,
                // picked with a window function.
                "SELECT backend, origin, tree_size, root_hash, observed_at FROM ( \
                   SELECT backend, origin, tree_size, root_hash, observed_at, row_number() \
                   OVER (PARTITION BY backend, origin ORDER BY tree_size DESC, \
                   observed_at DESC) AS rn FROM rekor_checkpoints) \
                 WHERE rn = 1 ORDER BY backend, origin",
            )
        )?;
        let open_divergences: i64 = run!(
            scalar fetch_one,
            tx.exec(),
            Sql::both("SELECT count(*) FROM rekor_divergences WHERE acknowledged_at IS NULL")
        )?;
        let divergences: Vec<DivergenceRow> = run!(
            rows fetch_all,
            tx.exec(),
            Sql::new(
                "SELECT id, backend, origin, kind, detected_at FROM rekor_divergences \
                 WHERE acknowledged_at IS NULL ORDER BY detected_at DESC, id DESC LIMIT $1",
                "SELECT id, backend, origin, kind, detected_at FROM rekor_divergences \
                 WHERE acknowledged_at IS NULL ORDER BY detected_at DESC, id DESC LIMIT ?1",
            ),
            MAX_DIVERGENCES
        )?;
        // The window starts by provd's clock, bound, so both databases take one bind.
        let since = Time(Utc::now() - chrono::Duration::hours(INVALIDATION_HOURS));
        let per_hour: Vec<HourRow> = run!(
            rows fetch_all,
            tx.exec(),
            Sql::new(
                "SELECT date_trunc('hour', revoked_at) AS hour, count(*) AS n \
                 FROM provcache.prov_revocations WHERE revoked_at > $1 \
                 GROUP BY 1 ORDER BY 1",
                // `date_trunc('hour', …)` on microseconds since the epoch (3 600 000 000 to
                // the hour; whole hours since the epoch are UTC hours).
                "SELECT (revoked_at / 3600000000) * 3600000000 AS hour, count(*) AS n \
                 FROM prov_revocations WHERE revoked_at > ?1 GROUP BY 1 ORDER BY 1",
            ),
            since
        )?;
        let rejected: Vec<RejectedRow> = run!(rows fetch_all, tx.exec(), REJECTED_COUNTS_SQL)?;
        tx.commit().await?;
        Ok(OpsSnapshot {
            checkpoints: checkpoints
                .into_iter()
                .map(|r| CheckpointView {
                    backend: r.backend,
                    origin: r.origin,
                    tree_size: r.tree_size,
                    root_hash: r.root_hash,
                    observed_at: r.observed_at.0,
                })
                .collect(),
            open_divergences,
            divergences: divergences
                .into_iter()
                .map(|r| DivergenceView {
                    id: r.id,
                    backend: r.backend,
                    origin: r.origin,
                    kind: r.kind,
                    detected_at: r.detected_at.0,
                })
                .collect(),
            ledger_head,
            outbox_published,
            replay,
            invalidations_per_hour: per_hour
                .into_iter()
                .map(|r| HourCount {
                    hour: r.hour.0,
                    count: r.n,
                })
                .collect(),
            submissions_by_status,
            rejected: rejected
                .into_iter()
                .map(|r| RejectedCount {
                    subject: r.subject,
                    reason: r.reason,
                    count: r.n,
                })
                .collect(),
        })
    }
}
