//! The end-to-end ledger: what arrived of each traced run.
//!
//! Every accepted message's header section is scanned for the trace
//! header ([`mailstorm_proto::trace`]). Traced arrivals are counted per run
//! and per sequence space (one blaster process): deliveries per (sequence,
//! recipient count), duplicates, out-of-order arrivals, and arrival minus
//! send time as an HDR histogram. Messages without the header count as
//! unattributed, forged or mangled ones as malformed; neither reaches the
//! per-run state.
//!
//! Memory is bounded whatever peers send: at most [`MAX_RUNS`] runs (the
//! least recently updated is evicted), [`MAX_SOURCES`] spaces per run,
//! [`MAX_RUN_PAGES`] pages of 4096 one-byte counts per run and
//! [`MAX_PAGES`] in all. An arrival past a cap is counted as `dropped`.

mod names;
mod report;
mod space;

use std::collections::hash_map::Entry;
// Looked up once or more per traced message; keys come from peers, so
// the hash is seeded per process (foldhash), not SipHash's cost.
use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use mailstorm_proto::trace::{self, Found};

use crate::filter::ClientFilter;
use names::Names;

pub use names::{MAX_NAMES, MAX_NAME_LEN};
pub use report::{Latency, LedgerList, RunFigures, RunSenders, RunSummary, SourceFigures};
pub use space::Counts;
use space::{Delivered, Slot, Space};

/// Most runs kept.
pub const MAX_RUNS: usize = 64;
/// Most sequence spaces (blaster processes) per run.
pub const MAX_SOURCES: usize = 256;
/// Most pages (4096 messages each, 4 KiB) per run: 64 Mi messages.
pub const MAX_RUN_PAGES: usize = 16 * 1024;
/// Most pages in all (256 MiB).
pub const MAX_PAGES: usize = 64 * 1024;
/// Largest end-to-end latency recorded: one day in µs (larger clamps).
const MAX_LATENCY_US: u64 = 86_400_000_000;

struct Run {
    spaces: HashMap<u32, Space>,
    e2e: Histogram<u64>,
    /// Arrivals whose send time lies in the future (clock skew).
    skewed: u64,
    dropped: u64,
    first_us: u64,
    last_us: u64,
    /// Order of last update, for eviction.
    touched: u64,
    /// Who delivered: what `?helo=` and `?domain=` select on.
    names: Names,
}

impl Run {
    fn new(now_us: u64) -> Run {
        Run {
            spaces: HashMap::default(),
            // 3 significant digits up to a day: tens of KiB per run.
            e2e: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            skewed: 0,
            dropped: 0,
            first_us: now_us,
            last_us: now_us,
            touched: 0,
            names: Names::default(),
        }
    }

    fn pages(&self) -> usize {
        self.spaces.values().map(Space::pages).sum()
    }
}

#[derive(Default)]
struct Inner {
    runs: HashMap<String, Run>,
    pages: usize,
    tick: u64,
    evicted: u64,
}

/// The ledger of one sink (shared by its shards).
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
    unattributed: AtomicU64,
    malformed: AtomicU64,
}

impl Ledger {
    /// A new, empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records an accepted message: `headers` is (at least the start of)
    /// the message, `rcpts` the recipients it was accepted for, `from` who
    /// sent it (read only for traced messages).
    pub fn record(&self, headers: &[u8], rcpts: usize, now_us: u64, from: &Arrival<'_>) {
        match trace::find(headers) {
            Found::Absent => {
                self.unattributed.fetch_add(1, Ordering::Relaxed);
            }
            Found::Malformed => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
            Found::Trace(t) => {
                // Outside the lock: which of the message's recipients this
                // arrival was for, when the trace names them.
                let who = t
                    .tags
                    .filter(|_| (1..=trace::MAX_TAGGED as u32).contains(&t.rcpts))
                    .map(|tags| delivered(&tags[..t.rcpts as usize], from.recipients));
                self.record_trace(&t, rcpts as u64, now_us, from, who)
            }
        }
    }

