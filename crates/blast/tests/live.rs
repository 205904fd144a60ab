//! The live view of a run, over real HTTP on loopback: `--metrics` scraped
//! during the run and after it (`--linger-metrics`), read by the reference
//! Prometheus parser (Python `prometheus_client`, installed by
//! scripts/test.sh) and checked against the JSON report; `--dashboard`
//! drawn by headless chromium while traffic flows; bad addresses refused
//! before the run with exit 2.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser;
use common::child::Running;
use serde_json::Value;

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `GET url`: (status, body); bounded by a 10 s timeout.
fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

/// Polls `url` until `want` holds for its body (bounded): the run's
/// counters move once per interval, so this waits on a counter, not a
/// clock.
fn get_until(url: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(url);
        assert_eq!(status, 200, "GET {url}: {body}");
        if want(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} at {url} within 30 s; last:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One sample as the reference parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Families (name → type) and samples of an exposition, read by Python's
/// `prometheus_client.parser.text_string_to_metric_families`.
fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
fams, samples = {}, []
for f in text_string_to_metric_families(sys.stdin.read()):
    fams[f.name] = f.type
    for s in f.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"families": fams, "samples": samples}))
"#;
    let mut py = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused /metrics (prometheus-client installed by scripts/test.sh): {}\n{text}",
        String::from_utf8_lossy(&out.stderr),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fams = v["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
        .collect();
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            name: s[0].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s[1].clone()).unwrap(),
            value: s[2].as_f64().unwrap(),
        })
        .collect();
    (fams, samples)
}

/// The value of the one sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

/// What the server at `url` answers a request whose head is 40 KB.
fn oversized_head(url: &str) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let pad = "a".repeat(40_000);
    // The server may close before the whole head is written.
    let _ =
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n").as_bytes());
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// The first `prefix…` line's URL.
fn url_after(run: &mut Running, prefix: &str) -> String {
    let line = run.wait_line(prefix, |l| l.starts_with(prefix));
    line[prefix.len()..].trim().to_string()
}

