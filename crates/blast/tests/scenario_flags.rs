//! `--scenario` and the run flags (issue 12): a flag given on the command
//! line either applies to the scenario or is refused with exit code 2 and
//! its name, before anything runs; never silently ignored. The applied
//! ones (`--threads`, `--no-pin`, `--seed`, `--time-scale`, `--report`,
//! `--html`, `--junit`, `-q`) really change the run or its outputs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-blast");

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("blast-scen-flags-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn blast_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("JOB_COMPLETION_INDEX");
    c
}

fn blast(args: &[&str]) -> Output {
    blast_cmd(args).output().expect("run mailstorm-blast")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A small, fast scenario against the embedded sink (20 messages, one
/// attempt each); `delivered` is what its only expectation demands.
fn tiny(name: &str, delivered: u32) -> PathBuf {
    let p = dir().join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\n\
             profile: {{messages: 20, concurrency: 2, threads: 1, pin: false}}\n\
             expect:\n  - delivered == {delivered}\n  - rejected == 0\n"
        ),
    )
    .unwrap();
    p
}

/// The flags the refusal names: "…plan: A, B would not apply; …".
fn refused_names(err: &str) -> Vec<String> {
    let Some(start) = err.find("own profile and plan: ") else {
        return Vec::new();
    };
    let rest = &err[start + "own profile and plan: ".len()..];
    let end = rest
        .find(" would not apply")
        .expect("the refusal's wording");
    rest[..end].split(", ").map(String::from).collect()
}

