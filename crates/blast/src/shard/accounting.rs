//! Counting messages as they are offered, start and end, and the shard's
//! final delta (what was cut off in flight, what never started).

use std::ops::Range;
use std::time::Instant;

use super::admission::Pick;
use super::{interval_index, Ctx, ShardDelta};
use crate::policy::fate::Fate;
use crate::policy::runtime::{settle, Final, Settled};
use crate::session::{Disposition, Job};
use crate::stats::{Fault, Stage, Stats, Transport};

/// Open loop: sends `fresh` of the schedule just came due. Each is
/// counted in the interval it was due in: normally the open one (or the
/// next, which this opens); a pacer woken late files the sends due before
/// the boundary under the interval already shipped, as a separate delta.
pub(super) fn offered(ctx: &Ctx, fresh: Range<u64>) {
    let Some(s) = &ctx.schedule else { return };
    let run = &ctx.run;
    s.buckets(
        fresh.clone(),
        |t| interval_index(run, t) as usize,
        |interval, n| {
            let interval = interval as u64;
            if interval < ctx.open.get() {
                // Built only here: a `Stats` holds a histogram per stage
                // (~16 KiB each), and this runs at every pacer step.
                let mut late = Stats::default();
                count_offered(&mut late, n);
                ctx.ship(interval, late, ctx.open.get());
            } else {
                ctx.roll(interval_start(run, interval));
                count_offered(&mut ctx.env.stats.borrow_mut(), n);
            }
        },
    );
    if ctx.env.cfg.stages.is_some() {
        let mut st = ctx.env.stats.borrow_mut();
        s.buckets(
            fresh,
            |t| ctx.stage_of(t),
            |stage, k| {
                st.load_stage(stage).scheduled += k;
            },
        );
    }
}

fn count_offered(st: &mut Stats, n: u64) {
    st.counters.offered += n;
    st.counters.scheduled += n;
}

/// When interval `k` starts.
fn interval_start(run: &super::RunContext, k: u64) -> Instant {
    match k.checked_sub(1) {
        Some(p) => super::interval_end(run, p),
        None => run.start,
    }
}

impl Ctx {
    /// Counts a message as started.
    pub(super) fn begin(&self, pick: Pick) -> Job {
        let Pick {
            intended,
            seq,
            msg,
            probe,
            first,
        } = pick;
        let started = Instant::now();
        self.roll(started);
        let stage = self.stage_of(intended);
        self.in_flight.set(self.in_flight.get() + 1);
        let mut st = self.env.stats.borrow_mut();
        st.counters.attempted += 1;
        if self.schedule.is_none() && first {
            // Closed loop: a free connection is what asks for a message.
            st.counters.offered += 1;
        }
        let mut late = false;
        if self.schedule.is_some() {
            let lateness = started.saturating_duration_since(intended);
            st.time(Stage::Lateness, lateness.as_micros() as u64);
            if lateness > self.env.cfg.late_after {
                st.counters.late += 1;
                late = true;
            }
        }
        if self.env.cfg.stages.is_some() {
            let t = st.load_stage(stage);
            t.attempted += 1;
            t.late += u64::from(late);
            let mut fl = self.stage_in_flight.borrow_mut();
            if fl.len() <= stage {
                fl.resize(stage + 1, 0);
            }
            fl[stage] += 1;
        }
        drop(st);
        #[cfg(test)]
        tests::inject_panic(&self.env.cfg, "worker");
        Job {
            seq,
            intended,
            started,
            stage,
            mask: msg.map_or(u64::MAX, |m| m.pending),
            msg,
            probe,
        }
    }

    /// Records how a message ended; with a policy, settles it (final state
    /// or a retry) and feeds the breaker and the concurrency feedback.
    pub(super) fn end(&self, job: &Job, o: Disposition, fate: &Fate) {
        self.in_flight.set(self.in_flight.get() - 1);
        if let (Some(res), Some(mut m)) = (&self.run.res, job.msg) {
            let now = res.now();
            res.observe(now, fate, job.probe);
            match settle(&res.policy, res.seed, &mut m, fate, now) {
                Settled::Done(f) => self.tally.borrow_mut().finish(&m, f),
                Settled::Retry => self.retries.borrow_mut().push(m),
            }
            // Idle workers may have a retry to wait for, or be done.
            self.wake.notify_waiters();
        }
        let end = Instant::now();
        self.roll(end);
        let mut st = self.env.stats.borrow_mut();
        if self.env.cfg.stages.is_some() {
            if let Some(n) = self.stage_in_flight.borrow_mut().get_mut(job.stage) {
                *n = n.saturating_sub(1);
            }
            let t = st.load_stage(job.stage);
            match o {
                Disposition::Accepted => t.accepted += 1,
                Disposition::Deferred => t.deferred += 1,
                Disposition::Rejected => t.rejected += 1,
                Disposition::Failed(_) => t.failed += 1,
            }
        }
        let c = &mut st.counters;
        c.rcpt_delivered += u64::from(fate.delivered.count_ones());
        match o {
            Disposition::Accepted => c.accepted += 1,
            Disposition::Deferred => c.deferred += 1,
            Disposition::Rejected => c.rejected += 1,
            Disposition::Failed(_) => {
                c.failed += 1;
                return;
            }
        }
        st.time(
            Stage::Service,
            end.saturating_duration_since(job.started).as_micros() as u64,
        );
        let latency = end.saturating_duration_since(job.intended).as_micros() as u64;
        st.time(Stage::Latency, latency);
        if self.env.cfg.stages.is_some() {
            st.load_time(job.stage, latency);
        }
    }
}

