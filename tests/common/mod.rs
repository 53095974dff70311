//! Shared harness for integration tests, in both deployment modes.
//!
//! Distributed mode: each test gets its own PostgreSQL database, its own NATS subject and
//! stream prefix, its own Redis key prefix and port 0 for the HTTP server. Service URLs come
//! from `PROVD_TEST_DATABASE_URL`, `PROVD_TEST_REDIS_URL` and `PROVD_TEST_NATS_URL`. Under
//! `CI=true` an unreachable service fails the test; elsewhere the test is skipped with a
//! message that names the recipe starting the services.
//!
//! Embedded mode: no services; each test gets its own data directory (SQLite file and
//! in-process bus) in a temporary directory. [`both_modes!`] turns one test body into a test
//! per mode; [`TestApp::start`] starts the mode of the test it runs in.

#![allow(dead_code)]

pub mod big_bundle;
pub mod items;
pub mod lab_log;
pub mod private_nats;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use provd::app::App;
use provd::config::{Config, RawConfig};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The deployment mode a test runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PostgreSQL, Redis and NATS.
    Distributed,
    /// SQLite, the in-process tier and the in-process bus; no services.
    Embedded,
}

tokio::task_local! {
    static MODE: Mode;
}

/// The mode of the running test ([`both_modes!`] sets it; distributed otherwise).
pub fn mode() -> Mode {
    MODE.try_with(|m| *m).unwrap_or(Mode::Distributed)
}

/// `name` in distributed mode, `name-embedded` in embedded mode: for names that label
/// process-wide metrics (backends), so the two modes of a test do not count together.
pub fn per_mode(name: &str) -> String {
    match mode() {
        Mode::Distributed => name.to_owned(),
        Mode::Embedded => format!("{name}-embedded"),
    }
}

/// Runs `f` as a test of `mode`.
pub async fn in_mode<F: Future>(mode: Mode, f: F) -> F::Output {
    MODE.scope(mode, f).await
}

