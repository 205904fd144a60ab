//! Headless Chromium driven through the DevTools protocol over a pipe
//! (`--remote-debugging-pipe`: the browser reads commands on fd 3 and
//! writes replies and events on fd 4, each a JSON text ended by NUL).
//!
//! Why a pipe and not `--remote-debugging-port` + a WebSocket client: no
//! port to pick or race for, no WebSocket library (Python's stdlib has
//! none, and a Rust one would be a new dependency), and the browser dies
//! with its pipe. Every wait is bounded: a command's reply, or a page
//! condition polled until it holds.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one command or one page condition may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// `chromium` on PATH; `None` (the test then passes, saying so) unless
/// `MAILSTORM_REQUIRE_BROWSER=1`, as in the blaster's html_report test.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("chromium"))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("MAILSTORM_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "MAILSTORM_REQUIRE_BROWSER=1 but no chromium on PATH"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// A browser with one page attached.
pub struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// Every event received so far (console calls, exceptions, log entries).
    pub events: Vec<Value>,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile in `dir` and opens a
    /// blank page with the Runtime and Log domains enabled.
    pub fn start(chrome: &Path, dir: &Path) -> Browser {
        // One profile per browser: two in one profile would share its lock.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = dir.join(format!("profile-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let (cmd_r, cmd_w) = std::io::pipe().unwrap();
        let (evt_r, evt_w) = std::io::pipe().unwrap();
        let (rfd, wfd) = (cmd_r.as_raw_fd(), evt_w.as_raw_fd());
        let mut c = Command::new(chrome);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            "--window-size=1200,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and
        // only calls fcntl and dup2 (async-signal-safe) on descriptors the
        // parent opened; it allocates nothing and touches no shared state.
        // The pipes are close-on-exec, so they are first copied above fd
        // 10 (they may be fds 3 or 4 themselves), then dup2 makes the
        // inheritable fds 3 and 4 the browser expects.
        unsafe {
            c.pre_exec(move || {
                let a = libc::fcntl(rfd, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(wfd, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        drop((cmd_r, evt_w));
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || read_messages(evt_r, tx));
        let mut b = Browser {
            child,
            to: cmd_w,
            from,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            profile,
        };
        let target = b.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_owned();
        let s = b.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = s["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({}));
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": 1600, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut m = json!({"id": id, "method": method, "params": params});
        if session {
            m["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&m).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let msg = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no reply from chromium to {method}"));
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
            self.events.push(msg);
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    /// Loads `url` and waits until the document is complete.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("the page to load", "document.readyState === 'complete'");
    }

    /// The value of a JavaScript expression (promises awaited). A thrown
    /// exception fails the test.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true` (bounded by [`WAIT`]).
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, expr: &str) {
        let end = Instant::now() + WAIT;
        loop {
            if self.eval(expr) == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what} ({expr})"
            );
            // Pace the polling; the condition itself is what is waited on.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the page (its full height) to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let height = self.eval("document.documentElement.scrollHeight").as_u64();
        let size =
            |h: u64| json!({"width": 1200, "height": h, "deviceScaleFactor": 1, "mobile": false});
        self.call(
            "Emulation.setDeviceMetricsOverride",
            size(height.unwrap_or(1600).clamp(600, 8000)),
        );
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        self.call("Emulation.setDeviceMetricsOverride", size(1600));
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.len() > 10_000, "empty screenshot");
        std::fs::write(path, png).unwrap();
    }

    /// Console calls, uncaught exceptions and log entries the page
    /// produced, except those `allowed` accepts.
    pub fn problems(&mut self, allowed: impl Fn(&Value) -> bool) -> Vec<Value> {
        while let Ok(m) = self.from.try_recv() {
            self.events.push(m);
        }
        self.events
            .iter()
            .filter(|e| {
                matches!(
                    e["method"].as_str(),
                    Some("Runtime.consoleAPICalled" | "Runtime.exceptionThrown" | "Log.entryAdded")
                )
            })
            .filter(|e| !allowed(e))
            .cloned()
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask first, so the browser's helper processes leave the profile
        // before it is removed; kill if it has not gone within the bound.
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.to.write_all(format!("{close}\0").as_bytes());
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Splits the browser's output into messages (NUL-terminated JSON).
fn read_messages(mut from: std::io::PipeReader, tx: mpsc::Sender<Value>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.iter().position(|&b| b == 0) {
            let msg: Value = serde_json::from_slice(&buf[..end]).unwrap_or(Value::Null);
            buf.drain(..=end);
            if tx.send(msg).is_err() {
                return;
            }
        }
    }
}
