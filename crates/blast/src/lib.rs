//! `mailstorm-blast`: a sharded per-core SMTP/LMTP load generator with
//! per-stage HDR latency histograms and reply-code accounting.
//!
//! Each shard is a pinned thread with its own current-thread tokio runtime
//! and its own connections; measurements stay shard-local and are shipped
//! to the main thread over a channel once per interval, so the hot path
//! takes no lock and touches no shared atomic.
//!
//! Load models: closed loop (`concurrency` connections sending back to
//! back) and open loop (`rate` messages per second on a fixed schedule,
//! latency measured from the intended start: coordinated omission
//! corrected). Both are bounded by a message count or a duration.
#![deny(missing_docs)]

pub mod auth;
pub mod capacity;
pub mod cli;
mod collect;
mod compare;
pub mod config;
#[doc(hidden)]
pub mod fault;
pub mod ledger;
pub mod live;
pub mod measurements;
pub mod merge;
pub mod message;
pub mod net;
pub mod policy;
pub mod report;
pub mod rng;
pub mod scenario;
mod session;
mod shard;
pub mod shard_split;
pub mod stage_report;
pub mod stages;
pub mod start_at;
pub mod stats;
pub mod target;
pub mod threshold;
pub mod timeouts;
pub mod tls;
pub mod verdict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::auth::Credentials;
use crate::config::Config;
use crate::stats::{new_histogram, Counters, Stage, Stats};

/// Errors before or around a run.
#[derive(Debug, thiserror::Error)]
pub enum BlastError {
    /// Bad settings (exit code 2).
    #[error("{0}")]
    Config(String),
    /// The target cannot be reached (exit code 3).
    #[error("target unreachable: {0}")]
    Unreachable(String),
    /// Anything else at run time.
    #[error("{0}")]
    Runtime(String),
    /// A bug: a shard panicked or broke an invariant (exit code 4). The
    /// measurements gathered until then are still reported.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Asks a run to stop: no new messages, in-flight ones get the grace.
/// Safe to trigger from any thread (e.g. a SIGINT handler thread).
#[derive(Debug, Default)]
pub struct StopSignal {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// A new, untriggered signal.
    pub fn new() -> Arc<StopSignal> {
        Arc::new(StopSignal::default())
    }

    /// Triggers the stop.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether [`StopSignal::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            n.await;
        }
    }
}

/// One row of the timeline: what happened in one interval.
#[derive(Debug, Clone)]
pub struct Row {
    /// Counters of the interval.
    pub counters: Counters,
    /// 4xx replies at any stage.
    pub replies_4xx: u64,
    /// 5xx replies at any stage.
    pub replies_5xx: u64,
    /// Transport errors.
    pub errors: u64,
    /// Of `errors`: messages cut off at the end of the grace period (the
    /// blaster's doing, not the target's).
    pub aborted: u64,
    /// End-to-end (coordinated-omission corrected) latency, µs.
    pub latency: Histogram<u64>,
    /// Connections open at the interval's end: opened minus ended through
    /// this interval, as known when the row closed (0 after every
    /// connection closed). `None` only in rows read from a report that
    /// did not record it.
    pub open_connections: Option<u64>,
    /// Replies by code at any stage (at most the few distinct codes a
    /// server sends).
    pub codes: BTreeMap<u16, u64>,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            counters: Counters::default(),
            replies_4xx: 0,
            replies_5xx: 0,
            errors: 0,
            aborted: 0,
            latency: new_histogram(),
            open_connections: None,
            codes: BTreeMap::new(),
        }
    }
}

impl Row {
    fn add(&mut self, s: &Stats) {
        self.counters.add(&s.counters);
        self.replies_4xx += s.replies_of_class(4);
        self.replies_5xx += s.replies_of_class(5);
        self.errors += s.transport_errors();
        self.aborted += s.transport[stats::Transport::Aborted as usize];
        let _ = self.latency.add(s.histogram(Stage::Latency));
        for (k, n) in &s.replies {
            *self.codes.entry(k.code).or_default() += n;
        }
    }
}

