//! The chaos suite (`just chaos`, issue 19 item 9): the real `provd serve` binary, in both
//! modes, against PostgreSQL, Redis and NATS instances of its own on free ports, through
//! faults (SIGKILL mid-flush, NATS SIGKILL and restart, Redis frozen and stopped,
//! PostgreSQL stopped, poison writes, 500 slow connections) while a bounded client writes,
//! reads and invalidates. It prints a table of acknowledged vs durable writes and
//! invalidations, client errors by kind, time to recover and peak RSS, then asserts that no
//! acknowledged write or invalidation was lost.
//!
//! The tests are `#[ignore]`d so the default test command only compiles them.
//! `PROVD_CHAOS_PROFILE=short` (the default) keeps each outage to a few seconds;
//! `PROVD_CHAOS_PROFILE=full` stops PostgreSQL for 30 s and holds the other faults longer.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::big_bundle;
use common::{dead_port, fresh_veri_key};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const TOKEN: &str = "chaos-test-admin-token-0123456789";
/// Requests the client keeps in flight at once.
const CONCURRENCY: usize = 16;
/// How long recovery and settling may take before the suite reports a loss.
const SETTLE: Duration = Duration::from_secs(180);
/// Poison messages (or hostile API writes) per poison scenario.
const POISON: usize = 50;
/// Connections the slow-connection scenario holds open with a partial request.
const SLOW_CONNECTIONS: usize = 500;

/// How long each phase of a scenario lasts.
#[derive(Clone, Copy)]
struct Profile {
    name: &'static str,
    /// Load before the fault.
    warmup: Duration,
    /// How long a NATS or Redis fault (and the slow connections) last.
    outage: Duration,
    /// How long PostgreSQL stays stopped.
    pg_outage: Duration,
    /// 1 MiB chunks in the large bundle (72 make about 100 MB, the issue's size).
    big_chunks: usize,
    /// Load after the fault is healed.
    after: Duration,
}

fn profile() -> Profile {
    match std::env::var("PROVD_CHAOS_PROFILE").as_deref() {
        Ok("full") => Profile {
            name: "full",
            warmup: Duration::from_secs(5),
            outage: Duration::from_secs(10),
            pg_outage: Duration::from_secs(30),
            after: Duration::from_secs(5),
            big_chunks: 72,
        },
        Ok("short") | Err(_) => Profile {
            name: "short",
            warmup: Duration::from_secs(2),
            outage: Duration::from_secs(3),
            pg_outage: Duration::from_secs(5),
            after: Duration::from_secs(2),
            big_chunks: 72,
        },
        Ok(other) => panic!("PROVD_CHAOS_PROFILE must be short or full, not {other:?}"),
    }
}

/// Sends `sig` to `target` (a pid, or `-pgid` for a process group) with kill(1): the
/// workspace has no signal crate, and a test needs no more than this.
fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".to_owned(), target.to_owned()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` to exit, up to `limit`; `false` when it is still running.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process in a process group of its own, so dropping it kills everything it
/// started (PostgreSQL's backends too).
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = cmd
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        Proc { child: Some(child) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL to the whole group: no clean shutdown of any kind.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&format!("-{}", child.id()), "KILL");
            let _ = child.wait();
        }
    }

    /// `sig` to the process itself (PostgreSQL's fast shutdown is SIGINT), then waits for it;
    /// SIGKILL to the group if it does not exit in 60 s.
    fn stop_with(&mut self, sig: &str) {
        if let Some(child) = self.child.as_mut() {
            signal(&child.id().to_string(), sig);
            if !wait_exit(child, Duration::from_secs(60)) {
                self.kill9();
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A frozen process must be thawed for anything but SIGKILL to reach it.
            signal(&format!("-{}", child.id()), "CONT");
        }
        self.kill9();
    }
}

