//! End-to-end load over HTTP on loopback (`just load`): the real `provd` binary, started as a
//! process of its own in embedded mode (a temporary data directory) and in distributed mode
//! (its own PostgreSQL database, Redis prefix and NATS prefix), answering cache hits, misses,
//! writes and a mixed read/write/invalidate load, beside a baseline measured in the same run:
//! the same HTTP stack (`provd::http::serve::serve`, hyper and axum) in a process of its own
//! answering a constant body of the size of a cache hit.
//!
//! Every load runs twice. Closed-loop, each connection sends its next request as soon as the
//! answer is in: the most the pair can do on this machine. Open-loop at a fixed rate, each
//! connection sends on a schedule, and a request delayed by a slow answer counts from when it
//! was due (as wrk2 does), so a stall is not hidden; the cache-hit p99 is compared with the
//! baseline's at the same rate, half the lower of the two closed-loop maxima. The mixed load
//! runs `PROVD_LOAD_SECONDS` at a fixed rate while provd's RSS is sampled every second.
//!
//! The client is hyper's own, on one thread, with keep-alive connections; client and server
//! share the machine's cores, so each phase prints both processes' CPU.
//!
//! Settings: `PROVD_LOAD_CONNECTIONS` (16), `PROVD_LOAD_PHASE_SECONDS` (10, each phase but the
//! mixed load), `PROVD_LOAD_SECONDS` (60, the mixed load), `PROVD_LOAD_MODES`
//! (`embedded,distributed`), `PROVD_LOAD_LOG` (provd's `PROVD_LOG`; default provd's own,
//! `info`, which logs every request); services from `PROVD_TEST_DATABASE_URL`,
//! `PROVD_TEST_REDIS_URL`, `PROVD_TEST_NATS_URL` (the test defaults). Distributed mode is
//! skipped with a message when a service is unreachable.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

mod common;
use common::reachable;

/// The bearer token provd is started with (admin: every scope).
const TOKEN: &str = "load-token-0123456789abcdef";
/// Set in the baseline's child process: the file holding the constant body.
const BASELINE_BODY: &str = "PROVD_LOAD_BASELINE_BODY";
/// The baseline's one route.
const CONSTANT_PATH: &str = "/constant";
/// Entries written before the loads; cache hits read them.
const HOT_KEYS: usize = 1000;
/// Distinct keys the write load overwrites, so its memory is bounded like a real key space.
const WRITE_KEYS: usize = 10_000;
/// Linux reports process CPU in ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

fn main() {
    if let Ok(body) = std::env::var(BASELINE_BODY) {
        baseline_server(Path::new(&body));
        return;
    }
    let settings = Settings::from_env();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // The client's own runtime: one thread, so it can never take more than one core from
    // the server it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "end-to-end load over HTTP on loopback, {} keep-alive connections, {} s phases, mixed \
         load {} s, provd log filter {}; {} cores shared by client and server \
         (ours | baseline from the same run: the same HTTP stack answering a constant body | ratio)",
        settings.connections,
        settings.phase.as_secs(),
        settings.mixed.as_secs(),
        settings.log.as_deref().unwrap_or("info (provd's default)"),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    rt.block_on(async {
        for mode in &settings.modes {
            match mode.as_str() {
                "embedded" => {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let env = vec![(
                        "PROVD_DATA_DIR".to_owned(),
                        dir.path().display().to_string(),
                    )];
                    run_mode("embedded", env, dir.path(), &settings).await;
                }
                "distributed" => distributed(&settings).await,
                other => println!("unknown mode {other} in PROVD_LOAD_MODES; skipped"),
            }
        }
    });
}

/// What the environment sets.
struct Settings {
    connections: usize,
    phase: Duration,
    mixed: Duration,
    modes: Vec<String>,
    log: Option<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Settings {
            connections: usize::try_from(num("PROVD_LOAD_CONNECTIONS", 16)).unwrap_or(16),
            phase: Duration::from_secs(num("PROVD_LOAD_PHASE_SECONDS", 10)),
            mixed: Duration::from_secs(num("PROVD_LOAD_SECONDS", 60)),
            modes: std::env::var("PROVD_LOAD_MODES")
                .unwrap_or_else(|_| "embedded,distributed".into())
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect(),
            log: std::env::var("PROVD_LOAD_LOG").ok(),
        }
    }
}

