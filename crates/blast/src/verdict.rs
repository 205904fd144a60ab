//! Whether a finished run may pass at all, apart from `--threshold`: a run
//! in which nothing was accepted, the target stopped answering, or the
//! blaster could not offer the load asked for must not exit 0.
//!
//! The first two judge the target, so `--threshold` replaces them (a test
//! of a rejecting server writes `--threshold rejected==20`); the third
//! judges the run itself and always applies.

use std::fmt;

use crate::stats::Transport;
use crate::{Row, RunResult};

/// Share of the scheduled open-loop sends that may go unstarted before the
/// run counts as not having offered the load asked for.
pub const MAX_NOT_OFFERED: f64 = 0.01;

/// The target counts as having stopped answering when at least this many
/// trailing intervals, spanning at least [`MIN_SILENT_SECS`], had transport
/// errors and neither an acceptance nor any reply, and the blaster still
/// started or scheduled messages in them.
pub const MIN_SILENT_INTERVALS: usize = 2;
/// See [`MIN_SILENT_INTERVALS`].
pub const MIN_SILENT_SECS: f64 = 1.0;

/// A reason a run fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Messages were attempted and none was accepted.
    NothingAccepted {
        /// Messages started.
        attempted: u64,
        /// How they ended, e.g. `deferred 2, failed 3 (tls_failure 3)`.
        how: String,
    },
    /// The last intervals saw only transport errors after earlier
    /// acceptances.
    StoppedAnswering {
        /// Seconds since the start when the silence began.
        since_s: f64,
        /// Transport errors in the silent stretch, e.g. `refused 480`.
        errors: u64,
    },
    /// Open loop: scheduled sends never started (every connection busy).
    NotOffered {
        /// Sends never started.
        not_started: u64,
        /// Sends scheduled.
        scheduled: u64,
        /// The connection cap (`-c`).
        connections: u32,
    },
}

