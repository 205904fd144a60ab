//! Shard-local measurements (HDR histograms per stage, reply and transport
//! counters) and their merge on the main thread.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use mailstorm_proto::reply::EnhancedCode;

mod window;

/// Declares a C-like enum whose variants are listed once: the enum, its
/// `ALL` array (in declaration order), `COUNT`, and the report names all
/// come from that one list, so adding a variant cannot leave an index array
/// one entry short.
macro_rules! indexed_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in report order (the declaration order).
            pub const ALL: [$name; [$($name::$variant),+].len()] = [$($name::$variant),+];
            /// How many variants there are: the length of index arrays.
            pub const COUNT: usize = Self::ALL.len();

            /// The name in reports and thresholds.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            /// The position in [`Self::ALL`] (and in arrays of [`Self::COUNT`]).
            #[inline]
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

indexed_enum! {
    /// A measured stage. Latencies are microseconds.
    pub enum Stage {
        /// DNS lookups before a connection (`mx:DOMAIN` targets; cache
        /// misses only).
        Dns => "dns",
        /// TCP connect.
        Connect => "connect",
        /// TLS handshake (implicit or STARTTLS, including the STARTTLS command).
        Tls => "tls",
        /// Connect done to the greeting.
        Banner => "banner",
        /// EHLO/HELO/LHLO.
        Ehlo => "ehlo",
        /// The whole AUTH exchange.
        Auth => "auth",
        /// MAIL FROM sent to its reply.
        Mail => "mail",
        /// RCPT TO sent to its reply (pipelined: the group's send time).
        Rcpt => "rcpt",
        /// DATA sent to its 354.
        Data => "data",
        /// Body sent to the final reply (BDAT: the group's send time).
        DataEnd => "data_end",
        /// RSET.
        Rset => "rset",
        /// QUIT.
        Quit => "quit",
        /// MAIL FROM sent to the final reply of the transaction.
        Message => "message",
        /// Message picked up by a connection to its final reply, including any
        /// session setup it had to wait for.
        Service => "service",
        /// Intended start (open loop schedule) to the final reply: corrected for
        /// coordinated omission. Equals `service` in closed loop.
        Latency => "latency",
        /// Open loop: the generator's own lateness, a message's actual start
        /// minus its intended start (its clock and scheduling, plus any wait
        /// for a free connection). Not measured in closed loop.
        Lateness => "lateness",
        /// Connect start to close.
        Session => "session",
    }
}

impl Stage {
    /// The stage named `s`.
    pub fn from_name(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

indexed_enum! {
    /// A failure below the SMTP reply level.
    pub enum Transport {
        /// Connection refused.
        Refused => "refused",
        /// Connection reset (or broken pipe).
        Reset => "reset",
        /// TCP connect did not finish in time.
        ConnectTimeout => "connect_timeout",
        /// A reply (or a write) did not arrive in time.
        ReadTimeout => "read_timeout",
        /// TLS handshake or certificate failure.
        TlsFailure => "tls_failure",
        /// A reply that does not parse, or one over the size or line caps.
        MalformedReply => "malformed_reply",
        /// The server closed the connection while a reply was expected.
        UnexpectedClose => "unexpected_close",
        /// Still in flight when the stop grace ran out.
        Aborted => "aborted",
        /// Any other I/O error.
        Other => "other",
        /// No address to connect to: the DNS lookup failed (kinds in the
        /// report's `routing.dns`).
        Dns => "dns",
    }
}

impl Transport {
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

/// A transport error with the protocol step it happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fault {
    /// What went wrong.
    pub kind: Transport,
    /// The step it happened at (the command whose reply or write failed).
    pub stage: Stage,
}

impl Fault {
    /// `kind` at `stage`.
    pub fn new(kind: Transport, stage: Stage) -> Fault {
        Fault { kind, stage }
    }
}

impl std::fmt::Display for Fault {
    /// `read_timeout@banner`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.kind.name(), self.stage.name())
    }
}

/// The first error text kept per kind@stage, in characters: enough for a
/// TLS alert or certificate complaint, bounded against a hostile peer.
pub const MAX_ERROR_TEXT: usize = 240;

/// Transport errors counted by kind@stage, with the first error text of
/// each (a short list scanned linearly: few distinct keys occur).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultCount {
    /// Kind and stage.
    pub fault: Fault,
    /// How many.
    pub count: u64,
    /// The first error's text (empty when the error had none).
    pub first_text: String,
}

