//! The fault-injection seam: a decision hook called at each protocol stage.
//!
//! The sink asks a [`StageHook`] (when one is installed) what to do before it
//! answers a command. With no hook installed the session never builds a
//! [`StageContext`]: the check is one `Option` test per command.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A point in an SMTP/LMTP session where a hook is consulted and replies are
/// counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// A new connection, before the greeting.
    Connect,
    /// `EHLO`, `HELO` or `LHLO`.
    Ehlo,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH` and its continuation lines.
    Auth,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA` (before `354`).
    Data,
    /// The end of a message: after the final dot or `BDAT ... LAST`.
    DataEnd,
    /// A `BDAT` chunk that is not the last.
    Bdat,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// A query to the DNS responder (`--dns`): the query name is the
    /// context's `rcpt`, its type (`MX`, `A`, ...) the `command`.
    Dns,
    /// `NOOP` (never consulted, counted only).
    Noop,
    /// `VRFY` and `EXPN` (never consulted, counted only).
    Vrfy,
    /// `HELP` (never consulted, counted only).
    Help,
    /// An unknown verb or a line that failed to parse (counted only).
    Invalid,
    /// Replies the sink sends on its own: timeouts, shutdown, error limits.
    Session,
}

impl Stage {
    /// Every stage, in declaration order.
    pub const ALL: [Stage; 17] = [
        Stage::Connect,
        Stage::Ehlo,
        Stage::StartTls,
        Stage::Auth,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::DataEnd,
        Stage::Bdat,
        Stage::Rset,
        Stage::Quit,
        Stage::Dns,
        Stage::Noop,
        Stage::Vrfy,
        Stage::Help,
        Stage::Invalid,
        Stage::Session,
    ];

    /// How many stages, from the first in [`Stage::ALL`], consult the hook
    /// (and so can be named by a plan rule); the rest are counted only.
    pub const CONSULTED: usize = Stage::Dns as usize + 1;

    /// Whether the hook is consulted at this stage.
    pub fn is_consulted(self) -> bool {
        self.index() < Stage::CONSULTED
    }

    /// The stage's name as used in stats and plans (`snake_case`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::DataEnd => "data_end",
            Stage::Bdat => "bdat",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
            Stage::Dns => "dns",
            Stage::Noop => "noop",
            Stage::Vrfy => "vrfy",
            Stage::Help => "help",
            Stage::Invalid => "invalid",
            Stage::Session => "session",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reply code means for the request it answers. The one place the
/// sink turns a code into "accepted", "deferred" or "rejected".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyClass {
    /// 2xx/3xx: the request goes ahead.
    Positive,
    /// 4xx: refused for now; the client should retry later.
    Deferred,
    /// 5xx (or anything else): refused for good; the client should not
    /// retry.
    Rejected,
}

impl ReplyClass {
    /// The class of reply `code`.
    pub fn of(code: u16) -> ReplyClass {
        match code {
            200..=399 => ReplyClass::Positive,
            400..=499 => ReplyClass::Deferred,
            _ => ReplyClass::Rejected,
        }
    }

    /// A 4xx or 5xx: the request was refused.
    pub fn is_failure(self) -> bool {
        self != ReplyClass::Positive
    }
}

/// What the session does at a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Proceed normally.
    Accept,
    /// Send this reply instead of the normal one. A 2xx/3xx code still
    /// applies the command (e.g. the recipient is added); 4xx/5xx rejects it.
    /// At [`Stage::Connect`] a 4xx/5xx reply closes the connection after it.
    Reply {
        /// Three-digit reply code.
        code: u16,
        /// Enhanced status code such as `"4.7.1"`.
        enhanced: Option<Cow<'static, str>>,
        /// Reply text; line breaks make a multi-line reply.
        text: Cow<'static, str>,
    },
    /// Wait this long (replies already produced are sent first), then
    /// proceed as if [`Decision::Accept`] had been returned.
    Delay(Duration),
    /// Close the connection without a reply; `rst: true` resets it
    /// (SO_LINGER 0) instead of a FIN.
    Close {
        /// Abort with a TCP reset.
        rst: bool,
    },
    /// Several effects at once (fault plans): an optional delay, then
    /// `then`, plus connection-level effects.
    Fault(Box<Fault>),
}

/// A composite decision ([`Decision::Fault`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Wait this long first (replies already produced are sent first).
    pub delay: Option<Duration>,
    /// Then this (not itself a `Fault`).
    pub then: Decision,
    /// Close after the client sent this many more octets.
    pub disconnect_after: Option<DisconnectAfter>,
    /// After the replies, stop reading for this long.
    pub stall: Option<Duration>,
    /// Limit the connection to this many octets per second from now on.
    pub throttle: Option<u64>,
    /// Write the next replies in fragments.
    pub split_reply: Option<SplitReply>,
    /// From now on, when the client is idle this long, send a reply
    /// unprompted and close.
    pub idle_close: Option<IdleClose>,
}

