//! Scenario expectations: `delivered == 1000`, `attempts.p99 <= 3`,
//! `breaker.opened >= 1`, `retry_interval.min >= 1s`.
//!
//! An expectation is `METRIC OP VALUE` with `OP` one of `<`, `<=`, `>`,
//! `>=`, `==`, `!=`; `VALUE` is a number, or a duration (`1s`, `250ms`)
//! for time metrics (kept in seconds). Metric names are checked when the
//! scenario is loaded (see [`known`]), values when it is evaluated against
//! a [`Measurements`] map.

use std::collections::BTreeMap;

use crate::config::parse_duration;

pub use crate::compare::Op;

/// One parsed expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// As written.
    pub text: String,
    /// The metric's name.
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The limit (seconds for durations).
    pub value: f64,
}

/// Metric families and whether their values are times.
const FIXED: &[(&str, bool)] = &[
    ("offered", false),
    ("attempted", false),
    ("retries", false),
    ("delivered", false),
    ("rejected", false),
    ("gave_up", false),
    ("pending", false),
    ("recipients.delivered", false),
    ("recipients.rejected", false),
    ("recipients.gave_up", false),
    ("recipients.pending", false),
    ("budget.granted", false),
    ("budget.denied", false),
    ("breaker.opened", false),
    ("breaker.closed", false),
    ("breaker.half_opened", false),
    ("concurrency.min", false),
    ("concurrency.max", false),
    ("concurrency.final", false),
    ("concurrency.suspensions", false),
    ("connections.opened", false),
    ("connections.failed", false),
    ("goodput", false),
    ("duration", true),
    ("sink.accepted", false),
    ("sink.rejected", false),
    ("referee.retries", false),
    ("referee.resent_after_5xx", false),
    ("referee.commands_after_421", false),
    ("referee.max_concurrent", false),
    ("referee.connections", false),
    ("referee.replies_421", false),
    // The ledger join (embedded sink, or the relay's downstream sink);
    // names as in --threshold.
    ("lost", false),
    ("duplicates", false),
    ("unexpected", false),
    ("ledger.accepted", false),
    ("ledger.delivered", false),
    ("ledger.duplicate_messages", false),
    ("ledger.out_of_order", false),
    ("e2e_p50", true),
    ("e2e_p90", true),
    ("e2e_p99", true),
    ("e2e_max", true),
];

/// Whether `metric` comes from the ledger join (needs the trace header).
pub fn is_ledger(metric: &str) -> bool {
    matches!(metric, "lost" | "duplicates" | "unexpected")
        || metric.starts_with("ledger.")
        || metric.starts_with("e2e_")
}

/// Summary statistics of a distribution metric.
pub const STATS: &[&str] = &["count", "min", "mean", "p50", "p90", "p99", "max"];

/// Whether `name` is a metric a scenario can measure, and whether it is a
/// time (then the value must be a duration).
pub fn known(name: &str) -> Option<bool> {
    if let Some((_, t)) = FIXED.iter().find(|(n, _)| *n == name) {
        return Some(*t);
    }
    let (family, stat) = name.rsplit_once('.')?;
    if !STATS.contains(&stat) {
        return None;
    }
    let time = stat != "count";
    match family {
        "attempts" => Some(false),
        "retry_interval" | "reconnect_after_421" => Some(time),
        f => {
            // retry_interval.450.min: by the reply code that caused it.
            let code = f.strip_prefix("retry_interval.")?;
            (code.len() == 3 && code.parse::<u16>().is_ok()).then_some(time)
        }
    }
}

/// Parses one expectation.
pub fn parse(text: &str) -> Result<Expectation, String> {
    let t = text.trim();
    let (name, op, value) = crate::compare::split(t)
        .ok_or_else(|| format!("{t:?}: expected METRIC OP VALUE (OP: <, <=, >, >=, ==, !=)"))?;
    let Some(time) = known(name) else {
        return Err(format!(
            "{t:?}: unknown metric {name:?}; known: {}, attempts.STAT, retry_interval[.CODE].STAT, \
             reconnect_after_421.STAT (STAT: {})",
            FIXED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            STATS.join(", ")
        ));
    };
    let value = if time {
        if value.chars().last().is_some_and(|c| c.is_ascii_digit()) {
            return Err(format!(
                "{t:?}: {name} is a time: give a unit (e.g. 1s, 250ms)"
            ));
        }
        parse_duration(value)
            .map_err(|_| format!("{t:?}: bad duration {value:?}"))?
            .as_secs_f64()
    } else {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{t:?}: expected a number, got {value:?}"))?
    };
    Ok(Expectation {
        text: t.to_string(),
        metric: name.to_string(),
        op,
        value,
    })
}

