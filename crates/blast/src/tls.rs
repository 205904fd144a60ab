//! TLS client configuration: verification on by default against `--ca` (or
//! the embedded sink's own certificate), `--insecure` to skip it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, NamedGroup};

use crate::config::Config;
use crate::BlastError;

/// The client config for this run, `None` when TLS is not used.
/// `trusted_pem` is the embedded sink's generated certificate, if any.
pub fn client_config(
    cfg: &Config,
    trusted_pem: Option<&[u8]>,
) -> Result<Option<Arc<ClientConfig>>, BlastError> {
    if !cfg.uses_tls() {
        return Ok(None);
    }
    let base = if cfg.insecure {
        mailstorm_tls::insecure_client_config()
    } else {
        verifying_config(cfg, trusted_pem)?
    };
    let mut c = (*base).clone();
    c.resumption = if cfg.tls_resume {
        Resumption::store(Arc::new(TicketStore::new(cfg.concurrency as usize)))
    } else {
        Resumption::disabled()
    };
    Ok(Some(Arc::new(c)))
}

fn verifying_config(
    cfg: &Config,
    trusted_pem: Option<&[u8]>,
) -> Result<Arc<ClientConfig>, BlastError> {
    let pem = match (&cfg.ca, trusted_pem) {
        (Some(path), _) => {
            mailstorm_config::read_bounded(path, mailstorm_config::MAX_CONFIG_FILE_BYTES)
                .map_err(|e| BlastError::Config(format!("--ca {}: {e}", path.display())))?
        }
        (None, Some(pem)) => pem.to_vec(),
        (None, None) => {
            return Err(BlastError::Config(
                "TLS certificate verification needs --ca FILE (no public CA roots are \
                 bundled), or --insecure to skip verification"
                    .into(),
            ))
        }
    };
    mailstorm_tls::client_config_trusting(&pem).map_err(|e| BlastError::Config(format!("TLS: {e}")))
}

/// The name sent as SNI and verified: `--sni`, else the target's host.
pub fn server_name(cfg: &Config, host: &str) -> Result<ServerName<'static>, BlastError> {
    let name = cfg.sni.as_deref().unwrap_or(host).to_string();
    ServerName::try_from(name.clone())
        .map_err(|e| BlastError::Config(format!("TLS server name {name:?}: {e}")))
}

/// Servers a run keeps sessions for (a target, or a domain's MX hosts).
const MAX_SERVERS: usize = 64;
/// Tickets kept per server, whatever `-c` says.
const MAX_TICKETS_PER_SERVER: usize = 4096;

/// The session store behind `--tls-resume`, shared by every connection of
/// the run. rustls's memory cache keeps 8 TLS 1.3 tickets per server, and
/// each ticket is used once: with more connections than that handshaking
/// at once, a fifth of them found none and ran a full handshake (measured:
/// 6,426 of 8,000 resumed at -c 20). This one keeps two tickets per
/// connection (a server sends two per handshake), bounded.
struct TicketStore {
    per_server: usize,
    servers: Mutex<HashMap<ServerName<'static>, Sessions>>,
}

#[derive(Default)]
struct Sessions {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    /// Oldest first; taken newest first.
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl TicketStore {
    fn new(connections: usize) -> TicketStore {
        TicketStore {
            per_server: connections
                .saturating_mul(2)
                .clamp(8, MAX_TICKETS_PER_SERVER),
            servers: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Sessions) -> R) -> Option<R> {
        // A borrowed name's lifetime is not 'static: look up by an owned copy
        // (one small clone per handshake).
        let name = name.to_owned();
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.get_mut(&name).map(f)
    }

    fn edit(&self, name: ServerName<'static>, f: impl FnOnce(&mut Sessions)) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if !servers.contains_key(&name) && servers.len() >= MAX_SERVERS {
            // Any one: a run that talks to more servers than this resumes
            // less, it does not grow.
            if let Some(old) = servers.keys().next().cloned() {
                servers.remove(&old);
            }
        }
        f(servers.entry(name).or_default());
    }
}

impl std::fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The sessions are key material: never printed.
        f.debug_struct("TicketStore")
            .field("per_server", &self.per_server)
            .finish_non_exhaustive()
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.edit(name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(name, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.edit(name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(name, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.with(name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let cap = self.per_server;
        self.edit(name, |s| {
            if s.tls13.len() >= cap {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(name, |s| s.tls13.pop_back()).flatten()
    }
}
