//! Latency histograms and their one-line summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"))
    }
}

/// A summary in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub count: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub fn record(&mut self, d: std::time::Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.0.record(us).expect("clamped into range");
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn summary(&self) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count: self.0.len(),
            avg_ms: self.0.mean() / 1000.0,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p95_ms: ms(self.0.value_at_quantile(0.95)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th",
            self.avg_ms, self.max_ms, self.p50_ms, self.p95_ms, self.p99_ms, self.p999_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quantiles_are_in_milliseconds() {
        let mut l = Latencies::default();
        for i in 1..=100u64 {
            l.record(Duration::from_micros(i * 100));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 5.0).abs() < 0.05, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.05, "{s:?}");
    }
}
