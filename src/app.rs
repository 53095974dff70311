//! The composition root: builds the adapters, starts the supervised actors and the HTTP
//! server, and stops them in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::evidence::EvidenceLimits;
use actors::domain::invalidation::LedgerRow;
use actors::health::Health;
use actors::invalidator::{Invalidator, InvalidatorDeps, Trigger};
use actors::ledger::{self, LedgerConsumer, LedgerConsumerDeps, LedgerOutbox, LedgerOutboxDeps};
use actors::ledger_replay::Replayer;
use actors::ports::{EntryTier, PortError, RejectedEvent, RekorBackends};
use actors::provcache::ProvCache;
use actors::submitter::{self, Submitter, SubmitterDeps};
use actors::supervisor::{ChildSpec, RestartPolicy, Supervisor, SupervisorMsg};
use actors::write_behind::{self, WriteBehind, WriteBehindDeps};
use async_trait::async_trait;
use events::Subjects;
use events::streams::PROVCACHE_WRITES_SUBJECT;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::adapters::bus::ServiceBus;
use crate::adapters::hot_sweep::HotTiers;
use crate::adapters::jetstream::JetStreamBus;
use crate::adapters::local_bus::LocalBus;
use crate::adapters::memory::MemoryTier;
use crate::adapters::redis::RedisCache;
use crate::adapters::{AdapterError, Service};
use crate::config::{Config, mask_url};
use crate::http::{self, AppState, EntryCount, LedgerQuery, Probe};
use crate::storage::{Backend, Store};
use crate::telemetry;

/// Errors of the composition root.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A required service could not be reached or prepared at start.
    #[error("{what}: {source}")]
    Startup {
        /// What was being done, with the (masked) URL.
        what: String,
        /// Why it failed.
        source: AdapterError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The supervisor could not start.
    #[error("cannot start the actor system: {0}")]
    Actors(String),
    /// A transparency-log backend could not be built.
    #[error(transparent)]
    Rekor(#[from] crate::adapters::rekor::BuildError),
    /// The alert webhook client could not be built.
    #[error("alerts.webhook_url: {0}")]
    Alerts(String),
    /// The configured evidence chunk size and limit cannot be used together.
    #[error("invalid evidence limits: {0}")]
    EvidenceLimits(#[from] actors::domain::evidence::EvidenceError),
    /// This deployment's JetStream streams, or consumers on them, belong to another
    /// deployment (one with another database): the two share NATS and `nats_prefix`, so
    /// each would apply the other's events and take its queued writes. Nothing was changed
    /// on NATS.
    /// The stream (and consumer), the other deployment and this one are in the
    /// [`ForeignOwner`](crate::adapters::jetstream::ForeignOwner).
    #[error(
        "refusing to start: {what} belongs to deployment {owner}, but this node's database is \
         deployment {deployment}. Two deployments on one NATS server with the same \
         `nats_prefix` would apply each other's events and take each other's queued writes. \
         Give each deployment its own `nats_prefix` (PROVD_NATS_PREFIX); or, if this node is \
         meant to be a node of deployment {owner}, point its `database_url` at that \
         deployment's database",
        what = .0.what(),
        owner = .0.owner,
        deployment = .0.deployment
    )]
    ForeignDeployment(crate::adapters::jetstream::ForeignOwner),
}

/// The in-process tier's size when it is the only hot tier and none was configured.
const EMBEDDED_MEMORY_ENTRIES: u64 = 100_000;

/// A running provd.
pub struct App {
    addr: SocketAddr,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_join: JoinHandle<()>,
    shutdown_timeout: Duration,
    health: Health,
    parts: Parts,
    provcache: Arc<ProvCache>,
    replayer: Replayer,
}

/// The store, hot tier and bus a configuration selects: each part distributed when its URL
/// is set, embedded otherwise.
#[derive(Clone)]
pub struct Parts {
    /// The durable store (PostgreSQL or SQLite).
    pub store: Arc<Store>,
    /// The event bus (JetStream or the in-process bus).
    pub bus: Arc<dyn ServiceBus>,
    /// Valkey/Redis, when configured; the in-process tier runs either way.
    pub redis: Option<RedisCache>,
    /// The SQLite file, when the store or the bus is embedded (the in-process bus shares
    /// its writer).
    pub sqlite: Option<Store>,
    /// This deployment's id, read from the store: the same on every node of the database.
    pub deployment: Uuid,
}

