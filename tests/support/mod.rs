//! Shared helpers for the root package's integration tests (`tests/*.rs`
//! that declare `mod support;`).
//!
//! - [`run_with_timeout`]: run an external client (swaks, curl, python3…)
//!   with a hard time limit; on timeout its whole process group is killed.
//! - [`ChildGuard`]: a long-running child killed (with its process group)
//!   on drop, even when the test panics.
//! - [`wait_for_port`], [`wait_until`], [`wait_for_file_containing`]:
//!   bounded polling instead of sleeps.
//! - [`require_program`]: find an external tool, or fail with a hint naming
//!   `scripts/test.sh` (or skip when `MAILSTORM_SKIP_INTEROP=1`).
//! - [`smtp_send`]: a minimal blocking SMTP client to inject a message.
//! - [`postfix::PostfixInstance`]: a throwaway Postfix instance (relay
//!   client or discarding server) in a temporary directory.
#![allow(dead_code)]

pub mod postfix;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

// Not every test file uses both.
#[allow(unused_imports)]
pub use postfix::{PostfixBuilder, PostfixInstance};

/// The default bound for one external client run or one wait.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The interval between two polls of a bounded wait.
const POLL: Duration = Duration::from_millis(10);

/// `true` when `MAILSTORM_SKIP_INTEROP=1`: tests whose external tools are
/// missing skip instead of failing.
pub fn skip_missing_tools() -> bool {
    std::env::var_os("MAILSTORM_SKIP_INTEROP").is_some_and(|v| v == "1")
}

/// Finds `name` on `PATH`, then in the sbin directories (Postfix lives in
/// `/usr/sbin`, which a non-login `PATH` may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The path of a required external tool. Panics with an install hint when
/// it is missing, unless `MAILSTORM_SKIP_INTEROP=1`, in which case it prints
/// a note and returns `None` (the caller returns early).
#[track_caller]
pub fn require_program(name: &str) -> Option<PathBuf> {
    if let Some(p) = find_program(name) {
        return Some(p);
    }
    if skip_missing_tools() {
        eprintln!("SKIPPED: `{name}` not found and MAILSTORM_SKIP_INTEROP=1");
        return None;
    }
    panic!(
        "`{name}` not found: run scripts/test.sh (it installs the interop clients), \
         or set MAILSTORM_SKIP_INTEROP=1 to skip tests that need it"
    );
}

/// A loopback port that was free a moment ago (bind to port 0, read the
/// port, close). For programs that cannot report the port they bound;
/// callers retry with another port if the program then fails to bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), String> {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() >= end {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until a TCP connection to `addr` succeeds.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    wait_until(&format!("{addr} to accept connections"), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// Waits until the file at `path` exists and contains `needle`; returns its
/// content.
pub fn wait_for_file_containing(
    path: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut content = String::new();
    wait_until(
        &format!("{} to contain {needle:?}", path.display()),
        timeout,
        || {
            content = std::fs::read_to_string(path).unwrap_or_default();
            content.contains(needle)
        },
    )
    .map_err(|e| format!("{e}; content:\n{content}"))?;
    Ok(content)
}

/// What a bounded run of an external program produced.
#[derive(Debug)]
pub struct RunOutput {
    /// The program and its arguments, for messages.
    pub command: String,
    /// The exit status (`None` when it was killed at the timeout).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// The time limit passed and the program was killed.
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl RunOutput {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The exit code, if it exited by itself.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// stdout then stderr, for assertions on transcripts.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with the whole transcript unless the program succeeded.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "{self}");
        self
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "`{}`: {} after {:?}",
            self.command,
            match (self.timed_out, self.status) {
                (true, _) => "killed at the timeout".to_owned(),
                (false, Some(s)) => s.to_string(),
                (false, None) => "no status".to_owned(),
            },
            self.elapsed
        )?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with `stdin` as its input (or `/dev/null`),
/// killing it and everything it started (its own process group) if it takes
/// longer than `timeout`. stdout and stderr are captured.
pub fn run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<RunOutput> {
    let command = describe(cmd);
    let start = Instant::now();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut guard = ChildGuard::spawn(cmd, &command)?;
    let child = guard.child.as_mut().expect("just spawned");
    let feeder = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            // A write error means the program exited without reading it all;
            // its status tells the rest.
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|s| {
        s.map(|mut s| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        })
    });
    let end = start + timeout;
    let mut status = None;
    let mut timed_out = false;
    loop {
        if let Some(s) = guard.try_wait()? {
            status = Some(s);
            break;
        }
        if Instant::now() >= end {
            timed_out = true;
            break;
        }
        std::thread::sleep(POLL);
    }
    // Kills the process group (leftover grandchildren too) and reaps, so the
    // pipe readers below see EOF.
    drop(guard);
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let [stdout, stderr] =
        readers.map(|r| r.map(|h| h.join().unwrap_or_default()).unwrap_or_default());
    Ok(RunOutput {
        command,
        status,
        stdout,
        stderr,
        timed_out,
        elapsed: start.elapsed(),
    })
}

