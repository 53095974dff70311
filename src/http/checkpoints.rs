//! Log monitoring over HTTP: verified checkpoints, divergences, and the operator's
//! acknowledgement that lets a held backend's sync advance again.
//!
//! * `GET /api/v1/rekor/checkpoints?backend=&origin=&size=&limit=` (scope `read`): stored
//!   verified checkpoints of every node, newest first.
//! * `GET /api/v1/rekor/divergences?open=&limit=` (scope `read`): divergences with their
//!   evidence, newest first.
//! * `POST /api/v1/rekor/divergences/{id}/ack` (scope `admin`), optional body
//!   `{"by": "<who>"}`: acknowledges one; the backend's readiness gate clears and its sync
//!   advances at its next round.
//!
//! The routes carry their own state, so they merge into the main router (and its OpenAPI
//! document, through [`super::router`]'s extra routers) without widening [`super::AppState`].

use std::sync::Arc;

use actors::ports::{
    CheckpointQuery, CheckpointStore, Divergence, DivergenceStore, StoredCheckpoint,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::scoped_api;
use super::error::{ApiError, ApiQuery};
use crate::config::{Scope, Token};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the routes need.
#[derive(Clone)]
pub struct MonitorState {
    /// Stored verified checkpoints.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Divergences.
    pub divergences: Arc<dyn DivergenceStore>,
}

/// The routes, each behind its scope, with their state applied: an [`OpenApiRouter`] for
/// any state, to be merged into [`super::api`]'s before the document is split off.
pub fn router<S>(state: MonitorState, tokens: &Arc<Vec<Token>>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(list_checkpoints))
            .routes(routes!(list_divergences)),
        tokens,
        Scope::Read,
    );
    let admin = scoped_api(
        OpenApiRouter::new().routes(routes!(acknowledge)),
        tokens,
        Scope::Admin,
    );
    read.merge(admin).with_state(state)
}

/// Largest page.
const MAX_LIMIT: u32 = 1000;

fn limit(given: Option<u32>) -> Result<u32, ApiError> {
    match given.unwrap_or(100) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

fn checkpoint_json(c: &StoredCheckpoint) -> Value {
    let cp = &c.checkpoint;
    json!({
        "id": c.id,
        "backend": cp.backend,
        "origin": cp.origin,
        "tree_size": cp.tree_size,
        "root_hash": hex::encode(cp.root_hash),
        "note": cp.note,
        "observed_by": cp.observed_by,
        "observed_at": c.observed_at,
    })
}

fn divergence_json(d: &Divergence) -> Value {
    json!({
        "id": d.id,
        "backend": d.backend,
        "origin": d.origin,
        "kind": d.kind,
        "evidence": d.evidence,
        "detected_by": d.detected_by,
        "detected_at": d.detected_at,
        "acknowledged_at": d.acknowledged_at,
        "acknowledged_by": d.acknowledged_by,
        "published_at": d.published_at,
        "delivered_at": d.delivered_at,
        "delivery_attempts": d.delivery_attempts,
        "last_delivery_error": d.last_delivery_error,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointsQuery {
    backend: Option<String>,
    origin: Option<String>,
    size: Option<u64>,
    limit: Option<u32>,
}

/// Stored verified checkpoints of every node, newest first.
#[utoipa::path(get, path = "/api/v1/rekor/checkpoints", tag = "rekor",
    params(("backend" = Option<String>, Query, description = "only this backend's"),
           ("origin" = Option<String>, Query, description = "only this checkpoint origin's"),
           ("size" = Option<u64>, Query, description = "only checkpoints of this tree size"),
           ("limit" = Option<u32>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "`checkpoints`"), (status = 400, description = "names the bad parameter")),
    security(("bearer" = ["read"])))]
async fn list_checkpoints(
    State(s): State<MonitorState>,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> Result<Json<Value>, ApiError> {
    let query = CheckpointQuery {
        backend: q.backend,
        origin: q.origin,
        tree_size: q.size,
        limit: limit(q.limit)?,
    };
    let rows = s
        .checkpoints
        .checkpoints(&query)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({
        "checkpoints": rows.iter().map(checkpoint_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DivergencesQuery {
    open: Option<bool>,
    limit: Option<u32>,
}

/// Divergences with their evidence, newest first.
#[utoipa::path(get, path = "/api/v1/rekor/divergences", tag = "rekor",
    params(("open" = Option<bool>, Query, description = "only unacknowledged ones (default false)"),
           ("limit" = Option<u32>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "`divergences`"), (status = 400, description = "names the bad parameter")),
    security(("bearer" = ["read"])))]
async fn list_divergences(
    State(s): State<MonitorState>,
    ApiQuery(q): ApiQuery<DivergencesQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = s
        .divergences
        .divergences(q.open.unwrap_or(false), limit(q.limit)?)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({
        "divergences": rows.iter().map(divergence_json).collect::<Vec<_>>(),
    })))
}

/// The optional body of `POST /api/v1/rekor/divergences/{id}/ack`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Who acknowledges (default `api`).
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00]*$")]
    by: Option<String>,
}

/// Acknowledges a divergence: the backend's readiness gate clears and its sync advances at
/// its next round.
#[utoipa::path(post, path = "/api/v1/rekor/divergences/{id}/ack", tag = "rekor",
    params(("id" = i64, Path, description = "divergence id (a positive integer)")),
    request_body(content = Option<AckBody>, content_type = "application/json", description = "optional `{\"by\": \"<who>\"}` (1-128 characters, default `api`)"),
    responses((status = 200, description = "the acknowledged divergence"), (status = 400, description = "bad id or body"),
              (status = 404, description = "no such divergence")),
    security(("bearer" = ["admin"])))]
async fn acknowledge(
    State(s): State<MonitorState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id: i64 = id.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::BadRequest(format!("divergence id {id:?} is not a positive integer"))
    })?;
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        // JSON `null` is no body, as the document's optional body allows.
        serde_json::from_slice::<Option<AckBody>>(&body)
            .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
            .and_then(|b| b.by)
    };
    let by = by.unwrap_or_else(|| "api".to_owned());
    // Characters, as the document's `maxLength` counts them; NUL no store can hold.
    if by.is_empty() || by.chars().count() > 128 || by.contains('\0') {
        return Err(ApiError::BadRequest(
            "field `by` must have 1 to 128 characters, none of them NUL".into(),
        ));
    }
    let d = s
        .divergences
        .acknowledge_divergence(id, &by)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("no divergence {id}")))?;
    tracing::info!(id, by = %by, backend = %d.backend, kind = %d.kind, "divergence acknowledged");
    Ok(Json(divergence_json(&d)))
}
