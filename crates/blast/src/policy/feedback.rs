//! Postfix-style destination concurrency feedback.
//!
//! The window starts at `initial`; after a cohort of successful deliveries
//! (as many as the current window) it grows by `positive_feedback`; each
//! connection-level failure shrinks it by `negative_feedback` (but not
//! under one) and adds `1/window` to the failed pseudo-cohort count. When that count
//! reaches `failed_cohort_limit` the destination is dead: no connection for
//! `suspend`, then the window restarts at `initial`. A success resets the
//! failed-cohort count. Every change of the window is recorded.
//!
//! Pure and clock-injected ([`Feedback`]); [`SharedFeedback`] wraps it for the
//! shards: the current limit is an atomic read when a connection slot
//! opens, and the lock is taken once per outcome.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backoff::scale;
use super::serde_dur;

/// Concurrency feedback settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConcurrencySpec {
    /// `initial_destination_concurrency`.
    pub initial: u32,
    /// `destination_concurrency_limit`.
    pub limit: u32,
    /// Window growth after a cohort of successes.
    pub positive_feedback: f64,
    /// Window shrink per connection-level failure.
    pub negative_feedback: f64,
    /// Failed pseudo-cohorts that make the destination dead (0: never).
    pub failed_cohort_limit: u32,
    /// How long a dead destination is suspended (Postfix:
    /// `minimal_backoff_time`).
    #[serde(with = "serde_dur")]
    pub suspend: Duration,
}

impl Default for ConcurrencySpec {
    fn default() -> Self {
        ConcurrencySpec {
            initial: 5,
            limit: 20,
            positive_feedback: 1.0,
            negative_feedback: 1.0,
            failed_cohort_limit: 1,
            suspend: Duration::from_secs(300),
        }
    }
}

impl ConcurrencySpec {
    /// Multiplies the suspension by `f`.
    pub fn scaled(&self, f: f64) -> ConcurrencySpec {
        ConcurrencySpec {
            suspend: scale(self.suspend, f),
            ..*self
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial == 0 || self.limit < self.initial {
            return Err(format!(
                "concurrency: need 1 <= initial ({}) <= limit ({})",
                self.initial, self.limit
            ));
        }
        for (name, v) in [
            ("positive_feedback", self.positive_feedback),
            ("negative_feedback", self.negative_feedback),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("concurrency.{name} {v}: must be a number >= 0"));
            }
        }
        Ok(())
    }
}

/// One point of the concurrency timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the run started.
    pub at_s: f64,
    /// The concurrency limit from then on (0: suspended).
    pub concurrency: u32,
}

const MAX_POINTS: usize = 10_000;

/// The feedback state machine.
#[derive(Debug, Clone)]
pub struct Feedback {
    spec: ConcurrencySpec,
    window: f64,
    successes: u32,
    failed_cohorts: f64,
    suspended_until: Option<Duration>,
    timeline: Vec<Point>,
    suspensions: u64,
}

impl Feedback {
    /// Starts at the initial concurrency.
    pub fn new(spec: ConcurrencySpec) -> Feedback {
        let mut f = Feedback {
            spec,
            window: f64::from(spec.initial),
            successes: 0,
            failed_cohorts: 0.0,
            suspended_until: None,
            timeline: Vec::new(),
            suspensions: 0,
        };
        f.note(Duration::ZERO);
        f
    }

    /// The concurrency allowed at `now` (0 while suspended).
    pub fn limit(&mut self, now: Duration) -> u32 {
        self.tick(now);
        self.current()
    }

    fn current(&self) -> u32 {
        if self.suspended_until.is_some() {
            0
        } else {
            (self.window.floor() as u32).clamp(1, self.spec.limit)
        }
    }

    /// When a suspension ends, if one is running.
    pub fn suspended_until(&self) -> Option<Duration> {
        self.suspended_until
    }

    fn tick(&mut self, now: Duration) {
        if self.suspended_until.is_some_and(|t| now >= t) {
            self.suspended_until = None;
            self.window = f64::from(self.spec.initial);
            self.note(now);
        }
    }

