//! Pure statistics: percentiles, medians, ratios and latency summaries.
//!
//! Nothing here does I/O or reads a clock, so the definitions the reports
//! rely on are unit-tested on their own.

use std::time::Duration;

use serde::Serialize;

/// Nearest-rank percentile (`p` in 0..=100) of samples sorted ascending:
/// the smallest sample with at least `p`% of the samples at or below it.
/// `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary rounding.
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Median of `values` in any order (the mean of the two middle values for an
/// even count). Non-finite values are ignored. `None` when nothing is left.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `a / b`, when both are known, finite, and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() && b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// `bytes` over `secs` in MB/s (1 MB = 10^6 bytes). `None` for no time.
pub fn megabytes_per_sec(bytes: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| bytes as f64 / secs / 1e6)
}

/// `count` over `secs` per second. `None` for no time.
pub fn per_sec(count: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| count as f64 / secs)
}

/// The shape of a set of request latencies, in milliseconds. Kept instead
/// of every request's latency where a fixed-duration loop makes hundreds of
/// thousands of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of requests measured.
    pub count: usize,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarizes `latencies` (any order). `None` when there are none.
    pub fn from_durations(latencies: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Self::from_millis(&mut ms)
    }

    /// Summarizes latencies given in milliseconds; sorts `ms` in place.
    pub fn from_millis(ms: &mut [f64]) -> Option<Self> {
        ms.sort_by(f64::total_cmp);
        let count = ms.len();
        Some(Self {
            count,
            min_ms: *ms.first()?,
            mean_ms: ms.iter().sum::<f64>() / count as f64,
            p50_ms: percentile(ms, 50.0)?,
            p90_ms: percentile(ms, 90.0)?,
            p99_ms: percentile(ms, 99.0)?,
            p999_ms: percentile(ms, 99.9)?,
            max_ms: *ms.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        let cases = [(0.0, 1.0), (1.0, 1.0), (50.0, 50.0), (90.0, 90.0), (99.0, 99.0), (99.9, 100.0), (100.0, 100.0)];
        for (p, want) in cases {
            assert_eq!(percentile(&sorted, p), Some(want), "p{p}");
        }
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 51.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Out-of-range p is clamped rather than indexing out of bounds.
        assert_eq!(percentile(&[1.0, 2.0], 250.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0], -3.0), Some(1.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0, f64::INFINITY]), Some(1.0));
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    }

    #[test]
    fn rates_use_decimal_megabytes() {
        assert_eq!(megabytes_per_sec(2_000_000, 2.0), Some(1.0));
        assert_eq!(megabytes_per_sec(1 << 20, 1.0), Some(1.048576));
        assert_eq!(megabytes_per_sec(1, 0.0), None);
        assert_eq!(per_sec(10, 0.5), Some(20.0));
        assert_eq!(per_sec(10, 0.0), None);
    }

    #[test]
    fn latency_summary() {
        let latencies: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let s = LatencySummary::from_durations(&latencies).expect("non-empty");
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 1000.0);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p90_ms, 900.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
        assert!((s.mean_ms - 500.5).abs() < 1e-9);
        assert_eq!(LatencySummary::from_durations(&[]), None);
    }
}