#[test]
fn metrics_follow_the_run_and_end_equal_to_the_report() {
    let report = out_dir().join("metrics-run.json");
    let _ = std::fs::remove_file(&report);
    let mut run = Running::start(
        &[
            "--rate",
            "200",
            "-d",
            "3s",
            "-c",
            "16",
            "--interval",
            "250ms",
            "--no-pin",
            "--metrics",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
            "--linger-metrics",
            "60s",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    let metrics = url_after(&mut run, "metrics: ");
    let dashboard = url_after(&mut run, "dashboard: ");
    assert!(metrics.ends_with("/metrics") && dashboard.ends_with('/'));
    let feed = format!("{dashboard}report.json");

    // During the run: messages accepted, the run still going.
    let mid = get_until(&metrics, "accepted messages", |b| {
        b.lines().any(|l| {
            l.strip_prefix("mailstorm_blast_messages_total{outcome=\"accepted\"} ")
                .is_some_and(|v| v.parse::<f64>().unwrap() > 0.0)
        })
    });
    let (fams, samples) = parse_prometheus(&mid);
    assert_eq!(value(&samples, "mailstorm_blast_running", &[]), 1.0);
    assert_eq!(fams["mailstorm_blast_latency_seconds"], "histogram");
    assert_eq!(fams["mailstorm_blast_messages"], "counter");
    assert!(value(&samples, "mailstorm_blast_target_messages_per_second", &[]) == 200.0);
    let (status, page) = get(&dashboard);
    assert_eq!(status, 200);
    assert!(page.contains("mailstorm.live/1") && page.contains("uPlot"));
    let (_, live) = get(&feed);
    let live: Value = serde_json::from_str(&live).unwrap();
    assert_eq!(live["schema"], "mailstorm.report/2");
    assert_eq!(live["outcome"]["status"], "running");
    assert!(!live["timeline"].as_array().unwrap().is_empty());
    assert_eq!(get(&format!("{dashboard}nothing")).0, 404);

    // After the run: the report is written, the endpoints linger.
    run.wait_line("the report", |l| l.starts_with("report written to"));
    run.wait_line("the linger", |l| l.starts_with("live: serving the final"));
    assert!(
        oversized_head(&metrics).starts_with("HTTP/1.1 431"),
        "a 40 KB request head is refused (mailstorm-http's 16 KiB cap)"
    );
    let end = get(&metrics).1;
    let model: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let fed: Value = serde_json::from_str(&get(&feed).1).unwrap();
    assert_eq!(fed, model, "the feed's last model is the report");

    let (_, samples) = parse_prometheus(&end);
    assert_eq!(value(&samples, "mailstorm_blast_running", &[]), 0.0);
    let count = |v: &Value| v.as_u64().unwrap() as f64;
    for outcome in ["accepted", "deferred", "rejected", "failed"] {
        assert_eq!(
            value(
                &samples,
                "mailstorm_blast_messages_total",
                &[("outcome", outcome)]
            ),
            count(&model["messages"][outcome]),
            "{outcome}"
        );
    }
    assert!(count(&model["messages"]["accepted"]) >= 300.0, "{model}");
    assert_eq!(
        value(&samples, "mailstorm_blast_messages_attempted_total", &[]),
        count(&model["messages"]["attempted"])
    );
    for (metric, key) in [("opened", "opened"), ("failed", "failed")] {
        assert_eq!(
            value(
                &samples,
                &format!("mailstorm_blast_connections_{metric}_total"),
                &[]
            ),
            count(&model["connections"][key])
        );
    }
    assert_eq!(
        value(&samples, "mailstorm_blast_connections_open", &[]),
        0.0
    );
    // Replies by stage and code: the same table as the report's.
    let mut replies: BTreeMap<(String, String), f64> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "mailstorm_blast_replies_total")
    {
        let label = match s.labels.get("enhanced") {
            Some(e) => format!("{} {e}", s.labels["code"]),
            None => s.labels["code"].clone(),
        };
        *replies
            .entry((s.labels["stage"].clone(), label))
            .or_default() += s.value;
    }
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (stage, codes) in model["replies"].as_object().unwrap() {
        for (label, n) in codes.as_object().unwrap() {
            want.insert((stage.clone(), label.clone()), count(n));
        }
    }
    assert!(want.len() >= 4, "{want:?}");
    assert_eq!(replies, want);
    // One histogram per stage the report has, with the same sample count.
    let latency = model["latency_us"].as_object().unwrap();
    let stages: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "mailstorm_blast_latency_seconds_count")
        .map(|s| s.labels["stage"].as_str())
        .collect();
    assert_eq!(stages.len(), latency.len(), "{stages:?}");
    for (stage, summary) in latency {
        let n = count(&summary["count"]);
        let by = [("stage", stage.as_str())];
        assert_eq!(
            value(&samples, "mailstorm_blast_latency_seconds_count", &by),
            n,
            "{stage}"
        );
        let inf = [("stage", stage.as_str()), ("le", "+Inf")];
        assert_eq!(
            value(&samples, "mailstorm_blast_latency_seconds_bucket", &inf),
            n
        );
        // The report's p50 (µs) lies in the bucket where half is reached.
        let le_1s = [("stage", stage.as_str()), ("le", "1")];
        assert!(value(&samples, "mailstorm_blast_latency_seconds_bucket", &le_1s) <= n);
    }
    let achieved = value(
        &samples,
        "mailstorm_blast_achieved_messages_per_second",
        &[("window", "run")],
    );
    let reported = model["throughput"]["messages_per_s"].as_f64().unwrap();
    assert!(
        (achieved - reported).abs() < 0.01,
        "{achieved} vs {reported}"
    );

    // SIGINT ends the linger early; the run's own exit code stands.
    let t0 = Instant::now();
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "linger not cut short"
    );
}

