//! The summary both reports print for an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Count, extremes, mean and the usual percentiles of a histogram, in its
/// own unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistSummary {
    /// Recorded values.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean, rounded to one decimal.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl HistSummary {
    /// Summarises `h`.
    pub fn of(h: &Histogram<u64>) -> HistSummary {
        HistSummary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}
