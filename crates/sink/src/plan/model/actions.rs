//! The actions a rule may take, one spec each (`reply`, `disconnect`,
//! `stall`, `throttle`, `split_reply`, `greylist`, `idle_close`), as
//! [`super::ActionSpec`] gathers them; `delay`, `queue` and `dns` have
//! modules of their own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::whole_millis;
use super::{Code, Positive};

/// `reply`: answer with this instead of the normal reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySpec {
    /// Reply code.
    pub code: Code,
    /// Enhanced status code (RFC 3463) such as `4.7.1`; its class must
    /// match the code's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    /// Reply text (default: a standard text for the code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}
/// How `disconnect` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseMode {
    /// Orderly close (FIN).
    Fin,
    /// Reset (RST, SO_LINGER 0).
    Rst,
}

/// `disconnect`: close without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectSpec {
    /// FIN or RST (default fin).
    #[serde(default = "fin")]
    pub mode: CloseMode,
    /// Let the client send this many more octets first (e.g. part of the
    /// message after `DATA`); 0: at once.
    #[serde(default)]
    pub after_bytes: u64,
}

fn fin() -> CloseMode {
    CloseMode::Fin
}

/// `stall`: answer, then stop reading for a while.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallSpec {
    /// How long.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub duration: Duration,
}

/// `throttle`: a slow link for the rest of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// Octets per second, both directions.
    pub bytes_per_sec: Positive,
}

/// `split_reply`: send replies in small fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Fragment size in octets (default 1).
    #[serde(default = "one")]
    pub fragment_bytes: Positive,
    /// Pause between fragments (key `gap`, default 5ms), milliseconds.
    #[serde(rename = "gap", default = "five", with = "whole_millis")]
    pub gap_ms: u64,
}

fn one() -> Positive {
    Positive(1)
}

fn five() -> u64 {
    5
}

/// `greylist`: 450 4.7.1 until the same triplet retries late enough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistSpec {
    /// A retry passes once this long has passed since the first attempt.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub min_retry: Duration,
    /// Unretried entries (and passed ones, since their last use) expire
    /// after this long (default 4h).
    #[serde(
        default = "four_hours",
        with = "mailstorm_config::serde_units::duration"
    )]
    pub expire: Duration,
    /// Reply text for the deferral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn four_hours() -> Duration {
    Duration::from_secs(4 * 3600)
}

/// `idle_close`: an unprompted reply and close when the client is idle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleCloseSpec {
    /// Idle time before closing.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub after: Duration,
    /// The code sent (default 421).
    #[serde(default = "code_421")]
    pub code: Code,
    /// Reply text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn code_421() -> Code {
    Code(421)
}
