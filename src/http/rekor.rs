//! Rekor submissions and receipts: enqueue, status, operator retry, stored receipts, and
//! the Sigstore bundle of a logged submission.
//!
//! A submission is accepted once it is in the queue (the JetStream work-queue stream); the
//! submission actor does the rest. The id is derived from envelope and backend, so the same
//! request again answers with the existing submission instead of queueing a second one.
//! Once it is logged, its envelope, the verifier key that signed it and the stored receipt
//! make its Sigstore bundle (`domain::sigstore_bundle`).

use actors::domain::dsse::Envelope;
use actors::domain::keys::PublicKey;
use actors::domain::sigstore_bundle;
use actors::domain::submission::{SubmissionStatus, is_submission_id};
use actors::ports::{StoredReceipt, SubmissionRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::Json;
use events::data::SubmissionRequested;
use events::{CloudEvent, EventKind};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::scoped_api;
use super::error::{ApiError, ApiJson};
use crate::config::Scope;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module, each behind its scope.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let submit = scoped_api(
        OpenApiRouter::new().routes(routes!(submit)),
        &state.tokens,
        Scope::Submit,
    );
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(get_submission))
            .routes(routes!(get_bundle))
            .routes(routes!(get_entry)),
        &state.tokens,
        Scope::Read,
    );
    let admin = scoped_api(
        OpenApiRouter::new().routes(routes!(retry)),
        &state.tokens,
        Scope::Admin,
    );
    submit.merge(read).merge(admin)
}

/// The body of `POST /api/v1/rekor/submissions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    /// The DSSE envelope: `payloadType`, `payload` (base64) and `signatures`.
    #[schema(schema_with = super::document::dsse_envelope)]
    envelope: Value,
    /// The PEM public keys that may have signed it.
    #[schema(min_items = 1)]
    verifiers: Vec<String>,
    /// A configured backend's name (default: the default backend).
    #[serde(default)]
    backend: Option<String>,
}

/// The JSON form of a stored receipt: the Sigstore bundle's `TransparencyLogEntry`.
fn receipt_json(r: &StoredReceipt) -> Value {
    json!({
        "uuid": r.uuid,
        "backend": r.backend,
        "submission_id": r.submission_id,
        "log_index": r.receipt.log_index,
        "integrated_time": r.receipt.integrated_time,
        "created_at": r.created_at,
        "verified_at": r.verified_at,
        "transparency_log_entry": r.receipt.to_tle(),
    })
}

fn submission_json(s: &SubmissionRecord, receipt: Option<&StoredReceipt>) -> Value {
    json!({
        "id": s.id,
        "backend": s.backend,
        "status": s.status.as_str(),
        "attempts": s.attempts,
        "last_error": s.last_error,
        "entry_uuid": s.entry_uuid,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "receipt": receipt.map(receipt_json),
    })
}

/// Puts a submission in the queue. The message id makes a repeated publish one message.
/// `correlation_id` travels in the CloudEvent, so the submitter logs its work under it.
async fn enqueue(
    s: &AppState,
    msg_id: &str,
    request: SubmissionRequested,
    correlation_id: Option<String>,
) -> Result<(), ApiError> {
    let event = CloudEvent::new(format!("urn:provd:node:{}", s.node_id), request)
        .with_correlation_id(correlation_id);
    let subject = s.subjects.subject(EventKind::SubmissionRequested);
    actors::trace::publish(s.bus.as_ref(), &subject, msg_id, event)
        .await
        .map_err(ApiError::from)
}

/// The stored submission `id`; an id not of the submission form cannot name one.
async fn find_submission(s: &AppState, id: &str) -> Result<Option<SubmissionRecord>, ApiError> {
    if !is_submission_id(id) {
        return Ok(None);
    }
    Ok(s.submissions.submission(id).await?)
}

/// The queue message for a submission.
fn request(backend: &str, envelope: &Value, verifier_keys: &[String]) -> SubmissionRequested {
    SubmissionRequested {
        backend: Some(backend.to_owned()),
        envelope: envelope.clone(),
        verifier_keys: verifier_keys.to_vec(),
    }
}

#[utoipa::path(post, path = "/api/v1/rekor/submissions", tag = "rekor",
    request_body(content = SubmitBody, content_type = "application/json", description = "`envelope` (DSSE), `verifiers` (PEM), optional `backend`"),
    responses((status = 202, description = "queued"), (status = 200, description = "already known; its status"),
              (status = 400, description = "names the bad field"), (status = 503, description = "no backend or the bus is down")),
    security(("bearer" = ["submit"])))]
async fn submit(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<Response, ApiError> {
    // The caller's correlation id, else this request's id (set by `http::trace`).
    let correlation_id = [super::trace::CORRELATION_ID, super::trace::REQUEST_ID]
        .iter()
        .filter_map(|h| headers.get(*h))
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    let Some(backends) = s.rekor.as_ref() else {
        return Err(ApiError::Unavailable(
            "no transparency-log backend is configured ([rekor.backends.<name>])".into(),
        ));
    };
    let data = SubmissionRequested {
        backend: body.backend,
        envelope: body.envelope,
        verifier_keys: body.verifiers,
    };
    let new = actors::submitter::check_request(data, backends, "verifiers")
        .map_err(ApiError::BadRequest)?
        .record;
    let id = new.id.clone();
    if let Some(existing) = s
        .submissions
        .submission(&id)
        .await
        .map_err(ApiError::from)?
    {
        return Ok((
            StatusCode::OK,
            Json(json!({"id": existing.id, "status": existing.status.as_str()})),
        )
            .into_response());
    }
    // Queue first, then record: a recorded submission is always in the queue (the actor
    // records one it finds missing).
    enqueue(
        &s,
        &id,
        request(&new.backend, &new.envelope, &new.verifier_keys),
        correlation_id,
    )
    .await?;
    let stored = s
        .submissions
        .ensure_submission(&new)
        .await
        .map_err(ApiError::from)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": stored.id, "status": stored.status.as_str()})),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/rekor/submissions/{id}", tag = "rekor",
    params(("id" = String, Path, description = "submission id")),
    responses((status = 200, description = "status, attempts, receipt once logged"), (status = 404, description = "unknown id")),
    security(("bearer" = ["read"])))]
