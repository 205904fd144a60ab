//! The sink as referee: what the client did in reply to the faults.
//!
//! - retries: after an injected 4xx/5xx at MAIL, RCPT or end of data, the
//!   next attempt of the same request (client IP + sender [+ recipients])
//!   is a retry; its interval goes into a histogram per reply code, and a
//!   retry after a 5xx is a violation (it should have bounced);
//! - after an injected 421: the time to the client's next connection from
//!   that IP, and commands it still sent on the closed session (a QUIT is
//!   counted apart: it is harmless);
//! - per client IP: connections, max concurrent connections, messages,
//!   sessions that pipelined or used BDAT.
//!
//! Connection accounting takes one lock at session start and one at its
//! end; per-command work happens only once a failure has been injected.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::select::{IpText, KeyHasher};
use super::state::Striped;
use super::view::{Now, RcptPart, View};
use crate::hook::{ReplyClass, SessionEnd, Stage};

#[derive(Default, Clone)]
struct Client {
    connections: u64,
    open: u64,
    max_concurrent: u64,
    messages: u64,
    sessions_pipelined: u64,
    sessions_bdat: u64,
    faults: u64,
    replies_421: u64,
    commands_after_421: u64,
    quit_after_421: u64,
    retries: u64,
    resent_after_5xx: u64,
    last_421: Option<Instant>,
}

struct Failure {
    key: String,
    code: u16,
    at: Instant,
    attempt: u32,
}

struct Hists {
    retry_by_code: BTreeMap<u16, Histogram<u64>>,
    reconnect_after_421: Histogram<u64>,
    messages_per_connection: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    // 1 ms .. 7 days, 2 significant digits: about 2 KB each.
    Histogram::new_with_bounds(1, 7 * 86_400_000, 2).expect("valid histogram bounds")
}

/// The referee's report (`GET /clients`): what each client did in reply
/// to the faults, and the retry and reconnect intervals. The JSON form is
/// this struct serialized; readers (the scenario runner) deserialize it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefereeReport {
    /// Per client IP.
    pub clients: BTreeMap<IpAddr, ClientRecord>,
    /// Intervals (ms) between an injected failure and the retry, by the
    /// failure's reply code.
    pub retry_interval_ms_by_code: BTreeMap<u16, HistogramSummary>,
    /// Time (ms) from an injected 421 to the client's next connection.
    pub reconnect_after_421_ms: HistogramSummary,
    /// Messages per connection, over closed connections.
    pub messages_per_connection: HistogramSummary,
    /// The latest retries (at most 200), oldest first.
    pub recent_retries: Vec<RetryRecord>,
}

/// What one client IP did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Connections opened.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Most connections open at once.
    pub max_concurrent: u64,
    /// Messages accepted.
    pub messages: u64,
    /// `messages / connections`.
    pub messages_per_connection: f64,
    /// Sessions in which the client pipelined.
    pub sessions_pipelined: u64,
    /// Sessions in which the client used BDAT.
    pub sessions_bdat: u64,
    /// Faults injected for this client.
    pub faults: u64,
    /// Injected 421 replies.
    pub replies_421: u64,
    /// Commands sent after a 421 (QUIT excluded).
    pub commands_after_421: u64,
    /// QUITs sent after a 421.
    pub quit_after_421: u64,
    /// Requests retried after an injected failure.
    pub retries: u64,
    /// Requests sent again after a 5xx (should have bounced).
    pub resent_after_5xx: u64,
}

impl ClientRecord {
    fn of(c: &Client) -> ClientRecord {
        ClientRecord {
            connections: c.connections,
            open: c.open,
            max_concurrent: c.max_concurrent,
            messages: c.messages,
            messages_per_connection: if c.connections > 0 {
                c.messages as f64 / c.connections as f64
            } else {
                0.0
            },
            sessions_pipelined: c.sessions_pipelined,
            sessions_bdat: c.sessions_bdat,
            faults: c.faults,
            replies_421: c.replies_421,
            commands_after_421: c.commands_after_421,
            quit_after_421: c.quit_after_421,
            retries: c.retries,
            resent_after_5xx: c.resent_after_5xx,
        }
    }
}

