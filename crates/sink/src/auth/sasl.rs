//! The server side of one AUTH exchange as a state machine over the
//! protocol crate's SASL mechanisms: PLAIN (RFC 4616), LOGIN and CRAM-MD5
//! (RFC 2195). This module adds the sink's policy: which credentials pass.

use mailstorm_proto::sasl::{
    self, Mechanism, SaslError, CANCEL, LOGIN_PASSWORD_CHALLENGE, LOGIN_USERNAME_CHALLENGE,
};

use super::Users;

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

impl From<SaslError> for AuthFailure {
    // Every decoding problem gets the same reply: the client sent something
    // the mechanism cannot read.
    fn from(_: SaslError) -> AuthFailure {
        AuthFailure::Malformed
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
        let initial = initial_response.map(|ir| {
            let mut decoded = Vec::new();
            sasl::decode_initial_response(ir.as_bytes(), &mut decoded).map(|()| decoded)
        });
        let step = match (mechanism, initial) {
            (_, Some(Err(e))) => Step::Failure(e.into()),
            (Mechanism::Plain, None) => {
                ex.state = State::PlainResponse;
                Step::Challenge(String::new())
            }
            (Mechanism::Plain, Some(Ok(msg))) => plain_verify(&msg, users),
            (Mechanism::Login, None) => {
                ex.state = State::LoginUser;
                Step::Challenge(LOGIN_USERNAME_CHALLENGE.to_owned())
            }
            (Mechanism::Login, Some(Ok(msg))) => ex.login_user(&msg),
            // CRAM-MD5 is server-first: an initial response is a client error.
            (Mechanism::CramMd5, Some(Ok(_))) => Step::Failure(AuthFailure::Malformed),
            (Mechanism::CramMd5, None) => {
                let challenge = format!("<{nonce}@{hostname}>");
                let mut encoded = Vec::new();
                sasl::encode_base64(&mut encoded, challenge.as_bytes());
                ex.state = State::CramResponse { challenge };
                // Base64 is ASCII.
                Step::Challenge(String::from_utf8_lossy(&encoded).into_owned())
            }
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
        if client_line.trim_ascii_end() == CANCEL {
            return Step::Failure(AuthFailure::Cancelled);
        }
        let mut msg = Vec::new();
        if let Err(e) = sasl::decode_base64(client_line, &mut msg) {
            return Step::Failure(e.into());
        }
        match state {
            State::PlainResponse => plain_verify(&msg, users),
            State::LoginUser => self.login_user(&msg),
            State::LoginPass { user } => match sasl::decode_login(&msg) {
                Ok(pass) => verify(user, pass, users),
                Err(e) => Step::Failure(e.into()),
            },
            State::CramResponse { challenge } => cram_verify(&msg, &challenge, users),
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

    /// LOGIN got the user name: ask for the password.
    fn login_user(&mut self, msg: &[u8]) -> Step {
        match sasl::decode_login(msg) {
            Ok(user) => {
                self.state = State::LoginPass {
                    user: user.to_owned(),
                };
                Step::Challenge(LOGIN_PASSWORD_CHALLENGE.to_owned())
            }
            Err(e) => Step::Failure(e.into()),
        }
    }
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

/// PLAIN: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
pub(super) fn plain_verify(msg: &[u8], users: Option<&Users>) -> Step {
    // An empty message (`AUTH PLAIN =`) carries empty credentials.
    if msg.is_empty() {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    let creds = match sasl::decode_plain(msg) {
        Ok(c) => c,
        Err(e) => return Step::Failure(e.into()),
    };
    // Acting as someone else is not supported when identities are checked.
    if users.is_some() && !creds.authzid.is_empty() && creds.authzid != creds.authcid {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    verify(creds.authcid.to_owned(), creds.password, users)
}

/// CRAM-MD5: `user SP hex(HMAC-MD5(password, challenge))`.
pub(super) fn cram_verify(msg: &[u8], challenge: &str, users: Option<&Users>) -> Step {
    let response = match sasl::decode_cram_md5(msg) {
        Ok(r) => r,
        Err(e) => return Step::Failure(e.into()),
    };
    let user = response.user;
    if !user_is_clean(user) {
        return Step::Failure(AuthFailure::Malformed);
    }
    if user.is_empty() {
        return Step::Failure(AuthFailure::BadCredentials);
    }
    if let Some(users) = users {
        let known = users
            .password(user)
            .is_some_and(|pw| response.verify(pw.as_bytes(), challenge.as_bytes()));
        if !known {
            return Step::Failure(AuthFailure::BadCredentials);
        }
    }
    Step::Success {
        user: user.to_owned(),
    }
}
