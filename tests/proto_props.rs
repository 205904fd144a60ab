//! Property tests for mailstorm-proto:
//!
//! - split invariance: feeding any input whole, split at any point, or in
//!   arbitrarily many pieces gives the same results (commands, DATA in both
//!   modes, replies);
//! - encode → parse round trips: `write_command` → `parse_command`,
//!   `write_reply`/`write_reply_lines` → `parse_reply`, `DotStuffer` →
//!   `DataReceiver::unstuff`;
//! - arbitrary bytes never panic any parser, and errors always make progress.
//!
//! Case counts: 256 per property by default (fewer for the heaviest ones);
//! the `PROPTEST_CASES` environment variable overrides all of them.

use mailstorm_proto::data::{DataConfig, DataReceiver, DataStats};
use mailstorm_proto::ehlo::Capabilities;
use mailstorm_proto::encode::{write_command, write_reply, write_reply_lines, DotStuffer};
use mailstorm_proto::line::skip_line;
use mailstorm_proto::reply::parse_reply;
use mailstorm_proto::{
    parse_command, Body, Command, Error, MailParams, Notify, ParserConfig, Path, RcptParams, Ret,
    Status, DEFAULT_MAX_REPLY_LINE,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// `cases` unless `PROPTEST_CASES` is set (which `ProptestConfig::default()`
/// reads, but `ProptestConfig::with_cases` would override).
fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        base
    } else {
        ProptestConfig { cases, ..base }
    }
}

// ---------------------------------------------------------------------------
// Strategies: mailboxes, domains, parameters, commands

fn ldh_label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    vec(ldh_label(), 1..4).prop_map(|l| l.join("."))
}

fn utf8_domain() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            ldh_label(),
            "[a-zäöüß]{0,3}[äöü][a-z]{0,3}",
            "[例子测试]{1,3}"
        ],
        1..4,
    )
    .prop_map(|l| l.join("."))
}

fn address_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!("[{}.{}.{}.{}]", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|g| {
            let parts: Vec<String> = g.iter().map(|x| format!("{x:x}")).collect();
            format!("[IPv6:{}]", parts.join(":"))
        }),
        Just("[IPv6:2001:db8::1]".to_string()),
    ]
}

/// RFC 5321 Local-part: Dot-string or Quoted-string.
fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec("[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,8}", 1..4).prop_map(|a| a.join(".")),
        1 => "\"([ !#-\\[\\]-~]|\\\\[ -~]){0,10}\"",
    ]
}

fn utf8_local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zé用户]{0,4}[é用户][a-z]{0,3}",
        "\"[a-z ]{0,3}[äö用][a-z ]{0,3}\""
    ]
}

/// (mailbox, is_ascii)
fn mailbox(utf8: bool) -> BoxedStrategy<String> {
    let ascii = (
        local_part(),
        prop_oneof![3 => domain(), 1 => address_literal()],
    )
        .prop_map(|(l, d)| format!("{l}@{d}"));
    if utf8 {
        prop_oneof![
            ascii,
            (utf8_local_part(), domain()).prop_map(|(l, d)| format!("{l}@{d}")),
            (local_part(), utf8_domain()).prop_map(|(l, d)| format!("{l}@{d}")),
        ]
        .boxed()
    } else {
        ascii.boxed()
    }
}

/// xtext-ish parameter values: any printable ASCII but space.
fn param_value() -> impl Strategy<Value = String> {
    "[!-~]{1,24}"
}

fn notify() -> impl Strategy<Value = Notify> {
    prop_oneof![
        Just(Notify {
            never: true,
            ..Notify::default()
        }),
        (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_filter("NOTIFY needs a value", |&(s, f, d)| s || f || d)
            .prop_map(|(success, failure, delay)| Notify {
                never: false,
                success,
                failure,
                delay,
            }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::SevenBit),
        Just(Body::EightBitMime),
        Just(Body::BinaryMime)
    ]
}

fn ret() -> impl Strategy<Value = Ret> {
    prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]
}

