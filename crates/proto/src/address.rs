//! Reverse-paths and forward-paths (RFC 5321 §4.1.2), borrowed from the input.

use crate::line::{ascii_str, class_masks, Src};
use crate::{Error, ErrorKind};

/// A mailbox `local@domain`, borrowed from the command line.
///
/// `local` keeps the quotes of a quoted local part; `domain` is empty for the
/// special `<Postmaster>` recipient; an address literal keeps its brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    raw: &'a str,
    at: usize,
    ascii: bool,
}

impl<'a> Address<'a> {
    /// The whole mailbox as sent (without angle brackets or source route).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The local part (quoted form kept).
    pub fn local(&self) -> &'a str {
        &self.raw[..self.at]
    }

    /// The domain, an address literal such as `[192.0.2.1]`, or empty for
    /// `Postmaster`.
    pub fn domain(&self) -> &'a str {
        self.raw.get(self.at + 1..).unwrap_or("")
    }

    /// `true` when the mailbox is pure ASCII (otherwise it needs SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.ascii
    }
}

/// A reverse-path or forward-path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    /// The null reverse-path `<>`.
    Null,
    /// A mailbox.
    Mailbox(Address<'a>),
}

impl<'a> Path<'a> {
    /// The mailbox text, or `""` for the null path.
    pub fn as_str(&self) -> &'a str {
        match self {
            Path::Null => "",
            Path::Mailbox(a) => a.as_str(),
        }
    }

    /// `true` for `<>`.
    pub fn is_null(&self) -> bool {
        matches!(self, Path::Null)
    }

    /// `true` unless the mailbox has non-ASCII bytes.
    pub fn is_ascii(&self) -> bool {
        match self {
            Path::Null => true,
            Path::Mailbox(a) => a.is_ascii(),
        }
    }
}

// Byte classes, looked up once per byte instead of chains of comparisons.
const ATEXT: u8 = 1; // RFC 5322 atext (dot-string characters other than '.')
const LDH: u8 = 2; // letters, digits, hyphen (domain labels)
const QTEXT: u8 = 4; // qtextSMTP: printable ASCII except '"' and '\'
const LITERAL: u8 = 8; // dtext inside an address literal
/// RFC 4422 SASL mechanism name characters (letters, digits, '-', '_').
pub(crate) const MECH: u8 = 16;
/// Base64 characters and '=' (SASL initial responses).
pub(crate) const BASE64: u8 = 32;

pub(crate) const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_alphanumeric() {
            v |= ATEXT | LDH;
        }
        if matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        ) {
            v |= ATEXT;
        }
        if c == b'-' {
            v |= LDH;
        }
        if c >= 32 && c <= 126 && c != b'"' && c != b'\\' {
            v |= QTEXT;
        }
        if c >= 33 && c <= 126 && c != b'[' && c != b']' && c != b'\\' {
            v |= LITERAL;
        }
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            v |= MECH;
        }
        if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=' {
            v |= BASE64;
        }
        // UTF-8 (RFC 6531): any non-ASCII byte may appear in local parts and
        // U-label domains; whether the sequence is valid UTF-8 is checked once.
        if c >= 0x80 {
            v |= ATEXT | LDH | QTEXT;
        }
        t[b] = v;
        b += 1;
    }
    t
};

#[inline]
fn is(class: u8, b: u8) -> bool {
    CLASS[b as usize] & class != 0
}

/// `true` when every byte of `s` is in `class`.
#[inline(always)]
pub(crate) fn all_of(class: u8, s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &c| ok & is(class, c))
}

/// Parses a mailbox `local@domain` (or `Postmaster` when `allow_postmaster`)
/// occupying all of `s`. `base` is the offset of `s` in the original input,
/// used for error offsets.
#[cfg(test)]
pub(crate) fn parse_mailbox(
    s: &[u8],
    base: usize,
    allow_postmaster: bool,
) -> Result<Address<'_>, Error> {
    parse_mailbox_in(s, base, false, allow_postmaster)
}

