//! A shard: one pinned thread with a current-thread tokio runtime, its own
//! connections, its own measurements, shipped to the main thread interval
//! by interval.
//!
//! Counts go to the interval they happened in: the shard holds the
//! measurements of one open interval, and the first message count past its
//! end (a send coming due, starting or ending), or the ticker at the
//! boundary, whichever comes first, ships them and opens the next
//! ([`Ctx::roll`]); a send is counted as offered in the interval it was
//! due in. Stage timings and replies recorded between two message counts
//! go with the interval open then (at most the ticker's lag late). Each delta says up to which interval
//! the shard has shipped everything, so the collector closes a timeline
//! row only once every shard has reported it.
//!
//! - `admission`: which message a worker sends next (retries, the budget or
//!   the open-loop schedule, the breaker).
//! - `schedule`: the open-loop schedule, generated as sends come due.
//! - `accounting`: counting messages as they start and end, and the
//!   shard's final delta.
//! - `worker`: one connection slot's loop.
//!
//! Nothing that happens inside a shard loses the run: a panic in a task or
//! in the shard itself still ships the measurements made so far, and the
//! shard thread then ends in that panic, which the run reports as its
//! internal error.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::sync::Notify;
use tokio::task::{JoinError, JoinSet, LocalSet};

use crate::auth::Credentials;
use crate::config::Config;
use crate::message::{MessageFactory, Pattern};
use crate::net::{pin_current_thread, SockOpts};
use crate::policy::runtime::{Resilience, RetryQueue, Tally};
use crate::session::Env;
use crate::stats::Stats;
use crate::{BlastError, StopSignal};

mod accounting;
mod admission;
mod clock;
mod schedule;
mod worker;

use schedule::Schedule;

/// Read-only state every shard of a run gets a copy of.
#[derive(Clone)]
pub(crate) struct RunContext {
    pub cfg: Arc<Config>,
    pub addr: SocketAddr,
    pub tls: Option<Arc<ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
    pub creds: Option<Credentials>,
    pub start: Instant,
    pub deadline: Option<Instant>,
    pub stop: Arc<StopSignal>,
    pub tx: Sender<ShardDelta>,
    /// `mx:DOMAIN` or relay targets (`None`: connect to `addr`).
    pub targets: Option<Arc<crate::target::Targets>>,
    /// The run's policy state (retries, breaker, feedback, budget).
    pub res: Option<Arc<Resilience>>,
}

/// This shard's share of the load.
#[derive(Debug, Clone)]
pub(crate) struct ShardLoad {
    /// Position among this process's shard threads (`0..threads`).
    pub slot: usize,
    pub index: usize,
    pub shards: usize,
    pub cpu: Option<usize>,
    /// Connections (closed loop) or the connection cap (open loop).
    pub workers: u32,
    /// Messages this shard may start.
    pub messages: Option<u64>,
}

/// What a shard sends to the main thread.
#[derive(Debug)]
pub(crate) struct ShardDelta {
    /// Which shard of this process ([`ShardLoad::slot`]).
    pub shard: usize,
    /// Interval index since the run's start (0 = first interval).
    pub interval: u64,
    /// Every interval below this one has been shipped in full (counts
    /// known only at the end, never-started sends, excepted).
    pub through: u64,
    /// Measurements of that interval.
    pub stats: Stats,
    /// The shard is done; nothing more will come from it.
    pub last: bool,
    /// With a policy, on the last delta: the shard's final states.
    pub tally: Option<Tally>,
}

