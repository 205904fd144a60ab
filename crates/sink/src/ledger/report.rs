//! The ledger's figures as served by `GET /ledger` and `GET /ledger/{run}`
//! (serde both ways: the blaster reads them back into the same types).

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Counts;

/// `GET /ledger`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerList {
    /// Accepted messages without a trace header.
    pub unattributed: u64,
    /// Accepted messages with a malformed or doubled trace header.
    pub malformed: u64,
    /// Runs evicted to stay under the caps.
    pub evicted_runs: u64,
    /// Pages of per-message counts held.
    pub pages: usize,
    /// Their size in bytes.
    pub bytes: usize,
    /// The runs, oldest first.
    pub runs: Vec<RunSummary>,
}

/// One run in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run id.
    pub run: String,
    /// Its counters.
    #[serde(flatten)]
    pub counts: Counts,
    /// Sequence spaces seen.
    pub sources: usize,
    /// Arrivals whose send time lies in the future (clock skew between
    /// the blaster's host and this one); not in the latency histogram.
    #[serde(default)]
    pub clock_skewed: u64,
    /// First arrival, µs since the Unix epoch.
    pub first_arrival_us: u64,
    /// Last arrival.
    pub last_arrival_us: u64,
    /// Who delivered to the run.
    #[serde(flatten)]
    pub senders: RunSenders,
}

/// Who delivered to a run: what `?helo=` and `?domain=` select on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSenders {
    /// Clients that delivered to the run (EHLO names lower-cased, or IP
    /// addresses for sessions that never greeted).
    #[serde(default)]
    pub clients: Vec<String>,
    /// Sender and recipient domains of its arrivals.
    #[serde(default)]
    pub domains: Vec<String>,
    /// More clients or domains than the ledger keeps per run
    /// ([`super::MAX_NAMES`]): the lists are incomplete and the run
    /// matches every filter.
    #[serde(default)]
    pub names_incomplete: bool,
}

/// `GET /ledger/{run}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Run id.
    pub run: String,
    /// Counters summed over the sources.
    #[serde(flatten)]
    pub counts: Counts,
    /// Arrivals whose send time was after the arrival (clocks apart).
    pub clock_skewed: u64,
    /// First arrival, µs since the Unix epoch.
    pub first_arrival_us: u64,
    /// Last arrival.
    pub last_arrival_us: u64,
    /// Arrival minus send time.
    pub e2e: Latency,
    /// Per sequence space.
    pub sources: Vec<SourceFigures>,
    /// Who delivered to the run.
    #[serde(flatten)]
    pub senders: RunSenders,
}

impl RunFigures {
    /// The figures of one source (hex id), if it was seen.
    pub fn source(&self, id: &str) -> Option<&SourceFigures> {
        self.sources.iter().find(|s| s.source == id)
    }
}

/// One sequence space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFigures {
    /// The source id, 8 hex digits as in the header.
    pub source: String,
    /// Its counters.
    #[serde(flatten)]
    pub counts: Counts,
    /// Highest sequence number seen.
    pub max_seq: Option<u64>,
}

/// A latency distribution: summary in µs plus the mergeable histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Base64 of the HDR histogram, V2 deflate format (as the blaster's
    /// report).
    pub hdr: String,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Latency {
            count: h.len(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            max_us: if h.is_empty() { 0 } else { h.max() },
            hdr: B64.encode(mailstorm_sample::encode_v2(h)),
        }
    }

    /// The histogram back from [`Latency::hdr`].
    pub fn histogram(&self) -> Option<Histogram<u64>> {
        mailstorm_sample::decode_v2(&B64.decode(&self.hdr).ok()?)
    }
}

pub(super) fn prometheus(l: &LedgerList) -> String {
    let mut m = String::new();
    for (name, help, v) in [
        (
            "mailstorm_sink_ledger_unattributed_total",
            "Accepted messages without a trace header.",
            l.unattributed,
        ),
        (
            "mailstorm_sink_ledger_malformed_total",
            "Accepted messages with a malformed trace header.",
            l.malformed,
        ),
        (
            "mailstorm_sink_ledger_evicted_runs_total",
            "Ledger runs evicted by the caps.",
            l.evicted_runs,
        ),
    ] {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(
        m,
        "# HELP mailstorm_sink_ledger_bytes Memory held by ledger pages.\n\
         # TYPE mailstorm_sink_ledger_bytes gauge\nmailstorm_sink_ledger_bytes {}",
        l.bytes
    );
    type Get = fn(&RunSummary) -> u64;
    let per_run: [(&str, &str, Get); 8] = [
        ("messages", "Traced messages that arrived.", |r| {
            r.counts.messages
        }),
        ("deliveries", "Traced recipient deliveries.", |r| {
            r.counts.deliveries
        }),
        (
            "unique",
            "First deliveries of a (sequence, recipient): what a blaster counts as delivered.",
            |r| r.counts.unique,
        ),
        (
            "duplicates",
            "Recipient deliveries beyond the first.",
            |r| r.counts.duplicates,
        ),
        (
            "duplicate_messages",
            "Arrivals every recipient of which had already arrived.",
            |r| r.counts.duplicate_messages,
        ),
        ("out_of_order", "Traced first arrivals out of order.", |r| {
            r.counts.out_of_order
        }),
        ("dropped", "Traced arrivals over a memory cap.", |r| {
            r.counts.dropped
        }),
        (
            "clock_skewed",
            "Traced arrivals sent in the future (clock skew): not in the latency figures.",
            |r| r.clock_skewed,
        ),
    ];
    for (what, help, get) in per_run {
        let name = format!("mailstorm_sink_ledger_{what}_total");
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter");
        for r in &l.runs {
            // Run ids are `[A-Za-z0-9._-]`: nothing to escape in a label.
            let _ = writeln!(m, "{name}{{run=\"{}\"}} {}", r.run, get(r));
        }
    }
    m
}