/// [`parse_mailbox`] for a slice of a line known to be all ASCII when
/// `line_ascii`.
#[inline(always)]
pub(crate) fn parse_mailbox_in(
    s: &[u8],
    base: usize,
    line_ascii: bool,
    allow_postmaster: bool,
) -> Result<Address<'_>, Error> {
    let bad = |at: usize| Error::at(ErrorKind::InvalidAddress, base + at, 0);
    let mut i = 0;
    if s.first() == Some(&b'"') {
        i = 1;
        loop {
            match s.get(i) {
                None => return Err(bad(i)),
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => match s.get(i + 1) {
                    Some(&c) if (32..=126).contains(&c) => i += 2,
                    _ => return Err(bad(i)),
                },
                Some(&c) if is(QTEXT, c) => i += 1,
                Some(_) => return Err(bad(i)),
            }
        }
    } else {
        // Dot-string: atoms separated by single dots.
        let mut atom_len = 0;
        while let Some(&c) = s.get(i) {
            if is(ATEXT, c) {
                atom_len += 1;
            } else if c == b'.' && atom_len > 0 {
                atom_len = 0;
            } else {
                break;
            }
            i += 1;
        }
        if atom_len == 0 {
            return Err(bad(i));
        }
    }
    let at = i;
    let ascii = line_ascii || s.is_ascii();
    if i == s.len() {
        // No domain: only the special Postmaster recipient (RFC 5321 §4.1.1.3).
        if allow_postmaster && s.eq_ignore_ascii_case(b"postmaster") {
            return Ok(Address {
                raw: as_str(s, base, ascii)?,
                at,
                ascii,
            });
        }
        return Err(bad(i));
    }
    if s[i] != b'@' {
        return Err(bad(i));
    }
    i += 1;
    let domain = &s[i..];
    if domain.first() == Some(&b'[') {
        // Address literal: [192.0.2.1], [IPv6:2001:db8::1] or General-address-literal.
        if domain.len() < 3 || domain[domain.len() - 1] != b']' {
            return Err(bad(s.len()));
        }
        if let Some(p) = domain[1..domain.len() - 1]
            .iter()
            .position(|&c| !is(LITERAL, c))
        {
            return Err(bad(i + 1 + p));
        }
    } else {
        check_domain(domain).map_err(|p| bad(i + p))?;
    }
    Ok(Address {
        raw: as_str(s, base, ascii)?,
        at,
        ascii,
    })
}

/// Checks a domain of dot-separated LDH labels (U-labels allowed); returns
/// the offset of the first offending byte.
#[inline(always)]
pub(crate) fn check_domain(d: &[u8]) -> Result<(), usize> {
    let mut label_len = 0;
    for (p, &c) in d.iter().enumerate() {
        if is(LDH, c) {
            label_len += 1;
        } else if c == b'.' && label_len > 0 {
            label_len = 0;
        } else {
            return Err(p);
        }
    }
    // Empty domain, or a trailing dot.
    if label_len == 0 {
        return Err(d.len());
    }
    Ok(())
}

#[inline(always)]
fn as_str(s: &[u8], base: usize, ascii: bool) -> Result<&str, Error> {
    if ascii {
        return Ok(ascii_str(s));
    }
    std::str::from_utf8(s)
        .map_err(|e| Error::at(ErrorKind::InvalidAddress, base + e.valid_up_to(), 0))
}

/// Parses `<path>` at the start of `s` (strict), returning the path and the
/// bytes it used. Source routes (`<@a,@b:user@c>`) are accepted and dropped.
#[cfg(test)]
pub(crate) fn parse_path(
    s: &[u8],
    base: usize,
    allow_postmaster: bool,
) -> Result<(Path<'_>, usize), Error> {
    let src = Src {
        buf: s,
        len: s.len(),
        ascii: false,
    };
    parse_path_in(src, 0, allow_postmaster).map_err(|mut e| {
        e.offset += base;
        e
    })
}

