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
    let garbage = dir.join("garbage.log");
    std::fs::write(&garbage, "not a report\n").unwrap();
    refused(&[p0, &garbage], &["garbage.log", "not a JSON report"]);

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
    sink.shutdown();
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

#[test]
fn collect_sh_merges_the_pods_logs() {
    // A stand-in kubectl that answers the three calls collect.sh makes
    // from files, so the script itself is what is tested.
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
        std::fs::write(dir.join(format!("pod-{i}.out")), &out.stdout).unwrap();
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stub = format!(
        "#!/bin/sh\ncase \"$1 $2\" in\n\
         'get job/mailstorm-blast') echo 'Complete' ;;\n\
         'get pods') printf 'blast-0-abc 0\\nblast-1-def 1\\n' ;;\n\
         'logs blast-0-abc') cat {d}/pod-0.out ;;\n\
         'logs blast-1-def') cat {d}/pod-1.out ;;\n\
         *) echo \"unexpected: $*\" >&2; exit 9 ;;\nesac\n",
        d = dir.display()
    );
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, stub).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out_dir = dir.join("out");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(k8s_dir().join("collect.sh"))
        .args([
            "mailstorm-blast",
            out_dir.to_str().unwrap(),
            "--",
            "--threshold",
            "accepted==8",
        ])
        .env("PATH", path)
        .env("MAILSTORM_BLAST", BIN)
        .env("WAIT_S", "10")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = read(&out_dir.join("merged.json"));
    assert_eq!(v["messages"]["accepted"], 8);
    assert_eq!(v["run"]["id"], "collect-1");
    assert!(out_dir.join("merged.html").exists());
    sink.shutdown();
}
