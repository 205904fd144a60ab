//! The plan's `expect:` key: the behaviour expected of clients, as checks
//! in the shared expression language ([`mailstorm_config::expr`]) over the
//! referee's verdict metrics ([`METRICS`]).

use std::fmt;

use mailstorm_config::expr::{Check, ExprError};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The verdict metrics, in report order. Each is measured per client by
/// the referee (see `plan::referee::verdicts`).
pub const METRICS: [&str; 8] = [
    "retry_4xx_min_interval",
    "retries_per_4xx",
    "resent_after_5xx",
    "commands_after_421",
    "reconnect_after_421",
    "size_violations",
    "unannounced_pipelining",
    "unclean_quits",
];

/// The default policy, one check per metric in [`METRICS`] order.
pub const DEFAULT_POLICY: [&str; 8] = [
    "retry_4xx_min_interval>=1s",
    "retries_per_4xx<=5",
    "resent_after_5xx==0",
    "commands_after_421==0",
    "reconnect_after_421>=1s",
    "size_violations==0",
    "unannounced_pipelining==0",
    "unclean_quits==0",
];

/// `expect:` as written: a list of checks (`["retries_per_4xx<=3"]`) or one
/// comma-separated string. A check for a metric replaces the default for
/// that metric; the other metrics keep theirs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpectSpec(pub Vec<Check>);

fn parse_checks(text: &str) -> Result<Vec<Check>, ExprError> {
    mailstorm_config::expr::parse_list(text, Some(&METRICS))
}

/// One list item: a check (or several, comma-separated), parsed where it
/// stands so an error carries the item's own line, column and index.
struct Item(Vec<Check>);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_checks(&text).map(Item).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ExpectSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of checks such as `retries_per_4xx<=5`, or one comma-separated string of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpectSpec, E> {
                parse_checks(v).map(ExpectSpec).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExpectSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(Item(checks)) = seq.next_element::<Item>()? {
                    out.extend(checks);
                }
                Ok(ExpectSpec(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ExpectSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

/// A complete policy: one check per metric, in [`METRICS`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy(pub Vec<Check>);

impl Default for Policy {
    fn default() -> Policy {
        Policy(
            DEFAULT_POLICY
                .iter()
                .map(|t| Check::parse(t).expect("the default policy parses"))
                .collect(),
        )
    }
}

impl Policy {
    /// This policy with `expect`'s checks replacing the ones for the same
    /// metrics (the last one for a metric wins).
    pub fn with(mut self, expect: Option<&ExpectSpec>) -> Policy {
        for c in expect.map(|e| e.0.as_slice()).unwrap_or_default() {
            if let Some(i) = METRICS.iter().position(|m| *m == c.metric) {
                self.0[i] = c.clone();
            }
        }
        self
    }
}
