//! Shard-local measurements (HDR histograms per stage, reply and transport
//! counters) and their merge on the main thread.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use mailstorm_proto::reply::EnhancedCode;

/// A measured stage. Latencies are microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// TLS handshake (implicit or STARTTLS, including the STARTTLS command).
    Tls,
    /// Connect done to the greeting.
    Banner,
    /// EHLO/HELO/LHLO.
    Ehlo,
    /// The whole AUTH exchange.
    Auth,
    /// MAIL FROM sent to its reply.
    Mail,
    /// RCPT TO sent to its reply (pipelined: the group's send time).
    Rcpt,
    /// DATA sent to its 354.
    Data,
    /// Body sent to the final reply (BDAT: the group's send time).
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
    /// MAIL FROM sent to the final reply of the transaction.
    Message,
    /// Message picked up by a connection to its final reply, including any
    /// session setup it had to wait for.
    Service,
    /// Intended start (open loop schedule) to the final reply: corrected for
    /// coordinated omission. Equals `service` in closed loop.
    Latency,
    /// Connect start to close.
    Session,
}

impl Stage {
    /// Every stage, in report order.
    pub const ALL: [Stage; 15] = [
        Stage::Connect,
        Stage::Tls,
        Stage::Banner,
        Stage::Ehlo,
        Stage::Auth,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::DataEnd,
        Stage::Rset,
        Stage::Quit,
        Stage::Message,
        Stage::Service,
        Stage::Latency,
        Stage::Session,
    ];

    /// The stage's name in reports and thresholds.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Banner => "banner",
            Stage::Ehlo => "ehlo",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::DataEnd => "data_end",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
            Stage::Message => "message",
            Stage::Service => "service",
            Stage::Latency => "latency",
            Stage::Session => "session",
        }
    }

    /// The stage named `s`.
    pub fn from_name(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

/// A failure below the SMTP reply level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// Connection refused.
    Refused,
    /// Connection reset (or broken pipe).
    Reset,
    /// TCP connect did not finish in time.
    ConnectTimeout,
    /// A reply (or a write) did not arrive in time.
    ReadTimeout,
    /// TLS handshake or certificate failure.
    TlsFailure,
    /// A reply that does not parse.
    MalformedReply,
    /// The server closed the connection while a reply was expected.
    UnexpectedClose,
    /// Still in flight when the stop grace ran out.
    Aborted,
    /// Any other I/O error.
    Other,
}

impl Transport {
    /// Every kind, in report order.
    pub const ALL: [Transport; 9] = [
        Transport::Refused,
        Transport::Reset,
        Transport::ConnectTimeout,
        Transport::ReadTimeout,
        Transport::TlsFailure,
        Transport::MalformedReply,
        Transport::UnexpectedClose,
        Transport::Aborted,
        Transport::Other,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Refused => "refused",
            Transport::Reset => "reset",
            Transport::ConnectTimeout => "connect_timeout",
            Transport::ReadTimeout => "read_timeout",
            Transport::TlsFailure => "tls_failure",
            Transport::MalformedReply => "malformed_reply",
            Transport::UnexpectedClose => "unexpected_close",
            Transport::Aborted => "aborted",
            Transport::Other => "other",
        }
    }

    /// Classifies an I/O error.
    pub fn from_io(e: &std::io::Error) -> Transport {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Transport::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Transport::Reset,
            K::TimedOut => Transport::ReadTimeout,
            K::UnexpectedEof => Transport::UnexpectedClose,
            K::InvalidData => Transport::TlsFailure,
            _ => Transport::Other,
        }
    }
}

