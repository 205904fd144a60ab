//! What the DNS responder counts: queries by outcome, and queries per
//! client (the referee's view of how often each client asks).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::plan::referee::{DnsClientRecord, DnsOutcomes};

/// Clients tracked one by one; queries from further clients are added to
/// `other_clients`, so a scan from many addresses cannot grow the map.
pub const MAX_DNS_CLIENTS: usize = 1024;

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Records, or NOERROR with none (the name has no record of the type).
    Answered,
    /// The name is not in the zone, or a fault said NXDOMAIN.
    Nxdomain,
    /// A fault said SERVFAIL.
    Servfail,
    /// A fault dropped the query, or it was shed (too many held).
    NoAnswer,
    /// A fault sent an empty truncated answer over UDP.
    Truncated,
    /// The query could not be read.
    Malformed,
}

impl Outcome {
    /// Counts the outcome in a client's record.
    pub(crate) fn tally(self, r: &mut DnsClientRecord) {
        let r = &mut r.outcomes;
        *match self {
            Outcome::Answered => &mut r.answered,
            Outcome::Nxdomain => &mut r.nxdomain,
            Outcome::Servfail => &mut r.servfail,
            Outcome::NoAnswer => &mut r.no_answer,
            Outcome::Truncated => &mut r.truncated,
            Outcome::Malformed => &mut r.malformed,
        } += 1;
    }
}

/// Counters shared by the responder's tasks.
#[derive(Debug, Default)]
pub(crate) struct DnsCounts {
    queries: AtomicU64,
    udp: AtomicU64,
    tcp: AtomicU64,
    outcomes: [AtomicU64; 6],
    delayed: AtomicU64,
    shed: AtomicU64,
    clients: Mutex<(BTreeMap<IpAddr, u64>, u64)>,
}

/// A snapshot of the DNS responder's counters (`GET /dns`,
/// [`crate::SinkHandle::dns_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// Queries received (UDP and TCP).
    pub queries: u64,
    /// Of which over UDP.
    pub udp: u64,
    /// Of which over TCP.
    pub tcp: u64,
    /// The queries by outcome (all clients').
    #[serde(flatten)]
    pub outcomes: DnsOutcomes,
    /// Delayed by a plan rule.
    pub delayed: u64,
    /// Of `no_answer`: queries a plan rule would have delayed while
    /// [`super::MAX_HELD_DNS_QUERIES`] were already held, dropped unanswered.
    pub shed: u64,
    /// Queries per client IP (at most [`MAX_DNS_CLIENTS`] clients).
    pub clients: BTreeMap<IpAddr, u64>,
    /// Queries from clients past the cap.
    pub other_clients: u64,
}

impl DnsCounts {
    pub(crate) fn query(&self, client: IpAddr, tcp: bool) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if tcp { &self.tcp } else { &self.udp }.fetch_add(1, Ordering::Relaxed);
        let mut g = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (map, other) = &mut *g;
        if let Some(n) = map.get_mut(&client) {
            *n += 1;
        } else if map.len() < MAX_DNS_CLIENTS {
            map.insert(client, 1);
        } else {
            *other += 1;
        }
    }

    pub(crate) fn outcome(&self, o: Outcome) {
        self.outcomes[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn delayed(&self) {
        self.delayed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DnsStats {
        let o = |x: Outcome| self.outcomes[x as usize].load(Ordering::Relaxed);
        let g = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        DnsStats {
            queries: self.queries.load(Ordering::Relaxed),
            udp: self.udp.load(Ordering::Relaxed),
            tcp: self.tcp.load(Ordering::Relaxed),
            outcomes: DnsOutcomes {
                answered: o(Outcome::Answered),
                nxdomain: o(Outcome::Nxdomain),
                servfail: o(Outcome::Servfail),
                no_answer: o(Outcome::NoAnswer),
                truncated: o(Outcome::Truncated),
                malformed: o(Outcome::Malformed),
            },
            delayed: self.delayed.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            clients: g.0.clone(),
            other_clients: g.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_capped() {
        let c = DnsCounts::default();
        for i in 0..(MAX_DNS_CLIENTS as u32 + 10) {
            c.query(IpAddr::from(i.to_be_bytes()), false);
        }
        c.query(IpAddr::from(0u32.to_be_bytes()), true);
        let s = c.snapshot();
        assert_eq!(s.clients.len(), MAX_DNS_CLIENTS);
        assert_eq!(s.other_clients, 10);
        assert_eq!(s.clients[&IpAddr::from(0u32.to_be_bytes())], 2);
        assert_eq!(
            (s.queries, s.udp, s.tcp),
            (MAX_DNS_CLIENTS as u64 + 11, MAX_DNS_CLIENTS as u64 + 10, 1)
        );
    }

    #[test]
    fn json_pins_field_names_and_order() {
        let s = DnsStats {
            queries: 1,
            udp: 2,
            tcp: 3,
            outcomes: DnsOutcomes {
                answered: 4,
                nxdomain: 5,
                servfail: 6,
                no_answer: 7,
                truncated: 8,
                malformed: 9,
            },
            delayed: 10,
            shed: 13,
            clients: BTreeMap::from([(IpAddr::from([127, 0, 0, 1]), 11)]),
            other_clients: 12,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            concat!(
                r#"{"queries":1,"udp":2,"tcp":3,"answered":4,"nxdomain":5,"servfail":6,"#,
                r#""no_answer":7,"truncated":8,"malformed":9,"delayed":10,"shed":13,"#,
                r#""clients":{"127.0.0.1":11},"other_clients":12}"#
            )
        );
    }
}
