//! `mailstorm-blast` (driven through its library) against real servers:
//! a throwaway Postfix `smtpd` discarding mail, aiosmtpd with AUTH, and
//! Postfix's `smtp-sink`. Each run must complete with the expected counts,
//! on both sides where the server can tell.
//!
//! The servers are installed by `scripts/test.sh`. A missing one fails its
//! test with a hint, unless `MAILSTORM_SKIP_INTEROP=1` (then it skips).
//! Every external process is killed with its process group on drop; runs
//! are bounded by a message count and a duration cap; everything is on
//! 127.0.0.1.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mailstorm_blast::config::{AuthMech, Config, Mode, RcptRange};
use mailstorm_blast::stats::{Stage, Transport};
use mailstorm_blast::{RunParams, RunResult, StopSignal};
use support::postfix::{smtp_sink_path, PostfixTools};
use support::{
    require_program, run_with_timeout, skip_missing_tools, wait_for_port, wait_until, ChildGuard,
    PostfixInstance,
};

/// A bounded blaster config: one unpinned shard, quiet, fixed seed, a time
/// cap well above what the runs need.
fn config(messages: u64) -> Config {
    let mut c = Config {
        threads: 1,
        pin: false,
        quiet: true,
        seed: 11,
        concurrency: 4,
        messages: Some(messages),
        duration: Some(Duration::from_secs(60)),
        grace: Duration::from_secs(5),
        to: "user{n}@example.test".into(),
        // Postfix delivers a recipient repeated within a message once:
        // a space this large makes repeats (fixed by the seed) unlikely.
        users: 1_000_000_000,
        ..Config::default()
    };
    c.timeouts.apply("15s").unwrap();
    c
}

fn blast(cfg: Config, addr: SocketAddr) -> RunResult {
    let params = RunParams {
        config: cfg,
        addr,
        target: addr.to_string(),
        host: addr.ip().to_string(),
        trusted_pem: None,
        stop: StopSignal::new(),
        preflight: None,
    };
    mailstorm_blast::run(&params, |_| {}).expect("blast run")
}

/// Replies counted at `stage` with reply code `code` (any enhanced code).
fn replies(r: &RunResult, stage: Stage, code: u16) -> u64 {
    r.totals
        .replies
        .iter()
        .filter(|(k, _)| k.stage == stage && k.code == code)
        .map(|(_, n)| n)
        .sum()
}

/// Every message accepted, nothing else, no transport error.
#[track_caller]
fn assert_all_accepted(r: &RunResult, n: u64) {
    let c = r.totals.counters;
    assert_eq!(
        (c.attempted, c.accepted, c.deferred, c.rejected, c.failed),
        (n, n, 0, 0, 0),
        "counters {c:?}; replies {:?}; transport {:?}",
        r.totals.replies_by_stage(),
        r.totals.transport
    );
    assert_eq!(r.totals.transport_errors(), 0);
    assert_eq!(r.totals.histogram(Stage::Message).len(), n);
}

// ---------------------------------------------------------------------------
// Postfix smtpd

#[test]
fn blast_against_postfix_smtpd() {
    if PostfixTools::require().is_none() {
        return;
    }
    let pf = PostfixInstance::server(&["example.test"])
        .start()
        .expect("postfix starts");
    let addr = pf.smtpd_addr();

    // One transaction per round trip (Postfix advertises PIPELINING and
    // CHUNKING: MAIL RCPT… BDAT LAST + body in one write).
    let r1 = blast(
        Config {
            per_conn: 25,
            rcpts: RcptRange { min: 1, max: 3 },
            ..config(150)
        },
        addr,
    );
    assert_all_accepted(&r1, 150);
    assert_eq!(replies(&r1, Stage::Data, 354), 0, "BDAT, not DATA");
    // Workers share the budget, so each may end on a partial connection.
    assert!((6..=10).contains(&r1.totals.counters.conn_opened));

    // Eight transactions per write (RSET between them), QUIT on the last.
    let r2 = blast(
        Config {
            per_conn: 0,
            pipeline_depth: 8,
            rcpts: RcptRange { min: 1, max: 3 },
            ..config(160)
        },
        addr,
    );
    assert_all_accepted(&r2, 160);
    assert!(
        replies(&r2, Stage::Rset, 250) >= 100,
        "RSETs between batched transactions"
    );
    assert_eq!(replies(&r2, Stage::Quit, 221), 4);

    // DATA instead of BDAT, the next group riding on the body's write.
    let r3 = blast(
        Config {
            chunking: Mode::Off,
            pipeline_depth: 2,
            ..config(100)
        },
        addr,
    );
    assert_all_accepted(&r3, 100);
    assert_eq!(replies(&r3, Stage::Data, 354), 100);

    // Postfix delivered every recipient (to discard).
    let rcpts = [&r1, &r2, &r3]
        .iter()
        .map(|r| r.totals.counters.rcpt_accepted)
        .sum::<u64>() as usize;
    pf.wait_queue_empty(Duration::from_secs(60))
        .expect("queue drains");
    let mut sent = 0;
    wait_until("every delivery in the log", Duration::from_secs(30), || {
        sent = pf.maillog().matches("status=sent").count();
        sent >= rcpts
    })
    .unwrap_or_else(|e| panic!("{e}: {sent} of {rcpts} delivered"));
    assert_eq!(sent, rcpts);
}

// ---------------------------------------------------------------------------
// aiosmtpd with AUTH

const USER: &str = "blast";
const PASSWORD: &str = "s3cret";

