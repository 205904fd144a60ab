//! Client side: the server's EHLO capabilities (RFC 5321 §4.1.1.1 and the
//! extensions' RFCs). Parsed once per connection, so this owns its strings.

use smol_str::SmolStr;

use crate::reply::{parse_reply, Reply};
use crate::sasl::Mechanism;
use crate::{Error, Status, DEFAULT_MAX_REPLY_LINE};

/// The set of known SASL [`Mechanism`]s a server offers (RFC 4954 `AUTH`
/// keyword).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthMechanisms {
    /// `PLAIN` (RFC 4616)
    pub plain: bool,
    /// `LOGIN` (draft-murchison-sasl-login)
    pub login: bool,
    /// `CRAM-MD5` (RFC 2195)
    pub cram_md5: bool,
}

impl AuthMechanisms {
    /// `true` when none of the known mechanisms is offered.
    pub fn is_empty(&self) -> bool {
        !(self.plain || self.login || self.cram_md5)
    }

    /// `true` when `mechanism` is offered.
    pub fn contains(&self, mechanism: Mechanism) -> bool {
        match mechanism {
            Mechanism::Plain => self.plain,
            Mechanism::Login => self.login,
            Mechanism::CramMd5 => self.cram_md5,
        }
    }

    /// Marks `mechanism` as offered.
    pub fn insert(&mut self, mechanism: Mechanism) {
        match mechanism {
            Mechanism::Plain => self.plain = true,
            Mechanism::Login => self.login = true,
            Mechanism::CramMd5 => self.cram_md5 = true,
        }
    }
}

/// What the server advertised in its EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The text of the first line: the server's domain, optionally followed
    /// by a greeting (see [`Capabilities::server_name`] for the domain alone).
    pub domain: SmolStr,
    /// `PIPELINING` (RFC 2920)
    pub pipelining: bool,
    /// `SIZE [n]` (RFC 1870): `Some(0)` when advertised without a fixed
    /// limit (no number, 0, or an unreadable number), `None` when absent.
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152)
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531)
    pub smtputf8: bool,
    /// `CHUNKING`: BDAT (RFC 3030)
    pub chunking: bool,
    /// `BINARYMIME` (RFC 3030)
    pub binary_mime: bool,
    /// `STARTTLS` (RFC 3207)
    pub starttls: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034)
    pub enhanced_status_codes: bool,
    /// `DSN` (RFC 3461)
    pub dsn: bool,
    /// Known SASL mechanisms from `AUTH` (or the old `AUTH=` form).
    pub auth: AuthMechanisms,
    /// Other SASL mechanisms, as sent, without duplicates.
    pub auth_other: Vec<SmolStr>,
    /// Whole lines with keywords not listed above, as sent.
    pub unknown: Vec<SmolStr>,
}

impl Capabilities {
    /// Reads the capabilities from an EHLO (or LHLO) reply. The reply code
    /// is not checked: callers look at [`Reply::is_positive`] first.
    /// Keywords are case-insensitive; non-UTF-8 text is replaced lossily.
    pub fn from_reply(reply: &Reply<'_>) -> Capabilities {
        let mut caps = Capabilities::default();
        let mut lines = reply.lines();
        if let Some(first) = lines.next() {
            caps.domain = lossy(trim(first));
        }
        caps.add_lines(lines.rest(), lines.len());
        caps
    }

    /// Parses an EHLO reply from `buf` (line limit
    /// [`DEFAULT_MAX_REPLY_LINE`]); see [`parse_reply`].
    pub fn parse(buf: &[u8]) -> Result<Status<(Capabilities, usize)>, Error> {
        Ok(match parse_reply(buf, DEFAULT_MAX_REPLY_LINE)? {
            Status::Complete((reply, n)) => Status::Complete((Capabilities::from_reply(&reply), n)),
            Status::Partial => Status::Partial,
        })
    }

    /// The server's domain: the first word of [`Capabilities::domain`].
    pub fn server_name(&self) -> &str {
        self.domain.split(' ').next().unwrap_or("")
    }

    /// `true` when any SASL mechanism is offered.
    pub fn has_auth(&self) -> bool {
        !self.auth.is_empty() || !self.auth_other.is_empty()
    }

