//! Message generation without per-message allocation: a header template
//! whose sequence number and send time are patched in place, followed by a
//! slice of a pre-built filler body, or a user template (`--eml`).

use std::time::{SystemTime, UNIX_EPOCH};

use mailstorm_proto::encode::DotStuffer;
use mailstorm_proto::trace::{TagHasher, Template, MAX_TAGGED};

use crate::config::{Config, SizeDist};
use crate::rng::Rng;
use crate::BlastError;

const SEQ_WIDTH: usize = 20;
const TIME_WIDTH: usize = 16;
const FILLER_LINE: usize = 76;

/// Writes `n` as exactly `dst.len()` decimal digits (zero padded).
fn put_fixed(dst: &mut [u8], mut n: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// `n` in decimal, written at the start of `buf`.
fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let len = decimal_len(n);
    put_fixed(&mut buf[..len], n);
    &buf[..len]
}

/// Microseconds since the Unix epoch.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// An address pattern such as `user{n}@example.test`.
#[derive(Debug, Clone)]
pub struct Pattern {
    prefix: String,
    suffix: Option<String>,
}

impl Pattern {
    /// Splits the pattern at its (first) `{n}` (or `{N}`: clap turns a
    /// literal `{n}` in `--help` text into a line break, so the help shows
    /// the upper-case spelling).
    pub fn new(p: &str) -> Pattern {
        let at = match (p.find("{n}"), p.find("{N}")) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match at.map(|i| (&p[..i], &p[i + 3..])) {
            Some((a, b)) => Pattern {
                prefix: a.into(),
                suffix: Some(b.into()),
            },
            None => Pattern {
                prefix: p.into(),
                suffix: None,
            },
        }
    }

    /// Writes the address for `n` into `out` (cleared first).
    pub fn write(&self, out: &mut String, n: u64) {
        out.clear();
        out.push_str(&self.prefix);
        if let Some(s) = &self.suffix {
            // Digits by hand: `write!` through `core::fmt` cost ~230
            // instructions per address, ~2,500 per message with 10
            // recipients (callgrind).
            if let Ok(d) = std::str::from_utf8(decimal(n, &mut [0; 20])) {
                out.push_str(d);
            }
            out.push_str(s);
        }
    }

    /// The trace tag of the address for `n` (as the sink computes it from
    /// `RCPT TO`), without building the address.
    pub fn tag(&self, n: u64) -> u16 {
        let mut h = TagHasher::default();
        h.feed(self.prefix.as_bytes());
        if let Some(s) = &self.suffix {
            h.feed(decimal(n, &mut [0; 20]));
            h.feed(s.as_bytes());
        }
        h.finish()
    }

    /// Whether addresses need SMTPUTF8.
    pub fn is_utf8(&self) -> bool {
        !self.prefix.is_ascii() || self.suffix.as_deref().is_some_and(|s| !s.is_ascii())
    }
}

enum Seg {
    Lit(std::ops::Range<usize>),
    Seq,
    Rcpt,
}

/// A `--eml` template, CRLF-normalised at load.
struct Eml {
    text: Vec<u8>,
    segs: Vec<Seg>,
}

impl Eml {
    fn load(bytes: &[u8]) -> Eml {
        // Normalise line breaks once so BDAT sends valid CRLF text too.
        let mut text = Vec::with_capacity(bytes.len() + bytes.len() / 32);
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    text.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b'\r' | b'\n' => text.extend_from_slice(b"\r\n"),
                c => text.push(c),
            }
            i += 1;
        }
        if !text.ends_with(b"\r\n") {
            text.extend_from_slice(b"\r\n");
        }
        let mut segs = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        while let Some(off) = memchr::memmem::find(&text[pos..], b"{{") {
            let at = pos + off;
            let rest = &text[at..];
            let (seg, len) = if rest.starts_with(b"{{seq}}") {
                (Seg::Seq, 7)
            } else if rest.starts_with(b"{{rcpt}}") {
                (Seg::Rcpt, 8)
            } else {
                pos = at + 2;
                continue;
            };
            if at > start {
                segs.push(Seg::Lit(start..at));
            }
            segs.push(seg);
            start = at + len;
            pos = start;
        }
        if start < text.len() {
            segs.push(Seg::Lit(start..text.len()));
        }
        Eml { text, segs }
    }

    fn len(&self, seq: u64, rcpt: &str) -> u64 {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(r) => r.len(),
                Seg::Seq => decimal_len(seq),
                Seg::Rcpt => rcpt.len(),
            } as u64)
            .sum()
    }
}

