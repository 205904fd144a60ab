//! The fault engine: the active plan and its state, the referee and the
//! event log. [`Engine::decide_at`] is the whole decision: it takes the
//! time as an argument (tests inject it) and reads no clock itself.

use std::cell::RefCell;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::keys::{self, bucket_key, state_key, KeyHashes, TAG_ATTEMPTS, TAG_BUCKET, TAG_GREY};
use super::load::{Plan, PlanError};
use super::matching::{stage_bit, stage_sel};
use super::model::{ConnPer, KeyKind, StageSel};
use super::primary::action_of;
use super::primary::Primary;
use super::referee::{Referee, RefereeReport};
use super::select::{hash_bytes, uniform};
use super::slots::{grey_step, take_token, Slot};
use super::state::Striped;
use super::validate::Rule;
use super::verdict::{FaultAction, Verdict};
use super::view::{Now, View};
use crate::hook::{ReplyClass, SessionEnd, SplitReply, Stage, StageContext};

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
    referee: Referee,
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
        let cap = plan.spec().state_cap.max(1);
        let slots = plan
            .rules
            .iter()
            .any(|r| r.rate_limit.is_some() || matches!(r.primary, Primary::Greylist { .. }));
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
                    let (keys, n) = keys::connection_state_keys(r.key, end.session_id);
                    for &k in &keys[..n] {
                        a.counts.remove(state_key(i, TAG_ATTEMPTS, k));
                    }
                }
            }
        });
    }

    /// The referee's report.
    pub fn referee_report(&self) -> RefereeReport {
        self.referee.report()
    }

    /// `GET /clients`: the referee's report as JSON.
    pub fn clients_json(&self) -> serde_json::Value {
        serde_json::to_value(self.referee_report()).unwrap_or_default()
    }

    /// The referee's figures in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        self.referee.to_prometheus(&mut s);
        s
    }

    /// Starts the active plan's state afresh, as if it had just been
    /// loaded: attempt counters (so a `sequence` starts at its first code
    /// again), global counters, token buckets and greylist entries. Its
    /// windows keep counting from the original load.
    pub fn reset_state(&self) {
        let slot = self.slot.read().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = slot.as_ref() {
            a.counts.clear();
            a.state.clear();
            for g in &a.globals {
                g.store(0, Ordering::Relaxed);
            }
        }
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
        match self.decide_with(ctx, &Now::lazy()) {
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

impl Engine {
    /// Evaluates the active plan for `ctx` at time `now`. `None`: no rule
    /// decided (normal behaviour).
    pub fn decide_at(&self, ctx: &StageContext<'_>, now: Instant) -> Option<Verdict> {
        self.decide_with(ctx, &Now::at(now))
    }

    /// [`Engine::decide_at`] with a lazily read clock.
    pub(crate) fn decide_with(&self, ctx: &StageContext<'_>, now: &Now) -> Option<Verdict> {
        self.with_active(|a| {
            let a = a?;
            let sel = stage_sel(ctx.stage)?;
            let referee_stage = matches!(ctx.stage, Stage::Mail | Stage::Rcpt | Stage::DataEnd);
            let active_stage = a.stage_mask & stage_bit(sel) != 0;
            if !(active_stage || referee_stage && self.referee.watching()) {
                return None;
            }
            let view = View::new(ctx);
            let before = if referee_stage {
                self.referee.attempt(&view, now)
            } else {
                0
            };
            if !active_stage {
                return None;
            }
            let v = a.evaluate(self, sel, &view, now)?;
            if let Some(code) = v.code() {
                if referee_stage && ReplyClass::of(code).is_failure() {
                    self.referee.failed(&view, code, now.get(), before);
                }
                if code == 421 {
                    self.referee.got_421(ctx.peer.ip(), now.get());
                }
            }
            self.referee.fault(ctx.peer.ip());
            self.log_event(ctx, &v);
            Some(v)
        })
    }
}

impl Active {
    /// The first rule that applies to `v` and is selected decides.
    fn evaluate(&self, engine: &Engine, sel: StageSel, v: &View<'_>, now: &Now) -> Option<Verdict> {
        self.plan
            .rules
            .iter()
            .enumerate()
            .find_map(|(i, rule)| self.try_rule(engine, i, rule, sel, v, now))
    }

    /// Rule `i`'s verdict, or `None` when it does not apply or is not
    /// selected this time. The steps run in this order because each later
    /// one counts or consumes something (an attempt, a token, a greylist
    /// entry) that must not be touched by a rule that does not apply.
    fn try_rule(
        &self,
        engine: &Engine,
        i: usize,
        rule: &Rule,
        sel: StageSel,
        v: &View<'_>,
        now: &Now,
    ) -> Option<Verdict> {
        if rule.stage != sel && rule.stage != StageSel::Any || !rule.matches(v) {
            return None;
        }
        let KeyHashes {
            draw: khash,
            state: kstate,
        } = rule.key_hashes(v)?;
        if !self.in_window(rule, now) {
            return None;
        }
        let attempt = self.count_attempt(i, rule, kstate);
        if !self.selected(i, rule, khash, attempt)
            || self.within_rate_limit(i, rule, v, now)
            || !over_connection_limit(engine, rule, v)
        {
            return None;
        }
        let action = self.action(i, rule, kstate, attempt, now)?;
        Some(self.verdict(i, rule, v, khash, attempt, action))
    }

    /// Whether the rule's `window` (if any) is open now.
    fn in_window(&self, rule: &Rule, now: &Now) -> bool {
        rule.window
            .as_ref()
            .is_none_or(|w| w.active(now.get().saturating_duration_since(self.loaded_at)))
    }

    /// Counts this attempt of the key under rule `i`: its number from 1,
    /// or 0 when the rule counts no attempts.
    fn count_attempt(&self, i: usize, rule: &Rule, kstate: u64) -> u64 {
        if rule.key == KeyKind::Global {
            self.globals[i].fetch_add(1, Ordering::Relaxed) + 1
        } else if rule.counts_attempts {
            self.counts.with(
                state_key(i, TAG_ATTEMPTS, kstate),
                || 0,
                |n| {
                    *n += 1;
                    *n
                },
            )
        } else {
            0
        }
    }

    /// The rule's `probability`, `every`, `first` and `after` for this
    /// attempt.
    fn selected(&self, i: usize, rule: &Rule, khash: u64, attempt: u64) -> bool {
        if let Some(p) = rule.probability {
            if uniform(self.plan.spec().seed, i, khash, attempt, 0) >= p {
                return false;
            }
        }
        !(rule.every.is_some_and(|n| !attempt.is_multiple_of(n))
            || rule.first.is_some_and(|n| attempt > n)
            || rule.after.is_some_and(|n| attempt <= n))
    }

    /// `true` when the rule has a `rate_limit` and this request is within
    /// it (or has no bucket key): the rule then does not fire.
    fn within_rate_limit(&self, i: usize, rule: &Rule, v: &View<'_>, now: &Now) -> bool {
        let Some(rl) = &rule.rate_limit else {
            return false;
        };
        let Some(bk) = bucket_key(rl.by, v) else {
            return true;
        };
        let max = rl.max.0 as f64;
        let rate = max / rl.per_seconds.0;
        let now = now.get();
        self.state.with(
            state_key(i, TAG_BUCKET, bk),
            || Slot::bucket(max, now),
            |s| take_token(s, now, rate, max),
        )
    }

    /// What the rule does on this attempt; `None` when a greylisted
    /// triplet passes (the rule then does not fire).
    fn action(
        &self,
        i: usize,
        rule: &Rule,
        kstate: u64,
        attempt: u64,
        now: &Now,
    ) -> Option<FaultAction> {
        match &rule.primary {
            Primary::Greylist {
                min_retry,
                expire,
                text,
            } => {
                let now = now.get();
                let pass = self.state.with(
                    state_key(i, TAG_GREY, kstate),
                    || Slot::grey(now),
                    |s| grey_step(s, now, *min_retry, *expire),
                );
                (!pass).then(|| FaultAction::Reply {
                    code: 450,
                    enhanced: "4.7.1".into(),
                    text: text.clone().unwrap_or_else(|| {
                        format!(
                            "Greylisted, please try again in {} seconds",
                            min_retry.as_secs()
                        )
                    }),
                })
            }
            p => {
                let seq_code = rule.sequence.as_ref().map(|s| {
                    let n = (attempt.max(1) as usize).min(s.len());
                    s[n - 1]
                });
                Some(action_of(p, seq_code))
            }
        }
    }

    /// The verdict of rule `i`, with its sampled delay and readable key.
    fn verdict(
        &self,
        i: usize,
        rule: &Rule,
        v: &View<'_>,
        khash: u64,
        attempt: u64,
        action: FaultAction,
    ) -> Verdict {
        let seed = self.plan.spec().seed;
        let delay = rule.delay.map(|(d, cap)| {
            d.sample(
                uniform(seed, i, khash, attempt, 1),
                uniform(seed, i, khash, attempt, 2),
                cap,
            )
        });
        let key = rule.key_text(v);
        debug_assert!(
            matches!(rule.key, KeyKind::Connection | KeyKind::Session)
                || hash_bytes(0, key.as_bytes()) == khash,
            "piecewise key hash differs from the hash of `{key}`"
        );
        Verdict {
            rule: i,
            rule_name: rule.name.clone(),
            key,
            attempt,
            delay,
            outcome: action,
            throttle: rule.throttle,
            split_reply: rule.split.map(|(fragment, gap)| SplitReply {
                fragment,
                gap: Duration::from_millis(gap),
            }),
        }
    }
}

/// `true` when the rule has no `max_connections` or the client is over
/// it (the rule fires only then).
fn over_connection_limit(engine: &Engine, rule: &Rule, v: &View<'_>) -> bool {
    let Some(mc) = &rule.max_connections else {
        return true;
    };
    let open = match mc.per {
        ConnPer::Global => engine.referee.open_total(),
        ConnPer::Ip => engine.referee.open_for(v.ctx.peer.ip()),
    };
    open > mc.max
}
