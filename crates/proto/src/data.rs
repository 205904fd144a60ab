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

/// The fast path: classifies 64 bytes at a time into LF, CR and '.' bitmasks
/// and derives line starts, stuffed dots, bare CR/LF and the line count from
/// them with shifts, keeping the carries between chunks in registers.
mod simd {
    use super::{DataReceiver, State};

    /// `fn(receiver, buf, from, run_start, out) -> first position not
    /// consumed`. Unsafe because a path may use CPU features that must have
    /// been detected first (see [`select`]).
    pub(super) type FastPath =
        unsafe fn(&mut DataReceiver, &[u8], usize, &mut usize, &mut Vec<u8>) -> usize;

    /// The loop, instantiated once per instruction set so the mask function
    /// inlines into a body compiled with the same target features.
    /// `$copy`: unstuff mode; `$fused`: store chunks into `out` as they are
    /// classified (requires `$copy` and no size limit in reach).
    macro_rules! fast_loop {
        ($rx:ident, $buf:ident, $from:ident, $run_start:ident, $out:ident, $copy:expr, $fused:expr, $masks:ident) => {{
            let len = $buf.len();
            let strict = $rx.config.strict;
            let mut i = $from;
            let mut cr_in = u64::from($rx.state == State::Cr);
            let mut start_in = u64::from($rx.state == State::Start);
            let mut lines = 0u64;
            let (mut bad_lf, mut bad_cr) = (0u64, 0u64);
            let mut w = 0usize;
            if $fused {
                $rx.flush::<true>(&$buf[*$run_start..i], $out);
                // Each chunk is stored whole (64 bytes) before the write
                // position advances by what it keeps.
                $out.reserve(len - i + 64);
                w = $out.len();
            }
            while i + 64 <= len {
                // Clean chunks two at a time: no bare CR/LF, no line-start
                // dot. Anything else drops to the one-chunk step below.
                while i + 128 <= len {
                    // SAFETY: `i + 128 <= len`: both chunks are inside `buf`;
                    // when fused, `w + 128` is within the reserved space
                    // (`w - initial <= i - from`).
                    let (c0, c1) = unsafe {
                        let src = $buf.as_ptr().add(i);
                        let dst = if $fused {
                            $out.as_mut_ptr().add(w)
                        } else {
                            std::ptr::null_mut()
                        };
                        let dst1 = if $fused { dst.add(64) } else { dst };
                        (
                            $masks::<{ $fused }>(src, dst),
                            $masks::<{ $fused }>(src.add(64), dst1),
                        )
                    };
                    let ((lf0, cr0, dot0), (lf1, cr1, dot1)) = (c0, c1);
                    let crp0 = (cr0 << 1) | cr_in;
                    let crp1 = (cr1 << 1) | (cr0 >> 63);
                    let bad = (crp0 ^ lf0) | (crp1 ^ lf1);
                    let dots =
                        (dot0 & ((lf0 << 1) | start_in)) | (dot1 & ((lf1 << 1) | (lf0 >> 63)));
                    if (bad | dots) != 0 {
                        break;
                    }
                    lines += u64::from(lf0.count_ones()) + u64::from(lf1.count_ones());
                    cr_in = cr1 >> 63;
                    start_in = lf1 >> 63;
                    i += 128;
                    if $fused {
                        w += 128;
                    }
                }
                if i + 64 > len {
                    break;
                }
                // SAFETY: `i + 64 <= len`, so the 64 bytes are inside `buf`.
                let src = unsafe { $buf.as_ptr().add(i) };
                let dst = if $fused {
                    // SAFETY: `w` never passes the initial length plus
                    // `i - from`, and `len - from + 64` bytes were reserved.
                    unsafe { $out.as_mut_ptr().add(w) }
                } else {
                    std::ptr::null_mut()
                };
                // SAFETY: 64 readable bytes at `src` (and writable at `dst`
                // when fused); the caller checked the CPU features.
                let (lf, cr, dot) = unsafe { $masks::<{ $fused }>(src, dst) };
                let cr_prev = (cr << 1) | cr_in;
                // Zero exactly when every CR is followed by LF and every LF
                // follows a CR: then line ends are the LFs, in both modes.
                let bad = cr_prev ^ lf;
                if (bad | (dot & ((lf << 1) | start_in))) == 0 {
                    lines += u64::from(lf.count_ones());
                    cr_in = cr >> 63;
                    start_in = lf >> 63;
                    i += 64;
                    if $fused {
                        w += 64;
                    }
                    continue;
                }
                // A bare CR/LF or a line-start dot: the general rules.
                let line_end = if strict { lf & cr_prev } else { lf };
                let line_start = (line_end << 1) | start_in;
                let dots = dot & line_start;
                if dots == 0 {
                    lines += u64::from(lf.count_ones());
                    bad_lf |= lf & !cr_prev;
                    bad_cr |= cr_prev & !lf;
                    cr_in = cr >> 63;
                    start_in = line_end >> 63;
                    i += 64;
                    if $fused {
                        w += 64;
                    }
                    continue;
                }
                // Bytes before the first line-start dot are ordinary content.
                let k = dots.trailing_zeros() as usize;
                let keep = (1u64 << k) - 1;
                lines += u64::from((lf & keep).count_ones());
                bad_lf |= lf & !cr_prev & keep;
                bad_cr |= cr_prev & !lf & keep;
                let dot_at = i + k;
                if $fused {
                    w += k;
                }
                if dot_at + 1 < len && !matches!($buf[dot_at + 1], b'\r' | b'\n') {
                    // Stuffing (RFC 5321 §4.5.2): drop the dot, carry on.
                    if !$fused {
                        $rx.flush::<$copy>(&$buf[*$run_start..dot_at], $out);
                        *$run_start = dot_at + 1;
                    }
                    i = dot_at + 1;
                    cr_in = 0;
                    start_in = 0;
                    continue;
                }
                // `.` CR, `.` LF, or a dot last in the buffer: it may end the
                // message; the byte-wise state machine decides.
                i = dot_at;
                cr_in = 0;
                start_in = 1;
                break;
            }
            $rx.stats.lines += lines;
            $rx.stats.bare_lf |= bad_lf != 0;
            $rx.stats.bare_cr |= bad_cr != 0;
            $rx.state = if cr_in != 0 {
                State::Cr
            } else if start_in != 0 {
                State::Start
            } else {
                State::Mid
            };
            if $fused {
                $rx.stats.bytes += (w - $out.len()) as u64;
                // SAFETY: every byte below `w` was written by the stores above.
                unsafe { $out.set_len(w) };
                *$run_start = i;
            }
            i
        }};
    }

