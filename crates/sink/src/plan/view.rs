//! What the rules look at: a [`View`] of the command (with the EHLO and
//! MAIL arguments read from the line at their own stage), the recipients
//! as one key part ([`RcptPart`]) and the decision's time ([`Now`]).

use std::cell::Cell;
use std::time::Instant;

use super::select::{cmp_lower, KeyHasher};
use crate::hook::{Stage, StageContext};
use crate::ip_text::IpText;

/// The argument of `EHLO x` / `MAIL FROM:<x>` read from the command line,
/// for the stage where the session has not stored it yet: the text between
/// the first `<` and the first `>`, else the second word; `None` when the
/// line is not UTF-8. Runs once per MAIL while a plan is loaded, so the
/// line is scanned once, eight bytes at a time.
pub(crate) fn arg_of(command: &[u8]) -> Option<&str> {
    // The usual MAIL line: its first `<` right after `MAIL FROM:`, which
    // holds neither bracket, so the first `>` after it is the first of the
    // line. One search instead of two scans of the whole line.
    if command.get(10) == Some(&b'<')
        && command[..10].eq_ignore_ascii_case(b"MAIL FROM:")
        && command.is_ascii()
    {
        if let Some(gt) = memchr::memchr(b'>', &command[11..]) {
            // SAFETY: the whole line, so the argument, is ASCII, which is
            // valid UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(&command[11..11 + gt]) });
        }
    }
    let (lt, gt, ascii) = brackets(command);
    if let (Some(a), Some(b)) = (lt, gt) {
        if ascii {
            let arg = command.get(a + 1..b)?;
            // SAFETY: every byte of the line, so of `arg`, is ASCII, which
            // is valid UTF-8.
            return Some(unsafe { std::str::from_utf8_unchecked(arg) });
        }
        return std::str::from_utf8(command).ok()?.get(a + 1..b);
    }
    std::str::from_utf8(command)
        .ok()?
        .split_ascii_whitespace()
        .nth(1)
}

/// The positions of the first `<` and the first `>` in `line`, and whether
/// it is all ASCII (`<` and `>` never occur inside a multi-byte character).
fn brackets(line: &[u8]) -> (Option<usize>, Option<usize>, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The lowest set bit marks the first zero byte of `x` exactly.
    let first_zero = |x: u64| {
        let m = x.wrapping_sub(ONES) & !x & HIGH;
        (m != 0).then(|| m.trailing_zeros() as usize / 8)
    };
    let (mut lt, mut gt, mut high) = (None, None, 0u64);
    let mut scan = |w: u64, at: usize| {
        high |= w;
        if lt.is_none() {
            lt = first_zero(w ^ (ONES * u64::from(b'<'))).map(|i| at + i);
        }
        if gt.is_none() {
            gt = first_zero(w ^ (ONES * u64::from(b'>'))).map(|i| at + i);
        }
    };
    let mut words = line.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        scan(u64::from_le_bytes(w.try_into().expect("8 bytes")), at);
        at += 8;
    }
    // Zero padding matches neither bracket.
    let rest = words.remainder().len();
    if rest > 0 {
        scan(super::select::tail_word(line, rest), at);
    }
    (lt, gt, high & HIGH == 0)
}

/// The facts about a command the rules look at.
pub(crate) struct View<'a> {
    pub(crate) ctx: &'a StageContext<'a>,
    pub(crate) helo: Option<&'a str>,
    pub(crate) sender: Option<&'a str>,
    /// The client's IP address text (kept per session in its scope).
    pub(crate) ip: &'a IpText,
    /// Memo of [`View::rcpt_hash`]: a rule keyed by recipient and the
    /// referee hash the recipient once per decision between them.
    rcpt_hash: Cell<Option<u64>>,
}

impl<'a> View<'a> {
    pub(crate) fn new(ctx: &'a StageContext<'a>, ip: &'a IpText) -> View<'a> {
        View {
            ctx,
            ip,
            helo: if ctx.stage == Stage::Ehlo {
                arg_of(ctx.command)
            } else {
                ctx.helo
            },
            // The session hands over the parsed reverse-path at MAIL; a
            // context built without it is read from the line.
            sender: if ctx.stage == Stage::Mail {
                ctx.reverse_path
                    .or_else(|| arg_of(ctx.command))
                    .or(Some(""))
            } else {
                ctx.sender
            },
            rcpt_hash: Cell::new(None),
        }
    }

    /// The recipient key's hash of the recipient being decided at RCPT
    /// ([`rcpt_key_hash`]); `None` at other stages.
    #[inline]
    pub(crate) fn rcpt_hash(&self) -> Option<u64> {
        memo(&self.rcpt_hash, || Some(rcpt_key_hash(self.ctx.rcpt?)))
    }

    /// The recipients a condition looks at: the one being decided at RCPT,
    /// all of the transaction's after it.
    pub(super) fn any_rcpt(&self, f: impl Fn(&str) -> bool) -> bool {
        match self.ctx.stage {
            Stage::Rcpt => self.ctx.rcpt.is_some_and(f),
            _ => self.ctx.recipients.iter().any(f),
        }
    }

    /// The recipients as one key part (sorted, lower-cased): the one being
    /// decided at RCPT, else the transaction's. `None` when there are none.
    pub(super) fn rcpt_part(&self) -> Option<RcptPart<'a>> {
        if let Some(r) = self.ctx.rcpt {
            return Some(RcptPart::One(r));
        }
        match RcptPart::all(self.ctx) {
            RcptPart::Empty => None,
            p => Some(p),
        }
    }
}

