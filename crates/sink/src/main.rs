//! `mailstorm-sink`: the command-line layer over the library. Flags map onto
//! [`SinkConfig`]; flags override `--config FILE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mailstorm_sink::config::{parse_control, parse_duration, parse_size};
use mailstorm_sink::{BareLfPolicy, Sink, SinkConfig, SinkError, SinkHandle, StatsSnapshot};

const AFTER_HELP: &str = "\
Every option can also be set in the YAML file given with --config, under its long
name in snake_case (e.g. `max_message_size: 10MiB`); flags override the file.
Unknown keys are errors. Durations: 300ms, 5s, 1.5s, 2m, 1h, 1d. Sizes: 512, 64k,
50MiB, 1G.

Control API (--control): GET / (the dashboard: live throughput, replies, faults,
clients and verdicts, kept messages, the plan editor; polls GET /dashboard.json)
/healthz /info /stats /metrics /clients /verdicts /clients/{id}/verdict /messages
/messages/{id} /ledger /ledger/{run} /dns (DNS queries by outcome and per client,
with --dns); POST /reset; DELETE /messages; GET|PUT|DELETE /plan. A client's id
is the EHLO name of its sessions (or its IP before a greeting): ?helo=NAME&domain=D
selects one test's clients on /clients, /verdicts, /messages, /ledger and /reset;
/plan?helo=NAME is a plan scoped to that name. With --control-token every call
but /healthz needs `Authorization: Bearer TOKEN`; a browser opens
/?token=TOKEN once and gets a cookie for the page and its calls. Limits against
any HTTP peer: 256 connections (more wait), 16 KiB request heads sent within 10s
(431, or closed; an idle keep-alive connection is closed after 10s), bodies of
2 MiB (413), 8 at a time, 30s per request (408), 30s of an unread response
(closed).

Signals: SIGINT/SIGTERM stop accepting, answer 421 4.3.2 to each session at its next
command, wait up to --shutdown-grace, print final stats and exit 0. SIGHUP reloads the
config file and TLS certificates; running sessions keep their settings.

Exit codes:
  0  clean shutdown (SIGINT/SIGTERM), or --help, --version, --print-config
  1  runtime failure: a listen or control address cannot be bound (in use,
     no permission), a shard thread cannot start
  2  invalid command line or configuration: an unknown option or key, a bad
     value, an unreadable or invalid --config, --plan, TLS certificate or key,
     or --auth-users file, a control API off loopback without a token, a
     --capture directory that cannot be created or written, an --events file
     that cannot be opened, a --ready-file that cannot be written or a
     --ready-fd that is not open";

