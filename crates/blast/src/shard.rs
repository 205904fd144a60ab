//! A shard: one pinned thread with a current-thread tokio runtime, its own
//! connections, its own measurements, and a ticker that ships deltas to the
//! main thread once per interval.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::sync::Notify;
use tokio::task::LocalSet;

use crate::auth::Credentials;
use crate::config::Config;
use crate::message::{MessageFactory, Pattern};
use crate::net::{pin_current_thread, SockOpts};
use crate::session::{Conn, Env, Outcome, Scratch};
use crate::stats::{Delta, Stage, Stats, Transport};
use crate::{BlastError, StopSignal};

/// Read-only state every shard gets a copy of.
#[derive(Clone)]
pub(crate) struct Shared {
    pub cfg: Arc<Config>,
    pub addr: SocketAddr,
    pub tls: Option<Arc<ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
    pub creds: Option<Credentials>,
    pub start: Instant,
    pub deadline: Option<Instant>,
    pub stop: Arc<StopSignal>,
    pub tx: Sender<Delta>,
}

/// This shard's share of the load.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub index: usize,
    pub shards: usize,
    pub cpu: Option<usize>,
    /// Connections (closed loop) or the connection cap (open loop).
    pub workers: u32,
    /// Messages this shard may start.
    pub messages: Option<u64>,
    /// Open loop: this shard's messages per second.
    pub rate: Option<f64>,
}

/// Runs a shard on a new thread.
pub(crate) fn spawn(
    plan: Plan,
    shared: Shared,
) -> std::io::Result<std::thread::JoinHandle<Result<(), BlastError>>> {
    std::thread::Builder::new()
        .name(format!("blast-shard-{}", plan.index))
        .spawn(move || {
            if let Some(cpu) = plan.cpu {
                // Pinning is an optimisation: a restricted cpuset must not
                // stop the run.
                let _ = pin_current_thread(cpu);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| BlastError::Config(format!("tokio runtime: {e}")));
            let result = match rt {
                Ok(rt) => LocalSet::new().block_on(&rt, run(plan.clone(), shared.clone())),
                Err(e) => Err(e),
            };
            if result.is_err() {
                // The main thread waits for a last delta from every shard.
                let _ = shared.tx.send(Delta {
                    shard: plan.index,
                    interval: 0,
                    stats: Stats::default(),
                    last: true,
                });
            }
            result
        })
}

struct Ctx {
    env: Env,
    plan: Plan,
    shared: Shared,
    open_loop: bool,
    stop: Cell<bool>,
    /// Wakes idle workers (new open-loop send, stop) and the shard's main.
    wake: Notify,
    stopped: Notify,
    queue: RefCell<VecDeque<Instant>>,
    sched_done: Cell<bool>,
    remaining: Cell<u64>,
    next_local: Cell<u64>,
    in_flight: Cell<u64>,
}

impl Ctx {
    fn set_stop(&self) {
        self.stop.set(true);
        self.wake.notify_waiters();
        self.stopped.notify_waiters();
    }

    fn past_deadline(&self) -> bool {
        self.shared.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// A globally unique sequence number: shards interleave.
    fn next_seq(&self) -> u64 {
        let k = self.next_local.get();
        self.next_local.set(k + 1);
        k * self.plan.shards as u64 + self.plan.index as u64
    }

    /// The next message to send: its intended start and sequence number.
    async fn next_job(&self) -> Option<(Instant, u64)> {
        loop {
            if self.stop.get() || self.past_deadline() {
                return None;
            }
            if !self.open_loop {
                let left = self.remaining.get();
                if left == 0 {
                    return None;
                }
                self.remaining.set(left - 1);
                return Some((Instant::now(), self.next_seq()));
            }
            if let Some(t) = self.queue.borrow_mut().pop_front() {
                return Some((t, self.next_seq()));
            }
            if self.sched_done.get() {
                return None;
            }
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stop.get() || self.sched_done.get() || !self.queue.borrow().is_empty() {
                continue;
            }
            notified.await;
        }
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
}

async fn run(plan: Plan, shared: Shared) -> Result<(), BlastError> {
    let cfg = shared.cfg.clone();
    let from = Pattern::new(&cfg.from);
    let to = Pattern::new(&cfg.to);
    let env = Env {
        utf8: from.is_utf8() || to.is_utf8(),
        from,
        to,
        factory: MessageFactory::new(&cfg)?,
        addr: shared.addr,
        opts: SockOpts::from_config(&cfg),
        tls: shared.tls.clone(),
        server_name: shared.server_name.clone(),
        creds: shared.creds.clone(),
        next_source: Cell::new(plan.index),
        stats: RefCell::new(Stats::default()),
        cfg: cfg.clone(),
    };
    let ctx = Rc::new(Ctx {
        env,
        open_loop: plan.rate.is_some(),
        remaining: Cell::new(plan.messages.unwrap_or(u64::MAX)),
        plan: plan.clone(),
        shared: shared.clone(),
        stop: Cell::new(false),
        wake: Notify::new(),
        stopped: Notify::new(),
        queue: RefCell::new(VecDeque::new()),
        sched_done: Cell::new(false),
        next_local: Cell::new(0),
        in_flight: Cell::new(0),
    });

    let watcher = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            ctx.shared.stop.wait().await;
            ctx.set_stop();
        })
    };
    let ticker = tokio::task::spawn_local(ticker(ctx.clone()));
    let scheduler = plan
        .rate
        .map(|rate| tokio::task::spawn_local(scheduler(ctx.clone(), rate)));
    let mut workers: Vec<_> = (0..plan.workers)
        .map(|_| tokio::task::spawn_local(worker(ctx.clone())))
        .collect();

    let cutoff = async {
        match shared.deadline {
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
        tokio::time::sleep(cfg.grace).await;
    };
    let timed_out = {
        let all = async {
            for w in workers.iter_mut() {
                let _ = w.await;
            }
        };
        tokio::select! {
            _ = all => false,
            _ = cutoff => true,
        }
    };
    if timed_out {
        for w in &workers {
            w.abort();
        }
        for w in workers.iter_mut() {
            let _ = w.await;
        }
    }
    watcher.abort();
    ticker.abort();
    if let Some(s) = scheduler {
        s.abort();
    }

    let mut st = ctx.env.stats.borrow_mut();
    let aborted = ctx.in_flight.get();
    if aborted > 0 {
        st.counters.failed += aborted;
        st.transport[Transport::Aborted as usize] += aborted;
    }
    st.counters.not_started += ctx.queue.borrow().len() as u64;
    let interval = interval_index(&shared, Instant::now());
    let _ = shared.tx.send(Delta {
        shard: plan.index,
        interval,
        stats: st.take(),
        last: true,
    });
    Ok(())
}

