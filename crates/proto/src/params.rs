//! MAIL FROM and RCPT TO parameters (RFC 1870, 6152, 3030, 6531, 3461, 4954).

use crate::line::{ascii_str, find_outside, Src};
use crate::verb::{load_key, pack_upper};
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

/// Splits `src.buf[from..src.len]` (the text after the path) into
/// `(keyword, value, offset)` items; a value is its absolute byte range.
/// Returns an error on an empty or over-long keyword.
#[inline(always)]
fn for_each_param<'a>(
    src: Src<'a>,
    from: usize,
    mut f: impl FnMut(u64, Option<(usize, usize)>, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let end = src.len;
    let mut i = from;
    while i < end {
        if src.buf[i] == b' ' {
            i += 1;
            continue;
        }
        let item_end = src.find(i, end, b' ');
        let eq = src.find(i, item_end, b'=');
        let key_len = eq - i;
        if key_len == 0 || key_len > 8 {
            return Err(unknown(i));
        }
        let value = if eq < item_end {
            Some((eq + 1, item_end))
        } else {
            None
        };
        f(load_key(src.buf, i, key_len), value, i)?;
        i = item_end;
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn invalid(at: usize) -> Error {
    Error::at(ErrorKind::InvalidParameter, at, 0)
}

#[cold]
#[inline(never)]
fn unknown(at: usize) -> Error {
    Error::at(ErrorKind::UnknownParameter, at, 0)
}

/// A non-empty value of printable ASCII without spaces.
#[inline(always)]
fn value_str(src: Src<'_>, v: Option<(usize, usize)>, at: usize) -> Result<&str, Error> {
    match v {
        Some((from, to)) if from < to && find_outside(src.buf, from, to, 33, 126) == to - from => {
            Ok(ascii_str(src.bytes(from, to)))
        }
        _ => Err(invalid(at)),
    }
}

#[inline(always)]
fn parse_number(src: Src<'_>, v: Option<(usize, usize)>, at: usize) -> Result<u64, Error> {
    v.and_then(|(from, to)| parse_decimal(src.bytes(from, to)))
        .ok_or_else(|| invalid(at))
}

/// A non-empty run of ASCII digits that fits in a `u64` (RFC 1870 allows 20
/// digits); `None` on anything else, including overflow.
#[inline]
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    if digits.len() <= 19 {
        // Cannot overflow: at most 10^19 - 1 < 2^64.
        let mut n = 0u64;
        for &c in digits {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + u64::from(d);
        }
        return Some(n);
    }
    digits.iter().try_fold(0u64, |n, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

#[inline(always)]
fn set_once<T>(slot: &mut Option<T>, v: T, at: usize) -> Result<(), Error> {
    if slot.is_some() {
        return Err(invalid(at));
    }
    *slot = Some(v);
    Ok(())
}

/// The packed value (as [`load_key`]), or 0 for a missing or long value.
#[inline(always)]
fn value_key(src: Src<'_>, v: Option<(usize, usize)>) -> u64 {
    match v {
        Some((from, to)) => load_key(src.buf, from, to - from),
        None => 0,
    }
}

const V_7BIT: u64 = pack_upper(b"7BIT");
const V_8BITMIME: u64 = pack_upper(b"8BITMIME");
const V_FULL: u64 = pack_upper(b"FULL");
const V_HDRS: u64 = pack_upper(b"HDRS");
const V_NEVER: u64 = pack_upper(b"NEVER");
const V_SUCCESS: u64 = pack_upper(b"SUCCESS");
const V_FAILURE: u64 = pack_upper(b"FAILURE");
const V_DELAY: u64 = pack_upper(b"DELAY");

#[inline(always)]
pub(crate) fn parse_mail_params(src: Src<'_>, from: usize) -> Result<MailParams<'_>, Error> {
    let mut p = MailParams::default();
    for_each_param(src, from, |key, value, at| match key {
        SIZE => set_once(&mut p.size, parse_number(src, value, at)?, at),
        BODY => {
            let body = match value_key(src, value) {
                V_7BIT => Body::SevenBit,
                V_8BITMIME => Body::EightBitMime,
                _ => match value {
                    Some((from, to)) if src.bytes(from, to).eq_ignore_ascii_case(b"BINARYMIME") => {
                        Body::BinaryMime
                    }
                    _ => return Err(invalid(at)),
                },
            };
            set_once(&mut p.body, body, at)
        }
        SMTPUTF8 if value.is_none() && !p.smtputf8 => {
            p.smtputf8 = true;
            Ok(())
        }
        SMTPUTF8 => Err(invalid(at)),
        RET => {
            let ret = match value_key(src, value) {
                V_FULL => Ret::Full,
                V_HDRS => Ret::Hdrs,
                _ => return Err(invalid(at)),
            };
            set_once(&mut p.ret, ret, at)
        }
        ENVID => set_once(&mut p.envid, value_str(src, value, at)?, at),
        AUTH => set_once(&mut p.auth, value_str(src, value, at)?, at),
        _ => Err(unknown(at)),
    })?;
    Ok(p)
}

#[inline(always)]
pub(crate) fn parse_rcpt_params(src: Src<'_>, from: usize) -> Result<RcptParams<'_>, Error> {
    let mut p = RcptParams::default();
    for_each_param(src, from, |key, value, at| match key {
        NOTIFY => {
            let (mut w, to) = value.ok_or_else(|| invalid(at))?;
            // Flags as bits while parsing: NEVER, SUCCESS, FAILURE, DELAY.
            let mut bits = 0u8;
            loop {
                let comma = src.find(w, to, b',');
                bits |= match load_key(src.buf, w, comma - w) {
                    V_NEVER => 1,
                    V_SUCCESS => 2,
                    V_FAILURE => 4,
                    V_DELAY => 8,
                    _ => return Err(invalid(at)),
                };
                if comma == to {
                    break;
                }
                w = comma + 1;
            }
            // NEVER excludes the others (RFC 3461 §4.1).
            if bits & 1 != 0 && bits != 1 {
                return Err(invalid(at));
            }
            let n = Notify {
                never: bits & 1 != 0,
                success: bits & 2 != 0,
                failure: bits & 4 != 0,
                delay: bits & 8 != 0,
            };
            set_once(&mut p.notify, n, at)
        }
        ORCPT => {
            let v = value_str(src, value, at)?;
            let (from, to) = value.unwrap_or_default();
            let semi = src.find(from, to, b';') - from;
            if semi == 0 || semi >= v.len() - 1 {
                return Err(invalid(at));
            }
            set_once(&mut p.orcpt, (&v[..semi], &v[semi + 1..]), at)
        }
        _ => Err(unknown(at)),
    })?;
    Ok(p)
}
