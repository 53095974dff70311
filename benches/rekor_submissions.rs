//! Rekor submissions per second through provd's whole queue (HTTP API, JetStream work queue,
//! submission actor, receipt verification, PostgreSQL, the logged event) against the local
//! Rekor-compatible log, beside the log's own rate for the same kind of envelopes submitted
//! straight to it by the same client with the same concurrency, in the same run: for the
//! Rekor v1 and the v2 API without faults, then for each with every write's answer lost
//! (the log commits the entry and drops the connection), where the run also checks that
//! each submission was logged exactly once (one receipt in provd, one entry in the log).
//!
//! Service URLs: `PROVD_TEST_DATABASE_URL`, `PROVD_TEST_NATS_URL` (the test defaults);
//! `PROVD_BENCH_SUBMISSIONS` sets the count (default 1000). Skipped with a message when a
//! service is unreachable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey};
use actors::ports::{RekorClient, RekorSubmission};
use futures::StreamExt;
use provd::adapters::rekor::build_backend;
use provd::app::App;
use provd::config::rekor::{RawRekorBackend, RawRekorQueue};
use provd::config::{RawConfig, RawRekor};
use provd::devlog::{DevLog, DevLogConfig, DevLogControl, DevLogInfo, Faults};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

mod common;
use common::reachable;

const TOKEN: &str = "bench-token-0123456789";
const CONCURRENCY: usize = 8;
/// Submissions of each lost-response phase.
const LOST: usize = 200;
/// The backends, one per API, both on the same log.
const KINDS: [&str; 2] = ["v1", "v2"];

async fn start_log(dir: &std::path::Path) -> (String, DevLogInfo, DevLogControl) {
    let log = DevLog::open(DevLogConfig {
        data_dir: dir.to_path_buf(),
        // Off until a lost-response phase switches it on.
        allow_faults: true,
        ..DevLogConfig::default()
    })
    .expect("dev log opens");
    let info = log.info().clone();
    let control = log.control();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(log.serve(listener, std::future::pending::<()>()));
    (base, info, control)
}

fn rekor(base: &str, info: &DevLogInfo) -> RawRekor {
    let backend = |api: &str, key: &str| RawRekorBackend {
        kind: Some("private".into()),
        api: Some(api.into()),
        url: Some(base.to_owned()),
        keys: Some(vec![key.to_owned()]),
        origin: Some(info.origin.clone()),
        // The lost-response phases fail every first write on purpose; an open breaker
        // would refuse the retries that find the entries.
        breaker_threshold: Some(100_000),
        ..RawRekorBackend::default()
    };
    RawRekor {
        default_backend: Some("v1".into()),
        backends: [
            ("v1".to_owned(), backend("v1", &info.v1_public_key_pem)),
            ("v2".to_owned(), backend("v2", &info.v2_vkey)),
        ]
        .into(),
        // The queue's defaults, but for the concurrency both sides share.
        queue: Some(RawRekorQueue {
            concurrency: Some(CONCURRENCY),
            ..RawRekorQueue::default()
        }),
    }
}

fn envelopes(key: &PrivateKey, n: usize, tag: &str) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            let payload = json!({"_type": "https://in-toto.io/Statement/v1", "bench": tag, "n": i});
            Envelope::sign(
                "application/vnd.in-toto+json",
                payload.to_string().as_bytes(),
                key,
                "",
            )
        })
        .collect()
}