impl Problem {
    /// Whether `--threshold` takes over this judgement (it judges the
    /// target, not the run).
    pub fn judges_target(&self) -> bool {
        !matches!(self, Problem::NotOffered { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NothingAccepted { attempted, how } => {
                write!(f, "no message was accepted (0 of {attempted}: {how})")
            }
            Problem::StoppedAnswering { since_s, errors } => write!(
                f,
                "the target stopped answering at about {since_s:.1} s: from then on only \
                 transport errors ({errors}), no reply"
            ),
            Problem::NotOffered {
                not_started,
                scheduled,
                connections,
            } => write!(
                f,
                "{not_started} of {scheduled} scheduled sends ({:.1}%) never started because \
                 all {connections} connections were busy: raise -c",
                *not_started as f64 * 100.0 / *scheduled as f64
            ),
        }
    }
}

/// Everything wrong with the run (empty: it may pass).
pub fn problems(r: &RunResult) -> Vec<Problem> {
    let c = &r.totals.counters;
    let mut out = Vec::new();
    if c.attempted > 0 && c.accepted == 0 {
        out.push(Problem::NothingAccepted {
            attempted: c.attempted,
            how: how_they_ended(r),
        });
    } else if let Some(p) = stopped_answering(r) {
        out.push(p);
    }
    if r.config.open_loop()
        && c.scheduled > 0
        && c.not_started as f64 > c.scheduled as f64 * MAX_NOT_OFFERED
    {
        out.push(Problem::NotOffered {
            not_started: c.not_started,
            scheduled: c.scheduled,
            connections: r.config.concurrency,
        });
    }
    out
}

fn how_they_ended(r: &RunResult) -> String {
    let c = &r.totals.counters;
    let mut parts = Vec::new();
    for (n, name) in [(c.deferred, "deferred"), (c.rejected, "rejected")] {
        if n > 0 {
            parts.push(format!("{name} {n}"));
        }
    }
    if c.failed > 0 {
        let kinds: Vec<String> = Transport::ALL
            .iter()
            .filter(|k| r.totals.transport[**k as usize] > 0)
            .map(|k| format!("{} {}", k.name(), r.totals.transport[*k as usize]))
            .collect();
        parts.push(format!("failed {} ({})", c.failed, kinds.join(", ")));
    }
    parts.join(", ")
}

/// Whether a row had any traffic at all.
fn active(row: &Row) -> bool {
    let c = &row.counters;
    c.attempted
        + c.accepted
        + c.failed
        + c.conn_failed
        + row.errors
        + row.replies_4xx
        + row.replies_5xx
        > 0
}

/// Transport errors and nothing else: no acceptance, no reply of any kind.
/// Messages the blaster itself cut off at the end do not count.
fn silent(row: &Row) -> bool {
    row.counters.accepted == 0
        && row.replies_4xx == 0
        && row.replies_5xx == 0
        && row.errors > row.aborted
}

/// Nothing but messages the blaster itself cut off at the end: says
/// nothing about the target either way.
fn only_cut_off(row: &Row) -> bool {
    row.aborted > 0
        && row.errors == row.aborted
        && row.counters.accepted == 0
        && row.replies_4xx == 0
        && row.replies_5xx == 0
}

fn stopped_answering(r: &RunResult) -> Option<Problem> {
    if r.totals.counters.accepted == 0 {
        return None;
    }
    let mut first_silent = None;
    let mut errors = 0;
    let mut count = 0;
    // Errors alone may be the run's last few messages timing out after
    // everything else finished: the target went silent only if what was
    // asked of it during the silence went unanswered too.
    let mut still_asking = false;
    for (i, row) in r.rows.iter().enumerate().rev() {
        // An interval holding only the grace period's cut-offs (the last
        // one) must neither hide a silence before it nor start one.
        if !active(row) || only_cut_off(row) {
            continue;
        }
        if !silent(row) {
            break;
        }
        first_silent = Some(i);
        errors += row.errors - row.aborted;
        count += 1;
        still_asking |= row.counters.attempted + row.counters.offered > 0;
    }
    let first = first_silent.filter(|_| still_asking)?;
    let step = r.config.interval.as_secs_f64();
    let since_s = first as f64 * step;
    let span = r.rows.len() as f64 * step - since_s;
    (count >= MIN_SILENT_INTERVALS && span >= MIN_SILENT_SECS)
        .then_some(Problem::StoppedAnswering { since_s, errors })
}

/// Exit codes; `--help` and the README list the same table.
pub mod exit {
    /// The run completed and passed.
    pub const OK: u8 = 0;
    /// A --threshold check or scenario expectation failed, or the run
    /// cannot pass (nothing accepted, target stopped answering, load not
    /// offered).
    pub const FAILED: u8 = 1;
    /// Usage or configuration error, an output path that cannot be written.
    pub const USAGE: u8 = 2;
    /// The target cannot be reached.
    pub const UNREACHABLE: u8 = 3;
    /// A bug in the blaster (a panic): what was measured is still written.
    pub const INTERNAL: u8 = 4;
    /// Stopped by SIGINT or SIGTERM: outputs written, `interrupted: true`.
    pub const INTERRUPTED: u8 = 5;
    /// A second SIGINT/SIGTERM: exit at once, nothing written.
    pub const ABORTED: i32 = 130;
}

/// The exit code, the report's status and every reason the run did not
/// pass. A bug outranks an interruption, which outranks the verdicts.
pub fn judge(
    result: &RunResult,
    checked: Option<&[crate::threshold::Outcome]>,
) -> (u8, &'static str, Vec<String>) {
    if let Some(e) = &result.internal_error {
        return (
            exit::INTERNAL,
            "internal_error",
            vec![format!("internal error: {e}")],
        );
    }
    if result.interrupted {
        return (
            exit::INTERRUPTED,
            "interrupted",
            vec!["interrupted by a signal: partial results".into()],
        );
    }
    let c = &result.totals.counters;
    if c.conn_opened == 0 && c.attempted > 0 {
        return (
            exit::UNREACHABLE,
            "unreachable",
            vec![format!(
                "target unreachable: no connection to {} could be opened",
                result.target
            )],
        );
    }
    let mut reasons: Vec<String> = checked
        .iter()
        .flat_map(|o| o.iter())
        .filter(|o| !o.passed)
        .map(|o| match &o.broke_in {
            Some((i, m)) => format!(
                "threshold failed: {} (measured {}; first broken in stage {i}, measured {m})",
                o.text,
                o.measured()
            ),
            None => format!("threshold failed: {} (measured {})", o.text, o.measured()),
        })
        .collect();
    reasons.extend(
        problems(result)
            .into_iter()
            // With --threshold, the user's checks judge the target.
            .filter(|p| checked.is_none() || !p.judges_target())
            .map(|p| format!("run failed: {p}")),
    );
    if reasons.is_empty() {
        (exit::OK, "ok", reasons)
    } else {
        (exit::FAILED, "failed", reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::stats::Stats;
    use std::time::Duration;

    fn result(rows: Vec<Row>) -> RunResult {
        let mut totals = Stats::default();
        for row in &rows {
            totals.counters.add(&row.counters);
        }
        RunResult {
            totals,
            rows,
            elapsed: Duration::from_secs(4),
            config: Config::default(),
            target: "t".into(),
            interrupted: false,
            resilience: None,
            internal_error: None,
            ledger: None,
            routing: None,
            started_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    fn row(accepted: u64, errors: u64, aborted: u64) -> Row {
        let mut r = Row::default();
        r.counters.attempted = accepted + errors;
        r.counters.accepted = accepted;
        r.counters.failed = errors;
        r.errors = errors;
        r.aborted = aborted;
        r
    }

    #[test]
    fn a_target_that_went_silent_fails_the_run() {
        let dead = result(vec![
            row(500, 0, 0),
            row(250, 30, 0),
            row(0, 40, 0),
            row(0, 40, 0),
        ]);
        let p = problems(&dead);
        assert!(
            matches!(p[..], [Problem::StoppedAnswering { errors: 80, .. }]),
            "{p:?}"
        );
        assert!(p[0]
            .to_string()
            .contains("stopped answering at about 2.0 s"));
    }

    #[test]
    fn a_single_bad_or_aborted_tail_is_not_silence() {
        // One bad last interval is too short to call the target dead.
        assert!(problems(&result(vec![row(500, 0, 0), row(500, 0, 0), row(0, 3, 0)])).is_empty());
        // Messages the blaster cut off at the end are its own doing.
        let cut = result(vec![
            row(500, 0, 0),
            row(0, 5, 5),
            row(0, 5, 5),
            Row::default(),
        ]);
        assert!(problems(&cut).is_empty());
    }

    #[test]
    fn a_cut_off_after_the_silence_does_not_hide_it() {
        // The target went away; one message was still in flight when the
        // grace period ended (seen in CI: the run exited 0).
        let dead = result(vec![
            row(500, 0, 0),
            row(0, 40, 0),
            row(0, 40, 0),
            Row::default(),
            row(0, 1, 1),
        ]);
        let p = problems(&dead);
        assert!(
            matches!(p[..], [Problem::StoppedAnswering { errors: 80, .. }]),
            "{p:?}"
        );
    }

    #[test]
    fn stragglers_timing_out_after_the_last_start_are_not_silence() {
        // Seen against a server that swallowed a few replies: the target
        // answered to the end, then the last three messages (started
        // before) timed out in two intervals in which nothing new began.
        let straggler = |errors| {
            let mut r = row(0, errors, 0);
            r.counters.attempted = 0;
            r
        };
        let tail = result(vec![
            row(500, 0, 0),
            row(74, 13, 0),
            straggler(2),
            straggler(1),
        ]);
        assert!(problems(&tail).is_empty(), "{:?}", problems(&tail));
        // The same tail with a message started in it is a target that
        // left new work unanswered.
        let mut asked = straggler(1);
        asked.counters.attempted = 1;
        let dead = result(vec![row(500, 0, 0), row(74, 13, 0), straggler(2), asked]);
        assert!(
            matches!(
                problems(&dead)[..],
                [Problem::StoppedAnswering { errors: 3, .. }]
            ),
            "{:?}",
            problems(&dead)
        );
    }

    #[test]
    fn nothing_accepted_names_how_they_ended() {
        let mut r = result(vec![row(0, 5, 0)]);
        r.totals.transport[Transport::TlsFailure as usize] = 5;
        let p = problems(&r);
        assert_eq!(
            p[0].to_string(),
            "no message was accepted (0 of 5: failed 5 (tls_failure 5))"
        );
        assert!(p[0].judges_target());
    }

    #[test]
    fn unoffered_open_loop_load_says_raise_c() {
        let mut r = result(vec![row(1400, 0, 0)]);
        r.config.rate = Some(2000.0);
        r.config.concurrency = 10;
        r.totals.counters.scheduled = 6000;
        r.totals.counters.not_started = 4600;
        let p = problems(&r);
        assert_eq!(p.len(), 1);
        assert!(p[0].to_string().contains("raise -c"), "{}", p[0]);
        assert!(!p[0].judges_target());
        r.totals.counters.not_started = 60;
        assert!(problems(&r).is_empty(), "1% is tolerated");
    }
}
