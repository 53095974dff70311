//! What a deployment mode provides as a whole: one durable store (PostgreSQL or SQLite)
//! and one event bus (NATS JetStream or the in-process bus).
//!
//! Actors only ever see the narrow ports of `actors::ports`; these two traits gather the
//! ports each adapter implements, plus the few operator queries the composition root, the
//! HTTP API, the CLI and the tests need, so `app.rs` builds the service the same way in
//! either mode.

use actors::domain::invalidation::LedgerRow;
use actors::ports::{
    CheckpointStore, DivergenceStore, EntryStore, EventBus, EvidenceStore, InvalidationStore,
    LedgerOutboxStore, PolicyStore, RejectedEvent, RejectedEventStore, ReplayStore,
    SubmissionStore,
};
use async_trait::async_trait;
use tokio::sync::watch;

use super::AdapterError;
use super::postgres::{LedgerStats, NewItem};
use super::postgres_ops::{OpsSnapshot, SampledFigures};
use crate::airgap::BundleStore;

/// Everything provd keeps durably, in one database: PostgreSQL (distributed mode) or a
/// SQLite file (embedded mode).
#[async_trait]
pub trait DurableStore:
    EntryStore
    + InvalidationStore
    + RejectedEventStore
    + EvidenceStore
    + LedgerOutboxStore
    + ReplayStore
    + SubmissionStore
    + CheckpointStore
    + DivergenceStore
    + BundleStore
    + crate::evaluate::ReceiptStore
    + PolicyStore
{
    /// `postgres` or `sqlite`: the service name in probes, metrics and messages.
    fn kind(&self) -> &'static str;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), AdapterError>;
    /// Ledger rows with `seq_no > since`, oldest first, at most `limit`.
    async fn revocations(&self, since: i64, limit: i64) -> Result<Vec<LedgerRow>, AdapterError>;
    /// The seed's ledger statistics.
    async fn ledger_stats(&self) -> Result<LedgerStats, AdapterError>;
    /// Entries in the durable tier.
    async fn count_items(&self) -> Result<i64, AdapterError>;
    /// Inserts one item as the seed's `prov_items` row (tests and tools).
    async fn insert_item(&self, item: &NewItem) -> Result<(), AdapterError>;
    /// Whether an item with this VeriKey is stored.
    async fn item_exists(&self, veri_key: &str) -> Result<bool, AdapterError>;
    /// The most recently rejected events, newest first.
    async fn rejected_events(&self, limit: i64) -> Result<Vec<RejectedEvent>, AdapterError>;
    /// The figures the sampler turns into gauges.
    async fn sampled_figures(&self) -> Result<SampledFigures, AdapterError>;
    /// The figures of `/api/v1/status`.
    async fn ops_snapshot(&self) -> Result<OpsSnapshot, AdapterError>;
}

/// The event bus of a deployment mode, with what operators and tests need beyond the port.
#[async_trait]
pub trait ServiceBus: EventBus {
    /// `nats` or `local`: the service name in probes, metrics and messages.
    fn kind(&self) -> &'static str;
    /// Checks the bus is usable (connected, streams present).
    async fn ping(&self) -> Result<(), AdapterError>;
    /// Counts reconnects to the broker; `None` when the bus cannot disconnect.
    fn reconnects(&self) -> Option<watch::Receiver<u64>>;
    /// Messages not yet delivered or acknowledged on one durable consumer.
    async fn consumer_pending(&self, stream: &str, durable: &str) -> Result<u64, AdapterError>;
    /// Messages waiting on each durable consumer, by consumer name.
    async fn consumers_pending(&self) -> Result<Vec<(String, u64)>, AdapterError>;
    /// Removes this deployment's streams (tests clean up with it).
    async fn delete_streams(&self) -> Result<(), AdapterError>;
}

/// Calls the store's inherent methods of the same names.
macro_rules! durable_store_via_inherent {
    ($ty:ty, $kind:expr) => {
        #[async_trait]
        impl DurableStore for $ty {
            fn kind(&self) -> &'static str {
                $kind.as_str()
            }
            async fn ping(&self) -> Result<(), AdapterError> {
                <$ty>::ping(self).await
            }
            async fn revocations(
                &self,
                since: i64,
                limit: i64,
            ) -> Result<Vec<LedgerRow>, AdapterError> {
                <$ty>::revocations(self, since, limit).await
            }
            async fn ledger_stats(&self) -> Result<LedgerStats, AdapterError> {
                <$ty>::ledger_stats(self).await
            }
            async fn count_items(&self) -> Result<i64, AdapterError> {
                <$ty>::count_items(self).await
            }
            async fn insert_item(&self, item: &NewItem) -> Result<(), AdapterError> {
                <$ty>::insert_item(self, item).await
            }
            async fn item_exists(&self, veri_key: &str) -> Result<bool, AdapterError> {
                <$ty>::item_exists(self, veri_key).await
            }
            async fn rejected_events(
                &self,
                limit: i64,
            ) -> Result<Vec<RejectedEvent>, AdapterError> {
                <$ty>::rejected_events(self, limit).await
            }
            async fn sampled_figures(&self) -> Result<SampledFigures, AdapterError> {
                <$ty>::sampled_figures(self).await
            }
            async fn ops_snapshot(&self) -> Result<OpsSnapshot, AdapterError> {
                <$ty>::ops_snapshot(self).await
            }
        }
    };
}

durable_store_via_inherent!(super::postgres::PgStore, super::Service::Postgres);
durable_store_via_inherent!(super::sqlite::SqliteStore, super::Service::Sqlite);

#[async_trait]
impl ServiceBus for super::jetstream::JetStreamBus {
    fn kind(&self) -> &'static str {
        super::Service::Nats.as_str()
    }
    async fn ping(&self) -> Result<(), AdapterError> {
        if !self.is_connected() {
            return Err(AdapterError::Nats("not connected".into()));
        }
        self.ensure_streams().await
    }
    fn reconnects(&self) -> Option<watch::Receiver<u64>> {
        Some(super::jetstream::JetStreamBus::reconnects(self))
    }
    async fn consumer_pending(&self, stream: &str, durable: &str) -> Result<u64, AdapterError> {
        super::jetstream::JetStreamBus::consumer_pending(self, stream, durable).await
    }
    async fn consumers_pending(&self) -> Result<Vec<(String, u64)>, AdapterError> {
        super::jetstream::JetStreamBus::consumers_pending(self).await
    }
    async fn delete_streams(&self) -> Result<(), AdapterError> {
        super::jetstream::JetStreamBus::delete_streams(self).await
    }
}

#[async_trait]
impl ServiceBus for super::local_bus::LocalBus {
    fn kind(&self) -> &'static str {
        super::Service::LocalBus.as_str()
    }
    async fn ping(&self) -> Result<(), AdapterError> {
        super::local_bus::LocalBus::ping(self).await
    }
    fn reconnects(&self) -> Option<watch::Receiver<u64>> {
        // In the process: it never disconnects, so nothing has to catch up after a gap.
        None
    }
    async fn consumer_pending(&self, stream: &str, durable: &str) -> Result<u64, AdapterError> {
        super::local_bus::LocalBus::consumer_pending(self, stream, durable).await
    }
    async fn consumers_pending(&self) -> Result<Vec<(String, u64)>, AdapterError> {
        super::local_bus::LocalBus::consumers_pending(self).await
    }
    async fn delete_streams(&self) -> Result<(), AdapterError> {
        super::local_bus::LocalBus::delete_streams(self).await
    }
}
