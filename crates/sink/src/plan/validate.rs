//! Whole-rule checks (run while parsing, see [`super::model::Checked`]) and
//! compilation of a parsed plan into the form the engine evaluates.

use regex::Regex;

use super::glob::Glob;
use super::model::*;
use super::primary::Primary;
use super::select::{Cidr, Dist, Window};
use super::verdict::FaultAction;
use crate::hook::Stage;

/// Stages where the envelope sender is known.
const HAS_SENDER: &[StageSel] = &[
    StageSel::One(Stage::Mail),
    StageSel::One(Stage::Rcpt),
    StageSel::One(Stage::Data),
    StageSel::One(Stage::DataEnd),
    StageSel::One(Stage::Bdat),
    StageSel::Any,
];
/// Stages where recipients are known.
const HAS_RCPT: &[StageSel] = &[
    StageSel::One(Stage::Rcpt),
    StageSel::One(Stage::Data),
    StageSel::One(Stage::DataEnd),
    StageSel::One(Stage::Bdat),
    StageSel::Any,
];

fn list(stages: &[StageSel]) -> String {
    stages
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn only_at(what: &str, stage: StageSel, allowed: &[StageSel]) -> Result<(), String> {
    if allowed.contains(&stage) {
        Ok(())
    } else {
        Err(format!(
            "`{what}` cannot be used at stage {}; allowed stages: {}",
            stage.as_str(),
            list(allowed)
        ))
    }
}

/// The key a rule uses when it names none.
pub(crate) fn default_key(stage: StageSel, greylist: bool) -> KeyKind {
    match stage {
        _ if greylist => KeyKind::Triplet,
        // DNS queries have no connection to count attempts in (UDP).
        StageSel::One(Stage::Dns) => KeyKind::Global,
        StageSel::One(Stage::Rcpt) => KeyKind::Rcpt,
        StageSel::One(Stage::Mail)
        | StageSel::One(Stage::Data)
        | StageSel::One(Stage::DataEnd)
        | StageSel::One(Stage::Bdat) => KeyKind::Sender,
        _ => KeyKind::Connection,
    }
}

fn check_enhanced(code: u16, enhanced: &str) -> Result<(), String> {
    let parts: Vec<&str> = enhanced.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        && matches!(parts[0], "2" | "4" | "5");
    if !ok {
        return Err(format!(
            "enhanced code `{enhanced}` is malformed; expected class.subject.detail with class 2, 4 or 5 (e.g. 4.7.1)"
        ));
    }
    let class = (code / 100).to_string();
    let want = if class == "3" { "2" } else { class.as_str() };
    if parts[0] != want {
        return Err(format!(
            "enhanced code `{enhanced}` does not match reply code {code}; its class must be {want}"
        ));
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), String> {
    if text.bytes().any(|b| b == b'\r' || b == 0) {
        Err("reply text must not contain CR or NUL (use \\n for a multi-line reply)".into())
    } else if text.split('\n').any(|l| l.len() > 400) {
        Err("reply text lines must be at most 400 octets (RFC 5321 reply line limit)".into())
    } else {
        Ok(())
    }
}

/// Builds the delay distribution, naming the missing or foreign parameter.
pub(crate) fn dist(d: &DelaySpec) -> Result<(Dist, f64), String> {
    let cap = d.cap_ms.map_or(600_000.0, |c| c.0);
    let given: Vec<(&str, Option<f64>)> = vec![
        ("min", d.min_ms.map(|v| v.0)),
        ("max", d.max_ms.map(|v| v.0)),
        ("mean", d.mean_ms.map(|v| v.0)),
        ("stddev", d.stddev_ms.map(|v| v.0)),
        ("median", d.median_ms.map(|v| v.0)),
        ("p99", d.p99_ms.map(|v| v.0)),
        ("scale", d.scale_ms.map(|v| v.0)),
        ("shape", d.shape.map(|v| v.0)),
    ];
    let (kind, params): (&str, &[&str]) = match (d.ms, d.distribution) {
        (Some(_), Some(_)) => {
            return Err("delay: give either `fixed` or `distribution`, not both".into())
        }
        (None, None) => {
            return Err("delay: give `fixed` (or write `delay: 200ms`) or `distribution` (allowed: uniform, normal, lognormal, exponential, pareto)".into())
        }
        (Some(_), None) => ("fixed", &[]),
        (None, Some(DistKind::Uniform)) => ("uniform", &["min", "max"]),
        (None, Some(DistKind::Normal)) => ("normal", &["mean", "stddev"]),
        (None, Some(DistKind::Lognormal)) => ("lognormal", &["median", "p99"]),
        (None, Some(DistKind::Exponential)) => ("exponential", &["mean"]),
        (None, Some(DistKind::Pareto)) => ("pareto", &["scale", "shape"]),
    };
    for (k, v) in &given {
        if v.is_some() && !params.contains(k) {
            return Err(format!(
                "delay: `{k}` does not apply to a {kind} delay; its parameters: {}",
                if params.is_empty() {
                    "fixed".to_string()
                } else {
                    params.join(", ")
                }
            ));
        }
    }
    let get = |k: &str| -> Result<f64, String> {
        given
            .iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| *v)
            .ok_or_else(|| format!("delay: a {kind} delay needs `{}`", params.join("` and `")))
    };
    let dist = match d.distribution {
        None => Dist::Fixed(d.ms.map_or(0.0, |m| m.0)),
        Some(DistKind::Uniform) => {
            let (min, max) = (get("min")?, get("max")?);
            if max < min {
                return Err("delay: max must be >= min".into());
            }
            Dist::Uniform { min, max }
        }
        Some(DistKind::Normal) => Dist::Normal {
            mean: get("mean")?,
            stddev: get("stddev")?,
        },
        Some(DistKind::Lognormal) => {
            let (median, p99) = (get("median")?, get("p99")?);
            if median <= 0.0 || p99 < median {
                return Err("delay: lognormal needs 0 < median <= p99".into());
            }
            Dist::LogNormal { median, p99 }
        }
        Some(DistKind::Exponential) => Dist::Exponential { mean: get("mean")? },
        Some(DistKind::Pareto) => {
            let (scale, shape) = (get("scale")?, get("shape")?);
            if shape <= 0.0 {
                return Err("delay: pareto shape must be > 0".into());
            }
            Dist::Pareto { scale, shape }
        }
    };
    Ok((dist, cap))
}

/// The window in compiled form.
pub(crate) fn window(w: &WindowSpec) -> Result<Window, String> {
    let from = w.from.0;
    let period = w.period.map_or(0.0, |p| p.0);
    let to = match (w.to, w.duty) {
        (Some(_), Some(_)) => return Err("window: give `to` or `duty`, not both".into()),
        (Some(to), None) => to.0,
        (None, Some(d)) => {
            if period <= 0.0 {
                return Err("window: `duty` needs a `period`".into());
            }
            if d.0 <= 0.0 || d.0 > 1.0 {
                return Err(format!(
                    "window: duty {} is out of range; allowed: (0, 1]",
                    d.0
                ));
            }
            from + d.0 * period
        }
        (None, None) => f64::INFINITY,
    };
    if to <= from {
        return Err(format!(
            "window: `to` ({to}) must be greater than `from` ({from})"
        ));
    }
    if w.period.is_some() {
        if period <= 0.0 {
            return Err("window: period must be > 0".into());
        }
        if from >= period || to > period {
            return Err(format!(
                "window: with period {period}, `from` and `to` must lie within one period (0..={period})"
            ));
        }
    }
    Ok(Window { from, to, period })
}

/// Compiles the header condition.
pub(crate) fn header(h: &HeaderSpec) -> Result<(String, Option<Regex>), String> {
    if h.name.is_empty() || h.name.bytes().any(|b| b == b':' || b.is_ascii_whitespace()) {
        return Err(format!(
            "match.header.name `{}` is not a header field name",
            h.name
        ));
    }
    let re = match &h.regex {
        Some(r) => Some(
            Regex::new(r).map_err(|e| format!("match.header.regex is not a valid regex: {e}"))?,
        ),
        None => None,
    };
    Ok((h.name.to_ascii_lowercase(), re))
}

impl Check for RuleSpec {
    fn check(&self) -> Result<(), String> {
        let st = self.stage;
        let m = &self.matches;
        if m.sender.is_some() {
            only_at("match.sender", st, HAS_SENDER)?;
        }
        if m.recipient.is_some() {
            only_at("match.recipient", st, HAS_RCPT)?;
        }
        if m.recipient_domain.is_some() {
            only_at("match.recipient_domain", st, HAS_RCPT)?;
        }
        if let Some(h) = &m.header {
            only_at("match.header", st, &[StageSel::One(Stage::DataEnd)])?;
            header(h)?;
        }
        if m.size.is_some() {
            only_at(
                "match.size",
                st,
                &[
                    StageSel::One(Stage::DataEnd),
                    StageSel::One(Stage::Bdat),
                    StageSel::Any,
                ],
            )?;
        }
        if let Some(s) = m.size {
            if s.max.is_some_and(|max| max < s.min) {
                return Err("match.size: max must be >= min".into());
            }
        }
        if m.helo.is_some() && st == StageSel::One(Stage::Connect) {
            return Err("`match.helo` cannot be used at stage connect (no EHLO yet)".into());
        }
        if m.auth_user.is_some()
            && matches!(
                st,
                StageSel::One(Stage::Connect) | StageSel::One(Stage::Ehlo)
            )
        {
            return Err(
                "`match.auth_user` cannot be used before AUTH (stage connect or ehlo)".into(),
            );
        }
        for c in m.client.iter().flat_map(|c| c.as_slice()) {
            Cidr::parse(c).map_err(|e| format!("match.client: {e}"))?;
        }
        let a = &self.action;
        let primaries: Vec<&str> = [
            ("reply", a.reply.is_some()),
            ("greylist", a.greylist.is_some()),
            ("disconnect", a.disconnect.is_some()),
            ("stall", a.stall.is_some()),
            ("idle_close", a.idle_close.is_some()),
            ("accept", a.accept),
            ("queue", a.queue.is_some()),
            ("dns", a.dns.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
        if primaries.len() > 1 {
            return Err(format!(
                "action: `{}` cannot be combined; use one of reply, greylist, disconnect, stall, idle_close, accept, dns (delay, throttle and split_reply may accompany it)",
                primaries.join("` and `")
            ));
        }
        let modifiers = a.delay.is_some() || a.throttle.is_some() || a.split_reply.is_some();
        if primaries.is_empty() && !modifiers && self.sequence.is_none() {
            return Err("rule has no action; give `action` with one of: reply, delay, disconnect, stall, throttle, split_reply, greylist, idle_close, accept (or a `sequence`)".into());
        }
        super::dns_rules::check_dns(self)?;
        if let Some(r) = &a.reply {
            if let Some(e) = &r.enhanced {
                check_enhanced(r.code.0, e)?;
            }
            if let Some(t) = &r.text {
                check_text(t)?;
            }
        }
        if let Some(g) = &a.greylist {
            only_at(
                "action.greylist",
                st,
                &[
                    StageSel::One(Stage::Mail),
                    StageSel::One(Stage::Rcpt),
                    StageSel::One(Stage::Data),
                    StageSel::One(Stage::DataEnd),
                ],
            )?;
            if g.expire <= g.min_retry {
                return Err("action.greylist: expire must be greater than min_retry".into());
            }
            if let Some(t) = &g.text {
                check_text(t)?;
            }
        }
        if let Some(i) = &a.idle_close {
            if i.code.0 < 400 {
                return Err(format!(
                    "action.idle_close.code {} must be 4xx or 5xx",
                    i.code.0
                ));
            }
            if i.after.is_zero() {
                return Err("action.idle_close.after must be > 0".into());
            }
        }
        if let Some(d) = &a.delay {
            dist(d)?;
        }
        if let Some(q) = &a.queue {
            only_at("action.queue", st, &[StageSel::One(Stage::DataEnd)])?;
            if a.delay.is_some() {
                return Err(
                    "action.queue: its `service` is the delay; remove `delay` from this rule"
                        .into(),
                );
            }
            if q.workers.0 > super::queue::MAX_WORKERS {
                return Err(format!(
                    "action.queue.workers {} is over {}",
                    q.workers.0,
                    super::queue::MAX_WORKERS
                ));
            }
            if q.max_queue > super::queue::MAX_QUEUE {
                return Err(format!(
                    "action.queue.max_queue {} is over {}",
                    q.max_queue,
                    super::queue::MAX_QUEUE
                ));
            }
            dist(&q.service).map_err(|e| format!("action.queue.service: {e}"))?;
            if let Some(o) = &q.overflow {
                if o.reply.code.0 < 400 {
                    return Err(format!(
                        "action.queue.overflow.reply.code {} must be 4xx or 5xx",
                        o.reply.code.0
                    ));
                }
                if let Some(e) = &o.reply.enhanced {
                    check_enhanced(o.reply.code.0, e)?;
                }
                if let Some(t) = &o.reply.text {
                    check_text(t)?;
                }
            }
        }
        if let Some(seq) = &self.sequence {
            if seq.is_empty() {
                return Err("sequence must list at least one step (reply codes)".into());
            }
            if !primaries.iter().all(|p| *p == "reply") {
                return Err(format!(
                    "`sequence` decides the reply code; it cannot be combined with action `{}` (only reply, delay, throttle, split_reply)",
                    primaries.join("`, `")
                ));
            }
        }
        if let Some(w) = &self.window {
            window(w)?;
        }
        if let Some(r) = &self.rate_limit {
            if r.per_seconds.0 <= 0.0 {
                return Err("rate_limit.per must be > 0".into());
            }
            match r.by {
                RateBy::Sender => only_at("rate_limit by sender", st, HAS_SENDER)?,
                RateBy::RcptDomain => only_at("rate_limit by rcpt_domain", st, HAS_RCPT)?,
                _ => {}
            }
        }
        if self.max_connections.is_some() {
            only_at("max_connections", st, &[StageSel::One(Stage::Connect)])?;
        }
        if let Some(k) = self.key {
            match k {
                KeyKind::Rcpt => only_at("key: rcpt", st, HAS_RCPT)?,
                KeyKind::Sender | KeyKind::Triplet => {
                    only_at(&format!("key: {k:?}").to_lowercase(), st, HAS_SENDER)?
                }
                KeyKind::MessageId => only_at(
                    "key: message_id",
                    st,
                    &[StageSel::One(Stage::DataEnd), StageSel::Any],
                )?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A compiled rule's matcher.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    pub(crate) clients: Vec<Cidr>,
    pub(crate) helo: Vec<Glob>,
    pub(crate) sender: Vec<Glob>,
    pub(crate) recipient: Vec<Glob>,
    pub(crate) recipient_domain: Vec<String>,
    pub(crate) header: Option<(String, Option<Regex>)>,
    pub(crate) size: Option<(u64, u64)>,
    pub(crate) tls: Option<bool>,
    pub(crate) auth_user: Vec<Glob>,
    /// Lower case, without the final dot.
    pub(crate) qname: Vec<Glob>,
    /// Upper case.
    pub(crate) qtype: Vec<String>,
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) stage: StageSel,
    pub(crate) m: Matcher,
    pub(crate) key: KeyKind,
    pub(crate) probability: Option<f64>,
    pub(crate) every: Option<u64>,
    pub(crate) first: Option<u64>,
    pub(crate) after: Option<u64>,
    pub(crate) sequence: Option<Vec<SeqStep>>,
    pub(crate) window: Option<Window>,
    pub(crate) rate_limit: Option<RateLimitSpec>,
    pub(crate) max_connections: Option<MaxConnSpec>,
    pub(crate) primary: Primary,
    pub(crate) delay: Option<(Dist, f64)>,
    pub(crate) throttle: Option<u64>,
    pub(crate) split: Option<(usize, u64)>,
    /// Needs the per-key attempt counter.
    pub(crate) counts_attempts: bool,
}

fn globs(v: &Option<OneOrMany<String>>) -> Vec<Glob> {
    v.iter()
        .flat_map(|x| x.as_slice())
        .map(|p| Glob::new(p))
        .collect()
}

/// Compiles a checked rule.
pub(crate) fn compile_rule(index: usize, r: &RuleSpec) -> Result<Rule, String> {
    let m = &r.matches;
    let matcher = Matcher {
        clients: m
            .client
            .iter()
            .flat_map(|c| c.as_slice())
            .map(|c| Cidr::parse(c))
            .collect::<Result<_, _>>()?,
        helo: globs(&m.helo),
        sender: globs(&m.sender),
        recipient: globs(&m.recipient),
        recipient_domain: m
            .recipient_domain
            .iter()
            .flat_map(|x| x.as_slice())
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        header: m.header.as_ref().map(header).transpose()?,
        size: m.size.map(|s| (s.min, s.max.unwrap_or(u64::MAX))),
        tls: m.tls,
        auth_user: globs(&m.auth_user),
        qname: m
            .qname
            .iter()
            .flat_map(|x| x.as_slice())
            .map(|d| Glob::new(&d.trim_end_matches('.').to_ascii_lowercase()))
            .collect(),
        qtype: m
            .qtype
            .iter()
            .flat_map(|x| x.as_slice())
            .map(|t| t.to_ascii_uppercase())
            .collect(),
    };
    let a = &r.action;
    let primary = if let Some(rep) = &a.reply {
        Primary::Reply {
            code: rep.code.0,
            enhanced: rep.enhanced.clone(),
            text: rep.text.clone(),
        }
    } else if let Some(g) = &a.greylist {
        Primary::Greylist {
            min_retry: g.min_retry,
            expire: g.expire,
            text: g.text.clone(),
        }
    } else if let Some(d) = &a.disconnect {
        Primary::Fixed(FaultAction::Disconnect {
            rst: d.mode == CloseMode::Rst,
            after_bytes: d.after_bytes,
        })
    } else if let Some(s) = &a.stall {
        Primary::Fixed(FaultAction::Stall(s.duration))
    } else if let Some(i) = &a.idle_close {
        Primary::IdleClose {
            after: i.after,
            code: i.code.0,
            text: i.text.clone(),
        }
    } else if let Some(q) = &a.queue {
        let (code, enhanced, text) = match &q.overflow {
            Some(o) => (
                o.reply.code.0,
                o.reply.enhanced.clone(),
                o.reply.text.clone(),
            ),
            None => (421, None, Some("Too busy, try again later".to_string())),
        };
        let (de, dt) = super::primary::default_reply(code);
        Primary::Queue {
            model: std::sync::Arc::new(super::queue::QueueModel::new(
                q.workers.0,
                q.max_queue,
                dist(&q.service)?,
            )),
            overflow: (
                code,
                enhanced.unwrap_or_else(|| de.to_string()),
                text.unwrap_or_else(|| dt.to_string()),
            ),
        }
    } else if let Some(f) = a.dns {
        Primary::Fixed(FaultAction::Dns(f))
    } else if a.accept {
        Primary::Accept
    } else {
        Primary::None
    };
    let greylist = matches!(primary, Primary::Greylist { .. });
    let key = r.key.unwrap_or_else(|| default_key(r.stage, greylist));
    let counts_attempts = r.probability.is_some()
        || r.every.is_some()
        || r.first.is_some()
        || r.after.is_some()
        || r.sequence.is_some()
        || a.delay.as_ref().is_some_and(|d| d.distribution.is_some());
    Ok(Rule {
        name: r
            .name
            .clone()
            .unwrap_or_else(|| format!("rule{index}"))
            .into(),
        stage: r.stage,
        m: matcher,
        key,
        probability: r.probability.map(|p| p.0),
        every: r.every.map(|e| e.0),
        first: r.first,
        after: r.after,
        sequence: r.sequence.clone(),
        window: r.window.as_ref().map(window).transpose()?,
        rate_limit: r.rate_limit,
        max_connections: r.max_connections,
        primary,
        delay: a.delay.as_ref().map(dist).transpose()?,
        throttle: a.throttle.map(|t| t.bytes_per_sec.0),
        split: a
            .split_reply
            .map(|s| (s.fragment_bytes.0.min(65_536) as usize, s.gap_ms)),
        counts_attempts,
    })
}
