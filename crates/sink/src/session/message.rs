//! The end of a message: size and bare-LF policy, the DataEnd hook, storing
//! and the final reply (one per recipient in LMTP).

use std::io::Write as _;

use super::{Gate, Handled, Phase, Session, OK_MSG};
use crate::config::BareLfPolicy;
use crate::hook::Stage;
use crate::stats::Counter;
use crate::store::Envelope;

impl Session {
    // ---- end of message ------------------------------------------------

    /// Writes the same reply once (SMTP) or once per recipient (LMTP).
    fn reply_each(&self, out: &mut Vec<u8>, code: u16, enhanced: &str, text: &str) {
        let n = if self.s.config.lmtp {
            self.tx.rcpt_ends.len()
        } else {
            1
        };
        for _ in 0..n {
            self.reply(out, Stage::DataEnd, code, enhanced, text);
        }
    }

    pub(super) fn end_message(&mut self, out: &mut Vec<u8>) -> Handled {
        if self.body_over || self.tx.declared_size.is_some_and(|n| self.body_bytes > n) {
            self.report.size_violations += 1;
        }
        let refuse = if self.body_over {
            Some((
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ))
        } else if self.body_bare && self.s.config.bare_lf == BareLfPolicy::Reject {
            Some((
                550,
                "5.7.0",
                "Bare LF or CR in message; lines must end with CRLF",
            ))
        } else if self.body_unheld {
            // Over buffer_bytes: the reply Postfix gives when its queue is
            // short of space; the client keeps the message and retries.
            Some((452, "4.3.1", "Insufficient system storage"))
        } else {
            None
        };
        if let Some((code, enh, text)) = refuse {
            self.reply_each(out, code, enh, text);
            return self.finish_tx(false);
        }
        let custom = match self.gate(Stage::DataEnd, None, b"") {
            Gate::Go(c) => c,
            Gate::Refuse(p) => {
                let n = if self.s.config.lmtp {
                    self.tx.rcpt_ends.len()
                } else {
                    1
                };
                for _ in 0..n {
                    self.reply_pending(out, Stage::DataEnd, &p);
                }
                let o = self.finish_tx(false);
                if p.close {
                    return Handled::Stop(super::Flow::Close(crate::stats::CloseReason::Hook));
                }
                return o;
            }
            Gate::Stop(o) => {
                if matches!(o, Handled::Stop(_)) {
                    // The whole message arrived and the plan drops the
                    // connection before the reply: SMTP's "lost 250". The
                    // client will send it again; the ledger sees both.
                    self.ledger_record();
                }
                return o;
            }
        };
        let id = if self.s.keep_bodies {
            let env = Envelope {
                mail_from: &self.tx.sender,
                recipients: self.tx.recipients(),
                client: self.peer,
                helo: &self.helo,
                tls: self.tls,
                auth_user: self.auth_user.as_deref(),
            };
            match self.store.deliver(&self.s, &env, &self.msg) {
                Ok(id) => Some(id),
                Err(e) => {
                    if !self.s.config.quiet {
                        eprintln!("mailstorm-sink: cannot store message: {e}");
                    }
                    self.reply_each(out, 451, "4.3.0", "Cannot store message");
                    return self.finish_tx(false);
                }
            }
        } else {
            None
        };
        self.stats.add(Counter::MessagesAccepted, 1);
        // Like Postfix's smtpd_hard_error_limit, the limit counts errors
        // "without delivering mail": a delivery forgives the earlier ones,
        // so a long pipelining session meeting injected faults (a refused
        // RCPT, then 503 to its DATA) is not closed for their consequences.
        self.errors = 0;
        self.ledger_record();
        self.report.messages += 1;
        self.stats.add(Counter::MessageBytes, self.body_bytes);
        if let Some(p) = custom {
            for _ in 0..(if self.s.config.lmtp {
                self.tx.rcpt_ends.len()
            } else {
                1
            }) {
                self.reply_pending(out, Stage::DataEnd, &p);
            }
        } else if self.s.config.lmtp {
            for rcpt in self.tx.recipients().iter() {
                self.stats.reply(Stage::DataEnd, 250);
                let _ = write!(out, "250 2.1.5 <{rcpt}> delivered\r\n");
            }
        } else if let Some(id) = id {
            self.stats.reply(Stage::DataEnd, 250);
            let _ = write!(out, "250 2.0.0 OK: queued as {id}\r\n");
        } else {
            self.fixed(out, Stage::DataEnd, 250, OK_MSG);
        }
        self.finish_tx(true)
    }

    /// The ledger's one call per arrived message (header block in `msg`).
    fn ledger_record(&self) {
        if let Some(l) = &self.s.ledger {
            l.record(
                &self.msg,
                self.tx.rcpt_ends.len(),
                crate::ledger::unix_micros(),
                &crate::ledger::Arrival {
                    helo: &self.helo,
                    ip: self.peer.ip(),
                    sender: &self.tx.sender,
                    recipients: self.tx.recipients(),
                },
            );
        }
    }

    fn finish_tx(&mut self, accepted: bool) -> Handled {
        if !accepted {
            self.stats.add(Counter::MessagesRejected, 1);
        }
        self.abort_tx();
        self.phase = Phase::Command;
        Handled::Next
    }
}
