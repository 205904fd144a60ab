//! The sink as referee: what each client did in reply to the faults.
//!
//! A client is identified by the EHLO/HELO/LHLO name of its sessions'
//! first greeting (lower-cased), or by its IP address text for sessions
//! that never greeted ([`crate::filter::client_id`]), so tests sharing one
//! sink from one address stay apart. Open connections per IP (what
//! `max_connections` rules count) stay per IP.
//!
//! - retries: after an injected 4xx/5xx at MAIL, RCPT or end of data, the
//!   next attempt of the same request (client id + sender [+ recipients])
//!   is a retry; its interval goes into a histogram per reply code, and a
//!   retry after a 5xx is a violation (it should have bounced);
//! - after an injected 421: the time to the client's next connection, and
//!   commands it still sent on the closed session (a QUIT is counted apart:
//!   it is harmless);
//! - per client: connections, max concurrent connections, messages,
//!   sessions that pipelined or used BDAT, and what the verdicts need
//!   ([`verdicts`]).
//!
//! Connection accounting takes one lock at session start, one at the first
//! greeting and one at its end; per-command work happens only at a stage
//! where a failure has been injected, or for a sender/recipient domain new
//! to the session.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::active::{client_hash, Who};
use super::keys::lower_hash;
use super::select::mix64;
use super::state::Striped;
use super::view::{Now, RcptPart, View};
use crate::filter::{client_id, ClientFilter};
use crate::hook::{ReplyClass, SessionEnd, Stage};

mod client;
mod dns_record;
mod pending;
mod report;
pub mod verdicts;

pub(crate) use client::Client;
pub use dns_record::{DnsClientRecord, DnsOutcomes};
use pending::Pending;
pub use report::{ClientRecord, HistogramSummary, RefereeReport, RetryRecord};

/// An injected failure awaiting its retry. It holds no text, so recording
/// one allocates nothing: a retry has the same identity hash, hence the
/// same client, sender and recipients, and [`Referee::attempt`] builds the
/// request key and client id from the retrying request instead.
struct Failure {
    /// The client's id hash ([`client_hash`], what [`Who::hash`] gives):
    /// what a filtered reset matches the clients it resets against.
    owner: u64,
    /// When it was injected: the retry interval counts from here.
    at: Instant,
    /// Its slot in [`Referee::pending`].
    slot: u32,
    /// How many times the request has failed, this failure included.
    attempt: u32,
    code: u16,
}

pub(crate) struct Hists {
    pub(crate) retry_by_code: BTreeMap<u16, Histogram<u64>>,
    pub(crate) reconnect_after_421: Histogram<u64>,
    pub(crate) messages_per_connection: Histogram<u64>,
}

pub(crate) fn hist() -> Histogram<u64> {
    // 1 ms .. 7 days, 2 significant digits: about 2 KB each.
    Histogram::new_with_bounds(1, 7 * 86_400_000, 2).expect("valid histogram bounds")
}

/// One observed retry (kept in the recent list).
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    pub(crate) key: String,
    pub(crate) client: Box<str>,
    pub(crate) after_code: u16,
    pub(crate) attempt: u32,
    pub(crate) interval: Duration,
}

const MAX_CLIENTS: usize = 65_536;
/// Seeds the hashes of request parts (internal to the referee).
const REQUEST_SEED: u64 = 0x7265_6665_7265_6531;
const RECENT: usize = 200;

