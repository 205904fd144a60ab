//! SMTP AUTH (RFC 4954) as pure state machines: PLAIN (RFC 4616), LOGIN and
//! CRAM-MD5 (RFC 2195). No I/O here: the session feeds client lines in and
//! writes the returned [`Step`] out.
//!
//! By default (no user table) any well-formed, non-empty credentials are
//! accepted; with a [`Users`] table they are checked.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};

/// Longest client AUTH line (base64, without CRLF) accepted; longer is
/// [`AuthFailure::Malformed`]. RFC 4954 asks servers to accept at least
/// 12288 octets.
pub const MAX_AUTH_LINE: usize = 12 * 1024;

/// The LOGIN mechanism's `Username:` challenge, base64.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The LOGIN mechanism's `Password:` challenge, base64.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Accepts base64 with or without padding: some clients omit it.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A SASL mechanism the sink implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN (draft-murchison-sasl-login).
    Login,
    /// CRAM-MD5 (RFC 2195).
    CramMd5,
}

impl Mechanism {
    /// All mechanisms, in the order the sink advertises them.
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5];

    /// Parses a mechanism name, case-insensitively.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Self::parse_bytes(name.as_bytes())
    }

    /// Parses a mechanism name from raw bytes, case-insensitively.
    pub fn parse_bytes(name: &[u8]) -> Option<Mechanism> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The mechanism's canonical (upper-case) name, as advertised in EHLO.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a user table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:password`.
    #[error("{}:{line}: {reason} (expected `user:password`)", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same user appears twice.
    #[error("{}:{line}: user {user:?} already defined on line {first_line}", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first definition.
        first_line: usize,
        /// The user name.
        user: String,
    },
}

/// A table of users and passwords (`--auth-users FILE`).
#[derive(Clone, Default)]
pub struct Users {
    passwords: HashMap<String, String>,
}

impl fmt::Debug for Users {
    // Never print passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.passwords.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Loads a file of `user:password` lines. The user name ends at the first
    /// `:`; the password is the rest of the line verbatim (it may contain `:`
    /// and spaces; a trailing CR is dropped). Blank lines and lines starting
    /// with `#` (after leading whitespace) are ignored. User names must be
    /// non-empty and free of whitespace and control characters; passwords must be
    /// non-empty and free of control characters.
    pub fn load(path: &Path) -> Result<Users, AuthError> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses the file format of [`Users::load`]; `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Users, AuthError> {
        let malformed = |line, reason| AuthError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut passwords = HashMap::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (idx, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw).map_err(|_| malformed(line_no, "not UTF-8"))?;
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| malformed(line_no, "no `:` separator"))?;
            if user.is_empty() {
                return Err(malformed(line_no, "empty user name"));
            }
            if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(malformed(
                    line_no,
                    "whitespace or control character in user name",
                ));
            }
            if pass.is_empty() {
                return Err(malformed(line_no, "empty password"));
            }
            if pass.chars().any(char::is_control) {
                return Err(malformed(line_no, "control character in password"));
            }
            if let Some(&first_line) = first_seen.get(user) {
                return Err(AuthError::Duplicate {
                    path: path.to_path_buf(),
                    line: line_no,
                    first_line,
                    user: user.to_owned(),
                });
            }
            first_seen.insert(user.to_owned(), line_no);
            passwords.insert(user.to_owned(), pass.to_owned());
        }
        Ok(Users { passwords })
    }

    /// Builds a table from `(user, password)` pairs (later pairs win).
    pub fn from_pairs<I, U, P>(pairs: I) -> Users
    where
        I: IntoIterator<Item = (U, P)>,
        U: Into<String>,
        P: Into<String>,
    {
        Users {
            passwords: pairs
                .into_iter()
                .map(|(u, p)| (u.into(), p.into()))
                .collect(),
        }
    }

    /// True when `user` exists and `pass` is its password. The password
    /// comparison does not stop at the first differing byte.
    pub fn check(&self, user: &str, pass: &str) -> bool {
        self.password(user)
            .is_some_and(|p| ct_eq(p.as_bytes(), pass.as_bytes()))
    }

    /// The password of `user`, if any.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.passwords.get(user).map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    /// True when the table has no users.
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }
}

/// Compares without an early exit on the first mismatch (length still leaks,
/// which is fine for a test sink).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How an AUTH exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// Wrong user or password, or empty credentials.
    BadCredentials,
    /// The client's data could not be decoded (bad base64, bad structure,
    /// too long, control characters in the user name...).
    Malformed,
    /// The client sent `*`.
    Cancelled,
}

impl AuthFailure {
    /// The SMTP reply: `(code, enhanced status, text)`.
    pub fn reply(self) -> (u16, &'static str, &'static str) {
        match self {
            AuthFailure::BadCredentials => (535, "5.7.8", "Authentication credentials invalid"),
            AuthFailure::Malformed => (501, "5.5.2", "Cannot decode response"),
            AuthFailure::Cancelled => (501, "5.0.0", "Authentication cancelled"),
        }
    }
}

/// What the session must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <text>` (the text is already base64; it may be empty) and
    /// feed the client's next line to [`AuthExchange::next`].
    Challenge(String),
    /// Authenticated: reply `235 2.7.0`. `user` is the authentication
    /// identity; it is non-empty, valid UTF-8 and has no control characters
    /// (safe to put in a header).
    Success {
        /// The authenticated user name.
        user: String,
    },
    /// Failed: reply with [`AuthFailure::reply`]. The exchange is over.
    Failure(AuthFailure),
}