/// Message and connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Sends the load asked for: open loop, the scheduled sends that came
    /// due; closed loop, the messages started (a free connection asks).
    pub offered: u64,
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
    /// Open loop: scheduled sends that never started because no connection
    /// was free before the run ended (counted in their intended interval).
    pub not_started: u64,
    /// Open loop: sends scheduled.
    pub scheduled: u64,
    /// Connections established.
    pub conn_opened: u64,
    /// Connection attempts that failed (connect, TLS or greeting).
    pub conn_failed: u64,
    /// TLS handshakes completed (implicit TLS or STARTTLS).
    pub tls_handshakes: u64,
    /// Of those, handshakes that resumed an earlier session (`--tls-resume`).
    pub tls_resumed: u64,
    /// Message bytes sent (before dot-stuffing).
    pub bytes: u64,
    /// Recipients sent.
    pub rcpt_attempted: u64,
    /// Recipients accepted at RCPT.
    pub rcpt_accepted: u64,
    /// Recipients accepted for delivery (the message got its 2xx): what
    /// the ledger join expects downstream.
    pub rcpt_delivered: u64,
}

impl Counters {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Counters) {
        self.offered += o.offered;
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
        self.tls_handshakes += o.tls_handshakes;
        self.tls_resumed += o.tls_resumed;
        self.bytes += o.bytes;
        self.rcpt_attempted += o.rcpt_attempted;
        self.rcpt_accepted += o.rcpt_accepted;
        self.rcpt_delivered += o.rcpt_delivered;
    }

    /// The share of the offered load that never started (0 when nothing
    /// was offered): what a "raise -c" verdict reads.
    pub fn not_started_ratio(&self) -> f64 {
        if self.offered == 0 {
            0.0
        } else {
            self.not_started as f64 / self.offered as f64
        }
    }
}

/// What happened to the messages of one load stage (`--stages`): sends
/// are counted in the stage of their intended start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Open loop: started later than `late_after` after the intended time.
    pub late: u64,
    /// Shards that closed the stage: none of its messages will start or
    /// end there any more, so once every shard has, its figures are final
    /// (what `--abort-on-fail` waits for to decide a stage check). Run
    /// state, not a measurement: not written to reports.
    #[serde(skip)]
    pub closed: u64,
}

impl StageTally {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &StageTally) {
        self.late += o.late;
        self.scheduled += o.scheduled;
        self.attempted += o.attempted;
        self.accepted += o.accepted;
        self.deferred += o.deferred;
        self.rejected += o.rejected;
        self.failed += o.failed;
        self.not_started += o.not_started;
        self.closed += o.closed;
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
    /// Transport errors by kind (indexed by [`Transport::index`]).
    pub transport: [u64; Transport::COUNT],
    /// Transport errors by kind@stage with the first text of each.
    pub faults: Vec<FaultCount>,
    /// One histogram per stage (indexed by [`Stage::index`]).
    pub hist: Vec<Histogram<u64>>,
    /// Per load stage (`--stages`), by stage index; empty without stages.
    pub load: Vec<StageTally>,
    /// Per load stage, end-to-end latency (µs) of the messages that got a
    /// reply, by stage index; empty without stages.
    pub load_latency: Vec<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Counters::default(),
            replies: Vec::new(),
            transport: [0; Transport::COUNT],
            faults: Vec::new(),
            hist: Stage::ALL.iter().map(|_| new_histogram()).collect(),
            load: Vec::new(),
            load_latency: Vec::new(),
        }
    }
}

