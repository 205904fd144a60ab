//! The fast path: classifies 64 bytes at a time into LF, CR and '.' bitmasks
//! and derives line starts, stuffed dots, bare CR/LF and the line count from
//! them with shifts, keeping the carries between chunks in registers.

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
                let dots = (dot0 & ((lf0 << 1) | start_in)) | (dot1 & ((lf1 << 1) | (lf0 >> 63)));
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
            let m =
                |b: u8| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))) as u16 as u64;
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
