//! Table tests for the server-side command parser (`parse_command`): every
//! `Command` variant, the MAIL/RCPT grammar of RFC 5321 §4.1.2 with the ESMTP
//! parameters (RFC 1870, 6152, 3030, 6531, 3461, 4954), the leniency switch,
//! the error table with offsets and replies, the line limit of RFC 5321
//! §4.5.3.1.4, every-prefix-is-Partial and pipelined buffers.
//!
//! Expected values come from the RFC grammars, not from the parser's output.

use mailstorm_proto::line::skip_line;
use mailstorm_proto::{
    parse_command, Body, Command, Error, ErrorKind, MailParams, Notify, ParserConfig, Path,
    RcptParams, Ret, Status, DEFAULT_MAX_COMMAND_LINE,
};

// ---------------------------------------------------------------------------
// Helpers

fn strict() -> ParserConfig {
    ParserConfig::default()
}

fn lenient() -> ParserConfig {
    ParserConfig::lenient(DEFAULT_MAX_COMMAND_LINE)
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// A comparable view of a [`Command`]: `Path`/`Address` have no public
/// constructor, so paths are compared by their text (`None` = `<>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V<'a> {
    Ehlo(&'a str),
    Helo(&'a str),
    Lhlo(&'a str),
    Mail(Option<&'a str>, MailParams<'a>),
    Rcpt(&'a str, RcptParams<'a>),
    Data,
    Bdat(u64, bool),
    Rset,
    Noop,
    Quit,
    Vrfy(&'a str),
    Expn(&'a str),
    Help(Option<&'a str>),
    StartTls,
    Auth(&'a str, Option<&'a str>),
    Unknown(&'a [u8], &'a [u8]),
}

fn path_view<'a>(p: &Path<'a>) -> Option<&'a str> {
    match p {
        Path::Null => None,
        Path::Mailbox(a) => Some(a.as_str()),
    }
}

fn view<'a>(c: &Command<'a>) -> V<'a> {
    match *c {
        Command::Ehlo { domain } => V::Ehlo(domain),
        Command::Helo { domain } => V::Helo(domain),
        Command::Lhlo { domain } => V::Lhlo(domain),
        Command::Mail { from, params } => V::Mail(path_view(&from), params),
        Command::Rcpt { to, params } => {
            V::Rcpt(path_view(&to).expect("RCPT path is never null"), params)
        }
        Command::Data => V::Data,
        Command::Bdat { size, last } => V::Bdat(size, last),
        Command::Rset => V::Rset,
        Command::Noop => V::Noop,
        Command::Quit => V::Quit,
        Command::Vrfy { arg } => V::Vrfy(arg),
        Command::Expn { arg } => V::Expn(arg),
        Command::Help { topic } => V::Help(topic),
        Command::StartTls => V::StartTls,
        Command::Auth {
            mechanism,
            initial_response,
        } => V::Auth(mechanism, initial_response),
        Command::Unknown { verb, args } => V::Unknown(verb, args),
    }
}

/// Parses `line`, which must be exactly one complete command line.
fn parse_one<'a>(line: &'a [u8], cfg: &ParserConfig) -> Command<'a> {
    match parse_command(line, cfg) {
        Ok(Status::Complete((cmd, n))) => {
            assert_eq!(n, line.len(), "consumed for {}", show(line));
            cmd
        }
        other => panic!("{}: {other:?}", show(line)),
    }
}

fn parse_err(line: &[u8], cfg: &ParserConfig) -> Error {
    match parse_command(line, cfg) {
        Err(e) => e,
        other => panic!("{} should fail: {other:?}", show(line)),
    }
}

fn crlf(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.extend_from_slice(b"\r\n");
    v
}

fn mail(size: Option<u64>, body: Option<Body>) -> MailParams<'static> {
    MailParams {
        size,
        body,
        ..MailParams::default()
    }
}

fn notify(never: bool, success: bool, failure: bool, delay: bool) -> RcptParams<'static> {
    RcptParams {
        notify: Some(Notify {
            never,
            success,
            failure,
            delay,
        }),
        orcpt: None,
    }
}

const NO_MAIL: MailParams<'static> = MailParams {
    size: None,
    body: None,
    smtputf8: false,
    ret: None,
    envid: None,
    auth: None,
};

const NO_RCPT: RcptParams<'static> = RcptParams {
    notify: None,
    orcpt: None,
};

// ---------------------------------------------------------------------------
// Valid commands (strict mode; each line gets CRLF appended)

