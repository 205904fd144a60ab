//! Rule evaluation. [`Engine::decide_at`] is the whole decision: it takes
//! the time as an argument (tests inject it) and reads no clock itself.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::model::{ConnPer, KeyKind, RateBy, StageSel};
use super::select::{domain_of, glob_match, hash_bytes, mix64, uniform};
use super::validate::{default_reply, Primary, Rule};
use super::{Active, Engine};
use crate::hook::{Decision, Fault, Stage, StageContext};

/// What a selected rule makes the session do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The normal reply.
    Accept,
    /// This reply instead (`421` also closes the connection).
    Reply {
        /// Reply code.
        code: u16,
        /// Enhanced status code.
        enhanced: String,
        /// Text (line breaks: multi-line).
        text: String,
    },
    /// Close without a reply, after the client sent `after_bytes` more.
    Disconnect {
        /// Reset instead of FIN.
        rst: bool,
        /// Octets to let through first.
        after_bytes: u64,
    },
    /// Answer normally, then stop reading for this long.
    Stall(Duration),
    /// Answer normally; if the client then stays idle this long, send
    /// `code` unprompted and close.
    IdleClose {
        /// Idle time.
        after: Duration,
        /// Reply code.
        code: u16,
        /// Enhanced status code.
        enhanced: String,
        /// Text.
        text: String,
    },
}

/// A rule's decision, with what produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Index of the rule in the plan.
    pub rule: usize,
    /// The rule's name.
    pub rule_name: String,
    /// The key, readable (`rcpt:bob@example.test`).
    pub key: String,
    /// The attempt number of this key under this rule (from 1; 0 when the
    /// rule counts no attempts).
    pub attempt: u64,
    /// Wait this long before anything else.
    pub delay: Option<Duration>,
    /// Then do this.
    pub outcome: Outcome,
    /// From now on, limit the connection to this many octets per second.
    pub throttle: Option<u64>,
    /// Send replies in fragments of this many octets, this far apart.
    pub split_reply: Option<(usize, Duration)>,
}

impl Verdict {
    /// The verdict as a hook [`Decision`].
    pub fn to_decision(&self) -> Decision {
        let mut f = Fault::new(Decision::Accept);
        match &self.outcome {
            Outcome::Accept => {}
            Outcome::Reply {
                code,
                enhanced,
                text,
            } => {
                f.then = Decision::Reply {
                    code: *code,
                    enhanced: Some(Cow::Owned(enhanced.clone())),
                    text: Cow::Owned(text.clone()),
                }
            }
            Outcome::Disconnect { rst, after_bytes } => {
                if *after_bytes == 0 {
                    f.then = Decision::Close { rst: *rst };
                } else {
                    f.disconnect_after = Some((*after_bytes, *rst));
                }
            }
            Outcome::Stall(d) => f.stall = Some(*d),
            Outcome::IdleClose {
                after,
                code,
                enhanced,
                text,
            } => f.idle_close = Some((*after, *code, enhanced.clone(), text.clone())),
        }
        f.delay = self.delay;
        f.throttle = self.throttle;
        f.split_reply = self.split_reply;
        Decision::Fault(Box::new(f))
    }

