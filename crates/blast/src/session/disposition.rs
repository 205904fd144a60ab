//! How a message ended, decided in one place from the replies it got.

use mailstorm_proto::reply::EnhancedCode;

use crate::stats::Transport;

/// How a message (or the session setup it waited for) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Final reply 2xx (LMTP: at least one recipient delivered).
    Accepted,
    /// Ended with a 4xx: worth a retry.
    Deferred,
    /// Ended with a 5xx (or anything else that is not 2xx/4xx).
    Rejected,
    /// Ended with a transport error of this kind.
    Failed(Transport),
}

impl Disposition {
    /// The rule every reply-driven ending goes through: 2xx/3xx accepted,
    /// 4xx deferred, anything else rejected.
    pub fn of_code(code: u16) -> Disposition {
        match code / 100 {
            2 | 3 => Disposition::Accepted,
            4 => Disposition::Deferred,
            _ => Disposition::Rejected,
        }
    }

    /// A transaction that reached its end of data: accepted if any final
    /// reply was positive, else deferred if any was temporary, else the
    /// first final reply decides.
    fn of_finals(f: Finals) -> Disposition {
        if f.ok {
            Disposition::Accepted
        } else if f.temporary {
            Disposition::Deferred
        } else {
            Disposition::of_code(f.first.unwrap_or(554))
        }
    }

    /// A transaction's ending from its replies, in protocol order: a
    /// refused MAIL decides; without an accepted recipient the message is
    /// deferred when any recipient was deferred (else rejected); otherwise
    /// a refused DATA or the final replies decide.
    pub fn of_transaction(mail: Rep, rcpts: RcptReplies, end: DataEnd) -> Disposition {
        if !mail.ok() {
            return Disposition::of_code(mail.code);
        }
        if rcpts.accepted == 0 {
            return Disposition::of_code(if rcpts.any_4xx { 450 } else { 550 });
        }
        match end {
            // Only reached by a 421 cutting the transaction short.
            DataEnd::NotReached => Disposition::Deferred,
            DataEnd::Refused(code) => Disposition::of_code(code),
            DataEnd::Finals(f) => Disposition::of_finals(f),
        }
    }
}

/// A reply reduced to what accounting needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rep {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
}

impl Rep {
    pub fn ok(&self) -> bool {
        self.code / 100 == 2
    }
}

/// What the RCPT replies of a transaction said.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RcptReplies {
    /// Recipients accepted.
    pub accepted: u32,
    /// Any recipient got a 4xx.
    pub any_4xx: bool,
}

impl RcptReplies {
    /// Adds one RCPT reply.
    pub fn add(&mut self, r: Rep) {
        if r.ok() {
            self.accepted += 1;
        }
        self.any_4xx |= r.code / 100 == 4;
    }
}

/// The final replies after the data (LMTP: one per accepted recipient).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Finals {
    /// Any was 2xx.
    pub ok: bool,
    /// Any was 4xx.
    pub temporary: bool,
    /// The first one's code.
    pub first: Option<u16>,
}

impl Finals {
    /// Adds one final reply.
    pub fn add(&mut self, r: Rep) {
        self.ok |= r.ok();
        self.temporary |= r.code / 100 == 4;
        self.first.get_or_insert(r.code);
    }
}

/// How far the data phase of a transaction got.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DataEnd {
    /// The data was not sent.
    NotReached,
    /// DATA got this code instead of 354.
    Refused(u16),
    /// The final replies.
    Finals(Finals),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(code: u16) -> Rep {
        Rep {
            code,
            enhanced: None,
        }
    }

    #[test]
    fn one_rule_for_every_ending() {
        use Disposition::*;
        let none = RcptReplies::default();
        let one = RcptReplies {
            accepted: 1,
            any_4xx: false,
        };
        let deferred_rcpt = RcptReplies {
            accepted: 0,
            any_4xx: true,
        };
        let of = Disposition::of_transaction;
        assert_eq!(of(rep(451), none, DataEnd::NotReached), Deferred);
        assert_eq!(of(rep(550), none, DataEnd::NotReached), Rejected);
        assert_eq!(of(rep(250), deferred_rcpt, DataEnd::NotReached), Deferred);
        assert_eq!(of(rep(250), none, DataEnd::NotReached), Rejected);
        assert_eq!(of(rep(250), one, DataEnd::Refused(554)), Rejected);
        assert_eq!(of(rep(250), one, DataEnd::Refused(451)), Deferred);
        let mut f = Finals::default();
        f.add(rep(452));
        f.add(rep(250));
        assert_eq!(of(rep(250), one, DataEnd::Finals(f)), Accepted);
        let mut f = Finals::default();
        f.add(rep(552));
        assert_eq!(of(rep(250), one, DataEnd::Finals(f)), Rejected);
        assert_eq!(Disposition::of_code(354), Accepted);
    }
}