/// The referee's records (kept across plan reloads; `reset` clears them).
pub(crate) struct Referee {
    /// Bit `1 << stage.index()`: a failure was injected at that stage, so
    /// a request there may be a retry. A request can only retry one of its
    /// own stage (the stage is part of its identity), so a stage where no
    /// failure was ever injected skips the lookup.
    failed_at: AtomicU32,
    failures: Striped<Failure>,
    /// Counts `failures` by their identity hash: most requests find
    /// their slot empty and skip the lookup.
    pending: Pending,
    pub(crate) clients: Mutex<HashMap<Box<str>, Client>>,
    /// Open connections per client IP.
    open_ips: Mutex<HashMap<IpAddr, u64>>,
    open_total: AtomicU64,
    pub(crate) hists: Mutex<Hists>,
    pub(crate) recent: Mutex<VecDeque<Retry>>,
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Seconds with up to three decimals (`0.05s`, `1.2s`).
pub(crate) fn secs_text(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Referee {
    pub(crate) fn new() -> Referee {
        Referee {
            failed_at: AtomicU32::new(0),
            failures: Striped::new(100_000),
            pending: Pending::new(),
            clients: Mutex::new(HashMap::new()),
            open_ips: Mutex::new(HashMap::new()),
            open_total: AtomicU64::new(0),
            hists: Mutex::new(Hists {
                retry_by_code: BTreeMap::new(),
                reconnect_after_421: hist(),
                messages_per_connection: hist(),
            }),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether requests at `stage` are checked for retries (a failure
    /// was injected there).
    pub(crate) fn watching(&self, stage: Stage) -> bool {
        self.failed_at.load(Ordering::Relaxed) & (1 << stage.index()) != 0
    }

    /// Runs `f` on client `id`'s record (created if missing).
    pub(crate) fn client<R>(&self, id: &str, f: impl FnOnce(&mut Client) -> R) -> R {
        let mut map = lock(&self.clients);
        if !map.contains_key(id) {
            if map.len() >= MAX_CLIENTS {
                // Bounded: forget a client with no open connection.
                if let Some(k) = map
                    .iter()
                    .find(|(_, c)| c.open == 0)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
            map.insert(id.into(), Client::default());
        }
        f(map.get_mut(id).expect("just inserted"))
    }

    /// The request key of a MAIL / RCPT / end-of-data attempt by client
    /// `who`, readable (built only when a failure is retried).
    fn request_key(v: &View<'_>, who: &str) -> Option<String> {
        let sender = v.sender?.to_ascii_lowercase();
        Some(match v.ctx.stage {
            Stage::Mail => format!("mail {who} <{sender}>"),
            Stage::Rcpt => format!(
                "rcpt {who} <{sender}> <{}>",
                v.ctx.rcpt?.to_ascii_lowercase()
            ),
            _ => format!(
                "data {who} <{sender}> <{}>",
                RcptPart::all(v.ctx).text(">,<")
            ),
        })
    }

    /// The identity of a MAIL / RCPT / end-of-data request by the client
    /// whose id hash is `owner` ([`Who::hash`]): equal exactly when
    /// [`Referee::request_key`] is (same client, lower-cased sender, and
    /// recipient or multiset of recipients), up to 64-bit collisions; so a
    /// retry's key can be built from the retry itself. What every watched
    /// command pays, so each part is hashed once, cheaply: the client's
    /// hash is kept per session, the recipient at RCPT is the rules'
    /// recipient key hash (shared with a rule keyed by recipient), the
    /// rest are [`lower_hash`]es, and the recipients of a message combine
    /// order-independently (a sum) instead of being sorted.
    fn request_hash(v: &View<'_>, owner: u64) -> Option<u64> {
        let part = |s: &str| lower_hash(REQUEST_SEED, s.as_bytes());
        let head = |verb: u64| Some(mix64(mix64(owner ^ verb) ^ part(v.sender?)));
        Some(match v.ctx.stage {
            Stage::Mail => head(1)?,
            Stage::Rcpt => mix64(head(2)? ^ v.rcpt_hash()?),
            _ => {
                let all = v
                    .ctx
                    .recipients
                    .iter()
                    .fold(0u64, |sum, r| sum.wrapping_add(mix64(part(r))));
                mix64(head(3)? ^ all)
            }
        })
    }

    /// An attempt at MAIL, RCPT or end of data by client `who`: a retry if
    /// the same request failed before. Returns how many times it failed
    /// before.
    pub(crate) fn attempt(&self, v: &View<'_>, who: &Who<'_>, now: &Now) -> u32 {
        if !self.watching(v.ctx.stage) {
            return 0;
        }
        let Some(h) = Self::request_hash(v, who.hash()) else {
            return 0;
        };
        if !self.pending.may_hold(Pending::slot(h)) {
            return 0;
        }
        let Some(f) = self.failures.remove(h) else {
            return 0;
        };
        self.pending.sub(f.slot);
        let interval = now.get().saturating_duration_since(f.at);
        {
            let mut h = lock(&self.hists);
            let _ = h
                .retry_by_code
                .entry(f.code)
                .or_insert_with(hist)
                .record(ms(interval));
        }
        // Same identity hash, so the same text the failed request had.
        let key = Self::request_key(v, who.as_str()).unwrap_or_default();
        self.client(who.as_str(), |c| {
            c.retried(&key, f.code, f.attempt, interval)
        });
        let client = who.as_str().into();
        let mut recent = lock(&self.recent);
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Retry {
            key,
            client,
            after_code: f.code,
            attempt: f.attempt + 1,
            interval,
        });
        f.attempt
    }

    /// An injected 4xx/5xx at MAIL, RCPT or end of data; `before`: how
    /// many times the request failed before (from [`Referee::attempt`]).
    pub(crate) fn failed(&self, v: &View<'_>, who: &Who<'_>, code: u16, now: Instant, before: u32) {
        let owner = who.hash();
        let Some(h) = Self::request_hash(v, owner) else {
            return;
        };
        let bit = 1 << v.ctx.stage.index();
        // Read first: a shared line is written once per stage, not per
        // failure.
        if self.failed_at.load(Ordering::Relaxed) & bit == 0 {
            self.failed_at.fetch_or(bit, Ordering::Relaxed);
        }
        let slot = Pending::slot(h);
        self.failures.with_evicting(
            h,
            || {
                self.pending.add(slot);
                Failure {
                    owner,
                    at: now,
                    slot,
                    attempt: before + 1,
                    code,
                }
            },
            |f| {
                f.code = code;
                f.at = now;
            },
            Some(&mut |f: &Failure| self.pending.sub(f.slot)),
        );
    }

    /// A fault was injected for client `who`, replying `code` if it
    /// replied.
    pub(crate) fn fault(&self, who: &str, code: Option<u16>, now: Instant) {
        self.client(who, |c| {
            c.faults += 1;
            match code.map(|c| (c, ReplyClass::of(c))) {
                Some((421, _)) => {
                    c.replies_421 += 1;
                    c.replies_4xx += 1;
                    c.last_421 = Some(now);
                }
                Some((_, ReplyClass::Deferred)) => c.replies_4xx += 1,
                Some((_, ReplyClass::Rejected)) => c.replies_5xx += 1,
                _ => {}
            }
        });
    }

    /// Client `who` used these domains (lower-case; bounded per client).
    pub(crate) fn domain(&self, who: &str, domain: &str) {
        self.client(who, |c| c.add_domain(domain));
    }

    /// A connection opened (counted per IP until its first greeting says
    /// which client it is).
    pub(crate) fn opened(&self, ip: IpAddr) {
        self.open_total.fetch_add(1, Ordering::Relaxed);
        *lock(&self.open_ips).entry(ip.to_canonical()).or_default() += 1;
    }

    /// The first greeting of a session opened at `connected`: it now
    /// belongs to client `who`.
    pub(crate) fn greeted(&self, who: &str, ip: IpAddr, connected: Instant) {
        let since_421 = self.client(who, |c| c.connected(ip.to_canonical(), connected));
        if let Some(d) = since_421 {
            let _ = lock(&self.hists).reconnect_after_421.record(ms(d));
        }
    }

    /// A connection counted by [`Referee::opened`] closed.
    pub(crate) fn closed(&self, end: &SessionEnd) {
        self.open_total.fetch_sub(1, Ordering::Relaxed);
        let Some(peer) = end.peer else { return };
        let ip = peer.ip().to_canonical();
        {
            let mut ips = lock(&self.open_ips);
            if let Some(n) = ips.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    ips.remove(&ip);
                }
            }
        }
        let who = client_id(end.helo.as_deref(), ip);
        self.client(&who, |c| {
            if end.helo.is_none() {
                // Never greeted: counted as a connection of its IP now.
                let _ = c.connected(ip, Instant::now());
            }
            c.closed(end);
        });
        let _ = lock(&self.hists)
            .messages_per_connection
            .record(end.messages);
    }

    /// Open connections in total.
    pub(crate) fn open_total(&self) -> u64 {
        self.open_total.load(Ordering::Relaxed)
    }

    /// Open connections from `ip`.
    pub(crate) fn open_for(&self, ip: IpAddr) -> u64 {
        lock(&self.open_ips)
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Forgets the records of the clients `filter` selects (everything
    /// but open connections); with no filter also the shared histograms.
    /// Returns the ids of the clients reset.
    pub(crate) fn reset(&self, filter: &ClientFilter) -> Vec<Box<str>> {
        let mut map = lock(&self.clients);
        let ids: Vec<Box<str>> = map
            .iter()
            .filter(|(id, c)| filter.matches_client(id, c.domains()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            let open = map.get(id).map_or(0, |c| c.open);
            if open == 0 {
                map.remove(id);
            } else if let Some(c) = map.get_mut(id) {
                *c = Client {
                    open,
                    max_concurrent: open,
                    ..Client::default()
                };
            }
        }
        drop(map);
        if filter.is_all() {
            let mut h = lock(&self.hists);
            h.retry_by_code.clear();
            h.reconnect_after_421.reset();
            h.messages_per_connection.reset();
            drop(h);
            lock(&self.recent).clear();
            self.failures.retain(|f| {
                self.pending.sub(f.slot);
                false
            });
        } else {
            lock(&self.recent).retain(|r| !ids.contains(&r.client));
            // A failure keeps its client's id hash, not the id.
            let owners: Vec<u64> = ids.iter().map(|id| client_hash(id.as_bytes())).collect();
            self.failures.retain(|f| {
                let keep = !owners.contains(&f.owner);
                if !keep {
                    self.pending.sub(f.slot);
                }
                keep
            });
        }
        ids
    }

    /// Runs `f` on a copy of the records of the clients `filter` selects.
    pub(crate) fn selected<R>(
        &self,
        filter: &ClientFilter,
        f: impl FnOnce(Vec<(Box<str>, Client)>) -> R,
    ) -> R {
        let list = lock(&self.clients)
            .iter()
            .filter(|(id, c)| filter.matches_client(id, c.domains()))
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        f(list)
    }
}

#[cfg(test)]
mod tests;
