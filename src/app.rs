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
use actors::ports::{EntryTier, RekorBackends};
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

use crate::adapters::AdapterError;
use crate::adapters::hot_sweep::HotTiers;
use crate::adapters::jetstream::JetStreamBus;
use crate::adapters::memory::MemoryTier;
use crate::adapters::postgres::PgStore;
use crate::adapters::redis::RedisCache;
use crate::config::{Config, mask_url};
use crate::http::{self, AppState, EntryCount, LedgerQuery, Probe};
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
}

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
    store: PgStore,
    bus: JetStreamBus,
    cache: RedisCache,
    provcache: Arc<ProvCache>,
    replayer: Replayer,
}

struct PgProbe(PgStore);
#[async_trait]
impl Probe for PgProbe {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct RedisProbe(RedisCache);
#[async_trait]
impl Probe for RedisProbe {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }
}

struct NatsProbe(JetStreamBus);
#[async_trait]
impl Probe for NatsProbe {
    fn name(&self) -> &'static str {
        "nats"
    }
    async fn check(&self) -> Result<(), String> {
        if !self.0.is_connected() {
            return Err("not connected".into());
        }
        self.0.ensure_streams().await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl LedgerQuery for PgStore {
    async fn revocations(&self, since: i64, limit: i64) -> Result<Vec<LedgerRow>, String> {
        PgStore::revocations(self, since, limit)
            .await
            .map_err(|e| e.to_string())
    }
    async fn stats(&self) -> Result<serde_json::Value, String> {
        let stats = self.ledger_stats().await.map_err(|e| e.to_string())?;
        serde_json::to_value(stats).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl EntryCount for PgStore {
    async fn entry_count(&self) -> Result<i64, String> {
        self.count_items().await.map_err(|e| e.to_string())
    }
}

/// The log-monitoring actors: one log sync per backend, this node's divergence detector
/// and its alert outbox.
fn monitor_children(
    config: &Config,
    backends: &RekorBackends,
    store: &PgStore,
    bus: &JetStreamBus,
    subjects: &Subjects,
    health: &Health,
) -> Result<Vec<ChildSpec>, AppError> {
    use actors::divergence::{self, AlertOutbox, Detector, DetectorDeps, OutboxDeps, Raiser};
    use actors::log_sync::{self, LogSync, LogSyncDeps};
    use actors::ports::AlertSink;

    divergence::describe_metrics(backends.clients.keys().map(String::as_str));
    let raiser = Raiser::new(Arc::new(store.clone()), config.node_id.clone());
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
            checkpoints: Arc::new(store.clone()),
            divergences: Arc::new(store.clone()),
            raiser: raiser.clone(),
            bus: Arc::new(bus.clone()),
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
        bus: Arc::new(bus.clone()),
        checkpoints: Arc::new(store.clone()),
        rejects: Arc::new(store.clone()),
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
        store: Arc::new(store.clone()),
        bus: Arc::new(bus.clone()),
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

/// Connects to PostgreSQL and applies migrations (`provd migrate`, and `serve` at start).
pub async fn migrate(config: &Config) -> Result<PgStore, AppError> {
    let url = mask_url(&config.database_url);
    let store = PgStore::connect(&config.database_url)
        .await
        .map_err(|source| AppError::Startup {
            what: format!(
                "cannot reach PostgreSQL at {url} (is it running? `just services` starts it)"
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
        let store = migrate(&config).await?;
        let cache = RedisCache::new(&config.redis_url, &config.redis_prefix).map_err(|source| {
            AppError::Startup {
                what: format!("invalid Redis URL {}", mask_url(&config.redis_url)),
                source,
            }
        })?;
        let subjects = Subjects::new(config.nats_prefix.clone());
        let bus = JetStreamBus::connect(&config.nats_url, subjects.clone())
            .await
            .map_err(|source| AppError::Startup {
                what: format!("cannot connect to NATS at {}", mask_url(&config.nats_url)),
                source,
            })?
            .with_stream_max_bytes(config.nats_stream_max_bytes);

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
        let memory = (config.provcache.memory_entries > 0)
            .then(|| MemoryTier::new(config.provcache.memory_entries));
        if let Some(m) = &memory {
            tiers.push(Arc::new(m.clone()));
        }
        tiers.push(Arc::new(cache.clone()));
        let replayer = Replayer::new(
            Arc::new(store.clone()),
            Arc::new(HotTiers::new(memory.clone(), cache.clone())),
            config.node_id.clone(),
        );
        let provcache = Arc::new(ProvCache::new(
            tiers,
            Arc::new(store.clone()),
            Arc::new(bus.clone()),
            subjects.prefixed(PROVCACHE_WRITES_SUBJECT),
            config.provcache.write_behind,
        ));
        let deps = InvalidatorDeps {
            bus: Arc::new(bus.clone()),
            store: Arc::new(store.clone()),
            rejects: Arc::new(store.clone()),
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
            bus: Arc::new(bus.clone()),
            store: Arc::new(store.clone()),
            // Writes the flusher drops as invalidated leave the hot tiers too.
            cache: provcache.clone(),
            subjects: subjects.clone(),
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
            bus: Arc::new(bus.clone()),
            store: Arc::new(store.clone()),
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
            bus: Arc::new(bus.clone()),
            store: Arc::new(store.clone()),
            replayer: replayer.clone(),
            subjects: subjects.clone(),
            started_at: deps.started_at,
            health: health.clone(),
            reconnects: Some(bus.reconnects()),
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
                bus: Arc::new(bus.clone()),
                store: Arc::new(store.clone()),
                rejects: Arc::new(store.clone()),
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
                bus: Arc::new(bus.clone()),
                rejects: Arc::new(store.clone()),
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

        let state = AppState {
            bus: Arc::new(bus.clone()),
            ledger: Arc::new(store.clone()),
            counts: Arc::new(store.clone()),
            probes: vec![
                Arc::new(PgProbe(store.clone())),
                Arc::new(RedisProbe(cache.clone())),
                Arc::new(NatsProbe(bus.clone())),
            ],
            health: health.clone(),
            metrics: metrics.clone(),
            tokens: Arc::new(config.tokens.clone()),
            subjects,
            node_id: config.node_id.clone(),
            evidence: Arc::new(store.clone()),
            evidence_limits: EvidenceLimits::new(
                config.provcache.chunk_size as u64,
                config.provcache.max_chunks_per_entry as u64,
            )?,
            cache: provcache.clone(),
            default_ttl: config.provcache.default_ttl,
            submissions: Arc::new(store.clone()),
            rekor,
            airgap: Arc::new(http::bundles::AirgapState {
                store: Arc::new(store.clone()),
                config: config.bundles.clone(),
                log_keys: config
                    .rekor
                    .backends
                    .values()
                    .flat_map(|b| b.keys.iter().map(|k| (b.name.clone(), k.clone())))
                    .collect(),
            }),
            ops: Arc::new(store.clone()),
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
            checkpoints: Arc::new(store.clone()),
            divergences: Arc::new(store.clone()),
        };
        let tokens = state.tokens.clone();
        let mut extra = vec![http::checkpoints::router(monitor, &tokens)];
        if let (Some(cache), Some(tiles)) = (tile_cache, &config.tiles) {
            crate::adapters::tiles::cache::describe_metrics(&tiles.backends);
            extra.push(http::tiles::router(cache, &tokens, tiles.require_token));
        }
        let router = http::router(state, extra);
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        let upkeep_stop = cancel.clone();
        let sampler = crate::ops::sampler::Sampler {
            store: store.clone(),
            bus: bus.clone(),
            node_id: config.node_id.clone(),
            probes: vec![
                Arc::new(PgProbe(store.clone())),
                Arc::new(RedisProbe(cache.clone())),
                Arc::new(NatsProbe(bus.clone())),
            ],
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
        tracing::info!(%addr, node_id = %config.node_id, "provd listening");
        Ok(App {
            addr,
            cancel,
            server,
            upkeep,
            supervisor,
            supervisor_join,
            shutdown_timeout: config.shutdown_timeout,
            health,
            store,
            bus,
            cache,
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

    /// The PostgreSQL store.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// The event bus.
    pub fn bus(&self) -> &JetStreamBus {
        &self.bus
    }

    /// The hot tier.
    pub fn cache(&self) -> &RedisCache {
        &self.cache
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
