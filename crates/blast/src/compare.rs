//! `METRIC OP VALUE` comparisons shared by `--threshold` checks, capacity
//! SLAs and scenario expectations: the operators and the split are the one
//! expression language's (`mailstorm_config::expr`, which the sink's
//! verdict policy also speaks); the blaster parses its own value forms
//! (units per metric, `for` windows, stage prefixes) on top.

pub use mailstorm_config::expr::Op;

/// Splits `text` at its comparison operator: `(metric, op, value)`, both
/// sides trimmed. `None` when there is no operator.
pub(crate) fn split(text: &str) -> Option<(&str, Op, &str)> {
    mailstorm_config::expr::split(text)
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
