//! The tile-sync actor: keeps this node's tile cache filled as the log grows.
//!
//! It consumes `rekor.checkpoints.observed` (published by the log-sync actors of every node)
//! through a durable consumer of its own per node (`tile-sync-<node>`), since each node has
//! its own cache. For each observation of a backend the cache mirrors and larger than the
//! largest one already prefetched, it asks the [`TilePrefetcher`] to verify the signed note
//! and fetch, verify and store every tile the tree needs. The work runs on a task beside the
//! mailbox; the pump waits for it before pulling more.
//!
//! A malformed event is refused (recorded, counted, terminated). A prefetch that fails for a
//! transient reason is naked with a growing delay; one the log's answer made impossible (a
//! bad signature, a tile that does not verify) is acked and counted: the divergence detector,
//! not this actor, raises the alarm, and the next checkpoint is tried afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::data::CheckpointObserved;
use events::{EventKind, Subjects, decode_as, streams};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::ports::{
    ConsumerSpec, Delivery, EventBus, RejectedEventStore, StartPosition, TilePrefetcher,
};
use crate::{pump, rejected};

/// The actor's name (supervisor child, metrics label).
pub const NAME: &str = "tile-sync";

/// What the tile-sync actor needs from the outside.
#[derive(Clone)]
pub struct TileSyncDeps {
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// Where refused events go.
    pub rejects: Arc<dyn RejectedEventStore>,
    /// The tile cache.
    pub tiles: Arc<dyn TilePrefetcher>,
    /// Subject names.
    pub subjects: Subjects,
    /// This node (the durable consumer is per node).
    pub node_id: String,
    /// A new consumer starts here.
    pub started_at: DateTime<Utc>,
}

/// The tile-sync actor.
pub struct TileSync {
    deps: TileSyncDeps,
}

impl TileSync {
    /// A tile-sync actor with its dependencies.
    pub fn new(deps: TileSyncDeps) -> Self {
        Self { deps }
    }

    /// The durable consumer of this node.
    pub fn consumer(&self) -> ConsumerSpec {
        let kind = EventKind::CheckpointObserved;
        ConsumerSpec {
            stream: self.deps.subjects.stream_name(streams::stream_of(kind)),
            // JetStream durable names allow letters, digits, `-` and `_` only.
            durable: format!(
                "tile-sync-{}",
                self.deps
                    .node_id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    })
                    .collect::<String>()
            ),
            filter_subject: self.deps.subjects.subject(kind),
            start: StartPosition::Since(self.deps.started_at),
            ack_wait: Duration::from_secs(300),
            max_deliver: -1,
            max_ack_pending: 0,
        }
    }
}

/// Messages of the tile-sync actor.
pub enum TileSyncMsg {
    /// A batch from the pump, and the signal that it is settled.
    Batch(Vec<Box<dyn Delivery>>, oneshot::Sender<()>),
}

/// The actor's state: its pump, and the largest size prefetched per backend (shared with
/// the batch task).
pub struct TileSyncState {
    _pump: Option<pump::Pump>,
    done: Arc<Mutex<HashMap<String, u64>>>,
}

fn nak_delay(delivered: u64) -> Duration {
    pump::retry_delay(u32::try_from(delivered).unwrap_or(u32::MAX))
}

async fn process(deps: &TileSyncDeps, done: &Mutex<HashMap<String, u64>>, delivery: &dyn Delivery) {
    let subject = EventKind::CheckpointObserved.base_subject();
    let event = match decode_as::<CheckpointObserved>(delivery.payload()) {
        Ok(e) => e,
        Err(e) => {
            rejected::reject(
                deps.rejects.as_ref(),
                delivery,
                subject,
                e.reason.as_str(),
                e.detail,
                e.event_id,
            )
            .await;
            return;
        }
    };
    let data = &event.data;
    let already = done
        .lock()
        .map(|d| d.get(&data.backend).copied())
        .unwrap_or(None);
    let skip = !deps.tiles.mirrors(&data.backend)
        || already.is_some_and(|size| data.tree_size <= size)
        || data.tree_size == 0;
    if skip {
        let _ = delivery.ack().await;
        return;
    }
    match deps.tiles.prefetch(&data.backend, &data.note).await {
        Ok(report) => {
            if let Ok(mut d) = done.lock() {
                let size = d.entry(data.backend.clone()).or_insert(0);
                *size = (*size).max(data.tree_size);
            }
            metrics::counter!("provd_tile_prefetch_total", "outcome" => "ok").increment(1);
            tracing::debug!(
                backend = %data.backend,
                size = data.tree_size,
                fetched = report.fetched,
                cached = report.cached,
                "prefetched tiles"
            );
            let _ = delivery.ack().await;
        }
        Err(e) if e.is_transient() => {
            metrics::counter!("provd_tile_prefetch_total", "outcome" => "retry").increment(1);
            let delay = nak_delay(delivery.delivered());
            tracing::warn!(backend = %data.backend, error = %e, delay_ms = delay.as_millis() as u64, "tile prefetch failed; will retry");
            let _ = delivery.nak(delay).await;
        }
        Err(e) => {
            metrics::counter!("provd_tile_prefetch_total", "outcome" => "refused").increment(1);
            tracing::warn!(backend = %data.backend, size = data.tree_size, error = %e, "tile prefetch refused the log's answer");
            let _ = delivery.ack().await;
        }
    }
}