/// Marks the load stages this shard is done with as closed in its next
/// delta, in order: a stage closes once the clock and the next send to
/// start (open loop) are past it and none of its messages is in flight, so
/// its counts in this shard are final. `all`: the shard's last delta, where
/// every stage is final.
pub(super) fn close_stages(ctx: &Ctx, all: bool) {
    let Some(stages) = &ctx.env.cfg.stages else {
        return;
    };
    let n = stages.stages().len();
    let now = ctx.stage_of(Instant::now());
    // Open loop: the stage of the next send to start (backlog included).
    let next = ctx
        .schedule
        .as_ref()
        .map(|s| s.next_to_take().map(|t| ctx.stage_of(t)));
    let mut i = ctx.stages_closed.get();
    while i < n {
        let over = now > i && next.is_none_or(|s| s.is_none_or(|s| s > i));
        let idle = ctx.stage_in_flight.borrow().get(i).is_none_or(|f| *f == 0);
        let done = all || (over && idle);
        if !done {
            break;
        }
        ctx.env.stats.borrow_mut().load_stage(i).closed += 1;
        i += 1;
    }
    ctx.stages_closed.set(i);
}

/// After the workers ended: counts what the cut-off aborted and the sends
/// that never started (each in the interval and load stage it was meant
/// for), and ships the shard's last delta.
pub(super) fn ship_final(ctx: &Ctx) {
    let run = &ctx.run;
    if let Some(s) = &ctx.schedule {
        let backlog = s.backlog();
        s.buckets(
            backlog.clone(),
            |t| interval_index(run, t) as usize,
            |interval, n| {
                let mut stats = Stats::default();
                stats.counters.not_started = n;
                ctx.ship(interval as u64, stats, ctx.open.get());
            },
        );
        if ctx.env.cfg.stages.is_some() {
            let mut st = ctx.env.stats.borrow_mut();
            s.buckets(
                backlog,
                |t| ctx.stage_of(t),
                |stage, n| {
                    st.load_stage(stage).not_started += n;
                },
            );
        }
    }
    close_stages(ctx, true);
    #[cfg(test)]
    tests::inject_panic(&ctx.env.cfg, "shard");
    // What was counted before the interval now open goes under its own.
    let now = Instant::now();
    ctx.roll(now);
    let mut st = ctx.env.stats.borrow_mut();
    let aborted = ctx.in_flight.get();
    if aborted > 0 {
        st.counters.failed += aborted;
        st.add_fault(
            Fault::new(Transport::Aborted, Stage::Message),
            aborted,
            "still in flight when the grace period ended",
        );
    }
    let tally = run.res.as_ref().map(|_| {
        let mut t = ctx.tally.take();
        // Retries the run did not get to, and messages cut off in flight.
        for m in ctx.retries.borrow_mut().drain() {
            t.finish(&m, Final::Pending);
        }
        t.messages.pending += aborted;
        t
    });
    let _ = run.tx.send(ShardDelta {
        shard: ctx.load.slot,
        interval: ctx.open.get(),
        through: ctx.open.get() + 1,
        stats: st.take(),
        last: true,
        tally,
    });
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use crate::config::Config;
    use crate::{RunParams, StopSignal};

    /// Panics where a run's HELO name asks for it: `panic.<place>.test`.
    pub fn inject_panic(cfg: &Config, place: &str) {
        if cfg.helo == format!("panic.{place}.test") {
            panic!("injected panic in the {place}");
        }
    }

    fn run_with_panic(place: &str) -> crate::RunResult {
        // A port that refuses: the panics come before or after any traffic.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = Config {
            threads: 1,
            pin: false,
            quiet: true,
            concurrency: 2,
            messages: Some(4),
            duration: Some(Duration::from_secs(5)),
            grace: Duration::from_millis(200),
            helo: format!("panic.{place}.test"),
            ..Config::default()
        };
        let params = RunParams {
            config,
            addr,
            target: addr.to_string(),
            host: "127.0.0.1".into(),
            trusted_pem: None,
            stop: StopSignal::new(),
            preflight: None,
        };
        crate::run(&params, |_| {}).expect("a panic does not lose the run")
    }

    #[test]
    fn a_panicking_worker_does_not_lose_the_run() {
        let r = run_with_panic("worker");
        let e = r.internal_error.expect("the panic is reported");
        assert!(e.contains("injected panic in the worker"), "{e}");
        // Counted before the panic, and shipped with the final delta.
        assert!(r.totals.counters.attempted >= 1, "{:?}", r.totals.counters);
    }

    #[test]
    fn a_panicking_shard_still_ships_its_measurements() {
        let r = run_with_panic("shard");
        let e = r.internal_error.expect("the panic is reported");
        assert!(e.contains("injected panic in the shard"), "{e}");
        let c = r.totals.counters;
        assert_eq!(c.attempted, 4, "{c:?}");
        assert_eq!(c.failed, 4, "refused, and counted: {c:?}");
    }
}
