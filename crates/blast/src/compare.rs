//! `METRIC OP VALUE` comparisons shared by `--threshold` checks and
//! scenario expectations.

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Whether `a OP b` holds (exact for counts; times compare in seconds
    /// with a microsecond of slack for `==`/`!=`).
    pub fn holds(self, a: f64, b: f64) -> bool {
        let eq = (a - b).abs() <= 1e-6_f64.max(b.abs() * 1e-12);
        match self {
            Op::Lt => a < b && !eq,
            Op::Le => a <= b || eq,
            Op::Gt => a > b && !eq,
            Op::Ge => a >= b || eq,
            Op::Eq => eq,
            Op::Ne => !eq,
        }
    }
}

/// Splits `text` at its comparison operator: `(metric, op, value)`, both
/// sides trimmed. `None` when there is no operator.
pub(crate) fn split(text: &str) -> Option<(&str, Op, &str)> {
    let pos = text.find(['<', '>', '=', '!'])?;
    let (name, rest) = text.split_at(pos);
    [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (name.trim(), *op, v.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_longest_operator() {
        assert_eq!(split("p99<=200ms"), Some(("p99", Op::Le, "200ms")));
        assert_eq!(split(" 5xx == 0 "), Some(("5xx", Op::Eq, "0")));
        assert_eq!(split("rate>1"), Some(("rate", Op::Gt, "1")));
        assert_eq!(split("delivered 5"), None);
        assert_eq!(split("a=1"), None);
    }

    #[test]
    fn equality_tolerates_float_noise_only() {
        assert!(Op::Eq.holds(0.1 + 0.2, 0.3));
        assert!(!Op::Eq.holds(1.0, 1.001));
        assert!(Op::Le.holds(3.0, 3.0) && !Op::Lt.holds(3.0, 3.0));
        assert!(Op::Ne.holds(2.0, 3.0));
    }
}
