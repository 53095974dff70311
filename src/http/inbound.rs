//! `POST /api/v1/events`: events from other systems through HTTP instead of NATS.
//!
//! In embedded mode there is no NATS server to publish to, so this is how a pipeline hands
//! provd a signer revocation, a feed epoch or a policy change; in distributed mode it is a
//! convenience beside publishing to NATS. The body is one CloudEvents JSON event of a type
//! provd consumes (`docs/events.md`); it is checked as the consuming actor would check it,
//! then published onto the bus with its `id` as the message id, so a repeated request is
//! one event.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use actors::invalidator::Trigger;

use super::AppState;
use super::auth::scoped_api;
use super::error::ApiError;
use crate::config::Scope;

/// The route of this module, behind the `write` scope.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    scoped_api(
        OpenApiRouter::new().routes(routes!(publish_event)),
        &state.tokens,
        Scope::Write,
    )
}

/// Publishes one CloudEvents JSON event onto the bus, as if published to its NATS subject.
#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    request_body(content_type = "application/json", description = "one CloudEvents 1.0 JSON event of a type in docs/events.md"),
    responses(
        (status = 202, description = "stored on the bus: `id`, `type`, `subject`"),
        (status = 400, description = "not an inbound event provd accepts; `error` says why"),
        (status = 503, description = "the bus is unavailable; the event may have been recorded: retry with the same event `id`, which makes it one event")),
    security(("bearer" = ["write"])))]
async fn publish_event(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    // provd's own outbound events (ledger rows, receipts, checkpoints) come only from provd;
    // say so before checking their payload.
    let named = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .and_then(|t| events::EventKind::from_type(&t));
    if let Some(kind) = named.filter(|k| !k.is_inbound()) {
        return Err(ApiError::BadRequest(format!(
            "`{}` is an event provd publishes, not one it accepts; inbound types are {}",
            kind.cloud_event_type(),
            events::EventKind::ALL
                .iter()
                .filter(|k| k.is_inbound())
                .map(|k| format!("`{}`", k.cloud_event_type()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (kind, event) = events::decode(&body)
        .map_err(|e| ApiError::BadRequest(format!("not an event provd accepts: {e}")))?;
    // An invalidation is refused here if its invalidator would refuse it (a field the
    // stores cannot hold, no criterion), so an accepted event is always applied.
    if let Some(trigger) = Trigger::ALL.into_iter().find(|t| t.kind() == kind) {
        trigger.decode(&body).map_err(|r| {
            ApiError::BadRequest(format!("not an event provd accepts: {}", r.detail))
        })?;
    }
    // A submission request likewise gets the submitter's own check.
    if kind == events::EventKind::SubmissionRequested {
        let Some(backends) = s.rekor.as_ref() else {
            return Err(ApiError::Unavailable(
                "no transparency-log backend is configured ([rekor.backends.<name>])".into(),
            ));
        };
        let request =
            events::decode_as::<events::data::SubmissionRequested>(&body).map_err(|e| {
                ApiError::BadRequest(format!("not an event provd accepts: {}", e.detail))
            })?;
        actors::submitter::check_request(request.data, backends, "verifier_keys")
            .map_err(|d| ApiError::BadRequest(format!("not an event provd accepts: {d}")))?;
    }
    let subject = s.subjects.subject(kind);
    s.bus
        .publish(&subject, &event.id, body.to_vec())
        .await
        .map_err(|e| super::may_have_been_recorded(e, "the same event `id`"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "accepted",
            "id": event.id,
            "type": kind.cloud_event_type(),
            "subject": subject,
        })),
    )
        .into_response())
}