#[derive(Debug, Clone)]
enum State {
    /// PLAIN sent an empty challenge and waits for the credentials.
    PlainResponse,
    /// LOGIN waits for the user name.
    LoginUser,
    /// LOGIN waits for the password of `user`.
    LoginPass { user: String },
    /// CRAM-MD5 sent `challenge` (raw, not base64) and waits for the digest.
    CramResponse { challenge: String },
    /// The exchange is over (success or failure).
    Done,
}

/// One AUTH exchange in progress.
#[derive(Debug, Clone)]
pub struct AuthExchange {
    mechanism: Mechanism,
    state: State,
}

impl AuthExchange {
    /// Starts an exchange for `AUTH <mech> [initial_response]`.
    ///
    /// `initial_response` is the command's second argument as sent (`=`
    /// means an empty response, RFC 4954). `hostname` and `nonce` build the
    /// CRAM-MD5 challenge `<nonce@hostname>` (deterministic: no clock).
    /// `users` is needed here because PLAIN with an initial response
    /// finishes immediately; `None` accepts any non-empty credentials.
    pub fn start(
        mechanism: Mechanism,
        initial_response: Option<&str>,
        hostname: &str,
        nonce: u64,
        users: Option<&Users>,
    ) -> (AuthExchange, Step) {
        let mut ex = AuthExchange {
            mechanism,
            state: State::Done,
        };
        let step = match (mechanism, initial_response) {
            (Mechanism::Plain, None) => {
                ex.state = State::PlainResponse;
                Step::Challenge(String::new())
            }
            (Mechanism::Plain, Some(ir)) => match decode_initial(ir) {
                Ok(bytes) => plain_verify(&bytes, users),
                Err(f) => Step::Failure(f),
            },
            (Mechanism::Login, None) => {
                ex.state = State::LoginUser;
                Step::Challenge(LOGIN_USERNAME_CHALLENGE.to_owned())
            }
            (Mechanism::Login, Some(ir)) => match decode_initial(ir).and_then(into_text) {
                Ok(user) => {
                    ex.state = State::LoginPass { user };
                    Step::Challenge(LOGIN_PASSWORD_CHALLENGE.to_owned())
                }
                Err(f) => Step::Failure(f),
            },
            (Mechanism::CramMd5, None) => {
                let challenge = format!("<{nonce}@{hostname}>");
                let encoded = STANDARD.encode(challenge.as_bytes());
                ex.state = State::CramResponse { challenge };
                Step::Challenge(encoded)
            }
            // CRAM-MD5 is server-first: an initial response is a client error.
            (Mechanism::CramMd5, Some(_)) => Step::Failure(AuthFailure::Malformed),
        };
        (ex, step)
    }

