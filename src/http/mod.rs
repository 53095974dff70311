//! The HTTP API (axum).
//!
//! Health and metrics are open; everything else needs a bearer token with the route's
//! scope. Errors are JSON `{"error": {"code", "message"}}` with a stable code.

pub mod auth;
pub mod bundles;
pub mod checkpoints;
pub mod entries;
pub mod error;
pub mod proofs;
pub mod rekor;
pub mod stats;
pub mod tiles;

use std::sync::Arc;
use std::time::Duration;

use actors::domain::evidence::EvidenceLimits;
use actors::domain::invalidation::{Invalidation, LedgerRow};
use actors::health::Health;
use actors::ports::{EventBus, EvidenceStore, RekorBackends, SubmissionStore};
use actors::provcache::ProvCache;
use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use events::data::{EventData, InvalidateRequested};
use events::{CloudEvent, EventKind, Subjects};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Scope, Token};
use auth::scoped;
use error::{ApiError, ApiJson, ApiQuery};

/// A dependency `/readyz` checks.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The dependency's name (`postgres`, `redis`, `nats`).
    fn name(&self) -> &'static str;
    /// Ok when it answers.
    async fn check(&self) -> Result<(), String>;
}

/// Read access to the revocation ledger.
#[async_trait]
pub trait LedgerQuery: Send + Sync {
    /// Rows with `seq_no > since`, oldest first, at most `limit`.
    async fn revocations(&self, since: i64, limit: i64) -> Result<Vec<LedgerRow>, String>;
    /// Totals: rows, rows by type, entries invalidated, head.
    async fn stats(&self) -> Result<serde_json::Value, String>;
}

/// Counts of what the durable tier holds.
#[async_trait]
pub trait EntryCount: Send + Sync {
    /// Entries in the durable tier.
    async fn entry_count(&self) -> Result<i64, String>;
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The event bus (API requests become events).
    pub bus: Arc<dyn EventBus>,
    /// The ledger.
    pub ledger: Arc<dyn LedgerQuery>,
    /// Entry counts for `/stats`.
    pub counts: Arc<dyn EntryCount>,
    /// Dependencies checked by `/readyz`.
    pub probes: Vec<Arc<dyn Probe>>,
    /// Supervised actors' health.
    pub health: Health,
    /// The metrics recorder.
    pub metrics: PrometheusHandle,
    /// API tokens.
    pub tokens: Arc<Vec<Token>>,
    /// Subject names.
    pub subjects: Subjects,
    /// This node.
    pub node_id: String,
    /// Where evidence chunks and manifests are kept.
    pub evidence: Arc<dyn EvidenceStore>,
    /// Evidence chunk size and limits.
    pub evidence_limits: EvidenceLimits,
    /// The provenance cache's tiers.
    pub cache: Arc<ProvCache>,
    /// Entry lifetime when a writer gives none.
    pub default_ttl: Duration,
    /// Rekor submissions and stored receipts.
    pub submissions: Arc<dyn SubmissionStore>,
    /// The configured transparency logs; `None` when none is configured.
    pub rekor: Option<RekorBackends>,
    /// Air-gap bundles: import store, limits, trusted keys.
    pub airgap: Arc<bundles::AirgapState>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    let invalidate = scoped(
        Router::new().route("/api/v1/provcache/invalidate", post(invalidate)),
        &state.tokens,
        Scope::Invalidate,
    );
    let read = scoped(
        Router::new()
            .route("/api/v1/provcache/revocations", get(revocations))
            .route("/api/v1/provcache/revocations/stats", get(revocation_stats)),
        &state.tokens,
        Scope::Read,
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(invalidate)
        .merge(read)
        .merge(proofs::router(&state))
        .merge(entries::routes(&state))
        .merge(stats::routes(&state))
        .merge(rekor::routes(&state))
        .merge(bundles::routes(&state))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    let checks = futures::future::join_all(s.probes.iter().map(|p| async move {
        let r = tokio::time::timeout(Duration::from_secs(2), p.check())
            .await
            .unwrap_or_else(|_| Err("timed out after 2s".to_owned()));
        (p.name(), r)
    }))
    .await;
    let services_ok = checks.iter().all(|(_, r)| r.is_ok());
    let services: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, r)| {
            let v = match r {
                Ok(()) => json!({"status": "ok"}),
                Err(e) => json!({"status": "unreachable", "error": e}),
            };
            (name.to_owned(), v)
        })
        .collect();
    let actors_ok = s.health.ready();
    let ready = services_ok && actors_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "node_id": s.node_id,
        "services": services,
        "actors": s.health.snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn invalidate(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InvalidateRequested>,
) -> Result<Response, ApiError> {
    body.validate().map_err(ApiError::BadRequest)?;
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    let event = CloudEvent::new(format!("urn:provd:{}:api", s.node_id), body)
        .with_correlation_id(correlation_id);
    // Refuse here what the invalidator would refuse later (e.g. a malformed epoch).
    Invalidation::explicit(&event).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let subject = s.subjects.subject(EventKind::InvalidateRequested);
    s.bus
        .publish(&subject, &event.id, event.to_json())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot publish invalidation");
            ApiError::Unavailable("the event bus is unavailable; try again".into())
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "accepted",
            "revocation_id": event.id,
            "correlation_id": event.correlationid,
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct RevocationsQuery {
    since: Option<i64>,
    limit: Option<i64>,
}

/// Largest page of ledger rows.
const MAX_PAGE: i64 = 1000;

async fn revocations(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<RevocationsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if since < 0 {
        return Err(ApiError::BadRequest("`since` must be 0 or more".into()));
    }
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let rows = s.ledger.revocations(since, limit).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the ledger");
        ApiError::Unavailable("the ledger is unavailable; try again".into())
    })?;
    let next_since = rows.last().map_or(since, |r| r.seq_no);
    Ok(Json(json!({
        "revocations": rows,
        "next_since": next_since,
        "has_more": rows.len() as i64 == limit,
    })))
}

async fn revocation_stats(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.ledger.stats().await.map(Json).map_err(|e| {
        tracing::warn!(error = %e, "cannot read ledger statistics");
        ApiError::Unavailable("the ledger is unavailable; try again".into())
    })
}