/// A child process (spawned in its own process group) that is killed with
/// its whole group and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` in a new process group.
    pub fn spawn(cmd: &mut Command, name: &str) -> std::io::Result<ChildGuard> {
        cmd.process_group(0);
        ChildGuard::spawn_leader(cmd, name)
    }

    /// Spawns `cmd` as is, for a program that makes itself a session (and
    /// so process group) leader, like Postfix's `master` (whose `setsid()`
    /// fails if it already leads a group).
    pub fn spawn_leader(cmd: &mut Command, name: &str) -> std::io::Result<ChildGuard> {
        let child = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("spawn {name}: {e}")))?;
        Ok(ChildGuard {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// The exit status if the child has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Sends `signal` to the child's process group.
    pub fn signal_group(&self, signal: Signal) {
        if let Some(c) = &self.child {
            let _ = killpg(Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// Asks the group to stop with `signal`, waits up to `grace` for the
    /// child to exit, then kills the group. Returns the child's status.
    pub fn stop(&mut self, signal: Signal, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pgid = Pid::from_raw(child.id() as i32);
        let _ = killpg(pgid, signal);
        let end = Instant::now() + grace;
        let mut status = None;
        while Instant::now() < end {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(POLL);
        }
        // Whatever is left in the group (the child if it ignored `signal`,
        // or processes it left behind).
        let _ = killpg(pgid, Signal::SIGKILL);
        if status.is_none() {
            status = child.wait().ok();
        }
        status
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one message over plain SMTP (EHLO, MAIL, RCPT…, DATA, QUIT) with
/// `timeout` on every read and write. `data` is the message (headers and
/// body, CRLF line ends, no dot-stuffing needed for ordinary text; lines
/// starting with `.` are stuffed here). Returns the reply to the final dot
/// (which must be 2xx) or the first unexpected reply as an error.
pub fn smtp_send(
    addr: SocketAddr,
    from: &str,
    rcpts: &[&str],
    data: &str,
    timeout: Duration,
) -> Result<String, String> {
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let reply = |r: &mut BufReader<TcpStream>, want: u8| -> Result<String, String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return Err(format!("connection closed after {text:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e} after {text:?}")),
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        if text.as_bytes().first() == Some(&want) {
            Ok(text.trim_end().to_owned())
        } else {
            Err(format!("unexpected reply {text:?}"))
        }
    };
    let send = |w: &mut TcpStream, line: &str| -> Result<(), String> {
        w.write_all(line.as_bytes())
            .map_err(|e| format!("write {line:?}: {e}"))
    };
    reply(&mut r, b'2')?;
    send(&mut w, "EHLO injector.test\r\n")?;
    reply(&mut r, b'2')?;
    send(&mut w, &format!("MAIL FROM:<{from}>\r\n"))?;
    reply(&mut r, b'2')?;
    for rcpt in rcpts {
        send(&mut w, &format!("RCPT TO:<{rcpt}>\r\n"))?;
        reply(&mut r, b'2')?;
    }
    send(&mut w, "DATA\r\n")?;
    reply(&mut r, b'3')?;
    let mut body = String::with_capacity(data.len() + 8);
    for line in data.split_inclusive('\n') {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
    }
    if !body.ends_with("\r\n") {
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    send(&mut w, &body)?;
    let done = reply(&mut r, b'2')?;
    send(&mut w, "QUIT\r\n")?;
    let _ = reply(&mut r, b'2');
    Ok(done)
}
