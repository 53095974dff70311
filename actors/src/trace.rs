//! W3C trace context across the bus, so one trace follows a request from the API through the
//! queues and actors to the logs and to every node.
//!
//! Every event provd publishes goes through [`publish`]: a `publish <subject>` span whose
//! context is written into the CloudEvent (the distributed-tracing extension's `traceparent`
//! and `tracestate`) and, by the JetStream adapter, into the NATS headers. A consumer makes
//! its per-message span a child of that context with [`adopt`] ([`parent_of`] picks the
//! header or the event's extension). Without export (no `otel.endpoint`: `exporting()` is false, unit
//! tests) spans have no context: nothing is written and adopting does nothing.

use std::collections::HashMap;

use events::CloudEvent;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::ports::{Delivery, EventBus, PortError};

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that spans are exported (set once by the process's telemetry), so hot paths name
/// their spans for OpenTelemetry only then, and logs carry no such fields otherwise.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// A W3C trace context: the `traceparent` and `tracestate` headers' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`: version, trace id, parent span id, flags.
    pub traceparent: String,
    /// `tracestate`, when the trace carries vendor state.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of `span`, when it is part of a trace.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        // Without export no span has a context; this skips the lookup on every publish.
        if !exporting() {
            return None;
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        Some(TraceContext {
            traceparent: carrier.remove("traceparent")?,
            tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
        })
    }

    /// The context of the current span.
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current())
    }

    /// A context from header values, when `traceparent` is present.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Self> {
        Some(TraceContext {
            traceparent: traceparent?.trim().to_owned(),
            tracestate: tracestate.map(str::to_owned).filter(|s| !s.is_empty()),
        })
    }

    /// The context an event carries in its distributed-tracing extension.
    pub fn of_event<T>(event: &CloudEvent<T>) -> Option<Self> {
        Self::from_headers(event.traceparent.as_deref(), event.tracestate.as_deref())
    }
}

/// Makes `parent` the parent of `span`, which must not have been entered yet. A missing or
/// malformed context leaves `span` where it is (a new trace, or its current parent).
pub fn adopt(span: &tracing::Span, parent: Option<&TraceContext>) {
    let Some(parent) = parent.filter(|_| exporting()) else {
        return;
    };
    let cx = context_of(parent);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to `other`: for work done once for several messages (a batch), whose
/// other traces it also continues.
pub fn link(span: &tracing::Span, other: &TraceContext) {
    if !exporting() {
        return;
    }
    let cx = context_of(other);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

fn context_of(cx: &TraceContext) -> opentelemetry::Context {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), cx.traceparent.clone());
    if let Some(state) = &cx.tracestate {
        carrier.insert("tracestate".to_owned(), state.clone());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The context a delivered message continues: the bus's headers first (set by the
/// publishing adapter, or by another system), else the event's own extension.
pub fn parent_of(delivery: &dyn Delivery, event: Option<&TraceContext>) -> Option<TraceContext> {
    delivery.trace_context().or_else(|| event.cloned())
}

/// Publishes `event` on `subject` under a `publish <subject>` span, whose trace context the
/// event carries (and the bus's headers, where the bus has them).
pub async fn publish<T: serde::Serialize>(
    bus: &dyn EventBus,
    subject: &str,
    msg_id: &str,
    event: CloudEvent<T>,
) -> Result<(), PortError> {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {subject}"),
        otel.kind = "producer",
        subject = %subject,
        msg_id = %msg_id,
    );
    let cx = TraceContext::of(&span);
    let mut event = event;
    if let Some(cx) = cx {
        event.traceparent = Some(cx.traceparent);
        event.tracestate = cx.tracestate;
    }
    let payload = serde_json::to_vec(&event).unwrap_or_default();
    bus.publish(subject, msg_id, payload).instrument(span).await
}
