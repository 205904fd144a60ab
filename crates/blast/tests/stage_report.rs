//! The per-stage table of a `--stages` run, stage-named thresholds, the
//! timeline's new columns and `--abort-on-fail`, through the binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-blast");

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("blast-stage-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the binary with a hard time cap: (exit code, stdout, stderr, time).
fn blast(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            return (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
                t0.elapsed(),
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{args:?} hung");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stages_table_has_rates_latency_and_stage_thresholds_name_their_stage() {
    let report = tmp("stages.json");
    let timeline = tmp("stages.csv");
    let (code, out, err, _) = blast(&[
        "--stages",
        "1s:100,1s:400",
        "--stages-mode",
        "rate",
        "-c",
        "16",
        "--interval",
        "250ms",
        "--no-pin",
        "-q",
        "--threshold",
        "stage1:accept_rate>=0.99,stage2:p99<1us,stage2:messages_per_s>=300,messages_per_s<=150",
        "--report",
        report.to_str().unwrap(),
        "--timeline",
        timeline.to_str().unwrap(),
    ]);
    // The impossible latency check of stage 2 fails, and is named; the
    // whole-run rate cap fails and names the stage that broke it.
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("threshold failed: stage2:p99<1us"), "{err}");
    assert!(
        err.contains("FAILED  messages_per_s<=150  (measured ")
            && err.contains("first broken in stage 2"),
        "{err}"
    );
    assert!(err.contains("ok  stage1:accept_rate>=0.99"), "{err}");
    assert!(err.contains("ok  stage2:messages_per_s>=300"), "{err}");
    assert!(
        out.contains("offered/s achieved/s   accept   p50 ms   p99 ms"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let rate_cap = &json["thresholds"][3];
    assert_eq!(rate_cap["first_failing_stage"]["stage"], 2, "{rate_cap}");
    let st = json["schedule"]["stages"].as_array().unwrap();
    assert_eq!(st.len(), 2);
    for (s, rate) in st.iter().zip([100.0, 400.0]) {
        let offered = s["offered_rate"].as_f64().unwrap();
        assert!((offered - rate).abs() <= rate * 0.05, "{s}");
        assert!(s["achieved_rate"].as_f64().unwrap() >= rate * 0.9, "{s}");
        assert_eq!(s["accept_rate"], 1.0);
        assert!(s["p50_us"].as_u64().unwrap() > 0);
        assert!(s["p99_us"].as_u64().unwrap() >= s["p50_us"].as_u64().unwrap());
        assert!(s["late"].is_u64());
    }
    // The timeline gains offered, late, never-started, open connections.
    let csv = std::fs::read_to_string(&timeline).unwrap();
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let rows: Vec<Vec<u64>> = lines
        .map(|l| {
            l.split(',')
                .map(|v| v.parse::<f64>().unwrap_or(0.0) as u64)
                .collect()
        })
        .collect();
    let offered: u64 = rows.iter().map(|r| r[col("offered")]).sum();
    assert!((480..=520).contains(&offered), "{offered} offered: {csv}");
    assert!(rows.iter().any(|r| r[col("open_connections")] > 0), "{csv}");
    let _ = (col("late"), col("not_started"));
}

#[test]
fn a_stage_threshold_beyond_the_stages_is_a_usage_error() {
    let (code, _, err, _) = blast(&["--stages", "1s:10", "--threshold", "stage3:p99<1s"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("the run has 1 load stage(s), not 3"), "{err}");
    let (code, _, err, _) = blast(&["--abort-on-fail"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--abort-on-fail watches the --threshold checks"),
        "{err}"
    );
}

#[test]
fn abort_on_fail_stops_once_a_check_cannot_pass() {
    let plan = tmp("reject.yaml");
    std::fs::write(
        &plan,
        "seed: 1\nrules:\n  - name: reject\n    stage: data_end\n    action:\n      reply:\n        \
         code: 554\n        enhanced: 5.7.1\n        text: \"no\"\n",
    )
    .unwrap();
    let report = tmp("abort.json");
    let (code, out, err, took) = blast(&[
        "--sink-plan",
        plan.to_str().unwrap(),
        "--rate",
        "100",
        "-d",
        "30s",
        "--interval",
        "250ms",
        "--no-pin",
        "-q",
        "--threshold",
        "p99<5s,5xx==0",
        "--abort-on-fail",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        took < Duration::from_secs(10),
        "stopped early, not after 30 s: {took:?}"
    );
    assert!(
        err.contains("--abort-on-fail: 5xx==0 can no longer pass"),
        "{err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["aborted_on_fail"], "5xx==0");
    assert_eq!(json["interrupted"], false);
    assert_eq!(json["outcome"]["exit_code"], 1);
}

/// Stage checks and ratios are decided as soon as they cannot pass: a
/// stage's count once it goes past its limit, any stage check once the
/// stage is over, a ratio once the rest of a fixed schedule cannot repair
/// it. Each run would last 21 s or more; each stops within a few seconds.
#[test]
fn abort_on_fail_decides_stage_and_ratio_checks_early() {
    let plan = tmp("reject-all.yaml");
    std::fs::write(
        &plan,
        "seed: 1\nrules:\n  - name: reject\n    stage: data_end\n    action:\n      reply:\n        \
         code: 554\n        enhanced: 5.7.1\n        text: \"no\"\n",
    )
    .unwrap();
    for (stages, check) in [
        // A stage count: refused as a stage metric before.
        ("1s:50,1s:50,20s:50", "stage2:5xx==0"),
        // A stage ratio: decided once stage 1 is over.
        ("1s:50,20s:50", "stage1:accept_rate>=0.99"),
        // A whole-run ratio over a known total (1,051 sends).
        ("1s:50,20s:50", "accept_rate>=0.99"),
    ] {
        let (code, out, err, took) = blast(&[
            "--sink-plan",
            plan.to_str().unwrap(),
            "--stages",
            stages,
            "--stages-mode",
            "rate",
            "--interval",
            "250ms",
            "--no-pin",
            "-q",
            "--threshold",
            check,
            "--abort-on-fail",
        ]);
        assert_eq!(code, Some(1), "{check}: {out}\n{err}");
        assert!(
            err.contains(&format!("--abort-on-fail: {check} can no longer pass")),
            "{check}: {err}"
        );
        assert!(
            took < Duration::from_secs(8),
            "{check}: stopped early, not after 21 s: {took:?}"
        );
    }
}

#[test]
fn a_threshold_that_can_never_hold_is_refused_up_front() {
    for check in ["5xx<0", "accept_rate>1", "stage1:p99<0ms"] {
        let (code, _, err, took) = blast(&["--stages", "30s:10", "--threshold", check]);
        assert_eq!(code, Some(2), "{check}: {err}");
        assert!(
            err.contains(&format!("{check:?}: can never hold")),
            "{check}: {err}"
        );
        assert!(took < Duration::from_secs(5), "{check}: refused, not run");
    }
}
