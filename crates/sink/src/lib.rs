//! `mailstorm-sink`: a per-core ESMTP/LMTP sink that accepts mail at line
//! rate, for load tests and CI.
//!
//! Architecture (like tokio's mini-redis, multiplied per core): shard
//! threads, each with a current-thread runtime and its own `SO_REUSEPORT`
//! listeners → connections with one reusable read buffer and one write per
//! read batch → a protocol state machine built on `mailstorm-proto` →
//! command handlers. Counters are per shard and summed when read.
//!
//! Embed it in a test suite:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sink = mailstorm_sink::Sink::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .threads(1)
//!     .keep(100)
//!     .start()?;
//! let addr = sink.local_addr();
//! // ... send mail to `addr` ...
//! assert_eq!(sink.stats().messages_accepted, 0);
//! sink.shutdown();
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod admission;
pub mod auth;
pub mod config;
mod conn;
pub mod control;
pub mod hook;
pub mod plan;
mod server;
mod session;
mod settings;
pub mod stats;
mod store;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::{BareLfPolicy, ConfigError, SinkConfig};
pub use hook::{Decision, Stage, StageContext, StageHook};
pub use server::raise_nofile_limit;
pub use stats::{CloseReason, StatsSnapshot};
pub use store::StoredMessage;

use admission::Limits;
use server::SinkState;
use settings::Settings;
use store::Store;

/// Why the sink could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The configuration is invalid, or its TLS or user files are.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound or a thread not started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The control API could not start.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The fault plan could not be loaded.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The `capture` directory cannot be created or written.
    #[error("capture directory {path}: {source}")]
    Capture {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `events` file cannot be opened for appending.
    #[error("cannot open events file {path} for appending: {source}")]
    Events {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// `true` when the configuration is at fault (a value, or a file or
    /// directory it names), `false` for a failure of the running system
    /// (an address in use, no thread). The binary exits 2 and 1 on them.
    pub fn is_configuration(&self) -> bool {
        match self {
            SinkError::Config(_)
            | SinkError::Plan(_)
            | SinkError::Capture { .. }
            | SinkError::Events { .. } => true,
            SinkError::Control(e) => !matches!(
                e,
                control::ControlError::Bind { .. } | control::ControlError::Start { .. }
            ),
            SinkError::Io(_) => false,
        }
    }
}

/// Entry point: [`Sink::builder`].
#[derive(Debug)]
pub struct Sink;

impl Sink {
    /// A builder with the embedded defaults ([`SinkConfig::embedded`]):
    /// `127.0.0.1:0`, one unpinned thread, no control API, quiet.
    pub fn builder() -> SinkBuilder {
        SinkBuilder {
            config: SinkConfig::embedded(),
            listen_set: false,
            hook: None,
            engine: None,
        }
    }

    /// A builder starting from `config` as is.
    pub fn from_config(config: SinkConfig) -> SinkBuilder {
        SinkBuilder {
            config,
            listen_set: true,
            hook: None,
            engine: None,
        }
    }
}

/// Configures and starts a sink. Every setter maps to a [`SinkConfig`] field.
#[must_use]
pub struct SinkBuilder {
    config: SinkConfig,
    listen_set: bool,
    hook: Option<Arc<dyn StageHook>>,
    engine: Option<Arc<plan::Engine>>,
}

impl std::fmt::Debug for SinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("config", &self.config)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.config.$name = v.into();
            self
        }
    };
}

