//! Whole-rule checks for `stage: dns` (the DNS responder's faults): which
//! keys a DNS rule may use, and that the DNS keys stay at stage dns.

use super::model::{RuleSpec, StageSel};
use crate::hook::Stage;

/// The same wording as the other stage checks (`validate::only_at`),
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
        return Ok(());
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
        ("sequence", r.sequence.is_some()),
        ("max_connections", r.max_connections.is_some()),
    ];
    if let Some((what, _)) = smtp_only.iter().find(|(_, on)| *on) {
        return Err(format!(
            "`{what}` cannot be used at stage dns; it takes match.client, match.qname, match.qtype and the actions dns (servfail, nxdomain, no_answer, truncate), delay and accept"
        ));
    }
    Ok(())
}
