//! Which rules apply: a rule's stage and its `match` conditions.

use super::glob::Glob;
use super::model::StageSel;
use super::select::domain_of;
use super::validate::Rule;
use super::view::View;
use crate::hook::{EarlyLook, Stage};

/// The bit of a stage in a plan's stage mask.
pub(crate) fn stage_bit(s: StageSel) -> u32 {
    match s {
        StageSel::One(stage) => 1 << stage.index(),
        StageSel::Any => u32::MAX,
    }
}

fn any_glob(pats: &[Glob], s: &str) -> bool {
    pats.iter().any(|p| p.matches(s))
}

impl Rule {
    pub(super) fn matches(&self, v: &View<'_>) -> bool {
        let m = &self.m;
        let ctx = v.ctx;
        // `stage: any` means every SMTP stage: a DNS query is decided by
        // `stage: dns` rules alone.
        if ctx.stage == Stage::Dns {
            if self.stage != StageSel::One(Stage::Dns) {
                return false;
            }
            let qname = ctx.rcpt.unwrap_or("");
            if !m.qname.is_empty() && !any_glob(&m.qname, qname) {
                return false;
            }
            let qtype = std::str::from_utf8(ctx.command).unwrap_or("");
            if !m.qtype.is_empty() && !m.qtype.iter().any(|t| t == qtype) {
                return false;
            }
        }
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
        if !m.recipient_domain.is_empty() && !v.any_rcpt(|r| in_domains(&m.recipient_domain, r)) {
            return false;
        }
        if m.size
            .is_some_and(|range| !size_in(range, ctx.stage, ctx.message_size))
        {
            return false;
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

    /// Whether one of the rule's conditions fails on the facts of an
    /// [`EarlyLook`] alone: the reverse-path at MAIL, the recipient at
    /// RCPT, the message size. `true` means [`Rule::matches`] would be
    /// `false` whatever the rest of the context holds: each test below is
    /// the one `matches` makes on the same value (at MAIL the view's
    /// sender is the reverse-path, at RCPT its recipient the one
    /// decided).
    pub(super) fn refuted_early(&self, early: &EarlyLook<'_>) -> bool {
        let m = &self.m;
        if m.size
            .is_some_and(|range| !size_in(range, early.stage, early.message_size))
        {
            return true;
        }
        match (early.stage, early.arg) {
            (Stage::Mail, Some(sender)) => !m.sender.is_empty() && !any_glob(&m.sender, sender),
            (Stage::Rcpt, Some(rcpt)) => {
                (!m.recipient.is_empty() && !any_glob(&m.recipient, rcpt))
                    || (!m.recipient_domain.is_empty() && !in_domains(&m.recipient_domain, rcpt))
            }
            _ => false,
        }
    }
}

/// The `recipient_domain` condition on one recipient.
fn in_domains(domains: &[String], rcpt: &str) -> bool {
    let d = domain_of(rcpt);
    domains.iter().any(|x| x.eq_ignore_ascii_case(d))
}

/// The `size` condition: only a whole message (end of data) or the chunks
/// so far (BDAT) have a size.
fn size_in((lo, hi): (u64, u64), stage: Stage, size: u64) -> bool {
    matches!(stage, Stage::DataEnd | Stage::Bdat) && (lo..=hi).contains(&size)
}
