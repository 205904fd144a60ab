//! `mailstorm-blast --scenario FILE...`: each scenario against the embedded
//! sink or the relay it names, its verdict, and `--junit` for CI.

use anyhow::Context;
use mailstorm_blast::cli::Args;
use mailstorm_blast::{report, BlastError};
use std::time::Instant;

use super::{check_writable, Outputs};

/// `--scenario FILE...`: each scenario in turn; `--junit` gets one test
/// case per file. Exit 1 when any scenario failed or could not run; exit 2
/// (before any scenario runs) for a flag a scenario would not apply.
pub(crate) fn run(args: &Args, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    use mailstorm_blast::scenario::junit::{to_xml, Case};
    args.live.refuse("--scenario")?;
    // Every other run flag given on the command line either applies
    // (scenario::flags::APPLIED, wired in below) or is refused here.
    mailstorm_blast::scenario::flags::refuse_not_applied(matches)?;
    if args.scenario.len() > 1 && (args.report.is_some() || args.html.is_some()) {
        return Err(BlastError::Config(
            "--report and --html take one scenario; with several use --junit".into(),
        )
        .into());
    }
    let outputs = Outputs::check(args.report.as_deref(), None, args.html.as_deref())?;
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
        match scenario_main(args, &outputs, path) {
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
fn scenario_main(
    args: &Args,
    outputs: &Outputs,
    path: &std::path::Path,
) -> anyhow::Result<(u8, String, Vec<String>)> {
    use mailstorm_blast::scenario::{run, Scenario};
    let scn = Scenario::load(path).map_err(|e| BlastError::Config(e.to_string()))?;
    let opts = run::Options {
        threads: args.threads,
        time_scale: args.time_scale,
        seed: args.seed,
        no_pin: args.no_pin,
        quiet: args.quiet,
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
    let code = if o.passed() { 0 } else { 1 };
    if outputs.report.is_some() || outputs.html.is_some() {
        let mut j = report::to_json(&o.run);
        if let Some(l) = &o.ledger {
            j["ledger"] = serde_json::to_value(l)?;
        }
        // The verdict as for a plain run: the failed expectations are the
        // reasons (the HTML page shows it, and every expectation below).
        let reasons: Vec<String> = o
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("expectation failed: {} (measured {})", c.text, c.shown))
            .collect();
        let status = if o.passed() { "ok" } else { "failed" };
        report::add_outcome(&mut j, None, code, status, &reasons);
        j["scenario"] = run::to_json(&scn, &o);
        outputs.write(
            Some(&j),
            "",
            &format!("mailstorm-blast scenario {}", scn.name),
        )?;
    }
    print!("{}", run::describe(&scn, &o));
    let failures = o
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(mailstorm_blast::scenario::expect::describe)
        .collect();
    Ok((code, scn.name.clone(), failures))
}
