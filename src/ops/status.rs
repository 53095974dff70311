//! The status report: one JSON document with the health of every service and actor and the
//! figures an on-call engineer reads first. `GET /api/v1/status` serves it, `/dashboard`
//! draws it, `provd status` prints it.
//!
//! Healthy means: every service answers, every required actor runs, the database's figures
//! could be read, and no divergence is open (a log that forked or rolled back needs a person
//! even while provd itself runs fine).

use std::collections::BTreeMap;

use actors::figures::{Figures, TIERS};
use actors::health::ChildHealth;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::adapters::Service;
use crate::storage::ops::{DivergenceView, HourCount, OpsSnapshot, RejectedCount, ReplayView};

/// One service's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceState {
    /// `ok` or `unreachable`.
    pub status: String,
    /// Why it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The provenance cache's read figures since this process started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheFigures {
    /// Reads answered by some tier.
    pub hits: f64,
    /// Reads no tier could answer.
    pub misses: f64,
    /// hits / (hits + misses); 0 before the first read.
    pub hit_ratio: f64,
}

/// The write-behind queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WriteBehindFigures {
    /// Writes accepted and not yet flushed.
    pub queue_depth: f64,
    /// Age of the oldest unflushed write, seconds.
    pub lag_seconds: f64,
}

/// The Rekor submission queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubmissionFigures {
    /// Submissions waiting in the queue (as the submitter last saw it).
    pub queue_depth: f64,
    /// Submissions dead-lettered and waiting for an operator.
    pub dead_letters: i64,
    /// Stored submissions by status.
    pub by_status: BTreeMap<String, i64>,
}

/// The latest checkpoint of one log, with its age.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointFigures {
    /// Backend name.
    pub backend: String,
    /// Origin.
    pub origin: String,
    /// Tree size.
    pub tree_size: i64,
    /// Root hash.
    pub root_hash: String,
    /// When it was observed.
    pub observed_at: DateTime<Utc>,
    /// Seconds since then.
    pub age_seconds: i64,
}

/// Open divergences.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DivergenceFigures {
    /// How many are open.
    pub open: i64,
    /// The newest of them.
    pub items: Vec<DivergenceView>,
}

/// Invalidations over time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvalidationFigures {
    /// Ledger rows in the last 24 hours.
    pub last_24h: i64,
    /// Per hour (hours without any are absent).
    pub per_hour: Vec<HourCount>,
}

/// The revocation ledger's positions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LedgerFigures {
    /// Highest `seq_no`.
    pub head: i64,
    /// How far the outbox has published.
    pub outbox_published: i64,
    /// head − published.
    pub outbox_lag: i64,
}

/// Messages refused for good (events, cache writes, ledger rows), kept for operators in
/// the rejected-messages table and listed by `GET /api/v1/rejected`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectedFigures {
    /// How many are recorded.
    pub total: i64,
    /// By subject and reason.
    pub by_subject: Vec<RejectedCount>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// The verdict.
    pub healthy: bool,
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// What makes it unhealthy, one line each.
    pub problems: Vec<String>,
    /// The node that answered.
    pub node_id: String,
    /// The deployment it belongs to: the id in its database, the same on every node.
    pub deployment_id: Uuid,
    /// provd's version.
    pub version: String,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// PostgreSQL, Redis, NATS.
    pub services: BTreeMap<String, ServiceState>,
    /// Every supervised actor.
    pub actors: BTreeMap<String, serde_json::Value>,
    /// Cache reads.
    pub cache: CacheFigures,
    /// The write-behind queue.
    pub write_behind: WriteBehindFigures,
    /// The Rekor queue; `None` when the database could not be read.
    pub submissions: Option<SubmissionFigures>,
    /// Latest checkpoint per log.
    pub checkpoints: Option<Vec<CheckpointFigures>>,
    /// Open divergences.
    pub divergences: Option<DivergenceFigures>,
    /// Invalidations over time.
    pub invalidations: Option<InvalidationFigures>,
    /// Replay checkpoint and lag per node.
    pub replay: Option<Vec<ReplayView>>,
    /// Ledger positions.
    pub ledger: Option<LedgerFigures>,
    /// Recorded rejections; absent when the database could not be read.
    #[serde(default)]
    pub rejected: Option<RejectedFigures>,
}

