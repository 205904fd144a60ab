//! A throwaway Postfix instance for interop tests: its own configuration,
//! queue and log in a temporary directory, its `smtpd` on a free loopback
//! port, never the system instance (no `/etc/postfix/main.cf` is read or
//! written, port 25 is never touched).
//!
//! Two roles:
//! - [`PostfixInstance::relay_to`]: a client of the system under test. Mail
//!   injected into its `smtpd` (see [`PostfixInstance::send`]) is relayed
//!   to `relayhost = [127.0.0.1]:PORT` with short retry times.
//! - [`PostfixInstance::server`]: a target. Its `smtpd` accepts mail for
//!   the given domains (and, from loopback, any other) and delivers it to
//!   the `discard` transport.
//!
//! How it runs: the Postfix `master` daemon is started directly as a child
//! (`master -c DIR/etc -s`, in the foreground, in its own session), after
//! the queue directories are made with Postfix's owners and modes, so no
//! `postfix start` script and no `alternate_config_directories` entry in
//! `/etc/postfix/main.cf` is needed. It must run as root (`master` drops to
//! `mail_owner = postfix` itself); the Debian `postfix` package provides the
//! `postfix` user and the `postdrop` group.
//!
//! Stopping (drop, or [`PostfixInstance::stop`]): SIGTERM to the master's
//! process group, which is what `postfix -c DIR stop` does (the master
//! passes it on to its children), a bounded wait, then SIGKILL to whatever
//! is left in the group. The master also gets SIGTERM if the thread that
//! started it dies without dropping the instance (`PR_SET_PDEATHSIG`), so a
//! killed test run leaves no Postfix process behind (only its temporary
//! directory, `/tmp/mailstorm-postfix-*`); turn that off with
//! [`PostfixBuilder::die_with_thread`] when the instance outlives the
//! thread that builds it.
//!
//! Several instances can run at once: each has its own directory, port,
//! `syslog_name`, master lock and pid file.
//!
//! `sendmail -C DIR` is not supported: `postdrop` is set-gid and would
//! insist on `alternate_config_directories` in the system `main.cf`; inject
//! over SMTP instead.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{
    find_program, free_port, run_with_timeout, skip_missing_tools, wait_for_file_containing,
    wait_until, ChildGuard,
};

/// Postfix's compiled-in `daemon_directory` on Debian.
const DEFAULT_DAEMON_DIR: &str = "/usr/lib/postfix/sbin";

/// Queue subdirectories owned by `mail_owner:root`, mode 0700.
const PRIVATE_QUEUE_DIRS: [&str; 11] = [
    "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
    "saved", "trace",
];

/// The queues a message sits in until it is delivered.
const MESSAGE_QUEUES: [&str; 5] = ["maildrop", "incoming", "active", "deferred", "hold"];

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Paths of the Postfix programs an instance (or a benchmark) needs.
#[derive(Debug, Clone)]
pub struct PostfixTools {
    /// `postfix` (control command; used here only for `check` diagnostics).
    pub postfix: PathBuf,
    /// `postconf`.
    pub postconf: PathBuf,
    /// The `master` daemon.
    pub master: PathBuf,
    /// `smtp-sink`, the reference sink (`-u nobody` when run as root).
    pub smtp_sink: Option<PathBuf>,
    /// `smtp-source`, the reference load client.
    pub smtp_source: Option<PathBuf>,
    /// `daemon_directory`.
    pub daemon_directory: PathBuf,
}

