//! The payload (`data`) of every event type.
//!
//! Field names are snake_case. Digests and hashes are `sha256:<hex>` strings as the
//! producing system wrote them; provd compares them verbatim.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kind::EventKind;

/// A payload type bound to its event kind.
pub trait EventData: Serialize {
    /// The kind this payload belongs to.
    const KIND: EventKind;

    /// Checks what serde cannot: mutually exclusive fields, non-empty values.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

fn non_empty(name: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("field `{name}` must not be empty"))
    } else {
        Ok(())
    }
}

fn exactly_one(fields: &[(&str, &Option<String>)]) -> Result<(), String> {
    let given: Vec<&str> = fields
        .iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|s| !s.trim().is_empty()))
        .map(|(n, _)| *n)
        .collect();
    let names = fields
        .iter()
        .map(|(n, _)| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match given.len() {
        1 => Ok(()),
        0 => Err(format!(
            "exactly one of {names} is required, none was given"
        )),
        _ => Err(format!(
            "exactly one of {names} is required, got {}",
            given.join(" and ")
        )),
    }
}

/// `prov.events.signer.revoked`: a signing key, a whole signer set, a certificate identity
/// or a managed key is no longer trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRevoked {
    /// The revoked key's ID: every entry whose signer set contains it is invalidated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_key_id: Option<String>,
    /// Or the revoked signer set's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_set_hash: Option<String>,
    /// Or a certificate identity: every verdict that relied on an attestation signed under
    /// it (OIDC issuer and subject alternative name, exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<CertificateIdentity>,
    /// Or a managed key, by its fingerprint `sha256:<hex>` (SHA-256 of its DER
    /// SubjectPublicKeyInfo): every verdict that relied on an attestation signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// Why, for the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A Fulcio certificate identity: the OIDC issuer and the subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateIdentity {
    /// The OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// The SAN (email or URI), e.g. a GitHub workflow URI with its ref.
    pub san: String,
}

impl EventData for SignerRevoked {
    const KIND: EventKind = EventKind::SignerRevoked;
    fn validate(&self) -> Result<(), String> {
        // An identity counts as one field given when both of its parts are.
        let identity = self
            .identity
            .as_ref()
            .map(|i| format!("{}{}", i.issuer.trim(), i.san.trim()));
        exactly_one(&[
            ("signer_key_id", &self.signer_key_id),
            ("signer_set_hash", &self.signer_set_hash),
            ("identity", &identity),
            ("key_fingerprint", &self.key_fingerprint),
        ])?;
        if let Some(i) = &self.identity
            && (i.issuer.trim().is_empty() || i.san.trim().is_empty())
        {
            return Err("`identity` needs both `issuer` and `san`".into());
        }
        if let Some(f) = &self.key_fingerprint {
            let hex = f.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(
                    "`key_fingerprint` must be `sha256:` and 64 lowercase hex digits".into(),
                );
            }
        }
        Ok(())
    }
}

/// `prov.events.feed.epoch_advanced`: a vulnerability feed moved to a new epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEpochAdvanced {
    /// The feed's identifier, e.g. `osv` or `nvd`.
    pub feed_id: String,
    /// The new epoch: a semantic version or an RFC 3339 timestamp.
    pub new_epoch: String,
    /// The epoch it replaces, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_epoch: Option<String>,
    /// Why, for the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EventData for FeedEpochAdvanced {
    const KIND: EventKind = EventKind::FeedEpochAdvanced;
    fn validate(&self) -> Result<(), String> {
        non_empty("feed_id", &self.feed_id)?;
        non_empty("new_epoch", &self.new_epoch)
    }
}

/// `prov.events.policy.updated`: a policy bundle changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpdated {
    /// The hash of the policy that no longer applies.
    pub old_policy_hash: String,
    /// The hash of the policy that replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_policy_hash: Option<String>,
    /// Why, for the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EventData for PolicyUpdated {
    const KIND: EventKind = EventKind::PolicyUpdated;
    fn validate(&self) -> Result<(), String> {
        non_empty("old_policy_hash", &self.old_policy_hash)
    }
}

/// `prov.events.invalidate`: explicit invalidation, by one VeriKey or by one criterion.
///
/// This is also the body of `POST /api/v1/provcache/invalidate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidateRequested {
    /// Invalidate the entry with this VeriKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veri_key: Option<String>,
    /// Or every entry signed by this signer set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_set_hash: Option<String>,
    /// Or every entry decided under this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// Or every entry whose feed epoch is older than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_epoch_before: Option<String>,
    /// Why, for the ledger. Required: an invalidation nobody can explain is an incident.
    pub reason: String,
}

impl EventData for InvalidateRequested {
    const KIND: EventKind = EventKind::InvalidateRequested;
    fn validate(&self) -> Result<(), String> {
        exactly_one(&[
            ("veri_key", &self.veri_key),
            ("signer_set_hash", &self.signer_set_hash),
            ("policy_hash", &self.policy_hash),
            ("feed_epoch_before", &self.feed_epoch_before),
        ])?;
        non_empty("reason", &self.reason)
    }
}

