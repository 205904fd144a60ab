//! Line framing shared by the command and reply parsers.

use crate::{Error, ErrorKind, Status};

/// A complete line found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Length of the line's content, without its terminator.
    pub content_len: usize,
    /// Length including the terminator (CRLF, or LF when bare LF is allowed).
    pub total_len: usize,
}

/// Finds the first line in `buf`.
///
/// `max_len` counts the terminator, as RFC 5321 §4.5.3.1 does. A line that
/// has not ended within `max_len` bytes is [`ErrorKind::LineTooLong`] as soon
/// as `max_len` bytes are buffered, so a caller never has to buffer more.
/// The content is checked for NUL and bare CR; a bare LF terminator is an
/// error unless `allow_bare_lf`.
pub fn find_line(buf: &[u8], max_len: usize, allow_bare_lf: bool) -> Result<Status<Line>, Error> {
    frame(buf, max_len, allow_bare_lf).map(|s| match s {
        Status::Complete(f) => Status::Complete(Line {
            content_len: f.content_len,
            total_len: f.total_len,
        }),
        Status::Partial => Status::Partial,
    })
}

/// [`find_line`]'s result plus what the scan learnt about the content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framed {
    pub(crate) content_len: usize,
    pub(crate) total_len: usize,
    /// `true` only if every content byte is ASCII (`false` may also mean
    /// "not known"), so any sub-slice is valid UTF-8 without checking.
    pub(crate) ascii: bool,
}

/// [`find_line`], also reporting whether the content is ASCII (from the same
/// vector loads that look for the terminator).
#[inline(always)]
pub(crate) fn frame(
    buf: &[u8],
    max_len: usize,
    allow_bare_lf: bool,
) -> Result<Status<Framed>, Error> {
    let window = &buf[..buf.len().min(max_len)];
    // One pass for the first byte of interest: in a well-formed line that is
    // the CR of its CRLF. Command lines are short, so an inline scan for
    // control bytes beats a memchr3 call; a TAB or other control byte hands
    // over to memchr3 from there.
    let (first, high) = first_control(window);
    let (hit, mut ascii) = match first {
        Some(i) if matches!(window[i], b'\r' | b'\n' | 0) => (Some(i), high < 0x80),
        Some(i) => (
            memchr::memchr3(b'\r', b'\n', 0, &window[i + 1..]).map(|p| p + i + 1),
            false,
        ),
        None => (None, false),
    };
    match hit {
        Some(cr) if window[cr] == b'\r' && window.get(cr + 1) == Some(&b'\n') => {
            if !ascii {
                ascii = window[..cr].is_ascii();
            }
            Ok(Status::Complete(Framed {
                content_len: cr,
                total_len: cr + 2,
                ascii,
            }))
        }
        Some(lf) if window[lf] == b'\n' => {
            if allow_bare_lf {
                if !ascii {
                    ascii = window[..lf].is_ascii();
                }
                Ok(Status::Complete(Framed {
                    content_len: lf,
                    total_len: lf + 1,
                    ascii,
                }))
            } else {
                Err(Error::at(ErrorKind::BareLf, lf, lf + 1))
            }
        }
        Some(bad) => bad_byte(window, bad, buf, max_len),
        None => too_long_or_partial(buf, max_len),
    }
}

/// The fast case of [`frame`]: when the first control byte of the line
/// starts a CRLF, returns its position and whether the content is ASCII;
/// `None` means "ask [`frame`]".
#[inline(always)]
pub(crate) fn frame_crlf(buf: &[u8], max_len: usize) -> Option<(usize, bool)> {
    let window = &buf[..buf.len().min(max_len)];
    match first_control(window) {
        (Some(cr), high) if window[cr] == b'\r' && window.get(cr + 1) == Some(&b'\n') => {
            Some((cr, high < 0x80))
        }
        _ => None,
    }
}

/// NUL, or CR not followed by LF (or CR last in the window): decide once the
/// line's LF is in; report the first offending byte.
#[cold]
#[inline(never)]
fn bad_byte(
    window: &[u8],
    bad: usize,
    buf: &[u8],
    max_len: usize,
) -> Result<Status<Framed>, Error> {
    match memchr::memchr(b'\n', &window[bad..]) {
        Some(p) => {
            let lf = bad + p;
            let kind = if window[bad] == 0 {
                ErrorKind::NulByte
            } else {
                ErrorKind::BareCr
            };
            Err(Error::at(kind, bad, lf + 1))
        }
        None => too_long_or_partial(buf, max_len),
    }
}

