//! provd's event contract.
//!
//! Every event provd consumes or emits is a CloudEvents 1.0 structured-JSON envelope
//! ([`CloudEvent`]) carrying one of the typed payloads in [`data`]. Each event type has a
//! versioned CloudEvents `type` and exactly one NATS subject ([`EventKind`]); the JetStream
//! streams that hold them are described as plain data in [`streams`]. This crate does no I/O:
//! adapters map these definitions onto NATS JetStream or the in-process bus.
//!
//! Inbound events from other systems are parsed with [`decode`], which checks the envelope,
//! the type and its version against the subject, and the payload's fields, and reports a
//! bounded [`RejectReason`] for anything it refuses. Events that arrive in CloudEvents'
//! binary or batch mode are first turned into structured events ([`binary_to_structured`],
//! [`split_batch`]); [`event_key`] is the UUID an event (`source` + `id`) is keyed by.

mod binding;
pub mod data;
mod envelope;
mod kind;
pub mod streams;

pub use binding::{
    BATCH_JSON, ContentMode, MAX_BATCH_EVENTS, MAX_ID_LEN, STRUCTURED_JSON, binary_to_structured,
    content_mode, event_key, is_ce_specversion, split_batch,
};
pub use envelope::{CloudEvent, DecodeError, RejectReason, SPEC_VERSION, decode, decode_as};
pub use kind::{EventKind, Subjects};
