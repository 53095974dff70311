//! Refusing an inbound message (an event, a write, a ledger row): counted, logged, recorded
//! for operators, and terminated so it never stalls the consumer behind it. Only when the
//! record itself cannot be written because the store is unavailable does the message come
//! back later, so no refusal goes unrecorded.

use std::time::Duration;

use chrono::Utc;

use crate::domain::limits;
use crate::ports::{Delivery, RejectedEvent, RejectedEventStore};

/// How much of a refused payload is kept.
pub const MAX_KEPT_PAYLOAD: usize = 64 * 1024;

/// How much of the explanation is kept.
const MAX_KEPT_DETAIL: usize = 8 * 1024;

/// When a rejection that could not be recorded comes back.
const RECORD_RETRY: Duration = Duration::from_secs(5);

/// Refuses `delivery`: records it, counts it under `base_subject` and `reason`, and
/// terminates it. `false` when it could not be recorded yet and was put back instead (it is
/// refused, recorded and counted when it comes back).
pub async fn reject(
    rejects: &dyn RejectedEventStore,
    delivery: &dyn Delivery,
    base_subject: &'static str,
    reason: &'static str,
    detail: String,
    event_id: Option<String>,
) -> bool {
    tracing::warn!(
        subject = delivery.subject(),
        reason,
        detail = %detail,
        event_id = event_id.as_deref().unwrap_or("-"),
        "rejected event"
    );
    let payload = delivery.payload();
    // The record must be storable whatever the message held: NUL and overlong ids or
    // subjects are made safe here, and the payload is kept as bytes.
    let record = RejectedEvent {
        subject: limits::storable_lossy(delivery.subject(), limits::SUBJECT_LEN),
        event_id: event_id.map(|id| limits::storable_lossy(&id, limits::EVENT_ID_LEN)),
        reason: reason.to_owned(),
        detail: limits::storable_lossy(&detail, MAX_KEPT_DETAIL),
        payload: payload[..payload.len().min(MAX_KEPT_PAYLOAD)].to_vec(),
        rejected_at: Utc::now(),
    };
    match rejects.record_rejected(&record).await {
        Ok(()) => {}
        Err(e) if e.is_transient() => {
            // Not recorded yet: the message comes back and is refused again, once the store
            // can record it, so an operator never misses it.
            tracing::warn!(error = %e, "cannot record a rejected message yet; it comes back");
            if let Err(e) = delivery.nak(RECORD_RETRY).await {
                tracing::warn!(error = %e, "could not nak a rejected message");
            }
            return false;
        }
        Err(e) => tracing::error!(error = %e, "the store refused the record of a rejected message"),
    }
    // Counted once, when it is settled for good.
    metrics::counter!(
        "provd_events_rejected_total",
        "subject" => base_subject,
        "reason" => reason
    )
    .increment(1);
    if let Err(e) = delivery.term().await {
        tracing::warn!(error = %e, "could not terminate rejected event");
    }
    true
}
