//! The one list of limits on what provd accepts: every identifier, hash and text that the
//! API, the events and the air-gap bundles carry into storage.
//!
//! A value is accepted only if both stores can hold it, so these limits are the narrower of
//! the PostgreSQL schema and SQLite (which holds anything) and the schemas follow them:
//! lengths are in bytes (a PostgreSQL `VARCHAR(n)` counts characters, and a character is at
//! least one byte), and no text or JSON string may contain NUL, which PostgreSQL's `TEXT`,
//! `VARCHAR` and `JSONB` refuse. README.md ("Limits") lists them for users.

/// A VeriKey, verdict hash, evidence root, policy hash or signer-set hash.
pub const HASH_LEN: usize = 128;
/// One signer key ID (or identity ID) of an entry.
pub const KEY_ID_LEN: usize = 256;
/// A vulnerability feed's id.
pub const FEED_ID_LEN: usize = 128;
/// A feed epoch.
pub const FEED_EPOCH_LEN: usize = 64;
/// A source artifact or SBOM digest.
pub const DIGEST_LEN: usize = 256;
/// What a revocation revoked (its criterion's value).
pub const REVOKED_KEY_LEN: usize = 512;
/// Why something was revoked.
pub const REASON_LEN: usize = 1024;
/// Who asked (an event's `source`).
pub const SOURCE_LEN: usize = 128;
/// A correlation id.
pub const CORRELATION_ID_LEN: usize = 128;
/// An event's id (the events crate refuses a longer one when it decodes an event).
pub const EVENT_ID_LEN: usize = events::MAX_ID_LEN;
/// An evidence content type.
pub const CONTENT_TYPE_LEN: usize = 64;
/// An event subject.
pub const SUBJECT_LEN: usize = 256;
/// The largest evidence chunk size and chunk count (a PostgreSQL `INTEGER`).
pub const MAX_CHUNK_FIELD: u64 = i32::MAX as u64;

/// Errors of the limits: each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A required value is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A value is longer than its limit.
    #[error("`{field}` is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its limit in bytes.
        max: usize,
    },
    /// A text contains NUL, which the stores cannot hold.
    #[error("`{0}` must not contain NUL (U+0000)")]
    Nul(&'static str),
    /// A JSON document holds NUL in a string or a key.
    #[error("`{field}` must not contain NUL (U+0000); found at {at}")]
    JsonNul {
        /// The field.
        field: &'static str,
        /// A JSON pointer to the string or key.
        at: String,
    },
    /// A number is outside its range.
    #[error("`{field}` must be between {min} and {max}, got {got}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Smallest accepted.
        min: i128,
        /// Largest accepted.
        max: i128,
        /// What was given.
        got: i128,
    },
}

/// Checks a text of at most `max` bytes without NUL; it may be empty.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::TooLong { field, max });
    }
    if value.contains('\0') {
        return Err(LimitError::Nul(field));
    }
    Ok(())
}

/// Checks a non-empty text of at most `max` bytes without NUL.
pub fn required(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.is_empty() {
        return Err(LimitError::Empty(field));
    }
    text(field, value, max)
}

/// Checks an optional non-empty text of at most `max` bytes without NUL.
pub fn optional(field: &'static str, value: Option<&str>, max: usize) -> Result<(), LimitError> {
    value.map_or(Ok(()), |v| required(field, v, max))
}

/// Checks that no string or key of a JSON document contains NUL.
pub fn json(field: &'static str, value: &serde_json::Value) -> Result<(), LimitError> {
    fn walk(v: &serde_json::Value, at: &mut String) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(at.clone()),
            serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let len = at.len();
                at.push('/');
                at.push_str(&i.to_string());
                let found = walk(item, at);
                at.truncate(len);
                found
            }),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                let len = at.len();
                at.push('/');
                // A JSON pointer escapes `~` and `/`.
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                let found = if k.contains('\0') {
                    Some(at.clone())
                } else {
                    walk(item, at)
                };
                at.truncate(len);
                found
            }),
            _ => None,
        }
    }
    let mut at = String::new();
    match walk(value, &mut at) {
        Some(at) => Err(LimitError::JsonNul {
            field,
            at: if at.is_empty() {
                "/".into()
            } else {
                at.replace('\0', "\\u0000")
            },
        }),
        None => Ok(()),
    }
}

/// Checks `got` is within `min..=max`.
pub fn range(field: &'static str, got: i128, min: i128, max: i128) -> Result<(), LimitError> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(LimitError::OutOfRange {
            field,
            min,
            max,
            got,
        })
    }
}

/// A text made storable for a record of something refused: NUL becomes U+FFFD and the text
/// is cut to at most `max` bytes on a character boundary. Only for diagnostics, never for
/// data that is applied.
pub fn storable_lossy(value: &str, max: usize) -> String {
    let clean = value.replace('\0', "\u{FFFD}");
    if clean.len() <= max {
        return clean;
    }
    let mut end = max;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts_are_bounded_and_free_of_nul() {
        assert!(text("f", "", 3).is_ok());
        assert!(text("f", "abc", 3).is_ok());
        assert_eq!(
            text("f", "abcd", 3),
            Err(LimitError::TooLong { field: "f", max: 3 })
        );
        assert_eq!(text("f", "a\0", 3), Err(LimitError::Nul("f")));
        assert_eq!(required("f", "", 3), Err(LimitError::Empty("f")));
        // Bytes, not characters: three bytes of one character exceed two.
        assert!(text("f", "€", 2).is_err());
        assert!(optional("f", None, 1).is_ok());
    }

    #[test]
    fn json_nul_is_found_in_strings_and_keys() {
        assert!(json("v", &json!({"a": ["b", {"c": 1}]})).is_ok());
        let e = json("v", &json!({"a": ["b", {"c": "x\u{0}"}]})).unwrap_err();
        assert_eq!(
            e,
            LimitError::JsonNul {
                field: "v",
                at: "/a/1/c".into()
            }
        );
        let e = json("v", &json!({"k\u{0}": 1})).unwrap_err();
        assert!(e.to_string().contains("/k\\u0000"), "{e}");
        assert!(json("v", &json!("\u{0}")).is_err());
    }

    #[test]
    fn lossy_records_are_storable() {
        assert_eq!(storable_lossy("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(storable_lossy("ééé", 3), "é");
        assert!(text("x", &storable_lossy("\0\0\0€", 4), 4).is_ok());
    }
}
