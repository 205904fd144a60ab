//! Client side: parsing server replies (RFC 5321 §4.2) with enhanced status
//! codes (RFC 3463, RFC 2034).

use std::fmt;

use crate::line::find_line;
use crate::{Error, ErrorKind, Status};

/// An enhanced status code `class.subject.detail` (RFC 3463), e.g. `2.1.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject, 0..=999.
    pub subject: u16,
    /// Detail, 0..=999.
    pub detail: u16,
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply, single- or multi-line. Borrows from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The three-digit reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code at the start of the first line's text
    /// (`d.ddd.ddd` followed by a space or the end of the line), when
    /// present and of the same class as `code`.
    pub enhanced: Option<EnhancedCode>,
    raw: &'a [u8],
    text: &'a [u8],
    line_count: usize,
}

impl<'a> Reply<'a> {
    /// Each line's text after the `250-`/`250 ` prefix, without its line
    /// terminator. Enhanced codes are not stripped.
    pub fn lines(&self) -> Lines<'a> {
        Lines {
            rest: self.raw,
            remaining: self.line_count,
        }
    }

    /// The first line's text with the enhanced status code (and the space
    /// after it) stripped.
    pub fn text(&self) -> &'a [u8] {
        self.text
    }

    /// The first digit of the code: 2, 3, 4 or 5.
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// `true` for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// `true` for 4xx replies (transient failure: retry later).
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// `true` for 5xx replies (permanent failure).
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// The whole reply as received, every line with its terminator.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Number of lines in the reply (at least 1).
    pub fn line_count(&self) -> usize {
        self.line_count
    }
}