/// Runs a shard on a new thread.
pub(crate) fn spawn(
    load: ShardLoad,
    run: RunContext,
) -> std::io::Result<std::thread::JoinHandle<Result<(), BlastError>>> {
    std::thread::Builder::new()
        .name(format!("blast-shard-{}", load.index))
        .spawn(move || {
            if let Some(cpu) = load.cpu {
                // Pinning is an optimisation: a restricted cpuset must not
                // stop the run.
                let _ = pin_current_thread(cpu);
            }
            let stats = Rc::new(RefCell::new(Stats::default()));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| BlastError::Config(format!("tokio runtime: {e}")));
            let outcome = rt.map(|rt| {
                let shard = shard_main(load.clone(), run.clone(), stats.clone());
                std::panic::catch_unwind(AssertUnwindSafe(|| LocalSet::new().block_on(&rt, shard)))
            });
            match outcome {
                Ok(Ok(Ok(None))) => Ok(()),
                // A task panicked; the final delta went out: the thread
                // ends in that panic, which the run reports as its
                // internal error ("shard N panicked: …").
                Ok(Ok(Ok(Some(panic)))) => std::panic::resume_unwind(panic),
                Ok(Err(panic)) => {
                    // The shard's own code panicked: ship what it measured,
                    // then end in the same panic.
                    let stats = stats.try_borrow_mut().map(|mut s| s.take());
                    let now = interval_index(&run, Instant::now());
                    let _ = run.tx.send(ShardDelta {
                        shard: load.slot,
                        interval: now,
                        through: now,
                        stats: stats.unwrap_or_default(),
                        last: true,
                        tally: None,
                    });
                    std::panic::resume_unwind(panic)
                }
                Ok(Ok(Err(e))) | Err(e) => {
                    // The main thread waits for a last delta from every shard.
                    let _ = run.tx.send(ShardDelta {
                        shard: load.slot,
                        interval: 0,
                        through: 0,
                        stats: Stats::default(),
                        last: true,
                        tally: None,
                    });
                    Err(e)
                }
            }
        })
}

/// A shard's state, shared by its tasks (one thread, so `Cell`s).
struct Ctx {
    env: Env,
    load: ShardLoad,
    run: RunContext,
    stop: Cell<bool>,
    /// Wakes idle workers (new open-loop send, stop) and the shard's main.
    wake: Notify,
    stopped: Notify,
    /// Open loop: the schedule.
    schedule: Option<Schedule>,
    /// Closed loop: messages left to start.
    remaining: Cell<u64>,
    next_local: Cell<u64>,
    in_flight: Cell<u64>,
    /// With `--stages`: messages in flight per load stage, and how many
    /// stages (a prefix) this shard has closed ([`accounting::close_stages`]).
    stage_in_flight: RefCell<Vec<u64>>,
    stages_closed: Cell<usize>,
    /// With a policy: messages waiting for a retry, and final states.
    retries: RefCell<RetryQueue>,
    tally: RefCell<Tally>,
    /// The breaker holds traffic back until then (since the run start).
    hold: Cell<Option<Duration>>,
    /// The first panic of one of the shard's tasks (its payload).
    panic: RefCell<Option<Box<dyn std::any::Any + Send>>>,
    /// The interval `env.stats` holds the measurements of, and its end.
    open: Cell<u64>,
    open_until: Cell<Instant>,
}

impl Ctx {
    /// A shard's state at the start of the run, measuring into `stats`.
    fn new(load: ShardLoad, run: RunContext, stats: Rc<RefCell<Stats>>) -> Result<Ctx, BlastError> {
        let cfg = run.cfg.clone();
        let schedule = if cfg.open_loop() {
            Some(Schedule::new(&cfg, &load, run.start, run.deadline)?)
        } else {
            None
        };
        let from = Pattern::new(&cfg.from);
        let to = Pattern::new(&cfg.to);
        let env = Env {
            utf8: from.is_utf8() || to.is_utf8(),
            from,
            to,
            factory: MessageFactory::new(&cfg)?,
            addr: run.addr,
            targets: run.targets.clone(),
            opts: SockOpts::from_config(&cfg),
            tls: run.tls.clone(),
            server_name: run.server_name.clone(),
            creds: run.creds.clone(),
            next_source: Cell::new(load.index),
            stats,
            cfg,
        };
        Ok(Ctx {
            env,
            schedule,
            remaining: Cell::new(load.messages.unwrap_or(u64::MAX)),
            stop: Cell::new(false),
            wake: Notify::new(),
            stopped: Notify::new(),
            next_local: Cell::new(0),
            in_flight: Cell::new(0),
            stage_in_flight: RefCell::new(Vec::new()),
            stages_closed: Cell::new(0),
            retries: RefCell::new(RetryQueue::default()),
            tally: RefCell::new(Tally::default()),
            hold: Cell::new(None),
            panic: RefCell::new(None),
            open: Cell::new(0),
            open_until: Cell::new(interval_end(&run, 0)),
            load,
            run,
        })
    }

