//! What a rule decides: the [`Verdict`] (with its [`FaultAction`]), how
//! it becomes a hook [`Decision`], and how a rule's action and `sequence`
//! code become a [`FaultAction`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::hook::{Decision, DisconnectAfter, Fault, IdleClose, SplitReply};

/// What a selected rule makes the session do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// The normal reply.
    Accept,
    /// This reply instead (`421` also closes the connection).
    Reply {
        /// Reply code.
        code: u16,
        /// Enhanced status code.
        enhanced: String,
        /// Text (line breaks: multi-line).
        text: String,
    },
    /// Close without a reply, after the client sent `after_bytes` more.
    Disconnect {
        /// Reset instead of FIN.
        rst: bool,
        /// Octets to let through first.
        after_bytes: u64,
    },
    /// Answer normally, then stop reading for this long.
    Stall(Duration),
    /// Answer normally; if the client then stays idle this long, send
    /// `code` unprompted and close.
    IdleClose {
        /// Idle time.
        after: Duration,
        /// Reply code.
        code: u16,
        /// Enhanced status code.
        enhanced: String,
        /// Text.
        text: String,
    },
    /// A DNS fault (stage dns).
    Dns(crate::plan::model::DnsFault),
}

/// A rule's decision, with what produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Index of the rule in the plan.
    pub rule: usize,
    /// The rule's name (shared with the plan: producing a verdict copies
    /// no string).
    pub rule_name: Arc<str>,
    /// The key, readable (`rcpt:bob@example.test`).
    pub key: String,
    /// The attempt number of this key under this rule (from 1; 0 when the
    /// rule counts no attempts).
    pub attempt: u64,
    /// Wait this long before anything else.
    pub delay: Option<Duration>,
    /// Then do this.
    pub outcome: FaultAction,
    /// From now on, limit the connection to this many octets per second.
    pub throttle: Option<u64>,
    /// Send replies in fragments of this many octets, this far apart.
    pub split_reply: Option<SplitReply>,
}

impl Verdict {
    /// The verdict as a hook [`Decision`].
    pub fn to_decision(&self) -> Decision {
        let mut f = Fault::new(Decision::Accept);
        match &self.outcome {
            // Stage dns is answered by the DNS responder, never a session.
            FaultAction::Accept | FaultAction::Dns(_) => {}
            FaultAction::Reply {
                code,
                enhanced,
                text,
            } => {
                f.then = Decision::Reply {
                    code: *code,
                    enhanced: Some(Cow::Owned(enhanced.clone())),
                    text: Cow::Owned(text.clone()),
                }
            }
            FaultAction::Disconnect { rst, after_bytes } => {
                if *after_bytes == 0 {
                    f.then = Decision::Close { rst: *rst };
                } else {
                    f.disconnect_after = Some(DisconnectAfter {
                        bytes: *after_bytes,
                        rst: *rst,
                    });
                }
            }
            FaultAction::Stall(d) => f.stall = Some(*d),
            FaultAction::IdleClose {
                after,
                code,
                enhanced,
                text,
            } => {
                f.idle_close = Some(IdleClose {
                    after: *after,
                    code: *code,
                    enhanced: enhanced.clone(),
                    text: text.clone(),
                })
            }
        }
        f.delay = self.delay;
        f.throttle = self.throttle;
        f.split_reply = self.split_reply;
        Decision::Fault(Box::new(f))
    }

    /// The reply code this verdict sends, if it replies.
    pub fn code(&self) -> Option<u16> {
        match &self.outcome {
            FaultAction::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A short description for events (`reply 451 4.3.0`, `delay 120ms`).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(d) = self.delay {
            let _ = write!(s, "delay {}ms ", d.as_millis());
        }
        match &self.outcome {
            FaultAction::Accept => s.push_str("accept"),
            FaultAction::Reply { code, enhanced, .. } => {
                let _ = write!(s, "reply {code} {enhanced}");
            }
            FaultAction::Disconnect { rst, after_bytes } => {
                let _ = write!(
                    s,
                    "disconnect {} after {after_bytes} bytes",
                    if *rst { "rst" } else { "fin" }
                );
            }
            FaultAction::Stall(d) => {
                let _ = write!(s, "stall {}ms", d.as_millis());
            }
            FaultAction::IdleClose { after, code, .. } => {
                let _ = write!(s, "idle_close {code} after {}ms", after.as_millis());
            }
            FaultAction::Dns(f) => {
                let _ = write!(s, "dns {f:?}");
            }
        }
        if let Some(t) = self.throttle {
            let _ = write!(s, " throttle {t}B/s");
        }
        if let Some(split) = self.split_reply {
            let _ = write!(s, " split_reply {}B", split.fragment);
        }
        s
    }
}