/// With faults (resets, 4xx, 5xx): the final transport errors, recipients,
/// schedule, offered load and bytes equal the report's too.
#[test]
fn fault_counters_at_the_end_equal_the_report() {
    let report = out_dir().join("metrics-faults.json");
    let plan = out_dir().join("metrics-faults.yaml");
    let _ = std::fs::remove_file(&report);
    std::fs::write(
        &plan,
        "seed: 5\nrules:\n  - {stage: data_end, key: global, every: 7, action: {disconnect: {mode: rst}}}\n  - {stage: rcpt, key: global, every: 5, action: {reply: {code: 451, enhanced: 4.3.0}}}\n  - {stage: mail, key: global, every: 11, action: {reply: {code: 550}}}\n",
    )
    .unwrap();
    let mut run = Running::start(
        &[
            "--rate",
            "300",
            "-d",
            "2s",
            "-c",
            "8",
            "--rcpts",
            "1..3",
            "--interval",
            "250ms",
            "--no-pin",
            "--sink-plan",
            plan.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
            "--linger-metrics",
            "60s",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    let metrics = url_after(&mut run, "metrics: ");
    run.wait_line("the linger", |l| l.starts_with("live: serving the final"));
    let (_, samples) = parse_prometheus(&get(&metrics).1);
    let model: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let count = |v: &Value| v.as_u64().unwrap() as f64;
    // Transport errors: by stage and kind in /metrics, by kind in the report.
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "mailstorm_blast_transport_errors_total")
    {
        *by_kind.entry(s.labels["kind"].clone()).or_default() += s.value;
    }
    let want: BTreeMap<String, f64> = model["transport_errors"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| (k.clone(), count(n)))
        .collect();
    assert!(want.get("reset").is_some_and(|&n| n > 0.0), "{want:?}");
    by_kind.retain(|_, n| *n != 0.0);
    assert_eq!(by_kind, want);
    for outcome in ["accepted", "deferred", "rejected", "failed"] {
        let n = count(&model["messages"][outcome]);
        assert!(
            n > 0.0,
            "no {outcome} messages: the faults should make each"
        );
        assert_eq!(
            value(
                &samples,
                "mailstorm_blast_messages_total",
                &[("outcome", outcome)]
            ),
            n,
            "{outcome}"
        );
    }
    for (metric, got) in [
        ("recipients_sent_total", &model["recipients"]["attempted"]),
        (
            "recipients_accepted_total",
            &model["recipients"]["accepted"],
        ),
        ("messages_scheduled_total", &model["schedule"]["scheduled"]),
        ("messages_late_total", &model["schedule"]["late"]),
        (
            "messages_not_started_total",
            &model["schedule"]["not_started"],
        ),
    ] {
        let name = format!("mailstorm_blast_{metric}");
        assert_eq!(value(&samples, &name, &[]), count(got), "{metric}");
    }
    let offered: f64 = model["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| count(&r["offered"]))
        .sum();
    assert_eq!(
        value(&samples, "mailstorm_blast_messages_offered_total", &[]),
        offered,
        "offered: the timeline's rows add up to the counter"
    );
    // The report gives bytes as a rate over the run's duration.
    let bytes = value(&samples, "mailstorm_blast_message_bytes_total", &[]);
    let from_report = model["throughput"]["bytes_per_s"].as_f64().unwrap()
        * model["duration_s"].as_f64().unwrap();
    assert!(
        bytes > 0.0 && (bytes - from_report).abs() <= bytes * 0.01 + 1.0,
        "{bytes} vs {from_report}"
    );
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, err) = run.finish();
    assert!(matches!(code, Some(0 | 1)), "{code:?}: {err}");
}

#[test]
fn bad_addresses_are_usage_errors_before_the_run() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (args, want) in [
        (
            vec!["--metrics", taken.as_str()],
            format!("--metrics {taken}: cannot listen"),
        ),
        (
            vec!["--dashboard", "not-an-address"],
            "--dashboard not-an-address: not a listening address".to_string(),
        ),
        (
            vec!["--metrics", "127.0.0.1:0", "--dashboard", taken.as_str()],
            format!("--dashboard {taken}: cannot listen"),
        ),
        (
            vec!["--linger-metrics", "5s"],
            "--linger-metrics is for --metrics or --dashboard".to_string(),
        ),
        (
            vec![
                "--scenario",
                "configs/none.yaml",
                "--dashboard",
                "127.0.0.1:0",
            ],
            "--dashboard is for a plain run, not --scenario".to_string(),
        ),
    ] {
        let mut all = vec!["-n", "10", "--no-pin", "-q"];
        all.extend(args.iter().copied());
        let (code, out, err) = Running::start(&all, &[]).finish();
        assert_eq!(code, Some(2), "{args:?}: {out}\n{err}");
        assert!(err.contains(&want), "{args:?}: {err}");
        assert!(!out.contains("messages:"), "no run happened: {out}");
    }
    let (code, _, err) = Running::start(&["capacity", "--metrics", "127.0.0.1:0"], &[]).finish();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--metrics is for a plain run, not capacity"),
        "{err}"
    );
}