/// Builds messages; one per shard, shared by its connections.
pub struct MessageFactory {
    header: Vec<u8>,
    id_at: usize,
    seq_at: usize,
    sent_at: usize,
    filler: Vec<u8>,
    dist: SizeDist,
    eml: Option<Eml>,
    /// The trace header line (`None` with `--no-trace`).
    trace: Option<Template>,
    /// The trace names recipients (`h=`).
    tagged: bool,
}

/// A message's recipients as its trace header states them: how many, and
/// the tags of the first [`MAX_TAGGED`] in RCPT order. Noted while the
/// envelope draws them, so the trace need not draw them a second time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RcptTags {
    count: u32,
    tags: [u16; MAX_TAGGED],
}

impl RcptTags {
    /// A message of `count` recipients, none tagged yet (with more than
    /// [`MAX_TAGGED`], none ever is: the header states only the count).
    pub fn new(count: u32) -> RcptTags {
        RcptTags {
            count,
            tags: [0; MAX_TAGGED],
        }
    }

    /// Notes recipient `i`'s tag (`rcpt_tag` of its address, or
    /// [`Pattern::tag`]); ignored past the first [`MAX_TAGGED`].
    pub fn note(&mut self, i: usize, tag: u16) {
        if let Some(t) = self.tags.get_mut(i) {
            *t = tag;
        }
    }

    /// The recipient count.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The tags, in RCPT order (empty with more than [`MAX_TAGGED`]
    /// recipients).
    pub fn tags(&self) -> &[u16] {
        let n = self.count as usize;
        if n <= MAX_TAGGED {
            &self.tags[..n]
        } else {
            &[]
        }
    }
}

/// Draws the `n` recipients (user numbers for `--to`) of a message from
/// `rng`, calling `each(i, user)`: the one place the session's RCPTs and
/// the trace's recipient tags ([`RcptTags`]) come from, both in one pass.
/// Up to [`MAX_TAGGED`] recipients are distinct when `users` allows it: a
/// relay delivers a repeated recipient once, which the ledger would report
/// as a lost one.
pub fn draw_users(rng: &mut Rng, n: usize, users: u64, mut each: impl FnMut(usize, u64)) {
    let distinct = n <= MAX_TAGGED && users >= n as u64;
    let mut drawn = [0u64; MAX_TAGGED];
    for i in 0..n {
        let mut user = rng.below(users);
        // Bounded: each redraw is new with probability >= 1/8 here.
        let mut tries = 0;
        while distinct && drawn[..i].contains(&user) && tries < 64 {
            user = rng.below(users);
            tries += 1;
        }
        if i < MAX_TAGGED {
            drawn[i] = user;
        }
        each(i, user);
    }
}

