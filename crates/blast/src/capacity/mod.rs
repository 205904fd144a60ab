//! `mailstorm-blast capacity`: the highest open-loop rate a target sustains
//! within an SLA, found by geometric steps then bisection, with an
//! automatic abort so a real server is not pushed past harm, and with the
//! limit attributed to the target or to the generator.
//!
//! Each step is one engine run at a fixed rate: a warm-up (not counted),
//! then a measurement window; the step's figures are its cumulative totals
//! since the warm-up ended ([`crate::stats::Stats::since`]). Connections
//! follow Little's law (rate × observed service time, doubled for
//! headroom) up to `-c`; a step that could not start its sends with fewer
//! connections than `-c` is run again with more, so a "raise -c" verdict
//! only comes from a step that had them all.

pub mod args;
pub mod metrics;
pub mod output;
pub mod procstat;
mod step;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use step::{Endpoint, Limit, Phase, Step, Tick};

use crate::compare::Op;
use crate::config::Config;
use crate::stats::Stage;
use crate::threshold::{Check, Outcome, Unit};
use crate::{BlastError, StopSignal};

/// The default `--sla`: at least 95% accepted, bounded latency, no
/// permanent failures (the classic grading of SMTP stress tools).
pub const DEFAULT_SLA: &str = "accept_rate>=0.95,p99<800ms,5xx==0";
/// The default `--abort-if`: half the mail refused for 5 s in a row.
pub const DEFAULT_ABORT: &str = "accept_rate<0.5 for 5s";
/// A step passes only when it achieved this share of the offered rate.
pub const MIN_ACHIEVED: f64 = 0.97;
/// Generator CPU (share of its shard threads) from which a failing step
/// whose sends started late is blamed on the generator's CPU.
pub const CPU_SATURATED: f64 = 0.9;
/// Service time assumed for the first step's connection count, seconds.
const FIRST_SERVICE_S: f64 = 0.05;
/// Times a step starved of connections is run again with more.
const MAX_REGROWS: usize = 2;

/// How to search.
#[derive(Debug, Clone)]
pub struct Options {
    /// First step, messages/s.
    pub start_rate: f64,
    /// Highest step, messages/s.
    pub max_rate: f64,
    /// Bisection stops when (bad − good) / good is at most this.
    pub precision: f64,
    /// Geometric factor between ladder steps.
    pub factor: f64,
    /// Per-step warm-up, not counted.
    pub warmup: Duration,
    /// Per-step measurement window.
    pub step_duration: Duration,
    /// The SLA checks (`--sla`).
    pub sla: Vec<Check>,
    /// `--sla` as given.
    pub sla_text: String,
    /// The abort checks (`--abort-if`).
    pub abort: Vec<Check>,
    /// `--abort-if` as given.
    pub abort_text: String,
    /// Share of the offered rate a passing step must achieve.
    pub min_achieved: f64,
    /// Where the target's CPU and memory come from (`--target-pid`,
    /// `--target-metrics`), if anywhere.
    pub target: Option<TargetProbe>,
}

/// Where the target's CPU and memory are read.
#[derive(Debug, Clone)]
pub enum TargetProbe {
    /// A local process's `/proc` (`--target-pid`).
    Pid(u32),
    /// A Prometheus endpoint (`--target-metrics`).
    Metrics(metrics::Scraper),
}

impl TargetProbe {
    /// CPU seconds and memory now.
    pub fn sample(&self) -> Result<procstat::ProcSample, String> {
        match self {
            TargetProbe::Pid(p) => procstat::sample(*p),
            TargetProbe::Metrics(m) => m.sample(),
        }
    }
}

impl Options {
    /// Checks the options against each other and the run's settings.
    pub fn validate(&self, cfg: &Config) -> Result<(), BlastError> {
        let err = |m: String| Err(BlastError::Config(m));
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.start_rate) || !positive(self.max_rate) {
            return err("--start-rate and --max-rate must be positive numbers".into());
        }
        if self.start_rate > self.max_rate {
            return err(format!(
                "--start-rate {} is above --max-rate {}: nothing to search",
                self.start_rate, self.max_rate
            ));
        }
        if !(self.precision > 0.0 && self.precision < 1.0) {
            return err(format!(
                "--precision {}: must be between 0 and 1 (e.g. 0.05)",
                self.precision
            ));
        }
        if !(self.factor.is_finite() && self.factor > 1.0) {
            return err(format!(
                "--step-factor {}: must be above 1 (e.g. 2)",
                self.factor
            ));
        }
        if self.step_duration < cfg.interval {
            return err(format!(
                "--step-duration must be at least one --interval ({})",
                crate::config::format_duration(cfg.interval)
            ));
        }
        if let Some(t) = &self.target {
            t.sample().map_err(BlastError::Config)?;
        }
        Ok(())
    }

    /// The most steps the search can take: the ladder, then halving the
    /// interval down to the precision (each with up to [`MAX_REGROWS`]
    /// reruns). Bounds the run's length.
    pub fn max_steps(&self) -> usize {
        let ladder = (self.max_rate / self.start_rate).ln() / self.factor.ln();
        let bisect = ((self.factor - 1.0) / self.precision).log2();
        ladder.ceil().max(0.0) as usize + 1 + bisect.ceil().max(0.0) as usize + 1
    }

    /// The longest the search can take (every step at full length plus
    /// its grace), for `--help` and the tests' bounds.
    pub fn max_duration(&self, grace: Duration) -> Duration {
        (self.warmup + self.step_duration + grace) * (self.max_steps() * (1 + MAX_REGROWS)) as u32
    }
}