/// A live-progress snapshot, once per interval: every interval of the run,
/// in order, the last one included, each once every shard has reported it
/// (or a bounded wait for a silent shard has passed).
#[derive(Debug)]
pub struct Progress<'a> {
    /// Time since the start at the interval's end.
    pub elapsed: Duration,
    /// The interval length.
    pub interval: Duration,
    /// The interval just completed.
    pub row: &'a Row,
    /// Its full measurements (every stage, reply and fault).
    pub stats: &'a Stats,
    /// Everything through the end of this interval (nothing of a later
    /// one).
    pub totals: &'a Stats,
    /// With a policy: its run-wide state and the tally of finished
    /// messages so far (retries, breaker), for live outputs.
    pub resilience: Option<(&'a policy::runtime::Resilience, &'a policy::runtime::Tally)>,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// Merged measurements.
    pub totals: Stats,
    /// One row per interval.
    pub rows: Vec<Row>,
    /// Start to the last shard's end.
    pub elapsed: Duration,
    /// The effective configuration (threads filled in).
    pub config: Config,
    /// `host:port` as given, or the embedded sink's address.
    pub target: String,
    /// The run was stopped early by [`StopSignal`].
    pub interrupted: bool,
    /// With a policy: final states, attempts, breaker and concurrency.
    pub resilience: Option<policy::runtime::Summary>,
    /// A shard failed (a panic or [`BlastError::Internal`]): what it said.
    /// The measurements above are what the run had gathered until then.
    pub internal_error: Option<String>,
    /// The ledger join (`--ledger`, or the embedded sink), once done.
    pub ledger: Option<ledger::Joined>,
    /// `mx:DOMAIN` or relay targets: DNS counters and per-relay figures.
    pub routing: Option<target::Routing>,
    /// Wall-clock time of the start: interval `k` of the timeline covers
    /// `started_at + k·interval` (what `merge` aligns shards' timelines on).
    pub started_at: std::time::SystemTime,
}

impl RunResult {
    /// A result with no measurements, for when the run itself broke before
    /// it could hand any over (the report still records the settings and
    /// the error).
    pub fn empty(config: Config, target: String, elapsed: Duration, error: String) -> RunResult {
        RunResult {
            totals: Stats::default(),
            rows: Vec::new(),
            elapsed,
            config,
            target,
            interrupted: false,
            resilience: None,
            internal_error: Some(error),
            ledger: None,
            routing: None,
            started_at: std::time::SystemTime::now() - elapsed,
        }
    }
}

/// Where and how to blast.
pub struct RunParams {
    /// The settings.
    pub config: Config,
    /// The resolved target.
    pub addr: SocketAddr,
    /// Target as a string for reports.
    pub target: String,
    /// Host name for SNI and certificate checks.
    pub host: String,
    /// A certificate to trust (the embedded sink's), PEM.
    pub trusted_pem: Option<Vec<u8>>,
    /// Stop request.
    pub stop: Arc<StopSignal>,
    /// An `mx:DOMAIN` target's [`target::preflight`]: the run goes on with
    /// its DNS cache and counters (`None`: a fresh resolver cache).
    pub preflight: Option<target::Preflight>,
}

/// Fills in `threads` (CPU count, but no more shards than connections or
/// messages) and validates.
pub fn effective_config(cfg: &Config) -> Result<Config, BlastError> {
    cfg.validate()?;
    let mut c = cfg.clone();
    if let Some(t) = c
        .policy
        .as_ref()
        .and_then(|p| p.resolve(c.time_scale).ok())
        .and_then(|p| p.timeouts)
    {
        // The policy's per-stage timeouts (e.g. Postfix's) replace the run's.
        c.timeouts = t;
    }
    if let Some(st) = c.concurrency_stages() {
        // Connection slots: as many as the highest stage asks for.
        c.concurrency = (st.max_value() + 0.5).floor().max(1.0) as u32;
    }
    if let Some(s) = c.shard {
        prepare_shard(&mut c, s)?;
    }
    crate::ledger::pick_ids(&mut c);
    if c.threads == 0 {
        c.threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(config::MAX_THREADS);
    }
    // No more threads than this process's share of connections or messages.
    let own = |n: u64| c.shard.map_or(n, |s| s.share(n));
    c.threads = c
        .threads
        .min(own(u64::from(c.concurrency)).min(usize::MAX as u64) as usize)
        .min(own(c.messages.unwrap_or(u64::MAX)).min(usize::MAX as u64) as usize)
        .max(1);
    if c.stages.is_some() || (c.duration.is_none() && c.messages.is_none()) {
        c.duration = c.effective_duration();
    }
    Ok(c)
}