/// The baseline's child process: provd's accept loop and axum, one route answering the
/// constant body, until the parent closes standard input.
fn baseline_server(body_file: &Path) {
    let body = Bytes::from(std::fs::read(body_file).expect("the baseline body"));
    // The same runtime as `provd serve`'s.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut out = std::io::stdout();
        writeln!(out, "{}", listener.local_addr().expect("addr")).expect("stdout");
        out.flush().expect("stdout");
        let router = axum::Router::new().route(
            CONSTANT_PATH,
            axum::routing::get(move || {
                let body = body.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
        let stop = CancellationToken::new();
        let on_eof = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            on_eof.cancel();
        });
        provd::http::serve::serve(
            listener,
            router,
            provd::config::http::HttpConfig::default(),
            stop,
        )
        .await;
    });
}

/// A server process under load: provd or the baseline.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> Option<u64> {
        Server::rss_of(self.pid())()
    }

    /// Reads the RSS of `pid` in KiB (a closure the sampler task can own).
    fn rss_of(pid: u32) -> impl Fn() -> Option<u64> {
        move || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }
    }

    /// CPU time used so far, in ticks.
    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(&format!("/proc/{}/stat", self.pid()))
    }

    /// Asks the process to stop (SIGTERM; the baseline also ends when its stdin closes) and
    /// waits up to 30 s before killing it.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        if let Some(pid) = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU ticks of the process whose `stat` file this is.
