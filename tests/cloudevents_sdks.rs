//! Events produced by the official CloudEvents SDKs reach provd's ledger in every content
//! mode the bindings define: structured, binary and batch over HTTP (`POST /api/v1/events`,
//! both deployment modes, the Python and the JavaScript SDK), and structured and binary over
//! NATS (distributed mode, the Python SDK's messages published with nats-py).
//!
//! The SDKs and nats-py are installed at pinned versions by `.ci/tools` into
//! `tests/clients/cloudevents/`; the scripts there build each event with the SDK and send it
//! (`send_python.py`, `send-js.mjs`). Without them the tests are skipped, and under `CI=true`
//! they fail. Each test checks the ledger through `GET /api/v1/provcache/revocations`: an id
//! that is not a UUID is applied and keyed by `source` + `id` (a repeat is one row, the same
//! id from another source a second one), and a malformed event is refused naming its field
//! (HTTP 400) or, over NATS, recorded in `GET /api/v1/rejected`.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const SIGNER_REVOKED: &str = "dev.provd.signer.revoked.v1";
const INVALIDATE: &str = "dev.provd.invalidate.requested.v1";

/// One SDK: how to run its script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    Python,
    JavaScript,
}

impl Sdk {
    fn name(self) -> &'static str {
        match self {
            Sdk::Python => "python",
            Sdk::JavaScript => "js",
        }
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/cloudevents")
}

/// Whether both SDKs are installed; `false` (skip) outside CI when they are not.
fn sdks_present() -> bool {
    let dir = clients_dir();
    let mut missing = Vec::new();
    if !dir.join(".venv/bin/python").is_file() {
        missing.push("the Python SDK and nats-py (tests/clients/cloudevents/.venv)");
    }
    if !dir.join("node_modules/cloudevents/package.json").is_file() {
        missing.push("the JavaScript SDK (tests/clients/cloudevents/node_modules)");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "CloudEvents SDKs missing: {}; `bash .ci/tools` installs them",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: a missing client is a failure)");
    }
    eprintln!("skipping: {msg}");
    false
}

/// Runs one SDK's script on `plan`: one `{status, body}` per request.
async fn run(sdk: Sdk, plan: &Value) -> Vec<Value> {
    let dir = clients_dir();
    let mut cmd = match sdk {
        Sdk::Python => {
            let mut c = Command::new(dir.join(".venv/bin/python"));
            c.arg(dir.join("send_python.py"));
            c
        }
        Sdk::JavaScript => {
            let mut c = Command::new("node");
            c.arg(dir.join("send-js.mjs"));
            c
        }
    };
    cmd.current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = serde_json::to_vec(plan).expect("plan");
    // The script talks to this process's server: it runs off the async workers.
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("the SDK script starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("plan written");
        child.wait_with_output().expect("the SDK script runs")
    })
    .await
    .expect("the SDK script finishes");
    assert!(
        out.status.success(),
        "{} SDK script failed: {}",
        sdk.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} SDK script output: {e}: {}",
            sdk.name(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let want = plan["requests"].as_array().map_or(0, Vec::len);
    assert_eq!(results.len(), want, "one result per request");
    results
}

fn plan(t: &TestApp, requests: Vec<Value>) -> Value {
    json!({
        "url": t.base,
        "token": ADMIN_TOKEN,
        "nats_url": t.services.nats_url,
        "requests": requests,
    })
}

fn request(mode: &str, events: Vec<Value>) -> Value {
    json!({"via": "http", "mode": mode, "events": events})
}

fn revoke(source: &str, id: &str, key: &str) -> Value {
    json!({
        "id": id, "source": source, "type": SIGNER_REVOKED,
        "data": {"signer_key_id": key, "reason": "revoked by a CloudEvents SDK"},
    })
}

/// An explicit invalidation without its required `reason`.
fn malformed(source: &str, id: &str) -> Value {
    json!({
        "id": id, "source": source, "type": INVALIDATE,
        "data": {"veri_key": common::fresh_veri_key()},
    })
}

