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
        if self.state == State::Done {
            return Status::Complete(0);
        }
        let strict = self.config.strict;
        let fast = simd::select();
        // Start of the pending run of message bytes not yet flushed.
        let mut run_start = 0;
        let mut i = 0;
        while i < buf.len() {
            if matches!(self.state, State::Start | State::Mid | State::Cr) {
                // Skips to a line-start dot or to the last partial chunk.
                i = fast(self, buf, i, strict);
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

    /// Applies one 64-byte chunk's masks. Returns `None` when the whole
    /// chunk was consumed, or `Some(k)` when byte `k` is a dot at the start of
    /// a line: bytes before it are applied and the state is `Start`.
    #[inline(always)]
    fn apply_chunk(&mut self, lf: u64, cr: u64, dot: u64, strict: bool) -> Option<u32> {
        let cr_prev = (cr << 1) | u64::from(self.state == State::Cr);
        let line_end = if strict { lf & cr_prev } else { lf };
        let line_start = (line_end << 1) | u64::from(self.state == State::Start);
        let events = dot & line_start;
        let keep = if events == 0 {
            u64::MAX
        } else {
            (1u64 << events.trailing_zeros()) - 1
        };
        let lf_kept = lf & keep;
        self.stats.lines += u64::from(lf_kept.count_ones());
        self.stats.bare_lf |= lf_kept & !cr_prev != 0;
        self.stats.bare_cr |= cr_prev & !lf & keep != 0;
        if events != 0 {
            self.state = State::Start;
            return Some(events.trailing_zeros());
        }
        self.state = if cr >> 63 != 0 {
            State::Cr
        } else if line_end >> 63 != 0 {
            State::Start
        } else {
            State::Mid
        };
        None
    }
}

/// Chunk classification: bitmasks of LF, CR and '.' for 64 bytes.
mod simd {
    use super::DataReceiver;

    /// Consumes 64-byte chunks from `i` up to a line-start dot or until
    /// fewer than 64 bytes remain; returns the first position not consumed.
    pub(super) type FastPath = fn(&mut DataReceiver, &[u8], usize, bool) -> usize;

    macro_rules! fast_loop {
        ($rx:expr, $buf:expr, $i:expr, $strict:expr, $masks:expr) => {{
            let mut i = $i;
            while i + 64 <= $buf.len() {
                let (lf, cr, dot) = $masks(&$buf[i..i + 64]);
                if let Some(k) = $rx.apply_chunk(lf, cr, dot, $strict) {
                    i += k as usize;
                    break;
                }
                i += 64;
            }
            i
        }};
    }

    pub(super) fn select() -> FastPath {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                return avx2_entry;
            }
            sse2_path
        }
        #[cfg(not(target_arch = "x86_64"))]
        portable_path
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn portable_path(rx: &mut DataReceiver, buf: &[u8], i: usize, strict: bool) -> usize {
        fast_loop!(rx, buf, i, strict, portable_masks)
    }

    #[cfg(any(test, not(target_arch = "x86_64")))]
    pub(super) fn portable_masks(chunk: &[u8]) -> (u64, u64, u64) {
        let (mut lf, mut cr, mut dot) = (0u64, 0u64, 0u64);
        for (k, &c) in chunk.iter().enumerate() {
            lf |= u64::from(c == b'\n') << k;
            cr |= u64::from(c == b'\r') << k;
            dot |= u64::from(c == b'.') << k;
        }
        (lf, cr, dot)
    }

    #[cfg(target_arch = "x86_64")]
    fn sse2_path(rx: &mut DataReceiver, buf: &[u8], i: usize, strict: bool) -> usize {
        fast_loop!(rx, buf, i, strict, sse2_masks)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn sse2_masks(chunk: &[u8]) -> (u64, u64, u64) {
        use std::arch::x86_64::*;
        assert!(chunk.len() >= 64);
        let (mut lf, mut cr, mut dot) = (0u64, 0u64, 0u64);
        for k in 0..4 {
            // SAFETY: SSE2 is part of the x86_64 baseline; the assert above
            // keeps the unaligned 16-byte load inside `chunk`.
            unsafe {
                let v = _mm_loadu_si128(chunk.as_ptr().add(16 * k) as *const __m128i);
                let m = |b: u8| {
                    _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))) as u16 as u64
                };
                lf |= m(b'\n') << (16 * k);
                cr |= m(b'\r') << (16 * k);
                dot |= m(b'.') << (16 * k);
            }
        }
        (lf, cr, dot)
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2_entry(rx: &mut DataReceiver, buf: &[u8], i: usize, strict: bool) -> usize {
        // SAFETY: selected only after `is_x86_feature_detected!("avx2")`.
        unsafe { avx2_path(rx, buf, i, strict) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2_path(rx: &mut DataReceiver, buf: &[u8], i: usize, strict: bool) -> usize {
        fast_loop!(rx, buf, i, strict, avx2_masks)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn avx2_masks(chunk: &[u8]) -> (u64, u64, u64) {
        use std::arch::x86_64::*;
        assert!(chunk.len() >= 64);
        // SAFETY: the assert keeps both unaligned 32-byte loads inside `chunk`.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(chunk.as_ptr() as *const __m256i),
                _mm256_loadu_si256(chunk.as_ptr().add(32) as *const __m256i),
            )
        };
        let m = |b: u8| {
            let needle = _mm256_set1_epi8(b as i8);
            let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, needle)) as u32 as u64;
            let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, needle)) as u32 as u64;
            l | (h << 32)
        };
        (m(b'\n'), m(b'\r'), m(b'.'))
    }

    #[cfg(all(test, target_arch = "x86_64"))]
    mod tests {
        #[test]
        fn simd_masks_agree_with_portable() {
            let mut chunk = [b'a'; 64];
            for (k, c) in chunk.iter_mut().enumerate() {
                *c = [b'\n', b'\r', b'.', b'x', 0x8a, 0x8d][k % 6];
            }
            assert_eq!(super::sse2_masks(&chunk), super::portable_masks(&chunk));
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: guarded by the runtime check.
                let avx = unsafe { super::avx2_masks(&chunk) };
                assert_eq!(avx, super::portable_masks(&chunk));
            }
        }
    }
}

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
