//! `delay:`: a fixed wait before the reply or a seeded distribution of
//! them, as written; also the `service` time of `queue:`.

use serde::{Deserialize, Deserializer, Serialize};

use super::values::opt_millis;
use super::NonNeg;

/// Distribution families for `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistKind {
    /// `min`..`max`.
    Uniform,
    /// `mean`, `stddev`.
    Normal,
    /// `median`, `p99`.
    Lognormal,
    /// `mean`.
    Exponential,
    /// `scale`, `shape`.
    Pareto,
}

/// `delay`: wait before the reply: `delay: 200ms` (fixed) or a seeded
/// distribution (`{distribution: lognormal, median: 20ms, p99: 200ms}`).
/// The `*_ms` fields hold milliseconds; the keys are durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    /// Fixed delay (key `fixed`).
    #[serde(
        rename = "fixed",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub ms: Option<NonNeg>,
    /// A distribution instead of `fixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<DistKind>,
    /// Lower bound of `uniform` (key `min`).
    #[serde(
        rename = "min",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub min_ms: Option<NonNeg>,
    /// Upper bound of `uniform` (key `max`).
    #[serde(
        rename = "max",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub max_ms: Option<NonNeg>,
    /// Mean of `normal` / `exponential` (key `mean`).
    #[serde(
        rename = "mean",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub mean_ms: Option<NonNeg>,
    /// Standard deviation of `normal` (key `stddev`).
    #[serde(
        rename = "stddev",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub stddev_ms: Option<NonNeg>,
    /// Median of `lognormal` (key `median`).
    #[serde(
        rename = "median",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub median_ms: Option<NonNeg>,
    /// 99th percentile of `lognormal` (key `p99`).
    #[serde(
        rename = "p99",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub p99_ms: Option<NonNeg>,
    /// Minimum of `pareto` (key `scale`).
    #[serde(
        rename = "scale",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub scale_ms: Option<NonNeg>,
    /// Tail index of `pareto` (> 0; a plain number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<NonNeg>,
    /// Cap on any sample (key `cap`; default 10 minutes).
    #[serde(
        rename = "cap",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub cap_ms: Option<NonNeg>,
}

/// `delay: 200ms` is shorthand for `delay: {fixed: 200ms}`.
pub(super) fn delay_spec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DelaySpec>, D::Error> {
    mailstorm_config::serde_units::scalar_or_map(
        d,
        "a duration (200ms) or a mapping with `fixed` or `distribution`",
        |s| {
            mailstorm_config::parse_duration(s).map(|v| DelaySpec {
                ms: Some(NonNeg(v.as_secs_f64() * 1e3)),
                ..DelaySpec::default()
            })
        },
    )
    .map(Some)
}

/// `queue.service`: like `delay`, but required.
pub(super) fn delay_spec_required<'de, D: Deserializer<'de>>(d: D) -> Result<DelaySpec, D::Error> {
    delay_spec(d).map(|s| s.unwrap_or_default())
}
