//! Deciding a check before the end: `--abort-on-fail` stops a run once a
//! check can no longer pass, and a check that can never hold is refused up
//! front. Both ask the same question: can any value the metric may still
//! take satisfy the check? Only a certain "no" decides; a run that could
//! still pass is never stopped.
//!
//! What each check may still become, from the figures so far:
//! - a count only grows: `deferred`, `5xx`, `errors`, … (and `max` latency)
//!   never go below their current value; a message count (`attempted`,
//!   `accepted`, `deferred`, `rejected`, `failed`, `late`, `not_started`)
//!   grows at most by the messages not yet ended, when the run's total is
//!   known;
//! - `accept_rate`, `defer_rate`, `reject_rate`, `error_rate` only once the
//!   total is known: the remaining messages, all ending one way or the
//!   other, bound the final share; `late_rate` can only fall to `late` over
//!   that total;
//! - a load stage (`stageN:`) is final once every shard has closed it (its
//!   time is over, the next send to start is past it, none of its messages
//!   is in flight): then every stage check, percentiles included, is
//!   decided on its figures; before that, its counts and `max` as above.
//!
//! Never decided early: whole-run percentiles and means, `messages_per_s`,
//! `bytes_per_s`, the ledger's figures (more messages can move them either
//! way), and ratios when the total is unknown.

use mailstorm_config::expr::Op;

use super::{value, Check, Metric};
use crate::config::Config;
use crate::stats::{new_histogram, Stats};

/// What is known ahead about a run, to decide checks while it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outlook {
    /// At most this many messages will be attempted: `-n`, or an open-loop
    /// schedule's sends (rate × duration, the stages' integral). `None`
    /// when unknown (closed loop without `-n`) and with a policy (its
    /// retries are attempts beyond the schedule).
    pub total: Option<u64>,
    /// The run's shards (threads): a load stage is final once each closed it.
    pub shards: u64,
    /// The load stages' lengths, seconds (for `stageN:messages_per_s`).
    pub stage_secs: Vec<f64>,
    /// Open loop (a stage's offered sends are its scheduled ones).
    pub open_loop: bool,
}

impl Outlook {
    /// The outlook of a run of `cfg` (the effective configuration, threads
    /// filled in).
    pub fn of(cfg: &Config) -> Outlook {
        let scheduled = match (&cfg.stages, cfg.rate) {
            _ if !cfg.open_loop() => None,
            (Some(st), _) => Some(st.total_area()),
            (None, Some(r)) => cfg.duration.map(|d| r * d.as_secs_f64()),
            (None, None) => None,
        };
        // Send j is due at j/rate (or where the integral reaches j): one
        // more than the integral at most; one more again for rounding.
        let scheduled = scheduled
            .filter(|n| n.is_finite() && *n >= 0.0 && *n < 1e18)
            .map(|n| n.ceil() as u64 + 1);
        let total = match cfg.policy {
            Some(_) => None,
            None => [cfg.messages, scheduled].into_iter().flatten().min(),
        };
        Outlook {
            total,
            shards: cfg.threads as u64,
            stage_secs: cfg.stages.as_ref().map_or(Vec::new(), |st| {
                st.stages()
                    .iter()
                    .map(|s| s.duration.as_secs_f64())
                    .collect()
            }),
            open_loop: cfg.open_loop(),
        }
    }

    /// Load stage `i` of `totals` as measurements a check reads.
    fn stage(&self, totals: &Stats, i: usize) -> (Stats, f64) {
        let f = crate::stage_report::StageFigures {
            start_s: 0.0,
            duration_s: self.stage_secs.get(i).copied().unwrap_or(0.0),
            from: 0.0,
            to: 0.0,
            tally: totals.load.get(i).copied().unwrap_or_default(),
            latency: totals
                .load_latency
                .get(i)
                .cloned()
                .unwrap_or_else(new_histogram),
            open_loop: self.open_loop,
        };
        (f.as_stats(), f.duration_s)
    }
}