async fn direct(client: Arc<dyn RekorClient>, key: &PrivateKey, n: usize, tag: &str) -> f64 {
    let subs: Vec<RekorSubmission> = envelopes(key, n, tag)
        .into_iter()
        .map(|envelope| RekorSubmission {
            envelope,
            verifiers: vec![key.public_key()],
        })
        .collect();
    let started = Instant::now();
    futures::stream::iter(&subs)
        .for_each_concurrent(CONCURRENCY, |s| {
            let client = client.clone();
            async move {
                client.submit(s).await.expect("logged");
            }
        })
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

async fn through_queue(
    app: &App,
    backend: &str,
    key: &PrivateKey,
    n: usize,
    tag: &str,
    pool: &sqlx::PgPool,
) -> f64 {
    let pem = key.public_key().to_pem().expect("pem");
    let envs = envelopes(key, n, tag);
    let before = logged(pool).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/rekor/submissions", app.local_addr());
    let started = Instant::now();
    futures::stream::iter(&envs)
        .for_each_concurrent(16, |e| {
            let (http, url, pem) = (http.clone(), url.clone(), pem.clone());
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"envelope": e, "verifiers": [pem], "backend": backend}))
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(r.status(), 202);
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = logged(pool).await - before;
        if done >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {n} logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn logged(pool: &sqlx::PgPool) -> usize {
    count(
        pool,
        "SELECT count(*) FROM rekor_submissions WHERE status = 'logged'",
    )
    .await
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> usize {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.expect("count");
    usize::try_from(n).unwrap_or(0)
}

/// Drops the answer of the next `n` writes (each is committed first).
fn lose_answers(control: &DevLogControl, n: usize) {
    control
        .set_faults(Faults {
            drop_next_writes: u32::try_from(n).expect("small"),
            ..Faults::default()
        })
        .expect("faults allowed");
}

fn report(what: &str, ours: f64, baseline: f64) {
    println!(
        "rekor submissions {what}: through provd's queue {ours:>8.0}/s | \
         straight to the log {baseline:>8.0}/s | ratio {:.2}×",
        ours / baseline
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let db = std::env::var("PROVD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let nats = std::env::var("PROVD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let n: usize = std::env::var("PROVD_BENCH_SUBMISSIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        if !reachable(&db, 5432) || !reachable(&nats, 4222) {
            println!("SKIPPED rekor queue: PostgreSQL ({db}) or NATS ({nats}) unreachable");
            return;
        }
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db_name = format!("provd_bench_{tag}");
        let mut admin = PgConnection::connect(&db).await.expect("postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let (base_url, _) = db.rsplit_once('/').expect("database URL has a path");
        let db_url = format!("{base_url}/{db_name}");

        let dir = tempfile::tempdir().expect("tempdir");
        let (log_url, info, control) = start_log(dir.path()).await;
        let mut raw = RawConfig::from_toml(&format!(
            "listen = \"127.0.0.1:0\"\nnats_prefix = \"b{tag}\"\nredis_prefix = \"b{tag}:\"\n\
             nats_stream_max_bytes = 268435456\n\
             [[auth.tokens]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nscopes = [\"admin\"]\n"
        ))
        .expect("config parses");
        raw.database_url = Some(db_url.clone());
        raw.nats_url = Some(nats.clone());
        raw.rekor = rekor(&log_url, &info);
        let config = raw.validate().expect("valid config");
        let clients: Vec<Arc<dyn RekorClient>> = KINDS
            .iter()
            .map(|k| build_backend(&config.rekor.backends[*k]).expect("client"))
            .collect();
        let key = PrivateKey::generate(Algorithm::P256, &mut |b: &mut [u8]| {
            getrandom::fill(b).map_err(|e| e.to_string())
        })
        .expect("key");
        let app = App::start(config).await.expect("provd starts");
        let pool = app
            .parts()
            .store
            .pg_pool()
            .expect("distributed mode")
            .clone();

        // Warm-up: connections, streams, consumers, prepared statements.
        // Every envelope is new to the log: each phase signs its own.
        for (kind, client) in KINDS.iter().zip(&clients) {
            direct(client.clone(), &key, 50, &format!("warm-direct-{kind}")).await;
            through_queue(&app, kind, &key, 50, &format!("warm-queue-{kind}"), &pool).await;
        }

        for (kind, client) in KINDS.iter().zip(&clients) {
            let baseline = direct(client.clone(), &key, n, &format!("direct-{kind}")).await;
            let ours = through_queue(&app, kind, &key, n, &format!("queue-{kind}"), &pool).await;
            report(
                &format!("{kind} ({n}, concurrency {CONCURRENCY})"),
                ours,
                baseline,
            );
        }

        // Every answer lost: the client's retry (or the queue's) finds the entry through
        // the log's 409, so each submission is still one entry and one receipt.
        for (kind, client) in KINDS.iter().zip(&clients) {
            lose_answers(&control, LOST);
            let baseline = direct(client.clone(), &key, LOST, &format!("lost-direct-{kind}")).await;
            assert_eq!(control.faults().drop_next_writes, 0, "every answer lost");
            let entries = count(&pool, "SELECT count(*) FROM rekor_entries").await;
            let size = control.size();
            lose_answers(&control, LOST);
            let ours = through_queue(&app, kind, &key, LOST, &format!("lost-queue-{kind}"), &pool).await;
            assert_eq!(control.faults().drop_next_writes, 0, "every answer lost");
            let receipts = count(&pool, "SELECT count(*) FROM rekor_entries").await - entries;
            let logged = control.size() - size;
            assert_eq!(
                (receipts, logged),
                (LOST, LOST as u64),
                "{kind}: one receipt in provd and one entry in the log per submission"
            );
            report(
                &format!("{kind}, every answer lost ({LOST}, concurrency {CONCURRENCY}; {receipts} receipts, {logged} entries)"),
                ours,
                baseline,
            );
        }
        control.set_faults(Faults::default()).expect("faults cleared");

        let bus = app.bus().clone();
        app.stop().await;
        let _ = bus.delete_streams().await;
        pool.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
        )))
            .execute(&mut admin)
            .await
            .ok();
    });
}
