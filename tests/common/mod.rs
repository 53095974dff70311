//! Shared harness for integration tests against the real services.
//!
//! Each test gets its own PostgreSQL database, its own NATS subject and stream prefix, its
//! own Redis key prefix and port 0 for the HTTP server. Service URLs come from
//! `PROVD_TEST_DATABASE_URL`, `PROVD_TEST_REDIS_URL` and `PROVD_TEST_NATS_URL`. Under
//! `CI=true` an unreachable service fails the test; elsewhere the test is skipped with a
//! message that names the recipe starting the services.

#![allow(dead_code)]

pub mod lab_log;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use provd::app::App;
use provd::config::{Config, RawConfig};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

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

/// The services, or `None` (after saying why) when the test must be skipped.
pub fn services() -> Option<Services> {
    let s = Services {
        database_url: std::env::var("PROVD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        redis_url: std::env::var("PROVD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        nats_url: std::env::var("PROVD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
    };
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

/// A running provd with its own database, prefixes and port.
pub struct TestApp {
    /// The app.
    pub app: App,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// Its configuration.
    pub config: Config,
    /// Its database.
    pub db: TestDb,
    /// The services.
    pub services: Services,
}

/// A configuration for a test: own database, prefixes, port 0, an admin and a read token.
pub fn test_config(services: &Services, db: &TestDb) -> Config {
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
    raw.database_url = Some(db.url.clone());
    raw.redis_url = Some(services.redis_url.clone());
    raw.nats_url = Some(services.nats_url.clone());
    raw.validate().expect("test config is valid")
}

impl TestApp {
    /// Starts provd, or returns `None` when the services are missing outside CI.
    pub async fn start() -> Option<TestApp> {
        let services = services()?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        provd::telemetry::init_logs(provd::config::LogFormat::Text);
        let db = TestDb::create(&services).await;
        let config = test_config(&services, &db);
        let app = App::start(config.clone()).await.expect("provd starts");
        let base = format!("http://{}", app.local_addr());
        Some(TestApp {
            app,
            base,
            http: reqwest::Client::new(),
            config,
            db,
            services,
        })
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
        self.db.drop_db().await;
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
    /// Starts provd with a test configuration changed by `change`, or returns `None` when
    /// the services are missing outside CI.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let services = services()?;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        provd::telemetry::init_logs(provd::config::LogFormat::Text);
        let db = TestDb::create(&services).await;
        let mut config = test_config(&services, &db);
        change(&mut config);
        let app = App::start(config.clone()).await.expect("provd starts");
        let base = format!("http://{}", app.local_addr());
        Some(TestApp {
            app,
            base,
            http: reqwest::Client::new(),
            config,
            db,
            services,
        })
    }
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

/// Publishes like `docs/events.md` shows: a plain client, `Nats-Msg-Id` = event id.
pub async fn publish(t: &TestApp, subject: &str, event: &serde_json::Value) {
    let client = async_nats::connect(&t.services.nats_url)
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        event["id"].as_str().expect("event id").to_owned(),
    );
    js.publish_with_headers(
        format!("{}.{subject}", t.config.nats_prefix),
        headers,
        serde_json::to_vec(event).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
}
