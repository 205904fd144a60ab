//! A client's DNS queries as the referee reports them (its own module:
//! the client records and the report both use it).

use serde::{Deserialize, Serialize};

/// A client's DNS queries, by how they were answered: the outcomes of
/// `GET /dns`, per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsClientRecord {
    /// Queries handled (counted once answered or dropped).
    pub queries: u64,
    /// Answered from the zone (records, or NOERROR with none).
    pub answered: u64,
    /// Answered NXDOMAIN: a name not in the zone, or a fault.
    pub nxdomain: u64,
    /// Answered SERVFAIL (a fault).
    pub servfail: u64,
    /// Dropped without an answer (a fault).
    pub no_answer: u64,
    /// Answered with the TC bit over UDP (a fault).
    pub truncated: u64,
    /// Could not be parsed.
    pub malformed: u64,
}
