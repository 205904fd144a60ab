//! The binary: exit codes, report schema, thresholds, timeline, SIGINT.

mod common;

use common::child::Running;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-blast");

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the binary with a hard time cap.
fn blast(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mailstorm-blast {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn schema() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn embedded_run_writes_a_valid_report_and_timeline() {
    let report = tmp("embedded.json");
    let timeline = tmp("embedded.csv");
    let out = blast(&[
        "-n",
        "300",
        "-t",
        "2",
        "--seed",
        "5",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
        "--timeline",
        timeline.to_str().unwrap(),
        "--threshold",
        "accept_rate>=0.99,5xx==0,p99<5s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("accepted 300"), "{stdout}");
    assert!(
        stdout.contains("embedded sink: 300 messages accepted"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let errs = common::validate(&schema(), &v);
    assert!(errs.is_empty(), "{errs:#?}");
    assert_eq!(v["messages"]["accepted"], 300);
    assert_eq!(v["config"]["seed"], 5);
    assert!(
        v["resilience"].is_null(),
        "no policy: no resilience section"
    );
    // The histograms decode and agree with the summary.
    let h = mailstorm_blast::report::decode_histogram(v["histograms"]["message"].as_str().unwrap())
        .unwrap();
    assert_eq!(h.len(), 300);
    assert_eq!(v["latency_us"]["message"]["count"], 300);
    let csv = std::fs::read_to_string(&timeline).unwrap();
    assert!(csv.starts_with(
        "time_s,sent,accepted,4xx,5xx,errors,p50_us,p99_us,offered,late,not_started,\
         open_connections,deferred,rejected,failed,"
    ));
    // One column per reply code seen: the embedded sink answers 220, 250, 221.
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",code_220,code_221,code_250"),
        "{csv}"
    );
    let accepted: u64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(accepted, 300);
}

#[test]
fn schema_rejects_a_broken_report() {
    // The validator and schema are strict enough to catch a missing field.
    let mut v = serde_json::json!({
        "schema": "mailstorm.report/2", "targets": ["x"], "duration_s": 1.0,
        "config": {}, "messages": {"attempted": 1}, "connections": {},
        "throughput": {}, "replies": {}, "transport_errors": {},
        "latency_us": {}, "histograms": {}
    });
    assert!(!common::validate(&schema(), &v).is_empty());
    v["schema"] = serde_json::json!("mailstorm.report/1");
    assert!(common::validate(&schema(), &v)
        .iter()
        .any(|e| e.contains("mailstorm.report/2")));
}

#[test]
fn failed_threshold_exits_1_and_names_the_check() {
    let out = blast(&[
        "-n",
        "50",
        "-t",
        "1",
        "--quiet",
        "--threshold",
        "5xx==0,accepted>1000000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("threshold failed: accepted>1000000"), "{err}");
    assert!(!err.contains("threshold failed: 5xx"), "{err}");
}

#[test]
fn sink_plan_is_loaded_into_the_embedded_sink() {
    let plan = tmp("reject-all.yaml");
    std::fs::write(
        &plan,
        "seed: 1\nrules:\n  - stage: rcpt\n    action: {reply: {code: 550, enhanced: 5.1.1}}\n",
    )
    .unwrap();
    let report = tmp("sink-plan.json");
    let out = blast(&[
        "-n",
        "20",
        "-t",
        "1",
        "--quiet",
        "--sink-plan",
        plan.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        // Everything is rejected on purpose: say so, or the run fails.
        "--threshold",
        "rejected==20",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["messages"]["rejected"], 20, "{v}");
    assert_eq!(v["replies"]["rcpt"]["550 5.1.1"], 20, "{v}");
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    for args in [
        &["--no-such-flag"][..],
        &["--threshold", "p99<200"],
        &["--size", "9k..1k"],
        &["--target", "192.0.2.1:25", "-n", "1"],
        &["--sink-plan", "no-such-plan.yaml"],
        &["--tls", "--starttls", "required"],
        &["--time-scale", "0.1", "-n", "1"],
        // Durations past 365d and absurd shard counts: each of these once
        // reached the run and panicked (clock overflow) or spawned threads.
        &["-d", "18446744073709551615"],
        &["--timeout", "18446744073709551615", "-n", "1"],
        &["--interval", "400d", "-n", "1"],
        &["--threads", "5000", "-n", "1"],
        // Files are read bounded: a device never ends.
        &["--eml", "/dev/zero", "-n", "1"],
        &["--profile", "/dev/zero"],
    ] {
        let out = blast(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let says = |args: &[&str], needles: &[&str]| {
        let err = text(&blast(args).stderr);
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
        }
    };
    says(
        &["--target", "192.0.2.1:25", "-n", "1"],
        &["--allow-remote"],
    );
    says(
        &["--sink-plan", "no-such-plan.yaml"],
        &["cannot read plan no-such-plan.yaml"],
    );
    says(&["--time-scale", "0.1", "-n", "1"], &["policy"]);
    says(&["--interval", "400d", "-n", "1"], &["\"400d\"", "365d"]);
    says(
        &["--threads", "5000", "-n", "1"],
        &["--threads 5000: at most 1024"],
    );
    says(
        &["--eml", "/dev/zero", "-n", "1"],
        &["--eml /dev/zero: larger than 64MiB"],
    );
    let help = blast(&["--help"]);
    let h = text(&help.stdout);
    assert!(
        h.contains("Exit codes") && h.contains("3  target unreachable"),
        "{h}"
    );
}

#[test]
fn unreachable_target_exits_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let out = blast(&["--target", &target, "-n", "1", "--quiet"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unreachable"));
}

#[test]
fn sigint_writes_a_partial_report() {
    let report = tmp("sigint.json");
    let mut run = Running::start(
        &[
            "-d",
            "60s",
            "--rate",
            "200",
            "-t",
            "1",
            "--interval",
            "200ms",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    run.wait_line("a progress line", |l| l.starts_with('['));
    let started = Instant::now();
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, stderr) = run.finish();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "exit took {:?} after SIGINT",
        started.elapsed()
    );
    assert_eq!(
        code,
        Some(5),
        "the documented interrupted code; stderr: {stderr}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(common::validate(&schema(), &v).is_empty());
    assert_eq!(v["interrupted"], true);
    assert!(v["duration_s"].as_f64().unwrap() < 30.0);
    let accepted = v["messages"]["accepted"].as_u64().unwrap();
    assert!(accepted > 0);
    assert_eq!(v["messages"]["failed"], 0, "in-flight messages finished");
}

#[test]
fn scenario_refuses_run_flags_it_would_ignore() {
    let scn = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/scenarios/greylisting-backoff.yaml"
    );
    let out = blast(&["--scenario", scn, "-n", "5", "--target", "127.0.0.1:25"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--target, --messages would not apply"),
        "{err}"
    );
}

#[test]
fn several_scenarios_write_a_junit_report() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/scenarios");
    let good = format!("{dir}/permanent-failures.yaml");
    let junit = tmp("scenarios.xml");
    let out = blast(&[
        "--scenario",
        &good,
        "/nonexistent/missing.yaml",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a scenario could not run: {err}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    std::fs::remove_file(&junit).ok();
    assert!(
        xml.contains("<testsuites tests=\"2\" failures=\"0\" errors=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("classname=\"/nonexistent/missing.yaml\""),
        "{xml}"
    );
    assert!(xml.contains(&format!("classname=\"{good}\"")), "{xml}");
    // --report takes a single scenario.
    let out = blast(&["--scenario", &good, &good, "--report", "/tmp/x.json"]);
    assert_eq!(out.status.code(), Some(2));
}