/// A sharded process: the run id names the whole run (required), the seed
/// and the trace's sequence space derive from it.
fn prepare_shard(c: &mut Config, s: shard_split::Shard) -> Result<(), BlastError> {
    let s = shard_split::Shard::new(s.index, s.count, "shard")?;
    let Some(run) = c.run_id.clone() else {
        return Err(BlastError::Config(format!(
            "--shard {s}: give --run-id, the same in every shard, so the parts can be merged"
        )));
    };
    shard_split::check_counts(s, u64::from(c.concurrency), c.messages)?;
    if c.seed == 0 {
        c.seed = shard_split::run_seed(&run);
    }
    if c.trace_source == 0 {
        c.trace_source = shard_split::trace_source(&run, s);
    }
    Ok(())
}

/// File descriptors a run with this config needs (connections, plus the
/// embedded sink's side when it runs in-process, plus slack).
pub fn fds_needed(cfg: &Config, embedded: bool) -> u64 {
    let conns = cfg.shard.map_or(u64::from(cfg.concurrency), |s| {
        s.share(cfg.concurrency.into())
    });
    conns * if embedded { 2 } else { 1 } + 64 + 8 * cfg.threads as u64
}

/// Runs the load; `on_progress` is called on the calling thread once per
/// interval.
pub fn run(
    params: &RunParams,
    mut on_progress: impl FnMut(&Progress<'_>),
) -> Result<RunResult, BlastError> {
    let cfg = effective_config(&params.config)?;
    let threads = cfg.threads;
    let tls = tls::client_config(&cfg, params.trusted_pem.as_deref())?;
    let server_name = match tls {
        Some(_) => Some(tls::server_name(&cfg, &params.host)?),
        None => None,
    };
    let creds = cfg
        .auth
        .as_deref()
        .map(|a| Credentials::new(a, cfg.auth_mech));
    let cpus = if cfg.cpus.is_empty() {
        net::allowed_cpus()
    } else {
        cfg.cpus.clone()
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let start = Instant::now();
    let started_at = std::time::SystemTime::now();
    let res = match &cfg.policy {
        Some(p) => {
            let mut policy = p
                .resolve(cfg.time_scale)
                .map_err(|e| BlastError::Config(e.to_string()))?;
            if let Some(c) = policy.concurrency.as_mut() {
                // --concurrency is the number of connection slots: the
                // feedback window cannot usefully exceed it.
                c.limit = c.limit.min(cfg.concurrency);
                c.initial = c.initial.min(c.limit);
            }
            Some(Arc::new(policy::runtime::Resilience::new(
                policy, cfg.seed, start,
            )))
        }
        None => None,
    };
    let targets = target::Targets::from_config(&cfg, params.preflight.as_ref())?;
    let shared = shard::RunContext {
        targets: targets.clone(),
        res: res.clone(),
        cfg: Arc::new(cfg.clone()),
        addr: params.addr,
        tls,
        server_name,
        creds,
        start,
        deadline: cfg.duration.map(|d| start + d),
        stop: params.stop.clone(),
        tx,
    };
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        // Numbered within the whole run when sharded across processes.
        let slice = shard_split::thread_slice(
            cfg.shard,
            threads,
            i,
            u64::from(cfg.concurrency),
            cfg.messages,
        );
        let plan = shard::ShardLoad {
            slot: i,
            index: slice.index as usize,
            shards: slice.stride as usize,
            cpu: (cfg.pin && !cpus.is_empty()).then(|| cpus[i % cpus.len()]),
            workers: slice.workers as u32,
            messages: slice.messages,
        };
        let h = shard::spawn(plan, shared.clone())
            .map_err(|e| BlastError::Runtime(format!("cannot start shard thread: {e}")))?;
        handles.push(h);
    }
    drop(shared);

    let mut tally = policy::runtime::Tally::default();
    let mut rows = collect::Collector::new(cfg.interval, threads);
    let mut report = |c: collect::Closed<'_>, tally: &policy::runtime::Tally| {
        on_progress(&Progress {
            elapsed: cfg.interval * (c.index as u32 + 1),
            interval: cfg.interval,
            row: c.row,
            stats: c.stats,
            totals: c.totals,
            resilience: res.as_deref().map(|r| (r, tally)),
        })
    };
    while rows.live() > 0 {
        let first = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(d) => Some(d),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        for d in first.into_iter().chain(rx.try_iter()) {
            rows.receive(&d);
            if let Some(t) = &d.tally {
                tally.merge(t);
            }
        }
        if rows.live() == 0 {
            break;
        }
        let now = start.elapsed();
        while let Some(c) = rows.close_next(Some(now)) {
            report(c, &tally);
        }
    }
    // The shards ended: the rows left, the run's last interval included.
    while let Some(c) = rows.close_next(None) {
        report(c, &tally);
    }
    let elapsed = start.elapsed();
    let (internal_error, other_error) = shard_failures(handles.into_iter().map(|h| h.join()));
    if let Some(e) = other_error {
        return Err(e);
    }
    let (totals, rows) = rows.finish();
    Ok(RunResult {
        totals,
        rows,
        elapsed,
        config: cfg,
        target: params.target.clone(),
        interrupted: params.stop.is_triggered(),
        resilience: res.map(|r| r.summary(tally)),
        internal_error,
        ledger: None,
        routing: targets.map(|t| t.routing()),
        started_at,
    })
}