    fn set_stop(&self) {
        self.stop.set(true);
        self.wake.notify_waiters();
        self.stopped.notify_waiters();
    }

    /// Once `at` is past the open interval, ships the open interval's
    /// measurements and opens `at`'s: what is counted next belongs to it.
    /// Called before counting (with the time of the count) and by the
    /// ticker at each boundary, so an interval's delta never carries a
    /// later interval's counts and an idle shard still reports each one.
    fn roll(&self, at: Instant) {
        let until = self.open_until.get();
        if at < until {
            return;
        }
        // The sends due before the boundary belong to the interval shipped
        // now, whoever crosses it first (a worker's reply may, ahead of a
        // late pacer and of the ticker). Not after a stop: the last look at
        // the schedule counts the sends due by then, not by the boundary.
        if let Some(s) = &self.schedule {
            if !self.stop.get() {
                schedule::come_due(self, s, until - Duration::from_nanos(1));
            }
        }
        let next = interval_index(&self.run, at);
        let stats = self.env.stats.borrow_mut().take();
        self.ship(self.open.get(), stats, next);
        self.open.set(next);
        self.open_until.set(interval_end(&self.run, next));
    }

    /// Ships measurements of `interval` (not the shard's last delta).
    fn ship(&self, interval: u64, stats: Stats, through: u64) {
        let _ = self.run.tx.send(ShardDelta {
            shard: self.load.slot,
            interval,
            through,
            stats,
            last: false,
            tally: None,
        });
    }

    fn past_deadline(&self) -> bool {
        self.run.deadline.is_some_and(|d| Instant::now() >= d)
    }

    async fn wait_stopped(&self) {
        loop {
            let n = self.stopped.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.stop.get() {
                return;
            }
            n.await;
        }
    }

    /// Keeps the first panic of a finished task; cancellations (our own
    /// aborts at the cut-off) are no error.
    fn note_join(&self, res: Result<(), JoinError>) {
        if let Err(e) = res {
            if e.is_panic() {
                let mut first = self.panic.borrow_mut();
                if first.is_none() {
                    *first = Some(e.into_panic());
                }
            }
        }
    }
}

/// The shard's work; `Ok(Some(payload))`: a task panicked (everything
/// else still ran to its end and the final delta went out).
async fn shard_main(
    load: ShardLoad,
    run: RunContext,
    stats: Rc<RefCell<Stats>>,
) -> Result<Option<Box<dyn std::any::Any + Send>>, BlastError> {
    crate::fault::maybe_panic_shard(load.index);
    let ctx = Rc::new(Ctx::new(load.clone(), run, stats)?);

    let mut helpers = JoinSet::new();
    {
        let ctx = ctx.clone();
        helpers.spawn_local(async move {
            ctx.run.stop.wait().await;
            ctx.set_stop();
        });
    }
    helpers.spawn_local(ticker(ctx.clone()));
    if ctx.schedule.is_some() {
        helpers.spawn_local(schedule::pace(ctx.clone()));
    }
    let mut workers = JoinSet::new();
    for slot in 0..load.workers {
        workers.spawn_local(worker::worker(ctx.clone(), slot));
    }
    run_until_cutoff(&ctx, &mut workers).await;
    helpers.abort_all();
    while let Some(res) = helpers.join_next().await {
        ctx.note_join(res);
    }
    accounting::ship_final(&ctx);
    let panic = ctx.panic.borrow_mut().take();
    Ok(panic)
}

