//! Crash safety of the write-behind path, in both modes: the real `provd serve` binary is
//! killed with SIGKILL while flushes are in flight, started again, and every accepted write
//! still reaches the durable store (PostgreSQL, or the SQLite file whose in-process bus
//! redelivers what was delivered but not acknowledged when the process died).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestData, both_modes, dead_port, fresh_veri_key};
use events::Subjects;
use futures::StreamExt;
use provd::adapters::jetstream::JetStreamBus;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const ENTRIES: usize = 20_000;
const CONCURRENCY: usize = 64;
const TOKEN: &str = "crash-test-admin-token-0123456789";

struct Provd {
    child: Child,
}

impl Drop for Provd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    data: &TestData,
    prefix: &str,
    port: u16,
    services: &common::Services,
    log: &Path,
) -> Provd {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    match data {
        TestData::Postgres(db) => {
            cmd.env("PROVD_DATABASE_URL", &db.url)
                .env("PROVD_REDIS_URL", &services.redis_url)
                .env("PROVD_NATS_URL", &services.nats_url);
        }
        TestData::Embedded(dir) => {
            cmd.env("PROVD_DATA_DIR", dir.path());
        }
    }
    let child = cmd
        .env("PROVD_NATS_PREFIX", prefix)
        .env("PROVD_NATS_STREAM_MAX_BYTES", "67108864")
        .env("PROVD_REDIS_PREFIX", format!("{prefix}:"))
        .env("PROVD_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVD_ADMIN_TOKEN", TOKEN)
        .env("PROVD_NODE_ID", prefix)
        // Batches that do not divide the load evenly leave a partial batch waiting for
        // the interval when the writes stop, so the kill always finds work in flight.
        .env("PROVD_PROVCACHE_FLUSH_BATCH", "3000")
        .env("PROVD_PROVCACHE_FLUSH_INTERVAL", "3s")
        .env("PROVD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start provd");
    Provd { child }
}

async fn wait_ready(http: &reqwest::Client, base: &str, log: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        if std::time::Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = text.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            panic!("provd did not become ready; log tail (newest first):\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many of `keys` the durable store holds, read the way an operator would: straight
/// from the database, not through provd.
async fn count_stored(data: &TestData, keys: &[String]) -> i64 {
    match data {
        TestData::Postgres(db) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("connect");
            let n = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM provcache.provcache_items WHERE veri_key = ANY($1)",
            )
            .bind(keys)
            .fetch_one(&pool)
            .await
            .expect("count");
            pool.close().await;
            n
        }
        TestData::Embedded(dir) => {
            let opts = SqliteConnectOptions::new()
                .filename(dir.path().join("provd.db"))
                .read_only(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .expect("open the SQLite file");
            let n = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM provcache_items \
                 WHERE veri_key IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(keys).expect("json"))
            .fetch_one(&pool)
            .await
            .expect("count");
            pool.close().await;
            n
        }
    }
}

both_modes! {
async fn every_accepted_write_survives_a_sigkill_during_flushes() {
    let Some((data, services)) = TestData::create().await else {
        return;
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let prefix = format!("crash{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("provd.log");
    let port = dead_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");

    let mut first = spawn(&data, &prefix, port, &services, &log);
    wait_ready(&http, &base, &log).await;

    let keys: Vec<String> = (0..ENTRIES).map(|_| fresh_veri_key()).collect();
    let statuses: Vec<u16> = futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let http = http.clone();
            let url = format!("{base}/api/v1/provcache/entries");
            async move {
                let body = json!({
                    "veri_key": key,
                    "verdict": {"decision": "allow"},
                    "trust_score": 70,
                    "policy_hash": "sha256:policy",
                    "signer_set_hash": "sha256:signers",
                    "signer_key_ids": ["key-a"],
                    "ttl": "1h",
                });
                // A transient connection error is retried; the write id is new each
                // time, and an upsert of the same key is harmless.
                for _ in 0..5 {
                    if let Ok(r) = http.post(&url).bearer_auth(TOKEN).json(&body).send().await {
                        return r.status().as_u16();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                0
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let accepted = statuses.iter().filter(|s| **s == 202 || **s == 201).count();
    assert_eq!(accepted, ENTRIES, "every write is accepted: {:?}", {
        let mut odd: Vec<_> = statuses
            .iter()
            .filter(|s| **s != 202 && **s != 201)
            .collect();
        odd.dedup();
        odd
    });

    // SIGKILL: no graceful drain, whatever is held or mid-flush is cut off.
    first.child.kill().expect("sigkill");
    let _ = first.child.wait();
    let at_kill = count_stored(&data, &keys).await;
    eprintln!("at SIGKILL: {at_kill} of {ENTRIES} entries were in the durable store");
    assert!(
        (at_kill as usize) < ENTRIES,
        "the kill must find writes still unflushed"
    );

    let restarted = std::time::Instant::now();
    let second = spawn(&data, &prefix, port, &services, &log);
    wait_ready(&http, &base, &log).await;
    // The writes the dead process held come back within the broker's short ack wait (or
    // at once from the reopened SQLite file), not after the consumer's own ack wait of
    // 2 × the flush interval + 10 s = 16 s; meanwhile the queue figures count them.
    let consumer_ack_wait = Duration::from_secs(16);
    let mut seen_waiting = 0.0f64;
    let mut unflushed_seen = false;
    loop {
        let stats: serde_json::Value = http
            .get(format!("{base}/api/v1/provcache/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        let depth = stats["write_behind"]["queue_depth"].as_f64().expect("depth");
        let stored = count_stored(&data, &keys).await as usize;
        if stored == ENTRIES {
            break;
        }
        unflushed_seen = true;
        seen_waiting = seen_waiting.max(depth);
        assert!(
            restarted.elapsed() < consumer_ack_wait,
            "{stored} of {ENTRIES} stored {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "after the restart: every write durable in {:?}, queue depth seen {seen_waiting}",
        restarted.elapsed()
    );
    // In distributed mode the broker holds the dead process's deliveries for its ack wait
    // after the kill, so the figures must show them while the new process waits.
    if matches!(data, TestData::Postgres(_)) && unflushed_seen {
        assert!(seen_waiting > 0.0, "the queue figures read 0 while writes waited");
    }
    drop(second);

    if matches!(data, TestData::Postgres(_))
        && let Ok(bus) = JetStreamBus::connect(&services.nats_url, Subjects::new(prefix)).await
    {
        let _ = bus.delete_streams().await;
    }
    data.remove().await;
}
}
