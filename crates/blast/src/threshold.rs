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

/// What a measured value is, for printing it with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A latency, microseconds (printed `573µs`, `12.3ms`, `1.18s`).
    Micros,
    /// A count of messages, replies, errors or connections.
    Count,
    /// A share between 0 and 1.
    Ratio,
    /// Per second (messages or bytes).
    PerSecond,
}

impl Unit {
    /// The unit's name in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Micros => "us",
            Unit::Count => "count",
            Unit::Ratio => "ratio",
            Unit::PerSecond => "per_s",
        }
    }

    /// `v` written with this unit.
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Micros => format_micros(v),
            Unit::Count => fmt_num(v),
            Unit::Ratio => fmt_num(v),
            Unit::PerSecond => format!("{}/s", three_digits(v)),
        }
    }
}

/// A check's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The check as written.
    pub text: String,
    /// The measured value (latencies in µs).
    pub value: f64,
    /// What `value` is.
    pub unit: Unit,
    /// Whether it held.
    pub passed: bool,
}

impl Outcome {
    /// The measured value with its unit, e.g. `1.18s`.
    pub fn measured(&self) -> String {
        self.unit.format(self.value)
    }

    /// The outcome in the JSON report: expression, measured value (with
    /// its unit, and as a number in that unit) and verdict.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "expression": self.text,
            "measured": self.measured(),
            "value": if self.value.is_finite() { serde_json::json!(self.value) } else { serde_json::Value::Null },
            "unit": self.unit.name(),
            "verdict": if self.passed { "ok" } else { "failed" },
        })
    }
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
    // The ledger join (NaN, so failing, without one).
    "lost",
    "duplicates",
    "delivered",
    "unexpected",
    "e2e_p50",
    "e2e_p90",
    "e2e_p99",
    "e2e_max",
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
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(BlastError::Config(format!(
                "--threshold {spec:?}: empty check (expected METRIC OP VALUE, comma-separated, \
                 e.g. p99<200ms,5xx==0)"
            )));
        }
        let bad = |why: &str| BlastError::Config(format!("--threshold {part:?}: {why}"));
        let (name, op, value) = crate::compare::split(part)
            .ok_or_else(|| bad("expected METRIC OP VALUE (OP: <, <=, >, >=, ==, !=)"))?;
        let (metric, limit) = if let Some((stage, q)) = latency_metric(name) {
            if value.chars().last().is_some_and(|c| c.is_ascii_digit()) {
                return Err(bad("latency limits need a unit (us, ms, s)"));
            }
            let d = parse_duration(value).map_err(|_| bad("bad duration"))?;
            (Metric::Latency(stage, q), d.as_secs_f64() * 1e6)
        } else if name.starts_with("e2e_") && NAMED.contains(&name) {
            let d = parse_duration(value).map_err(|_| bad("bad duration"))?;
            (Metric::Named(name.into()), d.as_secs_f64() * 1e6)
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

fn unit(m: &Metric) -> Unit {
    match m {
        Metric::Latency(..) => Unit::Micros,
        Metric::Named(n) if n.ends_with("_rate") => Unit::Ratio,
        Metric::Named(n) if n.ends_with("_per_s") => Unit::PerSecond,
        Metric::Named(n) if n.starts_with("e2e_") => Unit::Micros,
        Metric::Named(_) => Unit::Count,
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
            n => r.ledger.as_ref().map_or(f64::NAN, |l| match n {
                "lost" => l.lost as f64,
                "duplicates" => l.duplicates as f64,
                "delivered" => l.delivered as f64,
                "unexpected" => l.unexpected as f64,
                "e2e_p50" => l.e2e.p50_us as f64,
                "e2e_p90" => l.e2e.p90_us as f64,
                "e2e_p99" => l.e2e.p99_us as f64,
                "e2e_max" => l.e2e.max_us as f64,
                _ => f64::NAN,
            }),
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
                unit: unit(&c.metric),
                passed: c.op.holds(v, c.limit),
            }
        })
        .collect()
}

/// `FAILED  p99<50ms  (measured 1.18s)`: one line per result.
pub fn describe(o: &Outcome) -> String {
    let verdict = if o.passed { "ok" } else { "FAILED" };
    format!("{verdict:>6}  {}  (measured {})", o.text, o.measured())
}

/// Three significant digits, trailing zeros dropped (`1.18`, `12.3`, `50`).
fn three_digits(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Microseconds in the largest unit that keeps the value at 1 or more.
fn format_micros(us: f64) -> String {
    if !us.is_finite() {
        return "-".into();
    }
    match us.abs() {
        a if a >= 1e6 => format!("{}s", three_digits(us / 1e6)),
        a if a >= 1e3 => format!("{}ms", three_digits(us / 1e3)),
        _ => format!("{}µs", three_digits(us)),
    }
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

    #[test]
    fn empty_checks_are_rejected() {
        for spec in [",,,", "", " ", "p99<1s,", "p99<1s,,5xx==0"] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains("empty check"), "{spec:?}: {e}");
        }
    }

    #[test]
    fn measured_values_carry_their_unit() {
        let o = |value, unit| Outcome {
            text: String::new(),
            value,
            unit,
            passed: true,
        };
        assert_eq!(o(1_175_551.0, Unit::Micros).measured(), "1.18s");
        assert_eq!(o(573.132, Unit::Micros).measured(), "573µs");
        assert_eq!(o(12_345.0, Unit::Micros).measured(), "12.3ms");
        assert_eq!(o(50_000.0, Unit::Micros).measured(), "50ms");
        assert_eq!(o(0.9939, Unit::Ratio).measured(), "0.9939");
        assert_eq!(o(1400.0, Unit::Count).measured(), "1400");
        assert_eq!(o(1234.56, Unit::PerSecond).measured(), "1235/s");
        let j = Outcome {
            text: "p99<50ms".into(),
            value: 1_175_551.0,
            unit: Unit::Micros,
            passed: false,
        }
        .to_json();
        assert_eq!(j["measured"], "1.18s");
        assert_eq!(j["verdict"], "failed");
        assert_eq!(j["unit"], "us");
    }
}
