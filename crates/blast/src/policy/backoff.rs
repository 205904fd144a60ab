//! Retry delays: fixed, exponential with a cap, or Postfix's age-based
//! schedule, with seeded jitter.
//!
//! Everything here is a pure function of its arguments. The random part of
//! a jittered delay is drawn from `(seed, message, attempt)` by [`draw`], so
//! a message's retry schedule does not depend on timing, shard or order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_dur;
use crate::rng::Rng;

/// How long to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        #[serde(with = "serde_dur")]
        delay: Duration,
    },
    /// `initial × multiplier^(n-1)` before the n-th retry, capped at `max`.
    Exponential {
        /// Delay before the first retry.
        #[serde(with = "serde_dur")]
        initial: Duration,
        /// Growth per retry (at least 1).
        #[serde(default = "two")]
        multiplier: f64,
        /// Cap.
        #[serde(with = "serde_dur")]
        max: Duration,
    },
    /// Postfix: the message's age clamped to `[min, max]` (so the delay
    /// roughly doubles per attempt: 300 s, 300 s, 600 s, 1200 s, ...).
    Age {
        /// `minimal_backoff_time`.
        #[serde(with = "serde_dur")]
        min: Duration,
        /// `maximal_backoff_time`.
        #[serde(with = "serde_dur")]
        max: Duration,
    },
}

fn two() -> f64 {
    2.0
}

/// How the delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// The computed delay as is.
    #[default]
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
    /// AWS "decorrelated": uniform in `[base, 3 × previous]`, capped.
    Decorrelated,
}

impl Backoff {
    /// The un-jittered delay before retry number `retry` (1 = the first
    /// retry) of a message that is `age` old.
    pub fn base_delay(&self, retry: u32, age: Duration) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * multiplier.max(1.0).powi(exp);
                if secs.is_finite() && secs < max.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    max
                }
            }
            Backoff::Age { min, max } => age.clamp(min, max.max(min)),
        }
    }

    /// The smallest delay the schedule produces (the decorrelated base).
    pub fn floor(&self) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential { initial, max, .. } => initial.min(max),
            Backoff::Age { min, .. } => min,
        }
    }

    /// The largest delay (jitter never exceeds it).
    pub fn cap(&self) -> Duration {
        match *self {
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential { max, .. } => max,
            Backoff::Age { min, max } => max.max(min),
        }
    }

    /// Multiplies every time by `f`.
    pub fn scaled(&self, f: f64) -> Backoff {
        let s = |d: Duration| scale(d, f);
        match *self {
            Backoff::Fixed { delay } => Backoff::Fixed { delay: s(delay) },
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => Backoff::Exponential {
                initial: s(initial),
                multiplier,
                max: s(max),
            },
            Backoff::Age { min, max } => Backoff::Age {
                min: s(min),
                max: s(max),
            },
        }
    }

    /// The delay before retry `retry` with jitter applied. `prev` is the
    /// previous delay actually used (decorrelated jitter grows from it;
    /// zero before the first retry); `u` is a uniform draw in `[0, 1)`.
    pub fn delay(
        &self,
        jitter: Jitter,
        retry: u32,
        age: Duration,
        prev: Duration,
        u: f64,
    ) -> Duration {
        let d = self.base_delay(retry, age);
        let u = u.clamp(0.0, 1.0);
        match jitter {
            Jitter::None => d,
            Jitter::Full => d.mul_f64(u),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(u),
            Jitter::Decorrelated => {
                let base = self.floor();
                let hi = prev.max(base).saturating_mul(3);
                let v = base + hi.saturating_sub(base).mul_f64(u);
                v.min(self.cap())
            }
        }
    }
}

/// `d × f`, saturating at [`mailstorm_config::MAX_DURATION`].
pub fn scale(d: Duration, f: f64) -> Duration {
    let s = d.as_secs_f64() * f;
    if s.is_finite() && s >= 0.0 {
        // Capped like any duration a user writes, so `now + d` cannot
        // overflow the clock.
        Duration::try_from_secs_f64(s)
            .unwrap_or(mailstorm_config::MAX_DURATION)
            .min(mailstorm_config::MAX_DURATION)
    } else {
        Duration::ZERO
    }
}