/// Every ledger row.
async fn ledger(t: &TestApp) -> Vec<Value> {
    let body: Value = t
        .http
        .get(t.url("/api/v1/provcache/revocations?since=0&limit=1000"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("revocations")
        .json()
        .await
        .expect("json");
    body["revocations"].as_array().expect("rows").clone()
}

/// The ledger rows revoking `key`, once there are at least `n`.
async fn rows_of(t: &TestApp, key: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} ledger rows of {key}"), WAIT, || async {
        let rows: Vec<Value> = ledger(t)
            .await
            .into_iter()
            .filter(|r| r["revoked_key"] == key)
            .collect();
        (rows.len() >= n).then_some(rows)
    })
    .await
}

/// The row of one event, checked against the key its `source` + `id` give.
async fn row_of(t: &TestApp, event: &Value) -> Value {
    let key = event["data"]["signer_key_id"].as_str().expect("key");
    let rows = rows_of(t, key, 1).await;
    assert_eq!(rows.len(), 1, "one row for {key}: {rows:?}");
    let source = event["source"].as_str().expect("source");
    let id = event["id"].as_str().expect("id");
    assert_eq!(rows[0]["source"], source);
    assert_eq!(
        rows[0]["revocation_id"],
        events::event_key(source, id).to_string(),
        "the revocation id is the event's key"
    );
    rows[0].clone()
}

fn accepted(result: &Value, what: &str) -> Value {
    assert_eq!(result["status"], 202, "{what}: {result}");
    serde_json::from_str(result["body"].as_str().expect("body")).expect("json body")
}

fn refused(result: &Value, what: &str, needles: &[&str]) {
    assert_eq!(result["status"], 400, "{what}: {result}");
    let body: Value = serde_json::from_str(result["body"].as_str().expect("body")).expect("json");
    let message = body["error"]["message"].as_str().expect("message");
    for n in needles {
        assert!(message.contains(n), "{what}: {message:?} names {n:?}");
    }
}

/// Structured, binary and batch events from one SDK over HTTP, with ids that are and are
/// not UUIDs, repeats, the same id from a second source, and malformed events.
async fn http_modes(t: &TestApp, sdk: Sdk) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let source = format!("/ce-sdk/{}", sdk.name());
    let other_source = format!("/ce-sdk/{}/other", sdk.name());
    let key = |what: &str| format!("ce-{}-{what}-{tag}", sdk.name());
    let structured = revoke(&source, &format!("structured {tag}"), &key("structured"));
    let mut binary = revoke(&source, &format!("binary-{tag}"), &key("binary"));
    // An extension attribute travels as its own `ce-` header and reaches the ledger.
    binary["correlationid"] = json!(format!("corr-{tag}"));
    let batch_uuid = revoke(&source, &uuid::Uuid::new_v4().to_string(), &key("batch-a"));
    let batch_text = revoke(&source, &format!("batch-{tag}"), &key("batch-b"));
    // The same id from another source is another event.
    let same_id = revoke(
        &other_source,
        &format!("structured {tag}"),
        &key("structured"),
    );
    let spared = revoke(&source, &format!("spared-{tag}"), &key("spared"));
    let last = revoke(&source, &format!("last-{tag}"), &key("last"));
    let results = run(
        sdk,
        &plan(
            t,
            vec![
                request("structured", vec![structured.clone()]),
                request("binary", vec![binary.clone()]),
                request("batch", vec![batch_uuid.clone(), batch_text.clone()]),
                request("structured", vec![structured.clone()]),
                request("binary", vec![binary.clone()]),
                request("structured", vec![same_id.clone()]),
                request(
                    "structured",
                    vec![malformed(&source, &format!("bad-s-{tag}"))],
                ),
                request("binary", vec![malformed(&source, &format!("bad-b-{tag}"))]),
                request(
                    "batch",
                    vec![
                        spared.clone(),
                        malformed(&source, &format!("bad-batch-{tag}")),
                    ],
                ),
                request("structured", vec![last.clone()]),
            ],
        ),
    )
    .await;
    let who = sdk.name();
    let one = accepted(&results[0], &format!("{who} structured"));
    assert_eq!(one["id"], structured["id"]);
    assert_eq!(one["type"], SIGNER_REVOKED);
    accepted(&results[1], &format!("{who} binary"));
    let batch = accepted(&results[2], &format!("{who} batch"));
    let listed: Vec<&Value> = batch["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(listed, vec![&batch_uuid["id"], &batch_text["id"]]);
    accepted(&results[3], &format!("{who} structured repeat"));
    accepted(&results[4], &format!("{who} binary repeat"));
    accepted(&results[5], &format!("{who} same id, other source"));
    refused(
        &results[6],
        &format!("{who} malformed structured"),
        &["`reason`"],
    );
    refused(
        &results[7],
        &format!("{who} malformed binary"),
        &["`reason`"],
    );
    refused(
        &results[8],
        &format!("{who} batch with a malformed event"),
        &["event [1]", "`reason`"],
    );
    accepted(&results[9], &format!("{who} last"));

    // Every accepted event is in the ledger, keyed by its source and id.
    let binary_row = row_of(t, &binary).await;
    assert_eq!(binary_row["correlation_id"], format!("corr-{tag}"));
    let uuid_row = row_of(t, &batch_uuid).await;
    assert_eq!(
        uuid_row["revocation_id"], batch_uuid["id"],
        "a UUID id is the revocation id"
    );
    row_of(t, &batch_text).await;
    row_of(t, &last).await;
    // The repeats were one event each; the other source's event with the same id another.
    let rows = rows_of(t, &key("structured"), 2).await;
    let mut sources: Vec<&str> = rows.iter().filter_map(|r| r["source"].as_str()).collect();
    sources.sort_unstable();
    assert_eq!(
        sources,
        vec![source.as_str(), other_source.as_str()],
        "{rows:?}"
    );
    let binary_rows = rows_of(t, &key("binary"), 1).await;
    assert_eq!(binary_rows.len(), 1, "a repeated binary event is one row");
    // The last event was sent after the refused batch and is applied: the refused batch's
    // good event was never published.
    assert!(
        ledger(t)
            .await
            .iter()
            .all(|r| r["revoked_key"] != key("spared")),
        "nothing of a refused batch is applied"
    );
}

