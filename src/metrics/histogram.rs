//! A latency histogram of fixed buckets, updated with relaxed atomics (no lock on the
//! request path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The buckets' upper bounds, in seconds: from 100 µs (a read answered from the database)
/// to a minute (a clone or an import waiting on a tool).
pub const BOUNDS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 60.0,
];

/// Observations per bucket (not cumulative: each counts those above the previous bound),
/// the ones above the last bound, and the sum.
#[derive(Debug)]
pub struct Histogram {
    bins: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bins: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Upper bounds, seconds.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one per bound.
    pub counts: Vec<u64>,
    /// Observations above the last bound.
    pub above: u64,
    /// Sum of all observations, seconds.
    pub sum_seconds: f64,
}

impl Snapshot {
    /// Every observation: the `+Inf` bucket and `_count` alike. It is the sum of the
    /// bins read, so the cumulative buckets never pass it even while requests finish.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.above
    }
}

impl Histogram {
    /// Count one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BOUNDS.partition_point(|b| *b < secs);
        self.bins[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Read it.
    pub fn snapshot(&self) -> Snapshot {
        let mut counts: Vec<u64> = self
            .bins
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let above = counts.pop().unwrap_or(0);
        Snapshot {
            bounds: &BOUNDS,
            counts,
            above,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_is_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(60));
        h.observe(Duration::from_secs(61));
        let s = h.snapshot();
        assert_eq!(s.counts[3], 1, "1 ms is in le=0.001");
        assert_eq!(s.counts[BOUNDS.len() - 1], 1, "60 s is in le=60");
        assert_eq!((s.above, s.count()), (1, 3));
    }

    #[test]
    fn bounds_increase() {
        assert!(BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }
}
