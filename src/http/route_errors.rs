//! Every route that reads or writes a store or the bus answers a failure by its kind: 503
//! with `Retry-After` only for an unavailable service, 400 for data the store refuses, 404
//! for a missing record, 409 for a conflict. The routes run on the real router over ports
//! that fail with the kind under test.

use std::sync::Arc;
use std::time::Duration;

use actors::domain::entry::{Entry, EntryWrite};
use actors::domain::evidence::{Chunk, ChunkInfo, EvidenceLimits, Manifest};
use actors::domain::invalidation::LedgerRow;
use actors::domain::receipt::Receipt;
use actors::domain::submission::SubmissionStatus;
use actors::health::Health;
use actors::ports::{
    ConsumerSpec, EntryStore, EventBus, EvidenceStore, EvidenceTotals, NewSubmission, PortError,
    RejectedEvent, StoredChunk, StoredReceipt, SubmissionRecord, SubmissionStore, Subscription,
    UpsertOutcome,
};
use actors::provcache::ProvCache;
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use events::Subjects;
use tower::ServiceExt as _;

use super::status::OpsQuery;
use super::{AppState, EntryCount, LedgerQuery};
use crate::airgap::BundleStore;
use crate::config::{Scope, Token};
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
    async fn import(&self, _: &Entry, _: &Manifest, _: &[(u64, Vec<u8>)]) -> Result<(), PortError> {
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

fn state(error: PortError) -> AppState {
    let failing = Arc::new(Failing(error));
    let cache = ProvCache::new(
        Vec::new(),
        failing.clone(),
        failing.clone(),
        "t.provcache.writes".into(),
        false,
    );
    AppState {
        bus: failing.clone(),
        ledger: failing.clone(),
        counts: failing.clone(),
        probes: Vec::new(),
        health: Health::new(),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        tokens: Arc::new(vec![Token {
            name: "admin".into(),
            token: TOKEN.into(),
            scopes: [Scope::Admin].into(),
        }]),
        subjects: Subjects::new("t"),
        node_id: "n1".into(),
        evidence: failing.clone(),
        evidence_limits: EvidenceLimits::new(1024, 16).expect("limits"),
        cache: Arc::new(cache),
        default_ttl: Duration::from_secs(60),
        submissions: failing.clone(),
        rekor: None,
        airgap: Arc::new(super::bundles::AirgapState {
            store: failing.clone(),
            config: Default::default(),
            log_keys: Vec::new(),
        }),
        ops: failing,
    }
}

/// The routes under test: method, path, JSON body (or raw bytes for evidence).
fn requests() -> Vec<(&'static str, String, Option<Body>)> {
    let key = format!("sha256:{}", "ab".repeat(32));
    let root = format!("sha256:{}", "cd".repeat(32));
    let json = |v: serde_json::Value| Some(Body::from(v.to_string()));
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
            "/api/v1/proofs".into(),
            Some(Body::from(vec![7u8; 3000])),
        ),
        ("GET", format!("/api/v1/proofs/{root}/manifest"), None),
        ("GET", format!("/api/v1/proofs/{root}/status"), None),
        (
            "GET",
            format!("/api/v1/rekor/submissions/sub-{}", "0f".repeat(32)),
            None,
        ),
        (
            "GET",
            format!("/api/v1/rekor/entries/{}", "0f".repeat(32)),
            None,
        ),
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
        let app = super::router(state(error.clone()), Vec::new());
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
