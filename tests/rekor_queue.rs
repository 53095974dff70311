//! The Rekor submission path end to end, in both modes: provd (real PostgreSQL and NATS, or
//! SQLite and the in-process bus; its HTTP API and submission actor) against the local
//! Rekor-compatible log over real HTTP, for the v1 and the v2 API, with the log's fault modes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey, PublicKey};
use actors::domain::receipt::{Receipt, TransparencyLogEntry, TrustedLog};
use actors::ports::{RekorClient, RekorError, RekorSubmission};
use common::lab_log::LabLog;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually};
use futures::StreamExt;
use provd::adapters::rekor::build_backend;
use provd::config::RawRekor;
use provd::config::rekor::{RawRekorBackend, RawRekorQueue, RekorBackendConfig};
use provd::devlog::Faults;
use serde_json::{Value, json};

impl LabLog {
    fn trusted(&self, api: &str) -> TrustedLog {
        if api == "v1" {
            self.info.trusted_v1()
        } else {
            self.info.trusted_v2()
        }
    }

    /// The backend configuration for this log: no retries inside the client, so every
    /// failure reaches the queue, and a breaker that stays closed.
    fn backend(&self, api: &str) -> RawRekorBackend {
        RawRekorBackend {
            kind: Some("private".into()),
            api: Some(api.into()),
            url: Some(self.base.clone()),
            keys: Some(vec![if api == "v1" {
                self.info.v1_public_key_pem.clone()
            } else {
                self.info.v2_vkey.clone()
            }]),
            origin: Some(self.info.origin.clone()),
            max_attempts: Some(1),
            initial_backoff: Some("20ms".into()),
            breaker_threshold: Some(100_000),
            read_timeout: Some("5s".into()),
            // The log sync's reads would take their share of the fault bursts these tests
            // count on.
            sync_interval: Some("1h".into()),
            ..RawRekorBackend::default()
        }
    }

    fn rekor(&self, api: &str, max_attempts: u32) -> RawRekor {
        RawRekor {
            default_backend: Some("lab".into()),
            backends: [("lab".to_owned(), self.backend(api))].into(),
            queue: Some(RawRekorQueue {
                batch_size: Some(32),
                concurrency: Some(8),
                max_attempts: Some(max_attempts),
                ack_wait: Some("60s".into()),
            }),
        }
    }

    fn client(&self, api: &str) -> Arc<dyn RekorClient> {
        let config: RekorBackendConfig = self
            .rekor(api, 8)
            .validate()
            .expect("valid backend")
            .backends["lab"]
            .clone();
        build_backend(&config).expect("client builds")
    }
}

struct Signer {
    key: PrivateKey,
    pem: String,
}

impl Signer {
    fn new() -> Signer {
        let key = PrivateKey::generate(Algorithm::P256, &mut |buf: &mut [u8]| {
            getrandom::fill(buf).map_err(|e| e.to_string())
        })
        .expect("key");
        let pem = key.public_key().to_pem().expect("pem");
        Signer { key, pem }
    }

    fn envelope(&self, n: usize) -> Envelope {
        let payload = json!({"_type": "https://in-toto.io/Statement/v1", "n": n, "nonce": uuid::Uuid::new_v4()});
        Envelope::sign(
            "application/vnd.in-toto+json",
            payload.to_string().as_bytes(),
            &self.key,
            "",
        )
    }

    fn public(&self) -> PublicKey {
        self.key.public_key()
    }
}

async fn start_provd(log: &LabLog, api: &str, max_attempts: u32) -> Option<TestApp> {
    let rekor = log
        .rekor(api, max_attempts)
        .validate()
        .expect("valid rekor config");
    TestApp::start_with(move |c| c.rekor = rekor).await
}

