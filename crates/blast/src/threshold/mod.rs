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
//!
//! A check may name a load stage of `--stages` (1-based): `stage2:p99<50ms`,
//! `stage3:accept_rate>=0.99`; it then reads that stage's messages (by
//! intended start) and its length: the message counts, their ratios,
//! `messages_per_s` and the end-to-end latency, and the per-stage table's
//! `4xx`, `5xx` and `errors` columns, which count the stage's *messages*
//! that ended with a 4xx, a 5xx or a transport error (its `deferred`,
//! `rejected` and `failed`), where the whole-run metrics count every reply
//! of that class at any step and every transport error.
//!
//! A check that can never hold whatever is measured (`5xx<0`,
//! `accept_rate>1`, `p99<0ms`) is refused. `--abort-on-fail` stops a run
//! once a check can no longer pass ([`Check::cannot_pass`], in `decide`).
//!
//! The same language judges a capacity step (`capacity --sla`, over the
//! step's measurement window) and watches a run for harm (`capacity
//! --abort-if 'accept_rate<0.5 for 5s'`: checked every interval on that
//! interval's figures; with `for D` the check must hold for D in a row).

use std::time::Duration;

use crate::config::parse_duration;
use crate::stats::{Stage, Stats};
use crate::{BlastError, RunResult};

use crate::compare::Op;

mod decide;
mod unit;

pub use decide::Outlook;
pub use unit::Unit;

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
    window: Option<Duration>,
    /// `stageN:` (0-based here).
    load_stage: Option<usize>,
}

impl Check {
    /// The check as written (with its `for` window, if any).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `for D`: how long the check must hold in a row (abort checks only).
    pub fn window(&self) -> Option<Duration> {
        self.window
    }

    /// The load stage a `stageN:` check reads (0-based).
    pub fn load_stage(&self) -> Option<usize> {
        self.load_stage
    }
}

/// What a `stageN:` check can read (see [`crate::stage_report`]).
const PER_STAGE: &[&str] = &[
    "attempted",
    "accepted",
    "deferred",
    "rejected",
    "failed",
    "late",
    "not_started",
    "accept_rate",
    "defer_rate",
    "reject_rate",
    "error_rate",
    "late_rate",
    "messages_per_s",
    "4xx",
    "5xx",
    "errors",
];

/// The per-stage table's columns under their whole-run names: a stage
/// check reads the stage's messages that ended so.
const STAGE_ALIASES: &[(&str, &str)] = &[
    ("4xx", "deferred"),
    ("5xx", "rejected"),
    ("errors", "failed"),
];

/// What `name` reads in a `stageN:` check.
fn stage_name(name: &str) -> &str {
    STAGE_ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, m)| m)
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
    /// A whole-run check that failed on a `--stages` run: the first load
    /// stage (1-based) whose own figures fail it, and its measured value.
    pub broke_in: Option<(usize, String)>,
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
            "first_failing_stage": self.broke_in.as_ref().map(|(i, m)| serde_json::json!({
                "stage": i,
                "measured": m,
            })),
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

/// Parses a comma-separated list of checks (`--threshold`).
pub fn parse(spec: &str) -> Result<Vec<Check>, BlastError> {
    parse_as(spec, "--threshold", false)
}