impl MessageFactory {
    /// Prepares the templates for `cfg` (reads `--eml`).
    pub fn new(cfg: &Config) -> Result<MessageFactory, BlastError> {
        let eml = match &cfg.eml {
            Some(p) => {
                let bytes = mailstorm_config::read_bounded(p, crate::config::MAX_MESSAGE_SIZE)
                    .map_err(|e| BlastError::Config(format!("--eml {}: {e}", p.display())))?;
                Some(Eml::load(&bytes))
            }
            None => None,
        };
        let date = rfc5322_date(unix_micros() / 1_000_000);
        let zeros_seq = "0".repeat(SEQ_WIDTH);
        let zeros_time = "0".repeat(TIME_WIDTH);
        let id_prefix = "Message-ID: <";
        let run = crate::ledger::run_id(cfg);
        // The Message-ID embeds sequence, sequence space and run, so a
        // relay's logs can be joined with the ledger too, and blasters
        // sharing a run id never send the same Message-ID (relays and
        // stores may treat a repeated one as a duplicate).
        let source = crate::ledger::source_id(cfg);
        let seq_prefix = format!(
            "{id_prefix}{zeros_seq}.{source:08x}.{run}@mailstorm.test>\r\nX-Mailstorm-Seq: "
        );
        let sent_prefix = format!("{seq_prefix}{zeros_seq}\r\nX-Mailstorm-Sent: ");
        let header = format!(
            "{sent_prefix}{zeros_time}\r\nDate: {date}\r\nFrom: <mailstorm@example.test>\r\n\
             To: <undisclosed-recipients@example.test>\r\nSubject: mailstorm load test\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        );
        // Filler: 76-character lines of varied letters; no line starts with
        // a dot, so DATA needs no stuffing.
        let max = cfg.size.max() as usize;
        let mut filler = Vec::with_capacity(max + FILLER_LINE + 2);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = Rng::new(cfg.seed);
        while filler.len() < max + FILLER_LINE + 2 {
            for _ in 0..FILLER_LINE {
                filler.push(alphabet[rng.below(alphabet.len() as u64) as usize]);
            }
            filler.extend_from_slice(b"\r\n");
        }
        let tagged = cfg.rcpts.max as usize <= MAX_TAGGED;
        Ok(MessageFactory {
            id_at: id_prefix.len(),
            seq_at: seq_prefix.len(),
            sent_at: sent_prefix.len(),
            header: header.into_bytes(),
            filler,
            dist: cfg.size,
            eml,
            // Recipients are named in the trace when every message's fit
            // (one header length per run).
            trace: cfg.trace.then(|| {
                let source = crate::ledger::source_id(cfg);
                if tagged {
                    Template::tagged(&run, source)
                } else {
                    Template::new(&run, source)
                }
            }),
            tagged: cfg.trace && tagged,
        })
    }

    /// Whether the trace names each message's recipients: only then need
    /// the envelope note their tags ([`RcptTags::note`]).
    pub fn tags_rcpts(&self) -> bool {
        self.tagged
    }

    /// The smallest generated message (headers and an empty line).
    pub fn min_size(&self) -> u64 {
        (self.header.len() + self.trace_len()) as u64 + 2
    }

    fn trace_len(&self) -> usize {
        self.trace.as_ref().map_or(0, Template::len)
    }

    /// Writes the trace line for message `seq`, if tracing.
    fn write_trace(&self, out: &mut Vec<u8>, seq: u64, rcpts: &RcptTags) {
        if let Some(t) = &self.trace {
            t.write_tagged(out, seq, rcpts.count(), unix_micros(), rcpts.tags());
        }
    }

    /// Draws the size of message `seq` and returns its exact length in
    /// bytes as [`MessageFactory::write`] will produce it (before stuffing).
    pub fn size(&self, rng: &mut Rng, seq: u64, rcpt: &str) -> u64 {
        match &self.eml {
            Some(e) => e.len(seq, rcpt) + self.trace_len() as u64,
            None => self.dist.sample(rng).max(self.min_size()),
        }
    }

    /// Appends message `seq` of `size` bytes (from [`MessageFactory::size`]).
    /// `rcpt` is its first recipient's address (`{{rcpt}}` in `--eml`),
    /// `rcpts` all of its recipients as drawn with the envelope (the
    /// trace's `n=` and `h=`). With `dot`, the body is dot-stuffed and ends
    /// with `.\r\n` (DATA); otherwise it is raw (BDAT).
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        seq: u64,
        size: u64,
        rcpt: &str,
        rcpts: &RcptTags,
        dot: bool,
    ) {
        if let Some(eml) = &self.eml {
            return self.write_eml(eml, out, seq, rcpt, rcpts, dot);
        }
        self.write_trace(out, seq, rcpts);
        let base = out.len();
        out.extend_from_slice(&self.header);
        let h = &mut out[base..];
        put_fixed(&mut h[self.id_at..self.id_at + SEQ_WIDTH], seq);
        put_fixed(&mut h[self.seq_at..self.seq_at + SEQ_WIDTH], seq);
        put_fixed(
            &mut h[self.sent_at..self.sent_at + TIME_WIDTH],
            unix_micros(),
        );
        // `size` >= min_size, so at least the final CRLF fits.
        let k = (size as usize).saturating_sub(self.header.len() + self.trace_len() + 2);
        if k > 0 && self.filler[k - 1] == b'\r' {
            // Cutting between CR and LF: end the line one byte early and
            // pad it, so no bare CR appears.
            out.extend_from_slice(&self.filler[..k - 1]);
            out.push(b'x');
        } else {
            out.extend_from_slice(&self.filler[..k]);
        }
        out.extend_from_slice(b"\r\n");
        if dot {
            out.extend_from_slice(b".\r\n");
        }
    }

