//! The event bus on NATS JetStream.
//!
//! Streams come from `events::streams` under this deployment's prefix and are created on
//! first use. Consumers are durable pull consumers with explicit ack, so a restart of provd
//! or of NATS resumes where it stopped.
//!
//! Every stream and consumer provd creates carries its deployment's id in its description
//! (`provd deployment <uuid>`, the id from the database), so that two deployments (two
//! databases) sharing one NATS server and one `nats_prefix` do not take each other's work
//! unnoticed: [`JetStreamBus::claim`] refuses, at start, streams or consumers that name
//! another deployment and adopts those without a description (made by provd before
//! deployment ids); creating the streams and subscribing check again, for a deployment that
//! got there in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actors::ports::{
    Backlog, ConsumerSpec, Delivery, EventBus, PortError, StartPosition, Subscription,
};
use actors::trace::TraceContext;
use async_nats::jetstream::{self, AckKind, consumer, message::PublishMessage, stream};
use async_trait::async_trait;
use events::Subjects;
use events::streams::{self as defs, Retention};
use futures::StreamExt;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::AdapterError;

/// The W3C trace-context headers (the CloudEvents NATS binding maps extensions such as
/// `traceparent` to headers of the same name).
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

fn nats_err(e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Nats(e.to_string())
}

/// What the description of a stream or consumer provd creates starts with; the owning
/// deployment's id follows.
pub const OWNER_DESCRIPTION: &str = "provd deployment ";

/// The description of a stream or consumer that `deployment` owns.
pub fn owner_description(deployment: Uuid) -> String {
    format!("{OWNER_DESCRIPTION}{deployment}")
}

/// Whom a stream or consumer belongs to, as its description says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// No description: made by a provd from before deployment ids; the deployment whose
    /// streams these are adopts it.
    Unclaimed,
    /// The deployment with this id.
    Deployment(Uuid),
    /// A description provd does not write: not provd's, left alone.
    Other,
}

impl Owner {
    /// Reads a stream's or consumer's description.
    pub fn of(description: Option<&str>) -> Owner {
        match description.map(str::trim) {
            None | Some("") => Owner::Unclaimed,
            Some(d) => d
                .strip_prefix(OWNER_DESCRIPTION)
                .and_then(|id| Uuid::parse_str(id.trim()).ok())
                .map_or(Owner::Other, Owner::Deployment),
        }
    }
}

/// One of this deployment's streams, or a durable consumer on one, that another
/// deployment made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignOwner {
    /// The stream, by its (prefixed) name.
    pub stream: String,
    /// The consumer's name, when it is a consumer that names the other deployment.
    pub consumer: Option<String>,
    /// The deployment its description names.
    pub owner: Uuid,
    /// This deployment.
    pub deployment: Uuid,
}

impl ForeignOwner {
    /// What belongs to the other deployment, in words: the stream, or the consumer on it.
    pub fn what(&self) -> String {
        match &self.consumer {
            Some(c) => format!("consumer `{c}` on JetStream stream `{}`", self.stream),
            None => format!("JetStream stream `{}`", self.stream),
        }
    }
}

impl std::fmt::Display for ForeignOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} belongs to deployment {}, not to this deployment ({}); give each deployment \
             its own `nats_prefix`",
            self.what(),
            self.owner,
            self.deployment
        )
    }
}

impl From<ForeignOwner> for AdapterError {
    fn from(f: ForeignOwner) -> Self {
        AdapterError::ForeignOwner(Box::new(f))
    }
}

/// The JetStream event bus.
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    streams_ready: std::sync::Arc<OnceCell<()>>,
    reconnects: tokio::sync::watch::Receiver<u64>,
    max_bytes: Option<i64>,
    deployment: Option<Uuid>,
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

