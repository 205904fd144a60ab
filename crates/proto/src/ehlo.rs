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
        for line in lines {
            caps.add_line(trim(line));
        }
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
        let (keyword, params) = (&line[..end], line.get(end + 1..).unwrap_or(&[]));
        let is = |k: &str| keyword.eq_ignore_ascii_case(k.as_bytes());
        if is("PIPELINING") {
            self.pipelining = true;
        } else if is("SIZE") {
            self.size = Some(parse_size(params));
        } else if is("8BITMIME") {
            self.eight_bit_mime = true;
        } else if is("SMTPUTF8") {
            self.smtputf8 = true;
        } else if is("CHUNKING") {
            self.chunking = true;
        } else if is("BINARYMIME") {
            self.binary_mime = true;
        } else if is("STARTTLS") {
            self.starttls = true;
        } else if is("ENHANCEDSTATUSCODES") {
            self.enhanced_status_codes = true;
        } else if is("DSN") {
            self.dsn = true;
        } else if is("AUTH") {
            self.add_auth(params);
        } else {
            self.unknown.push(lossy(line));
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

    #[test]
    fn partial_and_errors() {
        assert_eq!(
            Capabilities::parse(b"250-host\r\n250-SIZE"),
            Ok(Status::Partial)
        );
        assert!(Capabilities::parse(b"250-host\r\n251 SIZE\r\n").is_err());
    }
}