    fn record_trace(
        &self,
        t: &trace::Trace<'_>,
        k: u64,
        now_us: u64,
        from: &Arrival<'_>,
        who: Option<Delivered>,
    ) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        // The common case, a known run with room to spare: one lookup
        // (this runs once per accepted message).
        if inner.pages < MAX_PAGES {
            if let Some(run) = inner.runs.get_mut(t.run) {
                let may_grow = run.pages() < MAX_RUN_PAGES;
                inner.pages += record_in(run, t, (k, who), now_us, tick, may_grow);
                from.note_in(&mut run.names);
                return;
            }
        }
        if !inner.runs.contains_key(t.run) {
            if inner.runs.len() >= MAX_RUNS {
                evict_oldest(inner, None);
            }
            inner.runs.insert(t.run.to_owned(), Run::new(now_us));
        }
        // Budget: a new page only while the run and the sink are under
        // their caps; evicting other (older) runs to make room.
        while inner.pages >= MAX_PAGES && inner.runs.len() > 1 {
            if !evict_oldest(inner, Some(t.run)) {
                break;
            }
        }
        let total = inner.pages;
        let Some(run) = inner.runs.get_mut(t.run) else {
            return;
        };
        let may_grow = run.pages() < MAX_RUN_PAGES && total < MAX_PAGES;
        inner.pages += record_in(run, t, (k, who), now_us, tick, may_grow);
        from.note_in(&mut run.names);
    }

    /// Messages without a trace header.
    pub fn unattributed(&self) -> u64 {
        self.unattributed.load(Ordering::Relaxed)
    }

    /// Messages with a malformed (or doubled) trace header.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// `GET /ledger`.
    pub fn list(&self) -> LedgerList {
        self.list_for(&ClientFilter::all())
    }

    /// `GET /ledger?helo=…&domain=…`: the runs the filter's client or
    /// domain delivered to (the global counters stay global).
    pub fn list_for(&self, filter: &ClientFilter) -> LedgerList {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut runs: Vec<RunSummary> = g
            .runs
            .iter()
            .filter(|(_, r)| r.names.matches(filter))
            .map(|(id, r)| RunSummary {
                run: id.clone(),
                counts: total(r),
                sources: r.spaces.len(),
                clock_skewed: r.skewed,
                first_arrival_us: r.first_us,
                last_arrival_us: r.last_us,
                senders: r.names.senders(),
            })
            .collect();
        runs.sort_by_key(|r| r.first_arrival_us);
        LedgerList {
            unattributed: self.unattributed(),
            malformed: self.malformed(),
            evicted_runs: g.evicted,
            pages: g.pages,
            bytes: g.pages * space::PAGE as usize,
            runs,
        }
    }

    /// `GET /ledger/{run}`.
    pub fn run(&self, id: &str) -> Option<RunFigures> {
        self.run_for(id, &ClientFilter::all())
    }

    /// `GET /ledger/{run}?helo=…&domain=…`: the run, if the filter's
    /// client or domain delivered to it.
    pub fn run_for(&self, id: &str, filter: &ClientFilter) -> Option<RunFigures> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let r = g.runs.get(id).filter(|r| r.names.matches(filter))?;
        let mut sources: Vec<SourceFigures> = r
            .spaces
            .iter()
            .map(|(s, sp)| SourceFigures {
                source: format!("{s:08x}"),
                counts: sp.counts,
                max_seq: sp.max_seq,
            })
            .collect();
        sources.sort_by(|a, b| a.source.cmp(&b.source));
        Some(RunFigures {
            run: id.to_owned(),
            counts: total(r),
            clock_skewed: r.skewed,
            first_arrival_us: r.first_us,
            last_arrival_us: r.last_us,
            e2e: report::Latency::of(&r.e2e),
            sources,
            senders: r.names.senders(),
        })
    }

    /// A filtered `POST /reset`: forgets the runs `filter` selects that
    /// no other client delivered to (with a domain alone: every run the
    /// domain appears in); returns how many.
    pub fn remove_for(&self, filter: &ClientFilter) -> usize {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        let before = inner.runs.len();
        let mut freed = 0;
        inner.runs.retain(|_, r| {
            let drop = r.names.owned_by(filter);
            if drop {
                freed += r.pages();
            }
            !drop
        });
        inner.pages -= freed;
        before - inner.runs.len()
    }

    /// Forgets every run and counter.
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g = Inner::default();
        self.unattributed.store(0, Ordering::Relaxed);
        self.malformed.store(0, Ordering::Relaxed);
    }

    /// Prometheus text: global counters and per-run figures (the run label
    /// is bounded by [`MAX_RUNS`]).
    pub fn metrics_text(&self) -> String {
        report::prometheus(&self.list())
    }
}

/// Who sent an arrival: the session's greeting (empty before one), its
/// peer and its envelope, for the run's client and domain lists.
pub struct Arrival<'a> {
    /// The EHLO/HELO/LHLO argument as sent (empty: none).
    pub helo: &'a str,
    /// The client's address (its id when it never greeted).
    pub ip: std::net::IpAddr,
    /// The envelope sender.
    pub sender: &'a str,
    /// The envelope recipients the message was accepted for.
    pub recipients: crate::hook::Recipients<'a>,
}

impl Arrival<'_> {
    /// An arrival with no client details (tests, tools).
    pub fn unknown() -> Arrival<'static> {
        Arrival {
            helo: "",
            ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            sender: "",
            recipients: crate::hook::Recipients { buf: "", ends: &[] },
        }
    }

    fn note_in(&self, names: &mut Names) {
        use crate::filter::domain_of;
        let domains = std::iter::once(self.sender)
            .chain(self.recipients.iter())
            .map(domain_of);
        if self.helo.is_empty() {
            let ip = crate::ip_text::IpText::new(self.ip);
            names.note(
                std::str::from_utf8(ip.as_bytes()).unwrap_or_default(),
                domains,
            );
        } else {
            names.note(self.helo, domains);
        }
    }
}

