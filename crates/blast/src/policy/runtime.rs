//! The policy at run time: what one attempt did to a message's recipients
//! ([`Fate`]), the decision that follows ([`settle`]), a shard's retry queue
//! and its tallies, and the state shared by every shard of a run
//! ([`Resilience`]: breaker, concurrency feedback, retry budget).
//!
//! Determinism: a message keeps its sequence number (hence sender,
//! recipients and Message-ID) across retries, and [`settle`] depends only
//! on the attempt's result, the attempt number and `(seed, seq, attempt)`
//! draws, so with attempt-keyed plan rules the outcome counts do not depend
//! on timing. The breaker, budget and concurrency feedback do (they react
//! to the order of events), and say so in the report.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use super::fate::{all, Fate, Mask, TxnRecord, MAX_RCPTS};
pub use super::message::{Final, Msg};
pub use super::tally::{MessageFinals, RecipientFinals, Tally, Undelivered, MAX_LISTED};
use super::{Breaker, Budget, Next, Permit, Policy};

/// After an attempt: the message is done, or waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Finished in this state.
    Done(Final),
    /// Try again at `msg.due`.
    Retry,
}

/// Applies attempt `fate` (made at `now`) to `msg` and decides what comes
/// next. Pure: the delay's jitter is drawn from `(seed, seq, attempt)`.
pub fn settle(policy: &Policy, seed: u64, msg: &mut Msg, fate: &Fate, now: Duration) -> Settled {
    msg.attempts += 1;
    msg.delivered |= fate.delivered & msg.pending;
    msg.rejected |= fate.rejected & msg.pending;
    // Whatever was offered and not explicitly deferred, delivered or
    // rejected (e.g. a recipient the server never answered) is deferred.
    msg.pending &= !(fate.delivered | fate.rejected);
    if msg.pending == 0 {
        return Settled::Done(msg.final_state(None));
    }
    let age = now.saturating_sub(msg.first_at);
    match policy.after_failure(seed, msg.seq, msg.attempts, age, msg.prev_delay) {
        Next::RetryAfter(d) => {
            msg.prev_delay = d;
            msg.due = now + d;
            Settled::Retry
        }
        Next::GiveUpAttempts | Next::GiveUpAge => {
            Settled::Done(msg.final_state(Some(Final::GaveUp)))
        }
    }
}

/// A shard's messages waiting for a retry, earliest due first.
#[derive(Debug, Default)]
pub struct RetryQueue {
    heap: BinaryHeap<Reverse<(Duration, u64)>>,
    msgs: std::collections::HashMap<u64, Msg>,
}

impl RetryQueue {
    /// Queues `m` for `m.due`.
    pub fn push(&mut self, m: Msg) {
        self.heap.push(Reverse((m.due, m.seq)));
        self.msgs.insert(m.seq, m);
    }

    /// The earliest due time, if any message waits.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse((d, _))| *d)
    }

    /// Takes the earliest message if it is due at `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<Msg> {
        let Reverse((due, seq)) = *self.heap.peek()?;
        if due > now {
            return None;
        }
        self.heap.pop();
        self.msgs.remove(&seq)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Empties the queue (at the end of a run: these are pending).
    pub fn drain(&mut self) -> Vec<Msg> {
        self.heap.clear();
        let mut v: Vec<Msg> = self.msgs.drain().map(|(_, m)| m).collect();
        v.sort_by_key(|m| m.seq);
        v
    }
}

/// The run-wide policy state, shared by every shard.
#[derive(Debug)]
pub struct Resilience {
    /// The resolved policy.
    pub policy: Policy,
    /// The run's seed (jitter draws).
    pub seed: u64,
    /// The run's start: policy times count from it.
    pub start: Instant,
    /// The target's breaker.
    pub breaker: Option<Mutex<Breaker>>,
    /// Concurrency feedback.
    pub feedback: Option<super::feedback::SharedFeedback>,
    /// The retry budget.
    pub budget: Option<Budget>,
}

impl Resilience {
    /// Fresh state for a run starting at `start`.
    pub fn new(policy: Policy, seed: u64, start: Instant) -> Resilience {
        Resilience {
            breaker: policy.breaker.map(|b| Mutex::new(Breaker::new(b))),
            feedback: policy.concurrency.map(super::feedback::SharedFeedback::new),
            budget: policy.retry_budget.map(Budget::new),
            policy,
            seed,
            start,
        }
    }

    /// Time since the run start.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Asks the breaker (if any) whether to send now.
    pub fn permit(&self, now: Duration) -> Permit {
        match &self.breaker {
            Some(b) => b.lock().unwrap_or_else(|e| e.into_inner()).allow(now),
            None => Permit::Allowed,
        }
    }

    /// Feeds an attempt's result to the breaker and the feedback.
    /// A 5xx says the server works: it counts as a success here.
    pub fn observe(&self, now: Duration, fate: &Fate, probe: bool) {
        if let Some(b) = &self.breaker {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(now, !fate.message_failed, probe);
        }
        if let Some(f) = &self.feedback {
            if fate.connection {
                f.failure(now);
            } else {
                f.success(now);
            }
        }
    }

    /// A probe ended without an outcome.
    pub fn probe_abandoned(&self) {
        if let Some(b) = &self.breaker {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .probe_abandoned();
        }
    }