/// Position of the first byte <= 13 (NUL, TAB, LF, CR and other controls),
/// and the OR of the bytes before it (its high bit says "not ASCII").
#[inline(always)]
fn first_control(window: &[u8]) -> (Option<usize>, u8) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut i = 0;
    let mut high = 0u8;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let mut high_mask = 0i32;
        while i + 16 <= window.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; `i + 16 <= len`
            // keeps the unaligned load inside `window`.
            let (mask, hi) = unsafe {
                let v = _mm_loadu_si128(window.as_ptr().add(i) as *const __m128i);
                // min(v, 13) == v exactly for the bytes <= 13.
                (
                    _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(13)), v)),
                    _mm_movemask_epi8(v),
                )
            };
            if mask != 0 {
                let below = (mask & mask.wrapping_neg()) - 1;
                if (high_mask | (hi & below)) != 0 {
                    high = 0x80;
                }
                return (Some(i + mask.trailing_zeros() as usize), high);
            }
            high_mask |= hi;
            i += 16;
        }
        if high_mask != 0 {
            high = 0x80;
        }
    }
    for (p, &b) in window[i..].iter().enumerate() {
        if b <= 13 {
            return (Some(i + p), high);
        }
        high |= b;
    }
    (None, high)
}

/// A 16-byte vector on x86_64 (never built elsewhere).
#[cfg(target_arch = "x86_64")]
pub(crate) type Vector = std::arch::x86_64::__m128i;
/// A 16-byte vector on x86_64 (never built elsewhere).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Vector = [u8; 16];

/// Position (relative to `from`) of the first byte in `buf[from..end]` for
/// which `hit` holds, or `end - from`. `simd` computes the same predicate on
/// 16 bytes at once as a byte mask (0xff where it holds); `buf` may extend
/// past `end`, which lets short ranges be scanned with one vector load.
#[inline(always)]
fn scan(
    buf: &[u8],
    from: usize,
    end: usize,
    simd: impl Fn(Vector) -> Vector,
    hit: impl Fn(u8) -> bool,
) -> usize {
    debug_assert!(from <= end && end <= buf.len());
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while i < end {
            let Some(chunk) = buf.get(i..i + 16) else {
                break;
            };
            // SAFETY: SSE2 is part of the x86_64 baseline; `chunk` is 16
            // bytes long, so the unaligned load stays inside it.
            let mask = unsafe {
                _mm_movemask_epi8(simd(_mm_loadu_si128(chunk.as_ptr() as *const __m128i)))
            };
            if mask != 0 {
                return (i + mask.trailing_zeros() as usize).min(end) - from;
            }
            i += 16;
        }
        if i >= end {
            return end - from;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    match buf[i..end].iter().position(|&b| hit(b)) {
        Some(p) => i + p - from,
        None => end - from,
    }
}

/// Position (relative to `from`) of the first `needle` in `buf[from..end]`,
/// or `end - from`.
#[inline(always)]
pub(crate) fn find_byte(buf: &[u8], from: usize, end: usize, needle: u8) -> usize {
    scan(
        buf,
        from,
        end,
        |v| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe {
                use std::arch::x86_64::*;
                _mm_cmpeq_epi8(v, _mm_set1_epi8(needle as i8))
            }
            #[cfg(not(target_arch = "x86_64"))]
            v
        },
        |b| b == needle,
    )
}

/// Position (relative to `from`) of the first byte of `buf[from..end]`
/// outside `lo..=hi` (`lo` at least 1), or `end - from`.
#[inline(always)]
pub(crate) fn find_outside(buf: &[u8], from: usize, end: usize, lo: u8, hi: u8) -> usize {
    scan(
        buf,
        from,
        end,
        |v| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe {
                use std::arch::x86_64::*;
                _mm_cmpeq_epi8(in_range(v, lo, hi), _mm_setzero_si128())
            }
            #[cfg(not(target_arch = "x86_64"))]
            v
        },
        |b| !(lo..=hi).contains(&b),
    )
}

/// Position (relative to `from`) of the first byte of `buf[from..end]` that
/// is a control byte, a space or DEL, or `end - from`.
#[inline(always)]
pub(crate) fn find_ctl_space_del(buf: &[u8], from: usize, end: usize) -> usize {
    scan(
        buf,
        from,
        end,
        |v| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            unsafe {
                use std::arch::x86_64::*;
                let low = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(b' ' as i8)), v);
                _mm_or_si128(low, _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)))
            }
            #[cfg(not(target_arch = "x86_64"))]
            v
        },
        |c| c <= b' ' || c == 0x7f,
    )
}

