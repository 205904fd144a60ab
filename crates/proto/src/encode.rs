//! Encoders appending replies, commands and dot-stuffed DATA bodies to a
//! caller's `Vec<u8>`. No allocation beyond growing that vector.
//!
//! Text arguments never break the line structure: a CR or LF inside a reply
//! line, a command argument or a parameter value is written as a space, so
//! untrusted strings cannot inject extra commands or reply lines.

use crate::{Body, Command, MailParams, Notify, RcptParams, Ret};

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
    out.extend_from_slice(verb);
    out.push(b' ');
    put_clean(out, arg.as_bytes());
    out.extend_from_slice(CRLF);
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
        } => match initial_response {
            None => put_verb_arg(out, b"AUTH", mechanism),
            Some(ir) => {
                out.extend_from_slice(b"AUTH ");
                put_clean(out, mechanism.as_bytes());
                out.push(b' ');
                // RFC 4954: `=` stands for an empty initial response.
                put_clean(out, if ir.is_empty() { b"=" } else { ir.as_bytes() });
                out.extend_from_slice(CRLF);
            }
        },
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

/// Streaming DATA body encoder (RFC 5321 §4.5.2).
///
/// Normalises line breaks to CRLF (a bare LF or a bare CR becomes CRLF),
/// doubles a `.` at the start of every line, and [`DotStuffer::finish`]
/// ends the body with `CRLF.CRLF`. The output does not depend on how the
/// body is split across [`DotStuffer::push`] calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DotStuffer {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The last byte pushed was a CR whose line break is not yet written,
    /// because an LF in the next chunk would belong to it.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a body.
    pub fn new() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Encodes `body` completely (push then finish) into `out`.
    pub fn encode(body: &[u8], out: &mut Vec<u8>) {
        let mut s = DotStuffer::new();
        s.push(body, out);
        s.finish(out);
    }

    /// Encodes the next `chunk` of the body into `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        // Room for the chunk plus a little stuffing; more is grown on demand.
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        let mut i = 0;
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(CRLF);
            self.at_line_start = true;
            if chunk[0] == b'\n' {
                i = 1;
            }
        }
        while i < chunk.len() {
            if self.at_line_start && chunk[i] == b'.' {
                out.push(b'.');
            }
            let rest = &chunk[i..];
            let Some(p) = memchr::memchr2(b'\r', b'\n', rest) else {
                out.extend_from_slice(rest);
                self.at_line_start = false;
                return;
            };
            out.extend_from_slice(&rest[..p]);
            let brk = i + p;
            if chunk[brk] == b'\r' {
                match chunk.get(brk + 1) {
                    // The LF may come in the next chunk: decide then.
                    None => {
                        self.pending_cr = true;
                        return;
                    }
                    Some(b'\n') => i = brk + 2,
                    Some(_) => i = brk + 1,
                }
            } else {
                i = brk + 1;
            }
            out.extend_from_slice(CRLF);
            self.at_line_start = true;
        }
    }

    /// Ends the body: a final line break if it lacks one, then `.\r\n`.
    /// The stuffer is then ready for a new body.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(CRLF);
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::parse_mailbox;
    use crate::reply::parse_reply;
    use crate::{parse_command, ParserConfig, Path, Status, DEFAULT_MAX_REPLY_LINE};

    fn mailbox(s: &str) -> Path<'_> {
        Path::Mailbox(parse_mailbox(s.as_bytes(), 0, true).unwrap())
    }

    fn encode(cmd: &Command<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write_command(&mut out, cmd);
        out
    }

    #[test]
    fn every_command_round_trips() {
        let cmds = [
            Command::Ehlo {
                domain: "client.example.com",
            },
            Command::Ehlo {
                domain: "[192.0.2.1]",
            },
            Command::Helo {
                domain: "client.example.com",
            },
            Command::Lhlo {
                domain: "lmtp.example",
            },
            Command::Mail {
                from: Path::Null,
                params: MailParams::default(),
            },
            Command::Mail {
                from: mailbox("a@b.example"),
                params: MailParams {
                    size: Some(1_234_567),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ret: Some(Ret::Hdrs),
                    envid: Some("QQ314159"),
                    auth: Some("<>"),
                },
            },
            Command::Mail {
                from: mailbox("用户@例子.测试"),
                params: MailParams {
                    size: Some(0),
                    body: Some(Body::BinaryMime),
                    smtputf8: true,
                    ret: Some(Ret::Full),
                    envid: None,
                    auth: Some("e+3Dmc2@example.com"),
                },
            },
            Command::Mail {
                from: mailbox("\"john doe\"@x.org"),
                params: MailParams {
                    body: Some(Body::SevenBit),
                    size: Some(u64::from(u32::MAX) * 1000),
                    ..MailParams::default()
                },
            },
            Command::Rcpt {
                to: mailbox("c@d.example"),
                params: RcptParams::default(),
            },
            Command::Rcpt {
                to: mailbox("Postmaster"),
                params: RcptParams {
                    notify: Some(Notify {
                        never: true,
                        ..Notify::default()
                    }),
                    orcpt: Some(("rfc822", "c@d.example")),
                },
            },
            Command::Rcpt {
                to: mailbox("c@[IPv6:2001:db8::1]"),
                params: RcptParams {
                    notify: Some(Notify {
                        never: false,
                        success: true,
                        failure: true,
                        delay: true,
                    }),
                    orcpt: None,
                },
            },
            Command::Rcpt {
                to: mailbox("c@d.example"),
                params: RcptParams {
                    notify: Some(Notify {
                        delay: true,
                        ..Notify::default()
                    }),
                    orcpt: None,
                },
            },
            Command::Data,
            Command::Bdat {
                size: 0,
                last: true,
            },
            Command::Bdat {
                size: 9_999_999_999,
                last: false,
            },
            Command::Rset,
            Command::Noop,
            Command::Quit,
            Command::Vrfy { arg: "postmaster" },
            Command::Expn { arg: "list-name" },
            Command::Help { topic: None },
            Command::Help {
                topic: Some("MAIL"),
            },
            Command::StartTls,
            Command::Auth {
                mechanism: "PLAIN",
                initial_response: None,
            },
            Command::Auth {
                mechanism: "PLAIN",
                initial_response: Some(""),
            },
            Command::Auth {
                mechanism: "CRAM-MD5",
                initial_response: Some("AGFsaWNlAHNlY3JldA=="),
            },
            Command::Unknown {
                verb: b"XCLIENT",
                args: b"NAME=foo ADDR=1.2.3.4",
            },
            Command::Unknown {
                verb: b"FOO",
                args: b"",
            },
        ];
        for cmd in &cmds {
            let out = encode(cmd);
            let parsed = parse_command(&out, &ParserConfig::strict(512));
            assert_eq!(
                parsed,
                Ok(Status::Complete((*cmd, out.len()))),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn exact_command_bytes() {
        let cases: [(Command<'_>, &[u8]); 5] = [
            (
                Command::Auth {
                    mechanism: "PLAIN",
                    initial_response: Some(""),
                },
                b"AUTH PLAIN =\r\n",
            ),
            (
                Command::Bdat {
                    size: 42,
                    last: true,
                },
                b"BDAT 42 LAST\r\n",
            ),
            (
                Command::Rcpt {
                    to: mailbox("a@b.c"),
                    params: RcptParams {
                        notify: Some(Notify {
                            never: false,
                            success: true,
                            failure: false,
                            delay: true,
                        }),
                        orcpt: Some(("rfc822", "a@b.c")),
                    },
                },
                b"RCPT TO:<a@b.c> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@b.c\r\n",
            ),
            (
                Command::Mail {
                    from: Path::Null,
                    params: MailParams {
                        size: Some(10),
                        body: Some(Body::SevenBit),
                        smtputf8: false,
                        ret: Some(Ret::Full),
                        envid: Some("x"),
                        auth: Some("<>"),
                    },
                },
                b"MAIL FROM:<> SIZE=10 BODY=7BIT RET=FULL ENVID=x AUTH=<>\r\n",
            ),
            (Command::Vrfy { arg: "a\r\nQUIT" }, b"VRFY a  QUIT\r\n"),
        ];
        for (cmd, bytes) in cases {
            assert_eq!(encode(&cmd), bytes, "{cmd:?}");
        }
    }

    #[test]
    fn direct_helpers() {
        let mut out = Vec::new();
        write_ehlo(&mut out, "blast.example");
        write_lhlo(&mut out, "blast.example");
        write_mail_from(
            &mut out,
            "a@b.example",
            Some(1000),
            Some(Body::EightBitMime),
            false,
        );
        write_mail_from(&mut out, "", None, None, false);
        write_mail_from(&mut out, "a@b.example", None, Some(Body::BinaryMime), true);
        write_rcpt_to(&mut out, "c@d.example");
        write_bdat(&mut out, 0, false);
        write_bdat(&mut out, 9_999_999_999_999_999_999, true);
        write_data(&mut out);
        write_rset(&mut out);
        write_noop(&mut out);
        write_quit(&mut out);
        let expected: &[u8] = b"EHLO blast.example\r\nLHLO blast.example\r\n\
MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME\r\nMAIL FROM:<>\r\n\
MAIL FROM:<a@b.example> BODY=BINARYMIME SMTPUTF8\r\nRCPT TO:<c@d.example>\r\n\
BDAT 0\r\nBDAT 9999999999999999999 LAST\r\nDATA\r\nRSET\r\nNOOP\r\nQUIT\r\n";
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected)
        );
        // And each line parses back.
        let mut buf = &out[..];
        while !buf.is_empty() {
            let (_, n) = parse_command(buf, &ParserConfig::strict(512))
                .unwrap()
                .complete()
                .unwrap();
            buf = &buf[n..];
        }
    }

    #[test]
    fn put_u64_digits() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            put_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    fn reply(code: u16, enhanced: Option<&str>, text: &str) -> String {
        let mut out = Vec::new();
        write_reply(&mut out, code, enhanced, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reply_bytes() {
        let cases: &[(u16, Option<&str>, &str, &str)] = &[
            (250, Some("2.1.0"), "Ok", "250 2.1.0 Ok\r\n"),
            (250, None, "Ok", "250 Ok\r\n"),
            (250, None, "", "250\r\n"),
            (250, Some(""), "", "250\r\n"),
            (250, Some("2.0.0"), "", "250 2.0.0\r\n"),
            (
                354,
                None,
                "End data with <CR><LF>.<CR><LF>",
                "354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            (250, None, "a\nb\r\nc", "250-a\r\n250-b\r\n250 c\r\n"),
            (250, None, "a\n", "250 a\r\n"),
            (250, None, "a\r\n", "250 a\r\n"),
            (250, None, "a\n\nb", "250-a\r\n250-\r\n250 b\r\n"),
            (250, None, "\n", "250\r\n"),
            (
                550,
                Some("5.1.1"),
                "No such user\nhere",
                "550-5.1.1 No such user\r\n550 5.1.1 here\r\n",
            ),
            (451, None, "a\rb", "451 a b\r\n"),
        ];
        for &(code, enhanced, text, expected) in cases {
            assert_eq!(reply(code, enhanced, text), expected, "{text:?}");
        }
        let mut out = Vec::new();
        write_reply_lines(
            &mut out,
            250,
            None,
            &["mx.example", "PIPELINING", "SIZE 1000", "BAD\r\nLINE"],
        );
        assert_eq!(
            out,
            b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 BAD  LINE\r\n"
        );
        out.clear();
        write_reply_lines(&mut out, 250, Some("2.0.0"), &[]);
        assert_eq!(out, b"250 2.0.0\r\n");
    }

    #[test]
    fn replies_round_trip() {
        let cases: &[(u16, Option<&str>, &str)] = &[
            (250, Some("2.1.0"), "Ok"),
            (250, Some("2.0.0"), ""),
            (221, None, "Bye"),
            (250, None, ""),
            (451, Some("4.7.1"), "Greylisted, try again\nin 5 minutes"),
            (550, Some("5.7.1"), "a\nb\nc\nd"),
            (354, None, "Go ahead"),
        ];
        for &(code, enhanced, text) in cases {
            let mut out = Vec::new();
            write_reply(&mut out, code, enhanced, text);
            let (r, n) = parse_reply(&out, DEFAULT_MAX_REPLY_LINE)
                .unwrap()
                .complete()
                .unwrap();
            assert_eq!(n, out.len());
            assert_eq!(r.code, code);
            assert_eq!(r.enhanced.map(|e| e.to_string()).as_deref(), enhanced);
            let first = text.split('\n').next().unwrap_or("");
            assert_eq!(r.text(), first.as_bytes());
            assert_eq!(r.line_count(), text.split('\n').count());
        }
        let lines = ["mx.example", "PIPELINING", "SIZE 1000", "8BITMIME"];
        let mut out = Vec::new();
        write_reply_lines(&mut out, 250, None, &lines);
        let (r, _) = parse_reply(&out, DEFAULT_MAX_REPLY_LINE)
            .unwrap()
            .complete()
            .unwrap();
        assert!(r.lines().eq(lines.iter().map(|l| l.as_bytes())));
    }

    fn stuff(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        DotStuffer::encode(body, &mut out);
        out
    }

    #[test]
    fn dot_stuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".a\r\n.b\r\n", b"..a\r\n..b\r\n.\r\n"),
            (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a.b\r\nc.\r\n", b"a.b\r\nc.\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
            (b"a\r\rb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"\n.\n", b"\r\n..\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
            (b"\r.x", b"\r\n..x\r\n.\r\n"),
            (b"..", b"...\r\n.\r\n"),
        ];
        for &(body, expected) in cases {
            assert_eq!(
                String::from_utf8_lossy(&stuff(body)),
                String::from_utf8_lossy(expected),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn dot_stuffing_is_split_invariant() {
        let body: &[u8] = b".start\r\nline\n.dot\r.cr\r\n\r\n..\r\rend.\r";
        let whole = stuff(body);
        // Every split into two and into three pieces, plus one byte at a time.
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let mut s = DotStuffer::new();
                let mut out = Vec::new();
                s.push(&body[..i], &mut out);
                s.push(&body[i..j], &mut out);
                s.push(&body[j..], &mut out);
                s.finish(&mut out);
                assert_eq!(out, whole, "split at {i},{j}");
            }
        }
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for b in body {
            s.push(std::slice::from_ref(b), &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, whole);
    }

    #[test]
    fn dot_stuffed_output_is_clean() {
        // No bare CR or LF and no line starting with a lone '.' before the end.
        let out = stuff(b"x\r\r\n\n.\r.\n\r\n.\r\n\rabc\n..\n.");
        let body = out.strip_suffix(b".\r\n").unwrap();
        assert!(body.ends_with(b"\r\n"));
        for line in body.split(|&c| c == b'\n') {
            if line.is_empty() {
                continue; // after the final LF
            }
            assert!(line.ends_with(b"\r"), "{line:?}");
            let line = &line[..line.len() - 1];
            assert!(!line.contains(&b'\r'));
            assert!(
                line.first() != Some(&b'.') || line.get(1) == Some(&b'.'),
                "{line:?}"
            );
        }
    }

    #[test]
    fn stuffer_is_reusable_after_finish() {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.push(b"a\r", &mut out);
        s.finish(&mut out);
        s.push(b".b", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n.\r\n..b\r\n.\r\n");
    }
}