/// aiosmtpd on a free port, from `tests/interop/aiosmtpd_auth.py`.
struct Aiosmtpd {
    child: ChildGuard,
    addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl Aiosmtpd {
    /// `None` when python3 or aiosmtpd is missing and interop tests may skip.
    fn start() -> Option<Aiosmtpd> {
        let python = require_program("python3")?;
        let check = run_with_timeout(
            Command::new(&python).args(["-c", "import aiosmtpd"]),
            None,
            Duration::from_secs(20),
        )
        .expect("run python3");
        if !check.success() {
            if skip_missing_tools() {
                eprintln!("SKIPPED: aiosmtpd missing and MAILSTORM_SKIP_INTEROP=1");
                return None;
            }
            panic!("aiosmtpd not installed: run scripts/test.sh (it installs it)\n{check}");
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/aiosmtpd_auth.py"
        );
        // The port is picked before aiosmtpd binds it: retry on a clash.
        for _ in 0..5 {
            let port = support::free_port();
            let mut child = ChildGuard::spawn(
                Command::new(&python)
                    .args([script, &port.to_string(), USER, PASSWORD, "120"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit()),
                "aiosmtpd",
            )
            .expect("spawn aiosmtpd");
            let out = child.child_mut().stdout.take().expect("piped stdout");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l == "READY" => {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    wait_for_port(addr, Duration::from_secs(10)).expect("aiosmtpd listens");
                    return Some(Aiosmtpd {
                        child,
                        addr,
                        stdout: rx,
                    });
                }
                _ => continue, // exited (port taken) or said something else
            }
        }
        panic!("aiosmtpd did not start on any of 5 ports");
    }

    /// Closes its stdin and returns (delivered, auth ok, auth failed).
    fn finish(mut self) -> (u64, u64, u64) {
        drop(self.child.child_mut().stdin.take());
        let line = self
            .stdout
            .recv_timeout(Duration::from_secs(20))
            .expect("aiosmtpd reports its counts");
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(nums.len(), 3, "{line}");
        (nums[0], nums[1], nums[2])
    }
}

#[test]
fn blast_against_aiosmtpd_with_auth() {
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    let addr = server.addr;
    let mut opened = 0;
    for mech in [AuthMech::Plain, AuthMech::Login] {
        let r = blast(
            Config {
                auth: Some(format!("{USER}:{PASSWORD}")),
                auth_mech: mech,
                per_conn: 20,
                rcpts: RcptRange { min: 1, max: 2 },
                ..config(100)
            },
            addr,
        );
        assert_all_accepted(&r, 100);
        let c = r.totals.counters;
        assert!((5..=9).contains(&c.conn_opened), "{mech:?}: {c:?}");
        assert_eq!(replies(&r, Stage::Auth, 235), c.conn_opened, "{mech:?}");
        opened += c.conn_opened;
    }
    // A wrong password: every session fails at AUTH, nothing is accepted,
    // and the 535 is accounted at the auth stage.
    let bad = blast(
        Config {
            auth: Some(format!("{USER}:wrong")),
            concurrency: 1,
            ..config(3)
        },
        addr,
    );
    let c = bad.totals.counters;
    assert_eq!((c.attempted, c.accepted), (3, 0), "{c:?}");
    assert_eq!(c.conn_failed, 3, "{c:?}");
    assert_eq!(replies(&bad, Stage::Auth, 535), 3);

    let (delivered, auth_ok, auth_failed) = server.finish();
    assert_eq!(delivered, 200);
    assert_eq!(auth_ok, opened);
    assert_eq!(auth_failed, 3);
}

// ---------------------------------------------------------------------------
// Postfix smtp-sink

#[test]
fn blast_against_smtp_sink() {
    let Some(path) = smtp_sink_path().or_else(|| require_program("smtp-sink")) else {
        return;
    };
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    let mut sink = None;
    for _ in 0..5 {
        let addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let mut cmd = Command::new(&path);
        if root {
            // smtp-sink refuses to run as root without a user to become.
            cmd.args(["-u", "nobody"]);
        }
        cmd.arg(addr.to_string())
            .arg("128")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(&mut cmd, "smtp-sink").expect("spawn smtp-sink");
        if wait_for_port(addr, Duration::from_secs(10)).is_ok()
            && child.try_wait().ok().flatten().is_none()
        {
            sink = Some((child, addr));
            break;
        }
    }
    let (_sink, addr) = sink.expect("smtp-sink listens");

    // Reused connections, DATA (smtp-sink has PIPELINING, no CHUNKING),
    // one transaction at a time.
    let r = blast(
        Config {
            per_conn: 100,
            ..config(1000)
        },
        addr,
    );
    assert_all_accepted(&r, 1000);
    assert_eq!(replies(&r, Stage::Data, 354), 1000);
    assert!((10..=14).contains(&r.totals.counters.conn_opened));

    // Body + dot + next MAIL RCPT DATA (or QUIT) in one write.
    let r = blast(
        Config {
            per_conn: 0,
            pipeline_depth: 4,
            ..config(1000)
        },
        addr,
    );
    assert_all_accepted(&r, 1000);
    assert_eq!(replies(&r, Stage::Quit, 221), 4);

    // One message per connection, ten recipients each.
    let r = blast(
        Config {
            per_conn: 1,
            rcpts: RcptRange { min: 10, max: 10 },
            ..config(200)
        },
        addr,
    );
    assert_all_accepted(&r, 200);
    assert_eq!(r.totals.counters.rcpt_accepted, 2000);
    assert_eq!(r.totals.counters.conn_opened, 200);
    assert_eq!(r.totals.transport[Transport::Refused as usize], 0);
}
