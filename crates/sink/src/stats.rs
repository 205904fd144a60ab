//! Per-shard counters, summed when read.
//!
//! Each shard owns one [`ShardStats`] and is its only writer, so an
//! increment is a relaxed load and store (no locked instruction, no shared
//! cache line). Readers on other threads sum the shards. `reset` does not
//! write to the shards: it records a baseline that later snapshots subtract.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::hook::Stage;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent QUIT.
    Quit,
    /// The client closed the connection without QUIT.
    ClientClosed,
    /// No input (or no progress writing) for the idle timeout.
    IdleTimeout,
    /// The session ran longer than the maximum session duration.
    SessionTimeout,
    /// A command line was not complete within `command_timeout`.
    CommandTimeout,
    /// Too many errors in one session.
    TooManyErrors,
    /// Refused at the greeting: too many connections (total or per IP).
    TooManyConnections,
    /// The sink was shutting down.
    Shutdown,
    /// A read or write failed.
    IoError,
    /// The TLS handshake failed.
    TlsError,
    /// A stage hook closed the connection.
    Hook,
}

impl CloseReason {
    /// Every reason, in declaration order.
    pub const ALL: [CloseReason; 11] = [
        CloseReason::Quit,
        CloseReason::ClientClosed,
        CloseReason::IdleTimeout,
        CloseReason::SessionTimeout,
        CloseReason::CommandTimeout,
        CloseReason::TooManyErrors,
        CloseReason::TooManyConnections,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::TlsError,
        CloseReason::Hook,
    ];

    /// The reason's name as used in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Quit => "quit",
            CloseReason::ClientClosed => "client_closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SessionTimeout => "session_timeout",
            CloseReason::CommandTimeout => "command_timeout",
            CloseReason::TooManyErrors => "too_many_errors",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::TlsError => "tls_error",
            CloseReason::Hook => "hook",
        }
    }
}

