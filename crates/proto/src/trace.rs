//! The end-to-end trace header: written by the blaster's message builder,
//! found by the sink's header scan, so the two can join their records of
//! a run across a relay.
//!
//! ```text
//! X-Mailstorm-Trace: v1 r=RUN s=SOURCE q=SEQ n=RCPTS t=SENT_US [h=TAGS]
//! ```
//!
//! - `RUN`: the run id, 1 to [`MAX_RUN_ID`] characters of `A-Za-z0-9._-`.
//! - `SOURCE`: 8 hex digits naming the sequence space (one per blaster
//!   process), so blasters sharing a run id never collide.
//! - `SEQ`: the message's sequence number in that space (decimal).
//! - `RCPTS`: how many recipients the message has (decimal, at most 4
//!   digits), so a receiver can tell a re-delivery from a split delivery.
//! - `SENT_US`: send time, microseconds since the Unix epoch (decimal).
//! - `TAGS` (optional): the message's recipients, in RCPT order, as
//!   [`MAX_TAGGED`] 16-bit tags ([`rcpt_tag`]) of 4 hex digits each (slots
//!   past `RCPTS` are zero), so a receiver can tell which recipient of the
//!   message each delivery was for: a lost recipient and a duplicate of
//!   another then no longer cancel out. Written when a run's messages have
//!   at most [`MAX_TAGGED`] recipients.
//!
//! The encoder writes fixed-width numbers so a template can be patched in
//! place per message ([`Template`]). The parser never allocates, looks at
//! the header section only, and rejects anything not exactly of this form:
//! a forged or mangled header is reported as [`Found::Malformed`], never
//! half-trusted.

/// The header field name.
pub const HEADER: &str = "X-Mailstorm-Trace";
/// Longest run id.
pub const MAX_RUN_ID: usize = 32;
/// Most recipients the header can state.
pub const MAX_RCPTS: u32 = 9999;
/// Longest header section the parser looks at; the rest is ignored (a
/// relay adds a few `Received:` lines, not kilobytes).
pub const SCAN_LIMIT: usize = 16 * 1024;

/// Most recipients the `h=` field names.
pub const MAX_TAGGED: usize = 8;

const SEQ_WIDTH: usize = 20;
const RCPT_WIDTH: usize = 4;
const TIME_WIDTH: usize = 16;
const TAG_WIDTH: usize = 4;

/// A recipient's tag: FNV-1a over the address with ASCII letters
/// lower-cased (a relay may change the case of a domain), folded to 16
/// bits. Fed in pieces, so a sender can hash an address it never builds.
#[derive(Debug, Clone, Copy)]
pub struct TagHasher(u32);

impl Default for TagHasher {
    fn default() -> Self {
        TagHasher(0x811c_9dc5)
    }
}

impl TagHasher {
    /// Adds the next bytes of the address.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u32::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0193);
        }
    }

    /// The tag.
    pub fn finish(self) -> u16 {
        (self.0 >> 16 ^ self.0) as u16
    }
}

/// The tag of a whole address (as in `RCPT TO:<address>`).
pub fn rcpt_tag(address: &str) -> u16 {
    let mut h = TagHasher::default();
    h.feed(address.as_bytes());
    h.finish()
}

/// One message's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace<'a> {
    /// Run id.
    pub run: &'a str,
    /// Sequence space (one per blaster process).
    pub source: u32,
    /// Sequence number within the space.
    pub seq: u64,
    /// Recipients of the message.
    pub rcpts: u32,
    /// Send time, µs since the Unix epoch.
    pub sent_us: u64,
    /// The recipients' tags (`h=`), when the header names them; entries
    /// past `rcpts` are zero.
    pub tags: Option<[u16; MAX_TAGGED]>,
}

/// What a header scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// No trace header in the header section.
    Absent,
    /// A trace header that does not parse, or more than one.
    Malformed,
    /// Exactly one well-formed trace header.
    Trace(Trace<'a>),
}

/// Whether `id` is a valid run id.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RUN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A header line with slots for the per-message numbers.
#[derive(Debug, Clone)]
pub struct Template {
    line: Vec<u8>,
    seq_at: usize,
    rcpt_at: usize,
    time_at: usize,
    /// Where the `h=` tags go (a tagged template).
    tags_at: Option<usize>,
}

