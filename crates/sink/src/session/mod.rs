//! The protocol state machine. No I/O: [`Session::process`] takes the
//! buffered input, handles every complete command (and body bytes) in it,
//! appends all replies to one output buffer and says what the connection
//! must do next. The connection layer (`conn.rs`) does the reading, the one
//! write per batch, timeouts and the TLS switch.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailstorm_proto::data::{BdatReceiver, DataReceiver};
use mailstorm_proto::line::{find_line, skip_line};
use mailstorm_proto::{parse_command, Status};

use crate::auth::AuthExchange;
use crate::hook::{Decision, DisconnectAfter, Recipients, SplitReply, Stage};
use crate::settings::{Settings, AUTH_LINE_MAX};
use crate::stats::{CloseReason, Counter, ShardStats};
use crate::store::{MessageHold, Store, ENVELOPE_ALLOWANCE};
use header_grab::grab_headers;

mod commands;
mod gate;
mod header_grab;
mod message;
mod report;

pub(crate) use report::Report;

/// What the connection does after [`Session::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Send the replies, then read more input.
    Read,
    /// Send the replies, wait, then call `process` again (a hook delay).
    Delay(Duration),
    /// Send the replies, drop any buffered input, start the TLS handshake.
    StartTls,
    /// Send the replies, then close.
    Close(CloseReason),
    /// Close at once without sending anything more (a hook's decision).
    Abort {
        /// Reset instead of FIN.
        rst: bool,
    },
}

/// A reply decided before the bytes it answers have been consumed (a BDAT
/// chunk that must be read and dropped first).
#[derive(Debug, Clone)]
struct Pending {
    code: u16,
    enhanced: Option<Cow<'static, str>>,
    text: Cow<'static, str>,
    /// Counts toward the error limit.
    error: bool,
    /// Ends the transaction.
    reset: bool,
    /// A hook's 421: close after it (RFC 5321 §3.8).
    close: bool,
}

impl Pending {
    fn fixed(code: u16, enhanced: &'static str, text: &'static str, error: bool) -> Pending {
        Pending {
            code,
            enhanced: Some(Cow::Borrowed(enhanced)),
            text: Cow::Borrowed(text),
            error,
            reset: false,
            close: false,
        }
    }
}

/// Connection-level effects a fault asked for, recorded by the session
/// and taken over by the connection's fault I/O (`conn/effects.rs`).
#[derive(Debug, Default)]
pub(crate) struct IoEffects {
    /// Close once this many more octets arrived.
    pub(crate) disconnect_after: Option<DisconnectAfter>,
    /// After the next write, stop reading this long.
    pub(crate) stall: Option<Duration>,
    /// Octets per second, both directions, from now on.
    pub(crate) throttle: Option<u64>,
    /// Write the next batch in fragments.
    pub(crate) split: Option<SplitReply>,
    /// From now on: idle this long → this reply, then close.
    pub(crate) idle_close: Option<IdleCloseReply>,
}

/// An idle-close fault with its reply already encoded.
#[derive(Debug)]
pub(crate) struct IdleCloseReply {
    /// Idle time before the reply.
    pub(crate) after: Duration,
    /// The reply, CRLF-terminated.
    pub(crate) reply: Vec<u8>,
}

enum Phase {
    Command,
    /// Dropping the rest of an over-long line, up to its LF.
    SkipLine,
    Data(DataReceiver),
    Bdat {
        rx: BdatReceiver,
        size: u64,
        last: bool,
        reject: Option<Pending>,
        custom: Option<Pending>,
    },
    Auth(AuthExchange),
    /// The message is complete; its final reply is due (re-entered after a
    /// hook delay).
    DataEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Greeted {
    No,
    Helo,
    Ehlo,
}

/// The current mail transaction. Buffers are reused across transactions,
/// so steady-state commands do not allocate.
#[derive(Default)]
pub(crate) struct Tx {
    pub(crate) active: bool,
    pub(crate) sender: String,
    pub(crate) rcpt_buf: String,
    pub(crate) rcpt_ends: Vec<u32>,
    binarymime: bool,
    bdat: bool,
    bdat_bytes: u64,
    /// The `SIZE=` the client declared at MAIL.
    pub(crate) declared_size: Option<u64>,
}

impl Tx {
    fn reset(&mut self) {
        self.active = false;
        self.sender.clear();
        self.rcpt_buf.clear();
        self.rcpt_ends.clear();
        self.binarymime = false;
        self.bdat = false;
        self.bdat_bytes = 0;
        self.declared_size = None;
    }

