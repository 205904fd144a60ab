//! Client credentials for SMTP AUTH (RFC 4954), answered with the protocol
//! crate's SASL encoders. The static lines (the `AUTH` command, LOGIN's
//! user and password) are encoded once per run; CRAM-MD5's response
//! depends on the server's challenge.

use mailstorm_proto::sasl::{self, Mechanism, SaslError};

/// Credentials with their pre-encoded lines.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The mechanism to use.
    pub mech: Mechanism,
    user: String,
    pass: String,
    /// The whole `AUTH <mech> [initial-response]` line, CRLF included.
    auth_line: Vec<u8>,
    /// LOGIN's answers to the `Username:` and `Password:` challenges, each
    /// a base64 line with CRLF.
    login_lines: [Vec<u8>; 2],
}

impl Credentials {
    /// Splits `user:pass` at the first colon.
    pub fn new(spec: &str, mech: Mechanism) -> Credentials {
        let (user, pass) = spec.split_once(':').unwrap_or((spec, ""));
        let mut auth_line = Vec::new();
        if mech.is_client_first() {
            let mut plain = Vec::new();
            sasl::write_plain(&mut plain, "", user, pass);
            sasl::write_auth(&mut auth_line, mech, Some(&plain));
        } else {
            sasl::write_auth(&mut auth_line, mech, None);
        }
        let login_line = |text: &str| {
            let mut line = Vec::new();
            sasl::write_login(&mut line, text);
            sasl::write_response_end(&mut line);
            line
        };
        Credentials {
            mech,
            auth_line,
            login_lines: [login_line(user), login_line(pass)],
            user: user.into(),
            pass: pass.into(),
        }
    }

    /// The `AUTH` command line for [`Credentials::mech`], CRLF included.
    pub fn auth_line(&self) -> &[u8] {
        &self.auth_line
    }

    /// LOGIN's two response lines (user name, then password), CRLF included.
    pub fn login_lines(&self) -> [&[u8]; 2] {
        [&self.login_lines[0], &self.login_lines[1]]
    }

    /// Appends the CRAM-MD5 response line (CRLF included) to the base64
    /// `challenge` (the 334 text), or the cancelling `*` line when the
    /// challenge is not base64 (RFC 4954 §4).
    pub fn write_cram_md5_line(&self, challenge: &[u8], out: &mut Vec<u8>) {
        match self.cram_md5_response(challenge, out) {
            Ok(()) => {}
            Err(_) => out.extend_from_slice(sasl::CANCEL),
        }
        sasl::write_response_end(out);
    }

    fn cram_md5_response(&self, challenge: &[u8], out: &mut Vec<u8>) -> Result<(), SaslError> {
        let mut decoded = Vec::new();
        sasl::decode_base64(challenge.trim_ascii(), &mut decoded)?;
        sasl::write_cram_md5(out, &self.user, self.pass.as_bytes(), &decoded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unb64(line: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sasl::decode_base64(line, &mut out).unwrap();
        out
    }

    #[test]
    fn rfc2195_example() {
        // RFC 2195 §2: user tim, secret tanstaaftanstaaf.
        let c = Credentials::new("tim:tanstaaftanstaaf", Mechanism::CramMd5);
        assert_eq!(c.auth_line(), b"AUTH CRAM-MD5\r\n");
        let mut out = Vec::new();
        c.write_cram_md5_line(
            b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
            &mut out,
        );
        assert_eq!(out, b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n");
        let mut out = Vec::new();
        c.write_cram_md5_line(b"!!!", &mut out);
        assert_eq!(out, b"*\r\n");
    }

    #[test]
    fn plain_and_login() {
        let c = Credentials::new("u:p:w", Mechanism::Plain);
        let line = c.auth_line();
        let ir = line
            .strip_prefix(b"AUTH PLAIN ")
            .and_then(|l| l.strip_suffix(b"\r\n"))
            .unwrap();
        assert_eq!(unb64(ir), b"\0u\0p:w");
        let c = Credentials::new("u:p:w", Mechanism::Login);
        assert_eq!(c.auth_line(), b"AUTH LOGIN\r\n");
        let [user, pass] = c.login_lines();
        assert_eq!(unb64(user), b"u");
        assert_eq!(unb64(pass), b"p:w");
        assert!(user.ends_with(b"\r\n") && pass.ends_with(b"\r\n"));
    }
}
