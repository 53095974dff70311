//! The CloudEvents protocol bindings provd receives events through, reduced to the one form
//! every consumer reads: a structured-JSON event.
//!
//! HTTP (`POST /api/v1/events`) and NATS both carry an event in *structured* mode (the whole
//! event as JSON in the body) or in *binary* mode (the attributes as `ce-` headers, the data
//! as the body); HTTP also carries a *batch* (a JSON array of structured events). The HTTP
//! and NATS bindings map binary mode the same way, so [`binary_to_structured`] serves both,
//! and [`split_batch`] splits a batch into its events. Each event then goes through
//! [`crate::decode`] exactly as a structured one would.
//!
//! [`event_key`] is the one place an event's identity (`source` + `id`, the CloudEvents
//! uniqueness rule) becomes the UUID provd keys it by: the bus message id, the ledger's
//! revocation id.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::envelope::{DecodeError, RejectReason};

/// The media type of a structured-mode JSON event.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json";
/// The media type of a batch of JSON events.
pub const BATCH_JSON: &str = "application/cloudevents-batch+json";
/// The most events one batch may carry: a batch is checked whole and published whole, so it
/// is held in memory at once and answered event by event.
pub const MAX_BATCH_EVENTS: usize = 100;
/// The longest event `id` accepted, in bytes: what both stores hold where an id is kept.
pub const MAX_ID_LEN: usize = 128;

/// How a message carries its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// The whole event as JSON in the body.
    Structured,
    /// The attributes as `ce-` headers, the data as the body.
    Binary,
    /// A JSON array of structured events (HTTP only).
    Batch,
    /// A CloudEvents event format provd does not read (not JSON, e.g. `+avro`).
    UnsupportedFormat,
}

/// The content mode of a message, from its `Content-Type` and whether it has a
/// `ce-specversion` header. A CloudEvents media type decides; otherwise `ce-specversion`
/// means binary mode; otherwise the body is read as a structured JSON event (what provd
/// always accepted as `application/json`).
pub fn content_mode(content_type: Option<&str>, has_ce_specversion: bool) -> ContentMode {
    let media = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media == BATCH_JSON {
        ContentMode::Batch
    } else if media == STRUCTURED_JSON {
        ContentMode::Structured
    } else if media.starts_with("application/cloudevents") {
        ContentMode::UnsupportedFormat
    } else if has_ce_specversion {
        ContentMode::Binary
    } else {
        ContentMode::Structured
    }
}

/// Whether `name` is the `ce-specversion` header (names are case-insensitive).
pub fn is_ce_specversion(name: &str) -> bool {
    name.eq_ignore_ascii_case("ce-specversion")
}

/// Converts a binary-mode message (HTTP or NATS) into the structured JSON event it carries.
///
/// Every `ce-<name>` header becomes the attribute `<name>` (extensions included), its value
/// percent-decoded as the bindings define; `Content-Type` is `datacontenttype` (a
/// `ce-datacontenttype` header, which NATS publishers send, wins); the body is `data`, read
/// as JSON, the only data provd's events carry. Other headers are ignored. Attribute values
/// stay strings: the envelope's decoder checks each as it checks a structured event.
pub fn binary_to_structured<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    body: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    let mut event = serde_json::Map::new();
    let mut content_type = None;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower == "content-type" {
            content_type = Some(header_text(name, value)?);
            continue;
        }
        let Some(attr) = lower.strip_prefix("ce-") else {
            continue;
        };
        // CloudEvents attribute names are lower-case ASCII letters and digits.
        if attr.is_empty() || !attr.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(format!(
                "header `{name}` does not name a CloudEvents attribute (letters and digits)"
            )));
        }
        if attr == "data" {
            return Err(invalid(format!(
                "header `{name}`: in binary mode the data is the body, not a header"
            )));
        }
        let text = percent_decode(name, &header_text(name, value)?)?;
        if event
            .insert(attr.to_owned(), serde_json::Value::String(text))
            .is_some()
        {
            return Err(invalid(format!("header `{name}` is given more than once")));
        }
    }
    if !event.contains_key("datacontenttype")
        && let Some(ct) = content_type
    {
        event.insert("datacontenttype".into(), serde_json::Value::String(ct));
    }
    let id = event.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    if !body.is_empty() {
        let json = event
            .get("datacontenttype")
            .and_then(|v| v.as_str())
            .is_none_or(is_json_media_type);
        if !json {
            return Err(DecodeError::new(
                RejectReason::InvalidField,
                format!(
                    "datacontenttype {:?} is not supported; expected application/json",
                    event["datacontenttype"].as_str().unwrap_or_default()
                ),
                id,
            ));
        }
        let data: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            DecodeError::new(
                RejectReason::InvalidJson,
                format!("field `data` (the body in binary mode) is not valid JSON: {e}"),
                id.clone(),
            )
        })?;
        event.insert("data".into(), data);
    }
    // Serialising a map of JSON values cannot fail.
    Ok(serde_json::to_vec(&serde_json::Value::Object(event)).unwrap_or_default())
}

