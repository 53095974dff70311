//! Every route that reads or writes a store or the bus answers a failure by its kind: 503
//! with `Retry-After` only for an unavailable service, 400 for data the store refuses, 404
//! for a missing record, 409 for a conflict. The routes run on the real router over ports
//! that fail with the kind under test.

use std::sync::Arc;
use std::time::Duration;

use actors::domain::bundle::{Bundle, Density, write_bundle};
use actors::domain::dsse::Envelope;
use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::domain::evidence::{Chunk, ChunkInfo, EvidenceLimits, Manifest, chunk_all};
use actors::domain::invalidation::LedgerRow;
use actors::domain::keys::{Algorithm, PrivateKey};
use actors::domain::merkle::Hash;
use actors::domain::receipt::Receipt;
use actors::domain::submission::SubmissionStatus;
use actors::health::Health;
use actors::ports::{
    CheckpointQuery, CheckpointStore, ConsumerSpec, Divergence, DivergenceStore, EntryStore,
    EventBus, EvidenceStore, EvidenceTotals, NewDivergence, NewSubmission, ObservedCheckpoint,
    PolicyPut, PolicyStore, PortError, RejectedEvent, RekorBackends, ReplayStore, StoredCheckpoint,
    StoredChunk, StoredPolicy, StoredReceipt, SubmissionRecord, SubmissionStore, Subscription,
    UpsertOutcome,
};
use actors::provcache::ProvCache;
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use events::Subjects;
use tower::ServiceExt as _;
use utoipa_axum::router::OpenApiRouter;

use super::status::OpsQuery;
use super::verify::{CurrentRoot, TrustedRoots};
use super::{AppState, EntryCount, LedgerQuery};
use crate::adapters::rekor::stub::StubLog;
use crate::airgap::BundleStore;
use crate::config::{Scope, Token};
use crate::evaluate::{Evaluator, EvaluatorParts, ReceiptStore};
use crate::storage::ops::OpsSnapshot;

const TOKEN: &str = "route-errors-token-0123456789";

/// Every port, failing every call with one error.
struct Failing(PortError);

impl Failing {
    fn fail<T>(&self) -> Result<T, PortError> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl EntryStore for Failing {
    fn name(&self) -> &'static str {
        "postgres"
    }
    async fn get_entry(&self, _: &str) -> Result<Option<Entry>, PortError> {
        self.fail()
    }
    async fn upsert_entries(&self, _: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
        self.fail()
    }
    async fn invalidated_after(&self, _: &EntryWrite) -> Result<bool, PortError> {
        self.fail()
    }
}

#[async_trait]
impl EventBus for Failing {
    async fn publish(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), PortError> {
        self.fail()
    }
    async fn subscribe(&self, _: &ConsumerSpec) -> Result<Box<dyn Subscription>, PortError> {
        self.fail()
    }
}

#[async_trait]
impl LedgerQuery for Failing {
    async fn revocations(&self, _: i64, _: i64) -> Result<Vec<LedgerRow>, PortError> {
        self.fail()
    }
    async fn stats(&self) -> Result<serde_json::Value, PortError> {
        self.fail()
    }
}

#[async_trait]
impl EntryCount for Failing {
    async fn entry_count(&self) -> Result<i64, PortError> {
        self.fail()
    }
}

#[async_trait]
impl OpsQuery for Failing {
    async fn snapshot(&self) -> Result<OpsSnapshot, String> {
        Err(self.0.to_string())
    }
    async fn rejected(&self, _: i64) -> Result<Vec<RejectedEvent>, PortError> {
        self.fail()
    }
}

#[async_trait]
impl EvidenceStore for Failing {
    async fn put_evidence(&self, _: &Manifest, _: &[Chunk]) -> Result<bool, PortError> {
        self.fail()
    }
    async fn manifest(&self, _: &str) -> Result<Option<Manifest>, PortError> {
        self.fail()
    }
    async fn chunk_infos(&self, _: &str, _: u64, _: u64) -> Result<Vec<ChunkInfo>, PortError> {
        self.fail()
    }
    async fn chunks(&self, _: &str, _: u64, _: u64) -> Result<Vec<StoredChunk>, PortError> {
        self.fail()
    }
    async fn chunk(&self, _: &str, _: u64) -> Result<Option<StoredChunk>, PortError> {
        self.fail()
    }
    async fn evidence_totals(&self) -> Result<EvidenceTotals, PortError> {
        self.fail()
    }
}

