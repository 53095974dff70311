//! The narrow interfaces the actors need from the outside world.
//!
//! Adapters in the `provd` package implement them for PostgreSQL, Redis and NATS JetStream
//! (and, in embedded mode, SQLite, an in-process cache and an in-process bus); the
//! `testing` feature provides in-memory fakes. No actor knows which one it talks to.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::entry::{Entry, EntryWrite};
use crate::domain::invalidation::{Invalidation, LedgerRow};

/// Errors a port reports. Adapters map their own errors onto these kinds, which tell an
/// actor whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The backing service is unreachable or timed out; retrying later may succeed.
    #[error("{service} unavailable: {message}")]
    Unavailable {
        /// Which service (`postgres`, `redis`, `nats`, ...).
        service: &'static str,
        /// What happened.
        message: String,
    },
    /// The write conflicts with what is stored (a duplicate, a newer version); retrying the
    /// same write will not help.
    #[error("conflict: {0}")]
    Conflict(String),
    /// What the request names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request itself is wrong (the store refused its data); retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl PortError {
    /// Whether retrying later may succeed: only an unavailable service. Every other kind is
    /// permanent for this request and must be isolated, never retried as an outage.
    pub fn is_transient(&self) -> bool {
        matches!(self, PortError::Unavailable { .. })
    }
}

/// Where a new durable consumer starts reading. An existing consumer keeps its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// Only messages published after the consumer is first created (the stream's end).
    New,
    /// Messages published at or after this time: the stream's end as of a moment chosen
    /// by the caller, so nothing published between then and the consumer's creation is
    /// skipped.
    Since(DateTime<Utc>),
    /// Everything the stream still holds.
    All,
}

/// A durable consumer: its position survives restarts of provd and of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Stream name (already prefixed).
    pub stream: String,
    /// Durable consumer name; unique per stream.
    pub durable: String,
    /// Subject filter (already prefixed).
    pub filter_subject: String,
    /// Where a consumer that does not exist yet starts.
    pub start: StartPosition,
    /// How long a delivered message may stay unacknowledged before redelivery while the
    /// process it went to lives. A bus that can tell the broker "still working" (JetStream's
    /// progress acks) redelivers the deliveries of a process that died much sooner.
    pub ack_wait: Duration,
    /// How many deliveries before the broker gives up on a message.
    pub max_deliver: i64,
    /// Most delivered but unacknowledged messages; 0 keeps the broker's default.
    pub max_ack_pending: i64,
}

/// One delivered message, to be settled exactly once with ack, nak or term.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// The subject it was published on.
    fn subject(&self) -> &str;
    /// The raw payload: a structured event, also when the message came in CloudEvents'
    /// binary mode (the adapter converts it).
    fn payload(&self) -> &[u8];
    /// Why the message could not be read as a structured event at the adapter (a malformed
    /// binary-mode message, whose `payload` is then its body as sent): a consumer refuses it
    /// with this reason.
    fn binding_error(&self) -> Option<&events::DecodeError> {
        None
    }
    /// How many times it has been delivered, starting at 1.
    fn delivered(&self) -> u64;
    /// Messages still waiting behind this one on its consumer, when the bus knows.
    fn pending(&self) -> Option<u64> {
        None
    }
    /// The W3C trace context the message's headers carry, on a bus with headers.
    fn trace_context(&self) -> Option<crate::trace::TraceContext> {
        None
    }
    /// Done: never deliver it again.
    async fn ack(&self) -> Result<(), PortError>;
    /// Not now: deliver it again after `delay`.
    async fn nak(&self, delay: Duration) -> Result<(), PortError>;
    /// Never: it cannot be processed; do not redeliver.
    async fn term(&self) -> Result<(), PortError>;
}

/// What a consumer still has to do, as the broker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Messages not yet delivered plus those delivered and not yet acknowledged, by this
    /// process or by one that died and whose deliveries wait for redelivery.
    pub waiting: u64,
    /// When the oldest of them was published, when the broker tells.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// A pull subscription on a durable consumer.
#[async_trait]
pub trait Subscription: Send {
    /// Up to `max` messages, waiting at most `wait` for the first; empty when none came.
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Box<dyn Delivery>>, PortError>;

