//! Client side and whole conversations: the reply parser, EHLO capabilities
//! and the encoders, checked against the example transcripts of RFC 5321
//! (Appendix D), RFC 2920 (pipelining), RFC 3030 (BDAT), RFC 3461 (DSN) and
//! RFC 4954 (AUTH), with both peers' halves parsed by mailstorm-proto.

use mailstorm_proto::data::{BdatReceiver, DataConfig, DataReceiver};
use mailstorm_proto::ehlo::{AuthMechanisms, Capabilities};
use mailstorm_proto::encode::{
    write_bdat, write_command, write_data, write_ehlo, write_mail_from, write_quit, write_rcpt_to,
    write_reply, write_reply_lines, DotStuffer,
};
use mailstorm_proto::reply::{parse_reply, EnhancedCode, Reply};
use mailstorm_proto::{
    parse_command, Body, Command, ErrorKind, ParserConfig, Status, DEFAULT_MAX_REPLY_LINE,
};

// ---------------------------------------------------------------------------
// Helpers

/// (code, enhanced as text, first-line text, line count) of each reply in a
/// server stream, fed one byte at a time as a client's read loop would.
fn replies_bytewise(stream: &[u8]) -> Vec<(u16, Option<String>, String, usize)> {
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for &b in stream {
        buf.push(b);
        match parse_reply(&buf, DEFAULT_MAX_REPLY_LINE) {
            Ok(Status::Complete((r, n))) => {
                assert_eq!(n, buf.len(), "a reply completes on its last LF");
                got.push(summary(&r));
                buf.clear();
            }
            Ok(Status::Partial) => {}
            Err(e) => panic!("{e:?} in {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    assert!(
        buf.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // The same stream parsed from one buffer.
    let mut whole = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let (r, n) = parse_reply(&stream[pos..], DEFAULT_MAX_REPLY_LINE)
            .unwrap()
            .complete()
            .unwrap();
        whole.push(summary(&r));
        pos += n;
    }
    assert_eq!(whole, got);
    got
}

fn summary(r: &Reply<'_>) -> (u16, Option<String>, String, usize) {
    (
        r.code,
        r.enhanced.map(|e| e.to_string()),
        String::from_utf8_lossy(r.text()).into_owned(),
        r.line_count(),
    )
}

fn rep(
    code: u16,
    enh: Option<&str>,
    text: &str,
    lines: usize,
) -> (u16, Option<String>, String, usize) {
    (code, enh.map(str::to_string), text.to_string(), lines)
}

/// What a server sees on a client stream: commands, and for DATA / BDAT the
/// message bodies, fed one byte at a time.
fn server_view(stream: &[u8]) -> Vec<String> {
    enum Mode {
        Commands,
        Data(DataReceiver, Vec<u8>),
        Bdat(BdatReceiver, Vec<u8>),
    }
    let cfg = ParserConfig::default();
    let mut mode = Mode::Commands;
    let mut buf = Vec::new();
    let mut events = Vec::new();
    for &b in stream {
        buf.push(b);
        loop {
            match &mut mode {
                Mode::Commands => match parse_command(&buf, &cfg).unwrap() {
                    Status::Partial => break,
                    Status::Complete((cmd, n)) => {
                        events.push(format!("{cmd:?}"));
                        mode = match cmd {
                            Command::Data => {
                                Mode::Data(DataReceiver::new(DataConfig::default()), Vec::new())
                            }
                            Command::Bdat { size, .. } => {
                                Mode::Bdat(BdatReceiver::new(size), Vec::new())
                            }
                            _ => Mode::Commands,
                        };
                        buf.drain(..n);
                    }
                },
                Mode::Data(rx, body) => match rx.unstuff(&buf, body) {
                    Status::Partial => {
                        buf.clear();
                        break;
                    }
                    Status::Complete(n) => {
                        assert!(!rx.stats().bare_lf && !rx.stats().bare_cr);
                        events.push(format!("body {:?}", String::from_utf8_lossy(body)));
                        buf.drain(..n);
                        mode = Mode::Commands;
                    }
                },
                Mode::Bdat(rx, body) => {
                    let (taken, done) = rx.take(&buf);
                    body.extend_from_slice(taken);
                    let n = taken.len();
                    buf.drain(..n);
                    if !done {
                        break;
                    }
                    events.push(format!("chunk {:?}", String::from_utf8_lossy(body)));
                    mode = Mode::Commands;
                }
            }
        }
    }
    assert!(buf.is_empty());
    events
}

// ---------------------------------------------------------------------------
// RFC 5321 Appendix D.1: a typical SMTP transaction scenario

const D1_SERVER: &[u8] = b"220 foo.com Simple Mail Transfer Service Ready\r\n\
250-foo.com greets bar.com\r\n\
250-8BITMIME\r\n\
250-SIZE\r\n\
250-DSN\r\n\
250 HELP\r\n\
250 OK\r\n\
250 OK\r\n\
550 No such user here\r\n\
250 OK\r\n\
354 Start mail input; end with <CRLF>.<CRLF>\r\n\
250 OK\r\n\
221 foo.com Service closing transmission channel\r\n";

const D1_CLIENT: &[u8] = b"EHLO bar.com\r\n\
MAIL FROM:<Smith@bar.com>\r\n\
RCPT TO:<Jones@foo.com>\r\n\
RCPT TO:<Green@foo.com>\r\n\
RCPT TO:<Brown@foo.com>\r\n\
DATA\r\n\
Blah blah blah...\r\n\
...etc. etc. etc.\r\n\
.\r\n\
QUIT\r\n";

#[test]
fn rfc5321_d1_server_replies() {
    assert_eq!(
        replies_bytewise(D1_SERVER),
        [
            rep(220, None, "foo.com Simple Mail Transfer Service Ready", 1),
            rep(250, None, "foo.com greets bar.com", 5),
            rep(250, None, "OK", 1),
            rep(250, None, "OK", 1),
            rep(550, None, "No such user here", 1),
            rep(250, None, "OK", 1),
            rep(354, None, "Start mail input; end with <CRLF>.<CRLF>", 1),
            rep(250, None, "OK", 1),
            rep(221, None, "foo.com Service closing transmission channel", 1),
        ]
    );
}

#[test]
fn rfc5321_d1_capabilities() {
    let ehlo = &D1_SERVER[48..];
    let (caps, n) = Capabilities::parse(ehlo).unwrap().complete().unwrap();
    assert_eq!(
        &ehlo[..n],
        b"250-foo.com greets bar.com\r\n250-8BITMIME\r\n250-SIZE\r\n250-DSN\r\n250 HELP\r\n"
    );
    assert_eq!(caps.domain, "foo.com greets bar.com");
    assert_eq!(caps.server_name(), "foo.com");
    assert!(caps.eight_bit_mime && caps.dsn);
    // RFC 1870: SIZE without a number means no fixed limit.
    assert_eq!(caps.size, Some(0));
    assert!(!caps.pipelining && !caps.chunking && !caps.starttls && !caps.smtputf8);
    assert!(!caps.has_auth());
    assert_eq!(caps.unknown, ["HELP"]);
}

#[test]
fn rfc5321_d1_client_commands() {
    assert_eq!(
        server_view(D1_CLIENT),
        [
            "Ehlo { domain: \"bar.com\" }".to_string(),
            format!("{:?}", mail_cmd(b"MAIL FROM:<Smith@bar.com>\r\n")),
            format!("{:?}", mail_cmd(b"RCPT TO:<Jones@foo.com>\r\n")),
            format!("{:?}", mail_cmd(b"RCPT TO:<Green@foo.com>\r\n")),
            format!("{:?}", mail_cmd(b"RCPT TO:<Brown@foo.com>\r\n")),
            "Data".to_string(),
            // RFC 5321 §4.5.2: "...etc." started with a dot, so it was sent
            // as "...etc." with one extra dot, which the receiver removes.
            "body \"Blah blah blah...\\r\\n..etc. etc. etc.\\r\\n\"".to_string(),
            "Quit".to_string(),
        ]
    );
}

fn mail_cmd(line: &[u8]) -> Command<'_> {
    parse_command(line, &ParserConfig::default())
        .unwrap()
        .complete()
        .unwrap()
        .0
}

// ---------------------------------------------------------------------------
// RFC 2920 §3.2: pipelining

#[test]
fn rfc2920_pipelined_transaction() {
    let client: &[u8] = b"HELO dbc.mtview.ca.us\r\n\
MAIL FROM:<mrose@dbc.mtview.ca.us>\r\n\
RCPT TO:<ned@innosoft.com>\r\n\
RCPT TO:<dan@innosoft.com>\r\n\
RCPT TO:<kvc@innosoft.com>\r\n\
DATA\r\n\
Hi\r\n\
.\r\n\
QUIT\r\n";
    let events = server_view(client);
    assert_eq!(events.len(), 8);
    assert_eq!(events[0], "Helo { domain: \"dbc.mtview.ca.us\" }");
    assert!(events[1].contains("mrose@dbc.mtview.ca.us"));
    assert!(events[4].contains("kvc@innosoft.com"));
    assert_eq!(events[6], "body \"Hi\\r\\n\"");
    // The whole pipelined group sits in one buffer: parse it in sequence.
    let mut pos = 0;
    for _ in 0..6 {
        let (_, n) = parse_command(&client[pos..], &ParserConfig::default())
            .unwrap()
            .complete()
            .unwrap();
        pos += n;
    }
    assert!(client[pos..].starts_with(b"Hi\r\n"));

    let server: &[u8] = b"220 innosoft.com SMTP service ready\r\n\
250 innosoft.com\r\n\
250 sender <mrose@dbc.mtview.ca.us> OK\r\n\
250 recipient <ned@innosoft.com> OK\r\n\
250 recipient <dan@innosoft.com> OK\r\n\
250 recipient <kvc@innosoft.com> OK\r\n\
354 enter mail, end with line containing only \".\"\r\n\
250 message sent\r\n\
221 goodbye\r\n";
    let r = replies_bytewise(server);
    let codes: Vec<u16> = r.iter().map(|x| x.0).collect();
    assert_eq!(codes, [220, 250, 250, 250, 250, 250, 354, 250, 221]);
    assert_eq!(r[6].2, "enter mail, end with line containing only \".\"");
}

// ---------------------------------------------------------------------------
// RFC 3030 §4.2: BDAT (here as a single chunk and as two)

#[test]
fn rfc3030_bdat_chunks() {
    let body: &[u8] = b"To: Susan@Random.com\r\nFrom: Sam@Random.com\r\n\r\nHi\r\n.\r\n";
    let mut client =
        b"MAIL FROM:<Sam@Random.com> BODY=BINARYMIME\r\nRCPT TO:<Susan@Random.com>\r\n".to_vec();
    write_bdat(&mut client, 20, false);
    client.extend_from_slice(&body[..20]);
    write_bdat(&mut client, (body.len() - 20) as u64, true);
    client.extend_from_slice(&body[20..]);
    write_quit(&mut client);
    let events = server_view(&client);
    assert_eq!(events[2], "Bdat { size: 20, last: false }");
    assert_eq!(
        events[3],
        format!("chunk {:?}", String::from_utf8_lossy(&body[..20]))
    );
    assert_eq!(
        events[4],
        format!("Bdat {{ size: {}, last: true }}", body.len() - 20)
    );
    // No dot handling in BDAT: the ".\r\n" is data.
    assert_eq!(
        events[5],
        format!("chunk {:?}", String::from_utf8_lossy(&body[20..]))
    );
    assert_eq!(events[6], "Quit");
    assert!(events[0].contains("BinaryMime"));
}

// ---------------------------------------------------------------------------
// RFC 3461 and RFC 4954 examples

#[test]
fn rfc3461_dsn_parameters() {
    let cmd = mail_cmd(b"MAIL FROM:<Alice@Pure.example.com> RET=HDRS ENVID=QQ314159\r\n");
    let Command::Mail { params, .. } = cmd else {
        panic!()
    };
    assert_eq!(params.envid, Some("QQ314159"));
    let cmd = mail_cmd(
        b"RCPT TO:<Dana@Ivory.example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Dana@Ivory.example.com\r\n",
    );
    let Command::Rcpt { to, params } = cmd else {
        panic!()
    };
    assert_eq!(to.as_str(), "Dana@Ivory.example.com");
    let n = params.notify.unwrap();
    assert!(n.success && n.failure && !n.delay && !n.never);
    assert_eq!(params.orcpt, Some(("rfc822", "Dana@Ivory.example.com")));
}

#[test]
fn rfc4954_auth_exchange() {
    // "334 " with an empty challenge, then the credentials, then 235.
    let server: &[u8] = b"250-smtp.example.com\r\n250 AUTH GSSAPI DIGEST-MD5 PLAIN\r\n\
334 \r\n235 2.7.0 Authentication successful\r\n";
    let r = replies_bytewise(server);
    assert_eq!(r[1], rep(334, None, "", 1));
    assert_eq!(
        r[2],
        rep(235, Some("2.7.0"), "Authentication successful", 1)
    );
    let (caps, _) = Capabilities::parse(server).unwrap().complete().unwrap();
    assert_eq!(
        caps.auth,
        AuthMechanisms {
            plain: true,
            login: false,
            cram_md5: false
        }
    );
    assert_eq!(caps.auth_other, ["GSSAPI", "DIGEST-MD5"]);
    for (line, mech, ir) in [
        (
            &b"AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=\r\n"[..],
            "PLAIN",
            Some("dGVzdAB0ZXN0ADEyMzQ="),
        ),
        (b"AUTH PLAIN\r\n", "PLAIN", None),
        (b"AUTH EXTERNAL =\r\n", "EXTERNAL", Some("")),
    ] {
        assert_eq!(
            mail_cmd(line),
            Command::Auth {
                mechanism: mech,
                initial_response: ir
            }
        );
        let mut out = Vec::new();
        write_command(&mut out, &mail_cmd(line));
        assert_eq!(out, line);
    }
}

// ---------------------------------------------------------------------------
// Reply parser details (RFC 5321 §4.2, RFC 3463)

#[test]
fn enhanced_codes() {
    // (reply, enhanced, text)
    let cases: &[(&[u8], Option<EnhancedCode>, &[u8])] = &[
        (b"550 5.1.1 User unknown\r\n", ec(5, 1, 1), b"User unknown"),
        (b"452 4.2.2 Mailbox full\r\n", ec(4, 2, 2), b"Mailbox full"),
        (
            b"250 2.0.0 Ok: queued as 12345\r\n",
            ec(2, 0, 0),
            b"Ok: queued as 12345",
        ),
        (
            b"554 5.7.1 <x@y>: Relay access denied\r\n",
            ec(5, 7, 1),
            b"<x@y>: Relay access denied",
        ),
        (b"550 5.999.999 max\r\n", ec(5, 999, 999), b"max"),
        (b"250 2.1.5\r\n", ec(2, 1, 5), b""),
        // The class must agree with the reply code (RFC 3463 §2).
        (b"250 5.1.1 odd\r\n", None, b"5.1.1 odd"),
        (b"550 2.0.0 odd\r\n", None, b"2.0.0 odd"),
        // Not a status code: subject/detail are 1*3 digits, a space follows.
        (b"250 2.1000.0 x\r\n", None, b"2.1000.0 x"),
        (b"250 2.1.0x\r\n", None, b"2.1.0x"),
        (b"250 2.1 x\r\n", None, b"2.1 x"),
        (b"250 2. x\r\n", None, b"2. x"),
        (b"250 .2.1.0 x\r\n", None, b".2.1.0 x"),
    ];
    for &(input, enhanced, text) in cases {
        let (r, n) = parse_reply(input, DEFAULT_MAX_REPLY_LINE)
            .unwrap()
            .complete()
            .unwrap();
        let name = String::from_utf8_lossy(input);
        assert_eq!(n, input.len(), "{name}");
        assert_eq!(r.enhanced, enhanced, "{name}");
        assert_eq!(r.text(), text, "{name}");
    }
}

fn ec(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode {
        class,
        subject,
        detail,
    })
}