/// An owned description of a command; [`Spec::command`] borrows from it.
#[derive(Debug, Clone)]
enum Spec {
    Ehlo(String),
    Helo(String),
    Lhlo(String),
    Mail {
        from: Option<String>,
        size: Option<u64>,
        body: Option<Body>,
        smtputf8: bool,
        ret: Option<Ret>,
        envid: Option<String>,
        auth: Option<String>,
    },
    Rcpt {
        to: String,
        notify: Option<Notify>,
        orcpt: Option<(String, String)>,
    },
    Data,
    Bdat(u64, bool),
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help(Option<String>),
    StartTls,
    Auth(String, Option<String>),
    Unknown(String, String),
}

const KNOWN_VERBS: [&str; 15] = [
    "EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
    "HELP", "STARTTLS", "AUTH",
];

fn helo_domain() -> impl Strategy<Value = String> {
    prop_oneof![3 => domain(), 1 => address_literal(), 1 => utf8_domain()]
}

fn text_arg() -> impl Strategy<Value = String> {
    "[ -~é用]{0,20}[!-~é用]"
}

fn spec() -> impl Strategy<Value = Spec> {
    let mail = (
        prop::option::weighted(0.9, mailbox(true)),
        any::<bool>(),
        prop::option::of(any::<u64>()),
        prop::option::of(body()),
        prop::option::of(ret()),
        prop::option::of(param_value()),
        prop::option::of(param_value()),
    )
        .prop_map(|(from, utf8, size, body, ret, envid, auth)| {
            // SMTPUTF8 is required for a non-ASCII reverse-path.
            let smtputf8 = utf8 || from.as_ref().is_some_and(|f| !f.is_ascii());
            Spec::Mail {
                from,
                size,
                body,
                smtputf8,
                ret,
                envid,
                auth,
            }
        });
    let rcpt = (
        prop_oneof![9 => mailbox(true), 1 => Just("Postmaster".to_string())],
        prop::option::of(notify()),
        prop::option::of(("[a-zA-Z0-9-]{1,10}", "[!-~]{1,30}")),
    )
        .prop_map(|(to, notify, orcpt)| Spec::Rcpt { to, notify, orcpt });
    let unknown = (
        "[A-Za-z][A-Za-z0-9-]{0,11}".prop_filter("known verb", |v| {
            !KNOWN_VERBS.iter().any(|k| k.eq_ignore_ascii_case(v))
        }),
        "([ -~]{0,30})",
    )
        .prop_map(|(v, a)| Spec::Unknown(v, a));
    prop_oneof![
        1 => helo_domain().prop_map(Spec::Ehlo),
        1 => helo_domain().prop_map(Spec::Helo),
        1 => helo_domain().prop_map(Spec::Lhlo),
        4 => mail,
        4 => rcpt,
        1 => Just(Spec::Data),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(n, l)| Spec::Bdat(n, l)),
        1 => Just(Spec::Rset),
        1 => Just(Spec::Noop),
        1 => Just(Spec::Quit),
        1 => text_arg().prop_map(Spec::Vrfy),
        1 => text_arg().prop_map(Spec::Expn),
        1 => prop::option::of(text_arg()).prop_map(Spec::Help),
        1 => Just(Spec::StartTls),
        1 => (
            "[A-Z0-9_-]{1,20}",
            prop::option::of(prop_oneof![
                Just(String::new()),
                "[A-Za-z0-9+/]{1,40}={0,2}"
            ])
        )
            .prop_map(|(m, ir)| Spec::Auth(m, ir)),
        1 => unknown,
    ]
}

impl Spec {
    /// The mailbox whose `Address` we need, if any.
    fn mailbox(&self) -> Option<&str> {
        match self {
            Spec::Mail { from, .. } => from.as_deref(),
            Spec::Rcpt { to, .. } => Some(to),
            _ => None,
        }
    }

    /// `Address` has no public constructor: get one by parsing the mailbox
    /// in a RCPT line (which also admits `Postmaster`), then check it.
    fn addr_line(&self) -> Vec<u8> {
        self.mailbox()
            .map(|m| format!("RCPT TO:<{m}>\r\n").into_bytes())
            .unwrap_or_default()
    }