    /// Feeds the client's reply to the last challenge: its line without CRLF
    /// (base64, or `*` to cancel). Any bytes are safe here.
    pub fn next(&mut self, client_line: &[u8], users: Option<&Users>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        if matches!(state, State::Done) {
            return Step::Failure(AuthFailure::Malformed);
        }
        let line = client_line.trim_ascii_end();
        if line == b"*" {
            return Step::Failure(AuthFailure::Cancelled);
        }
        let decoded = match decode(line) {
            Ok(d) => d,
            Err(f) => return Step::Failure(f),
        };
        match state {
            State::PlainResponse => plain_verify(&decoded, users),
            State::LoginUser => match into_text(decoded) {
                Ok(user) => {
                    self.state = State::LoginPass { user };
                    Step::Challenge(LOGIN_PASSWORD_CHALLENGE.to_owned())
                }
                Err(f) => Step::Failure(f),
            },
            State::LoginPass { user } => match into_text(decoded) {
                Ok(pass) => verify(user, &pass, users),
                Err(f) => Step::Failure(f),
            },
            State::CramResponse { challenge } => cram_verify(&decoded, &challenge, users),
            State::Done => Step::Failure(AuthFailure::Malformed),
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// True once the exchange has ended (success or failure); further
    /// [`AuthExchange::next`] calls fail.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

/// Decodes an initial response, where `=` means "empty" (RFC 4954 §4).
fn decode_initial(ir: &str) -> Result<Vec<u8>, AuthFailure> {
    let ir = ir.trim_ascii_end();
    if ir == "=" {
        return Ok(Vec::new());
    }
    decode(ir.as_bytes())
}

fn decode(line: &[u8]) -> Result<Vec<u8>, AuthFailure> {
    if line.len() > MAX_AUTH_LINE {
        return Err(AuthFailure::Malformed);
    }
    LENIENT_B64.decode(line).map_err(|_| AuthFailure::Malformed)
}

fn into_text(bytes: Vec<u8>) -> Result<String, AuthFailure> {
    String::from_utf8(bytes).map_err(|_| AuthFailure::Malformed)
}

/// User names end up in capture headers and logs: no control characters.
fn user_is_clean(user: &str) -> bool {
    !user.chars().any(char::is_control)
}

/// Final check shared by PLAIN and LOGIN.
fn verify(user: String, pass: &str, users: Option<&Users>) -> Step {
    if !user_is_clean(&user) {
        return Step::Failure(AuthFailure::Malformed);
    }
    if user.is_empty() || pass.is_empty() {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    match users {
        Some(users) if !users.check(&user, pass) => Step::Failure(AuthFailure::BadCredentials),
        _ => Step::Success { user },
    }
}

/// PLAIN message: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
fn plain_verify(msg: &[u8], users: Option<&Users>) -> Step {
    // An empty message (`AUTH PLAIN =`) carries empty credentials.
    if msg.is_empty() {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failure(AuthFailure::Malformed);
    };
    let (Ok(authzid), Ok(authcid), Ok(passwd)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(authcid),
        std::str::from_utf8(passwd),
    ) else {
        return Step::Failure(AuthFailure::Malformed);
    };
    // Acting as someone else is not supported when identities are checked.
    if users.is_some() && !authzid.is_empty() && authzid != authcid {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    verify(authcid.to_owned(), passwd, users)
}

/// CRAM-MD5 response: `user SP hex(HMAC-MD5(password, challenge))`.
fn cram_verify(msg: &[u8], challenge: &str, users: Option<&Users>) -> Step {
    let Ok(text) = std::str::from_utf8(msg) else {
        return Step::Failure(AuthFailure::Malformed);
    };
    let Some((user, digest)) = text.rsplit_once(' ') else {
        return Step::Failure(AuthFailure::Malformed);
    };
    if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Step::Failure(AuthFailure::Malformed);
    }
    if !user_is_clean(user) {
        return Step::Failure(AuthFailure::Malformed);
    }
    if user.is_empty() {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    if let Some(users) = users {
        let Some(password) = users.password(user) else {
            return Step::Failure(AuthFailure::BadCredentials);
        };
        let expected = cram_md5_digest(password, challenge);
        if !ct_eq(expected.as_bytes(), digest.to_ascii_lowercase().as_bytes()) {
            return Step::Failure(AuthFailure::BadCredentials);
        }
    }
    Step::Success {
        user: user.to_owned(),
    }
}

/// Lower-case hex of HMAC-MD5(`password`, `challenge`) — what a CRAM-MD5
/// client sends after its user name. Public so clients (the load generator)
/// can answer the sink's challenge.
pub fn cram_md5_digest(password: &str, challenge: &str) -> String {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = match Hmac::<md5::Md5>::new_from_slice(password.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(challenge.as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(32);
    for b in tag {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    fn users() -> Users {
        Users::from_pairs([("alice", "s3cret"), ("tim", "tanstaaftanstaaf")])
    }

    fn ok(user: &str) -> Step {
        Step::Success {
            user: user.to_owned(),
        }
    }

    const BAD: Step = Step::Failure(AuthFailure::BadCredentials);
    const MALFORMED: Step = Step::Failure(AuthFailure::Malformed);
    const CANCELLED: Step = Step::Failure(AuthFailure::Cancelled);

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("Login"), Some(Mechanism::Login));
        assert_eq!(Mechanism::parse("cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(Mechanism::parse("CRAM-MD"), None);
        assert_eq!(Mechanism::parse("XOAUTH2"), None);
        assert_eq!(Mechanism::parse_bytes(b"\xffPLAIN"), None);
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
            assert_eq!(m.to_string(), m.name());
        }
    }

    #[test]
    fn failure_replies() {
        assert_eq!(
            AuthFailure::BadCredentials.reply(),
            (535, "5.7.8", "Authentication credentials invalid")
        );
        assert_eq!(
            AuthFailure::Malformed.reply(),
            (501, "5.5.2", "Cannot decode response")
        );
        assert_eq!(
            AuthFailure::Cancelled.reply(),
            (501, "5.0.0", "Authentication cancelled")
        );
    }

    #[test]
    fn plain_initial_response() {
        let ir = b64(b"\0alice\0s3cret");
        for u in [None, Some(&users())] {
            let (ex, step) = AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, u);
            assert_eq!(step, ok("alice"));
            assert!(ex.is_done());
        }
        // authzid equal to authcid is fine; anything else only without a table.
        let ir = b64(b"alice\0alice\0s3cret");
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, Some(&users())).1,
            ok("alice")
        );
        let ir = b64(b"bob\0alice\0s3cret");
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, Some(&users())).1,
            BAD
        );
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, None).1,
            ok("alice")
        );
        // Wrong password / unknown user only fail with a table.
        let wrong = b64(b"\0alice\0nope");
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&wrong), "h", 1, Some(&users())).1,
            BAD
        );
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&wrong), "h", 1, None).1,
            ok("alice")
        );
        let unknown = b64(b"\0mallory\0s3cret");
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&unknown), "h", 1, Some(&users())).1,
            BAD
        );
    }

    #[test]
    fn plain_empty_and_malformed() {
        for u in [None, Some(&users())] {
            // `AUTH PLAIN =` and an empty string: empty credentials.
            assert_eq!(
                AuthExchange::start(Mechanism::Plain, Some("="), "h", 1, u).1,
                BAD
            );
            assert_eq!(
                AuthExchange::start(Mechanism::Plain, Some(""), "h", 1, u).1,
                BAD
            );
            for bad in [b64(b"\0\0"), b64(b"\0alice\0"), b64(b"\0\0s3cret")] {
                assert_eq!(
                    AuthExchange::start(Mechanism::Plain, Some(&bad), "h", 1, u).1,
                    BAD,
                    "{bad}"
                );
            }
            for bad in [
                "not base64!".to_owned(),
                b64(b"alice s3cret"),
                b64(b"\0alice"),
                b64(b"\0alice\0s3\0cret"),
                b64(b"\0al\xffice\0s3cret"),
                b64(b"\0ali\r\nce\0s3cret"),
            ] {
                assert_eq!(
                    AuthExchange::start(Mechanism::Plain, Some(&bad), "h", 1, u).1,
                    MALFORMED,
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn plain_with_challenge() {
        let (mut ex, step) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
        assert_eq!(step, Step::Challenge(String::new()));
        assert!(!ex.is_done());
        assert_eq!(
            ex.next(b64(b"\0alice\0s3cret").as_bytes(), Some(&users())),
            ok("alice")
        );
        assert!(ex.is_done());
        // Calling again after completion is an error, not a panic.
        assert_eq!(ex.next(b"", None), MALFORMED);

        let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
        assert_eq!(
            ex.next(b64(b"\0alice\0wrong").as_bytes(), Some(&users())),
            BAD
        );
        let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
        assert_eq!(ex.next(b"*", None), CANCELLED);
        let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
        assert_eq!(ex.next(b"%%%%", None), MALFORMED);
        let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
        // Unpadded base64 and trailing CR are tolerated.
        let unpadded = b64(b"\0al\0pw").trim_end_matches('=').to_owned() + "\r";
        assert_eq!(ex.next(unpadded.as_bytes(), None), ok("al"));
    }

    #[test]
    fn login() {
        for u in [None, Some(&users())] {
            let (mut ex, step) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
            assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
            assert_eq!(
                ex.next(b64(b"alice").as_bytes(), u),
                Step::Challenge("UGFzc3dvcmQ6".into())
            );
            assert_eq!(ex.next(b64(b"s3cret").as_bytes(), u), ok("alice"));

            // Initial response carries the user name.
            let (mut ex, step) =
                AuthExchange::start(Mechanism::Login, Some(&b64(b"alice")), "h", 1, u);
            assert_eq!(step, Step::Challenge("UGFzc3dvcmQ6".into()));
            assert_eq!(ex.next(b64(b"s3cret").as_bytes(), u), ok("alice"));

            // Cancel at either step.
            let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
            assert_eq!(ex.next(b"*", u), CANCELLED);
            let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
            ex.next(b64(b"alice").as_bytes(), u);
            assert_eq!(ex.next(b"*", u), CANCELLED);

            // Bad base64 at either step, and in the initial response.
            let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
            assert_eq!(ex.next(b"a=b=", u), MALFORMED);
            let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
            ex.next(b64(b"alice").as_bytes(), u);
            assert_eq!(ex.next(b"\xff\x00", u), MALFORMED);
            assert_eq!(
                AuthExchange::start(Mechanism::Login, Some("!!"), "h", 1, u).1,
                MALFORMED
            );

            // Empty password is never accepted.
            let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
            ex.next(b64(b"alice").as_bytes(), u);
            assert_eq!(ex.next(b"", u), BAD);
        }
        let u = Some(&users());
        let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        ex.next(b64(b"alice").as_bytes(), u);
        assert_eq!(ex.next(b64(b"wrong").as_bytes(), u), BAD);
        assert_eq!(ex.mechanism(), Mechanism::Login);
    }

    fn cram_challenge(step: &Step) -> String {
        let Step::Challenge(c) = step else {
            panic!("expected a challenge, got {step:?}")
        };
        String::from_utf8(STANDARD.decode(c).unwrap()).unwrap()
    }

    /// HMAC-MD5 computed here independently of `cram_md5_digest`.
    fn independent_digest(password: &str, challenge: &str) -> String {
        let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(password.as_bytes()).unwrap();
        mac.update(challenge.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn cram_md5_rfc2195_vector() {
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        let digest = cram_md5_digest("tanstaaftanstaaf", challenge);
        assert_eq!(digest, "b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(digest, independent_digest("tanstaaftanstaaf", challenge));
        assert_eq!(
            b64(format!("tim {digest}").as_bytes()),
            "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
        );
        // And through the state machine, with the RFC's exact response.
        let step = cram_verify(
            &STANDARD
                .decode("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
                .unwrap(),
            challenge,
            Some(&users()),
        );
        assert_eq!(step, ok("tim"));
    }

    #[test]
    fn cram_md5_exchange() {
        let u = users();
        let (mut ex, step) =
            AuthExchange::start(Mechanism::CramMd5, None, "mx.example", 42, Some(&u));
        let challenge = cram_challenge(&step);
        assert_eq!(challenge, "<42@mx.example>");
        let resp = format!("alice {}", independent_digest("s3cret", &challenge));
        assert_eq!(
            ex.next(b64(resp.as_bytes()).as_bytes(), Some(&u)),
            ok("alice")
        );

        // Upper-case hex is accepted too.
        let (mut ex, step) =
            AuthExchange::start(Mechanism::CramMd5, None, "mx.example", 43, Some(&u));
        let challenge = cram_challenge(&step);
        let resp = format!(
            "alice {}",
            independent_digest("s3cret", &challenge).to_uppercase()
        );
        assert_eq!(
            ex.next(b64(resp.as_bytes()).as_bytes(), Some(&u)),
            ok("alice")
        );

        // Wrong password, digest for another challenge, unknown user.
        for resp in [
            format!("alice {}", independent_digest("wrong", &challenge)),
            format!("alice {}", independent_digest("s3cret", "<1@mx.example>")),
            format!("mallory {}", independent_digest("s3cret", &challenge)),
        ] {
            let (mut ex, _) =
                AuthExchange::start(Mechanism::CramMd5, None, "mx.example", 43, Some(&u));
            assert_eq!(
                ex.next(b64(resp.as_bytes()).as_bytes(), Some(&u)),
                BAD,
                "{resp}"
            );
        }

        // Without a table: any well-formed response is accepted.
        let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "h", 7, None);
        let resp = format!("anyone {}", "0".repeat(32));
        assert_eq!(ex.next(b64(resp.as_bytes()).as_bytes(), None), ok("anyone"));

        // Malformed responses fail either way.
        for u in [None, Some(&u)] {
            for resp in [
                b64(b"alice"),
                b64(b"alice 1234"),
                b64(format!("alice {}", "g".repeat(32)).as_bytes()),
                b64(format!("al\nice {}", "0".repeat(32)).as_bytes()),
                "***".to_owned(),
            ] {
                let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "h", 7, u);
                assert_eq!(ex.next(resp.as_bytes(), u), MALFORMED, "{resp}");
            }
            let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "h", 7, u);
            assert_eq!(ex.next(b"*", u), CANCELLED);
            // CRAM-MD5 takes no initial response.
            assert_eq!(
                AuthExchange::start(Mechanism::CramMd5, Some("Zm9v"), "h", 7, u).1,
                MALFORMED
            );
        }
    }

    #[test]
    fn oversized_and_garbage_never_panic() {
        let long = "QUFB".repeat(MAX_AUTH_LINE / 4 + 1);
        assert!(long.len() > MAX_AUTH_LINE);
        for mech in Mechanism::ALL {
            let (mut ex, _) = AuthExchange::start(mech, None, "h", 1, None);
            assert_eq!(ex.next(long.as_bytes(), None), MALFORMED);
        }
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(&long), "h", 1, None).1,
            MALFORMED
        );
        // Exactly at the limit is still decoded (and then judged on content).
        let at_limit = "QUFB".repeat(MAX_AUTH_LINE / 4);
        let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
        assert_eq!(ex.next(at_limit.as_bytes(), None), MALFORMED);

        // Deterministic pseudo-random garbage through every state.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let len = (round % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let encoded = b64(&bytes);
            for mech in Mechanism::ALL {
                for u in [None, Some(&users())] {
                    let (mut ex, _) = AuthExchange::start(mech, None, "h", 1, u);
                    let _ = ex.next(&bytes, u);
                    let (mut ex, _) = AuthExchange::start(mech, None, "h", 1, u);
                    if let Step::Success { user } = ex.next(encoded.as_bytes(), u) {
                        assert!(!user.is_empty() && !user.chars().any(char::is_control));
                    }
                    let _ = ex.next(encoded.as_bytes(), u);
                    let _ = ex.next(encoded.as_bytes(), u);
                }
            }
        }
    }

    #[test]
    fn users_file() {
        let path = Path::new("/etc/mailstorm/users");
        let text = b"# comment\n\n  # indented comment\nalice:s3cret\r\nbob:pa:ss word\n";
        let u = Users::parse(text, path).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.check("alice", "s3cret"));
        assert!(!u.check("alice", "s3cre"));
        assert!(!u.check("alice", "s3cret "));
        assert!(!u.check("Alice", "s3cret"));
        assert!(u.check("bob", "pa:ss word"));
        assert_eq!(u.password("bob"), Some("pa:ss word"));
        assert_eq!(u.password("carol"), None);
        assert!(!format!("{u:?}").contains("s3cret"));

        let cases: [(&[u8], usize, &str); 6] = [
            (b"alice:x\nno-colon\n", 2, "separator"),
            (b":pw\n", 1, "empty user"),
            (b"alice:\n", 1, "empty password"),
            (b"al ice:pw\n", 1, "user name"),
            (b"alice:p\x01w\n", 1, "control"),
            (b"\n\nalice:\xff\n", 3, "UTF-8"),
        ];
        for (text, line, what) in cases {
            let err = Users::parse(text, path).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("/etc/mailstorm/users:{line}: ")),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
        }
        let err = Users::parse(b"alice:a\nbob:b\nalice:c\n", path).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Duplicate {
                    line: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{err}"
        );

        // load() reads files and names a missing one.
        let dir = std::env::temp_dir().join(format!("mailstorm-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        std::fs::write(&file, "tim:tanstaaftanstaaf\n").unwrap();
        assert!(Users::load(&file).unwrap().check("tim", "tanstaaftanstaaf"));
        let missing = dir.join("missing");
        let err = Users::load(&missing).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