/// Every command variant, case variations, paths and parameters. Also used
/// for the prefix and pipelining tests below.
fn valid_strict() -> Vec<(&'static str, V<'static>)> {
    vec![
        // HELO / EHLO / LHLO (RFC 5321 §4.1.1.1, RFC 2033)
        ("EHLO client.example.com", V::Ehlo("client.example.com")),
        ("ehlo client.example.com", V::Ehlo("client.example.com")),
        ("EhLo [192.0.2.1]", V::Ehlo("[192.0.2.1]")),
        ("EHLO [IPv6:2001:db8::1]", V::Ehlo("[IPv6:2001:db8::1]")),
        ("HELO relay.example.org", V::Helo("relay.example.org")),
        ("helo relay", V::Helo("relay")),
        ("LHLO lmtp.example", V::Lhlo("lmtp.example")),
        ("lhlo lmtp.example", V::Lhlo("lmtp.example")),
        // MAIL FROM (RFC 5321 §4.1.1.2): null reverse-path, case-insensitive keyword
        ("MAIL FROM:<>", V::Mail(None, NO_MAIL)),
        ("mail from:<>", V::Mail(None, NO_MAIL)),
        (
            "MAIL FROM:<user@example.com>",
            V::Mail(Some("user@example.com"), NO_MAIL),
        ),
        (
            "Mail From:<user@example.com>",
            V::Mail(Some("user@example.com"), NO_MAIL),
        ),
        // Source routes (RFC 5321 §4.1.2 A-d-l, obsolete): accepted and dropped.
        (
            "MAIL FROM:<@a.example,@b.example:user@c.example>",
            V::Mail(Some("user@c.example"), NO_MAIL),
        ),
        (
            "RCPT TO:<@hop.example:rcpt@d.example>",
            V::Rcpt("rcpt@d.example", NO_RCPT),
        ),
        // Quoted local parts (Quoted-string, with quoted-pairSMTP).
        (
            "MAIL FROM:<\"john doe\"@example.com>",
            V::Mail(Some("\"john doe\"@example.com"), NO_MAIL),
        ),
        (
            "MAIL FROM:<\"a>b\"@x.org>",
            V::Mail(Some("\"a>b\"@x.org"), NO_MAIL),
        ),
        (
            "MAIL FROM:<\"a\\\"b\"@x.org>",
            V::Mail(Some("\"a\\\"b\"@x.org"), NO_MAIL),
        ),
        (
            "MAIL FROM:<\"\"@x.org>",
            V::Mail(Some("\"\"@x.org"), NO_MAIL),
        ),
        // Dot-string with atext specials.
        (
            "MAIL FROM:<a.b+tag!#$%&'*/=?^_`{|}~-@x.org>",
            V::Mail(Some("a.b+tag!#$%&'*/=?^_`{|}~-@x.org"), NO_MAIL),
        ),
        // Address literals (RFC 5321 §4.1.3).
        (
            "MAIL FROM:<u@[192.0.2.1]>",
            V::Mail(Some("u@[192.0.2.1]"), NO_MAIL),
        ),
        (
            "RCPT TO:<u@[IPv6:2001:db8::1]>",
            V::Rcpt("u@[IPv6:2001:db8::1]", NO_RCPT),
        ),
        // MAIL parameters.
        (
            "MAIL FROM:<a@b.example> SIZE=12345",
            V::Mail(Some("a@b.example"), mail(Some(12345), None)),
        ),
        (
            "MAIL FROM:<a@b.example> SIZE=0",
            V::Mail(Some("a@b.example"), mail(Some(0), None)),
        ),
        (
            "MAIL FROM:<a@b.example> size=9999999999999999999",
            V::Mail(
                Some("a@b.example"),
                mail(Some(9_999_999_999_999_999_999), None),
            ),
        ),
        (
            "MAIL FROM:<a@b.example> BODY=7BIT",
            V::Mail(Some("a@b.example"), mail(None, Some(Body::SevenBit))),
        ),
        (
            "MAIL FROM:<a@b.example> BODY=8BITMIME",
            V::Mail(Some("a@b.example"), mail(None, Some(Body::EightBitMime))),
        ),
        (
            "MAIL FROM:<a@b.example> body=8bitmime",
            V::Mail(Some("a@b.example"), mail(None, Some(Body::EightBitMime))),
        ),
        (
            "MAIL FROM:<a@b.example> BODY=BINARYMIME",
            V::Mail(Some("a@b.example"), mail(None, Some(Body::BinaryMime))),
        ),
        (
            "MAIL FROM:<a@b.example> Body=BinaryMime",
            V::Mail(Some("a@b.example"), mail(None, Some(Body::BinaryMime))),
        ),
        (
            "MAIL FROM:<a@b.example> SMTPUTF8",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    smtputf8: true,
                    ..NO_MAIL
                },
            ),
        ),
        (
            "MAIL FROM:<a@b.example> RET=FULL",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    ret: Some(Ret::Full),
                    ..NO_MAIL
                },
            ),
        ),
        (
            "MAIL FROM:<a@b.example> ret=hdrs",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    ret: Some(Ret::Hdrs),
                    ..NO_MAIL
                },
            ),
        ),
        (
            "MAIL FROM:<a@b.example> ENVID=QQ314159",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    envid: Some("QQ314159"),
                    ..NO_MAIL
                },
            ),
        ),
        (
            "MAIL FROM:<a@b.example> AUTH=<>",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    auth: Some("<>"),
                    ..NO_MAIL
                },
            ),
        ),
        (
            "MAIL FROM:<a@b.example> AUTH=e+3Dmc2@example.com",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    auth: Some("e+3Dmc2@example.com"),
                    ..NO_MAIL
                },
            ),
        ),
        (
            "MAIL FROM:<> SIZE=10 BODY=7BIT",
            V::Mail(None, mail(Some(10), Some(Body::SevenBit))),
        ),
        (
            // All six at once, in a different order than the struct.
            "MAIL FROM:<a@b.example> AUTH=<> ENVID=x+2By RET=HDRS SMTPUTF8 BODY=8BITMIME SIZE=1",
            V::Mail(
                Some("a@b.example"),
                MailParams {
                    size: Some(1),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ret: Some(Ret::Hdrs),
                    envid: Some("x+2By"),
                    auth: Some("<>"),
                },
            ),
        ),
        // RCPT TO (RFC 5321 §4.1.1.3) and the Postmaster special case.
        ("RCPT TO:<c@d.example>", V::Rcpt("c@d.example", NO_RCPT)),
        ("rcpt to:<c@d.example>", V::Rcpt("c@d.example", NO_RCPT)),
        ("RCPT TO:<Postmaster>", V::Rcpt("Postmaster", NO_RCPT)),
        ("RCPT TO:<postmaster>", V::Rcpt("postmaster", NO_RCPT)),
        (
            "RCPT TO:<postmaster@d.example>",
            V::Rcpt("postmaster@d.example", NO_RCPT),
        ),
        // NOTIFY (RFC 3461 §4.1): NEVER alone or any non-empty subset.
        (
            "RCPT TO:<c@d.example> NOTIFY=NEVER",
            V::Rcpt("c@d.example", notify(true, false, false, false)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=SUCCESS",
            V::Rcpt("c@d.example", notify(false, true, false, false)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=FAILURE",
            V::Rcpt("c@d.example", notify(false, false, true, false)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=DELAY",
            V::Rcpt("c@d.example", notify(false, false, false, true)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE",
            V::Rcpt("c@d.example", notify(false, true, true, false)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=FAILURE,DELAY",
            V::Rcpt("c@d.example", notify(false, false, true, true)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=DELAY,SUCCESS",
            V::Rcpt("c@d.example", notify(false, true, false, true)),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE,DELAY",
            V::Rcpt("c@d.example", notify(false, true, true, true)),
        ),
        (
            "RCPT TO:<c@d.example> notify=never",
            V::Rcpt("c@d.example", notify(true, false, false, false)),
        ),
        (
            "RCPT TO:<c@d.example> ORCPT=rfc822;c@d.example",
            V::Rcpt(
                "c@d.example",
                RcptParams {
                    notify: None,
                    orcpt: Some(("rfc822", "c@d.example")),
                },
            ),
        ),
        (
            "RCPT TO:<c@d.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+2Bc@d.example",
            V::Rcpt(
                "c@d.example",
                RcptParams {
                    notify: Some(Notify {
                        never: false,
                        success: false,
                        failure: true,
                        delay: true,
                    }),
                    orcpt: Some(("rfc822", "x+2Bc@d.example")),
                },
            ),
        ),
        // DATA, BDAT (RFC 3030 §2: "BDAT" SP chunk-size [ SP end-marker ])
        ("DATA", V::Data),
        ("data", V::Data),
        ("BDAT 0", V::Bdat(0, false)),
        ("BDAT 0 LAST", V::Bdat(0, true)),
        ("BDAT 1000", V::Bdat(1000, false)),
        ("BDAT 1000 LAST", V::Bdat(1000, true)),
        ("bdat 5 last", V::Bdat(5, true)),
        ("BDAT 007", V::Bdat(7, false)),
        (
            "BDAT 9999999999999999999 LAST",
            V::Bdat(9_999_999_999_999_999_999, true),
        ),
        // The no-argument commands and NOOP's optional string.
        ("RSET", V::Rset),
        ("rset", V::Rset),
        ("NOOP", V::Noop),
        ("NOOP anything at all", V::Noop),
        ("QUIT", V::Quit),
        ("Quit", V::Quit),
        ("STARTTLS", V::StartTls),
        ("starttls", V::StartTls),
        // VRFY / EXPN / HELP
        ("VRFY postmaster", V::Vrfy("postmaster")),
        ("vrfy John Smith", V::Vrfy("John Smith")),
        ("EXPN list-name", V::Expn("list-name")),
        ("HELP", V::Help(None)),
        ("HELP MAIL", V::Help(Some("MAIL"))),
        // AUTH (RFC 4954 §4): mechanism [SP initial-response], "=" is empty.
        ("AUTH PLAIN", V::Auth("PLAIN", None)),
        (
            "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
            V::Auth("PLAIN", Some("dGVzdAB0ZXN0AHRlc3Q=")),
        ),
        ("AUTH PLAIN =", V::Auth("PLAIN", Some(""))),
        ("auth login", V::Auth("login", None)),
        ("AUTH CRAM-MD5", V::Auth("CRAM-MD5", None)),
        (
            "AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=",
            V::Auth(
                "SCRAM-SHA-256",
                Some("biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8="),
            ),
        ),
        (
            "AUTH XOAUTH2 dXNlcj1h+/==",
            V::Auth("XOAUTH2", Some("dXNlcj1h+/==")),
        ),
        // Unknown verbs keep the verb and the raw arguments.
        (
            "XCLIENT NAME=foo ADDR=192.0.2.1",
            V::Unknown(b"XCLIENT", b"NAME=foo ADDR=192.0.2.1"),
        ),
        ("FOO", V::Unknown(b"FOO", b"")),
        ("ETRN example.com", V::Unknown(b"ETRN", b"example.com")),
        ("MAILX FROM:<a@b>", V::Unknown(b"MAILX", b"FROM:<a@b>")),
        ("STARTTLSX", V::Unknown(b"STARTTLSX", b"")),
        ("HEL", V::Unknown(b"HEL", b"")),
        ("", V::Unknown(b"", b"")),
    ]
}

#[test]
fn every_valid_command_strict() {
    for (line, expected) in valid_strict() {
        let buf = crlf(line);
        let cmd = parse_one(&buf, &strict());
        assert_eq!(view(&cmd), expected, "{line:?}");
    }
}

#[test]
fn strict_commands_are_also_accepted_leniently() {
    for (line, expected) in valid_strict() {
        let buf = crlf(line);
        let cmd = parse_one(&buf, &lenient());
        assert_eq!(view(&cmd), expected, "{line:?}");
    }
}

#[test]
fn every_command_variant_is_covered() {
    // Guard against the table silently losing a variant.
    let mut seen = [false; 16];
    for (_, v) in valid_strict() {
        let k = match v {
            V::Ehlo(_) => 0,
            V::Helo(_) => 1,
            V::Lhlo(_) => 2,
            V::Mail(..) => 3,
            V::Rcpt(..) => 4,
            V::Data => 5,
            V::Bdat(..) => 6,
            V::Rset => 7,
            V::Noop => 8,
            V::Quit => 9,
            V::Vrfy(_) => 10,
            V::Expn(_) => 11,
            V::Help(_) => 12,
            V::StartTls => 13,
            V::Auth(..) => 14,
            V::Unknown(..) => 15,
        };
        seen[k] = true;
    }
    assert!(seen.iter().all(|&s| s), "{seen:?}");
}

#[test]
fn mixed_case_verbs_all_spellings() {
    // Every upper/lower combination of a few verbs dispatches the same.
    for (verb, args, expected) in [
        ("data", "", V::Data),
        ("quit", "", V::Quit),
        ("rset", "", V::Rset),
        ("noop", "", V::Noop),
        ("ehlo", " x.example", V::Ehlo("x.example")),
        ("starttls", "", V::StartTls),
    ] {
        for mask in 0u32..(1 << verb.len()) {
            let spelled: String = verb
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            let buf = crlf(&format!("{spelled}{args}"));
            assert_eq!(view(&parse_one(&buf, &strict())), expected, "{spelled}");
        }
    }
}

#[test]
fn address_parts() {
    // (line, local part, domain, ascii)
    let cases: &[(&str, &str, &str, bool)] = &[
        ("MAIL FROM:<user@example.com>", "user", "example.com", true),
        (
            "MAIL FROM:<\"john doe\"@example.com>",
            "\"john doe\"",
            "example.com",
            true,
        ),
        ("MAIL FROM:<\"a@b\"@x.org>", "\"a@b\"", "x.org", true),
        ("MAIL FROM:<u@[192.0.2.1]>", "u", "[192.0.2.1]", true),
        (
            "MAIL FROM:<u@[IPv6:2001:db8::1]>",
            "u",
            "[IPv6:2001:db8::1]",
            true,
        ),
        (
            "MAIL FROM:<@r1.example,@r2.example:u@x.example>",
            "u",
            "x.example",
            true,
        ),
        (
            "MAIL FROM:<用户@例子.测试> SMTPUTF8",
            "用户",
            "例子.测试",
            false,
        ),
        (
            "MAIL FROM:<\"Jöe\"@x.org> SMTPUTF8",
            "\"Jöe\"",
            "x.org",
            false,
        ),
        (
            "MAIL FROM:<a@bücher.example> SMTPUTF8",
            "a",
            "bücher.example",
            false,
        ),
        ("RCPT TO:<Postmaster>", "Postmaster", "", true),
    ];
    for &(line, local, domain, ascii) in cases {
        let buf = crlf(line);
        let path = match parse_one(&buf, &strict()) {
            Command::Mail { from, .. } => from,
            Command::Rcpt { to, .. } => to,
            other => panic!("{other:?}"),
        };
        let Path::Mailbox(a) = path else {
            panic!("{line}: null path")
        };
        assert_eq!(
            (a.local(), a.domain(), a.is_ascii()),
            (local, domain, ascii),
            "{line}"
        );
        assert_eq!(path.is_ascii(), ascii);
        assert!(!path.is_null());
        assert_eq!(a.as_str(), path.as_str());
    }
    let buf = crlf("MAIL FROM:<>");
    let Command::Mail { from, .. } = parse_one(&buf, &strict()) else {
        panic!()
    };
    assert!(from.is_null() && from.is_ascii());
    assert_eq!(from.as_str(), "");
}

#[test]
fn fields_borrow_from_the_input() {
    let buf = crlf("MAIL FROM:<a@b.example> ENVID=abc");
    let Command::Mail { from, params } = parse_one(&buf, &strict()) else {
        panic!()
    };
    let range = buf.as_ptr_range();
    assert!(range.contains(&from.as_str().as_ptr()));
    assert!(range.contains(&params.envid.unwrap().as_ptr()));
}

// ---------------------------------------------------------------------------
// SMTPUTF8 (RFC 6531 §3.4): non-ASCII mailboxes need the SMTPUTF8 parameter.

#[test]
fn utf8_addresses_need_smtputf8() {
    for line in [
        "MAIL FROM:<用户@例子.测试>",
        "MAIL FROM:<a@bücher.example>",
        "MAIL FROM:<\"Jöe\"@x.org>",
        "MAIL FROM:<用户@例子.测试> BODY=8BITMIME",
    ] {
        let buf = crlf(line);
        for cfg in [strict(), lenient()] {
            let e = parse_err(&buf, &cfg);
            assert_eq!(e.kind, ErrorKind::NonAscii, "{line}");
            assert_eq!(e.consumed, buf.len());
            let r = e.reply();
            assert_eq!((r.code, r.enhanced), (553, "5.6.7"), "{line}");
        }
        let with = crlf(&format!("{line} SMTPUTF8"));
        let Command::Mail { from, params } = parse_one(&with, &strict()) else {
            panic!()
        };
        assert!(params.smtputf8 && !from.is_ascii());
    }
    // SMTPUTF8 does not make invalid UTF-8 acceptable.
    let e = parse_err(b"MAIL FROM:<a\xff@x.org> SMTPUTF8\r\n", &strict());
    assert_eq!(e.kind, ErrorKind::InvalidSender);
    // RCPT carries no SMTPUTF8 parameter (it is a MAIL transaction property):
    // the parser hands the mailbox over marked non-ASCII and the server
    // checks it against its MAIL FROM.
    let buf = crlf("RCPT TO:<用户@例子.测试>");
    let Command::Rcpt { to, .. } = parse_one(&buf, &strict()) else {
        panic!()
    };
    assert!(!to.is_ascii());
}

/// RFC 6531 + the `Error` docs ("offset of the offending byte or field"):
/// the offset of a NonAscii error points at the first non-ASCII byte.
#[test]
fn non_ascii_error_offset_is_the_first_non_ascii_byte() {
    let line = crlf("MAIL FROM:<a@bücher.example>");
    let first = line.iter().position(|&b| b >= 0x80).unwrap();
    let e = parse_err(&line, &strict());
    assert_eq!(e.kind, ErrorKind::NonAscii);
    assert_eq!(e.offset, first, "offset should point at 'ü' (byte {first})");
}

// ---------------------------------------------------------------------------
// Leniency switch

#[test]
fn leniencies_need_the_switch() {
    // (line, strict error kind and offset, lenient result)
    let cases: &[(&[u8], ErrorKind, usize, V<'static>)] = &[
        // Space after the colon.
        (
            b"MAIL FROM: <a@b.example>\r\n",
            ErrorKind::InvalidSender,
            10,
            V::Mail(Some("a@b.example"), NO_MAIL),
        ),
        (
            b"MAIL FROM:  <>\r\n",
            ErrorKind::InvalidSender,
            10,
            V::Mail(None, NO_MAIL),
        ),
        (
            b"RCPT TO: <c@d.example> NOTIFY=NEVER\r\n",
            ErrorKind::InvalidAddress,
            8,
            V::Rcpt("c@d.example", notify(true, false, false, false)),
        ),
        // Missing angle brackets.
        (
            b"MAIL FROM:a@b.example\r\n",
            ErrorKind::InvalidSender,
            10,
            V::Mail(Some("a@b.example"), NO_MAIL),
        ),
        (
            b"MAIL FROM:a@b.example SIZE=10\r\n",
            ErrorKind::InvalidSender,
            10,
            V::Mail(Some("a@b.example"), mail(Some(10), None)),
        ),
        (
            b"RCPT TO:c@d.example\r\n",
            ErrorKind::InvalidAddress,
            8,
            V::Rcpt("c@d.example", NO_RCPT),
        ),
        (
            b"MAIL FROM: a@b.example\r\n",
            ErrorKind::InvalidSender,
            10,
            V::Mail(Some("a@b.example"), NO_MAIL),
        ),
        // Trailing white space.
        (b"QUIT \r\n", ErrorKind::Syntax, 4, V::Quit),
        (b"DATA \t \r\n", ErrorKind::Syntax, 4, V::Data),
        (b"RSET  \r\n", ErrorKind::Syntax, 4, V::Rset),
        (b"BDAT 5 LAST \r\n", ErrorKind::Syntax, 6, V::Bdat(5, true)),
        (
            b"AUTH PLAIN \r\n",
            ErrorKind::Syntax,
            11,
            V::Auth("PLAIN", None),
        ),
        // Words after the HELO domain.
        (
            b"EHLO host.example extra words\r\n",
            ErrorKind::Syntax,
            17,
            V::Ehlo("host.example"),
        ),
        // Bare LF line ends.
        (b"NOOP\n", ErrorKind::BareLf, 4, V::Noop),
        (b"QUIT\n", ErrorKind::BareLf, 4, V::Quit),
        (
            b"MAIL FROM:<a@b.example>\n",
            ErrorKind::BareLf,
            23,
            V::Mail(Some("a@b.example"), NO_MAIL),
        ),
        (
            b"EHLO x.example\n",
            ErrorKind::BareLf,
            14,
            V::Ehlo("x.example"),
        ),
    ];
    for &(line, kind, offset, expected) in cases {
        let e = parse_err(line, &strict());
        assert_eq!((e.kind, e.offset), (kind, offset), "strict {}", show(line));
        assert_eq!(e.consumed, line.len(), "strict {}", show(line));
        assert!(e.line_complete);
        let cmd = parse_one(line, &lenient());
        assert_eq!(view(&cmd), expected, "lenient {}", show(line));
    }
}

#[test]
fn leniency_has_limits() {
    // Lenient mode still rejects what no client can mean.
    let cases: &[(&[u8], ErrorKind)] = &[
        (b"MAIL FROM:\r\n", ErrorKind::InvalidSender),
        (b"MAIL FROM: \r\n", ErrorKind::InvalidSender),
        (b"MAIL FROM:a@\r\n", ErrorKind::InvalidSender),
        (b"MAIL FROM <a@b.example>\r\n", ErrorKind::Syntax),
        (b"RCPT TO:<>\r\n", ErrorKind::InvalidAddress),
        (b"DATA x\r\n", ErrorKind::Syntax),
        (b"NO\rOP\n", ErrorKind::BareCr),
        (b"NOOP\r\r\n", ErrorKind::BareCr),
        (b"NO\0OP\n", ErrorKind::NulByte),
    ];
    for &(line, kind) in cases {
        let e = parse_err(line, &lenient());
        assert_eq!(e.kind, kind, "{}", show(line));
        assert_eq!(e.consumed, line.len(), "{}", show(line));
    }
}

#[test]
fn default_config_is_strict_512() {
    let d = ParserConfig::default();
    assert_eq!(d, ParserConfig::strict(512));
    assert!(!d.lenient);
    assert_eq!(d.max_line_len, 512);
    assert!(ParserConfig::lenient(100).lenient);
    assert_eq!(ParserConfig::lenient(100).max_line_len, 100);
}

// ---------------------------------------------------------------------------
// Error table

/// The reply each kind maps to: RFC 5321 §4.2.2 / §4.1.1.11 and RFC 3463.
fn expected_reply(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        // 500 "Syntax error, command unrecognized (This may include errors
        // such as command line too long)", X.5.2 "Syntax error".
        ErrorKind::LineTooLong
        | ErrorKind::NulByte
        | ErrorKind::BareCr
        | ErrorKind::BareLf
        | ErrorKind::MalformedReply => (500, "5.5.2"),
        // 501 "Syntax error in parameters or arguments", X.5.4 "Invalid
        // command arguments".
        ErrorKind::Syntax | ErrorKind::InvalidParameter => (501, "5.5.4"),
        // 555 "MAIL FROM/RCPT TO parameters not recognized or not implemented".
        ErrorKind::UnknownParameter => (555, "5.5.4"),
        // RFC 6531: 553 5.6.7 non-ASCII address without SMTPUTF8.
        ErrorKind::NonAscii => (553, "5.6.7"),
        // 501 with X.1.3 (destination) and X.1.7 (sender).
        ErrorKind::InvalidAddress => (501, "5.1.3"),
        ErrorKind::InvalidSender => (501, "5.1.7"),
        _ => panic!("new ErrorKind {kind:?}: add it to this table"),
    }
}

#[test]
fn reply_for_every_error_kind() {
    for kind in [
        ErrorKind::LineTooLong,
        ErrorKind::NulByte,
        ErrorKind::BareCr,
        ErrorKind::BareLf,
        ErrorKind::Syntax,
        ErrorKind::InvalidAddress,
        ErrorKind::InvalidSender,
        ErrorKind::UnknownParameter,
        ErrorKind::InvalidParameter,
        ErrorKind::NonAscii,
        ErrorKind::MalformedReply,
    ] {
        let e = Error {
            kind,
            offset: 3,
            consumed: 9,
            line_complete: true,
        };
        let r = e.reply();
        assert_eq!((r.code, r.enhanced), expected_reply(kind), "{kind:?}");
        // The enhanced code's class agrees with the reply code (RFC 3463 §2).
        assert_eq!(
            r.enhanced.as_bytes()[0] - b'0',
            (r.code / 100) as u8,
            "{kind:?}"
        );
        assert!(!r.text.is_empty() && !r.text.contains(['\r', '\n']));
        // Display names the kind and the offset.
        assert!(e.to_string().contains('3'), "{e}");
        assert!(!kind.to_string().is_empty());
    }
}

#[test]
fn error_table() {
    use ErrorKind::*;
    // (lenient?, line, kind, offset). Every line is one complete line, so
    // `consumed` is its length.
    let cases: &[(bool, &[u8], ErrorKind, usize)] = &[
        // Line framing.
        (false, b"NO\0OP\r\n", NulByte, 2),
        (true, b"NOOP \0\r\n", NulByte, 5),
        (false, b"NO\rOP\r\n", BareCr, 2),
        (false, b"MAIL FROM:<a@b.example>\rX\r\n", BareCr, 23),
        (false, b"NOOP\n", BareLf, 4),
        (false, b"MAIL FROM:<a@b.example> SIZE=1\n", BareLf, 30),
        // No-argument commands with arguments: at the separating space.
        (false, b"QUIT now\r\n", Syntax, 4),
        (false, b"DATA x\r\n", Syntax, 4),
        (false, b"RSET x\r\n", Syntax, 4),
        (false, b"STARTTLS x\r\n", Syntax, 8),
        // Missing arguments: where the argument should start.
        (false, b"EHLO\r\n", Syntax, 4),
        (false, b"HELO\r\n", Syntax, 4),
        (false, b"LHLO\r\n", Syntax, 4),
        (false, b"VRFY\r\n", Syntax, 4),
        (false, b"EXPN\r\n", Syntax, 4),
        (false, b"AUTH\r\n", Syntax, 4),
        (false, b"BDAT\r\n", Syntax, 4),
        (false, b"MAIL\r\n", Syntax, 4),
        (false, b"RCPT\r\n", Syntax, 4),
        (false, b"EHLO a b\r\n", Syntax, 6),
        // MAIL / RCPT keyword and what follows the path.
        (false, b"MAIL TO:<a@b.example>\r\n", Syntax, 5),
        (false, b"MAIL FROM<a@b.example>\r\n", Syntax, 5),
        (false, b"RCPT FROM:<a@b.example>\r\n", Syntax, 5),
        (false, b"MAIL FROM:<a@b.example>x\r\n", Syntax, 23),
        (false, b"RCPT TO:<c@d.example>SIZE=1\r\n", Syntax, 21),
        // BDAT (chunk-size is 1*DIGIT; end-marker is "LAST").
        (false, b"BDAT x\r\n", Syntax, 5),
        (false, b"BDAT -1\r\n", Syntax, 5),
        (false, b"BDAT +1\r\n", Syntax, 5),
        (false, b"BDAT 10 FIRST\r\n", Syntax, 7),
        (false, b"BDAT 10 LAST x\r\n", Syntax, 7),
        (false, b"BDAT 10  LAST\r\n", Syntax, 7),
        // AUTH: mechanism is 1*20 of [A-Z0-9-_]; the response is base64 or "=".
        (false, b"AUTH PL@IN\r\n", Syntax, 5),
        (false, b"AUTH ABCDEFGHIJKLMNOPQRSTU\r\n", Syntax, 5),
        (false, b"AUTH PLAIN abc def\r\n", Syntax, 11),
        (false, b"AUTH PLAIN a,b\r\n", Syntax, 11),
        (false, b"AUTH PLAIN \r\n", Syntax, 11),
        // Paths.
        (false, b"MAIL FROM:<a@>\r\n", InvalidSender, 13),
        (false, b"MAIL FROM:<a@b.example\r\n", InvalidSender, 22),
        (false, b"MAIL FROM:<Postmaster>\r\n", InvalidSender, 21),
        (false, b"RCPT TO:<user>\r\n", InvalidAddress, 13),
        (false, b"RCPT TO:<a..b@x.org>\r\n", InvalidAddress, 11),
        (false, b"RCPT TO:<.a@x.org>\r\n", InvalidAddress, 9),
        (false, b"RCPT TO:<a@b..c>\r\n", InvalidAddress, 13),
        (false, b"RCPT TO:<a@b.>\r\n", InvalidAddress, 13),
        (false, b"RCPT TO:<a b@c.org>\r\n", InvalidAddress, 10),
        (false, b"RCPT TO:<a@[1.2.3.4>\r\n", InvalidAddress, 19),
        (false, b"RCPT TO:<a@[1.2 3]>\r\n", InvalidAddress, 15),
        (
            false,
            b"RCPT TO:<\"unterminated@x.org>\r\n",
            InvalidAddress,
            29,
        ),
        (false, b"RCPT TO:<@relay:>\r\n", InvalidAddress, 16),
        // Unknown parameters (555), including the other command's ones.
        (
            false,
            b"MAIL FROM:<a@b.example> FOO=1\r\n",
            UnknownParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> NOTIFY=NEVER\r\n",
            UnknownParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> ORCPT=rfc822;a@b\r\n",
            UnknownParameter,
            24,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> SIZE=10\r\n",
            UnknownParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> BODY=8BITMIME\r\n",
            UnknownParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> FOOBARBAZ=1\r\n",
            UnknownParameter,
            22,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SIZE=1 X-FOO\r\n",
            UnknownParameter,
            31,
        ),
        // Invalid parameter values and duplicates (501).
        (
            false,
            b"MAIL FROM:<a@b.example> SIZE=abc\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SIZE=\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SIZE\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SIZE=-1\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n",
            InvalidParameter,
            31,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> BODY=9BIT\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> BODY=BINARYMIMEX\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> BODY\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> BODY=7BIT BODY=7BIT\r\n",
            InvalidParameter,
            34,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> SMTPUTF8 SMTPUTF8\r\n",
            InvalidParameter,
            33,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> RET=ALL\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> RET\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> ENVID=\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> ENVID=a ENVID=b\r\n",
            InvalidParameter,
            32,
        ),
        (
            false,
            b"MAIL FROM:<a@b.example> AUTH=\r\n",
            InvalidParameter,
            24,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY=NEVER,SUCCESS\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY=DELAY,NEVER\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY=\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY=SOMETIMES\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,,DELAY\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> NOTIFY=NEVER NOTIFY=NEVER\r\n",
            InvalidParameter,
            35,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> ORCPT=rfc822\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> ORCPT=;c@d.example\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> ORCPT=rfc822;\r\n",
            InvalidParameter,
            22,
        ),
        (
            false,
            b"RCPT TO:<c@d.example> ORCPT=\r\n",
            InvalidParameter,
            22,
        ),
        // Non-ASCII without SMTPUTF8 (offset checked separately).
        (
            false,
            "MAIL FROM:<用户@例子.测试>\r\n".as_bytes(),
            NonAscii,
            usize::MAX,
        ),
        // Null forward-path (offset checked separately).
        (false, b"RCPT TO:<>\r\n", InvalidAddress, usize::MAX),
    ];
    for &(lenient_mode, line, kind, offset) in cases {
        let cfg = if lenient_mode { lenient() } else { strict() };
        let e = parse_err(line, &cfg);
        let name = show(line);
        assert_eq!(e.kind, kind, "{name}");
        if offset != usize::MAX {
            assert_eq!(e.offset, offset, "{name}");
        }
        assert!(e.offset < line.len(), "{name}");
        assert_eq!(e.consumed, line.len(), "{name}");
        assert!(e.line_complete, "{name}");
        let r = e.reply();
        let (code, class) = expected_reply(kind);
        assert_eq!(r.code, code, "{name}");
        assert_eq!(r.enhanced, class, "{name}");
        // After dropping `consumed` bytes the next command parses.
        let mut stream = line.to_vec();
        stream.extend_from_slice(b"NOOP\r\n");
        assert_eq!(parse_err(&stream, &cfg), e, "{name} with a next line");
        let next = parse_command(&stream[e.consumed..], &cfg);
        assert_eq!(next, Ok(Status::Complete((Command::Noop, 6))), "{name}");
    }
}

/// RFC 5321 §4.1.1.3: `<>` is only a reverse-path; the offending field of
/// `RCPT TO:<>` is the path itself.
#[test]
fn null_forward_path_error_points_at_the_path() {
    let e = parse_err(b"RCPT TO:<>\r\n", &strict());
    assert_eq!(e.kind, ErrorKind::InvalidAddress);
    assert_eq!(e.offset, 8, "offset should point at '<' of the null path");
}

/// RFC 5321 §4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">", and a Mailbox's
/// Quoted-string may contain '>'. A source route must not change how the
/// quoted local part is read (without the route this already works).
#[test]
fn source_route_with_quoted_local_part_containing_gt() {
    let plain = crlf("RCPT TO:<\"x>y\"@b.example>");
    assert_eq!(
        view(&parse_one(&plain, &strict())),
        V::Rcpt("\"x>y\"@b.example", NO_RCPT)
    );
    let routed = crlf("RCPT TO:<@a.example:\"x>y\"@b.example>");
    match parse_command(&routed, &strict()) {
        Ok(Status::Complete((cmd, n))) => {
            assert_eq!(n, routed.len());
            assert_eq!(view(&cmd), V::Rcpt("\"x>y\"@b.example", NO_RCPT));
        }
        other => panic!("{}: {other:?}", show(&routed)),
    }
}

/// RFC 3463 §3.2: X.1.7 is "Bad sender's mailbox address syntax", X.1.3 is
/// "Bad destination mailbox address syntax".
#[test]
fn bad_sender_address_maps_to_x17() {
    let e = parse_err(b"MAIL FROM:<a@>\r\n", &strict());
    assert_eq!(e.kind, ErrorKind::InvalidSender);
    let r = e.reply();
    assert_eq!((r.code, r.enhanced), (501, "5.1.7"), "MAIL FROM:<a@>");
    let e = parse_err(b"RCPT TO:<a@>\r\n", &strict());
    let r = e.reply();
    assert_eq!((r.code, r.enhanced), (501, "5.1.3"), "RCPT TO:<a@>");
}

/// RFC 1870 §3: `size-value ::= 1*20DIGIT`; u64::MAX has 20 digits. RFC 3030
/// `chunk-size ::= 1*DIGIT`. Values that fit in a u64 must be accepted.
#[test]
fn twenty_digit_sizes_that_fit_u64_are_accepted() {
    let max = u64::MAX.to_string();
    assert_eq!(max.len(), 20);
    let line = crlf(&format!("MAIL FROM:<a@b.example> SIZE={max}"));
    match parse_command(&line, &strict()) {
        Ok(Status::Complete((Command::Mail { params, .. }, _))) => {
            assert_eq!(params.size, Some(u64::MAX))
        }
        other => panic!("SIZE={max}: {other:?}"),
    }
    let line = crlf(&format!("BDAT {max} LAST"));
    match parse_command(&line, &strict()) {
        Ok(Status::Complete((cmd, _))) => assert_eq!(view(&cmd), V::Bdat(u64::MAX, true)),
        other => panic!("BDAT {max}: {other:?}"),
    }
}

#[test]
fn sizes_that_overflow_u64_never_wrap() {
    // 2^64 and a 21-digit value: not representable; whatever the parser
    // does, it must not report a wrapped-around small size.
    for v in [
        "18446744073709551616",
        "99999999999999999999",
        "100000000000000000000",
    ] {
        let line = crlf(&format!("MAIL FROM:<a@b.example> SIZE={v}"));
        match parse_command(&line, &strict()) {
            Ok(Status::Complete((Command::Mail { params, .. }, _))) => {
                assert_eq!(params.size, Some(u64::MAX), "SIZE={v} saturates")
            }
            Err(e) => assert_eq!(e.kind, ErrorKind::InvalidParameter, "SIZE={v}"),
            other => panic!("SIZE={v}: {other:?}"),
        }
        let line = crlf(&format!("BDAT {v}"));
        match parse_command(&line, &strict()) {
            Ok(Status::Complete((cmd, _))) => panic!("BDAT {v} parsed as {cmd:?}"),
            Err(e) => assert_eq!(e.kind, ErrorKind::Syntax, "BDAT {v}"),
            Ok(Status::Partial) => panic!("BDAT {v}: partial"),
        }
    }
}

// ---------------------------------------------------------------------------
// Line limit (RFC 5321 §4.5.3.1.4: 512 octets including CRLF)

/// A `NOOP` line of exactly `total` octets including the terminator.
fn noop_line(total: usize, terminator: &[u8]) -> Vec<u8> {
    let mut v = b"NOOP ".to_vec();
    v.resize(total - terminator.len(), b'x');
    v.extend_from_slice(terminator);
    assert_eq!(v.len(), total);
    v
}

#[test]
fn line_of_exactly_512_is_accepted() {
    let line = noop_line(512, b"\r\n");
    assert_eq!(
        parse_command(&line, &strict()),
        Ok(Status::Complete((Command::Noop, 512)))
    );
    // Same in lenient mode with a bare LF terminator.
    let line = noop_line(512, b"\n");
    assert_eq!(
        parse_command(&line, &lenient()),
        Ok(Status::Complete((Command::Noop, 512)))
    );
    // Every prefix of it is still Partial (511 bytes: the LF is missing).
    let line = noop_line(512, b"\r\n");
    assert_eq!(parse_command(&line[..511], &strict()), Ok(Status::Partial));
}

#[test]
fn line_of_513_is_rejected() {
    let line = noop_line(513, b"\r\n");
    let e = parse_err(&line, &strict());
    assert_eq!(e.kind, ErrorKind::LineTooLong);
    assert_eq!(e.offset, 512);
    assert_eq!(e.consumed, 513);
    assert!(e.line_complete);
    assert_eq!(e.reply().code, 500);
}

#[test]
fn line_too_long_is_reported_without_the_lf() {
    // 512 bytes buffered, none of them LF: the line is at least 513 long.
    let line = noop_line(513, b"\r\n");
    for cfg in [strict(), lenient()] {
        let e = parse_err(&line[..512], &cfg);
        assert_eq!(e.kind, ErrorKind::LineTooLong);
        assert_eq!(e.offset, 512);
        assert_eq!(e.consumed, 512);
        assert!(!e.line_complete);
        // The caller drops what it has and skips to the next LF.
        assert_eq!(skip_line(&line[512..]), Some(1));
    }
    // A much longer line without an LF: reported at the limit, consumes all.
    let long = vec![b'A'; 5000];
    let e = parse_err(&long, &strict());
    assert_eq!(
        (e.kind, e.offset, e.consumed),
        (ErrorKind::LineTooLong, 512, 5000)
    );
    assert!(!e.line_complete);
    assert_eq!(skip_line(&long), None);
    assert_eq!(skip_line(b"xx\nQUIT\r\n"), Some(3));
}

#[test]
fn too_long_line_then_next_command() {
    let mut stream = noop_line(600, b"\r\n");
    stream.extend_from_slice(b"QUIT\r\n");
    let e = parse_err(&stream, &strict());
    assert_eq!(
        (e.kind, e.offset, e.consumed),
        (ErrorKind::LineTooLong, 512, 600)
    );
    assert!(e.line_complete);
    assert_eq!(
        parse_command(&stream[e.consumed..], &strict()),
        Ok(Status::Complete((Command::Quit, 6)))
    );
    // The same stream arriving in 100-byte reads, resynchronising with skip_line.
    let mut buf: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut got = Vec::new();
    for chunk in stream.chunks(100) {
        buf.extend_from_slice(chunk);
        loop {
            if skipping {
                match skip_line(&buf) {
                    Some(n) => {
                        buf.drain(..n);
                        skipping = false;
                    }
                    None => {
                        buf.clear();
                        break;
                    }
                }
            }
            match parse_command(&buf, &strict()) {
                Ok(Status::Partial) => break,
                Ok(Status::Complete((c, n))) => {
                    got.push(format!("{:?}", view(&c)));
                    buf.drain(..n);
                }
                Err(e) => {
                    got.push(format!("{:?}@{}", e.kind, e.offset));
                    skipping = !e.line_complete;
                    buf.drain(..e.consumed);
                }
            }
        }
    }
    assert_eq!(got, ["LineTooLong@512", "Quit"]);
    assert!(buf.is_empty());
}

#[test]
fn configurable_line_limit() {
    for limit in [16usize, 64, 100, 1000, 4096] {
        for cfg in [ParserConfig::strict(limit), ParserConfig::lenient(limit)] {
            let ok = noop_line(limit, b"\r\n");
            assert_eq!(
                parse_command(&ok, &cfg),
                Ok(Status::Complete((Command::Noop, limit))),
                "limit {limit}"
            );
            let bad = noop_line(limit + 1, b"\r\n");
            let e = parse_err(&bad, &cfg);
            assert_eq!(
                (e.kind, e.offset, e.consumed),
                (ErrorKind::LineTooLong, limit, limit + 1)
            );
            let e = parse_err(&bad[..limit], &cfg);
            assert_eq!((e.kind, e.line_complete), (ErrorKind::LineTooLong, false));
            assert_eq!(parse_command(&bad[..limit - 1], &cfg), Ok(Status::Partial));
        }
    }
    // A MAIL command longer than 512 is fine with a larger limit.
    let long = crlf(&format!(
        "MAIL FROM:<{}@example.com> ENVID={}",
        "a".repeat(60),
        "e".repeat(500)
    ));
    assert!(long.len() > 512);
    assert_eq!(parse_err(&long, &strict()).kind, ErrorKind::LineTooLong);
    let Command::Mail { params, .. } = parse_one(&long, &ParserConfig::strict(1000)) else {
        panic!()
    };
    assert_eq!(params.envid.map(str::len), Some(500));
}

// ---------------------------------------------------------------------------
// Incremental input

fn lenient_only_lines() -> Vec<&'static [u8]> {
    vec![
        b"MAIL FROM: <a@b.example> SIZE=1\r\n",
        b"RCPT TO:c@d.example\r\n",
        b"NOOP\n",
        b"EHLO host.example more\r\n",
        b"QUIT  \n",
    ]
}

#[test]
fn every_prefix_is_partial() {
    for (line, _) in valid_strict() {
        let buf = crlf(line);
        for cfg in [strict(), lenient()] {
            for n in 0..buf.len() {
                assert_eq!(
                    parse_command(&buf[..n], &cfg),
                    Ok(Status::Partial),
                    "{line:?}[..{n}]"
                );
            }
        }
    }
    for buf in lenient_only_lines() {
        for n in 0..buf.len() {
            assert_eq!(parse_command(&buf[..n], &lenient()), Ok(Status::Partial));
        }
        assert!(parse_command(buf, &lenient()).unwrap().is_complete());
    }
}

#[test]
fn pipelined_buffer_parsed_in_sequence() {
    let table = valid_strict();
    let mut stream = Vec::new();
    for (line, _) in &table {
        stream.extend_from_slice(&crlf(line));
    }
    let mut pos = 0;
    for (line, expected) in &table {
        let (cmd, n) = parse_command(&stream[pos..], &strict())
            .unwrap()
            .complete()
            .unwrap();
        assert_eq!(view(&cmd), *expected, "{line:?}");
        assert_eq!(n, line.len() + 2);
        pos += n;
    }
    assert_eq!(pos, stream.len());
    assert_eq!(
        parse_command(&stream[pos..], &strict()),
        Ok(Status::Partial)
    );
}

#[test]
fn pipelined_buffer_with_errors_resynchronises() {
    // RFC 2920 pipelining: a bad command in the middle does not disturb the
    // ones around it.
    let stream: &[u8] = b"EHLO c.example\r\nMAIL FROM:<a@b.example> SIZE=x\r\n\
RCPT TO:<c@d.example>\r\nBOGUS\0\r\nRCPT TO:<>\r\nDATA\r\nQUIT\r\nNOOP";
    let mut pos = 0;
    let mut got = Vec::new();
    loop {
        match parse_command(&stream[pos..], &strict()) {
            Ok(Status::Complete((c, n))) => {
                got.push(format!("{:?}", view(&c)));
                pos += n;
            }
            Ok(Status::Partial) => break,
            Err(e) => {
                got.push(format!("{:?}", e.kind));
                pos += e.consumed;
            }
        }
    }
    assert_eq!(
        got,
        [
            "Ehlo(\"c.example\")",
            "InvalidParameter",
            "Rcpt(\"c@d.example\", RcptParams { notify: None, orcpt: None })",
            "NulByte",
            "InvalidAddress",
            "Data",
            "Quit",
        ]
    );
    assert_eq!(&stream[pos..], b"NOOP");
}

#[test]
fn one_byte_at_a_time() {
    // A read loop that receives one byte per read sees the same commands.
    let table = valid_strict();
    let mut stream = Vec::new();
    for (line, _) in &table {
        stream.extend_from_slice(&crlf(line));
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for &b in &stream {
        buf.push(b);
        if let Status::Complete((c, n)) = parse_command(&buf, &strict()).unwrap() {
            got.push(format!("{:?}", view(&c)));
            assert_eq!(n, buf.len(), "a command completes only on its LF");
            buf.clear();
        }
    }
    let expected: Vec<String> = table.iter().map(|(_, v)| format!("{v:?}")).collect();
    assert_eq!(got, expected);
}
