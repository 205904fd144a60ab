//! The parts of a rule that are checked by building them: the delay
//! distribution, the time window and the header condition. The rule checks
//! build them and drop the result; the compiler keeps it, so what passes
//! the checks compiles, with the same error text.

use regex::Regex;

use crate::plan::model::{DelaySpec, DistKind, HeaderSpec, WindowSpec};
use crate::plan::select::{Dist, Window};

/// Builds the delay distribution, naming the missing or foreign parameter.
pub(super) fn dist(d: &DelaySpec) -> Result<(Dist, f64), String> {
    let cap = d.cap_ms.map_or(600_000.0, |c| c.0);
    let given: Vec<(&str, Option<f64>)> = vec![
        ("min", d.min_ms.map(|v| v.0)),
        ("max", d.max_ms.map(|v| v.0)),
        ("mean", d.mean_ms.map(|v| v.0)),
        ("stddev", d.stddev_ms.map(|v| v.0)),
        ("median", d.median_ms.map(|v| v.0)),
        ("p99", d.p99_ms.map(|v| v.0)),
        ("scale", d.scale_ms.map(|v| v.0)),
        ("shape", d.shape.map(|v| v.0)),
    ];
    let (kind, params): (&str, &[&str]) = match (d.ms, d.distribution) {
        (Some(_), Some(_)) => {
            return Err("delay: give either `fixed` or `distribution`, not both".into())
        }
        (None, None) => {
            return Err("delay: give `fixed` (or write `delay: 200ms`) or `distribution` (allowed: uniform, normal, lognormal, exponential, pareto)".into())
        }
        (Some(_), None) => ("fixed", &[]),
        (None, Some(DistKind::Uniform)) => ("uniform", &["min", "max"]),
        (None, Some(DistKind::Normal)) => ("normal", &["mean", "stddev"]),
        (None, Some(DistKind::Lognormal)) => ("lognormal", &["median", "p99"]),
        (None, Some(DistKind::Exponential)) => ("exponential", &["mean"]),
        (None, Some(DistKind::Pareto)) => ("pareto", &["scale", "shape"]),
    };
    for (k, v) in &given {
        if v.is_some() && !params.contains(k) {
            return Err(format!(
                "delay: `{k}` does not apply to a {kind} delay; its parameters: {}",
                if params.is_empty() {
                    "fixed".to_string()
                } else {
                    params.join(", ")
                }
            ));
        }
    }
    let get = |k: &str| -> Result<f64, String> {
        given
            .iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| *v)
            .ok_or_else(|| format!("delay: a {kind} delay needs `{}`", params.join("` and `")))
    };
    let dist = match d.distribution {
        None => Dist::Fixed(d.ms.map_or(0.0, |m| m.0)),
        Some(DistKind::Uniform) => {
            let (min, max) = (get("min")?, get("max")?);
            if max < min {
                return Err("delay: max must be >= min".into());
            }
            Dist::Uniform { min, max }
        }
        Some(DistKind::Normal) => Dist::Normal {
            mean: get("mean")?,
            stddev: get("stddev")?,
        },
        Some(DistKind::Lognormal) => {
            let (median, p99) = (get("median")?, get("p99")?);
            if median <= 0.0 || p99 < median {
                return Err("delay: lognormal needs 0 < median <= p99".into());
            }
            Dist::LogNormal { median, p99 }
        }
        Some(DistKind::Exponential) => Dist::Exponential { mean: get("mean")? },
        Some(DistKind::Pareto) => {
            let (scale, shape) = (get("scale")?, get("shape")?);
            if shape <= 0.0 {
                return Err("delay: pareto shape must be > 0".into());
            }
            Dist::Pareto { scale, shape }
        }
    };
    Ok((dist, cap))
}

/// The window in compiled form.
pub(super) fn window(w: &WindowSpec) -> Result<Window, String> {
    let from = w.from.0;
    let period = w.period.map_or(0.0, |p| p.0);
    let to = match (w.to, w.duty) {
        (Some(_), Some(_)) => return Err("window: give `to` or `duty`, not both".into()),
        (Some(to), None) => to.0,
        (None, Some(d)) => {
            if period <= 0.0 {
                return Err("window: `duty` needs a `period`".into());
            }
            if d.0 <= 0.0 || d.0 > 1.0 {
                return Err(format!(
                    "window: duty {} is out of range; allowed: (0, 1]",
                    d.0
                ));
            }
            from + d.0 * period
        }
        (None, None) => f64::INFINITY,
    };
    if to <= from {
        return Err(format!(
            "window: `to` ({to}) must be greater than `from` ({from})"
        ));
    }
    if w.period.is_some() {
        if period <= 0.0 {
            return Err("window: period must be > 0".into());
        }
        if from >= period || to > period {
            return Err(format!(
                "window: with period {period}, `from` and `to` must lie within one period (0..={period})"
            ));
        }
    }
    Ok(Window { from, to, period })
}

/// Compiles the header condition.
pub(super) fn header(h: &HeaderSpec) -> Result<(String, Option<Regex>), String> {
    if h.name.is_empty() || h.name.bytes().any(|b| b == b':' || b.is_ascii_whitespace()) {
        return Err(format!(
            "match.header.name `{}` is not a header field name",
            h.name
        ));
    }
    let re = match &h.regex {
        Some(r) => Some(
            Regex::new(r).map_err(|e| format!("match.header.regex is not a valid regex: {e}"))?,
        ),
        None => None,
    };
    Ok((h.name.to_ascii_lowercase(), re))
}
