//! The units measured values are printed in.

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
