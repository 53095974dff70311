//! Cached verdicts and the writes that carry them to the durable tier.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::epoch::FeedEpoch;
use super::invalidation::Criterion;
use super::limits::{self, LimitError};
use super::verikey::{VeriKeyError, parse_veri_key};

/// Most signer key IDs on one entry.
pub const MAX_SIGNER_KEYS: usize = 256;

/// Errors of entry rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The VeriKey is malformed or its inputs are invalid.
    #[error(transparent)]
    VeriKey(#[from] VeriKeyError),
    /// The trust score is outside 0–100.
    #[error("`trust_score` must be between 0 and 100, got {0}")]
    TrustScore(i64),
    /// A field is empty, too long, or holds what the stores cannot (see [`limits`]).
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// Too many signer key IDs.
    #[error("at most {MAX_SIGNER_KEYS} `signer_key_ids`")]
    TooManyKeys,
    /// The entry would already be expired.
    #[error("`ttl` must be more than zero")]
    Expired,
    /// A write-behind payload cannot be decoded.
    #[error("malformed write: {0}")]
    MalformedWrite(String),
}

/// One cached policy verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The VeriKey.
    pub veri_key: String,
    /// The verdict, as the policy engine wrote it.
    pub verdict: serde_json::Value,
    /// `sha256:` of the verdict's JSON bytes (see [`verdict_hash`]).
    pub verdict_hash: String,
    /// Root of the evidence Merkle tree, when there is evidence.
    pub proof_root: Option<String>,
    /// 0 to 100.
    pub trust_score: i16,
    /// Hash of the policy bundle.
    pub policy_hash: String,
    /// Hash of the signer set.
    pub signer_set_hash: String,
    /// Key IDs of the signer set's members.
    pub signer_key_ids: Vec<String>,
    /// The vulnerability feed, when known.
    pub feed_id: Option<String>,
    /// Its epoch, when known.
    pub feed_epoch: Option<String>,
    /// When the entry was written.
    pub created_at: DateTime<Utc>,
    /// When it stops being served.
    pub expires_at: DateTime<Utc>,
}

/// The hash stored with a verdict: `sha256:` of its compact JSON (object keys sorted).
pub fn verdict_hash(verdict: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(verdict).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

impl Entry {
    /// Checks the entry's fields.
    pub fn validate(&self) -> Result<(), EntryError> {
        parse_veri_key(&self.veri_key)?;
        if !(0..=100).contains(&self.trust_score) {
            return Err(EntryError::TrustScore(i64::from(self.trust_score)));
        }
        limits::required("verdict_hash", &self.verdict_hash, limits::HASH_LEN)?;
        limits::json("verdict", &self.verdict)?;
        limits::required("policy_hash", &self.policy_hash, limits::HASH_LEN)?;
        limits::required("signer_set_hash", &self.signer_set_hash, limits::HASH_LEN)?;
        limits::optional("proof_root", self.proof_root.as_deref(), limits::HASH_LEN)?;
        limits::optional("feed_id", self.feed_id.as_deref(), limits::FEED_ID_LEN)?;
        limits::optional(
            "feed_epoch",
            self.feed_epoch.as_deref(),
            limits::FEED_EPOCH_LEN,
        )?;
        if self.signer_key_ids.len() > MAX_SIGNER_KEYS {
            return Err(EntryError::TooManyKeys);
        }
        for k in &self.signer_key_ids {
            limits::required("signer_key_ids", k, limits::KEY_ID_LEN)?;
        }
        if self.expires_at <= self.created_at {
            return Err(EntryError::Expired);
        }
        Ok(())
    }

    /// Whether the entry is still served at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// Whether an invalidation by `criterion` removes this entry.
    pub fn matches(&self, criterion: &Criterion) -> bool {
        match criterion {
            Criterion::VeriKey(k) => &self.veri_key == k,
            Criterion::SignerKeyId(k) => self.signer_key_ids.iter().any(|id| id == k),
            Criterion::SignerSetHash(h) => &self.signer_set_hash == h,
            Criterion::PolicyHash(h) => &self.policy_hash == h,
            Criterion::FeedEpochBefore { feed_id, before } => {
                let feed_ok = match feed_id {
                    Some(f) => self.feed_id.as_deref() == Some(f.as_str()),
                    None => true,
                };
                feed_ok
                    && self
                        .feed_epoch
                        .as_deref()
                        .and_then(|e| FeedEpoch::parse(e).ok())
                        .is_some_and(|e| e.is_before(before))
            }
        }
    }
}

/// One accepted write on its way to the durable tier (the write-behind stream's payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryWrite {
    /// Unique per accepted write; the stream deduplicates on it.
    pub write_id: Uuid,
    /// When the API accepted it; orders versions and is compared with invalidations.
    pub accepted_at: DateTime<Utc>,
    /// The entry.
    pub entry: Entry,
}

impl EntryWrite {
    /// The stream payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a stream payload.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EntryError> {
        serde_json::from_slice(bytes).map_err(|e| EntryError::MalformedWrite(e.to_string()))
    }
}