/// Message and connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages started.
    pub attempted: u64,
    /// Final reply 2xx (LMTP: at least one recipient delivered).
    pub accepted: u64,
    /// Ended with a 4xx.
    pub deferred: u64,
    /// Ended with a 5xx.
    pub rejected: u64,
    /// Ended with a transport error.
    pub failed: u64,
    /// Open loop: started later than `late_after` after the intended time.
    pub late: u64,
    /// Open loop: scheduled but never started (stop came first).
    pub not_started: u64,
    /// Open loop: sends scheduled.
    pub scheduled: u64,
    /// Connections established.
    pub conn_opened: u64,
    /// Connection attempts that failed (connect, TLS or greeting).
    pub conn_failed: u64,
    /// Message bytes sent (before dot-stuffing).
    pub bytes: u64,
    /// Recipients sent.
    pub rcpt_attempted: u64,
    /// Recipients accepted at RCPT.
    pub rcpt_accepted: u64,
}

impl Counters {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Counters) {
        self.attempted += o.attempted;
        self.accepted += o.accepted;
        self.deferred += o.deferred;
        self.rejected += o.rejected;
        self.failed += o.failed;
        self.late += o.late;
        self.not_started += o.not_started;
        self.scheduled += o.scheduled;
        self.conn_opened += o.conn_opened;
        self.conn_failed += o.conn_failed;
        self.bytes += o.bytes;
        self.rcpt_attempted += o.rcpt_attempted;
        self.rcpt_accepted += o.rcpt_accepted;
    }
}

/// What happened to the messages of one load stage (`--stages`): sends
/// are counted in the stage of their intended start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTally {
    /// Open loop: sends scheduled in the stage.
    pub scheduled: u64,
    /// Messages started.
    pub attempted: u64,
    /// Accepted.
    pub accepted: u64,
    /// Deferred (4xx).
    pub deferred: u64,
    /// Rejected (5xx).
    pub rejected: u64,
    /// Transport failures.
    pub failed: u64,
    /// Open loop: scheduled but never started.
    pub not_started: u64,
}

impl StageTally {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &StageTally) {
        self.scheduled += o.scheduled;
        self.attempted += o.attempted;
        self.accepted += o.accepted;
        self.deferred += o.deferred;
        self.rejected += o.rejected;
        self.failed += o.failed;
        self.not_started += o.not_started;
    }
}

/// Reply accounting key: stage × code × enhanced code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyKey {
    /// Where the reply was received.
    pub stage: Stage,
    /// The reply code.
    pub code: u16,
    /// The enhanced status code as (class, subject, detail).
    pub enhanced: Option<(u8, u16, u16)>,
}

impl ReplyKey {
    /// `250` or `250 2.0.0`.
    pub fn code_label(&self) -> String {
        match self.enhanced {
            Some((c, s, d)) => format!("{} {c}.{s}.{d}", self.code),
            None => self.code.to_string(),
        }
    }
}

/// A new histogram: microseconds from 1 µs, 3 significant figures,
/// auto-resizing (so a 60 s+ stall is recorded exactly, while stages with
/// small values stay small in memory).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is valid")
}

/// A shard's measurements since its last report (or the merged totals).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Counters.
    pub counters: Counters,
    /// Reply counts; a short list, scanned linearly (few distinct keys).
    pub replies: Vec<(ReplyKey, u64)>,
    /// Transport errors by kind (indexed like [`Transport::ALL`]).
    pub transport: [u64; Transport::ALL.len()],
    /// One histogram per stage (indexed like [`Stage::ALL`]).
    pub hist: Vec<Histogram<u64>>,
    /// Per load stage (`--stages`), by stage index; empty without stages.
    pub load: Vec<StageTally>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Counters::default(),
            replies: Vec::new(),
            transport: [0; Transport::ALL.len()],
            hist: Stage::ALL.iter().map(|_| new_histogram()).collect(),
            load: Vec::new(),
        }
    }
}

impl Stats {
    /// Records a latency in microseconds.
    #[inline]
    pub fn time(&mut self, stage: Stage, us: u64) {
        // Auto-resizing histograms only fail for values beyond u64 range.
        let _ = self.hist[stage as usize].record(us.max(1));
    }