async fn get_submission(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(sub) = find_submission(&s, &id).await? else {
        return Err(ApiError::NotFound(format!("no submission {id}")));
    };
    let receipt = match &sub.entry_uuid {
        Some(uuid) => s
            .submissions
            .stored_receipt(uuid)
            .await
            .map_err(ApiError::from)?,
        None => None,
    };
    Ok(Json(submission_json(&sub, receipt.as_ref())))
}

#[utoipa::path(get, path = "/api/v1/rekor/submissions/{id}/bundle", tag = "rekor",
    params(("id" = String, Path, description = "submission id")),
    responses((status = 200, content_type = "application/json",
               description = "the Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`): \
                              the DSSE envelope, the signing key's hint and the log entry with its proof"),
              (status = 404, description = "unknown id"),
              (status = 409, description = "not logged yet (the message names its status), or its envelope cannot \
                                            make a bundle (e.g. more than one signature)")),
    security(("bearer" = ["read"])))]
async fn get_bundle(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<sigstore_bundle::SigstoreBundle>, ApiError> {
    let Some(sub) = find_submission(&s, &id).await? else {
        return Err(ApiError::NotFound(format!("no submission {id}")));
    };
    if sub.status != SubmissionStatus::Logged {
        return Err(ApiError::Conflict(format!(
            "submission {id} is {}; its bundle exists once it is logged",
            sub.status
        )));
    }
    let stored = match &sub.entry_uuid {
        Some(uuid) => s
            .submissions
            .stored_receipt(uuid)
            .await
            .map_err(ApiError::from)?,
        None => None,
    };
    let Some(stored) = stored else {
        return Err(ApiError::Internal(format!(
            "submission {id} is logged without a stored receipt"
        )));
    };
    let envelope = serde_json::to_vec(&sub.envelope)
        .ok()
        .and_then(|bytes| Envelope::from_json(&bytes).ok())
        .ok_or_else(|| {
            ApiError::Internal(format!("submission {id}: stored envelope unreadable"))
        })?;
    // The bundle names the verifier that signed: the first stored key that verifies the
    // envelope (the log checked that one does).
    let key = sub
        .verifier_keys
        .iter()
        .filter_map(|pem| PublicKey::from_pem(pem).ok())
        .find(|k| envelope.verify(std::slice::from_ref(k)).is_ok())
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "submission {id}: none of its verifier keys verifies its envelope"
            ))
        })?;
    sigstore_bundle::build(&envelope, &key.to_spki_der(), &stored.receipt)
        .map(Json)
        .map_err(|e| ApiError::Conflict(format!("submission {id} cannot make a bundle: {e}")))
}

#[utoipa::path(get, path = "/api/v1/rekor/entries/{uuid}", tag = "rekor",
    params(("uuid" = String, Path, description = "UUID (64 hex) or v1 entry ID (80 hex)")),
    responses((status = 200, description = "the stored receipt"), (status = 404, description = "unknown entry")),
    security(("bearer" = ["read"])))]
async fn get_entry(
    State(s): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let valid = matches!(uuid.len(), 64 | 80) && uuid.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::BadRequest(format!(
            "{uuid:?} is not an entry UUID (64 hex digits) or Rekor v1 entry ID (80)"
        )));
    }
    match s
        .submissions
        .stored_receipt(&uuid)
        .await
        .map_err(ApiError::from)?
    {
        Some(r) => Ok(Json(receipt_json(&r))),
        None => Err(ApiError::NotFound(format!("no stored receipt {uuid}"))),
    }
}

#[utoipa::path(post, path = "/api/v1/rekor/submissions/{id}/retry", tag = "rekor",
    params(("id" = String, Path, description = "submission id")),
    responses((status = 202, description = "queued again"), (status = 404, description = "unknown id"),
              (status = 409, description = "not dead-lettered")),
    security(("bearer" = ["admin"])))]
async fn retry(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !is_submission_id(&id) {
        return Err(ApiError::NotFound(format!("no submission {id}")));
    }
    let Some(sub) = s.submissions.requeue(&id).await? else {
        return Err(ApiError::NotFound(format!("no submission {id}")));
    };
    if sub.status != SubmissionStatus::Queued {
        return Err(ApiError::Conflict(format!(
            "submission {id} is {}; only a dead-lettered one can be retried",
            sub.status
        )));
    }
    // A fresh message id: the original one may still be inside the deduplication window.
    let msg_id = format!("{id}:retry:{}", uuid::Uuid::now_v7());
    enqueue(
        &s,
        &msg_id,
        request(&sub.backend, &sub.envelope, &sub.verifier_keys),
        None,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": sub.id, "status": sub.status.as_str()})),
    )
        .into_response())
}