fn interval_index(shared: &Shared, now: Instant) -> u64 {
    let nanos = shared.cfg.interval.as_nanos().max(1);
    (now.saturating_duration_since(shared.start).as_nanos() / nanos) as u64
}

/// Ships this shard's measurements once per interval.
async fn ticker(ctx: Rc<Ctx>) {
    let interval = ctx.shared.cfg.interval;
    let mut k: u32 = 1;
    loop {
        tokio::time::sleep_until((ctx.shared.start + interval * k).into()).await;
        let stats = ctx.env.stats.borrow_mut().take();
        let _ = ctx.shared.tx.send(Delta {
            shard: ctx.plan.index,
            interval: u64::from(k - 1),
            stats,
            last: false,
        });
        k += 1;
    }
}

/// Open loop: puts intended send times on the queue at `rate` per second,
/// whatever the connections manage; a send that cannot start on time stays
/// queued (and is counted late or, at the end, not started).
async fn scheduler(ctx: Rc<Ctx>, rate: f64) {
    let budget = ctx.plan.messages.unwrap_or(u64::MAX);
    // Shards are phase-shifted so their sends interleave.
    let phase = Duration::from_secs_f64(ctx.plan.index as f64 / (rate * ctx.plan.shards as f64));
    let origin = ctx.shared.start + phase;
    let at = |k: u64| origin + Duration::from_secs_f64(k as f64 / rate);
    let mut k = 0u64;
    'outer: while k < budget && !ctx.stop.get() {
        let now = Instant::now();
        // Enqueue everything due (timer granularity is ~1 ms, rates can be
        // far higher).
        let mut due = 0;
        while k < budget && at(k) <= now {
            if ctx.shared.deadline.is_some_and(|d| at(k) >= d) {
                break 'outer;
            }
            ctx.queue.borrow_mut().push_back(at(k));
            k += 1;
            due += 1;
        }
        if due > 0 {
            ctx.env.stats.borrow_mut().counters.scheduled += due;
            for _ in 0..due.min(u64::from(ctx.plan.workers)) {
                ctx.wake.notify_one();
            }
        }
        if k >= budget || ctx.shared.deadline.is_some_and(|d| at(k) >= d) {
            break;
        }
        tokio::time::sleep_until(at(k).into()).await;
    }
    ctx.sched_done.set(true);
    ctx.wake.notify_waiters();
}

/// One connection slot: takes messages, (re)opens sessions as needed.
async fn worker(ctx: Rc<Ctx>) {
    let env = &ctx.env;
    let cfg = &env.cfg;
    let mut conn: Option<Conn> = None;
    let mut scratch = Scratch::new(cfg.rcpts.max);
    let mut backoff = Duration::ZERO;
    while let Some((intended, seq)) = ctx.next_job().await {
        let started = Instant::now();
        ctx.in_flight.set(ctx.in_flight.get() + 1);
        {
            let mut st = env.stats.borrow_mut();
            st.counters.attempted += 1;
            if ctx.open_loop && started.saturating_duration_since(intended) > cfg.late_after {
                st.counters.late += 1;
            }
        }
        let mut setup_failed = false;
        if conn.is_none() {
            match Conn::open(env).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::ZERO;
                }
                Err(o) => {
                    finish(env, o, intended, started);
                    setup_failed = matches!(o, Outcome::Failed(_));
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let o = c.transaction(env, &mut scratch, seq).await;
            finish(env, o, intended, started);
            if c.broken || (cfg.per_conn > 0 && c.txns >= cfg.per_conn) {
                if let Some(c) = conn.take() {
                    c.quit(env).await;
                }
            }
        }
        ctx.in_flight.set(ctx.in_flight.get() - 1);
        if setup_failed {
            // Don't spin on a refusing target; each attempt is still counted.
            backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = ctx.wait_stopped() => {}
            }
        }
    }
    if let Some(c) = conn.take() {
        c.quit(env).await;
    }
}

fn finish(env: &Env, o: Outcome, intended: Instant, started: Instant) {
    let end = Instant::now();
    let mut st = env.stats.borrow_mut();
    let c = &mut st.counters;
    match o {
        Outcome::Accepted => c.accepted += 1,
        Outcome::Deferred => c.deferred += 1,
        Outcome::Rejected => c.rejected += 1,
        Outcome::Failed(_) => {
            c.failed += 1;
            return;
        }
    }
    st.time(
        Stage::Service,
        end.saturating_duration_since(started).as_micros() as u64,
    );
    st.time(
        Stage::Latency,
        end.saturating_duration_since(intended).as_micros() as u64,
    );
}