/// Waits for every worker, or for the cut-off (deadline or stop, plus the
/// grace period), whichever comes first; at the cut-off the workers still
/// running are aborted. Each worker is joined exactly once.
async fn run_until_cutoff(ctx: &Ctx, workers: &mut JoinSet<()>) {
    let cutoff = async {
        match ctx.run.deadline {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(d.into()) => {}
                    _ = ctx.wait_stopped() => {}
                }
            }
            None => ctx.wait_stopped().await,
        }
        // Wake idle workers so they see the end, then give in-flight
        // messages the grace period.
        ctx.set_stop();
        tokio::time::sleep(ctx.env.cfg.grace).await;
    };
    tokio::pin!(cutoff);
    let mut cut = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(res) => ctx.note_join(res),
                None => return,
            },
            _ = &mut cutoff, if !cut => {
                cut = true;
                workers.abort_all();
            }
        }
    }
}

fn interval_index(run: &RunContext, at: Instant) -> u64 {
    let nanos = run.cfg.interval.as_nanos().max(1);
    (at.saturating_duration_since(run.start).as_nanos() / nanos) as u64
}

/// When interval `k` ends (the next one's start).
fn interval_end(run: &RunContext, k: u64) -> Instant {
    let nanos = run.cfg.interval.as_nanos().max(1);
    let off = nanos
        .saturating_mul(u128::from(k) + 1)
        .min(u128::from(u64::MAX));
    run.start + Duration::from_nanos(off as u64)
}

/// Ships the open interval at each boundary, whether or not anything was
/// counted since (the collector waits for every shard's report).
async fn ticker(ctx: Rc<Ctx>) {
    loop {
        tokio::time::sleep_until(ctx.open_until.get().into()).await;
        at_boundary(&ctx, Instant::now());
    }
}