/// Parses a comma-separated list of checks given with `flag` (named in
/// errors); `windows` allows a `for DURATION` suffix on each check.
pub fn parse_as(spec: &str, flag: &str, windows: bool) -> Result<Vec<Check>, BlastError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(BlastError::Config(format!(
                "{flag} {spec:?}: empty check (expected METRIC OP VALUE, comma-separated, \
                 e.g. p99<200ms,5xx==0)"
            )));
        }
        let bad = |why: &str| BlastError::Config(format!("{flag} {part:?}: {why}"));
        let (expr, window) = match part.split_once(" for ") {
            Some((e, w)) if windows => {
                let d = parse_duration(w.trim()).map_err(|_| bad("bad `for` duration"))?;
                (e.trim(), Some(d))
            }
            Some(_) => return Err(bad("`for DURATION` is only for --abort-if")),
            None => (part, None),
        };
        let (name, op, value) = crate::compare::split(expr)
            .ok_or_else(|| bad("expected METRIC OP VALUE (OP: <, <=, >, >=, ==, !=)"))?;
        let (load_stage, name) = match name.split_once(':') {
            Some((st, m)) => {
                let n: usize = st
                    .strip_prefix("stage")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("expected stageN: before the metric (N from 1)"))?;
                (Some(n - 1), m.trim())
            }
            None => (None, name),
        };
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
            // Finite only: `inf` and `1e400` parse as infinity, which no
            // count or share can be compared with.
            let v = value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("expected a number"))?;
            (Metric::Named(name.into()), v)
        } else {
            return Err(bad(&format!(
                "unknown metric {name:?} (pNN, mean, max, STAGE.pNN, {})",
                NAMED.join(", ")
            )));
        };
        if let Some(why) = decide::never_holds(&metric, name, op, limit) {
            return Err(bad(&why));
        }
        let metric = match metric {
            _ if load_stage.is_none() => metric,
            Metric::Latency(Stage::Latency, q) => Metric::Latency(Stage::Latency, q),
            Metric::Named(n) if PER_STAGE.contains(&n.as_str()) => {
                Metric::Named(stage_name(&n).into())
            }
            _ => {
                return Err(bad(&format!(
                    "a stage check reads pNN, mean, max or {}",
                    PER_STAGE.join(", ")
                )))
            }
        };
        out.push(Check {
            text: part.to_string(),
            metric,
            op,
            limit,
            window,
            load_stage,
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

fn value(m: &Metric, t: &Stats, secs: f64) -> f64 {
    let c = &t.counters;
    // Shares of the messages that ended: over a whole run every attempted
    // message ends, so this is the attempted count; over a window (a
    // capacity step, one interval) messages started before it end in it.
    let ended = c.accepted + c.deferred + c.rejected + c.failed;
    let secs = secs.max(1e-9);
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
            "accept_rate" => ratio(c.accepted, ended),
            "defer_rate" => ratio(c.deferred, ended),
            "reject_rate" => ratio(c.rejected, ended),
            "error_rate" => ratio(c.failed, ended),
            "late_rate" => ratio(c.late, c.scheduled),
            "messages_per_s" => c.accepted as f64 / secs,
            "bytes_per_s" => c.bytes as f64 / secs,
            // The ledger's figures are the whole run's ([`ledger_value`]).
            _ => f64::NAN,
        },
    }
}

/// A ledger metric of the whole run: `None` for other metrics; NaN (so the
/// check fails) when the run has no ledger join.
fn ledger_value(m: &Metric, r: &RunResult) -> Option<f64> {
    let Metric::Named(n) = m else { return None };
    let get: fn(&crate::ledger::Joined) -> u64 = match n.as_str() {
        "lost" => |l| l.lost,
        "duplicates" => |l| l.duplicates,
        "delivered" => |l| l.delivered,
        "unexpected" => |l| l.unexpected,
        "e2e_p50" => |l| l.e2e.p50_us,
        "e2e_p90" => |l| l.e2e.p90_us,
        "e2e_p99" => |l| l.e2e.p99_us,
        "e2e_max" => |l| l.e2e.max_us,
        _ => return None,
    };
    Some(r.ledger.as_ref().map_or(f64::NAN, |l| get(l) as f64))
}