/// Iterator over the lines of a [`Reply`], see [`Reply::lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The parser guaranteed every line ends in LF.
        let lf = memchr::memchr(b'\n', self.rest).unwrap_or(self.rest.len());
        let mut line = &self.rest[..lf];
        self.rest = self.rest.get(lf + 1..).unwrap_or(&[]);
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        Some(line.get(4..).unwrap_or(&[]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Lines<'_> {}

impl<'a> Lines<'a> {
    /// The lines not yet returned, as on the wire (each ending in LF).
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

fn malformed(offset: usize, consumed: usize) -> Error {
    Error::at(ErrorKind::MalformedReply, offset, consumed)
}

/// Checks the three code digits at the start of `line`; on failure returns
/// the offset of the first bad (or missing) byte.
#[inline]
fn parse_code(line: &[u8]) -> Result<u16, usize> {
    let digit = |i: usize| match line.get(i) {
        Some(&c) if c.wrapping_sub(b'0') <= 9 => Ok(u16::from(c - b'0')),
        _ => Err(i),
    };
    let first = digit(0)?;
    if !(2..=5).contains(&first) {
        return Err(0);
    }
    Ok(first * 100 + digit(1)? * 10 + digit(2)?)
}

/// Parses `d.ddd.ddd` followed by a space or the end of `text`. Returns the
/// code and the number of bytes to strip (the space included).
#[inline]
fn parse_enhanced(text: &[u8], class: u8) -> Option<(EnhancedCode, usize)> {
    // RFC 3463 classes are 2, 4 and 5 only; a 3xx reply carries none.
    if class == 3 || text.len() < 5 || text[0] != b'0' + class || text[1] != b'.' {
        return None;
    }
    // Reads 1..=3 digits from `i`; returns the value and the index after them.
    let number = |mut i: usize| -> Option<(u16, usize)> {
        let start = i;
        let mut n = 0u16;
        while i < text.len() && i - start < 3 {
            let d = text[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            n = n * 10 + u16::from(d);
            i += 1;
        }
        (i > start).then_some((n, i))
    };
    let (subject, i) = number(2)?;
    if text.get(i) != Some(&b'.') {
        return None;
    }
    let (detail, i) = number(i + 1)?;
    let used = match text.get(i) {
        None => i,
        Some(b' ') => i + 1,
        Some(_) => return None,
    };
    Some((
        EnhancedCode {
            class,
            subject,
            detail,
        },
        used,
    ))
}

/// Parses the first reply in `buf`.
///
/// Lines end in CRLF or, leniently, a bare LF; `max_line_len` counts the
/// terminator. Returns `Ok(Status::Partial)` until the final line (`250 text`
/// or a bare `250`) is complete, then the reply and the bytes it used.
///
/// Errors are reported as soon as the offending line is complete:
/// [`ErrorKind::MalformedReply`] for a bad code, a bad separator or codes
/// that differ between lines; [`ErrorKind::NulByte`] and
/// [`ErrorKind::BareCr`] for those bytes inside a line;
/// [`ErrorKind::LineTooLong`] as soon as `max_line_len` bytes are buffered
/// without a line end. [`Error::consumed`] covers everything up to the end of
/// the offending line (see [`Error::line_complete`]).
#[inline]
pub fn parse_reply(buf: &[u8], max_line_len: usize) -> Result<Status<(Reply<'_>, usize)>, Error> {
    let mut pos = 0;
    let mut code = 0;
    let mut line_count = 0;
    let mut first_len = 0;
    loop {
        let rest = &buf[pos..];
        let (content_len, total_len) = match next_line(rest, max_line_len) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(Status::Partial),
            Err(mut e) => {
                e.offset += pos;
                e.consumed += pos;
                return Err(e);
            }
        };
        let content = &rest[..content_len];
        let end = pos + total_len;
        if line_count == 0 {
            code = parse_code(content).map_err(|at| malformed(at, end))?;
            first_len = content_len;
        } else if content.len() < 3 || content[..3] != buf[..3] {
            // Report a non-digit where it is, otherwise the differing code.
            let at = parse_code(content).err().unwrap_or(0);
            return Err(malformed(pos + at, end));
        }
        line_count += 1;
        match content.get(3) {
            Some(b'-') => pos = end,
            None | Some(b' ') => {
                let text = buf.get(4..first_len).unwrap_or(&[]);
                let (enhanced, text) = match parse_enhanced(text, (code / 100) as u8) {
                    Some((e, used)) => (Some(e), &text[used..]),
                    None => (None, text),
                };
                return Ok(Status::Complete((
                    Reply {
                        code,
                        enhanced,
                        raw: &buf[..end],
                        text,
                        line_count,
                    },
                    end,
                )));
            }
            Some(_) => return Err(malformed(pos + 3, end)),
        }
    }
}

/// Finds the first LF, CR or NUL. Reply lines are mostly short, where a
/// plain loop beats the SIMD search's setup; longer ones go to memchr.
#[inline(always)]
fn find_special(s: &[u8]) -> Option<usize> {
    const SHORT: usize = 32;
    let head = &s[..s.len().min(SHORT)];
    for (i, &c) in head.iter().enumerate() {
        // Text bytes are above CR, so the common case costs one compare.
        if c <= b'\r' && (c == b'\n' || c == b'\r' || c == 0) {
            return Some(i);
        }
    }
    if s.len() <= SHORT {
        return None;
    }
    memchr::memchr3(b'\n', b'\r', 0, &s[SHORT..]).map(|p| p + SHORT)
}

/// Frames the first line of `rest`: `(content_len, total_len)`, or `None`
/// when it is incomplete. Same result as [`find_line`] with bare LF allowed,
/// but a clean line costs one scan instead of two.
#[inline(always)]
fn next_line(rest: &[u8], max_line_len: usize) -> Result<Option<(usize, usize)>, Error> {
    let window = &rest[..rest.len().min(max_line_len)];
    match find_special(window) {
        Some(p) if window[p] == b'\n' => return Ok(Some((p, p + 1))),
        Some(p) if window[p] == b'\r' && window.get(p + 1) == Some(&b'\n') => {
            return Ok(Some((p, p + 2)))
        }
        None if rest.len() < max_line_len => return Ok(None),
        // NUL, a CR not followed by LF, or no LF within the limit: let the
        // shared framing code pick the error (or wait for more input).
        _ => {}
    }
    Ok(match find_line(rest, max_line_len, true)? {
        Status::Complete(l) => Some((l.content_len, l.total_len)),
        Status::Partial => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_MAX_REPLY_LINE;

    fn parse(s: &[u8]) -> Result<Status<(Reply<'_>, usize)>, Error> {
        parse_reply(s, DEFAULT_MAX_REPLY_LINE)
    }

    fn complete(s: &[u8]) -> (Reply<'_>, usize) {
        match parse(s) {
            Ok(Status::Complete(r)) => r,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    fn ec(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        Some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }

    #[test]
    fn valid_replies() {
        type Case<'a> = (
            &'a [u8],
            u16,
            Option<EnhancedCode>,
            &'a [u8],
            &'a [&'a [u8]],
        );
        let cases: &[Case<'_>] = &[
            (b"250 2.1.0 Ok\r\n", 250, ec(2, 1, 0), b"Ok", &[b"2.1.0 Ok"]),
            (
                b"220 mx.example.com ESMTP\r\n",
                220,
                None,
                b"mx.example.com ESMTP",
                &[b"mx.example.com ESMTP"],
            ),
            (b"250\r\n", 250, None, b"", &[b""]),
            (b"250 \r\n", 250, None, b"", &[b""]),
            (
                b"354 End data with <CR><LF>.<CR><LF>\r\n",
                354,
                None,
                b"End data with <CR><LF>.<CR><LF>",
                &[b"End data with <CR><LF>.<CR><LF>"],
            ),
            (
                b"451 4.7.1 Try again later\n",
                451,
                ec(4, 7, 1),
                b"Try again later",
                &[b"4.7.1 Try again later"],
            ),
            (
                b"550 5.123.999 No\r\n",
                550,
                ec(5, 123, 999),
                b"No",
                &[b"5.123.999 No"],
            ),
            (b"250 2.0.0\r\n", 250, ec(2, 0, 0), b"", &[b"2.0.0"]),
            // Class must match the code.
            (
                b"250 5.1.1 odd\r\n",
                250,
                None,
                b"5.1.1 odd",
                &[b"5.1.1 odd"],
            ),
            // Too many digits, missing parts, no separator: plain text.
            (
                b"250 2.1000.0 x\r\n",
                250,
                None,
                b"2.1000.0 x",
                &[b"2.1000.0 x"],
            ),
            (b"250 2.1 x\r\n", 250, None, b"2.1 x", &[b"2.1 x"]),
            (b"250 2.1.0x\r\n", 250, None, b"2.1.0x", &[b"2.1.0x"]),
            (b"250 2..0 x\r\n", 250, None, b"2..0 x", &[b"2..0 x"]),
            (
                b"250-a\r\n250-b\r\n250 c\r\n",
                250,
                None,
                b"a",
                &[b"a", b"b", b"c"],
            ),
            (
                b"250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n",
                250,
                ec(2, 0, 0),
                b"a",
                &[b"2.0.0 a", b"2.0.0 b", b"2.0.0 c"],
            ),
            (b"250-a\n250-\r\n250\n", 250, None, b"a", &[b"a", b"", b""]),
        ];
        for &(input, code, enhanced, text, lines) in cases {
            let (r, n) = complete(input);
            let name = String::from_utf8_lossy(input);
            assert_eq!(n, input.len(), "{name}");
            assert_eq!(r.code, code, "{name}");
            assert_eq!(r.enhanced, enhanced, "{name}");
            assert_eq!(r.text(), text, "{name}");
            assert_eq!(r.lines().collect::<Vec<_>>(), lines, "{name}");
            assert_eq!(r.lines().len(), lines.len(), "{name}");
            assert_eq!(r.line_count(), lines.len(), "{name}");
            assert_eq!(r.raw(), input, "{name}");
        }
    }

    #[test]
    fn classes() {
        let (r, _) = complete(b"250 ok\r\n");
        assert!(r.is_positive() && !r.is_transient() && !r.is_permanent());
        assert_eq!(r.class(), 2);
        let (r, _) = complete(b"354 go\r\n");
        assert!(r.is_positive());
        let (r, _) = complete(b"421 bye\r\n");
        assert!(!r.is_positive() && r.is_transient() && !r.is_permanent());
        let (r, _) = complete(b"554 no\r\n");
        assert!(!r.is_positive() && !r.is_transient() && r.is_permanent());
        assert_eq!(r.class(), 5);
    }

    #[test]
    fn stops_after_first_reply() {
        let input = b"250 a\r\n354 b\r\n";
        let (r, n) = complete(input);
        assert_eq!((r.code, n), (250, 7));
        let (r, n) = complete(&input[n..]);
        assert_eq!((r.code, n), (354, 7));
    }

    #[test]
    fn malformed_replies() {
        // (input, kind, offset, consumed)
        let mr = ErrorKind::MalformedReply;
        let cases: &[(&[u8], ErrorKind, usize, usize)] = &[
            (b"X50 ok\r\n", mr, 0, 8),
            (b"2X0 ok\r\n", mr, 1, 8),
            (b"25X ok\r\n", mr, 2, 8),
            (b"25\r\n", mr, 2, 4),
            (b"\r\n", mr, 0, 2),
            (b"150 ok\r\n", mr, 0, 8),
            (b"650 ok\r\n", mr, 0, 8),
            (b"050 ok\r\n", mr, 0, 8),
            (b"250_ok\r\n", mr, 3, 8),
            (b"250-a\r\n251 b\r\n", mr, 7, 14),
            (b"250-a\r\n25x b\r\n", mr, 9, 14),
            (b"250-a\r\n25\r\n", mr, 9, 11),
            (b"250-a\r\n250+b\r\n", mr, 10, 14),
            (b"250-a\r\n250-b\r\n550 c\r\n", mr, 14, 21),
            (b"250 a\0b\r\n", ErrorKind::NulByte, 5, 9),
            (b"250-a\r\n250 \0\r\n", ErrorKind::NulByte, 11, 14),
            (b"250 a\rb\r\n", ErrorKind::BareCr, 5, 9),
        ];
        for &(input, kind, offset, consumed) in cases {
            let e = parse(input).unwrap_err();
            let name = String::from_utf8_lossy(input);
            assert_eq!(
                (e.kind, e.offset, e.consumed, e.line_complete),
                (kind, offset, consumed, true),
                "{name}"
            );
        }
    }

    #[test]
    fn errors_before_the_final_line_do_not_wait_for_it() {
        // The first line is already bad; the rest never arrives.
        assert!(parse(b"XYZ-a\r\n").is_err());
        assert!(parse(b"250-a\r\n350-b\r\n").is_err());
        assert!(parse(b"250-a\0\r\n").is_err());
    }

    #[test]
    fn line_too_long() {
        let mut long = b"250 ".to_vec();
        long.resize(600, b'x');
        let e = parse_reply(&long, 512).unwrap_err();
        assert_eq!(
            (e.kind, e.offset, e.consumed, e.line_complete),
            (ErrorKind::LineTooLong, 512, 600, false)
        );
        // On a later line: offsets are relative to the buffer start.
        let mut long = b"250-a\r\n250 ".to_vec();
        long.resize(600, b'x');
        long.extend_from_slice(b"\r\n");
        let e = parse_reply(&long, 512).unwrap_err();
        assert_eq!(
            (e.kind, e.offset, e.consumed, e.line_complete),
            (ErrorKind::LineTooLong, 7 + 512, 602, true)
        );
        // Exactly at the limit is fine.
        let mut ok = b"250 ".to_vec();
        ok.resize(510, b'x');
        ok.extend_from_slice(b"\r\n");
        assert!(parse_reply(&ok, 512).unwrap().is_complete());
        assert!(parse_reply(&ok[..511], 512).unwrap().is_partial());
    }

    const EHLO: &[u8] =
        b"250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n\
250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
250 CHUNKING\r\n";

    #[test]
    fn every_prefix_is_partial() {
        for input in [EHLO, b"250 2.1.0 Ok\r\n", b"250\r\n", b"220-a\n220 b\n"] {
            for n in 0..input.len() {
                assert_eq!(parse(&input[..n]), Ok(Status::Partial), "{n}");
            }
            assert_eq!(complete(input).1, input.len());
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        // Feed a stream of replies byte by byte as a client's read loop would.
        let mut stream = EHLO.to_vec();
        stream.extend_from_slice(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n");
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in &stream {
            buf.push(b);
            if let Status::Complete((r, n)) = parse(&buf).unwrap() {
                got.push((r.code, r.line_count()));
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, [(250, 11), (250, 1), (250, 1), (354, 1)]);
    }

    #[test]
    fn ehlo_lines() {
        let (r, _) = complete(EHLO);
        assert_eq!(r.line_count(), 11);
        assert_eq!(r.text(), b"mail.example.com");
        assert_eq!(r.lines().nth(2), Some(&b"SIZE 10240000"[..]));
        assert_eq!(r.lines().last(), Some(&b"CHUNKING"[..]));
    }

    #[test]
    fn fast_framing_agrees_with_find_line() {
        // Every string over a small alphabet, every limit, including lines
        // long enough to leave the short-line loop.
        let alphabet = [b'a', b'\r', b'\n', 0];
        let mut inputs: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = inputs
                .iter()
                .filter(|s| s.len() == inputs.last().map_or(0, Vec::len))
                .flat_map(|s| alphabet.iter().map(move |&c| [s.as_slice(), &[c]].concat()))
                .collect();
            inputs.extend(longer);
        }
        for s in &inputs {
            for pad in [0, 40] {
                let mut input = vec![b'x'; pad];
                input.extend_from_slice(s);
                for max in 1..pad + 9 {
                    let expected = find_line(&input, max, true)
                        .map(|st| st.complete().map(|l| (l.content_len, l.total_len)));
                    assert_eq!(next_line(&input, max), expected, "{input:?} {max}");
                }
            }
        }
    }

    #[test]
    fn enhanced_display() {
        assert_eq!(ec(4, 7, 1).unwrap().to_string(), "4.7.1");
        assert_eq!(ec(5, 123, 10).unwrap().to_string(), "5.123.10");
    }
}
