//! `--threshold "p99<200ms,accept_rate>=0.95,5xx==0"`: end-of-run checks.
//!
//! Metrics: `pNN` / `pNN.N` / `mean` / `max` of the end-to-end `latency`
//! stage, or of any stage with a prefix (`mail.p99`, `connect.max`), with a
//! unit (`us`, `ms`, `s`); counts `attempted`, `accepted`, `deferred`,
//! `rejected`, `failed`, `late`, `not_started`, `errors` (transport),
//! `4xx`, `5xx` (replies at any stage), `connections_failed`; ratios
//! `accept_rate`, `defer_rate`, `reject_rate`, `error_rate`, `late_rate`;
//! `messages_per_s`, `bytes_per_s`. Operators: `<`, `<=`, `>`, `>=`, `==`,
//! `!=`.

use crate::config::parse_duration;
use crate::stats::Stage;
use crate::{BlastError, RunResult};

use crate::compare::Op;

#[derive(Debug, Clone, PartialEq)]
enum Metric {
    /// Quantile (None = mean, Some(1.0) = max) of a stage, µs.
    Latency(Stage, Option<f64>),
    Named(String),
}

/// One parsed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    text: String,
    metric: Metric,
    op: Op,
    limit: f64,
}

/// A check's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The check as written.
    pub text: String,
    /// The measured value (latencies in µs).
    pub value: f64,
    /// Whether it held.
    pub passed: bool,
}

const NAMED: &[&str] = &[
    "attempted",
    "accepted",
    "deferred",
    "rejected",
    "failed",
    "late",
    "not_started",
    "errors",
    "4xx",
    "5xx",
    "connections_failed",
    "accept_rate",
    "defer_rate",
    "reject_rate",
    "error_rate",
    "late_rate",
    "messages_per_s",
    "bytes_per_s",
];

fn latency_metric(s: &str) -> Option<(Stage, Option<f64>)> {
    let (stage, what) = match s.split_once('.') {
        Some((st, w)) if !st.starts_with('p') || Stage::from_name(st).is_some() => {
            (Stage::from_name(st)?, w)
        }
        _ => (Stage::Latency, s),
    };
    let q = match what {
        "mean" => None,
        "max" => Some(1.0),
        _ => {
            let digits = what.strip_prefix('p')?;
            let q: f64 = if digits.contains('.') {
                digits.parse::<f64>().ok()? / 100.0
            } else {
                // p50 → 0.50, p999 → 0.999, p9999 → 0.9999
                let n: f64 = digits.parse().ok()?;
                n / 10f64.powi(digits.len() as i32)
            };
            // 99.9 / 100 is 0.9990000000000001 in binary: round it.
            let q = (q * 1e9).round() / 1e9;
            if !(0.0..=1.0).contains(&q) {
                return None;
            }
            Some(q)
        }
    };
    Some((stage, q))
}

/// Parses a comma-separated list of checks.
pub fn parse(spec: &str) -> Result<Vec<Check>, BlastError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| BlastError::Config(format!("--threshold {part:?}: {why}"));
        let (name, op, value) = crate::compare::split(part)
            .ok_or_else(|| bad("expected METRIC OP VALUE (OP: <, <=, >, >=, ==, !=)"))?;
        let (metric, limit) = if let Some((stage, q)) = latency_metric(name) {
            if value.chars().last().is_some_and(|c| c.is_ascii_digit()) {
                return Err(bad("latency limits need a unit (us, ms, s)"));
            }
            let d = parse_duration(value).map_err(|_| bad("bad duration"))?;
            (Metric::Latency(stage, q), d.as_secs_f64() * 1e6)
        } else if NAMED.contains(&name) {
            let v: f64 = value.parse().map_err(|_| bad("expected a number"))?;
            (Metric::Named(name.into()), v)
        } else {
            return Err(bad(&format!(
                "unknown metric {name:?} (pNN, mean, max, STAGE.pNN, {})",
                NAMED.join(", ")
            )));
        };
        out.push(Check {
            text: part.to_string(),
            metric,
            op,
            limit,
        });
    }
    Ok(out)
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

fn value(m: &Metric, r: &RunResult) -> f64 {
    let t = &r.totals;
    let c = &t.counters;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    match m {
        Metric::Latency(stage, q) => {
            let h = t.histogram(*stage);
            match q {
                None => h.mean(),
                Some(q) if *q >= 1.0 => h.max() as f64,
                Some(q) => h.value_at_quantile(*q) as f64,
            }
        }
        Metric::Named(n) => match n.as_str() {
            "attempted" => c.attempted as f64,
            "accepted" => c.accepted as f64,
            "deferred" => c.deferred as f64,
            "rejected" => c.rejected as f64,
            "failed" => c.failed as f64,
            "late" => c.late as f64,
            "not_started" => c.not_started as f64,
            "errors" => t.transport_errors() as f64,
            "4xx" => t.replies_of_class(4) as f64,
            "5xx" => t.replies_of_class(5) as f64,
            "connections_failed" => c.conn_failed as f64,
            "accept_rate" => ratio(c.accepted, c.attempted),
            "defer_rate" => ratio(c.deferred, c.attempted),
            "reject_rate" => ratio(c.rejected, c.attempted),
            "error_rate" => ratio(c.failed, c.attempted),
            "late_rate" => ratio(c.late, c.scheduled),
            "messages_per_s" => c.accepted as f64 / secs,
            "bytes_per_s" => c.bytes as f64 / secs,
            _ => f64::NAN,
        },
    }
}

/// Evaluates every check.
pub fn evaluate(checks: &[Check], r: &RunResult) -> Vec<Outcome> {
    checks
        .iter()
        .map(|c| {
            let v = value(&c.metric, r);
            Outcome {
                text: c.text.clone(),
                value: v,
                passed: c.op.holds(v, c.limit),
            }
        })
        .collect()
}

/// `p99<200ms: 1234 us` style description of a result.
pub fn describe(o: &Outcome) -> String {
    let verdict = if o.passed { "ok" } else { "FAILED" };
    format!("{verdict:>6}  {}  (measured {})", o.text, fmt_num(o.value))
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let c = parse("p99<200ms, accept_rate>=0.95,5xx==0,mail.p99.9<=1s,connect.max<5s").unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c[0].metric, Metric::Latency(Stage::Latency, Some(0.99)));
        assert_eq!(c[0].limit, 200_000.0);
        assert_eq!(c[1].op, Op::Ge);
        assert_eq!(c[2].metric, Metric::Named("5xx".into()));
        assert_eq!(c[3].metric, Metric::Latency(Stage::Mail, Some(0.999)));
        assert_eq!(c[4].metric, Metric::Latency(Stage::Connect, Some(1.0)));
        let q = parse("p999<1s").unwrap();
        assert_eq!(q[0].metric, Metric::Latency(Stage::Latency, Some(0.999)));
        assert!(parse("p99<200").is_err());
        assert!(parse("bogus<1").is_err());
        assert!(parse("accepted").is_err());
    }
}
