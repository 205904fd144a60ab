//! Every scenario in `configs/scenarios/` runs through the binary and
//! passes; a wrong expectation fails with exit 1 and is named; the
//! attempt-keyed scenarios repeat their counts exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mailstorm_blast::scenario::run::{self, Options};
use mailstorm_blast::scenario::Scenario;

const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-blast");

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/scenarios")
}

fn blast(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mailstorm-blast")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn passes(name: &str) {
    let path = scenarios_dir().join(name);
    let out = blast(&[
        "--scenario",
        path.to_str().unwrap(),
        "--threads",
        "2",
        "--no-pin",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{name}:\n{t}");
    assert!(t.contains("passed"), "{t}");
    // Every expectation is printed with its measured value.
    let scn = Scenario::load(&path).unwrap();
    for e in &scn.expectations {
        assert!(t.contains(&e.text), "{} missing from:\n{t}", e.text);
    }
    assert!(t.contains("(measured "), "{t}");
}

#[test]
fn greylisting_backoff() {
    passes("greylisting-backoff.yaml");
}

#[test]
fn outage_breaker() {
    passes("outage-breaker.yaml");
}

#[test]
fn rate_limited_concurrency() {
    passes("rate-limited-concurrency.yaml");
}

#[test]
fn permanent_failures() {
    passes("permanent-failures.yaml");
}

#[test]
fn flaky_relay_budget() {
    passes("flaky-relay-budget.yaml");
}

#[test]
fn every_scenario_file_has_a_test() {
    let mut names: Vec<String> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "flaky-relay-budget.yaml",
            "greylisting-backoff.yaml",
            "outage-breaker.yaml",
            "permanent-failures.yaml",
            "rate-limited-concurrency.yaml"
        ]
    );
}

#[test]
fn a_wrong_expectation_exits_1_and_is_named() {
    let src = std::fs::read_to_string(scenarios_dir().join("permanent-failures.yaml")).unwrap();
    let wrong = src.replace("  - delivered == 450\n", "  - delivered == 451\n");
    assert_ne!(wrong, src);
    let dir = std::env::temp_dir().join(format!("blast-wrong-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("wrong.yaml");
    std::fs::write(&p, wrong).unwrap();
    let out = blast(&[
        "--scenario",
        p.to_str().unwrap(),
        "--threads",
        "1",
        "--no-pin",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAILED  delivered == 451  (measured 450)"),
        "{t}"
    );
    assert!(t.contains("FAILED: delivered == 451"), "{t}");
    assert!(t.contains("    ok  rejected == 50"), "{t}");
    // A bad scenario file is a configuration error.
    std::fs::write(&p, "profile: {messages: 1}\nexpect: [\"deliverd == 1\"]\n").unwrap();
    let out = blast(&["--scenario", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown metric"), "{}", text(&out));
    std::fs::remove_dir_all(dir).ok();
}

/// The counts a deterministic scenario must repeat.
fn counts(name: &str, threads: usize) -> Vec<(String, u64)> {
    let scn = Scenario::load(&scenarios_dir().join(name)).unwrap();
    assert!(scn.deterministic, "{name} is attempt-keyed");
    let o = run::run(
        &scn,
        &Options {
            threads: Some(threads),
            no_pin: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(o.passed(), "{name} --threads {threads}: {:?}", o.failed());
    let s = o.run.resilience.as_ref().unwrap();
    let t = &s.tally;
    let mut v: Vec<(String, u64)> = vec![
        ("offered".into(), t.offered),
        ("retries".into(), t.retries),
        ("delivered".into(), t.messages.delivered),
        ("rejected".into(), t.messages.rejected),
        ("gave_up".into(), t.messages.gave_up),
        ("gave_up_budget".into(), t.messages.gave_up_budget),
        ("pending".into(), t.messages.pending),
        ("breaker_opened".into(), s.breaker.map_or(0, |b| b.opened)),
        ("sink_accepted".into(), o.sink.messages_accepted),
    ];
    for (k, n) in t.attempts.iter().enumerate().filter(|(_, n)| **n > 0) {
        v.push((format!("attempts={k}"), *n));
    }
    v
}

fn repeats(name: &str) {
    let a = counts(name, 1);
    let b = counts(name, 2);
    let c = counts(name, 2);
    assert_eq!(a, b, "{name}: --threads 1 vs 2");
    assert_eq!(b, c, "{name}: two runs with --threads 2");
}

#[test]
fn permanent_failures_repeat_exactly() {
    repeats("permanent-failures.yaml");
}

#[test]
fn flaky_relay_budget_repeats_exactly() {
    repeats("flaky-relay-budget.yaml");
}
