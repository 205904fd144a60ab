//! The duration and size grammar.
//!
//! Durations: a decimal number and a unit, `ns`, `us` (or `µs`), `ms`, `s`,
//! `m` (or `min`), `h`, `d`; a plain number is seconds (`1.5` = `1.5s`).
//! Sizes: a decimal number and a binary multiple, `k`, `m`, `g` in any case,
//! optionally followed by `b` or `ib` (`4k` = `4KiB` = `4kb` = 4096); a plain
//! number is bytes. Fractions are exact (`1.5s`, `1.5M`); a size must come
//! out to whole bytes. Overflow is an error, never a wrap or a saturation,
//! and a duration longer than [`MAX_DURATION`] (365 days) is refused.

use std::time::Duration;

/// A value that does not follow the grammar, quoting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration at all.
    #[error("bad duration {value:?}: {why} (e.g. 300ms, 2s, 1.5s, 1m, 1h, 1d)")]
    Duration {
        /// The text as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not a size at all.
    #[error("bad size {value:?}: {why} (e.g. 512, 4k, 4KiB, 10MiB, 1G)")]
    Size {
        /// The text as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A non-negative decimal split into its whole and fractional digits.
struct Decimal<'a> {
    whole: &'a str,
    frac: &'a str,
}

/// Splits `12.5ms` into the number and the unit (spaces between allowed).
fn split_number(s: &str) -> Option<(Decimal<'_>, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    Some((Decimal { whole, frac }, unit.trim_start()))
}

/// Trims `s`, rejects a sign and splits it like [`split_number`]; `bad`
/// builds the caller's error kind from the reason.
fn split_unsigned(
    s: &str,
    bad: impl Fn(&'static str) -> UnitError,
) -> Result<(Decimal<'_>, &str), UnitError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    split_number(t).ok_or_else(|| bad("expected a number and a unit"))
}

impl Decimal<'_> {
    /// `self * scale`, exactly, when it is a whole number that fits.
    /// `Err(true)` when it overflows, `Err(false)` when it is fractional.
    fn times(&self, scale: u128) -> Result<u128, bool> {
        let whole: u128 = if self.whole.is_empty() {
            0
        } else {
            self.whole.parse().map_err(|_| true)?
        };
        let mut total = whole.checked_mul(scale).ok_or(true)?;
        let mut place = scale;
        for d in self.frac.bytes() {
            let digit = u128::from(d - b'0');
            if !place.is_multiple_of(10) {
                // Digits past the unit's resolution must be zero.
                if digit != 0 {
                    return Err(false);
                }
                continue;
            }
            place /= 10;
            total = total.checked_add(digit * place).ok_or(true)?;
        }
        Ok(total)
    }
}

/// The longest duration the grammar accepts: 365 days. Every timeout,
/// delay or run length a user means fits, and deadlines built from it
/// (`now + d`, sums of stages, scaled backoffs) stay far from the clock's
/// overflow, which would otherwise panic mid-run.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parses a duration: `300ms`, `2s`, `1.5s`, `1m`, `1h`, `1d`, `250us`, or a
/// plain number of seconds; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let bad = |why| UnitError::Duration {
        value: s.to_owned(),
        why,
    };
    let (num, unit) = split_unsigned(s, bad)?;
    let nanos_per: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(bad("unknown unit; allowed: ns, us, ms, s, m, h, d")),
    };
    let nanos = num.times(nanos_per).map_err(|overflow| {
        if overflow {
            bad("too large")
        } else {
            bad("finer than a nanosecond")
        }
    })?;
    if nanos > MAX_DURATION.as_nanos() {
        return Err(bad("longer than the limit of 365d"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration in the largest unit that keeps it exact (`1500ms`,
/// `2m`, `1d`); [`parse_duration`] reads it back to the same value.
pub fn format_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    const UNITS: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let (scale, unit) = UNITS
        .iter()
        .copied()
        .find(|(scale, _)| n.is_multiple_of(*scale))
        .unwrap_or((1, "ns"));
    format!("{}{unit}", n / scale)
}

/// Parses a size in bytes: `512`, `4k`, `4KiB`, `1.5M`, `10MiB`, `1G`
/// (binary multiples, any case).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let bad = |why| UnitError::Size {
        value: s.to_owned(),
        why,
    };
    let (num, unit) = split_unsigned(s, bad)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(bad(
                "unknown unit; allowed: k, M, G, T (binary, optional B or iB)",
            ))
        }
    };
    // Decimal fractions of a power of two: scale by 10^digits first so
    // `1.5k` is exact, then divide back.
    let digits = u32::try_from(num.frac.len()).map_err(|_| bad("too many digits"))?;
    let pow10 = 10u128
        .checked_pow(digits)
        .ok_or_else(|| bad("too many digits"))?;
    let scaled = Decimal {
        whole: num.whole,
        frac: num.frac,
    }
    .times(pow10)
    .map_err(|_| bad("too large"))?;
    let bytes = scaled.checked_shl(shift).ok_or_else(|| bad("too large"))?;
    if !bytes.is_multiple_of(pow10) {
        return Err(bad("not a whole number of bytes"));
    }
    u64::try_from(bytes / pow10).map_err(|_| bad("too large"))
}

/// Formats a size in the largest binary unit that keeps it exact (`4KiB`,
/// `10MiB`, `1000`); [`parse_size`] reads it back to the same value.
pub fn format_size(n: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}
