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
use crate::policy::fate::Fate;
use crate::policy::feedback::Slot;
use crate::policy::runtime::{settle, Final, Msg, Resilience, RetryQueue, Settled, Tally};
use crate::policy::Permit;
use crate::rng::Rng;
use crate::session::{Conn, Env, Job, JobSource, Outcome, Scratch};
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
    /// The run's policy state (retries, breaker, feedback, budget).
    pub res: Option<Arc<Resilience>>,
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
                    tally: None,
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
    /// With a policy: messages waiting for a retry, and final states.
    retries: RefCell<RetryQueue>,
    tally: RefCell<Tally>,
    /// The breaker holds traffic back until then (since the run start).
    hold: Cell<Option<Duration>>,
}

/// A job picked by [`Ctx::try_job`].
struct Pick {
    intended: Instant,
    seq: u64,
    msg: Option<Msg>,
    probe: bool,
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

    /// The load stage an intended start falls in (0 without stages).
    fn stage_of(&self, t: Instant) -> usize {
        match &self.env.cfg.stages {
            Some(st) => st.index_at(t.saturating_duration_since(self.shared.start)),
            None => 0,
        }
    }

    /// Closed loop with concurrency stages: whether this shard's worker
    /// `slot` is one of the connections the current stage asks for.
    fn slot_active(&self, slot: u32) -> bool {
        match self.env.cfg.concurrency_stages() {
            Some(st) => st.slot_active(self.global_slot(slot), self.shared.start.elapsed()),
            None => true,
        }
    }

    fn global_slot(&self, slot: u32) -> u32 {
        self.plan.index as u32 + slot * self.plan.shards as u32
    }

    /// Whether a new (first-attempt) message could start for `slot` now.
    fn new_available(&self, slot: u32) -> bool {
        if self.open_loop {
            !self.queue.borrow().is_empty()
        } else {
            self.remaining.get() > 0 && self.slot_active(slot)
        }
    }

    /// Takes a new message off the budget or the schedule.
    fn take_new(&self, slot: u32) -> Option<(Instant, u64)> {
        if !self.open_loop {
            let left = self.remaining.get();
            if left == 0 || !self.slot_active(slot) {
                return None;
            }
            self.remaining.set(left - 1);
            return Some((Instant::now(), self.next_seq()));
        }
        let t = self.queue.borrow_mut().pop_front()?;
        Some((t, self.next_seq()))
    }

    /// The next message to send without waiting: a due retry first, then a
    /// new message; with a breaker, only when it lets traffic through.
    fn try_job(&self, slot: u32) -> Option<Pick> {
        if self.stop.get() || self.past_deadline() {
            return None;
        }
        let Some(res) = &self.shared.res else {
            let (intended, seq) = self.take_new(slot)?;
            return Some(Pick {
                intended,
                seq,
                msg: None,
                probe: false,
            });
        };
        loop {
            let now = res.now();
            let retry = self.retries.borrow().next_due().is_some_and(|d| d <= now);
            if !retry && !self.new_available(slot) {
                return None;
            }
            let probe = match res.permit(now) {
                Permit::Allowed => false,
                Permit::Probe => true,
                Permit::Denied(until) => {
                    self.hold.set(Some(until));
                    return None;
                }
            };
            self.hold.set(None);
            if retry {
                let Some(m) = self.retries.borrow_mut().pop_due(now) else {
                    continue;
                };
                if res.budget.as_ref().is_some_and(|b| !b.try_retry()) {
                    if probe {
                        res.probe_abandoned();
                    }
                    self.tally.borrow_mut().finish(&m, Final::GaveUpBudget);
                    self.wake.notify_waiters();
                    continue;
                }
                self.tally.borrow_mut().retries += 1;
                return Some(Pick {
                    intended: Instant::now(),
                    seq: m.seq,
                    msg: Some(m),
                    probe,
                });
            }
            let Some((intended, seq)) = self.take_new(slot) else {
                if probe {
                    res.probe_abandoned();
                }
                return None;
            };
            if let Some(b) = &res.budget {
                b.first_attempt();
            }
            self.tally.borrow_mut().offered += 1;
            let cfg = &self.env.cfg;
            // The same first draw as the session's envelope.
            let n = Rng::for_item(cfg.seed, seq)
                .range(u64::from(cfg.rcpts.min), u64::from(cfg.rcpts.max));
            return Some(Pick {
                intended,
                seq,
                msg: Some(Msg::new(seq, n as u32, now)),
                probe,
            });
        }
    }