/// Matches an arrival's envelope recipients to the message's recipient
/// tags: each takes the first index with its tag not yet taken by this
/// arrival (two recipients of one message may share a tag).
fn delivered(tags: &[u16], recipients: crate::hook::Recipients<'_>) -> Delivered {
    let mut d = Delivered {
        matched: 0,
        unmatched: 0,
    };
    for r in recipients.iter() {
        let tag = trace::rcpt_tag(r);
        match (0..tags.len()).find(|&i| tags[i] == tag && d.matched >> i & 1 == 0) {
            Some(i) => d.matched |= 1 << i,
            None => d.unmatched += 1,
        }
    }
    d
}

/// Microseconds since the Unix epoch (the trace header's clock).
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn total(r: &Run) -> Counts {
    let mut c = Counts {
        dropped: r.dropped,
        ..Counts::default()
    };
    for s in r.spaces.values() {
        c.add(&s.counts);
    }
    c
}

/// Removes the least recently updated run other than `keep`.
/// Records one arrival of `t` (for `k` recipients) in `run`; returns the
/// pages its space grew by.
fn record_in(
    run: &mut Run,
    t: &trace::Trace<'_>,
    (k, who): (u64, Option<Delivered>),
    now_us: u64,
    tick: u64,
    may_grow: bool,
) -> usize {
    run.touched = tick;
    run.last_us = run.last_us.max(now_us);
    // One hash per arrival: the entry decides between known and new.
    let full = run.spaces.len() >= MAX_SOURCES;
    let space = match run.spaces.entry(t.source) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(_) if full => {
            run.dropped += 1;
            return 0;
        }
        Entry::Vacant(v) => v.insert(Space::default()),
    };
    let before = space.pages();
    let n = u64::from(t.rcpts.max(1));
    match space.record(t.seq, k.max(1), n, who, may_grow) {
        Slot::Done => {}
        Slot::NeedsPage => {
            space.counts.dropped += 1;
            return 0;
        }
    }
    let grown = space.pages() - before;
    match now_us.checked_sub(t.sent_us) {
        Some(d) => run.e2e.saturating_record(d.clamp(1, MAX_LATENCY_US)),
        None => run.skewed += 1,
    }
    grown
}

fn evict_oldest(inner: &mut Inner, keep: Option<&str>) -> bool {
    let victim = inner
        .runs
        .iter()
        .filter(|(id, _)| Some(id.as_str()) != keep)
        .min_by_key(|(_, r)| r.touched)
        .map(|(id, _)| id.clone());
    match victim.and_then(|v| inner.runs.remove(&v)) {
        Some(r) => {
            inner.pages -= r.pages();
            inner.evicted += 1;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstorm_proto::trace::Template;

    impl Ledger {
        fn record_plain(&self, headers: &[u8], rcpts: usize, now_us: u64) {
            self.record(headers, rcpts, now_us, &Arrival::unknown());
        }
    }

    fn msg(run: &str, source: u32, seq: u64, n: u32, sent: u64) -> Vec<u8> {
        let mut m = b"Received: by relay\r\n".to_vec();
        Template::new(run, source).write(&mut m, seq, n, sent);
        m.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
        m
    }

    #[test]
    fn runs_sources_and_latency() {
        let l = Ledger::new();
        l.record_plain(&msg("a", 1, 0, 2, 1_000), 2, 3_000);
        l.record_plain(&msg("a", 2, 0, 1, 1_000), 1, 2_000);
        l.record_plain(&msg("a", 1, 0, 2, 1_000), 2, 5_000);
        l.record_plain(b"Subject: none\r\n\r\n", 1, 0);
        l.record_plain(b"X-Mailstorm-Trace: v1 r=a s=1 q=1 n=1 t=1\r\n\r\n", 1, 0);
        let r = l.run("a").unwrap();
        assert_eq!(r.counts.messages, 3);
        assert_eq!(r.counts.unique, 3, "source 2's seq 0 is its own");
        assert_eq!(r.counts.duplicates, 2);
        assert_eq!(r.counts.duplicate_messages, 1);
        assert_eq!(r.e2e.count, 3);
        assert!((3_996..=4_004).contains(&r.e2e.max_us), "{}", r.e2e.max_us);
        assert_eq!(r.sources.len(), 2);
        assert_eq!((l.unattributed(), l.malformed()), (1, 1));
        assert!(l.run("b").is_none());
    }

    #[test]
    fn forged_runs_and_sequences_stay_bounded() {
        let l = Ledger::new();
        for i in 0..(MAX_RUNS as u64 + 10) {
            l.record_plain(&msg(&format!("r{i}"), 1, i * 1_000_000_007, 1, 1), 1, 2);
        }
        let list = l.list();
        assert_eq!(list.runs.len(), MAX_RUNS);
        assert_eq!(list.evicted_runs, 10);
        assert_eq!(list.pages, MAX_RUNS);
        // One run spraying sequence numbers stops at its page cap.
        for i in 0..(MAX_RUN_PAGES as u64 + 5) {
            l.record_plain(&msg("spray", 1, i * space::PAGE, 1, 1), 1, 2);
        }
        let r = l.run("spray").unwrap();
        assert_eq!(r.counts.messages, MAX_RUN_PAGES as u64);
        assert_eq!(r.counts.dropped, 5);
        assert!(l.list().pages <= MAX_PAGES);
    }
}
