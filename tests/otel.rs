//! OpenTelemetry traces across the actor system and across nodes: two real `provd serve`
//! processes (one deployment: a database, Redis and NATS of the test's own) export their
//! spans over OTLP/HTTP to a receiver this test runs on the official OTLP protobuf
//! definitions (`opentelemetry-proto`). The OpenTelemetry Collector is not in the package
//! registries this project installs from, so the receiver decodes the requests itself.
//!
//! * A submission sent with a caller's W3C `traceparent` is one trace: the HTTP request (a
//!   child of the caller's span), the queue publish, the submitter's attempt and the call to
//!   the log, each the parent of the next.
//! * An invalidation's trace goes from the HTTP request through the publish, the
//!   invalidator and the ledger outbox to the ledger purge on both nodes.

mod common;
mod ops_support;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{ADMIN_TOKEN, TestDb, eventually, services};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use ops_support::{LabLog, submission_body};
use prost::Message;
use serde_json::{Value, json};

/// How long a trace may take to arrive: spans are exported in batches every 5 s.
const WAIT: Duration = Duration::from_secs(60);

/// One received span.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    /// `service.instance.id` of the process that sent it (the node id).
    node: String,
}

/// The spans received so far.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    fn all(&self) -> Vec<Span> {
        self.0.lock().expect("lock").clone()
    }

    /// The spans of one trace.
    fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.all()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