/// One test body, run as two tests: `<name>::distributed` and `<name>::embedded`, one after
/// the other.
// Not every test file runs both modes.
#[allow(unused_macros)]
macro_rules! both_modes {
    ($(#[doc = $doc:literal])* async fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn test_body() $body

            // The two modes of one test take turns: metrics are process-wide, and a test
            // that counts its own events must not see the other mode's.
            static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn distributed() {
                let _turn = TURNS.lock().await;
                common::in_mode(common::Mode::Distributed, test_body()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let _turn = TURNS.lock().await;
                common::in_mode(common::Mode::Embedded, test_body()).await
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_modes;

/// The shared test vectors: `$PROVD_VECTORS_DIR`, or `../shared/vectors` from the project
/// root. A missing directory fails the test rather than skipping it.
pub fn vectors() -> std::path::PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors")
        });
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: set PROVD_VECTORS_DIR to the shared/vectors directory",
        dir.display()
    );
    dir
}

/// Token with every scope.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
/// Token with only `read`.
pub const READ_TOKEN: &str = "read-token-0123456789";

/// Service URLs for tests.
#[derive(Debug, Clone)]
pub struct Services {
    /// Admin URL of PostgreSQL (a database that exists).
    pub database_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// NATS URL.
    pub nats_url: String,
}

fn host_port(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    if hostport.contains(':') {
        Some(hostport.to_owned())
    } else {
        Some(format!("{hostport}:{default_port}"))
    }
}

fn reachable(url: &str, default_port: u16) -> bool {
    use std::net::ToSocketAddrs;
    let Some(hp) = host_port(url, default_port) else {
        return false;
    };
    let Ok(mut addrs) = hp.to_socket_addrs() else {
        return false;
    };
    addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

impl Services {
    /// The URLs from `PROVD_TEST_*`, or the localhost defaults; not checked.
    pub fn from_env() -> Services {
        Services {
            database_url: std::env::var("PROVD_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            redis_url: std::env::var("PROVD_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            nats_url: std::env::var("PROVD_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        }
    }
}

/// The services, or `None` (after saying why) when the test must be skipped.
pub fn services() -> Option<Services> {
    let s = Services::from_env();
    let down: Vec<&str> = [
        ("PostgreSQL", reachable(&s.database_url, 5432)),
        ("Redis", reachable(&s.redis_url, 6379)),
        ("NATS", reachable(&s.nats_url, 4222)),
    ]
    .into_iter()
    .filter(|(_, up)| !up)
    .map(|(n, _)| n)
    .collect();
    if down.is_empty() {
        return Some(s);
    }
    let msg = format!(
        "{} unreachable; start the services with `just services`",
        down.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: a missing service is a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database of the test's own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a fresh, empty database (migrations are applied by the app).
    pub async fn create(services: &Services) -> TestDb {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let name = format!(
            "provd_t_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut conn = PgConnection::connect(&services.database_url)
            .await
            .expect("connect to the admin database");
        // Databases left by killed test runs more than an hour ago go first.
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'provd_t_%'")
                .fetch_all(&mut conn)
                .await
                .expect("list databases");
        for db in stale {
            let ts: u64 = db
                .split('_')
                .nth(2)
                .and_then(|t| t.parse().ok())
                .unwrap_or(u64::MAX);
            if ts.saturating_add(3600) < now {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        TestDb {
            url: with_database(&services.database_url, &name),
            name,
            admin_url: services.database_url.clone(),
        }
    }

    /// Drops the database.
    pub async fn drop_db(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Where a test's data lives: its own PostgreSQL database, or its own data directory.
pub enum TestData {
    /// Distributed mode's database.
    Postgres(TestDb),
    /// Embedded mode's data directory (removed when dropped).
    Embedded(tempfile::TempDir),
}

impl TestData {
    /// Fresh data for the current [`mode`], or `None` when distributed services are
    /// missing outside CI.
    pub async fn create() -> Option<(TestData, Services)> {
        match mode() {
            Mode::Distributed => {
                let services = services()?;
                let db = TestDb::create(&services).await;
                Some((TestData::Postgres(db), services))
            }
            Mode::Embedded => {
                let dir = tempfile::Builder::new()
                    .prefix("provd-embedded-")
                    .tempdir()
                    .expect("temporary data directory");
                Some((TestData::Embedded(dir), Services::from_env()))
            }
        }
    }

    /// The command-line flags that point a `provd` command at this data.
    pub fn store_args(&self) -> Vec<String> {
        match self {
            TestData::Postgres(db) => vec!["--database-url".into(), db.url.clone()],
            TestData::Embedded(dir) => {
                vec!["--data-dir".into(), dir.path().display().to_string()]
            }
        }
    }

    /// Points `raw` at this data (and at `services` in distributed mode).
    pub fn apply(&self, raw: &mut RawConfig, services: &Services) {
        match self {
            TestData::Postgres(db) => {
                raw.database_url = Some(db.url.clone());
                raw.redis_url = Some(services.redis_url.clone());
                raw.nats_url = Some(services.nats_url.clone());
            }
            TestData::Embedded(dir) => {
                raw.data_dir = Some(dir.path().display().to_string());
            }
        }
    }

    /// Removes what the test created.
    pub async fn remove(self) {
        match self {
            TestData::Postgres(db) => db.drop_db().await,
            TestData::Embedded(dir) => drop(dir),
        }
    }
}

/// A running provd with its own data, prefixes and port.
pub struct TestApp {
    /// The app.
    pub app: App,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Its configuration.
    pub config: Config,
    /// Its database or data directory.
    pub data: TestData,
    /// The services (distributed mode).
    pub services: Services,
}

/// A configuration for a test: own data, prefixes, port 0, an admin and a read token.
pub fn test_config(services: &Services, data: &TestData) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let toml_text = format!(
        r#"
listen = "127.0.0.1:0"
node_id = "test-{short}"
nats_prefix = "t{short}"
redis_prefix = "t{short}:"
# JetStream reserves each stream's limit up front; tests running side by side stay small.
nats_stream_max_bytes = 67108864
shutdown_timeout = "10s"
[[auth.tokens]]
name = "admin"
token = "{ADMIN_TOKEN}"
scopes = ["admin"]
[[auth.tokens]]
name = "reader"
token = "{READ_TOKEN}"
scopes = ["read"]
"#,
        short = &id[..12],
    );
    let mut raw = RawConfig::from_toml(&toml_text).expect("test config parses");
    data.apply(&mut raw, services);
    raw.validate().expect("test config is valid")
}

impl TestApp {
    /// Starts provd in the test's mode, or returns `None` when the services are missing
    /// outside CI.
    pub async fn start() -> Option<TestApp> {
        Self::start_with(|_| {}).await
    }

    /// The test's mode.
    pub fn mode(&self) -> Mode {
        match self.data {
            TestData::Postgres(_) => Mode::Distributed,
            TestData::Embedded(_) => Mode::Embedded,
        }
    }

    /// The command-line flags that point a `provd` command at this app's data.
    pub fn store_args(&self) -> Vec<String> {
        self.data.store_args()
    }

    /// Runs a query returning one integer (a count) on the app's database. Table names are
    /// written as in PostgreSQL (`provcache.prov_items`); embedded mode drops the schema.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        let parts = self.app.parts();
        match (
            parts.store.pg_pool(),
            parts
                .sqlite
                .as_ref()
                .and_then(|s| s.sqlite_reader().zip(s.sqlite_writer())),
        ) {
            (Some(pg), _) => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(pg)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            (None, Some(lite)) => {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.replace("provcache.", "")))
                    .fetch_one(lite.0)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            (None, None) => unreachable!("a store is always open"),
        }
    }

    /// Runs a statement on the app's database (table names as in [`TestApp::query_i64`]):
    /// the rows it changed, or the database's error.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let parts = self.app.parts();
        match (
            parts.store.pg_pool(),
            parts
                .sqlite
                .as_ref()
                .and_then(|s| s.sqlite_reader().zip(s.sqlite_writer())),
        ) {
            (Some(pg), _) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pg)
                .await
                .map(|r| r.rows_affected()),
            (None, Some(lite)) => sqlx::query(sqlx::AssertSqlSafe(sql.replace("provcache.", "")))
                .execute(lite.1)
                .await
                .map(|r| r.rows_affected()),
            (None, None) => unreachable!("a store is always open"),
        }
    }

    /// The services `/readyz` reports in this mode.
    pub fn services_expected(&self) -> Vec<&'static str> {
        provd::app::service_names(&self.config)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    /// `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops provd and removes what the test created.
    pub async fn finish(self) {
        let bus = self.app.bus().clone();
        self.app.stop().await;
        let _ = bus.delete_streams().await;
        drop(bus);
        self.data.remove().await;
    }

    /// The value of one metric sample in `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        metric_value(&text, name, labels)
    }
}

/// Finds a sample by name and labels in Prometheus text.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| l.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        {
            return value.parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// Polls `f` until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestApp {
    /// Starts provd in the test's mode with a test configuration changed by `change`, or
    /// returns `None` when the services are missing outside CI.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Option<TestApp> {
        Self::start_in(None, change).await
    }

    /// Starts a node of `deployment` on a store of its own (see [`set_deployment_id`]),
    /// with a test configuration changed by `change`.
    pub async fn start_in_deployment(
        deployment: uuid::Uuid,
        change: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        Self::start_in(Some(deployment), change).await
    }

    async fn start_in(
        deployment: Option<uuid::Uuid>,
        change: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        let (data, services) = TestData::create().await?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        provd::telemetry::init_logs(provd::config::LogFormat::Text);
        let mut config = test_config(&services, &data);
        change(&mut config);
        if let Some(id) = deployment {
            set_deployment_id(&config, id).await;
        }
        let app = App::start(config.clone()).await.expect("provd starts");
        let base = format!("http://{}", app.local_addr());
        Some(TestApp {
            app,
            base,
            http: reqwest::Client::new(),
            config,
            data,
            services,
        })
    }
}

/// Migrates the store `config` selects and gives it the deployment id `id`: a node on it
/// then belongs to deployment `id` although its store is its own. A test construction for
/// nodes whose only link is the bus; the nodes of a real deployment share its database.
pub async fn set_deployment_id(config: &Config, id: uuid::Uuid) {
    let store = provd::app::open_store(config).await.expect("store");
    let changed = match (store.pg_pool(), store.sqlite_writer()) {
        (Some(pg), _) => sqlx::query("UPDATE provd_deployment SET id = $1")
            .bind(id)
            .execute(pg)
            .await
            .map(|r| r.rows_affected()),
        (None, Some(lite)) => sqlx::query("UPDATE provd_deployment SET id = ?1")
            .bind(id.to_string())
            .execute(lite)
            .await
            .map(|r| r.rows_affected()),
        (None, None) => unreachable!("a store is one of the two"),
    };
    assert_eq!(changed.expect("deployment id set"), 1);
}

/// A local TCP port nothing listens on (bound once, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A VeriKey-shaped key unique to this call.
pub fn fresh_veri_key() -> String {
    format!(
        "sha256:{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Publishes an event from another system: like `docs/events.md` shows (a plain NATS client,
/// `Nats-Msg-Id` = event id) in distributed mode, through `POST /api/v1/events` in embedded
/// mode, where that is the way in.
pub async fn publish(t: &TestApp, subject: &str, event: &serde_json::Value) {
    if t.mode() == Mode::Embedded {
        let resp = t
            .http
            .post(t.url("/api/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(event)
            .send()
            .await
            .expect("POST /api/v1/events");
        assert_eq!(resp.status(), 202, "event accepted");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(
            body["subject"],
            format!("{}.{subject}", t.config.nats_prefix),
            "published on the subject the test meant"
        );
        return;
    }
    let client = async_nats::connect(&t.services.nats_url)
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        event["id"].as_str().expect("event id").to_owned(),
    );
    let payload: bytes::Bytes = serde_json::to_vec(event).expect("json").into();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = js
            .publish_with_headers(
                format!("{}.{subject}", t.config.nats_prefix),
                headers.clone(),
                payload.clone(),
            )
            .await
            .expect("publish")
            .await;
        match stored {
            Ok(_) => return,
            // provd makes its streams as it starts; until one exists nothing stores the
            // message, so publishing again (same message id) is safe.
            Err(e)
                if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("stored: {e:?}"),
        }
    }
}