#[test]
fn run_flags_a_scenario_would_not_apply_are_refused_by_name() {
    let scn = tiny("refused", 20);
    let scn = scn.to_str().unwrap();
    let table: &[(&[&str], &[&str])] = &[
        // The audit's list: each used to exit 0 and be ignored.
        (&["--rcpts", "3"], &["--rcpts"]),
        (&["--size", "5k"], &["--size"]),
        (&["--profile", "x.yaml"], &["--profile"]),
        (&["--profile", "/nonexistent.yaml"], &["--profile"]),
        (&["--per-conn", "7"], &["--per-conn"]),
        (&["--chunking", "off"], &["--chunking"]),
        (&["--drain", "1s"], &["--drain"]),
        (&["--tls"], &["--tls"]),
        (&["--lmtp"], &["--lmtp"]),
        (&["--timeout", "1s"], &["--timeout"]),
        (&["--abort-on-fail"], &["--abort-on-fail"]),
        (&["--run-id", "x"], &["--run-id"]),
        (&["--no-trace"], &["--no-trace"]),
        // Refused before as well, by a hand-kept list.
        (&["--target", "127.0.0.1:25"], &["--target"]),
        (&["-c", "5"], &["--concurrency"]),
        (&["-n", "5"], &["--messages"]),
        (&["-d", "1s"], &["--duration"]),
        (&["--rate", "10"], &["--rate"]),
        (&["--stages", "1s:5"], &["--stages"]),
        (&["--timeline", "t.csv"], &["--timeline"]),
        (&["--threshold", "p99<1s"], &["--threshold"]),
        (&["--sink-plan", "p.yaml"], &["--sink-plan"]),
        (&["--ledger", "http://127.0.0.1:1"], &["--ledger"]),
        // A few more of the rest.
        (&["--allow-remote"], &["--allow-remote"]),
        (&["--cpus", "0"], &["--cpus"]),
        (&["--interval", "1s"], &["--interval"]),
        (&["--from", "a{N}@example.test"], &["--from"]),
        (&["--starttls", "required"], &["--starttls"]),
        (&["--auth", "u:p"], &["--auth"]),
        (&["--pipeline-depth", "4"], &["--pipeline-depth"]),
        (&["--shard", "0/2"], &["--shard"]),
        (&["--print-config"], &["--print-config"]),
        // Several at once, named in --help order; applied ones not named.
        (
            &["-t", "1", "--size", "5k", "--no-pin", "-n", "3", "--tls"],
            &["--messages", "--size", "--tls"],
        ),
    ];
    for (flags, names) in table {
        let mut args = vec!["--scenario", scn];
        args.extend_from_slice(flags);
        let out = blast(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert_eq!(refused_names(&err), *names, "{flags:?}: {err}");
        assert!(
            err.contains("put the settings in the scenario file"),
            "{flags:?}: says what to do: {err}"
        );
        assert!(text(&out.stdout).is_empty(), "{flags:?}: nothing ran");
    }
}

#[test]
fn refusal_comes_first_even_with_several_scenarios_and_junit() {
    // With several files a scenario that cannot run is a JUnit error and
    // exit 1; a refused flag is a usage error for all of them: exit 2, no
    // scenario run, no JUnit file.
    let a = tiny("several-a", 20);
    let b = tiny("several-b", 20);
    let junit = dir().join("several.xml");
    let out = blast(&[
        "--scenario",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--rcpts",
        "3",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(refused_names(&err), ["--rcpts"], "{err}");
    assert!(!junit.exists(), "no scenario ran");
    // --html, like --report, takes one scenario.
    let html = dir().join("several.html");
    let out = blast(&[
        "--scenario",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("take one scenario"));
}

fn report(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn applied_flags_apply() {
    let scn = tiny("applied", 20);
    let json = dir().join("applied.json");
    let html = dir().join("applied.html");
    // JOB_COMPLETION_INDEX (the index --shard takes from a Kubernetes
    // Indexed Job) comes from the environment, not the command line.
    let out = blast_cmd(&[
        "--scenario",
        scn.to_str().unwrap(),
        "--threads",
        "1",
        "--no-pin",
        "--seed",
        "4242",
        "--time-scale",
        "0.5",
        "-q",
        "--report",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ])
    .env("JOB_COMPLETION_INDEX", "1")
    .output()
    .unwrap();
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(so.contains("scenario applied passed"), "{so}");
    let v = report(&json);
    let schema: Value = serde_json::from_str(include_str!("../report.schema.json")).unwrap();
    assert_eq!(common::validate(&schema, &v), Vec::<String>::new());
    let cfg = &v["config"];
    assert_eq!(cfg["seed"], 4242, "{cfg}");
    assert_eq!(cfg["threads"], 1, "{cfg}");
    assert_eq!(cfg["pin"], false, "{cfg}");
    assert_eq!(cfg["time_scale"], 0.5, "{cfg}");
    assert_eq!(v["outcome"]["status"], "ok", "{}", v["outcome"]);
    assert_eq!(v["outcome"]["exit_code"], 0);
    assert_eq!(v["scenario"]["name"], "applied");
    assert_eq!(v["scenario"]["expectations"][0]["shown"], "20");
    // The HTML page embeds the same report, titled by the scenario.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<title>mailstorm-blast scenario applied</title>"),
        "{}",
        &page[..page.len().min(400)]
    );
    assert!(page.contains("\"expect\":\"delivered == 20\""));
    assert!(se.contains(&format!("HTML report written to {}", html.display())));

    // `--report -`: framed on standard output (not a file named "-").
    let out = blast_cmd(&[
        "--scenario",
        scn.to_str().unwrap(),
        "--no-pin",
        "--report",
        "-",
    ])
    .current_dir(dir())
    .output()
    .unwrap();
    let so = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{so}");
    let framed = so
        .split("-----BEGIN MAILSTORM REPORT-----\n")
        .nth(1)
        .and_then(|r| r.split("-----END MAILSTORM REPORT-----").next())
        .unwrap_or_else(|| panic!("no framed report: {so}"));
    let v: Value = serde_json::from_str(framed).unwrap();
    assert_eq!(v["scenario"]["name"], "applied");
    assert!(!dir().join("-").exists());
}

#[test]
fn a_failed_scenario_report_and_page_carry_the_failed_expectation() {
    let scn = tiny("wrong", 21);
    let json = dir().join("wrong.json");
    let html = dir().join("wrong.html");
    let out = blast(&[
        "--scenario",
        scn.to_str().unwrap(),
        "--no-pin",
        "--report",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v = report(&json);
    assert_eq!(v["outcome"]["status"], "failed");
    assert_eq!(v["outcome"]["exit_code"], 1);
    assert_eq!(
        v["outcome"]["reasons"],
        serde_json::json!(["expectation failed: delivered == 21 (measured 20)"])
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("expectation failed: delivered == 21 (measured 20)"));
}

/// `-q` silences the ledger drain progress of a relay scenario. The
/// "relay" is a sink that keeps what it accepts; the downstream named in
/// the scenario is another sink that never receives anything, so the join
/// waits the whole `drain` and (without `-q`) says so once a second.
#[test]
fn quiet_hides_the_relay_ledger_drain_progress() {
    let relay = common::sink();
    let down = common::sink_builder()
        .control("127.0.0.1:0".parse().unwrap())
        .start()
        .expect("downstream sink starts");
    let control = down.control_addr().expect("control API");
    let p = dir().join("relay.yaml");
    std::fs::write(
        &p,
        format!(
            "name: relay-lost\n\
             target: {}\n\
             downstream: http://{control}\n\
             profile: {{messages: 3, concurrency: 1, threads: 1, pin: false, drain: 3s}}\n\
             expect:\n  - ledger.accepted == 3\n  - lost == 3\n",
            relay.local_addr()
        ),
    )
    .unwrap();
    let p = p.to_str().unwrap();
    // Both at once: each waits out the same drain.
    let loud = blast_cmd(&["--scenario", p]).spawn().unwrap();
    let quiet = blast_cmd(&["--scenario", p, "-q"]).spawn().unwrap();
    let loud = loud.wait_with_output().unwrap();
    let quiet = quiet.wait_with_output().unwrap();
    for (o, what) in [(&loud, "without -q"), (&quiet, "with -q")] {
        let t = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "{what}: {t}");
        assert!(t.contains("lost 3"), "{what}: the ledger summary: {t}");
    }
    let loud_err = text(&loud.stderr);
    assert!(
        loud_err.contains("ledger: 0/3 delivered after"),
        "progress without -q: {loud_err}"
    );
    let quiet_err = text(&quiet.stderr);
    assert!(
        !quiet_err.contains("delivered after"),
        "no progress with -q: {quiet_err}"
    );
}