    fn note(&mut self, now: Duration) {
        let c = self.current();
        if self.timeline.last().is_some_and(|p| p.concurrency == c) {
            return;
        }
        if self.timeline.len() < MAX_POINTS {
            self.timeline.push(Point {
                at_s: (now.as_secs_f64() * 1000.0).round() / 1000.0,
                concurrency: c,
            });
        }
    }

    /// A delivery completed without a connection-level failure.
    pub fn success(&mut self, now: Duration) {
        self.tick(now);
        if self.suspended_until.is_some() {
            return;
        }
        self.failed_cohorts = 0.0;
        self.successes += 1;
        if f64::from(self.successes) >= self.window.floor().max(1.0) {
            self.successes = 0;
            self.window =
                (self.window + self.spec.positive_feedback).min(f64::from(self.spec.limit));
            self.note(now);
        }
    }

    /// A connection or handshake failure (421, refused, failed greeting).
    pub fn failure(&mut self, now: Duration) {
        self.tick(now);
        if self.suspended_until.is_some() {
            return;
        }
        self.successes = 0;
        self.failed_cohorts += 1.0 / self.window.floor().max(1.0);
        self.window = (self.window - self.spec.negative_feedback).max(1.0);
        let limit = self.spec.failed_cohort_limit;
        // The tiny epsilon absorbs 1/3 + 1/3 + 1/3 rounding.
        if limit > 0 && self.failed_cohorts + 1e-9 >= f64::from(limit) {
            self.failed_cohorts = 0.0;
            self.suspended_until = Some(now + self.spec.suspend);
            self.suspensions += 1;
        }
        self.note(now);
    }

    /// The recorded timeline (changes only, at most 10,000 points).
    pub fn timeline(&self) -> &[Point] {
        &self.timeline
    }

    /// How many times the destination was declared dead.
    pub fn suspensions(&self) -> u64 {
        self.suspensions
    }
}

/// What a connection slot should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A connection may be opened; release it with [`SharedFeedback::release`].
    Granted,
    /// Wait for a release or this time (since the run start), then retry.
    Wait(Option<Duration>),
}

/// The feedback shared by every shard of a run.
#[derive(Debug)]
pub struct SharedFeedback {
    limit: AtomicU32,
    active: AtomicU32,
    inner: Mutex<Feedback>,
    /// Wakes slots waiting for a permit (works across shard runtimes).
    pub notify: tokio::sync::Notify,
}