/// The search's result.
#[derive(Debug)]
pub struct Capacity {
    /// Every step in the order run.
    pub steps: Vec<Step>,
    /// The best passing step (the knee), if any passed.
    pub knee: Option<usize>,
    /// The lowest failing step, if any failed.
    pub first_bad: Option<usize>,
    /// Who limited the result, and how it is told.
    pub limited_by: Option<(Limit, String)>,
    /// Stopped by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// A step broke (a bug, or the engine could not start): the search
    /// ended there and the steps before it are kept.
    pub error: Option<BlastError>,
    /// Search length.
    pub elapsed: Duration,
}

impl Capacity {
    /// The knee's offered rate, messages/s.
    pub fn knee_rate(&self) -> Option<f64> {
        self.knee.map(|k| self.steps[k].rate)
    }

    /// The highest achieved rate of any step, messages/s.
    pub fn max_throughput(&self) -> f64 {
        self.steps.iter().map(|s| s.achieved).fold(0.0, f64::max)
    }

    /// The one-sentence answer: "sustains X msgs/s (Y per hour) at p99 Z
    /// ms; limited by …".
    pub fn verdict(&self) -> String {
        let limit = match &self.limited_by {
            Some((l, why)) => format!("limited by the {}: {why}", limit_noun(*l)),
            None => "the search was stopped before a limit was found".into(),
        };
        match self.knee {
            Some(k) => {
                let s = &self.steps[k];
                format!(
                    "sustains {} msgs/s ({} per hour) at p99 {}; {limit}",
                    group(s.rate),
                    group(s.rate * 3600.0),
                    Unit::Micros.format(s.latency(0.99) as f64)
                )
            }
            None => format!("no step passed the SLA; {limit}"),
        }
    }
}

fn limit_noun(l: Limit) -> &'static str {
    match l {
        Limit::Target => "target",
        Limit::Generator => "generator",
        Limit::MaxRate => "search range",
    }
}