/// What the report is made of.
pub struct Inputs {
    /// This node.
    pub node_id: String,
    /// This deployment.
    pub deployment_id: Uuid,
    /// Each service's probe result.
    pub services: Vec<(String, Result<(), String>)>,
    /// The supervised actors.
    pub actors: BTreeMap<String, ChildHealth>,
    /// Whether every required actor runs.
    pub actors_ready: bool,
    /// The cache and queue figures now (the same numbers `/metrics` shows).
    pub figures: Figures,
    /// The database's figures, or why they could not be read.
    pub snapshot: Result<OpsSnapshot, String>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Builds the report.
pub fn report(inputs: Inputs) -> StatusReport {
    let mut problems = Vec::new();
    let services = inputs
        .services
        .into_iter()
        .map(|(name, r)| {
            let state = match r {
                Ok(()) => ServiceState {
                    status: "ok".into(),
                    error: None,
                },
                Err(e) => {
                    problems.push(format!("{name} is unreachable: {e}"));
                    ServiceState {
                        status: "unreachable".into(),
                        error: Some(e),
                    }
                }
            };
            (name, state)
        })
        .collect();
    if !inputs.actors_ready {
        let before = problems.len();
        for (name, h) in &inputs.actors {
            if h.required && h.status != actors::health::ChildStatus::Running {
                problems.push(match &h.status {
                    actors::health::ChildStatus::Stalled(why) => {
                        format!("{name} is stalled: {why}")
                    }
                    _ => format!("{name} is not running"),
                });
            }
        }
        // Every actor runs, yet a readiness gate is closed (e.g. the ledger catch-up).
        if problems.len() == before {
            problems.push("not ready yet: catching up from the revocation ledger".into());
        }
    }
    let actors = inputs
        .actors
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
        .collect();

    let f = &inputs.figures;
    let hits: f64 = TIERS.iter().map(|t| f.tier(t).hits as f64).sum();
    // A read either hits some tier or misses the last one, the durable store (one of the
    // two in a process; the other stays at zero).
    let misses: f64 = [Service::Postgres, Service::Sqlite]
        .iter()
        .map(|s| s.as_str())
        .map(|t| f.tier(t).misses as f64)
        .sum();
    let cache = CacheFigures {
        hits,
        misses,
        hit_ratio: if hits + misses > 0.0 {
            hits / (hits + misses)
        } else {
            0.0
        },
    };
    let write_behind = WriteBehindFigures {
        queue_depth: f.write_behind_queue_depth,
        lag_seconds: f.write_behind_lag_seconds,
    };
    let queue_depth = f.submission_queue_depth;

    let mut out = StatusReport {
        healthy: false,
        status: String::new(),
        problems: Vec::new(),
        node_id: inputs.node_id,
        deployment_id: inputs.deployment_id,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generated_at: inputs.now,
        services,
        actors,
        cache,
        write_behind,
        submissions: None,
        checkpoints: None,
        divergences: None,
        invalidations: None,
        replay: None,
        ledger: None,
        rejected: None,
    };
    match inputs.snapshot {
        Ok(snap) => {
            let by_status: BTreeMap<String, i64> =
                snap.submissions_by_status.iter().cloned().collect();
            out.submissions = Some(SubmissionFigures {
                queue_depth,
                dead_letters: by_status.get("dead_lettered").copied().unwrap_or(0),
                by_status,
            });
            out.checkpoints = Some(
                snap.checkpoints
                    .iter()
                    .map(|c| CheckpointFigures {
                        backend: c.backend.clone(),
                        origin: c.origin.clone(),
                        tree_size: c.tree_size,
                        root_hash: c.root_hash.clone(),
                        observed_at: c.observed_at,
                        age_seconds: (inputs.now - c.observed_at).num_seconds().max(0),
                    })
                    .collect(),
            );
            if snap.open_divergences > 0 {
                problems.push(format!(
                    "{} divergence(s) open: {}",
                    snap.open_divergences,
                    snap.divergences
                        .iter()
                        .map(|d| format!("{} {} ({})", d.backend, d.kind, d.origin))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            out.divergences = Some(DivergenceFigures {
                open: snap.open_divergences,
                items: snap.divergences,
            });
            out.invalidations = Some(InvalidationFigures {
                last_24h: snap.invalidations_per_hour.iter().map(|h| h.count).sum(),
                per_hour: snap.invalidations_per_hour,
            });
            out.replay = Some(snap.replay);
            out.rejected = Some(RejectedFigures {
                total: snap.rejected.iter().map(|r| r.count).sum(),
                by_subject: snap.rejected,
            });
            out.ledger = Some(LedgerFigures {
                head: snap.ledger_head,
                outbox_published: snap.outbox_published,
                outbox_lag: (snap.ledger_head - snap.outbox_published).max(0),
            });
        }
        Err(e) => problems.push(format!("cannot read the database's figures: {e}")),
    }
    out.healthy = problems.is_empty();
    out.status = if out.healthy { "healthy" } else { "unhealthy" }.into();
    out.problems = problems;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::figures::TierFigures;
    use actors::health::ChildStatus;

    fn inputs() -> Inputs {
        Inputs {
            node_id: "n1".into(),
            deployment_id: Uuid::nil(),
            services: vec![("postgres".into(), Ok(())), ("redis".into(), Ok(()))],
            actors: [(
                "write-behind".to_owned(),
                ChildHealth {
                    status: ChildStatus::Running,
                    required: true,
                    restarts: 0,
                },
            )]
            .into(),
            actors_ready: true,
            figures: Figures {
                tiers: vec![
                    TierFigures {
                        tier: "memory",
                        hits: 3,
                        misses: 1,
                    },
                    TierFigures {
                        tier: "postgres",
                        hits: 0,
                        misses: 1,
                    },
                ],
                write_behind_queue_depth: 0.0,
                write_behind_lag_seconds: 0.0,
                submission_queue_depth: 0.0,
            },
            snapshot: Ok(OpsSnapshot::default()),
            now: Utc::now(),
        }
    }

    #[test]
    fn all_up_is_healthy_with_the_hit_ratio_from_the_figures() {
        let r = report(inputs());
        assert!(r.healthy, "{:?}", r.problems);
        assert_eq!(r.cache.hit_ratio, 0.75);
    }

    #[test]
    fn a_closed_readiness_gate_is_unhealthy_even_when_every_actor_runs() {
        let mut i = inputs();
        i.actors_ready = false;
        let r = report(i);
        assert!(!r.healthy);
        assert!(r.problems[0].contains("not ready"), "{:?}", r.problems);
    }

    #[test]
    fn a_down_service_an_open_divergence_or_no_database_is_unhealthy() {
        let mut i = inputs();
        i.services[1].1 = Err("connection refused".into());
        let r = report(i);
        assert!(!r.healthy);
        assert!(r.problems[0].contains("redis"), "{:?}", r.problems);

        let mut i = inputs();
        i.snapshot = Ok(OpsSnapshot {
            open_divergences: 1,
            ..OpsSnapshot::default()
        });
        assert!(!report(i).healthy);

        let mut i = inputs();
        i.snapshot = Err("down".into());
        assert!(!report(i).healthy);
    }
}
