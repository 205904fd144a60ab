//! The `mailstorm-sink` binary: help, config errors, SIGHUP reload, SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-sink");

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

/// The child and its stderr lines.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next stderr line containing `needle` (bounded wait).
    fn line_with(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let line = run.line_with("listening on");
    let addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("address in the listening line");
    let mut old = Client::connect_raw(addr);
    assert!(old.reply().text().starts_with("first.test"));
    std::fs::write(
        &cfg,
        "listen: ['127.0.0.1:0']\nhostname: second.test\ncontrol: off\n",
    )
    .unwrap();
    run.signal(Signal::SIGHUP);
    run.line_with("configuration reloaded");
    let mut new = Client::connect_raw(addr);
    assert!(new.reply().text().starts_with("second.test"));
    // The old session survived the reload with its settings.
    assert_eq!(old.cmd("EHLO c.test").lines[0], "first.test");
    old.send_message("a@b.test", &["x@y.test"], "hi")
        .expect(250, "2.0.0");
    run.signal(Signal::SIGTERM);
    old.noop_until_refused().expect(421, "4.3.2");
    new.noop_until_refused().expect(421, "4.3.2");
    let fin = run.line_with("final stats");
    assert!(fin.contains("\"messages_accepted\":1"), "{fin}");
    let mut run = run;
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
