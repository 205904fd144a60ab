//! Server side: receiving a message body after `DATA` (dot-stuffed, ended by
//! `CRLF . CRLF`) or `BDAT` (exact byte counts, RFC 3030).
//!
//! [`DataReceiver`] is incremental: feed it whatever arrived, split anywhere,
//! and it resumes where it stopped. In discard mode it only finds the end and
//! counts; in unstuff mode it appends the message (dot-stuffing removed) to a
//! caller's buffer. The hot loop classifies 64 bytes at a time with SIMD and
//! falls back to a byte-wise state machine only around a dot at the start of
//! a line (about 2% of lines in real mail) and at buffer edges.
//!
//! SMTP smuggling: in strict mode (the default) only `CRLF . CRLF` ends the
//! message; `LF . LF`, `LF . CRLF`, `CR . CRLF` and `CRLF . LF` do not, and
//! bare LF / bare CR are reported in [`DataStats`] so a server can reject the
//! message. Lenient mode also accepts LF as a line end (as `LF . LF`).

use crate::Status;

/// DATA receiver settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataConfig {
    /// Largest message in octets (after unstuffing); 0 means no limit. Going
    /// over it sets [`DataStats::over_limit`]; the rest is still consumed but
    /// never buffered.
    pub max_size: u64,
    /// `true`: only CRLF ends a line (smuggling-safe). `false`: LF alone does too.
    pub strict: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            max_size: 0,
            strict: true,
        }
    }
}

/// What a receiver saw so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataStats {
    /// Message octets after unstuffing, excluding the final `.CRLF`.
    pub bytes: u64,
    /// LF characters in the message (its line count when it ends in CRLF).
    pub lines: u64,
    /// An LF not preceded by CR was seen.
    pub bare_lf: bool,
    /// A CR not followed by LF was seen.
    pub bare_cr: bool,
    /// The message exceeded [`DataConfig::max_size`].
    pub over_limit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    Start,
    /// Inside a line; the last byte was not CR.
    Mid,
    /// Inside a line; the last byte was CR.
    Cr,
    /// A dot at the start of a line (not emitted: stuffing or terminator).
    Dot,
    /// Line-start dot then CR: the end if LF follows.
    DotCr,
    /// The terminator was consumed.
    Done,
}

/// Incremental DATA body receiver. See the module docs.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    stats: DataStats,
    config: DataConfig,
}

impl DataReceiver {
    /// A receiver positioned at the start of the body (just after `354`).
    pub fn new(config: DataConfig) -> Self {
        DataReceiver {
            state: State::Start,
            stats: DataStats::default(),
            config,
        }
    }