/// Polls a TCP port until something accepts on it.
async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The user id and group id of `postgres`, when this runs as root: initdb refuses root.
fn postgres_ids() -> Option<(u32, u32)> {
    let out = |args: &[&str]| -> Option<u32> {
        let o = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if out(&["-u"])? != 0 {
        return None;
    }
    Some((out(&["-u", "postgres"])?, out(&["-g", "postgres"])?))
}

/// The newest installed PostgreSQL's binaries.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version with bin/postgres")
}

/// A private PostgreSQL: its own data directory, socket directory and port.
struct Pg {
    root: PathBuf,
    port: u16,
    ids: Option<(u32, u32)>,
    proc: Option<Proc>,
}

impl Pg {
    async fn init(root: &Path) -> Pg {
        let root = root.join("pg");
        std::fs::create_dir_all(&root).expect("pg dir");
        let ids = postgres_ids();
        if ids.is_some() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown the PostgreSQL directory");
            // The temporary directory above it is private to root; postgres must reach in.
            let parent = root.parent().expect("parent");
            let _ = Command::new("chmod").arg("755").arg(parent).status();
        }
        let mut initdb = Command::new(pg_bin().join("initdb"));
        initdb
            .arg("-D")
            .arg(root.join("data"))
            .args(["-U", "postgres", "-A", "trust", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = ids {
            initdb.uid(uid).gid(gid);
        }
        assert!(initdb.status().expect("initdb").success(), "initdb");
        let mut pg = Pg {
            root,
            port: dead_port(),
            ids,
            proc: None,
        };
        pg.start().await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg.url("postgres"))
            .await
            .expect("connect");
        sqlx::query("CREATE DATABASE provd")
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        pg
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    async fn start(&mut self) {
        let mut cmd = Command::new(pg_bin().join("postgres"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.root)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200"]);
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
        self.proc = Some(Proc::spawn(cmd, &self.root.join("postgres.log")));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(pool) = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect(&self.url("postgres"))
                .await
            {
                pool.close().await;
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fast shutdown (SIGINT): what `pg_ctl stop` does by default.
    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop_with("INT");
        }
    }
}

/// A private Redis without persistence.
struct Redis {
    port: u16,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Redis {
    async fn start(port: u16, log: PathBuf) -> Redis {
        let mut r = Redis {
            port,
            log,
            proc: None,
        };
        r.restart().await;
        r
    }

    async fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        self.proc = Some(Proc::spawn(cmd, &self.log));
        wait_port(self.port, "redis-server").await;
    }
}

/// A private NATS JetStream server whose storage outlives a SIGKILL.
struct Nats {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Nats {
    async fn start(port: u16, dir: PathBuf) -> Nats {
        let mut n = Nats {
            port,
            dir,
            proc: None,
        };
        n.restart().await;
        n
    }

    async fn restart(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.dir.join("js"));
        self.proc = Some(Proc::spawn(cmd, &self.dir.join("nats.log")));
        wait_port(self.port, "nats-server").await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Embedded,
    Distributed,
}

/// The services of one mode and the provd running against them.
/// Fields drop in order: provd first, the services next, the directory last.
struct Env {
    provd: Option<Proc>,
    pg: Option<Pg>,
    redis: Option<Redis>,
    nats: Option<Nats>,
    mode: Mode,
    prefix: String,
    port: u16,
    http: reqwest::Client,
    /// The highest VmHWM seen of any provd process in this mode, in KiB.
    peak_rss_kib: u64,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start(mode: Mode) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = format!("chaos{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let (pg, redis, nats) = match mode {
            Mode::Embedded => (None, None, None),
            Mode::Distributed => (
                Some(Pg::init(dir.path()).await),
                Some(Redis::start(dead_port(), dir.path().join("redis.log")).await),
                Some(Nats::start(dead_port(), dir.path().to_owned()).await),
            ),
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let mut env = Env {
            mode,
            dir,
            prefix,
            pg,
            redis,
            nats,
            provd: None,
            port: dead_port(),
            http,
            peak_rss_kib: 0,
        };
        env.start_provd();
        env.wait_recovered(Instant::now()).await;
        env
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("provd.log")
    }

    fn start_provd(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        match self.mode {
            Mode::Embedded => {
                cmd.env("PROVD_DATA_DIR", self.dir.path().join("data"));
            }
            Mode::Distributed => {
                let pg = self.pg.as_ref().expect("pg");
                let redis = self.redis.as_ref().expect("redis");
                let nats = self.nats.as_ref().expect("nats");
                cmd.env("PROVD_DATABASE_URL", pg.url("provd"))
                    .env(
                        "PROVD_REDIS_URL",
                        format!("redis://127.0.0.1:{}", redis.port),
                    )
                    .env("PROVD_NATS_URL", format!("nats://127.0.0.1:{}", nats.port));
            }
        }
        cmd.env("PROVD_NATS_PREFIX", &self.prefix)
            .env("PROVD_NATS_STREAM_MAX_BYTES", "268435456")
            .env("PROVD_REDIS_PREFIX", format!("{}:", self.prefix))
            .env("PROVD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("PROVD_ADMIN_TOKEN", TOKEN)
            .env("PROVD_NODE_ID", &self.prefix)
            // Small batches on a short interval keep flushes in flight all the time, so a
            // SIGKILL lands mid-flush.
            .env("PROVD_PROVCACHE_FLUSH_BATCH", "200")
            .env("PROVD_PROVCACHE_FLUSH_INTERVAL", "500ms")
            // The large import: bundles of 1 MiB chunks, three at once.
            .env("PROVD_PROVCACHE_CHUNK_SIZE", big_bundle::MIB.to_string())
            .env("PROVD_BUNDLES_MAX_CONCURRENT_IMPORTS", "3")
            .env("PROVD_LOG", "warn");
        self.provd = Some(Proc::spawn(cmd, &self.log()));
    }

    /// provd's VmHWM (peak resident set) so far, folded into the mode's peak.
    fn sample_rss(&mut self) -> u64 {
        if let Some(p) = self.provd.as_ref()
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
            && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:"))
            && let Some(kib) = line.split_whitespace().nth(1)
            && let Ok(kib) = kib.parse::<u64>()
        {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
        self.peak_rss_kib
    }

    /// Polls until provd is ready and accepts a write; the time since `healed`.
    async fn wait_recovered(&self, healed: Instant) -> Duration {
        let url = format!("{}/api/v1/provcache/entries", self.base());
        loop {
            let ready = matches!(
                self.http.get(format!("{}/readyz", self.base())).send().await,
                Ok(r) if r.status() == 200
            );
            if ready
                && let Ok(r) = self
                    .http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&entry(&fresh_veri_key()))
                    .send()
                    .await
                && (r.status() == 201 || r.status() == 202)
            {
                return healed.elapsed();
            }
            if healed.elapsed() > SETTLE {
                let text = std::fs::read_to_string(self.log()).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(30).collect();
                panic!(
                    "provd did not recover in {SETTLE:?}; log tail (newest first):\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many of `writes` are in the durable store and how many of `revocations` in the
    /// ledger, read straight from the database, not through provd.
    async fn durable(&self, writes: &[String], revocations: &[String]) -> Option<(usize, usize)> {
        match self.mode {
            Mode::Distributed => {
                let pg = self.pg.as_ref().expect("pg");
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&pg.url("provd"))
                    .await
                    .ok()?;
                let w = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM provcache.provcache_items WHERE veri_key = ANY($1)",
                )
                .bind(writes)
                .fetch_one(&pool)
                .await
                .ok()?;
                let r = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM provcache.prov_revocations \
                     WHERE revocation_id::text = ANY($1)",
                )
                .bind(revocations)
                .fetch_one(&pool)
                .await
                .ok()?;
                pool.close().await;
                Some((w as usize, r as usize))
            }
            Mode::Embedded => {
                let opts = SqliteConnectOptions::new()
                    .filename(self.dir.path().join("data").join("provd.db"))
                    .read_only(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .ok()?;
                let w = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM provcache_items \
                     WHERE veri_key IN (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::to_string(writes).expect("json"))
                .fetch_one(&pool)
                .await
                .ok()?;
                let r = sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM prov_revocations \
                     WHERE lower(revocation_id) IN (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::to_string(revocations).expect("json"))
                .fetch_one(&pool)
                .await
                .ok()?;
                pool.close().await;
                Some((w as usize, r as usize))
            }
        }
    }

    /// Rejected write-behind messages recorded in the database.
    async fn rejected_writes(&self) -> i64 {
        let pg = self
            .pg
            .as_ref()
            .expect("poison messages are a distributed-mode scenario");
        let Ok(pool) = PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg.url("provd"))
            .await
        else {
            return -1;
        };
        let n = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM provcache.prov_rejected_events WHERE subject = $1",
        )
        .bind(format!("{}.provcache.writes", self.prefix))
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
        pool.close().await;
        n
    }

    /// Stops the load, waits (with a deadline) until every acknowledged write is durable
    /// and every acknowledged invalidation is in the ledger, and makes the table row.
    async fn settle(&mut self, scenario: &str, load: Load, recover: Duration, note: String) -> Row {
        let tally = load.finish().await;
        let writes: Vec<String> = tally.acked_writes.clone();
        let revocations: Vec<String> = tally.acked_invalidations.clone();
        let started = Instant::now();
        let mut last = (0, 0);
        loop {
            if let Some(counts) = self.durable(&writes, &revocations).await {
                last = counts;
                if counts == (writes.len(), revocations.len()) {
                    break;
                }
            }
            if started.elapsed() > SETTLE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let row = Row {
            scenario: scenario.to_owned(),
            mode: self.mode,
            writes_acked: writes.len(),
            writes_durable: last.0,
            inval_sent: tally.invalidations_sent,
            inval_acked: revocations.len(),
            inval_applied: last.1,
            reads: tally.reads,
            errors: tally.errors,
            recover,
            settle: started.elapsed(),
            peak_rss_mib: self.sample_rss() as f64 / 1024.0,
            note,
        };
        eprintln!("{}", row.line());
        row
    }
}

/// A valid entry whose policy no invalidation of the client ever names, so every
/// acknowledged write must stay durable.
fn entry(key: &str) -> Value {
    json!({
        "veri_key": key,
        "verdict": {"decision": "allow"},
        "trust_score": 70,
        "policy_hash": "sha256:chaos-policy",
        "signer_set_hash": "sha256:chaos-signers",
        "signer_key_ids": ["key-a"],
        "ttl": "1h",
    })
}

/// What the client saw during one scenario.
#[derive(Default)]
struct Tally {
    acked_writes: Vec<String>,
    invalidations_sent: usize,
    /// The `revocation_id` of every acknowledged invalidation.
    acked_invalidations: Vec<String>,
    reads: usize,
    errors: BTreeMap<String, usize>,
}

impl Tally {
    fn error(&mut self, op: &str, kind: String) {
        *self.errors.entry(format!("{op} {kind}")).or_default() += 1;
    }
}

/// An error's kind as the table names it.
fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

/// The bounded client: `CONCURRENCY` workers writing, reading back and invalidating until
/// stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(env: &Env) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let workers = (0..CONCURRENCY)
            .map(|w| {
                let (stop, tally) = (stop.clone(), tally.clone());
                let (http, base) = (env.http.clone(), env.base());
                tokio::spawn(worker(w, http, base, stop, tally))
            })
            .collect();
        Load {
            stop,
            tally,
            workers,
        }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.expect("client worker");
        }
        std::mem::take(&mut *self.tally.lock().expect("tally"))
    }
}

async fn worker(
    w: usize,
    http: reqwest::Client,
    base: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut mine: Vec<String> = Vec::new();
    let mut i = w;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        match i % 10 {
            // One request in ten invalidates, retried under one Idempotency-Key.
            0 => {
                let key = uuid::Uuid::new_v4().to_string();
                let body = json!({
                    "policy_hash": format!("sha256:chaos-revoke-{key}"),
                    "reason": "chaos",
                });
                tally.lock().expect("tally").invalidations_sent += 1;
                loop {
                    let r = http
                        .post(format!("{base}/api/v1/provcache/invalidate"))
                        .bearer_auth(TOKEN)
                        .header("idempotency-key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let retry = match r {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            let id = v["revocation_id"].as_str().map(str::to_lowercase);
                            let mut t = tally.lock().expect("tally");
                            match id {
                                Some(id) => t.acked_invalidations.push(id),
                                None => t.error("inval", "202 without revocation_id".into()),
                            }
                            false
                        }
                        Ok(r) => {
                            let s = r.status().as_u16();
                            tally.lock().expect("tally").error("inval", s.to_string());
                            s == 503 || s == 429 || s >= 500
                        }
                        Err(e) => {
                            tally.lock().expect("tally").error("inval", kind(&e));
                            true
                        }
                    };
                    if !retry || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // One in ten reads back an entry this worker wrote.
            5 if !mine.is_empty() => {
                let key = &mine[i % mine.len()];
                let r = http
                    .get(format!("{base}/api/v1/provcache/entries/{key}"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
                let mut t = tally.lock().expect("tally");
                t.reads += 1;
                match r {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => t.error("read", r.status().as_u16().to_string()),
                    Err(e) => t.error("read", kind(&e)),
                }
            }
            _ => {
                let key = fresh_veri_key();
                let r = http
                    .post(format!("{base}/api/v1/provcache/entries"))
                    .bearer_auth(TOKEN)
                    .json(&entry(&key))
                    .send()
                    .await;
                let failed = {
                    let mut t = tally.lock().expect("tally");
                    match r {
                        Ok(r) if r.status() == 201 || r.status() == 202 => {
                            t.acked_writes.push(key.clone());
                            mine.push(key);
                            false
                        }
                        Ok(r) => {
                            t.error("write", r.status().as_u16().to_string());
                            true
                        }
                        Err(e) => {
                            t.error("write", kind(&e));
                            true
                        }
                    }
                };
                if failed {
                    // Under a fault, back off a little so the client does not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One line of the table.
struct Row {
    scenario: String,
    mode: Mode,
    writes_acked: usize,
    writes_durable: usize,
    inval_sent: usize,
    inval_acked: usize,
    inval_applied: usize,
    reads: usize,
    errors: BTreeMap<String, usize>,
    recover: Duration,
    settle: Duration,
    peak_rss_mib: f64,
    note: String,
}

impl Row {
    fn lost_writes(&self) -> usize {
        self.writes_acked.saturating_sub(self.writes_durable)
    }

    fn lost_invalidations(&self) -> usize {
        self.inval_acked.saturating_sub(self.inval_applied)
    }

    fn header() -> String {
        format!(
            "{:<22} {:<11} {:>7} {:>7} {:>4} | {:>6} {:>6} {:>6} {:>4} | {:>6} | {:>8} {:>8} | {:>7} | errors by kind; notes",
            "scenario",
            "mode",
            "w.acked",
            "durable",
            "lost",
            "i.sent",
            "acked",
            "applied",
            "lost",
            "reads",
            "recover",
            "settle",
            "RSS MiB",
        )
    }

    fn line(&self) -> String {
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{:<22} {:<11} {:>7} {:>7} {:>4} | {:>6} {:>6} {:>6} {:>4} | {:>6} | {:>7.2}s {:>7.2}s | {:>7.1} | {errors}{}",
            self.scenario,
            format!("{:?}", self.mode).to_lowercase(),
            self.writes_acked,
            self.writes_durable,
            self.lost_writes(),
            self.inval_sent,
            self.inval_acked,
            self.inval_applied,
            self.lost_invalidations(),
            self.reads,
            self.recover.as_secs_f64(),
            self.settle.as_secs_f64(),
            self.peak_rss_mib,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("; {}", self.note)
            },
        )
    }
}

/// Scenario 1: SIGKILL of provd while flushes are in flight, then a restart.
async fn kill_provd(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    env.sample_rss();
    env.provd.as_mut().expect("provd").kill9();
    // What the dead process had acknowledged but not yet made durable: the evidence that
    // the kill landed mid-flush.
    let acked: Vec<String> = load.tally.lock().expect("tally").acked_writes.clone();
    let at_kill = env.durable(&acked, &[]).await.map_or(0, |(w, _)| w);
    env.start_provd();
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    let note = format!(
        "at the kill {} of {} acknowledged writes were not yet durable",
        acked.len() - at_kill,
        acked.len()
    );
    env.settle("provd kill -9", load, recover, note).await
}

/// Holds a fault for `outage` while polling `/readyz`, so the row shows whether provd
/// noticed it: the answers seen, by status.
async fn observe(http: &reqwest::Client, base: &str, outage: Duration) -> String {
    let until = Instant::now() + outage;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while Instant::now() < until {
        let kind = match http.get(format!("{base}/readyz")).send().await {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => kind(&e),
        };
        *seen.entry(kind).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen: Vec<String> = seen.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("/readyz during the fault {}", seen.join(", "))
}

/// Scenario 2: SIGKILL of NATS, an outage, and a restart on the same storage.
async fn kill_nats(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    let (http, base) = (env.http.clone(), env.base());
    let nats = env.nats.as_mut().expect("nats");
    nats.proc.as_mut().expect("nats running").kill9();
    let note = observe(&http, &base, p.outage).await;
    nats.restart().await;
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    env.settle("NATS kill -9+restart", load, recover, note)
        .await
}

/// Scenario 3a: Redis frozen (SIGSTOP) for the outage, then thawed.
async fn freeze_redis(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    let pid = env
        .redis
        .as_ref()
        .expect("redis")
        .proc
        .as_ref()
        .expect("up")
        .pid();
    signal(&pid.to_string(), "STOP");
    let note = observe(&env.http, &env.base(), p.outage).await;
    signal(&pid.to_string(), "CONT");
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    env.settle("Redis frozen", load, recover, note).await
}

/// Scenario 3b: Redis stopped (its cache lost) for the outage, then started empty.
async fn stop_redis(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    let (http, base) = (env.http.clone(), env.base());
    let redis = env.redis.as_mut().expect("redis");
    redis.proc.as_mut().expect("up").stop_with("TERM");
    let note = observe(&http, &base, p.outage).await;
    redis.restart().await;
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    env.settle("Redis stopped", load, recover, note).await
}

/// Scenario 4: PostgreSQL stopped (fast shutdown) for its outage, then started.
async fn stop_pg(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    env.pg.as_mut().expect("pg").stop();
    let note = observe(&env.http, &env.base(), p.pg_outage).await;
    env.pg.as_mut().expect("pg").start().await;
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    let label = format!("PostgreSQL stop {}s", p.pg_outage.as_secs());
    env.settle(&label, load, recover, note).await
}

/// Hostile entries through the API: each must be refused with a 4xx naming the problem,
/// never accepted and never a 5xx.
async fn hostile_writes(env: &Env) -> (usize, usize) {
    let url = format!("{}/api/v1/provcache/entries", env.base());
    let long = "x".repeat(100_000);
    let mut bodies: Vec<Value> = Vec::new();
    for n in 0..POISON {
        let mut e = entry(&fresh_veri_key());
        match n % 5 {
            0 => e["veri_key"] = json!(""),
            1 => e["trust_score"] = json!(1_000_000),
            2 => e["ttl"] = json!("forever"),
            3 => e["policy_hash"] = json!(long),
            _ => e["verdict"] = json!("\u{0000}\u{202e}not a verdict"),
        }
        bodies.push(e);
    }
    let mut refused = 0;
    for b in &bodies {
        if let Ok(r) = env.http.post(&url).bearer_auth(TOKEN).json(b).send().await
            && r.status().is_client_error()
        {
            refused += 1;
        }
    }
    (refused, bodies.len())
}

/// Scenario 5: poison writes while the client runs. Distributed: garbage published raw
/// onto the write-behind subject must each be recorded as rejected and not block the rest.
/// Both modes: hostile entries through the API are refused.
async fn poison(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    let (refused, sent) = hostile_writes(env).await;
    let mut note = format!("hostile API writes refused {refused}/{sent}");
    // Recovery here is the time from the last poison sent until it is all recorded as
    // rejected and provd accepts writes.
    let mut healed = Instant::now();
    if env.mode == Mode::Distributed {
        let nats = env.nats.as_ref().expect("nats");
        let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
            .await
            .expect("nats");
        let js = async_nats::jetstream::new(client);
        let subject = format!("{}.provcache.writes", env.prefix);
        for n in 0..POISON {
            let payload: Vec<u8> = match n % 3 {
                0 => b"not json at all \xff\xfe".to_vec(),
                1 => br#"{"entry": {"veri_key": 42}}"#.to_vec(),
                _ => {
                    serde_json::to_vec(&json!({"write_id": "x", "entry": entry("")})).expect("json")
                }
            };
            js.publish(subject.clone(), payload.into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        healed = Instant::now();
        let deadline = Instant::now() + SETTLE;
        let mut rejected = env.rejected_writes().await;
        while rejected < POISON as i64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rejected = env.rejected_writes().await;
        }
        note = format!("{note}; raw poison recorded as rejected {rejected}/{POISON}");
        assert_eq!(
            rejected, POISON as i64,
            "every poison message is recorded as rejected"
        );
    }
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    assert_eq!(
        refused, sent,
        "every hostile API write is refused with a 4xx"
    );
    env.settle("poison writes", load, recover, note).await
}

/// Scenario 6: `SLOW_CONNECTIONS` connections each holding a partial request line while
/// the client runs; `/healthz` must keep answering.
async fn slow_connections(env: &mut Env, p: Profile) -> Row {
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    let mut held = Vec::with_capacity(SLOW_CONNECTIONS);
    let mut refused = 0;
    for _ in 0..SLOW_CONNECTIONS {
        match std::net::TcpStream::connect(("127.0.0.1", env.port)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: chaos\r\nX-Slow: ");
                held.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    let (mut ok, mut failed) = (0, 0);
    let until = Instant::now() + p.outage;
    while Instant::now() < until {
        match env.http.get(format!("{}/healthz", env.base())).send().await {
            Ok(r) if r.status() == 200 => ok += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    let note = format!(
        "{} held ({refused} refused); /healthz answered {ok}/{}",
        SLOW_CONNECTIONS - refused,
        ok + failed
    );
    let row = env
        .settle(
            &format!("{SLOW_CONNECTIONS} slow connections"),
            load,
            recover,
            note,
        )
        .await;
    assert_eq!(
        failed, 0,
        "/healthz answered throughout the slow connections"
    );
    row
}

/// The acceptance limit of issue 19 for a large import, in KiB.
const BIG_IMPORT_LIMIT_KIB: u64 = 256 * 1024;

/// Scenario 7: a large strict bundle (about 100 MB) verified by
/// `provd verify` and imported four times at once with `bundles.max_concurrent_imports = 3`
/// while the load runs: three import, a fourth that arrives while they run is turned away
/// with `Retry-After`, and provd's peak memory stays bounded.
async fn big_import(env: &mut Env, p: Profile) -> Row {
    // A provd of its own for this scenario (stopped gracefully, started again), so its peak
    // is the imports' and the load's, not the in-process caches earlier scenarios filled.
    env.provd.as_mut().expect("provd").stop_with("TERM");
    env.start_provd();
    env.wait_recovered(Instant::now()).await;
    let earlier_peak_kib = std::mem::take(&mut env.peak_rss_kib);
    let load = Load::start(env);
    tokio::time::sleep(p.warmup).await;
    let dir = env.dir.path().to_owned();
    let chunks = p.big_chunks;
    let (path, public) = tokio::task::spawn_blocking(move || {
        let (key, public) = big_bundle::ed25519_key(&dir);
        let path = dir.join("big.json");
        big_bundle::write_strict_bundle(&path, chunks, &key);
        (path, public)
    })
    .await
    .expect("bundle written");
    let size = std::fs::metadata(&path).expect("bundle").len();
    let verify = {
        let (path, public) = (path.clone(), public.clone());
        tokio::task::spawn_blocking(move || big_bundle::verify_peak_kib(&path, &public))
            .await
            .expect("verify ran")
    };
    let body = bytes::Bytes::from(std::fs::read(&path).expect("bundle"));
    // No client timeout: a large import takes a while on a debug build.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/provcache/import", env.base());
    let results = futures::future::join_all((0..4).map(|_| {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let resp = http
                .post(url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("import");
            (
                resp.status().as_u16(),
                resp.headers().contains_key("retry-after"),
            )
        }
    }))
    .await;
    let peak = env.sample_rss();
    let healed = Instant::now();
    let recover = env.wait_recovered(healed).await;
    tokio::time::sleep(p.after).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    let imported = statuses.iter().filter(|s| **s == 201).count();
    let busy = results.iter().filter(|(s, r)| *s == 503 && *r).count();
    let note = format!(
        "{:.0} MB strict bundle: imports {statuses:?} (limit 3); provd verify peak {}; \
         provd restarted for this row (earlier peak in this mode {:.1} MiB)",
        size as f64 / 1e6,
        verify.as_ref().map_or(
            "not measured (no /usr/bin/time)".to_owned(),
            |(kib, _)| format!("{:.1} MiB", *kib as f64 / 1024.0)
        ),
        earlier_peak_kib as f64 / 1024.0,
    );
    let row = env.settle("large import x4", load, recover, note).await;
    // A request may finish before the last one arrives, so up to four may import; one
    // turned away must say when to come back.
    assert!(imported >= 3 && imported + busy == 4, "{results:?}");
    assert!(
        peak < BIG_IMPORT_LIMIT_KIB,
        "provd peaked at {peak} KiB with large imports"
    );
    if let Some((kib, _)) = verify {
        assert!(
            kib < BIG_IMPORT_LIMIT_KIB,
            "provd verify peaked at {kib} KiB"
        );
    }
    row
}

/// The whole table, and the verdict on it.
fn report(rows: &[Row], p: Profile) {
    println!("\nchaos suite, profile {}:", p.name);
    println!("{}", Row::header());
    for r in rows {
        println!("{}", r.line());
    }
    println!(
        "columns: writes acked/durable/lost; invalidations sent/acked/applied/lost; reads; \
         recover = fault healed until ready and accepting a write; settle = load stopped \
         until every acknowledged write is durable and every acknowledged invalidation in \
         the ledger; RSS = provd's peak (VmHWM)"
    );
    for r in rows {
        assert!(
            r.writes_acked > 0,
            "{}: the client got no write acknowledged",
            r.scenario
        );
        assert!(
            r.inval_acked > 0,
            "{}: no invalidation acknowledged",
            r.scenario
        );
    }
    let lost: usize = rows.iter().map(|r| r.lost_writes()).sum();
    let lost_inval: usize = rows.iter().map(|r| r.lost_invalidations()).sum();
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(lost_inval, 0, "acknowledged invalidations lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the chaos suite: run by `just chaos`"]
async fn chaos_suite() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let p = profile();
    let mut rows = Vec::new();

    let mut env = Env::start(Mode::Embedded).await;
    rows.push(kill_provd(&mut env, p).await);
    rows.push(poison(&mut env, p).await);
    rows.push(slow_connections(&mut env, p).await);
    rows.push(big_import(&mut env, p).await);
    drop(env);

    let mut env = Env::start(Mode::Distributed).await;
    rows.push(kill_provd(&mut env, p).await);
    rows.push(kill_nats(&mut env, p).await);
    rows.push(freeze_redis(&mut env, p).await);
    rows.push(stop_redis(&mut env, p).await);
    rows.push(stop_pg(&mut env, p).await);
    rows.push(poison(&mut env, p).await);
    rows.push(slow_connections(&mut env, p).await);
    rows.push(big_import(&mut env, p).await);
    drop(env);

    report(&rows, p);
}
