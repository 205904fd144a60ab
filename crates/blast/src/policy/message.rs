//! A message as the retry machinery sees it between attempts, and how it
//! ended. A leaf module: the runtime and the tallies both build on it.

use std::time::Duration;

use serde::Serialize;

use super::fate::{all, Mask};

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Final {
    /// Every recipient delivered.
    Delivered,
    /// At least one recipient rejected (5xx), none given up.
    Rejected,
    /// Deferred and given up: attempts or age exhausted.
    GaveUp,
    /// Deferred and given up: the retry budget was spent.
    GaveUpBudget,
    /// The run ended while it waited for a retry.
    Pending,
}

/// A message between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// Its sequence number.
    pub seq: u64,
    /// Recipients in the message.
    pub n: u32,
    /// Attempts made so far.
    pub attempts: u32,
    /// Recipients still to deliver.
    pub pending: Mask,
    /// Recipients delivered so far.
    pub delivered: Mask,
    /// Recipients rejected so far.
    pub rejected: Mask,
    /// Time of the first attempt (since the run start).
    pub first_at: Duration,
    /// The delay before the latest retry.
    pub prev_delay: Duration,
    /// When the next attempt is due (since the run start).
    pub due: Duration,
}

impl Msg {
    /// A new message with `n` recipients, first tried at `now`.
    pub fn new(seq: u64, n: u32, now: Duration) -> Msg {
        Msg {
            seq,
            n,
            attempts: 0,
            pending: all(n),
            delivered: 0,
            rejected: 0,
            first_at: now,
            prev_delay: Duration::ZERO,
            due: now,
        }
    }

    /// The final state, once nothing is pending or the message gave up.
    pub fn final_state(&self, gave_up: Option<Final>) -> Final {
        match gave_up {
            Some(g) if self.pending != 0 => g,
            _ if self.rejected != 0 => Final::Rejected,
            _ => Final::Delivered,
        }
    }
}
