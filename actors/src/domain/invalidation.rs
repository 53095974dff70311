//! Invalidation rules: what an event asks to remove, and the ledger row that records it.
//!
//! Every trigger (signer revoked, feed epoch advanced, policy updated, explicit) becomes one
//! [`Invalidation`]: a [`Criterion`] saying which entries go, plus who asked and why. The
//! criterion is kept in the ledger row's metadata so a replay can re-apply it exactly.

use events::CloudEvent;
use events::data::{
    FeedEpochAdvanced, InvalidateRequested, PolicyUpdated, RevocationRecorded, SignerRevoked,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::DomainError;
use super::epoch::FeedEpoch;
use super::limits;

/// The ledger's `revocation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationType {
    /// A signing key or signer set was revoked.
    Signer,
    /// A vulnerability feed advanced.
    FeedEpoch,
    /// A policy changed.
    Policy,
    /// Someone asked explicitly.
    Explicit,
}

impl RevocationType {
    /// The stored and labelled form.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationType::Signer => "signer",
            RevocationType::FeedEpoch => "feed_epoch",
            RevocationType::Policy => "policy",
            RevocationType::Explicit => "explicit",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [
            RevocationType::Signer,
            RevocationType::FeedEpoch,
            RevocationType::Policy,
            RevocationType::Explicit,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// Which entries an invalidation removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    /// The one entry with this VeriKey.
    VeriKey(String),
    /// Every entry whose signer set contains this key ID.
    SignerKeyId(String),
    /// Every entry signed by this signer set.
    SignerSetHash(String),
    /// Every entry decided under this policy hash.
    PolicyHash(String),
    /// Every entry (of `feed_id`, when given) whose feed epoch is older than `before`.
    FeedEpochBefore {
        /// Restricts the criterion to one feed, when the event names it.
        feed_id: Option<String>,
        /// Entries with an older epoch go.
        before: FeedEpoch,
    },
}

impl Criterion {
    /// The criterion's name in ledger metadata.
    pub fn name(&self) -> &'static str {
        match self {
            Criterion::VeriKey(_) => "veri_key",
            Criterion::SignerKeyId(_) => "signer_key_id",
            Criterion::SignerSetHash(_) => "signer_set_hash",
            Criterion::PolicyHash(_) => "policy_hash",
            Criterion::FeedEpochBefore { .. } => "feed_epoch_before",
        }
    }

    /// The ledger's `revoked_key`: the value the criterion matches on.
    pub fn value(&self) -> String {
        match self {
            Criterion::VeriKey(v)
            | Criterion::SignerKeyId(v)
            | Criterion::SignerSetHash(v)
            | Criterion::PolicyHash(v) => v.clone(),
            Criterion::FeedEpochBefore { before, .. } => before.to_string(),
        }
    }

    /// Metadata that lets a replay rebuild this criterion.
    pub fn to_metadata(&self) -> serde_json::Value {
        match self {
            Criterion::FeedEpochBefore { feed_id, before } => json!({
                "criterion": self.name(),
                "value": before.to_string(),
                "feed_id": feed_id,
            }),
            _ => json!({"criterion": self.name(), "value": self.value()}),
        }
    }

    /// Rebuilds a criterion from ledger metadata.
    pub fn from_metadata(meta: &serde_json::Value) -> Result<Self, DomainError> {
        let bad = |why: &str| DomainError::InvalidCriterion(why.to_owned());
        let name = meta
            .get("criterion")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("metadata has no `criterion`"))?;
        let value = meta
            .get("value")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("metadata has no `value`"))?
            .to_owned();
        Ok(match name {
            "veri_key" => Criterion::VeriKey(value),
            "signer_key_id" => Criterion::SignerKeyId(value),
            "signer_set_hash" => Criterion::SignerSetHash(value),
            "policy_hash" => Criterion::PolicyHash(value),
            "feed_epoch_before" => Criterion::FeedEpochBefore {
                feed_id: meta
                    .get("feed_id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                before: FeedEpoch::parse(&value)?,
            },
            other => return Err(bad(&format!("unknown criterion {other:?}"))),
        })
    }
}

/// One invalidation to carry out and record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// The ledger's revocation id: the key of the event that asked for it
    /// ([`events::event_key`]: its id when that is a UUID, else derived from source and id),
    /// so a redelivered event is recognised and invalidates once.
    pub revocation_id: Uuid,
    /// The ledger's type.
    pub revocation_type: RevocationType,
    /// Which entries go.
    pub criterion: Criterion,
    /// Why.
    pub reason: Option<String>,
    /// Who asked (the event's `source`).
    pub source: String,
    /// Correlation id for tracing.
    pub correlation_id: Option<String>,
    /// A W3C `traceparent`: the publisher's, as the event carried it; the invalidator
    /// replaces it with its own span's (or clears it) before recording, so the ledger row
    /// keeps only a context provd made and its outbox continues that trace.
    pub traceparent: Option<String>,
}

fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Invalidation {
    fn from_event<T>(
        event: &CloudEvent<T>,
        revocation_type: RevocationType,
        criterion: Criterion,
        reason: Option<String>,
    ) -> Result<Self, DomainError> {
        let inv = Invalidation {
            revocation_id: events::event_key(&event.source, &event.id),
            revocation_type,
            criterion,
            reason,
            source: event.source.clone(),
            correlation_id: event.correlationid.clone(),
            traceparent: event.traceparent.clone(),
        };
        inv.validate()?;
        Ok(inv)
    }

    /// Checks every field fits the ledger and the entry indexes of both stores
    /// ([`limits`]), so an accepted invalidation can always be recorded and applied.
    pub fn validate(&self) -> Result<(), DomainError> {
        let (field, max) = match &self.criterion {
            Criterion::VeriKey(_) => ("veri_key", limits::HASH_LEN),
            Criterion::SignerKeyId(_) => ("signer_key_id", limits::KEY_ID_LEN),
            Criterion::SignerSetHash(_) => ("signer_set_hash", limits::HASH_LEN),
            Criterion::PolicyHash(_) => ("policy_hash", limits::HASH_LEN),
            Criterion::FeedEpochBefore { feed_id, .. } => {
                limits::optional("feed_id", feed_id.as_deref(), limits::FEED_ID_LEN)?;
                ("feed_epoch", limits::FEED_EPOCH_LEN)
            }
        };
        // The criterion's value is the ledger's `revoked_key` and what the indexes match.
        limits::required(
            field,
            &self.criterion.value(),
            max.min(limits::REVOKED_KEY_LEN),
        )?;
        limits::optional("reason", self.reason.as_deref(), limits::REASON_LEN).or_else(
            |e| match e {
                // An empty reason is stored as given.
                limits::LimitError::Empty(_) => Ok(()),
                other => Err(other),
            },
        )?;
        limits::required("source", &self.source, limits::SOURCE_LEN)?;
        limits::optional(
            "correlationid",
            self.correlation_id.as_deref(),
            limits::CORRELATION_ID_LEN,
        )?;
        Ok(())
    }

    /// An explicit invalidation (API or `prov.events.invalidate`).
    pub fn explicit(event: &CloudEvent<InvalidateRequested>) -> Result<Self, DomainError> {
        let d = &event.data;
        let criterion = if let Some(v) = non_blank(&d.veri_key) {
            Criterion::VeriKey(v)
        } else if let Some(v) = non_blank(&d.signer_set_hash) {
            Criterion::SignerSetHash(v)
        } else if let Some(v) = non_blank(&d.policy_hash) {
            Criterion::PolicyHash(v)
        } else if let Some(v) = non_blank(&d.feed_epoch_before) {
            Criterion::FeedEpochBefore {
                feed_id: None,
                // The refusal names the field the caller filled in.
                before: FeedEpoch::parse(&v).map_err(|e| {
                    DomainError::InvalidCriterion(format!("field `feed_epoch_before`: {e}"))
                })?,
            }
        } else {
            return Err(DomainError::InvalidCriterion(
                "no criterion: give veri_key, signer_set_hash, policy_hash or feed_epoch_before"
                    .to_owned(),
            ));
        };
        Self::from_event(
            event,
            RevocationType::Explicit,
            criterion,
            Some(d.reason.clone()),
        )
    }

    /// A signer revocation, by key ID, signer-set hash, certificate identity or managed-key
    /// fingerprint. An identity and a fingerprint become the key IDs that verdicts decided
    /// by provd record for them ([`super::policy::identity_id`], [`super::policy::key_id`]),
    /// so they go through the same index and the same ledger path as a key ID.
    pub fn signer_revoked(event: &CloudEvent<SignerRevoked>) -> Result<Self, DomainError> {
        let d = &event.data;
        let (criterion, named) = if let Some(k) = non_blank(&d.signer_key_id) {
            (Criterion::SignerKeyId(k), None)
        } else if let Some(h) = non_blank(&d.signer_set_hash) {
            (Criterion::SignerSetHash(h), None)
        } else if let Some(i) = &d.identity {
            (
                Criterion::SignerKeyId(super::policy::identity_id(&i.issuer, &i.san)),
                Some(format!("identity {} (issuer {})", i.san, i.issuer)),
            )
        } else if let Some(f) = non_blank(&d.key_fingerprint) {
            let named = format!("key {f}");
            (
                Criterion::SignerKeyId(super::policy::key_id(&f)),
                Some(named),
            )
        } else {
            return Err(DomainError::InvalidCriterion(
                "give signer_key_id, signer_set_hash, identity or key_fingerprint".to_owned(),
            ));
        };
        // The ledger's revoked key is a hash for identities and keys: say in clear who it was.
        let reason = match (d.reason.clone(), named) {
            (Some(r), Some(n)) => Some(format!("{r} ({n})")),
            (None, Some(n)) => Some(format!("{n} revoked")),
            (r, None) => r,
        };
        Self::from_event(event, RevocationType::Signer, criterion, reason)
    }

    /// A feed epoch advance: entries of that feed with an older epoch go.
    pub fn feed_epoch_advanced(event: &CloudEvent<FeedEpochAdvanced>) -> Result<Self, DomainError> {
        let d = &event.data;
        let criterion = Criterion::FeedEpochBefore {
            feed_id: Some(d.feed_id.clone()),
            before: FeedEpoch::parse(&d.new_epoch)?,
        };
        Self::from_event(
            event,
            RevocationType::FeedEpoch,
            criterion,
            d.reason.clone(),
        )
    }

    /// A policy update: entries decided under the old policy go.
    pub fn policy_updated(event: &CloudEvent<PolicyUpdated>) -> Result<Self, DomainError> {
        let d = &event.data;
        Self::from_event(
            event,
            RevocationType::Policy,
            Criterion::PolicyHash(d.old_policy_hash.clone()),
            d.reason.clone(),
        )
    }

    /// Metadata stored with the ledger row: the criterion, and the trace context the
    /// outbox continues when it publishes the row.
    pub fn metadata(&self) -> serde_json::Value {
        let mut metadata = self.criterion.to_metadata();
        if let (Some(tp), Some(m)) = (&self.traceparent, metadata.as_object_mut()) {
            m.insert("traceparent".to_owned(), tp.clone().into());
        }
        metadata
    }
}

