//! What operators see of embedded mode's SQLite file: the same figures, in the same types,
//! as [`super::postgres_ops`] reads from PostgreSQL.
//!
//! Each call reads in one read transaction, so its figures come from one snapshot of the
//! file (the ledger head and the replay lags computed from it agree).

use chrono::Utc;
use sqlx::{Row, SqliteConnection};

use super::AdapterError;
use super::postgres_ops::{
    CheckpointView, DivergenceView, HourCount, INVALIDATION_HOURS, OpsSnapshot,
    REJECTED_COUNTS_SQL, RejectedCount, ReplayView, SampledFigures,
};
use super::sqlite::{SqliteResult, SqliteStore, from_micros, to_micros};

/// Most open divergences listed (the count is always exact), as in PostgreSQL.
const MAX_DIVERGENCES: i64 = 50;
/// One hour in the stored unit.
const HOUR_MICROS: i64 = 3_600_000_000;

async fn sampled_on(conn: &mut SqliteConnection) -> Result<SampledFigures, AdapterError> {
    let ledger_head: i64 =
        sqlx::query_scalar("SELECT coalesce(max(seq_no), 0) FROM prov_revocations")
            .fetch_one(&mut *conn)
            .await
            .sq()?;
    let outbox_published: i64 =
        sqlx::query_scalar("SELECT coalesce(max(published_seq_no), 0) FROM prov_ledger_outbox")
            .fetch_one(&mut *conn)
            .await
            .sq()?;
    let replay = sqlx::query(
        "SELECT node_id, last_seq_no, updated_at FROM prov_replay_checkpoints ORDER BY node_id",
    )
    .fetch_all(&mut *conn)
    .await
    .sq()?
    .into_iter()
    .map(|r| {
        let checkpoint: i64 = r.try_get("last_seq_no")?;
        Ok(ReplayView {
            node_id: r.try_get("node_id")?,
            checkpoint,
            lag: (ledger_head - checkpoint).max(0),
            updated_at: from_micros(r.try_get("updated_at")?),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .sq()?;
    let submissions_by_status = sqlx::query(
        "SELECT status, count(*) AS n FROM rekor_submissions GROUP BY status ORDER BY status",
    )
    .fetch_all(&mut *conn)
    .await
    .sq()?
    .into_iter()
    .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .sq()?;
    Ok(SampledFigures {
        ledger_head,
        outbox_published,
        replay,
        submissions_by_status,
    })
}

impl SqliteStore {
    /// Reads the figures behind the sampled gauges.
    pub async fn sampled_figures(&self) -> Result<SampledFigures, AdapterError> {
        let mut tx = self.reader().begin().await.sq()?;
        let figures = sampled_on(&mut tx).await?;
        tx.commit().await.sq()?;
        Ok(figures)
    }

    /// Reads the operator's view of the database.
    pub async fn ops_snapshot(&self) -> Result<OpsSnapshot, AdapterError> {
        let mut tx = self.reader().begin().await.sq()?;
        let SampledFigures {
            ledger_head,
            outbox_published,
            replay,
            submissions_by_status,
        } = sampled_on(&mut tx).await?;
        // PostgreSQL's `DISTINCT ON (backend, origin)`: the first row of each pair in the
        // same order, picked with a window function.
        let checkpoints = sqlx::query(
            "SELECT backend, origin, tree_size, root_hash, observed_at FROM ( \
               SELECT backend, origin, tree_size, root_hash, observed_at, row_number() OVER ( \
                 PARTITION BY backend, origin ORDER BY tree_size DESC, observed_at DESC) AS rn \
               FROM rekor_checkpoints) \
             WHERE rn = 1 ORDER BY backend, origin",
        )
        .fetch_all(&mut *tx)
        .await
        .sq()?
        .into_iter()
        .map(|r| {
            Ok(CheckpointView {
                backend: r.try_get("backend")?,
                origin: r.try_get("origin")?,
                tree_size: r.try_get("tree_size")?,
                root_hash: r.try_get("root_hash")?,
                observed_at: from_micros(r.try_get("observed_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .sq()?;
        let open_divergences: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM rekor_divergences WHERE acknowledged_at IS NULL",
        )
        .fetch_one(&mut *tx)
        .await
        .sq()?;
        let divergences = sqlx::query(
            "SELECT id, backend, origin, kind, detected_at FROM rekor_divergences \
             WHERE acknowledged_at IS NULL ORDER BY detected_at DESC, id DESC LIMIT ?1",
        )
        .bind(MAX_DIVERGENCES)
        .fetch_all(&mut *tx)
        .await
        .sq()?
        .into_iter()
        .map(|r| {
            Ok(DivergenceView {
                id: r.try_get("id")?,
                backend: r.try_get("backend")?,
                origin: r.try_get("origin")?,
                kind: r.try_get("kind")?,
                detected_at: from_micros(r.try_get("detected_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .sq()?;
        // PostgreSQL's `date_trunc('hour', revoked_at)` on microseconds since the epoch
        // (whole hours since the epoch are UTC hours).
        let since = to_micros(Utc::now()) - INVALIDATION_HOURS * HOUR_MICROS;
        let invalidations_per_hour = sqlx::query(
            "SELECT (revoked_at / ?2) * ?2 AS hour, count(*) AS n FROM prov_revocations \
             WHERE revoked_at > ?1 GROUP BY 1 ORDER BY 1",
        )
        .bind(since)
        .bind(HOUR_MICROS)
        .fetch_all(&mut *tx)
        .await
        .sq()?
        .into_iter()
        .map(|r| {
            Ok(HourCount {
                hour: from_micros(r.try_get("hour")?),
                count: r.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .sq()?;
        let rejected = sqlx::query(REJECTED_COUNTS_SQL)
            .fetch_all(&mut *tx)
            .await
            .sq()?
            .into_iter()
            .map(|r| {
                Ok(RejectedCount {
                    subject: r.try_get("subject")?,
                    reason: r.try_get("reason")?,
                    count: r.try_get("n")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .sq()?;
        tx.commit().await.sq()?;
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