    /// Counts a reply.
    #[inline]
    pub fn reply(&mut self, stage: Stage, code: u16, enhanced: Option<EnhancedCode>) {
        let key = ReplyKey {
            stage,
            code,
            enhanced: enhanced.map(|e| (e.class, e.subject, e.detail)),
        };
        match self.replies.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.replies.push((key, 1)),
        }
    }

    /// Counts a transport error.
    #[inline]
    pub fn transport(&mut self, t: Transport) {
        self.transport[t as usize] += 1;
    }

    /// The tally of load stage `i`.
    #[inline]
    pub fn load_stage(&mut self, i: usize) -> &mut StageTally {
        if self.load.len() <= i {
            self.load.resize(i + 1, StageTally::default());
        }
        &mut self.load[i]
    }

    /// The histogram of `stage`.
    pub fn histogram(&self, stage: Stage) -> &Histogram<u64> {
        &self.hist[stage as usize]
    }

    /// Takes the contents, leaving empty measurements behind.
    pub fn take(&mut self) -> Stats {
        let out = Stats {
            counters: self.counters,
            replies: std::mem::take(&mut self.replies),
            transport: self.transport,
            hist: self.hist.clone(),
            load: std::mem::take(&mut self.load),
        };
        self.counters = Counters::default();
        self.transport = [0; Transport::ALL.len()];
        for h in &mut self.hist {
            h.reset();
        }
        out
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.counters.add(&other.counters);
        for (k, n) in &other.replies {
            match self.replies.iter_mut().find(|(kk, _)| kk == k) {
                Some((_, m)) => *m += n,
                None => self.replies.push((*k, *n)),
            }
        }
        for (a, b) in self.transport.iter_mut().zip(other.transport) {
            *a += b;
        }
        for (i, t) in other.load.iter().enumerate() {
            self.load_stage(i).add(t);
        }
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            // Both auto-resize, so adding cannot fail on range.
            let _ = a.add(b);
        }
    }

    /// Total transport errors.
    pub fn transport_errors(&self) -> u64 {
        self.transport.iter().sum()
    }

    /// Replies of class `class` (4 or 5) at any stage.
    pub fn replies_of_class(&self, class: u16) -> u64 {
        self.replies
            .iter()
            .filter(|(k, _)| k.code / 100 == class)
            .map(|(_, n)| n)
            .sum()
    }

    /// Replies grouped per stage then label, sorted.
    pub fn replies_by_stage(&self) -> BTreeMap<Stage, BTreeMap<String, u64>> {
        let mut m: BTreeMap<Stage, BTreeMap<String, u64>> = BTreeMap::new();
        for (k, n) in &self.replies {
            *m.entry(k.stage)
                .or_default()
                .entry(k.code_label())
                .or_default() += n;
        }
        m
    }
}

/// What a shard sends to the main thread.
#[derive(Debug)]
pub struct Delta {
    /// Which shard.
    pub shard: usize,
    /// Interval index since the run's start (0 = first interval).
    pub interval: u64,
    /// Measurements of that interval.
    pub stats: Stats,
    /// The shard is done; nothing more will come from it.
    pub last: bool,
    /// With a policy, on the last delta: the shard's final states.
    pub tally: Option<crate::policy::runtime::Tally>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_take() {
        let mut a = Stats::default();
        a.time(Stage::Mail, 100);
        a.time(Stage::Mail, 70_000_000); // beyond 60 s still recorded
        a.reply(Stage::Mail, 250, None);
        a.reply(Stage::Mail, 250, None);
        a.transport(Transport::Reset);
        a.counters.accepted = 2;
        let d = a.take();
        assert_eq!(a.histogram(Stage::Mail).len(), 0);
        assert!(a.replies.is_empty());
        let mut total = Stats::default();
        total.merge(&d);
        total.merge(&d);
        assert_eq!(total.counters.accepted, 4);
        assert_eq!(total.histogram(Stage::Mail).len(), 4);
        assert!(total.histogram(Stage::Mail).max() >= 69_000_000);
        assert_eq!(total.replies, vec![(d.replies[0].0, 4)]);
        assert_eq!(total.transport_errors(), 2);
        assert_eq!(Stage::from_name("data_end"), Some(Stage::DataEnd));
    }
}