#[inline]
fn memo(cell: &Cell<Option<u64>>, f: impl FnOnce() -> Option<u64>) -> Option<u64> {
    if let Some(h) = cell.get() {
        return Some(h);
    }
    let h = f();
    cell.set(h);
    h
}

/// `hash_bytes(0, "rcpt:" + lower(rcpt))`: the decision hash of a rule
/// keyed by recipient when there is one recipient.
pub(crate) fn rcpt_key_hash(rcpt: &str) -> u64 {
    let r = rcpt.as_bytes();
    KeyHasher::new(0, "rcpt:".len() + r.len())
        .bytes(b"rcpt:")
        .lower(r)
        .finish()
}

/// Recipients as a key part: ASCII-lower-cased, sorted, joined by a
/// separator. Hashed piecewise ([`RcptPart::feed`]) on the hot path; the
/// text ([`RcptPart::text`]) is built only for a verdict or a record.
pub(crate) enum RcptPart<'a> {
    Empty,
    One(&'a str),
    /// Two or more, sorted as their lower-cased forms sort.
    Many(Vec<&'a str>),
}

impl<'a> RcptPart<'a> {
    /// All of the transaction's recipients.
    pub(crate) fn all(ctx: &StageContext<'a>) -> RcptPart<'a> {
        match ctx.recipients.len() {
            0 => RcptPart::Empty,
            1 => ctx.recipients.get(0).map_or(RcptPart::Empty, RcptPart::One),
            _ => {
                let mut v: Vec<&'a str> = ctx.recipients.iter().collect();
                v.sort_by(|a, b| cmp_lower(a, b));
                RcptPart::Many(v)
            }
        }
    }

    /// Length of the text with separator `sep`.
    pub(crate) fn len(&self, sep: &str) -> usize {
        match self {
            RcptPart::Empty => 0,
            RcptPart::One(r) => r.len(),
            RcptPart::Many(v) => {
                v.iter().map(|r| r.len()).sum::<usize>() + (v.len() - 1) * sep.len()
            }
        }
    }

    /// Feeds the text with separator `sep`.
    pub(crate) fn feed(&self, k: &mut KeyHasher, sep: &str) {
        match self {
            RcptPart::Empty => {}
            RcptPart::One(r) => {
                k.lower(r.as_bytes());
            }
            RcptPart::Many(v) => {
                for (i, r) in v.iter().enumerate() {
                    if i > 0 {
                        k.bytes(sep.as_bytes());
                    }
                    k.lower(r.as_bytes());
                }
            }
        }
    }

    /// The text with separator `sep`.
    pub(crate) fn text(&self, sep: &str) -> String {
        match self {
            RcptPart::Empty => String::new(),
            RcptPart::One(r) => r.to_ascii_lowercase(),
            RcptPart::Many(v) => v
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(sep),
        }
    }
}

/// The time of one decision: given (tests, [`Engine::decide_at`]) or read
/// from the clock at most once, and only if a rule or the referee needs it
/// (a window, a bucket, a greylist entry, a failure record). Most
/// decisions read no clock at all.
pub(crate) struct Now(Cell<Option<Instant>>);

impl Now {
    /// A fixed time.
    pub(crate) fn at(t: Instant) -> Now {
        Now(Cell::new(Some(t)))
    }

    /// The clock, read on first use.
    pub(crate) fn lazy() -> Now {
        Now(Cell::new(None))
    }

    /// The time.
    pub(crate) fn get(&self) -> Instant {
        match self.0.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.0.set(Some(t));
                t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::arg_of;

    #[test]
    fn arguments_read_from_the_line() {
        let cases: [(&[u8], Option<&str>); 13] = [
            (b"mail from:<A@b.test>", Some("A@b.test")),
            (b"MAIL FROM:<a@b.test", Some("FROM:<a@b.test")),
            (b"MAIL FROM:<a@b.test> X=<y>", Some("a@b.test")),
            ("MAIL FROM:<a@b.test> é".as_bytes(), Some("a@b.test")),
            (b"MAIL FROM:<a@b.test> SIZE=10", Some("a@b.test")),
            (b"MAIL FROM:<>", Some("")),
            (
                b"MAIL FROM:<a@very-long-domain.example.test> BODY=8BITMIME",
                Some("a@very-long-domain.example.test"),
            ),
            (b"EHLO client.test", Some("client.test")),
            (b"EHLO", None),
            (b"MAIL FROM:>x<", None),
            ("MAIL FROM:<é@b.test>".as_bytes(), Some("é@b.test")),
            (b"MAIL FROM:<a@b> \xff", None),
            (b"MAIL FROM:<a@b>\xff", None),
        ];
        for (line, want) in cases {
            assert_eq!(arg_of(line), want, "{}", String::from_utf8_lossy(line));
        }
    }
}
