//! Command-line interface: flags, `--profile FILE` (YAML with the same
//! names as the report's `config`), and their merge into a [`Config`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{
    parse_bytes, parse_duration, AuthMech, Config, Mode, RcptRange, SizeDist, StartTls,
};
use crate::stages::{LoadStages, StagesMode};
use crate::BlastError;

const AFTER_HELP: &str = "\
Capacity search: `mailstorm-blast capacity [FLAGS]` finds the highest rate
the target sustains within an SLA (see `mailstorm-blast capacity --help`).

Without --target, an in-process mailstorm sink is started on 127.0.0.1 and
blasted for a short default run (5 s or 20,000 messages), then a report is
printed. Targets outside loopback need --allow-remote.

Load stages (--stages): each stage is DURATION:VALUE (a step) or
DURATION:FROM..TO (a linear ramp); the run lasts their sum (--messages may
still end it earlier). With --stages-mode rate the values are messages/s on
an open-loop schedule (--concurrency caps the connections); with
--stages-mode concurrency they are connections sending back to back
(--concurrency is then taken from the stages). Without --stages-mode, giving
--concurrency selects concurrency, otherwise rate. The report and summary
count messages per stage (by intended start).

Sharded runs: `--shard I/N --run-id RUN` (or JOB_COMPLETION_INDEX with
--shards N) makes this process shard I of N forming one run: it takes
sends, connections and messages ≡ I (mod N) of the whole run's schedule,
its own trace sequence space, the run's seed; `--start-at TIME` starts
every shard together. `mailstorm-blast merge PARTS… --report run.json`
merges their reports exactly (see `mailstorm-blast merge --help`).