/// A per-core ESMTP/LMTP sink that accepts mail at line rate.
#[derive(Parser, Debug, Clone)]
#[command(name = "mailstorm-sink", version, about, after_help = AFTER_HELP)]
struct Args {
    /// YAML configuration file (keys are the long option names, snake_case).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, repeatable (IPv4 or [IPv6]:port) [default: 127.0.0.1:2525].
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Implicit-TLS listen address, repeatable (port-465 style) [default: none].
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// Shards (threads, each pinned to a CPU), at most 1024 [default: number of CPUs].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Do not pin shard threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Listen backlog per shard [default: 4096].
    #[arg(long, value_name = "N")]
    backlog: Option<u32>,
    /// Host name in the greeting and EHLO reply [default: the system host name].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Speak LMTP (LHLO; one reply per recipient after DATA).
    #[arg(long)]
    lmtp: bool,
    /// Longest command line, CRLF included [default: 512].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_line_length: Option<u64>,
    /// Largest message, advertised with SIZE; 0 = unlimited [default: 50MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_message_size: Option<u64>,
    /// Recipients per message; more get 452 4.5.3 [default: 1000].
    #[arg(long, value_name = "N")]
    max_recipients: Option<usize>,
    /// Error replies before 421 4.7.0 and close, counted since the session's
    /// last delivered message, as Postfix's smtpd_hard_error_limit [default: 20].
    #[arg(long, value_name = "N")]
    max_errors: Option<u32>,
    /// Close with 421 4.4.2 after this long without input [default: 300s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Close with 421 4.4.2 a client whose command line is not complete this
    /// long after it began (slowloris) [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    command_timeout: Option<Duration>,
    /// Close with 421 4.4.2 sessions older than this; 0 = unlimited [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_session_duration: Option<Duration>,
    /// Open connections in total; more get 421 4.7.0; 0 = no limit of its
    /// own. Never more than the open files limit leaves room for (it less
    /// what the control API, DNS and listeners may hold): past that a
    /// client would wait unanswered, so it gets the 421 too [default: 20000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Open connections per client IP; more get 421 4.7.0; 0 = unlimited [default: 0].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Bare LF/CR in DATA: `accept` (a line end; only CRLF.CRLF ends the
    /// message) or `reject` (550 5.7.0) [default: accept].
    #[arg(long, value_name = "POLICY", ignore_case = true, value_parser = bare_lf_parser())]
    bare_lf: Option<BareLfPolicy>,
    /// Accept common command syntax deviations (bare LF line ends, `FROM: <a>`).
    #[arg(long)]
    lenient: bool,
    /// Disable TLS (no STARTTLS, no --tls-listen).
    #[arg(long)]
    no_tls: bool,
    /// TLS certificate chain, PEM [default: a self-signed certificate generated at start].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM [default: read from --tls-cert].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// `user:password` lines checked by AUTH (535 5.7.8 on mismatch) [default: accept any].
    #[arg(long, value_name = "FILE")]
    auth_users: Option<PathBuf>,
    /// Refuse MAIL before AUTH with 530 5.7.0.
    #[arg(long)]
    auth_required: bool,
    /// Write each accepted message to DIR/<id>.eml with envelope headers [default: discard].
    #[arg(long, value_name = "DIR")]
    capture: Option<PathBuf>,
    /// Keep the last N messages in memory for the control API [default: 0].
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
    /// Total size of the kept messages; the oldest go first; 0 = no cap [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_bytes: Option<u64>,
    /// Message bytes held in memory at once, across sessions: bodies while they arrive with
    /// --keep or --capture (a message that would pass it gets 452 4.3.1 at its end; the client
    /// retries), and each session's recipients past 32 KiB (452 4.3.1 to the RCPT). With --keep
    /// or --capture it must be at least --max-message-size (then not 0) [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    buffer_bytes: Option<u64>,
    /// Control API address, or `off` [default: 127.0.0.1:8025]; port 0
    /// picks a free port (see --ready-file).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_control_flag)]
    control: Option<ControlFlag>,
    /// Bearer token for the control API (required when not on loopback).
    #[arg(long, value_name = "TOKEN", env = "MAILSTORM_CONTROL_TOKEN")]
    control_token: Option<String>,
    /// Print a stats line on stderr this often; 0 = never [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<Duration>,
    /// No stats line, no informational messages.
    #[arg(long, short)]
    quiet: bool,
    /// How long shutdown waits for sessions [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    shutdown_grace: Option<Duration>,
    /// Fault plan (YAML or JSON; see configs/*.yaml); replaced by `PUT /plan`,
    /// cleared by `DELETE /plan`, reloaded on SIGHUP [default: none].
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Append one JSON line per injected fault to FILE.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Serve an authoritative DNS zone on ADDR, UDP and TCP (e.g.
    /// 127.0.0.1:5353), for `mailstorm-blast --target mx:DOMAIN`. The zone
    /// comes from --dns-zone, or else is --dns-domain with one MX host per
    /// listener IP (mx1.DOMAIN preference 10 → the first --listen IP, mx2
    /// → the second, ...). Plan rules at `stage: dns` delay queries or
    /// answer SERVFAIL, NXDOMAIN, nothing, or truncated. At most 4,096
    /// queries are held by delays at once (more are dropped and counted as
    /// `shed` on /dns) and 256 TCP clients served (more wait) [default: off].
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// The DNS zone as YAML: `ttl`, and `names` each with `mx`
    /// (`[{preference, host}]`), `addresses` and `ttl` (see README).
    #[arg(long, value_name = "FILE")]
    dns_zone: Option<PathBuf>,
    /// Domain of the default zone [default: example.test].
    #[arg(long, value_name = "DOMAIN")]
    dns_domain: Option<String>,
    /// Once every listener (SMTP/LMTP, implicit TLS, control) is bound and
    /// accepting, write one JSON object and a newline to FILE, atomically
    /// (a temporary file in the same directory, then a rename):
    /// `{"version","pid","smtp":[addr..],"tls":[addr..],"control":addr|null,
    /// "dns":addr|null,"hostname"}`. Start with port 0 everywhere and read the
    /// real addresses from it; `GET /info` serves the same object. A path
    /// that cannot be written is an error at start (exit 2).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Like --ready-file, to an inherited file descriptor N (a pipe the
    /// harness reads one line from).
    #[arg(long, value_name = "N")]
    ready_fd: Option<i32>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    /// The file's configuration (or the defaults) with the flags applied.
    fn config(&self) -> anyhow::Result<SinkConfig> {
        let mut c = match &self.config {
            Some(p) => SinkConfig::from_yaml_file(p)?,
            None => SinkConfig::default(),
        };
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        if !self.tls_listen.is_empty() {
            c.tls_listen = self.tls_listen.clone();
        }
        macro_rules! opt {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        opt!(
            backlog,
            max_line_length,
            max_message_size,
            max_recipients,
            max_errors,
            idle_timeout,
            command_timeout,
            max_session_duration,
            max_connections,
            max_connections_per_ip,
            bare_lf,
            keep,
            keep_bytes,
            buffer_bytes,
            stats_interval,
            shutdown_grace
        );
        if let Some(ControlFlag(addr)) = self.control {
            c.control = addr;
        }
        if self.threads.is_some() {
            c.threads = self.threads;
        }
        if self.hostname.is_some() {
            c.hostname = self.hostname.clone();
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key.clone();
        }
        if self.auth_users.is_some() {
            c.auth_users = self.auth_users.clone();
        }
        if self.capture.is_some() {
            c.capture = self.capture.clone();
        }
        if self.plan.is_some() {
            c.plan = self.plan.clone();
        }
        if self.events.is_some() {
            c.events = self.events.clone();
        }
        if self.dns.is_some() {
            c.dns = self.dns;
        }
        if self.dns_zone.is_some() {
            c.dns_zone = self.dns_zone.clone();
        }
        if let Some(d) = &self.dns_domain {
            c.dns_domain = d.clone();
        }
        if self.control_token.is_some() {
            c.control_token = self.control_token.clone();
        }
        c.pin_threads &= !self.no_pin;
        c.lmtp |= self.lmtp;
        c.lenient |= self.lenient;
        c.tls &= !self.no_tls;
        c.auth_required |= self.auth_required;
        c.quiet |= self.quiet;
        c.validate()?;
        Ok(c)
    }
}

/// Exit code for a failure of the running system (see `AFTER_HELP`).
const EXIT_RUNTIME: u8 = 1;
/// Exit code for a bad command line or configuration (clap uses it too).
const EXIT_CONFIG: u8 = 2;

/// An error and the exit code it ends the process with.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn runtime(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_RUNTIME,
            error: error.into(),
        }
    }
}

