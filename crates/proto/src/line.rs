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
    let window = &buf[..buf.len().min(max_len)];
    // One pass for the first byte of interest: in a well-formed line that is
    // the CR of its CRLF. Command lines are short, so an inline scan for
    // control bytes beats a memchr3 call; a TAB or other control byte hands
    // over to memchr3 from there.
    let hit = match first_control(window) {
        Some(i) if matches!(window[i], b'\r' | b'\n' | 0) => Some(i),
        Some(i) => memchr::memchr3(b'\r', b'\n', 0, &window[i + 1..]).map(|p| p + i + 1),
        None => None,
    };
    match hit {
        Some(cr) if window[cr] == b'\r' && window.get(cr + 1) == Some(&b'\n') => {
            Ok(Status::Complete(Line {
                content_len: cr,
                total_len: cr + 2,
            }))
        }
        Some(lf) if window[lf] == b'\n' => {
            if allow_bare_lf {
                Ok(Status::Complete(Line {
                    content_len: lf,
                    total_len: lf + 1,
                }))
            } else {
                Err(Error::at(ErrorKind::BareLf, lf, lf + 1))
            }
        }
        Some(bad) => {
            // NUL, or CR not followed by LF (or CR last in the window): decide
            // once the line's LF is in; report the first offending byte.
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
        None => too_long_or_partial(buf, max_len),
    }
}

/// Position of the first byte <= 13 (NUL, TAB, LF, CR and other controls).
#[inline(always)]
fn first_control(window: &[u8]) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while i + 16 <= window.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; `i + 16 <= len`
            // keeps the unaligned load inside `window`.
            let mask = unsafe {
                let v = _mm_loadu_si128(window.as_ptr().add(i) as *const __m128i);
                // min(v, 13) == v exactly for the bytes <= 13.
                _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(13)), v))
            };
            if mask != 0 {
                return Some(i + mask.trailing_zeros() as usize);
            }
            i += 16;
        }
    }
    window[i..].iter().position(|&b| b <= 13).map(|p| p + i)
}

/// No LF within the window: wait for more, or report the over-long line.
fn too_long_or_partial(buf: &[u8], max_len: usize) -> Result<Status<Line>, Error> {
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
