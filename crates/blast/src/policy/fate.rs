//! What one attempt did to a message's recipients: replies are noted as
//! they arrive ([`TxnRecord`]) and turned into a [`Fate`] (delivered,
//! deferred, rejected masks and the failure's scope) when it ends.

/// Recipients as a bit mask by index in the message (at most 64 with a
/// policy; Postfix's default recipient limit is 50).
pub type Mask = u64;

/// The most recipients per message a policy run supports.
pub const MAX_RCPTS: u32 = 64;

/// The mask of the first `n` recipients.
pub fn all(n: u32) -> Mask {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// What one attempt did to the recipients it offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fate {
    /// Accepted for delivery.
    pub delivered: Mask,
    /// Temporary failure: retry these.
    pub deferred: Mask,
    /// Permanent failure: never retried.
    pub rejected: Mask,
    /// The failure was connection-level (421, greeting, EHLO, transport).
    pub connection: bool,
    /// The whole message failed temporarily (MAIL/DATA 4xx or connection).
    pub message_failed: bool,
}

impl Fate {
    /// Every offered recipient deferred by a connection-level failure.
    pub fn connection_failure(offered: Mask) -> Fate {
        Fate {
            deferred: offered,
            connection: true,
            message_failed: true,
            ..Fate::default()
        }
    }
}

/// The replies of one transaction as they arrive, turned into a [`Fate`]
/// at its end. RCPT replies map to the offered recipients in order; with
/// LMTP each final reply maps to the next accepted recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnRecord {
    /// Recipients offered (the mask the transaction was sent with).
    pub offered: Mask,
    rcpt_seen: u32,
    ok: Mask,
    temp: Mask,
    perm: Mask,
    mail: u16,
    data: u16,
    finals_seen: u32,
    final_ok: Mask,
    final_temp: Mask,
    final_perm: Mask,
    saw_421: bool,
}

/// The index of the `k`-th set bit of `m` (0-based), as a mask.
fn nth_bit(m: Mask, k: u32) -> Mask {
    let mut m = m;
    for _ in 0..k {
        m &= m.wrapping_sub(1);
    }
    m & m.wrapping_neg()
}

impl TxnRecord {
    /// A transaction offering `offered`.
    pub fn begin(offered: Mask) -> TxnRecord {
        TxnRecord {
            offered,
            ..TxnRecord::default()
        }
    }

    /// Notes a reply at `stage`.
    pub fn on_reply(&mut self, stage: crate::stats::Stage, code: u16, lmtp: bool) {
        use crate::stats::Stage;
        self.saw_421 |= code == 421;
        let class = code / 100;
        match stage {
            Stage::Mail => self.mail = code,
            Stage::Rcpt => {
                let bit = nth_bit(self.offered, self.rcpt_seen);
                self.rcpt_seen += 1;
                match class {
                    2 | 3 => self.ok |= bit,
                    4 => self.temp |= bit,
                    _ => self.perm |= bit,
                }
            }
            Stage::Data => self.data = code,
            Stage::DataEnd => {
                let bits = if lmtp {
                    nth_bit(self.ok, self.finals_seen)
                } else {
                    self.ok
                };
                self.finals_seen += 1;
                match class {
                    2 | 3 => self.final_ok |= bits,
                    4 => self.final_temp |= bits,
                    _ => self.final_perm |= bits,
                }
            }
            _ => {}
        }
    }

    /// What the transaction did; `broken`: the connection failed (a
    /// transport error or a 421) before it ended.
    pub fn fate(&self, broken: bool) -> Fate {
        let connection = broken || self.saw_421;
        let mail = self.mail / 100;
        let data = self.data / 100;
        let mut f = Fate {
            connection,
            ..Fate::default()
        };
        if mail == 5 && self.mail != 421 {
            // Nothing after a refused MAIL counts (RCPT gets 503).
            f.rejected = self.offered;
            return f;
        }
        if mail == 2 {
            f.delivered = self.final_ok & self.ok;
            f.rejected = self.perm;
            if self.ok != 0 && data == 5 && self.data != 421 {
                f.rejected |= self.ok;
            }
            f.rejected |= self.final_perm & self.ok;
        }
        f.deferred = self.offered & !f.delivered & !f.rejected;
        f.message_failed =
            connection || mail == 4 || (self.ok != 0 && data == 4) || self.final_temp != 0;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_records() {
        use crate::stats::Stage;
        // Recipients 0, 2, 3 offered; 0 ok, 2 greylisted, 3 unknown.
        let mut t = TxnRecord::begin(0b1101);
        t.on_reply(Stage::Mail, 250, false);
        t.on_reply(Stage::Rcpt, 250, false);
        t.on_reply(Stage::Rcpt, 450, false);
        t.on_reply(Stage::Rcpt, 550, false);
        t.on_reply(Stage::DataEnd, 250, false);
        let f = t.fate(false);
        assert_eq!(
            (f.delivered, f.deferred, f.rejected),
            (0b0001, 0b0100, 0b1000)
        );
        assert!(!f.connection && !f.message_failed);
        // MAIL 451: everything deferred, RCPT 503s ignored.
        let mut t = TxnRecord::begin(0b11);
        t.on_reply(Stage::Mail, 451, false);
        t.on_reply(Stage::Rcpt, 503, false);
        let f = t.fate(false);
        assert_eq!((f.deferred, f.rejected), (0b11, 0));
        assert!(f.message_failed && !f.connection);
        // MAIL 553: everything rejected.
        let mut t = TxnRecord::begin(0b1);
        t.on_reply(Stage::Mail, 553, false);
        assert_eq!(t.fate(false).rejected, 1);
        // 421 after RCPT: connection-level, rejected stays rejected.
        let mut t = TxnRecord::begin(0b11);
        t.on_reply(Stage::Mail, 250, false);
        t.on_reply(Stage::Rcpt, 550, false);
        t.on_reply(Stage::Rcpt, 421, false);
        let f = t.fate(true);
        assert_eq!((f.deferred, f.rejected), (0b10, 0b01));
        assert!(f.connection && f.message_failed);
        // DATA 554 after accepted recipients: permanent; final 452: deferred.
        let mut t = TxnRecord::begin(0b1);
        t.on_reply(Stage::Mail, 250, false);
        t.on_reply(Stage::Rcpt, 250, false);
        t.on_reply(Stage::Data, 554, false);
        assert_eq!(t.fate(false).rejected, 1);
        let mut t = TxnRecord::begin(0b1);
        t.on_reply(Stage::Mail, 250, false);
        t.on_reply(Stage::Rcpt, 250, false);
        t.on_reply(Stage::DataEnd, 452, false);
        let f = t.fate(false);
        assert_eq!(f.deferred, 1);
        assert!(f.message_failed);
        // LMTP: one final per accepted recipient.
        let mut t = TxnRecord::begin(0b111);
        t.on_reply(Stage::Mail, 250, true);
        for _ in 0..3 {
            t.on_reply(Stage::Rcpt, 250, true);
        }
        t.on_reply(Stage::DataEnd, 250, true);
        t.on_reply(Stage::DataEnd, 452, true);
        t.on_reply(Stage::DataEnd, 550, true);
        let f = t.fate(false);
        assert_eq!((f.delivered, f.deferred, f.rejected), (0b001, 0b010, 0b100));
        // Nothing answered at all: a transport error defers everything.
        let f = TxnRecord::begin(0b1).fate(true);
        assert_eq!(f, Fate::connection_failure(1));
        assert_eq!(nth_bit(0b1010_0100, 2), 0b1000_0000);
        assert_eq!(nth_bit(0b100, 1), 0);
    }
}
