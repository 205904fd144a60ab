//! Which message a worker sends next: a due retry first, then a new message
//! from the budget (closed loop) or the schedule (open loop); with a
//! breaker, only when it lets traffic through.

use std::time::Instant;

use super::Ctx;
use crate::policy::runtime::{Final, Msg};
use crate::policy::Permit;
use crate::rng::Rng;
use crate::session::Conn;

/// A message picked by [`Ctx::try_job`].
pub(super) struct Pick {
    pub intended: Instant,
    pub seq: u64,
    pub msg: Option<Msg>,
    pub probe: bool,
    /// A first attempt (not a retry): part of the offered load.
    pub first: bool,
}

impl Ctx {
    /// A globally unique sequence number: shards interleave.
    fn next_seq(&self) -> u64 {
        let k = self.next_local.get();
        self.next_local.set(k + 1);
        k * self.load.shards as u64 + self.load.index as u64
    }

    /// The load stage an intended start falls in (0 without stages).
    pub(super) fn stage_of(&self, t: Instant) -> usize {
        match &self.env.cfg.stages {
            Some(st) => st.index_at(t.saturating_duration_since(self.run.start)),
            None => 0,
        }
    }

    /// Closed loop with concurrency stages: whether this shard's worker
    /// `slot` is one of the connections the current stage asks for.
    fn slot_active(&self, slot: u32) -> bool {
        match self.env.cfg.concurrency_stages() {
            Some(st) => st.slot_active(self.global_slot(slot), self.run.start.elapsed()),
            None => true,
        }
    }

    pub(super) fn global_slot(&self, slot: u32) -> u32 {
        self.load.index as u32 + slot * self.load.shards as u32
    }

    /// Whether a new (first-attempt) message could start for `slot` now.
    fn new_available(&self, slot: u32) -> bool {
        match &self.schedule {
            Some(s) => s.has_due(),
            None => self.remaining.get() > 0 && self.slot_active(slot),
        }
    }

    /// Takes a new message off the budget or the schedule: its intended
    /// start and sequence number.
    fn take_new(&self, slot: u32) -> Option<(Instant, u64)> {
        let intended = match &self.schedule {
            Some(s) => s.take()?,
            None => {
                let left = self.remaining.get();
                if left == 0 || !self.slot_active(slot) {
                    return None;
                }
                self.remaining.set(left - 1);
                Instant::now()
            }
        };
        Some((intended, self.next_seq()))
    }

    /// No new message will come: the budget is spent or the schedule ran
    /// out and its backlog is empty.
    fn no_new(&self) -> bool {
        match &self.schedule {
            Some(s) => s.finished(),
            None => self.remaining.get() == 0,
        }
    }

    /// The next message to send without waiting.
    pub(super) fn try_job(&self, slot: u32) -> Option<Pick> {
        if self.stop.get() || self.past_deadline() {
            return None;
        }
        let Some(res) = &self.run.res else {
            let (intended, seq) = self.take_new(slot)?;
            return Some(Pick {
                intended,
                seq,
                msg: None,
                probe: false,
                first: true,
            });
        };
        loop {
            let now = res.now();
            let retry = self.retries.borrow().next_due().is_some_and(|d| d <= now);
            if !retry && !self.new_available(slot) {
                return None;
            }
            let probe = match res.permit(now) {
                Permit::Allowed => false,
                Permit::Probe => true,
                Permit::Denied(until) => {
                    self.hold.set(Some(until));
                    return None;
                }
            };
            self.hold.set(None);
            if retry {
                let Some(m) = self.retries.borrow_mut().pop_due(now) else {
                    continue;
                };
                if res.budget.as_ref().is_some_and(|b| !b.try_retry()) {
                    if probe {
                        res.probe_abandoned();
                    }
                    self.tally.borrow_mut().finish(&m, Final::GaveUpBudget);
                    self.wake.notify_waiters();
                    continue;
                }
                self.tally.borrow_mut().retries += 1;
                return Some(Pick {
                    intended: Instant::now(),
                    seq: m.seq,
                    msg: Some(m),
                    probe,
                    first: false,
                });
            }
            let Some((intended, seq)) = self.take_new(slot) else {
                if probe {
                    res.probe_abandoned();
                }
                return None;
            };
            if let Some(b) = &res.budget {
                b.first_attempt();
            }
            self.tally.borrow_mut().offered += 1;
            let cfg = &self.env.cfg;
            // The same first draw as the session's envelope.
            let n = Rng::for_item(cfg.seed, seq)
                .range(u64::from(cfg.rcpts.min), u64::from(cfg.rcpts.max));
            return Some(Pick {
                intended,
                seq,
                msg: Some(Msg::new(seq, n as u32, now)),
                probe,
                first: true,
            });
        }
    }

    /// With a policy, whether everything is settled: no new message left,
    /// no retry waiting, nothing in flight that could defer.
    pub(super) fn settled(&self) -> bool {
        self.no_new() && self.retries.borrow().is_empty() && self.in_flight.get() == 0
    }

    /// The next message to send, waiting for the open-loop schedule, and
    /// with a policy for retries to come due and the breaker to let go.
    pub(super) async fn next_job(&self, slot: u32) -> Option<Pick> {
        let policy = self.run.res.is_some();
        loop {
            if let Some(j) = self.try_job(slot) {
                return Some(j);
            }
            if self.stop.get() || self.past_deadline() {
                return None;
            }
            let schedule_over = self.schedule.as_ref().is_none_or(|s| s.finished());
            if !policy && schedule_over {
                return None;
            }
            if policy && self.settled() {
                return None;
            }
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let schedule_moved = self
                .schedule
                .as_ref()
                .is_some_and(|s| s.has_due() || (!policy && s.finished()));
            if self.stop.get() || schedule_moved {
                continue;
            }
            // Wake at the earliest retry or the end of a breaker hold.
            let due = [self.retries.borrow().next_due(), self.hold.get()]
                .into_iter()
                .flatten()
                .min();
            match due {
                Some(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until((self.run.start + d).into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Whether no job will come for `slot` now (so QUIT may ride along).
    pub(super) fn exhausted(&self, slot: u32) -> bool {
        self.stop.get()
            || self.past_deadline()
            || match &self.schedule {
                Some(s) => s.finished(),
                None => self.remaining.get() == 0 || !self.slot_active(slot),
            }
    }

    /// Concurrency stages: closes the worker's connection while its slot
    /// is not wanted and waits until it is. `false`: the run is over for it.
    pub(super) async fn wait_for_slot(&self, slot: u32, conn: &mut Option<Conn>) -> bool {
        let Some(st) = self.env.cfg.concurrency_stages() else {
            return true;
        };
        let g = self.global_slot(slot);
        loop {
            if self.stop.get() || self.past_deadline() {
                return false;
            }
            let now = self.run.start.elapsed();
            if st.slot_active(g, now) {
                return true;
            }
            if let Some(c) = conn.take() {
                // An idle slot keeps no buffers.
                drop(c.quit(&self.env).await);
            }
            let Some(at) = st.slot_next_active(g, now) else {
                return false;
            };
            tokio::select! {
                _ = tokio::time::sleep_until((self.run.start + at).into()) => {}
                _ = self.wait_stopped() => {}
            }
        }
    }
}
