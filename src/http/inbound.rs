//! `POST /api/v1/events`: events from other systems through HTTP instead of NATS.
//!
//! In embedded mode there is no NATS server to publish to, so this is how a pipeline hands
//! provd a signer revocation, a feed epoch or a policy change; in distributed mode it is a
//! convenience beside publishing to NATS. Every content mode of the CloudEvents HTTP binding
//! is taken: structured (`application/cloudevents+json`, or plain `application/json`),
//! binary (`ce-*` headers, the data as the body) and batch
//! (`application/cloudevents-batch+json`). Each event is checked as its consuming actor
//! would check it, then published onto the bus as a structured event keyed by
//! [`events::event_key`] (its `source` + `id`), so a repeated request is one event. A batch is
//! checked whole first: one refused event refuses the batch and none is published.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use events::{ContentMode, EventKind};
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use actors::invalidator::Trigger;

use super::AppState;
use super::auth::scoped_api;
use super::error::ApiError;
use crate::config::Scope;

/// The largest request body: a whole batch of [`events::MAX_BATCH_EVENTS`] events.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// The route of this module, behind the `write` scope.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    scoped_api(
        OpenApiRouter::new()
            .routes(routes!(publish_event))
            .layer(DefaultBodyLimit::max(MAX_BODY)),
        &state.tokens,
        Scope::Write,
    )
}

/// A CloudEvents 1.0 event in structured JSON mode, as `docs/events.md` lists the types.
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used: the body is read by `events::decode`.
struct InboundEvent {
    /// Always `1.0`.
    #[schema(pattern = r"^1\.0$")]
    specversion: String,
    /// Any non-empty string of at most 128 bytes, unique with `source`.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00]+$")]
    id: String,
    /// Who emitted the event, e.g. `/authority`.
    #[schema(min_length = 1, pattern = r"^[^\x00]+$")]
    source: String,
    /// An inbound event type, e.g. `dev.provd.signer.revoked.v1`.
    #[schema(
        rename = "type",
        pattern = r"^dev\.provd\.(signer\.revoked|feed\.epoch_advanced|policy\.updated|invalidate\.requested|rekor\.submission\.requested)\.v1$"
    )]
    ty: String,
    /// When it happened (RFC 3339).
    #[schema(format = DateTime)]
    time: Option<String>,
    /// `application/json` when present.
    #[schema(pattern = r"^application/json")]
    datacontenttype: Option<String>,
    /// What the event is about.
    subject: Option<String>,
    /// Ties related events together in provd's logs.
    correlationid: Option<String>,
    /// The payload of the type (`docs/events.md`).
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// One event stored on the bus.
#[derive(Debug, Serialize, ToSchema)]
struct AcceptedEvent {
    /// Always `accepted`.
    status: &'static str,
    /// The event's `id`, as sent.
    id: String,
    /// The event's `type`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    ty: &'static str,
    /// The bus subject it was published on.
    subject: String,
}

/// Every event of a batch stored on the bus, in the batch's order.
#[derive(Debug, Serialize, ToSchema)]
struct AcceptedBatch {
    /// Always `accepted`.
    status: &'static str,
    /// Each event, in order.
    events: Vec<AcceptedEvent>,
}

/// What a 202 answers: one event, or a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum Accepted {
    /// A structured or binary-mode request.
    One(AcceptedEvent),
    /// A batch.
    Batch(AcceptedBatch),
}

/// One inbound event, checked and ready to publish.
struct Checked {
    kind: EventKind,
    id: String,
    key: uuid::Uuid,
    /// The structured JSON event that goes onto the bus.
    bytes: Vec<u8>,
}

/// Publishes CloudEvents onto the bus, as if published to their NATS subjects.
#[utoipa::path(post, path = "/api/v1/events", tag = "events",
    request_body(
        description = "One inbound CloudEvents 1.0 event (docs/events.md) in any mode of the HTTP binding: \
            structured (`application/cloudevents+json`, or `application/json` without `ce-` headers: the whole event); \
            binary (`ce-specversion` and the other attributes, extensions included, as percent-encoded `ce-<name>` headers, \
            `Content-Type` as `datacontenttype` and the JSON data as the body); \
            batch (`application/cloudevents-batch+json`: a JSON array of at most 100 structured events). \
            At most 2 MiB.",
        content(
            (InboundEvent = "application/cloudevents+json"),
            (InboundEvent = "application/json"),
            (Vec<InboundEvent> = "application/cloudevents-batch+json"))),
    params(
        ("ce-specversion" = Option<String>, Header, description = "binary mode: `1.0`; its presence selects binary mode"),
        ("ce-id" = Option<String>, Header, description = "binary mode: the event id"),
        ("ce-source" = Option<String>, Header, description = "binary mode: the event source"),
        ("ce-type" = Option<String>, Header, description = "binary mode: the event type")),
    responses(
        (status = 202, description = "stored on the bus: each event's `id`, `type` and `subject` (a batch lists them under `events`)", body = Accepted),
        (status = 400, description = "not an inbound event provd accepts, or a batch with a refused event (none of it is published); `error.message` names the event's index in a batch and the field"),
        (status = 401, description = "no or an unknown bearer token"),
        (status = 403, description = "the token lacks the `write` scope"),
        (status = 413, description = "the body is larger than 2 MiB"),
        (status = 415, description = "a CloudEvents event format other than JSON (e.g. `application/cloudevents+avro`)"),
        (status = 503, description = "the bus is unavailable (or, for a submission request, no transparency-log backend is configured); events may have been recorded: retry with the same events, whose `source` + `id` make each one event")),
    security(("bearer" = ["write"])))]
