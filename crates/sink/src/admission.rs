//! Open-connection accounting for `max_connections` and
//! `max_connections_per_ip`: the accept loop takes a slot per connection,
//! the connection gives it back when it ends. Its own module so the
//! listener and the connection both use it without importing each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Open-connection accounting for the total and per-IP limits.
#[derive(Default)]
pub(crate) struct Limits {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection's slot under the limits; released on drop.
pub(crate) struct Admission {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Limits {
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
