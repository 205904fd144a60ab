//! Trustworthy runs through the binary: no run lost to a panic, SIGTERM
//! handled like SIGINT, exit codes that fail dead or under-offered runs,
//! thresholds with units in the report, output paths checked up front.

mod common;

use common::child::Running;

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blast-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn schema() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn read_report(path: &PathBuf) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let errs = common::validate(&schema(), &v);
    assert!(errs.is_empty(), "{errs:#?}");
    v
}

fn blast(args: &[&str]) -> (Option<i32>, String, String) {
    Running::start(args, &[]).finish()
}

#[test]
fn a_shard_panic_keeps_the_run_and_exits_4() {
    let report = tmp("panic.json");
    let timeline = tmp("panic.csv");
    let run = Running::start(
        &[
            "-n",
            "200",
            "-t",
            "2",
            "-c",
            "4",
            "--no-pin",
            "--quiet",
            "--seed",
            "3",
            "--report",
            report.to_str().unwrap(),
            "--timeline",
            timeline.to_str().unwrap(),
        ],
        &[("MAILSTORM_BLAST_INJECT_PANIC", "shard-1")],
    );
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("internal error: shard 1 panicked: injected panic"),
        "{stderr}"
    );
    // Shard 0's half of the run is all there.
    assert!(stdout.contains("accepted 100"), "{stdout}");
    let v = read_report(&report);
    assert_eq!(v["messages"]["accepted"], 100, "{v}");
    assert_eq!(v["outcome"]["exit_code"], 4);
    assert_eq!(v["outcome"]["status"], "internal_error");
    assert!(v["internal_error"]
        .as_str()
        .unwrap()
        .contains("shard 1 panicked"));
    let csv = std::fs::read_to_string(&timeline).unwrap();
    assert!(csv.lines().count() >= 2, "{csv}");
}

#[test]
fn a_panic_on_the_main_thread_still_writes_a_report_and_exits_4() {
    let report = tmp("main-panic.json");
    let (code, stdout, stderr) = Running::start(
        &[
            "-d",
            "30s",
            "-t",
            "1",
            "--no-pin",
            "--quiet",
            "--interval",
            "100ms",
            "--report",
            report.to_str().unwrap(),
        ],
        &[("MAILSTORM_BLAST_INJECT_PANIC", "progress")],
    )
    .finish();
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("internal error: panicked: injected panic"),
        "{stderr}"
    );
    let v = read_report(&report);
    assert_eq!(v["outcome"]["status"], "internal_error");
    assert_eq!(v["config"]["threads"], 1, "the settings are kept");
}

#[test]
fn sigterm_finishes_in_flight_writes_everything_and_exits_5() {
    let report = tmp("sigterm.json");
    let timeline = tmp("sigterm.csv");
    let mut run = Running::start(
        &[
            "-d",
            "60s",
            "--rate",
            "200",
            "-t",
            "1",
            "--no-pin",
            "--interval",
            "200ms",
            "--report",
            report.to_str().unwrap(),
            "--timeline",
            timeline.to_str().unwrap(),
        ],
        &[],
    );
    run.wait_line("progress line", |l| l.starts_with('['));
    let sent = Instant::now();
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, stdout, stderr) = run.finish();
    assert!(sent.elapsed() < Duration::from_secs(20));
    assert_eq!(code, Some(5), "{stdout}\n{stderr}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    assert!(stdout.contains("(interrupted: partial)"), "{stdout}");
    let v = read_report(&report);
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["outcome"]["exit_code"], 5);
    assert_eq!(v["outcome"]["status"], "interrupted");
    assert!(v["messages"]["accepted"].as_u64().unwrap() > 0);
    assert_eq!(v["messages"]["failed"], 0, "in-flight messages finished");
    assert!(std::fs::read_to_string(&timeline)
        .unwrap()
        .starts_with("time_s,"));
}