/// Byte-class bit masks over up to 64 bytes of a buffer: bit `i` of
/// `masks[k]` is class `k` of `buf[from + i]`. `classes` turns 16 bytes into
/// `N` byte masks (0xff where the class holds). Reads `ceil(n / 16)` whole
/// vectors, so it returns `None` when `buf` does not hold them (or off
/// x86_64); bits at or past `n` are unspecified.
#[inline(always)]
pub(crate) fn class_masks<const N: usize>(
    buf: &[u8],
    from: usize,
    n: usize,
    classes: impl Fn(Vector) -> [Vector; N],
) -> Option<[u64; N]> {
    debug_assert!(n <= 64);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let chunks = n.div_ceil(16);
        let bytes = buf.get(from..from + 16 * chunks)?;
        let mut out = [0u64; N];
        for k in 0..chunks {
            // SAFETY: SSE2 is part of the x86_64 baseline; `bytes` holds
            // `16 * chunks` bytes, so each 16-byte load stays inside it.
            let v = unsafe { _mm_loadu_si128(bytes.as_ptr().add(16 * k) as *const __m128i) };
            let m = classes(v);
            for c in 0..N {
                // SAFETY: SSE2 is part of the x86_64 baseline.
                let bits = unsafe { _mm_movemask_epi8(m[c]) } as u32 as u64;
                out[c] |= bits << (16 * k);
            }
        }
        Some(out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (buf, from, n, classes);
        None
    }
}

/// Byte mask of `v == b` (x86_64 only).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn eq(v: Vector, b: u8) -> Vector {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline.
    unsafe { _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)) }
}

/// Byte mask of `lo <= v <= hi`, for `hi - lo < 128` (x86_64 only).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn in_range(v: Vector, lo: u8, hi: u8) -> Vector {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline.
    unsafe {
        // Shift lo..=hi to the bottom of the signed range: the bytes inside
        // are exactly those below (hi - lo + 1) - 128.
        let x = _mm_add_epi8(v, _mm_set1_epi8((0x80u8.wrapping_sub(lo)) as i8));
        _mm_cmplt_epi8(
            x,
            _mm_set1_epi8((hi.wrapping_sub(lo) as i32 + 1 - 128) as i8),
        )
    }
}

/// Byte mask of `a | b` (x86_64 only).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn or(a: Vector, b: Vector) -> Vector {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline.
    unsafe { _mm_or_si128(a, b) }
}

/// A framed line (`buf[..len]`) and the buffer it sits at the start of; the
/// bytes after it let short scans use one vector load. Positions are
/// absolute offsets into `buf`.
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub(crate) buf: &'a [u8],
    /// Content length (the line's end).
    pub(crate) len: usize,
    /// Every byte of `buf[..len]` is ASCII.
    pub(crate) ascii: bool,
}

impl<'a> Src<'a> {
    /// Absolute position of the first `needle` in `buf[from..end]`, or `end`.
    #[inline(always)]
    pub(crate) fn find(&self, from: usize, end: usize, needle: u8) -> usize {
        from + find_byte(self.buf, from, end, needle)
    }

    /// `buf[from..to]`.
    #[inline(always)]
    pub(crate) fn bytes(&self, from: usize, to: usize) -> &'a [u8] {
        &self.buf[from..to]
    }

    /// `buf[from..to]` as text; `Err(offset)` of the first byte that is not
    /// valid UTF-8.
    #[inline(always)]
    pub(crate) fn text(&self, from: usize, to: usize) -> Result<&'a str, usize> {
        let s = &self.buf[from..to];
        if self.ascii {
            Ok(ascii_str(s))
        } else {
            std::str::from_utf8(s).map_err(|e| from + e.valid_up_to())
        }
    }
}

/// Text from bytes already known to be ASCII.
#[inline(always)]
pub(crate) fn ascii_str(s: &[u8]) -> &str {
    debug_assert!(s.is_ascii());
    // SAFETY: every caller has checked that `s` is ASCII (directly or as part
    // of a line framed as all-ASCII), and ASCII is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(s) }
}

/// No LF within the window: wait for more, or report the over-long line.
#[cold]
fn too_long_or_partial<T>(buf: &[u8], max_len: usize) -> Result<Status<T>, Error> {
    if buf.len() < max_len {
        return Ok(Status::Partial);
    }
    // Drop the whole line if its end is already buffered, else all we have.
    Err(match memchr::memchr(b'\n', &buf[max_len..]) {
        Some(rest) => Error::at(ErrorKind::LineTooLong, max_len, max_len + rest + 1),
        None => Error {
            kind: ErrorKind::LineTooLong,
            offset: max_len,
            consumed: buf.len(),
            line_complete: false,
        },
    })
}