impl From<SinkError> for Failure {
    fn from(e: SinkError) -> Failure {
        Failure {
            code: if e.is_configuration() {
                EXIT_CONFIG
            } else {
                EXIT_RUNTIME
            },
            error: anyhow::Error::new(e).context("cannot start"),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailstorm-sink: {}", error_text(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.print_config {
        print!("{}", config.to_yaml());
        return ExitCode::SUCCESS;
    }
    match run(args, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mailstorm-sink: {}", error_text(&f.error));
            ExitCode::from(f.code)
        }
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the
/// message already contains (thiserror messages often embed their source,
/// which `{:#}` would print a second time).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn run(args: Args, config: SinkConfig) -> Result<(), Failure> {
    let quiet = config.quiet;
    let open_files = match mailstorm_sink::raise_nofile_limit() {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("mailstorm-sink: warning: cannot read the open files limit: {e}");
            None
        }
    };
    // Connections the descriptors leave room for, under this start's
    // listeners and shards (a reload changes neither).
    let room = open_files.map(|n| (n, mailstorm_sink::connection_ceiling(n, &config)));
    if let (Some(room), false) = (room, quiet) {
        warn_if_room_is_short(room, config.max_connections);
    }
    let stats_interval = config.stats_interval;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .map_err(Failure::runtime)?;
    // Handlers first: a signal right after "listening" must not kill us.
    let sigs = {
        let _rt = rt.enter();
        Signals::new()
            .context("cannot install signal handlers")
            .map_err(Failure::runtime)?
    };
    // Checked before serving: a bad ready file is a configuration error.
    let config_err = |e: mailstorm_sink::ready::ReadyError| Failure {
        code: EXIT_CONFIG,
        error: anyhow::Error::new(e).context("cannot start"),
    };
    let ready_file = args
        .ready_file
        .as_deref()
        .map(mailstorm_sink::ready::ReadyFile::prepare)
        .transpose()
        .map_err(config_err)?;
    let ready_fd = args
        .ready_fd
        .map(mailstorm_sink::ready::ReadyFd::prepare)
        .transpose()
        .map_err(config_err)?;
    // Always installed, so `PUT /plan` works without --plan; with no plan a
    // decision is one atomic load.
    let mut sink = Sink::from_config(config.clone())
        .fault_engine(std::sync::Arc::new(mailstorm_sink::plan::Engine::new()));
    if let Some(n) = open_files {
        sink = sink.open_files_limit(n);
    }
    let sink = sink.start()?;
    if !quiet {
        if let Some(dir) = &config.capture {
            eprintln!("mailstorm-sink: capturing messages to {}", dir.display());
        }
        let threads = config.thread_count();
        for a in sink.local_addrs() {
            eprintln!(
                "mailstorm-sink: listening on {a} ({}, {threads} shards)",
                proto_name(&config)
            );
        }
        for a in sink.tls_addrs() {
            eprintln!("mailstorm-sink: listening on {a} (implicit TLS)");
        }
        if let Some(a) = sink.dns_addr() {
            eprintln!("mailstorm-sink: DNS on {a} (UDP and TCP)");
        }
        if let Some(a) = sink.control_addr() {
            eprintln!("mailstorm-sink: control API on http://{a}/");
        }
    }
    let info = sink.ready_info();
    if let Some(f) = ready_file {
        f.write(&info).map_err(Failure::runtime)?;
    }
    if let Some(f) = ready_fd {
        f.write(&info).map_err(Failure::runtime)?;
    }
    rt.block_on(signals(sigs, &args, &sink, stats_interval, quiet, room));
    let grace = sink.config().shutdown_grace;
    if !quiet {
        eprintln!("mailstorm-sink: shutting down (grace {grace:?})");
    }
    let last = sink.shutdown();
    eprintln!(
        "mailstorm-sink: final stats: {}",
        serde_json::to_string(&last).unwrap_or_default()
    );
    Ok(())
}