impl JetStreamBus {
    /// Connects to `url`. The connection is retried in the background when NATS is down,
    /// so provd starts and reports not-ready instead of exiting.
    pub async fn connect(url: &str, subjects: Subjects) -> Result<Self, AdapterError> {
        // Counts (re)connections, so the ledger consumer catches up after a partition.
        let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
        let reconnected = std::sync::Arc::new(reconnected);
        let client = async_nats::ConnectOptions::new()
            .name("provd")
            .event_callback(move |event| {
                let reconnected = reconnected.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        reconnected.send_modify(|n| *n += 1);
                    }
                }
            })
            .connection_timeout(Duration::from_secs(3))
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(nats_err)?;
        let js = jetstream::new(client.clone());
        Ok(JetStreamBus {
            client,
            js,
            subjects,
            streams_ready: std::sync::Arc::new(OnceCell::new()),
            reconnects,
            max_bytes: None,
            deployment: None,
        })
    }

    /// Caps every stream it creates at `max_bytes` instead of the stream's default.
    /// JetStream reserves a stream's limit up front, so this bounds what a deployment
    /// claims from the server.
    pub fn with_stream_max_bytes(mut self, max_bytes: Option<i64>) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Tags every stream and consumer it creates with `deployment` and refuses those that
    /// name another one. Without it (a bus that only publishes) they get no description.
    pub fn for_deployment(mut self, deployment: Uuid) -> Self {
        self.deployment = Some(deployment);
        self
    }

    /// Whether the connection to NATS is up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A counter that grows on every (re)connection to NATS.
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnects.clone()
    }

    /// The deployment's subjects.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Creates every stream that does not exist yet (idempotent), and refuses streams that
    /// another deployment made ([`AdapterError::ForeignOwner`]): another deployment may
    /// have made them after the start-up [`JetStreamBus::claim`].
    pub async fn ensure_streams(&self) -> Result<(), AdapterError> {
        self.streams_ready
            .get_or_try_init(|| async {
                for def in &defs::ALL {
                    let name = self.subjects.stream_name(def);
                    let config = stream::Config {
                        name: name.clone(),
                        description: self.deployment.map(owner_description),
                        subjects: self.subjects.stream_subjects(def),
                        retention: match def.retention {
                            Retention::Limits => stream::RetentionPolicy::Limits,
                            Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
                        },
                        max_age: def.max_age,
                        max_bytes: self.max_bytes.unwrap_or(def.max_bytes),
                        duplicate_window: def.duplicate_window,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    };
                    let stream = self
                        .js
                        .get_or_create_stream(config)
                        .await
                        .map_err(nats_err)?;
                    self.check_owner(
                        &name,
                        None,
                        stream.cached_info().config.description.as_deref(),
                    )?;
                }
                Ok::<(), AdapterError>(())
            })
            .await?;
        Ok(())
    }

    /// Deletes this deployment's streams (tests clean up with it).
    pub async fn delete_streams(&self) -> Result<(), AdapterError> {
        for def in &defs::ALL {
            let name = self.subjects.stream_name(def);
            match self.js.delete_stream(&name).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(nats_err(e)),
            }
        }
        Ok(())
    }

    /// `Err` when `description` (of `stream`, or of `consumer` on it) names a deployment
    /// other than this one.
    fn check_owner(
        &self,
        stream: &str,
        consumer: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), ForeignOwner> {
        match (self.deployment, Owner::of(description)) {
            (Some(deployment), Owner::Deployment(owner)) if owner != deployment => {
                Err(ForeignOwner {
                    stream: stream.to_owned(),
                    consumer: consumer.map(str::to_owned),
                    owner,
                    deployment,
                })
            }
            _ => Ok(()),
        }
    }

    /// Makes this deployment's streams and their durable consumers this deployment's,
    /// before any actor subscribes. A stream or consumer whose description names another
    /// deployment refuses the whole deployment ([`AdapterError::ForeignOwner`]) before
    /// anything is changed. Those without a description (made by provd before deployment
    /// ids) are adopted: the description is set, the rest of the configuration and the
    /// position kept. A stream must take it; a consumer may not (nats-server before 2.10
    /// cannot update a consumer with a start time), and its stream's owner then speaks for
    /// it. Returns what was adopted (`stream`, `stream/consumer`). A stream that does not
    /// exist yet has nothing to check: provd creates it with this deployment's id. Without
    /// a deployment ([`JetStreamBus::for_deployment`]) there is nothing to claim.
    pub async fn claim(&self) -> Result<Vec<String>, AdapterError> {
        let Some(deployment) = self.deployment else {
            return Ok(Vec::new());
        };
        let (mut streams, mut consumers) = (Vec::new(), Vec::new());
        for def in &defs::ALL {
            let name = self.subjects.stream_name(def);
            let s = match self.js.get_stream(&name).await {
                Ok(s) => s,
                Err(e) if e.to_string().contains("not found") => continue,
                Err(e) => return Err(nats_err(e)),
            };
            let config = s.cached_info().config.clone();
            self.check_owner(&name, None, config.description.as_deref())?;
            if Owner::of(config.description.as_deref()) == Owner::Unclaimed {
                streams.push(config);
            }
            let mut infos = s.consumers();
            while let Some(info) = infos.next().await {
                let info = info.map_err(nats_err)?;
                self.check_owner(&name, Some(&info.name), info.config.description.as_deref())?;
                // Only durable consumers are provd's; an ephemeral one is gone soon.
                if Owner::of(info.config.description.as_deref()) == Owner::Unclaimed
                    && info.config.durable_name.is_some()
                {
                    consumers.push((name.clone(), info));
                }
            }
        }
        let mut adopted = Vec::new();
        for mut config in streams {
            config.description = Some(owner_description(deployment));
            self.js.update_stream(&config).await.map_err(nats_err)?;
            adopted.push(config.name);
        }
        for (stream, info) in consumers {
            match self.adopt(&stream, info.config, deployment).await {
                Ok(()) => adopted.push(format!("{stream}/{}", info.name)),
                Err(e) => tracing::debug!(
                    stream,
                    consumer = info.name,
                    error = %e,
                    "consumer left without this deployment's id; its stream carries it"
                ),
            }
        }
        Ok(adopted)
    }

    /// Sets `deployment` as the owner in a consumer's description. The rest of `config` is
    /// the consumer's own, so JetStream takes it as an update.
    async fn adopt(
        &self,
        stream: &str,
        mut config: consumer::Config,
        deployment: Uuid,
    ) -> Result<(), AdapterError> {
        config.description = Some(owner_description(deployment));
        self.js
            .create_consumer_on_stream(config, stream)
            .await
            .map_err(nats_err)?;
        Ok(())
    }

    /// Messages not yet delivered or acknowledged on a durable consumer.
    pub async fn consumer_pending(&self, stream: &str, durable: &str) -> Result<u64, AdapterError> {
        let s = self.js.get_stream(stream).await.map_err(nats_err)?;
        let mut c: consumer::PullConsumer = s.get_consumer(durable).await.map_err(nats_err)?;
        let info = c.info().await.map_err(nats_err)?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Every durable consumer on this deployment's streams with its pending messages
    /// (undelivered plus unacknowledged), for the `provd_jetstream_consumer_pending` gauge.
    pub async fn consumers_pending(&self) -> Result<Vec<(String, u64)>, AdapterError> {
        let mut out = Vec::new();
        for def in &defs::ALL {
            let s = match self.js.get_stream(self.subjects.stream_name(def)).await {
                Ok(s) => s,
                // A stream nobody has used yet has no consumers.
                Err(e) if e.to_string().contains("not found") => continue,
                Err(e) => return Err(nats_err(e)),
            };
            let mut infos = s.consumers();
            while let Some(info) = infos.next().await {
                let info = info.map_err(nats_err)?;
                out.push((
                    info.name.clone(),
                    info.num_pending + info.num_ack_pending as u64,
                ));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl EventBus for JetStreamBus {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), PortError> {
        self.ensure_streams().await?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id);
        // The publishing span's trace context, for consumers that read headers (provd's
        // own, and any other system's).
        if let Some(cx) = TraceContext::current() {
            message = message.header(TRACEPARENT, cx.traceparent.as_str());
            if let Some(state) = &cx.tracestate {
                message = message.header(TRACESTATE, state.as_str());
            }
        }
        let ack = self
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(nats_err)?;
        ack.await.map_err(nats_err)?;
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, PortError> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(&spec.stream).await.map_err(nats_err)?;
        let server_ack_wait = spec.ack_wait.min(SERVER_ACK_WAIT);
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &spec.durable,
                consumer::pull::Config {
                    durable_name: Some(spec.durable.clone()),
                    description: self.deployment.map(owner_description),
                    filter_subject: spec.filter_subject.clone(),
                    deliver_policy: match spec.start {
                        StartPosition::New => consumer::DeliverPolicy::New,
                        StartPosition::Since(t) => consumer::DeliverPolicy::ByStartTime {
                            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                                i128::from(t.timestamp_nanos_opt().unwrap_or(0)),
                            )
                            .map_err(nats_err)?,
                        },
                        StartPosition::All => consumer::DeliverPolicy::All,
                    },
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: server_ack_wait,
                    max_deliver: spec.max_deliver,
                    max_ack_pending: spec.max_ack_pending,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_err)?;
        // The start-up claim checked the consumers that existed then; this one may have
        // been made since, by another deployment or by a provd from before deployment ids.
        let config = consumer.cached_info().config.clone();
        self.check_owner(
            &spec.stream,
            Some(&spec.durable),
            config.description.as_deref(),
        )
        .map_err(AdapterError::from)?;
        // A consumer made by an earlier provd may carry no owner, or wait much longer before
        // it redelivers a dead process's work: both are updated where the server allows
        // (nats-server 2.9 refuses any update of a consumer with a start time; its stream
        // carries this deployment's id, see `claim`).
        let unclaimed = self.deployment.is_some()
            && Owner::of(config.description.as_deref()) == Owner::Unclaimed;
        if unclaimed || config.ack_wait > server_ack_wait {
            let mut updated = consumer::Config {
                ack_wait: config.ack_wait.min(server_ack_wait),
                ..config
            };
            if let Some(deployment) = self.deployment.filter(|_| unclaimed) {
                updated.description = Some(owner_description(deployment));
            }
            match self
                .js
                .create_consumer_on_stream(updated, &spec.stream)
                .await
            {
                Ok(_) => consumer = stream.get_consumer(&spec.durable).await.map_err(nats_err)?,
                Err(e) => {
                    tracing::debug!(consumer = %spec.durable, error = %e, "consumer not updated");
                }
            }
        }
        let live = Arc::new(Mutex::new(Live::default()));
        tokio::spawn(keep_alive(
            Arc::downgrade(&live),
            self.client.clone(),
            server_ack_wait,
        ));
        Ok(Box::new(JetStreamSubscription {
            consumer,
            stream,
            filter: spec.filter_subject.clone(),
            live,
            work_for: spec.ack_wait,
        }))
    }
}

/// The longest the broker waits for an ack before it redelivers. A live process keeps its
/// deliveries with progress acks up to the consumer's own `ack_wait`; the deliveries of a
/// process that died come back within this, instead of after the whole `ack_wait`.
pub const SERVER_ACK_WAIT: Duration = Duration::from_secs(6);

/// Deliveries this process holds, by id: the subject their acks go to, when the broker
/// last heard of them, and until when they may be kept.
#[derive(Default)]
struct Live {
    next: u64,
    held: HashMap<u64, Held>,
}

struct Held {
    reply: async_nats::Subject,
    touched: Instant,
    until: Instant,
}

impl Live {
    fn add(&mut self, reply: async_nats::Subject, work_for: Duration) -> u64 {
        let now = Instant::now();
        self.next += 1;
        self.held.insert(
            self.next,
            Held {
                reply,
                touched: now,
                until: now + work_for,
            },
        );
        self.next
    }
}

/// Sends a progress ack for every held delivery before the broker's ack wait runs out,
/// until the subscription and all its deliveries are gone.
async fn keep_alive(live: Weak<Mutex<Live>>, client: async_nats::Client, ack_wait: Duration) {
    // Touched when two thirds of the wait have passed, checked four times as often, so a
    // delivery settled within that costs nothing.
    let touch_after = ack_wait * 2 / 3;
    let mut tick = tokio::time::interval(ack_wait / 6);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(live) = live.upgrade() else { return };
        let now = Instant::now();
        let due: Vec<async_nats::Subject> = {
            let mut live = live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            live.held
                .values_mut()
                .filter(|h| now.duration_since(h.touched) >= touch_after && now < h.until)
                .map(|h| {
                    h.touched = now;
                    h.reply.clone()
                })
                .collect()
        };
        drop(live);
        for reply in due {
            // Fire and forget: a lost progress ack costs at most a redelivery, which every
            // consumer handles.
            if let Err(e) = client
                .publish(reply, bytes::Bytes::from_static(b"+WPI"))
                .await
            {
                tracing::debug!(error = %e, "cannot send a progress ack");
            }
        }
    }
}

