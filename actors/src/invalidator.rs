//! The invalidator actors: one per trigger subject, each a durable consumer.
//!
//! For every event: decode it (a malformed one is recorded, counted and terminated so it
//! never stalls the consumer), delete the matching entries and append the ledger row in one
//! transaction, purge the hot tier, and only then ack. A store outage naks the event with a
//! growing delay; it is never dropped. An event the store refuses for good is recorded as
//! rejected and terminated, like a malformed one.
//!
//! A pump task pulls batches from the bus and hands each to the actor, waiting until the
//! actor has settled it before pulling more. The actor's mailbox is never blocked on the
//! bus's long poll.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::data::{FeedEpochAdvanced, InvalidateRequested, PolicyUpdated, SignerRevoked};
use events::{CloudEvent, EventKind, RejectReason, Subjects, decode_as, streams};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::domain::DomainError;
use crate::domain::invalidation::{Invalidation, RevocationType};
use crate::ports::{
    ConsumerSpec, Delivery, EventBus, HotCachePurge, InvalidationStore, RejectedEventStore,
    StartPosition,
};
use crate::trace::{self, TraceContext};
use crate::{pump, rejected};

/// The event that drives an invalidator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `prov.events.invalidate`.
    Explicit,
    /// `prov.events.signer.revoked`.
    SignerRevoked,
    /// `prov.events.feed.epoch_advanced`.
    FeedEpochAdvanced,
    /// `prov.events.policy.updated`.
    PolicyUpdated,
}

/// Why an event cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Bounded reason (metric label).
    pub reason: &'static str,
    /// What exactly is wrong.
    pub detail: String,
    /// The event id, when known.
    pub event_id: Option<String>,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 4] = [
        Trigger::Explicit,
        Trigger::SignerRevoked,
        Trigger::FeedEpochAdvanced,
        Trigger::PolicyUpdated,
    ];

    /// The event kind it consumes.
    pub fn kind(self) -> EventKind {
        match self {
            Trigger::Explicit => EventKind::InvalidateRequested,
            Trigger::SignerRevoked => EventKind::SignerRevoked,
            Trigger::FeedEpochAdvanced => EventKind::FeedEpochAdvanced,
            Trigger::PolicyUpdated => EventKind::PolicyUpdated,
        }
    }

    /// The ledger type of the invalidations it makes.
    pub fn revocation_type(self) -> RevocationType {
        match self {
            Trigger::Explicit => RevocationType::Explicit,
            Trigger::SignerRevoked => RevocationType::Signer,
            Trigger::FeedEpochAdvanced => RevocationType::FeedEpoch,
            Trigger::PolicyUpdated => RevocationType::Policy,
        }
    }

    /// The actor's name and durable consumer name.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Explicit => "invalidator-explicit",
            Trigger::SignerRevoked => "invalidator-signer",
            Trigger::FeedEpochAdvanced => "invalidator-feed-epoch",
            Trigger::PolicyUpdated => "invalidator-policy",
        }
    }

    /// Decodes one payload into the invalidation it asks for.
    pub fn decode(self, payload: &[u8]) -> Result<Invalidation, Rejection> {
        fn map<T>(
            r: Result<CloudEvent<T>, events::DecodeError>,
            f: impl FnOnce(&CloudEvent<T>) -> Result<Invalidation, DomainError>,
        ) -> Result<Invalidation, Rejection> {
            let event = r.map_err(|e| Rejection {
                reason: e.reason.as_str(),
                detail: e.detail,
                event_id: e.event_id,
            })?;
            f(&event).map_err(|e| Rejection {
                reason: RejectReason::InvalidData.as_str(),
                detail: e.to_string(),
                event_id: Some(event.id.clone()),
            })
        }
        match self {
            Trigger::Explicit => map(
                decode_as::<InvalidateRequested>(payload),
                Invalidation::explicit,
            ),
            Trigger::SignerRevoked => map(
                decode_as::<SignerRevoked>(payload),
                Invalidation::signer_revoked,
            ),
            Trigger::FeedEpochAdvanced => map(
                decode_as::<FeedEpochAdvanced>(payload),
                Invalidation::feed_epoch_advanced,
            ),
            Trigger::PolicyUpdated => map(
                decode_as::<PolicyUpdated>(payload),
                Invalidation::policy_updated,
            ),
        }
    }

    /// The durable consumer this trigger reads from. A consumer created for the first time
    /// starts at the stream's end as of `started_at` (the seed's rule), so an event
    /// accepted after provd started is never skipped while the consumer is being created.
    pub fn consumer(self, subjects: &Subjects, started_at: DateTime<Utc>) -> ConsumerSpec {
        let kind = self.kind();
        ConsumerSpec {
            stream: subjects.stream_name(streams::stream_of(kind)),
            durable: self.name().to_owned(),
            filter_subject: subjects.subject(kind),
            // The seed: a new invalidator starts at the stream's end; afterwards the durable
            // position carries it across restarts.
            start: StartPosition::Since(started_at),
            ack_wait: Duration::from_secs(60),
            // An invalidation is never given up on: an outage only delays it.
            max_deliver: -1,
            max_ack_pending: 0,
        }
    }
}