    /// With a policy, whether everything is settled: no new message left,
    /// no retry waiting, nothing in flight that could defer.
    fn settled(&self) -> bool {
        let no_new = if self.open_loop {
            self.sched_done.get() && self.queue.borrow().is_empty()
        } else {
            self.remaining.get() == 0
        };
        no_new && self.retries.borrow().is_empty() && self.in_flight.get() == 0
    }

    /// The next message to send, waiting for the open-loop schedule, and
    /// with a policy for retries to come due and the breaker to let go.
    async fn next_job(&self, slot: u32) -> Option<Pick> {
        let policy = self.shared.res.is_some();
        loop {
            if let Some(j) = self.try_job(slot) {
                return Some(j);
            }
            if self.stop.get() || self.past_deadline() {
                return None;
            }
            if !policy && (!self.open_loop || self.sched_done.get()) {
                return None;
            }
            if policy && self.settled() {
                return None;
            }
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stop.get() || (!self.queue.borrow().is_empty()) {
                continue;
            }
            if !policy && self.sched_done.get() {
                continue;
            }
            // Wake at the earliest retry or the end of a breaker hold.
            let due = [self.retries.borrow().next_due(), self.hold.get()]
                .into_iter()
                .flatten()
                .min();
            match due {
                Some(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until((self.shared.start + d).into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Whether no job will come for `slot` now (so QUIT may ride along).
    fn exhausted(&self, slot: u32) -> bool {
        self.stop.get()
            || self.past_deadline()
            || if self.open_loop {
                self.sched_done.get() && self.queue.borrow().is_empty()
            } else {
                self.remaining.get() == 0 || !self.slot_active(slot)
            }
    }

    /// Counts a message as started.
    fn begin(&self, pick: Pick) -> Job {
        let Pick {
            intended,
            seq,
            msg,
            probe,
        } = pick;
        let started = Instant::now();
        let stage = self.stage_of(intended);
        self.in_flight.set(self.in_flight.get() + 1);
        let mut st = self.env.stats.borrow_mut();
        st.counters.attempted += 1;
        if self.open_loop && started.saturating_duration_since(intended) > self.env.cfg.late_after {
            st.counters.late += 1;
        }
        if self.env.cfg.stages.is_some() {
            st.load_stage(stage).attempted += 1;
        }
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
    fn end(&self, job: &Job, o: Outcome, fate: &Fate) {
        self.in_flight.set(self.in_flight.get() - 1);
        if let (Some(res), Some(mut m)) = (&self.shared.res, job.msg) {
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
        let mut st = self.env.stats.borrow_mut();
        if self.env.cfg.stages.is_some() {
            let t = st.load_stage(job.stage);
            match o {
                Outcome::Accepted => t.accepted += 1,
                Outcome::Deferred => t.deferred += 1,
                Outcome::Rejected => t.rejected += 1,
                Outcome::Failed(_) => t.failed += 1,
            }
        }
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
            end.saturating_duration_since(job.started).as_micros() as u64,
        );
        st.time(
            Stage::Latency,
            end.saturating_duration_since(job.intended).as_micros() as u64,
        );
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

    /// Concurrency stages: closes the worker's connection while its slot
    /// is not wanted and waits until it is. `false`: the run is over for it.
    async fn wait_for_slot(&self, slot: u32, conn: &mut Option<Conn>) -> bool {
        let Some(st) = self.env.cfg.concurrency_stages() else {
            return true;
        };
        let g = self.global_slot(slot);
        loop {
            if self.stop.get() || self.past_deadline() {
                return false;
            }
            let now = self.shared.start.elapsed();
            if st.slot_active(g, now) {
                return true;
            }
            if let Some(c) = conn.take() {
                c.quit(&self.env).await;
            }
            let Some(at) = st.slot_next_active(g, now) else {
                return false;
            };
            tokio::select! {
                _ = tokio::time::sleep_until((self.shared.start + at).into()) => {}
                _ = self.wait_stopped() => {}
            }
        }
    }
}

/// One worker's view of the shard's jobs, handed to a connection so it can
/// pipeline several.
struct Source<'a> {
    ctx: &'a Ctx,
    slot: u32,
}

impl JobSource for Source<'_> {
    fn try_next(&self) -> Option<Job> {
        let p = self.ctx.try_job(self.slot)?;
        Some(self.ctx.begin(p))
    }

    fn exhausted(&self) -> bool {
        self.ctx.exhausted(self.slot)
    }

    fn finish(&self, job: &Job, o: Outcome, fate: &Fate) {
        self.ctx.end(job, o, fate);
    }
}

async fn run(plan: Plan, shared: Shared) -> Result<(), BlastError> {
    crate::fault::maybe_panic_shard(plan.index);
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
        open_loop: cfg.open_loop(),
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
        retries: RefCell::new(RetryQueue::default()),
        tally: RefCell::new(Tally::default()),
        hold: Cell::new(None),
    });

    let watcher = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            ctx.shared.stop.wait().await;
            ctx.set_stop();
        })
    };
    let ticker = tokio::task::spawn_local(ticker(ctx.clone()));
    let scheduler = cfg
        .open_loop()
        .then(|| tokio::task::spawn_local(scheduler(ctx.clone())));
    let mut workers: Vec<_> = (0..plan.workers)
        .map(|slot| tokio::task::spawn_local(worker(ctx.clone(), slot)))
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
    if cfg.stages.is_some() {
        for &t in ctx.queue.borrow().iter() {
            st.load_stage(ctx.stage_of(t)).not_started += 1;
        }
    }
    let tally = shared.res.as_ref().map(|_| {
        let mut t = ctx.tally.take();
        // Retries the run did not get to, and messages cut off in flight.
        for m in ctx.retries.borrow_mut().drain() {
            t.finish(&m, Final::Pending);
        }
        t.messages[4] += aborted;
        t
    });
    let interval = interval_index(&shared, Instant::now());
    let _ = shared.tx.send(Delta {
        shard: plan.index,
        interval,
        stats: st.take(),
        last: true,
        tally,
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
            tally: None,
        });
        k += 1;
    }
}