    /// The consumer's backlog as the broker counts it, when the bus can tell. Unlike the
    /// deliveries' own `pending`, it includes messages held unacknowledged.
    async fn backlog(&mut self) -> Result<Option<Backlog>, PortError> {
        Ok(None)
    }
}

/// The event bus: JetStream or the in-process bus.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes durably; returns once the broker has stored it. `msg_id` deduplicates.
    async fn publish(&self, subject: &str, msg_id: &str, payload: Vec<u8>)
    -> Result<(), PortError>;
    /// Opens (creating if needed) a durable pull consumer.
    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, PortError>;
}

/// What an invalidation did.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidationOutcome {
    /// The ledger row (the existing one when the revocation was already recorded).
    pub row: LedgerRow,
    /// The VeriKeys deleted by this call, to purge from the hot tiers. Empty for a duplicate.
    pub deleted_keys: Vec<String>,
    /// True when this revocation id was already in the ledger: nothing was done again.
    pub duplicate: bool,
}

/// The durable store as the invalidators see it.
#[async_trait]
pub trait InvalidationStore: Send + Sync + 'static {
    /// Deletes the matching entries and appends the ledger row, in one transaction.
    async fn invalidate(&self, inv: &Invalidation) -> Result<InvalidationOutcome, PortError>;
}

/// An inbound event that was refused, kept for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// Subject it arrived on.
    pub subject: String,
    /// Its id, when the envelope had one.
    pub event_id: Option<String>,
    /// Bounded reason (a metric label value).
    pub reason: String,
    /// What exactly is wrong.
    pub detail: String,
    /// The payload (possibly truncated).
    pub payload: Vec<u8>,
    /// When it was refused.
    pub rejected_at: DateTime<Utc>,
}

/// Where refused events are recorded.
#[async_trait]
pub trait RejectedEventStore: Send + Sync + 'static {
    /// Records one refused event.
    async fn record_rejected(&self, event: &RejectedEvent) -> Result<(), PortError>;
}

/// The hot tiers (Redis/Valkey, in-process) as an invalidator sees them.
#[async_trait]
pub trait HotCachePurge: Send + Sync + 'static {
    /// Removes these VeriKeys from the hot tier.
    async fn purge(&self, veri_keys: &[String]) -> Result<(), PortError>;
}

/// One stored evidence chunk with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    /// Position, from 0.
    pub index: u64,
    /// The hash stored beside the bytes, `sha256:<hex>`.
    pub hash: String,
    /// The media type of the evidence.
    pub content_type: String,
    /// The bytes as stored.
    pub data: Vec<u8>,
}

/// Totals over all stored evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvidenceTotals {
    /// Distinct proof roots (manifests).
    pub roots: u64,
    /// Chunks stored.
    pub chunks: u64,
    /// Bytes of evidence stored (the sum of the manifests' sizes).
    pub bytes: u64,
}

/// Where Merkle-chunked evidence is kept.
#[async_trait]
pub trait EvidenceStore: Send + Sync + 'static {
    /// Stores the manifest and all its chunks in one transaction. Storing a root that is
    /// already there changes nothing and returns `false`; a new root returns `true`.
    async fn put_evidence(
        &self,
        manifest: &crate::domain::evidence::Manifest,
        chunks: &[crate::domain::evidence::Chunk],
    ) -> Result<bool, PortError>;

    /// The manifest of a root, if stored.
    async fn manifest(
        &self,
        proof_root: &str,
    ) -> Result<Option<crate::domain::evidence::Manifest>, PortError>;

    /// Stored chunk metadata (no bytes) with `index >= from`, ascending, at most `limit`.
    async fn chunk_infos(
        &self,
        proof_root: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<crate::domain::evidence::ChunkInfo>, PortError>;

    /// Stored chunks with their bytes and `index >= from`, ascending, at most `limit`.
    async fn chunks(
        &self,
        proof_root: &str,
        from: u64,
        limit: u64,
    ) -> Result<Vec<StoredChunk>, PortError>;

    /// One stored chunk with its bytes.
    async fn chunk(&self, proof_root: &str, index: u64) -> Result<Option<StoredChunk>, PortError>;

    /// Totals over all stored evidence.
    async fn evidence_totals(&self) -> Result<EvidenceTotals, PortError>;
}