/// Close the connection once the client sent `bytes` more octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisconnectAfter {
    /// Octets to let through first.
    pub bytes: u64,
    /// Reset (SO_LINGER 0) instead of a FIN.
    pub rst: bool,
}

/// Write replies in fragments of `fragment` octets, `gap` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitReply {
    /// Octets per fragment.
    pub fragment: usize,
    /// Pause between fragments.
    pub gap: Duration,
}

/// When the client stays idle `after`, send this reply and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleClose {
    /// Idle time before the reply.
    pub after: Duration,
    /// Reply code.
    pub code: u16,
    /// Enhanced status code.
    pub enhanced: String,
    /// Reply text.
    pub text: String,
}

impl Fault {
    /// A fault that only does `then`.
    pub fn new(then: Decision) -> Fault {
        Fault {
            delay: None,
            then,
            disconnect_after: None,
            stall: None,
            throttle: None,
            split_reply: None,
            idle_close: None,
        }
    }
}

/// The accepted recipients of the current transaction, in RCPT order.
#[derive(Clone, Copy)]
pub struct Recipients<'a> {
    pub(crate) buf: &'a str,
    pub(crate) ends: &'a [u32],
}

impl<'a> Recipients<'a> {
    /// Number of recipients.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// `true` when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th recipient.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.buf.get(start..end)
    }

    /// The recipients in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

impl fmt::Debug for Recipients<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The facts [`StageHook::accepts_early`] sees: the stage and the
/// command's own argument, with no context to build.
#[derive(Debug, Clone, Copy)]
pub struct EarlyLook<'a> {
    /// The stage being decided.
    pub stage: Stage,
    /// The reverse-path at [`Stage::Mail`], the recipient at
    /// [`Stage::Rcpt`] (as [`StageContext::reverse_path`] and
    /// [`StageContext::rcpt`] would hold them); `None` at other stages.
    pub arg: Option<&'a str>,
    /// [`StageContext::message_size`] as the context would hold it.
    pub message_size: u64,
    /// [`StageContext::scope`] as the context would hold it.
    pub scope: Option<&'a (dyn Any + Send + Sync)>,
}

/// Everything a hook may look at. Borrowed from the session; nothing is
/// copied to build it.
#[derive(Debug, Clone, Copy)]
pub struct StageContext<'a> {
    /// The stage being decided.
    pub stage: Stage,
    /// Process-wide unique session id (also the connection ordinal: the
    /// n-th accepted connection since start, from 1).
    pub session_id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The EHLO/HELO/LHLO argument, once given.
    pub helo: Option<&'a str>,
    /// The reverse-path once MAIL was accepted (`""` for `<>`).
    pub sender: Option<&'a str>,
    /// Recipients accepted so far in this transaction.
    pub recipients: Recipients<'a>,
    /// The recipient being decided at [`Stage::Rcpt`].
    pub rcpt: Option<&'a str>,
    /// The reverse-path being decided at [`Stage::Mail`], as the parser
    /// read it (`""` for `<>`); `None` at other stages.
    pub reverse_path: Option<&'a str>,
    /// Whether TLS is active.
    pub tls: bool,
    /// The authenticated user, if any.
    pub auth_user: Option<&'a str>,
    /// Message octets so far (at [`Stage::DataEnd`] and [`Stage::Bdat`]:
    /// the whole message / the chunks so far including this one).
    pub message_size: u64,
    /// The message at [`Stage::DataEnd`] when the sink keeps bodies
    /// (`capture` or `keep`); in discard mode its header section only (at
    /// most 16 KiB, when the hook wants headers), else `None`.
    pub message: Option<&'a [u8]>,
    /// The command line as sent (without CRLF), for command stages.
    pub command: &'a [u8],
    /// What the hook attached to the session at its first greeting
    /// ([`StageHook::session_greeted`]); `None` before it or when the hook
    /// attached nothing.
    pub scope: Option<&'a (dyn Any + Send + Sync)>,
}

impl<'a> StageContext<'a> {
    /// The first header field named `name` (case-insensitive) of the
    /// message, unfolded lines not joined; `None` in discard mode.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let msg = self.message?;
        let mut rest = msg;
        while !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let line = &rest[..end];
            let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            if trimmed.is_empty() {
                return None; // end of the header section
            }
            if let Some(colon) = memchr::memchr(b':', trimmed) {
                if trimmed[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                    let v = std::str::from_utf8(&trimmed[colon + 1..]).ok()?;
                    return Some(v.trim());
                }
            }
            rest = &rest[end..];
        }
        None
    }
}

