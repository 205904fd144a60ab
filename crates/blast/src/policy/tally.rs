//! A shard's (and the run's) final states: messages and recipients by how
//! they ended, attempts per message, and the first undelivered messages.

use serde::Serialize;

use super::fate::{all, Mask};
use super::message::{Final, Msg};

/// A message that did not end delivered, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Undelivered {
    /// Sequence number (`X-Mailstorm-Seq`).
    pub seq: u64,
    /// How it ended.
    pub state: Final,
    /// Attempts made.
    pub attempts: u32,
    /// Recipients delivered / rejected / left.
    pub recipients_delivered: u32,
    /// Recipients rejected.
    pub recipients_rejected: u32,
    /// Recipients given up or pending.
    pub recipients_left: u32,
}

/// Undelivered messages listed in the report (counts go on past it).
pub const MAX_LISTED: usize = 1000;

/// Final states and attempts, per shard and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// First attempts (new messages offered).
    pub offered: u64,
    /// Retries started.
    pub retries: u64,
    /// Messages by final state.
    pub messages: MessageFinals,
    /// Recipients by final state.
    pub recipients: RecipientFinals,
    /// `attempts[k]`: finished messages that took `k` attempts (the last
    /// slot counts everything beyond).
    pub attempts: Vec<u64>,
    /// The first undelivered messages by sequence order of finishing.
    pub undelivered: Vec<Undelivered>,
}

const ATTEMPT_SLOTS: usize = 65;

/// Messages counted by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageFinals {
    /// Every recipient delivered.
    pub delivered: u64,
    /// At least one recipient rejected, none given up.
    pub rejected: u64,
    /// Gave up: attempts or age exhausted.
    pub gave_up: u64,
    /// Gave up: the retry budget was spent.
    pub gave_up_budget: u64,
    /// Still waiting for a retry (or in flight) when the run ended.
    pub pending: u64,
}

impl MessageFinals {
    /// The counter of `state`.
    pub fn of(&mut self, state: Final) -> &mut u64 {
        match state {
            Final::Delivered => &mut self.delivered,
            Final::Rejected => &mut self.rejected,
            Final::GaveUp => &mut self.gave_up,
            Final::GaveUpBudget => &mut self.gave_up_budget,
            Final::Pending => &mut self.pending,
        }
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &MessageFinals) {
        self.delivered += o.delivered;
        self.rejected += o.rejected;
        self.gave_up += o.gave_up;
        self.gave_up_budget += o.gave_up_budget;
        self.pending += o.pending;
    }

    /// Messages given up for any reason.
    pub fn gave_up_total(&self) -> u64 {
        self.gave_up + self.gave_up_budget
    }
}

/// Recipients counted by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecipientFinals {
    /// Delivered.
    pub delivered: u64,
    /// Rejected.
    pub rejected: u64,
    /// Given up (attempts, age or budget).
    pub gave_up: u64,
    /// Still pending when the run ended.
    pub pending: u64,
}

impl RecipientFinals {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &RecipientFinals) {
        self.delivered += o.delivered;
        self.rejected += o.rejected;
        self.gave_up += o.gave_up;
        self.pending += o.pending;
    }
}

impl Tally {
    /// Records a finished message.
    pub fn finish(&mut self, m: &Msg, state: Final) {
        *self.messages.of(state) += 1;
        let ones = |x: Mask| u64::from((x & all(m.n)).count_ones());
        self.recipients.delivered += ones(m.delivered);
        self.recipients.rejected += ones(m.rejected);
        let left = ones(m.pending & !m.delivered & !m.rejected);
        if state == Final::Pending {
            self.recipients.pending += left;
        } else {
            self.recipients.gave_up += left;
        }
        if state != Final::Pending {
            if self.attempts.len() < ATTEMPT_SLOTS {
                self.attempts.resize(ATTEMPT_SLOTS, 0);
            }
            self.attempts[(m.attempts as usize).min(ATTEMPT_SLOTS - 1)] += 1;
        }
        if state != Final::Delivered && self.undelivered.len() < MAX_LISTED {
            self.undelivered.push(Undelivered {
                seq: m.seq,
                state,
                attempts: m.attempts,
                recipients_delivered: ones(m.delivered) as u32,
                recipients_rejected: ones(m.rejected) as u32,
                recipients_left: left as u32,
            });
        }
    }

    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &Tally) {
        self.offered += o.offered;
        self.retries += o.retries;
        self.messages.add(&o.messages);
        self.recipients.add(&o.recipients);
        if self.attempts.len() < o.attempts.len() {
            self.attempts.resize(o.attempts.len(), 0);
        }
        for (a, b) in self.attempts.iter_mut().zip(&o.attempts) {
            *a += b;
        }
        let room = MAX_LISTED.saturating_sub(self.undelivered.len());
        self.undelivered
            .extend(o.undelivered.iter().take(room).copied());
    }

    /// Messages that finished (any state but pending).
    pub fn finished(&self) -> u64 {
        let m = &self.messages;
        m.delivered + m.rejected + m.gave_up + m.gave_up_budget
    }

    /// The attempts-per-message quantile `q` (0..=1) of finished messages.
    pub fn attempts_quantile(&self, q: f64) -> u32 {
        let total: u64 = self.attempts.iter().sum();
        if total == 0 {
            return 0;
        }
        // The smallest k with at least q of the messages at or below it.
        let need = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (k, n) in self.attempts.iter().enumerate() {
            seen += n;
            if seen >= need {
                return k as u32;
            }
        }
        (self.attempts.len() - 1) as u32
    }

    /// Mean attempts per finished message.
    pub fn attempts_mean(&self) -> f64 {
        let total: u64 = self.attempts.iter().sum();
        let sum: u64 = self
            .attempts
            .iter()
            .enumerate()
            .map(|(k, n)| k as u64 * n)
            .sum();
        if total == 0 {
            0.0
        } else {
            sum as f64 / total as f64
        }
    }
}
