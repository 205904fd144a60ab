//! The sink binary as a child process: its stderr lines read on a thread so
//! a test waits for a line (bounded), never for a fixed time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::TIMEOUT;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-sink");

/// The child and its stderr lines.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn spawn(args: &[&str]) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Running::start(cmd)
    }

    /// As [`Running::spawn`], under an open-files limit of `limit`
    /// descriptors (soft and hard, so the sink cannot raise it).
    pub fn spawn_with_open_files(args: &[&str], limit: u64) -> Running {
        use nix::sys::resource::{setrlimit, Resource};
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        // SAFETY: the closure runs in the child between fork and exec; it
        // only makes the setrlimit system call (async-signal-safe) and
        // allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(std::io::Error::from)
            });
        }
        Running::start(cmd)
    }

    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
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

    /// The SMTP address from the `listening on ADDR` line (bounded wait).
    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        let line = self.line_with("listening on");
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("address in {line:?}"))
    }

    /// The control API address from the `control API on http://ADDR/`
    /// line (bounded wait).
    pub fn control_addr(&self) -> std::net::SocketAddr {
        let line = self.line_with("control API on");
        line.rsplit("http://")
            .next()
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("address in {line:?}"))
    }

    /// The DNS responder's address from the `DNS on ADDR` line (bounded
    /// wait).
    pub fn dns_addr(&self) -> std::net::SocketAddr {
        let line = self.line_with("DNS on");
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("address in {line:?}"))
    }

    /// The `final stats: {...}` line printed at shutdown (bounded wait):
    /// the line, for messages, and its JSON.
    pub fn final_stats(&self) -> (String, serde_json::Value) {
        let line = self.line_with("final stats");
        let json = line
            .split_once("final stats: ")
            .and_then(|(_, j)| serde_json::from_str(j).ok())
            .unwrap_or_else(|| panic!("JSON in {line:?}"));
        (line, json)
    }

    /// The next stderr line containing `needle` (bounded wait).
    pub fn line_with(&self, needle: &str) -> String {
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
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process (`"self"` or a pid), in KiB (Linux).
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}