/// RFC 3463 §3.1: `class = "2" / "4" / "5"`, and `EnhancedCode::class` is
/// documented as 2, 4 or 5. A 354 reply starting "3.0.0" carries no
/// enhanced status code.
#[test]
fn class_3_is_not_an_enhanced_status_code() {
    let (r, _) = parse_reply(b"354 3.0.0 End data with <CR><LF>.<CR><LF>\r\n", 512)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(r.code, 354);
    assert_eq!(r.enhanced, None);
    assert_eq!(r.text(), b"3.0.0 End data with <CR><LF>.<CR><LF>");
}

#[test]
fn reply_classes() {
    for (input, class, positive, transient, permanent) in [
        (&b"220 ready\r\n"[..], 2, true, false, false),
        (b"354 go\r\n", 3, true, false, false),
        (b"421 4.3.2 closing\r\n", 4, false, true, false),
        (b"450 try later\r\n", 4, false, true, false),
        (b"554 5.0.0 no\r\n", 5, false, false, true),
    ] {
        let (r, _) = parse_reply(input, 512).unwrap().complete().unwrap();
        assert_eq!(
            (
                r.class(),
                r.is_positive(),
                r.is_transient(),
                r.is_permanent()
            ),
            (class, positive, transient, permanent),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn malformed_replies_are_errors_not_hangs() {
    use ErrorKind::*;
    // (input, kind, consumed): reported as soon as the bad line is complete,
    // even when more lines would be expected.
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        (b"hello\r\n", MalformedReply, 7),
        (b"25\r\n", MalformedReply, 4),
        (b"\r\n", MalformedReply, 2),
        (b"1xx hi\r\n", MalformedReply, 8),
        (b"150 hi\r\n", MalformedReply, 8),
        (b"650 hi\r\n", MalformedReply, 8),
        (b"2500 hi\r\n", MalformedReply, 9),
        (b"250_hi\r\n", MalformedReply, 8),
        (b"250-a\r\n251 b\r\n", MalformedReply, 14),
        (b"250-a\r\n550-b\r\n", MalformedReply, 14),
        (b"250-a\r\nxyz\r\n", MalformedReply, 12),
        (b"250 a\0b\r\n", NulByte, 9),
        (b"250 a\rb\r\n", BareCr, 9),
    ];
    for &(input, kind, consumed) in cases {
        let e = parse_reply(input, DEFAULT_MAX_REPLY_LINE).unwrap_err();
        let name = String::from_utf8_lossy(input);
        assert_eq!(
            (e.kind, e.consumed, e.line_complete),
            (kind, consumed, true),
            "{name}"
        );
        assert!(e.offset < consumed, "{name}");
    }
    // RFC 5321 §4.5.3.1.5: reply lines are at most 512 octets.
    let mut long = b"250 ".to_vec();
    long.resize(512, b'x');
    let e = parse_reply(&long, DEFAULT_MAX_REPLY_LINE).unwrap_err();
    assert_eq!(
        (e.kind, e.offset, e.line_complete),
        (LineTooLong, 512, false)
    );
    let mut ok = b"250 ".to_vec();
    ok.resize(510, b'x');
    ok.extend_from_slice(b"\r\n");
    assert!(parse_reply(&ok, DEFAULT_MAX_REPLY_LINE)
        .unwrap()
        .is_complete());
}

#[test]
fn every_prefix_of_a_reply_is_partial() {
    for input in [D1_SERVER, b"250-a\n250-b\n250 c\n", b"334 \r\n", b"250\r\n"] {
        let (_, n) = parse_reply(input, 512).unwrap().complete().unwrap();
        for k in 0..n {
            assert_eq!(parse_reply(&input[..k], 512), Ok(Status::Partial), "{k}");
        }
    }
}

// ---------------------------------------------------------------------------
// Capabilities

#[test]
fn capabilities_all_keywords() {
    let (caps, _) = Capabilities::parse(
        b"250-mx.example.net at your service\r\n250-pipelining\r\n250-SIZE 35882577\r\n\
250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250-STARTTLS\r\n\
250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-AUTH LOGIN PLAIN XOAUTH2 CRAM-MD5\r\n\
250-X-EXPS GSSAPI NTLM\r\n250 ETRN\r\n",
    )
    .unwrap()
    .complete()
    .unwrap();
    assert_eq!(caps.server_name(), "mx.example.net");
    assert!(caps.pipelining, "keywords are case-insensitive");
    assert_eq!(caps.size, Some(35_882_577));
    assert!(caps.eight_bit_mime && caps.smtputf8 && caps.chunking && caps.binary_mime);
    assert!(caps.starttls && caps.enhanced_status_codes && caps.dsn);
    assert_eq!(
        caps.auth,
        AuthMechanisms {
            plain: true,
            login: true,
            cram_md5: true
        }
    );
    assert_eq!(caps.auth_other, ["XOAUTH2"]);
    assert_eq!(caps.unknown, ["X-EXPS GSSAPI NTLM", "ETRN"]);
}

#[test]
fn capabilities_of_a_one_line_reply_and_errors() {
    let (caps, _) = Capabilities::parse(b"250 tiny.example\r\n")
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(caps.domain, "tiny.example");
    assert_eq!(caps.size, None);
    assert!(caps.unknown.is_empty() && !caps.pipelining);
    assert_eq!(
        Capabilities::parse(b"250-a\r\n250-SIZE 1"),
        Ok(Status::Partial)
    );
    assert!(Capabilities::parse(b"250-a\r\n550 SIZE\r\n").is_err());
}

// ---------------------------------------------------------------------------
// Encoders

#[test]
fn encoded_client_commands() {
    let mut out = Vec::new();
    write_ehlo(&mut out, "bar.com");
    write_mail_from(
        &mut out,
        "Smith@bar.com",
        Some(1000),
        Some(Body::EightBitMime),
        false,
    );
    write_mail_from(&mut out, "", None, None, false);
    write_rcpt_to(&mut out, "Jones@foo.com");
    write_data(&mut out);
    write_bdat(&mut out, 86, true);
    write_quit(&mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "EHLO bar.com\r\nMAIL FROM:<Smith@bar.com> SIZE=1000 BODY=8BITMIME\r\nMAIL FROM:<>\r\n\
RCPT TO:<Jones@foo.com>\r\nDATA\r\nBDAT 86 LAST\r\nQUIT\r\n"
    );
    // Line breaks in arguments cannot inject commands.
    let mut out = Vec::new();
    write_ehlo(&mut out, "x\r\nRSET");
    assert_eq!(out, b"EHLO x  RSET\r\n");
}

#[test]
fn encoded_replies() {
    let mut out = Vec::new();
    write_reply(&mut out, 250, Some("2.1.0"), "Ok");
    write_reply(&mut out, 550, Some("5.1.1"), "No such user\nhere");
    write_reply(&mut out, 221, None, "Bye");
    write_reply(&mut out, 250, None, "");
    write_reply(&mut out, 451, None, "a\rb");
    write_reply_lines(
        &mut out,
        250,
        None,
        &["foo.com greets bar.com", "8BITMIME", "HELP"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "250 2.1.0 Ok\r\n550-5.1.1 No such user\r\n550 5.1.1 here\r\n221 Bye\r\n250\r\n\
451 a b\r\n250-foo.com greets bar.com\r\n250-8BITMIME\r\n250 HELP\r\n"
    );
    let r = replies_bytewise(&out);
    assert_eq!(r[1], rep(550, Some("5.1.1"), "No such user", 2));
    assert_eq!(r[5], rep(250, None, "foo.com greets bar.com", 3));
}

#[test]
fn dot_stuffing_rules() {
    // RFC 5321 §4.5.2: a line starting with "." gets one more; lines end in
    // CRLF; the body ends with CRLF "." CRLF.
    let cases: &[(&[u8], &[u8])] = &[
        (b"", b".\r\n"),
        (b"Hi\r\n", b"Hi\r\n.\r\n"),
        (b"Hi", b"Hi\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"...etc.\r\n", b"....etc.\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
        (b"a\r.\r", b"a\r\n..\r\n.\r\n"),
        (b"mid.dot\r\n", b"mid.dot\r\n.\r\n"),
    ];
    for &(body, wire) in cases {
        let mut out = Vec::new();
        DotStuffer::encode(body, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(wire),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        // One byte at a time gives the same.
        let mut s = DotStuffer::new();
        let mut bytewise = Vec::new();
        for b in body {
            s.push(std::slice::from_ref(b), &mut bytewise);
        }
        s.finish(&mut bytewise);
        assert_eq!(bytewise, out);
    }
}

#[test]
fn full_conversation_encoded_and_parsed() {
    // Client side written with the encoders, server side with write_reply;
    // each side parsed by the other's parser.
    let body: &[u8] = b"Subject: test\n\n.hidden\n..two\nend";
    let mut client = Vec::new();
    write_ehlo(&mut client, "client.example");
    write_mail_from(
        &mut client,
        "a@client.example",
        Some(body.len() as u64),
        None,
        false,
    );
    write_rcpt_to(&mut client, "b@server.example");
    write_data(&mut client);
    DotStuffer::encode(body, &mut client);
    write_quit(&mut client);
    let events = server_view(&client);
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[4],
        "body \"Subject: test\\r\\n\\r\\n.hidden\\r\\n..two\\r\\nend\\r\\n\""
    );

    let mut server = Vec::new();
    write_reply(&mut server, 220, None, "server.example ESMTP");
    write_reply_lines(
        &mut server,
        250,
        None,
        &["server.example", "PIPELINING", "SIZE 1000"],
    );
    write_reply(&mut server, 250, Some("2.1.0"), "Ok");
    write_reply(&mut server, 250, Some("2.1.5"), "Ok");
    write_reply(&mut server, 354, None, "End data with <CR><LF>.<CR><LF>");
    write_reply(&mut server, 250, Some("2.0.0"), "Ok: queued");
    write_reply(&mut server, 221, Some("2.0.0"), "Bye");
    let r = replies_bytewise(&server);
    let codes: Vec<u16> = r.iter().map(|x| x.0).collect();
    assert_eq!(codes, [220, 250, 250, 250, 354, 250, 221]);
    assert_eq!(r[3], rep(250, Some("2.1.5"), "Ok", 1));
    let ehlo_start = server.windows(4).position(|w| w == b"250-").unwrap();
    let (caps, _) = Capabilities::parse(&server[ehlo_start..])
        .unwrap()
        .complete()
        .unwrap();
    assert!(caps.pipelining);
    assert_eq!(caps.size, Some(1000));
}
