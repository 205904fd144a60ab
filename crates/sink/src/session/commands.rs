//! Command handlers: EHLO/HELO/LHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP,
//! QUIT, VRFY, EXPN, HELP, STARTTLS and AUTH.

use std::io::Write as _;

use mailstorm_proto::data::{BdatReceiver, DataConfig, DataReceiver};
use mailstorm_proto::{Body, Command};

use super::{
    Flow, Gate, Greeted, Handled, Pending, Phase, Session, OK_DATA, OK_GENERIC, OK_MAIL, OK_RCPT,
};
use crate::auth::{AuthExchange, Mechanism, Step};
use crate::hook::Stage;
use crate::stats::{CloseReason, Counter};

impl Session {
    // ---- commands ------------------------------------------------------

    pub(super) fn command(&mut self, cmd: Command<'_>, line: &[u8], out: &mut Vec<u8>) -> Handled {
        self.stats.add(Counter::Commands, 1);
        match cmd {
            Command::Ehlo { domain } | Command::Helo { domain } | Command::Lhlo { domain } => {
                self.hello(cmd, domain, line, out)
            }
            Command::Mail { from, params } => {
                if self.greeted == Greeted::No {
                    return self.error(out, Stage::Mail, 503, "5.5.1", "Send EHLO/HELO first");
                }
                if self.tx.active {
                    return self.error(out, Stage::Mail, 503, "5.5.1", "Nested MAIL command");
                }
                if self.s.config.auth_required && self.auth_user.is_none() {
                    return self.error(out, Stage::Mail, 530, "5.7.0", "Authentication required");
                }
                self.report.mails += 1;
                let max = self.s.config.max_message_size;
                if max != 0 && params.size.is_some_and(|n| n > max) {
                    self.report.size_violations += 1;
                    self.reply(
                        out,
                        Stage::Mail,
                        552,
                        "5.3.4",
                        "Message size exceeds fixed maximum message size",
                    );
                    return Handled::Next;
                }
                let custom = match self.pass(Stage::Mail, Some(from.as_str()), line, out) {
                    Ok(c) => c,
                    Err(o) => return o,
                };
                self.abort_tx();
                self.tx.active = true;
                self.tx.sender.push_str(from.as_str());
                self.tx.binarymime = params.body == Some(Body::BinaryMime);
                self.tx.declared_size = params.size;
                match custom {
                    Some(p) => self.reply_pending(out, Stage::Mail, &p),
                    None => self.fixed(out, Stage::Mail, 250, OK_MAIL),
                }
                Handled::Next
            }
            Command::Rcpt { to, .. } => {
                if !self.tx.active {
                    return self.error(out, Stage::Rcpt, 503, "5.5.1", "Need MAIL before RCPT");
                }
                if self.tx.bdat {
                    return self.error(out, Stage::Rcpt, 503, "5.5.1", "RCPT after BDAT");
                }
                if self.tx.rcpt_ends.len() >= self.s.config.max_recipients {
                    self.reply(out, Stage::Rcpt, 452, "4.5.3", "Too many recipients");
                    return Handled::Next;
                }
                // The envelope as it would be: its text and its ends.
                let envelope =
                    self.tx.rcpt_buf.len() + to.as_str().len() + 4 * (self.tx.rcpt_ends.len() + 1);
                if !self
                    .hold
                    .grow_envelope_to(envelope, self.s.config.buffer_bytes)
                {
                    // Like 452 4.5.3: the client sends this recipient again
                    // in a later transaction.
                    self.reply(
                        out,
                        Stage::Rcpt,
                        452,
                        "4.3.1",
                        "Insufficient system storage",
                    );
                    return Handled::Next;
                }
                let custom = match self.pass(Stage::Rcpt, Some(to.as_str()), line, out) {
                    Ok(c) => c,
                    Err(o) => return o,
                };
                self.tx.rcpt_buf.push_str(to.as_str());
                self.tx.rcpt_ends.push(self.tx.rcpt_buf.len() as u32);
                self.stats.add(Counter::RecipientsAccepted, 1);
                match custom {
                    Some(p) => self.reply_pending(out, Stage::Rcpt, &p),
                    None => self.fixed(out, Stage::Rcpt, 250, OK_RCPT),
                }
                Handled::Next
            }
            Command::Data => {
                if !self.tx.active {
                    return self.error(out, Stage::Data, 503, "5.5.1", "Need MAIL command");
                }
                if self.tx.rcpt_ends.is_empty() {
                    return self.error(out, Stage::Data, 503, "5.5.1", "Need RCPT command");
                }
                if self.tx.bdat {
                    return self.error(out, Stage::Data, 503, "5.5.1", "DATA after BDAT");
                }
                if self.tx.binarymime {
                    return self.error(
                        out,
                        Stage::Data,
                        503,
                        "5.5.1",
                        "BODY=BINARYMIME requires BDAT",
                    );
                }
                let custom = match self.pass(Stage::Data, None, line, out) {
                    Ok(c) => c,
                    Err(o) => return o,
                };
                self.clear_body();
                self.phase = Phase::Data(DataReceiver::new(DataConfig {
                    max_size: self.s.config.max_message_size,
                    // Only CRLF.CRLF ends the message (smuggling-safe), even
                    // when bare LF is accepted in the body.
                    strict: true,
                }));
                match custom {
                    Some(p) => self.reply_pending(out, Stage::Data, &p),
                    None => self.fixed(out, Stage::Data, 354, OK_DATA),
                }
                Handled::Next
            }
            Command::Bdat { size, last } => self.bdat(size, last, line),
            Command::Rset => {
                let custom = match self.pass(Stage::Rset, None, line, out) {
                    Ok(c) => c,
                    Err(o) => return o,
                };
                self.abort_tx();
                match custom {
                    Some(p) => self.reply_pending(out, Stage::Rset, &p),
                    None => self.fixed(out, Stage::Rset, 250, OK_GENERIC),
                }
                Handled::Next
            }
            Command::Noop => {
                self.fixed(out, Stage::Noop, 250, OK_GENERIC);
                Handled::Next
            }
            Command::Quit => {
                self.report.quit = true;
                let custom = match self.pass(Stage::Quit, None, line, out) {
                    Ok(c) => c,
                    Err(Handled::Next) => return Handled::Stop(Flow::Close(CloseReason::Quit)),
                    Err(o) => return o,
                };
                match custom {
                    Some(p) => self.reply_pending(out, Stage::Quit, &p),
                    None => self.fixed(out, Stage::Quit, 221, b"221 2.0.0 Bye\r\n"),
                }
                Handled::Stop(Flow::Close(CloseReason::Quit))
            }
            Command::Vrfy { .. } => {
                self.reply(
                    out,
                    Stage::Vrfy,
                    252,
                    "2.5.0",
                    "Cannot VRFY user, but will accept message",
                );
                Handled::Next
            }
            Command::Expn { .. } => {
                self.reply(out, Stage::Vrfy, 502, "5.5.1", "EXPN not supported");
                Handled::Next
            }
            Command::Help { .. } => {
                self.reply(
                    out,
                    Stage::Help,
                    214,
                    "2.0.0",
                    "mailstorm-sink: EHLO HELO LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
                );
                Handled::Next
            }
            Command::StartTls => self.starttls(line, out),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth_start(mechanism, initial_response, line, out),
            Command::Unknown { .. } => {
                self.error(out, Stage::Invalid, 500, "5.5.2", "Command not recognized")
            }
        }
    }

