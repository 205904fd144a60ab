//! One client's record: counters, the figures the verdicts judge, and a
//! few lines of evidence per rule (bounded).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::secs_text;
use crate::hook::{ReplyClass, SessionEnd};

/// The verdict rules, in `model::METRICS` order (indexes evidence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    Retry4xxMinInterval,
    RetriesPer4xx,
    ResentAfter5xx,
    CommandsAfter421,
    ReconnectAfter421,
    SizeViolations,
    UnannouncedPipelining,
    UncleanQuits,
}

/// Evidence lines kept per rule.
pub(crate) const EVIDENCE: usize = 4;
/// IP addresses kept per client.
const MAX_IPS: usize = 8;
/// Domains kept per client.
pub(crate) const MAX_DOMAINS: usize = 16;

#[derive(Default, Clone)]
pub(crate) struct Client {
    pub(crate) connections: u64,
    pub(crate) open: u64,
    pub(crate) max_concurrent: u64,
    pub(crate) messages: u64,
    pub(crate) sessions_pipelined: u64,
    pub(crate) sessions_bdat: u64,
    pub(crate) faults: u64,
    pub(crate) replies_421: u64,
    pub(crate) replies_4xx: u64,
    pub(crate) replies_5xx: u64,
    pub(crate) commands_after_421: u64,
    pub(crate) quit_after_421: u64,
    pub(crate) retries: u64,
    pub(crate) resent_after_5xx: u64,
    pub(crate) last_421: Option<Instant>,
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) domains: Vec<Box<str>>,
    /// Shortest interval from an injected 4xx to the retry.
    pub(crate) retry_4xx_min: Option<Duration>,
    /// Most retries of one request after 4xx replies.
    pub(crate) retries_per_4xx: u64,
    /// Shortest time from a 421 to the next connection.
    pub(crate) reconnect_min: Option<Duration>,
    pub(crate) mails: u64,
    pub(crate) size_violations: u64,
    pub(crate) sessions_unannounced: u64,
    pub(crate) pipelined_unannounced: u64,
    pub(crate) sessions_closed: u64,
    pub(crate) unclean_quits: u64,
    pub(crate) evidence: [VecDeque<String>; 8],
    pub(crate) dns: super::dns_record::DnsClientRecord,
}

impl Client {
    /// Notes one line of evidence for `rule` (the latest few are kept).
    pub(crate) fn note(&mut self, rule: Rule, line: String) {
        let e = &mut self.evidence[rule as usize];
        if e.len() >= EVIDENCE {
            e.pop_front();
        }
        e.push_back(line);
    }

    /// The client's domains.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(|d| &**d)
    }

    /// Adds a domain (lower-case), unless known or the list is full.
    pub(crate) fn add_domain(&mut self, d: &str) {
        if self.domains.len() < MAX_DOMAINS && !self.domains.iter().any(|x| **x == *d) {
            self.domains.push(d.into());
        }
    }

    /// A connection of this client, opened at `at`. Returns the time
    /// since the client's last 421, if it got one since it last connected.
    pub(crate) fn connected(&mut self, ip: IpAddr, at: Instant) -> Option<Duration> {
        self.connections += 1;
        self.open += 1;
        self.max_concurrent = self.max_concurrent.max(self.open);
        if self.ips.len() < MAX_IPS && !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
        let since = self
            .last_421
            .take()
            .map(|t| at.saturating_duration_since(t))?;
        if self.reconnect_min.is_none_or(|m| since < m) {
            self.reconnect_min = Some(since);
        }
        self.note(
            Rule::ReconnectAfter421,
            format!("reconnected {} after a 421", secs_text(since)),
        );
        Some(since)
    }

    /// The request `key` was retried `interval` after a `code` reply; it
    /// had failed `failures` times.
    pub(crate) fn retried(&mut self, key: &str, code: u16, failures: u32, interval: Duration) {
        self.retries += 1;
        let line = format!("{key}: retried {} after {code}", secs_text(interval));
        if ReplyClass::of(code) == ReplyClass::Rejected {
            self.resent_after_5xx += 1;
            self.note(Rule::ResentAfter5xx, line);
            return;
        }
        if self.retry_4xx_min.is_none_or(|m| interval < m) {
            self.retry_4xx_min = Some(interval);
        }
        self.retries_per_4xx = self.retries_per_4xx.max(u64::from(failures));
        self.note(Rule::Retry4xxMinInterval, line);
        self.note(
            Rule::RetriesPer4xx,
            format!("{key}: attempt {} after {failures} refusals", failures + 1),
        );
    }

    /// A session of this client ended.
    pub(crate) fn closed(&mut self, end: &SessionEnd) {
        let sid = end.session_id;
        self.open = self.open.saturating_sub(1);
        self.messages += end.messages;
        self.sessions_pipelined += u64::from(end.pipelined);
        self.sessions_bdat += u64::from(end.bdat);
        self.quit_after_421 += u64::from(end.quit_after_421);
        self.sessions_closed += 1;
        self.mails += u64::from(end.mails);
        if end.commands_after_421 > 0 {
            self.commands_after_421 += u64::from(end.commands_after_421);
            self.note(
                Rule::CommandsAfter421,
                format!(
                    "session {sid}: {} command(s) after 421",
                    end.commands_after_421
                ),
            );
        }
        if end.size_violations > 0 {
            self.size_violations += u64::from(end.size_violations);
            self.note(
                Rule::SizeViolations,
                format!(
                    "session {sid}: {} message(s) over the announced or declared SIZE",
                    end.size_violations
                ),
            );
        }
        self.sessions_unannounced += u64::from(end.pipelining_unannounced_tested);
        if end.pipelined_unannounced {
            self.pipelined_unannounced += 1;
            self.note(
                Rule::UnannouncedPipelining,
                format!("session {sid}: pipelined without PIPELINING announced"),
            );
        }
        if end.client_closed {
            self.unclean_quits += 1;
            self.note(
                Rule::UncleanQuits,
                format!("session {sid}: closed by the client without QUIT"),
            );
        }
    }
}
