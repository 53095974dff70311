//! Gauges read from the store and the bus every few seconds rather than recorded where
//! something happens: they describe stored state (submissions by status, outbox and replay
//! positions, checkpoints, open divergences) or the bus's own (consumer pending), and whether
//! each service answers and each actor runs (`provd_service_up`, `provd_actor_up`).
//!
//! A failed read leaves the gauges at their last value and logs at debug level; `/readyz`
//! and `/api/v1/status` report the service as down, so the sampler does not shout too.

use std::sync::Arc;
use std::time::Duration;

use actors::health::{ChildStatus, Health};

use tokio_util::sync::CancellationToken;

use super::catalogue::SUBMISSION_STATUSES;
use crate::adapters::bus::ServiceBus;
use crate::http::Probe;
use crate::storage::Store;
use crate::storage::ops::SampledFigures;

/// How often the gauges are refreshed.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// What the sampler reads.
#[derive(Clone)]
pub struct Sampler {
    /// The store.
    pub store: Arc<Store>,
    /// The bus.
    pub bus: Arc<dyn ServiceBus>,
    /// This node (its replay checkpoint is exported).
    pub node_id: String,
    /// The services `/readyz` checks (`provd_service_up`).
    pub probes: Vec<Arc<dyn Probe>>,
    /// The supervised actors (`provd_actor_up`).
    pub health: Health,
}

impl Sampler {
    /// Refreshes every sampled gauge once.
    pub async fn sample(&self) {
        for probe in &self.probes {
            let up = tokio::time::timeout(Duration::from_secs(2), probe.check())
                .await
                .is_ok_and(|r| r.is_ok());
            metrics::gauge!("provd_service_up", "service" => probe.name()).set(if up {
                1.0
            } else {
                0.0
            });
        }
        for (name, child) in self.health.snapshot() {
            if name == actors::ledger::CATCH_UP_GATE {
                continue;
            }
            let up = child.status == ChildStatus::Running;
            metrics::gauge!("provd_actor_up", "actor" => name).set(if up { 1.0 } else { 0.0 });
        }
        match self.store.sampled_figures().await {
            Ok(snap) => self.record(&snap),
            Err(e) => tracing::debug!(error = %e, "cannot sample the store's gauges"),
        }
        match self.bus.consumers_pending().await {
            Ok(consumers) => {
                for (name, pending) in consumers {
                    metrics::gauge!("provd_jetstream_consumer_pending", "consumer" => name)
                        .set(pending as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample consumer pending"),
        }
    }

    fn record(&self, snap: &SampledFigures) {
        metrics::gauge!("provd_ledger_outbox_lag")
            .set((snap.ledger_head - snap.outbox_published).max(0) as f64);
        if let Some(mine) = snap.replay.iter().find(|r| r.node_id == self.node_id) {
            metrics::gauge!("provd_ledger_replay_checkpoint_seq_no").set(mine.checkpoint as f64);
        }
        for status in SUBMISSION_STATUSES {
            let n = snap
                .submissions_by_status
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("provd_rekor_submissions_stored", "status" => status).set(n as f64);
        }
    }

    /// Samples every [`INTERVAL`] until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.sample().await,
            }
        }
    }
}
