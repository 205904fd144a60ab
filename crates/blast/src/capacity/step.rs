//! One capacity step: the engine at one open-loop rate for a warm-up plus a
//! measurement window, with the abort checks watched every interval.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::procstat::{CpuMeter, CpuUse};
use super::watch::TargetWatch;
use super::Options;
use crate::config::Config;
use crate::stats::{Stage, Stats};
use crate::threshold::{self, Outcome};
use crate::{BlastError, RunParams, StopSignal};

/// Where the load goes (resolved once for the whole search).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The resolved target.
    pub addr: SocketAddr,
    /// Target as a string for reports.
    pub target: String,
    /// Host name for SNI and certificate checks.
    pub host: String,
    /// A certificate to trust (the embedded sink's), PEM.
    pub trusted_pem: Option<Vec<u8>>,
}

/// How the search came to run a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Geometric steps up from `--start-rate`.
    Ladder,
    /// Bisection between the last good and the first bad step.
    Bisect,
}

/// One interval of a step, for the timeline.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tick {
    /// Seconds since the search started, at the interval's end.
    pub t_s: f64,
    /// The step's offered rate, messages/s.
    pub rate: f64,
    /// Sends that came due in the interval.
    pub offered: u64,
    /// Messages started.
    pub attempted: u64,
    /// Accepted.
    pub accepted: u64,
    /// Deferred (4xx).
    pub deferred: u64,
    /// Rejected (5xx).
    pub rejected: u64,
    /// Transport failures.
    pub failed: u64,
    /// Started late.
    pub late: u64,
    /// Never started.
    pub not_started: u64,
    /// Connections open at the interval's end.
    pub open_connections: u64,
    /// Median latency of the interval, µs (0 when nothing ended).
    pub p50_us: u64,
    /// 99th percentile latency of the interval, µs.
    pub p99_us: u64,
    /// The target's CPU over the interval, percent of one core
    /// (`--target-pid`, `--target-metrics`; from the second sample on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_cpu_pct: Option<f64>,
    /// The target's resident memory, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rss_bytes: Option<u64>,
}

/// Who kept a step (or the search) from going higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The target broke the SLA or answered less than was offered.
    Target,
    /// The blaster could not offer the load (connections, CPU).
    Generator,
    /// Every step passed up to `--max-rate`.
    MaxRate,
}

impl Limit {
    /// `target`, `generator`, `max_rate`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Target => "target",
            Limit::Generator => "generator",
            Limit::MaxRate => "max_rate",
        }
    }
}

/// What one step measured and how it was judged.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based position in the search.
    pub index: usize,
    /// Ladder or bisection.
    pub phase: Phase,
    /// The offered open-loop rate, messages/s.
    pub rate: f64,
    /// Connection slots the step had (Little's law, up to `-c`).
    pub connections: u32,
    /// Seconds since the search started, at the step's start.
    pub started_s: f64,
    /// The measurement window (after the warm-up).
    pub measured: Stats,
    /// Its length, seconds.
    pub window_s: f64,
    /// Accepted messages per second in the window.
    pub achieved: f64,
    /// The SLA checks on the window.
    pub sla: Vec<Outcome>,
    /// Whether the step passed (SLA, achieved >= 97% of offered, no abort).
    pub passed: bool,
    /// The abort check that stopped the step, with its measured value.
    pub aborted: Option<String>,
    /// Generator (and target) CPU over the step.
    pub cpu: CpuUse,
    /// The most connections open at once.
    pub peak_connections: u64,
    /// For a failed step: who limited it and why.
    pub limit: Option<(Limit, String)>,
    /// The step's intervals.
    pub ticks: Vec<Tick>,
}

impl Step {
    /// The share of the messages that ended in the window that were
    /// accepted (as the threshold language's `accept_rate`).
    pub fn accept_rate(&self) -> f64 {
        let c = &self.measured.counters;
        let ended = c.accepted + c.deferred + c.rejected + c.failed;
        if ended == 0 {
            0.0
        } else {
            c.accepted as f64 / ended as f64
        }
    }

    /// Sends of the window that did not start in it: the backlog's growth
    /// (sends that came due with every connection busy) or, when the run
    /// ended, those that never started. The engine counts the latter only
    /// at the end of a run, so the backlog is what a window can see.
    pub fn unstarted(&self) -> u64 {
        let c = &self.measured.counters;
        c.not_started.max(c.offered.saturating_sub(c.attempted))
    }

