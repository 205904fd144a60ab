//! The open-loop schedule, generated as sends come due: memory does not
//! depend on rate × duration, and a backlog (sends due that no connection
//! was free to start) is a count, not a queue.
//!
//! Send `j` over all shards is due at `send_time(j)`; this shard takes
//! `j = index, index + shards, …` (its `k`-th send is `index + k·shards`),
//! so shards interleave exactly.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Ctx, ShardLoad};
use crate::config::Config;
use crate::BlastError;

/// Sends per second one shard can be asked to schedule. Far beyond what
/// one thread can start (a few hundred thousand SMTP transactions per
/// second at best), so only a typo reaches it; above it the run is refused
/// instead of piling up an ever-growing backlog.
pub(crate) const MAX_SHARD_RATE: f64 = 10_000_000.0;

pub(super) struct Schedule {
    cfg: Arc<Config>,
    start: Instant,
    deadline: Option<Instant>,
    index: u64,
    shards: u64,
    /// This shard's message budget.
    budget: u64,
    /// Sends `k < due` have come due.
    due: Cell<u64>,
    /// Sends `k < taken` were started by a worker.
    taken: Cell<u64>,
    /// The run stopped and the sends due then were counted: `due` stays.
    ended: Cell<bool>,
}

impl Schedule {
    /// The schedule of `load`'s shard; refuses a rate one shard cannot
    /// schedule.
    pub fn new(
        cfg: &Arc<Config>,
        load: &ShardLoad,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<Schedule, BlastError> {
        let peak = match (&cfg.stages, cfg.rate) {
            (Some(st), _) => st.max_value(),
            (None, Some(r)) => r,
            (None, None) => 0.0,
        };
        let shards = load.shards as f64;
        if peak / shards > MAX_SHARD_RATE {
            return Err(BlastError::Config(format!(
                "rate {peak}/s: one shard schedules at most {MAX_SHARD_RATE}/s, so {} \
                 thread(s) allow at most {}/s; lower --rate or raise --threads",
                load.shards,
                MAX_SHARD_RATE * shards
            )));
        }
        Ok(Schedule {
            cfg: cfg.clone(),
            start,
            deadline,
            index: load.index as u64,
            shards: load.shards as u64,
            budget: load.messages.unwrap_or(u64::MAX),
            due: Cell::new(0),
            taken: Cell::new(0),
            ended: Cell::new(false),
        })
    }

    /// When this shard's send `k` is due; `None` past the end of the
    /// schedule, the deadline or the budget.
    pub fn at(&self, k: u64) -> Option<Instant> {
        if k >= self.budget {
            return None;
        }
        let j = self.index.checked_add(k.checked_mul(self.shards)?)?;
        let off = match (&self.cfg.stages, self.cfg.rate) {
            (Some(st), _) => st.send_time(j)?,
            (None, Some(rate)) => Duration::try_from_secs_f64(j as f64 / rate).ok()?,
            (None, None) => return None,
        };
        let t = self.start.checked_add(off)?;
        match self.deadline {
            Some(d) if t >= d => None,
            _ => Some(t),
        }
    }

    fn is_due(&self, k: u64, now: Instant) -> bool {
        self.at(k).is_some_and(|t| t <= now)
    }

    /// Moves `due` past every send due by `now`; returns the range of
    /// sends that just came due. Exponential then binary search: a jump
    /// of a million sends costs a few dozen look-ups, not a million.
    pub fn advance(&self, now: Instant) -> std::ops::Range<u64> {
        let lo = self.due.get();
        if !self.is_due(lo, now) {
            return lo..lo;
        }
        // Invariant: send `ok` is due, send `ok + step` may not be.
        let (mut ok, mut step) = (lo, 1u64);
        while self.is_due(ok.saturating_add(step), now) {
            ok = ok.saturating_add(step);
            step = step.saturating_mul(2);
        }
        let mut hi = ok.saturating_add(step); // not due
        while hi - ok > 1 {
            let mid = ok + (hi - ok) / 2;
            if self.is_due(mid, now) {
                ok = mid;
            } else {
                hi = mid;
            }
        }
        self.due.set(ok + 1);
        lo..ok + 1
    }

    /// Takes the oldest send that came due and was not started yet;
    /// returns its intended start. Only [`come_due`] moves sends to due, so
    /// every send taken was counted as offered first.
    pub fn take(&self) -> Option<Instant> {
        let k = self.taken.get();
        if k >= self.due.get() {
            return None;
        }
        let t = self.at(k)?;
        self.taken.set(k + 1);
        Some(t)
    }

    /// The intended start of the next send a worker will take (due or
    /// not); `None` when no send is left.
    pub fn next_to_take(&self) -> Option<Instant> {
        self.at(self.taken.get())
    }

    /// Whether a send came due and was not started.
    pub fn has_due(&self) -> bool {
        self.taken.get() < self.due.get()
    }

    /// No send will come due any more, and none is waiting.
    pub fn finished(&self) -> bool {
        !self.has_due() && self.next_due().is_none()
    }

    /// When the next send not yet due comes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.at(self.due.get())
    }

    /// Sends due and never started: `taken..due`.
    pub fn backlog(&self) -> std::ops::Range<u64> {
        self.taken.get()..self.due.get()
    }

    /// Splits sends `range` into runs of the same `bucket` (a function of
    /// the intended start that never decreases, e.g. the interval index or
    /// the load stage), calling `f(bucket, count)` per run. Binary search
    /// per run: cost grows with the buckets, not the sends.
    pub fn buckets(
        &self,
        range: std::ops::Range<u64>,
        bucket: impl Fn(Instant) -> usize,
        mut f: impl FnMut(usize, u64),
    ) {
        let of = |k: u64| self.at(k).map(&bucket);
        let mut k = range.start;
        while k < range.end {
            let Some(b) = of(k) else { return };
            // The first send in range with a different bucket.
            let (mut same, mut other) = (k, range.end);
            while other - same > 1 {
                let mid = same + (other - same) / 2;
                if of(mid) == Some(b) {
                    same = mid;
                } else {
                    other = mid;
                }
            }
            f(b, other - k);
            k = other;
        }
    }
}

/// Counts sends as they come due and wakes workers for them; sleeps until
/// the next send is due. The schedule itself is computed on demand.
pub(super) async fn pace(ctx: Rc<Ctx>) {
    let Some(sched) = ctx.schedule.as_ref() else {
        return;
    };
    let timer = super::clock::PreciseTimer::new();
    while come_due(&ctx, sched, Instant::now()) {
        match sched.next_due() {
            Some(t) => timer.sleep_until(t).await,
            None => break,
        }
    }
    ctx.wake.notify_waiters();
}

/// Moves the sends due by `now` to due, counts them as offered and wakes
/// workers for them: the pacer's step, also taken by the ticker at each
/// boundary. `false` once no send comes due any more.
pub(super) fn come_due(ctx: &Ctx, sched: &Schedule, now: Instant) -> bool {
    if sched.ended.get() {
        return false;
    }
    // After a stop too: the sends due by now were offered (the deadline
    // itself is a stop, and sends at or past it are never due). That look
    // is the last, whoever takes it: sends due later were never offered.
    if ctx.stop.get() {
        sched.ended.set(true);
    }
    let fresh = sched.advance(now);
    let n = fresh.end - fresh.start;
    if n > 0 {
        super::accounting::offered(ctx, fresh);
        for _ in 0..n.min(u64::from(ctx.load.workers)) {
            ctx.wake.notify_one();
        }
    }
    !sched.ended.get()
}