/// A uniform draw in `[0, 1)` for retry `attempt` of message `seq` in a run
/// seeded with `seed`: the same triple always gives the same value.
pub fn draw(seed: u64, seq: u64, attempt: u32) -> f64 {
    const SALT: u64 = 0x6A09_E667_F3BC_C908;
    Rng::for_item(
        seed ^ SALT ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        seq,
    )
    .next_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn a_huge_time_scale_stops_at_the_duration_limit() {
        // `Instant::now() + d` panics past the clock's range; a scaled
        // cooldown must stay where any written duration stays.
        assert_eq!(scale(s(300), 1e300), mailstorm_config::MAX_DURATION);
        assert_eq!(scale(s(300), 0.01), Duration::from_secs(3));
        let _ = std::time::Instant::now() + scale(s(1), f64::MAX);
    }

    #[test]
    fn exponential_caps() {
        let b = Backoff::Exponential {
            initial: s(1),
            multiplier: 2.0,
            max: s(10),
        };
        let got: Vec<u64> = (1..=6)
            .map(|n| b.base_delay(n, Duration::ZERO).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.base_delay(10_000, Duration::ZERO), s(10));
        assert_eq!(
            b.scaled(0.01).base_delay(3, Duration::ZERO),
            Duration::from_millis(40)
        );
    }

    #[test]
    fn postfix_age_schedule() {
        let b = Backoff::Age {
            min: s(300),
            max: s(4000),
        };
        // Retry at age 0, then each retry happens after the previous delay.
        let mut age = Duration::ZERO;
        let mut got = Vec::new();
        for n in 1..=7 {
            let d = b.base_delay(n, age);
            got.push(d.as_secs());
            age += d;
        }
        assert_eq!(got, [300, 300, 600, 1200, 2400, 4000, 4000]);
    }

    #[test]
    fn jitter_bounds_and_determinism() {
        let b = Backoff::Fixed { delay: s(8) };
        assert_eq!(b.delay(Jitter::None, 1, s(0), s(0), 0.7), s(8));
        assert_eq!(b.delay(Jitter::Full, 1, s(0), s(0), 0.25), s(2));
        assert_eq!(b.delay(Jitter::Equal, 1, s(0), s(0), 0.5), s(6));
        let e = Backoff::Exponential {
            initial: s(1),
            multiplier: 2.0,
            max: s(20),
        };
        let mut prev = Duration::ZERO;
        for n in 1..50 {
            let u = draw(42, 7, n);
            assert_eq!(u, draw(42, 7, n));
            let d = e.delay(Jitter::Decorrelated, n, s(0), prev, u);
            assert!(d >= s(1) && d <= s(20), "{d:?}");
            assert!(d <= prev.max(s(1)) * 3);
            prev = d;
        }
        assert_ne!(draw(42, 7, 1), draw(42, 7, 2));
        assert_ne!(draw(42, 7, 1), draw(42, 8, 1));
        assert_ne!(draw(42, 7, 1), draw(43, 7, 1));
        // Full jitter averages about half the delay.
        let mean: f64 = (0..4000)
            .map(|i| {
                b.delay(Jitter::Full, 1, s(0), s(0), draw(1, i, 1))
                    .as_secs_f64()
            })
            .sum::<f64>()
            / 4000.0;
        assert!((mean - 4.0).abs() < 0.2, "{mean}");
    }

    #[test]
    fn yaml_forms() {
        let b: Backoff =
            serde_yaml::from_str("kind: exponential\ninitial: 1s\nmax: 30s\n").unwrap();
        assert_eq!(
            b,
            Backoff::Exponential {
                initial: s(1),
                multiplier: 2.0,
                max: s(30)
            }
        );
        let f: Backoff = serde_yaml::from_str("{kind: fixed, delay: 500ms}").unwrap();
        assert_eq!(f.base_delay(3, s(0)), Duration::from_millis(500));
        assert!(serde_yaml::from_str::<Backoff>("{kind: fixed, delay: 1s, x: 1}").is_err());
        assert_eq!(
            serde_yaml::from_str::<Jitter>("decorrelated").unwrap(),
            Jitter::Decorrelated
        );
    }
}