    /// Whether the generator kept up: (nearly) every send started in its
    /// window, and most on time. Not its CPU: a shard with slack spins
    /// the last microseconds before each send, so busy is not behind.
    pub fn generator_kept_up(&self) -> bool {
        self.unstarted_ratio() <= crate::verdict::MAX_NOT_OFFERED && !self.late_majority()
    }

    /// Whether more than half the sends that came due started later than
    /// `--late-after`: the generator did not keep time.
    pub fn late_majority(&self) -> bool {
        let c = &self.measured.counters;
        c.scheduled > 0 && c.late as f64 > 0.5 * c.scheduled as f64
    }

    /// [`Step::unstarted`] as a share of the sends that came due.
    pub fn unstarted_ratio(&self) -> f64 {
        let offered = self.measured.counters.offered;
        if offered == 0 {
            0.0
        } else {
            self.unstarted() as f64 / offered as f64
        }
    }

    /// A latency quantile of the end-to-end message latency, µs.
    pub fn latency(&self, q: f64) -> u64 {
        let h = self.measured.histogram(Stage::Latency);
        if h.is_empty() {
            0
        } else if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        }
    }
}

/// What the search asks of one step.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepPlan {
    pub index: usize,
    pub phase: Phase,
    pub rate: f64,
    pub connections: u32,
}

/// Runs one step; a user's stop (`stop`) ends it early like an abort does,
/// but is not counted as one.
pub(super) fn run_step(
    base: &Config,
    ep: &Endpoint,
    opts: &Options,
    plan: StepPlan,
    stop: &Arc<StopSignal>,
    t0: Instant,
) -> Result<Step, BlastError> {
    let mut cfg = base.clone();
    cfg.rate = Some(plan.rate);
    cfg.stages = None;
    cfg.messages = None;
    cfg.duration = Some(opts.warmup + opts.step_duration);
    cfg.concurrency = plan.connections;
    cfg.report = None;
    cfg.timeline = None;
    cfg.threshold = None;
    let step_stop = StopSignal::new();
    let params = RunParams {
        config: cfg,
        addr: ep.addr,
        target: ep.target.clone(),
        host: ep.host.clone(),
        trusted_pem: ep.trusted_pem.clone(),
        stop: step_stop.clone(),
        preflight: None,
    };
    let started_s = t0.elapsed().as_secs_f64();
    let meter = CpuMeter::start(opts.target.as_ref());
    let mut watch = TargetWatch::start(opts.target.as_ref(), base.interval);
    let nominal = opts.warmup + opts.step_duration;
    // The window is the intervals that start at or after the warm-up and
    // end within the step's schedule: both edges on interval boundaries,
    // so messages still in flight at the end (drained afterwards) are not
    // counted against a window that does not include the drain. Its
    // figures are the sum of those intervals' own measurements, each
    // handed over once every shard reported it.
    let mut window = Window::default();
    let mut held = vec![Duration::ZERO; opts.abort.len()];
    let mut aborted: Option<String> = None;
    let mut ticks = Vec::new();
    let mut peak = 0u64;
    let result = crate::run(&params, |p| {
        if stop.is_triggered() {
            step_stop.trigger();
        }
        let c = &p.row.counters;
        let h = &p.row.latency;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let open = p.row.open_connections.unwrap_or(0);
        peak = peak.max(open);
        let target = watch.tick();
        ticks.push(Tick {
            t_s: started_s + p.elapsed.as_secs_f64(),
            rate: plan.rate,
            offered: c.offered,
            attempted: c.attempted,
            accepted: c.accepted,
            deferred: c.deferred,
            rejected: c.rejected,
            failed: c.failed,
            late: c.late,
            not_started: c.not_started,
            open_connections: open,
            p50_us: q(0.5),
            p99_us: q(0.99),
            target_cpu_pct: target.cpu_pct.map(|v| (v * 10.0).round() / 10.0),
            target_rss_bytes: target.rss_bytes,
        });
        window.add(
            p.elapsed - p.interval,
            p.elapsed,
            p.stats,
            opts.warmup,
            nominal,
        );
        // After the schedule ends nothing is offered: an interval of
        // draining is no evidence of harm.
        if aborted.is_some() || p.stats.counters.offered == 0 {
            return;
        }
        let outs = threshold::evaluate_stats(&opts.abort, p.stats, p.interval.as_secs_f64());
        for ((o, check), h) in outs.iter().zip(&opts.abort).zip(held.iter_mut()) {
            // For an abort check, "holds" means harm.
            *h = if o.passed {
                *h + p.interval
            } else {
                Duration::ZERO
            };
            if *h >= check.window().unwrap_or(p.interval) && aborted.is_none() {
                aborted = Some(format!("{} (measured {})", check.text(), o.measured()));
                step_stop.trigger();
            }
        }
    })?;
    drop(watch);
    let cpu = meter.stop();
    if let Some(e) = result.internal_error {
        return Err(BlastError::Internal(e));
    }
    // No interval in the window (a step stopped during its warm-up): the
    // whole step as measured.
    let (measured, window_s) = window.take().unwrap_or_else(|| {
        let ran = (result.config.interval * result.rows.len() as u32).min(nominal);
        (result.totals.clone(), ran.as_secs_f64())
    });
    let window_s = window_s.max(1e-3);
    let achieved = measured.counters.accepted as f64 / window_s;
    let sla = threshold::evaluate_stats(&opts.sla, &measured, window_s);
    let achieved_enough = kept_up(
        measured.counters.accepted,
        plan.rate,
        window_s,
        opts.min_achieved,
    );
    let passed = aborted.is_none()
        && !stop.is_triggered()
        && sla.iter().all(|o| o.passed)
        && achieved_enough;
    Ok(Step {
        index: plan.index,
        phase: plan.phase,
        rate: plan.rate,
        connections: result.config.concurrency,
        started_s,
        measured,
        window_s,
        achieved,
        sla,
        passed,
        aborted,
        cpu,
        peak_connections: peak,
        limit: None,
        ticks,
    })
}

