//! Client resilience policies: what a mail client does when the server
//! says "not now": retries (max attempts, backoff, seeded jitter, a retry
//! budget), a circuit breaker per target, Postfix-style concurrency
//! feedback, per-stage timeouts, and a `postfix` preset with Postfix's
//! defaults so a client can be compared with a well-known one.
//!
//! A profile's `policy:` section is a [`PolicySpec`]; [`PolicySpec::resolve`]
//! lays it over its preset and applies the time scale (`--time-scale 0.01`
//! replays a 300 s backoff in 3 s). Every piece is pure and takes the time
//! as an argument, so the state machines are unit-tested without a clock.
//!
//! ```yaml
//! policy:
//!   preset: postfix          # optional base: every key below overrides it
//!   max_attempts: 5          # first attempt included (0: only max_age bounds)
//!   max_age: 1h              # give up on a message older than this
//!   backoff: { kind: exponential, initial: 1s, multiplier: 2, max: 30s }
//!   jitter: full             # none | full | equal | decorrelated
//!   retry_budget: { ratio: 0.2, min_retries: 10 }
//!   breaker: { consecutive_failures: 5, cooldown: 30s, half_open_probes: 1 }
//!   concurrency: { initial: 5, limit: 20, failed_cohort_limit: 1, suspend: 300s }
//!   timeouts: { connect: 30s, mail: 300s }
//!   time_scale: 0.01
//! ```

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod fate;
pub mod feedback;
pub mod message;
pub mod report;
pub mod runtime;
pub mod scope;
pub mod tally;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use backoff::{draw, Backoff, Jitter};
pub use breaker::{Breaker, BreakerSpec, Permit};
pub use budget::{Budget, BudgetSpec};
pub use feedback::{ConcurrencySpec, Feedback};
pub use scope::{classify, Class, Scope};

use crate::timeouts::Timeouts;

/// A named set of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// mailstorm's defaults: 3 attempts, exponential 1 s → 60 s, no
    /// breaker, no concurrency feedback.
    #[default]
    Default,
    /// Postfix 3.7's defaults (see the README's reference): age-based
    /// backoff 300 s → 4000 s, a 5 day queue lifetime, concurrency 5 → 20
    /// with feedback 1 and a failed cohort limit of 1, Postfix's timeouts.
    Postfix,
}

/// The `policy:` section as written; every key overrides the preset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySpec {
    /// The base.
    pub preset: Preset,
    /// Attempts per message, the first included (0: only `max_age`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Give up on a message older than this.
    #[serde(with = "serde_opt_dur", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// The retry schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Randomisation of the schedule (seeded by `--seed`, message, attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
    /// Retries as a share of traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<BudgetSpec>,
    /// Circuit breaker per target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSpec>,
    /// Concurrency feedback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    /// Per-stage timeouts (replace the run's; not time-scaled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Multiplies every policy time (backoff, max age, breaker window and
    /// cooldown, suspension); `--time-scale` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_scale: Option<f64>,
}

/// A resolved policy: preset, overrides and time scale applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The preset it started from.
    pub preset: Preset,
    /// Attempts per message, the first included (0: unbounded by count).
    pub max_attempts: u32,
    /// Give up on a message older than this (scaled).
    #[serde(with = "serde_opt_dur")]
    pub max_age: Option<Duration>,
    /// The schedule (scaled).
    pub backoff: Backoff,
    /// The jitter.
    pub jitter: Jitter,
    /// The retry budget.
    pub retry_budget: Option<BudgetSpec>,
    /// The breaker (scaled).
    pub breaker: Option<BreakerSpec>,
    /// Concurrency feedback (scaled).
    pub concurrency: Option<ConcurrencySpec>,
    /// Per-stage timeouts, when the policy sets them.
    pub timeouts: Option<Timeouts>,
    /// The time scale applied.
    pub time_scale: f64,
}

/// Postfix 3.7's client timeouts (smtp_*_timeout).
pub fn postfix_timeouts() -> Timeouts {
    let s = Duration::from_secs;
    Timeouts {
        connect: s(30),
        tls: s(300),
        banner: s(300),
        ehlo: s(300),
        auth: s(300),
        mail: s(300),
        rcpt: s(300),
        // smtp_data_init_timeout; the body has data_xfer 180 s per write.
        data: s(120),
        data_end: s(600),
        rset: s(20),
        quit: s(300),
    }
}