/// What an invalidator needs from the outside.
#[derive(Clone)]
pub struct InvalidatorDeps {
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// The durable store.
    pub store: Arc<dyn InvalidationStore>,
    /// Where refused events go.
    pub rejects: Arc<dyn RejectedEventStore>,
    /// The hot tier to purge.
    pub cache: Arc<dyn HotCachePurge>,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// When this process started: a new consumer starts from the stream's end as of then.
    pub started_at: DateTime<Utc>,
}

/// One invalidator. Config lives here; the pump lives in [`InvalidatorState`].
#[derive(Clone)]
pub struct Invalidator {
    trigger: Trigger,
    deps: InvalidatorDeps,
    batch_size: usize,
}

impl Invalidator {
    /// An invalidator for `trigger`.
    pub fn new(trigger: Trigger, deps: InvalidatorDeps) -> Self {
        Invalidator {
            trigger,
            deps,
            batch_size: 64,
        }
    }
}

/// Messages an invalidator handles.
pub enum InvalidatorMsg {
    /// A batch from the bus; reply when every delivery is settled.
    Batch(Vec<Box<dyn Delivery>>, oneshot::Sender<()>),
}

/// The running pump.
pub struct InvalidatorState {
    pump: Option<pump::Pump>,
}

fn nak_delay(delivered: u64) -> Duration {
    let shift = u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(6)
        .min(6);
    Duration::from_millis(500 * (1 << shift)).min(Duration::from_secs(30))
}

impl Invalidator {
    async fn process(&self, delivery: &dyn Delivery) {
        let kind = self.trigger.kind();
        let base_subject = kind.base_subject();
        // A binary-mode message the adapter could not read is refused with its reason.
        let decoded = match delivery.binding_error() {
            Some(e) => Err(Rejection {
                reason: e.reason.as_str(),
                detail: e.detail.clone(),
                event_id: e.event_id.clone(),
            }),
            None => self.trigger.decode(delivery.payload()),
        };
        let mut inv = match decoded {
            Ok(inv) => inv,
            Err(rej) => {
                rejected::reject(
                    self.deps.rejects.as_ref(),
                    delivery,
                    base_subject,
                    rej.reason,
                    rej.detail,
                    rej.event_id,
                )
                .await;
                return;
            }
        };
        // Every log line of this event's work carries its ids (the correlation id comes
        // from the CloudEvent, e.g. the HTTP request that published it).
        let span = tracing::info_span!(
            "event",
            otel.name = %format!("invalidate {base_subject}"),
            otel.kind = "consumer",
            subject = base_subject,
            event_id = %inv.revocation_id,
            correlation_id = inv.correlation_id.as_deref().unwrap_or("-"),
        );
        // This work continues the publisher's trace, and the ledger row records this span's
        // context (never the event's own string) for the outbox to continue.
        let published = TraceContext::from_headers(inv.traceparent.as_deref(), None);
        trace::adopt(
            &span,
            trace::parent_of(delivery, published.as_ref()).as_ref(),
        );
        inv.traceparent = TraceContext::of(&span).map(|c| c.traceparent);
        self.apply(delivery, &inv, base_subject)
            .instrument(span)
            .await;
    }

    async fn apply(&self, delivery: &dyn Delivery, inv: &Invalidation, base_subject: &'static str) {
        match self.deps.store.invalidate(inv).await {
            Ok(outcome) => {
                let ty = inv.revocation_type.as_str();
                if outcome.duplicate {
                    tracing::debug!(revocation_id = %inv.revocation_id, "duplicate event; already recorded");
                } else {
                    metrics::counter!("provd_invalidations_total", "type" => ty).increment(1);
                    metrics::counter!("provd_entries_invalidated_total", "type" => ty)
                        .increment(outcome.deleted_keys.len() as u64);
                    tracing::info!(
                        seq_no = outcome.row.seq_no,
                        revocation_id = %inv.revocation_id,
                        revocation_type = ty,
                        revoked_key = %outcome.row.revoked_key,
                        entries = outcome.row.entries_invalidated,
                        "invalidated"
                    );
                }
                if !outcome.deleted_keys.is_empty()
                    && let Err(e) = self.deps.cache.purge(&outcome.deleted_keys).await
                {
                    // Not lost: every node's ledger consumer (this one's too) purges its hot
                    // tiers again by the row's criterion when the outbox publishes it, and
                    // naks and retries until that purge succeeds.
                    metrics::counter!("provd_hot_cache_purge_errors_total").increment(1);
                    tracing::warn!(error = %e, "hot-tier purge failed; the ledger consumer retries it");
                }
                if let Err(e) = delivery.ack().await {
                    // The effect is committed; a redelivery is recognised as a duplicate.
                    tracing::warn!(error = %e, "ack failed");
                }
            }
            Err(e) if !e.is_transient() => {
                // The store refuses this invalidation for good (its data, not its state):
                // recorded for operators and settled, so the events behind it go on.
                metrics::counter!("provd_event_processing_errors_total", "subject" => base_subject)
                    .increment(1);
                rejected::reject(
                    self.deps.rejects.as_ref(),
                    delivery,
                    base_subject,
                    RejectReason::StoreRefused.as_str(),
                    format!("the store refused the invalidation: {e}"),
                    Some(inv.revocation_id.to_string()),
                )
                .await;
            }
            Err(e) => {
                let delay = nak_delay(delivery.delivered());
                metrics::counter!("provd_event_processing_errors_total", "subject" => base_subject)
                    .increment(1);
                tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "invalidation failed; will retry");
                if let Err(e) = delivery.nak(delay).await {
                    tracing::warn!(error = %e, "nak failed; the bus redelivers after ack_wait");
                }
            }
        }
    }
}

