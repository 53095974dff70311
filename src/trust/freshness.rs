//! The freshness policy: how old a trusted root may be before it is reported, and refused
//! with `refuse_stale`. Pure arithmetic on instants and durations; the caller reads the clock.

use std::time::Duration;

use jiff::Timestamp;

/// The `[trust]` freshness settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessPolicy {
    /// A root older than this is stale.
    pub max_age: Duration,
    /// Whether a stale root is refused rather than only reported.
    pub refuse_stale: bool,
}

impl Default for FreshnessPolicy {
    fn default() -> Self {
        FreshnessPolicy {
            max_age: super::DEFAULT_MAX_AGE,
            refuse_stale: false,
        }
    }
}

/// Whether a root is within `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// No older than `max_age`.
    Fresh,
    /// Older than `max_age`.
    Stale,
}

impl Freshness {
    /// `fresh` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Stale => "stale",
        }
    }
}

/// How long before `now` the instant `then` was; zero when `then` is in the future, since a
/// clock set back must not make a root look older than it is, nor negative.
pub fn age(then: Timestamp, now: Timestamp) -> Duration {
    let nanos = now.as_nanosecond() - then.as_nanosecond();
    if nanos <= 0 {
        return Duration::ZERO;
    }
    let secs = (nanos / 1_000_000_000) as u64;
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

impl FreshnessPolicy {
    /// Judges an age: stale only when strictly older than `max_age`.
    pub fn judge(&self, age: Duration) -> Freshness {
        if age > self.max_age {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }

    /// The warning for a stale root, `None` for a fresh one.
    pub fn warning(&self, age: Duration) -> Option<String> {
        (self.judge(age) == Freshness::Stale).then(|| {
            format!(
                "the trusted root is {} old (max_age {}); run `provd trust update`",
                describe_age(age),
                compact_duration(self.max_age)
            )
        })
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// An age in its largest whole unit, rounded down: `40 days`, `2 hours`, `1 minute`.
pub fn describe_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        86_400.. => plural(s / 86_400, "day"),
        3_600.. => plural(s / 3_600, "hour"),
        60.. => plural(s / 60, "minute"),
        _ => plural(s, "second"),
    }
}

/// A duration as the config writes it, in its largest exact unit: `30d`, `36h`, `90m`, `5s`.
/// The result parses back to the same duration (sub-second parts are dropped).
pub fn compact_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "0s".to_owned()
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{}h", s / 3_600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn age_counts_from_then_to_now_and_never_goes_negative() {
        let now = at("2026-12-02T12:00:00Z");
        assert_eq!(
            age(at("2026-11-02T12:00:00Z"), now),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            age(at("2026-12-02T10:59:59.5Z"), now),
            Duration::from_millis(3_600_500)
        );
        assert_eq!(age(at("2026-12-03T00:00:00Z"), now), Duration::ZERO);
    }

    #[test]
    fn stale_means_strictly_older_than_max_age() {
        let p = FreshnessPolicy {
            max_age: Duration::from_secs(3_600),
            refuse_stale: false,
        };
        assert_eq!(p.judge(Duration::from_secs(3_600)), Freshness::Fresh);
        assert_eq!(p.judge(Duration::from_secs(3_601)), Freshness::Stale);
        assert_eq!(p.warning(Duration::from_secs(60)), None);
        assert_eq!(
            p.warning(Duration::from_secs(2 * 3_600 + 59)).unwrap(),
            "the trusted root is 2 hours old (max_age 1h); run `provd trust update`"
        );
        let d = FreshnessPolicy::default();
        assert_eq!(
            d.warning(Duration::from_secs(40 * 86_400 + 7)).unwrap(),
            "the trusted root is 40 days old (max_age 30d); run `provd trust update`"
        );
    }

    #[test]
    fn ages_and_durations_read_as_people_write_them() {
        assert_eq!(describe_age(Duration::from_secs(86_400)), "1 day");
        assert_eq!(describe_age(Duration::from_secs(86_399)), "23 hours");
        assert_eq!(describe_age(Duration::from_secs(119)), "1 minute");
        assert_eq!(describe_age(Duration::ZERO), "0 seconds");
        for (secs, text) in [
            (30 * 86_400, "30d"),
            (36 * 3_600, "36h"),
            (90 * 60, "90m"),
            (3_601, "3601s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(compact_duration(d), text);
            assert_eq!(humantime::parse_duration(text).unwrap(), d);
        }
    }
}