#[async_trait]
impl SubmissionStore for Failing {
    async fn ensure_submission(&self, _: &NewSubmission) -> Result<SubmissionRecord, PortError> {
        self.fail()
    }
    async fn begin_attempt(&self, _: &str) -> Result<SubmissionRecord, PortError> {
        self.fail()
    }
    async fn record_logged(&self, _: &str, _: &str, _: &Receipt) -> Result<(), PortError> {
        self.fail()
    }
    async fn record_failure(
        &self,
        _: &str,
        _: SubmissionStatus,
        _: &str,
    ) -> Result<SubmissionRecord, PortError> {
        self.fail()
    }
    async fn submission(&self, _: &str) -> Result<Option<SubmissionRecord>, PortError> {
        self.fail()
    }
    async fn stored_receipt(&self, _: &str) -> Result<Option<StoredReceipt>, PortError> {
        self.fail()
    }
    async fn requeue(&self, _: &str) -> Result<Option<SubmissionRecord>, PortError> {
        self.fail()
    }
}

#[async_trait]
impl BundleStore for Failing {
    async fn import_batches(
        &self,
        _: &Entry,
        _: &Manifest,
        _: &mut dyn crate::airgap::ChunkBatches,
    ) -> Result<(), PortError> {
        self.fail()
    }
    async fn store_chunks(&self, _: &Manifest, _: &[(u64, Vec<u8>)]) -> Result<u64, PortError> {
        self.fail()
    }
    async fn stored_indexes(&self, _: &str) -> Result<Vec<u64>, PortError> {
        self.fail()
    }
    async fn manifest(&self, _: &str) -> Result<Option<Manifest>, PortError> {
        self.fail()
    }
    async fn link_receipt(&self, _: &str, _: &str) -> Result<(), PortError> {
        self.fail()
    }
    async fn linked_receipt(&self, _: &str) -> Result<Option<String>, PortError> {
        self.fail()
    }
}

#[async_trait]
impl PolicyStore for Failing {
    async fn put_policy(
        &self,
        _: &str,
        _: &str,
        _: &serde_json::Value,
    ) -> Result<PolicyPut, PortError> {
        self.fail()
    }
    async fn policy(&self, _: &str) -> Result<Option<StoredPolicy>, PortError> {
        self.fail()
    }
    async fn policies(&self) -> Result<Vec<StoredPolicy>, PortError> {
        self.fail()
    }
    async fn policy_by_hash(&self, _: &str) -> Result<Option<StoredPolicy>, PortError> {
        self.fail()
    }
}

