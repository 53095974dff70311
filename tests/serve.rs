//! `provd serve` as a user runs it: the real binary, real services, signals.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestDb, services};

/// Starts `provd serve` on port 0 and returns the child and the address it logged.
fn spawn_serve(db: &TestDb, prefix: &str) -> (Child, String, mpsc::Receiver<String>) {
    let (child, listening, rx) = spawn_listening(db, prefix);
    let addr = listening["addr"].as_str().expect("addr").to_owned();
    (child, addr, rx)
}

/// `provd serve` on `db` and `prefix`, port 0, JSON logs on stderr.
fn serve_command(db: &TestDb, prefix: &str) -> Command {
    let services = services().expect("checked by the caller");
    let mut command = Command::new(env!("CARGO_BIN_EXE_provd"));
    command
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
        .stderr(Stdio::piped());
    command
}

/// Starts `provd serve` on port 0 and returns the child and its `provd listening` line.
fn spawn_listening(
    db: &TestDb,
    prefix: &str,
) -> (Child, serde_json::Value, mpsc::Receiver<String>) {
    let mut child = serve_command(db, prefix).spawn().expect("provd starts");
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
    let listening = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("provd logs its address before the deadline");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == "provd listening"
        {
            break v;
        }
    };
    (child, listening, rx)
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

#[tokio::test]
async fn serve_refuses_to_start_on_the_streams_of_another_deployment() {
    let Some(services) = services() else {
        return;
    };
    // Two deployments: two databases, one NATS prefix (standing for "no prefix").
    let (db_a, db_b) = (
        TestDb::create(&services).await,
        TestDb::create(&services).await,
    );
    let prefix = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (mut a, listening, _logs) = spawn_listening(&db_a, &prefix);
    let id_a = listening["deployment_id"]
        .as_str()
        .expect("the start-up line names the deployment")
        .to_owned();
    // Ready means A's streams exist (the bus probe makes them).
    let http = reqwest::Client::new();
    let ready = format!(
        "http://{}/readyz",
        listening["addr"].as_str().expect("addr")
    );
    common::eventually("A ready", Duration::from_secs(30), || async {
        let r = http.get(&ready).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let mut b = serve_command(&db_b, &prefix).spawn().expect("provd runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = b.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = b.kill();
            panic!("deployment B started on deployment A's streams");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut b.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    assert_eq!(exit.code(), Some(78), "a configuration error: {said}");
    let id_b: String = {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&db_b.url)
            .await
            .expect("B's db");
        sqlx::query_scalar("SELECT id::text FROM provd_deployment")
            .fetch_one(&mut conn)
            .await
            .expect("B's id")
    };
    assert_ne!(id_a, id_b);
    let refusal = said
        .lines()
        .find(|l| l.starts_with("provd: refusing to start"))
        .unwrap_or_else(|| panic!("no refusal on stderr: {said}"));
    for needle in [
        id_a.as_str(),
        id_b.as_str(),
        &format!("`{prefix}_"),
        "nats_prefix",
    ] {
        assert!(refusal.contains(needle), "{needle} in: {refusal}");
    }

    // A is untouched and still serves.
    assert_eq!(http.get(&ready).send().await.expect("readyz").status(), 200);
    let _ = a.kill();
    let _ = a.wait();
    let js =
        async_nats::jetstream::new(async_nats::connect(&services.nats_url).await.expect("nats"));
    for s in events::streams::ALL {
        let _ = js
            .delete_stream(events::Subjects::new(prefix.clone()).stream_name(&s))
            .await;
    }
    db_a.drop_db().await;
    db_b.drop_db().await;
}