    pub(crate) fn recipients(&self) -> Recipients<'_> {
        Recipients {
            buf: &self.rcpt_buf,
            ends: &self.rcpt_ends,
        }
    }
}

/// What a command handler tells the loop.
enum Handled {
    /// Consumed; go on with the next input.
    Next,
    /// Consumed; stop and let the connection act.
    Stop(Flow),
    /// Not consumed: wait, then handle the same input again.
    Retry(Duration),
}

/// A hook's verdict reduced to what a handler needs.
enum Gate {
    /// Proceed, with a replacement 2xx/3xx reply if `Some`.
    Go(Option<Pending>),
    /// The hook refused with this 4xx/5xx reply (not yet written).
    Refuse(Pending),
    /// The hook delays or closes: return this.
    Stop(Handled),
}

/// One SMTP/LMTP session's protocol state.
pub(crate) struct Session {
    pub(crate) s: Arc<Settings>,
    stats: Arc<ShardStats>,
    store: Arc<Store>,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    phase: Phase,
    greeted: Greeted,
    helo: String,
    /// The negotiated TLS version once TLS is active.
    pub(crate) tls: Option<&'static str>,
    auth_user: Option<String>,
    pub(crate) tx: Tx,
    /// The body being received when bodies are kept; in discard mode, its
    /// header section (see [`Session::grab_headers`]).
    msg: Vec<u8>,
    /// `msg`'s bytes (when bodies are kept) and the recipients' past an
    /// allowance, counted against `buffer_bytes`.
    hold: MessageHold,
    /// This message would have passed `buffer_bytes`: its bytes are
    /// dropped as they arrive and it is answered 452 at its end.
    body_unheld: bool,
    /// Discard mode: the header section's end was found, so nothing more
    /// of this message is copied.
    headers_complete: bool,
    body_bytes: u64,
    body_bare: bool,
    body_over: bool,
    errors: u32,
    greeting_sent: bool,
    /// The sink is stopping: the next command gets 421 4.3.2. A shared
    /// flag written once and only read here, so checking it per command
    /// costs a load from a cache line no one writes.
    stopping: Arc<AtomicBool>,
    /// Skip the hook once: the stage is being re-run after its delay.
    hook_bypass: bool,
    /// A fault's decision, due after its delay.
    deferred: Option<Decision>,
    pub(crate) io: IoEffects,
    pub(crate) report: Report,
    /// What the hook attached at the first greeting (tracked sessions).
    scope: Option<crate::hook::SessionScope>,
}

/// Static replies on the hot path are written as bytes.
const OK_MAIL: &[u8] = b"250 2.1.0 OK\r\n";
const OK_RCPT: &[u8] = b"250 2.1.5 OK\r\n";
const OK_DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
const OK_MSG: &[u8] = b"250 2.0.0 OK: message accepted\r\n";
const OK_GENERIC: &[u8] = b"250 2.0.0 OK\r\n";

impl Session {
    pub(crate) fn new(
        s: Arc<Settings>,
        stats: Arc<ShardStats>,
        store: Arc<Store>,
        stopping: Arc<AtomicBool>,
        id: u64,
        peer: SocketAddr,
    ) -> Session {
        let hold = store.message_hold();
        Session {
            s,
            stats,
            store,
            id,
            peer,
            phase: Phase::Command,
            greeted: Greeted::No,
            helo: String::new(),
            tls: None,
            auth_user: None,
            tx: Tx::default(),
            msg: Vec::new(),
            hold,
            body_unheld: false,
            headers_complete: false,
            body_bytes: 0,
            body_bare: false,
            body_over: false,
            errors: 0,
            greeting_sent: false,
            stopping,
            hook_bypass: false,
            deferred: None,
            io: IoEffects::default(),
            report: Report::default(),
            scope: None,
        }
    }

