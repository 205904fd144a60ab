//! [`Check`] for [`RuleSpec`]: what one field cannot say alone, checked
//! when the rule's mapping ends (so the error points at the rule): keys
//! used at a stage that lacks what they need, actions that cannot be
//! combined, reply codes and texts, and the parts that must build (delay,
//! window, header). The stage dns rules are in `plan/dns_rules.rs`.

use super::parts::{dist, header, window};
use crate::hook::Stage;
use crate::plan::model::{Check, KeyKind, RateBy, RuleSpec, StageSel};
use crate::plan::select::Cidr;

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
        crate::plan::dns_rules::check_dns(self)?;
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
            if q.workers.0 > crate::plan::queue::MAX_WORKERS {
                return Err(format!(
                    "action.queue.workers {} is over {}",
                    q.workers.0,
                    crate::plan::queue::MAX_WORKERS
                ));
            }
            if q.max_queue > crate::plan::queue::MAX_QUEUE {
                return Err(format!(
                    "action.queue.max_queue {} is over {}",
                    q.max_queue,
                    crate::plan::queue::MAX_QUEUE
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