/// The common mailbox, `local@domain` of letters, digits, '-' and '.'
/// followed by '>' within 64 bytes, checked with bit masks: returns the
/// address and the position of its '>' (absolute), or `None` to take the
/// general path (which accepts every mailbox this does, with the same split).
#[inline(always)]
fn fast_mailbox(buf: &[u8], from: usize, end: usize) -> Option<(Address<'_>, usize)> {
    let n = (end - from).min(64);
    let [ok, dot, at, gt] = class_masks(buf, from, n, |v| {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::line::{eq, in_range, or};
            let letter = or(in_range(v, b'a', b'z'), in_range(v, b'A', b'Z'));
            let ldh = or(or(letter, in_range(v, b'0', b'9')), eq(v, b'-'));
            let (dot, at) = (eq(v, b'.'), eq(v, b'@'));
            [or(or(ldh, dot), at), dot, at, eq(v, b'>')]
        }
        #[cfg(not(target_arch = "x86_64"))]
        [v; 4]
    })?;
    let valid = if n == 64 { !0 } else { (1u64 << n) - 1 };
    let gt = gt & valid;
    if gt == 0 {
        return None;
    }
    let len = gt.trailing_zeros() as usize;
    let full = (1u64 << len) - 1;
    let at = at & full;
    // All bytes allowed, and exactly one '@' with something on both sides.
    if ok & full != full || at == 0 || at & (at - 1) != 0 {
        return None;
    }
    let a = at.trailing_zeros() as usize;
    if a == 0 || a + 1 >= len {
        return None;
    }
    // Dot-string local part and dotted domain: no dot first, last, next to
    // the '@' or next to another dot.
    let dots = dot & full;
    let edges = 1 | (1 << (len - 1)) | (1 << (a - 1)) | (1 << (a + 1));
    if dots & (dots >> 1) != 0 || dots & edges != 0 {
        return None;
    }
    let addr = Address {
        raw: ascii_str(&buf[from..from + len]),
        at: a,
        ascii: true,
    };
    Some((addr, from + len))
}