    // ---- the message's bytes -----------------------------------------

    /// Empties the message buffer for the next message. A large one is
    /// freed: an idle session should not keep a big body's memory, which
    /// `buffer_bytes` no longer counts.
    fn clear_body(&mut self) {
        self.msg.clear();
        if self.msg.capacity() > 64 << 10 {
            self.msg = Vec::new();
        }
        self.hold.release();
        self.body_unheld = false;
        self.headers_complete = false;
    }

    /// Ends the transaction (delivered, or RSET, a new greeting or MAIL,
    /// STARTTLS, a refusal): its envelope and any body bytes go, and a
    /// large recipient buffer is freed, as [`Session::clear_body`] does.
    fn abort_tx(&mut self) {
        self.tx.reset();
        if self.tx.rcpt_buf.capacity() > ENVELOPE_ALLOWANCE {
            self.tx.rcpt_buf = String::new();
            self.tx.rcpt_ends = Vec::new();
        }
        self.hold.release_envelope();
        self.clear_body();
    }

    // ---- replies -------------------------------------------------------

    #[inline]
    fn fixed(&self, out: &mut Vec<u8>, stage: Stage, code: u16, bytes: &[u8]) {
        self.stats.reply(stage, code);
        out.extend_from_slice(bytes);
    }

    fn reply(&self, out: &mut Vec<u8>, stage: Stage, code: u16, enhanced: &str, text: &str) {
        self.stats.reply(stage, code);
        mailstorm_proto::encode::write_reply(out, code, Some(enhanced), text);
    }

    fn reply_pending(&self, out: &mut Vec<u8>, stage: Stage, p: &Pending) {
        self.stats.reply(stage, p.code);
        mailstorm_proto::encode::write_reply(out, p.code, p.enhanced.as_deref(), &p.text);
    }

    /// An error reply that counts toward the per-session limit; past the
    /// limit the reply is `421 4.7.0` and the session closes.
    fn error(
        &mut self,
        out: &mut Vec<u8>,
        stage: Stage,
        code: u16,
        enhanced: &str,
        text: &str,
    ) -> Handled {
        if self.count_error() {
            return self.too_many_errors(out);
        }
        self.reply(out, stage, code, enhanced, text);
        Handled::Next
    }

    /// Counts an error; `true` when the limit is now exceeded.
    fn count_error(&mut self) -> bool {
        self.errors += 1;
        self.errors > self.s.config.max_errors
    }

    fn too_many_errors(&self, out: &mut Vec<u8>) -> Handled {
        self.reply(
            out,
            Stage::Session,
            421,
            "4.7.0",
            "Too many errors, closing connection",
        );
        Handled::Stop(Flow::Close(CloseReason::TooManyErrors))
    }

    /// The greeting, or the hook's replacement. `Flow::Read` means the
    /// session is open.
    pub(crate) fn greet(&mut self, out: &mut Vec<u8>) -> Flow {
        self.greeting_sent = true;
        if !self.report.opened {
            self.report.opened = true;
            if let Some(h) = &self.s.hook {
                let now = std::time::Instant::now();
                self.report.tracked = h.session_opened(self.peer, now);
                self.report.connected = Some(now);
            }
        }
        match self.gate(Stage::Connect, None, b"") {
            Gate::Go(None) => {
                self.stats.reply(Stage::Connect, 220);
                out.extend_from_slice(&self.s.greeting);
                Flow::Read
            }
            Gate::Go(Some(p)) => {
                self.reply_pending(out, Stage::Connect, &p);
                Flow::Read
            }
            // A refusing greeting: the hook's reply, then close.
            Gate::Refuse(p) => {
                self.reply_pending(out, Stage::Connect, &p);
                Flow::Close(CloseReason::Hook)
            }
            Gate::Stop(Handled::Retry(d)) => {
                self.greeting_sent = false;
                Flow::Delay(d)
            }
            Gate::Stop(Handled::Stop(f)) => f,
            Gate::Stop(Handled::Next) => Flow::Read,
        }
    }

