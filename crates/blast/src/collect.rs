//! The run's collector: turns the shards' per-interval deltas into
//! timeline rows, each closed (and handed to the progress callback) once
//! it is final.
//!
//! A shard files every count under the interval it happened in and says,
//! with each delta, up to which interval it has shipped everything
//! (`through`). Row `k` is final once every shard still running has
//! shipped past `k`; a shard that has ended no longer holds rows back. A
//! shard that falls silent (a starved thread) holds a row back at most
//! [`Collector::wait`] past its end, after which the row closes with what
//! arrived; anything of it arriving later still lands in the run's
//! timeline and totals, just not in that row's progress snapshot.
//!
//! Never-started sends are only known when a shard ends (its final
//! backlog); they are filed under the intervals they were due in, which
//! may have closed already.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::shard::ShardDelta;
use crate::stats::Stats;
use crate::Row;

/// Rows and totals of a run, as the shards' deltas arrive.
pub(crate) struct Collector {
    interval: Duration,
    wait: Duration,
    /// Per shard: intervals below this were shipped in full; `None` once
    /// the shard ended.
    through: Vec<Option<u64>>,
    /// Rows not closed yet: their measurements so far.
    open: BTreeMap<u64, Stats>,
    /// Closed rows, `rows[k]` for interval `k`.
    rows: Vec<Row>,
    /// Everything in closed rows (late arrivals for them included).
    closed: Stats,
    /// The measurements of the row closed last.
    last: Stats,
    /// One past the highest interval any delta was filed under.
    end: u64,
    /// Everything received.
    pub totals: Stats,
}

/// A row just closed, for the progress callback.
pub(crate) struct Closed<'a> {
    /// Its interval index.
    pub index: u64,
    pub row: &'a Row,
    /// Its full measurements.
    pub stats: &'a Stats,
    /// Everything through the end of this interval.
    pub totals: &'a Stats,
}

impl Collector {
    /// A collector for `shards` shards (their deltas carry `0..shards`).
    pub fn new(interval: Duration, shards: usize) -> Collector {
        Collector {
            interval,
            wait: Self::wait(interval),
            through: vec![Some(0); shards],
            open: BTreeMap::new(),
            rows: Vec::new(),
            closed: Stats::default(),
            last: Stats::default(),
            end: 0,
            totals: Stats::default(),
        }
    }

    /// How long past its end a row waits for a silent shard: one interval,
    /// at least a second (a loaded machine may not run a shard's thread
    /// for a few hundred milliseconds).
    pub fn wait(interval: Duration) -> Duration {
        interval.max(Duration::from_secs(1))
    }

    /// Shards still running.
    pub fn live(&self) -> usize {
        self.through.iter().filter(|t| t.is_some()).count()
    }

    /// Takes in one delta.
    pub fn receive(&mut self, d: &ShardDelta) {
        self.totals.merge(&d.stats);
        self.end = self.end.max(d.interval + 1);
        if let Some(t) = self.through.get_mut(d.shard) {
            *t = if d.last {
                None
            } else {
                t.map(|t| t.max(d.through))
            };
        }
        match self.rows.get_mut(d.interval as usize) {
            // Late for a closed row: the timeline and totals still get it.
            Some(row) => {
                row.add(&d.stats);
                self.closed.merge(&d.stats);
            }
            None => self.open.entry(d.interval).or_default().merge(&d.stats),
        }
    }