    /// Reads `count` keyword lines from `raw` (each `ddd-text` or `ddd text`
    /// ending in LF, as the reply parser guaranteed). Most lines are a
    /// keyword alone, so one walk over the keyword also finds the line's
    /// end; any other line goes the general way ([`Capabilities::add_line`],
    /// which gives the same result for every line).
    fn add_lines(&mut self, raw: &[u8], count: usize) {
        let mut rest = raw;
        for _ in 0..count {
            // The text starts after the code and its separator; a line
            // that is a bare code has none.
            let mut i = if matches!(rest.get(3), Some(b'\r' | b'\n') | None) {
                3
            } else {
                4
            };
            while matches!(rest.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            let start = i;
            while let Some(&c) = rest.get(i) {
                if matches!(c, b' ' | b'=' | b'\t' | b'\r' | b'\n') {
                    break;
                }
                i += 1;
            }
            let keyword_end = i;
            let next = match rest.get(i..) {
                Some([b'\n', ..]) => i + 1,
                Some([b'\r', b'\n', ..]) => i + 2,
                _ => {
                    // Parameters, trailing blanks or a stray CR: the line
                    // as `Lines` gives it.
                    let lf = memchr::memchr(b'\n', &rest[i.min(rest.len())..])
                        .map_or(rest.len(), |n| i + n);
                    let line = strip_cr(&rest[..lf]);
                    self.add_line(trim(line.get(4..).unwrap_or(&[])));
                    rest = rest.get(lf + 1..).unwrap_or(&[]);
                    continue;
                }
            };
            let keyword = &rest[start..keyword_end];
            if !keyword.is_empty() {
                self.add_capability(keyword, keyword, &[]);
            }
            rest = &rest[next..];
        }
    }

    fn add_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        // ehlo-keyword is letters, digits and '-', so '=' can only be the old
        // `AUTH=MECH ...` form that some servers still send.
        let end = line
            .iter()
            .position(|&c| c == b' ' || c == b'=')
            .unwrap_or(line.len());
        self.add_capability(line, &line[..end], line.get(end + 1..).unwrap_or(&[]));
    }

    /// Records one capability line: `keyword` and its `params`, or the
    /// whole `line` when the keyword is not one this type knows.
    fn add_capability(&mut self, line: &[u8], keyword: &[u8], params: &[u8]) {
        // Length and the first eight bytes, upper-cased, tell the known
        // keywords apart; only the three longer ones need their tails
        // compared. (A chain of case-insensitive compares cost ~140
        // instructions a line.)
        const DSN: u64 = const_head8(b"DSN");
        const SIZE: u64 = const_head8(b"SIZE");
        const AUTH: u64 = const_head8(b"AUTH");
        const EIGHT_BIT_MIME: u64 = const_head8(b"8BITMIME");
        const SMTPUTF8: u64 = const_head8(b"SMTPUTF8");
        const CHUNKING: u64 = const_head8(b"CHUNKING");
        const STARTTLS: u64 = const_head8(b"STARTTLS");
        const PIPELINI: u64 = const_head8(b"PIPELINI");
        const BINARYMI: u64 = const_head8(b"BINARYMI");
        const ENHANCED: u64 = const_head8(b"ENHANCED");
        let head = head8(keyword);
        let tail_is = |t: &[u8]| keyword[8..].eq_ignore_ascii_case(t);
        match keyword.len() {
            3 if head == DSN => self.dsn = true,
            4 if head == SIZE => self.size = Some(parse_size(params)),
            4 if head == AUTH => self.add_auth(params),
            8 if head == EIGHT_BIT_MIME => self.eight_bit_mime = true,
            8 if head == SMTPUTF8 => self.smtputf8 = true,
            8 if head == CHUNKING => self.chunking = true,
            8 if head == STARTTLS => self.starttls = true,
            10 if head == PIPELINI && tail_is(b"NG") => self.pipelining = true,
            10 if head == BINARYMI && tail_is(b"ME") => self.binary_mime = true,
            19 if head == ENHANCED && tail_is(b"STATUSCODES") => self.enhanced_status_codes = true,
            _ => self.unknown.push(lossy(line)),
        }
    }

    fn add_auth(&mut self, params: &[u8]) {
        for mech in params.split(|&c| c == b' ').filter(|m| !m.is_empty()) {
            if let Some(known) = Mechanism::parse_bytes(mech) {
                self.auth.insert(known);
            } else if !self
                .auth_other
                .iter()
                .any(|m| m.as_bytes().eq_ignore_ascii_case(mech))
            {
                self.auth_other.push(lossy(mech));
            }
        }
    }
}

