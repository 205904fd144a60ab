//! MAIL FROM and RCPT TO parameters (RFC 1870, 6152, 3030, 6531, 3461, 4954).

use crate::verb::pack_upper;
use crate::{Error, ErrorKind};

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`
    SevenBit,
    /// `BODY=8BITMIME`
    EightBitMime,
    /// `BODY=BINARYMIME` (needs BDAT)
    BinaryMime,
}

/// `RET=` (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`
    Full,
    /// `RET=HDRS`
    Hdrs,
}

/// `NOTIFY=` flags (RFC 3461). `NEVER` is the empty set with `never` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `NOTIFY=NEVER`
    pub never: bool,
    /// `SUCCESS` requested
    pub success: bool,
    /// `FAILURE` requested
    pub failure: bool,
    /// `DELAY` requested
    pub delay: bool,
}

/// Parameters of `MAIL FROM`. Values borrow from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams<'a> {
    /// `SIZE=n` (RFC 1870)
    pub size: Option<u64>,
    /// `BODY=`
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531)
    pub smtputf8: bool,
    /// `RET=` (RFC 3461)
    pub ret: Option<Ret>,
    /// `ENVID=` xtext, undecoded (RFC 3461)
    pub envid: Option<&'a str>,
    /// `AUTH=` xtext mailbox or `<>`, undecoded (RFC 4954)
    pub auth: Option<&'a str>,
}

/// Parameters of `RCPT TO`. Values borrow from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParams<'a> {
    /// `NOTIFY=` (RFC 3461)
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext`: (address type, undecoded address)
    pub orcpt: Option<(&'a str, &'a str)>,
}

const SIZE: u64 = pack_upper(b"SIZE");
const BODY: u64 = pack_upper(b"BODY");
const SMTPUTF8: u64 = pack_upper(b"SMTPUTF8");
const RET: u64 = pack_upper(b"RET");
const ENVID: u64 = pack_upper(b"ENVID");
const AUTH: u64 = pack_upper(b"AUTH");
const NOTIFY: u64 = pack_upper(b"NOTIFY");
const ORCPT: u64 = pack_upper(b"ORCPT");

/// Splits `s` (the text after the path) into `(keyword, value, offset)` items.
/// Returns `Err(offset)` on an empty keyword.
#[inline(always)]
fn for_each_param<'a>(
    s: &'a [u8],
    base: usize,
    mut f: impl FnMut(u64, Option<&'a [u8]>, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b' ' {
            i += 1;
            continue;
        }
        let end = memchr::memchr(b' ', &s[i..]).map_or(s.len(), |p| i + p);
        let item = &s[i..end];
        let (key, value) = match memchr::memchr(b'=', item) {
            Some(eq) => (&item[..eq], Some(&item[eq + 1..])),
            None => (item, None),
        };
        if key.is_empty() || key.len() > 8 {
            return Err(Error::at(ErrorKind::UnknownParameter, base + i, 0));
        }
        f(pack_upper(key), value, base + i)?;
        i = end;
    }
    Ok(())
}

fn invalid(at: usize) -> Error {
    Error::at(ErrorKind::InvalidParameter, at, 0)
}

fn value_str(v: Option<&[u8]>, at: usize) -> Result<&str, Error> {
    match v {
        Some(v) if !v.is_empty() && v.iter().all(|&c| (33..=126).contains(&c)) => {
            std::str::from_utf8(v).map_err(|_| invalid(at))
        }
        _ => Err(invalid(at)),
    }
}

fn parse_number(v: Option<&[u8]>, at: usize) -> Result<u64, Error> {
    v.and_then(parse_decimal).ok_or(invalid(at))
}

/// A non-empty run of ASCII digits that fits in a `u64` (RFC 1870 allows 20
/// digits); `None` on anything else, including overflow.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

fn set_once<T>(slot: &mut Option<T>, v: T, at: usize) -> Result<(), Error> {
    if slot.is_some() {
        return Err(invalid(at));
    }
    *slot = Some(v);
    Ok(())
}

#[inline(always)]
pub(crate) fn parse_mail_params(s: &[u8], base: usize) -> Result<MailParams<'_>, Error> {
    let mut p = MailParams::default();
    for_each_param(s, base, |key, value, at| match key {
        SIZE => set_once(&mut p.size, parse_number(value, at)?, at),
        BODY => {
            let body = match value.map(pack_upper_value) {
                Some(v) if v == pack_upper(b"7BIT") => Body::SevenBit,
                Some(v) if v == pack_upper(b"8BITMIME") => Body::EightBitMime,
                Some(v) if v == pack_upper_long(b"BINARYMIME") => Body::BinaryMime,
                _ => return Err(invalid(at)),
            };
            set_once(&mut p.body, body, at)
        }
        SMTPUTF8 if value.is_none() && !p.smtputf8 => {
            p.smtputf8 = true;
            Ok(())
        }
        SMTPUTF8 => Err(invalid(at)),
        RET => {
            let ret = match value.map(pack_upper_value) {
                Some(v) if v == pack_upper(b"FULL") => Ret::Full,
                Some(v) if v == pack_upper(b"HDRS") => Ret::Hdrs,
                _ => return Err(invalid(at)),
            };
            set_once(&mut p.ret, ret, at)
        }
        ENVID => set_once(&mut p.envid, value_str(value, at)?, at),
        AUTH => set_once(&mut p.auth, value_str(value, at)?, at),
        _ => Err(Error::at(ErrorKind::UnknownParameter, at, 0)),
    })?;
    Ok(p)
}

#[inline(always)]
pub(crate) fn parse_rcpt_params(s: &[u8], base: usize) -> Result<RcptParams<'_>, Error> {
    let mut p = RcptParams::default();
    for_each_param(s, base, |key, value, at| match key {
        NOTIFY => {
            let v = value.ok_or(invalid(at))?;
            let mut n = Notify::default();
            for word in v.split(|&c| c == b',') {
                match pack_upper_value(word) {
                    w if w == pack_upper(b"NEVER") => n.never = true,
                    w if w == pack_upper(b"SUCCESS") => n.success = true,
                    w if w == pack_upper(b"FAILURE") => n.failure = true,
                    w if w == pack_upper(b"DELAY") => n.delay = true,
                    _ => return Err(invalid(at)),
                }
            }
            // NEVER excludes the others (RFC 3461 §4.1).
            if n.never && (n.success || n.failure || n.delay) {
                return Err(invalid(at));
            }
            set_once(&mut p.notify, n, at)
        }
        ORCPT => {
            let v = value_str(value, at)?;
            let semi = v.find(';').ok_or(invalid(at))?;
            if semi == 0 || semi + 1 == v.len() {
                return Err(invalid(at));
            }
            set_once(&mut p.orcpt, (&v[..semi], &v[semi + 1..]), at)
        }
        _ => Err(Error::at(ErrorKind::UnknownParameter, at, 0)),
    })?;
    Ok(p)
}

/// Packs a value of up to 8 bytes for comparison; longer values map to 0,
/// which matches no keyword.
fn pack_upper_value(v: &[u8]) -> u64 {
    if v.len() > 8 {
        // Only BINARYMIME is longer than 8; compare it by its own packing.
        return pack_upper_long(v);
    }
    pack_upper(v)
}

/// A packing for values longer than 8 bytes (first 8 bytes mixed with the
/// rest and the length), distinct from any short packing because its top
/// bit is forced on.
const fn pack_upper_long(v: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < v.len() {
        h ^= v[i].to_ascii_uppercase() as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h | (1 << 63)
}