/// `4100` → `4,100`; fractions rounded.
pub fn group(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Connection slots for `rate` by Little's law: rate × service time,
/// doubled for headroom, plus one per shard; within 1..=`cap`.
fn little(rate: f64, service_s: f64, threads: usize, cap: u32) -> u32 {
    let n = (rate * service_s * 2.0).ceil() + threads as f64;
    (n.min(f64::from(cap)) as u32).clamp(1, cap)
}

/// How a failed check reads in a verdict: `p99 rose above 800ms at 4,100
/// msgs/s (measured 1.2s)`.
fn broke(o: &Outcome, rate: f64) -> String {
    let at = format!("at {} msgs/s (measured {})", group(rate), o.measured());
    match crate::compare::split(&o.text) {
        Some((m, Op::Lt | Op::Le, v)) => format!("{m} rose above {v} {at}"),
        Some((m, Op::Gt | Op::Ge, v)) => format!("{m} fell below {v} {at}"),
        _ => format!("{} broke {at}", o.text),
    }
}

/// Who limited a failed step, and why, in words.
fn attribute(s: &Step, threads: usize, cap: u32) -> (Limit, String) {
    let c = &s.measured.counters;
    if let Some(a) = &s.aborted {
        return (
            Limit::Target,
            format!("auto-abort at {} msgs/s: {a}", group(s.rate)),
        );
    }
    let failed: Vec<&Outcome> = s.sla.iter().filter(|o| !o.passed).collect();
    // Refusals and errors are the target's answer whatever the generator did.
    if let Some(o) = failed.iter().find(|o| o.unit != Unit::Micros) {
        return (Limit::Target, broke(o, s.rate));
    }
    let starved = s.unstarted_ratio() > crate::verdict::MAX_NOT_OFFERED;
    // CPU alone is no evidence: an open-loop shard with slack spends the
    // last microseconds before each send spinning (see shard::clock), so
    // it reads busy while keeping time. Sends starting late are the sign
    // it could not keep up; its CPU then says why.
    let late = s.late_majority();
    if late && s.cpu.generator_pct >= CPU_SATURATED * 100.0 * threads as f64 {
        return (
            Limit::Generator,
            format!(
                "its CPU was saturated ({:.0}% over {threads} thread(s)) at {} msgs/s: \
                 raise --threads or run more blasters",
                s.cpu.generator_pct,
                group(s.rate)
            ),
        );
    }
    if starved {
        return (
            Limit::Generator,
            format!(
                "{} of {} sends could not start at {} msgs/s (all {} connections busy): raise -c \
                 (now {cap})",
                s.unstarted(),
                c.offered,
                group(s.rate),
                s.connections
            ),
        );
    }
    if let Some(o) = failed.first() {
        return (Limit::Target, broke(o, s.rate));
    }
    (
        Limit::Target,
        format!(
            "achieved only {} msgs/s at {} msgs/s offered",
            group(s.achieved),
            group(s.rate)
        ),
    )
}

/// Runs the search. `on_step` sees each step as it ends (progress lines).
/// An engine error ends the search and is kept in [`Capacity::error`].
pub fn search(
    base: &Config,
    ep: &Endpoint,
    opts: &Options,
    stop: &Arc<StopSignal>,
    mut on_step: impl FnMut(&Step),
) -> Capacity {
    let t0 = Instant::now();
    let threads = base.threads.max(1);
    let cap = base.concurrency;
    let mut steps: Vec<Step> = Vec::new();
    let mut service_s = FIRST_SERVICE_S;
    let mut good: Option<usize> = None;
    let mut bad: Option<usize> = None;
    let mut run = |rate: f64, phase: Phase, steps: &mut Vec<Step>, service_s: &mut f64| {
        let mut conns = little(rate, *service_s, threads, cap);
        let mut regrows = 0;
        loop {
            let plan = step::StepPlan {
                index: steps.len() + 1,
                phase,
                rate,
                connections: conns,
            };
            let mut s = step::run_step(base, ep, opts, plan, stop, t0)?;
            let svc = s.measured.histogram(Stage::Service);
            if !svc.is_empty() {
                *service_s = (svc.mean() / 1e6).max(*service_s * 0.5);
            }
            let starved = s.unstarted_ratio() > crate::verdict::MAX_NOT_OFFERED;
            if !s.passed
                && starved
                && s.aborted.is_none()
                && !stop.is_triggered()
                && conns < cap
                && regrows < MAX_REGROWS
            {
                regrows += 1;
                conns = little(rate, *service_s, threads, cap).max(conns.saturating_mul(2));
                conns = conns.min(cap);
                continue;
            }
            // A step cut short by the user is no evidence either way.
            if !s.passed && !stop.is_triggered() {
                s.limit = Some(attribute(&s, threads, cap));
            }
            on_step(&s);
            steps.push(s);
            return Ok::<usize, BlastError>(steps.len() - 1);
        }
    };
    let mut rate = opts.start_rate;
    let mut error = None;
    while !stop.is_triggered() {
        let i = match run(rate, Phase::Ladder, &mut steps, &mut service_s) {
            Ok(i) => i,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        if stop.is_triggered() {
            break;
        }
        if !steps[i].passed {
            bad = Some(i);
            break;
        }
        good = Some(i);
        if rate >= opts.max_rate {
            break;
        }
        rate = (rate * opts.factor).min(opts.max_rate);
    }
    while let (Some(g), Some(b), None) = (good, bad, &error) {
        let (lo, hi) = (steps[g].rate, steps[b].rate);
        if stop.is_triggered() || (hi - lo) / lo <= opts.precision {
            break;
        }
        let i = match run((lo + hi) / 2.0, Phase::Bisect, &mut steps, &mut service_s) {
            Ok(i) => i,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        if stop.is_triggered() {
            break;
        }
        if steps[i].passed {
            good = Some(i);
        } else {
            bad = Some(i);
        }
    }
    let limited_by = match (good, bad) {
        (_, Some(b)) => steps[b].limit.clone(),
        (Some(g), None) if !stop.is_triggered() && error.is_none() => Some((
            Limit::MaxRate,
            format!(
                "every step passed up to --max-rate {} msgs/s: raise it to look further",
                group(steps[g].rate)
            ),
        )),
        _ => None,
    };
    Capacity {
        steps,
        knee: good,
        first_bad: bad,
        limited_by,
        interrupted: stop.is_triggered(),
        error,
        elapsed: t0.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_grows_connections_within_the_cap() {
        assert_eq!(little(100.0, 0.05, 2, 50), 12);
        assert_eq!(little(10_000.0, 0.05, 2, 50), 50);
        assert_eq!(little(0.1, 0.0, 1, 50), 1);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(4100.0), "4,100");
        assert_eq!(group(5_760_000.0), "5,760,000");
        assert_eq!(group(999.6), "1,000");
        assert_eq!(group(12.0), "12");
    }

    #[test]
    fn steps_are_bounded() {
        let o = Options {
            start_rate: 100.0,
            max_rate: 100_000.0,
            precision: 0.05,
            factor: 2.0,
            warmup: Duration::from_secs(3),
            step_duration: Duration::from_secs(10),
            sla: Vec::new(),
            sla_text: String::new(),
            abort: Vec::new(),
            abort_text: String::new(),
            min_achieved: MIN_ACHIEVED,
            target: None,
        };
        // 10 ladder steps (100 → 102,400 capped), 5 halvings of 100%.
        assert_eq!(o.max_steps(), 11 + 6);
        let bad = Options {
            start_rate: 200.0,
            max_rate: 100.0,
            ..o
        };
        let e = bad.validate(&Config::default()).unwrap_err().to_string();
        assert!(e.contains("above --max-rate"), "{e}");
    }
}