/// One cache tier above the durable store: the in-process tier or Valkey/Redis.
///
/// Entries are shared (`Arc`), so a hit in the in-process tier hands out a reference
/// instead of copying the entry and its verdict JSON.
#[async_trait]
pub trait EntryTier: Send + Sync + 'static {
    /// The tier's name, as in the `X-Provcache-Tier` header and metric labels.
    fn name(&self) -> &'static str;
    /// The entry, when the tier holds it and it has not expired.
    async fn get(&self, veri_key: &str) -> Result<Option<Arc<Entry>>, PortError>;
    /// Stores the entry until its `expires_at`.
    async fn put(&self, entry: &Arc<Entry>) -> Result<(), PortError>;
    /// Removes these VeriKeys.
    async fn remove(&self, veri_keys: &[String]) -> Result<(), PortError>;
}

/// What one durable upsert did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// Writes stored (inserted, or newer than the stored version).
    pub written: u64,
    /// Writes dropped because an invalidation matching them was recorded after they were
    /// accepted.
    pub invalidated: u64,
    /// The VeriKeys of those dropped writes: the hot tiers may still hold them (they were
    /// put there before the invalidation, which only purges what it deleted from the
    /// durable tier), so the caller purges them.
    pub invalidated_keys: Vec<String>,
}

/// The durable tier of entries (PostgreSQL; SQLite in embedded mode).
#[async_trait]
pub trait EntryStore: Send + Sync + 'static {
    /// The tier's name in the `X-Provcache-Tier` header and the `tier` metric label
    /// (`postgres`, `sqlite`).
    fn name(&self) -> &'static str;
    /// The live entry with this VeriKey.
    async fn get_entry(&self, veri_key: &str) -> Result<Option<Entry>, PortError>;
    /// Upserts the writes and their signer-set members in one transaction: the newest
    /// version of each entry wins, and a write is skipped when an invalidation matching it
    /// was recorded after it was accepted.
    async fn upsert_entries(&self, writes: &[EntryWrite]) -> Result<UpsertOutcome, PortError>;
    /// Whether an invalidation recorded after `write` was accepted matches it: the rule
    /// [`EntryStore::upsert_entries`] drops writes by, asked on its own so a writer can
    /// take an entry back out of the hot tiers right after putting it there.
    async fn invalidated_after(&self, write: &EntryWrite) -> Result<bool, PortError>;
}

/// What provd asks a transparency log to record: a DSSE envelope and the keys that verify
/// its signatures.
#[derive(Debug, Clone)]
pub struct RekorSubmission {
    /// The signed envelope.
    pub envelope: crate::domain::dsse::Envelope,
    /// Public keys that verify the envelope's signatures.
    pub verifiers: Vec<crate::domain::keys::PublicKey>,
}

/// A checkpoint as a log served it, after its signature and origin were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheckpoint {
    /// The signed note exactly as received.
    pub note: String,
    /// The parsed checkpoint body.
    pub checkpoint: crate::domain::note::Checkpoint,
}

/// Errors a transparency-log client reports, classified so a caller knows whether trying
/// again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RekorError {
    /// The log could not be reached or asked to come back later (connection error,
    /// timeout, 408, 429, 5xx); retrying later may succeed.
    #[error("transparency log unavailable: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// How long the log asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The circuit breaker for this backend is open after repeated failures.
    #[error("circuit open for backend {backend}; next probe in {retry_in:?}")]
    CircuitOpen {
        /// The backend name.
        backend: String,
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The log refused the request (a 4xx other than 408, 409 and 429): retrying will not
    /// help. The message is the log's own.
    #[error("transparency log rejected the request ({status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The log's message.
        message: String,
    },
    /// provd refuses the request before sending it (e.g. an Ed25519 signer for Rekor v2).
    #[error("invalid submission: {0}")]
    Invalid(String),
    /// The entry, proof or checkpoint asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The log answered, but the answer did not verify (inclusion proof, checkpoint
    /// signature, origin, SET): it is never believed.
    #[error("unverified answer from the transparency log: {0}")]
    Unverified(String),
    /// The operation does not exist for this kind of log (e.g. a UUID lookup on Rekor v2).
    #[error("unsupported by this log: {0}")]
    Unsupported(String),
}

impl RekorError {
    /// Whether retrying later may succeed. An unverified answer counts: a log may serve a
    /// proof for a checkpoint it has not published yet.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RekorError::Transient { .. }
                | RekorError::CircuitOpen { .. }
                | RekorError::Unverified(_)
        )
    }
}

