//! Sharded runs (issue 15): shards as separate blaster processes against
//! one sink, `merge` of their reports (exact, order-independent, refusing
//! what does not belong), and the Kubernetes manifests' command line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mailstorm_blast::report::decode_histogram;
use mailstorm_blast::shard_split::share;
use serde_json::Value;

use common::child::BIN;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mailstorm-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn blast(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Unix seconds `secs` from now: a common start for the shards.
fn start_in(secs: f64) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + secs;
    format!("{t:.3}")
}

/// Runs `n` shards of one run as processes at once against `target`,
/// each from its own loopback source address; returns their report paths.
fn run_shards(dir: &Path, run: &str, n: u32, target: &str, extra: &[&str]) -> Vec<PathBuf> {
    let start = start_in(1.5);
    let children: Vec<(PathBuf, std::process::Child)> = (0..n)
        .map(|i| {
            let report = dir.join(format!("shard-{i}.json"));
            let shard = format!("{i}/{n}");
            let source = format!("127.0.0.{}", i + 2);
            let mut args = vec![
                "--target",
                target,
                "--shard",
                &shard,
                "--run-id",
                run,
                "--start-at",
                &start,
                "--source",
                &source,
                "-t",
                "1",
                "--no-pin",
                "-q",
                "--report",
            ];
            let r = report.to_str().unwrap().to_string();
            args.push(&r);
            args.extend_from_slice(extra);
            let child = Command::new(BIN)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (report, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(report, child)| {
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            report
        })
        .collect()
}

fn merge(parts: &[&Path], extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["merge".into()];
    args.extend(parts.iter().map(|p| p.to_str().unwrap().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(BIN).args(&args).output().unwrap()
}

/// `v` with every histogram re-encoded from its content: two encodings of
/// one histogram may differ in bytes (bucket array length), not in counts.
fn canonical(v: &Value) -> Value {
    match v {
        Value::String(s) if s.starts_with("HISTF") => {
            let h = mailstorm_blast::measurements::read_hdr(s, "test").unwrap();
            Value::String(mailstorm_blast::report::encode_histogram(&h))
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        other => other.clone(),
    }
}

fn hist(report: &Value, stage: &str) -> Histogram<u64> {
    // Auto-resizing, so adding a part with a wider range cannot fail.
    let h = decode_histogram(report["histograms"][stage].as_str().unwrap()).unwrap();
    let mut out = mailstorm_blast::stats::new_histogram();
    out.add(&h).unwrap();
    out
}

#[test]
fn four_shards_merge_to_what_the_sink_counted() {
    let sink = common::sink_builder().start().unwrap();
    let target = sink.local_addr().to_string();
    let dir = tmp("four");
    // 400 messages at 400/s in 4 shards; the run ends by its message cap.
    let parts = run_shards(
        &dir,
        "four-1",
        4,
        &target,
        &["--rate", "400", "-n", "400", "-c", "8", "-d", "20s"],
    );
    let merged = dir.join("merged.json");
    let out = merge(
        &parts.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &[
            "--report",
            merged.to_str().unwrap(),
            "--threshold",
            "accepted==400,5xx==0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = read(&merged);
    let sink_accepted = sink.stats().messages_accepted;
    assert_eq!(m["messages"]["accepted"], 400);
    assert_eq!(m["messages"]["accepted"].as_u64(), Some(sink_accepted));
    assert_eq!(m["merge"]["shards"], 4);
    assert_eq!(m["merge"]["partial"], false);
    assert_eq!(m["outcome"]["status"], "ok");
    let schema: Value = serde_json::from_str(include_str!("../report.schema.json")).unwrap();
    let errs = common::validate(&schema, &m);
    assert!(errs.is_empty(), "merged report vs schema: {errs:#?}");

    let reports: Vec<Value> = parts.iter().map(|p| read(p)).collect();
    // Each shard offered its share of the one schedule, which sums to it.
    let mut scheduled = 0;
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r["run"]["shard"]["index"], i as u64);
        assert_eq!(r["config"]["rate"], 400.0, "the config is the whole run's");
        let s = r["schedule"]["scheduled"].as_u64().unwrap();
        assert_eq!(s, share(400, i as u64, 4), "shard {i}");
        assert_eq!(r["config"]["source"][0], format!("127.0.0.{}", i + 2));
        scheduled += s;
    }
    assert_eq!(scheduled, 400);
    assert_eq!(m["schedule"]["scheduled"], 400);
    // Distinct sequence spaces, one seed.
    let sources: std::collections::BTreeSet<u64> = reports
        .iter()
        .map(|r| r["config"]["trace_source"].as_u64().unwrap())
        .collect();
    assert_eq!(sources.len(), 4);
    assert!(reports
        .iter()
        .all(|r| r["config"]["seed"] == reports[0]["config"]["seed"]));

    // The merged histograms are exactly the parts' added up.
    for stage in ["latency", "mail", "data_end", "connect"] {
        let mut sum = hist(&reports[0], stage);
        for r in &reports[1..] {
            sum.add(hist(r, stage)).unwrap();
        }
        let got = hist(&m, stage);
        assert_eq!(got, sum, "{stage}");
        assert_eq!(got.len(), sum.len());
        assert_eq!(got.value_at_quantile(0.99), sum.value_at_quantile(0.99));
    }
    // Timelines aligned: the merged rows add up to the totals.
    let rows = m["timeline"].as_array().unwrap();
    let acc: u64 = rows.iter().map(|r| r["accepted"].as_u64().unwrap()).sum();
    assert_eq!(acc, 400);
    assert!(
        rows.len()
            <= reports
                .iter()
                .map(|r| r["timeline"].as_array().unwrap().len())
                .max()
                .unwrap()
                + 1
    );

    // Order does not matter.
    let rev = dir.join("rev.json");
    let rparts: Vec<&Path> = parts.iter().rev().map(PathBuf::as_path).collect();
    let out = merge(
        &rparts,
        &[
            "--report",
            rev.to_str().unwrap(),
            "--threshold",
            "accepted==400,5xx==0",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(&rev), m);

    // A threshold the merged figures fail: exit 1, named.
    let out = merge(
        &parts.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &["--threshold", "accepted<400"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FAILED  accepted<400  (measured 400)"));
    sink.shutdown();
}

#[test]
fn merge_of_one_report_reproduces_it_and_judges_alike() {
    let sink = common::sink_builder().start().unwrap();
    let target = sink.local_addr().to_string();
    let dir = tmp("one");
    let single = dir.join("single.json");
    let checks = "accepted>=1,p99<30s,accept_rate>=0.99,messages_per_s>1,mail.p50<10s";
    let out = blast(
        &[
            "--target",
            &target,
            "-c",
            "3",
            "-n",
            "150",
            "--rate",
            "300",
            "-t",
            "1",
            "--no-pin",
            "-q",
            "--interval",
            "200ms",
            "--threshold",
            checks,
            "--report",
            single.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let merged = dir.join("merged.json");
    let out = merge(
        &[&single],
        &["--report", merged.to_str().unwrap(), "--threshold", checks],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (a, b) = (read(&single), read(&merged));
    for key in [
        "messages",
        "schedule",
        "recipients",
        "connections",
        "throughput",
        "replies",
        "transport_errors",
        "latency_us",
        "histograms",
        "timeline",
        "measurements",
        "duration_s",
        "thresholds",
        "interval_s",
    ] {
        assert_eq!(canonical(&a[key]), canonical(&b[key]), "section {key}");
    }
    assert_eq!(a["run"]["id"], b["run"]["id"]);
    assert_eq!(a["outcome"]["status"], b["outcome"]["status"]);
    sink.shutdown();
}

#[test]
fn merge_refuses_what_is_not_one_run() {
    let sink = common::sink_builder().start().unwrap();
    let target = sink.local_addr().to_string();
    let dir = tmp("refuse");
    let parts = run_shards(&dir, "refuse-1", 2, &target, &["-c", "2", "-n", "20"]);
    let (p0, p1) = (parts[0].as_path(), parts[1].as_path());
    let edited = |name: &str, f: &dyn Fn(&mut Value)| -> PathBuf {
        let mut v = read(p1);
        f(&mut v);
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        p
    };
    let refused = |parts: &[&Path], want: &[&str]| {
        let out = merge(parts, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        for w in want {
            assert!(err.contains(w), "want {w:?} in: {err}");
        }
    };
    let other_run = edited("other-run.json", &|v| v["run"]["id"] = "refuse-2".into());
    refused(
        &[p0, &other_run],
        &["other-run.json", "refuse-2", "different runs"],
    );
    let other_schema = edited("old.json", &|v| v["schema"] = "mailstorm.report/1".into());
    refused(&[p0, &other_schema], &["old.json", "mailstorm.report/1"]);
    let dup = edited("dup.json", &|_| {});
    refused(&[p0, p1, &dup], &["shard 1/2 again", "dup.json"]);
    refused(&[p0], &["shard(s) 1/2 missing"]);
    let other_rate = edited("rate.json", &|v| v["config"]["messages"] = 21.into());
    refused(&[p0, &other_rate], &["rate.json", "config.messages"]);
    // A length no run has (an old part without `elapsed_ns`) is refused,
    // not turned into a clock overflow.
    let endless = edited("endless.json", &|v| {
        v["run"].as_object_mut().unwrap().remove("elapsed_ns");
        v["duration_s"] = 1e300.into();
    });
    refused(
        &[p0, &endless],
        &["endless.json", "duration_s 1e+300", "longer than any run"],
    );
    let garbage = dir.join("garbage.log");
    std::fs::write(&garbage, "not a report\n").unwrap();
    refused(
        &[p0, &garbage],
        &["garbage.log", "no report in it", "not a report"],
    );

    // A shard that failed before reporting (its target unreachable) left a
    // log with its error only, as `kubectl logs` of its pod gives; an empty
    // log likewise holds no report: missing shards, refused by name with
    // what the shard said last.
    let failed = dir.join("shard-1-failed.log");
    std::fs::write(&failed, failed_shard_log("refuse-1", "1")).unwrap();
    refused(
        &[p0, &failed],
        &[
            "shard-1-failed.log",
            "no report in it",
            "target unreachable",
            "--allow-partial",
        ],
    );
    let empty = dir.join("shard-1-empty.log");
    std::fs::write(&empty, "").unwrap();
    refused(
        &[p0, &empty],
        &["shard-1-empty.log", "no report in it", "empty"],
    );
    // A framed report cut off or corrupt is damaged, not missing: refused
    // even with --allow-partial.
    let framed = mailstorm_blast::report::framed(&read(p1));
    let cut = dir.join("shard-1-cut.log");
    let mut at = framed.len() / 2;
    while !framed.is_char_boundary(at) {
        at -= 1;
    }
    std::fs::write(&cut, &framed[..at]).unwrap();
    let corrupt = dir.join("shard-1-corrupt.log");
    std::fs::write(&corrupt, framed.replacen("\"run\"", "\"run\" \"", 1)).unwrap();
    for (bad, why) in [(&cut, "cut-off"), (&corrupt, "not a JSON report")] {
        for extra in [&[][..], &["--allow-partial"][..]] {
            let out = merge(&[p0, bad], extra);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
            assert!(
                err.contains(bad.to_str().unwrap()) && err.contains(why),
                "{err}"
            );
        }
    }
    // Only parts without a report: nothing to merge, even so.
    let out = merge(&[&failed, &empty], &["--allow-partial"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no part holds a report"));

    // --allow-partial merges what is there and says so.
    let partial = dir.join("partial.json");
    let out = merge(
        &[p0],
        &["--allow-partial", "--report", partial.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = read(&partial);
    assert_eq!(v["merge"]["partial"], true);
    assert_eq!(v["merge"]["missing"], serde_json::json!([1]));
    assert!(v["outcome"]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("partial"));
    assert_eq!(v["merge"]["no_report"], serde_json::json!([]));
    // ... and leaves a part without a report out as a missing shard.
    for (log, last) in [(&failed, "target unreachable"), (&empty, "")] {
        let out = merge(
            &[log, p0],
            &["--allow-partial", "--report", partial.to_str().unwrap()],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains(log.to_str().unwrap()) && err.contains("left out as a missing shard"),
            "{err}"
        );
        let v = read(&partial);
        assert_eq!(v["merge"]["partial"], true);
        assert_eq!(v["merge"]["missing"], serde_json::json!([1]));
        assert_eq!(v["merge"]["parts"].as_array().unwrap().len(), 1);
        let nr = &v["merge"]["no_report"][0];
        assert_eq!(nr["file"], log.to_str().unwrap());
        if last.is_empty() {
            assert!(nr["last_line"].is_null(), "{nr}");
        } else {
            assert!(nr["last_line"].as_str().unwrap().contains(last), "{nr}");
        }
        assert_eq!(v["messages"]["accepted"], read(p0)["messages"]["accepted"]);
    }
    sink.shutdown();
}

/// What `kubectl logs` shows of a shard that failed before it could
/// report: its target unreachable, exit 3, nothing on standard output and
/// its error on standard error.
fn failed_shard_log(run: &str, index: &str) -> Vec<u8> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = blast(
        &[
            "--target", &target, "--shards", "2", "--run-id", run, "-c", "2", "-n", "4",
            "--report", "-",
        ],
        &[("JOB_COMPLETION_INDEX", index)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let mut log = out.stdout;
    log.extend_from_slice(&out.stderr);
    log
}

#[test]
fn framed_reports_in_logs_merge() {
    let sink = common::sink_builder().start().unwrap();
    let target = sink.local_addr().to_string();
    let dir = tmp("framed");
    let mut logs = Vec::new();
    for i in 0..2 {
        let shard = format!("{i}/2");
        // The index from the Job's variable, as in the Indexed Job.
        let index = i.to_string();
        let out = blast(
            &[
                "--target", &target, "--shards", "2", "--run-id", "framed-1", "-c", "2", "-n",
                "10", "-t", "1", "--no-pin", "-q", "--report", "-",
            ],
            &[("JOB_COMPLETION_INDEX", &index)],
        );
        assert_eq!(out.status.code(), Some(0), "{shard}: {}", text(&out.stderr));
        let log = text(&out.stdout);
        assert!(log.contains("-----BEGIN MAILSTORM REPORT-----"), "{log}");
        assert!(
            log.contains("mailstorm-blast →"),
            "the summary shares the log"
        );
        let p = dir.join(format!("pod-{i}.log"));
        std::fs::write(&p, format!("some other line\n{log}trailing line\n")).unwrap();
        logs.push(p);
    }
    let merged = dir.join("merged.json");
    let out = merge(
        &[&logs[1], &logs[0]],
        &["--report", merged.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = read(&merged);
    assert_eq!(v["messages"]["accepted"], 10);
    assert_eq!(v["merge"]["parts"][0]["shard"]["index"], 0);
    sink.shutdown();
}

#[test]
fn start_at_refuses_far_and_past_times() {
    let e = blast(&["--start-at", "1970-01-01T00:00:00Z", "-n", "1"], &[]);
    assert_eq!(e.status.code(), Some(2));
    assert!(
        text(&e.stderr).contains("in the past"),
        "{}",
        text(&e.stderr)
    );
    let far = start_in(2.0 * 3600.0);
    let e = blast(&["--start-at", &far, "-n", "1"], &[]);
    assert_eq!(e.status.code(), Some(2));
    assert!(text(&e.stderr).contains("more than the 3600 s"));
    let e = blast(&["--shard", "0/2", "-n", "2", "-c", "2"], &[]);
    assert_eq!(e.status.code(), Some(2));
    assert!(text(&e.stderr).contains("--run-id"), "{}", text(&e.stderr));
    let e = blast(&["--shard", "4/4", "--run-id", "x"], &[]);
    assert_eq!(e.status.code(), Some(2));
    assert!(text(&e.stderr).contains("4/4"), "{}", text(&e.stderr));
}

// --- the Kubernetes manifests ---

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/kubernetes")
}

fn yaml(name: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(k8s_dir().join(name)).unwrap()).unwrap()
}

/// The Job's container arguments, `$(VAR)` filled from `vars`.
fn job_args(vars: &[(&str, String)]) -> (serde_yaml::Value, Vec<String>) {
    let job = yaml("job.yaml");
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = c["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .chain(c["args"].as_sequence().unwrap())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for a in &mut args {
        for (k, v) in vars {
            *a = a.replace(&format!("$({k})"), v);
        }
        assert!(!a.contains("$("), "unfilled variable in {a}");
    }
    (job, args)
}

#[test]
fn the_jobs_command_line_is_accepted_by_the_blaster() {
    let env = std::fs::read_to_string(k8s_dir().join("run.env")).unwrap();
    let run_id = env
        .lines()
        .find_map(|l| l.strip_prefix("RUN_ID="))
        .unwrap()
        .to_string();
    assert!(env.lines().any(|l| l.starts_with("START_AT=")));
    let start = start_in(60.0);
    let (job, args) = job_args(&[("RUN_ID", run_id.clone()), ("START_AT", start)]);
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(n));
    // No retries (a retried shard sends its share twice), counted per
    // index: a failed shard must not stop the others, as a Job-wide
    // backoffLimit would (Kubernetes terminates the running pods).
    assert_eq!(spec["backoffLimitPerIndex"].as_u64(), Some(0));
    assert!(spec.get("backoffLimit").is_none());
    let at = args.iter().position(|a| a == "--shards").unwrap();
    assert_eq!(
        args[at + 1].parse::<u64>().unwrap(),
        n,
        "--shards matches completions"
    );
    assert_eq!(args[0], "mailstorm-blast");
    // The profile comes from the ConfigMap mounted at its path.
    let kust = yaml("kustomization.yaml");
    let gens = kust["configMapGenerator"].as_sequence().unwrap();
    assert!(gens.iter().any(|g| g["name"] == "mailstorm-profile"));
    let profile = k8s_dir().join("profile.yaml");
    let mut cli: Vec<String> = args[1..]
        .iter()
        .map(|a| {
            if a == "/etc/mailstorm/profile.yaml" {
                profile.to_str().unwrap().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    cli.push("--print-config".into());
    for i in 0..n {
        let idx = i.to_string();
        let out = Command::new(BIN)
            .args(&cli)
            .env("JOB_COMPLETION_INDEX", &idx)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{cli:?}: {}", text(&out.stderr));
        let cfg: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
        assert_eq!(cfg["shard"]["index"].as_u64(), Some(i));
        assert_eq!(cfg["shard"]["count"].as_u64(), Some(n));
        assert_eq!(cfg["run_id"].as_str(), Some(run_id.as_str()));
    }
    // The committed START_AT is a placeholder that must be replaced: the
    // Job fails at once with a clear message rather than run at a stale time.
    let (_, stale) = job_args(&[
        ("RUN_ID", run_id),
        ("START_AT", "1970-01-01T00:00:00Z".into()),
    ]);
    let out = Command::new(BIN)
        .args(
            stale[1..]
                .iter()
                .map(|a| a.replace("/etc/mailstorm/profile.yaml", profile.to_str().unwrap())),
        )
        .arg("--print-config")
        .env("JOB_COMPLETION_INDEX", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--start-at"));
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_manifests_render_and_validate() {
    let required = std::env::var("MAILSTORM_REQUIRE_K8S").is_ok_and(|v| v == "1");
    if !(have("kubectl") && have("kubernetes-validate")) {
        assert!(
            !required,
            "kubectl and kubernetes-validate are required (scripts/test.sh installs them)"
        );
        eprintln!("skipped: kubectl or kubernetes-validate not installed");
        return;
    }
    let out = Command::new("kubectl")
        .args(["kustomize", k8s_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "ConfigMap", "Job"]);
    // The generated ConfigMap names (with their hash) are what the Job uses.
    let job = &docs[2];
    let vol = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        .as_str()
        .unwrap();
    assert!(docs
        .iter()
        .any(|d| d["metadata"]["name"].as_str() == Some(vol)));
    let file = tmp("k8s").join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let v = Command::new("kubernetes-validate")
        .args(["--strict", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}{}", text(&v.stdout), text(&v.stderr));
    // And the validator does catch a broken Job.
    let broken = rendered.replace(
        "completionMode: Indexed",
        "completionMode: Indexed\n  parallelizm: 4",
    );
    std::fs::write(&file, broken).unwrap();
    let v = Command::new("kubernetes-validate")
        .args(["--strict", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!v.status.success(), "a misspelt field passed validation");
}

/// A stand-in `kubectl` in `dir/bin` that answers the three calls
/// collect.sh makes from files in `dir`: `state` (the Job's conditions),
/// `pods` (name, index, phase per line), `POD.log` (its log) or, failing
/// that, `POD.err` (what `kubectl logs` says when it cannot give one).
fn stub_kubectl(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stub = format!(
        "#!/bin/sh\nd={d}\ncase \"$1 $2\" in\n\
         'get job/mailstorm-blast') cat \"$d/state\" ;;\n\
         'get pods') cat \"$d/pods\" ;;\n\
         'logs '*) if [ -f \"$d/$2.log\" ]; then cat \"$d/$2.log\"; \
         else cat \"$d/$2.err\" >&2; exit 1; fi ;;\n\
         *) echo \"unexpected: $*\" >&2; exit 9 ;;\nesac\n",
        d = dir.display()
    );
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, stub).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs collect.sh with the stand-in kubectl of `dir`, output in `out`.
fn collect(dir: &Path, out: &Path, merge_flags: &[&str]) -> Output {
    Command::new("bash")
        .arg(k8s_dir().join("collect.sh"))
        .args(["mailstorm-blast", out.to_str().unwrap(), "--"])
        .args(merge_flags)
        .env("PATH", stub_kubectl(dir))
        .env("MAILSTORM_BLAST", BIN)
        .env("WAIT_S", "10")
        .output()
        .unwrap()
}

#[test]
fn collect_sh_merges_the_pods_logs() {
    // collect.sh itself is what is tested: kubectl is a stand-in.
    let sink = common::sink_builder().start().unwrap();
    let target = sink.local_addr().to_string();
    let dir = tmp("collect");
    for i in 0..2 {
        let index = i.to_string();
        let out = blast(
            &[
                "--target",
                &target,
                "--shards",
                "2",
                "--run-id",
                "collect-1",
                "-c",
                "2",
                "-n",
                "8",
                "-t",
                "1",
                "--no-pin",
                "-q",
                "--report",
                "-",
            ],
            &[("JOB_COMPLETION_INDEX", &index)],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        std::fs::write(dir.join(format!("blast-{i}.log")), &out.stdout).unwrap();
    }
    std::fs::write(dir.join("state"), "Complete").unwrap();
    std::fs::write(
        dir.join("pods"),
        "blast-0 0 Succeeded\nblast-1 1 Succeeded\n",
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = collect(&dir, &out_dir, &["--threshold", "accepted==8"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = read(&out_dir.join("merged.json"));
    assert_eq!(v["messages"]["accepted"], 8);
    assert_eq!(v["run"]["id"], "collect-1");
    assert!(out_dir.join("merged.html").exists());

    // Shard 1's pod failed before reporting (target unreachable): its log
    // is saved like any other and merge sees a missing shard: refused,
    // naming the log and showing the shard's error; merged without it
    // with --allow-partial, and marked partial.
    std::fs::write(dir.join("state"), "FailureTarget Failed").unwrap();
    std::fs::write(dir.join("pods"), "blast-0 0 Succeeded\nblast-2 1 Failed\n").unwrap();
    std::fs::write(dir.join("blast-2.log"), failed_shard_log("collect-1", "1")).unwrap();
    let shard1 = out_dir.join("shard-1.log");
    let out = collect(&dir, &out_dir, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("job/mailstorm-blast failed"), "{err}");
    assert!(err.contains("blast-2 (shard 1, Failed)"), "{err}");
    assert!(
        err.contains(&format!("{}: no report in it", shard1.display()))
            && err.contains("target unreachable"),
        "{err}"
    );
    let out = collect(&dir, &out_dir, &["--allow-partial"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v = read(&out_dir.join("merged.json"));
    assert_eq!(v["merge"]["partial"], true);
    assert_eq!(v["merge"]["missing"], serde_json::json!([1]));
    assert_eq!(v["merge"]["no_report"][0]["file"], shard1.to_str().unwrap());
    assert_eq!(v["messages"]["accepted"], 4, "shard 0's half of 8");

    // A pod with no log to give (its container never ran): the other pods
    // are still collected, and kubectl's answer ends up as the last line
    // of that shard's log, so merge says why there is no report.
    std::fs::write(dir.join("pods"), "blast-3 0 Failed\nblast-1 1 Succeeded\n").unwrap();
    std::fs::write(
        dir.join("blast-3.err"),
        "Error from server (BadRequest): container \"blast\" in pod \"blast-3\" is waiting \
         to start: ContainerCreating\n",
    )
    .unwrap();
    let out = collect(&dir, &out_dir, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shard-0.log: no report in it") && err.contains("waiting to start"),
        "{err}"
    );
    assert!(err.contains("blast-1 (shard 1, Succeeded)"), "{err}");
    let out = collect(&dir, &out_dir, &["--allow-partial"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = read(&out_dir.join("merged.json"));
    assert_eq!(v["merge"]["missing"], serde_json::json!([0]));
    assert_eq!(v["merge"]["parts"][0]["shard"]["index"], 1);

    // A pod whose log holds a cut-off report is refused even so.
    let whole = std::fs::read_to_string(dir.join("blast-1.log")).unwrap();
    let cut = whole.find("-----END").unwrap();
    std::fs::write(dir.join("blast-4.log"), &whole[..cut]).unwrap();
    std::fs::write(dir.join("pods"), "blast-0 0 Succeeded\nblast-4 1 Failed\n").unwrap();
    let out = collect(&dir, &out_dir, &["--allow-partial"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shard-1.log") && err.contains("cut-off"),
        "{err}"
    );
    sink.shutdown();
}
