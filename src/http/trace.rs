//! Request tracing: every request gets a request id (the caller's `x-request-id`, or a new
//! UUID) and, when the caller sent one, a correlation id (`x-correlation-id`). Both are
//! fields of a span around the handler, so every log line of the work the request causes
//! carries them; the request id is handed to the handler in the request's headers (so it can
//! travel on in a CloudEvent) and returned in the response.
//!
//! The same layer counts requests and times them by method and matched route (a route
//! template such as `/api/v1/proofs/{proofRoot}`, never the concrete path, so the labels
//! stay bounded). Headers are never logged: they carry bearer tokens.
//!
//! With OpenTelemetry on (`otel.endpoint`) the span is the request's server span, the child
//! of the caller's span when the request carries a W3C `traceparent`.

use std::time::Instant;

use actors::trace::TraceContext;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";
/// The correlation id header.
pub const CORRELATION_ID: &str = "x-correlation-id";
/// The W3C trace-context headers.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// An id a caller may choose: 1–128 visible ASCII characters.
fn usable(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then_some(s)
}

/// The middleware (`Router::layer(axum::middleware::from_fn(trace))`).
pub async fn trace(mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(usable)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let correlation_id = req
        .headers()
        .get(CORRELATION_ID)
        .and_then(usable)
        .map(str::to_owned);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Any token is a valid method; only the standard ones become label values.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let span = tracing::info_span!(
        "http",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        request_id = %request_id,
        correlation_id = correlation_id.as_deref().unwrap_or("-"),
        method = %method,
        route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    // Named for OpenTelemetry only when spans are exported (the log lines stay as they were).
    if actors::trace::exporting() {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
    }
    // A caller's W3C trace context makes this request a child of the caller's span.
    let caller = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        TraceContext::from_headers(header(TRACEPARENT), header(TRACESTATE))
    };
    actors::trace::adopt(&span, caller.as_ref());
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    if actors::trace::exporting() {
        span.record("http.response.status_code", status);
    }
    span.in_scope(|| {
        // Probes and scrapes come every few seconds; they would drown the rest.
        if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
            tracing::debug!(status, elapsed_ms = elapsed.as_millis() as u64, "request");
        } else {
            tracing::info!(status, elapsed_ms = elapsed.as_millis() as u64, "request");
        }
    });
    metrics::counter!(
        "provd_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("provd_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}
