//! Feed epochs: semantic versions or RFC 3339 timestamps, compared as what they are.
//!
//! Comparing epochs as strings is wrong both ways (`1.10.0` sorts before `1.9.0`, and
//! `2026-01-01T01:00:00+01:00` sorts after `2026-01-01T00:30:00Z`), so every comparison goes
//! through [`FeedEpoch`].

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};

use super::DomainError;

/// A parsed feed epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEpoch {
    /// A semantic version (`1.10.0`, `v2.0.0-rc.1`).
    Version(semver::Version),
    /// A point in time, normalised to UTC.
    Time(DateTime<Utc>),
}

impl FeedEpoch {
    /// Parses an epoch; a leading `v` on a version is accepted.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(DomainError::InvalidEpoch {
                epoch: s.to_owned(),
                why: "it is empty".to_owned(),
            });
        }
        let v = t.strip_prefix('v').unwrap_or(t);
        if let Ok(version) = semver::Version::parse(v) {
            return Ok(FeedEpoch::Version(version));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(t) {
            return Ok(FeedEpoch::Time(time.with_timezone(&Utc)));
        }
        Err(DomainError::InvalidEpoch {
            epoch: s.to_owned(),
            why: "expected a semantic version like 1.10.0 or an RFC 3339 timestamp like \
                  2026-01-01T00:00:00Z"
                .to_owned(),
        })
    }

    /// Orders two epochs of the same kind; a version and a time are not comparable.
    pub fn compare(&self, other: &FeedEpoch) -> Option<Ordering> {
        match (self, other) {
            (FeedEpoch::Version(a), FeedEpoch::Version(b)) => Some(a.cmp(b)),
            (FeedEpoch::Time(a), FeedEpoch::Time(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Whether `self` is strictly older than `other` (false when not comparable).
    pub fn is_before(&self, other: &FeedEpoch) -> bool {
        self.compare(other) == Some(Ordering::Less)
    }
}

impl fmt::Display for FeedEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedEpoch::Version(v) => write!(f, "{v}"),
            FeedEpoch::Time(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> FeedEpoch {
        FeedEpoch::parse(s).expect("valid epoch")
    }

    #[test]
    fn versions_compare_numerically_not_as_strings() {
        assert!(e("1.9.0").is_before(&e("1.10.0")));
        assert!(!e("1.10.0").is_before(&e("1.9.0")));
        assert!(e("v2.0.0-rc.1").is_before(&e("2.0.0")));
        assert!(!e("1.0.0").is_before(&e("1.0.0")));
    }

    #[test]
    fn timestamps_compare_after_normalising_offsets() {
        // 01:00+01:00 is 00:00Z, which is before 00:30Z even though it sorts after as text.
        assert!(e("2026-01-01T01:00:00+01:00").is_before(&e("2026-01-01T00:30:00Z")));
    }

    #[test]
    fn mixed_kinds_are_not_comparable() {
        assert_eq!(e("1.0.0").compare(&e("2026-01-01T00:00:00Z")), None);
        assert!(!e("1.0.0").is_before(&e("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn malformed_epochs_are_rejected_with_a_reason() {
        for bad in ["", "1.2", "yesterday", "2026-13-01T00:00:00Z"] {
            let err = FeedEpoch::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("epoch"), "{err}");
        }
    }
}
