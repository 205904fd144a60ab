//! `mailstorm-blast capacity`: set-up, the search, its outputs and its exit
//! code (see `mailstorm-blast capacity --help`).

use std::time::Duration;

use mailstorm_blast::capacity::args::CapacityArgs;
use mailstorm_blast::capacity::{self, output, Capacity, Limit};
use mailstorm_blast::{effective_config, fds_needed, net, BlastError, StopSignal};

use super::{check_writable, connect_target, exit, fill_seed, install_signal_handlers, Outputs};

/// The exit code, the report's status and the reasons behind them.
fn judge(cap: &Capacity) -> (u8, &'static str, Vec<String>) {
    if let Some(e) = &cap.error {
        let code = match e {
            BlastError::Config(_) => exit::USAGE,
            BlastError::Unreachable(_) => exit::UNREACHABLE,
            _ => exit::INTERNAL,
        };
        return (code, "error", vec![e.to_string()]);
    }
    if cap.interrupted {
        return (
            exit::INTERRUPTED,
            "interrupted",
            vec!["interrupted by a signal: partial results".into()],
        );
    }
    match (&cap.knee, &cap.limited_by) {
        (None, _) => (exit::FAILED, "failed", vec![cap.verdict()]),
        (Some(_), Some((Limit::Generator, why))) => (
            exit::FAILED,
            "generator_limited",
            vec![format!(
                "the result is a lower bound: limited by the generator: {why}"
            )],
        ),
        _ => (exit::OK, "ok", Vec::new()),
    }
}

/// Runs the capacity command.
pub(super) fn run(args: CapacityArgs) -> anyhow::Result<u8> {
    let (mut cfg, opts) = args.to_parts()?;
    if args.run.sink_plan.is_some() && cfg.target.is_some() {
        return Err(BlastError::Config(
            "--sink-plan is for the embedded sink: drop --target".into(),
        )
        .into());
    }
    fill_seed(&mut cfg);
    // Threads and timeouts as a step at the highest rate would have them.
    cfg.rate = Some(opts.max_rate);
    cfg.duration = Some(opts.warmup + opts.step_duration);
    let base = effective_config(&cfg)?;
    let outputs = Outputs::check(cfg.report.as_deref(), None, args.run.html.as_deref())?;
    if let Some(p) = &args.csv {
        check_writable(p).map_err(|e| BlastError::Config(format!("--csv {}: {e}", p.display())))?;
    }
    net::raise_nofile(fds_needed(&base, base.target.is_none()))?;
    let (sink, ep, _) = connect_target(&base, args.run.sink_plan.as_deref())?;
    let stop = StopSignal::new();
    install_signal_handlers(stop.clone(), base.grace);
    if !base.quiet {
        eprintln!(
            "capacity search → {}: SLA {} (and achieved >= {:.0}% of offered), abort if {}; \
             at most {} steps, {} s",
            ep.target,
            opts.sla_text,
            opts.min_achieved * 100.0,
            opts.abort_text,
            opts.max_steps(),
            opts.max_duration(base.grace).as_secs()
        );
        eprintln!("{}", output::header());
    }
    let quiet = base.quiet;
    let searched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        capacity::search(&base, &ep, &opts, &stop, |s| {
            if !quiet {
                eprintln!("{}", output::step_line(s));
            }
        })
    }));
    let cap = match searched {
        Ok(c) => c,
        Err(payload) => Capacity {
            steps: Vec::new(),
            knee: None,
            first_bad: None,
            limited_by: None,
            interrupted: stop.is_triggered(),
            error: Some(BlastError::Internal(format!(
                "panicked: {}",
                mailstorm_blast::panic_text(&*payload)
            ))),
            elapsed: Duration::ZERO,
        },
    };
    if let Some(s) = sink {
        s.shutdown_with_grace(Duration::from_secs(1));
    }
    print!("{}", output::summary(&cap, &ep.target));
    let (code, status, reasons) = judge(&cap);
    let mut json = output::to_json(&cap, &opts, &base, &ep.target);
    json["outcome"] = serde_json::json!({
        "status": status,
        "exit_code": code,
        "reasons": reasons,
    });
    for r in &reasons {
        eprintln!("mailstorm-blast capacity: {r}");
    }
    let mut written = outputs.write(Some(&json), "", "mailstorm-blast capacity");
    if let Some(p) = &args.csv {
        if let Err(e) = std::fs::write(p, output::csv(&cap)) {
            let e = anyhow::Error::from(e).context(format!("writing --csv {}", p.display()));
            if written.is_ok() {
                written = Err(e);
            }
        }
    }
    written?;
    Ok(code)
}