/// One transparency-log backend (Rekor v1, Rekor v2, or the in-memory stub). Every answer
/// is verified against the backend's trusted keys before it is returned.
#[async_trait]
pub trait RekorClient: Send + Sync + 'static {
    /// The backend's configured name, as in metric labels and the API.
    fn backend(&self) -> &str;

    /// Logs the envelope and returns its verified receipt. An entry the log already holds
    /// (409) is fetched and returned as success, so a retried submission never makes a
    /// second entry.
    async fn submit(
        &self,
        submission: &RekorSubmission,
    ) -> Result<crate::domain::receipt::Receipt, RekorError>;

    /// The verified entry at this log index (Rekor v1: the virtual index).
    async fn entry_by_index(
        &self,
        log_index: u64,
    ) -> Result<crate::domain::receipt::Receipt, RekorError>;

    /// The verified entry with this UUID or entry ID.
    async fn entry_by_uuid(
        &self,
        uuid: &str,
    ) -> Result<crate::domain::receipt::Receipt, RekorError>;

    /// An inclusion proof for the entry at `log_index` in the tree of `tree_size`, or in the
    /// log's current tree when `None`.
    async fn inclusion_proof(
        &self,
        log_index: u64,
        tree_size: Option<u64>,
    ) -> Result<crate::domain::receipt::InclusionProof, RekorError>;

    /// The log's latest checkpoint, verified.
    async fn checkpoint(&self) -> Result<LogCheckpoint, RekorError>;

    /// The consistency proof between two tree sizes (`old_size <= new_size`).
    async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<crate::domain::merkle::Hash>, RekorError>;

    /// The log's latest signed checkpoint note exactly as served, **unverified**: the
    /// evidence kept when [`RekorClient::checkpoint`] refuses it. Never believe it.
    async fn checkpoint_note_unverified(&self) -> Result<String, RekorError> {
        Err(RekorError::Unsupported(
            "this client cannot fetch an unverified checkpoint".into(),
        ))
    }
}

/// The configured transparency-log backends by name, and which one is the default.
#[derive(Clone)]
pub struct RekorBackends {
    /// The backend used when a request names none.
    pub default: String,
    /// Every configured backend.
    pub clients: std::collections::BTreeMap<String, std::sync::Arc<dyn RekorClient>>,
}

impl RekorBackends {
    /// The backend with this name, or the default one for `None`.
    pub fn resolve(&self, name: Option<&str>) -> Option<&std::sync::Arc<dyn RekorClient>> {
        self.clients.get(name.unwrap_or(&self.default))
    }
}

/// The revocation ledger as the outbox publisher sees it.
#[async_trait]
pub trait LedgerOutboxStore: Send + Sync + 'static {
    /// The highest `seq_no` already published (0 when none).
    async fn published_seq_no(&self) -> Result<i64, PortError>;
    /// Records that every row up to `seq_no` is published; never moves backwards.
    async fn set_published_seq_no(&self, seq_no: i64) -> Result<(), PortError>;
    /// Ledger rows with `seq_no > after`, oldest first, at most `limit`.
    async fn ledger_rows(&self, after: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError>;
}

/// The ledger and this node's replay checkpoint, as a replay sees them.
#[async_trait]
pub trait ReplayStore: Send + Sync + 'static {
    /// Ledger rows with `seq_no > after`, oldest first, at most `limit`.
    async fn ledger_rows(&self, after: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError>;
    /// The highest `seq_no` in the ledger (0 when empty).
    async fn ledger_head(&self) -> Result<i64, PortError>;
    /// The last `seq_no` this node applied (0 when it never did).
    async fn checkpoint(&self, node_id: &str) -> Result<i64, PortError>;
    /// Records that this node applied every row up to `seq_no`; never moves backwards.
    /// Returns the stored checkpoint.
    async fn save_checkpoint(&self, node_id: &str, seq_no: i64) -> Result<i64, PortError>;
    /// Re-applies these revocations to the durable tier: deletes every entry matching a
    /// row's criterion that was accepted no later than the row was recorded (so a later,
    /// legitimate write survives). Idempotent. Returns the VeriKeys deleted.
    async fn reapply(&self, rows: &[LedgerRow]) -> Result<Vec<String>, PortError>;
}