struct JetStreamSubscription {
    consumer: consumer::PullConsumer,
    stream: stream::Stream,
    filter: String,
    live: Arc<Mutex<Live>>,
    /// The consumer's own ack wait: how long a delivery is kept while this process lives.
    work_for: Duration,
}

impl JetStreamSubscription {
    /// The deliveries of one pull request, collected until the request ends.
    async fn pull(
        &self,
        batch: Result<consumer::pull::Batch, consumer::pull::BatchError>,
    ) -> Result<Vec<Box<dyn Delivery>>, PortError> {
        let mut batch = batch.map_err(nats_err)?;
        let mut out: Vec<Box<dyn Delivery>> = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(nats_err)?;
            let (delivered, pending) = m
                .info()
                .map(|i| (i.delivered.max(1) as u64, Some(i.pending)))
                .unwrap_or((1, None));
            let id = m.reply.clone().map(|reply| {
                self.live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .add(reply, self.work_for)
            });
            out.push(Box::new(JetStreamDelivery {
                structured: structured_from_binary(&m),
                subject: m.subject.to_string(),
                delivered,
                pending,
                msg: m,
                live: id.map(|id| (Arc::clone(&self.live), id)),
            }));
        }
        Ok(out)
    }
}

#[async_trait]
impl Subscription for JetStreamSubscription {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Box<dyn Delivery>>, PortError> {
        // What is there now, at once; only when nothing is, a pull that waits for the
        // first message. One waiting pull for `max` would hold the messages that came until
        // `max` of them did or `wait` ran out.
        let now = self.consumer.fetch().max_messages(max).messages().await;
        let out = self.pull(now).await?;
        if !out.is_empty() {
            return Ok(out);
        }
        let first = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await;
        self.pull(first).await
    }

