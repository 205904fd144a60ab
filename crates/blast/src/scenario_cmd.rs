//! `mailstorm-blast --scenario FILE...`: each scenario against the embedded
//! sink or the relay it names, its verdict, and `--junit` for CI.

use anyhow::Context;
use mailstorm_blast::cli::Args;
use mailstorm_blast::{report, BlastError};
use std::time::Instant;

use super::{check_writable, Outputs};

/// `--scenario FILE...`: each scenario in turn; `--junit` gets one test
/// case per file. Exit 1 when any scenario failed or could not run.
pub(crate) fn run(args: &Args) -> anyhow::Result<u8> {
    use mailstorm_blast::scenario::junit::{to_xml, Case};
    args.live.refuse("--scenario")?;
    if args.scenario.len() > 1 && args.report.is_some() {
        return Err(BlastError::Config(
            "--report takes one scenario; with several use --junit".into(),
        )
        .into());
    }
    if let Some(p) = &args.junit {
        check_writable(p).with_context(|| format!("--junit {}", p.display()))?;
    }
    let mut cases = Vec::new();
    let mut code = 0;
    for path in &args.scenario {
        let started = Instant::now();
        let mut case = Case {
            name: path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            file: path.display().to_string(),
            ..Case::default()
        };
        match scenario_main(args, path) {
            Ok((c, name, failures)) => {
                code = code.max(c);
                case.name = name;
                case.failures = failures;
            }
            // One scenario alone keeps its own exit code (2 for a bad file).
            Err(e) if args.scenario.len() == 1 && args.junit.is_none() => return Err(e),
            Err(e) => {
                eprintln!("mailstorm-blast: scenario {}: {e:#}", path.display());
                code = code.max(1);
                case.error = Some(format!("{e:#}"));
            }
        }
        case.seconds = started.elapsed().as_secs_f64();
        cases.push(case);
    }
    if let Some(p) = &args.junit {
        std::fs::write(p, to_xml("mailstorm-blast scenarios", &cases))
            .with_context(|| format!("writing --junit {}", p.display()))?;
        eprintln!("JUnit report written to {}", p.display());
    }
    Ok(code)
}

/// One scenario: its exit code (0 or 1), name and failed expectations.
fn scenario_main(args: &Args, path: &std::path::Path) -> anyhow::Result<(u8, String, Vec<String>)> {
    use mailstorm_blast::scenario::{run, Scenario};
    // A scenario runs its own profile against the embedded sink: run flags
    // would be silently ignored, so they are refused.
    let ignored: Vec<&str> = [
        ("--target", !args.target.is_empty()),
        ("--concurrency", args.concurrency.is_some()),
        ("--messages", args.messages.is_some()),
        ("--duration", args.duration.is_some()),
        ("--rate", args.rate.is_some()),
        ("--stages", args.stages.is_some()),
        ("--timeline", args.timeline.is_some()),
        ("--threshold", args.threshold.is_some()),
        ("--sink-plan", args.sink_plan.is_some()),
        ("--ledger", args.ledger.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if !ignored.is_empty() {
        return Err(BlastError::Config(format!(
            "--scenario runs the scenario's own profile and plan: {} would not apply; \
             put the settings in the scenario file",
            ignored.join(", ")
        ))
        .into());
    }
    let scn = Scenario::load(path).map_err(|e| BlastError::Config(e.to_string()))?;
    Outputs::check(args.report.as_deref(), None, None)?;
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
    if let Some(j) = &o.ledger {
        print!("{}", mailstorm_blast::ledger::summary(j));
    }
    match (&scn.target, &o.downstream) {
        (None, _) => println!(
            "embedded sink: {} messages accepted, {} rejected, {} connections",
            o.sink.messages_accepted, o.sink.messages_rejected, o.sink.connections_total
        ),
        (Some(_), Some(d)) => println!(
            "downstream sink {d}: {} messages accepted, {} rejected, {} connections",
            o.sink.messages_accepted, o.sink.messages_rejected, o.sink.connections_total
        ),
        (Some(_), None) => {}
    }
    if let Some(p) = &args.report {
        let mut j = report::to_json(&o.run);
        if let Some(l) = &o.ledger {
            j["ledger"] = serde_json::to_value(l)?;
        }
        j["scenario"] = run::to_json(&scn, &o);
        std::fs::write(p, serde_json::to_string_pretty(&j)? + "\n")
            .with_context(|| format!("writing report {}", p.display()))?;
        eprintln!("report written to {}", p.display());
    }
    print!("{}", run::describe(&scn, &o));
    let failures = o
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(mailstorm_blast::scenario::expect::describe)
        .collect();
    Ok((if o.passed() { 0 } else { 1 }, scn.name.clone(), failures))
}