/// `rekor.submissions.requested`: submit a DSSE envelope to a transparency log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRequested {
    /// The configured backend name; the active one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The DSSE envelope (`payloadType`, `payload`, `signatures`).
    pub envelope: serde_json::Value,
    /// PEM public keys or certificates that verify the envelope's signatures.
    pub verifier_keys: Vec<String>,
}

impl EventData for SubmissionRequested {
    const KIND: EventKind = EventKind::SubmissionRequested;
    fn validate(&self) -> Result<(), String> {
        if !self.envelope.is_object() {
            return Err("field `envelope` must be a DSSE envelope object".to_owned());
        }
        if self.verifier_keys.is_empty() {
            return Err("field `verifier_keys` needs at least one key".to_owned());
        }
        Ok(())
    }
}

/// `prov.ledger.revocations`: one row of the revocation ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecorded {
    /// The ledger sequence number.
    pub seq_no: i64,
    /// The revocation's id (the id of the event that caused it).
    pub revocation_id: Uuid,
    /// `signer`, `feed_epoch`, `policy` or `explicit`.
    pub revocation_type: String,
    /// What was revoked: key ID, hash, epoch or VeriKey.
    pub revoked_key: String,
    /// Why.
    pub reason: Option<String>,
    /// How many entries the invalidation deleted.
    pub entries_invalidated: i64,
    /// Who asked for it.
    pub source: String,
    /// Correlation id of the request that caused it.
    pub correlation_id: Option<String>,
    /// When it was committed.
    pub revoked_at: DateTime<Utc>,
    /// How to re-apply it (the criterion), and anything else worth keeping.
    pub metadata: serde_json::Value,
}

impl EventData for RevocationRecorded {
    const KIND: EventKind = EventKind::RevocationRecorded;
}

/// `rekor.entries.logged`: a submission ended with a verified receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLogged {
    /// The submission's id.
    pub submission_id: String,
    /// The backend that logged it.
    pub backend: String,
    /// The entry UUID (v1) or entry ID.
    pub uuid: String,
    /// The (virtual) log index.
    pub log_index: u64,
    /// The log ID, hex.
    pub log_id: String,
    /// Seconds since the epoch (v1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<i64>,
}

impl EventData for EntryLogged {
    const KIND: EventKind = EventKind::EntryLogged;
}

/// `rekor.submissions.dead_lettered`: a submission gave up after its last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionDeadLettered {
    /// The submission's id.
    pub submission_id: String,
    /// The backend it was meant for.
    pub backend: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
}

impl EventData for SubmissionDeadLettered {
    const KIND: EventKind = EventKind::SubmissionDeadLettered;
}

/// `rekor.checkpoints.observed`: a node verified a log checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointObserved {
    /// The backend name.
    pub backend: String,
    /// The checkpoint's origin line.
    pub origin: String,
    /// The tree size.
    pub tree_size: u64,
    /// The root hash, hex.
    pub root_hash: String,
    /// The signed note exactly as received.
    pub note: String,
    /// The node that observed it.
    pub observed_by: String,
}

impl EventData for CheckpointObserved {
    const KIND: EventKind = EventKind::CheckpointObserved;
}

/// `rekor.checkpoints.diverged`: evidence that a log is not append-only or not consistent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointDiverged {
    /// The backend name.
    pub backend: String,
    /// The origin concerned.
    pub origin: String,
    /// `fork`, `rollback`, `consistency_failed`, `bad_signature` or `inclusion_failed`.
    pub kind: String,
    /// Both signed checkpoints and the proof, as found.
    pub evidence: serde_json::Value,
    /// The node that detected it.
    pub detected_by: String,
}

impl EventData for CheckpointDiverged {
    const KIND: EventKind = EventKind::CheckpointDiverged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{CloudEvent, RejectReason, decode, decode_as};
    use serde_json::json;