impl Preset {
    /// The preset's full policy (unscaled).
    pub fn policy(self) -> Policy {
        let s = Duration::from_secs;
        match self {
            Preset::Default => Policy {
                preset: self,
                max_attempts: 3,
                max_age: None,
                backoff: Backoff::Exponential {
                    initial: s(1),
                    multiplier: 2.0,
                    max: s(60),
                },
                jitter: Jitter::None,
                retry_budget: None,
                breaker: None,
                concurrency: None,
                timeouts: None,
                time_scale: 1.0,
            },
            Preset::Postfix => Policy {
                preset: self,
                // Postfix bounds retries by age only.
                max_attempts: 0,
                max_age: Some(s(5 * 86_400)),
                backoff: Backoff::Age {
                    min: s(300),
                    max: s(4000),
                },
                jitter: Jitter::None,
                retry_budget: None,
                breaker: None,
                concurrency: Some(ConcurrencySpec {
                    initial: 5,
                    limit: 20,
                    positive_feedback: 1.0,
                    negative_feedback: 1.0,
                    failed_cohort_limit: 1,
                    suspend: s(300),
                }),
                timeouts: Some(postfix_timeouts()),
                time_scale: 1.0,
            },
        }
    }
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("policy: {0}")]
pub struct PolicyError(pub String);

impl PolicySpec {
    /// Lays the keys over the preset, applies `time_scale` (the argument
    /// wins over the spec's), and validates.
    pub fn resolve(&self, time_scale: Option<f64>) -> Result<Policy, PolicyError> {
        let mut p = self.preset.policy();
        if let Some(v) = self.max_attempts {
            p.max_attempts = v;
        }
        if self.max_age.is_some() {
            p.max_age = self.max_age;
        }
        if let Some(v) = self.backoff {
            p.backoff = v;
        }
        if let Some(v) = self.jitter {
            p.jitter = v;
        }
        if self.retry_budget.is_some() {
            p.retry_budget = self.retry_budget;
        }
        if self.breaker.is_some() {
            p.breaker = self.breaker;
        }
        if self.concurrency.is_some() {
            p.concurrency = self.concurrency;
        }
        if self.timeouts.is_some() {
            p.timeouts = self.timeouts;
        }
        let f = time_scale.or(self.time_scale).unwrap_or(1.0);
        if !(f.is_finite() && f > 0.0) {
            return Err(PolicyError(format!(
                "time scale {f}: must be a positive number"
            )));
        }
        if p.max_attempts == 0 && p.max_age.is_none() {
            return Err(PolicyError(
                "max_attempts 0 needs a max_age: retries must be bounded".into(),
            ));
        }
        if let Backoff::Exponential { multiplier, .. } = p.backoff {
            if !(multiplier.is_finite() && multiplier >= 1.0) {
                return Err(PolicyError(format!(
                    "backoff.multiplier {multiplier}: must be at least 1"
                )));
            }
        }
        let check = |r: Result<(), String>| r.map_err(PolicyError);
        if let Some(b) = &p.retry_budget {
            check(b.validate())?;
        }
        if let Some(b) = &p.breaker {
            check(b.validate())?;
        }
        if let Some(c) = &p.concurrency {
            check(c.validate())?;
        }
        p.time_scale = f;
        p.max_age = p.max_age.map(|d| backoff::scale(d, f));
        p.backoff = p.backoff.scaled(f);
        p.breaker = p.breaker.map(|b| b.scaled(f));
        p.concurrency = p.concurrency.map(|c| c.scaled(f));
        Ok(p)
    }
}

/// What to do with a message after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop: attempts exhausted.
    GiveUpAttempts,
    /// Stop: the message would be older than `max_age` at its retry.
    GiveUpAge,
}