fn proto_name(c: &SinkConfig) -> &'static str {
    if c.lmtp {
        "LMTP"
    } else {
        "SMTP"
    }
}

/// The signals the sink reacts to.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers (inside a runtime context).
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGHUP: reloads the configuration file and flags, or keeps the old one
/// and says why.
fn reload(args: &Args, sink: &SinkHandle, quiet: bool, room: Option<(u64, usize)>) {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "mailstorm-sink: reload failed, keeping the old configuration: {}",
                error_text(&e)
            );
            return;
        }
    };
    let max_connections = config.max_connections;
    match sink.reload(config) {
        Ok(ignored) if ignored.is_empty() => eprintln!("mailstorm-sink: configuration reloaded"),
        Ok(ignored) => eprintln!(
            "mailstorm-sink: configuration reloaded; changes to {} need a restart",
            ignored.join(", ")
        ),
        Err(e) => {
            eprintln!("mailstorm-sink: reload failed, keeping the old configuration: {e}");
            return;
        }
    }
    if let (Some(room), false) = (room, quiet) {
        warn_if_room_is_short(room, max_connections);
    }
}

/// Warns when the open-files limit (`open_files`, leaving room for `room`
/// connections) and not `--max-connections` is what limits connections.
fn warn_if_room_is_short((open_files, room): (u64, usize), max_connections: usize) {
    if max_connections != 0 && max_connections <= room {
        return;
    }
    let asked = if max_connections == 0 {
        "0 (no limit)".to_string()
    } else {
        max_connections.to_string()
    };
    eprintln!(
        "mailstorm-sink: warning: the open files limit ({open_files}) leaves room for {room} \
         connections, fewer than --max-connections {asked}: past them clients get 421 4.7.0 \
         (raise it with `ulimit -Hn` as root)"
    );
}

