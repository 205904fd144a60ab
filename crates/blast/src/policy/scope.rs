//! The scope of a failure, as real MTAs see it (RFC 5321, Postfix):
//! 421 anywhere, or a failed greeting, EHLO, STARTTLS or AUTH, or a
//! transport error, is a connection-level failure (close, reconnect after
//! backoff, negative concurrency feedback); MAIL and DATA 4xx defer the
//! message; RCPT 4xx defers that recipient only; 5xx is permanent for its
//! scope and never retried.

use crate::stats::Stage;

/// What a failure affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The connection (and every message waiting for it).
    Connection,
    /// The whole message.
    Message,
    /// One recipient.
    Recipient,
}

/// A reply classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx/3xx: go on.
    Ok,
    /// Retry later.
    Transient(Scope),
    /// Never retry.
    Permanent(Scope),
}

/// Classifies reply `code` received at `stage`.
pub fn classify(stage: Stage, code: u16) -> Class {
    if code == 421 {
        return Class::Transient(Scope::Connection);
    }
    let scope = match stage {
        Stage::Connect | Stage::Tls | Stage::Banner | Stage::Ehlo | Stage::Auth => {
            Scope::Connection
        }
        Stage::Rcpt => Scope::Recipient,
        _ => Scope::Message,
    };
    match code / 100 {
        2 | 3 => Class::Ok,
        4 => Class::Transient(scope),
        _ if scope == Scope::Connection => {
            // A 5xx greeting or EHLO refuses the session, not a message:
            // the message has not been offered, so it is not rejected.
            Class::Transient(Scope::Connection)
        }
        _ => Class::Permanent(scope),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        use Class::*;
        use Scope::*;
        assert_eq!(classify(Stage::Mail, 250), Ok);
        assert_eq!(classify(Stage::Data, 354), Ok);
        assert_eq!(classify(Stage::Banner, 421), Transient(Connection));
        assert_eq!(classify(Stage::Rcpt, 421), Transient(Connection));
        assert_eq!(classify(Stage::DataEnd, 421), Transient(Connection));
        assert_eq!(classify(Stage::Ehlo, 450), Transient(Connection));
        assert_eq!(classify(Stage::Banner, 554), Transient(Connection));
        assert_eq!(classify(Stage::Mail, 451), Transient(Message));
        assert_eq!(classify(Stage::DataEnd, 452), Transient(Message));
        assert_eq!(classify(Stage::Rcpt, 450), Transient(Recipient));
        assert_eq!(classify(Stage::Rcpt, 550), Permanent(Recipient));
        assert_eq!(classify(Stage::Mail, 553), Permanent(Message));
        assert_eq!(classify(Stage::DataEnd, 554), Permanent(Message));
    }
}
