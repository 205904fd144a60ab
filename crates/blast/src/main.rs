//! `mailstorm-blast` binary: CLI, embedded sink, SIGINT/SIGTERM, progress,
//! output files and exit codes (see `--help`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use mailstorm_blast::capacity::Endpoint;
use mailstorm_blast::cli::Args;
use mailstorm_blast::config::{self, Config};
use mailstorm_blast::{
    effective_config, fds_needed, net, report, threshold, BlastError, RunParams, RunResult,
    StopSignal,
};

mod capacity_cmd;
mod scenario_cmd;

/// The embedded default run's message cap (with the default duration).
const EMBEDDED_MESSAGES: u64 = 20_000;

use mailstorm_blast::verdict::{exit, judge};

fn main() -> ExitCode {
    // Printing into a closed pipe (`| head`) should end the program quietly,
    // as for other command-line tools, not panic on EPIPE.
    // SAFETY: called first thing in main, before any other thread exists;
    // SIG_DFL is always a valid disposition.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    // `mailstorm-blast capacity …` is its own command with its own flags
    // (the run flags included); anything else is a run.
    if std::env::args_os().nth(1).is_some_and(|a| a == "merge") {
        let argv = std::env::args_os()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, a)| a);
        let args = mailstorm_blast::merge::args::MergeArgs::parse_from(argv);
        return guarded(move || mailstorm_blast::merge::run(&args));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "capacity") {
        let argv = std::env::args_os()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, a)| a);
        let args = mailstorm_blast::capacity::args::parse_from(argv);
        return guarded(move || capacity_cmd::run(args));
    }
    // The matches are kept: `--scenario` refuses the flags given on the
    // command line (not defaults) that it would not apply.
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    guarded(move || real_main(args, &matches))
}

/// Runs `f`, mapping its error to the documented exit code; a panic is a
/// bug with its own code, never the usage-error code (the run's own panics
/// are caught closer to the run, where there are results to write).
fn guarded(f: impl FnOnce() -> anyhow::Result<u8>) -> ExitCode {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    match outcome {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            eprintln!("mailstorm-blast: {e:#}");
            let code = match e.downcast_ref::<BlastError>() {
                Some(BlastError::Unreachable(_)) => exit::UNREACHABLE,
                Some(BlastError::Internal(_)) => exit::INTERNAL,
                _ => exit::USAGE,
            };
            ExitCode::from(code)
        }
        Err(payload) => {
            eprintln!(
                "mailstorm-blast: internal error: {}",
                mailstorm_blast::panic_text(&*payload)
            );
            ExitCode::from(exit::INTERNAL)
        }
    }
}

/// `--report`, `--timeline` and `--html`: checked before the run so that
/// a long run never ends in "cannot write", written at the end.
struct Outputs {
    report: Option<PathBuf>,
    timeline: Option<PathBuf>,
    html: Option<PathBuf>,
}

impl Outputs {
    fn check(
        report: Option<&Path>,
        timeline: Option<&Path>,
        html: Option<&Path>,
    ) -> Result<Outputs, BlastError> {
        for (flag, path) in [
            ("--report", report),
            ("--timeline", timeline),
            ("--html", html),
        ] {
            // `--report -`: standard output, always writable.
            if let Some(p) = path.filter(|p| *p != Path::new("-")) {
                check_writable(p)
                    .map_err(|e| BlastError::Config(format!("{flag} {}: {e}", p.display())))?;
            }
        }
        Ok(Outputs {
            report: report.map(Path::to_path_buf),
            timeline: timeline.map(Path::to_path_buf),
            html: html.map(Path::to_path_buf),
        })
    }

