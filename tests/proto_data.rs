//! DATA and BDAT receivers (RFC 5321 §4.1.1.4 and §4.5.2, RFC 3030).
//!
//! Expected results are derived from the RFC rules, partly through a small
//! line-by-line reference model written here (`model`), independent of the
//! receiver's SIMD/state-machine implementation.

use mailstorm_proto::data::{BdatReceiver, DataConfig, DataReceiver, DataStats};
use mailstorm_proto::{parse_command, Command, ParserConfig, Status};

// ---------------------------------------------------------------------------
// Helpers

const STRICT: DataConfig = DataConfig {
    max_size: 0,
    strict: true,
};

const LENIENT: DataConfig = DataConfig {
    max_size: 0,
    strict: false,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Discard,
    Unstuff,
}

/// What a receiver produced for an input: the unstuffed output (empty in
/// discard mode), where the message ended (bytes consumed including the
/// terminator) and the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    end: Option<usize>,
    stats: DataStats,
}

/// Feeds `input` in the given pieces (lengths; the rest goes last).
fn feed(input: &[u8], cfg: DataConfig, mode: Mode, pieces: &[usize]) -> Outcome {
    let mut rx = DataReceiver::new(cfg);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut bounds: Vec<usize> = pieces
        .iter()
        .scan(0usize, |acc, &p| {
            *acc = (*acc + p).min(input.len());
            Some(*acc)
        })
        .collect();
    bounds.push(input.len());
    for end in bounds {
        if end < pos {
            continue;
        }
        let chunk = &input[pos..end];
        let before = out.len();
        let status = match mode {
            Mode::Discard => rx.discard(chunk),
            Mode::Unstuff => rx.unstuff(chunk, &mut out),
        };
        if mode == Mode::Discard {
            assert_eq!(out.len(), before);
        }
        if cfg.max_size != 0 {
            assert!(out.len() as u64 <= cfg.max_size, "output over the limit");
        }
        match status {
            Status::Complete(n) => {
                assert!(n <= chunk.len());
                assert!(rx.is_done());
                return Outcome {
                    out,
                    end: Some(pos + n),
                    stats: rx.stats(),
                };
            }
            Status::Partial => {
                assert!(!rx.is_done());
                pos = end;
            }
        }
    }
    Outcome {
        out,
        end: None,
        stats: rx.stats(),
    }
}

fn whole(input: &[u8], cfg: DataConfig) -> Outcome {
    feed(input, cfg, Mode::Unstuff, &[])
}

fn bytewise(input: &[u8], cfg: DataConfig, mode: Mode) -> Outcome {
    feed(input, cfg, mode, &vec![1; input.len()])
}

/// Checks that whole / byte-at-a-time / discard / fixed-size chunks agree,
/// and returns the whole-input outcome.
fn all_ways(input: &[u8], cfg: DataConfig) -> Outcome {
    let w = whole(input, cfg);
    assert_eq!(bytewise(input, cfg, Mode::Unstuff), w, "bytewise");
    for chunk in [2usize, 3, 7, 63, 64, 65, 200] {
        let pieces = vec![chunk; input.len() / chunk + 1];
        assert_eq!(
            feed(input, cfg, Mode::Unstuff, &pieces),
            w,
            "chunks of {chunk}"
        );
    }
    // Discard mode: same end and stats, no output.
    let d = feed(input, cfg, Mode::Discard, &[]);
    assert_eq!((d.end, d.stats), (w.end, w.stats), "discard");
    assert!(d.out.is_empty());
    let d = bytewise(input, cfg, Mode::Discard);
    assert_eq!((d.end, d.stats), (w.end, w.stats), "discard bytewise");
    w
}

fn stats(bytes: u64, lines: u64, bare_lf: bool, bare_cr: bool) -> DataStats {
    DataStats {
        bytes,
        lines,
        bare_lf,
        bare_cr,
        over_limit: false,
    }
}