#[test]
fn dashboard_draws_the_run_live_in_chromium() {
    let Some(chrome) = browser::chromium() else {
        return;
    };
    let mut run = Running::start(
        &[
            "--rate",
            "100",
            "-d",
            "120s",
            "-c",
            "4",
            "--interval",
            "250ms",
            "--no-pin",
            "--threshold",
            "p99<5s",
            "--dashboard",
            "127.0.0.1:0",
        ],
        &[],
    );
    let url = url_after(&mut run, "dashboard: ");
    // Traffic flows: the feed has accepted messages in its timeline.
    get_until(&format!("{url}report.json"), "accepted messages", |b| {
        let m: Value = serde_json::from_str(b).unwrap();
        m["messages"]["accepted"].as_u64().unwrap() > 0
            && m["timeline"].as_array().unwrap().len() >= 2
    });
    let profile = out_dir().join(format!("profile-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let (code, dom, log) = browser::run(
        browser::browser(&chrome, &profile).args(["--dump-dom", &url]),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "chromium --dump-dom failed: {log}");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("blast-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let (scode, _, slog) = browser::run(
        browser::browser(&chrome, &profile)
            .arg("--window-size=1100,2200")
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url),
        Duration::from_secs(90),
    );
    let _ = std::fs::remove_dir_all(&profile);
    // Then the run is stopped: SIGINT, outputs written, exit 5.
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (rcode, _, err) = run.finish();
    assert_eq!(rcode, Some(5), "{err}");

    assert_eq!(scode, Some(0), "chromium --screenshot failed: {slog}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "empty screenshot"
    );
    assert_eq!(
        browser::console(&log),
        Vec::<String>::new(),
        "console output"
    );
    assert!(
        dom.contains("id=\"errors\" class=\"errors\" hidden"),
        "the page reported an error: {}",
        browser::text_of(&dom, "errors")
    );
    let root = |a: &str| browser::attr(&dom, "report", a);
    assert_eq!(root("data-live").as_deref(), Some("running"), "{dom}");
    assert_eq!(root("data-rendered").as_deref(), Some("true"));
    let updates: u32 = root("data-updates").unwrap().parse().unwrap();
    assert!(updates >= 2, "the page polled the feed {updates} time(s)");
    let verdict = browser::text_of(&dom, "verdict");
    let accepted: u64 = verdict
        .strip_prefix("running: ")
        .and_then(|v| v.split(' ').next())
        .map(|n| n.replace(',', "").parse().unwrap())
        .unwrap_or_else(|| panic!("verdict: {verdict}"));
    assert!(accepted > 0, "{verdict}");
    let points: usize = browser::attr(&dom, "chart-timeline-rate", "data-points")
        .unwrap()
        .parse()
        .unwrap();
    assert!(points >= 2, "{points} points on the rate chart");
    assert!(dom.matches("<canvas").count() >= 2, "uPlot drew no canvas");
    // Thresholds as they stand.
    assert!(dom.contains("p99&lt;5s") || dom.contains("p99<5s"));
    assert!(browser::text_of(&dom, "live-status").starts_with("Live: updated"));
}

