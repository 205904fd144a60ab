//! The engine's client-facing side: sessions and their client ids, plans
//! scoped to one client (`PUT /plan?helo=`), filtered reports and resets,
//! and verdicts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::active::{client_hash, Active, Scope};
use super::engine::Engine;
use super::keys::{self, state_key, TAG_ATTEMPTS};
use super::load::{Plan, PlanError};
use super::model::Policy;
use super::referee::verdicts::{self, ClientVerdict};
use super::referee::RefereeReport;
use crate::filter::{client_id, ClientFilter};
use crate::hook::{SessionEnd, SessionScope};

/// Most scoped rules [`Engine::faults_by_rule`] lists (those that injected
/// a fault), so the dashboard's feed stays small with thousands of tests.
pub const MAX_SCOPED_RULES_LISTED: usize = 100;

/// One rule of a loaded plan and the faults it injected since the plan was
/// loaded (or the last reset).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleFaults {
    /// The client id of the scoped plan holding the rule; `None` for the
    /// global plan.
    pub scope: Option<String>,
    /// Index of the rule in its plan.
    pub index: usize,
    /// The rule's name (`rule<index>` when the plan gives none).
    pub name: String,
    /// The stage the rule applies at (`any` for all).
    pub stage: &'static str,
    /// Faults injected.
    pub faults: u64,
}

fn rule_faults<'a>(scope: Option<&str>, a: &'a Active) -> impl Iterator<Item = RuleFaults> + 'a {
    let scope = scope.map(str::to_owned);
    a.plan
        .rules
        .iter()
        .zip(a.faults.iter())
        .enumerate()
        .map(move |(index, (r, n))| RuleFaults {
            scope: scope.clone(),
            index,
            name: r.name.to_string(),
            stage: r.stage.as_str(),
            faults: n.load(Ordering::Relaxed),
        })
}

/// Most scoped plans loaded at once.
pub const MAX_SCOPED_PLANS: usize = 4096;

/// Most rules in all scoped plans together (five a plan on average at
/// [`MAX_SCOPED_PLANS`]): a loaded rule costs 2–3 KiB, so ~60 MiB at most.
pub const MAX_SCOPED_RULES: usize = 20_480;

/// Most plan text (YAML or JSON bytes) in all scoped plans together: bounds
/// what their patterns and reply texts hold, which the rule count does not.
pub const MAX_SCOPED_TEXT: usize = 32 << 20;

/// Why a scoped plan cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScopedPlanError {
    /// The plan itself is invalid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// An empty EHLO name.
    #[error("a scoped plan needs a non-empty helo name")]
    EmptyHelo,
    /// The sink has no fault engine.
    #[error("the sink has no fault engine (SinkBuilder::fault_engine)")]
    NoEngine,
    /// [`MAX_SCOPED_PLANS`] are loaded already.
    #[error(
        "too many scoped plans: {MAX_SCOPED_PLANS} are loaded; DELETE /plan?helo=NAME some first"
    )]
    TooMany,
    /// The scoped plans together would pass [`MAX_SCOPED_RULES`] or
    /// [`MAX_SCOPED_TEXT`].
    #[error(
        "the scoped plans would hold {rules} rules and {text} bytes of plan text in all, more \
         than the {MAX_SCOPED_RULES} rules and {MAX_SCOPED_TEXT} bytes allowed; DELETE \
         /plan?helo=NAME some first"
    )]
    Full {
        /// Rules in all scoped plans with this one.
        rules: usize,
        /// Plan text bytes in all scoped plans with this one.
        text: usize,
    },
}