/// Resynchronises after [`ErrorKind::LineTooLong`] with `line_complete ==
/// false`: returns how many bytes of `buf` to drop to get past the next LF,
/// or `None` when `buf` holds no LF (drop all of it and call again).
pub fn skip_line(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_crlf_line() {
        let l = find_line(b"NOOP\r\nX", 512, false)
            .unwrap()
            .complete()
            .unwrap();
        assert_eq!((l.content_len, l.total_len), (4, 6));
    }

    #[test]
    fn exact_limit_is_accepted_and_one_more_is_not() {
        let mut line = vec![b'a'; 510];
        line.extend_from_slice(b"\r\n");
        assert!(find_line(&line, 512, false).unwrap().is_complete());
        line.insert(0, b'a');
        let e = find_line(&line, 512, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LineTooLong);
        assert!(e.line_complete);
        assert_eq!(e.consumed, line.len());
    }

    #[test]
    fn too_long_without_lf_is_reported_at_the_limit() {
        let e = find_line(&[b'x'; 600], 512, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LineTooLong);
        assert!(!e.line_complete);
        assert_eq!(e.consumed, 600);
        assert!(find_line(&[b'x'; 511], 512, false).unwrap().is_partial());
    }

    /// The straightforward two-pass framing the single-pass one replaced.
    fn two_pass(buf: &[u8], max_len: usize, allow_bare_lf: bool) -> Result<Status<Line>, Error> {
        let window = &buf[..buf.len().min(max_len)];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            return too_long_or_partial(buf, max_len);
        };
        let content_len = if lf > 0 && buf[lf - 1] == b'\r' {
            lf - 1
        } else if allow_bare_lf {
            lf
        } else {
            return Err(Error::at(ErrorKind::BareLf, lf, lf + 1));
        };
        if let Some(bad) = memchr::memchr2(0, b'\r', &buf[..content_len]) {
            let kind = if buf[bad] == 0 {
                ErrorKind::NulByte
            } else {
                ErrorKind::BareCr
            };
            return Err(Error::at(kind, bad, lf + 1));
        }
        Ok(Status::Complete(Line {
            content_len,
            total_len: lf + 1,
        }))
    }

    #[test]
    fn single_pass_agrees_with_two_pass_on_all_short_inputs() {
        // Every string of length <= 6 over the bytes that matter.
        // TAB stands for the control bytes that are not special.
        let alphabet = [b'a', b'\r', b'\n', 0, b'\t'];
        for len in 0..=6u32 {
            for mut code in 0..5usize.pow(len) {
                let mut buf = Vec::new();
                for _ in 0..len {
                    buf.push(alphabet[code % 5]);
                    code /= 5;
                }
                for max in [3, 5, 512] {
                    for bare in [false, true] {
                        let (a, b) = (find_line(&buf, max, bare), two_pass(&buf, max, bare));
                        match (a, b) {
                            (Ok(x), Ok(y)) => assert_eq!(x, y, "{buf:?} max {max}"),
                            // Lines with several faults may name a different one first.
                            (Err(x), Err(y)) => assert_eq!(
                                (x.consumed, x.line_complete),
                                (y.consumed, y.line_complete),
                                "{buf:?} max {max}"
                            ),
                            (x, y) => panic!("{buf:?} max {max} bare {bare}: {x:?} vs {y:?}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn long_lines_with_tabs_agree_with_two_pass() {
        // Lines longer than one 16-byte block, with the special byte at
        // every position.
        for len in 1..80 {
            for pos in 0..len {
                for special in [b'\t', b'\r', b'\n', 0] {
                    let mut buf = vec![b'x'; len];
                    buf[pos] = special;
                    buf.extend_from_slice(b"\r\nNEXT");
                    for max in [40, 512] {
                        let (a, b) = (find_line(&buf, max, false), two_pass(&buf, max, false));
                        match (a, b) {
                            (Ok(x), Ok(y)) => assert_eq!(x, y),
                            (Err(x), Err(y)) => assert_eq!(
                                (x.consumed, x.line_complete),
                                (y.consumed, y.line_complete)
                            ),
                            (x, y) => panic!("{buf:?}: {x:?} vs {y:?}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bare_lf_nul_and_bare_cr() {
        assert_eq!(
            find_line(b"NOOP\n", 512, false).unwrap_err().kind,
            ErrorKind::BareLf
        );
        assert!(find_line(b"NOOP\n", 512, true).unwrap().is_complete());
        assert_eq!(
            find_line(b"NO\0OP\r\n", 512, false).unwrap_err().kind,
            ErrorKind::NulByte
        );
        let e = find_line(b"NO\rOP\r\n", 512, false).unwrap_err();
        assert_eq!((e.kind, e.offset, e.consumed), (ErrorKind::BareCr, 2, 7));
    }
}