/// The hot tiers (in-process, Valkey/Redis) purged by criterion: a node removes what its
/// own tiers hold for revocations made anywhere.
#[async_trait]
pub trait HotTierSweep: Send + Sync + 'static {
    /// Removes every hot entry matching one of `criteria`, and these VeriKeys. Returns the
    /// VeriKeys that were present and are now gone (each once).
    async fn sweep(
        &self,
        criteria: &[crate::domain::invalidation::Criterion],
        veri_keys: &[String],
    ) -> Result<Vec<String>, PortError>;
}

/// A submission to record when it is first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubmission {
    /// The id derived from envelope and backend.
    pub id: String,
    /// The backend it is for.
    pub backend: String,
    /// The DSSE envelope as JSON.
    pub envelope: serde_json::Value,
    /// The verifier keys, PEM.
    pub verifier_keys: Vec<String>,
}

/// A stored submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionRecord {
    /// The id derived from envelope and backend.
    pub id: String,
    /// The backend it is for.
    pub backend: String,
    /// Where it is in its life.
    pub status: crate::domain::submission::SubmissionStatus,
    /// The DSSE envelope as JSON.
    pub envelope: serde_json::Value,
    /// The verifier keys, PEM.
    pub verifier_keys: Vec<String>,
    /// Attempts made since it was (re)queued.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The logged entry's UUID, once logged.
    pub entry_uuid: Option<String>,
    /// When it was first accepted.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A stored receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The entry UUID (Rekor v1) or entry ID.
    pub uuid: String,
    /// The backend that logged it.
    pub backend: String,
    /// The submission that produced it, when it came through the queue.
    pub submission_id: Option<String>,
    /// The receipt.
    pub receipt: crate::domain::receipt::Receipt,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When a log sync last re-verified its inclusion.
    pub verified_at: Option<DateTime<Utc>>,
}

/// What [`SubmissionStore::start_attempt`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStart {
    /// The attempt is recorded (status `submitting`, one more attempt): call the log.
    Started(SubmissionRecord),
    /// Nothing to submit: the row as it is, `logged`, or `dead_lettered` when that was
    /// asked to be final.
    Settled(SubmissionRecord),
}

/// Where submissions and receipts are kept (PostgreSQL; SQLite in embedded mode).
#[async_trait]
pub trait SubmissionStore: Send + Sync + 'static {
    /// Records the submission unless it exists, and returns the stored row either way.
    async fn ensure_submission(&self, new: &NewSubmission) -> Result<SubmissionRecord, PortError>;
    /// Marks an attempt as started: status `submitting`, one more attempt.
    async fn begin_attempt(&self, id: &str) -> Result<SubmissionRecord, PortError>;
    /// [`ensure_submission`](Self::ensure_submission) and then
    /// [`begin_attempt`](Self::begin_attempt), unless the submission is `logged`, or
    /// `dead_lettered` while `dead_letter_is_final`. A store overrides it to do both in
    /// one write, so each attempt costs one commit.
    async fn start_attempt(
        &self,
        new: &NewSubmission,
        dead_letter_is_final: bool,
    ) -> Result<AttemptStart, PortError> {
        use crate::domain::submission::SubmissionStatus;
        let existing = self.ensure_submission(new).await?;
        match existing.status {
            SubmissionStatus::Logged => Ok(AttemptStart::Settled(existing)),
            SubmissionStatus::DeadLettered if dead_letter_is_final => {
                Ok(AttemptStart::Settled(existing))
            }
            _ => Ok(AttemptStart::Started(self.begin_attempt(&new.id).await?)),
        }
    }
    /// Stores the receipt and marks the submission `logged`, in one transaction.
    async fn record_logged(
        &self,
        id: &str,
        uuid: &str,
        receipt: &crate::domain::receipt::Receipt,
    ) -> Result<(), PortError>;
    /// Records a failed attempt with the status it leads to (`retrying` or
    /// `dead_lettered`) and returns the updated row.
    async fn record_failure(
        &self,
        id: &str,
        status: crate::domain::submission::SubmissionStatus,
        error: &str,
    ) -> Result<SubmissionRecord, PortError>;
    /// The submission with this id.
    async fn submission(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError>;
    /// The stored receipt with this UUID.
    async fn stored_receipt(&self, uuid: &str) -> Result<Option<StoredReceipt>, PortError>;
    /// Puts a retryable submission back to `queued` with no attempts; returns the row as it
    /// now is (unchanged when it was not retryable), or `None` when there is none.
    async fn requeue(&self, id: &str) -> Result<Option<SubmissionRecord>, PortError>;
}