/// A 2 s outage (421 at the greeting) against a retry policy with a
/// breaker, as `configs/scenarios/outage-breaker.yaml`: the breaker's
/// state shows while the run lasts, and the final retries and transitions
/// are the report's `resilience` figures.
#[test]
fn retries_and_the_breaker_show_live_and_end_as_reported() {
    let dir = out_dir();
    let plan = dir.join("outage-plan.yaml");
    std::fs::write(
        &plan,
        "seed: 11\nrules:\n  - name: outage\n    stage: connect\n    window: { from: 0, to: 2 }\n    \
         action:\n      reply: { code: 421, enhanced: 4.3.2, text: \"down\" }\n  - name: in-session\n    \
         stage: mail\n    window: { from: 0, to: 2 }\n    action:\n      \
         reply: { code: 421, enhanced: 4.3.2, text: \"down\" }\n",
    )
    .unwrap();
    let profile = dir.join("outage-profile.yaml");
    std::fs::write(
        &profile,
        "messages: 300\nconcurrency: 4\nseed: 7\npolicy:\n  max_attempts: 8\n  \
         backoff: { kind: exponential, initial: 2s, multiplier: 2, max: 10s }\n  jitter: equal\n  \
         breaker: { consecutive_failures: 5, cooldown: 10s, half_open_probes: 1 }\n",
    )
    .unwrap();
    let report = dir.join("outage.json");
    let _ = std::fs::remove_file(&report);
    let mut run = Running::start(
        &[
            "--sink-plan",
            plan.to_str().unwrap(),
            "--profile",
            profile.to_str().unwrap(),
            "--time-scale",
            "0.1",
            "--interval",
            "100ms",
            "--no-pin",
            "--metrics",
            "127.0.0.1:0",
            "--linger-metrics",
            "60s",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    let metrics = url_after(&mut run, "metrics: ");
    // The breaker opens during the outage (cooldown 1 s, intervals 100 ms).
    get_until(&metrics, "an open breaker", |b| {
        b.contains("mailstorm_blast_breaker_state{state=\"closed\"} 0\n")
    });
    run.wait_line("the linger", |l| l.starts_with("live: serving the final"));
    let (_, samples) = parse_prometheus(&get(&metrics).1);
    let model: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let res = &model["resilience"];
    let count = |v: &Value| v.as_u64().unwrap() as f64;
    assert!(count(&res["load"]["retries"]) > 0.0, "{res}");
    assert_eq!(
        value(&samples, "mailstorm_blast_retries_total", &[]),
        count(&res["load"]["retries"])
    );
    for (to, key) in [
        ("open", "opened"),
        ("closed", "closed"),
        ("half_open", "half_opened"),
    ] {
        assert_eq!(
            value(
                &samples,
                "mailstorm_blast_breaker_transitions_total",
                &[("to", to)]
            ),
            count(&res["breaker"][key]),
            "{to}"
        );
    }
    let last = res["breaker"]["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["to"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last, "closed", "{res}");
    assert_eq!(
        value(
            &samples,
            "mailstorm_blast_breaker_state",
            &[("state", "closed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "mailstorm_blast_replies_total",
            &[("stage", "banner"), ("code", "421")]
        ),
        model["replies"]["banner"]["421 4.3.2"].as_f64().unwrap()
    );
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
}