/// How each part runs, as `provd serve` prints it: `(part, mode)`.
pub fn describe_modes(config: &Config) -> Vec<(&'static str, String)> {
    let file = config.data_dir.join(crate::storage::DB_FILE);
    vec![
        (
            "store",
            match &config.database_url {
                Some(url) => format!("distributed: PostgreSQL at {}", mask_url(url)),
                None => format!("embedded: SQLite file {}", file.display()),
            },
        ),
        (
            "cache",
            match &config.redis_url {
                Some(url) => format!(
                    "distributed: Valkey/Redis at {} below the in-process tier",
                    mask_url(url)
                ),
                None => "embedded: the in-process tier only".to_owned(),
            },
        ),
        (
            "bus",
            match &config.nats_url {
                Some(url) => format!("distributed: NATS JetStream at {}", mask_url(url)),
                None => format!(
                    "embedded: the in-process bus, persisted in {}",
                    file.display()
                ),
            },
        ),
        (
            "traces",
            match &config.otel.endpoint {
                Some(url) => format!(
                    "OpenTelemetry over OTLP/HTTP to {} as service {}",
                    mask_url(url),
                    config.otel.service_name
                ),
                None => "not exported (set otel.endpoint)".to_owned(),
            },
        ),
    ]
}

/// The durable store's name: `postgres` or `sqlite` (its probe, and the durable tier's
/// `tier` label).
pub fn store_name(config: &Config) -> &'static str {
    if config.database_url.is_some() {
        Service::Postgres.as_str()
    } else {
        Service::Sqlite.as_str()
    }
}

/// The services `/readyz` checks and `provd_service_up` reports, by probe name: the store
/// (`postgres` or `sqlite`), `redis` when configured, the bus (`nats` or `local-bus`).
pub fn service_names(config: &Config) -> Vec<&'static str> {
    let mut names = vec![store_name(config)];
    if config.redis_url.is_some() {
        names.push(Service::Redis.as_str());
    }
    names.push(if config.nats_url.is_some() {
        Service::Nats.as_str()
    } else {
        Service::LocalBus.as_str()
    });
    names
}

/// Opens the SQLite file in the data directory and applies its migrations.
async fn open_sqlite(config: &Config) -> Result<Store, AppError> {
    let file = config.data_dir.join(crate::storage::DB_FILE);
    let store = Store::open_sqlite(&config.data_dir)
        .await
        .map_err(|source| AppError::Startup {
            what: format!("cannot open the SQLite database {}", file.display()),
            source,
        })?;
    store.migrate().await.map_err(|source| AppError::Startup {
        what: format!("cannot migrate the SQLite database {}", file.display()),
        source,
    })?;
    Ok(store)
}

/// Opens the durable store the configuration selects and applies its migrations (`provd
/// migrate`, the CLI's store commands, and `serve` at start).
pub async fn open_store(config: &Config) -> Result<Store, AppError> {
    match &config.database_url {
        Some(url) => migrate_postgres(url).await,
        None => open_sqlite(config).await,
    }
}

/// Opens the bus the configuration selects (`sqlite` is the embedded store's file, opened
/// here when the store is PostgreSQL but the bus is embedded). With `deployment`, the
/// JetStream streams and consumers it creates carry that deployment's id; a bus that only
/// publishes needs none.
pub async fn open_bus(
    config: &Config,
    sqlite: &mut Option<Store>,
    deployment: Option<Uuid>,
) -> Result<Arc<dyn ServiceBus>, AppError> {
    let subjects = Subjects::new(config.nats_prefix.clone());
    match &config.nats_url {
        Some(url) => {
            let bus = JetStreamBus::connect(url, subjects)
                .await
                .map_err(|source| AppError::Startup {
                    what: format!(
                        "cannot connect to NATS at {} (is it running? `just services` starts \
                         it; remove `nats_url` for the in-process bus)",
                        mask_url(url)
                    ),
                    source,
                })?
                .with_stream_max_bytes(config.nats_stream_max_bytes);
            let bus = match deployment {
                Some(id) => bus.for_deployment(id),
                None => bus,
            };
            Ok(Arc::new(bus))
        }
        None => {
            let file = match sqlite {
                Some(f) => f.clone(),
                None => {
                    let f = open_sqlite(config).await?;
                    *sqlite = Some(f.clone());
                    f
                }
            };
            let bus =
                LocalBus::open(&file, subjects)
                    .await
                    .map_err(|source| AppError::Startup {
                        what: format!(
                            "cannot open the in-process bus in {}",
                            file.sqlite_path().unwrap_or(&config.data_dir).display()
                        ),
                        source,
                    })?;
            Ok(Arc::new(bus))
        }
    }
}