// ---- Log monitoring: checkpoint store, divergences, alerts (issue 5) ----

/// A verified checkpoint as one node observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedCheckpoint {
    /// The backend name.
    pub backend: String,
    /// The origin line.
    pub origin: String,
    /// The tree size.
    pub tree_size: u64,
    /// The root hash.
    pub root_hash: crate::domain::merkle::Hash,
    /// The signed note exactly as received.
    pub note: String,
    /// The node that verified it.
    pub observed_by: String,
}

impl ObservedCheckpoint {
    /// The parts the divergence rules compare.
    pub fn head(&self) -> crate::domain::divergence::TreeHead {
        crate::domain::divergence::TreeHead {
            origin: self.origin.clone(),
            size: self.tree_size,
            root: self.root_hash,
        }
    }
}

/// A stored verified checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Its row id.
    pub id: i64,
    /// What was observed.
    pub checkpoint: ObservedCheckpoint,
    /// When it was stored.
    pub observed_at: DateTime<Utc>,
}

/// Which stored checkpoints to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointQuery {
    /// Only this backend.
    pub backend: Option<String>,
    /// Only this origin.
    pub origin: Option<String>,
    /// Only this tree size.
    pub tree_size: Option<u64>,
    /// At most this many.
    pub limit: u32,
}

/// Verified checkpoints and the receipts they re-verify (PostgreSQL).
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// Stores a verified checkpoint; storing the same one again changes nothing.
    async fn record_checkpoint(&self, checkpoint: &ObservedCheckpoint) -> Result<(), PortError>;
    /// The largest verified checkpoint of this backend and origin that `observed_by` stored.
    async fn latest_checkpoint(
        &self,
        backend: &str,
        origin: &str,
        observed_by: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError>;
    /// A stored checkpoint of this origin and size, by any node, whose root is not `root`.
    async fn conflicting_checkpoint(
        &self,
        origin: &str,
        tree_size: u64,
        root: &crate::domain::merkle::Hash,
    ) -> Result<Option<StoredCheckpoint>, PortError>;
    /// The checkpoint of this origin another node stored most recently (not `exclude`'s).
    async fn latest_foreign_checkpoint(
        &self,
        origin: &str,
        exclude: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError>;
    /// Stored checkpoints matching `query`, newest first.
    async fn checkpoints(
        &self,
        query: &CheckpointQuery,
    ) -> Result<Vec<StoredCheckpoint>, PortError>;
    /// Receipts of this backend not yet re-verified whose proof's checkpoint has this origin
    /// and whose shard index is below `tree_size`, oldest first, at most `limit`.
    async fn unverified_receipts(
        &self,
        backend: &str,
        origin: &str,
        tree_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredReceipt>, PortError>;
    /// Marks these receipts re-verified now.
    async fn mark_receipts_verified(&self, uuids: &[String]) -> Result<(), PortError>;
}

/// A divergence to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDivergence {
    /// The backend concerned.
    pub backend: String,
    /// The origin concerned.
    pub origin: String,
    /// What kind.
    pub kind: crate::domain::divergence::DivergenceKind,
    /// Both signed notes, the proof, what failed.
    pub evidence: serde_json::Value,
    /// The node that detected it.
    pub detected_by: String,
    /// Raised once per key (see [`crate::domain::divergence::dedupe_key`]).
    pub dedupe_key: String,
}

/// A stored divergence.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// Its id.
    pub id: i64,
    /// The backend concerned.
    pub backend: String,
    /// The origin concerned.
    pub origin: String,
    /// What kind (`fork`, `rollback`, ...).
    pub kind: String,
    /// The evidence.
    pub evidence: serde_json::Value,
    /// The node that detected it.
    pub detected_by: String,
    /// When.
    pub detected_at: DateTime<Utc>,
    /// When an operator acknowledged it.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When `rekor.checkpoints.diverged` was published for it.
    pub published_at: Option<DateTime<Utc>>,
    /// When the webhook accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Webhook attempts so far.
    pub delivery_attempts: u32,
    /// The last webhook failure.
    pub last_delivery_error: Option<String>,
}

