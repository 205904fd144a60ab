//! [`Sink::builder`] and [`SinkBuilder`]: configure a sink and start it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::admission::{connection_ceiling, Limits};
use crate::backend::Backend;
use crate::handle::SinkHandle;
use crate::server::{self, SinkState};
use crate::settings::Settings;
use crate::store::{self, Store};
use crate::{control, plan, stats};
use crate::{BareLfPolicy, SinkConfig, SinkError, StageHook};

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
            open_files: None,
        }
    }

    /// A builder starting from `config` as is.
    pub fn from_config(config: SinkConfig) -> SinkBuilder {
        SinkBuilder {
            config,
            listen_set: true,
            hook: None,
            engine: None,
            open_files: None,
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
    open_files: Option<u64>,
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
    setter!(/// Error replies before 421, counted since the last delivery.
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
    setter!(/// Message bytes held in memory at once while messages arrive
        /// with keep or capture; past it, `452 4.3.1` at end of data.
        buffer_bytes: u64);
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

    /// The process's open-files limit (see [`crate::raise_nofile_limit`]):
    /// open connections then stay within what it leaves room for
    /// ([`crate::connection_ceiling`]), whatever `max_connections` says, so
    /// a client past it gets `421 4.7.0` rather than waiting unanswered in
    /// the listen backlog while `accept` fails. Unset, only
    /// `max_connections` limits them.
    pub fn open_files_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
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
            store::prepare_capture_dir(dir)?;
        }
        let config = self.config;
        let ledger = Arc::new(crate::ledger::Ledger::new());
        let mut settings = Settings::build(config.clone(), self.hook.clone())?;
        settings.ledger = Some(ledger.clone());
        let shards = config.thread_count();
        let (plain, local) = server::bind_all(&config.listen, shards, config.backlog)?;
        let (tls, tls_local) = server::bind_all(&config.tls_listen, shards, config.backlog)?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let dns = match config.dns {
            Some(addr) => {
                let zone = match &config.dns_zone {
                    Some(p) => crate::dns::Zone::from_yaml_file(p)?,
                    None => crate::dns::Zone::defaults(&config.dns_domain, &local),
                };
                let bound = crate::dns::bind(addr)?;
                Some(crate::dns::spawn(
                    bound,
                    zone,
                    self.engine.clone(),
                    shutdown.subscribe(),
                )?)
            }
            None => None,
        };
        let (dns, dns_thread) = match dns {
            Some((d, t)) => (Some(d), Some(t)),
            None => (None, None),
        };
        let shared = Arc::new(SinkState {
            store: Arc::new(Store::new(config.capture.as_deref())),
            settings: RwLock::new(Arc::new(settings)),
            stats: stats::Stats::new(shards),
            limits: Arc::new(Limits::with_ceiling(
                self.open_files
                    .map_or(0, |n| connection_ceiling(n, &config)),
            )),
            ordinal: AtomicU64::new(0),
            shutdown,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            grace_ms: AtomicU64::new(config.shutdown_grace.as_millis() as u64),
            hook: self.hook,
            engine: self.engine,
            ledger,
            dns,
            info: std::sync::OnceLock::new(),
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
        handle.threads.extend(dns_thread);
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
        // Every listener is bound and listening (connections queue in the
        // kernel until a shard accepts them): the sink is ready.
        let _ = shared.info.set(crate::ready::ReadyInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            smtp: handle.local.clone(),
            tls: handle.tls_local.clone(),
            control: handle.control_addr(),
            dns: shared.dns.as_ref().map(|d| d.addr),
            hostname: handle.hostname(),
        });
        Ok(handle)
    }
}
