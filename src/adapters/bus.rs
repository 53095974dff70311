//! What a deployment mode's event bus provides as a whole: NATS JetStream or the in-process
//! bus, behind the actors' `EventBus` port plus what operators and tests need.
//!
//! The durable store needs no such trait: [`crate::storage::Store`] is one type over
//! either database, and actors see only the narrow ports it implements.

use actors::ports::EventBus;
use async_trait::async_trait;
use tokio::sync::watch;

use super::AdapterError;

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
    /// Checks, before any actor subscribes, that this deployment's streams and their
    /// consumers are its own: [`AdapterError::ForeignOwner`] when one belongs to another
    /// deployment. Returns what it adopted (`stream`, `stream/consumer`).
    async fn claim(&self) -> Result<Vec<String>, AdapterError>;
}

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
    async fn claim(&self) -> Result<Vec<String>, AdapterError> {
        super::jetstream::JetStreamBus::claim(self).await
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
    async fn claim(&self) -> Result<Vec<String>, AdapterError> {
        // Its streams live in the deployment's own SQLite file: no other deployment can
        // reach them.
        Ok(Vec::new())
    }
}
