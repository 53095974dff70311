//! The transparency-log clients over real HTTP: Rekor v1 and v2 answers built from the real
//! responses in `../shared/vectors` (and tampered copies), small Rekor-shaped servers backed
//! by the domain's Merkle and note code for submissions, the resilient wrapper's retry and
//! breaker behaviour, the stub, and `provd rekor get|checkpoint` as a user runs them.

mod common;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey, PublicKey};
use actors::domain::merkle::{self, Hash};
use actors::domain::note::{Checkpoint, Signer, sign_note};
use actors::domain::receipt::{InclusionProof, Receipt, V1LogEntry};
use actors::domain::sigstore::Bundle;
use actors::domain::tiles::{self, Tile, TileKind};
use actors::ports::{RekorClient, RekorError, RekorSubmission};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use provd::adapters::rekor::stub::StubLog;
use provd::adapters::rekor::v1::V1Client;
use provd::adapters::rekor::v2::V2Client;
use provd::adapters::rekor::{build_backend, build_backends};
use provd::config::rekor::{RawRekorBackend, RekorBackendConfig};
use provd::config::{RawRekor, RekorConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Helpers.

fn vectors() -> PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: set PROVD_VECTORS_DIR",
        dir.display()
    );
    dir
}

fn vector(rel: &str) -> PathBuf {
    vectors().join(rel)
}

/// Serves `router` on a fresh local port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// One validated backend from TOML-like settings.
fn backend_config(
    name: &str,
    api: &str,
    url: &str,
    keys: Vec<String>,
    origin: &str,
    tweak: impl FnOnce(&mut RawRekorBackend),
) -> RekorBackendConfig {
    let mut raw = RawRekorBackend {
        kind: Some("private".into()),
        api: Some(api.into()),
        url: Some(url.into()),
        keys: Some(keys),
        origin: Some(origin.into()),
        ..RawRekorBackend::default()
    };
    tweak(&mut raw);
    let config = RawRekor {
        default_backend: None,
        backends: [(name.to_owned(), raw)].into(),
        queue: None,
    }
    .validate()
    .expect("valid backend config");
    config.backends[name].clone()
}

fn p256_key(seed: u8) -> PrivateKey {
    let mut n = seed;
    PrivateKey::generate(Algorithm::P256, &mut |b: &mut [u8]| {
        for x in b.iter_mut() {
            n = n.wrapping_mul(31).wrapping_add(7);
            *x = n;
        }
        Ok(())
    })
    .expect("key")
}

fn ed25519_key(seed: u8) -> PrivateKey {
    PrivateKey::generate(Algorithm::Ed25519, &mut |b: &mut [u8]| {
        b.fill(seed);
        Ok(())
    })
    .expect("key")
}

fn submission(key: &PrivateKey, payload: &str) -> RekorSubmission {
    RekorSubmission {
        envelope: Envelope::sign("application/vnd.in-toto+json", payload.as_bytes(), key, ""),
        verifiers: vec![key.public_key()],
    }
}

fn is_unverified<T: std::fmt::Debug>(r: &Result<T, RekorError>) -> bool {
    matches!(r, Err(RekorError::Unverified(_)))
}

fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    common::metric_value(&provd::telemetry::metrics().render(), name, labels)
}

// ---------------------------------------------------------------------------------------------
// A scripted HTTP server: answers per "METHOD path?query" from a queue (the last answer
// repeats), records every request.

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn answer(status: u16, body: impl Into<Vec<u8>>) -> Answer {
    Answer {
        status,
        headers: vec![],
        body: body.into(),
    }
}

#[derive(Default)]
struct Script {
    routes: Mutex<HashMap<String, VecDeque<Answer>>>,
    hits: Mutex<Vec<(String, Instant, Vec<u8>)>>,
}

impl Script {
    fn set(&self, route: &str, answers: Vec<Answer>) {
        self.routes
            .lock()
            .unwrap()
            .insert(route.to_owned(), answers.into());
    }

    fn hits(&self, route: &str) -> Vec<(Instant, Vec<u8>)> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _, _)| r == route)
            .map(|(_, t, b)| (*t, b.clone()))
            .collect()
    }
}

