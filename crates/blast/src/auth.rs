//! SASL client responses for AUTH PLAIN, LOGIN and CRAM-MD5 (RFC 4954,
//! RFC 4616, RFC 2195). Static responses are encoded once per run.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;

use crate::config::AuthMech;

/// Credentials with their pre-encoded responses.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The mechanism to use.
    pub mech: AuthMech,
    user: String,
    pass: String,
    /// `base64("\0user\0pass")`.
    pub plain: String,
    /// `base64(user)`.
    pub login_user: String,
    /// `base64(pass)`.
    pub login_pass: String,
}

impl Credentials {
    /// Splits `user:pass` at the first colon.
    pub fn new(spec: &str, mech: AuthMech) -> Credentials {
        let (user, pass) = spec.split_once(':').unwrap_or((spec, ""));
        Credentials {
            mech,
            plain: B64.encode(format!("\0{user}\0{pass}")),
            login_user: B64.encode(user),
            login_pass: B64.encode(pass),
            user: user.into(),
            pass: pass.into(),
        }
    }

    /// The CRAM-MD5 response to a base64 `challenge` (the 334 text), or
    /// `None` when the challenge is not valid base64.
    pub fn cram_md5(&self, challenge: &[u8]) -> Option<String> {
        let challenge = B64.decode(challenge.trim_ascii()).ok()?;
        let mut mac = Hmac::<Md5>::new_from_slice(self.pass.as_bytes()).ok()?;
        mac.update(&challenge);
        let digest = mac.finalize().into_bytes();
        let mut text = String::with_capacity(self.user.len() + 33);
        text.push_str(&self.user);
        text.push(' ');
        for b in digest {
            text.push_str(&format!("{b:02x}"));
        }
        Some(B64.encode(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2195_example() {
        // RFC 2195 §2: user tim, secret tanstaaftanstaaf.
        let c = Credentials::new("tim:tanstaaftanstaaf", AuthMech::CramMd5);
        let challenge = B64.encode("<1896.697170952@postoffice.reston.mci.net>");
        let resp = c.cram_md5(challenge.as_bytes()).unwrap();
        assert_eq!(
            B64.decode(resp).unwrap(),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
        assert!(c.cram_md5(b"!!!").is_none());
    }

    #[test]
    fn plain_and_login() {
        let c = Credentials::new("u:p:w", AuthMech::Plain);
        assert_eq!(B64.decode(&c.plain).unwrap(), b"\0u\0p:w");
        assert_eq!(B64.decode(&c.login_user).unwrap(), b"u");
        assert_eq!(B64.decode(&c.login_pass).unwrap(), b"p:w");
    }
}