    /// Closes the next row if it is final: every running shard shipped
    /// past it, or it is [`Collector::wait`] past its end (`now`, since
    /// the start). With `now` `None` (every shard ended) each row up to
    /// the last one reported closes.
    pub fn close_next(&mut self, now: Option<Duration>) -> Option<Closed<'_>> {
        let k = self.rows.len() as u64;
        let ready = match now {
            None => k < self.end,
            Some(now) => {
                let shipped = self.live() > 0 && self.through.iter().flatten().all(|&t| t > k);
                shipped || now >= self.interval * (k as u32 + 1) + self.wait
            }
        };
        if !ready {
            return None;
        }
        self.last = self.open.remove(&k).unwrap_or_default();
        self.closed.merge(&self.last);
        let mut row = Row::default();
        row.add(&self.last);
        // Connections opened minus sessions ended through this interval:
        // 0 once every connection closed, as a fact.
        row.open_connections = Some(self.closed.open_connections());
        self.rows.push(row);
        self.end = self.end.max(k + 1);
        Some(Closed {
            index: k,
            row: &self.rows[k as usize],
            stats: &self.last,
            totals: &self.closed,
        })
    }

    /// The totals and every row (rows still open closed as they stand).
    pub fn finish(mut self) -> (Stats, Vec<Row>) {
        while self.close_next(None).is_some() {}
        (self.totals, self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(shard: usize, interval: u64, through: u64, offered: u64, last: bool) -> ShardDelta {
        let mut stats = Stats::default();
        stats.counters.offered = offered;
        ShardDelta {
            shard,
            interval,
            through,
            stats,
            last,
            tally: None,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_row_waits_for_every_running_shard() {
        let mut c = Collector::new(S, 2);
        c.receive(&delta(0, 0, 1, 5, false));
        // Shard 1 has not shipped interval 0: the row stays open, even
        // well past its end, until the bounded wait.
        assert!(c.close_next(Some(S + S / 10)).is_none());
        assert!(c.close_next(Some(S * 2 - S / 10)).is_none());
        c.receive(&delta(1, 0, 1, 7, false));
        let r = c.close_next(Some(S + S / 10)).expect("final");
        assert_eq!((r.index, r.row.counters.offered), (0, 12));
        assert_eq!(r.stats.counters.offered, 12);
        assert_eq!(r.totals.counters.offered, 12);
        assert!(c.close_next(Some(S + S / 10)).is_none());
    }

    #[test]
    fn a_silent_shard_holds_a_row_back_for_a_bounded_time() {
        let mut c = Collector::new(S, 2);
        c.receive(&delta(0, 0, 1, 5, false));
        assert!(c.close_next(Some(S * 2 - S / 100)).is_none());
        let r = c.close_next(Some(S * 2)).expect("closed after the wait");
        assert_eq!(r.row.counters.offered, 5);
        // Its late data still reaches the timeline and the totals.
        c.receive(&delta(1, 0, 1, 7, false));
        let (totals, rows) = c.finish();
        assert_eq!(totals.counters.offered, 12);
        assert_eq!(rows[0].counters.offered, 12);
    }

    #[test]
    fn data_of_later_intervals_is_not_in_an_earlier_snapshot() {
        let mut c = Collector::new(S, 2);
        c.receive(&delta(0, 0, 1, 5, false));
        c.receive(&delta(0, 1, 2, 3, false));
        c.receive(&delta(1, 0, 3, 4, false));
        let r = c.close_next(Some(S * 3)).unwrap();
        assert_eq!(r.row.counters.offered, 9);
        assert_eq!(r.totals.counters.offered, 9, "row 1's sends are not in it");
        let r = c.close_next(Some(S * 3)).unwrap();
        assert_eq!((r.index, r.totals.counters.offered), (1, 12));
        // Shard 0 has shipped through interval 1 only.
        assert!(c.close_next(Some(S * 3)).is_none());
    }

    #[test]
    fn after_the_run_every_row_up_to_the_last_closes_with_a_connection_count() {
        let mut c = Collector::new(S, 1);
        c.receive(&delta(0, 0, 1, 50, false));
        c.receive(&delta(0, 1, 1, 1, true));
        assert_eq!(c.live(), 0);
        let mut seen = Vec::new();
        while let Some(r) = c.close_next(None) {
            seen.push((r.index, r.row.counters.offered, r.row.open_connections));
        }
        assert_eq!(seen, [(0, 50, Some(0)), (1, 1, Some(0))]);
        assert!(c.close_next(None).is_none());
    }
}