async fn scripted(State(script): State<Arc<Script>>, request: Request) -> Response {
    let route = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let body = axum::body::to_bytes(request.into_body(), 1 << 24)
        .await
        .unwrap_or_default();
    script
        .hits
        .lock()
        .unwrap()
        .push((route.clone(), Instant::now(), body.to_vec()));
    let answer = {
        let mut routes = script.routes.lock().unwrap();
        match routes.get_mut(&route) {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().cloned(),
            None => None,
        }
    };
    let Some(a) = answer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = Response::new(Body::from(a.body));
    *response.status_mut() = StatusCode::from_u16(a.status).unwrap();
    for (k, v) in a.headers {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

async fn script_server() -> (Arc<Script>, String) {
    let script = Arc::new(Script::default());
    let url = serve(Router::new().fallback(scripted).with_state(script.clone())).await;
    (script, url)
}

// ---------------------------------------------------------------------------------------------
// Rekor v1 with real production data.

/// The real entry of conformance `happy-path-v0.3` in the Rekor v1 REST form.
fn prod_v1_entry() -> (String, V1LogEntry, Receipt) {
    let bundle = Bundle::from_json(
        &std::fs::read(vector(
            "sigstore-conformance/happy-path-v0.3/bundle.sigstore.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let receipt = Receipt::from_tle(&bundle.tlog_entries[0]).unwrap();
    let (id, entry) = receipt.to_v1();
    (id, entry, receipt)
}

fn prod_v1_backend(url: &str) -> RekorBackendConfig {
    backend_config(
        "prod-v1",
        "v1",
        url,
        vec![
            vector("rekor-prod-keys/rekor.sigstore.dev.pub.pem")
                .display()
                .to_string(),
        ],
        "rekor.sigstore.dev",
        |_| {},
    )
}

fn prod_log_info() -> Vec<u8> {
    let note = std::fs::read_to_string(vector(
        "rekor-prod-keys/prod_v1_checkpoint_tree2605736670972794746_size79317123.txt",
    ))
    .unwrap();
    let cp = Checkpoint::parse(&note[..note.rfind("\n\n").unwrap() + 1]).unwrap();
    serde_json::to_vec(&json!({
        "rootHash": hex::encode(cp.root),
        "treeSize": cp.size,
        "signedTreeHead": note,
        "treeID": "2605736670972794746",
        "inactiveShards": [],
    }))
    .unwrap()
}

#[tokio::test]
async fn v1_reads_and_verifies_real_production_entries_and_checkpoints() {
    let (id, entry, real) = prod_v1_entry();
    let uuid = &id[16..];
    let body = serde_json::to_vec(&json!({ &id: entry })).unwrap();
    let (script, url) = script_server().await;
    script.set(
        &format!("GET /api/v1/log/entries?logIndex={}", real.log_index),
        vec![answer(200, body.clone())],
    );
    script.set(
        &format!("GET /api/v1/log/entries/{uuid}"),
        vec![answer(200, body.clone())],
    );
    script.set("GET /api/v1/log", vec![answer(200, prod_log_info())]);
    let client = V1Client::new(&prod_v1_backend(&url)).unwrap();

    // By virtual index: the proof inside uses the shard-local index.
    let got = client
        .entry_by_index(real.log_index)
        .await
        .expect("verifies");
    assert_eq!(got, real);
    assert_eq!(got.log_index, 79_571_823);
    assert_eq!(got.inclusion_proof.as_ref().unwrap().log_index, 75_408_392);
    assert_eq!(got.integrated_time, Some(1_710_869_186));
    assert_eq!(got.entry_id(), id);
    // By UUID and by entry ID.
    assert_eq!(client.entry_by_uuid(uuid).await.unwrap(), real);
    script.set(
        &format!("GET /api/v1/log/entries/{id}"),
        vec![answer(200, body.clone())],
    );
    assert_eq!(client.entry_by_uuid(&id).await.unwrap(), real);
    // The production signed tree head.
    let cp = client.checkpoint().await.expect("checkpoint verifies");
    assert_eq!(
        cp.checkpoint.origin,
        "rekor.sigstore.dev - 2605736670972794746"
    );
    assert_eq!(cp.checkpoint.size, 79_317_123);

    // A log that answers for another index, or a missing one.
    assert!(matches!(
        client.entry_by_index(5).await,
        Err(RekorError::NotFound(_))
    ));
    script.set(
        "GET /api/v1/log/entries?logIndex=5",
        vec![answer(200, body.clone())],
    );
    assert!(is_unverified(&client.entry_by_index(5).await));
    assert!(matches!(
        client.entry_by_uuid("not-hex").await,
        Err(RekorError::Invalid(_))
    ));
}

#[tokio::test]
async fn v1_rejects_tampered_production_answers() {
    let (id, entry, real) = prod_v1_entry();
    let (script, url) = script_server().await;
    let client = V1Client::new(&prod_v1_backend(&url)).unwrap();
    let route = format!("GET /api/v1/log/entries?logIndex={}", real.log_index);
    type Tamper = fn(&mut V1LogEntry);
    let tampers: [(&str, Tamper); 5] = [
        ("integrated time (SET)", |e| e.integrated_time += 1),
        ("proof hash", |e| {
            let p = e
                .verification
                .as_mut()
                .unwrap()
                .inclusion_proof
                .as_mut()
                .unwrap();
            p.hashes[0] = hex::encode([7u8; 32]);
        }),
        ("checkpoint signature", |e| {
            let p = e
                .verification
                .as_mut()
                .unwrap()
                .inclusion_proof
                .as_mut()
                .unwrap();
            let cp = p.checkpoint.as_mut().unwrap();
            let at = cp.len() - 10;
            let c = if &cp[at..at + 1] == "A" { "B" } else { "A" };
            cp.replace_range(at..at + 1, c);
        }),
        ("log ID", |e| e.log_id = hex::encode([1u8; 32])),
        ("no proof", |e| {
            e.verification.as_mut().unwrap().inclusion_proof = None
        }),
    ];
    for (what, tamper) in tampers {
        let mut e = entry.clone();
        tamper(&mut e);
        script.set(
            &route,
            vec![answer(200, serde_json::to_vec(&json!({ &id: e })).unwrap())],
        );
        let got = client.entry_by_index(real.log_index).await;
        assert!(is_unverified(&got), "{what}: {got:?}");
    }
    // The real entry still verifies, and the real v1 entry verifies through receipt_from too.
    let body = serde_json::to_vec(&json!({ &id: entry })).unwrap();
    assert_eq!(client.receipt_from(&body).unwrap().1, real);
    // A checkpoint whose log info disagrees with its signed tree head.
    let mut info: Value = serde_json::from_slice(&prod_log_info()).unwrap();
    info["treeSize"] = json!(79_317_124u64);
    script.set(
        "GET /api/v1/log",
        vec![answer(200, serde_json::to_vec(&info).unwrap())],
    );
    assert!(is_unverified(&client.checkpoint().await));
    // A checkpoint from a key the backend does not trust.
    let other = backend_config(
        "other",
        "v1",
        &url,
        vec![p256_key(3).public_key().to_pem().unwrap()],
        "rekor.sigstore.dev",
        |_| {},
    );
    script.set("GET /api/v1/log", vec![answer(200, prod_log_info())]);
    let untrusting = V1Client::new(&other).unwrap();
    assert!(is_unverified(&untrusting.checkpoint().await));
}

// ---------------------------------------------------------------------------------------------
// Rekor v1 submissions against a Rekor-shaped server backed by the stub's log.

struct V1Server {
    log: StubLog,
    /// Commit the next submission, then answer 500 as if the response was lost.
    drop_next: AtomicBool,
    posts: AtomicUsize,
}

fn v1_entry_json(r: &Receipt) -> Vec<u8> {
    let (id, e) = r.to_v1();
    serde_json::to_vec(&json!({ id: e })).unwrap()
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn rekor_error(e: RekorError) -> Response {
    match e {
        RekorError::NotFound(_) => StatusCode::NOT_FOUND.into_response(),
        other => json_response(
            400,
            serde_json::to_vec(&json!({"code": 400, "message": other.to_string()})).unwrap(),
        ),
    }
}

async fn v1_handler(State(s): State<Arc<V1Server>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 24)
        .await
        .unwrap_or_default();
    let param = |name: &str| -> Option<u64> {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/api/v1/log/entries") => {
            s.posts.fetch_add(1, Ordering::SeqCst);
            let v: Value = serde_json::from_slice(&body).unwrap();
            if v["kind"] != "dsse" {
                return rekor_error(RekorError::Invalid("this test log takes dsse".into()));
            }
            let content = &v["spec"]["proposedContent"];
            let envelope =
                Envelope::from_json(content["envelope"].as_str().unwrap().as_bytes()).unwrap();
            let verifiers = content["verifiers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let pem = String::from_utf8(B64.decode(k.as_str().unwrap()).unwrap()).unwrap();
                    PublicKey::from_pem(&pem).unwrap()
                })
                .collect();
            let before = s.log.len();
            let receipt = match s
                .log
                .submit(&RekorSubmission {
                    envelope,
                    verifiers,
                })
                .await
            {
                Ok(r) => r,
                Err(e) => return rekor_error(e),
            };
            if s.log.len() == before {
                let mut r = json_response(
                    409,
                    serde_json::to_vec(&json!({"code": 409, "message": format!("an equivalent entry already exists in the transparency log with UUID {}", receipt.entry_id())})).unwrap(),
                );
                r.headers_mut().insert(
                    "location",
                    format!("/api/v1/log/entries/{}", receipt.entry_id())
                        .parse()
                        .unwrap(),
                );
                return r;
            }
            if s.drop_next.swap(false, Ordering::SeqCst) {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            json_response(201, v1_entry_json(&receipt))
        }
        ("GET", "/api/v1/log/entries") => {
            match s.log.entry_by_index(param("logIndex").unwrap()).await {
                Ok(r) => json_response(200, v1_entry_json(&r)),
                Err(e) => rekor_error(e),
            }
        }
        ("GET", "/api/v1/log") => {
            let cp = s.log.checkpoint().await.unwrap();
            json_response(
                200,
                serde_json::to_vec(&json!({"rootHash": hex::encode(cp.checkpoint.root), "treeSize": cp.checkpoint.size, "signedTreeHead": cp.note, "treeID": "1"})).unwrap(),
            )
        }
        ("GET", "/api/v1/log/proof") => {
            match s
                .log
                .consistency_proof(param("firstSize").unwrap_or(1), param("lastSize").unwrap())
                .await
            {
                Ok(p) => json_response(
                    200,
                    serde_json::to_vec(&json!({"rootHash": "", "hashes": p.iter().map(hex::encode).collect::<Vec<_>>()})).unwrap(),
                ),
                Err(e) => rekor_error(e),
            }
        }
        ("GET", p) if p.starts_with("/api/v1/log/entries/") => {
            match s
                .log
                .entry_by_uuid(&p["/api/v1/log/entries/".len()..])
                .await
            {
                Ok(r) => json_response(200, v1_entry_json(&r)),
                Err(e) => rekor_error(e),
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn v1_server() -> (Arc<V1Server>, RekorBackendConfig) {
    let server = Arc::new(V1Server {
        log: StubLog::new("backing", "v1.test.local"),
        drop_next: AtomicBool::new(false),
        posts: AtomicUsize::new(0),
    });
    let url = serve(
        Router::new()
            .fallback(v1_handler)
            .with_state(server.clone()),
    )
    .await;
    let key = server.log.trusted_log().key.to_pem().unwrap();
    let config = backend_config("v1-local", "v1", &url, vec![key], "v1.test.local", |b| {
        b.initial_backoff = Some("10ms".into());
        b.max_backoff = Some("50ms".into());
    });
    (server, config)
}

#[tokio::test]
async fn v1_submit_logs_once_and_a_duplicate_is_the_same_entry() {
    let (server, config) = v1_server().await;
    let client = build_backend(&config).unwrap();
    let signer = p256_key(1);
    let first = client
        .submit(&submission(&signer, "{\"n\":1}"))
        .await
        .expect("logged");
    let trusted = server.log.trusted_log();
    first
        .verify(&trusted)
        .expect("receipt verifies with domain code");
    assert_eq!(first.log_index, 0);
    // The same envelope again: 409 + Location, read back, same entry.
    let again = client
        .submit(&submission(&signer, "{\"n\":1}"))
        .await
        .expect("409 is success");
    assert_eq!(again.uuid(), first.uuid());
    assert_eq!(again.log_index, 0);
    assert_eq!(server.log.len(), 1);
    // Reads, consistency.
    let second = client
        .submit(&submission(&signer, "{\"n\":2}"))
        .await
        .unwrap();
    assert_eq!(second.log_index, 1);
    let cp = client.checkpoint().await.unwrap();
    assert_eq!(cp.checkpoint.size, 2);
    assert_eq!(
        client.entry_by_uuid(&first.uuid()).await.unwrap().uuid(),
        first.uuid()
    );
    assert_eq!(
        client.entry_by_index(1).await.unwrap().uuid(),
        second.uuid()
    );
    let proof = client.consistency_proof(1, 2).await.unwrap();
    let old_root = first.inclusion_proof.as_ref().unwrap().root_hash;
    merkle::verify_consistency(1, 2, &proof, &old_root, &cp.checkpoint.root).unwrap();
    assert!(matches!(
        client.entry_by_index(9).await,
        Err(RekorError::NotFound(_))
    ));
}

#[tokio::test]
async fn v1_lost_response_is_retried_into_a_409_and_one_entry() {
    let (server, config) = v1_server().await;
    let client = build_backend(&config).unwrap();
    server.drop_next.store(true, Ordering::SeqCst);
    let receipt = client
        .submit(&submission(&p256_key(2), "{\"lost\":true}"))
        .await
        .expect("the retry finds the committed entry");
    receipt.verify(&server.log.trusted_log()).unwrap();
    assert_eq!(server.posts.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(server.log.len(), 1, "exactly one entry");
}

#[tokio::test]
async fn v1_refuses_bad_submissions_locally_and_sends_hashedrekord_when_configured() {
    let (server, config) = v1_server().await;
    let client = build_backend(&config).unwrap();
    // A verifier that did not sign: refused before anything is sent.
    let mut bad = submission(&p256_key(4), "{}");
    bad.verifiers = vec![p256_key(5).public_key()];
    assert!(matches!(
        client.submit(&bad).await,
        Err(RekorError::Invalid(_))
    ));
    assert_eq!(server.posts.load(Ordering::SeqCst), 0);

    // hashedrekord: the request carries sha256(PAE), the signature and the PEM key; a 400
    // is a rejection with the log's message and is not retried.
    let (script, url) = script_server().await;
    script.set(
        "POST /api/v1/log/entries",
        vec![answer(
            400,
            r#"{"code":400,"message":"entry algorithms are not allowed"}"#,
        )],
    );
    let config = backend_config(
        "hr",
        "v1",
        &url,
        vec![p256_key(9).public_key().to_pem().unwrap()],
        "x.test",
        |b| b.entry_kind = Some("hashedrekord".into()),
    );
    let client = build_backend(&config).unwrap();
    let signer = p256_key(6);
    let sub = submission(&signer, "{\"a\":1}");
    let err = client.submit(&sub).await.unwrap_err();
    assert_eq!(
        err,
        RekorError::Rejected {
            status: 400,
            message: "entry algorithms are not allowed".into()
        }
    );
    let hits = script.hits("POST /api/v1/log/entries");
    assert_eq!(hits.len(), 1, "a 400 is never retried");
    let sent: Value = serde_json::from_slice(&hits[0].1).unwrap();
    assert_eq!(sent["kind"], "hashedrekord");
    assert_eq!(sent["apiVersion"], "0.0.1");
    assert_eq!(
        sent["spec"]["data"]["hash"]["value"],
        hex::encode(Sha256::digest(sub.envelope.pae().unwrap()))
    );
    let pem = B64
        .decode(
            sent["spec"]["signature"]["publicKey"]["content"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        PublicKey::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap(),
        signer.public_key()
    );
    assert_eq!(
        sent["spec"]["signature"]["content"],
        sub.envelope.signatures[0].sig
    );
}

// ---------------------------------------------------------------------------------------------
// Rekor v2: the real tile log, the real v2 entry, and a Rekor v2-shaped server.

/// Serves a directory as a tile log: `/checkpoint` and `/tile/...`.
async fn dir_server(dir: PathBuf) -> String {
    let handler = move |request: Request| {
        let dir = dir.clone();
        async move {
            let path = request.uri().path().trim_start_matches('/').to_owned();
            if path.contains("..") {
                return StatusCode::BAD_REQUEST.into_response();
            }
            match std::fs::read(dir.join(&path)) {
                Ok(bytes) if dir.join(&path).is_file() => bytes.into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    serve(Router::new().fallback(handler)).await
}

fn tessera_backend(url: &str) -> RekorBackendConfig {
    let vkey = std::fs::read_to_string(vector("tessera-testdata-log/log.vkey.txt")).unwrap();
    backend_config(
        "tessera",
        "v2",
        url,
        vec![vkey.trim().to_owned()],
        "example.com/log/testdata",
        |_| {},
    )
}

fn tessera_checkpoint(n: u64) -> Checkpoint {
    let note =
        std::fs::read_to_string(vector(&format!("tessera-testdata-log/checkpoint.{n}"))).unwrap();
    let text = &note[..note.rfind("\n\n").unwrap() + 1];
    Checkpoint::parse(text).unwrap()
}

#[tokio::test]
async fn v2_reads_the_real_tile_log_through_tiles() {
    let url = dir_server(vector("tessera-testdata-log")).await;
    let client = V2Client::new(&tessera_backend(&url)).unwrap();
    let cp = client.checkpoint().await.expect("real checkpoint verifies");
    assert_eq!(cp.checkpoint.size, 15);
    for index in 0..15 {
        let receipt = client.entry_by_index(index).await.expect("entry verifies");
        assert_eq!(receipt.log_index, index);
        let proof = receipt.inclusion_proof.as_ref().unwrap();
        assert_eq!(proof.tree_size, 15);
        assert_eq!(proof.root_hash, cp.checkpoint.root);
    }
    assert!(matches!(
        client.entry_by_index(15).await,
        Err(RekorError::NotFound(_))
    ));
    // Proofs in older trees against the real older checkpoints.
    for (old, new) in [(1, 15), (5, 15), (7, 10)] {
        let proof = client.consistency_proof(old, new).await.unwrap();
        merkle::verify_consistency(
            old,
            new,
            &proof,
            &tessera_checkpoint(old).root,
            &tessera_checkpoint(new).root,
        )
        .unwrap();
    }
    let proof = client.inclusion_proof(3, Some(10)).await.unwrap();
    assert_eq!(proof.root_hash, tessera_checkpoint(10).root);
    assert!(
        proof.checkpoint.is_none(),
        "no signed checkpoint for size 10"
    );
    assert!(matches!(
        client.entry_by_uuid(&"0".repeat(64)).await,
        Err(RekorError::Unsupported(_))
    ));
}

#[tokio::test]
async fn v2_rejects_tampered_tiles_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let src = vector("tessera-testdata-log");
    copy_dir(&src, tmp.path());
    let url = dir_server(tmp.path().to_owned()).await;
    let client = V2Client::new(&tessera_backend(&url)).unwrap();
    // A changed entry: its leaf no longer leads to the signed root.
    let bundle = tmp.path().join("tile/entries/000.p/15");
    let original = std::fs::read(&bundle).unwrap();
    let mut bytes = original.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    assert!(is_unverified(&client.entry_by_index(14).await));
    std::fs::write(&bundle, &original).unwrap();
    // A changed hash tile.
    let tile = tmp.path().join("tile/0/000.p/15");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&tile, &bytes).unwrap();
    assert!(is_unverified(&client.entry_by_index(3).await));
    // A checkpoint with a changed size.
    let cp = std::fs::read_to_string(tmp.path().join("checkpoint")).unwrap();
    std::fs::write(
        tmp.path().join("checkpoint"),
        cp.replacen("\n15\n", "\n16\n", 1),
    )
    .unwrap();
    assert!(is_unverified(&client.checkpoint().await));
    // Restored, it verifies again.
    std::fs::write(tmp.path().join("checkpoint"), cp).unwrap();
    std::fs::write(&tile, std::fs::read(src.join("tile/0/000.p/15")).unwrap()).unwrap();
    assert_eq!(client.checkpoint().await.unwrap().checkpoint.size, 15);
    assert_eq!(client.entry_by_index(3).await.unwrap().log_index, 3);
    // A checkpoint signed for another origin is not this log's: a vkey under another name
    // is refused at load, and the configured origin is required of every checkpoint.
    let vkey = std::fs::read_to_string(vector("tessera-testdata-log/log.vkey.txt")).unwrap();
    let err = RawRekor {
        default_backend: None,
        queue: None,
        backends: [(
            "t".to_owned(),
            RawRekorBackend {
                kind: Some("private".into()),
                api: Some("v2".into()),
                url: Some(url.clone()),
                keys: Some(vec![vkey.trim().to_owned()]),
                origin: Some("example.com/other".into()),
                ..RawRekorBackend::default()
            },
        )]
        .into(),
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("rekor.backends.t.keys[0]"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn v2_parses_and_verifies_the_real_rekor_v2_entry() {
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(vector(
            "sigstore-conformance/rekor2-happy-path/bundle.sigstore.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let tle = &bundle["verificationMaterial"]["tlogEntries"][0];
    let config = backend_config(
        "staging-v2",
        "v2",
        "https://log2025-alpha1.rekor.sigstage.dev",
        vec![],
        "log2025-alpha1.rekor.sigstage.dev",
        |b| {
            b.keys = None;
            b.trusted_root = Some(
                vector("sigstore-conformance/rekor2-happy-path/trusted_root.json")
                    .display()
                    .to_string(),
            );
        },
    );
    let client = V2Client::new(&config).unwrap();
    let receipt = client
        .receipt_from(&serde_json::to_vec(tle).unwrap())
        .expect("the real Rekor v2 entry verifies");
    assert_eq!(receipt.log_index, 735);
    assert_eq!(receipt.integrated_time, None);
    // Tampered copies are unverified.
    let mut t = tle.clone();
    t["inclusionProof"]["hashes"][0] = json!(B64.encode([0u8; 32]));
    assert!(is_unverified(
        &client.receipt_from(&serde_json::to_vec(&t).unwrap())
    ));
    let mut t = tle.clone();
    t["logIndex"] = json!("734");
    t["inclusionProof"]["logIndex"] = json!("734");
    assert!(is_unverified(
        &client.receipt_from(&serde_json::to_vec(&t).unwrap())
    ));

    // The production Rekor v2 key ID from its vkey is the trusted root's log ID.
    let prod = backend_config(
        "prod-v2",
        "v2",
        "https://log2025-1.rekor.sigstore.dev",
        vec![
            vector("rekor-prod-keys/log2025-1.rekor.sigstore.dev.vkey.txt")
                .display()
                .to_string(),
        ],
        "log2025-1.rekor.sigstore.dev",
        |_| {},
    );
    assert_eq!(
        B64.encode(&prod.keys[0].log_id),
        "zxGZFVvd0FEmjR8WrFwMdcAJ9vtaY/QXf44Y1wUeP6A="
    );
}

/// A Rekor v2-shaped log: hashedrekord writes, 409 with `x-log-index`, C2SP tiles for
/// reads. Partial tiles are served only at their current width, as Tessera does.
struct V2Server {
    signer: Signer,
    log_id: Vec<u8>,
    bodies: Mutex<Vec<Vec<u8>>>,
    /// Serve the checkpoint of this size instead of the latest.
    stale_size: Mutex<Option<u64>>,
    posts: AtomicUsize,
}

impl V2Server {
    fn leaves(&self) -> Vec<Hash> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| merkle::leaf_hash(b))
            .collect()
    }

    fn checkpoint(&self, size: u64) -> String {
        let leaves = self.leaves();
        let cp = Checkpoint {
            origin: self.signer.verifier().name().to_owned(),
            size,
            root: merkle::root_from_leaf_hashes(&leaves[..size as usize]),
            extensions: vec![],
        };
        sign_note(&cp.to_text(), &[&self.signer]).unwrap()
    }
}

async fn v2_handler(
    State(s): State<Arc<V2Server>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let _ = headers;
    let method = request.method().clone();
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 24)
        .await
        .unwrap_or_default();
    match (method.as_str(), path.as_str()) {
        ("POST", "api/v2/log/entries") => {
            s.posts.fetch_add(1, Ordering::SeqCst);
            let v: Value = serde_json::from_slice(&body).unwrap();
            let req = &v["hashedRekordRequestV002"];
            let entry = json!({"apiVersion": "0.0.2", "kind": "hashedrekord", "spec": {"hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": req["digest"]},
                "signature": req["signature"],
            }}});
            let entry = serde_json::to_vec(&entry).unwrap();
            let leaf = merkle::leaf_hash(&entry);
            let existing = s.leaves().iter().position(|l| *l == leaf);
            if let Some(i) = existing {
                let mut r = json_response(
                    409,
                    br#"{"code":6,"message":"an equivalent entry already exists"}"#.to_vec(),
                );
                r.headers_mut()
                    .insert("x-log-index", i.to_string().parse().unwrap());
                return r;
            }
            let index = {
                let mut bodies = s.bodies.lock().unwrap();
                bodies.push(entry.clone());
                bodies.len() as u64 - 1
            };
            let leaves = s.leaves();
            let size = leaves.len() as u64;
            let receipt = Receipt {
                log_id: s.log_id.clone(),
                log_index: index,
                tree_id: None,
                integrated_time: None,
                kind_version: None,
                canonical_body: entry,
                inclusion_proof: Some(InclusionProof {
                    log_index: index,
                    tree_size: size,
                    root_hash: merkle::root_from_leaf_hashes(&leaves),
                    hashes: merkle::inclusion_proof(&leaves, index).unwrap(),
                    checkpoint: Some(s.checkpoint(size)),
                }),
                signed_entry_timestamp: None,
            };
            json_response(201, serde_json::to_vec(&receipt.to_tle()).unwrap())
        }
        ("GET", "checkpoint") => {
            let size = s
                .stale_size
                .lock()
                .unwrap()
                .unwrap_or(s.leaves().len() as u64);
            s.checkpoint(size).into_response()
        }
        ("GET", p) if p.starts_with("tile/") => {
            let Ok(tile) = Tile::parse(p) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let leaves = s.leaves();
            let size = leaves.len() as u64;
            let level = match tile.kind() {
                TileKind::Hash(l) => l,
                TileKind::Entries => 0,
            };
            // Only the tile as it is now: full, or partial at today's width.
            if tiles::tile_width(level, tile.index(), size) != Some(tile.width()) {
                return StatusCode::NOT_FOUND.into_response();
            }
            let span = 256u64.pow(u32::from(level));
            let first = tile.index() * 256;
            match tile.kind() {
                TileKind::Hash(_) => {
                    let mut out = Vec::new();
                    for i in first..first + u64::from(tile.width()) {
                        let range = &leaves[(i * span) as usize..((i + 1) * span) as usize];
                        out.extend_from_slice(&merkle::root_from_leaf_hashes(range));
                    }
                    out.into_response()
                }
                TileKind::Entries => {
                    let bodies = s.bodies.lock().unwrap();
                    let slice = &bodies[first as usize..(first + u64::from(tile.width())) as usize];
                    tiles::encode_entry_bundle(slice).unwrap().into_response()
                }
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn v2_server(prefill: usize) -> (Arc<V2Server>, RekorBackendConfig) {
    let signer = Signer::new("v2.test.local", ed25519_key(42)).unwrap();
    let server = Arc::new(V2Server {
        log_id: signer.verifier().key_id().to_vec(),
        signer,
        bodies: Mutex::new(
            (0..prefill)
                .map(|i| format!("entry {i}").into_bytes())
                .collect(),
        ),
        stale_size: Mutex::new(None),
        posts: AtomicUsize::new(0),
    });
    let url = serve(
        Router::new()
            .fallback(v2_handler)
            .with_state(server.clone()),
    )
    .await;
    let config = backend_config(
        "v2-local",
        "v2",
        &url,
        vec![server.signer.verifier().to_vkey()],
        "v2.test.local",
        |_| {},
    );
    (server, config)
}

#[tokio::test]
async fn v2_submit_duplicate_and_ed25519_refusal() {
    let (server, config) = v2_server(3).await;
    let client = build_backend(&config).unwrap();
    let signer = p256_key(7);
    let sub = submission(&signer, "{\"v2\":1}");
    let receipt = client.submit(&sub).await.expect("logged");
    assert_eq!(receipt.log_index, 3);
    assert_eq!(receipt.integrated_time, None);
    let body: Value = serde_json::from_slice(&receipt.canonical_body).unwrap();
    assert_eq!(
        body["spec"]["hashedRekordV002"]["data"]["digest"],
        B64.encode(Sha256::digest(sub.envelope.pae().unwrap()))
    );
    assert_eq!(
        body["spec"]["hashedRekordV002"]["signature"]["verifier"]["keyDetails"],
        "PKIX_ECDSA_P256_SHA_256"
    );
    // 409 + x-log-index: read back through tiles.
    let again = client.submit(&sub).await.expect("409 is success");
    assert_eq!(again.log_index, 3);
    assert_eq!(again.uuid(), receipt.uuid());
    assert_eq!(server.bodies.lock().unwrap().len(), 4);
    // Ed25519 is refused before anything is sent.
    let posts = server.posts.load(Ordering::SeqCst);
    let err = client
        .submit(&submission(&ed25519_key(8), "{}"))
        .await
        .unwrap_err();
    match err {
        RekorError::Invalid(m) => assert!(m.contains("Ed25519"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(server.posts.load(Ordering::SeqCst), posts);
}

#[tokio::test]
async fn v2_falls_back_from_a_missing_partial_tile_to_the_full_one() {
    // 300 entries; the log serves a stale checkpoint of size 100, whose partial tiles
    // `000.p/100` are gone because tile 000 is full now.
    let (server, config) = v2_server(300).await;
    *server.stale_size.lock().unwrap() = Some(100);
    let client = build_backend(&config).unwrap();
    let receipt = client.entry_by_index(42).await.expect("via the full tile");
    assert_eq!(receipt.canonical_body, b"entry 42");
    assert_eq!(receipt.inclusion_proof.as_ref().unwrap().tree_size, 100);
    // At the latest size, tile 1 is partial (44 entries) and served.
    *server.stale_size.lock().unwrap() = None;
    let receipt = client.entry_by_index(299).await.unwrap();
    assert_eq!(receipt.canonical_body, b"entry 299");
    let proof = client.consistency_proof(100, 300).await.unwrap();
    let leaves = server.leaves();
    merkle::verify_consistency(
        100,
        300,
        &proof,
        &merkle::root_from_leaf_hashes(&leaves[..100]),
        &merkle::root_from_leaf_hashes(&leaves),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The resilient wrapper against scripted answers.

fn signed_log_info(key: &PrivateKey) -> Vec<u8> {
    let signer = Signer::new("r.test", key.clone()).unwrap();
    let cp = Checkpoint {
        origin: "r.test".into(),
        size: 1,
        root: merkle::leaf_hash(b"x"),
        extensions: vec![],
    };
    serde_json::to_vec(&json!({
        "rootHash": hex::encode(cp.root),
        "treeSize": 1,
        "signedTreeHead": sign_note(&cp.to_text(), &[&signer]).unwrap(),
        "treeID": "1",
    }))
    .unwrap()
}

fn resilient_backend(
    name: &str,
    url: &str,
    key: &PrivateKey,
    tweak: impl FnOnce(&mut RawRekorBackend),
) -> Arc<dyn RekorClient> {
    let config = backend_config(
        name,
        "v1",
        url,
        vec![key.public_key().to_pem().unwrap()],
        "r.test",
        |b| {
            b.initial_backoff = Some("5ms".into());
            b.max_backoff = Some("20ms".into());
            tweak(b);
        },
    );
    build_backend(&config).unwrap()
}

fn with_retry_after(mut a: Answer, secs: u64) -> Answer {
    a.headers.push(("retry-after", secs.to_string()));
    a
}

#[tokio::test]
async fn wrapper_retries_transient_answers_and_counts_every_attempt() {
    // The service installs the recorder at start; metrics recorded before it are lost.
    let _ = provd::telemetry::metrics();
    let key = p256_key(11);
    let (script, url) = script_server().await;
    script.set(
        "GET /api/v1/log",
        vec![
            answer(503, "overloaded"),
            answer(429, ""),
            answer(200, signed_log_info(&key)),
        ],
    );
    let client = resilient_backend("retry-ok", &url, &key, |_| {});
    let cp = client.checkpoint().await.expect("third attempt succeeds");
    assert_eq!(cp.checkpoint.size, 1);
    assert_eq!(script.hits("GET /api/v1/log").len(), 3);
    let labels = |o| [("backend", "retry-ok"), ("outcome", o)];
    assert_eq!(
        metric("provd_rekor_requests_total", &labels("transient")),
        2.0
    );
    assert_eq!(metric("provd_rekor_requests_total", &labels("ok")), 1.0);
    assert_eq!(
        metric(
            "provd_rekor_request_duration_seconds_count",
            &[("backend", "retry-ok")]
        ),
        3.0
    );

    // 408 and 5xx, at most max_attempts.
    script.set(
        "GET /api/v1/log",
        vec![answer(408, ""), answer(500, "boom")],
    );
    let client = resilient_backend("retry-give-up", &url, &key, |b| b.max_attempts = Some(2));
    let before = script.hits("GET /api/v1/log").len();
    let err = client.checkpoint().await.unwrap_err();
    assert!(matches!(err, RekorError::Transient { .. }), "{err:?}");
    assert_eq!(script.hits("GET /api/v1/log").len() - before, 2);

    // Connection refused is transient and retried too.
    let dead = format!("http://127.0.0.1:{}", common::dead_port());
    let client = resilient_backend("retry-dead", &dead, &key, |_| {});
    assert!(matches!(
        client.checkpoint().await,
        Err(RekorError::Transient { .. })
    ));
    assert_eq!(
        metric(
            "provd_rekor_requests_total",
            &[("backend", "retry-dead"), ("outcome", "transient")]
        ),
        3.0
    );
}

#[tokio::test]
async fn wrapper_never_retries_other_4xx() {
    let key = p256_key(12);
    let (script, url) = script_server().await;
    for status in [400u16, 401, 403, 413, 422] {
        let route = "GET /api/v1/log";
        script.set(route, vec![answer(status, r#"{"code":1,"message":"no"}"#)]);
        let before = script.hits(route).len();
        let client = resilient_backend(&format!("no-retry-{status}"), &url, &key, |_| {});
        let err = client.checkpoint().await.unwrap_err();
        assert_eq!(
            err,
            RekorError::Rejected {
                status,
                message: "no".into()
            }
        );
        assert_eq!(script.hits(route).len() - before, 1, "{status} not retried");
    }
}

#[tokio::test]
async fn wrapper_honours_retry_after_and_hands_long_waits_back() {
    let key = p256_key(13);
    let (script, url) = script_server().await;
    script.set(
        "GET /api/v1/log",
        vec![
            with_retry_after(answer(503, ""), 1),
            answer(200, signed_log_info(&key)),
        ],
    );
    let client = resilient_backend("retry-after", &url, &key, |_| {});
    client.checkpoint().await.expect("second attempt");
    let hits = script.hits("GET /api/v1/log");
    assert_eq!(hits.len(), 2);
    assert!(
        hits[1].0 - hits[0].0 >= Duration::from_secs(1),
        "the retry waited for Retry-After, not the 5 ms backoff"
    );

    // A Retry-After beyond the budget is not slept through: the caller gets it back.
    script.set(
        "GET /api/v1/log",
        vec![with_retry_after(answer(429, ""), 120)],
    );
    let before = script.hits("GET /api/v1/log").len();
    let client = resilient_backend("retry-after-long", &url, &key, |_| {});
    match client.checkpoint().await {
        Err(RekorError::Transient { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)))
        }
        other => panic!("expected transient, got {other:?}"),
    }
    assert_eq!(script.hits("GET /api/v1/log").len() - before, 1);
}

#[tokio::test]
async fn wrapper_breaker_opens_then_half_opens_with_one_probe() {
    // The service installs the recorder at start; metrics recorded before it are lost.
    let _ = provd::telemetry::metrics();
    let key = p256_key(14);
    let (script, url) = script_server().await;
    let route = "GET /api/v1/log";
    script.set(route, vec![answer(503, "")]);
    let client = resilient_backend("breaker", &url, &key, |b| {
        b.max_attempts = Some(1);
        b.breaker_threshold = Some(2);
        b.breaker_cool_down = Some("300ms".into());
    });
    for _ in 0..2 {
        assert!(matches!(
            client.checkpoint().await,
            Err(RekorError::Transient { .. })
        ));
    }
    // Open: refused without a request.
    let n = script.hits(route).len();
    assert!(matches!(
        client.checkpoint().await,
        Err(RekorError::CircuitOpen { .. })
    ));
    assert_eq!(script.hits(route).len(), n);
    assert_eq!(
        metric("provd_rekor_circuit_open", &[("backend", "breaker")]),
        1.0
    );
    // After the cool-down one probe goes out; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(
        client.checkpoint().await,
        Err(RekorError::Transient { .. })
    ));
    assert_eq!(script.hits(route).len(), n + 1);
    assert!(matches!(
        client.checkpoint().await,
        Err(RekorError::CircuitOpen { .. })
    ));
    // The log recovers: the next probe closes the breaker.
    script.set(route, vec![answer(200, signed_log_info(&key))]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    client.checkpoint().await.expect("probe succeeds");
    client.checkpoint().await.expect("closed again");
    assert_eq!(
        metric("provd_rekor_circuit_open", &[("backend", "breaker")]),
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// The stub and the backends.

#[tokio::test]
async fn stub_receipts_verify_with_domain_code_and_are_deterministic() {
    let a = StubLog::new("a", "stub.provd.invalid");
    let b = StubLog::new("b", "stub.provd.invalid");
    let signer = p256_key(20);
    let mut receipts = Vec::new();
    for i in 0..5 {
        let sub = submission(&signer, &format!("{{\"i\":{i}}}"));
        let r = a.submit(&sub).await.unwrap();
        r.verify(&a.trusted_log()).expect("verifies");
        assert_eq!(r, b.submit(&sub).await.unwrap(), "deterministic");
        receipts.push(r);
    }
    // Ed25519 signers are fine for the stub (it is v1-like).
    a.submit(&submission(&ed25519_key(1), "{}")).await.unwrap();
    // A duplicate is the same entry; the log does not grow.
    let dup = a.submit(&submission(&signer, "{\"i\":0}")).await.unwrap();
    assert_eq!(dup.log_index, 0);
    assert_eq!(dup.uuid(), receipts[0].uuid());
    assert_eq!(a.len(), 6);
    dup.verify(&a.trusted_log()).unwrap();
    // Reads and proofs.
    assert_eq!(
        a.entry_by_uuid(&receipts[2].uuid())
            .await
            .unwrap()
            .log_index,
        2
    );
    let cp = a.checkpoint().await.unwrap();
    let old = receipts[1].inclusion_proof.as_ref().unwrap();
    let proof = a.consistency_proof(old.tree_size, 6).await.unwrap();
    merkle::verify_consistency(
        old.tree_size,
        6,
        &proof,
        &old.root_hash,
        &cp.checkpoint.root,
    )
    .unwrap();
    let p = a.inclusion_proof(1, Some(3)).await.unwrap();
    merkle::verify_inclusion(&receipts[1].leaf_hash(), 1, 3, &p.hashes, &p.root_hash).unwrap();
    // A bad signature is refused.
    let mut bad = submission(&signer, "{}");
    bad.verifiers = vec![p256_key(21).public_key()];
    assert!(matches!(a.submit(&bad).await, Err(RekorError::Invalid(_))));
}

#[test]
fn backends_from_config_and_the_resolver() {
    let none = build_backends(&RekorConfig::default()).unwrap();
    assert!(none.clients.is_empty());
    assert!(none.resolve(None).is_none());

    let raw: RawRekor = toml::from_str(&format!(
        r#"
default_backend = "sigstore"
[backends.sigstore]
kind = "public"
url = "https://rekor.sigstore.dev"
keys = ["{}"]
[backends.demo]
kind = "stub"
"#,
        vector("rekor-prod-keys/rekor.sigstore.dev.pub.pem").display()
    ))
    .unwrap();
    let backends = build_backends(&raw.validate().unwrap()).unwrap();
    assert_eq!(backends.default, "sigstore");
    assert_eq!(backends.resolve(None).unwrap().backend(), "sigstore");
    assert_eq!(backends.resolve(Some("demo")).unwrap().backend(), "demo");
    assert!(backends.resolve(Some("nope")).is_none());
}

// ---------------------------------------------------------------------------------------------
// The CLI.

fn provd(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_provd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PROVD_REKOR_DEFAULT_BACKEND")
        .output()
        .expect("run provd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_get_and_checkpoint_read_a_live_log() {
    let url = dir_server(vector("tessera-testdata-log")).await;
    let (_v1, v1_config) = v1_server().await;
    let v1_client = build_backend(&v1_config).unwrap();
    let logged = v1_client
        .submit(&submission(&p256_key(30), "{\"cli\":1}"))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("provd.toml");
    let vkey = std::fs::read_to_string(vector("tessera-testdata-log/log.vkey.txt")).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"
[rekor]
default_backend = "tiles"
[rekor.backends.tiles]
kind = "private"
api = "v2"
url = "{url}"
origin = "example.com/log/testdata"
keys = ["{}"]
[rekor.backends.local]
kind = "private"
url = "{}"
origin = "v1.test.local"
keys = ["""{}"""]
"#,
            vkey.trim(),
            v1_config.url,
            v1_config.key_sources[0],
        ),
    )
    .unwrap();
    let config2 = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        (
            provd(&config2, &["rekor", "checkpoint"]),
            provd(&config2, &["rekor", "get", "--index", "7", "--json"]),
            provd(
                &config2,
                &[
                    "rekor",
                    "get",
                    "--backend",
                    "local",
                    "--uuid",
                    &logged.uuid(),
                ],
            ),
            provd(
                &config2,
                &["rekor", "get", "--backend", "nope", "--index", "1"],
            ),
            provd(&config2, &["rekor", "get", "--index", "99"]),
        )
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(out.0.status.success(), "{}", text(&out.0));
    assert!(text(&out.0).contains("size:    15"), "{}", text(&out.0));
    assert!(out.1.status.success(), "{}", text(&out.1));
    let v: Value = serde_json::from_slice(&out.1.stdout).unwrap();
    assert_eq!(v["log_index"], 7);
    assert_eq!(v["transparency_log_entry"]["logIndex"], "7");
    assert!(out.2.status.success(), "{}", text(&out.2));
    assert!(text(&out.2).contains("integrated time"), "{}", text(&out.2));
    assert_eq!(out.3.status.code(), Some(2), "{}", text(&out.3));
    assert_eq!(out.4.status.code(), Some(1), "{}", text(&out.4));

    // A bad backend config is exit 78 naming the key.
    std::fs::write(
        &config,
        "[rekor.backends.x]\nkind = \"public\"\nurl = \"http://a\"\n",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || provd(&config, &["rekor", "checkpoint"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out).contains("rekor.backends.x.url"),
        "{}",
        text(&out)
    );
}
