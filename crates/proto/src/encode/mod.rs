//! Encoders appending replies, commands and dot-stuffed DATA bodies to a
//! caller's `Vec<u8>`. No allocation beyond growing that vector.
//!
//! Text arguments never break the line structure: a CR or LF inside a reply
//! line, a command argument or a parameter value is written as a space, so
//! untrusted strings cannot inject extra commands or reply lines.

mod command;
mod dot;
mod reply;
#[cfg(test)]
mod tests;

pub(crate) use command::put_auth;
pub use command::{
    write_bdat, write_command, write_data, write_ehlo, write_lhlo, write_mail_from, write_noop,
    write_quit, write_rcpt_to, write_rset,
};
pub use dot::DotStuffer;
pub use reply::{write_reply, write_reply_lines};

const CRLF: &[u8] = b"\r\n";

/// `true` when `s` holds a CR or LF. Arguments are mostly short, where a
/// plain loop beats the SIMD search's setup.
#[inline]
fn has_line_break(s: &[u8]) -> bool {
    if s.len() < 32 {
        s.iter().any(|&c| c == b'\r' || c == b'\n')
    } else {
        memchr::memchr2(b'\r', b'\n', s).is_some()
    }
}

/// Appends `s`, writing each CR or LF as a space.
#[inline]
fn put_clean(out: &mut Vec<u8>, mut s: &[u8]) {
    if !has_line_break(s) {
        out.extend_from_slice(s);
        return;
    }
    while let Some(p) = memchr::memchr2(b'\r', b'\n', s) {
        out.extend_from_slice(&s[..p]);
        out.push(b' ');
        s = &s[p + 1..];
    }
    out.extend_from_slice(s);
}

/// Appends `n` in decimal.
#[inline]
fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a three-digit reply code.
#[inline]
fn put_code(out: &mut Vec<u8>, code: u16) {
    debug_assert!((200..=599).contains(&code), "reply code {code}");
    out.extend_from_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
}
