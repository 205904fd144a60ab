//! Rule evaluation. [`Engine::decide_at`] is the whole decision: it takes
//! the time as an argument (tests inject it) and reads no clock itself.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model::{ConnPer, KeyKind, RateBy, StageSel};
use super::select::{
    cmp_lower, domain_of, glob_match, hash_bytes, mix64, uniform, IpText, KeyHasher,
};
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
    /// The rule's name (shared with the plan: producing a verdict copies
    /// no string).
    pub rule_name: Arc<str>,
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

/// Per-key state of a plan other than attempt counters (those are plain
/// `u64`s in a map of their own, [`Active::counts`]).
pub(crate) enum Slot {
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

    /// The recipients as one key part (sorted, lower-cased): the one being
    /// decided at RCPT, else the transaction's. `None` when there are none.
    fn rcpt_part(&self) -> Option<RcptPart<'a>> {
        if let Some(r) = self.ctx.rcpt {
            return Some(RcptPart::One(r));
        }
        match RcptPart::all(self.ctx) {
            RcptPart::Empty => None,
            p => Some(p),
        }
    }
}

/// Recipients as a key part: ASCII-lower-cased, sorted, joined by a
/// separator. Hashed piecewise ([`RcptPart::feed`]) on the hot path; the
/// text ([`RcptPart::text`]) is built only for a verdict or a record.
pub(crate) enum RcptPart<'a> {
    Empty,
    One(&'a str),
    /// Two or more, sorted as their lower-cased forms sort.
    Many(Vec<&'a str>),
}

impl<'a> RcptPart<'a> {
    /// All of the transaction's recipients.
    pub(crate) fn all(ctx: &StageContext<'a>) -> RcptPart<'a> {
        match ctx.recipients.len() {
            0 => RcptPart::Empty,
            1 => ctx.recipients.get(0).map_or(RcptPart::Empty, RcptPart::One),
            _ => {
                let mut v: Vec<&'a str> = ctx.recipients.iter().collect();
                v.sort_by(|a, b| cmp_lower(a, b));
                RcptPart::Many(v)
            }
        }
    }

    /// Length of the text with separator `sep`.
    pub(crate) fn len(&self, sep: &str) -> usize {
        match self {
            RcptPart::Empty => 0,
            RcptPart::One(r) => r.len(),
            RcptPart::Many(v) => {
                v.iter().map(|r| r.len()).sum::<usize>() + (v.len() - 1) * sep.len()
            }
        }
    }

    /// Feeds the text with separator `sep`.
    pub(crate) fn feed(&self, k: &mut KeyHasher, sep: &str) {
        match self {
            RcptPart::Empty => {}
            RcptPart::One(r) => {
                k.lower(r.as_bytes());
            }
            RcptPart::Many(v) => {
                for (i, r) in v.iter().enumerate() {
                    if i > 0 {
                        k.bytes(sep.as_bytes());
                    }
                    k.lower(r.as_bytes());
                }
            }
        }
    }

    /// The text with separator `sep`.
    pub(crate) fn text(&self, sep: &str) -> String {
        match self {
            RcptPart::Empty => String::new(),
            RcptPart::One(r) => r.to_ascii_lowercase(),
            RcptPart::Many(v) => v
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(sep),
        }
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

    /// The key's decision hash (what the draw uses) and its state hash
    /// (what attempts are counted under). `None`: the key does not exist at
    /// this stage, so the rule does not apply.
    ///
    /// For text keys both are `hash_bytes(0, text)` of the readable form
    /// ([`Rule::key_text`]), computed piecewise without building the text.
    fn key_hashes(&self, v: &View<'_>) -> Option<(u64, u64)> {
        let ctx = v.ctx;
        let h = match self.key {
            KeyKind::Rcpt => {
                let r = v.rcpt_part()?;
                let mut k = KeyHasher::new(0, "rcpt:".len() + r.len(","));
                k.bytes(b"rcpt:");
                r.feed(&mut k, ",");
                k.finish()
            }
            KeyKind::Sender => {
                let s = v.sender?.as_bytes();
                KeyHasher::new(0, "sender:".len() + s.len())
                    .bytes(b"sender:")
                    .lower(s)
                    .finish()
            }
            KeyKind::MessageId => {
                let m = ctx.header("message-id")?.as_bytes();
                KeyHasher::new(0, "message_id:".len() + m.len())
                    .bytes(b"message_id:")
                    .bytes(m)
                    .finish()
            }
            KeyKind::Triplet => {
                let s = v.sender?.as_bytes();
                let ip = IpText::new(ctx.peer.ip());
                let r = v.rcpt_part().unwrap_or(RcptPart::Empty);
                let len = "triplet:".len() + ip.as_bytes().len() + 1 + s.len() + 1 + r.len(",");
                let mut k = KeyHasher::new(0, len);
                k.bytes(b"triplet:")
                    .bytes(ip.as_bytes())
                    .bytes(b",")
                    .lower(s)
                    .bytes(b",");
                r.feed(&mut k, ",");
                k.finish()
            }
            // The decision hash of connection keys leaves the id out, so
            // the n-th attempt in any connection draws the same: decisions
            // do not depend on connection order.
            KeyKind::Connection | KeyKind::Session => {
                let (_, h) = conn_hash(self.key);
                let (states, _) = connection_state_keys(self.key, ctx.session_id);
                let st = states[usize::from(ctx.tls && self.key == KeyKind::Session)];
                return Some((h, st));
            }
            KeyKind::Global => hash_bytes(0, b"global"),
        };
        Some((h, h))
    }

    /// The key's readable form (`rcpt:bob@example.test`), built only when
    /// a verdict is produced. Call only when [`Rule::key_hashes`] gave
    /// `Some`.
    fn key_text(&self, v: &View<'_>) -> String {
        let ctx = v.ctx;
        let lower = |s: Option<&str>| s.unwrap_or_default().to_ascii_lowercase();
        let rcpts = || v.rcpt_part().map(|r| r.text(",")).unwrap_or_default();
        match self.key {
            KeyKind::Rcpt => format!("rcpt:{}", rcpts()),
            KeyKind::Sender => format!("sender:{}", lower(v.sender)),
            KeyKind::MessageId => {
                format!(
                    "message_id:{}",
                    ctx.header("message-id").unwrap_or_default()
                )
            }
            KeyKind::Triplet => format!(
                "triplet:{},{},{}",
                ctx.peer.ip().to_canonical(),
                lower(v.sender),
                rcpts()
            ),
            KeyKind::Connection | KeyKind::Session => {
                format!("{}:{}", conn_hash(self.key).0, ctx.session_id)
            }
            KeyKind::Global => "global".to_string(),
        }
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
/// (a session key has one per TLS state: STARTTLS starts a new session),
/// and how many of the two are used.
pub(crate) fn connection_state_keys(k: KeyKind, id: u64) -> ([u64; 2], usize) {
    match k {
        KeyKind::Connection => ([mix64(conn_hash(k).1 ^ id), 0], 1),
        KeyKind::Session => {
            let h = conn_hash(k).1;
            (
                [
                    mix64(h ^ id.wrapping_mul(2)),
                    mix64(h ^ (id.wrapping_mul(2) + 1)),
                ],
                2,
            )
        }
        _ => ([0; 2], 0),
    }
}

/// The token bucket key of a rate limit.
fn bucket_key(by: RateBy, v: &View<'_>) -> Option<u64> {
    Some(match by {
        RateBy::Global => 0,
        RateBy::Ip => hash_bytes(1, IpText::new(v.ctx.peer.ip()).as_bytes()),
        RateBy::Sender => {
            let s = v.sender?.as_bytes();
            KeyHasher::new(2, s.len()).lower(s).finish()
        }
        RateBy::RcptDomain => {
            let r = v.ctx.rcpt.or_else(|| v.ctx.recipients.get(0))?;
            let d = domain_of(r).as_bytes();
            KeyHasher::new(3, d.len()).lower(d).finish()
        }
    })
}

/// The time of one decision: given (tests, [`Engine::decide_at`]) or read
/// from the clock at most once, and only if a rule or the referee needs it
/// (a window, a bucket, a greylist entry, a failure record). Most
/// decisions read no clock at all.
pub(crate) struct Now(Cell<Option<Instant>>);

impl Now {
    /// A fixed time.
    pub(crate) fn at(t: Instant) -> Now {
        Now(Cell::new(Some(t)))
    }

    /// The clock, read on first use.
    pub(crate) fn lazy() -> Now {
        Now(Cell::new(None))
    }

    /// The time.
    pub(crate) fn get(&self) -> Instant {
        match self.0.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.0.set(Some(t));
                t
            }
        }
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
                if referee_stage && code >= 400 {
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
    fn evaluate(&self, engine: &Engine, sel: StageSel, v: &View<'_>, now: &Now) -> Option<Verdict> {
        let seed = self.plan.spec.seed;
        for (i, rule) in self.plan.rules.iter().enumerate() {
            if rule.stage != sel && rule.stage != StageSel::Any {
                continue;
            }
            if !rule.matches(v) {
                continue;
            }
            let Some((khash, kstate)) = rule.key_hashes(v) else {
                continue;
            };
            if let Some(w) = &rule.window {
                if !w.active(now.get().saturating_duration_since(self.loaded_at)) {
                    continue;
                }
            }
            let attempt = if rule.key == KeyKind::Global {
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
                let now = now.get();
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
                    let now = now.get();
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
            let key = rule.key_text(v);
            debug_assert!(
                matches!(rule.key, KeyKind::Connection | KeyKind::Session)
                    || hash_bytes(0, key.as_bytes()) == khash,
                "piecewise key hash differs from the hash of `{key}`"
            );
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
