//! Latency recording. Values are recorded in microseconds in an HDR histogram (3 significant
//! digits, 1 µs .. 1 h), so percentiles are exact to 0.1 % whatever the spread, and merging the
//! histograms of many tasks is cheap.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest recordable latency: one hour, in microseconds. Larger values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
        }
    }

    /// Records one latency (clamped to 1 µs .. 1 h).
    pub fn record(&mut self, latency: Duration) {
        self.record_micros(latency.as_micros().min(u128::from(MAX_MICROS)) as u64);
    }

    /// Records one latency given in microseconds (clamped to 1 µs .. 1 h).
    pub fn record_micros(&mut self, micros: u64) {
        self.histogram
            .record(micros.clamp(1, MAX_MICROS))
            .expect("value within bounds");
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.histogram.add(&other.histogram).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// p50, p90, p99, max and mean, in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.histogram.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.histogram.len(),
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p90_ms: ms(self.histogram.value_at_quantile(0.90)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            max_ms: ms(self.histogram.max()),
            mean_ms: self.histogram.mean() / 1000.0,
        }
    }
}

/// The percentiles a report shows, in milliseconds; all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_milliseconds_are_where_expected() {
        let mut l = Latencies::new();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p90_ms, 900.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.max_ms, 1000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(Latencies::new().summary(), Summary::default());
    }

    #[test]
    fn merged_histograms_hold_both_sets_and_a_single_outlier_sets_the_max() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for _ in 0..99 {
            a.record_micros(2_000);
        }
        b.record(Duration::from_millis(250));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 100);
        assert!(close(s.p99_ms, 2.0), "{s:?}");
        assert!(close(s.max_ms, 250.0), "{s:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record_micros(0);
        l.record(Duration::from_secs(10_000));
        assert_eq!(l.count(), 2);
        assert!(l.summary().max_ms >= 3_599_000.0);
    }
}