/// Keeps the newest write per VeriKey (ties: the later in `writes`), in first-seen order.
/// One multi-row upsert cannot touch a row twice, and the newest version must win.
pub fn newest_per_key(writes: Vec<EntryWrite>) -> Vec<EntryWrite> {
    let mut index: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(writes.len());
    let mut out: Vec<EntryWrite> = Vec::with_capacity(writes.len());
    for w in writes {
        match index.get(&w.entry.veri_key) {
            Some(&i) => {
                if w.accepted_at >= out[i].accepted_at {
                    out[i] = w;
                }
            }
            None => {
                index.insert(w.entry.veri_key.clone(), out.len());
                out.push(w);
            }
        }
    }
    out
}

/// [`newest_per_key`] without copying: references to the newest write per VeriKey.
pub fn newest_per_key_ref(writes: &[EntryWrite]) -> Vec<&EntryWrite> {
    let mut index: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(writes.len());
    let mut out: Vec<&EntryWrite> = Vec::with_capacity(writes.len());
    for w in writes {
        match index.get(w.entry.veri_key.as_str()) {
            Some(&i) => {
                if w.accepted_at >= out[i].accepted_at {
                    out[i] = w;
                }
            }
            None => {
                index.insert(&w.entry.veri_key, out.len());
                out.push(w);
            }
        }
    }
    out
}

/// Whether a write must be dropped because an invalidation matching it was recorded after
/// the write was accepted. `revocations` are (criterion, recorded-at) pairs.
pub fn invalidated_after_accept(
    write: &EntryWrite,
    revocations: &[(Criterion, DateTime<Utc>)],
) -> bool {
    revocations
        .iter()
        .any(|(c, at)| *at >= write.accepted_at && write.entry.matches(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: char) -> Entry {
        let now = Utc::now();
        Entry {
            veri_key: format!("sha256:{}", key.to_string().repeat(64)),
            verdict: serde_json::json!({"decision": "allow"}),
            verdict_hash: verdict_hash(&serde_json::json!({"decision": "allow"})),
            proof_root: None,
            trust_score: 90,
            policy_hash: "sha256:pol".into(),
            signer_set_hash: "sha256:ss".into(),
            signer_key_ids: vec!["key-a".into()],
            feed_id: Some("osv".into()),
            feed_epoch: Some("1.2.0".into()),
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
        }
    }

    fn write(key: char, at: DateTime<Utc>) -> EntryWrite {
        EntryWrite {
            write_id: Uuid::now_v7(),
            accepted_at: at,
            entry: entry(key),
        }
    }

    #[test]
    fn newest_write_wins_within_a_batch() {
        let t = Utc::now();
        let mut late = write('a', t + chrono::Duration::seconds(1));
        late.entry.trust_score = 10;
        let batch = vec![late.clone(), write('b', t), write('a', t)];
        let by_ref: Vec<EntryWrite> = newest_per_key_ref(&batch).into_iter().cloned().collect();
        let out = newest_per_key(batch);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].entry.trust_score, 10);
        assert_eq!(by_ref, out);
    }

    #[test]
    fn only_later_matching_invalidations_drop_a_write() {
        let t = Utc::now();
        let w = write('a', t);
        let later = t + chrono::Duration::milliseconds(5);
        let earlier = t - chrono::Duration::milliseconds(5);
        let pol = Criterion::PolicyHash("sha256:pol".into());
        assert!(invalidated_after_accept(&w, &[(pol.clone(), later)]));
        assert!(!invalidated_after_accept(&w, &[(pol, earlier)]));
        let other = Criterion::PolicyHash("sha256:other".into());
        assert!(!invalidated_after_accept(&w, &[(other, later)]));
        let key = Criterion::SignerKeyId("key-a".into());
        assert!(invalidated_after_accept(&w, &[(key, later)]));
        let epoch = Criterion::FeedEpochBefore {
            feed_id: Some("osv".into()),
            before: FeedEpoch::parse("1.10.0").expect("epoch"),
        };
        assert!(invalidated_after_accept(&w, &[(epoch, later)]));
    }

    #[test]
    fn validation_refuses_bad_entries() {
        assert!(entry('a').validate().is_ok());
        let mut e = entry('a');
        e.trust_score = 101;
        assert_eq!(e.validate(), Err(EntryError::TrustScore(101)));
        let mut e = entry('a');
        e.veri_key = "nope".into();
        assert!(e.validate().is_err());
        // What PostgreSQL cannot hold is refused here, naming the field.
        let mut e = entry('a');
        e.policy_hash = "p".repeat(200);
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .contains("`policy_hash`")
        );
        let mut e = entry('a');
        e.feed_epoch = Some("1".repeat(100));
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .contains("`feed_epoch`")
        );
        let mut e = entry('a');
        e.signer_key_ids = vec!["k".repeat(300)];
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .contains("`signer_key_ids`")
        );
        let mut e = entry('a');
        e.verdict = serde_json::json!({"note": "a\u{0}b"});
        assert!(e.validate().unwrap_err().to_string().contains("`verdict`"));
    }
}
