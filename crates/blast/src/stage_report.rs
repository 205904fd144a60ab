//! What each load stage (`--stages`) did: offered and achieved rates,
//! accept rate, latency, refusals, errors and late sends, counted by the
//! stage of each send's intended start. Read by the JSON report, the
//! summary table and stage-named thresholds (`stage2:p99<50ms`).

use hdrhistogram::Histogram;

use crate::stats::{new_histogram, Counters, Stage, StageTally, Stats};
use crate::RunResult;

/// One load stage's figures.
#[derive(Debug, Clone)]
pub struct StageFigures {
    /// The stage's start, seconds from the run's start.
    pub start_s: f64,
    /// Its length, seconds.
    pub duration_s: f64,
    /// The value at its start and end (messages/s or connections).
    pub from: f64,
    /// See `from`.
    pub to: f64,
    /// The counts.
    pub tally: StageTally,
    /// End-to-end latency of its messages that got a final reply, µs.
    pub latency: Histogram<u64>,
    /// Open loop (the values are rates).
    pub open_loop: bool,
}

impl StageFigures {
    /// Sends asked for per second: scheduled (open loop) or started
    /// (closed loop).
    pub fn offered_rate(&self) -> f64 {
        let n = if self.open_loop {
            self.tally.scheduled
        } else {
            self.tally.attempted
        };
        n as f64 / self.duration_s.max(1e-9)
    }

    /// Accepted messages per second.
    pub fn achieved_rate(&self) -> f64 {
        self.tally.accepted as f64 / self.duration_s.max(1e-9)
    }

    /// Accepted among the messages that ended.
    pub fn accept_rate(&self) -> Option<f64> {
        let t = &self.tally;
        let ended = t.accepted + t.deferred + t.rejected + t.failed;
        (ended > 0).then(|| t.accepted as f64 / ended as f64)
    }

    /// A latency quantile, µs (`None` when nothing ended).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q))
    }

    /// The stage as measurements a threshold can read: its counters and
    /// its latency (other stages' histograms are not kept per load stage).
    pub fn as_stats(&self) -> Stats {
        let t = &self.tally;
        let mut s = Stats {
            counters: Counters {
                offered: if self.open_loop {
                    t.scheduled
                } else {
                    t.attempted
                },
                attempted: t.attempted,
                accepted: t.accepted,
                deferred: t.deferred,
                rejected: t.rejected,
                failed: t.failed,
                late: t.late,
                not_started: t.not_started,
                scheduled: t.scheduled,
                ..Counters::default()
            },
            ..Stats::default()
        };
        s.hist[Stage::Latency.index()].clone_from(&self.latency);
        s
    }
}

/// Every load stage of a run (empty without `--stages`).
pub fn figures(r: &RunResult) -> Vec<StageFigures> {
    let Some(st) = &r.config.stages else {
        return Vec::new();
    };
    let mut start = 0.0;
    st.stages()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = s.duration.as_secs_f64();
            let f = StageFigures {
                start_s: start,
                duration_s: d,
                from: s.from,
                to: s.to,
                tally: r.totals.load.get(i).copied().unwrap_or_default(),
                latency: r
                    .totals
                    .load_latency
                    .get(i)
                    .cloned()
                    .unwrap_or_else(new_histogram),
                open_loop: r.config.open_loop(),
            };
            start += d;
            f
        })
        .collect()
}
