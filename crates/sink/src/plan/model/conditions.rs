//! `match:`: the conditions on the session and command a rule applies to
//! (client, EHLO name, sender, recipients, a header, the size, TLS, the
//! authenticated user, a DNS query's name and type).

use serde::{Deserialize, Serialize};

use super::OneOrMany;

/// A header condition (data_end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    /// Header field name (case-insensitive).
    pub name: String,
    /// Regular expression the (first) field's value must match; absent:
    /// the field only has to be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Message size bounds in octets (inclusive), written as sizes (`64k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    /// At least this many octets.
    #[serde(default, with = "mailstorm_config::serde_units::size")]
    pub min: u64,
    /// At most this many octets.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "mailstorm_config::serde_units::opt_size"
    )]
    pub max: Option<u64>,
}

/// Conditions on the session and command; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Client address or CIDR block (or a list: any of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<OneOrMany<String>>,
    /// Glob on the EHLO/HELO argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo: Option<OneOrMany<String>>,
    /// Glob on the reverse-path (`""` is the null sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<OneOrMany<String>>,
    /// Glob on the recipient (after RCPT: any recipient of the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<OneOrMany<String>>,
    /// Recipient domain, exact, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_domain: Option<OneOrMany<String>>,
    /// A header field (data_end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSpec>,
    /// Message size range (data_end, bdat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeSpec>,
    /// TLS in use (or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Glob on the authenticated user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<OneOrMany<String>>,
    /// Glob on a DNS query's name, lower case without the final dot
    /// (stage dns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qname: Option<OneOrMany<String>>,
    /// A DNS query's type: `MX`, `A`, `AAAA`, ... (stage dns;
    /// case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qtype: Option<OneOrMany<String>>,
}