impl Template {
    /// The line for `run` (validated by the caller with [`valid_run_id`];
    /// an invalid id is still written but will not parse) and `source`.
    pub fn new(run: &str, source: u32) -> Template {
        let mut line = Vec::with_capacity(96);
        line.extend_from_slice(HEADER.as_bytes());
        line.extend_from_slice(b": v1 r=");
        line.extend_from_slice(run.as_bytes());
        line.extend_from_slice(b" s=");
        for shift in (0..8).rev() {
            line.push(b"0123456789abcdef"[(source >> (shift * 4) & 0xf) as usize]);
        }
        line.extend_from_slice(b" q=");
        let seq_at = line.len();
        line.resize(seq_at + SEQ_WIDTH, b'0');
        line.extend_from_slice(b" n=");
        let rcpt_at = line.len();
        line.resize(rcpt_at + RCPT_WIDTH, b'0');
        line.extend_from_slice(b" t=");
        let time_at = line.len();
        line.resize(time_at + TIME_WIDTH, b'0');
        line.extend_from_slice(b"\r\n");
        Template {
            line,
            seq_at,
            rcpt_at,
            time_at,
            tags_at: None,
        }
    }

    /// [`Template::new`] with the `h=` field: each message's line names
    /// its recipients ([`Template::write_tagged`]).
    pub fn tagged(run: &str, source: u32) -> Template {
        let mut t = Template::new(run, source);
        let crlf = t.line.len() - 2;
        let field = b" h=";
        t.line.splice(
            crlf..crlf,
            field
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'0', MAX_TAGGED * TAG_WIDTH)),
        );
        t.tags_at = Some(crlf + field.len());
        t
    }

    /// Length of the line, CRLF included (the same for every message).
    pub fn len(&self) -> usize {
        self.line.len()
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the line for one message to `out` (a tagged template's
    /// tags all zero: see [`Template::write_tagged`]).
    pub fn write(&self, out: &mut Vec<u8>, seq: u64, rcpts: u32, sent_us: u64) {
        self.write_tagged(out, seq, rcpts, sent_us, &[]);
    }

    /// Appends the line for one message with recipient tags (the first
    /// [`MAX_TAGGED`] of `tags`; ignored by an untagged template).
    pub fn write_tagged(
        &self,
        out: &mut Vec<u8>,
        seq: u64,
        rcpts: u32,
        sent_us: u64,
        tags: &[u16],
    ) {
        let base = out.len();
        out.extend_from_slice(&self.line);
        let l = &mut out[base..];
        put_fixed(&mut l[self.seq_at..self.seq_at + SEQ_WIDTH], seq);
        put_fixed(
            &mut l[self.rcpt_at..self.rcpt_at + RCPT_WIDTH],
            u64::from(rcpts.min(MAX_RCPTS)),
        );
        put_fixed(&mut l[self.time_at..self.time_at + TIME_WIDTH], sent_us);
        if let Some(at) = self.tags_at {
            for (i, &tag) in tags.iter().take(MAX_TAGGED).enumerate() {
                let slot = &mut l[at + i * TAG_WIDTH..at + (i + 1) * TAG_WIDTH];
                for (k, b) in slot.iter_mut().enumerate() {
                    *b = b"0123456789abcdef"[usize::from(tag >> ((3 - k) * 4) & 0xf)];
                }
            }
        }
    }
}

/// Writes `n` as exactly `dst.len()` decimal digits (zero padded; the high
/// digits are dropped if it does not fit).
fn put_fixed(dst: &mut [u8], mut n: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Scans the header section at the start of `msg` (at most
/// [`SCAN_LIMIT`] bytes; the section ends at the first empty line) for the
/// trace header. Lines are CRLF or LF terminated; folded continuation
/// lines are skipped.
///
/// One `memchr` per line: tried against a vectorised search for the end
/// of the section plus one for line-initial `X`, it was no cheaper on the
/// dozen short header lines a message has (callgrind).
pub fn find(msg: &[u8]) -> Found<'_> {
    let msg = &msg[..msg.len().min(SCAN_LIMIT)];
    let name = HEADER.as_bytes();
    let mut found = Found::Absent;
    let mut rest = msg;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        // Most lines fail on their first byte.
        if line.len() > name.len()
            && line[0] | 0x20 == b'x'
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
        {
            if found != Found::Absent {
                // Two trace headers: one of them is not ours; trust neither.
                return Found::Malformed;
            }
            found = match parse_value(&line[name.len() + 1..]) {
                Some(t) => Found::Trace(t),
                None => Found::Malformed,
            };
        }
    }
    found
}

/// Parses the value after the colon.
///
/// Byte by byte, without UTF-8 validation of the whole value or a string
/// splitter: this runs once per accepted message in the sink.
pub fn parse_value(v: &[u8]) -> Option<Trace<'_>> {
    let mut rest = trim(v);
    if next_field(&mut rest, b"v1")? != b"" {
        return None;
    }
    let run = next_field(&mut rest, b"r=")?;
    let source = next_field(&mut rest, b"s=")?;
    let seq = next_field(&mut rest, b"q=")?;
    let rcpts = next_field(&mut rest, b"n=")?;
    let sent = next_field(&mut rest, b"t=")?;
    let tags = match rest {
        [] => None,
        _ => Some(parse_tags(next_field(&mut rest, b"h=")?)?),
    };
    if !rest.is_empty() || source.len() != 8 {
        return None;
    }
    // Checked byte by byte: ASCII, so the conversion cannot fail.
    let run = std::str::from_utf8(run).ok().filter(|r| valid_run_id(r))?;
    let mut src = 0u32;
    for &b in source {
        src = src << 4 | char::from(b).to_digit(16)?;
    }
    Some(Trace {
        run,
        source: src,
        seq: digits(seq, SEQ_WIDTH)?,
        rcpts: u32::try_from(digits(rcpts, RCPT_WIDTH)?).ok()?,
        sent_us: digits(sent, TIME_WIDTH)?,
        tags,
    })
}