/// The RFC 5321 §4.5.2 receiver as a reference model, line by line.
///
/// Lines end with CRLF (strict) or with any LF (lenient). A line that is
/// exactly "." ends the message; a line starting with "." otherwise loses
/// that dot. The stats follow from the output: every LF is counted, an LF
/// not preceded by CR is bare, a CR not followed by LF is bare. On
/// incomplete input, a last partial line starting with "." has lost its dot
/// and a pending ".CR" emits nothing yet. `max_size` only truncates.
mod model {
    use super::*;

    pub fn run(input: &[u8], cfg: DataConfig) -> Outcome {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut end = None;
        while pos < input.len() {
            let rest = &input[pos..];
            let line_len = line_end(rest, cfg.strict);
            let Some(len) = line_len else {
                // Incomplete last line.
                let mut l = rest;
                if l.first() == Some(&b'.') {
                    l = &l[1..];
                    if l == b"\r" {
                        l = b"";
                    }
                }
                out.extend_from_slice(l);
                break;
            };
            let line = &rest[..len];
            if line == b".\r\n" || (!cfg.strict && line == b".\n") {
                end = Some(pos + len);
                break;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            pos += len;
        }
        let mut s = DataStats {
            bytes: out.len() as u64,
            lines: out.iter().filter(|&&c| c == b'\n').count() as u64,
            ..DataStats::default()
        };
        for (i, &c) in out.iter().enumerate() {
            if c == b'\n' && (i == 0 || out[i - 1] != b'\r') {
                s.bare_lf = true;
            }
            if c == b'\r' && out.get(i + 1).is_some_and(|&n| n != b'\n') {
                s.bare_cr = true;
            }
        }
        // A CR at the very end of a complete message cannot happen (the
        // terminator follows a line end); at the end of incomplete input it
        // is still undecided. A lenient ".LF" terminator is itself a bare LF.
        if let Some(e) = end {
            if input[..e].ends_with(b"\n") && !input[..e].ends_with(b"\r\n") {
                s.bare_lf = true;
            }
        }
        if cfg.max_size != 0 && s.bytes > cfg.max_size {
            s.over_limit = true;
            out.truncate(cfg.max_size as usize);
        }
        Outcome { out, end, stats: s }
    }

    /// Length of the first line including its terminator.
    fn line_end(s: &[u8], strict: bool) -> Option<usize> {
        if strict {
            s.windows(2).position(|w| w == b"\r\n").map(|p| p + 2)
        } else {
            s.iter().position(|&c| c == b'\n').map(|p| p + 1)
        }
    }
}

/// xorshift64: deterministic pseudo-random numbers without dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A realistic body: `lines` lines of 76–78 characters, about 2% of them
/// starting with a dot. Returns (the message as the sender meant it, the
/// dot-stuffed wire form with the terminator).
fn realistic(seed: u64, lines: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(seed | 1);
    let mut message = Vec::new();
    let mut wire = Vec::new();
    for _ in 0..lines {
        let len = 76 + rng.below(3) as usize;
        let mut line: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
        if rng.below(50) == 0 {
            line[0] = b'.';
        }
        // Dots inside lines are ordinary text.
        let mid = 1 + rng.below(len as u64 - 1) as usize;
        line[mid] = b'.';
        message.extend_from_slice(&line);
        message.extend_from_slice(b"\r\n");
        if line[0] == b'.' {
            wire.push(b'.');
        }
        wire.extend_from_slice(&line);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    (message, wire)
}

// ---------------------------------------------------------------------------
// Basic messages

#[test]
fn simple_message() {
    let input = b"Subject: hi\r\n\r\nHello\r\n.\r\n";
    let o = all_ways(input, STRICT);
    assert_eq!(o.out, b"Subject: hi\r\n\r\nHello\r\n");
    assert_eq!(o.end, Some(input.len()));
    assert_eq!(o.stats, stats(22, 3, false, false));
    assert_eq!(o, model::run(input, STRICT));
}

#[test]
fn table_of_messages() {
    // (input, expected output, expected end, lines)
    let cases: &[(&[u8], &[u8], usize, u64)] = &[
        // The terminator alone: an empty message (RFC 5321 §4.1.1.4).
        (b".\r\n", b"", 3, 0),
        (b".\r\nQUIT\r\n", b"", 3, 0),
        // A first line starting with a (stuffed) dot.
        (b"..hidden\r\n.\r\n", b".hidden\r\n", 13, 1),
        // A sloppy client that did not stuff: the first dot is still removed.
        (b".x\r\n.\r\n", b"x\r\n", 7, 1),
        // A line of just ".." is a single dot.
        (b"..\r\n.\r\n", b".\r\n", 7, 1),
        (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", 11, 2),
        // Dots elsewhere are text.
        (b"a.b\r\nc.\r\n. x\r\n.\r\n", b"a.b\r\nc.\r\n x\r\n", 17, 3),
        // An empty line before the end.
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n", 8, 2),
        // Bytes after the terminator are the next command, not consumed.
        (
            b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.example>\r\n",
            b"Subject: x\r\n\r\nbody\r\n",
            23,
            3,
        ),
        // A terminator-looking sequence inside a line.
        (b"x\r\n.\r.\r\n.\r\n", b"x\r\n\r.\r\n", 11, 2),
        // 8-bit and NUL bytes pass through.
        (b"\x00\xff\x80\r\n.\r\n", b"\x00\xff\x80\r\n", 8, 1),
    ];
    for &(input, out, end, lines) in cases {
        let name = String::from_utf8_lossy(input);
        let o = all_ways(input, STRICT);
        assert_eq!(o.out, out, "{name}");
        assert_eq!(o.end, Some(end), "{name}");
        assert_eq!(o.stats.bytes, out.len() as u64, "{name}");
        assert_eq!(o.stats.lines, lines, "{name}");
        assert!(!o.stats.bare_lf && !o.stats.over_limit, "{name}");
        assert_eq!(o, model::run(input, STRICT), "{name}");
        // Lenient mode reads CRLF input the same way.
        assert_eq!(all_ways(input, LENIENT), o, "lenient {name}");
    }
}

#[test]
fn incomplete_input_is_partial() {
    for input in [
        &b""[..],
        b"abc",
        b"a\r\n",
        b"a\r\n.",
        b"a\r\n.\r",
        b"a\r\n..",
        b".",
        b".\r",
        b"a\r\n.\n",
        b"a\n.\n",
    ] {
        let o = all_ways(input, STRICT);
        assert_eq!(o.end, None, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(o, model::run(input, STRICT));
    }
    // Resuming after ".\r" with the LF.
    let mut rx = DataReceiver::new(STRICT);
    let mut out = Vec::new();
    assert_eq!(rx.unstuff(b"a\r\n.\r", &mut out), Status::Partial);
    assert_eq!(rx.unstuff(b"\nNOOP\r\n", &mut out), Status::Complete(1));
    assert_eq!(out, b"a\r\n");
    // ... or with something else: the dot was stuffing, the CR is bare.
    let mut rx = DataReceiver::new(STRICT);
    let mut out = Vec::new();
    assert_eq!(rx.unstuff(b"a\r\n.\r", &mut out), Status::Partial);
    assert_eq!(rx.unstuff(b"b\r\n.\r\n", &mut out), Status::Complete(6));
    assert_eq!(out, b"a\r\n\rb\r\n");
    assert!(rx.stats().bare_cr);
}

#[test]
fn done_receiver_consumes_nothing_and_reset_starts_over() {
    let mut rx = DataReceiver::new(STRICT);
    let mut out = Vec::new();
    assert_eq!(rx.unstuff(b"a\r\n.\r\n", &mut out), Status::Complete(6));
    assert!(rx.is_done());
    assert_eq!(rx.unstuff(b"more\r\n.\r\n", &mut out), Status::Complete(0));
    assert_eq!(rx.discard(b"more"), Status::Complete(0));
    assert_eq!(out, b"a\r\n");
    let first = rx.stats();
    rx.reset();
    assert!(!rx.is_done());
    assert_eq!(rx.stats(), DataStats::default());
    out.clear();
    assert_eq!(
        rx.unstuff(b"..b\r\nc\r\n.\r\n", &mut out),
        Status::Complete(11)
    );
    assert_eq!(out, b".b\r\nc\r\n");
    assert_eq!(rx.stats(), stats(7, 2, false, false));
    assert_eq!(first, stats(3, 1, false, false));
}

#[test]
fn discard_and_unstuff_give_the_same_stats() {
    let inputs: &[&[u8]] = &[
        b"a\r\n.\r\n",
        b"..a\r\n.b\r\n\r\n.\r\n",
        b"a\nb\rc\r\n.\r\n",
        b"a\r\n.\nb\r\n.\r\n",
        b"no end yet\r\n",
    ];
    for &input in inputs {
        for cfg in [STRICT, LENIENT] {
            let u = feed(input, cfg, Mode::Unstuff, &[]);
            let d = feed(input, cfg, Mode::Discard, &[]);
            assert_eq!((u.end, u.stats), (d.end, d.stats));
            assert_eq!(u.stats.bytes, u.out.len() as u64);
        }
    }
    let (_, wire) = realistic(7, 1500);
    let u = feed(&wire, STRICT, Mode::Unstuff, &[]);
    let d = feed(&wire, STRICT, Mode::Discard, &[]);
    assert_eq!((u.end, u.stats), (d.end, d.stats));
}

// ---------------------------------------------------------------------------
// SMTP smuggling (CVE-2023-51764 and friends): in strict mode only
// CRLF.CRLF ends the message; the lookalikes do not, and the bare line
// ends are reported.

const SMUGGLED: &[u8] = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\n\
DATA\r\nFrom: ceo@example.com\r\n\r\nwire money\r\n.\r\n";

/// `Subject: x CRLF CRLF hello` + `vector` + the smuggled commands. Returns
/// the input and where the vector starts.
fn smuggling_input(vector: &[u8]) -> (Vec<u8>, usize) {
    let mut input = b"Subject: x\r\n\r\nhello".to_vec();
    let at = input.len();
    input.extend_from_slice(vector);
    input.extend_from_slice(SMUGGLED);
    (input, at)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn smuggling_lf_dot_lf() {
    let (input, at) = smuggling_input(b"\n.\n");
    let s = all_ways(&input, STRICT);
    // Strict: the message runs to the real CRLF.CRLF at the very end.
    assert_eq!(s.end, Some(input.len()));
    assert!(s.stats.bare_lf);
    assert!(!s.stats.bare_cr);
    // The dot after a bare LF is not at a line start: it is kept.
    assert!(contains(&s.out, b"hello\n.\nMAIL FROM:<evil"));
    assert_eq!(s, model::run(&input, STRICT));
    // Lenient: LF is a line end, so LF . LF ends the message there.
    let l = all_ways(&input, LENIENT);
    assert_eq!(l.end, Some(at + 3));
    assert_eq!(l.out, b"Subject: x\r\n\r\nhello\n");
    assert!(l.stats.bare_lf);
    assert_eq!(l, model::run(&input, LENIENT));
}

#[test]
fn smuggling_lf_dot_crlf() {
    let (input, at) = smuggling_input(b"\n.\r\n");
    let s = all_ways(&input, STRICT);
    assert_eq!(s.end, Some(input.len()));
    assert!(s.stats.bare_lf);
    assert!(!s.stats.bare_cr);
    assert!(contains(&s.out, b"hello\n.\r\nMAIL FROM:<evil"));
    assert_eq!(s, model::run(&input, STRICT));
    let l = all_ways(&input, LENIENT);
    assert_eq!(l.end, Some(at + 4));
    assert_eq!(l.out, b"Subject: x\r\n\r\nhello\n");
    assert!(l.stats.bare_lf);
    assert_eq!(l, model::run(&input, LENIENT));
}

#[test]
fn smuggling_cr_dot_crlf() {
    let (input, _) = smuggling_input(b"\r.\r\n");
    let s = all_ways(&input, STRICT);
    assert_eq!(s.end, Some(input.len()));
    assert!(s.stats.bare_cr);
    assert!(!s.stats.bare_lf);
    assert!(contains(&s.out, b"hello\r.\r\nMAIL FROM:<evil"));
    assert_eq!(s, model::run(&input, STRICT));
    // A bare CR is never a line end, not even leniently.
    let l = all_ways(&input, LENIENT);
    assert_eq!(l.end, Some(input.len()));
    assert!(l.stats.bare_cr);
    assert_eq!(l.out, s.out);
}

#[test]
fn smuggling_crlf_dot_lf() {
    let (input, at) = smuggling_input(b"\r\n.\n");
    let s = all_ways(&input, STRICT);
    assert_eq!(s.end, Some(input.len()));
    assert!(s.stats.bare_lf);
    assert!(!s.stats.bare_cr);
    // The line ".\nMAIL FROM:..." (ended by the next CRLF) starts with a dot
    // and has more characters: the dot is removed (RFC 5321 §4.5.2).
    assert!(contains(&s.out, b"hello\r\n\nMAIL FROM:<evil"));
    assert_eq!(s, model::run(&input, STRICT));
    // Lenient: "." LF after CRLF ends the message.
    let l = all_ways(&input, LENIENT);
    assert_eq!(l.end, Some(at + 4));
    assert_eq!(l.out, b"Subject: x\r\n\r\nhello\r\n");
}

/// `DataStats::bare_lf` is "an LF not preceded by CR was seen". When lenient
/// mode ends a message on `CRLF . LF`, that LF was seen and was bare, so a
/// server applying a bare-LF policy must learn about it.
#[test]
fn lenient_end_on_bare_lf_is_reported() {
    for input in [&b"hello\r\n.\nMAIL"[..], b".\nQUIT\r\n"] {
        let l = feed(input, LENIENT, Mode::Unstuff, &[]);
        assert!(l.end.is_some(), "{:?}", String::from_utf8_lossy(input));
        assert!(
            l.stats.bare_lf,
            "{:?}: ended on a bare LF but bare_lf is false",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn smuggling_vectors_at_every_offset_of_a_large_body() {
    // The vector placed at every position around several 64-byte chunk
    // boundaries of a body large enough for the SIMD path.
    let (_, wire) = realistic(3, 40);
    let body = &wire[..wire.len() - 3]; // without the terminator
    for vector in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r\n", b"\r\n.\n"] {
        for at in (0..300).chain(body.len() - 70..body.len() - 2) {
            if at > 0 && body[at - 1] == b'\r' {
                // "\r" + "\n.\r\n" would be a real terminator.
                continue;
            }
            let mut input = body[..at].to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(&body[at..]);
            input.extend_from_slice(b".\r\n");
            let s = whole(&input, STRICT);
            assert_eq!(s.end, Some(input.len()), "strict {vector:?} at {at}");
            assert!(s.stats.bare_lf || s.stats.bare_cr);
            assert_eq!(s, model::run(&input, STRICT), "strict {vector:?} at {at}");
            let l = whole(&input, LENIENT);
            assert_eq!(l, model::run(&input, LENIENT), "lenient {vector:?} at {at}");
        }
    }
}

// ---------------------------------------------------------------------------
// Size limit

#[test]
fn size_limit_reported_output_bounded_rest_consumed() {
    let cfg = DataConfig {
        max_size: 100,
        strict: true,
    };
    let mut message = Vec::new();
    for i in 0..40 {
        message.extend_from_slice(format!("line {i:02} of the message\r\n").as_bytes());
    }
    let mut input = message.clone();
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let end = message.len() + 3;
    for pieces in [
        vec![],
        vec![1; input.len()],
        vec![7; input.len()],
        vec![99, 1, 1],
    ] {
        for mode in [Mode::Unstuff, Mode::Discard] {
            let o = feed(&input, cfg, mode, &pieces);
            assert_eq!(o.end, Some(end), "{mode:?} {pieces:?}");
            assert!(o.stats.over_limit);
            assert_eq!(o.stats.bytes, message.len() as u64);
            assert_eq!(o.stats.lines, 40);
            if mode == Mode::Unstuff {
                assert_eq!(o.out, &message[..100]);
            }
        }
    }
}

#[test]
fn size_limit_boundaries() {
    // RFC 1870: the limit is on the message as received (after unstuffing).
    for (max_size, over) in [(7u64, false), (6, true), (8, false), (1, true)] {
        let cfg = DataConfig {
            max_size,
            strict: true,
        };
        // "..a CRLF b CRLF" unstuffs to ".a CRLF b CRLF": 7 octets.
        let input = b"..a\r\nb\r\n.\r\n";
        let o = all_ways(input, cfg);
        assert_eq!(o.stats.bytes, 7);
        assert_eq!(o.stats.over_limit, over, "max {max_size}");
        assert_eq!(o.out, &b".a\r\nb\r\n"[..7.min(max_size as usize)]);
        assert_eq!(o, model::run(input, cfg));
    }
    // 0 means no limit.
    let (msg, wire) = realistic(11, 2000);
    let o = whole(&wire, DataConfig::default());
    assert!(!o.stats.over_limit);
    assert_eq!(o.out, msg);
}

#[test]
fn size_limit_on_large_body() {
    let (msg, wire) = realistic(5, 1300); // ~100 KB
    let cfg = DataConfig {
        max_size: 50_000,
        strict: true,
    };
    let o = all_ways(&wire, cfg);
    assert_eq!(o.end, Some(wire.len()));
    assert!(o.stats.over_limit);
    assert_eq!(o.stats.bytes, msg.len() as u64);
    assert_eq!(o.out, &msg[..50_000]);
}

// ---------------------------------------------------------------------------
// Large bodies: the SIMD path against byte-at-a-time and the model

#[test]
fn large_body_100kb_two_percent_dots() {
    let (message, wire) = realistic(42, 1300);
    assert!(wire.len() > 100_000);
    let dot_lines = message
        .split(|&c| c == b'\n')
        .filter(|l| l.first() == Some(&b'.'))
        .count();
    assert!((10..=60).contains(&dot_lines), "{dot_lines} dot lines");
    let w = whole(&wire, STRICT);
    assert_eq!(w.out, message);
    assert_eq!(w.end, Some(wire.len()));
    assert_eq!(w.stats, stats(message.len() as u64, 1300, false, false));
    assert_eq!(bytewise(&wire, STRICT, Mode::Unstuff), w);
    assert_eq!(bytewise(&wire, STRICT, Mode::Discard).stats, w.stats);
    assert_eq!(w, model::run(&wire, STRICT));
    // Followed by pipelined commands: they are not consumed.
    let mut more = wire.clone();
    more.extend_from_slice(b"QUIT\r\n");
    assert_eq!(whole(&more, STRICT).end, Some(wire.len()));
}

#[test]
fn terminator_at_every_offset_around_chunk_boundaries() {
    for len in 0..300 {
        let mut input: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        input.extend_from_slice(b"\r\n.\r\nNEXT");
        let o = whole(&input, STRICT);
        assert_eq!(o.end, Some(len + 5), "len {len}");
        assert_eq!(o.out.len(), len + 2);
        assert_eq!(o.stats.lines, 1);
    }
}

#[test]
fn stuffed_dots_and_crlf_straddling_chunk_boundaries() {
    for prefix in 0..200 {
        for pattern in [
            &b"\r\n..x"[..],
            b"\r\n.\r\r\n",
            b"\r\n.",
            b"\r\r\n",
            b"\n\n..",
        ] {
            let mut input = vec![b'm'; prefix];
            input.extend_from_slice(pattern);
            input.extend(std::iter::repeat_n(b'z', 130));
            input.extend_from_slice(b"\r\n.\r\n");
            for cfg in [STRICT, LENIENT] {
                let o = whole(&input, cfg);
                assert_eq!(o, model::run(&input, cfg), "{prefix} {pattern:?} {cfg:?}");
                let mut rx = DataReceiver::new(cfg);
                assert_eq!(rx.discard(&input).complete(), o.end);
                assert_eq!(rx.stats(), o.stats);
            }
        }
    }
}

#[test]
fn random_bodies_agree_with_the_model() {
    let mut rng = Rng(0x5eed);
    for round in 0..300 {
        let len = rng.below(700) as usize;
        let mut input: Vec<u8> = (0..len)
            .map(|_| match rng.below(20) {
                0..=2 => b'\r',
                3..=5 => b'\n',
                6..=8 => b'.',
                _ => b'a' + rng.below(26) as u8,
            })
            .collect();
        if round % 2 == 0 {
            input.extend_from_slice(b"\r\n.\r\n");
        }
        for cfg in [
            STRICT,
            LENIENT,
            DataConfig {
                max_size: 1 + rng.below(300),
                strict: round % 3 == 0,
            },
        ] {
            let expected = model::run(&input, cfg);
            assert_eq!(whole(&input, cfg), expected, "round {round} {cfg:?}");
            let mut pieces = Vec::new();
            while pieces.iter().sum::<usize>() < input.len() {
                pieces.push(rng.below(90) as usize);
            }
            assert_eq!(
                feed(&input, cfg, Mode::Unstuff, &pieces),
                expected,
                "round {round} {cfg:?} {pieces:?}"
            );
            let d = feed(&input, cfg, Mode::Discard, &pieces);
            assert_eq!((d.end, d.stats), (expected.end, expected.stats));
        }
    }
}

// ---------------------------------------------------------------------------
// BDAT (RFC 3030): exactly n octets, no dot handling

#[test]
fn bdat_exact_count_across_splits() {
    let chunk: &[u8] = b"0123456789";
    let stream: &[u8] = b"0123456789QUIT\r\n";
    // Every single split point and every split into three.
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let mut rx = BdatReceiver::new(10);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut done_at = None;
            for piece in [&stream[..i], &stream[i..j], &stream[j..]] {
                let (taken, done) = rx.take(piece);
                got.extend_from_slice(taken);
                assert!(piece.starts_with(taken));
                if done && done_at.is_none() {
                    done_at = Some(pos + taken.len());
                }
                pos += piece.len();
                assert_eq!(rx.remaining(), 10 - got.len() as u64);
            }
            assert_eq!(got, chunk);
            assert_eq!(done_at, Some(10));
            assert!(rx.is_done());
        }
    }
}

#[test]
fn bdat_edge_cases() {
    let mut rx = BdatReceiver::new(0);
    assert!(rx.is_done());
    assert_eq!(rx.take(b"QUIT\r\n"), (&b""[..], true));
    // No dot-stuffing or terminator handling: ".\r\n" is just data.
    let mut rx = BdatReceiver::new(8);
    assert_eq!(rx.take(b".\r\n"), (&b".\r\n"[..], false));
    assert_eq!(rx.take(b"..\r\n\0RSET"), (&b"..\r\n\0"[..], true));
    assert_eq!(rx.take(b"more"), (&b""[..], true));
    assert_eq!(rx.remaining(), 0);
    // Huge chunk sizes do not overflow.
    let mut rx = BdatReceiver::new(u64::MAX);
    assert_eq!(rx.take(b"abc"), (&b"abc"[..], false));
    assert_eq!(rx.remaining(), u64::MAX - 3);
    assert_eq!(rx.take(b""), (&b""[..], false));
}

#[test]
fn bdat_commands_and_chunks_one_byte_at_a_time() {
    // A server loop alternating between command parsing and BDAT chunks.
    let stream: &[u8] = b"BDAT 5\r\nhelloBDAT 7 LAST\r\n\r\n.\r\n\r\nQUIT\r\n";
    let mut buf = Vec::new();
    let mut rx: Option<(BdatReceiver, bool)> = None;
    let mut body = Vec::new();
    let mut events = Vec::new();
    for &b in stream {
        buf.push(b);
        loop {
            if let Some((r, last)) = rx.as_mut() {
                let (taken, done) = r.take(&buf);
                let n = taken.len();
                body.extend_from_slice(taken);
                buf.drain(..n);
                if !done {
                    break;
                }
                events.push(format!("chunk last={last}"));
                rx = None;
                continue;
            }
            match parse_command(&buf, &ParserConfig::default()).unwrap() {
                Status::Partial => break,
                Status::Complete((cmd, n)) => {
                    if let Command::Bdat { size, last } = cmd {
                        rx = Some((BdatReceiver::new(size), last));
                    }
                    events.push(format!("{cmd:?}"));
                    buf.drain(..n);
                }
            }
        }
    }
    assert_eq!(body, b"hello\r\n.\r\n\r\n");
    assert_eq!(
        events,
        [
            "Bdat { size: 5, last: false }",
            "chunk last=false",
            "Bdat { size: 7, last: true }",
            "chunk last=true",
            "Quit"
        ]
    );
}
