//! The shape of generated messages: size distribution and recipients per
//! message, as flags and YAML write them.

use mailstorm_config::range::parse_count;
use mailstorm_config::serde_units::scalar_or_map;
use mailstorm_sample::LogNormal;
use serde::{Deserialize, Deserializer, Serialize};

use super::flags::parse_bytes;
use crate::rng::Rng;
use crate::BlastError;

/// Message size distribution (whole message: headers and body, CRLF lines).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SizeDist {
    /// Every message has this size.
    Fixed {
        /// Bytes.
        #[serde(deserialize_with = "mailstorm_config::serde_units::size::deserialize")]
        bytes: u64,
    },
    /// Uniform between `min` and `max` inclusive.
    Uniform {
        /// Smallest size, bytes.
        #[serde(deserialize_with = "mailstorm_config::serde_units::size::deserialize")]
        min: u64,
        /// Largest size, bytes.
        #[serde(deserialize_with = "mailstorm_config::serde_units::size::deserialize")]
        max: u64,
    },
    /// Log-normal with the given median and 99th percentile.
    Lognormal {
        /// Median size, bytes.
        #[serde(deserialize_with = "mailstorm_config::serde_units::size::deserialize")]
        median: u64,
        /// 99th percentile size, bytes.
        #[serde(deserialize_with = "mailstorm_config::serde_units::size::deserialize")]
        p99: u64,
    },
}

/// The largest message the generator builds (lognormal tails are clamped).
pub const MAX_MESSAGE_SIZE: u64 = 64 << 20;

impl SizeDist {
    /// Parses `2k`, `1k..100k` or `lognormal:10k,200k`.
    pub fn parse(s: &str) -> Result<SizeDist, BlastError> {
        let bad = |why: &str| BlastError::Config(format!("--size {s:?}: {why}"));
        let t = s.trim();
        let d = if let Some(rest) = t
            .strip_prefix("lognormal:")
            .or_else(|| t.strip_prefix("ln:"))
        {
            let (m, p) = rest
                .split_once(',')
                .ok_or_else(|| bad("expected lognormal:MEDIAN,P99"))?;
            let (median, p99) = (parse_bytes(m)?, parse_bytes(p)?);
            SizeDist::Lognormal { median, p99 }
        } else {
            let (min, max) = mailstorm_config::parse_range(t, mailstorm_config::parse_size)
                .map_err(|e| bad(&e.to_string()))?;
            if min == max && !t.contains("..") {
                SizeDist::Fixed { bytes: min }
            } else {
                SizeDist::Uniform { min, max }
            }
        };
        d.check().map_err(bad)?;
        Ok(d)
    }

    /// What makes this distribution unusable, if anything: the checks the
    /// text form gets, for the mapping form (`{kind: fixed, bytes: …}`) too.
    pub fn check(&self) -> Result<(), &'static str> {
        match *self {
            SizeDist::Uniform { min, max } if max < min => Err("min must be at most max"),
            SizeDist::Lognormal { median, p99 } if p99 < median => {
                Err("p99 must be at least the median")
            }
            _ if self.max() > MAX_MESSAGE_SIZE => Err("sizes are limited to 64 MiB"),
            _ => Ok(()),
        }
    }

    /// The largest size this distribution can produce.
    pub fn max(&self) -> u64 {
        match *self {
            SizeDist::Fixed { bytes } => bytes,
            SizeDist::Uniform { max, .. } => max,
            SizeDist::Lognormal { p99, .. } => (p99.saturating_mul(8)).min(MAX_MESSAGE_SIZE),
        }
    }

    /// Draws one size.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match *self {
            SizeDist::Fixed { bytes } => bytes,
            SizeDist::Uniform { min, max } => rng.range(min, max),
            SizeDist::Lognormal { median, p99 } => {
                let ln = LogNormal::from_median_p99(median.max(1) as f64, p99.max(1) as f64);
                (ln.at(rng.normal()) as u64).min(self.max())
            }
        }
    }
}

/// Recipients per message: `n` or `lo..hi` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcptRange {
    /// Fewest recipients.
    pub min: u32,
    /// Most recipients.
    pub max: u32,
}

impl RcptRange {
    /// Parses `3` or `1..10`.
    pub fn parse(s: &str) -> Result<RcptRange, BlastError> {
        let (min, max) = mailstorm_config::parse_range(s, parse_count)
            .map_err(|e| BlastError::Config(format!("--rcpts {s:?}: {e}")))?;
        let (Ok(min), Ok(max)) = (u32::try_from(min), u32::try_from(max)) else {
            return Err(BlastError::Config(format!(
                "--rcpts {s:?}: need 1 <= min <= max <= 1000"
            )));
        };
        let r = RcptRange { min, max };
        r.check()
            .map_err(|why| BlastError::Config(format!("--rcpts {s:?}: {why}")))?;
        Ok(r)
    }

    /// The range's bounds, for the mapping form (`{min: 1, max: 3}`) as
    /// for the text form.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.min == 0 || self.max < self.min || self.max > RCPTS_LIMIT {
            return Err("need 1 <= min <= max <= 1000");
        }
        Ok(())
    }
}

/// The most recipients one generated message has.
const RCPTS_LIMIT: u32 = 1000;

pub(super) fn rcpts_any<'de, D: Deserializer<'de>>(d: D) -> Result<RcptRange, D::Error> {
    let r = scalar_or_map(d, "a count (3), a range (1..3) or {min, max}", |s| {
        RcptRange::parse(s).map_err(|e| e.to_string().replace("--rcpts ", ""))
    })?;
    r.check().map_err(|why| {
        serde::de::Error::custom(format!("recipients {}..{}: {why}", r.min, r.max))
    })?;
    Ok(r)
}

pub(super) fn size_any<'de, D: Deserializer<'de>>(d: D) -> Result<SizeDist, D::Error> {
    let size = scalar_or_map(
        d,
        "a size (4k), a range (1k..100k), lognormal:MEDIAN,P99 or a mapping with `kind`",
        |s| SizeDist::parse(s).map_err(|e| e.to_string().replace("--size ", "")),
    )?;
    size.check().map_err(|why| {
        let text = match size {
            SizeDist::Fixed { bytes } => format!("{bytes} bytes"),
            SizeDist::Uniform { min, max } => format!("{min}..{max} bytes"),
            SizeDist::Lognormal { median, p99 } => {
                format!("lognormal median {median}, p99 {p99} bytes")
            }
        };
        serde::de::Error::custom(format!("size {text}: {why}"))
    })?;
    Ok(size)
}