/// Exactly [`MAX_TAGGED`] tags of 4 hex digits.
fn parse_tags(h: &[u8]) -> Option<[u16; MAX_TAGGED]> {
    if h.len() != MAX_TAGGED * TAG_WIDTH {
        return None;
    }
    let mut tags = [0u16; MAX_TAGGED];
    for (tag, hex) in tags.iter_mut().zip(h.chunks_exact(TAG_WIDTH)) {
        for &b in hex {
            // Per accepted message in the sink: no `char` round trip.
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return None,
            };
            *tag = *tag << 4 | u16::from(d);
        }
    }
    Some(tags)
}

/// The next space-separated field of `rest`, which must start with
/// `prefix`: what follows the prefix. One space separates fields; the last
/// field ends the value.
fn next_field<'a>(rest: &mut &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let r: &'a [u8] = rest;
    let field = r.strip_prefix(prefix)?;
    match field.iter().position(|&b| b == b' ') {
        Some(i) => {
            *rest = &field[i + 1..];
            if rest.is_empty() {
                // A trailing separator: not the exact form.
                return None;
            }
            Some(&field[..i])
        }
        None => {
            *rest = &[];
            Some(field)
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// 1 to `max` decimal digits (no sign, no spaces), without overflow.
fn digits(s: &[u8], max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max {
        return None;
    }
    let mut n = 0u64;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(run: &str, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Template::new(run, 0xdead_beef).write(&mut out, seq, 3, 1_700_000_000_000_000);
        out
    }

    #[test]
    fn round_trip() {
        let t = Template::new("run-1", 0xdead_beef);
        let mut msg = b"Received: from x\r\n\tby y\r\n".to_vec();
        t.write(&mut msg, 42, 3, 1_700_000_000_123_456);
        assert_eq!(msg.len(), 25 + t.len());
        msg.extend_from_slice(b"Subject: s\r\n\r\nX-Mailstorm-Trace: body line\r\n");
        assert_eq!(
            find(&msg),
            Found::Trace(Trace {
                run: "run-1",
                source: 0xdead_beef,
                seq: 42,
                rcpts: 3,
                sent_us: 1_700_000_000_123_456,
                tags: None,
            })
        );
    }

    #[test]
    fn tagged_round_trip_with_fixed_length() {
        let t = Template::tagged("run-1", 1);
        let tags = [rcpt_tag("a@x.test"), rcpt_tag("b@x.test"), 0xbeef];
        let mut one = Vec::new();
        t.write_tagged(&mut one, 7, 3, 9, &tags);
        let mut other = Vec::new();
        t.write_tagged(&mut other, 8, 1, 10, &tags[..1]);
        assert_eq!(
            (one.len(), other.len()),
            (t.len(), t.len()),
            "one length per run"
        );
        one.extend_from_slice(b"\r\n");
        let Found::Trace(got) = find(&one) else {
            panic!("{}", String::from_utf8_lossy(&one))
        };
        let mut want = [0u16; MAX_TAGGED];
        want[..3].copy_from_slice(&tags);
        assert_eq!((got.seq, got.rcpts, got.tags), (7, 3, Some(want)));
        // The tag ignores ASCII case (a relay may rewrite the domain's)
        // and can be fed in pieces.
        assert_eq!(rcpt_tag("a@X.Test"), rcpt_tag("a@x.test"));
        assert_ne!(rcpt_tag("a@x.test"), rcpt_tag("b@x.test"));
        let mut h = TagHasher::default();
        h.feed(b"a@");
        h.feed(b"X.test");
        assert_eq!(h.finish(), rcpt_tag("a@x.test"));
        for bad in [
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=1 n=1 t=1 h=0001",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=1 n=1 t=1 h=000000000000000000000000000000zz",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=1 n=1 t=1 x=00000000000000000000000000000000",
        ] {
            let m = format!("{bad}\r\n\r\n");
            assert_eq!(find(m.as_bytes()), Found::Malformed, "{bad}");
        }
    }

    #[test]
    fn absent_and_body_only() {
        assert_eq!(find(b"Subject: a\r\n\r\n"), Found::Absent);
        let mut m = b"Subject: a\r\n\r\n".to_vec();
        m.extend_from_slice(&line("r", 1));
        assert_eq!(find(&m), Found::Absent, "a body line is not a header");
        assert_eq!(find(b""), Found::Absent);
    }

    #[test]
    fn malformed_is_never_trusted() {
        for bad in [
            "X-Mailstorm-Trace: v2 r=a s=00000001 q=1 n=1 t=1",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=1 n=1",
            "X-Mailstorm-Trace: v1 r=a s=1 q=1 n=1 t=1",
            "X-Mailstorm-Trace: v1 r=a/b s=00000001 q=1 n=1 t=1",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=123456789012345678901 n=1 t=1",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=-1 n=1 t=1",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=1 n=10000 t=1",
            "X-Mailstorm-Trace: v1 r=a s=00000001 q=1 n=1 t=1 extra",
            "X-Mailstorm-Trace: v1 r=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa s=00000001 q=1 n=1 t=1",
            "X-Mailstorm-Trace: \u{ff}",
        ] {
            let m = format!("{bad}\r\n\r\n");
            assert_eq!(find(m.as_bytes()), Found::Malformed, "{bad}");
        }
        let mut two = line("a", 1);
        two.extend_from_slice(&line("a", 2));
        assert_eq!(find(&two), Found::Malformed, "two headers");
    }

    #[test]
    fn case_insensitive_name_and_lf_lines() {
        let m = b"x-mailstorm-trace: v1 r=a s=0000000a q=7 n=1 t=9\n\nbody";
        match find(m) {
            Found::Trace(t) => assert_eq!((t.source, t.seq, t.sent_us), (10, 7, 9)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scan_is_bounded() {
        let mut m = vec![b'a'; SCAN_LIMIT];
        m.extend_from_slice(b"\r\n");
        m.extend_from_slice(&line("a", 1));
        assert_eq!(find(&m), Found::Absent);
    }

    #[test]
    fn run_ids() {
        assert!(valid_run_id("2026-12-05T08.x_1"));
        assert!(!valid_run_id(""));
        assert!(!valid_run_id("a b"));
        assert!(!valid_run_id(&"a".repeat(33)));
    }
}
