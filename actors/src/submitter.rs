//! The Rekor submission queue actor.
//!
//! Submissions wait in a JetStream work-queue stream (`rekor.submissions.requested`), put
//! there by the API or by other systems. A windowed pump holds at most `batch_size`
//! deliveries and pulls more as soon as some are settled; the actor works each batch on a
//! task of its own, every delivery on its own, so a slow log never blocks the mailbox and
//! no submission waits for a slower one. At most `concurrency` calls to the logs run at
//! once; the database and bus work around them does not hold one of those slots. For each
//! submission: record it and count the attempt (one write), submit it through the backend's
//! client (which verifies the answer), store the receipt and the status (one transaction),
//! publish `rekor.entries.logged`, then ack. A transient failure is a nak with a backoff delay and
//! status `retrying`; a permanent one, or `max_attempts` transient ones, dead-letters it
//! (status, event, metric). The client turns a 409 into the existing entry, so a retried
//! submission whose first answer was lost never makes a second entry.

use std::sync::Arc;
use std::time::Duration;

use events::data::{EntryLogged, SubmissionDeadLettered, SubmissionRequested};
use events::streams::REKOR_SUBMISSIONS;
use events::{CloudEvent, EventKind, RejectReason, Subjects, decode_as};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument;

use crate::domain::dsse::Envelope;
use crate::domain::keys::PublicKey;
use crate::domain::receipt::Receipt;
use crate::domain::submission::{SubmissionStatus, submission_id};
use crate::ports::{
    AttemptStart, ConsumerSpec, Delivery, EventBus, NewSubmission, PortError, RejectedEventStore,
    RekorBackends, RekorError, RekorSubmission, StartPosition, SubmissionRecord, SubmissionStore,
};
use crate::trace::{self, TraceContext};
use crate::{pump, rejected};

/// The actor's name and durable consumer name.
pub const NAME: &str = "rekor-submitter";

/// What the submitter needs from the outside.
#[derive(Clone)]
pub struct SubmitterDeps {
    /// The event bus holding the queue; receipts and dead letters are published here too.
    pub bus: Arc<dyn EventBus>,
    /// Submissions and receipts.
    pub store: Arc<dyn SubmissionStore>,
    /// Where malformed requests are recorded.
    pub rejects: Arc<dyn RejectedEventStore>,
    /// The configured logs.
    pub backends: RekorBackends,
    /// This deployment's subjects.
    pub subjects: Subjects,
    /// The CloudEvents `source` of the events it emits.
    pub source: String,
}

/// The submitter's tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitterConfig {
    /// Most messages held at once (pulled and not yet settled); more are pulled as soon
    /// as some of them are settled.
    pub batch_size: usize,
    /// Most calls to the logs at once.
    pub concurrency: usize,
    /// Transient failures before a submission is dead-lettered.
    pub max_attempts: u32,
    /// How long one attempt may hold its message before the bus redelivers it; longer
    /// than the client's whole retry budget.
    pub ack_wait: Duration,
}

impl Default for SubmitterConfig {
    fn default() -> Self {
        SubmitterConfig {
            batch_size: 32,
            concurrency: 8,
            max_attempts: 8,
            ack_wait: Duration::from_secs(300),
        }
    }
}

/// The submitter. Config lives here; the pump lives in [`SubmitterState`].
#[derive(Clone)]
pub struct Submitter {
    deps: SubmitterDeps,
    config: SubmitterConfig,
    /// One permit per call to a log that may run; shared by every batch in flight.
    log_slots: Arc<Semaphore>,
}

/// Messages the submitter handles.
pub enum SubmitterMsg {
    /// A batch of queued submissions; reply when every delivery is settled.
    Batch(Vec<Box<dyn Delivery>>, oneshot::Sender<()>),
}

/// The running pump.
pub struct SubmitterState {
    pump: Option<pump::Pump>,
}

/// What became of one delivery, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Logged,
    AlreadyLogged,
    Retrying,
    DeadLettered,
    Rejected,
    StoreUnavailable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Logged => "logged",
            Outcome::AlreadyLogged => "duplicate",
            Outcome::Retrying => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Rejected => "rejected",
            Outcome::StoreUnavailable => "store_unavailable",
        }
    }
}

/// The delay before the next attempt: what the log asked for, else 250 ms doubling to 30 s.
fn next_delay(attempts: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| pump::retry_delay(attempts.saturating_sub(1)))
        .min(Duration::from_secs(300))
}

