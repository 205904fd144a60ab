//! The fault engine: the active plan and its state, the referee and the
//! event log. [`Engine::decide_at`] is the whole decision: it takes the
//! time as an argument (tests inject it) and reads no clock itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::active::{Active, Scope, Who};
use super::load::{Plan, PlanError};
use super::referee::Referee;
use super::verdict::{FaultAction, Verdict};
use super::view::{Now, View};
use crate::hook::{EarlyLook, ReplyClass, SessionEnd, Stage, StageContext};
use crate::ip_text::IpText;

/// The fault engine: the active plan, its state, the referee and the event
/// log. Install it as the sink's hook; swap plans with [`Engine::load`].
pub struct Engine {
    id: u64,
    pub(super) slot: RwLock<Option<Arc<Active>>>,
    generation: AtomicU64,
    loaded: AtomicBool,
    /// A global or a scoped plan is loaded: the referee watches.
    pub(super) any: AtomicBool,
    /// Bit `1 << stage.index()`: a decision at that stage may do something
    /// (a loaded plan has a rule there, or the referee records it). The
    /// session skips the hook at the other stages: with no plan, that is
    /// the whole cost of the engine per command.
    consulted: AtomicU32,
    /// Plans scoped to one client id (`PUT /plan?helo=`).
    pub(super) scoped: RwLock<HashMap<Box<str>, Arc<Active>>>,
    headers: AtomicBool,
    pub(super) referee: Referee,
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

/// A shard thread's copy of an engine's active plan.
struct CachedPlan {
    engine_id: u64,
    /// The engine's generation when copied.
    generation: u64,
    active: Option<Arc<Active>>,
}

static ENGINE_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Each shard thread's view of the active plan. Refreshed under the read lock only when the generation moved,
    /// so a decision takes no lock and touches no shared reference count.
    static CACHE: RefCell<Option<CachedPlan>> = const { RefCell::new(None) };
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
            any: AtomicBool::new(false),
            consulted: AtomicU32::new(0),
            scoped: RwLock::new(HashMap::new()),
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
        let active = Active::new(plan, loaded_at);
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(active));
        self.generation.fetch_add(1, Ordering::Release);
        self.loaded.store(true, Ordering::Release);
        drop(slot);
        self.plans_changed();
    }

    /// Recomputes what depends on the set of loaded plans: whether any is
    /// loaded, and whether any needs message headers.
    pub(super) fn plans_changed(&self) {
        let global = self.slot.read().unwrap_or_else(|e| e.into_inner());
        let scoped = self.scoped.read().unwrap_or_else(|e| e.into_inner());
        let headers = global
            .iter()
            .chain(scoped.values())
            .any(|a| a.plan.needs_headers());
        self.headers.store(headers, Ordering::Relaxed);
        let any = global.is_some() || !scoped.is_empty();
        let rules = global
            .iter()
            .chain(scoped.values())
            .fold(0, |m, a| m | a.stage_mask);
        let referee = [Stage::Mail, Stage::Rcpt, Stage::DataEnd]
            .iter()
            .fold(0, |m, s| m | 1 << s.index());
        self.consulted
            .store(if any { rules | referee } else { 0 }, Ordering::Relaxed);
        self.any.store(any, Ordering::Release);
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
        self.loaded.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
        drop(slot);
        self.plans_changed();
    }

    /// Whether a global plan is active.
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
    pub(super) fn with_active<R>(&self, f: impl FnOnce(Option<&Active>) -> R) -> R {
        if !self.loaded.load(Ordering::Acquire) {
            return f(None);
        }
        let gen = self.generation.load(Ordering::Acquire);
        CACHE.with(|c| {
            let fresh =
                matches!(&*c.borrow(), Some(p) if p.engine_id == self.id && p.generation == gen);
            if !fresh {
                let active = self.slot.read().unwrap_or_else(|e| e.into_inner()).clone();
                *c.borrow_mut() = Some(CachedPlan {
                    engine_id: self.id,
                    generation: gen,
                    active,
                });
            }
            let c = c.borrow();
            f(c.as_ref().and_then(|p| p.active.as_deref()))
        })
    }

    fn log_event(&self, ctx: &StageContext<'_>, who: &Who<'_>, v: &Verdict) {
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
            "client": who.as_str(),
            "ip": ctx.peer.ip().to_canonical().to_string(),
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
        if !self.any.load(Ordering::Relaxed) {
            return crate::hook::Decision::Accept;
        }
        match self.decide_with(ctx, &Now::lazy()) {
            None => crate::hook::Decision::Accept,
            Some(v) => v.to_decision(),
        }
    }

    fn consults(&self, stage: Stage) -> bool {
        self.consulted.load(Ordering::Relaxed) & (1 << stage.index()) != 0
    }

    fn accepts_early(&self, early: &EarlyLook<'_>) -> bool {
        self.settled_early(early)
    }

    fn session_opened(&self, peer: std::net::SocketAddr, now: Instant) -> bool {
        Engine::session_opened(self, peer, now)
    }

    fn session_greeted(
        &self,
        session_id: u64,
        peer: std::net::SocketAddr,
        helo: &str,
        connected: Instant,
    ) -> Option<crate::hook::SessionScope> {
        let _ = session_id;
        self.greeted(peer, helo, connected)
    }

    fn session_closed(&self, end: &SessionEnd) {
        Engine::session_closed(self, end);
    }

    fn wants_headers(&self) -> bool {
        Engine::wants_headers(self)
    }
}

