//! Open-connection accounting for `max_connections` and
//! `max_connections_per_ip`: the accept loop takes a slot per connection,
//! the connection gives it back when it ends. Its own module so the
//! listener and the connection both use it without importing each other.
//!
//! Under the configured total sits a ceiling from the open-files limit
//! (the binary sets it): past the descriptors a process has, `accept`
//! fails and a client would wait unanswered in the backlog; under the
//! ceiling it gets `421 4.7.0` at once instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::SinkConfig;

/// Descriptors kept for what is not an SMTP connection under `config`:
/// the control API's and the DNS responder's connections (at their caps),
/// a listener per address per shard (and one to claim the port),
/// each shard's runtime, and a margin for standard streams, capture,
/// ledger and ready files.
fn reserved_fds(config: &SinkConfig) -> u64 {
    const MARGIN: u64 = 64;
    const PER_SHARD_RUNTIME: u64 = 4;
    let shards = config.thread_count() as u64;
    let addrs = (config.listen.len() + config.tls_listen.len()) as u64;
    let control = match config.control {
        Some(_) => mailstorm_http::Limits::default().max_connections as u64,
        None => 0,
    };
    // Its TCP connections and the UDP socket.
    let dns = match config.dns {
        Some(_) => crate::dns::MAX_DNS_TCP_CONNECTIONS as u64 + 1,
        None => 0,
    };
    // Saturating: a library caller may pass an unvalidated config.
    MARGIN
        .saturating_add(shards.saturating_mul(PER_SHARD_RUNTIME))
        .saturating_add(addrs.saturating_mul(shards.saturating_add(1)))
        .saturating_add(control)
        .saturating_add(dns)
}

/// SMTP connections an open-files limit of `open_files` leaves room for
/// under `config`: all but the descriptors the rest of the sink may hold
/// (its control API and DNS connections, listeners, runtimes, files); of
/// a limit too small for that, half.
/// [`SinkBuilder::open_files_limit`](crate::SinkBuilder::open_files_limit)
/// caps the open connections at it.
pub fn connection_ceiling(open_files: u64, config: &SinkConfig) -> usize {
    let reserve = reserved_fds(config).min(open_files / 2);
    usize::try_from(open_files - reserve)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The total limit in force: `configured` (0 = none) under `ceiling`
/// (0 = none).
pub(crate) fn effective_max(configured: usize, ceiling: usize) -> usize {
    match (configured, ceiling) {
        (0, c) => c,
        (m, 0) => m,
        (m, c) => m.min(c),
    }
}

/// Open-connection accounting for the total and per-IP limits.
#[derive(Default)]
pub(crate) struct Limits {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// From the open-files limit; 0 = none (a library sink by default).
    ceiling: usize,
}

/// A connection's slot under the limits; released on drop.
pub(crate) struct Admission {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Limits {
    /// Limits whose total never exceeds `ceiling` connections (0 = none).
    pub(crate) fn with_ceiling(ceiling: usize) -> Self {
        Limits {
            ceiling,
            ..Limits::default()
        }
    }

    /// Takes a slot, or `None` when a limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        max_per_ip: usize,
    ) -> Option<Admission> {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut adm = Admission {
            limits: self.clone(),
            ip: None,
        };
        let max = effective_max(max, self.ceiling);
        if max != 0 && open > max {
            return None; // dropping `adm` gives the slot back
        }
        if max_per_ip != 0 {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n as usize >= max_per_ip {
                return None;
            }
            *n += 1;
            adm.ip = Some(ip);
        }
        Some(adm)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_keeps_what_the_rest_of_the_sink_may_hold() {
        // The binary's defaults: control API on, no DNS, one address.
        let mut config = SinkConfig {
            threads: Some(2),
            ..SinkConfig::default()
        };
        assert_eq!(
            connection_ceiling(20_000, &config),
            20_000 - (64 + 8 + 3 + 256)
        );
        config.control = None;
        assert_eq!(connection_ceiling(20_000, &config), 20_000 - (64 + 8 + 3));
        config.dns = Some(([127, 0, 0, 1], 0).into());
        config.tls_listen = vec![([127, 0, 0, 1], 0).into()];
        assert_eq!(
            connection_ceiling(20_000, &config),
            20_000 - (64 + 8 + 6 + 257)
        );
        // A limit too small for the reserve keeps half for the rest.
        assert_eq!(connection_ceiling(64, &config), 32);
        assert_eq!(connection_ceiling(1, &config), 1);
        // An unvalidated shard count saturates instead of overflowing.
        config.threads = Some(usize::MAX);
        assert_eq!(connection_ceiling(20_000, &config), 10_000);
    }

    #[test]
    fn the_lower_of_configured_and_ceiling_wins_and_zero_means_none() {
        assert_eq!(effective_max(20_000, 18_976), 18_976);
        assert_eq!(effective_max(100, 18_976), 100);
        assert_eq!(effective_max(0, 18_976), 18_976);
        assert_eq!(effective_max(100, 0), 100);
        assert_eq!(effective_max(0, 0), 0);
    }

    #[test]
    fn admission_refuses_past_the_ceiling_and_frees_slots_on_drop() {
        let limits = Arc::new(Limits::with_ceiling(2));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let a = limits.admit(ip, 0, 0).expect("first");
        let b = limits.admit(ip, 0, 0).expect("second");
        assert!(
            limits.admit(ip, 0, 0).is_none(),
            "third is over the ceiling"
        );
        drop(a);
        let c = limits.admit(ip, 10, 0).expect("a freed slot");
        assert!(limits.admit(ip, 10, 0).is_none());
        drop((b, c));
        assert_eq!(limits.open.load(Ordering::Relaxed), 0);
    }
}
