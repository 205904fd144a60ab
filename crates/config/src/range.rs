//! Inclusive ranges written `lo..hi` (or one value, meaning `lo..lo`), with
//! the bounds in any grammar: sizes (`1k..100k`) or counts (`1..3`).

/// A range whose bounds are fine alone but not together, or a bound that
/// does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// One bound failed to parse.
    #[error("{0}")]
    Bound(String),
    /// `hi` below `lo`.
    #[error("bad range {value:?}: the upper bound is below the lower bound")]
    Reversed {
        /// The text as given.
        value: String,
    },
}

/// Parses `lo..hi` or `v` with `bound` for each side; both bounds are
/// inclusive and `hi >= lo`.
pub fn parse_range<T, E, F>(s: &str, bound: F) -> Result<(T, T), RangeError>
where
    T: PartialOrd + Copy,
    E: std::fmt::Display,
    F: Fn(&str) -> Result<T, E>,
{
    let one = |t: &str| bound(t.trim()).map_err(|e| RangeError::Bound(e.to_string()));
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (one(a)?, one(b.strip_prefix('=').unwrap_or(b))?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    if hi < lo {
        return Err(RangeError::Reversed {
            value: s.to_owned(),
        });
    }
    Ok((lo, hi))
}

/// Parses a whole count (`3`), quoting the value on error.
pub fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("bad count {s:?}: expected a whole number"))
}