/// Evaluates every check on a whole run (a `stageN:` check on its stage).
pub fn evaluate(checks: &[Check], r: &RunResult) -> Vec<Outcome> {
    let stages = crate::stage_report::figures(r);
    checks
        .iter()
        .map(|c| match c.load_stage {
            None => {
                let mut o =
                    evaluate_stats(std::slice::from_ref(c), &r.totals, r.elapsed.as_secs_f64())
                        .remove(0);
                if let Some(v) = ledger_value(&c.metric, r) {
                    o.value = v;
                    o.passed = c.op.holds(v, c.limit);
                }
                o
            }
            Some(i) => match stages.get(i) {
                Some(f) => {
                    evaluate_stats(std::slice::from_ref(c), &f.as_stats(), f.duration_s).remove(0)
                }
                None => Outcome {
                    text: c.text.clone(),
                    value: f64::NAN,
                    unit: unit(&c.metric),
                    passed: false,
                    broke_in: None,
                },
            },
        })
        .zip(checks)
        .map(|(mut o, c)| {
            if !o.passed && c.load_stage.is_none() && ledger_value(&c.metric, r).is_none() {
                o.broke_in = first_failing_stage(c, &stages);
            }
            o
        })
        .collect()
}

/// The first load stage whose own figures fail `c` (a check a stage can
/// read), with its measured value: which step of the load broke it.
fn first_failing_stage(
    c: &Check,
    stages: &[crate::stage_report::StageFigures],
) -> Option<(usize, String)> {
    // Not 4xx, 5xx or errors: a stage counts messages, the run replies.
    let readable = match &c.metric {
        Metric::Latency(st, _) => *st == Stage::Latency,
        Metric::Named(n) => PER_STAGE.contains(&n.as_str()) && stage_name(n) == n,
    };
    if !readable {
        return None;
    }
    stages.iter().enumerate().find_map(|(i, f)| {
        let o = evaluate_stats(std::slice::from_ref(c), &f.as_stats(), f.duration_s).remove(0);
        (!o.passed).then(|| (i + 1, o.measured()))
    })
}

/// Evaluates every check on measurements covering `secs` seconds (a
/// capacity step's window, one interval).
pub fn evaluate_stats(checks: &[Check], t: &Stats, secs: f64) -> Vec<Outcome> {
    checks
        .iter()
        .map(|c| {
            let v = value(&c.metric, t, secs);
            Outcome {
                text: c.text.clone(),
                value: v,
                unit: unit(&c.metric),
                passed: c.op.holds(v, c.limit),
                broke_in: None,
            }
        })
        .collect()
}

/// `FAILED  p99<50ms  (measured 1.18s)`: one line per result.
pub fn describe(o: &Outcome) -> String {
    let verdict = if o.passed { "ok" } else { "FAILED" };
    let mut s = format!("{verdict:>6}  {}  (measured {})", o.text, o.measured());
    if let Some((i, m)) = &o.broke_in {
        s.push_str(&format!("; first broken in stage {i} (measured {m})"));
    }
    s
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
        assert!(parse("accept_rate<0.5 for 5s").is_err());
        let w = parse_as("accept_rate<0.5 for 5s,5xx>10", "--abort-if", true).unwrap();
        assert_eq!(w[0].window(), Some(Duration::from_secs(5)));
        assert_eq!(w[0].limit, 0.5);
        assert_eq!(w[1].window(), None);
        assert!(parse_as("accept_rate<0.5 for x", "--abort-if", true).is_err());
        let st = parse("stage2:p99<50ms,stage1:accept_rate>=0.9").unwrap();
        assert_eq!(st[0].load_stage(), Some(1));
        assert_eq!(st[0].metric, Metric::Latency(Stage::Latency, Some(0.99)));
        assert_eq!(st[1].load_stage(), Some(0));
        for bad in [
            "stage0:p99<1s",
            "stagex:p99<1s",
            "stage1:mail.p99<1s",
            "stage1:connections_failed==0",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
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
            broke_in: None,
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
            broke_in: Some((3, "1.4s".into())),
        }
        .to_json();
        assert_eq!(j["first_failing_stage"]["stage"], 3);
        assert_eq!(j["measured"], "1.18s");
        assert_eq!(j["verdict"], "failed");
        assert_eq!(j["unit"], "us");
    }
}
