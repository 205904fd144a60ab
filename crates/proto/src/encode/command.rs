//! Command writers: [`write_command`] for any [`Command`] and direct
//! helpers for the client's common commands.

use super::{put_clean, put_u64, CRLF};
use crate::{Body, Command, MailParams, Notify, RcptParams, Ret};

/// Writes `<path>`.
#[inline]
fn put_path(out: &mut Vec<u8>, path: &str) {
    out.push(b'<');
    put_clean(out, path.as_bytes());
    out.push(b'>');
}

/// Writes `VERB arg\r\n`.
#[inline]
fn put_verb_arg(out: &mut Vec<u8>, verb: &[u8], arg: &str) {
    out.reserve(verb.len() + arg.len() + 3);
    put_verb(out, verb, arg.as_bytes());
    out.extend_from_slice(CRLF);
}

/// Writes `VERB arg` without the CRLF.
#[inline]
fn put_verb(out: &mut Vec<u8>, verb: &[u8], arg: &[u8]) {
    out.extend_from_slice(verb);
    out.push(b' ');
    put_clean(out, arg);
}

fn put_param(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.push(b' ');
    out.extend_from_slice(key);
    put_clean(out, value.as_bytes());
}

fn put_mail_params(out: &mut Vec<u8>, p: &MailParams<'_>) {
    put_size_body_utf8(out, p.size, p.body, p.smtputf8);
    if let Some(ret) = p.ret {
        out.extend_from_slice(match ret {
            Ret::Full => b" RET=FULL",
            Ret::Hdrs => b" RET=HDRS",
        });
    }
    if let Some(envid) = p.envid {
        put_param(out, b"ENVID=", envid);
    }
    if let Some(auth) = p.auth {
        put_param(out, b"AUTH=", auth);
    }
}

#[inline]
fn put_size_body_utf8(out: &mut Vec<u8>, size: Option<u64>, body: Option<Body>, smtputf8: bool) {
    if let Some(size) = size {
        out.extend_from_slice(b" SIZE=");
        put_u64(out, size);
    }
    if let Some(body) = body {
        out.extend_from_slice(match body {
            Body::SevenBit => b" BODY=7BIT".as_slice(),
            Body::EightBitMime => b" BODY=8BITMIME",
            Body::BinaryMime => b" BODY=BINARYMIME",
        });
    }
    if smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
}

/// `NOTIFY=NEVER` wins over the other flags (they exclude each other);
/// an empty set without `never` is not a valid value and is left out.
fn put_notify(out: &mut Vec<u8>, n: Notify) {
    if n.never {
        out.extend_from_slice(b" NOTIFY=NEVER");
        return;
    }
    let mut sep = b'=';
    for (on, word) in [
        (n.success, b"SUCCESS".as_slice()),
        (n.failure, b"FAILURE"),
        (n.delay, b"DELAY"),
    ] {
        if on {
            if sep == b'=' {
                out.extend_from_slice(b" NOTIFY");
            }
            out.push(sep);
            out.extend_from_slice(word);
            sep = b',';
        }
    }
}

fn put_rcpt_params(out: &mut Vec<u8>, p: &RcptParams<'_>) {
    if let Some(n) = p.notify {
        put_notify(out, n);
    }
    if let Some((kind, addr)) = p.orcpt {
        put_param(out, b"ORCPT=", kind);
        out.push(b';');
        put_clean(out, addr.as_bytes());
    }
}