/// `POST /v1/traces`: an OTLP/HTTP protobuf export request.
async fn export(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = received.0.lock().expect("lock");
    for rs in request.resource_spans {
        let node = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.instance.id")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                // Shown when the test fails.
                eprintln!(
                    "span {:?} trace {} id {} parent {} node {node}",
                    s.name,
                    hex::encode(&s.trace_id),
                    hex::encode(&s.span_id),
                    hex::encode(&s.parent_span_id)
                );
                spans.push(Span {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    name: s.name,
                    node: node.clone(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// Starts the receiver; returns its base URL.
async fn receiver(received: Received) -> String {
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A `provd serve` process and its address; killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `provd serve` with `config` (a TOML file) and `env`; waits for its address.
async fn start_node(config: &std::path::Path, env: &[(&str, String)]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provd"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PROVD_LOG_FORMAT", "json")
        .env("PROVD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("provd starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Reads its log on a thread of its own (and keeps draining it, so it never blocks on a
    // full pipe); the listening line gives the address port 0 became.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] == "provd listening"
                && let (Some(tx), Some(addr)) = (tx.take(), v["addr"].as_str())
            {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = tokio::time::timeout(WAIT, rx)
        .await
        .ok()
        .and_then(Result::ok);
    let mut node = Node {
        child,
        base: String::new(),
    };
    node.base = format!("http://{}", addr.expect("provd reports its address"));
    node
}

/// The chain of `names` in `spans`: each the parent of the next; returns the spans.
fn chain<'a>(spans: &'a [Span], names: &[String]) -> Option<Vec<&'a Span>> {
    let mut out: Vec<&Span> = Vec::new();
    for name in names {
        let next = spans.iter().find(|s| {
            s.name == *name && out.last().is_none_or(|parent| s.parent == parent.span_id)
        })?;
        out.push(next);
    }
    Some(out)
}

#[tokio::test]
async fn a_submission_and_an_invalidation_are_each_one_trace_across_the_queue_and_both_nodes() {
    let Some(services) = services() else {
        return;
    };
    let received = Received::default();
    let endpoint = receiver(received.clone()).await;
    let log = LabLog::start().await;
    let db = TestDb::create(&services).await;
    let short = &uuid::Uuid::new_v4().simple().to_string()[..12];

    #[derive(serde::Serialize)]
    struct Doc {
        rekor: provd::config::RawRekor,
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("provd.toml");
    std::fs::write(
        &config,
        toml::to_string(&Doc { rekor: log.rekor() }).expect("toml"),
    )
    .expect("write config");
    let shared = |node: &str| {
        vec![
            ("PROVD_LISTEN", "127.0.0.1:0".to_owned()),
            ("PROVD_NODE_ID", format!("{node}-{short}")),
            ("PROVD_DATABASE_URL", db.url.clone()),
            ("PROVD_REDIS_URL", services.redis_url.clone()),
            ("PROVD_NATS_URL", services.nats_url.clone()),
            ("PROVD_NATS_PREFIX", format!("o{short}")),
            ("PROVD_REDIS_PREFIX", format!("o{short}:")),
            ("PROVD_NATS_STREAM_MAX_BYTES", "67108864".to_owned()),
            ("PROVD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("PROVD_OTEL_ENDPOINT", endpoint.clone()),
        ]
    };
    let a = start_node(&config, &shared("a")).await;
    let b = start_node(&config, &shared("b")).await;
    let http = reqwest::Client::new();
    for node in [&a, &b] {
        eventually("the node is ready", WAIT, || async {
            let r = http
                .get(format!("{}/readyz", node.base))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    // A submission, from a caller whose own span is given in `traceparent`.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = http
        .post(format!("{}/api/v1/rekor/submissions", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&submission_body())
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    eventually("the submission is logged", WAIT, || async {
        let s: Value = http
            .get(format!("{}/api/v1/rekor/submissions/{id}", a.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["status"] == "logged").then_some(())
    })
    .await;
    // Publish spans name the subject as published (with the deployment's prefix).
    let publish = |subject: &str| format!("publish o{short}.{subject}");
    let names = [
        "POST /api/v1/rekor/submissions".to_owned(),
        publish("rekor.submissions.requested"),
        "submission attempt".to_owned(),
        "log call".to_owned(),
    ];
    let submission = eventually("the submission's trace", WAIT, || async {
        let spans = received.trace(caller_trace);
        chain(&spans, &names).map(|c| c.into_iter().cloned().collect::<Vec<_>>())
    })
    .await;
    assert_eq!(
        submission[0].parent, caller_span,
        "the request is the caller's span's child"
    );
    assert!(
        submission.iter().all(|s| s.trace_id == caller_trace),
        "{submission:?}"
    );

    // An invalidation on node a reaches the ledger purge of both nodes in one trace.
    let r = http
        .post(format!("{}/api/v1/provcache/invalidate", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"signer_set_hash": "sha256:otel-test", "reason": "trace test"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(r.status(), 202);
    let trace_id = eventually("the invalidation's HTTP span", WAIT, || async {
        received
            .all()
            .into_iter()
            .find(|s| s.name == "POST /api/v1/provcache/invalidate")
            .map(|s| s.trace_id)
    })
    .await;
    let purges = eventually(
        "the purge on both nodes, in the same trace",
        WAIT,
        || async {
            let spans = received.trace(&trace_id);
            let by_id: HashMap<&str, &Span> =
                spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
            let purges: Vec<&Span> = spans.iter().filter(|s| s.name == "ledger purge").collect();
            let nodes: Vec<&str> = purges.iter().map(|s| s.node.as_str()).collect();
            if !(nodes.contains(&format!("a-{short}").as_str())
                && nodes.contains(&format!("b-{short}").as_str()))
            {
                return None;
            }
            // Each purge's ancestors, up to the request: publish, outbox, invalidator, publish.
            let ancestry: Vec<Vec<String>> = purges
                .iter()
                .map(|p| {
                    let mut names = Vec::new();
                    let mut at = by_id.get(p.parent.as_str());
                    while let Some(s) = at {
                        names.push(s.name.clone());
                        at = by_id.get(s.parent.as_str());
                    }
                    names
                })
                .collect();
            Some(ancestry)
        },
    )
    .await;
    for ancestors in &purges {
        assert_eq!(
            ancestors,
            &[
                publish("prov.ledger.revocations"),
                "ledger outbox".to_owned(),
                "invalidate prov.events.invalidate".to_owned(),
                publish("prov.events.invalidate"),
                "POST /api/v1/provcache/invalidate".to_owned(),
            ],
            "each node's purge descends from the request"
        );
    }

    drop(a);
    drop(b);
    db.drop_db().await;
}
