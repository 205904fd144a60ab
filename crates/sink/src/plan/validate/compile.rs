//! Compiling a checked rule ([`RuleSpec`]) into the [`Rule`] the engine
//! evaluates: globs, CIDR blocks and the header regex built once, the
//! primary action resolved, the attempt key defaulted by stage.

use regex::Regex;

use super::parts::{dist, header, window};
use crate::hook::Stage;
use crate::plan::glob::Glob;
use crate::plan::model::{
    CloseMode, KeyKind, MaxConnSpec, OneOrMany, RateLimitSpec, RuleSpec, SeqStep, StageSel,
};
use crate::plan::primary::Primary;
use crate::plan::select::{Cidr, Dist, Window};
use crate::plan::verdict::FaultAction;

/// The key a rule uses when it names none.
fn default_key(stage: StageSel, greylist: bool) -> KeyKind {
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
        let (de, dt) = crate::plan::primary::default_reply(code);
        Primary::Queue {
            model: std::sync::Arc::new(crate::plan::queue::QueueModel::new(
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
