//! The HTTP API (axum).
//!
//! Health and metrics are open; everything else needs a bearer token with the route's
//! scope. Errors are JSON `{"error": {"code", "message"}}` with a stable code.

pub mod auth;
pub mod bundles;
pub mod checkpoints;
pub mod document;
pub mod entries;
pub mod error;
pub mod evaluate;
pub mod inbound;
pub mod policies;
pub mod proofs;
pub mod rekor;
#[cfg(test)]
mod route_errors;
pub mod serve;
pub mod stats;
pub mod status;
pub mod tiles;
pub mod trace;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use actors::domain::evidence::EvidenceLimits;
use actors::domain::invalidation::{Invalidation, LedgerRow};
use actors::health::Health;
use actors::ports::{EventBus, EvidenceStore, PortError, RekorBackends, SubmissionStore};
use actors::provcache::ProvCache;
use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use events::data::{EventData, InvalidateRequested};
use events::{CloudEvent, EventKind, Subjects};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Scope, Token};
use auth::scoped_api;
use error::{ApiError, ApiJson, ApiQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    async fn revocations(&self, since: i64, limit: i64) -> Result<Vec<LedgerRow>, PortError>;
    /// Totals: rows, rows by type, entries invalidated, head.
    async fn stats(&self) -> Result<serde_json::Value, PortError>;
}

/// Counts of what the durable tier holds.
#[async_trait]
pub trait EntryCount: Send + Sync {
    /// Entries in the durable tier.
    async fn entry_count(&self) -> Result<i64, PortError>;
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
    /// This deployment (the id in the database, the same on every node).
    pub deployment_id: uuid::Uuid,
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
    /// The database's operator figures for `/api/v1/status`.
    pub ops: Arc<dyn status::OpsQuery>,
}

/// Every route the server serves, each with its OpenAPI operation: a route registered here
/// through `routes!` is in the document by construction (`tests/openapi.rs` checks that
/// no route bypasses it).
pub fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let invalidate = scoped_api(
        OpenApiRouter::new().routes(routes!(invalidate)),
        &state.tokens,
        Scope::Invalidate,
    );
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(revocations))
            .routes(routes!(revocation_stats))
            .routes(routes!(rejected)),
        &state.tokens,
        Scope::Read,
    );
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .merge(status::routes())
        .merge(invalidate)
        .merge(read)
        .merge(proofs::router(state))
        .merge(entries::routes(state))
        .merge(stats::routes(state))
        .merge(rekor::routes(state))
        .merge(bundles::routes(state))
        .merge(inbound::routes(state))
}

/// The router: [`api`] and the `extra` routes that carry their own state (log monitoring,
/// the tile proxy when configured), merged before the document is split off, so
/// `/api/openapi.json` documents exactly the routes served. At most `max_in_flight` requests
/// are handled at once ([`serve::limit_in_flight`]).
pub fn router(
    state: AppState,
    extra: Vec<OpenApiRouter<AppState>>,
    max_in_flight: usize,
) -> Router {
    let api = extra.into_iter().fold(api(&state), OpenApiRouter::merge);
    let (router, doc) = api.split_for_parts();
    let doc = Arc::new(document::finish(doc));
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn(error::json_errors))
        // Inside the trace layer: a refused request is logged and counted like any other.
        .layer(axum::middleware::from_fn_with_state(
            serve::InFlight::new(max_in_flight),
            serve::limit_in_flight,
        ))
        .layer(axum::middleware::from_fn(trace::trace))
        .layer(axum::Extension(doc))
        .with_state(state)
}

