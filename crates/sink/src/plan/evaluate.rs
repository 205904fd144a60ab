//! How a stage's rules decide: the first rule that applies and is
//! selected (window, attempt count, probability, rate limit, connection
//! limit) gives the verdict, with its action's effects.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::active::{Active, Owned};
use super::engine::Engine;
use super::keys::{bucket_key, state_key, KeyHashes, TAG_ATTEMPTS, TAG_BUCKET, TAG_GREY};
use super::model::{ConnPer, KeyKind, StageSel};
use super::primary::{action_of, Primary};
use super::select::{hash_bytes, uniform};
use super::slots::{grey_step, take_token, Slot};
use super::validate::Rule;
use super::verdict::{FaultAction, Verdict};
use super::view::{Now, View};
use crate::hook::SplitReply;

impl Active {
    /// The first of `rules` (the stage's, in plan order) that applies to
    /// `v` and is selected decides.
    pub(super) fn evaluate(
        &self,
        engine: &Engine,
        rules: &[u32],
        v: &View<'_>,
        owner: u64,
        now: &Now,
    ) -> Option<Verdict> {
        rules.iter().find_map(|&i| {
            let rule = &self.plan.rules[i as usize];
            // Only the match is inlined here: the rest, out of line, is
            // not hoisted into the loop of a decision where nothing matches.
            if !rule.matches(v) {
                return None;
            }
            self.try_rule(engine, (i as usize, rule), v, owner, now)
        })
    }

    /// Rule `i`'s verdict (its match holds), or `None` when it is not
    /// selected this time. The steps run in this order because each later
    /// one counts or consumes something (an attempt, a token, a greylist
    /// entry) that must not be touched by a rule that does not apply.
    #[inline(never)]
    fn try_rule(
        &self,
        engine: &Engine,
        (i, rule): (usize, &Rule),
        v: &View<'_>,
        owner: u64,
        now: &Now,
    ) -> Option<Verdict> {
        debug_assert!(
            matches!(rule.stage, StageSel::Any) || rule.stage == StageSel::One(v.ctx.stage)
        );
        let KeyHashes {
            draw: khash,
            state: kstate,
        } = rule.key_hashes(v)?;
        if !self.in_window(rule, now) {
            return None;
        }
        let attempt = self.count_attempt(i, rule, kstate, owner);
        if !self.selected(i, rule, khash, attempt)
            || self.within_rate_limit(i, rule, v, owner, now)
            || !over_connection_limit(engine, rule, v)
        {
            return None;
        }
        let action = self.action((i, rule), kstate, attempt, owner, now)?;
        let mut verdict = self.verdict(i, rule, v, khash, attempt, action);
        if let Primary::Queue { model, overflow } = &rule.primary {
            match model.arrive(self.plan.spec().seed, i, now.get()) {
                Some(wait) => verdict.delay = Some(wait),
                None => {
                    let (code, enhanced, text) = overflow.clone();
                    verdict.outcome = FaultAction::Reply {
                        code,
                        enhanced,
                        text,
                    };
                }
            }
        }
        Some(verdict)
    }

    /// Whether the rule's `window` (if any) is open now.
    fn in_window(&self, rule: &Rule, now: &Now) -> bool {
        rule.window
            .as_ref()
            .is_none_or(|w| w.active(now.get().saturating_duration_since(self.loaded_at)))
    }

    /// Counts this attempt of the key under rule `i`: its number from 1,
    /// or 0 when the rule counts no attempts.
    fn count_attempt(&self, i: usize, rule: &Rule, kstate: u64, owner: u64) -> u64 {
        if rule.key == KeyKind::Global {
            self.globals[i].fetch_add(1, Ordering::Relaxed) + 1
        } else if rule.counts_attempts {
            self.counts.with(
                state_key(i, TAG_ATTEMPTS, kstate),
                || Owned { owner, v: 0 },
                |n| {
                    n.v += 1;
                    n.v
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
    fn within_rate_limit(
        &self,
        i: usize,
        rule: &Rule,
        v: &View<'_>,
        owner: u64,
        now: &Now,
    ) -> bool {
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
            || Owned {
                owner,
                v: Slot::bucket(max, now),
            },
            |s| take_token(&mut s.v, now, rate, max),
        )
    }

    /// What the rule does on this attempt; `None` when a greylisted
    /// triplet passes (the rule then does not fire).
    fn action(
        &self,
        (i, rule): (usize, &Rule),
        kstate: u64,
        attempt: u64,
        owner: u64,
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
                    || Owned {
                        owner,
                        v: Slot::grey(now),
                    },
                    |s| grey_step(&mut s.v, now, *min_retry, *expire),
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
                let step = rule.sequence.as_ref().map(|s| {
                    let n = (attempt.max(1) as usize).min(s.len());
                    s[n - 1]
                });
                Some(action_of(p, step))
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