/// Parses `<path>` at `src.buf[from..src.len]` (strict), returning the path
/// and the bytes it used. Source routes (`<@a,@b:user@c>`) are accepted and
/// dropped. Error offsets are absolute.
#[inline(always)]
pub(crate) fn parse_path_in(
    src: Src<'_>,
    from: usize,
    allow_postmaster: bool,
) -> Result<(Path<'_>, usize), Error> {
    let s = src.bytes(from, src.len);
    let base = from;
    let bad = |at: usize| Error::at(ErrorKind::InvalidAddress, base + at, 0);
    if s.first() != Some(&b'<') {
        return Err(bad(0));
    }
    if s.get(1) == Some(&b'>') {
        return Ok((Path::Null, 2));
    }
    // Source route `@a,@b:` (RFC 5321 §4.1.2): accepted and dropped. It holds
    // no quotes, so the first ':' ends it.
    let mut start = 1;
    if s.get(1) == Some(&b'@') {
        let colon = memchr::memchr2(b':', b'>', &s[1..])
            .map(|p| p + 1)
            .filter(|&p| s[p] == b':')
            .ok_or_else(|| bad(1))?;
        for hop in s[1..colon].split(|&c| c == b',') {
            let ok = hop.len() > 1 && hop[0] == b'@' && check_domain(&hop[1..]).is_ok();
            if !ok {
                return Err(bad(1));
            }
        }
        start = colon + 1;
    }
    if start == 1 {
        if let Some((addr, close)) = fast_mailbox(src.buf, base + 1, src.len) {
            return Ok((Path::Mailbox(addr), close + 1 - base));
        }
    }
    // A quoted local part may contain '>': look for the bracket after it.
    let mut search_from = start;
    if s.get(start) == Some(&b'"') {
        let mut i = start + 1;
        while i < s.len() && s[i] != b'"' {
            i += if s[i] == b'\\' { 2 } else { 1 };
        }
        search_from = i.min(s.len());
    }
    let close = src.find(base + search_from, src.len, b'>') - base;
    if close == s.len() {
        return Err(bad(s.len()));
    }
    let addr = parse_mailbox_in(&s[start..close], base + start, src.ascii, allow_postmaster)?;
    Ok((Path::Mailbox(addr), close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Result<Path<'_>, Error> {
        parse_path(s.as_bytes(), 0, true).map(|(p, n)| {
            assert_eq!(n, s.len());
            p
        })
    }

    #[test]
    fn mailbox_forms() {
        let Path::Mailbox(a) = path("<user@example.com>").unwrap() else {
            panic!()
        };
        assert_eq!((a.local(), a.domain()), ("user", "example.com"));
        assert!(path("<>").unwrap().is_null());
        let Path::Mailbox(a) = path("<\"john doe\"@example.com>").unwrap() else {
            panic!()
        };
        assert_eq!(a.local(), "\"john doe\"");
        let Path::Mailbox(a) = path("<\"a>b\"@x.org>").unwrap() else {
            panic!()
        };
        assert_eq!(a.local(), "\"a>b\"");
        let Path::Mailbox(a) = path("<@relay1.org,@relay2.org:u@x.org>").unwrap() else {
            panic!()
        };
        assert_eq!(a.as_str(), "u@x.org");
        let Path::Mailbox(a) = path("<@a.example:\"x>y\"@b.example>").unwrap() else {
            panic!()
        };
        assert_eq!(a.as_str(), "\"x>y\"@b.example");
        let Path::Mailbox(a) = path("<u@[192.0.2.1]>").unwrap() else {
            panic!()
        };
        assert_eq!(a.domain(), "[192.0.2.1]");
        let Path::Mailbox(a) = path("<u@[IPv6:2001:db8::1]>").unwrap() else {
            panic!()
        };
        assert_eq!(a.domain(), "[IPv6:2001:db8::1]");
        let Path::Mailbox(a) = path("<Postmaster>").unwrap() else {
            panic!()
        };
        assert_eq!(a.domain(), "");
        let Path::Mailbox(a) = path("<用户@例子.测试>").unwrap() else {
            panic!()
        };
        assert!(!a.is_ascii());
    }

    #[test]
    fn bad_mailboxes() {
        for s in [
            "<user>", "<@x>", "<a..b@x>", "<.a@x>", "<a@>", "<a@b..c>", "<a@[1.2>", "<a b@c>",
            "<a@b", "a@b",
        ] {
            assert!(path(s).is_err(), "{s} should fail");
        }
    }

    #[test]
    fn fast_mailbox_agrees_with_the_general_parser() {
        // Every mailbox of up to 6 bytes over the bytes that matter to the
        // fast path, followed by '>' and padding for the vector loads.
        let alphabet = [b'a', b'Z', b'0', b'-', b'.', b'@', b'_', b'>'];
        for len in 0..=6u32 {
            for mut code in 0..8usize.pow(len) {
                let mut s = Vec::new();
                for _ in 0..len {
                    s.push(alphabet[code % 8]);
                    code /= 8;
                }
                let mut buf = s.clone();
                buf.extend_from_slice(
                    b"> SIZE=1\r\n................................................................",
                );
                let end = s.len() + 8;
                let Some((fast, close)) = fast_mailbox(&buf, 0, end) else {
                    continue;
                };
                let gt = s.iter().position(|&c| c == b'>').unwrap_or(s.len());
                assert_eq!(close, gt, "{s:?}");
                let slow = parse_mailbox(&s[..gt], 0, false).expect("fast path accepted");
                assert_eq!(fast, slow, "{s:?}");
            }
        }
    }
}
