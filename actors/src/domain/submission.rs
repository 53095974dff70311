//! Rekor submissions: the submission id and the lifecycle of a submission.
//!
//! The id is derived from what is logged and where, so the same envelope sent twice to the
//! same backend is one submission: the queue deduplicates it and the API answers with the
//! existing id. The derivation is length-prefixed and domain-separated, like the VeriKey.

use std::fmt;

use aws_lc_rs::digest::{Context, SHA256};

use super::dsse::Envelope;

/// Errors of the submission rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    /// A stored status is not one provd knows.
    #[error("unknown submission status {0:?}")]
    UnknownStatus(String),
}

/// Where a submission is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubmissionStatus {
    /// Accepted and waiting in the queue.
    Queued,
    /// An attempt is in flight.
    Submitting,
    /// The last attempt failed transiently; another follows after a backoff.
    Retrying,
    /// The log holds it and its receipt is stored.
    Logged,
    /// Given up: a permanent failure or too many attempts. An operator may retry it.
    DeadLettered,
}

impl SubmissionStatus {
    /// The stored and reported form.
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionStatus::Queued => "queued",
            SubmissionStatus::Submitting => "submitting",
            SubmissionStatus::Retrying => "retrying",
            SubmissionStatus::Logged => "logged",
            SubmissionStatus::DeadLettered => "dead_lettered",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Result<Self, SubmissionError> {
        Ok(match s {
            "queued" => SubmissionStatus::Queued,
            "submitting" => SubmissionStatus::Submitting,
            "retrying" => SubmissionStatus::Retrying,
            "logged" => SubmissionStatus::Logged,
            "dead_lettered" => SubmissionStatus::DeadLettered,
            other => return Err(SubmissionError::UnknownStatus(other.to_owned())),
        })
    }

    /// Whether an operator may put it back in the queue: a dead-lettered one, or a queued
    /// one whose queue message may never have been published.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            SubmissionStatus::DeadLettered | SubmissionStatus::Queued
        )
    }
}

impl fmt::Display for SubmissionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const DOMAIN: &[u8] = b"provd-rekor-submission-v1";

fn field(ctx: &mut Context, bytes: &[u8]) {
    ctx.update(&(bytes.len() as u64).to_be_bytes());
    ctx.update(bytes);
}

/// The submission id: `sub-` and the hex SHA-256 of the domain tag, the backend name, and
/// the envelope's payload type, payload and signatures (key id and signature, in order),
/// each length-prefixed. The JSON spelling of the envelope does not matter.
pub fn submission_id(backend: &str, envelope: &Envelope) -> String {
    let mut ctx = Context::new(&SHA256);
    field(&mut ctx, DOMAIN);
    field(&mut ctx, backend.as_bytes());
    field(&mut ctx, envelope.payload_type.as_bytes());
    field(&mut ctx, envelope.payload.as_bytes());
    ctx.update(&(envelope.signatures.len() as u64).to_be_bytes());
    for s in &envelope.signatures {
        field(&mut ctx, s.keyid.as_bytes());
        field(&mut ctx, s.sig.as_bytes());
    }
    format!("sub-{}", hex::encode(ctx.finish().as_ref()))
}

/// Whether `s` has the form of a submission id (`sub-` and 64 lowercase hex digits); one
/// that does not cannot name a submission.
pub fn is_submission_id(s: &str) -> bool {
    s.strip_prefix("sub-").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dsse::Signature;

    fn envelope(sig: &str) -> Envelope {
        Envelope {
            payload: "eyJhIjoxfQ==".into(),
            payload_type: "application/vnd.in-toto+json".into(),
            signatures: vec![Signature {
                keyid: String::new(),
                sig: sig.into(),
            }],
        }
    }

    #[test]
    fn same_envelope_and_backend_is_one_submission() {
        let a = submission_id("public", &envelope("c2ln"));
        assert_eq!(a, submission_id("public", &envelope("c2ln")));
        assert!(a.starts_with("sub-") && a.len() == 68, "{a}");
        // Re-serialising the envelope with other whitespace does not change it.
        let json = "{ \"payloadType\": \"application/vnd.in-toto+json\",\n \
                    \"payload\": \"eyJhIjoxfQ==\", \"signatures\": [{\"sig\": \"c2ln\"}] }";
        let parsed = Envelope::from_json(json.as_bytes()).expect("parses");
        assert_eq!(a, submission_id("public", &parsed));
    }

    #[test]
    fn backend_and_every_envelope_field_change_the_id() {
        let base = submission_id("public", &envelope("c2ln"));
        assert_ne!(base, submission_id("private", &envelope("c2ln")));
        assert_ne!(base, submission_id("public", &envelope("c2lo")));
        let mut e = envelope("c2ln");
        e.payload_type = "text/plain".into();
        assert_ne!(base, submission_id("public", &e));
        let mut e = envelope("c2ln");
        e.signatures[0].keyid = "k".into();
        assert_ne!(base, submission_id("public", &e));
        // Length prefixes keep field boundaries: moving a byte between fields changes it.
        assert_ne!(
            submission_id("ab", &envelope("c2ln")),
            submission_id("a", &envelope("bc2ln"))
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            SubmissionStatus::Queued,
            SubmissionStatus::Submitting,
            SubmissionStatus::Retrying,
            SubmissionStatus::Logged,
            SubmissionStatus::DeadLettered,
        ] {
            assert_eq!(SubmissionStatus::parse(s.as_str()), Ok(s));
        }
        assert!(SubmissionStatus::parse("lost").is_err());
    }
}
