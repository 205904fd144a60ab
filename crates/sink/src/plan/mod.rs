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

pub mod engine;
pub mod model;
mod referee;
pub mod select;
mod state;
mod validate;

use std::cell::RefCell;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use engine::{Outcome, Verdict};
pub use model::PlanSpec;
pub use referee::SessionEnd;

use engine::{stage_bit, Slot};
use referee::Referee;
use state::Striped;
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
    rules: Vec<Rule>,
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
        let spec = model::parse_yaml(text, origin).map_err(|e| PlanError::Invalid {
            origin: origin.to_string(),
            location: e.location,
            message: if e.path.is_empty() {
                e.message
            } else {
                format!("{}: {}", e.path, e.message)
            },
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

/// A loaded plan with its state.
pub(crate) struct Active {
    pub(crate) plan: Plan,
    /// Attempt counters: 16 bytes an entry.
    pub(crate) counts: Striped<u64>,
    /// Token buckets and greylist entries.
    pub(crate) state: Striped<Slot>,
    pub(crate) globals: Vec<AtomicU64>,
    pub(crate) loaded_at: Instant,
    pub(crate) stage_mask: u32,
}

/// The fault engine: the active plan, its state, the referee and the event
/// log. Install it as the sink's hook; swap plans with [`Engine::load`].
pub struct Engine {
    id: u64,
    slot: RwLock<Option<Arc<Active>>>,
    generation: AtomicU64,
    loaded: AtomicBool,
    headers: AtomicBool,
    pub(crate) referee: Referee,
    events_on: AtomicBool,
    events: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("loaded", &self.loaded.load(Ordering::Relaxed))
            .finish()
    }
}

/// (engine id, generation, the plan then active).
type Cached = (u64, u64, Option<Arc<Active>>);

static ENGINE_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Each shard thread's view of the active plan: (engine id, generation,
    /// plan). Refreshed under the read lock only when the generation moved,
    /// so a decision takes no lock and touches no shared reference count.
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    /// An engine with no plan (every decision: normal behaviour).
    pub fn new() -> Engine {
        Engine {
            id: ENGINE_IDS.fetch_add(1, Ordering::Relaxed),
            slot: RwLock::new(None),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            headers: AtomicBool::new(false),
            referee: Referee::new(),
            events_on: AtomicBool::new(false),
            events: Mutex::new(None),
        }
    }

    /// Writes one JSON line per injected fault to `path` (appending).
    pub fn set_events_file(&self, path: &Path) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::io::BufWriter::new(f));
        self.events_on.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes `plan` active now.
    pub fn load(&self, plan: Plan) {
        self.load_at(plan, Instant::now());
    }

    /// Makes `plan` active, its windows counting from `loaded_at`.
    pub fn load_at(&self, plan: Plan, loaded_at: Instant) {
        let stage_mask = plan.rules.iter().fold(0, |m, r| m | stage_bit(r.stage));
        let headers = plan.needs_headers();
        // `state_cap` bounds all entries: split between the two maps only
        // when the plan uses buckets or greylisting at all.
        let cap = plan.spec.state_cap.max(1);
        let slots = plan.rules.iter().any(|r| {
            r.rate_limit.is_some() || matches!(r.primary, validate::Primary::Greylist { .. })
        });
        let (count_cap, slot_cap) = if slots {
            (cap - cap / 2, cap / 2)
        } else {
            (cap, 0)
        };
        let active = Active {
            counts: Striped::new(count_cap),
            state: Striped::new(slot_cap),
            globals: plan.rules.iter().map(|_| AtomicU64::new(0)).collect(),
            plan,
            loaded_at,
            stage_mask,
        };
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(active));
        self.headers.store(headers, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
    }

    /// Parses and loads a plan; on error the old plan stays active.
    pub fn load_bytes(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        origin: &str,
    ) -> Result<(), PlanError> {
        let plan = Plan::from_bytes(body, content_type, origin)?;
        self.load(plan);
        Ok(())
    }

    /// Reads and loads a plan file; on error the old plan stays active.
    pub fn load_file(&self, path: &Path) -> Result<(), PlanError> {
        let plan = Plan::from_file(path)?;
        self.load(plan);
        Ok(())
    }

    /// Removes the plan: normal behaviour from the next decision.
    pub fn unload(&self) {
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        *slot = None;
        self.headers.store(false, Ordering::Relaxed);
        self.loaded.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Whether a plan is active.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The active plan as YAML, if any.
    pub fn plan_yaml(&self) -> Option<String> {
        let slot = self.slot.read().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|a| a.plan.to_yaml())
    }

    /// Whether the active plan needs message headers at end of data.
    pub fn wants_headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    /// Per-key state entries held by the active plan (bounded by
    /// `state_cap`).
    pub fn state_len(&self) -> usize {
        let slot = self.slot.read().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map_or(0, |a| a.counts.len() + a.state.len())
    }

    /// Runs `f` with this thread's cached view of the active plan.
    fn with_active<R>(&self, f: impl FnOnce(Option<&Active>) -> R) -> R {
        if !self.loaded.load(Ordering::Acquire) {
            return f(None);
        }
        let gen = self.generation.load(Ordering::Acquire);
        CACHE.with(|c| {
            let fresh = matches!(&*c.borrow(), Some((id, g, _)) if *id == self.id && *g == gen);
            if !fresh {
                let a = self.slot.read().unwrap_or_else(|e| e.into_inner()).clone();
                *c.borrow_mut() = Some((self.id, gen, a));
            }
            let c = c.borrow();
            f(c.as_ref().and_then(|(_, _, a)| a.as_deref()))
        })
    }

    /// A session starts (before its greeting is decided). Returns whether
    /// the referee counts it, in which case [`Engine::session_closed`] must
    /// follow. With no plan loaded nothing is counted.
    pub fn session_opened(&self, peer: std::net::SocketAddr, now: Instant) -> bool {
        if !self.is_loaded() {
            return false;
        }
        self.referee.opened(peer.ip(), now);
        true
    }

    /// A session counted by [`Engine::session_opened`] ended.
    pub fn session_closed(&self, end: &SessionEnd) {
        self.referee.closed(end);
        // Connection-keyed counters die with the connection.
        self.with_active(|a| {
            let Some(a) = a else { return };
            for (i, r) in a.plan.rules.iter().enumerate() {
                if r.counts_attempts {
                    let (keys, n) = engine::connection_state_keys(r.key, end.session_id);
                    for &k in &keys[..n] {
                        a.counts
                            .remove(engine::state_key(i, engine::TAG_ATTEMPTS, k));
                    }
                }
            }
        });
    }

    /// `GET /clients`: the referee's report.
    pub fn clients_json(&self) -> serde_json::Value {
        self.referee.to_json()
    }

    /// The referee's figures in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        self.referee.to_prometheus(&mut s);
        s
    }

    /// Forgets the referee's records (open connections stay counted).
    pub fn reset_referee(&self) {
        self.referee.reset();
    }

    fn log_event(&self, ctx: &StageContext<'_>, v: &Verdict) {
        if !self.events_on.load(Ordering::Acquire) {
            return;
        }
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = ev.as_mut() else { return };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = serde_json::json!({
            "time": (time * 1000.0).round() / 1000.0,
            "session": ctx.session_id,
            "client": ctx.peer.ip().to_canonical().to_string(),
            "stage": ctx.stage.as_str(),
            "rule": &*v.rule_name,
            "rule_index": v.rule,
            "key": v.key,
            "attempt": v.attempt,
            "outcome": v.describe(),
        });
        let _ = writeln!(w, "{line}");
        let _ = w.flush();
    }
}

impl crate::hook::StageHook for Engine {
    fn decide(&self, ctx: &StageContext<'_>) -> crate::hook::Decision {
        if !self.is_loaded() {
            return crate::hook::Decision::Accept;
        }
        match self.decide_with(ctx, &engine::Now::lazy()) {
            None => crate::hook::Decision::Accept,
            Some(v) => v.to_decision(),
        }
    }

    fn session_opened(&self, peer: std::net::SocketAddr, now: Instant) -> bool {
        Engine::session_opened(self, peer, now)
    }

    fn session_closed(&self, end: &SessionEnd) {
        Engine::session_closed(self, end);
    }

    fn wants_headers(&self) -> bool {
        Engine::wants_headers(self)
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
