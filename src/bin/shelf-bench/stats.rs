//! Latency samples, percentiles, and the text of the result tables.

use std::time::Duration;

/// The latencies of one measured batch and the wall time it took.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// One latency per operation.
    pub lat: Vec<Duration>,
    /// Wall time from the first start to the last end (sum over batches).
    pub wall: Duration,
}

impl Samples {
    /// Add another batch.
    pub fn merge(&mut self, other: Samples) {
        self.lat.extend(other.lat);
        self.wall += other.wall;
    }

    /// The `q` quantile (0..=1), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.lat.clone();
        v.sort();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    /// Median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// Operations per second over the wall time.
    pub fn throughput(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s == 0.0 {
            0.0
        } else {
            self.lat.len() as f64 / s
        }
    }

    /// Median of a slice of the samples (in the order they were taken).
    pub fn p50_of(&self, range: std::ops::Range<usize>) -> Duration {
        let end = range.end.min(self.lat.len());
        let start = range.start.min(end);
        Samples {
            lat: self.lat[start..end].to_vec(),
            wall: Duration::ZERO,
        }
        .p50()
    }
}

/// A duration in milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// A duration in seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// `a / b` with two decimals ("-" when b is zero).
pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        "-".into()
    } else {
        format!("{:.2}", a.as_secs_f64() / b.as_secs_f64())
    }
}

/// Bytes in MiB with one decimal.
pub fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 20) as f64)
}

/// A markdown table being built.
#[derive(Debug)]
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as markdown.
    pub fn render(&self) -> String {
        let mut out = format!("| {} |\n", self.head.join(" | "));
        out.push_str(&format!(
            "|{}\n",
            self.head.iter().map(|_| " --- |").collect::<String>()
        ));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s = Samples {
            lat: (1..=100).map(Duration::from_millis).collect(),
            wall: Duration::from_secs(2),
        };
        assert_eq!(s.p50(), Duration::from_millis(50));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.throughput(), 50.0);
        assert_eq!(s.p50_of(0..10), Duration::from_millis(5));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
    }
}
