//! In-memory fakes of the ports, for unit tests of actors and domain logic only.
//!
//! Integration tests use the real adapters against real services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use crate::domain::epoch::FeedEpoch;
use crate::domain::invalidation::{Criterion, Invalidation, LedgerRow};
use crate::domain::receipt::Receipt;
use crate::domain::submission::SubmissionStatus;
use crate::ports::{
    ConsumerSpec, Delivery, EventBus, HotCachePurge, InvalidationOutcome, InvalidationStore,
    NewSubmission, PortError, RejectedEvent, RejectedEventStore, StoredReceipt, SubmissionRecord,
    SubmissionStore, Subscription,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a fake delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Acknowledged.
    Ack,
    /// Negatively acknowledged (redelivered at once by the fake).
    Nak,
    /// Terminated.
    Term,
}

#[derive(Default)]
struct BusInner {
    messages: Vec<(String, Vec<u8>)>,
    cursors: HashMap<String, usize>,
    redeliver: HashMap<String, Vec<(usize, u64)>>,
    settlements: Vec<Settlement>,
}

/// A fake bus: every consumer sees every message on its subject, in order.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<BusInner>>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes without deduplication.
    pub fn publish_raw(&self, subject: &str, payload: Vec<u8>) {
        lock(&self.inner)
            .messages
            .push((subject.to_owned(), payload));
    }

    /// The payloads published on `subject` so far, in order.
    pub fn published(&self, subject: &str) -> Vec<Vec<u8>> {
        lock(&self.inner)
            .messages
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every settlement so far, in order.
    pub fn settlements(&self) -> Vec<Settlement> {
        lock(&self.inner).settlements.clone()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(
        &self,
        subject: &str,
        _msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), PortError> {
        self.publish_raw(subject, payload);
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, PortError> {
        Ok(Box::new(MemorySubscription {
            bus: self.clone(),
            durable: spec.durable.clone(),
            filter: spec.filter_subject.clone(),
        }))
    }
}

struct MemorySubscription {
    bus: MemoryBus,
    durable: String,
    filter: String,
}

struct MemoryDelivery {
    bus: MemoryBus,
    durable: String,
    index: usize,
    delivered: u64,
    subject: String,
    payload: Vec<u8>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Box<dyn Delivery>>, PortError> {
        let batch: Vec<Box<dyn Delivery>> = {
            let mut inner = lock(&self.bus.inner);
            let mut out: Vec<Box<dyn Delivery>> = Vec::new();
            let again = std::mem::take(inner.redeliver.entry(self.durable.clone()).or_default());
            for (index, delivered) in again {
                let (subject, payload) = inner.messages[index].clone();
                out.push(Box::new(MemoryDelivery {
                    bus: self.bus.clone(),
                    durable: self.durable.clone(),
                    index,
                    delivered: delivered + 1,
                    subject,
                    payload,
                }));
            }
            let start = *inner.cursors.get(&self.durable).unwrap_or(&0);
            let mut next = start;
            while next < inner.messages.len() && out.len() < max {
                let (subject, payload) = inner.messages[next].clone();
                next += 1;
                if subject != self.filter {
                    continue;
                }
                out.push(Box::new(MemoryDelivery {
                    bus: self.bus.clone(),
                    durable: self.durable.clone(),
                    index: next - 1,
                    delivered: 1,
                    subject,
                    payload,
                }));
            }
            inner.cursors.insert(self.durable.clone(), next);
            out
        };
        if batch.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(10))).await;
        }
        Ok(batch)
    }
}

#[async_trait]
impl Delivery for MemoryDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    async fn ack(&self) -> Result<(), PortError> {
        lock(&self.bus.inner).settlements.push(Settlement::Ack);
        Ok(())
    }
    async fn nak(&self, _delay: Duration) -> Result<(), PortError> {
        let mut inner = lock(&self.bus.inner);
        inner.settlements.push(Settlement::Nak);
        inner
            .redeliver
            .entry(self.durable.clone())
            .or_default()
            .push((self.index, self.delivered));
        Ok(())
    }
    async fn term(&self) -> Result<(), PortError> {
        lock(&self.bus.inner).settlements.push(Settlement::Term);
        Ok(())
    }
}

