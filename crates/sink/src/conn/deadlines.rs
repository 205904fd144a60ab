//! The connection's deadlines behind one timer.

use std::time::Duration;

use tokio::time::Instant;

use crate::stats::CloseReason;

/// Idle, command and session deadlines behind one timer that is re-armed
/// lazily: reads only record the time, the timer fires at the old deadline
/// and is pushed back if there was activity meanwhile. No timer work per
/// read.
pub(super) struct Deadlines {
    /// Longest time without input (a fault's `idle_close` may change it).
    pub(super) idle: Duration,
    /// Longest time from a command line's first byte to its end.
    command: Duration,
    session_end: Option<Instant>,
    last_input: Instant,
    /// When the command line being received must be complete.
    command_end: Option<Instant>,
}

impl Deadlines {
    pub(super) fn new(
        idle: Duration,
        command: Duration,
        max_session: Duration,
        now: Instant,
    ) -> Deadlines {
        Deadlines {
            idle,
            command,
            session_end: (!max_session.is_zero()).then(|| now + max_session),
            last_input: now,
            command_end: None,
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Instant {
        let mut t = self.last_input + self.idle;
        for d in [self.session_end, self.command_end].into_iter().flatten() {
            t = t.min(d);
        }
        t
    }

    /// Input arrived now.
    pub(super) fn input(&mut self, now: Instant) {
        self.last_input = now;
    }

    /// After the session processed a batch: `mid_command` says whether it
    /// holds part of a command line. The clock for a line starts with its
    /// first byte and stops when no partial line is left, so a client that
    /// trickles a line (each byte resetting the idle timer) still has to
    /// finish it in time. Returns whether the timer must be re-armed.
    pub(super) fn command_progress(&mut self, mid_command: bool) -> bool {
        match (mid_command, self.command_end) {
            (true, None) => {
                self.command_end = Some(self.last_input + self.command);
                true
            }
            (false, Some(_)) => {
                self.command_end = None;
                false
            }
            _ => false,
        }
    }

    /// `Some(reason)` if a deadline has passed.
    pub(super) fn expired(&self, now: Instant) -> Option<CloseReason> {
        if self.session_end.is_some_and(|e| now >= e) {
            Some(CloseReason::SessionTimeout)
        } else if self.command_end.is_some_and(|e| now >= e) {
            Some(CloseReason::CommandTimeout)
        } else if now >= self.last_input + self.idle {
            Some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }
}