#[test]
fn nothing_accepted_fails_the_run() {
    // Implicit TLS against a plain SMTP server: every handshake fails.
    let sink = common::sink();
    let target = sink.local_addr().to_string();
    let (code, stdout, stderr) = blast(&[
        "--target",
        &target,
        "--tls",
        "--insecure",
        "-n",
        "5",
        "-c",
        "1",
        "-t",
        "1",
        "--quiet",
    ]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("run failed: no message was accepted (0 of 5: failed 5 (tls_failure 5))"),
        "{stderr}"
    );
    // A test that means to be rejected says so with a threshold.
    let plan = tmp("reject-all.yaml");
    std::fs::write(
        &plan,
        "seed: 1\nrules:\n  - stage: mail\n    action: {reply: {code: 550}}\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let (code, _, stderr) = blast(&["-n", "10", "-t", "1", "--quiet", "--sink-plan", plan]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("rejected 10"), "{stderr}");
    let (code, _, stderr) = blast(&[
        "-n",
        "10",
        "-t",
        "1",
        "--quiet",
        "--sink-plan",
        plan,
        "--threshold",
        "rejected==10",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_target_that_stops_answering_fails_the_run() {
    let sink = common::sink();
    let target = sink.local_addr().to_string();
    let report = tmp("stopped.json");
    let mut run = Running::start(
        &[
            "--target",
            &target,
            "-c",
            "4",
            "-t",
            "1",
            "--no-pin",
            "-d",
            "4s",
            "--grace",
            "1s",
            "--interval",
            "250ms",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    // Kill the target once it has accepted some mail.
    run.wait_line("progress line with accepted mail", |l| {
        l.starts_with('[') && !l.contains("| accepted 0 |")
    });
    sink.shutdown_with_grace(Duration::ZERO);
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("run failed: the target stopped answering at about"),
        "{stderr}"
    );
    let v = read_report(&report);
    assert_eq!(v["outcome"]["status"], "failed");
    assert!(v["outcome"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("stopped answering"));
}

#[test]
fn a_run_whose_last_messages_time_out_is_not_a_dead_target() {
    // The target answers 38 of 40 and holds the last two end-of-data
    // replies past --timeout; the 40th also waits 1.5 s at RCPT, so the two
    // timeouts land in intervals 1.5 s apart after everything else ended.
    // Nothing new was asked of the target then: exit 0, two failures.
    let plan = tmp("tail.yaml");
    std::fs::write(
        &plan,
        "seed: 1\nrules:\n  - stage: rcpt\n    key: global\n    after: 39\n    action: {delay: 1500ms}\n  - stage: data_end\n    key: global\n    after: 38\n    action: {delay: 30s}\n",
    )
    .unwrap();
    let report = tmp("tail.json");
    let (code, stdout, stderr) = blast(&[
        "--sink-plan",
        plan.to_str().unwrap(),
        "-n",
        "40",
        "-c",
        "2",
        "-t",
        "1",
        "--timeout",
        "2s",
        "--interval",
        "500ms",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains("stopped answering"), "{stderr}");
    let v = read_report(&report);
    assert_eq!(v["messages"]["accepted"], 38, "{v}");
    assert_eq!(v["transport_errors"]["read_timeout"], 2, "{v}");
    // The timeouts did land in two silent intervals at least 1 s apart,
    // which is what the old rule took for a dead target.
    let silent: Vec<f64> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["errors"].as_u64() > Some(0))
        .map(|r| r["t_s"].as_f64().unwrap())
        .collect();
    assert!(
        silent.len() == 2 && silent[1] - silent[0] >= 1.0,
        "{silent:?}"
    );
}

#[test]
fn an_open_loop_capped_by_connections_fails_and_says_raise_c() {
    // 20 ms per message over 2 connections: about 100 msg/s of 500 asked.
    let plan = tmp("slow.yaml");
    std::fs::write(
        &plan,
        "seed: 1\nrules:\n  - stage: data_end\n    action: {delay: {fixed: 20ms}}\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let args = [
        "--sink-plan",
        plan,
        "--rate",
        "500",
        "-c",
        "2",
        "-t",
        "1",
        "-d",
        "2s",
        "--quiet",
    ];
    let (code, stdout, stderr) = blast(&args);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("raise -c"), "{stdout}");
    assert!(
        stderr.contains("never started because all 2 connections were busy: raise -c"),
        "{stderr}"
    );
    // A threshold on the target does not hide that the load was not offered.
    let mut with = args.to_vec();
    with.extend(["--threshold", "accept_rate>=0.99"]);
    let (code, _, stderr) = blast(&with);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("raise -c"), "{stderr}");
}

#[test]
fn thresholds_print_units_and_land_in_the_report() {
    let report = tmp("thresholds.json");
    let (code, _, stderr) = blast(&[
        "-n",
        "50",
        "-t",
        "1",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--threshold",
        "p99<1us,mean<10s,accept_rate>=0.99",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("FAILED  p99<1us"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let measured = line
        .split("(measured ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')');
    assert!(
        ["µs", "ms", "s"].iter().any(|u| measured.ends_with(u)),
        "{line}"
    );
    assert!(
        stderr.contains("ok  accept_rate>=0.99  (measured 1)"),
        "{stderr}"
    );
    let v = read_report(&report);
    let t = v["thresholds"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["expression"], "p99<1us");
    assert_eq!(t[0]["verdict"], "failed");
    assert_eq!(t[0]["unit"], "us");
    assert_eq!(t[0]["measured"], measured);
    assert_eq!(t[1]["verdict"], "ok");
    assert_eq!(v["outcome"]["exit_code"], 1);

    let (code, _, stderr) = blast(&["-n", "1", "--threshold", ",,,"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--threshold \",,,\": empty check"),
        "{stderr}"
    );
}

#[test]
fn output_paths_are_checked_before_the_run() {
    let missing = std::env::temp_dir().join("blast-no-such-dir-xyz/out.json");
    for flag in ["--report", "--timeline"] {
        let started = Instant::now();
        let (code, _, stderr) = blast(&["-d", "60s", "--quiet", flag, missing.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "failed at once"
        );
        assert!(
            stderr.contains(&format!("{flag} {}", missing.display())),
            "{stderr}"
        );
    }
    // An existing report keeps its content until the run writes it.
    let keep = tmp("keep.json");
    std::fs::write(&keep, "old").unwrap();
    let (code, _, _) = blast(&["--threshold", "p99<1", "--report", keep.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "old");
}

#[test]
fn enum_flags_ignore_case() {
    let (code, _, stderr) = blast(&[
        "-n",
        "5",
        "-t",
        "1",
        "--quiet",
        "--pipelining",
        "OFF",
        "--chunking",
        "Off",
        "--starttls",
        "OFF",
        "--auth-mech",
        "PLAIN",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The codes in the README's blaster exit-code table and in `--help`.
#[test]
fn readme_exit_codes_match_help() {
    let help = blast(&["--help"]).1;
    let section = help
        .split("Exit codes:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let help_codes: Vec<u32> = section
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme
        .split("<!-- blast-exit-codes -->")
        .nth(1)
        .expect("README marks the blaster's exit-code table");
    let readme_codes: Vec<u32> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.trim_matches('|').split('|').next()?.trim().parse().ok())
        .collect();
    assert_eq!(help_codes, vec![0, 1, 2, 3, 4, 5, 130]);
    assert_eq!(readme_codes, help_codes);
}
