//! Refusing an inbound event: counted, logged, recorded for operators, and terminated so it
//! never stalls the consumer behind it.

use chrono::Utc;

use crate::ports::{Delivery, RejectedEvent, RejectedEventStore};

/// How much of a refused payload is kept.
pub const MAX_KEPT_PAYLOAD: usize = 64 * 1024;

/// Refuses `delivery`: counts it under `base_subject` and `reason`, records it, and
/// terminates it.
pub async fn reject(
    rejects: &dyn RejectedEventStore,
    delivery: &dyn Delivery,
    base_subject: &'static str,
    reason: &'static str,
    detail: String,
    event_id: Option<String>,
) {
    tracing::warn!(
        subject = delivery.subject(),
        reason,
        detail = %detail,
        event_id = event_id.as_deref().unwrap_or("-"),
        "rejected event"
    );
    metrics::counter!(
        "provd_events_rejected_total",
        "subject" => base_subject,
        "reason" => reason
    )
    .increment(1);
    let payload = delivery.payload();
    let record = RejectedEvent {
        subject: delivery.subject().to_owned(),
        event_id,
        reason: reason.to_owned(),
        detail,
        payload: payload[..payload.len().min(MAX_KEPT_PAYLOAD)].to_vec(),
        rejected_at: Utc::now(),
    };
    if let Err(e) = rejects.record_rejected(&record).await {
        // The counter and the log line above still record it.
        tracing::warn!(error = %e, "could not store rejected event");
    }
    if let Err(e) = delivery.term().await {
        tracing::warn!(error = %e, "could not terminate rejected event");
    }
}