    /// Whether the session holds part of a command line: `buffered`
    /// unconsumed input while a command or AUTH line is expected, or the
    /// rest of an over-long line being skipped. The connection bounds the
    /// time such a line may take (`command_timeout`).
    pub(crate) fn mid_command(&self, buffered: usize) -> bool {
        match self.phase {
            Phase::Command | Phase::Auth(_) => buffered > 0,
            Phase::SkipLine => true,
            Phase::Data(_) | Phase::Bdat { .. } | Phase::DataEnd => false,
        }
    }

    /// `true` until the greeting went out (a hook may delay it).
    pub(crate) fn greeting_pending(&self) -> bool {
        !self.greeting_sent
    }

    /// `421 4.7.0` at the greeting for a connection over the limits.
    pub(crate) fn refuse_busy(&self, out: &mut Vec<u8>) {
        self.reply(
            out,
            Stage::Connect,
            421,
            "4.7.0",
            "Too many connections, try again later",
        );
    }

    /// `421 4.4.2` for an idle or too-long session.
    pub(crate) fn timeout(&self, out: &mut Vec<u8>) {
        self.reply(
            out,
            Stage::Session,
            421,
            "4.4.2",
            "Timeout exceeded, closing connection",
        );
    }

    /// After a successful STARTTLS handshake (RFC 3207 §4.2): forget
    /// everything learned from the client before it.
    pub(crate) fn tls_started(&mut self, version: &'static str) {
        self.tls = Some(version);
        self.greeted = Greeted::No;
        self.helo.clear();
        self.auth_user = None;
        self.abort_tx();
        self.phase = Phase::Command;
    }

    // ---- the loop ------------------------------------------------------