/// Declares the scalar counters once: the enum, its list and its length come
/// from the same list, so a new counter cannot be one array slot short.
macro_rules! scalar_counters {
    ($($(#[$doc:meta])* $variant:ident,)*) => {
        /// Scalar counters: each indexes one slot of a [`ShardStats`] array.
        #[derive(Debug, Clone, Copy)]
        pub(crate) enum Counter {
            $($(#[$doc])* $variant,)*
        }

        impl Counter {
            /// Every counter, in index order.
            #[cfg_attr(not(test), allow(dead_code))]
            pub(crate) const ALL: &'static [Counter] = &[$(Counter::$variant,)*];
            /// How many counters there are.
            pub(crate) const COUNT: usize = Counter::ALL.len();
        }
    };
}

scalar_counters! {
    ConnectionsTotal,
    ConnectionsOpen,
    MessagesAccepted,
    MessagesRejected,
    BytesReceived,
    MessageBytes,
    RecipientsAccepted,
    Commands,
    TlsHandshakes,
    TlsResumed,
    TlsFailures,
    AuthSuccesses,
    AuthFailures,
    ReadBufferHighWater,
    Writes,
}
const N_COUNTERS: usize = Counter::COUNT;
const N_CODES: usize = 400; // 200..=599
const N_STAGES: usize = Stage::ALL.len();
const N_REASONS: usize = CloseReason::ALL.len();

/// One shard's counters. Written only by the owning shard's thread.
pub(crate) struct ShardStats {
    c: [AtomicU64; N_COUNTERS],
    replies: Box<[AtomicU64]>,
    closed: [AtomicU64; N_REASONS],
}

/// Single-writer increment: the owning shard is the only writer, so a plain
/// load + store is race-free and avoids a locked read-modify-write.
#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
}

impl ShardStats {
    pub(crate) fn new() -> Self {
        ShardStats {
            c: std::array::from_fn(|_| AtomicU64::new(0)),
            replies: (0..N_STAGES * N_CODES).map(|_| AtomicU64::new(0)).collect(),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        bump(&self.c[c as usize], n);
    }

    #[inline]
    pub(crate) fn sub(&self, c: Counter, n: u64) {
        let a = &self.c[c as usize];
        a.store(a.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Raises a high-water mark.
    pub(crate) fn max(&self, c: Counter, v: u64) {
        let a = &self.c[c as usize];
        if a.load(Relaxed) < v {
            a.store(v, Relaxed);
        }
    }

    #[inline]
    pub(crate) fn reply(&self, stage: Stage, code: u16) {
        let code = usize::from(code).clamp(200, 599) - 200;
        bump(&self.replies[stage.index() * N_CODES + code], 1);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        bump(&self.closed[reason as usize], 1);
    }
}

/// Plain sums of all shards.
#[derive(Clone)]
struct Raw {
    c: [u64; N_COUNTERS],
    replies: Vec<u64>,
    closed: [u64; N_REASONS],
}

impl Raw {
    fn zero() -> Raw {
        Raw {
            c: [0; N_COUNTERS],
            replies: vec![0; N_STAGES * N_CODES],
            closed: [0; N_REASONS],
        }
    }
}

/// All shards' counters plus the reset baseline.
pub(crate) struct Stats {
    pub(crate) shards: Vec<std::sync::Arc<ShardStats>>,
    baseline: Mutex<(Raw, Instant)>,
    started: Instant,
}

/// Gauges are not reset (they describe the present, not a period).
const GAUGES: [Counter; 2] = [Counter::ConnectionsOpen, Counter::ReadBufferHighWater];

impl Stats {
    pub(crate) fn new(shards: usize) -> Stats {
        let now = Instant::now();
        Stats {
            shards: (0..shards)
                .map(|_| std::sync::Arc::new(ShardStats::new()))
                .collect(),
            baseline: Mutex::new((Raw::zero(), now)),
            started: now,
        }
    }

    fn raw(&self) -> Raw {
        let mut r = Raw::zero();
        for s in &self.shards {
            for (i, a) in s.c.iter().enumerate() {
                r.c[i] = r.c[i].wrapping_add(a.load(Relaxed));
            }
            for (i, a) in s.replies.iter().enumerate() {
                r.replies[i] += a.load(Relaxed);
            }
            for (i, a) in s.closed.iter().enumerate() {
                r.closed[i] += a.load(Relaxed);
            }
        }
        // The high-water mark is a maximum, not a sum.
        r.c[Counter::ReadBufferHighWater as usize] = self
            .shards
            .iter()
            .map(|s| s.c[Counter::ReadBufferHighWater as usize].load(Relaxed))
            .max()
            .unwrap_or(0);
        r
    }

    /// Zeroes the counters (not the gauges) as seen by later snapshots.
    pub(crate) fn reset(&self) {
        let raw = self.raw();
        let mut b = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
        *b = (raw, Instant::now());
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let raw = self.raw();
        let (base, since) = {
            let b = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
            (b.0.clone(), b.1)
        };
        let c = |k: Counter| {
            let i = k as usize;
            if GAUGES.iter().any(|g| *g as usize == i) {
                raw.c[i]
            } else {
                raw.c[i].wrapping_sub(base.c[i])
            }
        };
        let mut replies = BTreeMap::new();
        for stage in Stage::ALL {
            let mut codes = BTreeMap::new();
            for code in 0..N_CODES {
                let i = stage.index() * N_CODES + code;
                let n = raw.replies[i].saturating_sub(base.replies[i]);
                if n > 0 {
                    codes.insert(200 + code as u16, n);
                }
            }
            if !codes.is_empty() {
                replies.insert(stage.as_str().to_owned(), codes);
            }
        }
        let mut closed = BTreeMap::new();
        for r in CloseReason::ALL {
            let n = raw.closed[r as usize].saturating_sub(base.closed[r as usize]);
            if n > 0 {
                closed.insert(r.as_str().to_owned(), n);
            }
        }
        let rejections = rejections_of(&replies);
        StatsSnapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            since_reset_secs: since.elapsed().as_secs_f64(),
            connections_total: c(Counter::ConnectionsTotal),
            connections_open: c(Counter::ConnectionsOpen),
            messages_accepted: c(Counter::MessagesAccepted),
            messages_rejected: c(Counter::MessagesRejected),
            bytes_received: c(Counter::BytesReceived),
            message_bytes: c(Counter::MessageBytes),
            recipients_accepted: c(Counter::RecipientsAccepted),
            commands: c(Counter::Commands),
            tls_handshakes: c(Counter::TlsHandshakes),
            tls_resumed: c(Counter::TlsResumed),
            tls_failures: c(Counter::TlsFailures),
            auth_successes: c(Counter::AuthSuccesses),
            auth_failures: c(Counter::AuthFailures),
            read_buffer_high_water: c(Counter::ReadBufferHighWater),
            reply_writes: c(Counter::Writes),
            replies,
            rejections,
            closed,
        }
    }
}

/// Refusals by stage and class (`4xx`, `5xx`) from the replies by stage
/// and code.
fn rejections_of(
    replies: &BTreeMap<String, BTreeMap<u16, u64>>,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (stage, codes) in replies {
        let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
        for (code, n) in codes {
            if *code >= 400 {
                *by_class.entry(format!("{}xx", code / 100)).or_default() += n;
            }
        }
        if !by_class.is_empty() {
            out.insert(stage.clone(), by_class);
        }
    }
    out
}

/// A point-in-time view of the sink's counters (summed over shards, minus
/// the last reset). Deserializable so a client can read `GET /stats`
/// typed; keys it does not know default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsSnapshot {
    /// Seconds since the sink started.
    pub uptime_secs: f64,
    /// Seconds since the last reset (or start).
    pub since_reset_secs: f64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections open now (a gauge; not reset).
    pub connections_open: u64,
    /// Messages accepted (one per transaction, whatever its recipients).
    pub messages_accepted: u64,
    /// Messages whose end was reached but that were refused (size, bare LF,
    /// hook): end-of-data refusals only. A refusal at RCPT or MAIL is in
    /// [`StatsSnapshot::rejections`].
    pub messages_rejected: u64,
    /// Octets read from clients (commands and bodies; after TLS decryption).
    pub bytes_received: u64,
    /// Octets of accepted message bodies.
    pub message_bytes: u64,
    /// RCPT commands answered 2xx.
    pub recipients_accepted: u64,
    /// Command lines received (including ones that failed to parse).
    pub commands: u64,
    /// Completed TLS handshakes (STARTTLS and implicit).
    pub tls_handshakes: u64,
    /// Of those, handshakes that resumed a session (a ticket the sink
    /// issued earlier): no certificate, no signature.
    #[serde(default)]
    pub tls_resumed: u64,
    /// Failed TLS handshakes.
    pub tls_failures: u64,
    /// Successful AUTH exchanges.
    pub auth_successes: u64,
    /// Failed or cancelled AUTH exchanges.
    pub auth_failures: u64,
    /// Largest read buffer any session held, in octets (a gauge).
    pub read_buffer_high_water: u64,
    /// Write batches sent to clients (all replies produced by one read
    /// batch go out in one write).
    pub reply_writes: u64,
    /// Replies sent, by stage name and reply code.
    pub replies: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Refusals (4xx deferrals and 5xx rejections) at every stage, by
    /// stage name and class (`"4xx"`, `"5xx"`): `{"rcpt": {"5xx": 1}}`.
    pub rejections: BTreeMap<String, BTreeMap<String, u64>>,
    /// Sessions closed, by reason name.
    pub closed: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Replies with `code` at `stage`.
    pub fn replies_at(&self, stage: Stage, code: u16) -> u64 {
        self.replies
            .get(stage.as_str())
            .and_then(|m| m.get(&code))
            .copied()
            .unwrap_or(0)
    }

    /// Replies with `code` at any stage.
    pub fn replies_with_code(&self, code: u16) -> u64 {
        self.replies.values().filter_map(|m| m.get(&code)).sum()
    }

    /// Replies by class: `[2xx, 3xx, 4xx, 5xx]`.
    pub fn replies_by_class(&self) -> [u64; 4] {
        let mut out = [0; 4];
        for m in self.replies.values() {
            for (code, n) in m {
                let class = usize::from(code / 100).clamp(2, 5) - 2;
                out[class] += n;
            }
        }
        out
    }

    /// Sessions closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// The snapshot in the Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(s, "# HELP mailstorm_sink_{name} {help}");
            let _ = writeln!(s, "# TYPE mailstorm_sink_{name} {kind}");
            let _ = writeln!(s, "mailstorm_sink_{name} {v}");
        };
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            self.uptime_secs,
        );
        for (name, kind, help, v) in [
            (
                "connections_total",
                "counter",
                "Connections accepted.",
                self.connections_total,
            ),
            (
                "connections_open",
                "gauge",
                "Connections open now.",
                self.connections_open,
            ),
            (
                "messages_accepted_total",
                "counter",
                "Messages accepted.",
                self.messages_accepted,
            ),
            (
                "messages_rejected_total",
                "counter",
                "Messages refused at their end.",
                self.messages_rejected,
            ),
            (
                "bytes_received_total",
                "counter",
                "Octets read from clients.",
                self.bytes_received,
            ),
            (
                "message_bytes_total",
                "counter",
                "Octets of accepted message bodies.",
                self.message_bytes,
            ),
            (
                "recipients_accepted_total",
                "counter",
                "Recipients accepted.",
                self.recipients_accepted,
            ),
            (
                "commands_total",
                "counter",
                "Command lines received.",
                self.commands,
            ),
            (
                "tls_handshakes_total",
                "counter",
                "Completed TLS handshakes.",
                self.tls_handshakes,
            ),
            (
                "tls_resumed_total",
                "counter",
                "TLS handshakes that resumed a session.",
                self.tls_resumed,
            ),
            (
                "tls_failures_total",
                "counter",
                "Failed TLS handshakes.",
                self.tls_failures,
            ),
            (
                "auth_successes_total",
                "counter",
                "Successful AUTH exchanges.",
                self.auth_successes,
            ),
            (
                "auth_failures_total",
                "counter",
                "Failed AUTH exchanges.",
                self.auth_failures,
            ),
            (
                "read_buffer_high_water_bytes",
                "gauge",
                "Largest session read buffer.",
                self.read_buffer_high_water,
            ),
            (
                "reply_writes_total",
                "counter",
                "Reply batches written.",
                self.reply_writes,
            ),
        ] {
            metric(name, kind, help, v as f64);
        }
        let _ = writeln!(
            s,
            "# HELP mailstorm_sink_replies_total Replies sent by stage and code."
        );
        let _ = writeln!(s, "# TYPE mailstorm_sink_replies_total counter");
        for (stage, codes) in &self.replies {
            for (code, n) in codes {
                let _ = writeln!(
                    s,
                    "mailstorm_sink_replies_total{{stage=\"{stage}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP mailstorm_sink_rejections_total Refusals (4xx, 5xx) by stage and class."
        );
        let _ = writeln!(s, "# TYPE mailstorm_sink_rejections_total counter");
        for (stage, classes) in &self.rejections {
            for (class, n) in classes {
                let _ = writeln!(
                    s,
                    "mailstorm_sink_rejections_total{{stage=\"{stage}\",class=\"{class}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP mailstorm_sink_sessions_closed_total Sessions closed by reason."
        );
        let _ = writeln!(s, "# TYPE mailstorm_sink_sessions_closed_total counter");
        for (reason, n) in &self.closed {
            let _ = writeln!(
                s,
                "mailstorm_sink_sessions_closed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_slot_in_order() {
        for (slot, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, slot);
        }
        assert_eq!(N_COUNTERS, Counter::ALL.len());
    }

    #[test]
    fn sums_shards_and_resets_by_baseline() {
        let st = Stats::new(2);
        st.shards[0].add(Counter::MessagesAccepted, 3);
        st.shards[1].add(Counter::MessagesAccepted, 4);
        st.shards[0].add(Counter::ConnectionsOpen, 2);
        st.shards[1].reply(Stage::Rcpt, 250);
        st.shards[1].reply(Stage::Rcpt, 550);
        st.shards[0].reply(Stage::Rcpt, 551);
        st.shards[0].reply(Stage::Mail, 451);
        st.shards[1].closed(CloseReason::Quit);
        let s = st.snapshot();
        assert_eq!(s.rejections["rcpt"]["5xx"], 2);
        assert_eq!(s.rejections["mail"]["4xx"], 1);
        assert!(!s.rejections.contains_key("data_end"));
        assert!(s
            .to_prometheus()
            .contains("mailstorm_sink_rejections_total{stage=\"rcpt\",class=\"5xx\"} 2"));
        assert_eq!(s.messages_accepted, 7);
        assert_eq!(s.replies_at(Stage::Rcpt, 250), 1);
        assert_eq!(s.replies_by_class(), [1, 0, 1, 2]);
        assert_eq!(s.closed_for(CloseReason::Quit), 1);
        assert!(s
            .to_prometheus()
            .contains("mailstorm_sink_replies_total{stage=\"rcpt\",code=\"250\"} 1"));
        st.reset();
        st.shards[0].add(Counter::MessagesAccepted, 1);
        let s = st.snapshot();
        assert_eq!(s.messages_accepted, 1);
        assert_eq!(s.connections_open, 2, "gauges survive a reset");
        assert!(s.replies.is_empty());
    }
}
