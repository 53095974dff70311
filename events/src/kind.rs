//! Event kinds, their CloudEvents types and their subjects.

/// Every event type in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Inbound: a signing key or signer set was revoked.
    SignerRevoked,
    /// Inbound: a vulnerability feed advanced its epoch.
    FeedEpochAdvanced,
    /// Inbound: a policy bundle changed.
    PolicyUpdated,
    /// Inbound: an operator or system asks to invalidate entries explicitly.
    InvalidateRequested,
    /// Inbound: an attestation should be submitted to a Rekor log.
    SubmissionRequested,
    /// Outbound: a row was appended to the revocation ledger.
    RevocationRecorded,
    /// Outbound: an attestation was logged and its receipt stored.
    EntryLogged,
    /// Outbound: a submission exhausted its attempts.
    SubmissionDeadLettered,
    /// Outbound: a log checkpoint was observed and verified.
    CheckpointObserved,
    /// Outbound: a log was caught serving inconsistent views.
    CheckpointDiverged,
}

impl EventKind {
    /// Every kind, inbound first.
    pub const ALL: [EventKind; 10] = [
        EventKind::SignerRevoked,
        EventKind::FeedEpochAdvanced,
        EventKind::PolicyUpdated,
        EventKind::InvalidateRequested,
        EventKind::SubmissionRequested,
        EventKind::RevocationRecorded,
        EventKind::EntryLogged,
        EventKind::SubmissionDeadLettered,
        EventKind::CheckpointObserved,
        EventKind::CheckpointDiverged,
    ];

    /// The CloudEvents `type` attribute, versioned with a `.vN` suffix.
    pub fn cloud_event_type(self) -> &'static str {
        match self {
            EventKind::SignerRevoked => "dev.provd.signer.revoked.v1",
            EventKind::FeedEpochAdvanced => "dev.provd.feed.epoch_advanced.v1",
            EventKind::PolicyUpdated => "dev.provd.policy.updated.v1",
            EventKind::InvalidateRequested => "dev.provd.invalidate.requested.v1",
            EventKind::SubmissionRequested => "dev.provd.rekor.submission.requested.v1",
            EventKind::RevocationRecorded => "dev.provd.ledger.revocation.recorded.v1",
            EventKind::EntryLogged => "dev.provd.rekor.entry.logged.v1",
            EventKind::SubmissionDeadLettered => "dev.provd.rekor.submission.dead_lettered.v1",
            EventKind::CheckpointObserved => "dev.provd.rekor.checkpoint.observed.v1",
            EventKind::CheckpointDiverged => "dev.provd.rekor.checkpoint.diverged.v1",
        }
    }

    /// The subject without any deployment prefix.
    pub fn base_subject(self) -> &'static str {
        match self {
            EventKind::SignerRevoked => "prov.events.signer.revoked",
            EventKind::FeedEpochAdvanced => "prov.events.feed.epoch_advanced",
            EventKind::PolicyUpdated => "prov.events.policy.updated",
            EventKind::InvalidateRequested => "prov.events.invalidate",
            EventKind::SubmissionRequested => "rekor.submissions.requested",
            EventKind::RevocationRecorded => "prov.ledger.revocations",
            EventKind::EntryLogged => "rekor.entries.logged",
            EventKind::SubmissionDeadLettered => "rekor.submissions.dead_lettered",
            EventKind::CheckpointObserved => "rekor.checkpoints.observed",
            EventKind::CheckpointDiverged => "rekor.checkpoints.diverged",
        }
    }

    /// Whether other systems publish this kind to provd.
    pub fn is_inbound(self) -> bool {
        matches!(
            self,
            EventKind::SignerRevoked
                | EventKind::FeedEpochAdvanced
                | EventKind::PolicyUpdated
                | EventKind::InvalidateRequested
                | EventKind::SubmissionRequested
        )
    }

    /// The kind whose versioned type is `ty`, if any.
    pub fn from_type(ty: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.cloud_event_type() == ty)
    }

    /// The type name without its version suffix, e.g. `dev.provd.signer.revoked`.
    pub fn unversioned_type(self) -> &'static str {
        let ty = self.cloud_event_type();
        ty.rsplit_once(".v").map_or(ty, |(name, _)| name)
    }
}

/// Subject names for one deployment.
///
/// An optional prefix keeps deployments (and tests) sharing one NATS server apart:
/// with prefix `t1`, `prov.events.invalidate` becomes `t1.prov.events.invalidate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`; an empty prefix gives the documented names.
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into().trim_end_matches('.').to_owned();
        Subjects { prefix }
    }

    /// The prefix, without a trailing dot; empty when none.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full subject of `kind`.
    pub fn subject(&self, kind: EventKind) -> String {
        self.prefixed(kind.base_subject())
    }

    /// `base` under this deployment's prefix.
    pub fn prefixed(&self, base: &str) -> String {
        if self.prefix.is_empty() {
            base.to_owned()
        } else {
            format!("{}.{base}", self.prefix)
        }
    }

    /// The kind whose subject is `subject`, if any.
    pub fn kind_of(&self, subject: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| self.subject(*k) == subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_unique_type_and_subject() {
        let mut types: Vec<_> = EventKind::ALL
            .iter()
            .map(|k| k.cloud_event_type())
            .collect();
        let mut subjects: Vec<_> = EventKind::ALL.iter().map(|k| k.base_subject()).collect();
        types.sort_unstable();
        types.dedup();
        subjects.sort_unstable();
        subjects.dedup();
        assert_eq!(types.len(), EventKind::ALL.len());
        assert_eq!(subjects.len(), EventKind::ALL.len());
    }

    #[test]
    fn prefix_applies_to_every_subject() {
        let s = Subjects::new("t42.");
        assert_eq!(
            s.subject(EventKind::InvalidateRequested),
            "t42.prov.events.invalidate"
        );
        assert_eq!(
            s.kind_of("t42.prov.events.invalidate"),
            Some(EventKind::InvalidateRequested)
        );
        assert_eq!(s.kind_of("prov.events.invalidate"), None);
        assert_eq!(
            Subjects::default().subject(EventKind::SignerRevoked),
            "prov.events.signer.revoked"
        );
    }

    #[test]
    fn type_round_trips() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_type(k.cloud_event_type()), Some(k));
            assert!(k.cloud_event_type().starts_with(k.unversioned_type()));
        }
    }
}