fn cpu_ticks(stat: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return 0;
    };
    // The command name may hold spaces; the fields after it are plain.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
    let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Starts the baseline in a child process (this bench's own binary) answering `body`.
fn start_baseline(body: &[u8], dir: &Path) -> Server {
    let file = dir.join("baseline-body.json");
    std::fs::write(&file, body).expect("baseline body");
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env(BASELINE_BODY, &file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the baseline");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the baseline's address");
    let addr = line.trim().parse().expect("an address");
    Server { child, addr }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts `provd serve` with `env` and waits until `/readyz` answers 200.
async fn start_provd(env: &[(String, String)], dir: &Path, settings: &Settings) -> Server {
    let port = free_port();
    let log = dir.join("provd.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROVD_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVD_ADMIN_TOKEN", TOKEN)
        .env("PROVD_LOG_FORMAT", "json")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    if let Some(filter) = &settings.log {
        cmd.env("PROVD_LOG", filter);
    }
    let mut child = cmd.spawn().expect("start provd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "provd exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "provd not ready within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { child, addr }
}

/// Distributed mode on its own database, Redis prefix and NATS prefix, removed afterwards.
async fn distributed(settings: &Settings) {
    let db = std::env::var("PROVD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis =
        std::env::var("PROVD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let nats =
        std::env::var("PROVD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    if !reachable(&db, 5432) || !reachable(&redis, 6379) || !reachable(&nats, 4222) {
        println!(
            "SKIPPED distributed mode: PostgreSQL ({db}), Redis ({redis}) or NATS ({nats}) \
             unreachable"
        );
        return;
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let db_name = format!("provd_load_{tag}");
    let mut admin = sqlx::postgres::PgConnection::connect(&db)
        .await
        .expect("postgres");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base_url, _) = db.rsplit_once('/').expect("database URL has a path");
    let prefix = format!("l{tag}");
    let env = vec![
        (
            "PROVD_DATABASE_URL".to_owned(),
            format!("{base_url}/{db_name}"),
        ),
        ("PROVD_REDIS_URL".to_owned(), redis.clone()),
        ("PROVD_NATS_URL".to_owned(), nats.clone()),
        ("PROVD_NATS_PREFIX".to_owned(), prefix.clone()),
        ("PROVD_REDIS_PREFIX".to_owned(), format!("{prefix}:")),
        ("PROVD_NATS_STREAM_MAX_BYTES".to_owned(), "268435456".into()),
        ("PROVD_NODE_ID".to_owned(), prefix.clone()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    run_mode("distributed", env, dir.path(), settings).await;

    // Clean up what provd made: its streams, its Redis keys, its database.
    match provd::adapters::jetstream::JetStreamBus::connect(
        &nats,
        events::Subjects::new(prefix.clone()),
    )
    .await
    {
        Ok(bus) => {
            let _ = bus.delete_streams().await;
        }
        Err(e) => println!("could not remove the NATS streams of {prefix}: {e}"),
    }
    if let Err(e) = delete_redis_keys(&redis, &format!("{prefix}:")).await {
        println!("could not remove the Redis keys of {prefix}: {e}");
    }
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

async fn delete_redis_keys(url: &str, prefix: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A VeriKey from two numbers: `sha256:` and 64 hex digits.
fn veri_key(tag: u64, kind: u64, n: u64) -> String {
    format!("sha256:{tag:016x}{kind:016x}{n:032x}")
}

/// A write's body for `key`.
fn write_body(key: &str, n: u64) -> String {
    json!({
        "veri_key": key,
        "verdict": {"decision": "allow", "rule": "load", "n": n},
        "trust_score": 90,
        "policy_hash": "sha256:policy-load",
        "signer_set_hash": "sha256:signers-load",
        "signer_key_ids": ["key-load"],
        "ttl": "1h",
    })
    .to_string()
}

/// One mode: start provd, seed the hot keys, run every load beside the baseline, stop.
async fn run_mode(mode: &str, env: Vec<(String, String)>, dir: &Path, settings: &Settings) {
    let provd = start_provd(&env, dir, settings).await;
    let tag =
        u64::from_str_radix(&uuid::Uuid::new_v4().simple().to_string()[..16], 16).expect("hex");
    let hot: Vec<String> = (0..HOT_KEYS as u64).map(|i| veri_key(tag, 1, i)).collect();
    let write_keys: Vec<String> = (0..WRITE_KEYS as u64)
        .map(|i| veri_key(tag, 2, i))
        .collect();
    let hit_body = seed(provd.addr, &hot).await;
    let baseline = start_baseline(&hit_body.body, dir);
    println!(
        "\n{mode} mode: provd pid {} (RSS {} MiB after seeding {HOT_KEYS} entries; hits served \
         by the {} tier, {} B bodies) | baseline pid {} answering {} B",
        provd.pid(),
        mib(provd.rss_kib()),
        hit_body.tier,
        hit_body.body.len(),
        baseline.pid(),
        hit_body.body.len(),
    );
    let target = Arc::new(Target {
        hot,
        write_keys,
        tag,
    });
    let bench = Bench {
        settings,
        target,
        provd: &provd,
        baseline: &baseline,
    };

    // Cache hits: the most each can do, then both at half the lower of the two.
    let base_max = bench
        .run(Load::Constant, Pace::Closed, settings.phase)
        .await;
    let hits_max = bench.run(Load::Hits, Pace::Closed, settings.phase).await;
    row("cache hits, closed loop", &hits_max, &base_max);
    let rate = 0.5 * hits_max.rate().min(base_max.rate());
    let base_at = bench
        .run(Load::Constant, Pace::Rate(rate), settings.phase)
        .await;
    let hits_at = bench
        .run(Load::Hits, Pace::Rate(rate), settings.phase)
        .await;
    row(&format!("cache hits at {rate:.0}/s"), &hits_at, &base_at);
    let p99_ratio = hits_at.p99() / base_at.p99();

    // Misses and writes: closed loop, then at the same rate when they can keep it (half
    // their own maximum when they cannot), beside the baseline at that rate.
    for load in [Load::Misses, Load::Writes] {
        let max = bench.run(load, Pace::Closed, settings.phase).await;
        row(&format!("{}, closed loop", load.name()), &max, &base_max);
        if load == Load::Writes {
            settle(provd.addr).await;
        }
        let r = rate.min(0.5 * max.rate());
        let ours = bench.run(load, Pace::Rate(r), settings.phase).await;
        if load == Load::Writes {
            settle(provd.addr).await;
        }
        let base = if (r - rate).abs() < 1.0 {
            base_at.clone()
        } else {
            bench
                .run(Load::Constant, Pace::Rate(r), settings.phase)
                .await
        };
        row(&format!("{} at {r:.0}/s", load.name()), &ours, &base);
    }

    // The mixed load: its most, then `PROVD_LOAD_SECONDS` at a rate it keeps, RSS sampled.
    let mixed_max = bench.run(Load::Mixed, Pace::Closed, settings.phase).await;
    row(
        &format!("{}, closed loop", Load::Mixed.name()),
        &mixed_max,
        &base_max,
    );
    settle(provd.addr).await;
    let r = rate.min(0.5 * mixed_max.rate());
    let base = bench
        .run(Load::Constant, Pace::Rate(r), settings.phase)
        .await;
    let (mixed, rss) = bench
        .run_sampled(Load::Mixed, Pace::Rate(r), settings.mixed)
        .await;
    row(
        &format!(
            "{} at {r:.0}/s for {} s",
            Load::Mixed.name(),
            settings.mixed.as_secs()
        ),
        &mixed,
        &base,
    );
    let flat = rss.report();
    println!(
        "  {mode} acceptance: cache-hit p99 {:.2}× the baseline's at {rate:.0}/s (goal ≤ 2×: {}); \
         mixed load errors {} (goal 0: {}); RSS flat after warm-up: {}",
        p99_ratio,
        yes(p99_ratio <= 2.0),
        mixed.errors,
        yes(mixed.errors == 0),
        yes(flat),
    );
    baseline.stop();
    provd.stop();
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Waits until the write-behind has flushed what a load queued, so the next phase does not
/// pay for the last one's writes: until provd's sampled pending count of the flusher's
/// consumer is zero (sampled every 5 s, so the first look is after one sample), at most 120 s.
async fn settle(addr: SocketAddr) {
    const SERIES: &str = "provd_jetstream_consumer_pending{consumer=\"write-behind-flusher\"}";
    let http = reqwest::Client::new();
    let started = Instant::now();
    tokio::time::sleep(provd::ops::sampler::INTERVAL + Duration::from_secs(1)).await;
    loop {
        let pending = match http.get(format!("http://{addr}/metrics")).send().await {
            Ok(r) => r.text().await.ok().and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(SERIES))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            }),
            Err(_) => None,
        };
        match pending {
            Some(p) if p <= 0.0 => break,
            None => {
                println!("    (no write-behind pending count in /metrics; not waiting)");
                return;
            }
            Some(_) if started.elapsed() > Duration::from_secs(120) => {
                println!("    (the write-behind still had {pending:?} pending after 120 s)");
                return;
            }
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    println!(
        "    (write-behind drained {:.0} s after the phase)",
        started.elapsed().as_secs_f64()
    );
}

/// A cache-hit answer, as the baseline copies it.
struct HitBody {
    body: Vec<u8>,
    tier: String,
}

/// Writes the hot keys, waits until every one reads back, and returns one hit's body.
async fn seed(addr: SocketAddr, hot: &[String]) -> HitBody {
    use futures::StreamExt as _;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/api/v1/provcache/entries");
    futures::stream::iter(hot.iter().enumerate())
        .for_each_concurrent(16, |(n, key)| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http
                    .post(&base)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(write_body(key, n as u64))
                    .send()
                    .await
                    .expect("seed write");
                assert!(
                    r.status() == 202 || r.status() == 201,
                    "seed write answered {}",
                    r.status()
                );
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for key in hot {
        loop {
            let r = http
                .get(format!("{base}/{key}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("seed read");
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{key} not readable after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let r = http
        .get(format!("{base}/{}", hot[0]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("hit");
    let tier = r
        .headers()
        .get("x-provcache-tier")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let body = r.bytes().await.expect("body").to_vec();
    HitBody { body, tier }
}

/// The keys the loads use.
struct Target {
    hot: Vec<String>,
    write_keys: Vec<String>,
    tag: u64,
}

/// What a phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// The baseline's constant body.
    Constant,
    /// Reads of entries in the cache.
    Hits,
    /// Reads of keys never written.
    Misses,
    /// Writes (202 through the write-behind) over a bounded key space.
    Writes,
    /// 70 % hits, 10 % misses, 15 % writes of the read keys, 5 % invalidations of them.
    Mixed,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Constant => "constant body",
            Load::Hits => "cache hits",
            Load::Misses => "cache misses",
            Load::Writes => "writes",
            Load::Mixed => "mixed 70 % hits / 10 % misses / 15 % writes / 5 % invalidations",
        }
    }
}

/// One request's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Constant,
    Hit,
    Miss,
    Write,
    Invalidate,
}

impl Op {
    /// Whether `status` is a right answer: in the mixed load a read key may have been
    /// invalidated, so a 404 is right there.
    fn expects(self, status: u16, load: Load) -> bool {
        match self {
            Op::Constant => status == 200,
            Op::Hit => status == 200 || (load == Load::Mixed && status == 404),
            Op::Miss => status == 404,
            Op::Write => status == 202 || status == 201,
            Op::Invalidate => status == 202,
        }
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Each connection sends as soon as its previous answer is in.
    Closed,
    /// This many requests per second over all connections, on a schedule.
    Rate(f64),
}

/// A small, fast pseudo-random sequence (xorshift64*): which key, which operation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What one phase measured.
#[derive(Clone)]
struct Outcome {
    /// Latencies in microseconds.
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    /// CPU of the client and of the server, in cores (1.0 is one core busy).
    client_cpu: f64,
    server_cpu: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    fn p50(&self) -> f64 {
        self.hist.value_at_quantile(0.50) as f64 / 1000.0
    }

    fn p99(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn summary(&self) -> String {
        format!(
            "{:>7.0} req/s p50 {:>6.2} ms p99 {:>6.2} ms errors {} (CPU client {:.2}, server {:.2})",
            self.rate(),
            self.p50(),
            self.p99(),
            self.errors,
            self.client_cpu,
            self.server_cpu,
        )
    }
}

/// Prints one load's row: ours | baseline | ratios.
fn row(what: &str, ours: &Outcome, base: &Outcome) {
    println!(
        "  {what}:\n    provd    {}\n    baseline {}\n    ratio    req/s {:.2}×, p50 {:.2}×, p99 {:.2}×",
        ours.summary(),
        base.summary(),
        ours.rate() / base.rate(),
        ours.p50() / base.p50(),
        ours.p99() / base.p99(),
    );
    if let Some(e) = &ours.first_error {
        println!("    first provd error: {e}");
    }
    if let Some(e) = &base.first_error {
        println!("    first baseline error: {e}");
    }
}

/// RSS samples in KiB, by time since the measurement began.
type Samples = Arc<std::sync::Mutex<Vec<(Duration, u64)>>>;

/// provd's RSS over the mixed load, one sample a second.
struct RssSamples {
    samples: Vec<(Duration, u64)>,
    warm_up: Duration,
}

impl RssSamples {
    /// Prints RSS after warm-up, at the end and at most; true when the end is within 10 %
    /// of the value after warm-up.
    fn report(&self) -> bool {
        let after = self
            .samples
            .iter()
            .find(|(t, _)| *t >= self.warm_up)
            .or(self.samples.last())
            .map_or(0, |(_, k)| *k);
        let end = self.samples.last().map_or(0, |(_, k)| *k);
        let max = self.samples.iter().map(|(_, k)| *k).max().unwrap_or(0);
        let growth = (end as f64 - after as f64) / after.max(1) as f64 * 100.0;
        let flat = growth <= 10.0;
        println!(
            "    provd RSS: {} MiB after {} s warm-up, {} MiB at the end, {} MiB at most \
             ({} samples; end {:+.1} % of post-warm-up, flat = within 10 %: {})",
            mib(Some(after)),
            self.warm_up.as_secs(),
            mib(Some(end)),
            mib(Some(max)),
            self.samples.len(),
            growth,
            yes(flat),
        );
        flat
    }
}

/// The loads against provd or the baseline.
struct Bench<'a> {
    settings: &'a Settings,
    target: Arc<Target>,
    provd: &'a Server,
    baseline: &'a Server,
}

impl Bench<'_> {
    async fn run(&self, load: Load, pace: Pace, length: Duration) -> Outcome {
        self.run_inner(load, pace, length, None).await
    }

    /// Runs `load` while provd's RSS is sampled every second.
    async fn run_sampled(&self, load: Load, pace: Pace, length: Duration) -> (Outcome, RssSamples) {
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let outcome = self
            .run_inner(load, pace, length, Some(samples.clone()))
            .await;
        let samples = std::mem::take(&mut *samples.lock().expect("samples"));
        // The first sixth of the run (at least 5 s) lets caches and pools reach their size.
        let warm_up = (length / 6).max(Duration::from_secs(5)).min(length);
        (outcome, RssSamples { samples, warm_up })
    }

    async fn run_inner(
        &self,
        load: Load,
        pace: Pace,
        length: Duration,
        rss: Option<Samples>,
    ) -> Outcome {
        let server = if load == Load::Constant {
            self.baseline
        } else {
            self.provd
        };
        let conns = self.settings.connections;
        // A second (at most a fifth of the phase) of warm-up, not counted.
        let warm = Duration::from_secs(1).min(length / 5);
        let start = Instant::now() + Duration::from_millis(50);
        let measure_from = start + warm;
        let until = measure_from + length;
        let client_before = cpu_ticks("/proc/self/stat");
        let server_before = server.cpu_ticks();
        let stop_sampling = CancellationToken::new();
        let sampler = rss.map(|samples| {
            let (pid, stop) = (server.pid(), stop_sampling.clone());
            tokio::spawn(async move {
                let probe = Server::rss_of(pid);
                let mut tick =
                    tokio::time::interval_at(measure_from.into(), Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        at = tick.tick() => {
                            if let Some(kib) = probe() {
                                let t = at.into_std().saturating_duration_since(measure_from);
                                samples.lock().expect("samples").push((t, kib));
                            }
                        }
                    }
                }
            })
        });
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let pacing = match pace {
                    Pace::Closed => None,
                    Pace::Rate(r) => {
                        let interval = Duration::from_secs_f64(conns as f64 / r.max(1.0));
                        // Connections take turns evenly across each interval.
                        Some((start + interval.mul_f64(c as f64 / conns as f64), interval))
                    }
                };
                tokio::spawn(connection(ConnPlan {
                    addr: server.addr,
                    load,
                    target: self.target.clone(),
                    pacing,
                    start,
                    measure_from,
                    until,
                    id: c as u64,
                }))
            })
            .collect();
        let mut outcome = Outcome {
            hist: histogram(),
            requests: 0,
            errors: 0,
            first_error: None,
            window: length,
            client_cpu: 0.0,
            server_cpu: 0.0,
        };
        for task in tasks {
            let c = task.await.expect("connection task");
            outcome.hist.add(&c.hist).expect("same bounds");
            outcome.requests += c.requests;
            outcome.errors += c.errors;
            if outcome.first_error.is_none() {
                outcome.first_error = c.first_error;
            }
        }
        stop_sampling.cancel();
        if let Some(s) = sampler {
            let _ = s.await;
        }
        let wall = start.elapsed().as_secs_f64() * TICKS_PER_SECOND;
        outcome.client_cpu = (cpu_ticks("/proc/self/stat") - client_before) as f64 / wall;
        outcome.server_cpu = server.cpu_ticks().saturating_sub(server_before) as f64 / wall;
        outcome
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One connection's part of a phase.
struct ConnPlan {
    addr: SocketAddr,
    load: Load,
    target: Arc<Target>,
    /// First due time and interval, when paced.
    pacing: Option<(Instant, Duration)>,
    start: Instant,
    measure_from: Instant,
    until: Instant,
    id: u64,
}

/// One connection's count.
struct ConnOutcome {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one request and reads the whole answer; its status.
async fn exchange(sender: &mut Sender, req: hyper::Request<Body>) -> Result<u16, String> {
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let mut body: Incoming = resp.into_body();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        frame.map_err(|e| format!("body: {e}"))?;
    }
    Ok(status)
}

/// Builds the next request of `load`.
fn request(
    load: Load,
    target: &Target,
    rng: &mut Rng,
    id: u64,
    seq: u64,
    host: &str,
) -> (Op, hyper::Request<Body>) {
    let op = match load {
        Load::Constant => Op::Constant,
        Load::Hits => Op::Hit,
        Load::Misses => Op::Miss,
        Load::Writes => Op::Write,
        Load::Mixed => match rng.below(100) {
            0..70 => Op::Hit,
            70..80 => Op::Miss,
            80..95 => Op::Write,
            _ => Op::Invalidate,
        },
    };
    let hot = |rng: &mut Rng| target.hot[rng.below(target.hot.len())].as_str();
    let entries = "/api/v1/provcache/entries";
    let (method, path, body) = match op {
        Op::Constant => ("GET", CONSTANT_PATH.to_owned(), None),
        Op::Hit => ("GET", format!("{entries}/{}", hot(rng)), None),
        Op::Miss => (
            "GET",
            format!("{entries}/{}", veri_key(target.tag, 3 + id, seq)),
            None,
        ),
        Op::Write => {
            let key = if load == Load::Mixed {
                hot(rng).to_owned()
            } else {
                target.write_keys[rng.below(target.write_keys.len())].clone()
            };
            ("POST", entries.to_owned(), Some(write_body(&key, seq)))
        }
        Op::Invalidate => (
            "POST",
            "/api/v1/provcache/invalidate".to_owned(),
            Some(json!({"veri_key": hot(rng), "reason": "load benchmark"}).to_string()),
        ),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("a valid request");
    (op, req)
}

/// Runs one connection from `start` to `until`, counting what was sent from `measure_from`.
async fn connection(plan: ConnPlan) -> ConnOutcome {
    let mut out = ConnOutcome {
        hist: histogram(),
        requests: 0,
        errors: 0,
        first_error: None,
    };
    let host = plan.addr.to_string();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (plan.id + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    let mut sender = None;
    let mut due = plan.pacing.map(|(first, _)| first);
    let mut prev_done = plan.start;
    tokio::time::sleep_until(plan.start.into()).await;
    let mut seq = 0u64;
    loop {
        let began = match (plan.pacing, due.as_mut()) {
            (Some((_, interval)), Some(due)) => {
                if *due >= plan.until {
                    break;
                }
                if *due > Instant::now() {
                    tokio::time::sleep_until((*due).into()).await;
                }
                let sent = Instant::now();
                // Delayed by the server (its previous answer came after this request was
                // due): counted from when it was due. Woken late by the client's own timer:
                // counted from when it went out, as that delay is not the server's.
                let began = if prev_done > *due { *due } else { sent };
                *due += interval;
                began
            }
            _ => {
                let now = Instant::now();
                if now >= plan.until {
                    break;
                }
                now
            }
        };
        seq += 1;
        let counted = began >= plan.measure_from;
        if sender.is_none() {
            match connect(plan.addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    if counted {
                        out.requests += 1;
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                    }
                    prev_done = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let (op, req) = request(plan.load, &plan.target, &mut rng, plan.id, seq, &host);
        let result = exchange(sender.as_mut().expect("connected"), req).await;
        let done = Instant::now();
        prev_done = done;
        let error = match result {
            Ok(status) if op.expects(status, plan.load) => None,
            Ok(status) => Some(format!("{op:?} answered {status}")),
            Err(e) => {
                sender = None;
                Some(e)
            }
        };
        if counted {
            out.requests += 1;
            let micros = u64::try_from(done.duration_since(began).as_micros()).unwrap_or(u64::MAX);
            out.hist.saturating_record(micros.max(1));
            if let Some(e) = error {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    out
}
