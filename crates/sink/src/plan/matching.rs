//! Which rules apply: a rule's stage and its `match` conditions.

use super::model::StageSel;
use super::select::{domain_of, glob_match};
use super::validate::Rule;
use super::view::View;
use crate::hook::Stage;

pub(super) fn stage_sel(s: Stage) -> Option<StageSel> {
    s.is_consulted().then_some(StageSel::One(s))
}

/// The bit of a stage in a plan's stage mask.
pub(crate) fn stage_bit(s: StageSel) -> u32 {
    match s {
        StageSel::One(stage) => 1 << stage.index(),
        StageSel::Any => u32::MAX,
    }
}

fn any_glob(pats: &[String], s: &str) -> bool {
    pats.iter().any(|p| glob_match(p, s))
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
}