async fn publish_event(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let binary = headers.contains_key("ce-specversion");
    let accepted = match events::content_mode(content_type, binary) {
        ContentMode::UnsupportedFormat => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {:?} is a CloudEvents format provd does not read; send \
                 `{}`, `{}` or binary mode",
                content_type.unwrap_or_default(),
                events::STRUCTURED_JSON,
                events::BATCH_JSON
            )));
        }
        ContentMode::Structured => {
            let checked = check(&s, body.to_vec())?;
            Accepted::One(publish(&s, checked).await?)
        }
        ContentMode::Binary => {
            let structured = events::binary_to_structured(
                headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                &body,
            )
            .map_err(refused)?;
            let checked = check(&s, structured)?;
            Accepted::One(publish(&s, checked).await?)
        }
        ContentMode::Batch => {
            let parts = events::split_batch(&body).map_err(refused)?;
            // Every event is checked before any is published: accepted means applied.
            let mut checked = Vec::with_capacity(parts.len());
            for (i, bytes) in parts.into_iter().enumerate() {
                checked.push(check(&s, bytes).map_err(|e| match e {
                    ApiError::BadRequest(m) => ApiError::BadRequest(format!("event [{i}]: {m}")),
                    other => other,
                })?);
            }
            let mut events = Vec::with_capacity(checked.len());
            for c in checked {
                events.push(publish(&s, c).await?);
            }
            Accepted::Batch(AcceptedBatch {
                status: "accepted",
                events,
            })
        }
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

fn refused(e: events::DecodeError) -> ApiError {
    ApiError::BadRequest(format!("not an event provd accepts: {e}"))
}

/// Checks one structured event as its consumer would.
fn check(s: &AppState, body: Vec<u8>) -> Result<Checked, ApiError> {
    // provd's own outbound events (ledger rows, receipts, checkpoints) come only from provd;
    // say so before checking their payload.
    let named = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .and_then(|t| EventKind::from_type(&t));
    if let Some(kind) = named.filter(|k| !k.is_inbound()) {
        return Err(ApiError::BadRequest(format!(
            "`{}` is an event provd publishes, not one it accepts; inbound types are {}",
            kind.cloud_event_type(),
            EventKind::ALL
                .iter()
                .filter(|k| k.is_inbound())
                .map(|k| format!("`{}`", k.cloud_event_type()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (kind, event) = events::decode(&body).map_err(refused)?;
    // An invalidation is refused here if its invalidator would refuse it (a field the
    // stores cannot hold, no criterion), so an accepted event is always applied.
    if let Some(trigger) = Trigger::ALL.into_iter().find(|t| t.kind() == kind) {
        trigger.decode(&body).map_err(|r| {
            ApiError::BadRequest(format!("not an event provd accepts: {}", r.detail))
        })?;
    }
    // A submission request likewise gets the submitter's own check.
    if kind == EventKind::SubmissionRequested {
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
    Ok(Checked {
        kind,
        key: events::event_key(&event.source, &event.id),
        id: event.id,
        bytes: body,
    })
}

/// `bytes` (a structured event) with `cx` as its `traceparent` and `tracestate`, unless its
/// sender gave it a trace context of its own.
fn with_trace_context(bytes: Vec<u8>, cx: &actors::trace::TraceContext) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_slice(&bytes) else {
        return bytes;
    };
    if event.contains_key("traceparent") {
        return bytes;
    }
    event.insert("traceparent".into(), cx.traceparent.clone().into());
    if let Some(state) = &cx.tracestate {
        event.insert("tracestate".into(), state.clone().into());
    }
    serde_json::to_vec(&event).unwrap_or(bytes)
}

/// Publishes one checked event with its key as the message id, under a `publish <subject>`
/// span: the JetStream adapter writes its trace context as NATS headers, and an event that
/// carries no `traceparent` of its sender's gets this one (the distributed-tracing
/// extension), so its consumers continue the request's trace on either bus.
async fn publish(s: &AppState, c: Checked) -> Result<AcceptedEvent, ApiError> {
    let subject = s.subjects.subject(c.kind);
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {subject}"),
        otel.kind = "producer",
        subject = %subject,
    );
    let bytes = match actors::trace::TraceContext::of(&span) {
        Some(cx) => with_trace_context(c.bytes, &cx),
        None => c.bytes,
    };
    s.bus
        .publish(&subject, &c.key.to_string(), bytes)
        .instrument(span)
        .await
        .map_err(|e| super::may_have_been_recorded(e, "the same event `source` and `id`"))?;
    Ok(AcceptedEvent {
        status: "accepted",
        id: c.id,
        ty: c.kind.cloud_event_type(),
        subject,
    })
}