    fn invalidate_json() -> serde_json::Value {
        json!({
            "specversion": "1.0",
            "id": "0192f0c1-7a4e-7cc1-9f3a-4d3c2b1a0f9e",
            "source": "urn:example:ops",
            "type": "dev.provd.invalidate.requested.v1",
            "time": "2026-11-22T10:00:00Z",
            "datacontenttype": "application/json",
            "data": {"policy_hash": "sha256:aa", "reason": "policy withdrawn"}
        })
    }

    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("json")
    }

    #[test]
    fn every_payload_round_trips_through_the_envelope() {
        let e = CloudEvent::new(
            "urn:provd:test",
            SignerRevoked {
                signer_key_id: Some("k1".into()),
                signer_set_hash: None,
                identity: None,
                key_fingerprint: None,
                reason: Some("compromised".into()),
            },
        )
        .with_correlation_id(Some("c-1".into()));
        let back: CloudEvent<SignerRevoked> = decode_as(&e.to_json()).expect("decodes");
        assert_eq!(back, e);
        assert_eq!(
            back.key().to_string(),
            back.id,
            "provd's own ids are their own key"
        );

        let f = CloudEvent::new(
            "s",
            FeedEpochAdvanced {
                feed_id: "osv".into(),
                new_epoch: "1.10.0".into(),
                previous_epoch: Some("1.9.0".into()),
                reason: None,
            },
        );
        assert_eq!(decode_as::<FeedEpochAdvanced>(&f.to_json()).expect("ok"), f);
        let p = CloudEvent::new(
            "s",
            PolicyUpdated {
                old_policy_hash: "sha256:01".into(),
                new_policy_hash: None,
                reason: None,
            },
        );
        assert_eq!(decode_as::<PolicyUpdated>(&p.to_json()).expect("ok"), p);
        let r = CloudEvent::new(
            "s",
            SubmissionRequested {
                backend: None,
                envelope: json!({"payloadType": "t", "payload": "", "signatures": []}),
                verifier_keys: vec!["pem".into()],
            },
        );
        assert_eq!(
            decode_as::<SubmissionRequested>(&r.to_json()).expect("ok"),
            r
        );
        let (kind, generic) = decode(&r.to_json()).expect("envelope decodes");
        assert_eq!(kind, EventKind::SubmissionRequested);
        assert_eq!(generic.id, r.id);
        // The generic decoder checks the payload against its type too.
        let mut bad = invalidate_json();
        bad["data"] = json!({"reason": "no criterion"});
        assert_eq!(
            decode(&bytes(&bad)).expect_err("checked").reason,
            RejectReason::InvalidData
        );
    }

    #[test]
    fn documented_example_decodes() {
        let e: CloudEvent<InvalidateRequested> =
            decode_as(&bytes(&invalidate_json())).expect("decodes");
        assert_eq!(e.data.policy_hash.as_deref(), Some("sha256:aa"));
    }

    fn reject(v: serde_json::Value) -> RejectReason {
        decode_as::<InvalidateRequested>(&bytes(&v))
            .expect_err("must be rejected")
            .reason
    }

    #[test]
    fn rejections_name_their_reason() {
        assert_eq!(
            decode_as::<InvalidateRequested>(b"{not json")
                .expect_err("bad")
                .reason,
            RejectReason::InvalidJson
        );
        assert_eq!(
            decode_as::<InvalidateRequested>(b"[1,2]")
                .expect_err("bad")
                .reason,
            RejectReason::InvalidJson
        );

        let mut v = invalidate_json();
        v["type"] = json!("com.example.something");
        assert_eq!(reject(v), RejectReason::UnknownType);

        let mut v = invalidate_json();
        v["type"] = json!("dev.provd.invalidate.requested.v2");
        assert_eq!(reject(v), RejectReason::UnsupportedVersion);

        let mut v = invalidate_json();
        v["type"] = json!("dev.provd.signer.revoked.v1");
        assert_eq!(reject(v), RejectReason::SubjectMismatch);

        let mut v = invalidate_json();
        v["specversion"] = json!("0.3");
        assert_eq!(reject(v), RejectReason::UnsupportedSpecVersion);

        let mut v = invalidate_json();
        v.as_object_mut().expect("object").remove("source");
        assert_eq!(reject(v), RejectReason::MissingField);

        let mut v = invalidate_json();
        v["data"].as_object_mut().expect("object").remove("reason");
        let err = decode_as::<InvalidateRequested>(&bytes(&v)).expect_err("bad");
        assert_eq!(err.reason, RejectReason::MissingField);
        assert!(err.detail.contains("reason"), "{}", err.detail);

        // Any non-empty string is an id; an empty or overlong one is not.
        let mut v = invalidate_json();
        v["id"] = json!("not-a-uuid");
        assert!(decode_as::<InvalidateRequested>(&bytes(&v)).is_ok());
        let mut v = invalidate_json();
        v["id"] = json!("");
        assert_eq!(reject(v), RejectReason::InvalidField);
        let mut v = invalidate_json();
        v["id"] = json!("x".repeat(crate::MAX_ID_LEN + 1));
        assert_eq!(reject(v), RejectReason::InvalidField);

        let mut v = invalidate_json();
        v["data"]["policy_hash"] = json!(17);
        assert_eq!(reject(v), RejectReason::InvalidField);

        let mut v = invalidate_json();
        v["data"]["veri_key"] = json!("sha256:bb");
        let err = decode_as::<InvalidateRequested>(&bytes(&v)).expect_err("two criteria");
        assert_eq!(err.reason, RejectReason::InvalidData);
        assert!(err.detail.contains("exactly one"), "{}", err.detail);

        let mut v = invalidate_json();
        v["data"] = json!({"reason": "x"});
        assert_eq!(reject(v), RejectReason::InvalidData);
    }

    #[test]
    fn decode_reports_the_event_id_when_it_can() {
        let mut v = invalidate_json();
        v["data"] = json!({"reason": "x"});
        let err = decode_as::<InvalidateRequested>(&bytes(&v)).expect_err("bad");
        assert_eq!(
            err.event_id.as_deref(),
            Some("0192f0c1-7a4e-7cc1-9f3a-4d3c2b1a0f9e")
        );
    }
}