impl Actor for Invalidator {
    type Msg = InvalidatorMsg;
    type State = InvalidatorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(InvalidatorState { pump: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let spec = self
            .trigger
            .consumer(&self.deps.subjects, self.deps.started_at);
        state.pump = Some(pump::Pump::spawn(pump::run_batches(
            self.deps.bus.clone(),
            spec,
            self.trigger.name(),
            self.batch_size,
            myself,
            InvalidatorMsg::Batch,
            |m| {
                let InvalidatorMsg::Batch(b, _) = m;
                Some(b)
            },
        )));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            InvalidatorMsg::Batch(deliveries, done) => {
                for d in &deliveries {
                    self.process(d.as_ref()).await;
                }
                let _ = done.send(());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryBus, MemoryCache, MemoryStore, Settlement};
    use serde_json::json;

    fn deps(bus: &MemoryBus, store: &MemoryStore, cache: &MemoryCache) -> InvalidatorDeps {
        InvalidatorDeps {
            bus: Arc::new(bus.clone()),
            store: Arc::new(store.clone()),
            rejects: Arc::new(store.clone()),
            cache: Arc::new(cache.clone()),
            subjects: Subjects::new("t"),
            started_at: Utc::now(),
        }
    }

    async fn eventually(f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn invalidates_purges_and_acks_then_survives_a_malformed_event() {
        let bus = MemoryBus::new();
        let store = MemoryStore::new();
        let cache = MemoryCache::new();
        store.insert_entry("sha256:k1", "sha256:pol", "sha256:ss", &["key-a"], None);
        store.insert_entry("sha256:k2", "sha256:other", "sha256:ss", &["key-b"], None);
        cache.put("sha256:k1");
        cache.put("sha256:k2");

        let (actor, _h) = Actor::spawn(
            None,
            Invalidator::new(Trigger::Explicit, deps(&bus, &store, &cache)),
            (),
        )
        .await
        .expect("starts");
        let subject = "t.prov.events.invalidate";
        bus.publish_raw(subject, b"{not json".to_vec());
        let good = CloudEvent::new(
            "urn:test",
            InvalidateRequested {
                veri_key: None,
                signer_set_hash: None,
                policy_hash: Some("sha256:pol".into()),
                feed_epoch_before: None,
                reason: "policy withdrawn".into(),
            },
        );
        bus.publish_raw(subject, good.to_json());
        // The same event again (a redelivery or a republish): invalidates once.
        bus.publish_raw(subject, good.to_json());

        eventually(|| bus.settlements().len() == 3).await;
        assert_eq!(
            bus.settlements(),
            vec![Settlement::Term, Settlement::Ack, Settlement::Ack]
        );
        let ledger = store.ledger();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].revoked_key, "sha256:pol");
        assert_eq!(ledger[0].entries_invalidated, 1);
        assert_eq!(ledger[0].revocation_id.to_string(), good.id);
        assert!(!store.has_entry("sha256:k1"));
        assert!(store.has_entry("sha256:k2"));
        assert!(!cache.has("sha256:k1"));
        assert!(cache.has("sha256:k2"));
        let rejected = store.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].reason, "invalid_json");
        actor.stop(None);
    }

    #[tokio::test]
    async fn a_store_outage_naks_and_the_event_is_processed_later() {
        let bus = MemoryBus::new();
        let store = MemoryStore::new();
        let cache = MemoryCache::new();
        store.insert_entry("sha256:k1", "sha256:pol", "sha256:ss", &["key-a"], None);
        store.set_available(false);
        let (actor, _h) = Actor::spawn(
            None,
            Invalidator::new(Trigger::SignerRevoked, deps(&bus, &store, &cache)),
            (),
        )
        .await
        .expect("starts");
        let ev = json!({
            "specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(),
            "source": "urn:authority", "type": "dev.provd.signer.revoked.v1",
            "data": {"signer_key_id": "key-a", "reason": "compromised"}
        });
        bus.publish_raw(
            "t.prov.events.signer.revoked",
            serde_json::to_vec(&ev).expect("json"),
        );
        eventually(|| bus.settlements().first() == Some(&Settlement::Nak)).await;
        assert!(store.has_entry("sha256:k1"));
        store.set_available(true);
        eventually(|| bus.settlements().contains(&Settlement::Ack)).await;
        assert!(!store.has_entry("sha256:k1"));
        assert_eq!(store.ledger()[0].revocation_type, "signer");
        actor.stop(None);
    }
}
