//! The hook seam of the session: asks the stage hook (when one is
//! installed) and turns its decision into what a command handler does.

use crate::hook::{Decision, EarlyLook, Fault, ReplyClass, Stage, StageContext};
use crate::stats::CloseReason;

use super::{Flow, Gate, Greeted, Handled, IdleCloseReply, Pending, Session};

impl Session {
    /// The first greeting of a tracked session: lets the hook attach its
    /// per-session data (once per session, before the EHLO stage is
    /// decided).
    pub(super) fn greeted_first(&mut self, helo: &str) {
        if !self.report.tracked || self.report.helo.is_some() {
            return;
        }
        self.report.helo = Some(helo.to_owned());
        if let Some(h) = &self.s.hook {
            let connected = self
                .report
                .connected
                .unwrap_or_else(std::time::Instant::now);
            self.scope = h.session_greeted(self.id, self.peer, helo, connected);
        }
    }

    /// Consults the hook (if any) for `stage`. `arg`: the address being
    /// decided, the recipient at RCPT and the reverse-path at MAIL (as
    /// parsed, so the hook need not read it from the line again).
    pub(super) fn gate(&mut self, stage: Stage, arg: Option<&str>, command: &[u8]) -> Gate {
        let Some(hook) = &self.s.hook else {
            return Gate::Go(None);
        };
        // Tested before taking: `take` would rewrite the whole decision.
        if self.deferred.is_some() || self.hook_bypass {
            if let Some(d) = self.deferred.take() {
                return self.apply(d);
            }
            self.hook_bypass = false;
            return Gate::Go(None);
        }
        if !hook.consults(stage) {
            return Gate::Go(None);
        }
        let message_size = if stage == Stage::Bdat {
            self.tx.bdat_bytes
        } else {
            self.body_bytes
        };
        // `arg` is the reverse-path at MAIL, the recipient at RCPT and
        // `None` elsewhere, as `EarlyLook::arg` wants.
        let early = EarlyLook {
            stage,
            arg,
            message_size,
            scope: self.scope.as_deref(),
        };
        if hook.accepts_early(&early) {
            return Gate::Go(None);
        }
        let ctx = StageContext {
            stage,
            session_id: self.id,
            peer: self.peer,
            helo: (self.greeted != Greeted::No).then_some(self.helo.as_str()),
            sender: self.tx.active.then_some(self.tx.sender.as_str()),
            recipients: self.tx.recipients(),
            rcpt: if stage == Stage::Rcpt { arg } else { None },
            reverse_path: if stage == Stage::Mail { arg } else { None },
            tls: self.tls.is_some(),
            auth_user: self.auth_user.as_deref(),
            message_size,
            message: (stage == Stage::DataEnd && (self.s.keep_bodies || !self.msg.is_empty()))
                .then_some(&self.msg[..]),
            command,
            scope: self.scope.as_deref(),
        };
        let d = hook.decide(&ctx);
        if matches!(d, Decision::Accept) {
            // The common answer, without a call to `apply`. `Accept` owns
            // nothing: forgetting it skips a call to its drop glue.
            std::mem::forget(d);
            return Gate::Go(None);
        }
        self.apply(d)
    }

    /// Turns a decision into a gate, recording connection-level effects.
    #[inline(never)]
    fn apply(&mut self, d: Decision) -> Gate {
        match d {
            Decision::Fault(f) => {
                let mut f: Fault = *f;
                if let Some(delay) = f.delay.take() {
                    // Re-run the stage after the delay with the rest.
                    self.deferred = Some(Decision::Fault(Box::new(f)));
                    return Gate::Stop(Handled::Retry(delay));
                }
                let io = &mut self.io;
                io.disconnect_after = f.disconnect_after.or(io.disconnect_after);
                io.stall = f.stall.or(io.stall);
                io.throttle = f.throttle.or(io.throttle);
                io.split = f.split_reply.or(io.split);
                if let Some(ic) = f.idle_close {
                    let mut reply = Vec::new();
                    mailstorm_proto::encode::write_reply(
                        &mut reply,
                        ic.code,
                        Some(&ic.enhanced),
                        &ic.text,
                    );
                    io.idle_close = Some(IdleCloseReply {
                        after: ic.after,
                        reply,
                    });
                }
                match f.then {
                    Decision::Fault(_) => Gate::Go(None),
                    d => self.apply(d),
                }
            }
            Decision::Accept => Gate::Go(None),
            Decision::Delay(d) => {
                self.hook_bypass = true;
                Gate::Stop(Handled::Retry(d))
            }
            Decision::Close { rst } => Gate::Stop(Handled::Stop(Flow::Abort { rst })),
            Decision::Reply {
                code,
                enhanced,
                text,
            } => {
                let p = Pending {
                    code,
                    enhanced,
                    text,
                    error: false,
                    reset: false,
                    close: code == 421,
                };
                if ReplyClass::of(code) == ReplyClass::Positive {
                    Gate::Go(Some(p))
                } else {
                    self.report.sent_421 |= code == 421;
                    Gate::Refuse(Pending { reset: true, ..p })
                }
            }
        }
    }

    /// [`Session::gate`] for command stages: a refusal is answered here.
    /// `Ok(custom)` proceeds; `Err(outcome)` is returned by the handler.
    pub(super) fn pass(
        &mut self,
        stage: Stage,
        arg: Option<&str>,
        command: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Pending>, Handled> {
        match self.gate(stage, arg, command) {
            Gate::Go(c) => Ok(c),
            Gate::Refuse(p) => {
                self.reply_pending(out, stage, &p);
                if p.close {
                    self.abort_tx();
                    return Err(Handled::Stop(Flow::Close(CloseReason::Hook)));
                }
                Err(Handled::Next)
            }
            Gate::Stop(o) => Err(o),
        }
    }
}