/// Splits a batch (`application/cloudevents-batch+json`) into its structured events, each as
/// JSON bytes for [`crate::decode`]. Refused: anything but a JSON array, and more than
/// [`MAX_BATCH_EVENTS`] events. An empty array is a valid, empty batch.
pub fn split_batch(body: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        DecodeError::new(
            RejectReason::InvalidJson,
            format!("the batch is not valid JSON: {e}"),
            None,
        )
    })?;
    let serde_json::Value::Array(events) = value else {
        return Err(DecodeError::new(
            RejectReason::InvalidJson,
            "a batch is a JSON array of structured events",
            None,
        ));
    };
    if events.len() > MAX_BATCH_EVENTS {
        return Err(DecodeError::new(
            RejectReason::InvalidField,
            format!(
                "the batch holds {} events; at most {MAX_BATCH_EVENTS} are accepted in one request",
                events.len()
            ),
            None,
        ));
    }
    Ok(events
        .iter()
        // Serialising a JSON value cannot fail.
        .map(|e| serde_json::to_vec(e).unwrap_or_default())
        .collect())
}

/// The UUID an event is keyed by: its bus message id and its ledger revocation id.
///
/// CloudEvents makes `source` + `id` unique. An `id` that is a UUID in its usual
/// hyphenated form is kept as it is (provd's own events, and most SDKs' ids), so that id is
/// what the ledger shows; any other id is hashed with its source into a UUIDv8, the same for
/// the same pair everywhere. The hash input is length-prefixed, so no two pairs share it.
pub fn event_key(source: &str, id: &str) -> Uuid {
    if id.len() == 36
        && let Ok(uuid) = Uuid::try_parse(id)
    {
        return uuid;
    }
    let mut hash = Sha256::new();
    hash.update(b"provd:cloudevent:");
    hash.update((source.len() as u64).to_be_bytes());
    hash.update(source.as_bytes());
    hash.update(id.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn is_json_media_type(ct: &str) -> bool {
    let media = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

fn invalid(detail: String) -> DecodeError {
    DecodeError::new(RejectReason::InvalidField, detail, None)
}

fn header_text(name: &str, value: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(value.to_vec())
        .map_err(|_| invalid(format!("header `{name}` is not valid UTF-8")))
}

/// Percent-decoding as the HTTP binding (3.1.3.2) defines it: `%XX` is one byte of the
/// value's UTF-8; every other character stands for itself.
fn percent_decode(name: &str, text: &str) -> Result<String, DecodeError> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bad = || invalid(format!("header `{name}` has an invalid percent-encoding"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("header `{name}` does not decode to UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
        pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn modes_follow_the_content_type_then_the_headers() {
        use ContentMode::*;
        assert_eq!(
            content_mode(Some("application/cloudevents+json; charset=utf-8"), true),
            Structured
        );
        assert_eq!(
            content_mode(Some("Application/CloudEvents-Batch+JSON"), false),
            Batch
        );
        assert_eq!(
            content_mode(Some("application/cloudevents+avro"), false),
            UnsupportedFormat
        );
        assert_eq!(content_mode(Some("application/json"), true), Binary);
        assert_eq!(content_mode(None, true), Binary);
        assert_eq!(content_mode(Some("application/json"), false), Structured);
        assert_eq!(content_mode(None, false), Structured);
    }

    #[test]
    fn binary_headers_become_the_structured_event() {
        let out = binary_to_structured(
            h(&[
                ("ce-specversion", "1.0"),
                ("CE-ID", "order 7"),
                ("ce-source", "/a%20b%C3%A9"),
                ("ce-type", "dev.provd.signer.revoked.v1"),
                ("ce-myext", "x%25y"),
                ("content-type", "application/json; charset=utf-8"),
                ("authorization", "Bearer t"),
            ]),
            br#"{"signer_key_id":"k"}"#,
        )
        .expect("converted");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "specversion": "1.0", "id": "order 7", "source": "/a bé",
                "type": "dev.provd.signer.revoked.v1", "myext": "x%y",
                "datacontenttype": "application/json; charset=utf-8",
                "data": {"signer_key_id": "k"}
            })
        );
    }

    #[test]
    fn binary_refusals_name_the_header() {
        let e = binary_to_structured(h(&[("ce-specversion", "1.0"), ("ce-id", "%zz")]), b"")
            .unwrap_err();
        assert!(e.detail.contains("`ce-id`"), "{e}");
        let e = binary_to_structured(h(&[("ce-data", "x")]), b"").unwrap_err();
        assert!(e.detail.contains("`ce-data`"), "{e}");
        let e = binary_to_structured(h(&[("ce-my_ext", "x")]), b"").unwrap_err();
        assert!(e.detail.contains("`ce-my_ext`"), "{e}");
        let e = binary_to_structured(h(&[("ce-id", "1"), ("content-type", "text/plain")]), b"x")
            .unwrap_err();
        assert!(e.detail.contains("datacontenttype"), "{e}");
        let e = binary_to_structured(h(&[("ce-id", "1")]), b"{").unwrap_err();
        assert!(e.detail.contains("`data`"), "{e}");
    }

    #[test]
    fn a_binary_event_without_specversion_is_named_by_the_decoder() {
        let out = binary_to_structured(h(&[("ce-id", "1")]), b"{}").unwrap();
        let e = crate::decode(&out).unwrap_err();
        assert!(e.detail.contains("`specversion`"), "{e}");
    }

    #[test]
    fn batches_are_split_and_bounded() {
        assert_eq!(split_batch(b"[]").unwrap().len(), 0);
        assert_eq!(split_batch(br#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert!(split_batch(br#"{"a":1}"#).is_err());
        let many = format!("[{}]", vec!["{}"; MAX_BATCH_EVENTS + 1].join(","));
        let e = split_batch(many.as_bytes()).unwrap_err();
        assert!(e.detail.contains(&MAX_BATCH_EVENTS.to_string()), "{e}");
    }

    #[test]
    fn keys_keep_uuids_and_hash_other_ids_with_their_source() {
        let u = "0192f3a4-1b2c-7d3e-8f40-123456789abc";
        assert_eq!(event_key("/a", u).to_string(), u);
        assert_eq!(event_key("/a", "order-7"), event_key("/a", "order-7"));
        assert_ne!(event_key("/a", "order-7"), event_key("/b", "order-7"));
        // The length prefix keeps ("/ab", "c") and ("/a", "bc") apart.
        assert_ne!(event_key("/ab", "c"), event_key("/a", "bc"));
        assert_eq!(event_key("/a", "order-7").get_version_num(), 8);
        // A UUID written another way is an ordinary string id.
        let simple = u.replace('-', "");
        assert_ne!(event_key("/a", &simple).to_string(), u);
    }
}
