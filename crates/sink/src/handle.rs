//! [`SinkHandle`]: a running sink's addresses, counters, reloads and stop.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::server::SinkState;
use crate::settings::Settings;
use crate::store;
use crate::{control, plan, StatsSnapshot, StoredMessage};
use crate::{SinkConfig, SinkError};

/// A running sink. Dropping it stops the sink at once (no grace period);
/// call [`SinkHandle::shutdown`] for a graceful stop.
pub struct SinkHandle {
    pub(crate) shared: Arc<SinkState>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) local: Vec<SocketAddr>,
    pub(crate) tls_local: Vec<SocketAddr>,
    pub(crate) control: Option<control::ControlHandle>,
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

    /// The DNS responder's address (UDP and TCP), when `dns` is set.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.shared.dns.as_ref().map(|d| d.addr)
    }

    /// The DNS responder's counters, when `dns` is set.
    pub fn dns_stats(&self) -> Option<crate::dns::DnsStats> {
        self.shared.dns.as_ref().map(|d| d.stats())
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

    /// Where the sink listens: the object `--ready-file` writes and
    /// `GET /info` serves.
    pub fn ready_info(&self) -> crate::ready::ReadyInfo {
        self.shared
            .info
            .get()
            .cloned()
            .expect("set when the sink started")
    }

    /// The referee's report on the clients `filter` selects (`GET
    /// /clients`); `None` without a fault engine.
    pub fn clients(&self, filter: &crate::ClientFilter) -> Option<plan::RefereeReport> {
        Some(self.fault_engine()?.referee_report_for(filter))
    }

    /// The verdicts of the clients `filter` selects (`GET /verdicts`);
    /// empty without a fault engine.
    pub fn verdicts(&self, filter: &crate::ClientFilter) -> Vec<plan::ClientVerdict> {
        self.fault_engine()
            .map(|e| e.verdicts(filter))
            .unwrap_or_default()
    }

    /// Client `id`'s verdict (`GET /clients/{id}/verdict`): `None` for an
    /// unknown client.
    pub fn verdict(&self, client_id: &str) -> Option<plan::ClientVerdict> {
        self.fault_engine()?.verdict(client_id)
    }

    /// `POST /reset` with `filter`: everything when it selects all,
    /// otherwise the selected clients' records, kept messages and plan
    /// state.
    pub fn reset(&self, filter: &crate::ClientFilter) {
        self.shared.reset(filter);
    }

    /// `PUT /plan?helo=NAME`: loads `plan` for the sessions greeting with
    /// `helo`. Needs a fault engine ([`crate::SinkBuilder::fault_engine`]).
    pub fn put_scoped_plan(
        &self,
        helo: &str,
        plan: plan::Plan,
    ) -> Result<(), plan::ScopedPlanError> {
        match self.fault_engine() {
            Some(e) => e.load_scoped(helo, plan),
            None => Err(plan::ScopedPlanError::NoEngine),
        }
    }

    /// Zeroes the counters (gauges excepted).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Bytes of arriving messages that sessions hold in memory now (with
    /// `keep` or `capture`), counted against `buffer_bytes`.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.store.held_bytes()
    }

    /// The kept messages (`keep`), oldest first.
    pub fn messages(&self) -> Vec<Arc<StoredMessage>> {
        self.shared.store.messages()
    }

    /// The kept messages `filter` selects, oldest first.
    pub fn messages_for(&self, filter: &crate::ClientFilter) -> Vec<Arc<StoredMessage>> {
        let mut m = self.shared.store.messages();
        m.retain(|m| m.matches(filter));
        m
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
        let mut new = Settings::build(config, self.shared.hook.clone())?;
        new.ledger = Some(self.shared.ledger.clone());
        if let Some(dir) = &new.config.capture {
            store::prepare_capture_dir(dir)?;
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

    /// The end-to-end ledger (`GET /ledger`).
    pub fn ledger(&self) -> &Arc<crate::ledger::Ledger> {
        &self.shared.ledger
    }

    /// The ledger's runs that `filter`'s client or domain delivered to
    /// (`GET /ledger?helo=…&domain=…`): one test's runs on a shared sink.
    pub fn ledger_runs(&self, filter: &crate::ClientFilter) -> crate::ledger::LedgerList {
        self.shared.ledger.list_for(filter)
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