/// A parsed, valid request.
struct Request {
    correlation_id: Option<String>,
    /// The trace context the queued event carries.
    trace: Option<TraceContext>,
    checked: CheckedRequest,
}

/// A submission request that passed every check the submitter makes before it logs it.
#[derive(Debug)]
pub struct CheckedRequest {
    /// The backend it goes to (the default one when the request names none).
    pub backend: String,
    /// The DSSE envelope, parsed.
    pub envelope: Envelope,
    /// The verifier keys, parsed.
    pub verifiers: Vec<PublicKey>,
    /// What is recorded for it.
    pub record: NewSubmission,
}

/// The one check of a submission request: the API's submit route, `POST /api/v1/events`
/// and the submitter all run it, so a request accepted at the door is never rejected by
/// the queue. The error names the field, the verifier keys as `verifiers_field` (the API's
/// submit body calls them `verifiers`, the event `verifier_keys`).
pub fn check_request(
    data: SubmissionRequested,
    backends: &RekorBackends,
    verifiers_field: &str,
) -> Result<CheckedRequest, String> {
    let backend = data.backend.unwrap_or_else(|| backends.default.clone());
    if !backends.clients.contains_key(&backend) {
        let known: Vec<&str> = backends.clients.keys().map(String::as_str).collect();
        return Err(format!(
            "field `backend`: unknown backend {backend:?}; configured: {}",
            known.join(", ")
        ));
    }
    // Refused here what a store could not hold.
    crate::domain::limits::json("envelope", &data.envelope).map_err(|e| e.to_string())?;
    let envelope_json = serde_json::to_vec(&data.envelope).unwrap_or_default();
    let envelope =
        Envelope::from_json(&envelope_json).map_err(|e| format!("field `envelope`: {e}"))?;
    if envelope.signatures.is_empty() {
        return Err("field `envelope`: the envelope has no signatures".into());
    }
    envelope
        .payload_bytes()
        .map_err(|e| format!("field `envelope`: {e}"))?;
    if data.verifier_keys.is_empty() {
        return Err(format!(
            "field `{verifiers_field}`: give at least one PEM public key"
        ));
    }
    let verifiers = data
        .verifier_keys
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            PublicKey::from_pem(pem).map_err(|e| format!("field `{verifiers_field}[{i}]`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let record = NewSubmission {
        id: submission_id(&backend, &envelope),
        backend: backend.clone(),
        envelope: data.envelope,
        verifier_keys: data.verifier_keys,
    };
    Ok(CheckedRequest {
        backend,
        envelope,
        verifiers,
        record,
    })
}

impl Submitter {
    /// A submitter with these dependencies and tuning.
    pub fn new(deps: SubmitterDeps, config: SubmitterConfig) -> Self {
        let log_slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Submitter {
            deps,
            config,
            log_slots,
        }
    }

    /// The durable consumer on the submission queue.
    pub fn consumer(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: self.deps.subjects.stream_name(&REKOR_SUBMISSIONS),
            durable: NAME.to_owned(),
            filter_subject: self.deps.subjects.subject(EventKind::SubmissionRequested),
            // Every queued submission must be worked off, including those queued before
            // this consumer existed.
            start: StartPosition::All,
            ack_wait: self.config.ack_wait,
            // The actor dead-letters by itself after max_attempts; the bus never drops one.
            max_deliver: -1,
            max_ack_pending: i64::try_from(self.config.batch_size * 4).unwrap_or(i64::MAX),
        }
    }

    /// Parses a queued request; an `Err` is a rejection (reason, detail, event id).
    fn parse(&self, payload: &[u8]) -> Result<Request, (&'static str, String, Option<String>)> {
        let event = decode_as::<SubmissionRequested>(payload)
            .map_err(|e| (e.reason.as_str(), e.detail, e.event_id))?;
        let id = Some(event.id.clone());
        let trace = TraceContext::of_event(&event);
        let checked = check_request(event.data, &self.deps.backends, "verifier_keys")
            .map_err(|detail| ("invalid_data", detail, id))?;
        Ok(Request {
            correlation_id: event.correlationid.clone(),
            trace,
            checked,
        })
    }

    async fn process(&self, delivery: &dyn Delivery) -> Outcome {
        // A binary-mode message the adapter could not read is refused with its reason.
        let parsed = match delivery.binding_error() {
            Some(e) => Err((e.reason.as_str(), e.detail.clone(), e.event_id.clone())),
            None => self.parse(delivery.payload()),
        };
        let req = match parsed {
            Ok(r) => r,
            Err((reason, detail, event_id)) => {
                rejected::reject(
                    self.deps.rejects.as_ref(),
                    delivery,
                    EventKind::SubmissionRequested.base_subject(),
                    reason,
                    detail,
                    event_id,
                )
                .await;
                return Outcome::Rejected;
            }
        };
        // Every log line of this submission's work carries its id and correlation id.
        let span = tracing::info_span!(
            "event",
            otel.name = "submission attempt",
            otel.kind = "consumer",
            subject = EventKind::SubmissionRequested.base_subject(),
            submission_id = %req.checked.record.id,
            correlation_id = req.correlation_id.as_deref().unwrap_or("-"),
            attempt = delivery.delivered(),
        );
        // The attempt continues the trace of whoever queued the submission.
        trace::adopt(
            &span,
            trace::parent_of(delivery, req.trace.as_ref()).as_ref(),
        );
        self.attempt(delivery, req).instrument(span).await
    }

    /// One attempt of a parsed request: record, submit, settle.
    async fn attempt(&self, delivery: &dyn Delivery, req: Request) -> Outcome {
        let id = req.checked.record.id.as_str();
        // Only a redelivery after a lost dead-letter event, or a repeated request, finds it
        // dead-lettered: on a redelivery, make sure the event is out and leave it to an
        // operator.
        let start = self
            .deps
            .store
            .start_attempt(&req.checked.record, delivery.delivered() > 1)
            .await;
        let record = match start {
            Ok(AttemptStart::Started(r)) => r,
            Ok(AttemptStart::Settled(existing)) => {
                return match existing.status {
                    SubmissionStatus::Logged => self.already_logged(delivery, &existing).await,
                    SubmissionStatus::DeadLettered => {
                        self.dead_letter_settle(delivery, &existing).await
                    }
                    // Requeued by an operator between the write and the read: try later.
                    other => {
                        let why =
                            format!("submission {id} changed to {} meanwhile", other.as_str());
                        self.store_unavailable(delivery, id, &why).await
                    }
                };
            }
            Err(e) => return self.store_failed(delivery, id, &e).await,
        };
        let Some(client) = self.deps.backends.clients.get(&req.checked.backend) else {
            // Checked in parse; the backends do not change while running.
            return Outcome::Rejected;
        };
        let submission = RekorSubmission {
            envelope: req.checked.envelope,
            verifiers: req.checked.verifiers,
        };
        let answer = {
            // The semaphore is never closed.
            let _slot = self.log_slots.acquire().await;
            let call = tracing::info_span!(
                "log call",
                otel.kind = "client",
                backend = %req.checked.backend,
            );
            client.submit(&submission).instrument(call).await
        };
        match answer {
            Ok(receipt) => self.logged(delivery, &record, &receipt).await,
            Err(e) if e.is_transient() && record.attempts < self.config.max_attempts => {
                self.retry(delivery, &record, &e).await
            }
            Err(e) => {
                let why = if e.is_transient() {
                    format!("gave up after {} attempts: {e}", record.attempts)
                } else {
                    e.to_string()
                };
                match self
                    .deps
                    .store
                    .record_failure(id, SubmissionStatus::DeadLettered, &why)
                    .await
                {
                    Ok(dead) => self.dead_letter_settle(delivery, &dead).await,
                    Err(e) => self.store_failed(delivery, id, &e).await,
                }
            }
        }
    }

    async fn logged(
        &self,
        delivery: &dyn Delivery,
        record: &SubmissionRecord,
        receipt: &Receipt,
    ) -> Outcome {
        let uuid = receipt.entry_id();
        if let Err(e) = self
            .deps
            .store
            .record_logged(&record.id, &uuid, receipt)
            .await
        {
            // The log holds the entry; the next attempt gets it back through a 409.
            return self.store_failed(delivery, &record.id, &e).await;
        }
        tracing::info!(submission_id = %record.id, backend = %record.backend, uuid = %uuid, log_index = receipt.log_index, "logged");
        self.publish_logged(delivery, record, &uuid, receipt, Outcome::Logged)
            .await
    }

    async fn already_logged(&self, delivery: &dyn Delivery, record: &SubmissionRecord) -> Outcome {
        let stored = match &record.entry_uuid {
            Some(uuid) => self.deps.store.stored_receipt(uuid).await,
            None => Ok(None),
        };
        match stored {
            Ok(Some(s)) => {
                self.publish_logged(
                    delivery,
                    record,
                    &s.uuid,
                    &s.receipt,
                    Outcome::AlreadyLogged,
                )
                .await
            }
            Ok(None) => {
                // Logged without a receipt cannot happen (one transaction); settle it.
                tracing::warn!(submission_id = %record.id, "logged submission has no stored receipt");
                let _ = delivery.ack().await;
                Outcome::AlreadyLogged
            }
            Err(e) => self.store_failed(delivery, &record.id, &e).await,
        }
    }

    /// Publishes `rekor.entries.logged` (once per submission, by its message id) and acks.
    async fn publish_logged(
        &self,
        delivery: &dyn Delivery,
        record: &SubmissionRecord,
        uuid: &str,
        receipt: &Receipt,
        outcome: Outcome,
    ) -> Outcome {
        let event = CloudEvent::new(
            self.deps.source.clone(),
            EntryLogged {
                submission_id: record.id.clone(),
                backend: record.backend.clone(),
                uuid: uuid.to_owned(),
                log_index: receipt.log_index,
                log_id: hex::encode(&receipt.log_id),
                integrated_time: receipt.integrated_time,
            },
        );
        let subject = self.deps.subjects.subject(EventKind::EntryLogged);
        let msg_id = format!("{}:logged", record.id);
        if let Err(e) = trace::publish(self.deps.bus.as_ref(), &subject, &msg_id, event).await {
            // The receipt is stored; the redelivery publishes again (deduplicated).
            tracing::warn!(error = %e, "cannot publish rekor.entries.logged; will retry");
            let _ = delivery.nak(pump::retry_delay(0)).await;
            return outcome;
        }
        if let Err(e) = delivery.ack().await {
            tracing::warn!(error = %e, "ack failed; the redelivery finds it logged");
        }
        outcome
    }

    async fn retry(
        &self,
        delivery: &dyn Delivery,
        record: &SubmissionRecord,
        error: &RekorError,
    ) -> Outcome {
        let retry_after = match error {
            RekorError::Transient { retry_after, .. } => *retry_after,
            RekorError::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        };
        let delay = next_delay(record.attempts, retry_after);
        tracing::warn!(submission_id = %record.id, backend = %record.backend, attempts = record.attempts, error = %error, delay_ms = delay.as_millis() as u64, "submission failed; will retry");
        if let Err(e) = self
            .deps
            .store
            .record_failure(&record.id, SubmissionStatus::Retrying, &error.to_string())
            .await
        {
            tracing::warn!(error = %e, "cannot record the failed attempt");
        }
        if let Err(e) = delivery.nak(delay).await {
            tracing::warn!(error = %e, "nak failed; the bus redelivers after ack_wait");
        }
        Outcome::Retrying
    }

    /// Publishes `rekor.submissions.dead_lettered` for a dead-lettered submission and acks.
    async fn dead_letter_settle(
        &self,
        delivery: &dyn Delivery,
        record: &SubmissionRecord,
    ) -> Outcome {
        let last_error = record.last_error.clone().unwrap_or_default();
        tracing::warn!(submission_id = %record.id, backend = %record.backend, attempts = record.attempts, error = %last_error, "submission dead-lettered");
        let event = CloudEvent::new(
            self.deps.source.clone(),
            SubmissionDeadLettered {
                submission_id: record.id.clone(),
                backend: record.backend.clone(),
                attempts: record.attempts,
                last_error,
            },
        );
        let subject = self
            .deps
            .subjects
            .subject(EventKind::SubmissionDeadLettered);
        // One event per dead-lettering, however often the message is redelivered.
        let msg_id = format!(
            "{}:dead-lettered:{}",
            record.id,
            record.updated_at.timestamp_micros()
        );
        if let Err(e) = trace::publish(self.deps.bus.as_ref(), &subject, &msg_id, event).await {
            tracing::warn!(error = %e, "cannot publish the dead letter; will retry");
            let _ = delivery.nak(pump::retry_delay(0)).await;
            return Outcome::DeadLettered;
        }
        if let Err(e) = delivery.ack().await {
            tracing::warn!(error = %e, "ack failed; the redelivery finds it dead-lettered");
        }
        Outcome::DeadLettered
    }

    /// A store failure: an outage naks for a later try; a refusal of this submission's data
    /// is recorded and settled, so it never blocks the queue.
    async fn store_failed(&self, delivery: &dyn Delivery, id: &str, error: &PortError) -> Outcome {
        if error.is_transient() {
            return self
                .store_unavailable(delivery, id, &error.to_string())
                .await;
        }
        rejected::reject(
            self.deps.rejects.as_ref(),
            delivery,
            EventKind::SubmissionRequested.base_subject(),
            RejectReason::StoreRefused.as_str(),
            format!("the store refused submission {id}: {error}"),
            Some(id.to_owned()),
        )
        .await;
        Outcome::Rejected
    }

    async fn store_unavailable(&self, delivery: &dyn Delivery, id: &str, error: &str) -> Outcome {
        let delay = pump::retry_delay(u32::try_from(delivery.delivered()).unwrap_or(8).min(8));
        tracing::warn!(submission_id = %id, error, delay_ms = delay.as_millis() as u64, "submission store unavailable; will retry");
        if let Err(e) = delivery.nak(delay).await {
            tracing::warn!(error = %e, "nak failed; the bus redelivers after ack_wait");
        }
        Outcome::StoreUnavailable
    }

    async fn run_batch(&self, deliveries: Vec<Box<dyn Delivery>>) {
        let depth = deliveries.last().and_then(|d| d.pending()).unwrap_or(0);
        crate::figures::set_submission_queue_depth((depth + deliveries.len() as u64) as f64);
        // Every delivery at once: the log slots bound the calls, the pump's window the rest.
        futures::stream::iter(deliveries)
            .for_each_concurrent(None, |d| async move {
                let outcome = self.process(d.as_ref()).await;
                // Settled: free its slot in the pump's window now, not with the batch.
                drop(d);
                metrics::counter!("provd_rekor_submissions_total", "outcome" => outcome.as_str())
                    .increment(1);
                if outcome == Outcome::DeadLettered {
                    metrics::counter!("provd_rekor_dead_letters_total").increment(1);
                }
            })
            .await;
    }
}

