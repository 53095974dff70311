//! Embedded mode as a new user meets it: `provd serve` with no configuration at all, in an
//! empty directory, reaching no PostgreSQL, Redis or NATS (their URLs point at ports nothing
//! listens on, so a stray connection would fail). An entry is written, read, exported and
//! verified, then invalidated with the ledger row visible, through the API and the CLI; the
//! data survives a restart; and `POST /api/v1/events` is the way events come in.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{dead_port, eventually, fresh_veri_key};
use serde_json::{Value, json};

const TOKEN: &str = "embedded-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

struct Provd(Child);

impl Drop for Provd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `provd serve` as the README runs it: no flags but the port, in `dir`.
fn serve(dir: &Path, port: u16) -> Provd {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_provd"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROVD_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVD_ADMIN_TOKEN", TOKEN)
        .env("PROVD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start provd");
    Provd(child)
}

fn provd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run provd")
}

async fn ready(http: &reqwest::Client, base: &str, dir: &Path) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return r.json().await.expect("readyz json");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "provd did not become ready:\n{}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the ledger row of revocation `id`, read through the API.
async fn ledger_row(http: &reqwest::Client, base: &str, id: &Value) -> Value {
    eventually("the ledger row", WAIT, || async {
        let body: Value = http
            .get(format!("{base}/api/v1/provcache/revocations?since=0"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["revocations"]
            .as_array()?
            .iter()
            .find(|r| r["revocation_id"] == *id)
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_services_serve_runs_embedded_and_the_whole_path_works() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = dead_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let server = serve(dir.path(), port);
    let readyz = ready(&http, &base, dir.path()).await;

    // It says how it runs, and checks only what it runs on.
    let log = std::fs::read_to_string(dir.path().join("serve.log")).expect("log");
    for line in [
        "store: embedded: SQLite file ./provd-data/provd.db",
        "cache: embedded: the in-process tier only",
        "bus: embedded: the in-process bus",
    ] {
        assert!(log.contains(line), "{line:?} missing from:\n{log}");
    }
    assert!(dir.path().join("provd-data/provd.db").is_file());
    let services: Vec<&String> = readyz["services"]
        .as_object()
        .expect("services")
        .keys()
        .collect();
    assert_eq!(services, ["local-bus", "sqlite"], "{readyz}");

    // Evidence, then an entry naming it: written, read back.
    let evidence: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let manifest: Value = http
        .post(format!("{base}/api/v1/proofs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/octet-stream")
        .body(evidence)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("manifest");
    let root = manifest["proof_root"].as_str().expect("root").to_owned();
    let key = fresh_veri_key();
    let r = http
        .post(format!("{base}/api/v1/provcache/entries"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "veri_key": key,
            "verdict": {"decision": "allow"},
            "trust_score": 77,
            "proof_root": root,
            "policy_hash": "sha256:policy-embedded",
            "signer_set_hash": "sha256:signers",
            "signer_key_ids": ["key-embedded"],
            "ttl": "1h",
        }))
        .send()
        .await
        .expect("put");
    assert!(r.status() == 202 || r.status() == 201, "{}", r.status());
    let entry_url = format!("{base}/api/v1/provcache/entries/{key}");
    let got: Value = http
        .get(&entry_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["trust_score"], 77);

    // Flushed to the SQLite file: a restart serves it from there.
    eventually("the entry in the durable tier", WAIT, || async {
        let stats: Value = http
            .get(format!("{base}/api/v1/provcache/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (stats["entries"] == 1).then_some(())
    })
    .await;
    drop(server);
    let server = serve(dir.path(), port);
    ready(&http, &base, dir.path()).await;
    let r = http
        .get(&entry_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-provcache-tier"], "sqlite");

    // Exported with the CLI from the running server, verified offline.
    let bundle = dir.path().join("bundle.json");
    let out = provd(
        dir.path(),
        &[
            "export",
            "--server",
            &base,
            "--token",
            TOKEN,
            "--verikey",
            &key,
            "--density",
            "strict",
            "--output",
            bundle.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = provd(dir.path(), &["verify", bundle.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("complete"), "{text}");

    // A signer revocation from another system, through the events endpoint: the entry goes,
    // the ledger shows the row.
    let event = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "urn:example:pipeline",
        "type": "dev.provd.signer.revoked.v1",
        "time": "2026-11-22T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"signer_key_id": "key-embedded", "reason": "key compromised"},
    });
    let r = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(TOKEN)
        .json(&event)
        .send()
        .await
        .expect("event");
    assert_eq!(r.status(), 202);
    let row = ledger_row(&http, &base, &event["id"]).await;
    assert_eq!(row["revocation_type"], "signer");
    assert_eq!(row["entries_invalidated"], 1);
    eventually("the entry to be gone", WAIT, || async {
        let s = http
            .get(&entry_url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .status();
        (s == 404).then_some(())
    })
    .await;

    // From the command line too: `provd events publish` writes into the data directory's bus
    // from another process, and the running service picks it up.
    let policy_event = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "urn:example:policy-engine",
        "type": "dev.provd.policy.updated.v1",
        "time": "2026-11-22T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"old_policy_hash": "sha256:policy-cli", "new_policy_hash": "sha256:policy-cli-2"},
    });
    let file = dir.path().join("policy.json");
    std::fs::write(&file, serde_json::to_vec(&policy_event).expect("json")).expect("write");
    let out = provd(
        dir.path(),
        &["events", "publish", file.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{out:?}");
    ledger_row(&http, &base, &policy_event["id"]).await;

    // The same event again is the same event: one ledger row.
    let r = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(TOKEN)
        .json(&event)
        .send()
        .await
        .expect("event again");
    assert_eq!(r.status(), 202);
    let stats: Value = http
        .get(format!("{base}/api/v1/provcache/revocations/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["total_entries"], 2, "{stats}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_endpoint_refuses_what_provd_does_not_accept() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = dead_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let _server = serve(dir.path(), port);
    ready(&http, &base, dir.path()).await;
    let post = |body: Vec<u8>, token: Option<&'static str>| {
        let mut req = http
            .post(format!("{base}/api/v1/events"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.expect("post");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let ok = json!({
        "specversion": "1.0",
        "id": "01937a6e-2c1a-7d2e-9a53-6f7c8b1d2e41",
        "source": "urn:example:pipeline",
        "type": "dev.provd.policy.updated.v1",
        "datacontenttype": "application/json",
        "data": {"old_policy_hash": "sha256:p1", "new_policy_hash": "sha256:p2"},
    });
    // No token: refused before anything is read.
    let (status, _) = post(serde_json::to_vec(&ok).expect("json"), None).await;
    assert_eq!(status, 401);
    // Not JSON, an unknown type, provd's own outbound type, a payload missing its field.
    let mut unknown = ok.clone();
    unknown["type"] = json!("com.example.something.v1");
    let mut outbound = ok.clone();
    outbound["type"] = json!("dev.provd.ledger.revocation.recorded.v1");
    let mut missing = ok.clone();
    missing["data"] = json!({});
    for (body, needle) in [
        (b"{not json".to_vec(), "not an event provd accepts"),
        (
            serde_json::to_vec(&unknown).expect("json"),
            "com.example.something.v1",
        ),
        (
            serde_json::to_vec(&outbound).expect("json"),
            "provd publishes",
        ),
        (
            serde_json::to_vec(&missing).expect("json"),
            "old_policy_hash",
        ),
    ] {
        let (status, err) = post(body, Some(TOKEN)).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "bad_request", "{err}");
        let message = err["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let (status, body) = post(serde_json::to_vec(&ok).expect("json"), Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["subject"], "prov.events.policy.updated");
}
