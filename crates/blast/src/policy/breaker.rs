//! A circuit breaker per target: closed → open on N consecutive failures
//! or a failure rate over a sliding window; open for a cooldown; then
//! half-open, letting K probes through; closed again on a probe's success,
//! open again on a probe's failure. Every transition is recorded.
//!
//! Pure and clock-injected: every call takes `now`, the time since the run
//! started.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backoff::scale;
use super::serde_dur;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSpec {
    /// Open after this many failures in a row (0: off).
    pub consecutive_failures: u32,
    /// Open when the failure share over `window` exceeds this (0: off).
    pub failure_rate: f64,
    /// The sliding window of the failure rate.
    #[serde(with = "serde_dur")]
    pub window: Duration,
    /// The failure rate needs at least this many outcomes in the window.
    pub min_requests: u32,
    /// How long the breaker stays open.
    #[serde(with = "serde_dur")]
    pub cooldown: Duration,
    /// Probes let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            consecutive_failures: 5,
            failure_rate: 0.0,
            window: Duration::from_secs(10),
            min_requests: 20,
            cooldown: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerSpec {
    /// Multiplies the window and the cooldown by `f`.
    pub fn scaled(&self, f: f64) -> BreakerSpec {
        BreakerSpec {
            window: scale(self.window, f),
            cooldown: scale(self.cooldown, f),
            ..*self
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!(
                "breaker.failure_rate {}: must be in 0.0..=1.0",
                self.failure_rate
            ));
        }
        if self.consecutive_failures == 0 && self.failure_rate == 0.0 {
            return Err("breaker: set consecutive_failures or failure_rate".into());
        }
        if self.half_open_probes == 0 {
            return Err("breaker.half_open_probes must be at least 1".into());
        }
        if self.failure_rate > 0.0 && self.window.is_zero() {
            return Err("breaker.window must be positive with failure_rate".into());
        }
        Ok(())
    }
}

/// A breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Traffic flows.
    Closed,
    /// Traffic is held back until the cooldown ends.
    Open,
    /// A few probes may go through.
    HalfOpen,
}

impl State {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Seconds since the run started.
    pub at_s: f64,
    /// Old state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why (`5 consecutive failures`, `cooldown over`, ...).
    pub reason: String,
}

/// What the breaker says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Allowed,
    /// Go ahead as a half-open probe: report the outcome with `probe`.
    Probe,
    /// Hold back until this time (since the run start), then ask again.
    Denied(Duration),
}

/// Buckets of the sliding window.
const BUCKETS: usize = 20;
/// Transitions kept for the report (counts go on past it).
const MAX_TRANSITIONS: usize = 10_000;

/// The breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    spec: BreakerSpec,
    state: State,
    consecutive: u32,
    /// (bucket index, failures, total) for the last `BUCKETS` buckets.
    window: [(u64, u32, u32); BUCKETS],
    open_until: Duration,
    probes_out: u32,
    transitions: Vec<Transition>,
    opened: u64,
    closed: u64,
    half_opened: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(spec: BreakerSpec) -> Breaker {
        Breaker {
            spec,
            state: State::Closed,
            consecutive: 0,
            window: [(u64::MAX, 0, 0); BUCKETS],
            open_until: Duration::ZERO,
            probes_out: 0,
            transitions: Vec::new(),
            opened: 0,
            closed: 0,
            half_opened: 0,
        }
    }

    /// The state at `now` (an expired cooldown reads as half-open).
    pub fn state(&mut self, now: Duration) -> State {
        self.tick(now);
        self.state
    }

    fn tick(&mut self, now: Duration) {
        if self.state == State::Open && now >= self.open_until {
            self.go(now, State::HalfOpen, "cooldown over".into());
        }
    }

    fn go(&mut self, now: Duration, to: State, reason: String) {
        let from = self.state;
        self.state = to;
        match to {
            State::Open => {
                self.opened += 1;
                self.open_until = now + self.spec.cooldown;
            }
            State::HalfOpen => self.half_opened += 1,
            State::Closed => self.closed += 1,
        }
        self.probes_out = 0;
        self.consecutive = 0;
        self.window = [(u64::MAX, 0, 0); BUCKETS];
        if self.transitions.len() < MAX_TRANSITIONS {
            self.transitions.push(Transition {
                at_s: (now.as_secs_f64() * 1000.0).round() / 1000.0,
                from,
                to,
                reason,
            });
        }
    }

    /// Whether a request may go now.
    pub fn allow(&mut self, now: Duration) -> Permit {
        self.tick(now);
        match self.state {
            State::Closed => Permit::Allowed,
            State::Open => Permit::Denied(self.open_until),
            State::HalfOpen if self.probes_out < self.spec.half_open_probes => {
                self.probes_out += 1;
                Permit::Probe
            }
            // Probes are out: ask again a little later (a cooldown's tenth).
            State::HalfOpen => {
                Permit::Denied(now + (self.spec.cooldown / 10).max(Duration::from_millis(1)))
            }
        }
    }

    /// A probe ended without an outcome (e.g. the run stopped).
    pub fn probe_abandoned(&mut self) {
        self.probes_out = self.probes_out.saturating_sub(1);
    }

    fn bucket_len(&self) -> Duration {
        (self.spec.window / BUCKETS as u32).max(Duration::from_micros(1))
    }

    /// Records an outcome (`probe`: it went as a [`Permit::Probe`]).
    pub fn record(&mut self, now: Duration, success: bool, probe: bool) {
        self.tick(now);
        match self.state {
            State::HalfOpen => {
                if !probe {
                    // An outcome of a request sent before the breaker
                    // opened: the probes decide.
                    return;
                }
                self.probes_out = self.probes_out.saturating_sub(1);
                if success {
                    self.go(now, State::Closed, "probe succeeded".into());
                } else {
                    self.go(now, State::Open, "probe failed".into());
                }
            }
            State::Open => {}
            State::Closed => {
                self.consecutive = if success { 0 } else { self.consecutive + 1 };
                let n = self.spec.consecutive_failures;
                if n > 0 && self.consecutive >= n {
                    self.go(now, State::Open, format!("{n} consecutive failures"));
                    return;
                }
                if self.spec.failure_rate > 0.0 {
                    let idx = (now.as_nanos() / self.bucket_len().as_nanos()) as u64;
                    let b = &mut self.window[(idx % BUCKETS as u64) as usize];
                    if b.0 != idx {
                        *b = (idx, 0, 0);
                    }
                    b.1 += u32::from(!success);
                    b.2 += 1;
                    let live = |b: &&(u64, u32, u32)| b.0 != u64::MAX && b.0 + BUCKETS as u64 > idx;
                    let (fails, total) = self
                        .window
                        .iter()
                        .filter(live)
                        .fold((0u64, 0u64), |(f, t), b| {
                            (f + u64::from(b.1), t + u64::from(b.2))
                        });
                    if total >= u64::from(self.spec.min_requests.max(1))
                        && fails as f64 / total as f64 > self.spec.failure_rate
                    {
                        let pct = fails as f64 * 100.0 / total as f64;
                        self.go(
                            now,
                            State::Open,
                            format!("failure rate {pct:.0}% over {total} requests"),
                        );
                    }
                }
            }
        }
    }

    /// Transitions so far (at most 10,000 kept).
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// How often the breaker changed state.
    pub fn counts(&self) -> BreakerCounts {
        BreakerCounts {
            opened: self.opened,
            closed: self.closed,
            half_opened: self.half_opened,
        }
    }
}

