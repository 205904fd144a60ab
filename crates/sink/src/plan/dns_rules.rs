//! Whole-rule checks for `stage: dns` (the DNS responder's faults): which
//! keys a DNS rule may use, and that the DNS keys stay at stage dns.

use super::model::{RuleSpec, SeqStep, StageSel, DNS_STEPS};
use crate::hook::Stage;

/// The same wording as the other stage checks (`validate::rule_checks::only_at`),
/// without depending on that module (it calls this one).
fn only_at(what: &str, stage: StageSel, allowed: &[StageSel]) -> Result<(), String> {
    if allowed.contains(&stage) {
        Ok(())
    } else {
        Err(format!(
            "`{what}` cannot be used at stage {}; allowed stages: dns",
            stage.as_str()
        ))
    }
}

/// Stage dns takes `match.client`, `qname` and `qtype` and the actions
/// `dns`, `delay` and `accept`; the DNS keys belong to stage dns alone.
pub(super) fn check_dns(r: &RuleSpec) -> Result<(), String> {
    const DNS: &[StageSel] = &[StageSel::One(Stage::Dns)];
    let m = &r.matches;
    let a = &r.action;
    if m.qname.is_some() {
        only_at("match.qname", r.stage, DNS)?;
    }
    if m.qtype.is_some() {
        only_at("match.qtype", r.stage, DNS)?;
    }
    if a.dns.is_some() {
        only_at("action.dns", r.stage, DNS)?;
    }
    if r.stage != StageSel::One(Stage::Dns) {
        if let Some(d) = r
            .sequence
            .iter()
            .flatten()
            .find(|s| matches!(s, SeqStep::Dns(_)))
        {
            return Err(format!(
                "`sequence` step `{d}` is a DNS outcome: it applies at stage dns only; at stage {} a sequence lists reply codes (e.g. [451, 451, 250])",
                r.stage.as_str()
            ));
        }
        return Ok(());
    }
    if let Some(seq) = &r.sequence {
        check_dns_sequence(r, seq)?;
    }
    let smtp_only = [
        ("match.helo", m.helo.is_some()),
        ("match.tls", m.tls.is_some()),
        ("match.auth_user", m.auth_user.is_some()),
        ("action.reply", a.reply.is_some()),
        ("action.disconnect", a.disconnect.is_some()),
        ("action.stall", a.stall.is_some()),
        ("action.throttle", a.throttle.is_some()),
        ("action.split_reply", a.split_reply.is_some()),
        ("action.idle_close", a.idle_close.is_some()),
        ("max_connections", r.max_connections.is_some()),
    ];
    if let Some((what, _)) = smtp_only.iter().find(|(_, on)| *on) {
        return Err(format!(
            "`{what}` cannot be used at stage dns; it takes match.client, match.qname, match.qtype and the actions dns (servfail, nxdomain, no_answer, truncate), delay and accept"
        ));
    }
    Ok(())
}

/// A `sequence` at stage dns lists DNS outcomes and decides the outcome
/// itself, so it takes no `dns` or `accept` action (a `delay` may
/// accompany it).
fn check_dns_sequence(r: &RuleSpec, seq: &[SeqStep]) -> Result<(), String> {
    if seq.is_empty() {
        return Err(format!(
            "sequence must list at least one step; at stage dns: {DNS_STEPS}"
        ));
    }
    if let Some(c) = seq.iter().find(|s| matches!(s, SeqStep::Code(_))) {
        return Err(format!(
            "`sequence` step {c} is a reply code; at stage dns a sequence lists DNS outcomes: {DNS_STEPS} (e.g. [servfail, servfail, answer])"
        ));
    }
    let a = &r.action;
    if a.dns.is_some() || a.accept {
        return Err(format!(
            "`sequence` decides the DNS outcome; it cannot be combined with action `{}` (only delay)",
            if a.accept { "accept" } else { "dns" }
        ));
    }
    Ok(())
}
