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
//! # Cost
//!
//! With no plan loaded a decision is one relaxed atomic load. With a plan,
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

mod engine;
mod keys;
mod matching;
pub mod model;
pub mod referee;
pub mod select;
mod slots;
mod state;
mod validate;
mod verdict;
mod view;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::hook::SessionEnd;
pub use engine::Engine;
pub use model::PlanSpec;
pub use referee::RefereeReport;
pub use verdict::{FaultAction, Verdict};

use validate::Rule;

use crate::hook::StageContext;

/// A plan that cannot be loaded. The old plan (if any) stays active.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plan {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Malformed, an unknown key, or a bad value.
    #[error("{origin}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        /// File name, or `<PUT /plan>` and the like.
        origin: String,
        /// Line and column (1-based) when known.
        location: Option<(usize, usize)>,
        /// What is wrong: the key path, the value and what is allowed.
        message: String,
    },
}

/// A parsed, validated and compiled plan.
#[derive(Debug)]
pub struct Plan {
    spec: PlanSpec,
    pub(crate) rules: Vec<Rule>,
    origin: String,
}

/// Removes serde_yaml's trailing " at line L column C" (the location is
/// reported separately).
fn strip_location(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg,
    }
}

impl Plan {
    /// Parses a YAML plan; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Plan, PlanError> {
        let spec: PlanSpec = if text.trim().is_empty() {
            serde_yaml::from_str("{}")
        } else {
            serde_yaml::from_str(text)
        }
        .map_err(|e| PlanError::Invalid {
            origin: origin.to_string(),
            location: e.location().map(|l| (l.line(), l.column())),
            message: strip_location(e.to_string()),
        })?;
        Plan::compile(spec, origin)
    }

    /// Parses a JSON plan (same keys as YAML).
    pub fn from_json_str(text: &str, origin: &str) -> Result<Plan, PlanError> {
        let spec: PlanSpec = serde_json::from_str(text).map_err(|e| PlanError::Invalid {
            origin: origin.to_string(),
            location: Some((e.line(), e.column())),
            message: {
                let m = e.to_string();
                strip_location(m)
            },
        })?;
        Plan::compile(spec, origin)
    }

    /// Parses a request body: JSON when the content type says so or the
    /// body starts with `{`, YAML otherwise.
    pub fn from_bytes(
        body: &[u8],
        content_type: Option<&str>,
        origin: &str,
    ) -> Result<Plan, PlanError> {
        let text = std::str::from_utf8(body).map_err(|_| PlanError::Invalid {
            origin: origin.to_string(),
            location: None,
            message: "the plan is not UTF-8".into(),
        })?;
        let json =
            content_type.is_some_and(|c| c.contains("json")) || text.trim_start().starts_with('{');
        if json {
            Plan::from_json_str(text, origin)
        } else {
            Plan::from_yaml_str(text, origin)
        }
    }

    /// Reads a YAML (or JSON) plan file.
    pub fn from_file(path: &Path) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Plan::from_bytes(text.as_bytes(), None, &path.display().to_string())
    }

    fn compile(spec: PlanSpec, origin: &str) -> Result<Plan, PlanError> {
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                validate::compile_rule(i, &r.0).map_err(|message| PlanError::Invalid {
                    origin: origin.to_string(),
                    location: None,
                    message: format!("rules[{i}]: {message}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            spec,
            rules,
            origin: origin.to_string(),
        })
    }

    /// The plan as parsed.
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }

    /// Where it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The plan as YAML (every key, defaults filled in).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.spec).unwrap_or_default()
    }

    /// Whether a rule looks at message headers (the session then keeps the
    /// header block of each message even in discard mode).
    pub fn needs_headers(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.m.header.is_some() || r.key == model::KeyKind::MessageId)
    }
}

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
            tls: self.tls,
            auth_user: self.auth_user.as_deref(),
            message_size: self.message_size,
            message: self.message.as_deref(),
            command: self.command.as_bytes(),
        };
        engine.decide_at(&ctx, now)
    }
}