    fn command<'a>(&'a self, addr_line: &'a [u8]) -> Command<'a> {
        let path = || -> Path<'a> {
            match parse_command(addr_line, &ParserConfig::default()) {
                Ok(Status::Complete((Command::Rcpt { to, .. }, _))) => {
                    assert_eq!(Some(to.as_str()), self.mailbox());
                    to
                }
                other => panic!("generated mailbox {:?}: {other:?}", self.mailbox()),
            }
        };
        match self {
            Spec::Ehlo(d) => Command::Ehlo { domain: d },
            Spec::Helo(d) => Command::Helo { domain: d },
            Spec::Lhlo(d) => Command::Lhlo { domain: d },
            Spec::Mail {
                from,
                size,
                body,
                smtputf8,
                ret,
                envid,
                auth,
            } => Command::Mail {
                from: if from.is_some() { path() } else { Path::Null },
                params: MailParams {
                    size: *size,
                    body: *body,
                    smtputf8: *smtputf8,
                    ret: *ret,
                    envid: envid.as_deref(),
                    auth: auth.as_deref(),
                },
            },
            Spec::Rcpt { notify, orcpt, .. } => Command::Rcpt {
                to: path(),
                params: RcptParams {
                    notify: *notify,
                    orcpt: orcpt.as_ref().map(|(t, a)| (t.as_str(), a.as_str())),
                },
            },
            Spec::Data => Command::Data,
            Spec::Bdat(size, last) => Command::Bdat {
                size: *size,
                last: *last,
            },
            Spec::Rset => Command::Rset,
            Spec::Noop => Command::Noop,
            Spec::Quit => Command::Quit,
            Spec::Vrfy(a) => Command::Vrfy { arg: a },
            Spec::Expn(a) => Command::Expn { arg: a },
            Spec::Help(t) => Command::Help {
                topic: t.as_deref(),
            },
            Spec::StartTls => Command::StartTls,
            Spec::Auth(m, ir) => Command::Auth {
                mechanism: m,
                initial_response: ir.as_deref(),
            },
            Spec::Unknown(v, a) => Command::Unknown {
                verb: v.as_bytes(),
                args: a.as_bytes(),
            },
        }
    }

    fn encode(&self) -> Vec<u8> {
        let line = self.addr_line();
        let mut out = Vec::new();
        write_command(&mut out, &self.command(&line));
        out
    }
}

// ---------------------------------------------------------------------------
// Drivers: what a server/client read loop sees for a stream fed in pieces

/// Feeds `input` in pieces (cut positions) to a read loop, the way a server
/// or client does: parse, drop `consumed`, skip to the next LF after a
/// line-too-long without its end. `parse` describes a complete item and
/// returns its length. Returns the events and what is left over.
fn stream_events(
    input: &[u8],
    cuts: &[usize],
    mut parse: impl FnMut(&[u8]) -> Result<Status<(String, usize)>, Error>,
) -> (Vec<String>, usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut events = Vec::new();
    let mut pos = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.sort_unstable();
    ends.push(input.len());
    for end in ends {
        buf.extend_from_slice(&input[pos.min(end)..end]);
        pos = pos.max(end);
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
            match parse(&buf) {
                Ok(Status::Partial) => break,
                Ok(Status::Complete((event, n))) => {
                    assert!(n > 0 && n <= buf.len());
                    events.push(format!("{event} +{n}"));
                    buf.drain(..n);
                }
                Err(e) => {
                    check_error(&e, buf.len());
                    events.push(format!("{:?}@{}", e.kind, e.offset));
                    skipping = !e.line_complete;
                    buf.drain(..e.consumed);
                }
            }
        }
    }
    (events, buf.len() + usize::from(skipping) * 1_000_000)
}

/// A command stream, parsed as a server does.
fn command_events(input: &[u8], cuts: &[usize], cfg: &ParserConfig) -> (Vec<String>, usize) {
    stream_events(input, cuts, |buf| {
        Ok(match parse_command(buf, cfg)? {
            Status::Partial => Status::Partial,
            Status::Complete((cmd, n)) => Status::Complete((format!("{cmd:?}"), n)),
        })
    })
}