/// Opens every part the configuration selects.
pub async fn open_parts(config: &Config) -> Result<Parts, AppError> {
    let store = open_store(config).await?;
    let deployment = store
        .deployment_id()
        .await
        .map_err(|source| AppError::Startup {
            what: "cannot read this deployment's id from the database".into(),
            source,
        })?;
    let mut sqlite = (store.backend() == Backend::Sqlite).then(|| store.clone());
    let bus = open_bus(config, &mut sqlite, Some(deployment)).await?;
    let redis = match &config.redis_url {
        Some(url) => Some(
            RedisCache::new(url, &config.redis_prefix).map_err(|source| AppError::Startup {
                what: format!("invalid Redis URL {}", mask_url(url)),
                source,
            })?,
        ),
        None => None,
    };
    Ok(Parts {
        store: Arc::new(store),
        bus,
        redis,
        sqlite,
        deployment,
    })
}

/// Refuses to start when this deployment's streams or their consumers belong to another
/// deployment, and adopts those made before deployment ids; before any actor subscribes.
async fn claim(parts: &Parts) -> Result<(), AppError> {
    match parts.bus.claim().await {
        Ok(adopted) => {
            for what in adopted {
                tracing::info!(
                    %what,
                    deployment_id = %parts.deployment,
                    "adopted a JetStream stream or consumer made before deployment ids"
                );
            }
            Ok(())
        }
        Err(AdapterError::ForeignOwner(f)) => Err(AppError::ForeignDeployment(*f)),
        Err(source) => Err(AppError::Startup {
            what: "cannot check who owns this deployment's JetStream streams".into(),
            source,
        }),
    }
}

