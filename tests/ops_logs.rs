//! Structured logs of the real binary (`provd serve --log-format json`): every line is JSON,
//! the request id (the caller's `x-request-id`) is in the lines of the request and, as the
//! correlation id of the CloudEvent the request published, in the lines of the invalidation it
//! caused, and likewise for a Rekor submission and the submitter's work; tokens, valid or
//! not, never appear in the logs.

mod common;
mod ops_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestDb, services};
use serde_json::{Value, json};

const SECRET: &str = "ops-log-test-secret-token-5f1c9a";
const WRONG: &str = "ops-log-test-wrong-token-77d0e2";

#[tokio::test]
async fn json_logs_carry_request_and_correlation_ids_and_never_a_token() {
    let Some(services) = services() else {
        return;
    };
    let db = TestDb::create(&services).await;
    let prefix = format!("lg{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    // The stub log: the submitter runs without a log server.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("provd.toml");
    std::fs::write(&config, "[rekor.backends.lab]\nkind = \"stub\"\n").expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["--config"])
        .arg(&config)
        .args(["serve", "--log-format", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROVD_LISTEN", "127.0.0.1:0")
        .env("PROVD_DATABASE_URL", &db.url)
        .env("PROVD_REDIS_URL", &services.redis_url)
        .env("PROVD_NATS_URL", &services.nats_url)
        .env("PROVD_NATS_PREFIX", &prefix)
        .env("PROVD_NATS_STREAM_MAX_BYTES", "8388608")
        .env("PROVD_REDIS_PREFIX", format!("{prefix}:"))
        .env("PROVD_NODE_ID", "logs-test")
        .env("PROVD_ADMIN_TOKEN", SECRET)
        .env("PROVD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("provd starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("provd logs its address");
        lines.push(line.clone());
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "provd listening"
        {
            break v["addr"].as_str().expect("addr").to_owned();
        }
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());

    // A refused token and an accepted one; the accepted request publishes an invalidation.
    let r = http
        .get(format!("{base}/api/v1/provcache/stats"))
        .bearer_auth(WRONG)
        .send()
        .await
        .expect("stats");
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/api/v1/provcache/invalidate"))
        .bearer_auth(SECRET)
        .header("x-request-id", &request_id)
        .json(&json!({"policy_hash": "sha256:logs-test", "reason": "logs test"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-request-id"], request_id.as_str());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["correlation_id"], request_id.as_str(), "{body}");
    let submit_id = format!("sub-{}", uuid::Uuid::new_v4().simple());
    let r = http
        .post(format!("{base}/api/v1/rekor/submissions"))
        .bearer_auth(SECRET)
        .header("x-request-id", &submit_id)
        .json(&ops_support::submission_body())
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202);
    // A request without an id gets one.
    let r = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    let generated = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    // The invalidator's line carries the request id as its correlation id.
    let has_id = |v: &Value, field: &str, id: &str| {
        v["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s[field] == id))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_request = false;
    let mut seen_invalidated = false;
    let mut seen_logged = false;
    while !(seen_request && seen_invalidated && seen_logged) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!("no invalidation with {request_id} or submission with {submit_id} logged: {lines:#?}")
            });
        lines.push(line.clone());
        let v: Value = serde_json::from_str(&line).expect("every line is JSON");
        if v["message"] == "request" && has_id(&v, "request_id", &request_id) {
            seen_request = true;
        }
        if v["message"] == "invalidated" && has_id(&v, "correlation_id", &request_id) {
            seen_invalidated = true;
        }
        if v["message"] == "logged" && has_id(&v, "correlation_id", &submit_id) {
            seen_logged = true;
        }
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "provd did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lines.extend(rx.try_iter());
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
        assert!(
            !line.contains(SECRET) && !line.contains(WRONG),
            "a token was logged: {line}"
        );
    }

    let client = async_nats::connect(&services.nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    for s in events::streams::ALL {
        let _ = js
            .delete_stream(events::Subjects::new(prefix.clone()).stream_name(&s))
            .await;
    }
    db.drop_db().await;
}
