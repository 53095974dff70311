//! The CloudEvents 1.0 structured-JSON envelope and the decoder for inbound events.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::data::EventData;
use crate::kind::EventKind;

/// The only CloudEvents spec version provd speaks.
pub const SPEC_VERSION: &str = "1.0";

/// A CloudEvents 1.0 event in structured JSON mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    /// Always `1.0`.
    pub specversion: String,
    /// The event id: any non-empty string, unique with `source` (provd emits UUIDv7s).
    /// [`crate::event_key`] turns the pair into the UUID the bus and the ledger key it by,
    /// so a republished event is deduplicated.
    pub id: String,
    /// Who emitted the event, as a URI reference (e.g. `urn:provd:node:a` or `/authority`).
    pub source: String,
    /// The versioned event type, e.g. `dev.provd.signer.revoked.v1`.
    #[serde(rename = "type")]
    pub ty: String,
    /// When the event happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// Always `application/json` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// Optional CloudEvents subject (what the event is about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Extension attribute tying related events together for tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// The distributed-tracing extension: the W3C `traceparent` of the span that published
    /// the event, so its consumers continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The distributed-tracing extension's W3C `tracestate`, when the trace has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The typed payload.
    pub data: T,
}

impl<T: EventData> CloudEvent<T> {
    /// A new event with a fresh UUIDv7 id, the current time and `T`'s type.
    pub fn new(source: impl Into<String>, data: T) -> Self {
        CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7().to_string(),
            source: source.into(),
            ty: T::KIND.cloud_event_type().to_owned(),
            time: Some(Utc::now()),
            datacontenttype: Some("application/json".to_owned()),
            subject: None,
            correlationid: None,
            traceparent: None,
            tracestate: None,
            data,
        }
    }

    /// The same event with a correlation id.
    pub fn with_correlation_id(mut self, id: Option<String>) -> Self {
        self.correlationid = id;
        self
    }

    /// The UUID this event is keyed by (its `source` and `id`; see [`crate::event_key`]).
    pub fn key(&self) -> Uuid {
        crate::binding::event_key(&self.source, &self.id)
    }

    /// The same event carrying a W3C trace context (the distributed-tracing extension).
    pub fn with_trace(mut self, traceparent: Option<String>, tracestate: Option<String>) -> Self {
        self.traceparent = traceparent;
        self.tracestate = tracestate;
        self
    }

    /// The structured-JSON bytes to publish.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why an inbound event was refused. The string forms are stable metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The bytes are not a JSON object.
    InvalidJson,
    /// `specversion` is not `1.0`.
    UnsupportedSpecVersion,
    /// The `type` is not one provd knows.
    UnknownType,
    /// The `type` names the right event with a version provd does not speak.
    UnsupportedVersion,
    /// The `type` belongs to another subject.
    SubjectMismatch,
    /// A required envelope or data field is absent.
    MissingField,
    /// A field has the wrong type or an invalid value.
    InvalidField,
    /// The payload is well-formed but says something impossible (e.g. no criterion).
    InvalidData,
    /// The store refused to hold what the message asks for, for good (its data, not an
    /// outage); recorded so it never blocks the messages behind it.
    StoreRefused,
}

impl RejectReason {
    /// The stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::UnsupportedSpecVersion => "unsupported_spec_version",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::SubjectMismatch => "subject_mismatch",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidData => "invalid_data",
            RejectReason::StoreRefused => "store_refused",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inbound event that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    /// The bounded reason, for metrics.
    pub reason: RejectReason,
    /// What exactly is wrong, for people.
    pub detail: String,
    /// The event id, when the envelope had one.
    pub event_id: Option<String>,
}

impl DecodeError {
    pub(crate) fn new(
        reason: RejectReason,
        detail: impl Into<String>,
        event_id: Option<String>,
    ) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
            event_id,
        }
    }
}

/// Decodes any provd event: the envelope, its type, and its payload checked against that
/// type's fields. The payload is returned as plain JSON.
pub fn decode(bytes: &[u8]) -> Result<(EventKind, CloudEvent<serde_json::Value>), DecodeError> {
    let raw = parse_object(bytes)?;
    let event_id = raw.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    check_spec_version(&raw, &event_id)?;
    let ty = type_of(&raw, &event_id)?;
    let kind = EventKind::from_type(ty).ok_or_else(|| {
        let reason = if EventKind::ALL
            .iter()
            .any(|k| ty.starts_with(&format!("{}.v", k.unversioned_type())))
        {
            RejectReason::UnsupportedVersion
        } else {
            RejectReason::UnknownType
        };
        DecodeError::new(
            reason,
            format!("unknown event type {ty:?}"),
            event_id.clone(),
        )
    })?;
    check_payload(kind, bytes)?;
    let event = envelope_from_value(raw, &event_id)?;
    Ok((kind, event))
}