impl SinkBuilder {
    /// Adds a plain listener (the first call replaces the default).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        if !self.listen_set {
            self.config.listen.clear();
            self.listen_set = true;
        }
        self.config.listen.push(addr);
        self
    }

    /// Adds an implicit-TLS listener.
    pub fn tls_listen(mut self, addr: SocketAddr) -> Self {
        self.config.tls_listen.push(addr);
        self
    }

    /// Number of shards (threads).
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = Some(n);
        self
    }

    /// Host name for the greeting.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.config.hostname = Some(name.into());
        self
    }

    setter!(/// Speak LMTP.
        lmtp: bool);
    setter!(/// Pin shard threads to CPUs.
        pin_threads: bool);
    setter!(/// Largest message (0 = no limit).
        max_message_size: u64);
    setter!(/// Longest command line, CRLF included.
        max_line_length: u64);
    setter!(/// Recipients per message.
        max_recipients: usize);
    setter!(/// Error replies per session before 421.
        max_errors: u32);
    setter!(/// Idle timeout.
        idle_timeout: Duration);
    setter!(/// Time allowed to complete one command line.
        command_timeout: Duration);
    setter!(/// Session duration limit (zero = none).
        max_session_duration: Duration);
    setter!(/// Total open connections (0 = no limit).
        max_connections: usize);
    setter!(/// Open connections per client IP (0 = no limit).
        max_connections_per_ip: usize);
    setter!(/// Bare LF / CR policy for DATA.
        bare_lf: BareLfPolicy);
    setter!(/// Lenient command parsing.
        lenient: bool);
    setter!(/// Offer STARTTLS / allow TLS listeners.
        tls: bool);
    setter!(/// Require AUTH before MAIL.
        auth_required: bool);
    setter!(/// Keep the last N messages in memory.
        keep: usize);
    setter!(/// Total size cap of the kept messages (0 = none).
        keep_bytes: u64);
    setter!(/// Shutdown grace period.
        shutdown_grace: Duration);
    setter!(/// Listen backlog.
        backlog: u32);

    /// TLS certificate chain and key (PEM files).
    pub fn tls_cert(mut self, cert: impl Into<PathBuf>, key: Option<PathBuf>) -> Self {
        self.config.tls_cert = Some(cert.into());
        self.config.tls_key = key;
        self
    }

    /// Check AUTH credentials against a `user:password` file.
    pub fn auth_users(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.auth_users = Some(path.into());
        self
    }

    /// Write accepted messages to `dir` as `<id>.eml`.
    pub fn capture(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.capture = Some(dir.into());
        self
    }

    /// Serve the control API on `addr`.
    pub fn control(mut self, addr: SocketAddr) -> Self {
        self.config.control = Some(addr);
        self
    }

    /// Bearer token for the control API.
    pub fn control_token(mut self, token: impl Into<String>) -> Self {
        self.config.control_token = Some(token.into());
        self
    }

    /// Installs a per-stage decision hook (fault injection).
    pub fn hook(mut self, hook: Arc<dyn StageHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Installs a fault engine as the hook; the control API then serves
    /// `GET/PUT/DELETE /plan` and `GET /clients` from it. Created automatically
    /// when the configuration names a `plan` or `events` file.
    pub fn fault_engine(mut self, engine: Arc<plan::Engine>) -> Self {
        self.hook = Some(engine.clone());
        self.engine = Some(engine);
        self
    }

    /// Loads this fault plan at start (and on [`SinkHandle::reload`]).
    pub fn plan_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.plan = Some(path.into());
        self
    }

    /// The configuration so far, to change anything without a setter.
    pub fn config_mut(&mut self) -> &mut SinkConfig {
        &mut self.config
    }

    /// Binds the listeners and starts the shards (and the control API when
    /// configured). Works inside or outside a tokio runtime: shards run on
    /// their own threads.
    pub fn start(mut self) -> Result<SinkHandle, SinkError> {
        if self.engine.is_none()
            && self.hook.is_none()
            && (self.config.plan.is_some() || self.config.events.is_some())
        {
            self = self.fault_engine(Arc::new(plan::Engine::new()));
        }
        if let Some(e) = &self.engine {
            if let Some(p) = &self.config.plan {
                e.load_file(p)?;
            }
            if let Some(ev) = &self.config.events {
                e.set_events_file(ev).map_err(|source| SinkError::Events {
                    path: ev.clone(),
                    source,
                })?;
            }
        }
        if let Some(dir) = &self.config.capture {
            store::prepare_capture_dir(dir).map_err(|source| SinkError::Capture {
                path: dir.clone(),
                source,
            })?;
        }
        let config = self.config;
        let settings = Settings::build(config.clone(), self.hook.clone())?;
        let shards = config.thread_count();
        let (plain, local) = server::bind_all(&config.listen, shards, config.backlog)?;
        let (tls, tls_local) = server::bind_all(&config.tls_listen, shards, config.backlog)?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(SinkState {
            store: Arc::new(Store::new(config.capture.as_deref())),
            settings: RwLock::new(Arc::new(settings)),
            stats: stats::Stats::new(shards),
            limits: Arc::new(Limits::default()),
            ordinal: AtomicU64::new(0),
            shutdown,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            grace_ms: AtomicU64::new(config.shutdown_grace.as_millis() as u64),
            hook: self.hook,
            engine: self.engine,
        });
        let control = match config.control {
            Some(addr) => Some(control::spawn(
                addr,
                config.control_token.clone(),
                Arc::new(Backend(shared.clone())),
            )?),
            None => None,
        };
        let mut handle = SinkHandle {
            shared: shared.clone(),
            threads: Vec::with_capacity(shards),
            local,
            tls_local,
            control,
        };
        for (index, (plain, tls)) in plain.into_iter().zip(tls).enumerate() {
            let spec = server::ShardSpec {
                index,
                plain,
                tls,
                stats: shared.stats.shards[index].clone(),
                shared: shared.clone(),
                pin: config.pin_threads,
            };
            // On failure the handle's Drop stops the shards already running.
            handle.threads.push(server::spawn_shard(spec)?);
        }
        Ok(handle)
    }
}