impl PostfixTools {
    /// Finds the Postfix programs. `Err` says what is missing.
    pub fn find() -> Result<PostfixTools, String> {
        let postfix = find_program("postfix").ok_or("`postfix` not found")?;
        let postconf = find_program("postconf").ok_or("`postconf` not found")?;
        // `postconf -d` needs no main.cf; `-c` points it away from
        // /etc/postfix, which has none on a machine without a system MTA.
        let daemon_directory = run_with_timeout(
            Command::new(&postconf).args(["-c", "/nonexistent", "-d", "-h", "daemon_directory"]),
            None,
            Duration::from_secs(10),
        )
        .ok()
        .map(|o| o.stdout.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DAEMON_DIR), PathBuf::from);
        let master = daemon_directory.join("master");
        if !master.exists() {
            return Err(format!("{} not found", master.display()));
        }
        Ok(PostfixTools {
            postfix,
            postconf,
            master,
            smtp_sink: find_program("smtp-sink"),
            smtp_source: find_program("smtp-source"),
            daemon_directory,
        })
    }

    /// Postfix is installed and this process can run an instance (root,
    /// `postfix` user, `postdrop` group). `Err` says why not.
    pub fn check_runnable() -> Result<PostfixTools, String> {
        let tools = PostfixTools::find()?;
        if effective_uid() != Some(0) {
            return Err("a Postfix instance must be started as root".into());
        }
        lookup_id("passwd", "postfix")?;
        lookup_id("group", "postdrop")?;
        Ok(tools)
    }

    /// [`PostfixTools::check_runnable`], or a panic with an install hint,
    /// or `None` (after a note) when `MAILSTORM_SKIP_INTEROP=1`.
    #[track_caller]
    pub fn require() -> Option<PostfixTools> {
        match PostfixTools::check_runnable() {
            Ok(t) => Some(t),
            Err(e) if skip_missing_tools() => {
                eprintln!("SKIPPED: Postfix unavailable ({e}) and MAILSTORM_SKIP_INTEROP=1");
                None
            }
            Err(e) => panic!(
                "Postfix unavailable: {e}. Run scripts/test.sh as root (it installs the \
                 `postfix` package), or set MAILSTORM_SKIP_INTEROP=1 to skip"
            ),
        }
    }
}

/// The `smtp-sink` program, if installed.
pub fn smtp_sink_path() -> Option<PathBuf> {
    find_program("smtp-sink")
}

/// The `smtp-source` program, if installed.
pub fn smtp_source_path() -> Option<PathBuf> {
    find_program("smtp-source")
}

/// This process's effective uid (from `/proc/self/status`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Real, effective, saved, filesystem.
    line.split_whitespace().nth(2)?.parse().ok()
}

/// uid or gid of `name` in the `passwd` or `group` database (via getent,
/// so NSS sources count).
fn lookup_id(db: &str, name: &str) -> Result<u32, String> {
    let out = run_with_timeout(
        Command::new("getent").args([db, name]),
        None,
        Duration::from_secs(10),
    )
    .map_err(|e| format!("getent {db} {name}: {e}"))?;
    out.stdout
        .split(':')
        .nth(2)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            format!("no `{name}` in the {db} database (is the postfix package installed?)")
        })
}

#[derive(Debug, Clone)]
enum Role {
    Relay { relayhost: SocketAddr },
    Server { domains: Vec<String> },
}

/// Configures a [`PostfixInstance`]; see [`PostfixInstance::relay_to`] and
/// [`PostfixInstance::server`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PostfixBuilder {
    role: Role,
    myhostname: String,
    minimal_backoff: Duration,
    maximal_backoff: Duration,
    queue_run_delay: Duration,
    client_tls: bool,
    smtpd_tls: Option<(PathBuf, PathBuf)>,
    smtpd_port: Option<u16>,
    params: Vec<(String, String)>,
    master_cf: Vec<String>,
    start_timeout: Duration,
    stop_grace: Duration,
    die_with_thread: bool,
}

impl PostfixBuilder {
    fn new(role: Role) -> PostfixBuilder {
        PostfixBuilder {
            role,
            myhostname: "postfix.mailstorm.test".into(),
            minimal_backoff: Duration::from_secs(1),
            maximal_backoff: Duration::from_secs(2),
            queue_run_delay: Duration::from_secs(1),
            client_tls: false,
            smtpd_tls: None,
            smtpd_port: None,
            params: Vec::new(),
            master_cf: Vec::new(),
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
            die_with_thread: true,
        }
    }