    async fn backlog(&mut self) -> Result<Option<Backlog>, PortError> {
        let info = self.consumer.info().await.map_err(nats_err)?;
        let waiting = info.num_pending + info.num_ack_pending as u64;
        let first_open = info.ack_floor.stream_sequence + 1;
        if waiting == 0 {
            return Ok(Some(Backlog {
                waiting,
                oldest: None,
            }));
        }
        // The first message on the filter past the ack floor is the oldest not settled.
        let oldest = match self
            .stream
            .get_first_raw_message_by_subject(&self.filter, first_open)
            .await
        {
            Ok(m) => chrono::DateTime::from_timestamp(m.time.unix_timestamp(), m.time.nanosecond()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the oldest waiting message");
                None
            }
        };
        Ok(Some(Backlog { waiting, oldest }))
    }
}

/// A binary-mode CloudEvent (the NATS binding: the attributes as `ce-` headers, the data as
/// the payload) as the structured event every consumer reads, or why it cannot be one;
/// `None` for a message in structured mode, read as it is.
fn structured_from_binary(m: &jetstream::Message) -> Option<Result<Vec<u8>, events::DecodeError>> {
    let headers = m.headers.as_ref()?;
    let pairs: Vec<(String, Vec<u8>)> = headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().as_bytes().to_vec()))
        })
        .collect();
    let content_type = pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    let binary = pairs.iter().any(|(n, _)| events::is_ce_specversion(n));
    match events::content_mode(content_type, binary) {
        events::ContentMode::Structured => None,
        events::ContentMode::Binary => Some(events::binary_to_structured(
            pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            &m.payload,
        )),
        // The NATS binding defines no batch; one message is one event.
        events::ContentMode::Batch | events::ContentMode::UnsupportedFormat => {
            Some(Err(events::DecodeError {
                reason: events::RejectReason::InvalidField,
                detail: format!(
                    "header `Content-Type` {:?}: a NATS message carries one event, as `{}` or in binary mode",
                    content_type.unwrap_or_default(),
                    events::STRUCTURED_JSON
                ),
                event_id: None,
            }))
        }
    }
}

