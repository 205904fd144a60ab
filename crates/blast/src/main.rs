//! `mailstorm-blast` binary: CLI, embedded sink, SIGINT, progress, output
//! files and exit codes (see `--help`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mailstorm_blast::cli::Args;
use mailstorm_blast::config::Config;
use mailstorm_blast::{
    effective_config, fds_needed, net, report, threshold, BlastError, RunParams, StopSignal,
};

/// The embedded default run's message cap (with the default duration).
const EMBEDDED_MESSAGES: u64 = 20_000;

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
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mailstorm-blast: {e:#}");
            let code = match e.downcast_ref::<BlastError>() {
                Some(BlastError::Unreachable(_)) => 3,
                _ => 2,
            };
            ExitCode::from(code)
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<u8> {
    if let Some(path) = &args.scenario {
        return scenario_main(&args, path);
    }
    let mut cfg = args.to_config()?;
    if args.sink_plan.is_some() && cfg.target.is_some() {
        return Err(BlastError::Config(
            "--sink-plan is for the embedded sink: drop --target".into(),
        )
        .into());
    }
    let embedded = cfg.target.is_none();
    if embedded && cfg.duration.is_none() && cfg.messages.is_none() && cfg.stages.is_none() {
        cfg.messages = Some(EMBEDDED_MESSAGES);
        cfg.duration = cfg.effective_duration();
    }
    if cfg.seed == 0 {
        // Reported, so the run can be reproduced with --seed.
        cfg.seed = mailstorm_blast::rng::splitmix64(
            &mut (std::process::id() as u64
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)),
        ) | 1;
    }
    let cfg = effective_config(&cfg)?;
    net::raise_nofile(fds_needed(&cfg, embedded))?;

    // The embedded sink lives until the end of this function.
    let sink = if embedded {
        Some(start_sink(&cfg, args.sink_plan.as_deref())?)
    } else {
        None
    };
    let (addr, target, host, trusted) = match &sink {
        Some(s) => {
            let addr = if cfg.tls {
                s.tls_addrs()[0]
            } else {
                s.local_addr()
            };
            let pem = s.self_signed_cert_pem().map(String::into_bytes);
            (addr, addr.to_string(), addr.ip().to_string(), pem)
        }
        None => {
            let t = cfg.target.clone().unwrap_or_default();
            let (addr, host) = net::resolve(&t)?;
            (addr, t, host, None)
        }
    };
    if !addr.ip().is_loopback() && !cfg.allow_remote {
        return Err(BlastError::Config(format!(
            "target {target} ({}) is outside loopback: add --allow-remote if you mean to load it",
            addr.ip()
        ))
        .into());
    }
    preflight(addr, cfg.timeouts.connect)?;

    let stop = StopSignal::new();
    install_sigint(stop.clone());
    let params = RunParams {
        config: cfg.clone(),
        addr,
        target,
        host,
        trusted_pem: trusted,
        stop,
    };
    let bar = progress_bar(&cfg);
    let result = mailstorm_blast::run(&params, |p| {
        let line = report::progress_line(p);
        match &bar {
            Some(b) => b.set_message(line),
            None if !cfg.quiet => eprintln!("{line}"),
            None => {}
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    print!("{}", report::summary(&result));
    if let Some(s) = sink {
        let st = s.shutdown_with_grace(Duration::from_secs(1));
        println!(
            "embedded sink: {} messages accepted, {} rejected, {} connections",
            st.messages_accepted, st.messages_rejected, st.connections_total
        );
    }
    if let Some(path) = &cfg.report {
        let json = serde_json::to_string_pretty(&report::to_json(&result))?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing report {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &cfg.timeline {
        std::fs::write(path, report::timeline_csv(&result))
            .with_context(|| format!("writing timeline {}", path.display()))?;
    }
    let c = &result.totals.counters;
    if c.conn_opened == 0 && c.attempted > 0 {
        return Err(BlastError::Unreachable(format!(
            "no connection to {} could be opened",
            result.target
        ))
        .into());
    }
    if let Some(spec) = &cfg.threshold {
        let checks = threshold::parse(spec)?;
        let outcomes = threshold::evaluate(&checks, &result);
        eprintln!("thresholds:");
        for o in &outcomes {
            eprintln!("{}", threshold::describe(o));
        }
        let failed: Vec<&str> = outcomes
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.text.as_str())
            .collect();
        if !failed.is_empty() {
            eprintln!("threshold failed: {}", failed.join(", "));
            return Ok(1);
        }
    }
    Ok(0)
}

/// `--scenario FILE`: the embedded sink with the plan, the profile, every
/// expectation printed with its measured value; 1 when one fails.
fn scenario_main(args: &Args, path: &std::path::Path) -> anyhow::Result<u8> {
    use mailstorm_blast::scenario::{run, Scenario};
    let scn = Scenario::load(path).map_err(|e| BlastError::Config(e.to_string()))?;
    let opts = run::Options {
        threads: args.threads,
        time_scale: args.time_scale,
        seed: args.seed,
        no_pin: args.no_pin,
    };
    if let Some(d) = &scn.description {
        println!("scenario {}: {d}", scn.name);
    }
    let o = run::run(&scn, &opts)?;
    print!("{}", report::summary(&o.run));
    println!(
        "embedded sink: {} messages accepted, {} rejected, {} connections",
        o.sink.messages_accepted, o.sink.messages_rejected, o.sink.connections_total
    );
    if let Some(p) = &args.report {
        let mut j = report::to_json(&o.run);
        j["scenario"] = run::to_json(&scn, &o);
        std::fs::write(p, serde_json::to_string_pretty(&j)? + "\n")
            .with_context(|| format!("writing report {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    }
    print!("{}", run::describe(&scn, &o));
    Ok(if o.passed() { 0 } else { 1 })
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

fn install_sigint(stop: Arc<StopSignal>) {
    // A small runtime on its own thread: tokio's signal handling is
    // async-signal-safe and needs no unsafe code here.
    let spawned = std::thread::Builder::new()
        .name("blast-sigint".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let mut first = true;
                while tokio::signal::ctrl_c().await.is_ok() {
                    if !first {
                        eprintln!("mailstorm-blast: second interrupt, exiting now");
                        std::process::exit(130);
                    }
                    first = false;
                    eprintln!(
                        "mailstorm-blast: interrupted: finishing in-flight messages \
                         (Ctrl-C again to abort)"
                    );
                    stop.trigger();
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("mailstorm-blast: no SIGINT handling: {e}");
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
