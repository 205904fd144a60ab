//! Which matching attempts a rule selects, beyond `match:`: the attempt
//! key (`key:`) its ordinals and probabilities count over, and the
//! timing- and load-dependent gates (`window:`, `rate_limit:`,
//! `max_connections:`).

use serde::{Deserialize, Serialize};

use super::values::{opt_secs, secs};
use super::{NonNeg, Positive};

/// What makes two attempts "the same request".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The recipient (at data_end: all recipients).
    Rcpt,
    /// The reverse-path.
    Sender,
    /// The Message-ID header (data_end).
    MessageId,
    /// Client IP, sender and recipient(s): the greylisting key.
    Triplet,
    /// The SMTP session: reset by STARTTLS (RFC 3207).
    Session,
    /// The TCP connection.
    Connection,
    /// One ordinal over every match of the rule.
    Global,
}
/// Active time since the plan was loaded (`from: 30s`, `to: 2m`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Start, in seconds (written as a duration; default 0).
    #[serde(default = "zero", with = "secs")]
    pub from: NonNeg,
    /// End, in seconds (exclusive); absent: open-ended (or `duty` decides).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub to: Option<NonNeg>,
    /// Repeat every `period`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub period: Option<NonNeg>,
    /// With `period`: the active fraction of each period, from `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duty: Option<NonNeg>,
}

fn zero() -> NonNeg {
    NonNeg(0.0)
}

/// What a token bucket counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateBy {
    /// Client IP.
    Ip,
    /// Reverse-path.
    Sender,
    /// Recipient domain.
    RcptDomain,
    /// Everything together.
    Global,
}

/// A token bucket: fires when the client exceeds `max` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Bucket size and tokens per period.
    pub max: Positive,
    /// The period (key `per`, a duration > 0), in seconds.
    #[serde(rename = "per", with = "secs")]
    pub per_seconds: NonNeg,
    /// What each bucket belongs to.
    #[serde(default = "rate_by_ip")]
    pub by: RateBy,
}

fn rate_by_ip() -> RateBy {
    RateBy::Ip
}

/// What a connection cap counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnPer {
    /// All clients together.
    Global,
    /// Each client IP.
    Ip,
}

/// Fires at the greeting when more than `max` connections are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxConnSpec {
    /// Connections allowed (this one included).
    pub max: u64,
    /// Counted per.
    #[serde(default = "conn_per_ip")]
    pub per: ConnPer,
}

fn conn_per_ip() -> ConnPer {
    ConnPer::Ip
}