impl SharedFeedback {
    /// Starts at the initial concurrency.
    pub fn new(spec: ConcurrencySpec) -> SharedFeedback {
        SharedFeedback {
            limit: AtomicU32::new(spec.initial),
            active: AtomicU32::new(0),
            inner: Mutex::new(Feedback::new(spec)),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Feedback> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a connection slot: one atomic read and a compare-exchange
    /// while the limit allows; the lock only while suspended.
    pub fn acquire(&self, now: Duration) -> Slot {
        loop {
            let limit = self.limit.load(Ordering::Acquire);
            if limit == 0 {
                let mut f = self.lock();
                let l = f.limit(now);
                self.limit.store(l, Ordering::Release);
                if l == 0 {
                    return Slot::Wait(f.suspended_until());
                }
                drop(f);
                self.notify.notify_waiters();
                continue;
            }
            let active = self.active.load(Ordering::Acquire);
            if active >= limit {
                return Slot::Wait(None);
            }
            if self
                .active
                .compare_exchange(active, active + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Slot::Granted;
            }
        }
    }

    /// Gives a slot back.
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Whether more connections are open than allowed (close one).
    pub fn over_limit(&self) -> bool {
        self.active.load(Ordering::Relaxed) > self.limit.load(Ordering::Relaxed)
    }

    /// Records a delivery without connection-level failure.
    pub fn success(&self, now: Duration) {
        let mut f = self.lock();
        f.success(now);
        let l = f.limit(now);
        drop(f);
        if self.limit.swap(l, Ordering::AcqRel) < l {
            self.notify.notify_waiters();
        }
    }

    /// Records a connection-level failure.
    pub fn failure(&self, now: Duration) {
        let mut f = self.lock();
        f.failure(now);
        self.limit.store(f.limit(now), Ordering::Release);
    }

    /// The timeline and the number of suspensions.
    pub fn snapshot(&self) -> (Vec<Point>, u64) {
        let f = self.lock();
        (f.timeline().to_vec(), f.suspensions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn grows_per_cohort_and_caps() {
        let mut f = Feedback::new(ConcurrencySpec {
            initial: 2,
            limit: 4,
            ..ConcurrencySpec::default()
        });
        assert_eq!(f.limit(ms(0)), 2);
        f.success(ms(1));
        assert_eq!(f.limit(ms(1)), 2);
        f.success(ms(2)); // a cohort of 2
        assert_eq!(f.limit(ms(2)), 3);
        for i in 0..3 {
            f.success(ms(3 + i));
        }
        assert_eq!(f.limit(ms(6)), 4);
        for i in 0..20 {
            f.success(ms(10 + i));
        }
        assert_eq!(f.limit(ms(40)), 4, "capped at the limit");
        let c: Vec<u32> = f.timeline().iter().map(|p| p.concurrency).collect();
        assert_eq!(c, [2, 3, 4]);
    }

    #[test]
    fn failures_shrink_then_suspend_then_restart() {
        let mut f = Feedback::new(ConcurrencySpec {
            initial: 5,
            limit: 20,
            suspend: ms(300),
            ..ConcurrencySpec::default()
        });
        // 1/5 + 1/4 + 1/3 = 0.78 < 1: still alive, window 2.
        f.failure(ms(10));
        f.failure(ms(11));
        f.failure(ms(12));
        assert_eq!(f.limit(ms(12)), 2);
        assert_eq!(f.suspensions(), 0);
        // + 1/2 crosses the failed cohort limit: dead.
        f.failure(ms(13));
        assert_eq!(f.limit(ms(13)), 0);
        assert_eq!(f.suspended_until(), Some(ms(313)));
        f.failure(ms(100)); // ignored while suspended
        assert_eq!(f.limit(ms(312)), 0);
        assert_eq!(f.limit(ms(313)), 5, "restarts at initial");
        let c: Vec<u32> = f.timeline().iter().map(|p| p.concurrency).collect();
        assert_eq!(c, [5, 4, 3, 2, 0, 5]);
        assert_eq!(f.timeline()[4].at_s, 0.013);
    }

    #[test]
    fn success_resets_failed_cohorts() {
        let mut f = Feedback::new(ConcurrencySpec {
            initial: 2,
            limit: 2,
            ..ConcurrencySpec::default()
        });
        f.failure(ms(1)); // 1/2, window 1
        f.success(ms(2)); // resets the count (and a cohort of 1: window 2)
        f.failure(ms(3)); // 1/2 again: without the reset this would be 1
        assert_eq!(f.suspensions(), 0);
        f.failure(ms(4)); // + 1/1 → dead
        assert_eq!(f.suspensions(), 1);
        let mut g = Feedback::new(ConcurrencySpec {
            initial: 3,
            limit: 3,
            failed_cohort_limit: 0,
            ..ConcurrencySpec::default()
        });
        for i in 0..50 {
            g.failure(ms(i));
        }
        assert_eq!(g.limit(ms(60)), 1, "never dead with limit 0, floor 1");
    }

    #[test]
    fn shared_slots() {
        let s = SharedFeedback::new(ConcurrencySpec {
            initial: 2,
            limit: 3,
            suspend: ms(50),
            ..ConcurrencySpec::default()
        });
        assert_eq!(s.acquire(ms(0)), Slot::Granted);
        assert_eq!(s.acquire(ms(0)), Slot::Granted);
        assert_eq!(s.acquire(ms(0)), Slot::Wait(None));
        s.success(ms(1));
        s.success(ms(2));
        assert_eq!(s.acquire(ms(2)), Slot::Granted, "grew to 3");
        s.failure(ms(3)); // window 2, 1/3
        assert!(s.over_limit());
        s.release();
        s.failure(ms(4)); // + 1/2
        s.failure(ms(5)); // + 1/1 → dead
        assert_eq!(s.acquire(ms(6)), Slot::Wait(Some(ms(55))));
        s.release();
        s.release();
        assert_eq!(s.acquire(ms(55)), Slot::Granted);
        let (tl, susp) = s.snapshot();
        assert_eq!(susp, 1);
        assert_eq!(tl.last().map(|p| p.concurrency), Some(2));
    }
}
