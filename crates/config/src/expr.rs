//! The one expression language for judgements: `metric op value`, e.g.
//! `retry_4xx_min_interval>=1s`, `p99<200ms`, `resent_after_5xx==0`.
//!
//! - `metric`: a free name (letters, digits, `_`, `.`, `-`); the caller
//!   checks it against its own vocabulary ([`Check::parse_with`]).
//! - `op`: `<`, `<=`, `>`, `>=`, `==`, `!=`.
//! - `value`: a plain number (`5`, `0.95`) or a duration in the shared
//!   grammar (`300ms`, `1.5s`, `2m`: see [`crate::units`]). Durations are
//!   compared in seconds, so a metric measured in seconds can be checked
//!   against either form.
//!
//! A list of checks is comma-separated (`a>=1s, b==0`) or a YAML list of
//! such strings. [`Check`]'s `Display` writes a form that parses back to
//! the same check.

use std::fmt;
use std::time::Duration;

use crate::units::{format_duration, parse_duration};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Every operator, two-character ones first (the order parsing tries).
    pub const ALL: [Op; 6] = [Op::Le, Op::Ge, Op::Eq, Op::Ne, Op::Lt, Op::Gt];

    /// The operator as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Whether `measured op limit` holds. `==` and `!=` compare with a
    /// relative tolerance of 1e-9, so `0.3` equals `0.1 + 0.2`.
    pub fn holds(self, measured: f64, limit: f64) -> bool {
        // The tolerance only between finite values: against an infinity it
        // would be infinite too, and make `1 >= inf` hold.
        let eq = measured == limit
            || (measured.is_finite()
                && limit.is_finite()
                && (measured - limit).abs() <= 1e-9 * measured.abs().max(limit.abs()).max(1.0));
        match self {
            Op::Lt => measured < limit && !eq,
            Op::Le => measured <= limit || eq,
            Op::Gt => measured > limit && !eq,
            Op::Ge => measured >= limit || eq,
            Op::Eq => eq,
            Op::Ne => !eq,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The right-hand side of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A plain number.
    Number(f64),
    /// A duration (compared as seconds).
    Duration(Duration),
}

impl Value {
    /// The value as a number: durations in seconds.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Number(n) => n,
            Value::Duration(d) => d.as_secs_f64(),
        }
    }

    /// Parses a number or, failing that, a duration.
    pub fn parse(s: &str) -> Result<Value, ExprError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ExprError::NoValue);
        }
        if let Ok(n) = s.parse::<f64>() {
            if n.is_finite() {
                return Ok(Value::Number(n));
            }
        }
        parse_duration(s)
            .map(Value::Duration)
            .map_err(|_| ExprError::BadValue {
                value: s.to_string(),
            })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Duration(d) => f.write_str(&format_duration(*d)),
        }
    }
}

/// One check: `metric op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The metric's name as written (trimmed).
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The limit.
    pub value: Value,
}

/// Why a check does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// No operator in the text.
    #[error("{text:?} has no comparison: write `metric OP value` with OP one of < <= > >= == !=")]
    NoOp {
        /// The check as given.
        text: String,
    },
    /// Nothing before the operator.
    #[error("{text:?} names no metric before its operator")]
    NoMetric {
        /// The check as given.
        text: String,
    },
    /// A metric name with characters other than letters, digits, `_`, `.`, `-`.
    #[error("bad metric name {metric:?}: use letters, digits, '_', '.' and '-'")]
    BadMetric {
        /// The name as given.
        metric: String,
    },
    /// Nothing after the operator.
    #[error("a check has no value after its operator")]
    NoValue,
    /// The value is neither a number nor a duration.
    #[error("bad value {value:?}: expected a number (5, 0.95) or a duration (300ms, 1.5s, 2m)")]
    BadValue {
        /// The value as given.
        value: String,
    },
    /// The caller does not know the metric.
    #[error("unknown metric {metric:?}; valid metrics: {valid}")]
    UnknownMetric {
        /// The name as given.
        metric: String,
        /// The caller's vocabulary, comma-separated.
        valid: String,
    },
    /// An empty list, or an empty item in a comma-separated list.
    #[error("empty check (write `metric OP value`, comma-separated)")]
    Empty,
}

/// Splits `metric OP value` at its operator, both sides trimmed; `None`
/// without an operator. The leftmost operator character starts the
/// operator; a two-character operator there wins over its one-character
/// prefix. Callers with their own value forms (the blaster's windows,
/// stage prefixes) split with this and parse the sides themselves.
pub fn split(text: &str) -> Option<(&str, Op, &str)> {
    let start = text.find(['<', '>', '=', '!'])?;
    let rest = &text[start..];
    let op = Op::ALL
        .into_iter()
        .find(|op| rest.starts_with(op.as_str()))?;
    Some((text[..start].trim(), op, rest[op.as_str().len()..].trim()))
}

