//! [`ClientFilter`]: which client's records a control API call or a
//! [`crate::SinkHandle`] method looks at (`?helo=test-42&domain=t42.test`),
//! and the client id the referee keys its records by.

use serde::{Deserialize, Serialize};

/// Selects one test's client(s): by the EHLO name they sent (exact,
/// case-insensitive), and/or by a domain used as sender or recipient
/// domain. Both given: both must match. Neither: everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFilter {
    /// The EHLO/HELO/LHLO name (the client id of greeted sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<String>,
    /// A sender or recipient domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl ClientFilter {
    /// Every client.
    pub fn all() -> ClientFilter {
        ClientFilter::default()
    }

    /// The client that greeted with `helo`.
    pub fn helo(helo: impl Into<String>) -> ClientFilter {
        ClientFilter {
            helo: Some(helo.into()),
            domain: None,
        }
    }

    /// Clients that used `domain` as sender or recipient domain.
    pub fn domain(domain: impl Into<String>) -> ClientFilter {
        ClientFilter {
            helo: None,
            domain: Some(domain.into()),
        }
    }

    /// `true` when the filter selects everything.
    pub fn is_all(&self) -> bool {
        self.helo.is_none() && self.domain.is_none()
    }

    /// Whether a client with this id (see [`client_id`]) and these
    /// domains (lower-case) is selected.
    pub fn matches_client<'a>(&self, id: &str, mut domains: impl Iterator<Item = &'a str>) -> bool {
        self.helo
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(id))
            && self
                .domain
                .as_deref()
                .is_none_or(|d| domains.any(|x| x.eq_ignore_ascii_case(d)))
    }

    /// Whether a message with this greeting, sender and recipients is
    /// selected.
    pub fn matches_message(&self, helo: &str, sender: &str, rcpts: &[String]) -> bool {
        self.helo
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(helo))
            && self.domain.as_deref().is_none_or(|d| {
                std::iter::once(sender)
                    .chain(rcpts.iter().map(String::as_str))
                    .any(|a| domain_of(a).eq_ignore_ascii_case(d))
            })
    }
}

/// The domain part of an address (after the last `@`; empty when none).
pub fn domain_of(addr: &str) -> &str {
    // memchr's search, not `rsplit_once`: run per MAIL and RCPT under a plan.
    memchr::memrchr(b'@', addr.as_bytes()).map_or("", |i| &addr[i + 1..])
}

/// A client's id: its first greeting's argument, lower-cased, or the
/// text of its IP address (IPv4-mapped addresses as IPv4) for a session
/// that never greeted.
pub fn client_id(helo: Option<&str>, ip: std::net::IpAddr) -> String {
    match helo {
        Some(h) => h.to_ascii_lowercase(),
        None => ip.to_canonical().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = ClientFilter::helo("Test-42");
        assert!(f.matches_client("test-42", std::iter::empty()));
        assert!(!f.matches_client("test-4", std::iter::empty()));
        let d = ClientFilter::domain("T42.test");
        assert!(d.matches_client("x", ["a.test", "t42.test"].into_iter()));
        assert!(!d.matches_client("x", ["a.test"].into_iter()));
        assert!(d.matches_message("h", "a@b.test", &["x@t42.TEST".into()]));
        assert!(!d.matches_message("h", "a@b.test", &["x@t43.test".into()]));
        assert!(f.matches_message("TEST-42", "", &[]));
        assert!(ClientFilter::all().is_all());
        assert_eq!(
            client_id(Some("Host.A"), "::ffff:127.0.0.1".parse().unwrap()),
            "host.a"
        );
        assert_eq!(
            client_id(None, "::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1"
        );
    }
}