    /// Writes every output it can (the timeline only when it is not empty:
    /// a capacity search has none); the first failure is returned after
    /// the others were tried.
    fn write(
        &self,
        report: Option<&serde_json::Value>,
        timeline: &str,
        title: &str,
    ) -> anyhow::Result<()> {
        let mut first_err = None;
        if let (Some(path), Some(json)) = (&self.report, report) {
            if path == Path::new("-") {
                print!("{}", report::framed(json));
                return self.write_rest(report, timeline, title, first_err);
            }
            let res = serde_json::to_string_pretty(json)
                .map_err(anyhow::Error::from)
                .and_then(|j| Ok(std::fs::write(path, j + "\n")?))
                .with_context(|| format!("writing --report {}", path.display()));
            match res {
                Ok(()) => eprintln!("report written to {}", path.display()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.write_rest(report, timeline, title, first_err)
    }

    /// The timeline and the HTML page (after the report).
    fn write_rest(
        &self,
        report: Option<&serde_json::Value>,
        timeline: &str,
        title: &str,
        mut first_err: Option<anyhow::Error>,
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.timeline {
            if let Err(e) = std::fs::write(path, timeline) {
                first_err.get_or_insert(
                    anyhow::Error::from(e)
                        .context(format!("writing --timeline {}", path.display())),
                );
            }
        }
        if let (Some(path), Some(json)) = (&self.html, report) {
            match std::fs::write(path, mailstorm_web::report_page(title, json)) {
                Ok(()) => eprintln!("HTML report written to {}", path.display()),
                Err(e) => {
                    first_err.get_or_insert(
                        anyhow::Error::from(e)
                            .context(format!("writing --html {}", path.display())),
                    );
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Opens `path` for writing without truncating it (an existing file keeps
/// its content until the run ends); a file created only for the check is
/// removed again.
fn check_writable(path: &Path) -> std::io::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if !existed {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

fn real_main(args: Args, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    if !args.scenario.is_empty() {
        return scenario_cmd::run(&args, matches);
    }
    if args.junit.is_some() {
        return Err(BlastError::Config("--junit is for --scenario".into()).into());
    }
    let mut cfg = args.to_config()?;
    if args.sink_plan.is_some() && cfg.target.is_some() {
        return Err(BlastError::Config(
            "--sink-plan is for the embedded sink: drop --target".into(),
        )
        .into());
    }
    if cfg.ledger.is_some() && !cfg.trace {
        return Err(BlastError::Config(
            "--ledger joins on the trace header: drop --no-trace".into(),
        )
        .into());
    }
    let embedded = cfg.target.is_none();
    if embedded && cfg.duration.is_none() && cfg.messages.is_none() && cfg.stages.is_none() {
        cfg.messages = Some(EMBEDDED_MESSAGES);
        cfg.duration = cfg.effective_duration();
    }
    fill_seed(&mut cfg);
    let cfg = effective_config(&cfg)?;
    let start_at = mailstorm_blast::start_at::resolve(&cfg, args.start_at.as_deref())?;
    if args.print_config {
        print!("{}", serde_yaml::to_string(&cfg.redacted())?);
        return Ok(exit::OK);
    }
    let outputs = Outputs::check(
        cfg.report.as_deref(),
        cfg.timeline.as_deref(),
        args.html.as_deref(),
    )?;
    let thresholds = cfg.threshold.as_deref().map(threshold::parse).transpose()?;
    let mut live = mailstorm_blast::live::Live::start(&args.live, &cfg)?;
    net::raise_nofile(fds_needed(&cfg, embedded))?;

    // The embedded sink lives until the end of this function.
    let (sink, ep, preflight) = connect_target(&cfg, args.sink_plan.as_deref())?;

    let stop = StopSignal::new();
    install_signal_handlers(stop.clone(), cfg.grace);
    if let Some(at) = start_at {
        if !mailstorm_blast::start_at::wait_until(at, &stop) {
            eprintln!("mailstorm-blast: stopped while waiting for --start-at");
            return Ok(exit::INTERRUPTED);
        }
    }
    let params = RunParams {
        config: cfg.clone(),
        addr: ep.addr,
        target: ep.target,
        host: ep.host,
        trusted_pem: ep.trusted_pem,
        stop,
        preflight,
    };
    let bar = progress_bar(&cfg);
    let started = Instant::now();
    // A panic on this thread while the run is collecting results (shard
    // panics are already caught by `run`): keep the settings and the error.
    // --abort-on-fail: the first check that can no longer pass stops the run.
    let mut gave_up: Option<String> = None;
    let outlook = threshold::Outlook::of(&cfg);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mailstorm_blast::run(&params, |p| {
            mailstorm_blast::fault::maybe_panic_in_progress();
            if args.abort_on_fail && gave_up.is_none() {
                if let Some(c) = thresholds
                    .iter()
                    .flatten()
                    .find(|c| c.cannot_pass(p.totals, &outlook))
                {
                    gave_up = Some(c.text().to_string());
                    params.stop.trigger();
                }
            }
            live.interval(&params, p);
            let line = report::progress_line(p);
            match &bar {
                Some(b) => b.set_message(line),
                None if !cfg.quiet => eprintln!("{line}"),
                None => {}
            }
        })
    }));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut result = match ran {
        Ok(r) => r?,
        Err(payload) => RunResult::empty(
            cfg.clone(),
            params.target.clone(),
            started.elapsed(),
            format!("panicked: {}", mailstorm_blast::panic_text(&*payload)),
        ),
    };

    if let Some(c) = &gave_up {
        // Stopped by its own checks, not by a signal: the checks judge it.
        result.interrupted = false;
        eprintln!("--abort-on-fail: {c} can no longer pass: run stopped");
    }
    result.ledger = join_ledger(&cfg, sink.as_ref(), &result);
    print!("{}", report::summary(&result));
    if let Some(j) = &result.ledger {
        print!("{}", mailstorm_blast::ledger::summary(j));
    }
    if let Some(s) = sink {
        let st = s.shutdown_with_grace(Duration::from_secs(1));
        println!(
            "embedded sink: {} messages accepted, {} rejected, {} connections",
            st.messages_accepted, st.messages_rejected, st.connections_total
        );
    }
    let checked = thresholds.map(|checks| threshold::evaluate(&checks, &result));
    if let Some(outcomes) = &checked {
        eprintln!("thresholds:");
        for o in outcomes {
            eprintln!("{}", threshold::describe(o));
        }
    }
    let (code, status, reasons) = judge(&result, checked.as_deref());
    let mut json = report::to_json(&result);
    if let (Some(j), Some(obj)) = (&result.ledger, json.as_object_mut()) {
        obj.insert("ledger".into(), serde_json::to_value(j)?);
    }
    report::add_outcome(&mut json, checked.as_deref(), code, status, &reasons);
    json["aborted_on_fail"] = gave_up
        .as_deref()
        .map_or(serde_json::Value::Null, |c| c.into());
    let written = outputs.write(
        Some(&json),
        &report::timeline_csv(&result),
        "mailstorm-blast run",
    );
    match code {
        exit::INTERNAL | exit::UNREACHABLE => {
            for r in &reasons {
                eprintln!("mailstorm-blast: {r}");
            }
        }
        exit::FAILED => {
            let failed: Vec<&str> = checked
                .iter()
                .flatten()
                .filter(|o| !o.passed)
                .map(|o| o.text.as_str())
                .collect();
            if !failed.is_empty() {
                eprintln!("threshold failed: {}", failed.join(", "));
            }
            for r in reasons.iter().filter(|r| r.starts_with("run failed")) {
                eprintln!("{r}");
            }
        }
        _ => {}
    }
    live.end(&result, &json, &params.stop);
    written?;
    Ok(code)
}

/// After the run: the ledger join with `--ledger URL`, or with the embedded
/// sink's own ledger. A join that cannot reach the sink is reported and
/// leaves the run without a ledger section (ledger thresholds then fail).
fn join_ledger(
    cfg: &mailstorm_blast::config::Config,
    sink: Option<&mailstorm_sink::SinkHandle>,
    result: &RunResult,
) -> Option<mailstorm_blast::ledger::Joined> {
    use mailstorm_blast::ledger::{join, Source};
    let src = match (&cfg.ledger, sink) {
        (Some(url), _) => Source::Url(url.clone()),
        (None, Some(s)) if cfg.trace => Source::Embedded(s.ledger().clone()),
        _ => return None,
    };
    if result.internal_error.is_some() {
        return None;
    }
    let accepted = result.totals.counters.rcpt_delivered;
    match join(&src, cfg, accepted, cfg.drain, |line| {
        if !cfg.quiet {
            eprintln!("{line}");
        }
    }) {
        Ok(j) => Some(j),
        Err(e) => {
            eprintln!("mailstorm-blast: ledger join failed: {e}");
            None
        }
    }
}

/// A seed from the clock when none was given (reported, so the run can be
/// reproduced with --seed).
fn fill_seed(cfg: &mut Config) {
    if let (0, Some(_), Some(run)) = (cfg.seed, cfg.shard, &cfg.run_id) {
        // Every shard the same seed: per-message draws match the single run.
        cfg.seed = mailstorm_blast::shard_split::run_seed(run);
    }
    if cfg.seed == 0 {
        cfg.seed = mailstorm_blast::rng::splitmix64(
            &mut (std::process::id() as u64
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)),
        ) | 1;
    }
}

/// Starts the embedded sink (without --target) or resolves the target;
/// refuses a target outside loopback without --allow-remote and checks
/// that it answers a TCP connect. The sink must live as long as the load.
/// An `mx:DOMAIN` target's lookup at start comes back too: the run goes on
/// with its cache and counters.
fn connect_target(
    cfg: &Config,
    sink_plan: Option<&Path>,
) -> anyhow::Result<(
    Option<mailstorm_sink::SinkHandle>,
    Endpoint,
    Option<mailstorm_blast::target::Preflight>,
)> {
    let mut pre = None;
    let sink = match cfg.target {
        None => Some(start_sink(cfg, sink_plan)?),
        Some(_) => None,
    };
    let ep = match &sink {
        Some(s) => {
            let addr = if cfg.tls {
                s.tls_addrs()[0]
            } else {
                s.local_addr()
            };
            let pem = s.self_signed_cert_pem().map(String::into_bytes);
            Endpoint {
                addr,
                target: addr.to_string(),
                host: addr.ip().to_string(),
                trusted_pem: pem,
            }
        }
        None => {
            let t = cfg.target.clone().unwrap_or_default();
            let (addr, host) = match mailstorm_blast::target::parse(&t)? {
                mailstorm_blast::target::TargetSpec::Host(_) => net::resolve(&t)?,
                // Domain and relay targets pick an address per connection
                // (checked for loopback there); `addr` is unused.
                mailstorm_blast::target::TargetSpec::Mx(d) => {
                    pre = mailstorm_blast::target::preflight(cfg)?;
                    if let Some(w) = pre.as_ref().and_then(|p| p.warning.as_ref()) {
                        eprintln!("mailstorm-blast: warning: {w}");
                    }
                    (SocketAddr::from(([127, 0, 0, 1], cfg.smtp_port)), d)
                }
                mailstorm_blast::target::TargetSpec::Relays(r) => net::resolve(&r[0].0)?,
            };
            Endpoint {
                addr,
                target: t,
                host,
                trusted_pem: None,
            }
        }
    };
    let routed = !matches!(
        cfg.target.as_deref().map(mailstorm_blast::target::parse),
        None | Some(Ok(mailstorm_blast::target::TargetSpec::Host(_)))
    );
    if routed {
        // Per-connection routing: no single address to check up front.
        return Ok((sink, ep, pre));
    }
    if !ep.addr.ip().is_loopback() && !cfg.allow_remote {
        return Err(BlastError::Config(format!(
            "target {} ({}) is outside loopback: add --allow-remote if you mean to load it",
            ep.target,
            ep.addr.ip()
        ))
        .into());
    }
    preflight(ep.addr, cfg.timeouts.connect)?;
    Ok((sink, ep, pre))
}

fn start_sink(
    cfg: &Config,
    plan: Option<&std::path::Path>,
) -> anyhow::Result<mailstorm_sink::SinkHandle> {
    let local: SocketAddr = "127.0.0.1:0".parse()?;
    let mut b = mailstorm_sink::Sink::builder()
        .hostname("localhost")
        .lmtp(cfg.lmtp)
        .tls(cfg.uses_tls());
    if let Some(p) = plan {
        // Loads the plan (and installs a fault engine) at start.
        b = b.plan_file(p);
    }
    b = if cfg.tls {
        b.tls_listen(local)
    } else {
        b.listen(local)
    };
    b.start()
        .map_err(|e| BlastError::Config(format!("embedded sink: {e}")).into())
}

fn preflight(addr: SocketAddr, timeout: Duration) -> Result<(), BlastError> {
    std::net::TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| BlastError::Unreachable(format!("{addr}: {e}")))
}

/// SIGINT and SIGTERM (what `timeout`, CI cancellation and `docker stop`
/// send) both stop the run gracefully: no new messages, in-flight ones get
/// the grace period, every output is written. A second one exits at once.
fn install_signal_handlers(stop: Arc<StopSignal>, grace: Duration) {
    // A small runtime on its own thread: tokio's signal handling is
    // async-signal-safe and needs no unsafe code here.
    let spawned = std::thread::Builder::new()
        .name("blast-signals".into())
        .spawn(move || {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("mailstorm-blast: no signal handling: cannot start its runtime");
                return;
            };
            rt.block_on(async {
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    eprintln!("mailstorm-blast: no signal handling: cannot register handlers");
                    return;
                };
                let mut first = true;
                loop {
                    let name = tokio::select! {
                        Some(()) = int.recv() => "SIGINT",
                        Some(()) = term.recv() => "SIGTERM",
                        else => return,
                    };
                    if !first {
                        eprintln!("mailstorm-blast: second {name}, exiting now");
                        std::process::exit(exit::ABORTED);
                    }
                    first = false;
                    eprintln!(
                        "mailstorm-blast: {name}: stopping; in-flight messages get up to {} \
                         (send it again to exit at once)",
                        config::format_duration(grace)
                    );
                    stop.trigger();
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("mailstorm-blast: no signal handling: {e}");
    }
}

fn progress_bar(cfg: &Config) -> Option<indicatif::ProgressBar> {
    if cfg.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.enable_steady_tick(Duration::from_millis(200));
    b.set_message("starting…");
    Some(b)
}