    /// `myhostname` (the EHLO name of its SMTP client, the name in its
    /// greeting and `Received:` headers). Default `postfix.mailstorm.test`.
    pub fn myhostname(mut self, name: &str) -> Self {
        self.myhostname = name.to_owned();
        self
    }

    /// `minimal_backoff_time`, `maximal_backoff_time` and `queue_run_delay`
    /// (default 1s, 2s, 1s: a deferred message is retried within ~2 s).
    /// Whole seconds; sub-second parts are rounded up.
    pub fn backoff(
        mut self,
        minimal: Duration,
        maximal: Duration,
        queue_run_delay: Duration,
    ) -> Self {
        self.minimal_backoff = minimal;
        self.maximal_backoff = maximal;
        self.queue_run_delay = queue_run_delay;
        self
    }

    /// `smtp_tls_security_level = may` (opportunistic STARTTLS, no
    /// verification) for the relaying client; default off (`none`).
    pub fn client_tls(mut self, on: bool) -> Self {
        self.client_tls = on;
        self
    }

    /// Offer STARTTLS on the `smtpd` (`smtpd_tls_security_level = may`)
    /// with this PEM certificate chain and key.
    pub fn smtpd_tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.smtpd_tls = Some((cert.into(), key.into()));
        self
    }

    /// A fixed port for the `smtpd` instead of a free one picked at start.
    pub fn smtpd_port(mut self, port: u16) -> Self {
        self.smtpd_port = Some(port);
        self
    }

    /// Any other `main.cf` parameter (appended last, so it overrides the
    /// defaults written by the builder).
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// An extra `master.cf` line (e.g. a second `smtpd` or an `-o` option
    /// line starting with whitespace).
    pub fn master_cf_line(mut self, line: &str) -> Self {
        self.master_cf.push(line.to_owned());
        self
    }

    /// How long to wait for the `smtpd` port to accept connections.
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    /// Whether the master gets SIGTERM when the thread that started it
    /// exits (default `true`: no leftovers when a test run is killed). Set
    /// `false` for an instance shared across tests from another thread.
    pub fn die_with_thread(mut self, on: bool) -> Self {
        self.die_with_thread = on;
        self
    }

    /// Writes the configuration, starts the master and waits until the
    /// `smtpd` accepts connections.
    pub fn start(self) -> Result<PostfixInstance, String> {
        let tools = PostfixTools::check_runnable()?;
        let uid = lookup_id("passwd", "postfix")?;
        let gid = lookup_id("group", "postdrop")?;
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let tmp = tempfile::Builder::new()
            .prefix("mailstorm-postfix-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let root = tmp.path().to_path_buf();
        layout(&root, uid, gid).map_err(|e| format!("queue layout in {}: {e}", root.display()))?;
        let syslog_name = format!("postfix-{}-{n}", std::process::id());
        let mut last_err = String::new();
        // A picked port can be taken by someone else before master binds
        // it: retry with another one (a configuration error fails every
        // attempt the same way, quickly).
        let attempts = if self.smtpd_port.is_some() { 1 } else { 3 };
        for _ in 0..attempts {
            let port = self.smtpd_port.unwrap_or_else(free_port);
            let smtpd_addr = SocketAddr::from(([127, 0, 0, 1], port));
            std::fs::write(root.join("etc/main.cf"), self.main_cf(&root, &syslog_name))
                .map_err(|e| format!("write main.cf: {e}"))?;
            std::fs::write(root.join("etc/master.cf"), self.master_cf(port))
                .map_err(|e| format!("write master.cf: {e}"))?;
            let mut cmd = Command::new(&tools.master);
            cmd.arg("-c")
                .arg(root.join("etc"))
                .arg("-s")
                .current_dir(&root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if self.die_with_thread {
                // SAFETY: the closure runs in the forked child before exec and
                // only makes the prctl(2) system call, which is
                // async-signal-safe; it touches no memory shared with the
                // parent.
                unsafe {
                    cmd.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
                            .map_err(std::io::Error::from)
                    });
                }
            }
            let mut master =
                ChildGuard::spawn_leader(&mut cmd, "postfix master").map_err(|e| format!("{e}"))?;
            let started = Instant::now();
            let mut exited = None;
            let port_open = wait_until(
                &format!("Postfix smtpd on {smtpd_addr}"),
                self.start_timeout,
                || {
                    if let Ok(Some(s)) = master.try_wait() {
                        exited = Some(s);
                        return true;
                    }
                    std::net::TcpStream::connect_timeout(&smtpd_addr, Duration::from_millis(200))
                        .is_ok()
                },
            );
            let maillog = root.join("maillog");
            // The master logs "daemon started" once every listener is
            // bound; an open port alone could be someone else's.
            let started_ok = port_open.is_ok()
                && exited.is_none()
                && wait_until(
                    "the master's \"daemon started\"",
                    self.start_timeout.saturating_sub(started.elapsed()),
                    || {
                        !matches!(master.try_wait(), Ok(None))
                            || std::fs::read_to_string(&maillog)
                                .is_ok_and(|l| l.contains("daemon started"))
                    },
                )
                .is_ok()
                && matches!(master.try_wait(), Ok(None));
            if started_ok {
                return Ok(PostfixInstance {
                    master: Some(master),
                    smtpd_addr,
                    root,
                    tmp: Some(tmp),
                    tools,
                    syslog_name,
                    stop_grace: self.stop_grace,
                });
            }
            let status = master.try_wait().ok().flatten().or(exited);
            drop(master);
            // The master reports a failed bind to syslog only (it cannot
            // reach postlogd yet): check the port ourselves.
            let port_note = match std::net::TcpListener::bind(smtpd_addr) {
                Err(e) => format!("; binding {smtpd_addr} now fails: {e}"),
                Ok(_) => String::new(),
            };
            last_err = format!(
                "Postfix master did not start on {smtpd_addr} ({}{port_note}); log:\n{}",
                status.map_or_else(|| "still running".to_owned(), |s| s.to_string()),
                tail(&std::fs::read_to_string(&maillog).unwrap_or_default(), 40),
            );
            // Start the next attempt with a clean log.
            let _ = std::fs::remove_file(&maillog);
        }
        // Ask Postfix why (configuration and permission errors).
        last_err.push('\n');
        last_err.push_str(&diagnose(&tools, &root));
        Err(last_err)
    }

    fn main_cf(&self, root: &Path, syslog_name: &str) -> String {
        let secs = |d: Duration| format!("{}s", d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let mut s = String::new();
        let mut p = |k: &str, v: &str| {
            let _ = writeln!(s, "{k} = {v}");
        };
        p("compatibility_level", "3.6");
        p("queue_directory", &root.join("queue").display().to_string());
        p("data_directory", &root.join("data").display().to_string());
        p("mail_owner", "postfix");
        p("setgid_group", "postdrop");
        p("syslog_name", syslog_name);
        p("maillog_file", &root.join("maillog").display().to_string());
        p("maillog_file_prefixes", &root.display().to_string());
        p("myhostname", &self.myhostname);
        p("mydomain", "mailstorm.test");
        p("myorigin", "$myhostname");
        p("inet_interfaces", "127.0.0.1");
        p("inet_protocols", "ipv4");
        p("mynetworks", "127.0.0.0/8");
        p("alias_maps", "");
        p("alias_database", "");
        p("local_recipient_maps", "");
        p("biff", "no");
        p("append_dot_mydomain", "no");
        // No DNS: the peer is always a loopback IP.
        p("smtpd_peername_lookup", "no");
        p("smtp_dns_support_level", "disabled");
        p("smtp_host_lookup", "native");
        p("minimal_backoff_time", &secs(self.minimal_backoff));
        p("maximal_backoff_time", &secs(self.maximal_backoff));
        p("queue_run_delay", &secs(self.queue_run_delay));
        p(
            "smtp_tls_security_level",
            if self.client_tls { "may" } else { "none" },
        );
        // Log each TLS session ("… TLS connection established …").
        p("smtp_tls_loglevel", "1");
        p("smtpd_tls_loglevel", "1");
        match &self.smtpd_tls {
            Some((cert, key)) => {
                p("smtpd_tls_security_level", "may");
                p("smtpd_tls_cert_file", &cert.display().to_string());
                p("smtpd_tls_key_file", &key.display().to_string());
            }
            None => p("smtpd_tls_security_level", "none"),
        }
        match &self.role {
            Role::Relay { relayhost } => {
                p(
                    "relayhost",
                    &format!("[{}]:{}", relayhost.ip(), relayhost.port()),
                );
                p("mydestination", "");
                p("default_transport", "smtp");
            }
            Role::Server { domains } => {
                p("relayhost", "");
                p("mydestination", &domains.join(", "));
                p("local_transport", "discard:");
                // Loopback clients may relay (mynetworks): that mail is
                // discarded too, never sent anywhere.
                p("default_transport", "discard:");
                p("relay_transport", "discard:");
                // A load target should not slow clients down when its
                // queue manager lags.
                p("in_flow_delay", "0");
            }
        }
        for (k, v) in &self.params {
            p(k, v);
        }
        s
    }

    fn master_cf(&self, port: u16) -> String {
        // Column 5 (chroot) is `n` everywhere: no chroot jail to populate.
        let mut s = format!("127.0.0.1:{port} inet n - n - - smtpd\n");
        s.push_str(
            "\
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
",
        );
        for line in &self.master_cf {
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// Makes `root/{etc,queue,data}` with the owners and modes Postfix checks
/// (what `postfix set-permissions` would do for the queue, without touching
/// any system file).
fn layout(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::chown;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    // Postfix daemons run as `postfix` and must traverse to the queue.
    mode(root, 0o755)?;
    for d in ["etc", "queue", "queue/pid"] {
        std::fs::create_dir(root.join(d))?;
        mode(&root.join(d), 0o755)?;
    }
    let data = root.join("data");
    std::fs::create_dir(&data)?;
    chown(&data, Some(uid), Some(0))?;
    mode(&data, 0o700)?;
    for d in PRIVATE_QUEUE_DIRS {
        let p = root.join("queue").join(d);
        std::fs::create_dir(&p)?;
        chown(&p, Some(uid), Some(0))?;
        mode(&p, 0o700)?;
    }
    for (d, m) in [("maildrop", 0o730), ("public", 0o710)] {
        let p = root.join("queue").join(d);
        std::fs::create_dir(&p)?;
        chown(&p, Some(uid), Some(gid))?;
        mode(&p, m)?;
    }
    Ok(())
}

/// `postfix -c DIR check` logs configuration errors to the maillog: run it
/// after a failed start and return what it said.
fn diagnose(tools: &PostfixTools, root: &Path) -> String {
    let log = root.join("maillog");
    let before = std::fs::read_to_string(&log).map_or(0, |s| s.len());
    let out = run_with_timeout(
        Command::new(&tools.postfix)
            .arg("-c")
            .arg(root.join("etc"))
            .arg("check"),
        None,
        Duration::from_secs(20),
    );
    let after = std::fs::read_to_string(&log).unwrap_or_default();
    format!(
        "`postfix -c {}/etc check`: {}\n{}",
        root.display(),
        out.map_or_else(|e| e.to_string(), |o| o.to_string()),
        after.get(before..).unwrap_or("")
    )
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running throwaway Postfix instance. Stopped (and its directory
/// removed) on drop.
#[derive(Debug)]
pub struct PostfixInstance {
    master: Option<ChildGuard>,
    smtpd_addr: SocketAddr,
    root: PathBuf,
    tmp: Option<tempfile::TempDir>,
    tools: PostfixTools,
    syslog_name: String,
    stop_grace: Duration,
}

impl PostfixInstance {
    /// A client instance relaying everything to `relayhost` (the system
    /// under test), with `mydestination` empty.
    pub fn relay_to(relayhost: SocketAddr) -> PostfixBuilder {
        PostfixBuilder::new(Role::Relay { relayhost })
    }

    /// A server instance: `mydestination = domains`, every message
    /// delivered to `discard:`.
    pub fn server(domains: &[&str]) -> PostfixBuilder {
        PostfixBuilder::new(Role::Server {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        })
    }

    /// The address of its `smtpd` (127.0.0.1 and the port it got).
    pub fn smtpd_addr(&self) -> SocketAddr {
        self.smtpd_addr
    }

    /// The instance directory (`etc/`, `queue/`, `data/`, `maillog`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The configuration directory (for `postconf -c`, `postfix -c`).
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// The log file (`maillog_file`, written by `postlogd`).
    pub fn maillog_path(&self) -> PathBuf {
        self.root.join("maillog")
    }

    /// The log so far.
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.maillog_path()).unwrap_or_default()
    }

    /// Its `syslog_name` (the prefix of its log lines, e.g. `NAME/smtp`).
    pub fn syslog_name(&self) -> &str {
        &self.syslog_name
    }

    /// The Postfix programs (smtp-sink and smtp-source included).
    pub fn tools(&self) -> &PostfixTools {
        &self.tools
    }

    /// Waits until the log contains `needle`; returns the whole log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        wait_for_file_containing(&self.maillog_path(), needle, timeout)
    }

    /// Messages in its queues (maildrop, incoming, active, deferred, hold).
    pub fn queued_messages(&self) -> usize {
        fn count(p: &Path) -> usize {
            std::fs::read_dir(p).map_or(0, |rd| {
                rd.filter_map(Result::ok)
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => count(&e.path()),
                        Ok(_) => 1,
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        MESSAGE_QUEUES
            .iter()
            .map(|q| count(&self.queue_dir().join(q)))
            .sum()
    }

    /// Waits until every queue is empty (all mail delivered or bounced).
    pub fn wait_queue_empty(&self, timeout: Duration) -> Result<(), String> {
        wait_until("an empty Postfix queue", timeout, || {
            self.queued_messages() == 0
        })
        .map_err(|e| format!("{e}; log:\n{}", tail(&self.maillog(), 30)))
    }

    /// The value of a `main.cf` parameter as this instance sees it.
    pub fn postconf(&self, name: &str) -> Result<String, String> {
        let out = run_with_timeout(
            Command::new(&self.tools.postconf)
                .arg("-c")
                .arg(self.config_dir())
                .args(["-h", name]),
            None,
            Duration::from_secs(10),
        )
        .map_err(|e| e.to_string())?;
        if out.success() {
            Ok(out.stdout.trim().to_owned())
        } else {
            Err(out.to_string())
        }
    }

    /// Injects one message into its `smtpd` (see [`super::smtp_send`]);
    /// returns the `250 … queued as ID` reply.
    pub fn send(&self, from: &str, rcpts: &[&str], data: &str) -> Result<String, String> {
        super::smtp_send(self.smtpd_addr, from, rcpts, data, super::TIMEOUT)
    }

    /// The queue id from a `250 2.0.0 Ok: queued as ID` reply.
    pub fn queue_id(reply: &str) -> Option<&str> {
        reply
            .split("queued as ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
    }

    /// Stops the instance now (what drop does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut master) = self.master.take() {
            // SIGTERM is what `postfix stop` sends the master, which passes
            // it on to its children; then SIGKILL whatever is left.
            master.stop(Signal::SIGTERM, self.stop_grace);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- Postfix instance {} ({}) log:\n{}",
                self.syslog_name,
                self.root.display(),
                tail(&self.maillog(), 60)
            );
        }
        if std::env::var_os("MAILSTORM_KEEP_POSTFIX").is_some() {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("keeping Postfix instance dir {}", tmp.keep().display());
            }
        }
    }
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        self.shutdown();
    }
}