    /// One fast-path function per instruction set: the loop body is the
    /// same, the target features and the mask function differ.
    macro_rules! fast_path {
        ($(#[$attr:meta])* $name:ident, $masks:ident) => {
            $(#[$attr])*
            unsafe fn $name<const COPY: bool, const FUSED: bool>(
                rx: &mut DataReceiver,
                buf: &[u8],
                from: usize,
                run_start: &mut usize,
                out: &mut Vec<u8>,
            ) -> usize {
                fast_loop!(rx, buf, from, run_start, out, COPY, FUSED, $masks)
            }
        };
    }

    fast_path!(
        #[cfg(not(target_arch = "x86_64"))]
        portable_path,
        portable_masks
    );
    fast_path!(
        #[cfg(target_arch = "x86_64")]
        sse2_path,
        sse2_masks
    );
    fast_path!(
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,popcnt")]
        avx2_path,
        avx2_masks
    );
    fast_path!(
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,popcnt")]
        avx512_path,
        avx512_masks
    );

    /// Instruction-set level: 1 baseline (SSE2 on x86_64, scalar
    /// elsewhere), 2 AVX2, 3 AVX-512BW.
    pub(super) type Level = u8;

    /// The best level this CPU supports, detected once.
    pub(super) fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::atomic::{AtomicU8, Ordering};
            static LEVEL: AtomicU8 = AtomicU8::new(0);
            let mut level = LEVEL.load(Ordering::Relaxed);
            if level == 0 {
                level = if std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("popcnt")
                {
                    3
                } else if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("popcnt")
                {
                    2
                } else {
                    1
                };
                LEVEL.store(level, Ordering::Relaxed);
            }
            level
        }
        #[cfg(not(target_arch = "x86_64"))]
        1
    }

