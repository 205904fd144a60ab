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

mod value;

pub use value::{parse_value, valid_run_id};

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
/// Line ends are found sixteen bytes per step ([`newline_at`]): a
/// `memchr` call per line cost more than the scan itself on a message's
/// dozen short header lines (callgrind: ~60 instructions a call). A vectorised search
/// for the end of the section plus one for line-initial `X` was tried
/// before and was no cheaper.
pub fn find(msg: &[u8]) -> Found<'_> {
    let msg = &msg[..msg.len().min(SCAN_LIMIT)];
    let mut found = Found::Absent;
    let mut start = 0;
    while start < msg.len() {
        let newline = newline_at(msg, start);
        let line = &msg[start..newline.unwrap_or(msg.len())];
        start = newline.map_or(msg.len(), |i| i + 1);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if is_trace_line(line) {
            if found != Found::Absent {
                // Two trace headers: one of them is not ours; trust neither.
                return Found::Malformed;
            }
            found = match parse_value(&line[HEADER.len() + 1..]) {
                Some(t) => Found::Trace(t),
                None => Found::Malformed,
            };
        }
    }
    found
}

/// Whether a header line (without its line end) is the trace header.
#[inline(always)]
fn is_trace_line(line: &[u8]) -> bool {
    let name = HEADER.as_bytes();
    // Most lines fail on their first byte.
    line.len() > name.len()
        && line[0] | 0x20 == b'x'
        && line[name.len()] == b':'
        && line[..name.len()].eq_ignore_ascii_case(name)
}

/// The first `\n` in `s` at or after `from`: sixteen bytes per step
/// (the command parser's vector scan), no call per line.
#[inline]
fn newline_at(s: &[u8], from: usize) -> Option<usize> {
    let at = from + crate::line::find_byte(s, from, s.len(), b'\n');
    (at < s.len()).then_some(at)
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

    /// `find` said plainly: split at every LF, stop at the first empty
    /// line, and count the trace lines (the same test of each line). The
    /// vector scan's line splitting must agree with it.
    fn find_reference(msg: &[u8]) -> Found<'_> {
        let msg = &msg[..msg.len().min(SCAN_LIMIT)];
        let mut traces = msg
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .take_while(|l| !l.is_empty())
            .filter(|l| is_trace_line(l));
        match (traces.next(), traces.next()) {
            (None, _) => Found::Absent,
            (Some(_), Some(_)) => Found::Malformed,
            (Some(l), None) => {
                parse_value(&l[HEADER.len() + 1..]).map_or(Found::Malformed, Found::Trace)
            }
        }
    }

    /// Header lines to build sections from: the trace in several forms,
    /// folded and ordinary lines, blank lines, bare CR and LF.
    fn section_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let trace = String::from_utf8(line("run-1", 42)).unwrap();
        prop_oneof![
            Just(trace.clone().into_bytes()),
            Just(trace.to_ascii_lowercase().into_bytes()),
            Just(trace.replace("\r\n", "\n").into_bytes()),
            Just(b"X-Mailstorm-Trace: v1 r=a s=1 q=1 n=1 t=1\r\n".to_vec()),
            Just(b"X-Mailstorm-Trace\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\tfolded continuation\r\n".to_vec()),
            "[A-Za-z-]{1,20}: [ -~]{0,70}\r?\n".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any mix of those lines, cut anywhere, scans as the reference
        /// scans it.
        #[test]
        fn find_agrees_with_the_line_scan(
            lines in proptest::collection::vec(section_line(), 0..14),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let msg: Vec<u8> = lines.concat();
            let cut = cut.index(msg.len() + 1);
            proptest::prop_assert_eq!(find(&msg[..cut]), find_reference(&msg[..cut]));
            proptest::prop_assert_eq!(find(&msg), find_reference(&msg));
        }
    }

    #[test]
    fn find_at_the_scan_limit() {
        // The trace line ending exactly at, one byte before and one byte
        // past the limit, in every alignment of the line's start.
        for pad in 0..24 {
            for tail in [0usize, 1, 2] {
                let trace = line("a", 1);
                let mut m = Vec::new();
                while m.len() + trace.len() + pad + tail < SCAN_LIMIT {
                    m.extend_from_slice(b"Received: from x\r\n");
                }
                m.truncate(SCAN_LIMIT - trace.len() - pad - tail + 2);
                m.extend_from_slice(b"\r\n");
                m.extend_from_slice(&trace);
                m.extend_from_slice(b"\r\n");
                assert_eq!(find(&m), find_reference(&m), "pad {pad} tail {tail}");
            }
        }
    }

    #[test]
    fn run_ids() {
        assert!(valid_run_id("2026-12-05T08.x_1"));
        assert!(!valid_run_id(""));
        assert!(!valid_run_id("a b"));
        assert!(!valid_run_id(&"a".repeat(33)));
    }
}