    fn hello(&mut self, cmd: Command<'_>, domain: &str, line: &[u8], out: &mut Vec<u8>) -> Handled {
        let lhlo = matches!(cmd, Command::Lhlo { .. });
        if self.s.config.lmtp && !lhlo {
            return self.error(out, Stage::Ehlo, 503, "5.5.1", "This is LMTP: send LHLO");
        }
        if !self.s.config.lmtp && lhlo {
            return self.error(out, Stage::Invalid, 500, "5.5.2", "Command not recognized");
        }
        self.greeted_first(domain);
        let custom = match self.pass(Stage::Ehlo, None, line, out) {
            Ok(c) => c,
            Err(o) => return o,
        };
        // A new EHLO/HELO aborts any transaction (RFC 5321 §4.1.4).
        self.abort_tx();
        self.helo.clear();
        self.helo.push_str(domain);
        let helo = matches!(cmd, Command::Helo { .. });
        self.greeted = if helo { Greeted::Helo } else { Greeted::Ehlo };
        // No EHLO reply, no PIPELINING: the session tests the rule.
        self.report.unannounced_tested |= helo;
        self.stats
            .reply(Stage::Ehlo, custom.as_ref().map_or(250, |p| p.code));
        match custom {
            Some(p) => {
                mailstorm_proto::encode::write_reply(out, p.code, p.enhanced.as_deref(), &p.text)
            }
            None if helo => out.extend_from_slice(&self.s.helo),
            None if self.s.tls.is_some() && self.tls.is_none() => {
                out.extend_from_slice(&self.s.ehlo_starttls)
            }
            None => out.extend_from_slice(&self.s.ehlo),
        }
        Handled::Next
    }