/// A reply stream, parsed as a client does.
fn reply_events(input: &[u8], cuts: &[usize]) -> (Vec<String>, usize) {
    stream_events(input, cuts, |buf| {
        Ok(match parse_reply(buf, DEFAULT_MAX_REPLY_LINE)? {
            Status::Partial => Status::Partial,
            Status::Complete((r, n)) => {
                assert_eq!(r.raw().len(), n);
                let lines: Vec<&[u8]> = r.lines().collect();
                let event = format!(
                    "{} {:?} {:?} {:?}",
                    r.code,
                    r.enhanced,
                    String::from_utf8_lossy(r.text()),
                    lines
                );
                Status::Complete((event, n))
            }
        })
    })
}

/// Errors always make progress and stay inside the buffer.
fn check_error(e: &Error, len: usize) {
    assert!(e.consumed > 0, "{e:?}: no progress");
    assert!(e.consumed <= len, "{e:?}: consumed past the buffer ({len})");
    assert!(e.offset <= e.consumed, "{e:?}");
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DataOutcome {
    out: Vec<u8>,
    end: Option<usize>,
    stats: DataStats,
}

fn data_feed(input: &[u8], cuts: &[usize], cfg: DataConfig, unstuff: bool) -> DataOutcome {
    let mut rx = DataReceiver::new(cfg);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.sort_unstable();
    ends.push(input.len());
    for end in ends {
        let chunk = &input[pos.min(end)..end];
        let status = if unstuff {
            rx.unstuff(chunk, &mut out)
        } else {
            rx.discard(chunk)
        };
        if cfg.max_size != 0 {
            assert!(out.len() as u64 <= cfg.max_size);
        }
        if let Status::Complete(n) = status {
            assert!(n >= 1 && n <= chunk.len());
            return DataOutcome {
                out,
                end: Some(pos.min(end) + n),
                stats: rx.stats(),
            };
        }
        pos = pos.max(end);
    }
    DataOutcome {
        out,
        end: None,
        stats: rx.stats(),
    }
}

// ---------------------------------------------------------------------------
// Input strategies for the split tests

/// Bytes biased towards the ones that matter to the parsers.
fn smtp_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'\r'),
        3 => Just(b'\n'),
        2 => Just(b'.'),
        1 => Just(b' '),
        1 => Just(0u8),
        1 => Just(b'-'),
        2 => b'0'..=b'9',
        8 => any::<u8>(),
    ]
}

/// A command stream: valid commands, lenient-only forms, garbage and long
/// lines.
fn command_stream() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        6 => spec().prop_map(|s| s.encode()),
        1 => vec(smtp_byte(), 0..40),
        1 => Just(b"MAIL FROM: <a@b.example>\n".to_vec()),
        1 => (300usize..700).prop_map(|n| {
            let mut v = b"NOOP ".to_vec();
            v.resize(n, b'x');
            v.extend_from_slice(b"\r\n");
            v
        }),
    ];
    vec(segment, 0..12).prop_map(|s| s.concat())
}

fn reply_line() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-zA-Zé][ -~\té€]{0,60}"]
}

#[derive(Debug, Clone)]
struct ReplySpec {
    code: u16,
    enhanced: Option<String>,
    lines: Vec<String>,
}

fn reply_spec() -> impl Strategy<Value = ReplySpec> {
    (
        200u16..600,
        prop::option::of((0u16..1000, 0u16..1000)),
        vec(reply_line(), 1..6),
    )
        .prop_map(|(code, enh, lines)| ReplySpec {
            code,
            // RFC 3463 has no class 3: a 3xx reply carries no enhanced code.
            enhanced: enh
                .filter(|_| code / 100 != 3)
                .map(|(s, d)| format!("{}.{s}.{d}", code / 100)),
            lines,
        })
}

impl ReplySpec {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        write_reply_lines(&mut out, self.code, self.enhanced.as_deref(), &lines);
        out
    }
}