    fn write_eml(
        &self,
        eml: &Eml,
        out: &mut Vec<u8>,
        seq: u64,
        rcpt: &str,
        rcpts: &RcptTags,
        dot: bool,
    ) {
        let mut num = [0u8; 20];
        let digits = decimal_len(seq);
        put_fixed(&mut num[..digits], seq);
        // The trace line never starts with a dot: no stuffing needed.
        self.write_trace(out, seq, rcpts);
        let mut stuffer = DotStuffer::new();
        for seg in &eml.segs {
            let bytes: &[u8] = match seg {
                Seg::Lit(r) => &eml.text[r.clone()],
                Seg::Seq => &num[..digits],
                Seg::Rcpt => rcpt.as_bytes(),
            };
            if dot {
                stuffer.push(bytes, out);
            } else {
                out.extend_from_slice(bytes);
            }
        }
        if dot {
            stuffer.finish(out);
        }
    }
}

/// `Thu, 01 Jan 1970 00:00:00 +0000` for a Unix time in seconds.
fn rfc5322_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{wd}, {day:02} {mon} {year} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Message `seq`'s recipient tags derived as `write_trace` derived them
/// before the envelope carried them: a second draw from the item's
/// generator. Tests compare the carried tags with it.
#[cfg(test)]
pub(crate) fn redrawn_tags(cfg: &Config, seq: u64) -> RcptTags {
    let to = Pattern::new(&cfg.to);
    let mut rng = Rng::for_item(cfg.seed, seq);
    let n = rng.range(u64::from(cfg.rcpts.min), u64::from(cfg.rcpts.max)) as usize;
    let mut tags = RcptTags::new(n as u32);
    if n <= MAX_TAGGED {
        draw_users(&mut rng, n, cfg.users.max(1), |i, user| {
            tags.note(i, to.tag(user))
        });
    }
    tags
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pattern_tests {
    use super::Pattern;

    #[test]
    fn both_placeholder_spellings_are_replaced() {
        let mut out = String::new();
        Pattern::new("user{n}@example.test").write(&mut out, 7);
        assert_eq!(out, "user7@example.test");
        Pattern::new("user{N}@example.test").write(&mut out, 8);
        assert_eq!(out, "user8@example.test");
        Pattern::new("fixed@example.test").write(&mut out, 9);
        assert_eq!(out, "fixed@example.test");
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let p = Pattern::new("rcpt{n}@example.test");
        let mut out = String::from("left over");
        for n in [0, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            p.write(&mut out, n);
            assert_eq!(out, format!("rcpt{n}@example.test"));
        }
    }
}