    /// The end-of-run summary with the shards' merged `tally`.
    pub fn summary(&self, tally: Tally) -> Summary {
        let (transitions, breaker) = match &self.breaker {
            Some(b) => {
                let b = b.lock().unwrap_or_else(|e| e.into_inner());
                (b.transitions().to_vec(), Some(b.counts()))
            }
            None => (Vec::new(), None),
        };
        let (concurrency, suspensions) = match &self.feedback {
            Some(f) => {
                let (t, s) = f.snapshot();
                (t, Some(s))
            }
            None => (Vec::new(), None),
        };
        Summary {
            policy: self.policy.clone(),
            tally,
            transitions,
            breaker,
            concurrency,
            suspensions,
            budget: self.budget.as_ref().map(Budget::counts),
        }
    }
}

/// What the policy did over a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The resolved policy.
    pub policy: Policy,
    /// Final states and attempts.
    pub tally: Tally,
    /// Breaker transitions.
    pub transitions: Vec<super::breaker::Transition>,
    /// Breaker state changes, when there is a breaker.
    pub breaker: Option<super::breaker::BreakerCounts>,
    /// The concurrency timeline (changes only).
    pub concurrency: Vec<super::feedback::Point>,
    /// Suspensions (dead destination), when feedback is on.
    pub suspensions: Option<u64>,
    /// Retry budget use, when there is a budget.
    pub budget: Option<super::budget::BudgetCounts>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySpec;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn policy(yaml: &str) -> Policy {
        serde_yaml::from_str::<PolicySpec>(yaml)
            .unwrap()
            .resolve(None)
            .unwrap()
    }

    #[test]
    fn recipient_scope_retries_only_deferred() {
        let p = policy("max_attempts: 3\nbackoff: {kind: fixed, delay: 10s}\n");
        let mut m = Msg::new(5, 3, s(0));
        // rcpt 0 delivered, 1 deferred (RCPT 450), 2 rejected (550).
        let f = Fate {
            delivered: 0b001,
            deferred: 0b010,
            rejected: 0b100,
            ..Fate::default()
        };
        assert_eq!(settle(&p, 1, &mut m, &f, s(1)), Settled::Retry);
        assert_eq!((m.pending, m.due, m.attempts), (0b010, s(11), 1));
        let ok = Fate {
            delivered: 0b010,
            ..Fate::default()
        };
        assert_eq!(
            settle(&p, 1, &mut m, &ok, s(11)),
            Settled::Done(Final::Rejected)
        );
        let mut t = Tally::default();
        t.finish(&m, Final::Rejected);
        assert_eq!(
            t.recipients,
            RecipientFinals {
                delivered: 2,
                rejected: 1,
                ..RecipientFinals::default()
            }
        );
        assert_eq!(t.attempts_quantile(1.0), 2);
    }

    #[test]
    fn gives_up_after_max_attempts_and_never_retries_5xx() {
        let p = policy("max_attempts: 2\nbackoff: {kind: fixed, delay: 1s}\n");
        let mut m = Msg::new(1, 1, s(0));
        let conn = Fate::connection_failure(all(1));
        assert_eq!(settle(&p, 1, &mut m, &conn, s(0)), Settled::Retry);
        assert_eq!(
            settle(&p, 1, &mut m, &conn, s(1)),
            Settled::Done(Final::GaveUp)
        );
        let mut r = Msg::new(2, 1, s(0));
        let rej = Fate {
            rejected: 1,
            ..Fate::default()
        };
        assert_eq!(
            settle(&p, 1, &mut r, &rej, s(0)),
            Settled::Done(Final::Rejected)
        );
        assert_eq!(r.attempts, 1);
    }

    #[test]
    fn same_inputs_same_schedule() {
        let p = policy("max_attempts: 6\njitter: full\n");
        let run = || {
            let mut m = Msg::new(77, 1, s(0));
            let mut dues = Vec::new();
            let mut now = s(0);
            while settle(&p, 9, &mut m, &Fate::connection_failure(1), now) == Settled::Retry {
                dues.push(m.due);
                now = m.due + Duration::from_millis(3);
            }
            dues
        };
        assert_eq!(run(), run());
        assert_eq!(run().len(), 5);
    }

    #[test]
    fn queue_and_tally() {
        let mut q = RetryQueue::default();
        for (seq, due) in [(3u64, 30u64), (1, 10), (2, 10)] {
            let mut m = Msg::new(seq, 1, s(0));
            m.due = s(due);
            q.push(m);
        }
        assert_eq!(q.next_due(), Some(s(10)));
        assert!(q.pop_due(s(9)).is_none());
        assert_eq!(q.pop_due(s(10)).map(|m| m.seq), Some(1));
        assert_eq!(q.pop_due(s(10)).map(|m| m.seq), Some(2));
        assert_eq!(q.len(), 1);
        assert_eq!(q.drain().len(), 1);
        assert!(q.is_empty());

        let mut a = Tally::default();
        let mut m = Msg::new(1, 1, s(0));
        m.attempts = 1;
        m.delivered = 1;
        m.pending = 0;
        for _ in 0..98 {
            a.finish(&m, Final::Delivered);
        }
        m.attempts = 3;
        a.finish(&m, Final::Delivered);
        let mut b = Tally::default();
        let mut g = Msg::new(2, 1, s(0));
        g.attempts = 4;
        b.finish(&g, Final::GaveUp);
        a.merge(&b);
        assert_eq!(
            a.messages,
            MessageFinals {
                delivered: 99,
                gave_up: 1,
                ..MessageFinals::default()
            }
        );
        assert_eq!(a.attempts_quantile(0.5), 1);
        assert_eq!(a.attempts_quantile(0.99), 3);
        assert_eq!(a.attempts_quantile(1.0), 4);
        assert!((a.attempts_mean() - 1.05).abs() < 1e-9);
        assert_eq!(a.undelivered.len(), 1);
        assert_eq!(a.undelivered[0].state, Final::GaveUp);
        assert_eq!(a.finished(), 100);
    }
}
