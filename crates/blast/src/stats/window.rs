//! Windows over cumulative totals: what happened between two snapshots
//! (a capacity step's measurement window, one interval for the abort
//! checks) and the connections open at a snapshot.

use super::{Counters, Stage, StageTally, Stats};

impl Stats {
    /// What happened between the snapshot `earlier` (of the same
    /// cumulative totals) and `self`: a capacity step's measurement window
    /// is its totals since the end of its warm-up.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let c = &self.counters;
        let e = &earlier.counters;
        let counters = Counters {
            offered: c.offered.saturating_sub(e.offered),
            attempted: c.attempted.saturating_sub(e.attempted),
            accepted: c.accepted.saturating_sub(e.accepted),
            deferred: c.deferred.saturating_sub(e.deferred),
            rejected: c.rejected.saturating_sub(e.rejected),
            failed: c.failed.saturating_sub(e.failed),
            late: c.late.saturating_sub(e.late),
            not_started: c.not_started.saturating_sub(e.not_started),
            scheduled: c.scheduled.saturating_sub(e.scheduled),
            conn_opened: c.conn_opened.saturating_sub(e.conn_opened),
            conn_failed: c.conn_failed.saturating_sub(e.conn_failed),
            bytes: c.bytes.saturating_sub(e.bytes),
            rcpt_attempted: c.rcpt_attempted.saturating_sub(e.rcpt_attempted),
            rcpt_accepted: c.rcpt_accepted.saturating_sub(e.rcpt_accepted),
            rcpt_delivered: c.rcpt_delivered.saturating_sub(e.rcpt_delivered),
            tls_handshakes: c.tls_handshakes.saturating_sub(e.tls_handshakes),
            tls_resumed: c.tls_resumed.saturating_sub(e.tls_resumed),
        };
        let replies = self
            .replies
            .iter()
            .filter_map(|(k, n)| {
                let before = earlier
                    .replies
                    .iter()
                    .find(|(kk, _)| kk == k)
                    .map_or(0, |(_, m)| *m);
                let d = n.saturating_sub(before);
                (d > 0).then_some((*k, d))
            })
            .collect();
        let mut out = Stats {
            counters,
            replies,
            ..Stats::default()
        };
        for f in &self.faults {
            let before = earlier
                .faults
                .iter()
                .find(|g| g.fault == f.fault)
                .map_or(0, |g| g.count);
            out.add_fault(f.fault, f.count.saturating_sub(before), &f.first_text);
        }
        for (i, t) in self.load.iter().enumerate() {
            let e = earlier.load.get(i).copied().unwrap_or_default();
            *out.load_stage(i) = StageTally {
                scheduled: t.scheduled.saturating_sub(e.scheduled),
                attempted: t.attempted.saturating_sub(e.attempted),
                accepted: t.accepted.saturating_sub(e.accepted),
                deferred: t.deferred.saturating_sub(e.deferred),
                rejected: t.rejected.saturating_sub(e.rejected),
                failed: t.failed.saturating_sub(e.failed),
                not_started: t.not_started.saturating_sub(e.not_started),
                late: t.late.saturating_sub(e.late),
                // A state, not a count: closed stays closed.
                closed: t.closed,
            };
        }
        for (i, now) in self.load_latency.iter().enumerate() {
            let mut h = now.clone();
            if let Some(before) = earlier.load_latency.get(i) {
                if h.subtract(before).is_err() {
                    h.clone_from(now);
                }
            }
            out.load_latency.push(h);
        }
        for ((o, now), before) in out.hist.iter_mut().zip(&self.hist).zip(&earlier.hist) {
            o.clone_from(now);
            // `earlier` is a snapshot of the same cumulative histogram, so
            // every count it holds is in `now`; on a mismatch keep `now`.
            if o.subtract(before).is_err() {
                o.clone_from(now);
            }
        }
        out
    }

    /// Connections open at the time of these (cumulative) totals: opened
    /// minus sessions that ended (each ended session records its length).
    pub fn open_connections(&self) -> u64 {
        self.counters
            .conn_opened
            .saturating_sub(self.histogram(Stage::Session).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Fault, Transport};

    #[test]
    fn since_is_the_difference_of_two_snapshots() {
        let mut a = Stats::default();
        a.time(Stage::Latency, 100);
        a.reply(Stage::Mail, 250, None);
        a.counters.accepted = 1;
        let snap = a.clone();
        a.time(Stage::Latency, 5_000);
        a.time(Stage::Latency, 6_000);
        a.reply(Stage::Mail, 250, None);
        a.reply(Stage::Mail, 451, None);
        a.fault(Fault::new(Transport::Reset, Stage::Mail), "x");
        a.counters.accepted = 3;
        let d = a.since(&snap);
        assert_eq!(d.counters.accepted, 2);
        assert_eq!(d.histogram(Stage::Latency).len(), 2);
        assert!(d.histogram(Stage::Latency).min() >= 4_990);
        assert_eq!(d.replies_of_class(2), 1);
        assert_eq!(d.replies_of_class(4), 1);
        assert_eq!(d.transport_errors(), 1);
    }
}
