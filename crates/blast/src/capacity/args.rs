//! `mailstorm-blast capacity` flags: every run flag (target, message shape,
//! -c, --threads, TLS, …) plus the search's own.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::{Options, DEFAULT_ABORT, DEFAULT_SLA, MIN_ACHIEVED};
use crate::cli::Args;
use crate::config::{parse_duration, Config};
use crate::BlastError;

const AFTER_HELP: &str = "\
Finds the highest open-loop rate the target sustains within the SLA:
geometric steps from --start-rate (×--step-factor) until a step fails or
--max-rate passes, then bisection between the last good and the first bad
step until they are within --precision. Each step runs --warmup (not
counted) then --step-duration; connections follow Little's law (rate ×
observed service time × 2) up to -c. A step passes when its own figures
meet --sla and it achieved at least 97% of the offered rate (one message
of slack for where the window's edges fall).

--abort-if is checked every --interval on that interval's figures
(`for D`: held D in a row); a step that trips it stops at once, counts as
failed, and the search only goes lower from there.

Who limited the result: a failing step is blamed on the target when it
refused, erred or slowed beyond the SLA with the generator keeping up;
on the generator when sends never started with all -c connections busy
(raise -c) or when most sends started late with its CPU saturated (raise
--threads).
With the embedded sink (no --target) both run in this process.

Outputs: the table and verdict on stdout; --report (JSON, schema
mailstorm.capacity/1, see crates/blast/capacity.schema.json), --csv (one
row per step), --html (one self-contained page: verdict, throughput and
latency against load with the knee, replies and errors, timeline, steps).

Exit codes:
  0  search completed: a knee of the target was found, or every step
     passed up to --max-rate
  1  no step passed the SLA, or the result was limited by the generator
     (a lower bound, not the target's capacity)
  2  usage or configuration error (bad --sla/--abort-if, --start-rate above
     --max-rate, an output path that cannot be written, …)
  3  target unreachable
  4  internal error (a bug): outputs hold the steps measured so far
  5  interrupted by SIGINT or SIGTERM: steps so far written
  130  a second SIGINT/SIGTERM: exited at once

Examples:
  mailstorm-blast capacity --target 127.0.0.1:2525 -c 200 --html cap.html
  mailstorm-blast capacity --target 127.0.0.1:2525 --sla 'p99<200ms,5xx==0' \\
      --start-rate 500 --max-rate 20000 --report cap.json --csv steps.csv";

/// Find the highest rate a target sustains within an SLA, and report it.
#[derive(Debug, Parser)]
#[command(
    name = "mailstorm-blast capacity",
    bin_name = "mailstorm-blast capacity",
    after_help = AFTER_HELP
)]
pub struct CapacityArgs {
    /// First step, messages/s.
    #[arg(long, default_value_t = 100.0)]
    pub start_rate: f64,
    /// Highest step, messages/s.
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
    /// Bisection ends when the gap between the last good and the first bad
    /// step is at most this share of the good one.
    #[arg(long, default_value_t = 0.05)]
    pub precision: f64,
    /// Ratio between ladder steps.
    #[arg(long, default_value_t = 2.0)]
    pub step_factor: f64,
    /// Per-step warm-up, not counted.
    #[arg(long, default_value = "3s", value_parser = duration_arg)]
    pub warmup: Duration,
    /// Per-step measurement window.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub step_duration: Duration,
    /// What a step must meet (threshold language).
    #[arg(long, default_value = DEFAULT_SLA)]
    pub sla: String,
    /// When to stop a step at once (threshold language, `for D` windows).
    #[arg(long, default_value = DEFAULT_ABORT)]
    pub abort_if: String,
    /// Write one CSV row per step here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// A local target's pid: its CPU and RSS from /proc, sampled every
    /// --interval, per step and in the timeline.
    #[arg(long, conflicts_with = "target_metrics")]
    pub target_pid: Option<u32>,
    /// A Prometheus endpoint (http://, loopback unless --allow-remote) with
    /// the target's process_cpu_seconds_total and
    /// process_resident_memory_bytes (or node_exporter's CPU and memory),
    /// scraped every --interval (on a thread of its own) for each step and
    /// timeline row. Checked before the search.
    #[arg(long, value_name = "URL")]
    pub target_metrics: Option<String>,
    /// The run flags (target, -c, --threads, message shape, TLS, …).
    #[command(flatten)]
    pub run: Args,
}

/// Run flags the search sets itself: refused with a usage error, and
/// hidden from `capacity --help`.
const NOT_FOR_CAPACITY: &[&str] = &[
    "rate",
    "stages",
    "stages_mode",
    "duration",
    "messages",
    "threshold",
    "timeline",
    "scenario",
    "abort_on_fail",
    // The live view is a plain run's (refused in `to_parts`).
    "metrics",
    "dashboard",
    "linger_metrics",
];

/// Run flags a search does not use although they are no load setting:
/// refused in [`CapacityArgs::to_parts`] (never silently ignored), but
/// shown in `--help`. Listed for the test that every flag is classified.
#[cfg(test)]
const UNUSED_BY_CAPACITY: &[&str] = &[
    "junit",
    "ledger",
    "drain",
    "shard",
    "shards",
    "start_at",
    "print_config",
];

