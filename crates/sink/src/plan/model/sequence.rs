//! `sequence`: the n-th attempt of a key gets the n-th step (then the last
//! repeats). At SMTP stages a step is a reply code (`[451, 451, 250]`); at
//! stage dns it is a DNS outcome (`[servfail, servfail, answer]`). One
//! list, one counting: which form fits which stage is a whole-rule check.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Code, DnsFault};

/// One step of a `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SeqStep {
    /// A reply code (SMTP stages): 2xx/3xx accept, 4xx/5xx refuse.
    Code(Code),
    /// A DNS outcome (stage dns).
    Dns(DnsStep),
}

/// A DNS outcome in a `sequence` at stage dns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum DnsStep {
    /// The zone's normal answer (not a fault).
    Answer,
    /// One of the `dns` actions.
    Fault(DnsFault),
}

/// The step names, in the order error messages list them.
pub const DNS_STEPS: &str = "answer, servfail, nxdomain, no_answer, truncate";

impl DnsStep {
    /// The name as written in a plan.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsStep::Answer => "answer",
            DnsStep::Fault(DnsFault::Servfail) => "servfail",
            DnsStep::Fault(DnsFault::Nxdomain) => "nxdomain",
            DnsStep::Fault(DnsFault::NoAnswer) => "no_answer",
            DnsStep::Fault(DnsFault::Truncate) => "truncate",
        }
    }

    fn parse(s: &str) -> Option<DnsStep> {
        Some(match s {
            "answer" => DnsStep::Answer,
            "servfail" => DnsStep::Fault(DnsFault::Servfail),
            "nxdomain" => DnsStep::Fault(DnsFault::Nxdomain),
            "no_answer" => DnsStep::Fault(DnsFault::NoAnswer),
            "truncate" => DnsStep::Fault(DnsFault::Truncate),
            _ => return None,
        })
    }
}

impl From<DnsStep> for &'static str {
    fn from(s: DnsStep) -> &'static str {
        s.as_str()
    }
}

impl fmt::Display for SeqStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqStep::Code(c) => write!(f, "{}", c.0),
            SeqStep::Dns(d) => f.write_str(d.as_str()),
        }
    }
}

/// Reads a step inside the parser's visitor, so an unknown name carries
/// the step's own line and column.
struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = SeqStep;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a reply code (200..=599) or, at stage dns, one of {DNS_STEPS}"
        )
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SeqStep, E> {
        Code::deserialize(de::value::U64Deserializer::<E>::new(v)).map(SeqStep::Code)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SeqStep, E> {
        Code::deserialize(de::value::I64Deserializer::<E>::new(v)).map(SeqStep::Code)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<SeqStep, E> {
        Code::deserialize(de::value::F64Deserializer::<E>::new(v)).map(SeqStep::Code)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SeqStep, E> {
        if let Some(s) = DnsStep::parse(v) {
            return Ok(SeqStep::Dns(s));
        }
        let snake = v.replace('-', "_").to_ascii_lowercase();
        if let Some(s) = DnsStep::parse(&snake) {
            return Err(E::custom(format!(
                "unknown sequence step `{v}`: write `{}`",
                s.as_str()
            )));
        }
        Err(E::custom(format!(
            "unknown sequence step `{v}`; allowed: a reply code (200..=599) or, at stage dns, {DNS_STEPS}"
        )))
    }
}

impl<'de> Deserialize<'de> for SeqStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StepVisitor)
    }
}