struct StoreProbe(Arc<Store>);
#[async_trait]
impl Probe for StoreProbe {
    fn name(&self) -> &'static str {
        self.0.service().as_str()
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct RedisProbe(RedisCache);
#[async_trait]
impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        Service::Redis.as_str()
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct BusProbe(Arc<dyn ServiceBus>);
#[async_trait]
impl Probe for BusProbe {
    fn name(&self) -> &'static str {
        self.0.kind()
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

/// The store as the HTTP handlers see it.
struct StoreQueries(Arc<Store>);

#[async_trait]
impl LedgerQuery for StoreQueries {
    async fn revocations(&self, since: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError> {
        Ok(self.0.revocations(since, limit).await?)
    }
    async fn stats(&self) -> Result<serde_json::Value, PortError> {
        let stats = self.0.ledger_stats().await?;
        serde_json::to_value(stats).map_err(|e| PortError::Rejected(e.to_string()))
    }
}

#[async_trait]
impl EntryCount for StoreQueries {
    async fn entry_count(&self) -> Result<i64, PortError> {
        Ok(self.0.count_items().await?)
    }
}

#[async_trait]
impl http::status::OpsQuery for StoreQueries {
    async fn snapshot(&self) -> Result<crate::storage::ops::OpsSnapshot, String> {
        self.0.ops_snapshot().await.map_err(|e| e.to_string())
    }
    async fn rejected(&self, limit: i64) -> Result<Vec<RejectedEvent>, PortError> {
        Ok(self.0.rejected_events(limit).await?)
    }
}

/// The probes `/readyz` and the sampler check: the store, Valkey/Redis when configured, the
/// bus.
fn probes(parts: &Parts) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(StoreProbe(parts.store.clone()))];
    if let Some(redis) = &parts.redis {
        probes.push(Arc::new(RedisProbe(redis.clone())));
    }
    probes.push(Arc::new(BusProbe(parts.bus.clone())));
    probes
}

/// The log-monitoring actors: one log sync per backend, this node's divergence detector
/// and its alert outbox.
fn monitor_children(
    config: &Config,
    backends: &RekorBackends,
    store: &Arc<Store>,
    bus: &Arc<dyn ServiceBus>,
    subjects: &Subjects,
    health: &Health,
) -> Result<Vec<ChildSpec>, AppError> {
    use actors::divergence::{self, AlertOutbox, Detector, DetectorDeps, OutboxDeps, Raiser};
    use actors::log_sync::{self, LogSync, LogSyncDeps};
    use actors::ports::AlertSink;

    divergence::describe_metrics(backends.clients.keys().map(String::as_str));
    let raiser = Raiser::new(store.clone(), config.node_id.clone());
    let source = format!("urn:provd:node:{}", config.node_id);
    let mut children = Vec::new();
    for (name, client) in &backends.clients {
        let interval = config
            .rekor
            .backends
            .get(name)
            .map_or(Duration::from_secs(10), |b| b.sync_interval);
        let deps = LogSyncDeps {
            client: client.clone(),
            checkpoints: store.clone(),
            divergences: store.clone(),
            raiser: raiser.clone(),
            bus: bus.clone(),
            subjects: subjects.clone(),
            source: source.clone(),
            health: health.clone(),
        };
        children.push(ChildSpec::new(
            log_sync::actor_name(name),
            true,
            move || (LogSync::new(deps.clone(), interval, 256), ()),
        ));
    }
    let detector = DetectorDeps {
        bus: bus.clone(),
        checkpoints: store.clone(),
        rejects: store.clone(),
        raiser: raiser.clone(),
        subjects: subjects.clone(),
        clients: backends.clients.clone(),
    };
    children.push(ChildSpec::new(divergence::DETECTOR_NAME, true, move || {
        (Detector::new(detector.clone()), ())
    }));
    let webhook: Option<Arc<dyn AlertSink>> = match &config.alerts.webhook_url {
        Some(url) => Some(Arc::new(
            crate::adapters::webhook::Webhook::new(url, config.alerts.timeout)
                .map_err(AppError::Alerts)?,
        )),
        None => None,
    };
    let outbox = OutboxDeps {
        store: store.clone(),
        bus: bus.clone(),
        webhook,
        raiser,
        subjects: subjects.clone(),
        source,
    };
    children.push(ChildSpec::new(divergence::OUTBOX_NAME, true, move || {
        (AlertOutbox::new(outbox.clone(), Duration::from_secs(1)), ())
    }));
    Ok(children)
}

/// Connects to PostgreSQL and applies migrations.
async fn migrate_postgres(database_url: &str) -> Result<Store, AppError> {
    let url = mask_url(database_url);
    let store = Store::connect_postgres(database_url)
        .await
        .map_err(|source| AppError::Startup {
            what: format!(
                "cannot reach PostgreSQL at {url} (is it running? `just services` starts it; \
                 remove `database_url` for the embedded SQLite store)"
            ),
            source,
        })?;
    store.migrate().await.map_err(|source| AppError::Startup {
        what: format!("cannot migrate the database at {url}"),
        source,
    })?;
    Ok(store)
}

impl App {
    /// Starts everything and returns once the HTTP server listens.
    pub async fn start(config: Config) -> Result<App, AppError> {
        let metrics = telemetry::metrics();
        let parts = open_parts(&config).await?;
        claim(&parts).await?;
        let (store, bus) = (parts.store.clone(), parts.bus.clone());
        let subjects = Subjects::new(config.nats_prefix.clone());

        let health = Health::new();
        // Not ready until the ledger consumer has caught up from its checkpoint.
        health.set(
            ledger::CATCH_UP_GATE,
            true,
            actors::health::ChildStatus::Starting,
        );
        for t in Trigger::ALL {
            // Every series exists from the start, so dashboards and rate() see zeros.
            let ty = t.revocation_type().as_str();
            metrics::counter!("provd_invalidations_total", "type" => ty).absolute(0);
            metrics::counter!("provd_entries_invalidated_total", "type" => ty).absolute(0);
        }
        let mut tiers: Vec<Arc<dyn EntryTier>> = Vec::new();
        // Without Valkey/Redis the in-process tier is the hot tier, so it always runs: a
        // write-behind write must be readable before its flush.
        let memory_entries = match (config.provcache.memory_entries, &parts.redis) {
            (0, None) => EMBEDDED_MEMORY_ENTRIES,
            (n, _) => n,
        };
        let memory = (memory_entries > 0).then(|| MemoryTier::new(memory_entries));
        if let Some(m) = &memory {
            tiers.push(Arc::new(m.clone()));
        }
        if let Some(redis) = &parts.redis {
            tiers.push(Arc::new(redis.clone()));
        }
        let replayer = Replayer::new(
            store.clone(),
            Arc::new(HotTiers::new(memory.clone(), parts.redis.clone())),
            config.node_id.clone(),
        );
        let provcache = Arc::new(ProvCache::new(
            tiers,
            store.clone(),
            bus.clone(),
            subjects.prefixed(PROVCACHE_WRITES_SUBJECT),
            config.provcache.write_behind,
        ));
        let deps = InvalidatorDeps {
            bus: bus.clone(),
            store: store.clone(),
            rejects: store.clone(),
            // Invalidations purge every hot tier: in-process and Valkey/Redis.
            cache: provcache.clone(),
            subjects: subjects.clone(),
            // A minute of margin covers clock skew between this host and NATS; replaying
            // an already-recorded invalidation is harmless (deduplicated by its id).
            started_at: chrono::Utc::now() - chrono::Duration::seconds(60),
        };
        let mut children: Vec<ChildSpec> = Trigger::ALL
            .into_iter()
            .map(|t| {
                let deps = deps.clone();
                ChildSpec::new(t.name(), true, move || {
                    (Invalidator::new(t, deps.clone()), ())
                })
            })
            .collect();
        // The flusher runs even with write-behind off: it drains writes queued before a
        // restart with the setting changed.
        let wb_deps = WriteBehindDeps {
            bus: bus.clone(),
            store: store.clone(),
            // Writes the flusher drops as invalidated leave the hot tiers too.
            cache: provcache.clone(),
            subjects: subjects.clone(),
            rejects: store.clone(),
            health: health.clone(),
        };
        let (flush_batch, flush_interval) = (
            config.provcache.flush_batch,
            config.provcache.flush_interval,
        );
        children.push(ChildSpec::new(write_behind::NAME, true, move || {
            (
                WriteBehind::new(wb_deps.clone(), flush_batch, flush_interval),
                (),
            )
        }));
        // The ledger: the outbox publishes new rows; this node's consumer catches up from its
        // checkpoint (before `/readyz` turns green, and after each NATS reconnect) and then
        // purges its own hot tiers for every published row.
        let outbox_deps = LedgerOutboxDeps {
            bus: bus.clone(),
            store: store.clone(),
            subjects: subjects.clone(),
            source: format!("urn:provd:{}", config.node_id),
        };
        children.push(ChildSpec::new(ledger::OUTBOX_NAME, true, move || {
            (
                LedgerOutbox::new(outbox_deps.clone(), Duration::from_millis(200)),
                (),
            )
        }));
        let consumer_deps = LedgerConsumerDeps {
            bus: bus.clone(),
            store: store.clone(),
            rejects: store.clone(),
            replayer: replayer.clone(),
            subjects: subjects.clone(),
            started_at: deps.started_at,
            health: health.clone(),
            reconnects: bus.reconnects(),
        };
        children.push(ChildSpec::new(ledger::CONSUMER_NAME, true, move || {
            (LedgerConsumer::new(consumer_deps.clone()), ())
        }));
        // No backend configured: the submission API answers 503 and no submitter runs.
        let rekor: Option<RekorBackends> = if config.rekor.backends.is_empty() {
            None
        } else {
            Some(crate::adapters::rekor::build_backends(&config.rekor)?)
        };
        if let Some(backends) = &rekor {
            let sub_deps = SubmitterDeps {
                bus: bus.clone(),
                store: store.clone(),
                rejects: store.clone(),
                backends: backends.clone(),
                subjects: subjects.clone(),
                source: format!("urn:provd:node:{}", config.node_id),
            };
            let sub_config = config.rekor.queue.clone();
            children.push(ChildSpec::new(submitter::NAME, true, move || {
                (Submitter::new(sub_deps.clone(), sub_config.clone()), ())
            }));
        }
        // Log monitoring: a sync per backend, this node's detector and alert outbox.
        if let Some(backends) = &rekor {
            children.extend(monitor_children(
                &config, backends, &store, &bus, &subjects, &health,
            )?);
        }
        // The tile cache and proxy (`[tiles]`), and the actor that prefetches new tiles.
        let tile_cache = match &config.tiles {
            Some(tiles) => Some(Arc::new(crate::adapters::tiles::cache::TileCache::open(
                tiles,
                &config.rekor,
            )?)),
            None => None,
        };
        if let (Some(cache), Some(tiles)) = (&tile_cache, &config.tiles)
            && tiles.prefetch
        {
            let tile_deps = actors::tile_sync::TileSyncDeps {
                bus: bus.clone(),
                rejects: store.clone(),
                tiles: cache.clone(),
                subjects: subjects.clone(),
                node_id: config.node_id.clone(),
                started_at: deps.started_at,
            };
            children.push(ChildSpec::new(actors::tile_sync::NAME, true, move || {
                (actors::tile_sync::TileSync::new(tile_deps.clone()), ())
            }));
        }
        let (supervisor, supervisor_join) = Actor::spawn(
            None,
            Supervisor::new(RestartPolicy::default(), health.clone()),
            children,
        )
        .await
        .map_err(|e| AppError::Actors(e.to_string()))?;

        let queries = Arc::new(StoreQueries(store.clone()));
        let state = AppState {
            bus: bus.clone(),
            ledger: queries.clone(),
            counts: queries.clone(),
            probes: probes(&parts),
            health: health.clone(),
            metrics: metrics.clone(),
            tokens: Arc::new(config.tokens.clone()),
            subjects,
            node_id: config.node_id.clone(),
            deployment_id: parts.deployment,
            evidence: store.clone(),
            evidence_limits: EvidenceLimits::new(
                config.provcache.chunk_size as u64,
                config.provcache.max_chunks_per_entry as u64,
            )?,
            cache: provcache.clone(),
            default_ttl: config.provcache.default_ttl,
            submissions: store.clone(),
            rekor,
            airgap: Arc::new(http::bundles::AirgapState::new(
                store.clone(),
                config.bundles.clone(),
                config
                    .rekor
                    .backends
                    .values()
                    .flat_map(|b| b.keys.iter().map(|k| (b.name.clone(), k.clone())))
                    .collect(),
            )),
            ops: queries,
        };
        http::proofs::describe_metrics();
        crate::airgap::describe_metrics();
        ledger::describe_metrics();
        let actor_names: Vec<String> = health
            .snapshot()
            .into_keys()
            .filter(|n| n != ledger::CATCH_UP_GATE)
            .collect();
        crate::ops::catalogue::register(&config, &actor_names);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| AppError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AppError::Listen {
            addr: config.listen,
            source,
        })?;
        let cancel = CancellationToken::new();
        let monitor = http::checkpoints::MonitorState {
            checkpoints: store.clone(),
            divergences: store.clone(),
        };
        let tokens = state.tokens.clone();
        // One trusted root for verification and for verdicts decided here.
        let roots: Arc<dyn http::verify::TrustedRoots> = Arc::new(
            crate::trust::service::ServiceRoots::new(config.data_dir.clone(), config.trust.clone()),
        );
        let verify = http::verify::VerifyState {
            roots: roots.clone(),
        };
        crate::evaluate::describe_metrics();
        let evaluator = Arc::new(crate::evaluate::Evaluator::new(
            crate::evaluate::EvaluatorParts {
                cache: provcache.clone(),
                policies: store.clone(),
                evidence: store.clone(),
                receipts: store.clone(),
                links: store.clone(),
                ledger: store.clone(),
                roots,
                evidence_limits: EvidenceLimits::new(
                    config.provcache.chunk_size as u64,
                    config.provcache.max_chunks_per_entry as u64,
                )?,
                default_ttl: config.provcache.default_ttl,
            },
        ));
        let policies = http::policies::PoliciesState::new(
            store.clone(),
            bus.clone(),
            state.subjects.clone(),
            config.node_id.clone(),
        );
        let mut extra = vec![
            http::checkpoints::router(monitor, &tokens),
            http::verify::router(verify, &tokens),
            http::policies::router(policies, &tokens),
            http::evaluate::router(evaluator, &tokens),
        ];
        if let (Some(cache), Some(tiles)) = (tile_cache, &config.tiles) {
            crate::adapters::tiles::cache::describe_metrics(&tiles.backends);
            extra.push(http::tiles::router(cache, &tokens, tiles.require_token));
        }
        let router = http::router(state, extra, config.http.max_requests_in_flight);
        http::serve::describe_metrics();
        let server = tokio::spawn(http::serve::serve(
            listener,
            router,
            config.http.clone(),
            cancel.clone(),
        ));
        let upkeep_stop = cancel.clone();
        let sampler = crate::ops::sampler::Sampler {
            store: store.clone(),
            bus: bus.clone(),
            node_id: config.node_id.clone(),
            probes: probes(&parts),
            health: health.clone(),
        };
        let upkeep = tokio::spawn(async move {
            let sampled = tokio::spawn(sampler.run(upkeep_stop.clone()));
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = upkeep_stop.cancelled() => break,
                    _ = tick.tick() => metrics.run_upkeep(),
                }
            }
            let _ = sampled.await;
        });
        tracing::info!(
            %addr,
            node_id = %config.node_id,
            deployment_id = %parts.deployment,
            store = store.service().as_str(),
            bus = bus.kind(),
            redis = parts.redis.is_some(),
            "provd listening"
        );
        Ok(App {
            addr,
            cancel,
            server,
            upkeep,
            supervisor,
            supervisor_join,
            shutdown_timeout: config.shutdown_timeout,
            health,
            parts,
            provcache,
            replayer,
        })
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The supervised actors' health.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The durable store (PostgreSQL or SQLite).
    pub fn store(&self) -> &Arc<Store> {
        &self.parts.store
    }

    /// The event bus (JetStream or the in-process bus).
    pub fn bus(&self) -> &Arc<dyn ServiceBus> {
        &self.parts.bus
    }

    /// Valkey/Redis, when configured.
    pub fn redis(&self) -> Option<&RedisCache> {
        self.parts.redis.as_ref()
    }

    /// Every part, including the concrete PostgreSQL or SQLite store (tools and tests).
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The provenance cache over its tiers.
    pub fn provcache(&self) -> &Arc<ProvCache> {
        &self.provcache
    }

    /// The replay of this node's ledger checkpoint over its tiers (what `provd replay` runs).
    pub fn replayer(&self) -> &Replayer {
        &self.replayer
    }

    /// The root supervisor (tests add children to it).
    pub fn supervisor(&self) -> &ActorRef<SupervisorMsg> {
        &self.supervisor
    }

    /// Stops accepting requests, lets in-flight requests and actor work finish, then stops.
    pub async fn stop(self) {
        tracing::info!("shutting down");
        self.cancel.cancel();
        if tokio::time::timeout(self.shutdown_timeout, self.server)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still running at the shutdown timeout");
        }
        let _ = self.upkeep.await;
        let drained = ractor::call_t!(
            self.supervisor,
            SupervisorMsg::Drain,
            u64::try_from(self.shutdown_timeout.as_millis()).unwrap_or(u64::MAX)
        );
        if drained.is_err() {
            tracing::warn!("actors still busy at the shutdown timeout");
        }
        self.supervisor.stop(None);
        let _ = self.supervisor_join.await;
        tracing::info!("stopped");
    }
}

/// Runs provd until `shutdown` completes, then stops gracefully.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let app = App::start(config).await?;
    shutdown.await;
    app.stop().await;
    Ok(())
}