/// Waits for SIGINT/SIGTERM, reloading on SIGHUP and printing stats lines.
/// `room`: the open-files limit and the connections it leaves room for.
async fn signals(
    sigs: Signals,
    args: &Args,
    sink: &SinkHandle,
    interval: Duration,
    quiet: bool,
    room: Option<(u64, usize)>,
) {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = sigs;
    let print = !quiet && !interval.is_zero();
    let mut tick = tokio::time::interval(if print {
        interval
    } else {
        Duration::from_secs(3600)
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = sink.stats();
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => reload(args, sink, quiet, room),
            _ = tick.tick(), if print => {
                let now = sink.stats();
                eprintln!("{}", stats_line(&prev, &now));
                prev = now;
            }
        }
    }
}

/// One stats line: rates over the interval since `prev`.
fn stats_line(prev: &StatsSnapshot, now: &StatsSnapshot) -> String {
    let dt = (now.since_reset_secs - prev.since_reset_secs).max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt;
    let pc = prev.replies_by_class();
    let nc = now.replies_by_class();
    format!(
        "conns/s {:.0} msgs/s {:.0} MB/s {:.1} open {} replies 2xx {} 3xx {} 4xx {} 5xx {}",
        rate(prev.connections_total, now.connections_total),
        rate(prev.messages_accepted, now.messages_accepted),
        rate(prev.bytes_received, now.bytes_received) / 1e6,
        now.connections_open,
        nc[0].saturating_sub(pc[0]),
        nc[1].saturating_sub(pc[1]),
        nc[2].saturating_sub(pc[2]),
        nc[3].saturating_sub(pc[3]),
    )
}

/// `--control ADDR|off`. A newtype, because clap reads `Option<Option<T>>` as
/// "a flag whose value may be omitted", which is not what this is.
#[derive(Debug, Clone, Copy)]
struct ControlFlag(Option<SocketAddr>);

fn parse_control_flag(s: &str) -> Result<ControlFlag, String> {
    // `off` in any case, like the enum flags.
    let word = s.trim();
    if ["off", "none"].iter().any(|w| word.eq_ignore_ascii_case(w)) {
        return Ok(ControlFlag(None));
    }
    parse_control(s).map(ControlFlag)
}

/// `--bare-lf`: the policy names, matched ignoring case (`ACCEPT` works),
/// listed in `--help` and in the error for a wrong one.
fn bare_lf_parser() -> impl clap::builder::TypedValueParser<Value = BareLfPolicy> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["accept", "reject"])
        .try_map(|s| s.to_ascii_lowercase().parse::<BareLfPolicy>())
}