    /// The path for `level`, which must not exceed [`detect`]'s.
    pub(super) fn select<const COPY: bool, const FUSED: bool>(level: Level) -> FastPath {
        #[cfg(target_arch = "x86_64")]
        {
            match level {
                3 => avx512_path::<COPY, FUSED>,
                2 => avx2_path::<COPY, FUSED>,
                _ => sse2_path::<COPY, FUSED>,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = level;
            portable_path::<COPY, FUSED>
        }
    }

    /// The scalar mask function, for other architectures and as the tests'
    /// reference.
    ///
    /// # Safety
    /// `p` must point at 64 readable bytes.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    pub(super) unsafe fn portable_masks<const STORE: bool>(
        p: *const u8,
        dst: *mut u8,
    ) -> (u64, u64, u64) {
        // SAFETY: the caller guarantees 64 readable bytes (and 64 writable
        // ones at `dst` when storing; the two never overlap).
        let chunk = unsafe { std::slice::from_raw_parts(p, 64) };
        if STORE {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(p, dst, 64) };
        }
        let (mut lf, mut cr, mut dot) = (0u64, 0u64, 0u64);
        for (k, &c) in chunk.iter().enumerate() {
            lf |= u64::from(c == b'\n') << k;
            cr |= u64::from(c == b'\r') << k;
            dot |= u64::from(c == b'.') << k;
        }
        (lf, cr, dot)
    }

    /// # Safety
    /// `p` must point at 64 readable bytes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn sse2_masks<const STORE: bool>(p: *const u8, dst: *mut u8) -> (u64, u64, u64) {
        use std::arch::x86_64::*;
        let (mut lf, mut cr, mut dot) = (0u64, 0u64, 0u64);
        for k in 0..4 {
            // SAFETY: SSE2 is part of the x86_64 baseline; the caller
            // guarantees 64 readable bytes (and writable at `dst` if storing).
            unsafe {
                let v = _mm_loadu_si128(p.add(16 * k) as *const __m128i);
                if STORE {
                    _mm_storeu_si128(dst.add(16 * k) as *mut __m128i, v);
                }
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

    /// # Safety
    /// AVX2 must be available and `p` must point at 64 readable bytes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn avx2_masks<const STORE: bool>(p: *const u8, dst: *mut u8) -> (u64, u64, u64) {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 64 readable bytes (and writable at
        // `dst` if storing).
        let (lo, hi) = unsafe {
            let lo = _mm256_loadu_si256(p as *const __m256i);
            let hi = _mm256_loadu_si256(p.add(32) as *const __m256i);
            if STORE {
                _mm256_storeu_si256(dst as *mut __m256i, lo);
                _mm256_storeu_si256(dst.add(32) as *mut __m256i, hi);
            }
            (lo, hi)
        };
        let m = |b: u8| {
            let needle = _mm256_set1_epi8(b as i8);
            let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, needle)) as u32 as u64;
            let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, needle)) as u32 as u64;
            l | (h << 32)
        };
        (m(b'\n'), m(b'\r'), m(b'.'))
    }

    /// # Safety
    /// AVX-512BW must be available and `p` must point at 64 readable bytes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn avx512_masks<const STORE: bool>(p: *const u8, dst: *mut u8) -> (u64, u64, u64) {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 64 readable bytes (and writable at
        // `dst` if storing).
        let v = unsafe {
            let v = _mm512_loadu_si512(p as *const __m512i);
            if STORE {
                _mm512_storeu_si512(dst as *mut __m512i, v);
            }
            v
        };
        let m = |b: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8));
        (m(b'\n'), m(b'\r'), m(b'.'))
    }

    #[cfg(all(test, target_arch = "x86_64"))]
    mod tests {
        #[test]
        fn simd_masks_agree_with_portable() {
            let mut chunk = [b'a'; 64];
            for (k, c) in chunk.iter_mut().enumerate() {
                *c = [b'\n', b'\r', b'.', b'x', 0x8a, 0x8d, 0x2e | 0x80][k % 7];
            }
            let p = chunk.as_ptr();
            let mut copy = [0u8; 64];
            let d = copy.as_mut_ptr();
            // SAFETY: `chunk` and `copy` have 64 bytes each; each SIMD path
            // runs only after its runtime feature check.
            unsafe {
                let want = super::portable_masks::<false>(p, std::ptr::null_mut());
                assert_eq!(super::sse2_masks::<true>(p, d), want);
                assert_eq!(copy, chunk);
                copy = [0; 64];
                if std::is_x86_feature_detected!("avx2") {
                    assert_eq!(super::avx2_masks::<true>(p, d), want);
                    assert_eq!(copy, chunk);
                    copy = [0; 64];
                }
                if std::is_x86_feature_detected!("avx512bw") {
                    assert_eq!(super::avx512_masks::<true>(p, d), want);
                    assert_eq!(copy, chunk);
                }
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