    /// Starts over for the next message, keeping the configuration.
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.stats = DataStats::default();
    }

    /// Counters and flags so far (complete once the end was found).
    pub fn stats(&self) -> DataStats {
        self.stats
    }

    /// `true` once the terminating `.CRLF` was consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes `buf` without copying. `Complete(n)`: the message ended after
    /// `n` bytes (terminator included; the rest of `buf` is the next
    /// command). `Partial`: all of `buf` was consumed and more is needed.
    pub fn discard(&mut self, buf: &[u8]) -> Status<usize> {
        self.run::<false>(buf, &mut Vec::new())
    }

    /// Like [`DataReceiver::discard`], but appends the unstuffed message to
    /// `out` (never more than `max_size` bytes of it).
    pub fn unstuff(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Status<usize> {
        self.run::<true>(buf, out)
    }

    /// Accounts for a run of message bytes and copies what fits the limit.
    #[inline]
    fn flush<const COPY: bool>(&mut self, run: &[u8], out: &mut Vec<u8>) {
        let before = self.stats.bytes;
        self.stats.bytes += run.len() as u64;
        if self.config.max_size != 0 && self.stats.bytes > self.config.max_size {
            self.stats.over_limit = true;
            if COPY {
                let room = self.config.max_size.saturating_sub(before) as usize;
                out.extend_from_slice(&run[..room.min(run.len())]);
            }
        } else if COPY {
            out.extend_from_slice(run);
        }
    }

    fn run<const COPY: bool>(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Status<usize> {
        self.run_at::<COPY>(buf, out, simd::detect())
    }

    /// [`DataReceiver::run`] with the instruction-set level chosen by the
    /// caller (tests drive every level this CPU supports).
    fn run_at<const COPY: bool>(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        level: simd::Level,
    ) -> Status<usize> {
        if self.state == State::Done {
            return Status::Complete(0);
        }
        let strict = self.config.strict;
        // Unstuffing stores each chunk as it is classified (one pass) unless
        // the size limit could be crossed in this buffer; then runs are
        // copied and clipped by `flush`.
        let fused = COPY
            && (self.config.max_size == 0
                || self.stats.bytes + buf.len() as u64 <= self.config.max_size);
        let fast = if fused {
            simd::select::<true, true>(level)
        } else {
            simd::select::<COPY, false>(level)
        };
        // Start of the pending run of message bytes not yet flushed.
        let mut run_start = 0;
        let mut i = 0;
        while i < buf.len() {
            if matches!(self.state, State::Start | State::Mid | State::Cr) {
                // Consumes 64-byte chunks, dropping stuffed dots, up to a dot
                // that may end the message or to the last partial chunk.
                // SAFETY: `select` returns a path for the features this CPU has.
                i = unsafe { fast(self, buf, i, &mut run_start, out) };
                if i >= buf.len() {
                    break;
                }
            }
            // Byte-wise through the dot and what decides it, or the tail.
            loop {
                let c = buf[i];
                match self.state {
                    State::Start if c == b'.' => {
                        self.flush::<COPY>(&buf[run_start..i], out);
                        run_start = i + 1;
                        self.state = State::Dot;
                    }
                    State::Start | State::Mid => self.content(c, strict),
                    State::Cr => {
                        if c == b'\n' {
                            self.stats.lines += 1;
                            self.state = State::Start;
                        } else {
                            self.stats.bare_cr = true;
                            self.content(c, strict);
                        }
                    }
                    State::Dot => match c {
                        b'\r' => {
                            run_start = i + 1;
                            self.state = State::DotCr;
                        }
                        b'\n' if !strict => {
                            self.stats.bare_lf = true;
                            return self.done(i + 1);
                        }
                        // A stuffed dot (RFC 5321 §4.5.2): dropped; `c` starts the run.
                        _ => self.content(c, strict),
                    },
                    State::DotCr => {
                        if c == b'\n' {
                            return self.done(i + 1);
                        }
                        // `.` CR then not LF: the dot was stuffing, the CR is a bare CR.
                        self.flush::<COPY>(b"\r", out);
                        self.stats.bare_cr = true;
                        self.content(c, strict);
                    }
                    State::Done => unreachable!("returned on Done"),
                }
                i += 1;
                let settled = matches!(self.state, State::Start | State::Mid | State::Cr);
                if i >= buf.len() || (settled && buf.len() - i >= 64) {
                    break;
                }
            }
        }
        self.flush::<COPY>(&buf[run_start.min(buf.len())..], out);
        Status::Partial
    }

    #[inline]
    fn done(&mut self, consumed: usize) -> Status<usize> {
        self.state = State::Done;
        Status::Complete(consumed)
    }

    /// Transition for an ordinary content byte.
    #[inline]
    fn content(&mut self, c: u8, strict: bool) {
        self.state = match c {
            b'\r' => State::Cr,
            b'\n' => {
                self.stats.lines += 1;
                self.stats.bare_lf = true;
                if strict {
                    State::Mid
                } else {
                    State::Start
                }
            }
            _ => State::Mid,
        };
    }
}

// The SIMD fast path (one function per instruction set).
mod simd;

/// Receives one `BDAT` chunk: exactly `size` bytes, no dot-stuffing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BdatReceiver {
    remaining: u64,
}

impl BdatReceiver {
    /// A receiver for a chunk of `size` octets.
    pub fn new(size: u64) -> Self {
        BdatReceiver { remaining: size }
    }