/// A step's measurement window, built from its intervals as they close.
#[derive(Default)]
struct Window {
    /// The window's measurements and its first interval's start.
    sum: Option<(Stats, Duration)>,
    /// The end of its last interval.
    end: Duration,
}

impl Window {
    /// Takes in the interval `from..to` (since the step's start) if it lies
    /// within `warmup..nominal`.
    fn add(
        &mut self,
        from: Duration,
        to: Duration,
        s: &Stats,
        warmup: Duration,
        nominal: Duration,
    ) {
        if from < warmup || to > nominal {
            return;
        }
        self.sum
            .get_or_insert_with(|| (Stats::default(), from))
            .0
            .merge(s);
        self.end = to;
    }

    /// The measurements and the length in seconds; `None` when no interval
    /// fell in the window.
    fn take(self) -> Option<(Stats, f64)> {
        let (s, from) = self.sum?;
        Some((s, self.end.saturating_sub(from).as_secs_f64()))
    }
}

/// Whether `accepted` completions in a window of `window_s` seconds keep up
/// with `rate`. Completions in a window at a steady rate are rate·window ± 1
/// by phase alone (at 20 msgs/s a 0.75 s window holds 14 or 15), so one
/// message of slack keeps a low-rate step from failing on counting rather
/// than on the target.
fn kept_up(accepted: u64, rate: f64, window_s: f64, min_achieved: f64) -> bool {
    (accepted + 1) as f64 >= min_achieved * rate * window_s
}

#[cfg(test)]
mod tests {
    use super::{kept_up, Window};
    use crate::stats::Stats;
    use std::time::Duration;

    #[test]
    fn the_window_is_every_interval_after_the_warmup_within_the_step() {
        // 1 s of warm-up and 2 s of window at 1 s: rows 1 and 2, the last
        // one included; the row after the schedule (draining) is not.
        let s = |n| {
            let mut st = Stats::default();
            st.counters.offered = n;
            st
        };
        let sec = Duration::from_secs;
        let mut w = Window::default();
        for (k, n) in [(0, 200), (1, 201), (2, 199), (3, 0)] {
            w.add(sec(k), sec(k + 1), &s(n), sec(1), sec(3));
        }
        let (m, len) = w.take().expect("a window");
        assert_eq!(len, 2.0);
        assert_eq!(m.counters.offered, 400);
        // Stopped during the warm-up: no window.
        let mut w = Window::default();
        w.add(sec(0), sec(1), &s(5), sec(2), sec(4));
        assert!(w.take().is_none());
    }

    #[test]
    fn one_message_of_phase_is_not_a_shortfall() {
        // 15 offered in the window, 14 completed: counting, not the target.
        assert!(kept_up(14, 20.0, 0.75, 0.97));
        // Two short at a low rate is a real shortfall.
        assert!(!kept_up(13, 20.0, 0.75, 0.97));
        // At a high rate one message is noise and 3% is still required.
        assert!(kept_up(9_700, 10_000.0, 1.0, 0.97));
        assert!(!kept_up(9_600, 10_000.0, 1.0, 0.97));
    }
}