/// This API's OpenAPI 3 document, generated from the code.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
async fn openapi_json(
    axum::Extension(doc): axum::Extension<Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json(doc.as_ref().clone())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process runs")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: services and required actors.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "not ready, with details")))]
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

/// Prometheus metrics (text format, `provd_` prefix; `docs/metrics.md`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
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

/// The header whose value makes retries of a mutation one effect.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The id a request carrying an `Idempotency-Key` gets: the same for every retry with that
/// key (so the bus's deduplication and the ledger's unique revocation id make it one
/// effect), distinct per `route`. `None` without the header; a 400 for a malformed one.
fn idempotent_id(headers: &HeaderMap, route: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    use sha2::Digest as _;
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest(
                "header `Idempotency-Key`: give 1–255 visible ASCII characters".into(),
            )
        })?;
    let digest = sha2::Sha256::digest(format!("provd:{route}:{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Ok(Some(uuid::Builder::from_custom_bytes(bytes).into_uuid()))
}

/// A publish that failed as unavailable may still have reached the broker (the answer was
/// lost, not the message): the 503 says so and how to retry safely.
fn may_have_been_recorded(e: PortError, retry_with: &str) -> ApiError {
    match ApiError::from(e) {
        ApiError::Unavailable(m) => ApiError::Unavailable(format!(
            "{m}; the request may have been recorded: retry with {retry_with}"
        )),
        other => other,
    }
}

/// Invalidates cache entries by one criterion; the revocation is recorded in the ledger.
#[utoipa::path(post, path = "/api/v1/provcache/invalidate", tag = "provcache",
    request_body(content_type = "application/json", description = "exactly one of `veri_key`, `signer_set_hash`, `policy_hash`, `feed_epoch_before`, plus `reason`"),
    params(("x-correlation-id" = Option<String>, Header, description = "carried into the event and the ledger"),
           ("idempotency-key" = Option<String>, Header, description = "1–255 visible ASCII characters: every request with the same key is one revocation (the same `revocation_id`, one ledger row), so a retry after a 503 or a timeout is safe")),
    responses((status = 202, description = "accepted; the `revocation_id`"), (status = 400, description = "names the bad field"),
              (status = 503, description = "the bus is unavailable; the request may have been recorded: retry with the same `Idempotency-Key`")),
    security(("bearer" = ["invalidate"])))]
async fn invalidate(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InvalidateRequested>,
) -> Result<Response, ApiError> {
    body.validate().map_err(ApiError::BadRequest)?;
    // Without a correlation id of the caller's, the request id correlates the work.
    let correlation_id = [trace::CORRELATION_ID, trace::REQUEST_ID]
        .iter()
        .filter_map(|h| headers.get(*h))
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    let mut event = CloudEvent::new(format!("urn:provd:{}:api", s.node_id), body)
        .with_correlation_id(correlation_id);
    if let Some(id) = idempotent_id(&headers, "invalidate")? {
        event.id = id.to_string();
    }
    // Refuse here what the invalidator would refuse later (e.g. a malformed epoch).
    Invalidation::explicit(&event).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let subject = s.subjects.subject(EventKind::InvalidateRequested);
    let (revocation_id, correlation_id) = (event.id.clone(), event.correlationid.clone());
    actors::trace::publish(s.bus.as_ref(), &subject, &revocation_id, event)
        .await
        .map_err(|e| may_have_been_recorded(e, "the same `Idempotency-Key`"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "accepted",
            "revocation_id": revocation_id,
            "correlation_id": correlation_id,
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

/// Ledger rows after `since`.
#[utoipa::path(get, path = "/api/v1/provcache/revocations", tag = "provcache",
    params(("since" = Option<i64>, Query, description = "seq_no to start after (default 0)"),
           ("limit" = Option<i64>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "rows, `next_since`, `has_more`")),
    security(("bearer" = ["read"])))]
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
    let rows = s.ledger.revocations(since, limit).await?;
    let next_since = rows.last().map_or(since, |r| r.seq_no);
    Ok(Json(json!({
        "revocations": rows,
        "next_since": next_since,
        "has_more": rows.len() as i64 == limit,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedQuery {
    limit: Option<i64>,
}

/// Messages refused for good, newest first: events provd could not accept, cache writes
/// and invalidations the store refused, ledger events that could not be applied. Each was
/// settled so the messages behind it went on, and is kept here for an operator.
#[utoipa::path(get, path = "/api/v1/rejected", tag = "operations",
    params(("limit" = Option<i64>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "`rejected`: subject, event_id, reason, detail, payload (base64), rejected_at")),
    security(("bearer" = ["read"])))]
async fn rejected(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<RejectedQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use base64::Engine as _;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let rows = s.ops.rejected(limit).await?;
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "subject": r.subject,
                "event_id": r.event_id,
                "reason": r.reason,
                "detail": r.detail,
                "payload": base64::engine::general_purpose::STANDARD.encode(&r.payload),
                "rejected_at": r.rejected_at,
            })
        })
        .collect();
    Ok(Json(json!({"rejected": rows})))
}

/// The ledger's statistics.
#[utoipa::path(get, path = "/api/v1/provcache/revocations/stats", tag = "provcache",
    responses((status = 200, description = "totals by type, entries invalidated, head")),
    security(("bearer" = ["read"])))]
async fn revocation_stats(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(s.ledger.stats().await?))
}