    /// Octets still expected.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// `true` once all octets arrived.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Takes this chunk's bytes from the front of `buf`: returns them and
    /// whether the chunk is now complete. The caller drops `taken.len()`
    /// bytes; anything after them is the next command.
    pub fn take<'a>(&mut self, buf: &'a [u8]) -> (&'a [u8], bool) {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        self.remaining -= n as u64;
        (&buf[..n], self.remaining == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff_all(input: &[u8], cfg: DataConfig) -> (Vec<u8>, Option<usize>, DataStats) {
        let mut rx = DataReceiver::new(cfg);
        let mut out = Vec::new();
        let end = rx.unstuff(input, &mut out).complete();
        (out, end, rx.stats())
    }

    fn one_byte_at_a_time(input: &[u8], cfg: DataConfig) -> (Vec<u8>, Option<usize>, DataStats) {
        let mut rx = DataReceiver::new(cfg);
        let mut out = Vec::new();
        for (k, b) in input.iter().enumerate() {
            if let Status::Complete(n) = rx.unstuff(std::slice::from_ref(b), &mut out) {
                assert_eq!(n, 1);
                return (out, Some(k + 1), rx.stats());
            }
        }
        (out, None, rx.stats())
    }

    #[test]
    fn simple_message_and_unstuffing() {
        let (out, end, st) = unstuff_all(
            b"Subject: x\r\n\r\n..dot\r\n.x\r\nend\r\n.\r\nMAIL",
            DataConfig::default(),
        );
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\nx\r\nend\r\n");
        assert_eq!(end, Some(33));
        assert_eq!(
            (st.bytes, st.lines, st.bare_lf, st.bare_cr),
            (out.len() as u64, 5, false, false)
        );
    }

    #[test]
    fn empty_message_and_leading_dot_line() {
        let (out, end, _) = unstuff_all(b".\r\nQUIT\r\n", DataConfig::default());
        assert_eq!((out.as_slice(), end), (&b""[..], Some(3)));
        let (out, end, _) = unstuff_all(b"..x\r\n.\r\n", DataConfig::default());
        assert_eq!((out.as_slice(), end), (&b".x\r\n"[..], Some(8)));
    }

    #[test]
    fn smuggling_lf_dot_lf_does_not_end_strict() {
        let input = b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n";
        let (out, end, st) = unstuff_all(input, DataConfig::default());
        assert_eq!(end, Some(input.len()));
        assert!(st.bare_lf);
        assert_eq!(out, b"a\n.\nMAIL FROM:<x@y>\r\n");
    }

    #[test]
    fn smuggling_lf_dot_crlf_does_not_end_strict() {
        let input = b"a\n.\r\nb\r\n.\r\n";
        let (_, end, st) = unstuff_all(input, DataConfig::default());
        assert_eq!(end, Some(input.len()));
        assert!(st.bare_lf);
    }

    #[test]
    fn smuggling_cr_dot_crlf_does_not_end_strict() {
        let input = b"a\r.\r\nb\r\n.\r\n";
        let (_, end, st) = unstuff_all(input, DataConfig::default());
        assert_eq!(end, Some(input.len()));
        assert!(st.bare_cr);
    }

    #[test]
    fn smuggling_crlf_dot_lf_does_not_end_strict() {
        let input = b"a\r\n.\nb\r\n.\r\n";
        let (out, end, st) = unstuff_all(input, DataConfig::default());
        assert_eq!(end, Some(input.len()));
        assert!(st.bare_lf);
        // The dot was at a line start with other bytes after it: unstuffed.
        assert_eq!(out, b"a\r\n\nb\r\n");
    }

    #[test]
    fn lenient_mode_ends_on_lf_dot_lf() {
        let cfg = DataConfig {
            strict: false,
            ..DataConfig::default()
        };
        assert_eq!(unstuff_all(b"a\n.\nrest", cfg).1, Some(4));
        assert_eq!(unstuff_all(b"a\r\n.\nrest", cfg).1, Some(5));
        assert_eq!(unstuff_all(b"a\r.\r\nb\r\n.\r\n", cfg).1, Some(11));
    }

    #[test]
    fn size_limit_is_reported_and_output_bounded() {
        let cfg = DataConfig {
            max_size: 10,
            strict: true,
        };
        let mut body = vec![b'x'; 1000];
        body.extend_from_slice(b"\r\n.\r\n");
        let (out, end, st) = unstuff_all(&body, cfg);
        assert_eq!(out.len(), 10);
        assert_eq!(end, Some(body.len()));
        assert!(st.over_limit);
        assert_eq!(st.bytes, 1002);
        let mut rx = DataReceiver::new(cfg);
        assert_eq!(rx.discard(&body), Status::Complete(body.len()));
        assert!(rx.stats().over_limit);
    }

    /// Deterministic pseudo-random bodies rich in the bytes that matter.
    fn body(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 16 {
                    0..=2 => b'\r',
                    3..=5 => b'\n',
                    6..=7 => b'.',
                    _ => b'a' + (x % 26) as u8,
                }
            })
            .collect()
    }

    /// Whole-buffer results at every instruction-set level this CPU has, in
    /// both modes, with and without a size limit (fused and run copies).
    fn at_every_level(input: &[u8], cfg: DataConfig) -> Vec<(Vec<u8>, Option<usize>, DataStats)> {
        let mut results = Vec::new();
        for level in 1..=simd::detect() {
            for limit in [0, input.len() as u64 / 2 + 1] {
                let cfg = DataConfig {
                    max_size: limit,
                    ..cfg
                };
                let mut rx = DataReceiver::new(cfg);
                let mut out = Vec::new();
                let end = rx.run_at::<true>(input, &mut out, level).complete();
                let copied = (out, end, rx.stats());
                let mut rx = DataReceiver::new(cfg);
                let end = rx.run_at::<false>(input, &mut Vec::new(), level).complete();
                assert_eq!(
                    (end, rx.stats()),
                    (copied.1, copied.2),
                    "discard vs unstuff, level {level}"
                );
                if limit == 0 {
                    results.push(copied);
                } else {
                    assert!(copied.0.len() as u64 <= limit);
                }
            }
        }
        results
    }

    #[test]
    fn every_simd_level_agrees_with_byte_at_a_time() {
        for strict in [true, false] {
            let cfg = DataConfig {
                max_size: 0,
                strict,
            };
            for seed in 1..300u64 {
                let input = body(seed, 200 + (seed as usize * 13) % 1500);
                let want = one_byte_at_a_time(&input, cfg);
                for got in at_every_level(&input, cfg) {
                    assert_eq!(got, want, "seed {seed} strict {strict}");
                }
            }
        }
    }

    /// Mostly clean CRLF text with rare specials, so whole clean chunks (and
    /// pairs of them) alternate with chunks that need the general rules.
    fn sparse_body(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // About one bare CR or LF per 1000 tokens, a line-start dot per
            // 300, a line break per 25.
            match x % 1000 {
                0 => out.push(b'\n'),
                1 => out.push(b'\r'),
                2..=4 => out.extend_from_slice(b"\r\n."),
                5..=44 => out.extend_from_slice(b"\r\n"),
                _ => out.push(b'a' + (x % 26) as u8),
            }
        }
        out
    }

    #[test]
    fn every_simd_level_agrees_on_sparse_bodies() {
        for strict in [true, false] {
            let cfg = DataConfig {
                max_size: 0,
                strict,
            };
            for seed in 1..200u64 {
                let input = sparse_body(seed, 500 + (seed as usize * 37) % 6000);
                let want = one_byte_at_a_time(&input, cfg);
                for got in at_every_level(&input, cfg) {
                    assert_eq!(got, want, "seed {seed} strict {strict}");
                }
            }
        }
    }

    #[test]
    fn simd_path_agrees_with_byte_at_a_time() {
        for strict in [true, false] {
            let cfg = DataConfig {
                max_size: 0,
                strict,
            };
            for seed in 1..400u64 {
                let input = body(seed, 300 + (seed as usize * 7) % 900);
                assert_eq!(
                    unstuff_all(&input, cfg),
                    one_byte_at_a_time(&input, cfg),
                    "seed {seed} strict {strict}"
                );
            }
        }
    }

    #[test]
    fn simd_path_agrees_on_long_clean_lines() {
        let mut input = Vec::new();
        for k in 0..2000 {
            if k % 50 == 0 {
                input.push(b'.');
            }
            input.extend(std::iter::repeat_n(b'm', 60 + k % 17));
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b".\r\n");
        let cfg = DataConfig::default();
        let fast = unstuff_all(&input, cfg);
        assert_eq!(fast, one_byte_at_a_time(&input, cfg));
        assert_eq!(fast.1, Some(input.len()));
        let mut rx = DataReceiver::new(cfg);
        assert_eq!(rx.discard(&input), Status::Complete(input.len()));
        assert_eq!(rx.stats(), fast.2);
    }

    #[test]
    fn bdat_takes_exact_counts_across_splits() {
        let mut rx = BdatReceiver::new(5);
        assert_eq!(rx.take(b"abc"), (&b"abc"[..], false));
        assert_eq!(rx.take(b"deMAIL"), (&b"de"[..], true));
        assert!(rx.is_done());
        assert_eq!(BdatReceiver::new(0).take(b"x"), (&b""[..], true));
    }
}