/// Writes any [`Command`] with its CRLF. Parsing the output with
/// [`crate::parse_command`] gives the same command back (a MAIL/RCPT source
/// route, which the parser drops, is not written).
pub fn write_command(out: &mut Vec<u8>, cmd: &Command<'_>) {
    match *cmd {
        Command::Ehlo { domain } => put_verb_arg(out, b"EHLO", domain),
        Command::Helo { domain } => put_verb_arg(out, b"HELO", domain),
        Command::Lhlo { domain } => put_verb_arg(out, b"LHLO", domain),
        Command::Mail { from, ref params } => {
            out.extend_from_slice(b"MAIL FROM:");
            put_path(out, from.as_str());
            put_mail_params(out, params);
            out.extend_from_slice(CRLF);
        }
        Command::Rcpt { to, ref params } => {
            out.extend_from_slice(b"RCPT TO:");
            put_path(out, to.as_str());
            put_rcpt_params(out, params);
            out.extend_from_slice(CRLF);
        }
        Command::Data => write_data(out),
        Command::Bdat { size, last } => write_bdat(out, size, last),
        Command::Rset => write_rset(out),
        Command::Noop => write_noop(out),
        Command::Quit => write_quit(out),
        Command::Vrfy { arg } => put_verb_arg(out, b"VRFY", arg),
        Command::Expn { arg } => put_verb_arg(out, b"EXPN", arg),
        Command::Help { topic: None } => out.extend_from_slice(b"HELP\r\n"),
        Command::Help { topic: Some(t) } => put_verb_arg(out, b"HELP", t),
        Command::StartTls => out.extend_from_slice(b"STARTTLS\r\n"),
        Command::Auth {
            mechanism,
            initial_response,
        } => put_auth(out, mechanism, initial_response.map(str::as_bytes)),
        Command::Unknown { verb, args } => {
            put_clean(out, verb);
            if !args.is_empty() {
                out.push(b' ');
                put_clean(out, args);
            }
            out.extend_from_slice(CRLF);
        }
    }
}

/// Writes `AUTH mechanism[ initial-response]\r\n`; shared by
/// [`write_command`] and [`crate::sasl::write_auth`].
#[inline]
pub(crate) fn put_auth(out: &mut Vec<u8>, mechanism: &str, initial_response: Option<&[u8]>) {
    put_verb(out, b"AUTH", mechanism.as_bytes());
    if let Some(ir) = initial_response {
        out.push(b' ');
        // RFC 4954: `=` stands for an empty initial response.
        put_clean(out, if ir.is_empty() { b"=" } else { ir });
    }
    out.extend_from_slice(CRLF);
}

/// Writes `EHLO domain\r\n`.
pub fn write_ehlo(out: &mut Vec<u8>, domain: &str) {
    put_verb_arg(out, b"EHLO", domain);
}

/// Writes `LHLO domain\r\n` (LMTP, RFC 2033).
pub fn write_lhlo(out: &mut Vec<u8>, domain: &str) {
    put_verb_arg(out, b"LHLO", domain);
}

/// Writes `MAIL FROM:<from>` with the given parameters; `from` is the bare
/// address, `""` for the null reverse-path.
pub fn write_mail_from(
    out: &mut Vec<u8>,
    from: &str,
    size: Option<u64>,
    body: Option<Body>,
    smtputf8: bool,
) {
    out.reserve(from.len() + 64);
    out.extend_from_slice(b"MAIL FROM:");
    put_path(out, from);
    put_size_body_utf8(out, size, body, smtputf8);
    out.extend_from_slice(CRLF);
}

/// Writes `RCPT TO:<to>\r\n`; `to` is the bare address.
pub fn write_rcpt_to(out: &mut Vec<u8>, to: &str) {
    out.reserve(to.len() + 12);
    out.extend_from_slice(b"RCPT TO:");
    put_path(out, to);
    out.extend_from_slice(CRLF);
}

/// Writes `BDAT size[ LAST]\r\n` (RFC 3030).
pub fn write_bdat(out: &mut Vec<u8>, size: u64, last: bool) {
    out.extend_from_slice(b"BDAT ");
    put_u64(out, size);
    out.extend_from_slice(if last { b" LAST\r\n".as_slice() } else { CRLF });
}

/// Writes `DATA\r\n`.
pub fn write_data(out: &mut Vec<u8>) {
    out.extend_from_slice(b"DATA\r\n");
}

/// Writes `RSET\r\n`.
pub fn write_rset(out: &mut Vec<u8>) {
    out.extend_from_slice(b"RSET\r\n");
}

/// Writes `NOOP\r\n`.
pub fn write_noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"NOOP\r\n");
}

/// Writes `QUIT\r\n`.
pub fn write_quit(out: &mut Vec<u8>) {
    out.extend_from_slice(b"QUIT\r\n");
}