/// How often a breaker changed state over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Times opened.
    pub opened: u64,
    /// Times closed again (from half-open).
    pub closed: u64,
    /// Times half-opened (a probe let through).
    pub half_opened: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn consecutive_failures_open_and_probe_closes() {
        let mut b = Breaker::new(BreakerSpec {
            consecutive_failures: 3,
            cooldown: ms(1000),
            half_open_probes: 2,
            ..BreakerSpec::default()
        });
        b.record(ms(0), false, false);
        b.record(ms(1), false, false);
        b.record(ms(2), true, false); // resets the run
        b.record(ms(3), false, false);
        b.record(ms(4), false, false);
        assert_eq!(b.state(ms(4)), State::Closed);
        b.record(ms(5), false, false);
        assert_eq!(b.state(ms(5)), State::Open);
        assert_eq!(b.allow(ms(500)), Permit::Denied(ms(1005)));
        // Cooldown over: two probes, the third waits.
        assert_eq!(b.allow(ms(1005)), Permit::Probe);
        assert_eq!(b.allow(ms(1006)), Permit::Probe);
        assert!(matches!(b.allow(ms(1007)), Permit::Denied(_)));
        // A late outcome from before the opening does not decide.
        b.record(ms(1008), true, false);
        assert_eq!(b.state(ms(1008)), State::HalfOpen);
        b.record(ms(1010), true, true);
        assert_eq!(b.state(ms(1010)), State::Closed);
        assert_eq!(b.allow(ms(1011)), Permit::Allowed);
        let t: Vec<(State, State)> = b.transitions().iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            t,
            [
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ]
        );
        assert_eq!(b.transitions()[0].at_s, 0.005);
        assert_eq!(
            b.counts(),
            BreakerCounts {
                opened: 1,
                closed: 1,
                half_opened: 1
            }
        );
    }

    #[test]
    fn failed_probe_reopens() {
        let mut b = Breaker::new(BreakerSpec {
            consecutive_failures: 1,
            cooldown: ms(100),
            ..BreakerSpec::default()
        });
        b.record(ms(0), false, false);
        assert_eq!(b.allow(ms(100)), Permit::Probe);
        b.record(ms(120), false, true);
        assert_eq!(b.allow(ms(150)), Permit::Denied(ms(220)));
        assert_eq!(b.counts().opened, 2);
    }

    #[test]
    fn failure_rate_over_window() {
        let mut b = Breaker::new(BreakerSpec {
            consecutive_failures: 0,
            failure_rate: 0.5,
            window: ms(1000),
            min_requests: 10,
            cooldown: ms(100),
            half_open_probes: 1,
        });
        // 40% failures: stays closed.
        for i in 0..100u64 {
            b.record(ms(i * 10), i % 5 < 3, false);
        }
        assert_eq!(b.state(ms(1000)), State::Closed, "{:?}", b.transitions());
        // Old successes age out of the window; a burst of failures opens.
        for i in 0..7u64 {
            b.record(ms(5000 + i), i < 3, false);
        }
        assert_eq!(b.state(ms(5006)), State::Closed, "below min_requests");
        for i in 7..12u64 {
            b.record(ms(5000 + i), false, false);
        }
        assert_eq!(b.state(ms(5012)), State::Open);
        assert!(b.transitions()[0].reason.contains("failure rate"));
        assert!(BreakerSpec {
            failure_rate: 1.5,
            ..BreakerSpec::default()
        }
        .validate()
        .is_err());
    }
}
