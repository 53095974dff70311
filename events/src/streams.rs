//! The JetStream streams that hold provd's events, as plain data.
//!
//! The streams are the queues: work acknowledged to a client lives in one of them until the
//! actor that owns it has committed its effect and acked. Adapters create these streams on
//! start (or the in-process bus mirrors them).

use std::time::Duration;

use crate::kind::{EventKind, Subjects};

/// How a stream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Kept until the limits (age, size) remove them; any number of consumers.
    Limits,
    /// Removed once acknowledged; one consumer per subject. Used for queues of work.
    WorkQueue,
}

/// One stream's definition, before a deployment prefix is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDef {
    /// Stream name, e.g. `PROV_EVENTS`.
    pub name: &'static str,
    /// Subjects the stream captures (wildcards allowed).
    pub subjects: &'static [&'static str],
    /// Retention policy.
    pub retention: Retention,
    /// Oldest message kept.
    pub max_age: Duration,
    /// Largest stream size in bytes.
    pub max_bytes: i64,
    /// Window within which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const GIB: i64 = 1024 * 1024 * 1024;

/// Inbound provenance-cache events from other systems.
pub const PROV_EVENTS: StreamDef = StreamDef {
    name: "PROV_EVENTS",
    subjects: &["prov.events.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(7 * 24 * 60 * 60),
    max_bytes: GIB,
    duplicate_window: Duration::from_secs(10 * 60),
};

/// The revocation ledger as published by the outbox.
pub const PROV_LEDGER: StreamDef = StreamDef {
    name: "PROV_LEDGER",
    subjects: &["prov.ledger.>"],
    retention: Retention::Limits,
    max_age: Duration::from_secs(30 * 24 * 60 * 60),
    max_bytes: GIB,
    duplicate_window: Duration::from_secs(10 * 60),
};

/// The Rekor submission queue.
pub const REKOR_SUBMISSIONS: StreamDef = StreamDef {
    name: "REKOR_SUBMISSIONS",
    subjects: &["rekor.submissions.requested"],
    retention: Retention::WorkQueue,
    max_age: Duration::from_secs(7 * 24 * 60 * 60),
    max_bytes: GIB,
    duplicate_window: DAY,
};

/// Outbound Rekor events: receipts, dead letters, checkpoints, divergences.
pub const REKOR_EVENTS: StreamDef = StreamDef {
    name: "REKOR_EVENTS",
    subjects: &[
        "rekor.entries.>",
        "rekor.submissions.dead_lettered",
        "rekor.checkpoints.>",
    ],
    retention: Retention::Limits,
    max_age: Duration::from_secs(30 * 24 * 60 * 60),
    max_bytes: GIB,
    duplicate_window: Duration::from_secs(10 * 60),
};

/// The subject of provcache writes on their way to PostgreSQL (before the prefix).
pub const PROVCACHE_WRITES_SUBJECT: &str = "provcache.writes";

/// The write-behind queue: accepted cache writes until the flusher has committed them.
/// Internal to provd, so no event kind maps to it; the write id deduplicates a retried
/// publish within a day.
pub const PROVCACHE_WRITES: StreamDef = StreamDef {
    name: "PROVCACHE_WRITES",
    subjects: &[PROVCACHE_WRITES_SUBJECT],
    retention: Retention::WorkQueue,
    max_age: Duration::from_secs(7 * 24 * 60 * 60),
    max_bytes: 4 * GIB,
    duplicate_window: DAY,
};

/// Every stream provd uses.
pub const ALL: [StreamDef; 5] = [
    PROV_EVENTS,
    PROV_LEDGER,
    REKOR_SUBMISSIONS,
    REKOR_EVENTS,
    PROVCACHE_WRITES,
];

/// The stream that captures `kind`'s subject.
pub fn stream_of(kind: EventKind) -> &'static StreamDef {
    let subject = kind.base_subject();
    ALL.iter()
        .find(|s| s.subjects.iter().any(|p| subject_matches(p, subject)))
        .unwrap_or(&PROV_EVENTS)
}

/// Whether a NATS subject pattern (`*` one token, `>` the rest) matches `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Subjects {
    /// The stream name of `def` under this deployment's prefix (`t1_PROV_EVENTS`).
    pub fn stream_name(&self, def: &StreamDef) -> String {
        if self.prefix().is_empty() {
            def.name.to_owned()
        } else {
            let p: String = self
                .prefix()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{p}_{}", def.name)
        }
    }

    /// The subjects of `def` under this deployment's prefix.
    pub fn stream_subjects(&self, def: &StreamDef) -> Vec<String> {
        def.subjects.iter().map(|s| self.prefixed(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_lands_in_exactly_one_stream() {
        for kind in EventKind::ALL {
            let n = ALL
                .iter()
                .filter(|s| {
                    s.subjects
                        .iter()
                        .any(|p| subject_matches(p, kind.base_subject()))
                })
                .count();
            assert_eq!(n, 1, "{kind:?}");
        }
        assert_eq!(
            stream_of(EventKind::SubmissionRequested).name,
            "REKOR_SUBMISSIONS"
        );
        assert_eq!(
            stream_of(EventKind::SubmissionDeadLettered).name,
            "REKOR_EVENTS"
        );
    }

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches(
            "prov.events.>",
            "prov.events.signer.revoked"
        ));
        assert!(!subject_matches("prov.events.>", "prov.events"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.d"));
    }

    #[test]
    fn prefixed_names_are_valid_stream_names() {
        let s = Subjects::new("t-1.x");
        assert_eq!(s.stream_name(&PROV_EVENTS), "t_1_x_PROV_EVENTS");
        assert_eq!(s.stream_subjects(&PROV_EVENTS), vec!["t-1.x.prov.events.>"]);
    }
}