/// The first eight bytes of `word` upper-cased (ASCII letters only) and
/// packed little-endian; shorter words are padded with zeros.
#[inline]
fn head8(word: &[u8]) -> u64 {
    let packed = match word.first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        None => word
            .iter()
            .rev()
            .fold(0u64, |packed, &c| (packed << 8) | u64::from(c)),
    };
    upper8(packed)
}

/// [`head8`] for the keywords, at compile time.
const fn const_head8(word: &[u8]) -> u64 {
    let mut packed = 0u64;
    let mut i = 0;
    while i < word.len() && i < 8 {
        packed |= (word[i].to_ascii_uppercase() as u64) << (8 * i);
        i += 1;
    }
    packed
}

/// Upper-cases the ASCII letters among eight packed bytes at once: a byte
/// is a lower-case letter when its low seven bits are at least `a` and
/// below `z + 1` and its top bit is clear; adding `0x80 - bound` to the
/// low seven bits sets the top bit exactly when the byte reaches `bound`,
/// and no sum carries into the next byte (at most 0x7f + 0x1f).
const fn upper8(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = x & LOW7;
    let at_least_a = low7 + 0x1f1f_1f1f_1f1f_1f1f; // 0x80 - b'a'
    let past_z = low7 + 0x0505_0505_0505_0505; // 0x80 - (b'z' + 1)
    let lower = at_least_a & !past_z & !x & HIGH;
    x - (lower >> 2) // 0x80 >> 2 == 0x20, the case bit
}