impl Check {
    /// Parses one check with any metric name.
    pub fn parse(text: &str) -> Result<Check, ExprError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(ExprError::Empty);
        }
        let (metric, op, value) = split(t).ok_or_else(|| ExprError::NoOp { text: t.into() })?;
        if metric.is_empty() {
            return Err(ExprError::NoMetric { text: t.into() });
        }
        if !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(ExprError::BadMetric {
                metric: metric.into(),
            });
        }
        let value = Value::parse(value)?;
        Ok(Check {
            metric: metric.to_string(),
            op,
            value,
        })
    }

    /// Parses one check whose metric must be one of `valid`.
    pub fn parse_with(text: &str, valid: &[&str]) -> Result<Check, ExprError> {
        let c = Check::parse(text)?;
        if !valid.contains(&c.metric.as_str()) {
            return Err(ExprError::UnknownMetric {
                metric: c.metric,
                valid: valid.join(", "),
            });
        }
        Ok(c)
    }

    /// Whether `measured` (durations in seconds) satisfies the check.
    pub fn holds(&self, measured: f64) -> bool {
        self.op.holds(measured, self.value.as_f64())
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.metric, self.op, self.value)
    }
}

impl std::str::FromStr for Check {
    type Err = ExprError;
    fn from_str(s: &str) -> Result<Check, ExprError> {
        Check::parse(s)
    }
}

/// Parses a comma-separated list of checks (`a>=1s, b==0`), each metric
/// one of `valid` (any name when `valid` is `None`).
pub fn parse_list(text: &str, valid: Option<&[&str]>) -> Result<Vec<Check>, ExprError> {
    text.split(',')
        .map(|item| match valid {
            Some(v) => Check::parse_with(item, v),
            None => Check::parse(item),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ops_values_and_round_trips() {
        for (text, metric, op, v) in [
            ("a>=1s", "a", Op::Ge, 1.0),
            ("a >= 1.5s", "a", Op::Ge, 1.5),
            ("p99<200ms", "p99", Op::Lt, 0.2),
            ("x<=5", "x", Op::Le, 5.0),
            ("x>5", "x", Op::Gt, 5.0),
            ("x==0", "x", Op::Eq, 0.0),
            ("mail.p99!=0.95", "mail.p99", Op::Ne, 0.95),
        ] {
            let c = Check::parse(text).unwrap();
            assert_eq!((c.metric.as_str(), c.op), (metric, op), "{text}");
            assert!((c.value.as_f64() - v).abs() < 1e-12, "{text}: {c:?}");
            let again = Check::parse(&c.to_string()).unwrap();
            assert_eq!(again, c, "{text} -> {c}");
        }
    }

    #[test]
    fn evaluates() {
        let c = Check::parse("retry>=1s").unwrap();
        assert!(c.holds(1.0) && c.holds(2.0) && !c.holds(0.999));
        assert!(Check::parse("n==0").unwrap().holds(0.0));
        assert!(!Check::parse("n==0").unwrap().holds(1.0));
        assert!(Check::parse("n!=0").unwrap().holds(1.0));
        assert!(Check::parse("n<5").unwrap().holds(4.0));
        assert!(!Check::parse("n<5").unwrap().holds(5.0));
        assert!(Check::parse("n>5").unwrap().holds(6.0));
        assert!(Check::parse("n<=0.3").unwrap().holds(0.1 + 0.2));
        // No tolerance against an infinity (it made `1 >= inf` hold).
        assert!(!Op::Ge.holds(1.0, f64::INFINITY));
        assert!(!Op::Eq.holds(1.0, f64::INFINITY));
        assert!(Op::Le.holds(1.0, f64::INFINITY));
        assert!(Op::Eq.holds(f64::INFINITY, f64::INFINITY));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(matches!(Check::parse("abc"), Err(ExprError::NoOp { .. })));
        assert!(matches!(
            Check::parse(">=1"),
            Err(ExprError::NoMetric { .. })
        ));
        assert!(matches!(Check::parse("a>="), Err(ExprError::NoValue)));
        let e = Check::parse("a>=fast").unwrap_err();
        assert!(e.to_string().contains("\"fast\""), "{e}");
        assert!(matches!(
            Check::parse("a b>1"),
            Err(ExprError::BadMetric { .. })
        ));
        let e = Check::parse_with("nope>1", &["x", "y"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown metric \"nope\"; valid metrics: x, y"
        );
        assert_eq!(parse_list("a>1,", None), Err(ExprError::Empty));
    }

    #[test]
    fn lists() {
        let l = parse_list("a>=1s, b==0 ,c<2m", Some(&["a", "b", "c"])).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[2].value, Value::Duration(Duration::from_secs(120)));
        assert_eq!(l[2].to_string(), "c<2m");
    }
}
