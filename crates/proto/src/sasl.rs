//! SASL mechanisms for SMTP AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN
//! (draft-murchison-sasl-login) and CRAM-MD5 (RFC 2195), for both sides.
//!
//! Same shape as the rest of the crate: decoders borrow from the caller's
//! (already base64-decoded) message, encoders append to a caller's
//! `Vec<u8>`, errors are a small `Copy` enum. No I/O and no policy: whether
//! empty credentials or a foreign authorization identity are acceptable is
//! the server's call.
//!
//! - Client: [`write_auth`] (the `AUTH` command line), then
//!   [`write_plain`], [`write_login`] or [`write_cram_md5`] for each
//!   response, each followed by CRLF ([`write_response_end`]).
//! - Server: [`decode_base64`] a response line, then [`decode_plain`] or
//!   [`decode_cram_md5`] and [`CramMd5Response::verify`].

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};

/// Longest base64 response line (without CRLF) [`decode_base64`] accepts.
/// RFC 4954 §4 asks servers to accept at least 12288 octets.
pub const MAX_RESPONSE_LINE: usize = 12 * 1024;

/// The LOGIN mechanism's first server challenge, `Username:` in base64.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The LOGIN mechanism's second server challenge, `Password:` in base64.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// The client's response that aborts an exchange (RFC 4954 §4).
pub const CANCEL: &[u8] = b"*";

/// Decoding accepts base64 with or without padding: some clients omit it.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A SASL mechanism mailstorm speaks. SASL names are case-insensitive
/// (RFC 4422 §3.1), so [`Mechanism::parse`] and [`FromStr`] accept any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mechanism {
    /// PLAIN (RFC 4616): the credentials in one client response.
    #[default]
    Plain,
    /// LOGIN: user name, then password, each answering a server challenge.
    Login,
    /// CRAM-MD5 (RFC 2195): the user name and an HMAC-MD5 of the server's
    /// challenge keyed with the password.
    CramMd5,
}

impl Mechanism {
    /// All mechanisms, in the order a server advertises them.
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5];

    /// Parses a SASL mechanism name, case-insensitively.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Self::parse_bytes(name.as_bytes())
    }

    /// Parses a SASL mechanism name from raw bytes, case-insensitively.
    pub fn parse_bytes(name: &[u8]) -> Option<Mechanism> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The registered (upper-case) SASL name, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    /// The lower-case name used in mailstorm's flags and YAML.
    pub fn config_name(self) -> &'static str {
        match self {
            Mechanism::Plain => "plain",
            Mechanism::Login => "login",
            Mechanism::CramMd5 => "cram-md5",
        }
    }

    /// True for a client-first mechanism, whose first response rides on the
    /// `AUTH` line as the initial response (RFC 4954 §4): PLAIN. LOGIN and
    /// CRAM-MD5 wait for the server's first challenge.
    pub fn is_client_first(self) -> bool {
        matches!(self, Mechanism::Plain)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Mechanism::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMechanism(pub String);

impl fmt::Display for UnknownMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown AUTH mechanism {:?} (expected one of: plain, login, cram-md5, in any case)",
            self.0
        )
    }
}

impl std::error::Error for UnknownMechanism {}

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    fn from_str(s: &str) -> Result<Mechanism, UnknownMechanism> {
        Mechanism::parse(s).ok_or_else(|| UnknownMechanism(s.to_owned()))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Mechanism {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.config_name())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Mechanism {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mechanism, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a SASL message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslError {
    /// The base64 line is longer than [`MAX_RESPONSE_LINE`].
    TooLong,
    /// The line is not base64.
    InvalidBase64,
    /// A text field is not UTF-8.
    InvalidUtf8,
    /// The decoded message does not have the mechanism's structure (PLAIN:
    /// three NUL-separated fields; CRAM-MD5: `user SP 32-hex-digits`).
    Malformed,
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaslError::TooLong => "SASL response line too long",
            SaslError::InvalidBase64 => "SASL response is not base64",
            SaslError::InvalidUtf8 => "SASL field is not UTF-8",
            SaslError::Malformed => "SASL message has the wrong structure",
        })
    }
}

impl std::error::Error for SaslError {}

/// Appends the base64 of `data` to `out`.
pub fn encode_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    let written = STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
}

/// Decodes one response line (base64, trailing whitespace such as a CR
/// ignored, padding optional) and appends the bytes to `out`; `out` is left
/// unchanged on error.
pub fn decode_base64(line: &[u8], out: &mut Vec<u8>) -> Result<(), SaslError> {
    let line = line.trim_ascii_end();
    if line.len() > MAX_RESPONSE_LINE {
        return Err(SaslError::TooLong);
    }
    let start = out.len();
    LENIENT_BASE64.decode_vec(line, out).map_err(|_| {
        out.truncate(start);
        SaslError::InvalidBase64
    })
}

/// Decodes the initial response of an `AUTH` command like [`decode_base64`],
/// where `=` alone stands for an empty response (RFC 4954 §4).
pub fn decode_initial_response(response: &[u8], out: &mut Vec<u8>) -> Result<(), SaslError> {
    if response.trim_ascii_end() == b"=" {
        return Ok(());
    }
    decode_base64(response, out)
}

