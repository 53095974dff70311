//! The figures operators read in more than one place (`/metrics`, `/api/v1/provcache/stats`,
//! `/api/v1/status` and the dashboard): cache hits and misses per tier, the write-behind
//! queue and the Rekor submission queue.
//!
//! Each update goes to its Prometheus metric and to one typed record here in the same
//! call, so the JSON views read numbers from [`snapshot`] and never parse the metrics text,
//! and both always agree. Like the metrics recorder, the record is one per process.

use std::sync::atomic::{AtomicU64, Ordering};

/// The cache tiers with a typed record, in the order the views list them.
pub const TIERS: [&str; 4] = ["memory", "valkey", "postgres", "sqlite"];

struct TierRecord {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TierRecord {
    const fn new() -> Self {
        TierRecord {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

/// A gauge's value, kept as the bits of an `f64`.
struct GaugeRecord(AtomicU64);

impl GaugeRecord {
    const fn new() -> Self {
        GaugeRecord(AtomicU64::new(0))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

struct Record {
    tiers: [TierRecord; 4],
    write_behind_queue_depth: GaugeRecord,
    write_behind_lag_seconds: GaugeRecord,
    submission_queue_depth: GaugeRecord,
}

static RECORD: Record = Record {
    tiers: [
        TierRecord::new(),
        TierRecord::new(),
        TierRecord::new(),
        TierRecord::new(),
    ],
    write_behind_queue_depth: GaugeRecord::new(),
    write_behind_lag_seconds: GaugeRecord::new(),
    submission_queue_depth: GaugeRecord::new(),
};

fn tier(name: &str) -> Option<&'static TierRecord> {
    TIERS
        .iter()
        .position(|t| *t == name)
        .map(|i| &RECORD.tiers[i])
}

/// A counter that counts in its metric and in the typed record at once.
#[derive(Clone)]
pub struct Count {
    metric: metrics::Counter,
    record: Option<&'static AtomicU64>,
}

impl Count {
    /// Adds `n`.
    pub fn increment(&self, n: u64) {
        self.metric.increment(n);
        if let Some(r) = self.record {
            r.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Reads answered by `tier` (`provd_provcache_hits_total{tier}`).
pub fn cache_hits(tier_name: &'static str) -> Count {
    Count {
        metric: metrics::counter!("provd_provcache_hits_total", "tier" => tier_name),
        record: tier(tier_name).map(|t| &t.hits),
    }
}

/// Reads `tier` could not answer (`provd_provcache_misses_total{tier}`).
pub fn cache_misses(tier_name: &'static str) -> Count {
    Count {
        metric: metrics::counter!("provd_provcache_misses_total", "tier" => tier_name),
        record: tier(tier_name).map(|t| &t.misses),
    }
}

/// The write-behind queue: writes accepted and not yet flushed, and the age of the oldest
/// (`provd_write_behind_queue_depth`, `provd_write_behind_lag_seconds`).
pub fn set_write_behind(queue_depth: f64, lag_seconds: f64) {
    metrics::gauge!("provd_write_behind_queue_depth").set(queue_depth);
    metrics::gauge!("provd_write_behind_lag_seconds").set(lag_seconds);
    RECORD.write_behind_queue_depth.set(queue_depth);
    RECORD.write_behind_lag_seconds.set(lag_seconds);
}

/// Submissions waiting in the Rekor queue (`provd_rekor_submission_queue_depth`).
pub fn set_submission_queue_depth(depth: f64) {
    metrics::gauge!("provd_rekor_submission_queue_depth").set(depth);
    RECORD.submission_queue_depth.set(depth);
}

/// One tier's reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierFigures {
    /// The tier's name (its `tier` label).
    pub tier: &'static str,
    /// Reads it answered.
    pub hits: u64,
    /// Reads it could not answer.
    pub misses: u64,
}

/// The figures as they are now.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Every tier of [`TIERS`].
    pub tiers: Vec<TierFigures>,
    /// Writes accepted and not yet flushed.
    pub write_behind_queue_depth: f64,
    /// Age of the oldest unflushed write, seconds.
    pub write_behind_lag_seconds: f64,
    /// Submissions waiting in the Rekor queue.
    pub submission_queue_depth: f64,
}

impl Figures {
    /// One tier's figures (zero for a tier this process does not run).
    pub fn tier(&self, name: &str) -> TierFigures {
        self.tiers
            .iter()
            .find(|t| t.tier == name)
            .copied()
            .unwrap_or(TierFigures {
                tier: "",
                hits: 0,
                misses: 0,
            })
    }
}

/// The figures now.
pub fn snapshot() -> Figures {
    Figures {
        tiers: TIERS
            .iter()
            .zip(&RECORD.tiers)
            .map(|(name, r)| TierFigures {
                tier: name,
                hits: r.hits.load(Ordering::Relaxed),
                misses: r.misses.load(Ordering::Relaxed),
            })
            .collect(),
        write_behind_queue_depth: RECORD.write_behind_queue_depth.get(),
        write_behind_lag_seconds: RECORD.write_behind_lag_seconds.get(),
        submission_queue_depth: RECORD.submission_queue_depth.get(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_record() {
        let before = snapshot().tier("valkey");
        cache_hits("valkey").increment(2);
        cache_misses("valkey").increment(1);
        // A tier without a record counts only in its metric.
        cache_hits("elsewhere").increment(5);
        let after = snapshot().tier("valkey");
        assert!(after.hits >= before.hits + 2);
        assert!(after.misses > before.misses);
        assert_eq!(snapshot().tier("elsewhere").hits, 0);
    }
}