    /// The reply code this verdict sends, if it replies.
    pub fn code(&self) -> Option<u16> {
        match &self.outcome {
            Outcome::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A short description for events (`reply 451 4.3.0`, `delay 120ms`).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(d) = self.delay {
            let _ = write!(s, "delay {}ms ", d.as_millis());
        }
        match &self.outcome {
            Outcome::Accept => s.push_str("accept"),
            Outcome::Reply { code, enhanced, .. } => {
                let _ = write!(s, "reply {code} {enhanced}");
            }
            Outcome::Disconnect { rst, after_bytes } => {
                let _ = write!(
                    s,
                    "disconnect {} after {after_bytes} bytes",
                    if *rst { "rst" } else { "fin" }
                );
            }
            Outcome::Stall(d) => {
                let _ = write!(s, "stall {}ms", d.as_millis());
            }
            Outcome::IdleClose { after, code, .. } => {
                let _ = write!(s, "idle_close {code} after {}ms", after.as_millis());
            }
        }
        if let Some(t) = self.throttle {
            let _ = write!(s, " throttle {t}B/s");
        }
        if let Some((n, _)) = self.split_reply {
            let _ = write!(s, " split_reply {n}B");
        }
        s
    }
}

/// Per-key state of a plan.
pub(crate) enum Slot {
    Count(u64),
    Bucket {
        tokens: f64,
        at: Instant,
    },
    Grey {
        first: Instant,
        last: Instant,
        passed: bool,
    },
}

/// Tags separating the state a rule keeps under one key.
pub(crate) const TAG_ATTEMPTS: u64 = 1;
const TAG_BUCKET: u64 = 2;
const TAG_GREY: u64 = 3;

pub(crate) fn state_key(rule: usize, tag: u64, key: u64) -> u64 {
    mix64(key ^ mix64(((rule as u64) << 8) | tag))
}

fn stage_sel(s: Stage) -> Option<StageSel> {
    Some(match s {
        Stage::Connect => StageSel::Connect,
        Stage::Ehlo => StageSel::Ehlo,
        Stage::StartTls => StageSel::Starttls,
        Stage::Auth => StageSel::Auth,
        Stage::Mail => StageSel::Mail,
        Stage::Rcpt => StageSel::Rcpt,
        Stage::Data => StageSel::Data,
        Stage::DataEnd => StageSel::DataEnd,
        Stage::Bdat => StageSel::Bdat,
        Stage::Rset => StageSel::Rset,
        Stage::Quit => StageSel::Quit,
        _ => return None,
    })
}

/// The bit of a stage in a plan's stage mask.
pub(crate) fn stage_bit(s: StageSel) -> u32 {
    if s == StageSel::Any {
        u32::MAX
    } else {
        1 << (s as u32)
    }
}

/// The argument of `EHLO x` / `MAIL FROM:<x>` read from the command line,
/// for the stage where the session has not stored it yet.
fn arg_of(command: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(command).ok()?;
    if let (Some(a), Some(b)) = (s.find('<'), s.find('>')) {
        return s.get(a + 1..b);
    }
    s.split_ascii_whitespace().nth(1)
}

/// The facts about a command the rules look at.
pub(crate) struct View<'a> {
    pub(crate) ctx: &'a StageContext<'a>,
    pub(crate) helo: Option<&'a str>,
    pub(crate) sender: Option<&'a str>,
}

impl<'a> View<'a> {
    pub(crate) fn new(ctx: &'a StageContext<'a>) -> View<'a> {
        View {
            ctx,
            helo: if ctx.stage == Stage::Ehlo {
                arg_of(ctx.command)
            } else {
                ctx.helo
            },
            sender: if ctx.stage == Stage::Mail {
                arg_of(ctx.command).or(Some(""))
            } else {
                ctx.sender
            },
        }
    }

    /// The recipients a condition looks at: the one being decided at RCPT,
    /// all of the transaction's after it.
    fn any_rcpt(&self, f: impl Fn(&str) -> bool) -> bool {
        match self.ctx.stage {
            Stage::Rcpt => self.ctx.rcpt.is_some_and(f),
            _ => self.ctx.recipients.iter().any(f),
        }
    }

    /// The recipients as one key part (sorted, lower-cased).
    fn rcpt_part(&self) -> Option<String> {
        if let Some(r) = self.ctx.rcpt {
            return Some(r.to_ascii_lowercase());
        }
        if self.ctx.recipients.is_empty() {
            return None;
        }
        let mut v: Vec<String> = self
            .ctx
            .recipients
            .iter()
            .map(|r| r.to_ascii_lowercase())
            .collect();
        v.sort();
        Some(v.join(","))
    }
}