impl Policy {
    /// The decision after attempt number `attempts` (1 = the first) of
    /// message `seq` failed transiently. `age`: time since its first
    /// attempt; `prev`: the delay before this attempt (zero for the
    /// first). Pure: the jitter is drawn from `(seed, seq, attempts)`.
    pub fn after_failure(
        &self,
        seed: u64,
        seq: u64,
        attempts: u32,
        age: Duration,
        prev: Duration,
    ) -> Next {
        if self.max_attempts > 0 && attempts >= self.max_attempts {
            return Next::GiveUpAttempts;
        }
        let d = self
            .backoff
            .delay(self.jitter, attempts, age, prev, draw(seed, seq, attempts));
        if self.max_age.is_some_and(|m| age + d > m) {
            return Next::GiveUpAge;
        }
        Next::RetryAfter(d)
    }

    /// The delay before reconnecting after `failures` connection-level
    /// failures in a row on one connection slot (`slot` seeds the jitter).
    pub fn reconnect_delay(&self, seed: u64, slot: u64, failures: u32) -> Duration {
        // Reconnects follow the message schedule without its age term.
        let b = match self.backoff {
            Backoff::Age { min, .. } => Backoff::Fixed { delay: min },
            b => b,
        };
        let u = draw(seed ^ 0x5EED_C0DE, slot, failures);
        b.delay(
            self.jitter,
            failures.max(1),
            Duration::ZERO,
            Duration::ZERO,
            u,
        )
    }
}

// Durations in policies read and write like every other blaster setting.
pub(crate) use mailstorm_config::serde_units::{
    duration as serde_dur, opt_duration as serde_opt_dur,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn postfix_preset_scaled() {
        let spec: PolicySpec = serde_yaml::from_str("preset: postfix\n").unwrap();
        let p = spec.resolve(Some(0.01)).unwrap();
        assert_eq!(p.backoff.cap(), s(40));
        assert_eq!(p.backoff.floor(), s(3));
        assert_eq!(p.max_age, Some(s(4320)));
        let c = p.concurrency.unwrap();
        assert_eq!((c.initial, c.limit, c.failed_cohort_limit), (5, 20, 1));
        assert_eq!(c.suspend, s(3));
        assert_eq!(
            p.timeouts.unwrap().data_end,
            s(600),
            "timeouts are not scaled"
        );
        // Schedule: age clamped to [3 s, 40 s].
        assert_eq!(p.after_failure(1, 9, 1, s(0), s(0)), Next::RetryAfter(s(3)));
        assert_eq!(p.after_failure(1, 9, 3, s(6), s(3)), Next::RetryAfter(s(6)));
        assert_eq!(p.after_failure(1, 9, 9, s(4300), s(40)), Next::GiveUpAge);
    }

    #[test]
    fn overrides_and_bounds() {
        let spec: PolicySpec = serde_yaml::from_str(
            "max_attempts: 2\nbackoff: {kind: fixed, delay: 2s}\njitter: equal\ntime_scale: 0.5\n\
             breaker: {consecutive_failures: 3, cooldown: 10s}\n",
        )
        .unwrap();
        let p = spec.resolve(None).unwrap();
        assert_eq!(p.time_scale, 0.5);
        assert_eq!(p.breaker.unwrap().cooldown, s(5));
        match p.after_failure(7, 1, 1, s(0), s(0)) {
            Next::RetryAfter(d) => assert!(d >= s(0) + Duration::from_millis(500) && d <= s(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.after_failure(7, 1, 2, s(1), s(1)), Next::GiveUpAttempts);
        // The flag wins over the file.
        assert_eq!(spec.resolve(Some(0.1)).unwrap().time_scale, 0.1);
        let unbounded: PolicySpec = serde_yaml::from_str("max_attempts: 0\n").unwrap();
        assert!(unbounded.resolve(None).is_err());
        assert!(serde_yaml::from_str::<PolicySpec>("retries: 3\n").is_err());
        assert!(PolicySpec::default().resolve(Some(0.0)).is_err());
        let r = PolicySpec::default().resolve(None).unwrap();
        assert!(r.reconnect_delay(1, 2, 1) >= s(1));
        assert_eq!(r.max_attempts, 3);
        let y = serde_yaml::to_string(&spec).unwrap();
        assert_eq!(serde_yaml::from_str::<PolicySpec>(&y).unwrap(), spec);
    }
}
