//! The `mailstorm-sink` binary: help, config errors, SIGHUP reload, SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::child::{rss_kib, Running, BIN};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn help_documents_every_option_and_exit_codes() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--config",
        "--listen",
        "--tls-listen",
        "--threads",
        "--no-pin",
        "--backlog",
        "--hostname",
        "--lmtp",
        "--max-line-length",
        "--max-message-size",
        "--max-recipients",
        "--max-errors",
        "--idle-timeout",
        "--max-session-duration",
        "--max-connections",
        "--max-connections-per-ip",
        "--bare-lf",
        "--lenient",
        "--no-tls",
        "--tls-cert",
        "--tls-key",
        "--auth-users",
        "--auth-required",
        "--capture",
        "--keep",
        "--keep-bytes",
        "--control",
        "--control-token",
        "--stats-interval",
        "--quiet",
        "--shutdown-grace",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
    for default in [
        "127.0.0.1:2525",
        "4096",
        "50MiB",
        "300s",
        "127.0.0.1:8025",
        "5s",
        "64MiB",
    ] {
        assert!(help.contains(default), "--help lacks default {default}");
    }
    assert!(help.contains("Exit codes"));
}

#[test]
fn unknown_yaml_key_is_a_usage_error_naming_key_and_position() {
    let dir = std::env::temp_dir().join(format!("mailstorm-sink-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "lmtp: true\nmax-recipeints: 5\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max-recipeints"), "{err}");
    assert!(err.contains("bad.yaml:2:"), "{err}");
}

/// Sends `sig` to the sink.
fn signal(run: &Running, sig: Signal) {
    kill(Pid::from_raw(run.child.id() as i32), sig).unwrap();
}

#[test]
fn sighup_reloads_and_sigterm_exits_cleanly() {
    let dir = std::env::temp_dir().join(format!("mailstorm-sink-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("sink.yaml");
    std::fs::write(
        &cfg,
        "listen: ['127.0.0.1:0']\nhostname: first.test\ncontrol: off\n",
    )
    .unwrap();
    let run = Running::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--threads",
        "2",
        "--no-pin",
        "--stats-interval",
        "0",
    ]);
    let addr = run.smtp_addr();
    let mut old = Client::connect_raw(addr);
    assert!(old.reply().text().starts_with("first.test"));
    std::fs::write(
        &cfg,
        "listen: ['127.0.0.1:0']\nhostname: second.test\ncontrol: off\n",
    )
    .unwrap();
    signal(&run, Signal::SIGHUP);
    run.line_with("configuration reloaded");
    let mut new = Client::connect_raw(addr);
    assert!(new.reply().text().starts_with("second.test"));
    // The old session survived the reload with its settings.
    assert_eq!(old.cmd("EHLO c.test").lines[0], "first.test");
    old.send_message("a@b.test", &["x@y.test"], "hi")
        .expect(250, "2.0.0");
    signal(&run, Signal::SIGTERM);
    old.noop_until_refused().expect(421, "4.3.2");
    new.noop_until_refused().expect(421, "4.3.2");
    let fin = run.line_with("final stats");
    assert!(fin.contains("\"messages_accepted\":1"), "{fin}");
    let mut run = run;
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary to its exit (bounded: every case fails before serving,
/// and `--stats-interval 0 -q` keeps stderr to the error).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--threads", "1", "--no-pin"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn exit_codes_match_help_and_errors_say_the_os_error_once() {
    let dir = temp_dir("sink-exit-codes");
    let bad_plan = dir.join("bad-plan.yaml");
    std::fs::write(&bad_plan, "rules: [[\n").unwrap();
    let missing_plan = dir.join("missing-plan.yaml");
    let events = dir.join("no-such-dir/events.jsonl");
    let not_a_dir = dir.join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let capture = not_a_dir.join("captures");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let p = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, i32, Vec<String>)> = vec![
        (
            vec![
                "--control".into(),
                "off".into(),
                "--plan".into(),
                p(&bad_plan),
            ],
            2,
            vec![p(&bad_plan)],
        ),
        (
            vec![
                "--control".into(),
                "off".into(),
                "--plan".into(),
                p(&missing_plan),
            ],
            2,
            vec![p(&missing_plan), "cannot read plan".into()],
        ),
        (
            vec!["--control".into(), "0.0.0.0:0".into()],
            2,
            vec!["--control-token".into()],
        ),
        (
            vec!["--control".into(), taken.clone()],
            1,
            vec![taken.clone(), "in use".into()],
        ),
        (
            vec![
                "--control".into(),
                "off".into(),
                "--events".into(),
                p(&events),
            ],
            2,
            vec![p(&events), "events file".into()],
        ),
        (
            vec![
                "--control".into(),
                "off".into(),
                "--capture".into(),
                p(&capture),
            ],
            2,
            vec![p(&capture), "capture directory".into()],
        ),
        (
            vec![
                "--control".into(),
                "off".into(),
                "--capture".into(),
                "/proc/self".into(),
            ],
            2,
            vec!["capture directory /proc/self".into()],
        ),
        // Past 365d: `now + idle timeout` once overflowed the clock and
        // killed the shard at the first connection.
        (
            vec![
                "--control".into(),
                "off".into(),
                "--idle-timeout".into(),
                "18446744073709551615".into(),
            ],
            2,
            vec!["\"18446744073709551615\"".into(), "limit of 365d".into()],
        ),
        // Files are read bounded: a device never ends.
        (
            vec![
                "--control".into(),
                "off".into(),
                "--plan".into(),
                "/dev/zero".into(),
            ],
            2,
            vec!["plan /dev/zero: larger than 16MiB".into()],
        ),
    ];
    for (args, code, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, err) = run_to_exit(&args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        for n in &needles {
            assert!(err.contains(n.as_str()), "{args:?}: {err:?} lacks {n:?}");
        }
        assert!(!err.contains("final stats"), "never started: {err}");
        assert!(
            !err.contains("cannot read plan") || args.contains(&"--plan"),
            "{args:?}: {err}"
        );
        let os_errors = err.matches("(os error").count();
        assert!(os_errors <= 1, "the OS error repeated: {err}");
    }
    // An absurd shard count is refused before any thread is spawned (it
    // once overflowed the descriptor reserve's arithmetic).
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--control", "off"])
        .args(["--threads", "18446744073709551615"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 1024 shards"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_every_exit_code_as_the_readme_does() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("#### mailstorm-sink exit codes")
        .nth(1)
        .expect("README has the sink's exit-code table");
    for (code, help_words, readme_words) in [
        (0, "clean shutdown", "| 0 | clean shutdown"),
        (1, "runtime failure", "| 1 | runtime failure"),
        (
            2,
            "invalid command line or configuration",
            "| 2 | invalid command line or configuration",
        ),
    ] {
        assert!(
            help.contains(&format!("{code}  {help_words}")),
            "--help lacks exit code {code}"
        );
        assert!(
            section.contains(readme_words),
            "README lacks exit code {code}"
        );
    }
    // Every cause --help names for 1 and 2 is in the README's table too.
    for cause in [
        "cannot be bound",
        "thread",
        "--plan",
        "--auth-users",
        "without a token",
        "--capture",
        "--events",
    ] {
        assert!(help.contains(cause), "--help lacks {cause}");
        assert!(section.contains(cause), "README lacks {cause}");
    }
}

#[test]
fn enum_flags_ignore_case() {
    for (args, expect) in [
        (&["--bare-lf", "ACCEPT"][..], "bare_lf: accept"),
        (&["--bare-lf", "Reject"], "bare_lf: reject"),
        (&["--control", "OFF"], "control: off"),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .arg("--print-config")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(expect), "{args:?}: {text}");
    }
    let out = Command::new(BIN)
        .args(["--bare-lf", "maybe", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("accept") && err.contains("reject"), "{err}");
}

#[test]
fn capture_log_lines_name_the_path() {
    let dir = temp_dir("sink-capture-log");
    std::os::unix::fs::symlink("/dev/full", dir.join(".1.eml.tmp")).unwrap();
    let run = Running::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        "off",
        "--threads",
        "1",
        "--no-pin",
        "--stats-interval",
        "0",
        "--capture",
        dir.to_str().unwrap(),
    ]);
    let line = run.line_with("capturing messages to");
    assert!(line.contains(dir.to_str().unwrap()), "{line}");
    let addr = run.smtp_addr();
    let mut c = Client::ehlo(addr);
    c.send_message("a@b.test", &["x@y.test"], "hi")
        .expect(451, "4.3.0");
    let line = run.line_with("cannot store message");
    let tmp = dir.join(".1.eml.tmp");
    assert!(line.contains(tmp.to_str().unwrap()), "{line}");
    assert!(!tmp.exists(), "temp file left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_messages_returns_the_memory() {
    const MESSAGES: usize = 3000;
    let run = Running::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--no-pin",
        "--stats-interval",
        "0",
        "--keep",
        "20000",
    ]);
    let addr = run.smtp_addr();
    let line = run.line_with("control API on");
    let api: SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .expect("control address");
    let pid = run.child.id();
    let before = rss_bytes_of(pid);
    let body = format!("Subject: s\r\n\r\n{}", "x".repeat(10 * 1024));
    let mut c = Client::ehlo(addr);
    for _ in 0..MESSAGES {
        c.send_message("a@b.test", &["x@y.test"], &body)
            .expect(250, "2.0.0");
    }
    let full = rss_bytes_of(pid);
    let grown = full.saturating_sub(before);
    assert!(
        grown > 20 << 20,
        "kept messages should take memory: +{grown}"
    );
    assert_eq!(http(api, "DELETE", "/messages", b"").status, 204);
    assert_eq!(http(api, "GET", "/messages", b"").text(), "[]");
    let after = rss_bytes_of(pid);
    assert!(
        after < full - grown / 2,
        "RSS {before} -> {full} -> {after} after DELETE /messages"
    );
}

#[test]
fn keep_bytes_caps_the_kept_messages_from_the_command_line() {
    let run = Running::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--no-pin",
        "--stats-interval",
        "0",
        "--keep",
        "20000",
        "--keep-bytes",
        "64k",
    ]);
    let addr = run.smtp_addr();
    let line = run.line_with("control API on");
    let api: SocketAddr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .expect("control address");
    let body = format!("Subject: s\r\n\r\n{}", "x".repeat(10 * 1024));
    let mut c = Client::ehlo(addr);
    for _ in 0..20 {
        c.send_message("a@b.test", &["x@y.test"], &body)
            .expect(250, "2.0.0");
    }
    let list: serde_json::Value =
        serde_json::from_slice(&http(api, "GET", "/messages", b"").body).unwrap();
    let sizes: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["size"].as_u64().unwrap())
        .collect();
    assert!(
        !sizes.is_empty() && sizes.len() < 20,
        "{} kept",
        sizes.len()
    );
    assert!(sizes.iter().sum::<u64>() <= 64 * 1024, "{sizes:?}");
}