/// One committed row of the revocation ledger (`prov_revocations`). It is exactly what the
/// ledger outbox publishes, so the event payload is the row type.
pub type LedgerRow = RevocationRecorded;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_event_maps_to_its_criterion_and_back_through_metadata() {
        let ev = CloudEvent::new(
            "urn:test",
            InvalidateRequested {
                veri_key: None,
                signer_set_hash: None,
                policy_hash: None,
                feed_epoch_before: Some("1.10.0".into()),
                reason: "feed moved".into(),
            },
        );
        let inv = Invalidation::explicit(&ev).expect("maps");
        assert_eq!(inv.revocation_type, RevocationType::Explicit);
        assert_eq!(inv.revocation_id.to_string(), ev.id);
        assert_eq!(
            Criterion::from_metadata(&inv.metadata()).expect("round trip"),
            inv.criterion
        );
        assert_eq!(inv.criterion.value(), "1.10.0");
    }

    #[test]
    fn signer_revocation_prefers_the_key_id() {
        let ev = CloudEvent::new(
            "urn:authority",
            SignerRevoked {
                signer_key_id: Some("key-1".into()),
                signer_set_hash: None,
                identity: None,
                key_fingerprint: None,
                reason: None,
            },
        );
        let inv = Invalidation::signer_revoked(&ev).expect("maps");
        assert_eq!(inv.criterion, Criterion::SignerKeyId("key-1".into()));
        assert_eq!(inv.revocation_type.as_str(), "signer");
    }

    #[test]
    fn identity_and_key_revocations_use_the_ids_verdicts_record() {
        let identity = events::data::CertificateIdentity {
            issuer: "https://token.actions.githubusercontent.com".into(),
            san: "https://github.com/o/r/.github/workflows/w.yml@refs/heads/main".into(),
        };
        let ev = CloudEvent::new(
            "urn:authority",
            SignerRevoked {
                signer_key_id: None,
                signer_set_hash: None,
                identity: Some(identity.clone()),
                key_fingerprint: None,
                reason: Some("workflow compromised".into()),
            },
        );
        let inv = Invalidation::signer_revoked(&ev).expect("maps");
        assert_eq!(
            inv.criterion,
            Criterion::SignerKeyId(super::super::policy::identity_id(
                &identity.issuer,
                &identity.san
            ))
        );
        let fp = format!("sha256:{}", "ab".repeat(32));
        let ev = CloudEvent::new(
            "urn:authority",
            SignerRevoked {
                signer_key_id: None,
                signer_set_hash: None,
                identity: None,
                key_fingerprint: Some(fp.clone()),
                reason: None,
            },
        );
        let inv = Invalidation::signer_revoked(&ev).expect("maps");
        assert_eq!(inv.criterion, Criterion::SignerKeyId(format!("key:{fp}")));
    }

    #[test]
    fn a_malformed_epoch_is_refused() {
        let ev = CloudEvent::new(
            "urn:feeds",
            FeedEpochAdvanced {
                feed_id: "osv".into(),
                new_epoch: "not-an-epoch".into(),
                previous_epoch: None,
                reason: None,
            },
        );
        assert!(matches!(
            Invalidation::feed_epoch_advanced(&ev),
            Err(DomainError::InvalidEpoch { .. })
        ));
    }

    #[test]
    fn unknown_metadata_is_refused() {
        assert!(Criterion::from_metadata(&json!({"criterion": "nope", "value": "x"})).is_err());
        assert!(Criterion::from_metadata(&json!({})).is_err());
        for t in ["signer", "feed_epoch", "policy", "explicit"] {
            assert_eq!(RevocationType::parse(t).map(|t| t.as_str()), Some(t));
        }
    }
}