/// The ticker's work at a boundary it reached at `now`.
fn at_boundary(ctx: &Ctx, now: Instant) {
    // Stages this shard is done with are marked in the interval shipped
    // now (for --abort-on-fail's stage checks).
    accounting::close_stages(ctx, false);
    // A pacer not woken yet would count the sends due before the boundary
    // only after the interval shipped, as a late delta that can miss the
    // collector's row.
    if let Some(s) = &ctx.schedule {
        schedule::come_due(ctx, s, now);
    }
    ctx.roll(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Collector;

    const INTERVAL: Duration = Duration::from_millis(100);

    /// One shard at 1,000 sends/s (send `k` due at `k` ms), 100 ms rows:
    /// its context, the main thread's end of its channel, and a clock in
    /// milliseconds since the start. Nothing runs by itself: the test calls
    /// the pacer's step and the ticker's with the instants it chooses.
    fn open_loop() -> (
        Ctx,
        crossbeam_channel::Receiver<ShardDelta>,
        impl Fn(f64) -> Instant,
    ) {
        let cfg = Config {
            threads: 1,
            rate: Some(1000.0),
            interval: INTERVAL,
            ..Config::default()
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let start = Instant::now();
        let run = RunContext {
            cfg: Arc::new(cfg),
            addr: "127.0.0.1:9".parse().unwrap(),
            tls: None,
            server_name: None,
            creds: None,
            start,
            deadline: None,
            stop: StopSignal::new(),
            tx,
            targets: None,
            res: None,
        };
        let load = ShardLoad {
            slot: 0,
            index: 0,
            shards: 1,
            cpu: None,
            workers: 4,
            messages: None,
        };
        let ctx = Ctx::new(load, run, Rc::default()).unwrap();
        let ms = move |ms: f64| start + Duration::from_secs_f64(ms / 1000.0);
        (ctx, rx, ms)
    }

    /// Each delta's interval and offered count (the whole delta prints
    /// its histograms).
    fn offered(deltas: &[ShardDelta]) -> Vec<(u64, u64)> {
        deltas
            .iter()
            .map(|d| (d.interval, d.stats.counters.offered))
            .collect()
    }

    #[test]
    fn sends_due_before_a_boundary_are_in_the_row_it_closes() {
        let (ctx, rx, ms) = open_loop();
        let sched = ctx.schedule.as_ref().unwrap();
        let mut rows = Collector::new(INTERVAL, 1);
        // The pacer counted the sends due by 98.5 ms (0..=98), then woke
        // late: send 99, due at 99 ms, is not counted when the ticker
        // reaches the boundary (at 100.2 ms).
        assert!(schedule::come_due(&ctx, sched, ms(98.5)));
        at_boundary(&ctx, ms(100.2));
        for d in rx.try_iter() {
            rows.receive(&d);
        }
        // The shard has shipped interval 0: its row closes now, and its
        // snapshot has every send due in it.
        let row = rows.close_next(Some(INTERVAL)).expect("row 0 is final");
        assert_eq!(row.index, 0);
        let c = row.stats.counters;
        assert_eq!((c.scheduled, c.offered), (100, 100), "1000/s × 100 ms");
        // The pacer, woken at last, has nothing left for row 0.
        assert!(schedule::come_due(&ctx, sched, ms(100.5)));
        at_boundary(&ctx, ms(200.0));
        let late: Vec<_> = rx.try_iter().collect();
        assert!(late.iter().all(|d| d.interval != 0), "{:?}", offered(&late));
        for d in &late {
            rows.receive(d);
        }
        let row = rows.close_next(Some(INTERVAL * 2)).expect("row 1 is final");
        assert_eq!((row.index, row.stats.counters.scheduled), (1, 100));
    }

    /// As above when a worker crosses the boundary first: its reply rolls
    /// the interval (`begin`/`end`) before the ticker and the late pacer.
    #[test]
    fn a_worker_crossing_the_boundary_counts_the_sends_due_before_it() {
        let (ctx, rx, ms) = open_loop();
        let sched = ctx.schedule.as_ref().unwrap();
        let mut rows = Collector::new(INTERVAL, 1);
        assert!(schedule::come_due(&ctx, sched, ms(98.5)));
        ctx.roll(ms(100.2));
        for d in rx.try_iter() {
            rows.receive(&d);
        }
        let row = rows.close_next(Some(INTERVAL)).expect("row 0 is final");
        let c = row.stats.counters;
        assert_eq!((row.index, c.scheduled, c.offered), (0, 100, 100));
        // Send 100, due at the boundary itself, is the next row's.
        at_boundary(&ctx, ms(200.0));
        for d in rx.try_iter() {
            assert_ne!(d.interval, 0, "nothing late for row 0");
            rows.receive(&d);
        }
        let row = rows.close_next(Some(INTERVAL * 2)).expect("row 1 is final");
        assert_eq!((row.index, row.stats.counters.offered), (1, 100));
    }

    #[test]
    fn after_a_stop_the_ticker_offers_no_more_sends() {
        let (ctx, rx, ms) = open_loop();
        let sched = ctx.schedule.as_ref().unwrap();
        assert!(schedule::come_due(&ctx, sched, ms(50.5)));
        ctx.set_stop();
        // The first look after the stop is the last: sends 0..=100.
        at_boundary(&ctx, ms(100.5));
        // Boundaries in the grace period, and the pacer's last wake-up.
        at_boundary(&ctx, ms(200.5));
        at_boundary(&ctx, ms(300.5));
        assert!(!schedule::come_due(&ctx, sched, ms(300.6)));
        let deltas: Vec<_> = rx.try_iter().collect();
        let per_interval = offered(&deltas);
        let total: u64 = per_interval.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 101, "{per_interval:?}");
        assert_eq!(sched.backlog(), 0..101);
    }
}