#[derive(Clone)]
struct FakeEntry {
    policy_hash: String,
    signer_set_hash: String,
    members: Vec<String>,
    feed_epoch: Option<String>,
}

#[derive(Default)]
struct StoreInner {
    entries: BTreeMap<String, FakeEntry>,
    ledger: Vec<LedgerRow>,
    rejected: Vec<RejectedEvent>,
    unavailable: bool,
}

/// A fake durable store with the same invalidation semantics as the real ones.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<StoreInner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry.
    pub fn insert_entry(
        &self,
        veri_key: &str,
        policy_hash: &str,
        signer_set_hash: &str,
        members: &[&str],
        feed_epoch: Option<&str>,
    ) {
        lock(&self.inner).entries.insert(
            veri_key.to_owned(),
            FakeEntry {
                policy_hash: policy_hash.to_owned(),
                signer_set_hash: signer_set_hash.to_owned(),
                members: members.iter().map(|s| (*s).to_owned()).collect(),
                feed_epoch: feed_epoch.map(str::to_owned),
            },
        );
    }

    /// Whether the entry exists.
    pub fn has_entry(&self, veri_key: &str) -> bool {
        lock(&self.inner).entries.contains_key(veri_key)
    }

    /// The ledger.
    pub fn ledger(&self) -> Vec<LedgerRow> {
        lock(&self.inner).ledger.clone()
    }

    /// Rejected events.
    pub fn rejected(&self) -> Vec<RejectedEvent> {
        lock(&self.inner).rejected.clone()
    }

    /// Simulates an outage.
    pub fn set_available(&self, up: bool) {
        lock(&self.inner).unavailable = !up;
    }
}

fn matches(c: &Criterion, key: &str, e: &FakeEntry) -> bool {
    match c {
        Criterion::VeriKey(k) => k == key,
        Criterion::SignerKeyId(k) => e.members.iter().any(|m| m == k),
        Criterion::SignerSetHash(h) => &e.signer_set_hash == h,
        Criterion::PolicyHash(h) => &e.policy_hash == h,
        Criterion::FeedEpochBefore { before, .. } => e
            .feed_epoch
            .as_deref()
            .and_then(|s| FeedEpoch::parse(s).ok())
            .is_some_and(|ep| ep.is_before(before)),
    }
}

#[async_trait]
impl InvalidationStore for MemoryStore {
    async fn invalidate(&self, inv: &Invalidation) -> Result<InvalidationOutcome, PortError> {
        let mut inner = lock(&self.inner);
        if inner.unavailable {
            return Err(PortError::Unavailable {
                service: "memory",
                message: "simulated outage".into(),
            });
        }
        if let Some(row) = inner
            .ledger
            .iter()
            .find(|r| r.revocation_id == inv.revocation_id)
        {
            return Ok(InvalidationOutcome {
                row: row.clone(),
                deleted_keys: Vec::new(),
                duplicate: true,
            });
        }
        let doomed: BTreeSet<String> = inner
            .entries
            .iter()
            .filter(|(k, e)| matches(&inv.criterion, k, e))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            inner.entries.remove(k);
        }
        let row = LedgerRow {
            seq_no: inner.ledger.len() as i64 + 1,
            revocation_id: inv.revocation_id,
            revocation_type: inv.revocation_type.as_str().to_owned(),
            revoked_key: inv.criterion.value(),
            reason: inv.reason.clone(),
            entries_invalidated: doomed.len() as i64,
            source: inv.source.clone(),
            correlation_id: inv.correlation_id.clone(),
            revoked_at: Utc::now(),
            metadata: inv.metadata(),
        };
        inner.ledger.push(row.clone());
        Ok(InvalidationOutcome {
            row,
            deleted_keys: doomed.into_iter().collect(),
            duplicate: false,
        })
    }
}

#[async_trait]
impl RejectedEventStore for MemoryStore {
    async fn record_rejected(&self, event: &RejectedEvent) -> Result<(), PortError> {
        lock(&self.inner).rejected.push(event.clone());
        Ok(())
    }
}