    fn bdat(&mut self, size: u64, last: bool, line: &[u8]) -> Handled {
        let max = self.s.config.max_message_size;
        let mut reject = if !self.tx.active {
            Some(Pending::fixed(503, "5.5.1", "Need MAIL command", true))
        } else if self.tx.rcpt_ends.is_empty() {
            Some(Pending::fixed(503, "5.5.1", "Need RCPT command", true))
        } else if max != 0 && self.tx.bdat_bytes.saturating_add(size) > max {
            self.report.size_violations += 1;
            Some(Pending {
                reset: true,
                ..Pending::fixed(
                    552,
                    "5.3.4",
                    "Message size exceeds fixed maximum message size",
                    false,
                )
            })
        } else {
            None
        };
        let mut custom = None;
        if reject.is_none() && !last {
            // The last chunk is decided at DataEnd, once the message is whole.
            self.tx.bdat_bytes += size;
            let gate = self.gate(Stage::Bdat, None, line);
            self.tx.bdat_bytes -= size;
            match gate {
                Gate::Go(c) => custom = c,
                // Answered once the chunk has been read and dropped.
                Gate::Refuse(p) => reject = Some(p),
                Gate::Stop(o) => return o,
            }
        }
        if reject.is_none() {
            if !self.tx.bdat {
                self.clear_body();
            }
            self.tx.bdat = true;
        }
        // The chunk's bytes are consumed even when refused, so they can
        // never be read as commands.
        self.phase = Phase::Bdat {
            rx: BdatReceiver::new(size),
            size,
            last,
            reject,
            custom,
        };
        Handled::Next
    }

    /// A BDAT chunk was fully read.
    pub(super) fn bdat_done(
        &mut self,
        size: u64,
        last: bool,
        reject: Option<Pending>,
        custom: Option<Pending>,
        out: &mut Vec<u8>,
    ) -> Handled {
        match reject {
            Some(p) => {
                if p.reset {
                    // An over-size message: refused like one over size in DATA.
                    self.stats.add(Counter::MessagesRejected, 1);
                    self.abort_tx();
                }
                if p.error && self.count_error() {
                    return self.too_many_errors(out);
                }
                self.reply_pending(out, Stage::Bdat, &p);
                if p.close {
                    return Handled::Stop(Flow::Close(crate::stats::CloseReason::Hook));
                }
                Handled::Next
            }
            None => {
                self.tx.bdat_bytes += size;
                if let Some(p) = custom {
                    self.reply_pending(out, Stage::Bdat, &p);
                } else if last {
                    self.body_bytes = self.tx.bdat_bytes;
                    self.body_bare = false; // binary-safe: no line structure
                    self.body_over = false; // checked before each chunk
                    self.phase = Phase::DataEnd;
                } else {
                    self.stats.reply(Stage::Bdat, 250);
                    let _ = write!(out, "250 2.0.0 {size} octets received\r\n");
                }
                Handled::Next
            }
        }
    }