/// `SIZE` parameter: missing, zero or unreadable mean "no fixed limit" (0);
/// absurdly large values saturate.
fn parse_size(params: &[u8]) -> u64 {
    let word = params.split(|&c| c == b' ').next().unwrap_or(&[]);
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    word.iter().fold(0u64, |n, &c| {
        n.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// A line without its LF, less the CR before it if any.
fn strip_cr(line: &[u8]) -> &[u8] {
    match line {
        [head @ .., b'\r'] => head,
        _ => line,
    }
}

fn lossy(s: &[u8]) -> SmolStr {
    SmolStr::from(String::from_utf8_lossy(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(s: &[u8]) -> Capabilities {
        let (c, n) = Capabilities::parse(s).unwrap().complete().unwrap();
        assert_eq!(n, s.len());
        c
    }

    #[test]
    fn postfix() {
        let c = caps(
            b"250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n\
250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n\
250-SMTPUTF8\r\n250 CHUNKING\r\n",
        );
        let expected = Capabilities {
            domain: "mail.example.com".into(),
            pipelining: true,
            size: Some(10_240_000),
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            binary_mime: false,
            starttls: true,
            enhanced_status_codes: true,
            dsn: true,
            auth: AuthMechanisms::default(),
            auth_other: vec![],
            unknown: vec!["VRFY".into(), "ETRN".into()],
        };
        assert_eq!(c, expected);
        assert!(!c.has_auth());
        assert_eq!(c.server_name(), "mail.example.com");
    }

    #[test]
    fn exim_like() {
        let c = caps(
            b"250-mx.example.org Hello client.example.net [192.0.2.1]\r\n250-SIZE 52428800\r\n\
250-8BITMIME\r\n250-PIPELINING\r\n250-PIPE_CONNECT\r\n250-AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2\r\n\
250-CHUNKING\r\n250-STARTTLS\r\n250-PRDR\r\n250 HELP\r\n",
        );
        assert_eq!(
            c.domain,
            "mx.example.org Hello client.example.net [192.0.2.1]"
        );
        assert_eq!(c.server_name(), "mx.example.org");
        assert_eq!(c.size, Some(52_428_800));
        assert!(c.eight_bit_mime && c.pipelining && c.chunking && c.starttls);
        assert!(!c.smtputf8 && !c.dsn && !c.enhanced_status_codes && !c.binary_mime);
        assert_eq!(
            c.auth,
            AuthMechanisms {
                plain: true,
                login: true,
                cram_md5: true
            }
        );
        assert_eq!(c.auth_other, ["XOAUTH2"]);
        assert!(c.has_auth());
        assert_eq!(c.unknown, ["PIPE_CONNECT", "PRDR", "HELP"]);
    }

    #[test]
    fn old_auth_form_case_and_size_variants() {
        let c = caps(
            b"250-x.test greets you\n250-auth=LOGIN plain\n250-AUTH PLAIN SCRAM-SHA-256\n\
250-Auth=scram-sha-256\n250-size\n250-binarymime\n250-\n250 x-custom arg\n",
        );
        assert!(c.auth.plain && c.auth.login && !c.auth.cram_md5);
        assert!(c.auth.contains(Mechanism::Plain) && !c.auth.contains(Mechanism::CramMd5));
        assert_eq!(c.auth_other, ["SCRAM-SHA-256"]);
        assert_eq!(c.size, Some(0));
        assert!(c.binary_mime);
        assert_eq!(c.unknown, ["x-custom arg"]);
    }

    #[test]
    fn size_values() {
        for (line, size) in [
            (&b"250 SIZE 0\r\n"[..], 0),
            (b"250 SIZE abc\r\n", 0),
            (b"250 SIZE  \r\n", 0),
            (b"250 SIZE 99999999999999999999999\r\n", u64::MAX),
            (b"250 SIZE 1000\r\n", 1000),
        ] {
            // A one-line reply has no keywords, so prepend a greeting line.
            let mut reply = b"250-host\r\n".to_vec();
            reply.extend_from_slice(line);
            assert_eq!(
                caps(&reply).size,
                Some(size),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(caps(b"250 host\r\n").size, None);
    }

    /// The capabilities as `add_line` reads each line `Lines` gives: what
    /// `add_lines`' one walk must agree with.
    fn line_by_line(reply: &Reply<'_>) -> Capabilities {
        let mut caps = Capabilities::default();
        let mut lines = reply.lines();
        if let Some(first) = lines.next() {
            caps.domain = lossy(trim(first));
        }
        for line in lines {
            caps.add_line(trim(line));
        }
        caps
    }

    /// One line's text: known keywords in any case, parameters, blanks,
    /// `=` forms, stray CRs and bytes of any kind.
    fn keyword_text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b"PIPELINING".to_vec()),
            Just(b"size".to_vec()),
            Just(b"8BITMIME".to_vec()),
            Just(b"SmtpUtf8".to_vec()),
            Just(b"CHUNKING".to_vec()),
            Just(b"BINARYMIME".to_vec()),
            Just(b"STARTTLS".to_vec()),
            Just(b"ENHANCEDSTATUSCODES".to_vec()),
            Just(b"DSN".to_vec()),
            Just(b"AUTH".to_vec()),
            Just(b"PLAIN".to_vec()),
            Just(b"XOAUTH2".to_vec()),
            Just(b"1000".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"=".to_vec()),
            Just(b"\r".to_vec()),
            proptest::collection::vec(any::<u8>().prop_filter("no LF", |&c| c != b'\n'), 1..4),
        ];
        proptest::collection::vec(piece, 0..5).prop_map(|p| p.concat())
    }

    #[test]
    fn head8_upper_cases_letters_only() {
        // Every byte value in every position, and words of every length.
        for c in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"AbCdEfGh";
                word[at] = c;
                assert_eq!(head8(&word), const_head8(&word), "byte {c:#04x} at {at}");
            }
            let short = [c, b'z', b'a'];
            for len in 0..=short.len() {
                assert_eq!(head8(&short[..len]), const_head8(&short[..len]));
            }
        }
        assert_eq!(head8(b"pipelining"), const_head8(b"PIPELINI"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        #[test]
        fn one_walk_matches_line_by_line(
            lines in proptest::collection::vec((keyword_text(), proptest::prelude::any::<bool>()), 1..8),
        ) {
            let mut reply = b"250-host.test\r\n".to_vec();
            for (n, (text, crlf)) in lines.iter().enumerate() {
                let last = n + 1 == lines.len();
                // A last line that is a bare code has no separator.
                if !(last && text.is_empty() && *crlf) {
                    reply.extend_from_slice(if last { b"250 " } else { b"250-" });
                } else {
                    reply.extend_from_slice(b"250");
                }
                reply.extend_from_slice(text);
                reply.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
            if let Ok(Status::Complete((r, _))) = parse_reply(&reply, DEFAULT_MAX_REPLY_LINE) {
                proptest::prop_assert_eq!(Capabilities::from_reply(&r), line_by_line(&r));
            }
        }
    }

    #[test]
    fn partial_and_errors() {
        assert_eq!(
            Capabilities::parse(b"250-host\r\n250-SIZE"),
            Ok(Status::Partial)
        );
        assert!(Capabilities::parse(b"250-host\r\n251 SIZE\r\n").is_err());
    }
}