/// Open loop: puts intended send times on the queue as the schedule says
/// (a fixed rate, or rate stages), whatever the connections manage; a send
/// that cannot start on time stays queued (and is counted late or, at the
/// end, not started).
///
/// Send `j` over all shards is due at `schedule(j)`; this shard takes
/// `j = index, index + shards, …`, so shards interleave exactly.
async fn scheduler(ctx: Rc<Ctx>) {
    let cfg = ctx.env.cfg.clone();
    let budget = ctx.plan.messages.unwrap_or(u64::MAX);
    let (index, shards) = (ctx.plan.index as u64, ctx.plan.shards as u64);
    let at = |k: u64| -> Option<Instant> {
        let j = index + k * shards;
        let off = match (&cfg.stages, cfg.rate) {
            (Some(st), _) => st.send_time(j)?,
            (None, Some(rate)) => Duration::from_secs_f64(j as f64 / rate),
            (None, None) => return None,
        };
        let t = ctx.shared.start + off;
        match ctx.shared.deadline {
            Some(d) if t >= d => None,
            _ => Some(t),
        }
    };
    let mut k = 0u64;
    let mut next = if budget > 0 { at(0) } else { None };
    while let Some(due_at) = next {
        if ctx.stop.get() {
            break;
        }
        let now = Instant::now();
        if due_at > now {
            tokio::time::sleep_until(due_at.into()).await;
            continue;
        }
        // Enqueue everything due (timer granularity is ~1 ms, rates can be
        // far higher).
        let mut due = 0;
        let mut cur = Some(due_at);
        while let Some(t) = cur.filter(|t| *t <= now) {
            ctx.queue.borrow_mut().push_back(t);
            if cfg.stages.is_some() {
                ctx.env
                    .stats
                    .borrow_mut()
                    .load_stage(ctx.stage_of(t))
                    .scheduled += 1;
            }
            k += 1;
            due += 1;
            cur = if k < budget { at(k) } else { None };
        }
        ctx.env.stats.borrow_mut().counters.scheduled += due;
        for _ in 0..due.min(u64::from(ctx.plan.workers)) {
            ctx.wake.notify_one();
        }
        next = cur;
    }
    ctx.sched_done.set(true);
    ctx.wake.notify_waiters();
}