impl Engine {
    /// Evaluates the active plan for `ctx` at time `now`. `None`: no rule
    /// decided (normal behaviour).
    pub fn decide_at(&self, ctx: &StageContext<'_>, now: Instant) -> Option<Verdict> {
        self.decide_with(ctx, &Now::at(now)).map(|v| *v)
    }

    /// [`Engine::decide_at`] with a lazily read clock. The verdict is boxed:
    /// a decision that selects nothing then moves a pointer, not the
    /// verdict's bytes, out of the plan cache's closure.
    pub(crate) fn decide_with(&self, ctx: &StageContext<'_>, now: &Now) -> Option<Box<Verdict>> {
        let scope = ctx.scope.and_then(|s| s.downcast_ref::<Scope>());
        let who = match scope {
            Some(s) => Who::Scoped(s),
            None => Who::Ip(IpText::new(ctx.peer.ip())),
        };
        // Built once per decision: the MAIL argument is read from the line
        // here, for the domain record and the rules alike.
        let view = View::new(ctx, who.ip());
        if let Some(s) = scope {
            match ctx.stage {
                Stage::Mail => self.note_domains(s, Stage::Mail, view.sender),
                Stage::Rcpt => self.note_domains(s, Stage::Rcpt, ctx.rcpt),
                _ => {}
            }
        }
        match scope.and_then(|s| s.plan.as_deref()) {
            Some(a) => self.decide_in(a, &view, &who, now),
            None => self.with_active(|a| self.decide_in(a?, &view, &who, now)),
        }
    }

    /// Whether [`Engine::decide_with`] would select nothing for a command
    /// of a greeted session, known from the command's own argument: every
    /// rule at the stage fails a condition on it (a sender glob at MAIL, a
    /// recipient condition at RCPT, a size at end of data or BDAT), and
    /// the referee is not looking for retries there. Then the domain note
    /// that `decide_with` makes is made here, and the session builds no
    /// context: a plan whose rules aim at other traffic costs that traffic
    /// a glob or a compare per command, not a decision.
    fn settled_early(&self, early: &EarlyLook<'_>) -> bool {
        // Only a greeted session's commands under the global plan: the
        // other cases are rare enough to take the whole decision.
        let Some(s) = early.scope.and_then(|s| s.downcast_ref::<Scope>()) else {
            return false;
        };
        let stage = early.stage;
        let addr = match stage {
            Stage::Mail | Stage::Rcpt => match early.arg {
                Some(a) => Some(a),
                None => return false,
            },
            Stage::DataEnd | Stage::Bdat => None,
            _ => return false,
        };
        if s.plan.is_some()
            || matches!(stage, Stage::Mail | Stage::Rcpt | Stage::DataEnd)
                && self.referee.watching(stage)
        {
            return false;
        }
        let refuted = self.with_active(|a| {
            a.is_none_or(|a| {
                a.by_stage[stage.index()]
                    .iter()
                    .all(|&i| a.plan.rules[i as usize].refuted_early(early))
            })
        });
        if refuted && addr.is_some() {
            self.note_domains(s, stage, addr);
        }
        refuted
    }

    /// Decides with plan `a` (the global plan or the client's scoped one).
    fn decide_in(
        &self,
        a: &Active,
        view: &View<'_>,
        who: &Who<'_>,
        now: &Now,
    ) -> Option<Box<Verdict>> {
        let ctx = view.ctx;
        if !ctx.stage.is_consulted() {
            return None;
        }
        let rules = &a.by_stage[ctx.stage.index()];
        let referee_stage = matches!(ctx.stage, Stage::Mail | Stage::Rcpt | Stage::DataEnd);
        let active_stage = !rules.is_empty();
        if !(active_stage || referee_stage && self.referee.watching(ctx.stage)) {
            return None;
        }
        // `watching` tested here too: until a first failure at the stage,
        // no call at all.
        let before = if referee_stage && self.referee.watching(ctx.stage) {
            self.referee.attempt(view, who, now)
        } else {
            0
        };
        if !active_stage {
            return None;
        }
        let v = a.evaluate(self, rules, view, who.hash(), now)?;
        let code = v.code();
        if let Some(code) = code {
            if referee_stage && ReplyClass::of(code).is_failure() {
                self.referee.failed(view, who, code, now.get(), before);
            }
        }
        // A plain accept, or a 2xx/3xx reply, with no other effect (a
        // `sequence` step of 250) is not a fault.
        let accept = v.delay.is_none()
            && v.throttle.is_none()
            && v.split_reply.is_none()
            && (v.outcome == FaultAction::Accept
                || code.is_some_and(|c| ReplyClass::of(c) == ReplyClass::Positive));
        if !accept {
            a.faults[v.rule].fetch_add(1, Ordering::Relaxed);
            self.referee.fault(who.as_str(), code, now.get());
        }
        self.log_event(ctx, who, &v);
        Some(Box::new(v))
    }
}
