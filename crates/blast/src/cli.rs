//! Command-line interface: the run's flags ([`Args`]), `--profile FILE`
//! (YAML with the same names as the report's `config`), and their merge
//! into a [`crate::config::Config`].
//!
//! - this file: the flags, as clap parses them, and their value parsers;
//! - `cli/help.rs`: the long `--help` text after the flag list;
//! - `cli/to_config.rs`: [`Args::to_config`], the profile with the flags
//!   laid over it, checked.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::parse_duration;

mod help;
mod to_config;

use help::AFTER_HELP;

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

    /// Shards (threads), each pinned to a CPU; at most 1024. Default: CPU count.
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

/// A duration flag (`30s`, `1m`), written as the profile writes it; the
/// error as text for clap.
fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
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
