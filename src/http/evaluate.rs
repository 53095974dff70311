//! Verdicts provd decides and explains:
//!
//! * `POST /api/v1/provcache/evaluate` (scope `write`): is this artifact acceptable under
//!   this stored policy, given these attestations? The cached verdict on a hit
//!   (`X-Provcache-Tier`, nothing verified), or a verdict decided now (`cached: false`).
//! * `GET /api/v1/provcache/entries/{veri_key}/explain` (scope `read`): everything an
//!   auditor needs to replay a verdict offline (`provd verify --explain`).
//!
//! The routes carry their own state and merge into the main router like the others.

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::scoped_api;
use super::error::{ApiError, ApiJson};
use crate::config::{Scope, Token};
use crate::evaluate::{EvaluateError, EvaluateRequest, Evaluator};

/// Largest request body: a handful of bundles with large DSSE payloads fit.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The routes, each behind its scope, with the evaluator as their state.
pub fn router<S>(evaluator: Arc<Evaluator>, tokens: &Arc<Vec<Token>>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let write = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(evaluate))
            .layer(DefaultBodyLimit::max(MAX_BODY)),
        tokens,
        Scope::Write,
    );
    let read = scoped_api(
        OpenApiRouter::new().routes(routes!(explain)),
        tokens,
        Scope::Read,
    );
    write.merge(read).with_state(evaluator)
}

impl From<EvaluateError> for ApiError {
    fn from(e: EvaluateError) -> Self {
        match e {
            EvaluateError::BadRequest(m) => ApiError::BadRequest(m),
            EvaluateError::UnknownPolicy(_) => ApiError::NotFound(e.to_string()),
            EvaluateError::NotExplainable(m) => ApiError::Conflict(m),
            EvaluateError::Unavailable(m) => {
                tracing::warn!(error = %m, "evaluation could not run");
                ApiError::Unavailable(format!("{m}; try again"))
            }
            EvaluateError::Store(e) => e.into(),
            EvaluateError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// The verdict on an artifact under a stored policy, cached or decided now.
#[utoipa::path(post, path = "/api/v1/provcache/evaluate", tag = "provcache",
    request_body(content = crate::evaluate::EvaluateRequest, content_type = "application/json",
        description = "`artifact_digest` (`sha256:<hex>` or `sha512:<hex>`), `policy` (a stored policy's name), `attestations` (Sigstore bundles), optional `sbom_digest`, `vex_digests`, `feed_id`, `feed_epoch`, `ttl` (seconds)"),
    responses(
        (status = 200, description = "`veri_key`, `decision` (`allow` or `deny`), `cached`, `reasons`, and the whole `verdict`; a cached one with `X-Provcache-Tier`"),
        (status = 400, description = "a malformed request; the message names the field"),
        (status = 401, description = "no or malformed token"),
        (status = 403, description = "the token lacks the `write` scope"),
        (status = 404, description = "no policy has that name"),
        (status = 413, description = "the body is larger than 32 MiB"),
        (status = 503, description = "a store, the bus or the trusted root is unavailable; nothing was decided")),
    security(("bearer" = ["write"])))]
async fn evaluate(
    State(evaluator): State<Arc<Evaluator>>,
    ApiJson(request): ApiJson<EvaluateRequest>,
) -> Result<Response, ApiError> {
    let outcome = evaluator.evaluate(request).await?;
    let verdict = &outcome.entry.verdict;
    let body = json!({
        "veri_key": outcome.veri_key,
        "decision": verdict["decision"],
        "reasons": verdict["reasons"],
        "cached": outcome.served.is_some(),
        "status": match (outcome.served, outcome.accepted) {
            (Some(_), _) => "cached",
            (None, Some(actors::provcache::Accepted::Committed)) => "committed",
            _ => "queued",
        },
        "identities": verdict["identities"],
        "verdict": verdict,
    });
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    if let Some(served) = outcome.served {
        resp.headers_mut().insert(
            "x-provcache-tier",
            HeaderValue::from_static(served.as_str()),
        );
    }
    Ok(resp)
}

/// Everything needed to replay a verdict provd decided: its inputs, the policy document,
/// the attestations with their log entries and proofs, the evidence root, the ledger
/// position when it was decided, and the trusted root in use.
#[utoipa::path(get, path = "/api/v1/provcache/entries/{veri_key}/explain", tag = "provcache",
    params(("veri_key" = String, Path, description = "the entry's VeriKey")),
    responses(
        (status = 200, description = "the explanation (docs/policies.md)"),
        (status = 401, description = "no or malformed token"),
        (status = 403, description = "the token lacks the `read` scope"),
        (status = 404, description = "no live entry with that VeriKey"),
        (status = 409, description = "the verdict was not decided by provd, or its policy or evidence is no longer stored"),
        (status = 503, description = "a store is unavailable")),
    security(("bearer" = ["read"])))]
async fn explain(
    State(evaluator): State<Arc<Evaluator>>,
    Path(veri_key): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match evaluator.explain(&veri_key).await? {
        Some(explanation) => Ok(Json(explanation)),
        None => Err(ApiError::NotFound(format!("no live entry {veri_key}"))),
    }
}