both_modes! {
    /// Both SDKs' structured, binary and batch events over HTTP reach the ledger; ids that
    /// are not UUIDs are applied and deduplicated by source and id; malformed events are
    /// refused naming the field (and a batch's index), and a refused batch publishes nothing.
    async fn sdk_events_reach_the_ledger_over_http_in_every_mode() {
        if !sdks_present() {
            return;
        }
        let Some(t) = TestApp::start().await else {
            return;
        };
        http_modes(&t, Sdk::Python).await;
        http_modes(&t, Sdk::JavaScript).await;
        t.finish().await;
    }
}

/// The recorded rejection of `event_id`, once it is recorded.
async fn rejection(t: &TestApp, event_id: &str) -> Value {
    eventually(&format!("the rejection of {event_id}"), WAIT, || async {
        let body: Value = t
            .http
            .get(t.url("/api/v1/rejected?limit=1000"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["rejected"]
            .as_array()?
            .iter()
            .find(|r| r["event_id"] == event_id)
            .cloned()
    })
    .await
}

/// The Python SDK's structured bytes and binary headers + body, published with nats-py,
/// are consumed like provd's own events: applied (ids that are not UUIDs too, a repeat
/// once), and a malformed event in either mode is refused and recorded with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_events_over_nats_are_applied_or_recorded() {
    if !sdks_present() {
        return;
    }
    let Some(t) = TestApp::start().await else {
        return;
    };
    let prefix = &t.config.nats_prefix;
    let revoked = format!("{prefix}.prov.events.signer.revoked");
    let invalidate = format!("{prefix}.prov.events.invalidate");
    let nats = |mode: &str, subject: &str, event: &Value| json!({"via": "nats", "mode": mode, "subject": subject, "events": [event]});
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let source = "/ce-sdk/python/nats";
    let structured = revoke(
        source,
        &format!("nats structured {tag}"),
        &format!("n-s-{tag}"),
    );
    let mut binary = revoke(source, &format!("nats-binary-{tag}"), &format!("n-b-{tag}"));
    binary["correlationid"] = json!(format!("corr-{tag}"));
    let other = revoke(
        "/ce-sdk/python/nats/other",
        &format!("nats-binary-{tag}"),
        &format!("n-b-{tag}"),
    );
    let bad_structured = format!("nats-bad-s-{tag}");
    let bad_binary = format!("nats-bad-b-{tag}");
    // A binary message whose body is not JSON cannot become an event at the adapter.
    let unreadable = format!("nats-unreadable-{tag}");
    let unreadable_event = json!({
        "id": unreadable, "source": source, "type": SIGNER_REVOKED,
        "data_bytes": "{not json",
    });
    let results = run(
        Sdk::Python,
        &plan(
            &t,
            vec![
                nats("structured", &revoked, &structured),
                nats("binary", &revoked, &binary),
                nats("binary", &revoked, &binary),
                nats("structured", &revoked, &other),
                nats(
                    "structured",
                    &invalidate,
                    &malformed(source, &bad_structured),
                ),
                nats("binary", &invalidate, &malformed(source, &bad_binary)),
                nats("binary", &revoked, &unreadable_event),
            ],
        ),
    )
    .await;
    assert!(results.iter().all(|r| r["status"] == 0), "{results:?}");

    row_of(&t, &structured).await;
    let rows = rows_of(&t, &format!("n-b-{tag}"), 2).await;
    let mine: Vec<&Value> = rows.iter().filter(|r| r["source"] == source).collect();
    assert_eq!(
        mine.len(),
        1,
        "a repeated binary event is one row: {rows:?}"
    );
    assert_eq!(
        mine[0]["revocation_id"],
        events::event_key(source, binary["id"].as_str().unwrap()).to_string()
    );
    assert_eq!(mine[0]["correlation_id"], format!("corr-{tag}"));
    assert_eq!(rows.len(), 2, "the other source's event is a second row");

    for id in [&bad_structured, &bad_binary] {
        let r = rejection(&t, id).await;
        assert_eq!(r["reason"], "missing_field", "{r}");
        assert!(
            r["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("`reason`"),
            "the rejection names the field: {r}"
        );
    }
    let r = rejection(&t, &unreadable).await;
    assert_eq!(r["reason"], "invalid_json", "{r}");
    assert!(
        r["detail"].as_str().unwrap_or_default().contains("`data`"),
        "the rejection names the field: {r}"
    );
    t.finish().await;
}

/// The OpenAPI document tells what the route takes and answers: the three content types,
/// the binary-mode headers, and every status it can answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_route_documents_every_mode_and_status() {
    common::in_mode(common::Mode::Embedded, async {
        let Some(t) = TestApp::start().await else {
            return;
        };
        let doc: Value = t
            .http
            .get(t.url("/api/openapi.json"))
            .send()
            .await
            .expect("document")
            .json()
            .await
            .expect("json");
        let op = &doc["paths"]["/api/v1/events"]["post"];
        let content = op["requestBody"]["content"]
            .as_object()
            .expect("request content");
        for ct in [
            "application/cloudevents+json",
            "application/json",
            "application/cloudevents-batch+json",
        ] {
            assert!(content.contains_key(ct), "request body {ct}: {content:?}");
        }
        assert_eq!(
            content["application/cloudevents-batch+json"]["schema"]["type"],
            "array"
        );
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "header")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(headers.contains(&"ce-specversion"), "{headers:?}");
        let statuses: Vec<&String> = op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .collect();
        for s in ["202", "400", "401", "403", "413", "415", "503"] {
            assert!(
                statuses.iter().any(|k| k.as_str() == s),
                "status {s}: {statuses:?}"
            );
        }
        assert!(
            op["responses"]["202"]["content"]["application/json"]["schema"].is_object(),
            "{}",
            op["responses"]["202"]
        );
        let schemas = &doc["components"]["schemas"];
        assert!(
            schemas["InboundEvent"]["properties"]["type"].is_object(),
            "{}",
            schemas["InboundEvent"]
        );
        assert!(
            schemas["Accepted"]["oneOf"].is_array(),
            "{}",
            schemas["Accepted"]
        );
        t.finish().await;
    })
    .await;
}