/// Parses `mailstorm-blast capacity` arguments (`argv` without the word
/// `capacity`), with the run flags the search sets itself hidden from
/// `--help`; exits with clap's usage error or help like `Parser::parse`.
pub fn parse_from<I, T>(argv: I) -> CapacityArgs
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = CapacityArgs::command();
    for id in NOT_FOR_CAPACITY {
        cmd = cmd.mut_arg(*id, |a| a.hide(true));
    }
    let matches = cmd.get_matches_from(argv);
    CapacityArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl CapacityArgs {
    /// The base run configuration and the search options, validated.
    pub fn to_parts(&self) -> Result<(Config, Options), BlastError> {
        let r = &self.run;
        r.live.refuse("capacity")?;
        for (given, flag) in [
            (r.rate.is_some(), "--rate"),
            (r.stages.is_some(), "--stages"),
            (r.duration.is_some(), "--duration"),
            (r.messages.is_some(), "--messages"),
            (r.threshold.is_some(), "--threshold (use --sla)"),
            (r.timeline.is_some(), "--timeline (the report holds it)"),
            (!r.scenario.is_empty(), "--scenario"),
            (r.stages_mode.is_some(), "--stages-mode"),
            (r.abort_on_fail, "--abort-on-fail (use --abort-if)"),
            // A search steers one process's load; shards would each search.
            (r.shard.is_some() || r.shards.is_some(), "--shard/--shards"),
            (r.start_at.is_some(), "--start-at"),
            (r.print_config, "--print-config"),
            (
                r.junit.is_some(),
                "--junit (a search is one case: read its exit code)",
            ),
            // Steps are short and back to back: no ledger drain between them.
            (r.ledger.is_some(), "--ledger"),
            (r.drain.is_some(), "--drain"),
        ] {
            if given {
                return Err(BlastError::Config(format!(
                    "capacity sets the load itself: drop {flag}"
                )));
            }
        }
        let mut cfg = r.to_config()?;
        // The profile's load settings are replaced by each step's.
        cfg.rate = None;
        cfg.stages = None;
        cfg.duration = None;
        cfg.messages = None;
        cfg.threshold = None;
        let sla = crate::threshold::parse_as(&self.sla, "--sla", false)?;
        let abort = crate::threshold::parse_as(&self.abort_if, "--abort-if", true)?;
        let opts = Options {
            start_rate: self.start_rate,
            max_rate: self.max_rate,
            precision: self.precision,
            factor: self.step_factor,
            warmup: self.warmup,
            step_duration: self.step_duration,
            sla,
            sla_text: self.sla.clone(),
            abort,
            abort_text: self.abort_if.clone(),
            min_achieved: MIN_ACHIEVED,
            target: match (&self.target_pid, &self.target_metrics) {
                (Some(p), _) => Some(super::TargetProbe::Pid(*p)),
                (None, Some(url)) => Some(super::TargetProbe::Metrics(
                    super::metrics::Scraper::connect(url, cfg.allow_remote)
                        .map_err(BlastError::Config)?,
                )),
                (None, None) => None,
            },
        };
        opts.validate(&cfg)?;
        Ok((cfg, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The run flags a search applies (through the step configuration, the
    /// embedded sink or its outputs).
    const APPLIED: &[&str] = &[
        "target",
        "resolver",
        "smtp_port",
        "dns_timeout",
        "relay_cooldown",
        "allow_remote",
        "profile",
        "sink_plan",
        "time_scale",
        "threads",
        "cpus",
        "no_pin",
        "concurrency",
        "per_conn",
        "rset",
        "rcpts",
        "size",
        "eml",
        "from",
        "to",
        "users",
        "helo",
        "seed",
        "pipelining",
        "pipeline_depth",
        "chunking",
        "starttls",
        "tls",
        "insecure",
        "ca",
        "sni",
        "tls_resume",
        "auth",
        "auth_mech",
        "lmtp",
        "no_nodelay",
        "sndbuf",
        "rcvbuf",
        "linger0",
        "keepalive",
        "source",
        "timeout",
        "grace",
        "late_after",
        "interval",
        "report",
        "html",
        "quiet",
        "run_id",
        "no_trace",
    ];

    /// A flag added to the run command line must be classified here, so
    /// `capacity` never silently ignores it.
    #[test]
    fn every_run_flag_is_applied_or_refused() {
        for a in Args::command().get_arguments() {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let lists = [APPLIED, NOT_FOR_CAPACITY, UNUSED_BY_CAPACITY];
            let n = lists.iter().filter(|l| l.contains(&id)).count();
            assert_eq!(
                n, 1,
                "run flag `{id}`: list it once, as applied by capacity or refused"
            );
        }
    }

    #[test]
    fn flags_a_search_does_not_use_are_refused() {
        for (flag, value) in [
            ("--junit", "j.xml"),
            ("--ledger", "http://127.0.0.1:1"),
            ("--drain", "5s"),
            ("--start-at", "0"),
        ] {
            let args = parse_from(["mailstorm-blast", flag, value]);
            let err = args.to_parts().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }
}