Resilience policies (profile `policy:` section, see configs/scenarios/):
retries with max_attempts, backoff (fixed, exponential, Postfix's age-based)
and seeded jitter, a retry budget, a circuit breaker, Postfix-style
concurrency feedback, per-stage timeouts; `preset: postfix` for Postfix's
defaults. --time-scale 0.01 replays a 300 s backoff in 3 s. Failure scope:
421 or a failed greeting/EHLO closes the connection (reconnect after
backoff); MAIL/DATA 4xx defer the message; RCPT 4xx defers that recipient;
5xx is permanent and never retried.

Scenarios (--scenario FILE...): the scenario's profile against the
embedded sink with its fault plan, or against the relay it names
(`target:`; `downstream:` is the sink behind it, which gets the plan and
whose ledger is joined), then every expectation (`delivered == 1000`,
`attempts.p99 <= 3`, `breaker.opened >= 1`, `lost == 0`, `e2e_p99 < 30s`)
printed with its measured value. Only --threads, --no-pin, --seed,
--time-scale, --report, --html, --junit and --quiet apply; any other run
flag is refused (exit 2): put it in the scenario file.

Exit codes:
  0  run completed and passed
  1  run failed, each reason printed: a --threshold check or scenario
     expectation failed; or, without --threshold, no message was accepted
     or the target stopped answering (the last 2+ intervals, 1 s or more,
     had only transport errors and no reply); or, always, more than 1% of
     the open-loop sends never started (connections busy: raise -c); or
     --abort-on-fail stopped the run
  2  usage or configuration error (including a --report/--timeline/--html
     path that cannot be written, checked before the run, and a --start-at
     too far ahead or past); `merge` refusing a part (another run or
     schema version, a duplicated or missing shard), naming the file
  3  target unreachable (resolution or first connection failed, or no
     connection could be opened during the run)
  4  internal error (a bug): the report and timeline hold what was
     measured, the error is printed
  5  interrupted by SIGINT or SIGTERM: in-flight messages got the grace
     period, outputs written, the report says interrupted: true
  130  a second SIGINT/SIGTERM: exited at once, nothing written

Examples:
  mailstorm-blast
  mailstorm-blast --target 127.0.0.1:2525 -c 50 -d 10s --report out.json
  mailstorm-blast --target 127.0.0.1:2525 --rate 200 -d 30s --threshold 'p99<50ms,5xx==0'
  mailstorm-blast --target 127.0.0.1:2525 --stages 10s:100,30s:100..500,10s:0
  mailstorm-blast --target 127.0.0.1:2525 -c 10 --stages 5s:10,10s:10..200 --pipeline-depth 8
  mailstorm-blast --target mx.test:587 --allow-remote --starttls required --ca ca.pem \\
      --auth user:secret --auth-mech cram-md5 -n 100";

/// A sharded per-core SMTP load generator with per-stage latency and reply
/// accounting.
#[derive(Debug, Parser, Default)]
#[command(name = "mailstorm-blast", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Target `host:port` (port 25 when omitted). Default: an embedded sink.
    /// `mx:DOMAIN`: resolve the domain's MX hosts (see --resolver,
    /// --smtp-port), lower preference first, and fall back to the next
    /// host on a connect failure or timeout, no greeting within the banner
    /// timeout, a 4xx greeting or a 421 during the setup (EHLO, STARTTLS,
    /// AUTH) (RFC 5321 §5.1). Several relays: give --target several times
    /// or a list with weights, `relay1:25=8,relay2:25=2` (weighted round
    /// robin; a relay failing 3 times in a row (connect errors, 4xx
    /// greetings, 421 at any stage; a delivered message ends the streak)
    /// is ejected for --relay-cooldown, then probed).
    #[arg(long, short = 'T', action = clap::ArgAction::Append)]
    pub target: Vec<String>,
    /// DNS server (`ip:port`, port 53 when omitted) for `--target
    /// mx:DOMAIN`. Default: the system's (/etc/resolv.conf).
    #[arg(long, value_name = "ADDR", value_parser = parse_resolver)]
    pub resolver: Option<std::net::SocketAddr>,
    /// SMTP port on the hosts `--target mx:DOMAIN` resolves to. Default 25.
    #[arg(long, value_name = "PORT")]
    pub smtp_port: Option<u16>,
    /// Longest wait for one DNS answer (one try); a server that does not
    /// answer counts a DNS timeout. The lookup at start is tried up to 3
    /// times; a resolver that never answers is exit 3. Default 2s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub dns_timeout: Option<std::time::Duration>,
    /// How long an ejected relay stays out before one probe connection.
    /// Default 5s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub relay_cooldown: Option<std::time::Duration>,
    /// Allow a target outside loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// YAML profile with defaults for any setting (flags override it).
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Fault plan (YAML) for the embedded sink.
    #[arg(long)]
    pub sink_plan: Option<PathBuf>,
    /// Run scenarios: profile, expectations and sink fault plan in one YAML
    /// file each, against the embedded sink or a relay the file names
    /// (`target:`, with `downstream:` the sink behind it: its ledger gives
    /// `lost`, `duplicates`, `e2e_p99` to expect). Several files run one
    /// after the other. Only --threads, --no-pin, --seed, --time-scale,
    /// --report and --html (one scenario), --junit and --quiet apply; any
    /// other run flag is refused (exit 2).
    #[arg(long, num_args = 1..)]
    pub scenario: Vec<PathBuf>,
    /// With --scenario: write the verdicts as JUnit XML (one test case per
    /// scenario).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Multiplies every policy time (backoff, cooldown, suspension).
    #[arg(long)]
    pub time_scale: Option<f64>,

    /// Shards (threads), each pinned to a CPU. Default: CPU count.
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// CPUs to pin shards to, e.g. `1` or `2,3`.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Do not pin shard threads.
    #[arg(long)]
    pub no_pin: bool,
    /// Connections (closed loop), or the connection cap (open loop). Default 50.
    #[arg(long, short = 'c')]
    pub concurrency: Option<u32>,
    /// Open loop: messages per second on a fixed schedule.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Load stages: `DURATION:VALUE` steps and `DURATION:FROM..TO` linear
    /// ramps, e.g. `10s:100,30s:100..500,10s:0`. The run lasts their sum.
    /// Values are messages/s (open loop) or connections (closed loop); see
    /// --stages-mode.
    #[arg(long)]
    pub stages: Option<String>,
    /// What --stages values are: `rate` (messages/s, open loop; --concurrency
    /// caps the connections) or `concurrency` (connections sending back to
    /// back). Default: `concurrency` when --concurrency is given, else `rate`.
    #[arg(long, value_parser = ["rate", "concurrency"], ignore_case = true)]
    pub stages_mode: Option<String>,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Stop starting messages after this long (e.g. 30s). Default 5s when
    /// neither this nor --messages is given.
    #[arg(long, short = 'd', value_parser = parse_duration_arg)]
    pub duration: Option<std::time::Duration>,

    /// Messages per connection (0: unlimited). Default 100.
    #[arg(long)]
    pub per_conn: Option<u32>,
    /// RSET before every transaction after the first on a connection.
    #[arg(long)]
    pub rset: bool,
    /// Recipients per message: `N` or `MIN..MAX`. Default 1.
    #[arg(long)]
    pub rcpts: Option<String>,
    /// Message size: `2k`, `1k..100k` (uniform) or `lognormal:MEDIAN,P99`.
    /// Default 1k.
    #[arg(long)]
    pub size: Option<String>,
    /// Message template with `{{seq}}` and `{{rcpt}}` placeholders.
    #[arg(long)]
    pub eml: Option<PathBuf>,
    /// Sender pattern; `{N}` is replaced by the message sequence number.
    /// Default `sender{N}@example.test`.
    #[arg(long)]
    pub from: Option<String>,
    /// Recipient pattern; `{N}` is drawn from 0..--users. Default
    /// `user{N}@example.test`.
    #[arg(long)]
    pub to: Option<String>,
    /// How many distinct recipients `{N}` ranges over. Default 1000.
    #[arg(long)]
    pub users: Option<u64>,
    /// EHLO/LHLO domain. Default `mailstorm-blast.example.test`.
    #[arg(long)]
    pub helo: Option<String>,
    /// Seed for sizes and recipients (0, the default: pick one from the
    /// clock; the report gives it, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,

    /// PIPELINING: auto (when advertised), on, off. Default auto.
    #[arg(long, value_parser = ["auto", "on", "off"], ignore_case = true)]
    pub pipelining: Option<String>,
    /// Transactions a connection keeps outstanding when the server
    /// pipelines: with CHUNKING, up to K `MAIL RCPT… BDAT LAST`+body groups
    /// per write; with DATA, the next group rides on the previous body's
    /// write. QUIT rides on a session's last write. Default 1.
    #[arg(long, value_name = "K")]
    pub pipeline_depth: Option<u32>,
    /// CHUNKING/BDAT: auto (when advertised), on, off. Default auto.
    #[arg(long, value_parser = ["auto", "on", "off"], ignore_case = true)]
    pub chunking: Option<String>,
    /// STARTTLS: off, opportunistic, required. Default off.
    #[arg(long, value_parser = ["off", "opportunistic", "required"], ignore_case = true)]
    pub starttls: Option<String>,
    /// Implicit TLS from the first byte.
    #[arg(long)]
    pub tls: bool,
    /// Do not verify the server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// PEM file with the CA certificate(s) to trust.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// TLS server name (SNI and verification). Default: the target host.
    #[arg(long)]
    pub sni: Option<String>,
    /// Resume TLS sessions (TLS 1.3 tickets, TLS 1.2 ids) across the run's
    /// connections, as a mail client with a session cache does. Default:
    /// every connection makes a full handshake.
    #[arg(long)]
    pub tls_resume: bool,
    /// AUTH credentials `user:password`.
    #[arg(long)]
    pub auth: Option<String>,
    /// AUTH mechanism: plain, login, cram-md5. Default plain.
    #[arg(long, value_parser = ["plain", "login", "cram-md5"], ignore_case = true)]
    pub auth_mech: Option<String>,
    /// Speak LMTP (LHLO; one reply per recipient after the data).
    #[arg(long)]
    pub lmtp: bool,

    /// Disable TCP_NODELAY.
    #[arg(long)]
    pub no_nodelay: bool,
    /// SO_SNDBUF (e.g. 256k). Default: the kernel's.
    #[arg(long)]
    pub sndbuf: Option<String>,
    /// SO_RCVBUF (e.g. 256k). Default: the kernel's.
    #[arg(long)]
    pub rcvbuf: Option<String>,
    /// Close connections with RST (SO_LINGER 0) instead of FIN.
    #[arg(long)]
    pub linger0: bool,
    /// TCP keepalive idle time (e.g. 30s). Default: no keepalive.
    #[arg(long, value_parser = parse_duration_arg)]
    pub keepalive: Option<std::time::Duration>,
    /// Source addresses, round robin (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',')]
    pub source: Option<Vec<IpAddr>>,
    /// Timeouts: `10s` for all, or `connect=2s,banner=5s,data_end=1m,...`.
    /// Defaults: connect and tls 10s, quit 5s, data_end 1m, every other
    /// stage 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Time in-flight messages get to finish after a stop (the end of the
    /// run, SIGINT or SIGTERM). Default 5s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub grace: Option<std::time::Duration>,
    /// Open loop: a send starting later than this is counted late. Default 2ms.
    #[arg(long, value_parser = parse_duration_arg)]
    pub late_after: Option<std::time::Duration>,
    /// Progress and timeline interval. Default 1s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub interval: Option<std::time::Duration>,

    /// Write the JSON report (schema mailstorm.report/2) here; `-`: to
    /// standard output between `-----BEGIN MAILSTORM REPORT-----` and
    /// `-----END MAILSTORM REPORT-----` lines (for `kubectl logs`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write a per-interval CSV timeline here.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Write a self-contained HTML report here (charts, stages,
    /// thresholds; opens offline).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Checks at the end, e.g. `p99<200ms,accept_rate>=0.95,5xx==0`;
    /// `stageN:` names a load stage (`stage2:p99<50ms`; its `4xx`, `5xx`,
    /// `errors` count its messages ended so). One that can never hold
    /// (`5xx<0`, `accept_rate>1`) is refused.
    #[arg(long)]
    pub threshold: Option<String>,
    /// Stop the run as soon as a --threshold check can no longer pass;
    /// outputs are written and the exit code is 1. Decided early: a count
    /// past its limit (`5xx==0` after a 5xx, `deferred<10`) or `max` over
    /// it, whole-run or `stageN:`; every check of a stage once the stage
    /// is over and its messages ended; ratios (`accept_rate>=0.99`) and
    /// `accepted>=N` once the rest of a known total (-n, or --rate with -d,
    /// or rate --stages; not with --policy) cannot bring them back. Never
    /// early: whole-run percentiles and mean, `*_per_s`, ledger figures.
    #[arg(long)]
    pub abort_on_fail: bool,
    /// No live progress.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Run id written into every message's trace header and Message-ID;
    /// give the same one to several blasters forming one run. Default: a
    /// fresh id per run.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Do not add the `X-Mailstorm-Trace` header.
    #[arg(long)]
    pub no_trace: bool,
    /// Control address of the sink downstream of the target relay (e.g.
    /// `http://127.0.0.1:8025`): after the run, join its ledger (lost,
    /// duplicates, end-to-end latency). Automatic with the embedded sink.
    #[arg(long)]
    pub ledger: Option<String>,
    /// With --ledger: how long to wait for accepted messages to arrive.
    /// Default 60s.
    #[arg(long, value_parser = parse_duration_arg)]
    pub drain: Option<std::time::Duration>,
    /// Live view: --metrics ADDR, --dashboard ADDR, --linger-metrics.
    #[command(flatten)]
    pub live: crate::live::LiveArgs,

    // --- Sharded runs (issue 15): one block, see shard_split.rs. ---
    /// Be shard I (0-based) of N processes forming one run (needs
    /// --run-id): this process takes its share of the schedule,
    /// connections and messages, its own trace sequence space; seeds come
    /// from the run. Merge the reports with `mailstorm-blast merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The shard count when the index comes from JOB_COMPLETION_INDEX (a
    /// Kubernetes Indexed Job).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Start at this wall-clock time (RFC 3339 or Unix seconds; at most
    /// 1 h ahead, 10 s past), so all shards start together. A sharded run
    /// without it starts on the next whole --interval of the clock.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// Print this process's effective settings (YAML, as --profile takes
    /// them) and exit 0 without running: checks a command line.
    #[arg(long)]
    pub print_config: bool,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn mode(s: &str) -> Mode {
    match s {
        "on" => Mode::On,
        "off" => Mode::Off,
        _ => Mode::Auto,
    }
}

impl Args {
    /// The configuration: profile (if any), then flags on top.
    pub fn to_config(&self) -> Result<Config, BlastError> {
        let mut c = match &self.profile {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| BlastError::Config(format!("--profile {}: {e}", p.display())))?;
                Config::from_yaml_str(&text, &p.display().to_string())?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f {
                    c.$f = v.clone().into();
                }
            )*};
        }
        if !self.target.is_empty() {
            c.target = Some(self.target.join(","));
        }
        if self.resolver.is_some() {
            c.resolver = self.resolver;
        }
        if let Some(p) = self.smtp_port {
            c.smtp_port = p;
        }
        if let Some(v) = self.dns_timeout {
            c.dns_timeout = v;
        }
        if let Some(v) = self.relay_cooldown {
            c.relay_cooldown = v;
        }
        set!(
            threads,
            concurrency,
            messages,
            per_conn,
            from,
            to,
            users,
            helo,
            seed,
            pipeline_depth
        );
        set!(cpus, source);
        if let Some(v) = self.rate {
            c.rate = Some(v);
        }
        if let Some(v) = self.duration {
            c.duration = Some(v);
        }
        if let Some(v) = self.keepalive {
            c.keepalive = Some(v);
        }
        if let Some(v) = self.grace {
            c.grace = v;
        }
        if let Some(v) = self.late_after {
            c.late_after = v;
        }
        if let Some(v) = self.interval {
            c.interval = v;
        }
        for (src, dst) in [
            (&self.eml, &mut c.eml),
            (&self.ca, &mut c.ca),
            (&self.report, &mut c.report),
            (&self.timeline, &mut c.timeline),
        ] {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        for (src, dst) in [
            (&self.sni, &mut c.sni),
            (&self.auth, &mut c.auth),
            (&self.threshold, &mut c.threshold),
        ] {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        c.allow_remote |= self.allow_remote;
        c.rset |= self.rset;
        c.tls |= self.tls;
        c.insecure |= self.insecure;
        c.tls_resume |= self.tls_resume;
        c.lmtp |= self.lmtp;
        c.linger0 |= self.linger0;
        c.quiet |= self.quiet;
        if self.no_trace {
            c.trace = false;
        }
        if let Some(v) = &self.run_id {
            c.run_id = Some(v.clone());
        }
        if let Some(v) = &self.ledger {
            c.ledger = Some(v.clone());
        }
        if let Some(v) = self.drain {
            c.drain = v;
        }
        let job_index = std::env::var("JOB_COMPLETION_INDEX").ok();
        if let Some(s) = crate::shard_split::Shard::resolve(
            self.shard.as_deref(),
            self.shards,
            job_index.as_deref(),
        )? {
            c.shard = Some(s);
        }
        if self.time_scale.is_some() {
            c.time_scale = self.time_scale;
        }
        if self.no_pin {
            c.pin = false;
        }
        if self.no_nodelay {
            c.nodelay = false;
        }
        if let Some(s) = &self.stages {
            c.stages = Some(LoadStages::parse(s)?);
        }
        let lower = |s: &Option<String>| s.as_deref().map(str::to_ascii_lowercase);
        match lower(&self.stages_mode).as_deref() {
            Some("concurrency") => c.stages_mode = StagesMode::Concurrency,
            Some(_) => c.stages_mode = StagesMode::Rate,
            // Inferred: --concurrency without --rate means connections.
            None if self.stages.is_some() && self.concurrency.is_some() && self.rate.is_none() => {
                c.stages_mode = StagesMode::Concurrency
            }
            None => {}
        }
        if let Some(s) = &self.rcpts {
            c.rcpts = RcptRange::parse(s)?;
        }
        if let Some(s) = &self.size {
            c.size = SizeDist::parse(s)?;
        }
        if let Some(s) = lower(&self.pipelining) {
            c.pipelining = mode(&s);
        }
        if let Some(s) = lower(&self.chunking) {
            c.chunking = mode(&s);
        }
        if let Some(s) = lower(&self.starttls) {
            c.starttls = match s.as_str() {
                "opportunistic" => StartTls::Opportunistic,
                "required" => StartTls::Required,
                _ => StartTls::Off,
            };
        }
        if let Some(s) = &self.auth_mech {
            // clap has checked the name against the same list.
            c.auth_mech = AuthMech::parse(s).unwrap_or_default();
        }
        let bytes = |s: &Option<String>| -> Result<Option<u32>, BlastError> {
            s.as_deref()
                .map(|v| parse_bytes(v).map(|n| n.min(u64::from(u32::MAX)) as u32))
                .transpose()
        };
        if self.sndbuf.is_some() {
            c.sndbuf = bytes(&self.sndbuf)?;
        }
        if self.rcvbuf.is_some() {
            c.rcvbuf = bytes(&self.rcvbuf)?;
        }
        if let Some(t) = &self.timeout {
            c.timeouts.apply(t)?;
        }
        if let Some(t) = &c.threshold {
            let stages = c.stages.as_ref().map_or(0, |s| s.stages().len());
            for check in crate::threshold::parse(t)? {
                if let Some(i) = check.load_stage().filter(|i| *i >= stages) {
                    return Err(BlastError::Config(format!(
                        "--threshold {:?}: the run has {stages} load stage(s), not {}",
                        check.text(),
                        i + 1
                    )));
                }
            }
        }
        if self.abort_on_fail && c.threshold.is_none() {
            return Err(BlastError::Config(
                "--abort-on-fail watches the --threshold checks: give some".into(),
            ));
        }
        c.validate()?;
        Ok(c)
    }
}

