//! Fault plans: deterministic, stateful fault injection, and the sink as
//! referee of client behaviour.
//!
//! A plan (YAML, or JSON for `PUT /plan`) has a `seed` and ordered `rules`;
//! at each stage the first rule that matches and is selected decides, and no
//! match means normal behaviour. See `configs/*.yaml` for commented
//! examples and [`model`] for every key.
//!
//! # Determinism
//!
//! For rules keyed by `rcpt`, `sender`, `message_id`, `triplet` or `global`,
//! a decision is a pure function of (seed, rule index, key, attempt number)
//! through the hash documented in [`select`]; attempt numbers are counted
//! per (rule, key) in one map shared by all shards, so `--threads 1` and
//! `--threads 2` give the same decisions for the same traffic. `session`
//! and `connection` keys draw from the attempt number within the
//! connection only (not the connection id). Rules using `window`,
//! `rate_limit`, `max_connections` or `greylist` depend on time or load by
//! nature: the engine takes the time as an argument
//! ([`Engine::decide_at`]), so they are testable, but a live run depends on
//! the client's timing.
//!
//! # Scoped plans and clients
//!
//! Besides the global plan, a plan can be scoped to one client id (the
//! EHLO name, `PUT /plan?helo=NAME`, [`Engine::load_scoped`]): it applies
//! to that client's sessions from their EHLO on, with its own seed,
//! counters and state, and replaces the global plan for them. The client's
//! scoped plan is looked up once per session, at its first greeting, and
//! kept with the session (the hook's session scope), so no command looks it
//! up again. Per-key state of the global plan is tagged with the client
//! that created it, so `POST /reset?helo=NAME` can drop that client's
//! entries alone ([`Engine::reset_clients`]). The plan's `expect:` is the
//! policy the referee's verdicts judge clients by ([`referee::verdicts`]).
//!
//! # Cost
//!
//! With no plan loaded (global or scoped) a decision is one relaxed atomic
//! load. With a plan,
//! stages no rule names return after a bit test; rules are matched without
//! locks or allocation; only a rule that matches and keeps state (attempt
//! counters, buckets, greylist entries) takes one of 64 striped locks.
//! Keys are hashed piecewise, straight from the session's strings: the
//! readable key (`rcpt:bob@example.test`) is built only when a verdict is
//! produced, and the referee's request key only when it records a
//! failure. The clock is read only by a decision that needs the time
//! (windows, buckets, greylisting, referee records).
//! Per-key state is bounded (`state_cap`; the least recently used half is
//! evicted in one go, see `state`) and belongs to the loaded plan: loading
//! a plan starts its counters afresh.

mod active;
mod clients;
mod dns_rules;
#[cfg(test)]
mod early_tests;
mod engine;
mod evaluate;
mod glob;
mod keys;
mod load;
mod matching;
pub mod model;
mod primary;
mod queue;
pub mod referee;
pub mod select;
mod slots;
mod state;
mod validate;
mod verdict;
mod view;

use std::time::Instant;

pub use crate::hook::SessionEnd;
pub use clients::{
    RuleFaults, ScopedPlanError, MAX_SCOPED_PLANS, MAX_SCOPED_RULES, MAX_SCOPED_RULES_LISTED,
    MAX_SCOPED_TEXT,
};
pub use engine::Engine;
pub use load::{Plan, PlanError};
pub use model::{PlanSpec, MAX_RULES, MAX_STATE_CAP};
pub use referee::verdicts::{ClientVerdict, Outcome, RuleVerdict};
pub use referee::RefereeReport;
pub use verdict::{FaultAction, Verdict};

use crate::hook::StageContext;

/// A command as the sink would present it to the engine, for dry runs of a
/// plan ("what would it do to this envelope?") and for tests.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The stage.
    pub stage: crate::hook::Stage,
    /// Session (connection) id.
    pub session_id: u64,
    /// The client.
    pub peer: std::net::SocketAddr,
    /// EHLO argument.
    pub helo: Option<String>,
    /// Reverse-path once MAIL was accepted.
    pub sender: Option<String>,
    /// Recipients accepted so far.
    pub recipients: Vec<String>,
    /// The recipient being decided (RCPT).
    pub rcpt: Option<String>,
    /// TLS active.
    pub tls: bool,
    /// Authenticated user.
    pub auth_user: Option<String>,
    /// Message size so far.
    pub message_size: u64,
    /// Message (or its header block).
    pub message: Option<Vec<u8>>,
    /// The command line.
    pub command: String,
}

impl Probe {
    /// A probe at `stage` from `peer` in session `session_id`, with nothing
    /// else known.
    pub fn new(stage: crate::hook::Stage, session_id: u64, peer: std::net::SocketAddr) -> Probe {
        Probe {
            stage,
            session_id,
            peer,
            helo: None,
            sender: None,
            recipients: Vec::new(),
            rcpt: None,
            tls: false,
            auth_user: None,
            message_size: 0,
            message: None,
            command: String::new(),
        }
    }

    /// Asks `engine` at time `now`.
    pub fn decide(&self, engine: &Engine, now: Instant) -> Option<Verdict> {
        let buf: String = self.recipients.concat();
        let mut ends = Vec::with_capacity(self.recipients.len());
        let mut n = 0u32;
        for r in &self.recipients {
            n += r.len() as u32;
            ends.push(n);
        }
        let ctx = StageContext {
            stage: self.stage,
            session_id: self.session_id,
            peer: self.peer,
            helo: self.helo.as_deref(),
            sender: self.sender.as_deref(),
            recipients: crate::hook::Recipients {
                buf: &buf,
                ends: &ends,
            },
            rcpt: self.rcpt.as_deref(),
            reverse_path: None,
            tls: self.tls,
            auth_user: self.auth_user.as_deref(),
            message_size: self.message_size,
            message: self.message.as_deref(),
            command: self.command.as_bytes(),
            scope: None,
        };
        engine.decide_at(&ctx, now)
    }
}