fn any_glob(pats: &[String], s: &str) -> bool {
    pats.iter().any(|p| glob_match(p, s))
}

impl Rule {
    fn matches(&self, v: &View<'_>) -> bool {
        let m = &self.m;
        let ctx = v.ctx;
        if !m.clients.is_empty() && !m.clients.iter().any(|c| c.contains(ctx.peer.ip())) {
            return false;
        }
        if !m.helo.is_empty() && !v.helo.is_some_and(|h| any_glob(&m.helo, h)) {
            return false;
        }
        if !m.sender.is_empty() && !v.sender.is_some_and(|s| any_glob(&m.sender, s)) {
            return false;
        }
        if !m.recipient.is_empty() && !v.any_rcpt(|r| any_glob(&m.recipient, r)) {
            return false;
        }
        if !m.recipient_domain.is_empty()
            && !v.any_rcpt(|r| {
                let d = domain_of(r);
                m.recipient_domain.iter().any(|x| x.eq_ignore_ascii_case(d))
            })
        {
            return false;
        }
        if let Some((lo, hi)) = m.size {
            if !matches!(ctx.stage, Stage::DataEnd | Stage::Bdat)
                || !(lo..=hi).contains(&ctx.message_size)
            {
                return false;
            }
        }
        if m.tls.is_some_and(|t| t != ctx.tls) {
            return false;
        }
        if !m.auth_user.is_empty() && !ctx.auth_user.is_some_and(|u| any_glob(&m.auth_user, u)) {
            return false;
        }
        if let Some((name, re)) = &m.header {
            match ctx.header(name) {
                None => return false,
                Some(val) => {
                    if re.as_ref().is_some_and(|re| !re.is_match(val)) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The key's readable form, its decision hash (what the draw uses) and
    /// its state hash (what attempts are counted under). `None`: the key
    /// does not exist at this stage, so the rule does not apply.
    fn key(&self, v: &View<'_>) -> Option<(String, u64, u64)> {
        let ctx = v.ctx;
        let text = match self.key {
            KeyKind::Rcpt => format!("rcpt:{}", v.rcpt_part()?),
            KeyKind::Sender => format!("sender:{}", v.sender?.to_ascii_lowercase()),
            KeyKind::MessageId => format!("message_id:{}", ctx.header("message-id")?),
            KeyKind::Triplet => format!(
                "triplet:{},{},{}",
                ctx.peer.ip().to_canonical(),
                v.sender?.to_ascii_lowercase(),
                v.rcpt_part().unwrap_or_default()
            ),
            // The decision hash of connection keys leaves the id out, so
            // the n-th attempt in any connection draws the same: decisions
            // do not depend on connection order.
            KeyKind::Connection | KeyKind::Session => {
                let (name, h) = conn_hash(self.key);
                let states = connection_state_keys(self.key, ctx.session_id);
                let st = states[usize::from(ctx.tls && self.key == KeyKind::Session)];
                return Some((format!("{name}:{}", ctx.session_id), h, st));
            }
            KeyKind::Global => "global".to_string(),
        };
        let h = hash_bytes(0, text.as_bytes());
        Some((text, h, h))
    }
}

fn conn_hash(k: KeyKind) -> (&'static str, u64) {
    let name = if k == KeyKind::Session {
        "session"
    } else {
        "connection"
    };
    (name, hash_bytes(0, name.as_bytes()))
}

/// The state hashes a connection-scoped key can have for session `id`
/// (a session key has one per TLS state: STARTTLS starts a new session).
pub(crate) fn connection_state_keys(k: KeyKind, id: u64) -> Vec<u64> {
    match k {
        KeyKind::Connection => vec![mix64(conn_hash(k).1 ^ id)],
        KeyKind::Session => {
            let h = conn_hash(k).1;
            vec![
                mix64(h ^ id.wrapping_mul(2)),
                mix64(h ^ (id.wrapping_mul(2) + 1)),
            ]
        }
        _ => Vec::new(),
    }
}

/// The token bucket key of a rate limit.
fn bucket_key(by: RateBy, v: &View<'_>) -> Option<u64> {
    Some(match by {
        RateBy::Global => 0,
        RateBy::Ip => hash_bytes(1, v.ctx.peer.ip().to_canonical().to_string().as_bytes()),
        RateBy::Sender => hash_bytes(2, v.sender?.to_ascii_lowercase().as_bytes()),
        RateBy::RcptDomain => {
            let r = v.ctx.rcpt.or_else(|| v.ctx.recipients.get(0))?;
            hash_bytes(3, domain_of(r).to_ascii_lowercase().as_bytes())
        }
    })
}

impl Engine {
    /// Evaluates the active plan for `ctx` at time `now`. `None`: no rule
    /// decided (normal behaviour).
    pub fn decide_at(&self, ctx: &StageContext<'_>, now: Instant) -> Option<Verdict> {
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
                if referee_stage && code >= 400 {
                    self.referee.failed(&view, code, now, before);
                }
                if code == 421 {
                    self.referee.got_421(ctx.peer.ip(), now);
                }
            }
            self.referee.fault(ctx.peer.ip());
            self.log_event(ctx, &v);
            Some(v)
        })
    }
}

impl Active {
    fn evaluate(
        &self,
        engine: &Engine,
        sel: StageSel,
        v: &View<'_>,
        now: Instant,
    ) -> Option<Verdict> {
        let seed = self.plan.spec.seed;
        for (i, rule) in self.plan.rules.iter().enumerate() {
            if rule.stage != sel && rule.stage != StageSel::Any {
                continue;
            }
            if !rule.matches(v) {
                continue;
            }
            let Some((key, khash, kstate)) = rule.key(v) else {
                continue;
            };
            if let Some(w) = &rule.window {
                if !w.active(now.saturating_duration_since(self.loaded_at)) {
                    continue;
                }
            }
            let attempt = if rule.key == KeyKind::Global {
                self.globals[i].fetch_add(1, Ordering::Relaxed) + 1
            } else if rule.counts_attempts {
                self.state.with(
                    state_key(i, TAG_ATTEMPTS, kstate),
                    || Slot::Count(0),
                    |s| match s {
                        Slot::Count(n) => {
                            *n += 1;
                            *n
                        }
                        _ => 0,
                    },
                )
            } else {
                0
            };
            if let Some(p) = rule.probability {
                if uniform(seed, i, khash, attempt, 0) >= p {
                    continue;
                }
            }
            if rule.every.is_some_and(|n| attempt % n != 0)
                || rule.first.is_some_and(|n| attempt > n)
                || rule.after.is_some_and(|n| attempt <= n)
            {
                continue;
            }
            if let Some(rl) = &rule.rate_limit {
                let Some(bk) = bucket_key(rl.by, v) else {
                    continue;
                };
                let max = rl.max.0 as f64;
                let rate = max / rl.per_seconds.0;
                let within = self.state.with(
                    state_key(i, TAG_BUCKET, bk),
                    || Slot::Bucket {
                        tokens: max,
                        at: now,
                    },
                    |s| match s {
                        Slot::Bucket { tokens, at } => {
                            let dt = now.saturating_duration_since(*at).as_secs_f64();
                            *tokens = (*tokens + dt * rate).min(max);
                            *at = now.max(*at);
                            if *tokens >= 1.0 {
                                *tokens -= 1.0;
                                true
                            } else {
                                false
                            }
                        }
                        _ => true,
                    },
                );
                if within {
                    continue;
                }
            }
            if let Some(mc) = &rule.max_connections {
                let open = match mc.per {
                    ConnPer::Global => engine.referee.open_total(),
                    ConnPer::Ip => engine.referee.open_for(v.ctx.peer.ip()),
                };
                if open <= mc.max {
                    continue;
                }
            }
            let outcome = match &rule.primary {
                Primary::Greylist {
                    min_retry,
                    expire,
                    text,
                } => {
                    let pass = self.state.with(
                        state_key(i, TAG_GREY, kstate),
                        || Slot::Grey {
                            first: now,
                            last: now,
                            passed: false,
                        },
                        |s| grey_step(s, now, *min_retry, *expire),
                    );
                    if pass {
                        continue;
                    }
                    Outcome::Reply {
                        code: 450,
                        enhanced: "4.7.1".into(),
                        text: text.clone().unwrap_or_else(|| {
                            format!(
                                "Greylisted, please try again in {} seconds",
                                min_retry.as_secs()
                            )
                        }),
                    }
                }
                p => {
                    let seq_code = rule.sequence.as_ref().map(|s| {
                        let n = (attempt.max(1) as usize).min(s.len());
                        s[n - 1]
                    });
                    outcome_of(p, seq_code)
                }
            };
            let delay = rule.delay.map(|(d, cap)| {
                d.sample(
                    uniform(seed, i, khash, attempt, 1),
                    uniform(seed, i, khash, attempt, 2),
                    cap,
                )
            });
            return Some(Verdict {
                rule: i,
                rule_name: rule.name.clone(),
                key,
                attempt,
                delay,
                outcome,
                throttle: rule.throttle,
                split_reply: rule.split.map(|(n, gap)| (n, Duration::from_millis(gap))),
            });
        }
        None
    }
}

/// One greylisting step; `true` when the attempt passes.
fn grey_step(s: &mut Slot, now: Instant, min_retry: Duration, expire: Duration) -> bool {
    let Slot::Grey {
        first,
        last,
        passed,
    } = s
    else {
        return true;
    };
    let since = |t: Instant| now.saturating_duration_since(t);
    let stale = if *passed {
        since(*last) > expire
    } else {
        since(*first) > expire
    };
    if stale {
        *first = now;
        *passed = false;
    }
    *last = now;
    if !*passed && since(*first) >= min_retry {
        *passed = true;
    }
    *passed
}

fn outcome_of(p: &Primary, seq_code: Option<u16>) -> Outcome {
    let reply = |code: u16, enhanced: &Option<String>, text: &Option<String>| {
        let (de, dt) = default_reply(code);
        Outcome::Reply {
            code,
            // A template's enhanced code only fits codes of its class.
            enhanced: enhanced
                .clone()
                .filter(|e| e.starts_with(char::from(b'0' + (code / 100) as u8)))
                .unwrap_or_else(|| de.to_string()),
            text: text.clone().unwrap_or_else(|| dt.to_string()),
        }
    };
    if let Some(code) = seq_code {
        if code < 400 {
            return Outcome::Accept;
        }
        return match p {
            Primary::Reply { enhanced, text, .. } => reply(code, enhanced, text),
            _ => reply(code, &None, &None),
        };
    }
    match p {
        Primary::None | Primary::Accept | Primary::Greylist { .. } => Outcome::Accept,
        Primary::Reply {
            code,
            enhanced,
            text,
        } => reply(*code, enhanced, text),
        Primary::Disconnect { rst, after_bytes } => Outcome::Disconnect {
            rst: *rst,
            after_bytes: *after_bytes,
        },
        Primary::Stall(d) => Outcome::Stall(*d),
        Primary::IdleClose { after, code, text } => {
            let (de, dt) = default_reply(*code);
            Outcome::IdleClose {
                after: *after,
                code: *code,
                enhanced: if *code == 421 {
                    "4.4.2".into()
                } else {
                    de.into()
                },
                text: text.clone().unwrap_or_else(|| {
                    if *code == 421 {
                        "Idle timeout, closing connection".into()
                    } else {
                        dt.into()
                    }
                }),
            }
        }
    }
}