    fn starttls(&mut self, line: &[u8], out: &mut Vec<u8>) -> Handled {
        if self.s.tls.is_none() {
            return self.error(out, Stage::StartTls, 502, "5.5.1", "STARTTLS not available");
        }
        if self.tls.is_some() {
            return self.error(out, Stage::StartTls, 503, "5.5.1", "TLS already active");
        }
        if self.greeted == Greeted::No {
            return self.error(out, Stage::StartTls, 503, "5.5.1", "Send EHLO first");
        }
        if self.tx.active {
            return self.error(
                out,
                Stage::StartTls,
                503,
                "5.5.1",
                "Mail transaction in progress",
            );
        }
        let custom = match self.pass(Stage::StartTls, None, line, out) {
            Ok(c) => c,
            Err(o) => return o,
        };
        match custom {
            Some(p) => self.reply_pending(out, Stage::StartTls, &p),
            None => self.fixed(
                out,
                Stage::StartTls,
                220,
                b"220 2.0.0 Ready to start TLS\r\n",
            ),
        }
        Handled::Stop(Flow::StartTls)
    }

    // ---- AUTH ----------------------------------------------------------

    fn auth_start(
        &mut self,
        mechanism: &str,
        initial: Option<&str>,
        line: &[u8],
        out: &mut Vec<u8>,
    ) -> Handled {
        if self.greeted != Greeted::Ehlo {
            return self.error(out, Stage::Auth, 503, "5.5.1", "Send EHLO first");
        }
        if self.auth_user.is_some() {
            return self.error(out, Stage::Auth, 503, "5.5.1", "Already authenticated");
        }
        if self.tx.active {
            return self.error(
                out,
                Stage::Auth,
                503,
                "5.5.1",
                "Mail transaction in progress",
            );
        }
        let Some(mech) = Mechanism::parse(mechanism) else {
            return self.error(
                out,
                Stage::Auth,
                504,
                "5.5.4",
                "Unrecognized authentication type",
            );
        };
        if let Err(o) = self.pass(Stage::Auth, None, line, out) {
            return o;
        }
        let nonce = self.id ^ (u64::from(std::process::id()) << 40);
        let users = self.s.users.clone();
        let (ex, step) =
            AuthExchange::start(mech, initial, &self.s.hostname, nonce, users.as_deref());
        self.phase = Phase::Auth(ex);
        self.auth_step(step, out)
    }

    pub(super) fn auth_continue(&mut self, client_line: &[u8], out: &mut Vec<u8>) -> Handled {
        let users = self.s.users.clone();
        let Phase::Auth(ex) = &mut self.phase else {
            return Handled::Next;
        };
        let step = ex.next(client_line, users.as_deref());
        self.auth_step(step, out)
    }

    fn auth_step(&mut self, step: Step, out: &mut Vec<u8>) -> Handled {
        match step {
            Step::Challenge(c) => {
                // Stays in the Auth phase for the client's answer.
                self.stats.reply(Stage::Auth, 334);
                out.extend_from_slice(b"334 ");
                out.extend_from_slice(c.as_bytes());
                out.extend_from_slice(b"\r\n");
                Handled::Next
            }
            Step::Success { user } => {
                self.phase = Phase::Command;
                self.auth_user = Some(user);
                self.stats.add(Counter::AuthSuccesses, 1);
                self.reply(out, Stage::Auth, 235, "2.7.0", "Authentication successful");
                Handled::Next
            }
            Step::Failure(f) => {
                self.phase = Phase::Command;
                self.stats.add(Counter::AuthFailures, 1);
                let (code, enh, text) = f.reply();
                self.error(out, Stage::Auth, code, enh, text)
            }
        }
    }
}