/// A histogram's summary (all zero when empty), without `p999`: the
/// referee's report has never carried it.
pub type HistogramSummary = mailstorm_sample::HistSummary;

fn summary(h: &Histogram<u64>) -> HistogramSummary {
    HistogramSummary {
        p999: None,
        ..HistogramSummary::of(h)
    }
}

/// One observed retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// The request key (client, sender, recipients).
    pub key: String,
    /// The injected reply code it retried after.
    pub after_code: u16,
    /// The request's attempt number.
    pub attempt: u32,
    /// Time since the failure.
    pub interval_ms: u64,
}

/// One observed retry (kept in the recent list).
#[derive(Debug, Clone)]
struct Retry {
    key: String,
    after_code: u16,
    attempt: u32,
    interval: Duration,
}

/// A per-client metric: name, help, getter.
type Metric = (&'static str, &'static str, fn(&Client) -> u64);

const MAX_CLIENTS: usize = 65_536;
const RECENT: usize = 200;

/// The referee's records (kept across plan reloads; `reset` clears them).
pub(crate) struct Referee {
    watching: AtomicBool,
    failures: Striped<Failure>,
    clients: Mutex<HashMap<IpAddr, Client>>,
    open_total: AtomicU64,
    hists: Mutex<Hists>,
    recent: Mutex<VecDeque<Retry>>,
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl Referee {
    pub(crate) fn new() -> Referee {
        Referee {
            watching: AtomicBool::new(false),
            failures: Striped::new(100_000),
            clients: Mutex::new(HashMap::new()),
            open_total: AtomicU64::new(0),
            hists: Mutex::new(Hists {
                retry_by_code: BTreeMap::new(),
                reconnect_after_421: hist(),
                messages_per_connection: hist(),
            }),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether per-command retry tracking is on (a failure was injected).
    pub(crate) fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    fn client<R>(&self, ip: IpAddr, f: impl FnOnce(&mut Client) -> R) -> R {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CLIENTS && !map.contains_key(&ip) {
            // Bounded: forget a client with no open connection.
            if let Some(k) = map.iter().find(|(_, c)| c.open == 0).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        f(map.entry(ip).or_default())
    }

    /// The request key of a MAIL / RCPT / end-of-data attempt, readable
    /// (built only for a failure record).
    fn request_key(v: &View<'_>) -> Option<String> {
        let ip = v.ctx.peer.ip().to_canonical();
        let sender = v.sender?.to_ascii_lowercase();
        Some(match v.ctx.stage {
            Stage::Mail => format!("mail {ip} <{sender}>"),
            Stage::Rcpt => format!(
                "rcpt {ip} <{sender}> <{}>",
                v.ctx.rcpt?.to_ascii_lowercase()
            ),
            _ => format!(
                "data {ip} <{sender}> <{}>",
                RcptPart::all(v.ctx).text(">,<")
            ),
        })
    }

    /// `hash_bytes(0, request_key(v))`, computed piecewise without building
    /// the key: what every watched MAIL / RCPT / end of data pays.
    fn request_hash(v: &View<'_>) -> Option<u64> {
        let ip = IpText::new(v.ctx.peer.ip());
        let ip = ip.as_bytes();
        let sender = v.sender?.as_bytes();
        // "<verb> <ip> <<sender>>"
        let head = 5 + ip.len() + 2 + sender.len() + 1;
        let start = |verb: &[u8], len: usize| {
            let mut k = KeyHasher::new(0, len);
            k.bytes(verb)
                .bytes(ip)
                .bytes(b" <")
                .lower(sender)
                .bytes(b">");
            k
        };
        Some(match v.ctx.stage {
            Stage::Mail => start(b"mail ", head).finish(),
            Stage::Rcpt => {
                let r = v.ctx.rcpt?.as_bytes();
                start(b"rcpt ", head + 2 + r.len() + 1)
                    .bytes(b" <")
                    .lower(r)
                    .bytes(b">")
                    .finish()
            }
            _ => {
                let r = RcptPart::all(v.ctx);
                let mut k = start(b"data ", head + 2 + r.len(">,<") + 1);
                k.bytes(b" <");
                r.feed(&mut k, ">,<");
                k.bytes(b">").finish()
            }
        })
    }

    /// An attempt at MAIL, RCPT or end of data: a retry if the same request
    /// failed before. Returns how many times it failed before.
    pub(crate) fn attempt(&self, v: &View<'_>, now: &Now) -> u32 {
        if !self.watching() {
            return 0;
        }
        let Some(h) = Self::request_hash(v) else {
            return 0;
        };
        let Some(f) = self.failures.remove(h) else {
            return 0;
        };
        let interval = now.get().saturating_duration_since(f.at);
        {
            let mut h = self.hists.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h
                .retry_by_code
                .entry(f.code)
                .or_insert_with(hist)
                .record(ms(interval));
        }
        self.client(v.ctx.peer.ip().to_canonical(), |c| {
            c.retries += 1;
            if ReplyClass::of(f.code) == ReplyClass::Rejected {
                c.resent_after_5xx += 1;
            }
        });
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Retry {
            key: f.key,
            after_code: f.code,
            attempt: f.attempt + 1,
            interval,
        });
        f.attempt
    }

    /// An injected 4xx/5xx at MAIL, RCPT or end of data; `before`: how
    /// many times the request failed before (from [`Referee::attempt`]).
    pub(crate) fn failed(&self, v: &View<'_>, code: u16, now: Instant, before: u32) {
        let Some(h) = Self::request_hash(v) else {
            return;
        };
        debug_assert_eq!(
            Some(h),
            Self::request_key(v).map(|k| super::select::hash_bytes(0, k.as_bytes())),
            "piecewise request hash differs from the hash of the request key"
        );
        self.watching.store(true, Ordering::Relaxed);
        self.failures.with(
            h,
            || Failure {
                key: Self::request_key(v).unwrap_or_default(),
                code,
                at: now,
                attempt: before + 1,
            },
            |f| {
                f.code = code;
                f.at = now;
            },
        );
    }

    /// A fault was injected for this client.
    pub(crate) fn fault(&self, ip: IpAddr) {
        self.client(ip.to_canonical(), |c| c.faults += 1);
    }

    /// The sink sent an injected 421 to this client.
    pub(crate) fn got_421(&self, ip: IpAddr, now: Instant) {
        self.client(ip.to_canonical(), |c| {
            c.replies_421 += 1;
            c.last_421 = Some(now);
        });
    }

    /// A connection opened.
    pub(crate) fn opened(&self, ip: IpAddr, now: Instant) {
        self.open_total.fetch_add(1, Ordering::Relaxed);
        let since_421 = self.client(ip.to_canonical(), |c| {
            c.connections += 1;
            c.open += 1;
            c.max_concurrent = c.max_concurrent.max(c.open);
            c.last_421.take().map(|t| now.saturating_duration_since(t))
        });
        if let Some(d) = since_421 {
            let mut h = self.hists.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.reconnect_after_421.record(ms(d));
        }
    }

    /// A connection counted by [`Referee::opened`] closed.
    pub(crate) fn closed(&self, end: &SessionEnd) {
        self.open_total.fetch_sub(1, Ordering::Relaxed);
        let Some(peer) = end.peer else { return };
        self.client(peer.ip().to_canonical(), |c| {
            c.open = c.open.saturating_sub(1);
            c.messages += end.messages;
            c.sessions_pipelined += u64::from(end.pipelined);
            c.sessions_bdat += u64::from(end.bdat);
            c.commands_after_421 += u64::from(end.commands_after_421);
            c.quit_after_421 += u64::from(end.quit_after_421);
        });
        let mut h = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h.messages_per_connection.record(end.messages);
    }

    /// Open connections in total.
    pub(crate) fn open_total(&self) -> u64 {
        self.open_total.load(Ordering::Relaxed)
    }

    /// Open connections from `ip`.
    pub(crate) fn open_for(&self, ip: IpAddr) -> u64 {
        let map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip.to_canonical()).map_or(0, |c| c.open)
    }

    /// Forgets everything but open connections.
    pub(crate) fn reset(&self) {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.open > 0);
        for c in map.values_mut() {
            *c = Client {
                open: c.open,
                max_concurrent: c.open,
                ..Client::default()
            };
        }
        drop(map);
        let mut h = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        h.retry_by_code.clear();
        h.reconnect_after_421.reset();
        h.messages_per_connection.reset();
        drop(h);
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// `GET /clients`.
    pub(crate) fn report(&self) -> RefereeReport {
        let map = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let clients = map
            .iter()
            .map(|(ip, c)| (*ip, ClientRecord::of(c)))
            .collect();
        let h = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        let retry_interval_ms_by_code = h
            .retry_by_code
            .iter()
            .map(|(code, h)| (*code, summary(h)))
            .collect();
        let recent_retries = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| RetryRecord {
                key: r.key.clone(),
                after_code: r.after_code,
                attempt: r.attempt,
                interval_ms: r.interval.as_millis() as u64,
            })
            .collect();
        RefereeReport {
            clients,
            retry_interval_ms_by_code,
            reconnect_after_421_ms: summary(&h.reconnect_after_421),
            messages_per_connection: summary(&h.messages_per_connection),
            recent_retries,
        }
    }

    /// The same figures as Prometheus text.
    pub(crate) fn to_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let map = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let metrics: [Metric; 9] = [
            ("connections_total", "Connections per client IP", |c| {
                c.connections
            }),
            (
                "max_concurrent_connections",
                "Most concurrent connections per client IP",
                |c| c.max_concurrent,
            ),
            ("messages_total", "Messages accepted per client IP", |c| {
                c.messages
            }),
            ("sessions_pipelined_total", "Sessions that pipelined", |c| {
                c.sessions_pipelined
            }),
            ("sessions_bdat_total", "Sessions that used BDAT", |c| {
                c.sessions_bdat
            }),
            ("faults_total", "Faults injected per client IP", |c| {
                c.faults
            }),
            (
                "commands_after_421_total",
                "Commands sent after a 421 (violations)",
                |c| c.commands_after_421,
            ),
            (
                "retries_total",
                "Retries of requests that got an injected 4xx/5xx",
                |c| c.retries,
            ),
            (
                "resent_after_5xx_total",
                "Requests re-sent after a 5xx (violations)",
                |c| c.resent_after_5xx,
            ),
        ];
        for (name, help, get) in metrics {
            let _ = writeln!(out, "# HELP mailstorm_sink_client_{name} {help}.");
            let _ = writeln!(
                out,
                "# TYPE mailstorm_sink_client_{name} {}",
                if name.starts_with("max") {
                    "gauge"
                } else {
                    "counter"
                }
            );
            for (ip, c) in &map {
                let _ = writeln!(
                    out,
                    "mailstorm_sink_client_{name}{{client=\"{ip}\"}} {}",
                    get(c)
                );
            }
        }
        let h = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP mailstorm_sink_retry_interval_seconds Client retry interval after an injected failure, by the reply code that caused it.");
        let _ = writeln!(out, "# TYPE mailstorm_sink_retry_interval_seconds summary");
        for (code, hh) in &h.retry_by_code {
            quantiles(
                out,
                "mailstorm_sink_retry_interval_seconds",
                &format!("code=\"{code}\","),
                hh,
            );
        }
        let _ = writeln!(out, "# HELP mailstorm_sink_reconnect_after_421_seconds Time from an injected 421 to the client's next connection.");
        let _ = writeln!(
            out,
            "# TYPE mailstorm_sink_reconnect_after_421_seconds summary"
        );
        quantiles(
            out,
            "mailstorm_sink_reconnect_after_421_seconds",
            "",
            &h.reconnect_after_421,
        );
    }
}

fn quantiles(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    use std::fmt::Write as _;
    for q in [0.5, 0.9, 0.99] {
        let _ = writeln!(
            out,
            "{name}{{{labels}quantile=\"{q}\"}} {}",
            h.value_at_quantile(q) as f64 / 1000.0
        );
    }
    let sum = h.mean() * h.len() as f64 / 1000.0;
    let l = labels.trim_end_matches(',');
    let braces = if l.is_empty() {
        String::new()
    } else {
        format!("{{{l}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}