    /// Handles everything complete in `buf`. Returns the bytes consumed and
    /// what to do next; replies are appended to `out`.
    pub(crate) fn process(&mut self, buf: &[u8], out: &mut Vec<u8>) -> (usize, Flow) {
        let mut pos = 0;
        loop {
            let input = &buf[pos..];
            let outcome = match &mut self.phase {
                Phase::Command => {
                    if input.is_empty() {
                        return (pos, Flow::Read);
                    }
                    if self.stopping.load(Ordering::Relaxed) {
                        self.reply(out, Stage::Session, 421, "4.3.2", "Shutting down");
                        return (buf.len(), Flow::Close(CloseReason::Shutdown));
                    }
                    match parse_command(input, &self.s.parser) {
                        Ok(Status::Partial) => return (pos, Flow::Read),
                        Ok(Status::Complete((cmd, n))) => {
                            // Replies still unsent: the client did not wait.
                            if !out.is_empty() {
                                self.report.pipelined = true;
                                if self.greeted != Greeted::Ehlo {
                                    // PIPELINING is announced in the EHLO
                                    // reply only (RFC 2920).
                                    self.report.pipelined_unannounced = true;
                                    self.report.unannounced_tested = true;
                                }
                            }
                            let line = trim_crlf(&input[..n]);
                            match self.command(cmd, line, out) {
                                Handled::Retry(d) => return (pos, Flow::Delay(d)),
                                Handled::Stop(Flow::StartTls) => {
                                    // RFC 3207 §5: anything pipelined after
                                    // STARTTLS is discarded (injection defence).
                                    return (buf.len(), Flow::StartTls);
                                }
                                Handled::Stop(f) => return (pos + n, f),
                                Handled::Next => {
                                    pos += n;
                                    Handled::Next
                                }
                            }
                        }
                        Err(e) => {
                            self.stats.add(Counter::Commands, 1);
                            pos += e.consumed;
                            if !e.line_complete {
                                self.phase = Phase::SkipLine;
                            }
                            let r = e.reply();
                            self.error(out, Stage::Invalid, r.code, r.enhanced, r.text)
                        }
                    }
                }
                Phase::SkipLine => match skip_line(input) {
                    Some(n) => {
                        pos += n;
                        self.phase = Phase::Command;
                        Handled::Next
                    }
                    None => return (buf.len(), Flow::Read),
                },
                Phase::Data(rx) => {
                    let status = if self.s.keep_bodies && !self.body_unheld {
                        let status = rx.unstuff(input, &mut self.msg);
                        let limit = self.s.config.buffer_bytes;
                        hold_or_drop(&mut self.msg, &mut self.hold, &mut self.body_unheld, limit);
                        status
                    } else {
                        // Discard mode (or a message over buffer_bytes):
                        // find the end in place, copy nothing.
                        rx.discard(input)
                    };
                    if !self.s.keep_bodies {
                        let n = match status {
                            Status::Partial => input.len(),
                            Status::Complete(n) => n,
                        };
                        if self.s.wants_headers() {
                            grab_headers(&mut self.msg, &mut self.headers_complete, &input[..n]);
                        }
                    }
                    match status {
                        Status::Partial => return (buf.len(), Flow::Read),
                        Status::Complete(n) => {
                            pos += n;
                            let st = rx.stats();
                            self.body_bytes = st.bytes;
                            self.body_bare = st.bare_lf || st.bare_cr;
                            self.body_over = st.over_limit;
                            self.phase = Phase::DataEnd;
                            Handled::Next
                        }
                    }
                }
                Phase::Bdat {
                    rx,
                    size,
                    last,
                    reject,
                    custom,
                } => {
                    let (chunk, done) = rx.take(input);
                    self.report.bdat = true;
                    if reject.is_none() && self.s.keep_bodies {
                        if !self.body_unheld {
                            self.msg.extend_from_slice(chunk);
                            let limit = self.s.config.buffer_bytes;
                            hold_or_drop(
                                &mut self.msg,
                                &mut self.hold,
                                &mut self.body_unheld,
                                limit,
                            );
                        }
                    } else if reject.is_none() && self.s.wants_headers() {
                        grab_headers(&mut self.msg, &mut self.headers_complete, chunk);
                    }
                    pos += chunk.len();
                    if !done {
                        return (pos, Flow::Read);
                    }
                    let (size, last, reject, custom) = (*size, *last, reject.take(), custom.take());
                    self.phase = Phase::Command;
                    self.bdat_done(size, last, reject, custom, out)
                }
                Phase::Auth(_) => {
                    if input.is_empty() {
                        return (pos, Flow::Read);
                    }
                    match find_line(input, AUTH_LINE_MAX, true) {
                        Ok(Status::Partial) => return (pos, Flow::Read),
                        Ok(Status::Complete(l)) => {
                            pos += l.total_len;
                            self.auth_continue(&input[..l.content_len], out)
                        }
                        Err(e) => {
                            pos += e.consumed;
                            self.phase = if e.line_complete {
                                Phase::Command
                            } else {
                                Phase::SkipLine
                            };
                            self.stats.add(Counter::AuthFailures, 1);
                            self.error(out, Stage::Auth, 501, "5.5.2", "Bad AUTH response line")
                        }
                    }
                }
                Phase::DataEnd => self.end_message(out),
            };
            match outcome {
                Handled::Next => {}
                Handled::Stop(f) => return (pos, f),
                Handled::Retry(d) => return (pos, Flow::Delay(d)),
            }
        }
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Counts `msg`'s growth against `limit`. When all sessions would pass it,
/// the message is dropped: its memory freed, the rest of it discarded as it
/// arrives (`unheld`), and 452 answered at its end. Fields, not `&mut
/// Session`: the caller holds the phase's receiver.
fn hold_or_drop(msg: &mut Vec<u8>, hold: &mut MessageHold, unheld: &mut bool, limit: u64) {
    if !hold.grow_to(msg.len(), limit) {
        *msg = Vec::new();
        *unheld = true;
    }
}