impl Stats {
    /// Records a latency in microseconds.
    #[inline]
    pub fn time(&mut self, stage: Stage, us: u64) {
        // Auto-resizing histograms only fail for values beyond u64 range.
        let _ = self.hist[stage.index()].record(us.max(1));
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

    /// Counts a transport error at its stage; `text` (the OS or TLS error)
    /// is kept, truncated, for the first error of each kind@stage.
    pub fn fault(&mut self, fault: Fault, text: &str) {
        self.add_fault(fault, 1, text);
    }

    /// Counts `count` errors of one kind@stage (e.g. messages aborted at
    /// the end of the grace period).
    pub fn add_fault(&mut self, fault: Fault, count: u64, text: &str) {
        if count == 0 {
            return;
        }
        self.transport[fault.kind.index()] += count;
        match self.faults.iter_mut().find(|f| f.fault == fault) {
            Some(f) => {
                f.count += count;
                if f.first_text.is_empty() {
                    f.first_text = bounded_text(text);
                }
            }
            None => self.faults.push(FaultCount {
                fault,
                count,
                first_text: bounded_text(text),
            }),
        }
    }

    /// Transport errors by kind@stage, most frequent first, with the first
    /// error text of each: what a summary shows to say why.
    pub fn faults_by_count(&self) -> Vec<FaultCount> {
        let mut v = self.faults.clone();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.fault.cmp(&b.fault)));
        v
    }

    /// Transport errors of `kind` at any stage.
    pub fn transport_count(&self, kind: Transport) -> u64 {
        self.transport[kind.index()]
    }

    /// The tally of load stage `i`.
    #[inline]
    pub fn load_stage(&mut self, i: usize) -> &mut StageTally {
        if self.load.len() <= i {
            self.load.resize(i + 1, StageTally::default());
        }
        &mut self.load[i]
    }

    /// Records a latency (µs) in load stage `i`'s histogram.
    #[inline]
    pub fn load_time(&mut self, i: usize, us: u64) {
        if self.load_latency.len() <= i {
            self.load_latency.resize_with(i + 1, new_histogram);
        }
        let _ = self.load_latency[i].record(us.max(1));
    }

    /// The histogram of `stage`.
    pub fn histogram(&self, stage: Stage) -> &Histogram<u64> {
        &self.hist[stage.index()]
    }

    /// Takes the contents, leaving empty measurements behind.
    pub fn take(&mut self) -> Stats {
        let out = Stats {
            counters: self.counters,
            replies: std::mem::take(&mut self.replies),
            transport: self.transport,
            faults: std::mem::take(&mut self.faults),
            hist: self.hist.clone(),
            load: std::mem::take(&mut self.load),
            load_latency: std::mem::take(&mut self.load_latency),
        };
        self.counters = Counters::default();
        self.transport = [0; Transport::COUNT];
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
        // Every count goes through `add_fault`, so the faults carry the
        // per-kind totals too.
        for f in &other.faults {
            self.add_fault(f.fault, f.count, &f.first_text);
        }
        for (i, t) in other.load.iter().enumerate() {
            self.load_stage(i).add(t);
        }
        if self.load_latency.len() < other.load_latency.len() {
            self.load_latency
                .resize_with(other.load_latency.len(), new_histogram);
        }
        for (a, b) in self.load_latency.iter_mut().zip(&other.load_latency) {
            let _ = a.add(b);
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

/// `text` cut to [`MAX_ERROR_TEXT`] characters.
fn bounded_text(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
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
        a.fault(
            Fault::new(Transport::Reset, Stage::DataEnd),
            "connection reset by peer",
        );
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
        let faults = total.faults_by_count();
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].count, 2);
        assert_eq!(faults[0].fault.to_string(), "reset@data_end");
        assert_eq!(faults[0].first_text, "connection reset by peer");
        assert_eq!(total.transport_count(Transport::Reset), 2);
    }

    #[test]
    fn index_arrays_follow_the_variant_lists() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        for (i, t) in Transport::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
        assert_eq!(Stats::default().hist.len(), Stage::COUNT);
    }

    #[test]
    fn error_text_is_bounded() {
        let mut a = Stats::default();
        let long = "x".repeat(100_000);
        let f = Fault::new(Transport::TlsFailure, Stage::Tls);
        a.fault(f, &long);
        a.fault(f, "second");
        assert_eq!(a.faults[0].count, 2);
        assert!(a.faults[0].first_text.chars().count() <= MAX_ERROR_TEXT + 1);
    }
}