/// A per-stage decision hook (the fault-injection seam).
///
/// Called on the shard's thread, synchronously, before the sink answers:
/// keep it fast and never block.
pub trait StageHook: Send + Sync {
    /// What to do at `ctx.stage`.
    fn decide(&self, ctx: &StageContext<'_>) -> Decision;

    /// Whether [`StageHook::decide`] needs to see `stage` now: `false`
    /// promises it would return [`Decision::Accept`] and record nothing,
    /// and the session skips building the context. Asked per command:
    /// keep it to an atomic load.
    fn consults(&self, stage: Stage) -> bool {
        let _ = stage;
        true
    }

    /// A first look at a command from what the session has at hand,
    /// before it builds a [`StageContext`]: `true` promises that
    /// [`StageHook::decide`] would return [`Decision::Accept`], and the
    /// session then skips the context and the decision. The hook may do
    /// here the bookkeeping `decide` would have done. Asked per command
    /// at the stages [`StageHook::consults`]: keep it cheap. The default
    /// always decides.
    fn accepts_early(&self, early: &EarlyLook<'_>) -> bool {
        let _ = early;
        false
    }

    /// A session starts (before its greeting is decided). Return `true` to
    /// get [`StageHook::session_closed`] when it ends.
    fn session_opened(&self, peer: SocketAddr, now: std::time::Instant) -> bool {
        let _ = (peer, now);
        false
    }

    /// The first EHLO/HELO/LHLO of a session for which
    /// [`StageHook::session_opened`] returned `true`, before its stage is
    /// decided. `connected`: when the connection was accepted. What it
    /// returns is handed back in [`StageContext::scope`] at every later
    /// stage of the session: per-session data looked up once (the fault
    /// engine keeps the client id and the client's scoped plan there).
    fn session_greeted(
        &self,
        session_id: u64,
        peer: SocketAddr,
        helo: &str,
        connected: Instant,
    ) -> Option<SessionScope> {
        let _ = (session_id, peer, helo, connected);
        None
    }

    /// A session for which [`StageHook::session_opened`] returned `true`
    /// ended.
    fn session_closed(&self, end: &SessionEnd) {
        let _ = end;
    }

    /// Whether [`StageContext::message`] should hold at least the header
    /// block at [`Stage::DataEnd`] even in discard mode (checked per
    /// message).
    fn wants_headers(&self) -> bool {
        false
    }
}

/// Per-session data a hook attached at the first greeting
/// ([`StageHook::session_greeted`]).
pub type SessionScope = Arc<dyn Any + Send + Sync>;

/// What a session did, reported when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionEnd {
    /// The session id.
    pub session_id: u64,
    /// The client.
    pub peer: Option<SocketAddr>,
    /// Messages accepted in the session.
    pub messages: u64,
    /// The client sent a command before the reply to the previous one.
    pub pipelined: bool,
    /// The client used BDAT.
    pub bdat: bool,
    /// Commands received after the sink sent 421 (QUIT excluded).
    pub commands_after_421: u32,
    /// The client sent QUIT after a 421.
    pub quit_after_421: bool,
    /// The argument of the session's first EHLO/HELO/LHLO, if any.
    pub helo: Option<String>,
    /// MAIL commands the client sent (accepted or not).
    pub mails: u32,
    /// MAIL `SIZE=` above the announced limit, and messages whose data
    /// exceeded the `SIZE=` the client declared (or the limit).
    pub size_violations: u32,
    /// The session ran without PIPELINING announced at some point where a
    /// client could pipeline (a HELO greeting, or a command pipelined
    /// before any EHLO reply).
    pub pipelining_unannounced_tested: bool,
    /// The client pipelined while PIPELINING was not announced.
    pub pipelined_unannounced: bool,
    /// The client sent QUIT.
    pub quit: bool,
    /// The client closed the connection (without QUIT).
    pub client_closed: bool,
}

impl SessionEnd {
    /// A report for session `id` with client `peer`.
    pub fn new(session_id: u64, peer: SocketAddr) -> SessionEnd {
        SessionEnd {
            session_id,
            peer: Some(peer),
            ..SessionEnd::default()
        }
    }
}

/// A hook from a closure.
impl<F> StageHook for F
where
    F: Fn(&StageContext<'_>) -> Decision + Send + Sync,
{
    fn decide(&self, ctx: &StageContext<'_>) -> Decision {
        self(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_and_headers() {
        let buf = "a@x.testb@y.test";
        let ends = [8u32, 16];
        let r = Recipients { buf, ends: &ends };
        assert_eq!(r.iter().collect::<Vec<_>>(), ["a@x.test", "b@y.test"]);
        let ctx = StageContext {
            stage: Stage::DataEnd,
            session_id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            helo: None,
            sender: None,
            recipients: r,
            rcpt: None,
            reverse_path: None,
            tls: false,
            auth_user: None,
            message_size: 0,
            message: Some(b"From: a\r\nSubject:  Hi \r\n\r\nX-Not: header\r\n"),
            command: b"",
            scope: None,
        };
        assert_eq!(ctx.header("subject"), Some("Hi"));
        assert_eq!(ctx.header("x-not"), None);
    }
}