/// A fake hot tier holding only keys.
#[derive(Clone, Default)]
pub struct MemoryCache {
    keys: Arc<Mutex<BTreeSet<String>>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a key.
    pub fn put(&self, key: &str) {
        lock(&self.keys).insert(key.to_owned());
    }
    /// Whether a key is cached.
    pub fn has(&self, key: &str) -> bool {
        lock(&self.keys).contains(key)
    }
}

#[async_trait]
impl HotCachePurge for MemoryCache {
    async fn purge(&self, veri_keys: &[String]) -> Result<(), PortError> {
        let mut keys = lock(&self.keys);
        for k in veri_keys {
            keys.remove(k);
        }
        Ok(())
    }
}

/// A fake submission store with the same status rules as the real ones.
#[derive(Clone, Default)]
pub struct MemorySubmissions {
    inner: Arc<Mutex<SubmissionsInner>>,
}

#[derive(Default)]
struct SubmissionsInner {
    rows: BTreeMap<String, SubmissionRecord>,
    receipts: BTreeMap<String, StoredReceipt>,
}

impl MemorySubmissions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored receipt.
    pub fn receipts(&self) -> Vec<StoredReceipt> {
        lock(&self.inner).receipts.values().cloned().collect()
    }
}

fn missing(id: &str) -> PortError {
    PortError::Rejected(format!("no submission {id}"))
}

#[async_trait]
impl SubmissionStore for MemorySubmissions {
    async fn ensure_submission(&self, new: &NewSubmission) -> Result<SubmissionRecord, PortError> {
        let now = Utc::now();
        Ok(lock(&self.inner)
            .rows
            .entry(new.id.clone())
            .or_insert_with(|| SubmissionRecord {
                id: new.id.clone(),
                backend: new.backend.clone(),
                status: SubmissionStatus::Queued,
                envelope: new.envelope.clone(),
                verifier_keys: new.verifier_keys.clone(),
                attempts: 0,
                last_error: None,
                entry_uuid: None,
                created_at: now,
                updated_at: now,
            })
            .clone())
    }

    async fn begin_attempt(&self, id: &str) -> Result<SubmissionRecord, PortError> {
        let mut inner = lock(&self.inner);
        let row = inner.rows.get_mut(id).ok_or_else(|| missing(id))?;
        row.status = SubmissionStatus::Submitting;
        row.attempts += 1;
        row.updated_at = Utc::now();
        Ok(row.clone())
    }

    async fn record_logged(
        &self,
        id: &str,
        uuid: &str,
        receipt: &Receipt,
    ) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        let row = inner.rows.get_mut(id).ok_or_else(|| missing(id))?;
        row.status = SubmissionStatus::Logged;
        row.entry_uuid = Some(uuid.to_owned());
        row.last_error = None;
        row.updated_at = Utc::now();
        let backend = row.backend.clone();
        inner
            .receipts
            .entry(uuid.to_owned())
            .or_insert_with(|| StoredReceipt {
                uuid: uuid.to_owned(),
                backend,
                submission_id: Some(id.to_owned()),
                receipt: receipt.clone(),
                created_at: Utc::now(),
                verified_at: None,
            });
        Ok(())
    }

    async fn record_failure(
        &self,
        id: &str,
        status: SubmissionStatus,
        error: &str,
    ) -> Result<SubmissionRecord, PortError> {
        let mut inner = lock(&self.inner);
        let row = inner.rows.get_mut(id).ok_or_else(|| missing(id))?;
        row.status = status;
        row.last_error = Some(error.to_owned());
        row.updated_at = Utc::now();
        Ok(row.clone())
    }

    async fn submission(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        Ok(lock(&self.inner).rows.get(id).cloned())
    }

    async fn stored_receipt(&self, uuid: &str) -> Result<Option<StoredReceipt>, PortError> {
        Ok(lock(&self.inner).receipts.get(uuid).cloned())
    }

    async fn requeue(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError> {
        let mut inner = lock(&self.inner);
        let Some(row) = inner.rows.get_mut(id) else {
            return Ok(None);
        };
        if row.status.retryable() {
            row.status = SubmissionStatus::Queued;
            row.attempts = 0;
            row.updated_at = Utc::now();
        }
        Ok(Some(row.clone()))
    }
}