struct JetStreamDelivery {
    msg: jetstream::Message,
    /// The structured form of a binary-mode message (or why it has none).
    structured: Option<Result<Vec<u8>, events::DecodeError>>,
    subject: String,
    delivered: u64,
    pending: Option<u64>,
    /// Its entry among the subscription's held deliveries, kept alive until settled.
    live: Option<(Arc<Mutex<Live>>, u64)>,
}

impl JetStreamDelivery {
    /// Settled (or given up): no more progress acks.
    fn release(&self) {
        if let Some((live, id)) = &self.live {
            live.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .held
                .remove(id);
        }
    }
}

impl Drop for JetStreamDelivery {
    fn drop(&mut self) {
        self.release();
    }
}

#[async_trait]
impl Delivery for JetStreamDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn payload(&self) -> &[u8] {
        match &self.structured {
            Some(Ok(structured)) => structured,
            _ => &self.msg.payload,
        }
    }
    fn binding_error(&self) -> Option<&events::DecodeError> {
        self.structured.as_ref().and_then(|s| s.as_ref().err())
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    fn pending(&self) -> Option<u64> {
        self.pending
    }
    fn trace_context(&self) -> Option<TraceContext> {
        let headers = self.msg.headers.as_ref()?;
        TraceContext::from_headers(
            headers.get(TRACEPARENT).map(|v| v.as_str()),
            headers.get(TRACESTATE).map(|v| v.as_str()),
        )
    }
    async fn ack(&self) -> Result<(), PortError> {
        // Wait for the server's confirmation: the effect is committed, and a lost ack would
        // only cost a redelivery that the store recognises as a duplicate.
        self.release();
        self.msg.double_ack().await.map_err(nats_err)?;
        Ok(())
    }
    async fn nak(&self, delay: Duration) -> Result<(), PortError> {
        self.release();
        self.msg
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(nats_err)?;
        Ok(())
    }
    async fn term(&self) -> Result<(), PortError> {
        self.release();
        self.msg.ack_with(AckKind::Term).await.map_err(nats_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_read_from_the_description_provd_writes() {
        let id = Uuid::new_v4();
        assert_eq!(
            Owner::of(Some(&owner_description(id))),
            Owner::Deployment(id)
        );
        assert_eq!(Owner::of(None), Owner::Unclaimed);
        assert_eq!(Owner::of(Some("")), Owner::Unclaimed);
        assert_eq!(Owner::of(Some("  ")), Owner::Unclaimed);
        assert_eq!(Owner::of(Some("made by hand")), Owner::Other);
        assert_eq!(Owner::of(Some("provd deployment not-a-uuid")), Owner::Other);
    }
}