/// What a scenario measured: metric name → value (times in seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    /// The values.
    pub values: BTreeMap<String, f64>,
}

impl Measurements {
    /// Sets a value.
    pub fn set(&mut self, name: impl Into<String>, v: f64) {
        self.values.insert(name.into(), v);
    }

    /// A value, if measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// One checked expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// As written.
    pub text: String,
    /// The measured value (`None`: not measured in this run, which fails).
    pub measured: Option<f64>,
    /// The value formatted (with a unit for times).
    pub shown: String,
    /// Whether it held.
    pub passed: bool,
}

fn show(metric: &str, v: f64) -> String {
    if known(metric) == Some(true) {
        if v >= 1.0 {
            format!("{v:.3}s")
        } else {
            format!("{:.1}ms", v * 1000.0)
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Checks every expectation against `m`.
pub fn evaluate(exps: &[Expectation], m: &Measurements) -> Vec<Checked> {
    exps.iter()
        .map(|e| {
            let v = m.get(&e.metric);
            Checked {
                text: e.text.clone(),
                measured: v,
                shown: v.map_or_else(|| "not measured".into(), |v| show(&e.metric, v)),
                passed: v.is_some_and(|v| e.op.holds(v, e.value)),
            }
        })
        .collect()
}

/// `    ok  delivered == 1000  (measured 1000)`.
pub fn describe(c: &Checked) -> String {
    let verdict = if c.passed { "ok" } else { "FAILED" };
    format!("{verdict:>6}  {}  (measured {})", c.text, c.shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_examples() {
        let e = parse("delivered == 1000").unwrap();
        assert_eq!(
            (e.metric.as_str(), e.op, e.value),
            ("delivered", Op::Eq, 1000.0)
        );
        assert_eq!(parse("attempts.p99 <= 3").unwrap().op, Op::Le);
        assert_eq!(parse("breaker.opened>=1").unwrap().value, 1.0);
        let r = parse("retry_interval.min >= 1s").unwrap();
        assert_eq!((r.metric.as_str(), r.value), ("retry_interval.min", 1.0));
        assert_eq!(parse("retry_interval.450.p50 < 250ms").unwrap().value, 0.25);
        assert_eq!(parse("retry_interval.count >= 3").unwrap().value, 3.0);
        for bad in [
            "delivered",
            "deliverd == 3",
            "retry_interval.min >= 1",
            "attempts.p98 < 3",
            "delivered == lots",
            "retry_interval.45.min > 1s",
            "delivered =< 3",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("deliverd == 3")
            .unwrap_err()
            .contains("unknown metric"));
    }

    #[test]
    fn evaluates_and_names_failures() {
        let mut m = Measurements::default();
        m.set("delivered", 1000.0);
        m.set("retry_interval.min", 1.2);
        m.set("attempts.p99", 3.0);
        let exps: Vec<Expectation> = [
            "delivered == 1000",
            "retry_interval.min >= 1s",
            "attempts.p99 < 3",
            "breaker.opened >= 1",
        ]
        .iter()
        .map(|t| parse(t).unwrap())
        .collect();
        let r = evaluate(&exps, &m);
        assert_eq!(
            r.iter().map(|c| c.passed).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        assert_eq!(r[1].shown, "1.200s");
        assert_eq!(describe(&r[2]), "FAILED  attempts.p99 < 3  (measured 3)");
        assert_eq!(r[3].shown, "not measured");
        assert!(Op::Eq.holds(0.1 + 0.2, 0.3));
        assert!(Op::Le.holds(1.0, 1.0) && !Op::Lt.holds(1.0, 1.0));
        assert!(Op::Ne.holds(2.0, 1.0) && Op::Gt.holds(2.0, 1.0));
    }
}