#[async_trait]
impl CheckpointStore for Failing {
    async fn record_checkpoint(&self, _: &ObservedCheckpoint) -> Result<(), PortError> {
        self.fail()
    }
    async fn latest_checkpoint(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        self.fail()
    }
    async fn conflicting_checkpoint(
        &self,
        _: &str,
        _: u64,
        _: &Hash,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        self.fail()
    }
    async fn latest_foreign_checkpoint(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<StoredCheckpoint>, PortError> {
        self.fail()
    }
    async fn checkpoints(&self, _: &CheckpointQuery) -> Result<Vec<StoredCheckpoint>, PortError> {
        self.fail()
    }
    async fn unverified_receipts(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: u32,
    ) -> Result<Vec<StoredReceipt>, PortError> {
        self.fail()
    }
    async fn mark_receipts_verified(&self, _: &[String]) -> Result<(), PortError> {
        self.fail()
    }
}

#[async_trait]
impl DivergenceStore for Failing {
    async fn raise_divergence(&self, _: &NewDivergence) -> Result<Option<Divergence>, PortError> {
        self.fail()
    }
    async fn open_divergences(&self, _: Option<&str>) -> Result<Vec<Divergence>, PortError> {
        self.fail()
    }
    async fn divergences(&self, _: bool, _: u32) -> Result<Vec<Divergence>, PortError> {
        self.fail()
    }
    async fn acknowledge_divergence(
        &self,
        _: i64,
        _: &str,
    ) -> Result<Option<Divergence>, PortError> {
        self.fail()
    }
    async fn undelivered_divergences(
        &self,
        _: &str,
        _: bool,
        _: u32,
    ) -> Result<Vec<Divergence>, PortError> {
        self.fail()
    }
    async fn mark_divergence_published(&self, _: i64) -> Result<(), PortError> {
        self.fail()
    }
    async fn mark_divergence_delivered(&self, _: i64) -> Result<(), PortError> {
        self.fail()
    }
    async fn record_delivery_failure(&self, _: i64, _: &str) -> Result<(), PortError> {
        self.fail()
    }
}

#[async_trait]
impl ReceiptStore for Failing {
    async fn store_receipt(&self, _: &str, _: &str, _: &Receipt) -> Result<(), PortError> {
        self.fail()
    }
}

#[async_trait]
impl ReplayStore for Failing {
    async fn ledger_rows(&self, _: i64, _: i64) -> Result<Vec<LedgerRow>, PortError> {
        self.fail()
    }
    async fn ledger_head(&self) -> Result<i64, PortError> {
        self.fail()
    }
    async fn checkpoint(&self, _: &str) -> Result<i64, PortError> {
        self.fail()
    }
    async fn save_checkpoint(&self, _: &str, _: i64) -> Result<i64, PortError> {
        self.fail()
    }
    async fn reapply(&self, _: &[LedgerRow]) -> Result<Vec<String>, PortError> {
        self.fail()
    }
}

/// The trusted root has no kind to fail by; every route reaches a store before it.
impl TrustedRoots for Failing {
    fn current(&self) -> Result<CurrentRoot, String> {
        Err(self.0.to_string())
    }
}

/// The shared state and the routers that carry their own state, wired as `App::start`
/// wires them, with Rekor configured so its routes are served.
fn state(error: PortError) -> (AppState, Vec<OpenApiRouter<AppState>>) {
    let failing = Arc::new(Failing(error));
    let cache = Arc::new(ProvCache::new(
        Vec::new(),
        failing.clone(),
        failing.clone(),
        "t.provcache.writes".into(),
        false,
    ));
    let tokens = Arc::new(vec![Token {
        name: "admin".into(),
        token: TOKEN.into(),
        scopes: [Scope::Admin].into(),
    }]);
    let limits = EvidenceLimits::new(1024, 16).expect("limits");
    let subjects = Subjects::new("t");
    let stub: Arc<dyn actors::ports::RekorClient> =
        Arc::new(StubLog::new("stub", "stub.provd.invalid"));
    let state = AppState {
        bus: failing.clone(),
        ledger: failing.clone(),
        counts: failing.clone(),
        probes: Vec::new(),
        health: Health::new(),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        tokens: tokens.clone(),
        subjects: subjects.clone(),
        node_id: "n1".into(),
        deployment_id: uuid::Uuid::nil(),
        evidence: failing.clone(),
        evidence_limits: limits,
        cache: cache.clone(),
        default_ttl: Duration::from_secs(60),
        submissions: failing.clone(),
        rekor: Some(RekorBackends {
            default: "stub".into(),
            clients: [("stub".to_owned(), stub)].into(),
        }),
        airgap: Arc::new(super::bundles::AirgapState::new(
            failing.clone(),
            Default::default(),
            Vec::new(),
        )),
        ops: failing.clone(),
    };
    let monitor = super::checkpoints::MonitorState {
        checkpoints: failing.clone(),
        divergences: failing.clone(),
    };
    let policies = super::policies::PoliciesState::new(
        failing.clone(),
        failing.clone(),
        subjects,
        "n1".into(),
    );
    let evaluator = Arc::new(Evaluator::new(EvaluatorParts {
        cache,
        policies: failing.clone(),
        evidence: failing.clone(),
        receipts: failing.clone(),
        links: failing.clone(),
        ledger: failing.clone(),
        roots: failing,
        evidence_limits: limits,
        default_ttl: Duration::from_secs(60),
    }));
    let extra = vec![
        super::checkpoints::router(monitor, &tokens),
        super::policies::router(policies, &tokens),
        super::evaluate::router(evaluator, &tokens),
    ];
    (state, extra)
}

/// A valid strict bundle of one chunk, unsigned (no key is trusted, so none is needed).
fn bundle(veri_key: &str) -> Vec<u8> {
    let limits = EvidenceLimits::new(1024, 16).expect("limits");
    let (chunks, manifest) = chunk_all(limits, "text/plain", b"evidence").expect("chunks");
    let verdict = serde_json::json!({"decision": "allow"});
    let now = chrono::Utc::now();
    let entry = Entry {
        veri_key: veri_key.to_owned(),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: Some(manifest.proof_root.clone()),
        trust_score: 50,
        policy_hash: "sha256:p".into(),
        signer_set_hash: "sha256:s".into(),
        signer_key_ids: Vec::new(),
        feed_id: None,
        feed_epoch: None,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    };
    let head = Bundle::head(&entry, &manifest, Density::Strict, now, None).expect("head");
    let chunks: Vec<(u64, Vec<u8>)> = chunks.iter().map(|c| (c.index, c.data.clone())).collect();
    write_bundle(&head, &chunks, None, now).expect("bundle")
}

/// A signed envelope and its verifier key, as `POST /api/v1/rekor/submissions` takes them.
fn submission() -> serde_json::Value {
    // A fixed seed: the submission only has to be well formed, not secret.
    let key = PrivateKey::generate(Algorithm::Ed25519, &mut |buf: &mut [u8]| {
        buf.fill(7);
        Ok(())
    })
    .expect("key");
    let envelope = Envelope::sign("application/vnd.in-toto+json", b"{}", &key, "");
    let pem = key.public_key().to_pem().expect("pem");
    serde_json::json!({"envelope": envelope, "verifiers": [pem]})
}

/// The routes under test: method, path, JSON body (or raw bytes for evidence).
fn requests() -> Vec<(&'static str, String, Option<Body>)> {
    // Left out, as they reach no port that fails by kind: `GET /healthz`, `GET /metrics`,
    // `GET /api/openapi.json`, `GET /dashboard` and `POST /api/v1/provcache/verikey` answer
    // from memory; `POST /api/v1/verify` reads only the trusted root; `GET /readyz` and
    // `GET /api/v1/status` are reports whose probes and figures fail as text, so they
    // answer 503 with the report whatever the kind; the tile proxy (`/tiles/...`) is
    // served only with `[tiles]`, over its file cache and the logs, with its own errors.
    let key = format!("sha256:{}", "ab".repeat(32));
    let root = format!("sha256:{}", "cd".repeat(32));
    let sub = format!("sub-{}", "0f".repeat(32));
    let log_uuid = "0f".repeat(32);
    let json = |v: serde_json::Value| Some(Body::from(v.to_string()));
    let policy = serde_json::json!({"identities": [{"issuer": "https://i", "san": "a"}]});
    vec![
        ("GET", format!("/api/v1/provcache/entries/{key}"), None),
        (
            "POST",
            "/api/v1/provcache/entries".into(),
            json(serde_json::json!({
                "veri_key": key, "verdict": {"decision": "allow"}, "trust_score": 50,
                "policy_hash": "sha256:p", "signer_set_hash": "sha256:s",
            })),
        ),
        (
            "POST",
            "/api/v1/provcache/invalidate".into(),
            json(serde_json::json!({"policy_hash": "sha256:p", "reason": "test"})),
        ),
        ("GET", "/api/v1/provcache/revocations".into(), None),
        ("GET", "/api/v1/provcache/revocations/stats".into(), None),
        ("GET", "/api/v1/provcache/stats".into(), None),
        (
            "POST",
            "/api/v1/provcache/evaluate".into(),
            json(serde_json::json!({
                "artifact_digest": format!("sha256:{}", "ef".repeat(32)),
                "policy": "p", "attestations": [{}],
            })),
        ),
        (
            "GET",
            format!("/api/v1/provcache/entries/{key}/explain"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/provcache/entries/{key}/bundle"),
            None,
        ),
        (
            "POST",
            "/api/v1/provcache/import".into(),
            Some(Body::from(bundle(&key))),
        ),
        (
            "PUT",
            format!("/api/v1/provcache/entries/{key}/receipt"),
            json(serde_json::json!({"rekor_uuid": log_uuid})),
        ),
        ("PUT", "/api/v1/policies/p".into(), json(policy)),
        ("GET", "/api/v1/policies/p".into(), None),
        ("GET", "/api/v1/policies".into(), None),
        (
            "POST",
            "/api/v1/proofs".into(),
            Some(Body::from(vec![7u8; 3000])),
        ),
        ("GET", format!("/api/v1/proofs/{root}"), None),
        ("GET", format!("/api/v1/proofs/{root}/manifest"), None),
        ("GET", format!("/api/v1/proofs/{root}/chunks/0"), None),
        ("GET", format!("/api/v1/proofs/{root}/chunks/0/proof"), None),
        ("POST", format!("/api/v1/proofs/{root}/verify"), None),
        ("GET", format!("/api/v1/proofs/{root}/status"), None),
        (
            "POST",
            "/api/v1/rekor/submissions".into(),
            json(submission()),
        ),
        ("GET", format!("/api/v1/rekor/submissions/{sub}"), None),
        (
            "GET",
            format!("/api/v1/rekor/submissions/{sub}/bundle"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/rekor/submissions/{sub}/retry"),
            None,
        ),
        ("GET", format!("/api/v1/rekor/entries/{log_uuid}"), None),
        ("GET", "/api/v1/rekor/checkpoints".into(), None),
        ("GET", "/api/v1/rekor/divergences".into(), None),
        ("POST", "/api/v1/rekor/divergences/1/ack".into(), None),
        ("GET", "/api/v1/rejected".into(), None),
        (
            "POST",
            "/api/v1/events".into(),
            json(serde_json::json!({
                "specversion": "1.0", "id": uuid::Uuid::new_v4(), "source": "urn:test",
                "type": "dev.provd.invalidate.requested.v1",
                "datacontenttype": "application/json",
                "data": {"policy_hash": "sha256:p", "reason": "test"},
            })),
        ),
    ]
}

#[tokio::test]
async fn every_route_answers_a_store_failure_by_its_kind() {
    let kinds = [
        (
            PortError::Unavailable {
                service: "postgres",
                message: "connection refused".into(),
            },
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            PortError::Rejected("value too long for type character varying(128)".into()),
            StatusCode::BAD_REQUEST,
        ),
        (PortError::NotFound("no rows".into()), StatusCode::NOT_FOUND),
        (
            PortError::Conflict("duplicate key".into()),
            StatusCode::CONFLICT,
        ),
    ];
    for (error, want) in kinds {
        let (state, extra) = state(error.clone());
        let app = super::router(state, extra, 1024);
        for (method, path, body) in requests() {
            let content_type = if path == "/api/v1/proofs" {
                "application/spdx+json"
            } else {
                "application/json"
            };
            let req = Request::builder()
                .method(method)
                .uri(&path)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, content_type)
                .body(body.unwrap_or_else(Body::empty))
                .expect("request");
            let resp = app.clone().oneshot(req).await.expect("answer");
            assert_eq!(resp.status(), want, "{method} {path} with {error:?}");
            let retry = resp.headers().get(header::RETRY_AFTER).is_some();
            assert_eq!(
                retry,
                want == StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path}: Retry-After only for an outage"
            );
        }
    }
}

/// What axum answers by itself (a wrong method, a path parameter that does not decode, a
/// body over the limit, a body without its content type, an unknown route) has the same
/// JSON error shape as every handler's error, its status and headers kept.
#[tokio::test]
async fn the_routers_own_rejections_are_json_errors() {
    let (state, extra) = state(PortError::NotFound("unused".into()));
    let app = super::router(state, extra, 1024);
    let key = format!("sha256:{}", "ab".repeat(32));
    // Method, path, content type, body, the status and the code expected.
    type Case = (
        &'static str,
        String,
        Option<&'static str>,
        Body,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "DELETE",
            "/api/v1/provcache/stats".into(),
            None,
            Body::empty(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/v1/provcache/entries/%FF%FE".into(),
            None,
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/events".into(),
            Some("application/cloudevents+json"),
            Body::from(vec![b' '; 3 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/provcache/entries".into(),
            None,
            Body::from(
                serde_json::json!({
                    "veri_key": key, "verdict": {"decision": "allow"}, "trust_score": 50,
                    "policy_hash": "sha256:p", "signer_set_hash": "sha256:s",
                })
                .to_string(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "GET",
            "/api/v1/no-such-route".into(),
            None,
            Body::empty(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let mut req = Request::builder()
            .method(method)
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let resp = app
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("answer");
        assert_eq!(resp.status(), status, "{method} {path}");
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json",
            "{method} {path}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                resp.headers().contains_key(header::ALLOW),
                "405 keeps Allow"
            );
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
}

/// Sends `req` to `app` and returns the status, the headers and the body parsed as JSON
/// (`Null` when it is not JSON).
async fn answer(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, header::HeaderMap, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.expect("answer");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Every route the OpenAPI document lists, with each of the router's own rejections that
/// applies to it: a method it does not serve (405, `Allow` kept), a request target over the
/// limit (414), a path parameter that is not UTF-8, and for a route that takes a body, a
/// body without its content type and a body over the limit. Each answer is an error in
/// the documented shape, with the status named where the rejection decides it.
#[tokio::test]
async fn every_route_answers_the_routers_rejections_in_json() {
    let (state, extra) = state(PortError::NotFound("unused".into()));
    let app = super::router(state, extra, 1024);
    let req = |method: &str, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
    };
    let (status, _, doc) = answer(
        &app,
        req("GET", "/api/openapi.json")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 30, "{} routes", paths.len());
    let check = |what: String,
                 status: StatusCode,
                 headers: &header::HeaderMap,
                 body: &serde_json::Value| {
        assert!(status.is_client_error(), "{what}: answered {status}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{what}");
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    };
    let mut checked = 0;
    for (template, ops) in paths {
        let ops = ops.as_object().expect("operations");
        // Every parameter filled with a value that decodes, and with one that does not.
        let filled = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");

        // A method the route does not serve.
        let unserved = ["PATCH", "DELETE", "PUT", "POST", "GET"]
            .into_iter()
            .find(|m| !ops.contains_key(&m.to_ascii_lowercase()))
            .expect("a method the route does not serve");
        let (status, headers, body) = answer(
            &app,
            req(unserved, &filled).body(Body::empty()).expect("req"),
        )
        .await;
        check(format!("{unserved} {template}"), status, &headers, &body);
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{unserved} {template}: {body}"
        );
        assert!(
            headers.contains_key(header::ALLOW),
            "{unserved} {template}: 405 keeps Allow"
        );
        checked += 1;

        for (method, op) in ops {
            let method = method.to_ascii_uppercase();
            let what = |case: &str| format!("{method} {template} ({case})");
            // Over the request target limit.
            let long = format!("{filled}?pad={}", "a".repeat(super::error::MAX_URI_BYTES));
            let (status, headers, body) =
                answer(&app, req(&method, &long).body(Body::empty()).expect("req")).await;
            check(what("long target"), status, &headers, &body);
            assert_eq!(
                status,
                StatusCode::URI_TOO_LONG,
                "{}: {body}",
                what("long target")
            );
            checked += 1;

            // A path parameter that is not UTF-8.
            if template.contains('{') {
                let bad = template
                    .split('/')
                    .map(|seg| if seg.starts_with('{') { "%FF%FE" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/");
                let (status, headers, body) =
                    answer(&app, req(&method, &bad).body(Body::empty()).expect("req")).await;
                check(what("undecodable parameter"), status, &headers, &body);
                checked += 1;
            }

            // A JSON body without its content type, and one over any route's limit.
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.contains_key("application/json"));
            if json_body {
                let (status, headers, body) = answer(
                    &app,
                    req(&method, &filled).body(Body::from("{}")).expect("req"),
                )
                .await;
                check(what("no content type"), status, &headers, &body);
                checked += 1;
            }
            if op.get("requestBody").is_some() {
                let declared = req(&method, &filled)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, (1u64 << 40).to_string())
                    .body(Body::from(vec![b' '; 4 * 1024 * 1024]))
                    .expect("req");
                let (status, headers, body) = answer(&app, declared).await;
                check(what("oversized body"), status, &headers, &body);
                checked += 1;
            }
        }
    }
    eprintln!("{checked} rejections checked over {} routes", paths.len());
}