/// A running sink. Dropping it stops the sink at once (no grace period);
/// call [`SinkHandle::shutdown`] for a graceful stop.
pub struct SinkHandle {
    shared: Arc<SinkState>,
    threads: Vec<JoinHandle<()>>,
    local: Vec<SocketAddr>,
    tls_local: Vec<SocketAddr>,
    control: Option<control::ControlHandle>,
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle")
            .field("listen", &self.local)
            .field("tls_listen", &self.tls_local)
            .field("control", &self.control_addr())
            .finish()
    }
}

impl SinkHandle {
    /// The bound plain listeners, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// The first plain listener (or the first TLS one if there is none).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
            .first()
            .or(self.tls_local.first())
            .copied()
            .expect("a sink always has a listener")
    }

    /// The bound implicit-TLS listeners.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_local
    }

    /// The control API address, when it runs.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(|c| c.local_addr)
    }

    /// The current counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The fault engine, when one is installed.
    pub fn fault_engine(&self) -> Option<&Arc<plan::Engine>> {
        self.shared.engine.as_ref()
    }

    /// Zeroes the counters (gauges excepted).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// The kept messages (`keep`), oldest first.
    pub fn messages(&self) -> Vec<Arc<StoredMessage>> {
        self.shared.store.messages()
    }

    /// Forgets the kept messages.
    pub fn clear_messages(&self) {
        self.shared.store.clear();
    }

    /// The generated self-signed certificate (PEM), when TLS is on without
    /// a configured certificate; trust it in a test client.
    pub fn self_signed_cert_pem(&self) -> Option<String> {
        self.shared
            .settings()
            .self_signed
            .as_ref()
            .map(|s| s.cert_pem.clone())
    }

    /// The host name in the greeting.
    pub fn hostname(&self) -> String {
        self.shared.settings().hostname.clone()
    }

    /// Applies a new configuration to new sessions (reloading TLS
    /// certificates and the user list); running sessions keep theirs.
    /// Returns the changed settings that need a restart and were ignored.
    pub fn reload(&self, config: SinkConfig) -> Result<Vec<&'static str>, SinkError> {
        let old = self.shared.settings();
        let mut ignored = Vec::new();
        let o = &old.config;
        for (changed, name) in [
            (o.listen != config.listen, "listen"),
            (o.tls_listen != config.tls_listen, "tls-listen"),
            (o.thread_count() != config.thread_count(), "threads"),
            (o.backlog != config.backlog, "backlog"),
            (o.pin_threads != config.pin_threads, "pin-threads"),
            (o.control != config.control, "control"),
            (o.control_token != config.control_token, "control-token"),
            (
                o.capture.is_none() != config.capture.is_none(),
                "capture (on/off)",
            ),
        ] {
            if changed {
                ignored.push(name);
            }
        }
        let mut config = config;
        // What cannot change at run time keeps its running value.
        config.listen = o.listen.clone();
        config.tls_listen = o.tls_listen.clone();
        config.threads = o.threads;
        let new = Settings::build(config, self.shared.hook.clone())?;
        if let Some(dir) = &new.config.capture {
            store::prepare_capture_dir(dir).map_err(|source| SinkError::Capture {
                path: dir.clone(),
                source,
            })?;
        }
        // The plan last: when it fails, nothing has changed.
        if let (Some(e), Some(p)) = (&self.shared.engine, &new.config.plan) {
            e.load_file(p)?;
        }
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        Ok(ignored)
    }

    /// The configuration new sessions get.
    pub fn config(&self) -> SinkConfig {
        self.shared.settings().config.clone()
    }

    /// Graceful stop: stop accepting, answer `421 4.3.2` to each session at
    /// its next command, wait up to the configured grace period, then close
    /// what is left. Returns the final counters.
    pub fn shutdown(mut self) -> StatsSnapshot {
        let grace = self.shared.settings().config.shutdown_grace;
        self.stop(grace);
        self.stats()
    }

    /// [`SinkHandle::shutdown`] with an explicit grace period.
    pub fn shutdown_with_grace(mut self, grace: Duration) -> StatsSnapshot {
        self.stop(grace);
        self.stats()
    }

    fn stop(&mut self, grace: Duration) {
        self.shared
            .grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.shutdown.send_replace(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(c) = self.control.take() {
            c.shutdown();
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.control.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}

/// The control API's view of the sink.
struct Backend(Arc<SinkState>);

impl control::ControlBackend for Backend {
    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.0.stats.snapshot()).unwrap_or_default()
    }

    fn metrics_text(&self) -> String {
        let mut m = self.0.stats.snapshot().to_prometheus();
        if let Some(e) = &self.0.engine {
            m.push_str(&e.metrics_text());
        }
        m
    }

    fn reset(&self) {
        self.0.stats.reset();
        if let Some(e) = &self.0.engine {
            e.reset_referee();
            e.reset_state();
        }
    }

    fn plan_yaml(&self) -> Option<String> {
        let e = self.0.engine.as_ref()?;
        Some(e.plan_yaml().unwrap_or_else(|| "rules: []\n".into()))
    }

    fn put_plan(&self, body: &[u8], content_type: Option<&str>) -> Option<Result<(), String>> {
        let e = self.0.engine.as_ref()?;
        Some(
            e.load_bytes(body, content_type, "PUT /plan")
                .map_err(|e| e.to_string()),
        )
    }

    fn delete_plan(&self) -> Option<()> {
        self.0.engine.as_ref()?.unload();
        Some(())
    }

    fn clients_json(&self) -> Option<serde_json::Value> {
        Some(self.0.engine.as_ref()?.clients_json())
    }

    fn messages(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .0
            .store
            .messages()
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(&**m).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("subject".into(), m.header("subject").into());
                }
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }

    fn message_raw(&self, id: u64) -> Option<Vec<u8>> {
        self.0.store.get(id).map(|m| m.raw.clone())
    }

    fn clear_messages(&self) {
        self.0.store.clear();
    }
}
