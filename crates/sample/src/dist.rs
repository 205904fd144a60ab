//! Distributions written the way people describe latencies and sizes.

/// z-score of the 99th percentile of the standard normal.
pub const Z99: f64 = 2.326_347_874_040_841;

/// A standard normal deviate from two uniforms in `[0, 1)` (Box-Muller;
/// `1 - u1` is in `(0, 1]`, so the logarithm is finite).
pub fn standard_normal(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal given by its median and 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    mu: f64,
    sigma: f64,
}

impl LogNormal {
    /// The log-normal whose median is `median` and 99th percentile `p99`
    /// (both clamped to at least 1e-9 so the logarithms stay finite).
    pub fn from_median_p99(median: f64, p99: f64) -> LogNormal {
        let mu = median.max(1e-9).ln();
        let sigma = (p99.max(1e-9).ln() - mu) / Z99;
        LogNormal { mu, sigma }
    }

    /// The value at standard-normal deviate `z` (`z = 0` is the median).
    pub fn at(&self, z: f64) -> f64 {
        (self.mu + self.sigma * z).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn median_and_p99_come_out() {
        let ln = LogNormal::from_median_p99(10.0, 200.0);
        assert!((ln.at(0.0) - 10.0).abs() < 1e-9);
        assert!((ln.at(Z99) - 200.0).abs() < 1e-6);
        let mut r = Rng::new(3);
        let mut xs: Vec<f64> = (0..20_000).map(|_| ln.at(r.normal())).collect();
        xs.sort_by(f64::total_cmp);
        assert!((xs[10_000] / 10.0 - 1.0).abs() < 0.1);
        assert!((xs[19_800] / 200.0 - 1.0).abs() < 0.2);
    }
}