/// `127.0.0.1:5353`, or an IP alone for port 53.
fn parse_resolver(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| {
            format!(
                "--resolver {s:?}: expected an IP address with an optional port (127.0.0.1:5353)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let a = Args::try_parse_from([
            "mailstorm-blast",
            "--target",
            "127.0.0.1:2525",
            "-c",
            "7",
            "--rate",
            "100",
            "-d",
            "2s",
            "--size",
            "1k..2k",
            "--rcpts",
            "2..3",
            "--pipelining",
            "off",
            "--source",
            "127.0.0.2,127.0.0.3",
            "--timeout",
            "connect=1s",
            "--auth",
            "u:p",
            "--auth-mech",
            "cram-md5",
        ])
        .unwrap();
        let c = a.to_config().unwrap();
        assert_eq!(c.target.as_deref(), Some("127.0.0.1:2525"));
        assert_eq!(c.concurrency, 7);
        assert_eq!(c.rate, Some(100.0));
        assert_eq!(c.rcpts, RcptRange { min: 2, max: 3 });
        assert_eq!(c.pipelining, Mode::Off);
        assert_eq!(c.source.len(), 2);
        assert_eq!(c.timeouts.connect, std::time::Duration::from_secs(1));
        assert_eq!(c.auth_mech, AuthMech::CramMd5);
        let bad = Args::try_parse_from(["x", "--threshold", "p99<3"]).unwrap();
        assert!(bad.to_config().is_err());
        let bad = Args::try_parse_from(["x", "--threshold", ",,,"]).unwrap();
        assert!(bad.to_config().is_err());
    }

    #[test]
    fn enum_flags_ignore_case() {
        let a = Args::try_parse_from([
            "mailstorm-blast",
            "--auth-mech",
            "PLAIN",
            "--starttls",
            "Required",
            "--pipelining",
            "ON",
            "--chunking",
            "Off",
            "--stages",
            "1s:5",
            "--stages-mode",
            "CONCURRENCY",
        ])
        .unwrap();
        let c = a.to_config().unwrap();
        assert_eq!(c.auth_mech, AuthMech::Plain);
        assert_eq!(c.starttls, StartTls::Required);
        assert_eq!(c.pipelining, Mode::On);
        assert_eq!(c.chunking, Mode::Off);
        assert_eq!(c.stages_mode, StagesMode::Concurrency);
        let a = Args::try_parse_from(["x", "--auth-mech", "CRAM-MD5"]).unwrap();
        assert_eq!(a.to_config().unwrap().auth_mech, AuthMech::CramMd5);
    }
}