impl Check {
    /// Whether the check has failed for good on the cumulative `totals` of
    /// a run still going: no value its metric can still take satisfies it
    /// (see the module's notes). `--abort-on-fail` stops a run on this.
    pub fn cannot_pass(&self, totals: &Stats, run: &Outlook) -> bool {
        let reach = match self.load_stage {
            None => reach(&self.metric, totals, run.total),
            Some(i) => {
                let (t, secs) = run.stage(totals, i);
                let closed = totals.load.get(i).map_or(0, |s| s.closed);
                if run.shards > 0 && closed >= run.shards {
                    let v = value(&self.metric, &t, secs);
                    Some((v, v))
                } else {
                    // Still open: its counts and max only grow.
                    reach(&self.metric, &t, None)
                }
            }
        };
        reach.is_some_and(|(lo, hi)| !possible(self.op, self.limit, lo, hi))
    }
}

/// The values a whole-run metric may still end at, `lo..=hi` (a superset),
/// given at most `total` messages; `None`: anything, as far as we know.
fn reach(m: &Metric, t: &Stats, total: Option<u64>) -> Option<(f64, f64)> {
    let c = &t.counters;
    let ended = c.accepted + c.deferred + c.rejected + c.failed;
    // Messages that may still end (in flight or not started yet).
    let left = total.map_or(f64::INFINITY, |n| n.saturating_sub(ended) as f64);
    let v = value(m, t, 1.0);
    match m {
        Metric::Latency(_, Some(q)) if *q >= 1.0 => Some((v, f64::INFINITY)),
        Metric::Latency(..) => None,
        Metric::Named(n) => match n.as_str() {
            "attempted" | "accepted" | "deferred" | "rejected" | "failed" | "late"
            | "not_started" => Some((v, v + left)),
            "errors" | "4xx" | "5xx" | "connections_failed" => Some((v, f64::INFINITY)),
            "accept_rate" | "defer_rate" | "reject_rate" | "error_rate" => {
                if ended == 0 || left.is_infinite() {
                    return None;
                }
                // The part counted, out of `ended`; each message left adds
                // to it or to the rest.
                let part = (v * ended as f64).round();
                let all = ended as f64 + left;
                Some((part / all, (part + left) / all))
            }
            "late_rate" => {
                let total = total? as f64;
                (c.scheduled > 0).then(|| (c.late as f64 / total.max(c.scheduled as f64), 1.0))
            }
            _ => None,
        },
    }
}

/// Whether some value in `lo..=hi` satisfies `op limit` (`hi` may be
/// infinite; NaN: undecided, so possible).
pub(super) fn possible(op: Op, limit: f64, lo: f64, hi: f64) -> bool {
    if lo.is_nan() || hi.is_nan() {
        return true;
    }
    let up = |o: Op| hi == f64::INFINITY || o.holds(hi, limit);
    match op {
        Op::Lt | Op::Le => op.holds(lo, limit),
        Op::Gt | Op::Ge => up(op),
        Op::Eq => Op::Le.holds(lo, limit) && up(Op::Ge),
        Op::Ne => hi == f64::INFINITY || !(Op::Eq.holds(lo, limit) && Op::Eq.holds(hi, limit)),
    }
}

/// Why `name op limit` can never hold whatever is measured (`None` when it
/// can): ratios lie in 0..=1, everything else is 0 or more.
pub(super) fn never_holds(m: &Metric, name: &str, op: Op, limit: f64) -> Option<String> {
    let (hi, what) = match m {
        Metric::Named(n) if n.ends_with("_rate") => (1.0, "a share between 0 and 1"),
        Metric::Named(n) if n.ends_with("_per_s") => (f64::INFINITY, "a rate, never below 0"),
        Metric::Latency(..) => (f64::INFINITY, "a latency, never below 0"),
        Metric::Named(n) if n.starts_with("e2e_") => (f64::INFINITY, "a latency, never below 0"),
        Metric::Named(_) => (f64::INFINITY, "a count, never below 0"),
    };
    (!possible(op, limit, 0.0, hi)).then(|| format!("can never hold: {name} is {what}"))
}

#[cfg(test)]
mod tests;