impl Actor for Submitter {
    type Msg = SubmitterMsg;
    type State = SubmitterState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SubmitterState { pump: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let spec = self.consumer();
        state.pump = Some(pump::Pump::spawn(pump::run_window(
            self.deps.bus.clone(),
            spec,
            NAME,
            self.config.batch_size.max(1),
            myself,
            SubmitterMsg::Batch,
            |m| {
                let SubmitterMsg::Batch(b, _) = m;
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
            SubmitterMsg::Batch(deliveries, done) => {
                // The batch runs beside the mailbox: log calls may take many seconds.
                let this = self.clone();
                let work = tokio::spawn(async move { this.run_batch(deliveries).await });
                tokio::spawn(async move {
                    if let Err(e) = work.await {
                        // Unsettled deliveries come back after ack_wait.
                        tracing::error!(error = %e, "submission batch task failed");
                    }
                    let _ = done.send(());
                });
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use async_trait::async_trait;
    use events::data::SubmissionRequested;

    use super::*;
    use crate::domain::keys::{Algorithm, PrivateKey};
    use crate::domain::merkle::Hash;
    use crate::domain::receipt::InclusionProof;
    use crate::ports::{LogCheckpoint, RekorClient};
    use crate::testing::{MemoryBus, MemoryStore, MemorySubmissions, Settlement};

    /// A log client that answers submissions from a script.
    struct Scripted {
        answers: Mutex<VecDeque<Result<Receipt, RekorError>>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Receipt, RekorError>>) -> Arc<Self> {
            Arc::new(Scripted {
                answers: Mutex::new(answers.into()),
                calls: AtomicUsize::new(0),
            })
        }
    }

    fn unsupported<T>() -> Result<T, RekorError> {
        Err(RekorError::Unsupported("scripted".into()))
    }

    #[async_trait]
    impl RekorClient for Scripted {
        fn backend(&self) -> &str {
            "lab"
        }
        async fn submit(&self, _s: &RekorSubmission) -> Result<Receipt, RekorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or_else(|| Ok(receipt()))
        }
        async fn entry_by_index(&self, _i: u64) -> Result<Receipt, RekorError> {
            unsupported()
        }
        async fn entry_by_uuid(&self, _u: &str) -> Result<Receipt, RekorError> {
            unsupported()
        }
        async fn inclusion_proof(
            &self,
            _i: u64,
            _s: Option<u64>,
        ) -> Result<InclusionProof, RekorError> {
            unsupported()
        }
        async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError> {
            unsupported()
        }
        async fn consistency_proof(&self, _a: u64, _b: u64) -> Result<Vec<Hash>, RekorError> {
            unsupported()
        }
    }

    fn receipt() -> Receipt {
        Receipt {
            log_id: vec![7; 32],
            log_index: 42,
            tree_id: None,
            integrated_time: Some(1_700_000_000),
            kind_version: None,
            canonical_body: br#"{"kind":"dsse"}"#.to_vec(),
            inclusion_proof: None,
            signed_entry_timestamp: None,
        }
    }

    fn request() -> (Vec<u8>, String) {
        let key = PrivateKey::generate(Algorithm::P256, &mut crate::domain::keys::os_random)
            .expect("key");
        let envelope = Envelope::sign("text/plain", b"hello", &key, "");
        let pem = key.public_key().to_pem().expect("pem");
        let id = submission_id("lab", &envelope);
        let event = CloudEvent::new(
            "/test",
            SubmissionRequested {
                backend: None,
                envelope: serde_json::to_value(&envelope).expect("json"),
                verifier_keys: vec![pem],
            },
        );
        (event.to_json(), id)
    }

    struct Rig {
        bus: MemoryBus,
        store: MemorySubmissions,
        rejects: MemoryStore,
        subjects: Subjects,
        actor: ActorRef<SubmitterMsg>,
    }

    async fn rig(client: Arc<Scripted>, max_attempts: u32) -> Rig {
        let bus = MemoryBus::new();
        let store = MemorySubmissions::new();
        let rejects = MemoryStore::new();
        let subjects = Subjects::new("t");
        let deps = SubmitterDeps {
            bus: Arc::new(bus.clone()),
            store: Arc::new(store.clone()),
            rejects: Arc::new(rejects.clone()),
            backends: RekorBackends {
                default: "lab".into(),
                clients: BTreeMap::from([("lab".to_owned(), client as Arc<dyn RekorClient>)]),
            },
            subjects: subjects.clone(),
            source: "urn:provd:node:test".into(),
        };
        let config = SubmitterConfig {
            max_attempts,
            ..SubmitterConfig::default()
        };
        let (actor, _h) = Actor::spawn(None, Submitter::new(deps, config), ())
            .await
            .expect("starts");
        Rig {
            bus,
            store,
            rejects,
            subjects,
            actor,
        }
    }

    impl Rig {
        fn queue(&self, payload: Vec<u8>) {
            self.bus.publish_raw(
                &self.subjects.subject(EventKind::SubmissionRequested),
                payload,
            );
        }
        fn published(&self, kind: EventKind) -> Vec<serde_json::Value> {
            self.bus
                .published(&self.subjects.subject(kind))
                .iter()
                .map(|p| serde_json::from_slice(p).expect("json"))
                .collect()
        }
        async fn status(&self, id: &str) -> Option<SubmissionRecord> {
            self.store.submission(id).await.expect("store")
        }
    }

    async fn eventually(f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn transient() -> RekorError {
        RekorError::Transient {
            message: "503 Service Unavailable".into(),
            retry_after: Some(Duration::from_millis(1)),
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_then_the_receipt_is_stored_and_announced() {
        let client = Scripted::new(vec![Err(transient()), Ok(receipt())]);
        let rig = rig(client.clone(), 5).await;
        let (payload, id) = request();
        rig.queue(payload);
        eventually(|| rig.bus.settlements().contains(&Settlement::Ack)).await;
        assert_eq!(
            rig.bus.settlements(),
            vec![Settlement::Nak, Settlement::Ack]
        );
        assert_eq!(client.calls.load(Ordering::SeqCst), 2);
        let row = rig.status(&id).await.expect("recorded");
        assert_eq!(row.status, SubmissionStatus::Logged);
        assert_eq!(row.attempts, 2);
        assert_eq!(
            row.entry_uuid.as_deref(),
            Some(receipt().entry_id().as_str())
        );
        assert_eq!(rig.store.receipts().len(), 1);
        let logged = rig.published(EventKind::EntryLogged);
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["data"]["submission_id"], id);
        assert_eq!(logged[0]["data"]["log_index"], 42);
        rig.actor.stop(None);
    }

    #[tokio::test]
    async fn transient_failures_past_max_attempts_dead_letter_it_with_the_last_error() {
        let client = Scripted::new(vec![
            Err(transient()),
            Err(transient()),
            Err(transient()),
            Err(transient()),
        ]);
        let rig = rig(client.clone(), 3).await;
        let (payload, id) = request();
        rig.queue(payload);
        eventually(|| rig.bus.settlements().contains(&Settlement::Ack)).await;
        // Two naks with status `retrying`, then the third failure dead-letters it.
        assert_eq!(
            rig.bus.settlements(),
            vec![Settlement::Nak, Settlement::Nak, Settlement::Ack]
        );
        assert_eq!(client.calls.load(Ordering::SeqCst), 3);
        let row = rig.status(&id).await.expect("recorded");
        assert_eq!(row.status, SubmissionStatus::DeadLettered);
        let err = row.last_error.expect("kept");
        assert!(
            err.contains("gave up after 3 attempts") && err.contains("503"),
            "{err}"
        );
        let dead = rig.published(EventKind::SubmissionDeadLettered);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0]["data"]["attempts"], 3);
        assert!(rig.published(EventKind::EntryLogged).is_empty());
        rig.actor.stop(None);
    }

    #[tokio::test]
    async fn a_permanent_failure_dead_letters_at_once_with_the_logs_message() {
        let client = Scripted::new(vec![Err(RekorError::Rejected {
            status: 400,
            message: "signature verification failed".into(),
        })]);
        let rig = rig(client.clone(), 5).await;
        let (payload, id) = request();
        rig.queue(payload);
        eventually(|| rig.bus.settlements().contains(&Settlement::Ack)).await;
        assert_eq!(client.calls.load(Ordering::SeqCst), 1);
        let row = rig.status(&id).await.expect("recorded");
        assert_eq!(row.status, SubmissionStatus::DeadLettered);
        assert!(
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains("signature verification failed")),
            "{row:?}"
        );
        assert_eq!(rig.published(EventKind::SubmissionDeadLettered).len(), 1);
        rig.actor.stop(None);
    }

    #[tokio::test]
    async fn the_same_request_again_is_not_submitted_twice() {
        let client = Scripted::new(vec![]);
        let rig = rig(client.clone(), 5).await;
        let (payload, id) = request();
        rig.queue(payload.clone());
        eventually(|| rig.bus.settlements() == vec![Settlement::Ack]).await;
        // A second request for the same envelope (another event id) finds it logged.
        let mut again: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        again["id"] = serde_json::json!(uuid::Uuid::now_v7().to_string());
        rig.queue(serde_json::to_vec(&again).expect("json"));
        eventually(|| rig.bus.settlements().len() == 2).await;
        assert_eq!(
            rig.bus.settlements(),
            vec![Settlement::Ack, Settlement::Ack]
        );
        assert_eq!(client.calls.load(Ordering::SeqCst), 1, "submitted once");
        assert_eq!(rig.store.receipts().len(), 1);
        assert_eq!(
            rig.status(&id).await.expect("row").status,
            SubmissionStatus::Logged
        );
        rig.actor.stop(None);
    }

    #[tokio::test]
    async fn malformed_requests_are_rejected_and_do_not_stall_the_queue() {
        let client = Scripted::new(vec![]);
        let rig = rig(client.clone(), 5).await;
        rig.queue(b"{not json".to_vec());
        let (payload, _) = request();
        let mut bad_key: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        bad_key["data"]["verifier_keys"] = serde_json::json!(["not a pem"]);
        rig.queue(serde_json::to_vec(&bad_key).expect("json"));
        let mut bad_backend = bad_key.clone();
        bad_backend["data"]["backend"] = serde_json::json!("nowhere");
        rig.queue(serde_json::to_vec(&bad_backend).expect("json"));
        rig.queue(payload);
        eventually(|| rig.bus.settlements().len() == 4).await;
        assert_eq!(
            rig.bus.settlements(),
            vec![
                Settlement::Term,
                Settlement::Term,
                Settlement::Term,
                Settlement::Ack
            ]
        );
        let rejected = rig.rejects.rejected();
        assert_eq!(rejected.len(), 3);
        assert!(
            rejected[1].detail.contains("verifier_keys[0]"),
            "{rejected:?}"
        );
        assert!(
            rejected[2].detail.contains("unknown backend"),
            "{rejected:?}"
        );
        assert_eq!(client.calls.load(Ordering::SeqCst), 1);
        rig.actor.stop(None);
    }
}