/// Divergences and their outbox (PostgreSQL).
#[async_trait]
pub trait DivergenceStore: Send + Sync + 'static {
    /// Stores a divergence unless one with its dedupe key exists; returns it when new.
    async fn raise_divergence(&self, new: &NewDivergence) -> Result<Option<Divergence>, PortError>;
    /// Unacknowledged divergences, of one backend or all, oldest first.
    async fn open_divergences(&self, backend: Option<&str>) -> Result<Vec<Divergence>, PortError>;
    /// The newest divergences, at most `limit`; only unacknowledged ones when `open_only`.
    async fn divergences(&self, open_only: bool, limit: u32) -> Result<Vec<Divergence>, PortError>;
    /// Acknowledges one; `None` when there is no such divergence. Acknowledging twice
    /// keeps the first acknowledgement.
    async fn acknowledge_divergence(
        &self,
        id: i64,
        by: &str,
    ) -> Result<Option<Divergence>, PortError>;
    /// Divergences `detected_by` raised that are not yet published, or (with `webhook`) not
    /// yet delivered, oldest first.
    async fn undelivered_divergences(
        &self,
        detected_by: &str,
        webhook: bool,
        limit: u32,
    ) -> Result<Vec<Divergence>, PortError>;
    /// Records that the event was published.
    async fn mark_divergence_published(&self, id: i64) -> Result<(), PortError>;
    /// Records that the webhook accepted it.
    async fn mark_divergence_delivered(&self, id: i64) -> Result<(), PortError>;
    /// Records a failed webhook attempt.
    async fn record_delivery_failure(&self, id: i64, error: &str) -> Result<(), PortError>;
}

/// Where divergence alerts go (the configured webhook).
#[async_trait]
pub trait AlertSink: Send + Sync + 'static {
    /// Delivers one alert; `Ok` once the receiver accepted it (2xx).
    async fn send(&self, alert: &serde_json::Value) -> Result<(), PortError>;
}

/// What one tile prefetch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Tiles and entry bundles fetched, verified and stored.
    pub fetched: u64,
    /// Tiles already in the cache.
    pub cached: u64,
}

/// The tile cache as the tile-sync actor sees it: fill it with the tiles of a checkpoint
/// another actor observed and verified.
#[async_trait]
pub trait TilePrefetcher: Send + Sync + 'static {
    /// Whether `backend` is a tile log this cache mirrors.
    fn mirrors(&self, backend: &str) -> bool;
    /// Verifies the signed `note` with the backend's keys, then fetches, verifies and stores
    /// every tile and entry bundle its tree needs that the cache lacks.
    async fn prefetch(&self, backend: &str, note: &str) -> Result<PrefetchReport, PortError>;
}

/// One stored version of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The policy's name.
    pub name: String,
    /// Its version: 1 for the first document stored under the name, +1 for each change.
    pub version: i64,
    /// `sha256:<hex>` of the document's canonical JSON.
    pub policy_hash: String,
    /// The document (canonical JSON).
    pub document: serde_json::Value,
    /// When this version was stored.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What storing a policy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyPut {
    /// The name was new: version 1.
    Created(StoredPolicy),
    /// The document differs from the current one: a new version; `previous` is replaced.
    Replaced {
        /// The new current version.
        current: StoredPolicy,
        /// The version it replaces.
        previous: StoredPolicy,
    },
    /// The same document was stored again: nothing changed.
    Unchanged(StoredPolicy),
}

/// Where policies are kept, versioned: every version stays, the highest is current.
#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Stores `document` (canonical JSON, hash `policy_hash`) as the current version of
    /// `name`, in one transaction; storing the current document again changes nothing.
    async fn put_policy(
        &self,
        name: &str,
        policy_hash: &str,
        document: &serde_json::Value,
    ) -> Result<PolicyPut, PortError>;

    /// The current version of `name`.
    async fn policy(&self, name: &str) -> Result<Option<StoredPolicy>, PortError>;

    /// The current version of every policy, by name.
    async fn policies(&self) -> Result<Vec<StoredPolicy>, PortError>;

    /// A stored version with this hash (any name), for explaining old verdicts.
    async fn policy_by_hash(&self, policy_hash: &str) -> Result<Option<StoredPolicy>, PortError>;
}