/// Appends `AUTH <mechanism>` to `out`, then ` <initial_response>` when
/// given (base64, or empty for RFC 4954's `=`), then CRLF. To answer a
/// challenge instead, write the response and [`write_response_end`].
pub fn write_auth(out: &mut Vec<u8>, mechanism: Mechanism, initial_response: Option<&[u8]>) {
    crate::encode::put_auth(out, mechanism.name(), initial_response);
}

/// Ends a client response line (CRLF).
pub fn write_response_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// A decoded PLAIN message (RFC 4616 §2), borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainCredentials<'a> {
    /// Identity to act as; empty means "the same as `authcid`".
    pub authzid: &'a str,
    /// Identity whose password is given.
    pub authcid: &'a str,
    /// The password.
    pub password: &'a str,
}

/// Appends the base64 PLAIN message `authzid NUL authcid NUL password`.
pub fn write_plain(out: &mut Vec<u8>, authzid: &str, authcid: &str, password: &str) {
    // The streaming encoder has its own fixed buffer: no temporary message.
    let mut encoder = base64::write::EncoderWriter::new(out, &STANDARD);
    for part in [
        authzid.as_bytes(),
        b"\0",
        authcid.as_bytes(),
        b"\0",
        password.as_bytes(),
    ] {
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(part);
    }
    let _ = encoder.finish();
}

/// Splits a decoded PLAIN message into its three fields. Empty fields are
/// returned as they are: rejecting them is the server's policy.
pub fn decode_plain(message: &[u8]) -> Result<PlainCredentials<'_>, SaslError> {
    let mut fields = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::Malformed);
    };
    Ok(PlainCredentials {
        authzid: utf8(authzid)?,
        authcid: utf8(authcid)?,
        password: utf8(password)?,
    })
}

/// Appends a LOGIN response: the base64 of `text` (the user name, then
/// the password).
pub fn write_login(out: &mut Vec<u8>, text: &str) {
    encode_base64(out, text.as_bytes());
}

/// Decodes a LOGIN response (a user name or a password) to text.
pub fn decode_login(message: &[u8]) -> Result<&str, SaslError> {
    utf8(message)
}

/// Length of a CRAM-MD5 digest in hex digits.
pub const CRAM_MD5_DIGEST_LEN: usize = 32;

/// Lower-case hex of HMAC-MD5(`password`, `challenge`): what a CRAM-MD5
/// client sends after its user name. `challenge` is the decoded challenge.
pub fn cram_md5_digest(password: &[u8], challenge: &[u8]) -> [u8; CRAM_MD5_DIGEST_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(password)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(challenge);
    let tag = mac.finalize().into_bytes();
    let mut hex = [0u8; CRAM_MD5_DIGEST_LEN];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(tag) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    hex
}

/// Appends the base64 CRAM-MD5 response `user SP hex-digest` for the
/// decoded `challenge`.
pub fn write_cram_md5(out: &mut Vec<u8>, user: &str, password: &[u8], challenge: &[u8]) {
    let digest = cram_md5_digest(password, challenge);
    let mut encoder = base64::write::EncoderWriter::new(out, &STANDARD);
    for part in [user.as_bytes(), b" ", &digest] {
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(part);
    }
    let _ = encoder.finish();
}

/// A decoded CRAM-MD5 response, borrowing from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CramMd5Response<'a> {
    /// The user name (everything before the last space).
    pub user: &'a str,
    /// The 32 hex digits, in the case the client sent.
    pub digest: &'a [u8],
}

/// Splits a decoded CRAM-MD5 response into user name and digest; the
/// digest must be 32 hex digits of either case.
pub fn decode_cram_md5(message: &[u8]) -> Result<CramMd5Response<'_>, SaslError> {
    let space = message
        .iter()
        .rposition(|&b| b == b' ')
        .ok_or(SaslError::Malformed)?;
    let (user, digest) = (&message[..space], &message[space + 1..]);
    if digest.len() != CRAM_MD5_DIGEST_LEN || !digest.iter().all(u8::is_ascii_hexdigit) {
        return Err(SaslError::Malformed);
    }
    Ok(CramMd5Response {
        user: utf8(user)?,
        digest,
    })
}

impl CramMd5Response<'_> {
    /// True when the digest is the one `password` gives for the decoded
    /// `challenge` (hex case ignored; compared in constant time).
    pub fn verify(&self, password: &[u8], challenge: &[u8]) -> bool {
        let mut given = [0u8; CRAM_MD5_DIGEST_LEN];
        if self.digest.len() != given.len() {
            return false;
        }
        given.copy_from_slice(self.digest);
        given.make_ascii_lowercase();
        constant_time_eq(&cram_md5_digest(password, challenge), &given)
    }
}

/// Compares two secrets without stopping at the first differing byte, so
/// the time taken does not reveal how long a matching prefix was (the
/// length still shows).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn utf8(bytes: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(bytes).map_err(|_| SaslError::InvalidUtf8)
}

#[cfg(test)]
mod tests;
