//! A client's DNS queries as the referee reports them, and the outcome
//! counters they share with the responder's totals (`GET /dns`). Its own
//! module: the client records and the report both use it.

use serde::{Deserialize, Serialize};

/// DNS queries counted by how the responder answered them: one counter
/// per outcome. Flattened into both [`DnsClientRecord`] (per client) and
/// [`crate::dns::DnsStats`] (all clients), so the fields appear at the top
/// level of their JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsOutcomes {
    /// Answered from the zone: records, or NOERROR with none (NODATA: the
    /// name has no record of the type).
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

/// A client's DNS queries, by how they were answered: the outcomes of
/// `GET /dns`, per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsClientRecord {
    /// Queries handled (counted once answered or dropped).
    pub queries: u64,
    /// The handled queries by outcome.
    #[serde(flatten)]
    pub outcomes: DnsOutcomes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pins_field_names_and_order() {
        let r = DnsClientRecord {
            queries: 1,
            outcomes: DnsOutcomes {
                answered: 2,
                nxdomain: 3,
                servfail: 4,
                no_answer: 5,
                truncated: 6,
                malformed: 7,
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"queries":1,"answered":2,"nxdomain":3,"servfail":4,"no_answer":5,"truncated":6,"malformed":7}"#
        );
        assert_eq!(serde_json::from_str::<DnsClientRecord>(&json).unwrap(), r);
    }
}
