//! `provd serve` as a user runs it: the real binary, real services, signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestDb, services};

/// Starts `provd serve` on port 0 and returns the child and the address it logged.
fn spawn_serve(db: &TestDb, prefix: &str) -> (Child, String, mpsc::Receiver<String>) {
    let services = services().expect("checked by the caller");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provd"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROVD_LISTEN", "127.0.0.1:0")
        .env("PROVD_DATABASE_URL", &db.url)
        .env("PROVD_REDIS_URL", &services.redis_url)
        .env("PROVD_NATS_URL", &services.nats_url)
        .env("PROVD_NATS_PREFIX", prefix)
        .env("PROVD_REDIS_PREFIX", format!("{prefix}:"))
        .env("PROVD_NODE_ID", "serve-test")
        .env("PROVD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PROVD_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("provd starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("provd logs its address before the deadline");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == "provd listening"
        {
            break v["addr"].as_str().expect("addr").to_owned();
        }
    };
    (child, addr, rx)
}

#[tokio::test]
async fn serve_answers_health_readiness_and_metrics_and_stops_cleanly_on_sigterm() {
    let Some(services) = services() else {
        return;
    };
    let db = TestDb::create(&services).await;
    let prefix = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (mut child, addr, logs) = spawn_serve(&db, &prefix);
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    let r = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            r.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("provd_build_info"), "{text}");
    assert!(
        text.contains("provd_invalidations_total{type=\"explicit\"} 0"),
        "{text}"
    );

    // SIGTERM: the server drains and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "provd did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    let said: Vec<String> = logs.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("\"stopped\"")),
        "no clean stop in the log: {said:?}"
    );

    // Leave no streams behind.
    let client = async_nats::connect(&services.nats_url).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    for s in events::streams::ALL {
        let _ = js
            .delete_stream(events::Subjects::new(prefix.clone()).stream_name(&s))
            .await;
    }
    db.drop_db().await;
}