/// Sorts what the shard threads ended with: panics and
/// [`BlastError::Internal`] become the run's internal error (the run keeps
/// what it measured), any other error ends the run as before.
fn shard_failures(
    joined: impl Iterator<Item = std::thread::Result<Result<(), BlastError>>>,
) -> (Option<String>, Option<BlastError>) {
    let mut internal: Vec<String> = Vec::new();
    let mut other = None;
    for (i, j) in joined.enumerate() {
        match j {
            Ok(Ok(())) => {}
            Ok(Err(BlastError::Internal(e))) => internal.push(format!("shard {i}: {e}")),
            Ok(Err(e)) => {
                other.get_or_insert(e);
            }
            Err(payload) => internal.push(format!("shard {i} panicked: {}", panic_text(&*payload))),
        }
    }
    let internal = (!internal.is_empty()).then(|| internal.join("; "));
    // A bug outranks a configuration error seen by another shard.
    match internal {
        Some(e) => (Some(e), None),
        None => (None, other),
    }
}

/// The message of a panic payload (`panic!("...")` gives a `&str` or a
/// `String`).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_panic_is_an_internal_error_not_a_lost_run() {
        let panicked = std::thread::spawn(|| -> Result<(), BlastError> { panic!("boom") }).join();
        let joined = vec![
            Ok(Ok(())),
            panicked,
            Ok(Err(BlastError::Internal("bad state".into()))),
        ];
        let (internal, other) = shard_failures(joined.into_iter());
        assert_eq!(
            internal.as_deref(),
            Some("shard 1 panicked: boom; shard 2: bad state")
        );
        assert!(other.is_none());
        let (internal, other) =
            shard_failures(vec![Ok(Err(BlastError::Config("x".into())))].into_iter());
        assert!(internal.is_none());
        assert!(matches!(other, Some(BlastError::Config(_))));
    }
}