/// One connection slot: takes messages, (re)opens sessions as needed, and
/// lets the connection pipeline more messages when it can. With
/// concurrency feedback, a connection needs a permit from the run-wide
/// limit (one atomic read when the slot opens) and closes when the limit
/// fell under the connections open.
async fn worker(ctx: Rc<Ctx>, slot: u32) {
    let env = &ctx.env;
    let cfg = &env.cfg;
    let src = Source { ctx: &ctx, slot };
    let feedback = ctx.shared.res.as_ref().and_then(|r| r.feedback.as_ref());
    let mut conn: Option<Conn> = None;
    let mut permit = false;
    let mut scratch = Scratch::new(cfg.rcpts.max);
    let mut backoff = Duration::ZERO;
    let mut conn_failures = 0u32;
    loop {
        if !ctx.wait_for_slot(slot, &mut conn).await {
            break;
        }
        if conn.is_none() && permit {
            if let Some(f) = feedback {
                f.release();
            }
            permit = false;
        }
        if let (Some(f), None) = (feedback, &conn) {
            if !acquire(&ctx, f).await {
                break;
            }
            permit = true;
        }
        let Some(pick) = ctx.next_job(slot).await else {
            break;
        };
        let job = ctx.begin(pick);
        let mut setup_failed = false;
        if conn.is_none() {
            match Conn::open(env).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::ZERO;
                    conn_failures = 0;
                }
                Err(o) => {
                    ctx.end(&job, o, &Fate::connection_failure(job.mask));
                    // With a policy every setup failure (421 greeting
                    // included) is connection-level: back off.
                    setup_failed = matches!(o, Outcome::Failed(_)) || ctx.shared.res.is_some();
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            c.run(env, &mut scratch, job, &src).await;
            let shrink = feedback.is_some_and(|f| f.over_limit());
            if c.done() || shrink || (cfg.per_conn > 0 && c.txns >= cfg.per_conn) {
                if let Some(c) = conn.take() {
                    c.quit(env).await;
                }
            }
        }
        if setup_failed {
            conn_failures += 1;
            backoff = match &ctx.shared.res {
                // Concurrency feedback governs reconnects (the window, and
                // a suspension when the destination is dead), as in Postfix;
                // a short pause keeps a window of one from spinning.
                Some(r) if r.feedback.is_some() => Duration::from_millis(10),
                Some(r) => {
                    r.policy
                        .reconnect_delay(r.seed, ctx.global_slot(slot).into(), conn_failures)
                }
                // Don't spin on a refusing target; each attempt is still counted.
                None => (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = ctx.wait_stopped() => {}
            }
        }
    }
    if let Some(c) = conn.take() {
        c.quit(env).await;
    }
    if permit {
        if let Some(f) = feedback {
            f.release();
        }
    }
}

/// Waits for a connection permit; `false` when the run ends first.
async fn acquire(ctx: &Ctx, f: &crate::policy::feedback::Shared) -> bool {
    loop {
        if ctx.stop.get() || ctx.past_deadline() || (ctx.settled()) {
            return false;
        }
        let notified = f.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let start = ctx.shared.start;
        let wait = match f.acquire(start.elapsed()) {
            Slot::Granted => return true,
            Slot::Wait(w) => w,
        };
        // Releases wake us; a suspension ends by the clock; retries and the
        // end of the run by the shard's own wake-ups.
        let until = wait.map_or(Duration::from_millis(50), |t| {
            t.saturating_sub(start.elapsed())
        });
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(until.min(Duration::from_millis(50))) => {}
            _ = ctx.wait_stopped() => {}
        }
    }
}