fn check_payload(kind: EventKind, bytes: &[u8]) -> Result<(), DecodeError> {
    use crate::data::*;
    match kind {
        EventKind::SignerRevoked => decode_as::<SignerRevoked>(bytes).map(drop),
        EventKind::FeedEpochAdvanced => decode_as::<FeedEpochAdvanced>(bytes).map(drop),
        EventKind::PolicyUpdated => decode_as::<PolicyUpdated>(bytes).map(drop),
        EventKind::InvalidateRequested => decode_as::<InvalidateRequested>(bytes).map(drop),
        EventKind::SubmissionRequested => decode_as::<SubmissionRequested>(bytes).map(drop),
        EventKind::RevocationRecorded => decode_as::<RevocationRecorded>(bytes).map(drop),
        EventKind::EntryLogged => decode_as::<EntryLogged>(bytes).map(drop),
        EventKind::SubmissionDeadLettered => decode_as::<SubmissionDeadLettered>(bytes).map(drop),
        EventKind::CheckpointObserved => decode_as::<CheckpointObserved>(bytes).map(drop),
        EventKind::CheckpointDiverged => decode_as::<CheckpointDiverged>(bytes).map(drop),
    }
}

/// Decodes an event that must be of type `T`: the check every consumer runs on its subject.
pub fn decode_as<T: EventData + DeserializeOwned>(
    bytes: &[u8],
) -> Result<CloudEvent<T>, DecodeError> {
    let raw = parse_object(bytes)?;
    let event_id = raw.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    check_spec_version(&raw, &event_id)?;
    let ty = type_of(&raw, &event_id)?;
    let want = T::KIND.cloud_event_type();
    if ty != want {
        let (reason, detail) = if let Some(other) = EventKind::from_type(ty) {
            (
                RejectReason::SubjectMismatch,
                format!(
                    "type {ty:?} belongs on subject {:?}, expected {want:?} here",
                    other.base_subject()
                ),
            )
        } else if ty.starts_with(&format!("{}.v", T::KIND.unversioned_type())) {
            (
                RejectReason::UnsupportedVersion,
                format!("type {ty:?} is not a supported version; expected {want:?}"),
            )
        } else {
            (
                RejectReason::UnknownType,
                format!("unknown event type {ty:?}; expected {want:?}"),
            )
        };
        return Err(DecodeError::new(reason, detail, event_id));
    }
    let event: CloudEvent<T> = envelope_from_value(raw, &event_id)?;
    event
        .data
        .validate()
        .map_err(|msg| DecodeError::new(RejectReason::InvalidData, msg, event_id.clone()))?;
    Ok(event)
}

fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, DecodeError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::new(
            RejectReason::InvalidJson,
            "the event is not a JSON object",
            None,
        )),
        Err(e) => Err(DecodeError::new(
            RejectReason::InvalidJson,
            format!("the event is not valid JSON: {e}"),
            None,
        )),
    }
}

fn check_spec_version(
    raw: &serde_json::Map<String, serde_json::Value>,
    event_id: &Option<String>,
) -> Result<(), DecodeError> {
    match raw.get("specversion") {
        None => Err(DecodeError::new(
            RejectReason::MissingField,
            "missing field `specversion`",
            event_id.clone(),
        )),
        Some(serde_json::Value::String(v)) if v == SPEC_VERSION => Ok(()),
        Some(v) => Err(DecodeError::new(
            RejectReason::UnsupportedSpecVersion,
            format!("specversion {v} is not supported; expected \"1.0\""),
            event_id.clone(),
        )),
    }
}

fn type_of<'a>(
    raw: &'a serde_json::Map<String, serde_json::Value>,
    event_id: &Option<String>,
) -> Result<&'a str, DecodeError> {
    match raw.get("type") {
        None => Err(DecodeError::new(
            RejectReason::MissingField,
            "missing field `type`",
            event_id.clone(),
        )),
        Some(serde_json::Value::String(t)) => Ok(t),
        Some(_) => Err(DecodeError::new(
            RejectReason::InvalidField,
            "field `type` must be a string",
            event_id.clone(),
        )),
    }
}

fn envelope_from_value<T: DeserializeOwned>(
    raw: serde_json::Map<String, serde_json::Value>,
    event_id: &Option<String>,
) -> Result<CloudEvent<T>, DecodeError> {
    let event: CloudEvent<T> =
        serde_json::from_value(serde_json::Value::Object(raw)).map_err(|e| {
            let msg = e.to_string();
            let reason = if msg.starts_with("missing field") {
                RejectReason::MissingField
            } else {
                RejectReason::InvalidField
            };
            DecodeError::new(reason, msg, event_id.clone())
        })?;
    // Any non-empty string is an id (CloudEvents); it must fit where ids are kept.
    if event.id.is_empty() {
        return Err(DecodeError::new(
            RejectReason::InvalidField,
            "field `id` must not be empty",
            None,
        ));
    }
    if event.id.len() > crate::binding::MAX_ID_LEN || event.id.contains('\0') {
        return Err(DecodeError::new(
            RejectReason::InvalidField,
            format!(
                "field `id` must be at most {} bytes without NUL",
                crate::binding::MAX_ID_LEN
            ),
            None,
        ));
    }
    if event.source.is_empty() {
        return Err(DecodeError::new(
            RejectReason::InvalidField,
            "field `source` must not be empty",
            event_id.clone(),
        ));
    }
    if let Some(ct) = &event.datacontenttype
        && !ct.starts_with("application/json")
    {
        return Err(DecodeError::new(
            RejectReason::InvalidField,
            format!("datacontenttype {ct:?} is not supported; expected application/json"),
            event_id.clone(),
        ));
    }
    Ok(event)
}