/// Resident memory of a process, in bytes.
fn rss_bytes_of(pid: u32) -> u64 {
    rss_kib(&pid.to_string()) * 1024
}

/// Under an open-files limit, connections past what it leaves room for get
/// `421 4.7.0` at once. Before, the sink served them until `accept` failed
/// (EMFILE) and the rest waited unanswered in the listen backlog; with the
/// limits of a container (a million descriptors) nothing bounded them.
#[test]
fn connections_past_the_open_files_limit_get_421_not_silence() {
    const LIMIT: u64 = 200;
    const OVER: usize = 5;
    let config = mailstorm_sink::SinkConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        threads: Some(1),
        control: None,
        ..mailstorm_sink::SinkConfig::default()
    };
    let room = mailstorm_sink::connection_ceiling(LIMIT, &config);
    // Well under the limit, so a sink without the ceiling (about 20
    // descriptors of its own) would greet every client this test opens.
    assert!(
        room + OVER + 40 < LIMIT as usize,
        "room for {room} connections"
    );
    let dir = std::env::temp_dir().join(format!("mailstorm-sink-nofile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("sink.yaml");
    let yaml = "listen: ['127.0.0.1:0']\nthreads: 1\ncontrol: off\n";
    std::fs::write(&cfg, yaml).unwrap();
    let run = Running::spawn_with_open_files(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--no-pin",
            "--stats-interval",
            "0",
        ],
        LIMIT,
    );
    // The default --max-connections (20,000) is over the room: the sink
    // says so, with the figures.
    let warning = run.line_with("open files limit");
    assert!(
        warning.contains(&format!("({LIMIT}) leaves room for {room} connections"))
            && warning.contains("--max-connections 20000"),
        "{warning}"
    );
    let addr = run.smtp_addr();
    let served: Vec<Client> = (0..room).map(|_| Client::connect(addr)).collect();
    // OVER refusals: all but one now, the last after the reload.
    for _ in 0..OVER - 1 {
        let mut c = Client::connect_raw(addr);
        c.reply().expect(421, "4.7.0");
    }
    // No limit of its own (reloaded) is still under the room.
    std::fs::write(&cfg, format!("{yaml}max_connections: 0\n")).unwrap();
    signal(&run, Signal::SIGHUP);
    run.line_with("configuration reloaded");
    let warning = run.line_with("open files limit");
    assert!(
        warning.contains("--max-connections 0 (no limit)"),
        "{warning}"
    );
    Client::connect_raw(addr).reply().expect(421, "4.7.0");
    // A slot given back serves the next client.
    drop(served);
    // Clients the sink refuses before it sees the closes count too.
    let mut refused = OVER;
    let mut greeted = None;
    wait_for("a slot given back", || {
        let mut c = Client::connect_raw(addr);
        match c.reply().code {
            220 => greeted = Some(c),
            _ => refused += 1,
        }
        greeted.is_some()
    });
    let mut c = greeted.unwrap();
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    c.send_message("a@b.test", &["x@y.test"], "hi")
        .expect(250, "2.0.0");
    c.cmd("QUIT");
    signal(&run, Signal::SIGTERM);
    let (fin, json) = run.final_stats();
    assert_eq!(
        json["closed"]["too_many_connections"], refused as u64,
        "{fin}"
    );
    assert_eq!(json["messages_accepted"], 1, "{fin}");
    let _ = std::fs::remove_dir_all(&dir);
}
