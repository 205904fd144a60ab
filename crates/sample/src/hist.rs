//! The summary both reports print for an HDR histogram.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Count, extremes, mean and the usual percentiles of a histogram, in its
/// own unit (all zero when the histogram is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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
    /// 99.9th percentile; `None` for reports whose shape has no `p999`
    /// (then the key is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999: Option<u64>,
    /// Largest value.
    pub max: u64,
}

impl HistSummary {
    /// Summarises `h`, with `p999`.
    pub fn of(h: &Histogram<u64>) -> HistSummary {
        if h.is_empty() {
            // An empty histogram's `min()` is not 0: say "nothing" plainly.
            return HistSummary {
                p999: Some(0),
                ..HistSummary::default()
            };
        }
        HistSummary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: Some(h.value_at_quantile(0.999)),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_all_zero_and_p999_is_left_out_when_none() {
        let h = Histogram::<u64>::new(2).unwrap();
        // Only `min` differs from what the histogram itself says when empty.
        assert_eq!((h.mean(), h.value_at_quantile(0.999), h.max()), (0.0, 0, 0));
        let s = HistSummary::of(&h);
        assert_eq!((s.count, s.min, s.max, s.p999), (0, 0, 0, Some(0)));
        let json = serde_json::to_value(HistSummary { p999: None, ..s }).unwrap();
        assert!(json.get("p999").is_none(), "{json}");
        assert_eq!(json["min"], 0);
    }
}
