//! `action.dns`: what the DNS responder does instead of answering (rules
//! at `stage: dns`).

use serde::{Deserialize, Serialize};

/// `dns`: what the DNS responder does instead of answering (stage dns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsFault {
    /// Answer SERVFAIL.
    Servfail,
    /// Answer NXDOMAIN (the name does not exist).
    Nxdomain,
    /// Send nothing: the client times out.
    NoAnswer,
    /// Over UDP, an empty answer with the TC bit set (the client must
    /// retry over TCP); over TCP, the normal answer.
    Truncate,
}
