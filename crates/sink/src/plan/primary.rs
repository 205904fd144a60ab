//! What a selected rule does once compiled ([`Primary`]), and how it
//! becomes the [`FaultAction`] of a verdict. Its own module so that the
//! validator and the verdict types do not import each other.

use std::time::Duration;

use super::model::{DnsStep, SeqStep};
use super::verdict::FaultAction;
use crate::hook::ReplyClass;

/// A standard enhanced code and text for a reply code.
pub(crate) fn default_reply(code: u16) -> (&'static str, &'static str) {
    match code {
        421 => (
            "4.3.2",
            "Service not available, closing transmission channel",
        ),
        450 => (
            "4.2.0",
            "Requested mail action not taken: mailbox unavailable",
        ),
        451 => (
            "4.3.0",
            "Requested action aborted: local error in processing",
        ),
        452 => ("4.3.1", "Insufficient system storage"),
        454 => ("4.7.0", "TLS not available due to temporary reason"),
        500 => ("5.5.2", "Syntax error, command unrecognized"),
        501 => ("5.5.4", "Syntax error in parameters or arguments"),
        530 => ("5.7.0", "Authentication required"),
        535 => ("5.7.8", "Authentication credentials invalid"),
        550 => ("5.1.1", "Requested action not taken: mailbox unavailable"),
        551 => ("5.1.6", "User not local"),
        552 => (
            "5.2.2",
            "Requested mail action aborted: exceeded storage allocation",
        ),
        553 => (
            "5.1.3",
            "Requested action not taken: mailbox name not allowed",
        ),
        554 => ("5.7.1", "Transaction failed"),
        c if c >= 500 => ("5.0.0", "Permanent failure"),
        c if c >= 400 => ("4.0.0", "Temporary failure"),
        c if c >= 300 => ("2.0.0", "Go ahead"),
        _ => ("2.0.0", "OK"),
    }
}

/// What a selected rule does, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Primary {
    /// Only modifiers (delay, throttle, split): then the normal reply.
    None,
    Accept,
    Reply {
        code: u16,
        enhanced: Option<String>,
        text: Option<String>,
    },
    Greylist {
        min_retry: Duration,
        expire: Duration,
        text: Option<String>,
    },
    /// An action with nothing left to fill in (disconnect, stall).
    Fixed(FaultAction),
    IdleClose {
        after: Duration,
        code: u16,
        text: Option<String>,
    },
    /// `queue`: the reply waits for a worker; a full queue answers
    /// `overflow` (code, enhanced, text).
    Queue {
        model: std::sync::Arc<super::queue::QueueModel>,
        overflow: (u16, String, String),
    },
}

/// The action a selected rule takes; `step` is what a `sequence` chose
/// for this attempt (a reply code, or at stage dns a DNS outcome), if the
/// rule has one.
pub(super) fn action_of(p: &Primary, step: Option<SeqStep>) -> FaultAction {
    let reply = |code: u16, enhanced: &Option<String>, text: &Option<String>| {
        let (de, dt) = default_reply(code);
        FaultAction::Reply {
            code,
            // A template's enhanced code only fits codes of its class.
            enhanced: enhanced
                .clone()
                .filter(|e| e.starts_with(char::from(b'0' + (code / 100) as u8)))
                .unwrap_or_else(|| de.to_string()),
            text: text.clone().unwrap_or_else(|| dt.to_string()),
        }
    };
    let seq_code = match step {
        Some(SeqStep::Dns(DnsStep::Answer)) => return FaultAction::Accept,
        Some(SeqStep::Dns(DnsStep::Fault(f))) => return FaultAction::Dns(f),
        Some(SeqStep::Code(c)) => Some(c.0),
        None => None,
    };
    if let Some(code) = seq_code {
        if ReplyClass::of(code) == ReplyClass::Positive {
            return FaultAction::Accept;
        }
        return match p {
            Primary::Reply { enhanced, text, .. } => reply(code, enhanced, text),
            _ => reply(code, &None, &None),
        };
    }
    match p {
        Primary::None | Primary::Accept | Primary::Greylist { .. } | Primary::Queue { .. } => {
            FaultAction::Accept
        }
        Primary::Reply {
            code,
            enhanced,
            text,
        } => reply(*code, enhanced, text),
        Primary::Fixed(action) => action.clone(),
        Primary::IdleClose { after, code, text } => {
            let (de, dt) = default_reply(*code);
            FaultAction::IdleClose {
                after: *after,
                code: *code,
                enhanced: if *code == 421 {
                    "4.4.2".into()
                } else {
                    de.into()
                },
                text: text.clone().unwrap_or_else(|| {
                    if *code == 421 {
                        "Idle timeout, closing connection".into()
                    } else {
                        dt.into()
                    }
                }),
            }
        }
    }
}