impl TestApp {
    async fn submit(&self, signer: &Signer, envelope: &Envelope) -> (reqwest::StatusCode, Value) {
        let resp = self
            .http
            .post(self.url("/api/v1/rekor/submissions"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"envelope": envelope, "verifiers": [signer.pem]}))
            .send()
            .await
            .expect("submit");
        let status = resp.status();
        (status, resp.json().await.expect("json"))
    }

    async fn submission(&self, id: &str) -> Value {
        self.http
            .get(self.url(&format!("/api/v1/rekor/submissions/{id}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("get submission")
            .json()
            .await
            .expect("json")
    }

    async fn until_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        eventually(&format!("submission {id} {status}"), timeout, || async {
            let s = self.submission(id).await;
            (s["status"] == status).then_some(s)
        })
        .await
    }

    async fn count_submissions(&self, status: &str) -> i64 {
        assert!(status.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'));
        self.query_i64(&format!(
            "SELECT count(*) FROM rekor_submissions WHERE status = '{status}'"
        ))
        .await
    }
}

fn receipt_of(value: &Value) -> Receipt {
    let tle: TransparencyLogEntry =
        serde_json::from_value(value["transparency_log_entry"].clone()).expect("bundle form");
    Receipt::from_tle(&tle).expect("receipt")
}

/// The seed's first four steps, for one API version: submit and get an index and UUID; read
/// the entry back by index and UUID with every field intact; verify its inclusion against
/// the signed checkpoint; queue a submission while the log fails, and see it retried and
/// logged.
async fn seed_steps(api: &str) {
    let log = LabLog::start().await;
    let signer = Signer::new();
    let client = log.client(api);
    let trusted = log.trusted(api);

    // 1. Submit straight to the log.
    let submission = RekorSubmission {
        envelope: signer.envelope(0),
        verifiers: vec![signer.public()],
    };
    let receipt = client.submit(&submission).await.expect("logged");
    assert_eq!(receipt.log_index, 0, "first entry of a fresh log");
    let uuid = receipt.uuid();
    assert_eq!(uuid.len(), 64);
    assert_eq!(receipt.integrated_time.is_some(), api == "v1");

    // 2. Read it back by index and, on v1, by UUID and entry ID: every field intact.
    let by_index = client
        .entry_by_index(receipt.log_index)
        .await
        .expect("by index");
    assert_eq!(by_index.canonical_body, receipt.canonical_body);
    assert_eq!(by_index.log_id, receipt.log_id);
    assert_eq!(by_index.log_index, receipt.log_index);
    assert_eq!(by_index.integrated_time, receipt.integrated_time);
    let proof = by_index.inclusion_proof.as_ref().expect("inclusion proof");
    assert!(proof.checkpoint.is_some(), "signed checkpoint");
    if api == "v1" {
        assert!(by_index.signed_entry_timestamp.is_some(), "SET");
        for id in [uuid.clone(), receipt.entry_id()] {
            let by_uuid = client.entry_by_uuid(&id).await.expect("by uuid");
            assert_eq!(by_uuid.canonical_body, receipt.canonical_body);
            assert_eq!(by_uuid.log_index, receipt.log_index);
            assert_eq!(by_uuid.integrated_time, receipt.integrated_time);
        }
    } else {
        assert!(matches!(
            client.entry_by_uuid(&uuid).await,
            Err(RekorError::Unsupported(_))
        ));
    }

    // 3. The inclusion proof verifies against the signed checkpoint with the log's key.
    for r in [&receipt, &by_index] {
        let verified = r.verify(&trusted).expect("verifies");
        assert!(verified.checkpoint.size > r.log_index);
    }
    let mut tampered = receipt.clone();
    tampered.canonical_body.push(b' ');
    assert!(tampered.verify(&trusted).is_err(), "a changed body fails");

    // 4. Through provd's queue while the log answers 503 twice.
    let Some(app) = start_provd(&log, api, 8).await else {
        return;
    };
    log.set_faults(&Faults {
        fail_next: 2,
        fail_status: 503,
        retry_after_secs: 1,
        ..Faults::default()
    })
    .await;
    let envelope = signer.envelope(1);
    let (status, queued) = app.submit(&signer, &envelope).await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["id"].as_str().expect("id").to_owned();
    // The same request again is the same submission.
    let (again_status, again) = app.submit(&signer, &envelope).await;
    assert_eq!(again["id"], id.as_str());
    assert!(again_status == 200 || again_status == 202, "{again}");
    let done = app
        .until_status(&id, "logged", Duration::from_secs(60))
        .await;
    assert!(
        done["attempts"].as_u64().expect("attempts") >= 2,
        "retried after the 503s: {done}"
    );
    let stored = receipt_of(&done["receipt"]);
    stored.verify(&trusted).expect("stored receipt verifies");
    assert_eq!(stored.log_index, 1);

    // The stored receipt by its UUID, in the bundle form verify-bundle checks.
    let uuid = done["entry_uuid"].as_str().expect("uuid");
    let entry: Value = app
        .http
        .get(app.url(&format!("/api/v1/rekor/entries/{uuid}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("entry")
        .json()
        .await
        .expect("json");
    assert_eq!(entry["submission_id"], id.as_str());
    receipt_of(&entry).verify(&trusted).expect("verifies");
    assert_eq!(app.count_submissions("logged").await, 1);
    app.finish().await;
}

both_modes! {
async fn v1_submit_read_back_verify_and_retry_through_the_queue() {
    seed_steps("v1").await;
}
}

both_modes! {
async fn v2_submit_read_back_verify_and_retry_through_the_queue() {
    seed_steps("v2").await;
}
}

/// With every write's answer lost after the log committed it, 200 submissions end as 200
/// receipts and the log holds exactly 200 entries.
async fn lost_answers(api: &str) {
    const N: usize = 200;
    let log = LabLog::start().await;
    let Some(app) = start_provd(&log, api, 20).await else {
        return;
    };
    log.set_faults(&Faults {
        drop_next_writes: N as u32,
        ..Faults::default()
    })
    .await;
    let signer = Signer::new();
    let envelopes: Vec<Envelope> = (0..N).map(|n| signer.envelope(n)).collect();
    let ids: Vec<String> = futures::stream::iter(&envelopes)
        .map(|e| async {
            let (status, body) = app.submit(&signer, e).await;
            assert_eq!(status, 202, "{body}");
            body["id"].as_str().expect("id").to_owned()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(ids.len(), N);
    eventually(
        "every submission logged",
        Duration::from_secs(180),
        || async { (app.count_submissions("logged").await == N as i64).then_some(()) },
    )
    .await;
    let entries = app.query_i64("SELECT count(*) FROM rekor_entries").await;
    let distinct = app
        .query_i64("SELECT count(DISTINCT log_index) FROM rekor_entries")
        .await;
    assert_eq!((entries, distinct), (N as i64, N as i64));
    let checkpoint = log.client(api).checkpoint().await.expect("checkpoint");
    assert_eq!(
        checkpoint.checkpoint.size, N as u64,
        "no duplicate, none lost"
    );
    // The lost answers were really lost: every write was committed, then dropped once.
    let faults: Faults = log
        .http
        .get(format!("{}/__faults", log.base))
        .send()
        .await
        .expect("faults")
        .json()
        .await
        .expect("json");
    assert_eq!(faults.drop_next_writes, 0, "all drops were used");
    app.finish().await;
}

both_modes! {
async fn v1_lost_answers_make_no_duplicates() {
    lost_answers("v1").await;
}
}

both_modes! {
async fn v2_lost_answers_make_no_duplicates() {
    lost_answers("v2").await;
}
}

both_modes! {
/// With the log down past `max_attempts`, submissions end dead-lettered with the last error;
/// once the log is back, the operator's retry logs them.
async fn dead_lettered_while_the_log_is_down_then_logged_on_retry() {
    let log = LabLog::start().await;
    let Some(app) = start_provd(&log, "v1", 2).await else {
        return;
    };
    log.set_faults(&Faults {
        down: true,
        retry_after_secs: 1,
        ..Faults::default()
    })
    .await;
    let signer = Signer::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = app.submit(&signer, &signer.envelope(n)).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let dead = app
            .until_status(id, "dead_lettered", Duration::from_secs(60))
            .await;
        assert_eq!(dead["attempts"], 2, "{dead}");
        let err = dead["last_error"].as_str().expect("last error");
        assert!(
            err.contains("gave up after 2 attempts") && err.contains("503"),
            "{err}"
        );
        assert!(dead["receipt"].is_null());
    }
    // Retrying needs the admin scope.
    let resp = app
        .http
        .post(app.url(&format!("/api/v1/rekor/submissions/{}/retry", ids[0])))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("retry");
    assert_eq!(resp.status(), 403);

    log.set_faults(&Faults::default()).await;
    for id in &ids {
        let resp = app
            .http
            .post(app.url(&format!("/api/v1/rekor/submissions/{id}/retry")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("retry");
        assert_eq!(resp.status(), 202);
    }
    for id in &ids {
        let done = app
            .until_status(id, "logged", Duration::from_secs(60))
            .await;
        receipt_of(&done["receipt"])
            .verify(&log.trusted("v1"))
            .expect("verifies");
    }
    // A logged submission cannot be retried; an unknown one is not found.
    let resp = app
        .http
        .post(app.url(&format!("/api/v1/rekor/submissions/{}/retry", ids[0])))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("retry");
    assert_eq!(resp.status(), 409);
    let resp = app
        .http
        .post(app.url("/api/v1/rekor/submissions/sub-nothing/retry"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("retry");
    assert_eq!(resp.status(), 404);
    let checkpoint = log.client("v1").checkpoint().await.expect("checkpoint");
    assert_eq!(checkpoint.checkpoint.size, 3);
    app.finish().await;
}
}

both_modes! {
/// A bad signature is a permanent failure: dead-lettered at once with the log's message.
/// Malformed requests are refused by the API with the field named.
async fn bad_requests_are_refused_and_bad_signatures_dead_letter_at_once() {
    let log = LabLog::start().await;
    let Some(app) = start_provd(&log, "v1", 8).await else {
        return;
    };
    let signer = Signer::new();
    let other = Signer::new();
    // Signed by one key, verified with another: the log refuses it.
    let (status, body) = app.submit(&other, &signer.envelope(0)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id");
    let dead = app
        .until_status(id, "dead_lettered", Duration::from_secs(30))
        .await;
    assert_eq!(dead["attempts"], 1, "not retried: {dead}");
    // The client checks the signature before sending, as the log would, and says so.
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no envelope signature verifies")),
        "{dead}"
    );
    assert_eq!(
        log.client("v1")
            .checkpoint()
            .await
            .expect("checkpoint")
            .checkpoint
            .size,
        0
    );

    for (body, field) in [
        (
            json!({"envelope": {"payload": 1}, "verifiers": [signer.pem]}),
            "envelope",
        ),
        (
            json!({"envelope": signer.envelope(1), "verifiers": []}),
            "verifiers",
        ),
        (
            json!({"envelope": signer.envelope(1), "verifiers": ["nope"]}),
            "verifiers[0]",
        ),
        (
            json!({"envelope": signer.envelope(1), "verifiers": [signer.pem], "backend": "elsewhere"}),
            "elsewhere",
        ),
    ] {
        let resp = app
            .http
            .post(app.url("/api/v1/rekor/submissions"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.expect("json");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{err}"
        );
    }
    // Without a token: 401; with a read-only token: 403.
    let resp = app
        .http
        .post(app.url("/api/v1/rekor/submissions"))
        .json(&json!({}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 401);
    let resp = app
        .http
        .post(app.url("/api/v1/rekor/submissions"))
        .bearer_auth(READ_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 403);
    app.finish().await;
}
}

both_modes! {
/// Another system queues a submission as a CloudEvent on `rekor.submissions.requested` (or
/// through the events endpoint, embedded), and
/// `provd rekor submit --wait` does it through the API; both end logged.
async fn submissions_arrive_as_events_and_from_the_cli() {
    let log = LabLog::start().await;
    let Some(app) = start_provd(&log, "v1", 8).await else {
        return;
    };
    let signer = Signer::new();
    let envelope = signer.envelope(0);
    let event = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "/ci/pipeline",
        "type": "dev.provd.rekor.submission.requested.v1",
        "datacontenttype": "application/json",
        "data": {"envelope": envelope, "verifier_keys": [signer.pem]}
    });
    // Ready means the streams exist, so a plain NATS publisher finds its stream.
    eventually("ready", Duration::from_secs(30), || async {
        let r = app.http.get(app.url("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    // Through NATS in distributed mode, through `POST /api/v1/events` in embedded mode.
    common::publish(&app, "rekor.submissions.requested", &event).await;
    let id = actors::domain::submission::submission_id("lab", &envelope);
    app.until_status(&id, "logged", Duration::from_secs(30))
        .await;

    // The CLI, through the running provd.
    let dir = tempfile::tempdir().expect("tempdir");
    let env_path = dir.path().join("envelope.json");
    std::fs::write(&env_path, signer.envelope(1).to_json()).expect("write");
    let pem_path = dir.path().join("signer.pub.pem");
    std::fs::write(&pem_path, &signer.pem).expect("write");
    let out = cli_submit(&app.base, &env_path, &pem_path).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(printed["status"], "logged", "{printed}");
    receipt_of(&printed["receipt"])
        .verify(&log.trusted("v1"))
        .expect("verifies");
    app.finish().await;
}
}

async fn cli_submit(base: &str, envelope: &Path, pem: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_provd"));
    cmd.args(["rekor", "submit"])
        .arg(envelope)
        .arg("--verifier")
        .arg(pem)
        .args(["--server", base, "--token", ADMIN_TOKEN, "--wait", "--json"])
        .args(["--timeout", "60s"]);
    tokio::task::spawn_blocking(move || cmd.output().expect("provd runs"))
        .await
        .expect("joined")
}

both_modes! {
/// `POST /api/v1/events` runs the consumers' own checks: a submission request the submitter
/// would reject, or an invalidation the invalidator would reject, is a 400 naming the field
/// at the door, and nothing reaches the queue.
async fn the_events_endpoint_refuses_what_a_consumer_would_reject() {
    let log = LabLog::start().await;
    let Some(app) = start_provd(&log, "v1", 8).await else {
        return;
    };
    let signer = Signer::new();
    let envelope = serde_json::to_value(signer.envelope(0)).expect("json");
    let mut unsigned = envelope.clone();
    unsigned["signatures"] = json!([]);
    let submission = |data: Value| {
        json!({
            "specversion": "1.0",
            "id": uuid::Uuid::now_v7().to_string(),
            "source": "/ci/pipeline",
            "type": "dev.provd.rekor.submission.requested.v1",
            "datacontenttype": "application/json",
            "data": data,
        })
    };
    let cases = [
        (
            submission(json!({"envelope": envelope, "verifier_keys": [signer.pem], "backend": "nowhere"})),
            "backend",
        ),
        (
            submission(json!({"envelope": envelope, "verifier_keys": ["not a key"]})),
            "verifier_keys[0]",
        ),
        (
            submission(json!({"envelope": envelope, "verifier_keys": []})),
            "verifier_keys",
        ),
        (
            submission(json!({"envelope": unsigned, "verifier_keys": [signer.pem]})),
            "envelope",
        ),
        (
            json!({
                "specversion": "1.0",
                "id": uuid::Uuid::now_v7().to_string(),
                "source": "/ci/pipeline",
                "type": "dev.provd.invalidate.requested.v1",
                "datacontenttype": "application/json",
                "data": {"feed_epoch_before": "garbage", "reason": "bad epoch"},
            }),
            "feed_epoch_before",
        ),
    ];
    for (event, field) in &cases {
        let resp = app
            .http
            .post(app.url("/api/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(event)
            .send()
            .await
            .expect("post");
        let status = resp.status();
        let body: Value = resp.json().await.expect("json");
        assert_eq!(status, 400, "{field}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("`{field}")), "{field}: {msg}");
    }
    // The same request, well formed, is accepted and logged.
    let good = submission(json!({"envelope": envelope, "verifier_keys": [signer.pem]}));
    let resp = app
        .http
        .post(app.url("/api/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&good)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let sent: Envelope = serde_json::from_value(envelope.clone()).expect("envelope");
    let id = actors::domain::submission::submission_id("lab", &sent);
    app.until_status(&id, "logged", Duration::from_secs(30)).await;
    assert_eq!(
        app.query_i64("SELECT count(*) FROM provcache.prov_rejected_events").await,
        0,
        "nothing was rejected by a consumer"
    );
    app.finish().await;
}
}