fn reply_stream() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        6 => reply_spec().prop_map(|r| r.encode()),
        1 => vec(smtp_byte(), 0..40),
        1 => Just(b"250-a\n250-b\r\n250 c\n".to_vec()),
        1 => (300usize..700).prop_map(|n| {
            let mut v = b"250 ".to_vec();
            v.resize(n, b'x');
            v.extend_from_slice(b"\r\n");
            v
        }),
    ];
    vec(segment, 0..10).prop_map(|s| s.concat())
}

fn data_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(smtp_byte(), 0..400),
        // Long enough for the 64-byte SIMD chunks, with some terminators.
        (vec(smtp_byte(), 0..1500), vec(any::<Index>(), 0..3)).prop_map(|(mut b, ends)| {
            for i in ends {
                let at = i.index(b.len() + 1);
                b.splice(at..at, b"\r\n.\r\n".iter().copied());
            }
            b
        }),
    ]
}

/// RFC 5321 line breaks are CRLF: a bare CR or LF becomes CRLF, and a
/// non-empty body gets a final CRLF.
fn crlf_normalise(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

const STRICT: DataConfig = DataConfig {
    max_size: 0,
    strict: true,
};

fn data_configs() -> [DataConfig; 4] {
    [
        STRICT,
        DataConfig {
            max_size: 0,
            strict: false,
        },
        DataConfig {
            max_size: 100,
            strict: true,
        },
        DataConfig {
            max_size: 37,
            strict: false,
        },
    ]
}

fn cuts(max_len: usize) -> impl Strategy<Value = Vec<usize>> {
    vec(0..max_len + 1, 0..24)
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn command_round_trip(spec in spec()) {
        let line = spec.addr_line();
        let cmd = spec.command(&line);
        let mut out = Vec::new();
        write_command(&mut out, &cmd);
        prop_assert!(out.ends_with(b"\r\n"));
        prop_assert!(out.len() <= 512, "{} bytes", out.len());
        let parsed = parse_command(&out, &ParserConfig::default());
        prop_assert_eq!(
            parsed,
            Ok(Status::Complete((cmd, out.len()))),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        // Lenient parsing reads what a strict encoder writes the same way,
        // except that it trims trailing white space from the line.
        let trailing_space = matches!(out[..out.len() - 2].last(), Some(b' ' | b'\t'));
        if !trailing_space {
            let lenient = parse_command(&out, &ParserConfig::lenient(512));
            prop_assert_eq!(lenient, Ok(Status::Complete((cmd, out.len()))));
        }
    }

    #[test]
    fn parsed_commands_reencode_identically(input in command_stream()) {
        // Whatever the parser accepts (strictly or leniently), the encoder
        // writes as a strict line that parses back to the same command.
        for cfg in [ParserConfig::default(), ParserConfig::lenient(512)] {
            let mut buf = &input[..];
            loop {
                let n = match parse_command(buf, &cfg) {
                    Ok(Status::Complete((cmd, n))) => {
                        let mut out = Vec::new();
                        write_command(&mut out, &cmd);
                        let again = parse_command(&out, &ParserConfig::strict(1 << 16));
                        prop_assert_eq!(
                            again,
                            Ok(Status::Complete((cmd, out.len()))),
                            "{:?} -> {:?}",
                            String::from_utf8_lossy(&buf[..n]),
                            String::from_utf8_lossy(&out)
                        );
                        n
                    }
                    Ok(Status::Partial) => break,
                    Err(e) => match skip_line(&buf[e.consumed..]) {
                        _ if e.line_complete => e.consumed,
                        Some(k) => e.consumed + k,
                        None => break,
                    },
                };
                buf = &buf[n..];
            }
        }
    }

    #[test]
    fn command_every_prefix_is_partial(spec in spec()) {
        let out = spec.encode();
        for n in 0..out.len() {
            prop_assert_eq!(parse_command(&out[..n], &ParserConfig::default()), Ok(Status::Partial));
        }
    }

    #[test]
    fn command_stream_split_at_one_point(input in command_stream(), at in any::<Index>()) {
        let at = at.index(input.len() + 1);
        for cfg in [ParserConfig::default(), ParserConfig::lenient(512)] {
            prop_assert_eq!(command_events(&input, &[at], &cfg), command_events(&input, &[], &cfg));
        }
    }

    #[test]
    fn command_stream_split_anywhere(input in command_stream(), cuts in cuts(4000)) {
        for cfg in [ParserConfig::default(), ParserConfig::lenient(512), ParserConfig::strict(64)] {
            prop_assert_eq!(command_events(&input, &cuts, &cfg), command_events(&input, &[], &cfg));
        }
    }

    #[test]
    fn reply_round_trip(spec in reply_spec()) {
        let enh_prefix = |line: &str| match &spec.enhanced {
            Some(e) if line.is_empty() => e.clone(),
            Some(e) => format!("{e} {line}"),
            None => line.to_string(),
        };
        let expected_lines: Vec<String> = spec.lines.iter().map(|l| enh_prefix(l)).collect();
        let mut encodings = vec![spec.encode()];
        // write_reply takes the lines joined by LF or CRLF (a trailing empty
        // line would be read as a trailing line break).
        if spec.lines.len() == 1 || !spec.lines.last().unwrap().is_empty() {
            for sep in ["\n", "\r\n"] {
                let mut out = Vec::new();
                write_reply(&mut out, spec.code, spec.enhanced.as_deref(), &spec.lines.join(sep));
                encodings.push(out);
            }
        }
        for out in encodings {
            prop_assert!(out.ends_with(b"\r\n"));
            let (r, n) = match parse_reply(&out, DEFAULT_MAX_REPLY_LINE) {
                Ok(Status::Complete(x)) => x,
                other => return Err(TestCaseError::fail(format!(
                    "{:?}: {other:?}", String::from_utf8_lossy(&out)))),
            };
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(r.code, spec.code);
            prop_assert_eq!(r.enhanced.map(|e| e.to_string()), spec.enhanced.clone());
            prop_assert_eq!(r.line_count(), spec.lines.len());
            prop_assert_eq!(r.text(), spec.lines[0].as_bytes());
            let lines: Vec<&[u8]> = r.lines().collect();
            let expected: Vec<&[u8]> = expected_lines.iter().map(|l| l.as_bytes()).collect();
            prop_assert_eq!(lines, expected);
            prop_assert_eq!(r.raw(), &out[..]);
            for k in 0..out.len() {
                prop_assert_eq!(parse_reply(&out[..k], DEFAULT_MAX_REPLY_LINE), Ok(Status::Partial));
            }
        }
    }

    #[test]
    fn reply_stream_split_at_one_point(input in reply_stream(), at in any::<Index>()) {
        let at = at.index(input.len() + 1);
        prop_assert_eq!(reply_events(&input, &[at]), reply_events(&input, &[]));
    }

    #[test]
    fn reply_stream_split_anywhere(input in reply_stream(), cuts in cuts(4000)) {
        prop_assert_eq!(reply_events(&input, &cuts), reply_events(&input, &[]));
    }

    #[test]
    fn data_split_anywhere(input in data_body(), cuts in cuts(2000), at in any::<Index>()) {
        let at = at.index(input.len() + 1);
        for cfg in data_configs() {
            let whole = data_feed(&input, &[], cfg, true);
            prop_assert!(whole.stats.bytes >= whole.out.len() as u64);
            prop_assert_eq!(&data_feed(&input, &[at], cfg, true), &whole);
            prop_assert_eq!(&data_feed(&input, &cuts, cfg, true), &whole);
            // Discard mode: same end and stats, whatever the split.
            for c in [&[][..], &[at][..], &cuts[..]] {
                let d = data_feed(&input, c, cfg, false);
                prop_assert!(d.out.is_empty());
                prop_assert_eq!((d.end, d.stats), (whole.end, whole.stats));
            }
        }
    }

    #[test]
    fn data_stuff_unstuff_round_trip(
        body in data_body(),
        stuff_cuts in cuts(2000),
        rx_cuts in cuts(3000),
    ) {
        let expected = crlf_normalise(&body);
        // Stuff in pieces: same as in one go.
        let mut whole = Vec::new();
        DotStuffer::encode(&body, &mut whole);
        let mut stuffer = DotStuffer::new();
        let mut pieced = Vec::new();
        let mut pos = 0;
        let mut ends: Vec<usize> = stuff_cuts.iter().map(|&c| c.min(body.len())).collect();
        ends.sort_unstable();
        ends.push(body.len());
        for end in ends {
            stuffer.push(&body[pos.min(end)..end], &mut pieced);
            pos = pos.max(end);
        }
        stuffer.finish(&mut pieced);
        prop_assert_eq!(&pieced, &whole);
        prop_assert!(whole.ends_with(b".\r\n"));
        // Unstuff, whole and in pieces, strict and lenient.
        for cfg in [STRICT, DataConfig { max_size: 0, strict: false }] {
            for c in [&[][..], &rx_cuts[..]] {
                let o = data_feed(&whole, c, cfg, true);
                prop_assert_eq!(o.end, Some(whole.len()));
                prop_assert_eq!(&o.out, &expected);
                let lf = expected.iter().filter(|&&b| b == b'\n').count() as u64;
                prop_assert_eq!(o.stats, DataStats {
                    bytes: expected.len() as u64,
                    lines: lf,
                    bare_lf: false,
                    bare_cr: false,
                    over_limit: false,
                });
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop_oneof![vec(any::<u8>(), 0..1200), vec(smtp_byte(), 0..1200)],
        max in prop_oneof![Just(512usize), 1usize..600],
    ) {
        for cfg in [
            ParserConfig::default(),
            ParserConfig::lenient(512),
            ParserConfig::strict(max),
            ParserConfig::lenient(max),
        ] {
            match parse_command(&input, &cfg) {
                Ok(Status::Complete((_, n))) => {
                    prop_assert!(n > 0 && n <= input.len() && n <= cfg.max_line_len);
                    prop_assert_eq!(input[n - 1], b'\n');
                }
                Ok(Status::Partial) => prop_assert!(input.len() < cfg.max_line_len),
                Err(e) => {
                    check_error(&e, input.len());
                    let _ = e.reply();
                }
            }
        }
        for limit in [DEFAULT_MAX_REPLY_LINE, max] {
            match parse_reply(&input, limit) {
                Ok(Status::Complete((r, n))) => {
                    prop_assert!(n > 0 && n <= input.len());
                    prop_assert!((200..600).contains(&r.code));
                    prop_assert_eq!(r.lines().count(), r.line_count());
                    let _ = r.text();
                }
                Ok(Status::Partial) => {}
                Err(e) => check_error(&e, input.len()),
            }
        }
        let _ = Capabilities::parse(&input);
        for cfg in data_configs() {
            let mut rx = DataReceiver::new(cfg);
            let mut out = Vec::new();
            if let Status::Complete(n) = rx.unstuff(&input, &mut out) {
                prop_assert!(n <= input.len());
            }
            let mut rx = DataReceiver::new(cfg);
            let _ = rx.discard(&input);
        }
    }

    #[test]
    fn capabilities_never_panic_on_reply_shaped_input(
        lines in vec("[ -~\t\u{80}-\u{d7ff}]{0,40}", 1..12),
        code in prop_oneof![Just(250u16), 200u16..600],
    ) {
        let mut input = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            input.extend_from_slice(format!("{code}{sep}{l}\r\n").as_bytes());
        }
        let (caps, n) = match Capabilities::parse(&input) {
            Ok(Status::Complete(x)) => x,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(n, input.len());
        // Lines with unrecognised keywords are kept, one entry per line.
        prop_assert!(caps.unknown.len() < lines.len());
    }
}

#[test]
fn case_count_is_bounded_and_honours_proptest_cases() {
    let c = config(123);
    match std::env::var("PROPTEST_CASES") {
        Ok(v) => assert_eq!(c.cases, v.parse::<u32>().unwrap()),
        Err(_) => assert_eq!(c.cases, 123),
    }
    // `with_cases` alone would ignore the environment variable.
    assert_eq!(ProptestConfig::with_cases(7).cases, 7);
}
