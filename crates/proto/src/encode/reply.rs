//! Reply writers: single and multi-line replies with enhanced codes.

use super::{has_line_break, put_clean, put_code, CRLF};

/// Writes one reply line; `last` selects the `250 ` or `250-` separator.
#[inline]
fn put_reply_line(out: &mut Vec<u8>, code: u16, last: bool, enhanced: Option<&str>, text: &[u8]) {
    out.reserve(8 + enhanced.map_or(0, |e| e.len() + 1) + text.len());
    put_code(out, code);
    let enhanced = enhanced.filter(|e| !e.is_empty());
    // A final line with no text at all is the bare code (`250\r\n`).
    if !last || enhanced.is_some() || !text.is_empty() {
        out.push(if last { b' ' } else { b'-' });
    }
    if let Some(e) = enhanced {
        put_clean(out, e.as_bytes());
        if !text.is_empty() {
            out.push(b' ');
        }
    }
    put_clean(out, text);
    out.extend_from_slice(CRLF);
}

/// Writes a reply. A `text` with line breaks (`\r\n` or `\n`; one trailing
/// break is ignored) becomes a multi-line reply (`250-a`, `250 b`); the
/// enhanced code, e.g. `Some("2.1.0")`, starts every line (RFC 2034).
/// Empty text gives a bare `250\r\n` (or `250 2.0.0\r\n`).
pub fn write_reply(out: &mut Vec<u8>, code: u16, enhanced: Option<&str>, text: &str) {
    let mut rest = text.as_bytes();
    if !has_line_break(rest) {
        put_reply_line(out, code, true, enhanced, rest);
        return;
    }
    rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    while let Some(lf) = memchr::memchr(b'\n', rest) {
        let line = &rest[..lf];
        put_reply_line(
            out,
            code,
            false,
            enhanced,
            line.strip_suffix(b"\r").unwrap_or(line),
        );
        rest = &rest[lf + 1..];
    }
    put_reply_line(out, code, true, enhanced, rest);
}

/// Writes a reply with one line per element of `lines` (an EHLO reply, for
/// instance); no lines gives a single bare-code line. CR and LF inside a
/// line are written as spaces.
pub fn write_reply_lines(out: &mut Vec<u8>, code: u16, enhanced: Option<&str>, lines: &[&str]) {
    match lines.split_last() {
        None => put_reply_line(out, code, true, enhanced, b""),
        Some((last, init)) => {
            for line in init {
                put_reply_line(out, code, false, enhanced, line.as_bytes());
            }
            put_reply_line(out, code, true, enhanced, last.as_bytes());
        }
    }
}
