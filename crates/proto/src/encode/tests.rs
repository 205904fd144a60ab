use super::*;
use crate::address::parse_mailbox;
use crate::reply::parse_reply;
use crate::{
    parse_command, Body, Command, MailParams, Notify, ParserConfig, Path, RcptParams, Ret, Status,
    DEFAULT_MAX_REPLY_LINE,
};

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