impl Actor for TileSync {
    type Msg = TileSyncMsg;
    type State = TileSyncState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        for outcome in ["ok", "retry", "refused"] {
            metrics::counter!("provd_tile_prefetch_total", "outcome" => outcome).absolute(0);
        }
        Ok(TileSyncState {
            _pump: None,
            done: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state._pump = Some(pump::Pump::spawn(pump::run_batches(
            self.deps.bus.clone(),
            self.consumer(),
            NAME,
            16,
            myself,
            TileSyncMsg::Batch,
            |m| {
                let TileSyncMsg::Batch(b, _) = m;
                Some(b)
            },
        )));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let TileSyncMsg::Batch(deliveries, settled) = msg;
        // Fetching tiles is slow I/O: it runs beside the mailbox.
        let deps = self.deps.clone();
        let done = state.done.clone();
        tokio::spawn(async move {
            for d in &deliveries {
                process(&deps, &done, d.as_ref()).await;
            }
            let _ = settled.send(());
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{PortError, PrefetchReport};
    use crate::testing::{MemoryBus, MemoryStore, Settlement};
    use async_trait::async_trait;
    use events::CloudEvent;

    /// Records prefetches; fails the first one of backend `flaky` transiently.
    #[derive(Default)]
    struct FakeTiles {
        calls: Mutex<Vec<(String, String)>>,
    }

    #[async_trait]
    impl TilePrefetcher for FakeTiles {
        fn mirrors(&self, backend: &str) -> bool {
            backend != "v1-log"
        }

        async fn prefetch(&self, backend: &str, note: &str) -> Result<PrefetchReport, PortError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push((backend.to_owned(), note.to_owned()));
            if backend == "flaky" && calls.iter().filter(|(b, _)| b == "flaky").count() == 1 {
                return Err(PortError::Unavailable {
                    service: "tile log",
                    message: "down".into(),
                });
            }
            Ok(PrefetchReport {
                fetched: 3,
                cached: 0,
            })
        }
    }

    fn observed(backend: &str, size: u64) -> Vec<u8> {
        CloudEvent::new(
            "urn:test",
            CheckpointObserved {
                backend: backend.into(),
                origin: "log.example".into(),
                tree_size: size,
                root_hash: "00".repeat(32),
                note: format!("note {size}"),
                observed_by: "n1".into(),
            },
        )
        .to_json()
    }

    async fn eventually(f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "not in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn prefetches_each_larger_checkpoint_once_and_retries_transient_failures() {
        let bus = MemoryBus::new();
        let store = MemoryStore::new();
        let tiles = Arc::new(FakeTiles::default());
        let deps = TileSyncDeps {
            bus: Arc::new(bus.clone()),
            rejects: Arc::new(store.clone()),
            tiles: tiles.clone(),
            subjects: Subjects::new("t"),
            node_id: "node.1".into(),
            started_at: Utc::now(),
        };
        let actor = TileSync::new(deps);
        assert_eq!(actor.consumer().durable, "tile-sync-node_1");
        let (actor, _h) = Actor::spawn(None, actor, ()).await.expect("starts");
        let subject = "t.rekor.checkpoints.observed";
        bus.publish_raw(subject, b"{not json".to_vec());
        bus.publish_raw(subject, observed("lab", 10));
        bus.publish_raw(subject, observed("lab", 10)); // another node saw the same
        bus.publish_raw(subject, observed("lab", 7)); // an older one
        bus.publish_raw(subject, observed("v1-log", 50)); // not a tile log
        bus.publish_raw(subject, observed("lab", 12));
        bus.publish_raw(subject, observed("flaky", 5));
        eventually(|| bus.settlements().len() == 8).await;
        let settlements = bus.settlements();
        assert_eq!(settlements[0], Settlement::Term);
        assert_eq!(
            settlements
                .iter()
                .filter(|s| **s == Settlement::Nak)
                .count(),
            1
        );
        assert_eq!(
            settlements
                .iter()
                .filter(|s| **s == Settlement::Ack)
                .count(),
            6
        );
        let calls = tiles.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                ("lab".to_owned(), "note 10".to_owned()),
                ("lab".to_owned(), "note 12".to_owned()),
                ("flaky".to_owned(), "note 5".to_owned()),
                ("flaky".to_owned(), "note 5".to_owned()),
            ]
        );
        assert_eq!(store.rejected().len(), 1);
        actor.stop(None);
    }
}