fn lock<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// A DNS query from `ip` was handled: counted in the referee's entry
    /// for the IP (a query names no client; see [`client_id`]).
    pub(crate) fn dns_query(
        &self,
        ip: std::net::IpAddr,
        f: impl FnOnce(&mut super::referee::DnsClientRecord),
    ) {
        // The id's text on the stack: this runs per query.
        let text = crate::ip_text::IpText::new(ip);
        let id = std::str::from_utf8(text.as_bytes()).unwrap_or_default();
        debug_assert_eq!(id, client_id(None, ip));
        self.referee.client(id, |c| {
            c.dns.queries += 1;
            f(&mut c.dns);
        });
    }

    /// Loads `plan` for the sessions that greet with `helo` (compared
    /// case-insensitively), with its own seed, counters and state; it
    /// applies from their EHLO on. Replacing a client's plan starts its
    /// state afresh; sessions already greeted keep the plan they had.
    pub fn load_scoped(&self, helo: &str, plan: Plan) -> Result<(), ScopedPlanError> {
        let id = helo.trim().to_ascii_lowercase();
        if id.is_empty() {
            return Err(ScopedPlanError::EmptyHelo);
        }
        let mut map = self.scoped.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SCOPED_PLANS && !map.contains_key(id.as_str()) {
            return Err(ScopedPlanError::TooMany);
        }
        // Summed afresh: a PUT is rare and there are at most 4096 plans.
        let (rules, text) = map
            .iter()
            .filter(|(k, _)| k.as_ref() != id.as_str())
            .fold((plan.rules.len(), plan.text_len()), |(r, t), (_, a)| {
                (r + a.plan.rules.len(), t + a.plan.text_len())
            });
        if rules > MAX_SCOPED_RULES || text > MAX_SCOPED_TEXT {
            return Err(ScopedPlanError::Full { rules, text });
        }
        map.insert(id.into(), Arc::new(Active::new(plan, Instant::now())));
        drop(map);
        self.plans_changed();
        Ok(())
    }

    /// Parses `body` (YAML or JSON) and loads it for `helo`.
    pub fn load_scoped_bytes(
        &self,
        helo: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<(), ScopedPlanError> {
        let plan = Plan::from_bytes(body, content_type, &format!("PUT /plan?helo={helo}"))?;
        self.load_scoped(helo, plan)
    }

    /// Removes `helo`'s scoped plan; `false` when it had none.
    pub fn unload_scoped(&self, helo: &str) -> bool {
        let id = helo.trim().to_ascii_lowercase();
        let removed = self
            .scoped
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str())
            .is_some();
        self.plans_changed();
        removed
    }

    /// `helo`'s scoped plan as YAML, if it has one.
    pub fn scoped_plan_yaml(&self, helo: &str) -> Option<String> {
        let id = helo.trim().to_ascii_lowercase();
        lock(&self.scoped)
            .get(id.as_str())
            .map(|a| a.plan.to_yaml())
    }

    /// How many scoped plans are loaded.
    pub fn scoped_plans(&self) -> usize {
        lock(&self.scoped).len()
    }

    /// A session starts (before its greeting is decided). Returns whether
    /// the referee counts it, in which case [`Engine::session_closed`] must
    /// follow. With no plan loaded (global or scoped) nothing is counted.
    pub fn session_opened(&self, peer: std::net::SocketAddr, now: Instant) -> bool {
        let _ = now;
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        self.referee.opened(peer.ip());
        true
    }

    /// The first greeting of a counted session, opened at `connected`:
    /// the session now belongs to client `helo`; looks up its scoped plan
    /// once for the whole session.
    pub(super) fn greeted(
        &self,
        peer: std::net::SocketAddr,
        helo: &str,
        connected: Instant,
    ) -> Option<SessionScope> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let id = helo.to_ascii_lowercase();
        self.referee.greeted(&id, peer.ip(), connected);
        let plan = lock(&self.scoped).get(id.as_str()).cloned();
        Some(Arc::new(Scope {
            hash: client_hash(id.as_bytes()),
            ip: crate::ip_text::IpText::new(peer.ip()),
            id: id.into(),
            plan,
            domains: Default::default(),
            last_domain: Default::default(),
        }))
    }

    /// A session counted by [`Engine::session_opened`] ended.
    pub fn session_closed(&self, end: &SessionEnd) {
        self.referee.closed(end);
        // Connection-keyed counters die with the connection, in the
        // global plan and in the client's scoped one.
        let forget = |a: &Active| {
            for (i, r) in a.plan.rules.iter().enumerate() {
                if r.counts_attempts {
                    let (keys, n) = keys::connection_state_keys(r.key, end.session_id);
                    for &k in &keys[..n] {
                        a.counts.remove(state_key(i, TAG_ATTEMPTS, k));
                    }
                }
            }
        };
        self.with_active(|a| a.map(forget));
        if let Some(h) = &end.helo {
            if let Some(a) = lock(&self.scoped).get(h.to_ascii_lowercase().as_str()) {
                forget(a);
            }
        }
    }

    /// Records the sender's or recipient's domain for the session's client
    /// (the referee's lock is taken only for a domain new to the session).
    /// `addr`: the reverse-path at MAIL, the recipient at RCPT.
    pub(super) fn note_domains(&self, s: &Scope, stage: crate::hook::Stage, addr: Option<&str>) {
        let last = match stage {
            crate::hook::Stage::Mail => &s.last_domain[0],
            _ => &s.last_domain[1],
        };
        let addr = addr.unwrap_or_default();
        if last.holds_domain_of(addr) {
            return;
        }
        let d = crate::filter::domain_of(addr);
        if d.is_empty() {
            return;
        }
        last.set(d);
        let h = keys::lower_hash(4, d.as_bytes()).max(1);
        // The session is the only writer of its scope: load, then store.
        let Some(free) = s.domains.iter().find_map(|slot| {
            let v = slot.load(Ordering::Relaxed);
            (v == 0 || v == h).then_some((slot, v))
        }) else {
            return; // 16 domains reported already
        };
        if free.1 == h {
            return;
        }
        free.0.store(h, Ordering::Relaxed);
        let d = d.to_ascii_lowercase();
        self.referee.domain(&s.id, &d);
    }

    /// The referee's report.
    pub fn referee_report(&self) -> RefereeReport {
        self.referee.report(&ClientFilter::all())
    }

    /// The referee's report on the clients `filter` selects.
    pub fn referee_report_for(&self, filter: &ClientFilter) -> RefereeReport {
        self.referee.report(filter)
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

    /// Starts the plans' state afresh, as if they had just been loaded:
    /// attempt counters (so a `sequence` starts at its first code again),
    /// global counters, token buckets and greylist entries, in the global
    /// plan and every scoped one. Windows keep counting from the load.
    pub fn reset_state(&self) {
        if let Some(a) = lock(&self.slot).as_ref() {
            a.clear();
        }
        for a in lock(&self.scoped).values() {
            a.clear();
        }
    }

    /// Forgets the referee's records (open connections stay counted).
    pub fn reset_referee(&self) {
        self.referee.reset(&ClientFilter::all());
    }

    /// `POST /reset?helo=..&domain=..`: for each client `filter` selects,
    /// forgets its referee records, starts its scoped plan's state afresh
    /// and drops the global plan's per-key state its sessions created
    /// (attempt counters, greylist entries, buckets; the counters of
    /// `key: global` rules are shared and stay). With no filter: all of
    /// it, as [`Engine::reset_referee`] and [`Engine::reset_state`].
    /// Returns the ids of the clients reset.
    pub fn reset_clients(&self, filter: &ClientFilter) -> Vec<String> {
        if filter.is_all() {
            self.reset_referee();
            self.reset_state();
            return Vec::new();
        }
        let mut ids: Vec<String> = self
            .referee
            .reset(filter)
            .into_iter()
            .map(String::from)
            .collect();
        // A client that has a plan but no record yet is reset too.
        if let Some(h) = &filter.helo {
            let h = h.to_ascii_lowercase();
            if !ids.contains(&h) && filter.domain.is_none() {
                ids.push(h);
            }
        }
        let global = lock(&self.slot).clone();
        let scoped = lock(&self.scoped);
        for id in &ids {
            if let Some(a) = &global {
                a.clear_owner(client_hash(id.as_bytes()));
            }
            if let Some(a) = scoped.get(id.as_str()) {
                a.clear();
            }
        }
        ids
    }

    /// The policy client `id` is judged by: the defaults, overridden by the
    /// global plan's `expect:`, then by the client's scoped plan's.
    pub fn policy_for(&self, id: &str) -> Policy {
        let global = lock(&self.slot).clone();
        let scoped = lock(&self.scoped).get(id).cloned();
        Policy::default()
            .with(global.as_ref().and_then(|a| a.plan.spec().expect.as_ref()))
            .with(scoped.as_ref().and_then(|a| a.plan.spec().expect.as_ref()))
    }

    /// The verdicts of the clients `filter` selects, by client id.
    pub fn verdicts(&self, filter: &ClientFilter) -> Vec<ClientVerdict> {
        let list = self.referee.selected(filter, |l| l);
        let mut out: Vec<ClientVerdict> = list
            .iter()
            .map(|(id, c)| verdicts::verdict(id, c, &self.policy_for(id)))
            .collect();
        out.sort_by(|a, b| a.client.cmp(&b.client));
        out
    }

    /// Client `id`'s verdict (`id` compared case-insensitively); `None`
    /// for a client the referee does not know.
    pub fn verdict(&self, id: &str) -> Option<ClientVerdict> {
        let id = id.to_ascii_lowercase();
        let c = self
            .referee
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id.as_str())
            .cloned()?;
        Some(verdicts::verdict(&id, &c, &self.policy_for(&id)))
    }

    /// The global plan's rules (all of them, with their fault counts), then
    /// the scoped plans' rules that injected a fault (at most
    /// [`MAX_SCOPED_RULES_LISTED`], by client id).
    pub fn faults_by_rule(&self) -> Vec<RuleFaults> {
        let global = lock(&self.slot).clone();
        let mut out: Vec<RuleFaults> = global
            .as_deref()
            .map(|a| rule_faults(None, a).collect())
            .unwrap_or_default();
        let scoped = lock(&self.scoped);
        let mut ids: Vec<&Box<str>> = scoped.keys().collect();
        ids.sort();
        let fired = ids
            .into_iter()
            .flat_map(|id| rule_faults(Some(id), &scoped[id]).filter(|r| r.faults > 0));
        out.extend(fired.take(MAX_SCOPED_RULES_LISTED));
        out
    }

    /// The scoped plans' client ids (for reports).
    pub fn scoped_plan_ids(&self) -> Vec<String> {
        let map: &HashMap<Box<str>, Arc<Active>> = &lock(&self.scoped);
        let mut ids: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        ids.sort();
        ids
    }
}
