//! The plan file's shape (serde). Unknown keys are errors everywhere; value
//! checks that need only one field run while parsing (so the error carries
//! that field's line and column) and whole-rule checks run when the rule's
//! mapping ends (the error points at the rule).
//!
//! Times are written in the shared duration grammar (`300ms`, `2s`, `1m`;
//! a plain number is seconds) and sizes in the size grammar (`64k`,
//! `10MiB`): see [`mailstorm_config::units`].
//!
//! This file holds the plan's outline ([`PlanSpec`] → [`RuleSpec`] →
//! [`ActionSpec`]); the pieces live beside it, one file per part of a
//! rule, and are re-exported here: `conditions.rs` (`match:`),
//! `selection.rs` (`key:`, `window:`, `rate_limit:`, `max_connections:`),
//! `sequence.rs`, `stage_sel.rs`, `actions.rs` (the actions with a spec of
//! their own), `delay.rs`, `queue.rs`, `dns_fault.rs`, `expect.rs`
//! (`expect:`), `values.rs` (checked numbers and the duration fields) and
//! `checked.rs` (whole-mapping checks while parsing).

use serde::{Deserialize, Serialize};

mod actions;
mod checked;
mod conditions;
mod delay;
mod dns_fault;
mod expect;
mod queue;
mod selection;
mod sequence;
mod stage_sel;
mod values;
pub use actions::{
    CloseMode, DisconnectSpec, GreylistSpec, IdleCloseSpec, ReplySpec, SplitSpec, StallSpec,
    ThrottleSpec,
};
pub use checked::{Check, Checked};
pub use conditions::{HeaderSpec, MatchSpec, SizeSpec};
use delay::delay_spec;
pub use delay::{DelaySpec, DistKind};
pub use dns_fault::DnsFault;
pub use expect::{ExpectSpec, Policy, DEFAULT_POLICY, METRICS};
pub use queue::{OverflowSpec, QueueSpec};
pub use selection::{ConnPer, KeyKind, MaxConnSpec, RateBy, RateLimitSpec, WindowSpec};
pub use sequence::{DnsStep, SeqStep, DNS_STEPS};
pub use stage_sel::StageSel;
pub use values::{Code, NonNeg, OneOrMany, Positive, Probability};

/// Keys renamed when plans moved to the shared duration grammar, beyond the
/// `*_seconds` / `*_ms` suffixes the loader recognises by itself.
const RENAMED: &[(&str, &str)] = &[("ms", "fixed"), ("seconds", "duration")];

/// Parses a YAML plan, reporting `origin:line:col`, the key path and the
/// allowed keys or values.
pub fn parse_yaml(text: &str, origin: &str) -> Result<PlanSpec, mailstorm_config::YamlError> {
    mailstorm_config::yaml::from_yaml_str_with(text, origin, RENAMED)
}

/// A fault plan as written: a seed and ordered rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// Seed of every hash-based decision.
    #[serde(default)]
    pub seed: u64,
    /// Most per-key state entries kept (attempt counters, greylist entries,
    /// token buckets; at least 128); past it, the entries unused for
    /// longest are evicted, about half the cap at a time (see the engine's
    /// `state` module: an entry used within the last `state_cap / 128`
    /// new keys of its stripe is never evicted).
    #[serde(
        default = "default_state_cap",
        deserialize_with = "state_cap_at_most_max"
    )]
    pub state_cap: usize,
    /// The rules, in order: the first that matches and is selected decides
    /// (at most [`MAX_RULES`]).
    #[serde(default, deserialize_with = "rules_at_most_max")]
    pub rules: Vec<Checked<RuleSpec>>,
    /// The behaviour expected of clients: checks over the referee's
    /// verdict metrics that replace the default policy metric by metric
    /// (see [`METRICS`], [`DEFAULT_POLICY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<ExpectSpec>,
}

fn default_state_cap() -> usize {
    100_000
}

/// Most rules in one plan. A rule costs about 2 KiB (as written and as
/// compiled) whatever its text, so without a cap a 2 MiB request body of
/// one-line rules would hold ~75 MiB; real plans have a handful of rules.
pub const MAX_RULES: usize = 10_000;

/// Largest `state_cap`: ~50 bytes an entry, so about 500 MB of per-key
/// state at most.
pub const MAX_STATE_CAP: usize = 10_000_000;

fn state_cap_at_most_max<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let cap = usize::deserialize(d)?;
    if cap > MAX_STATE_CAP {
        return Err(serde::de::Error::custom(format!(
            "state_cap {cap} is more than the most allowed, {MAX_STATE_CAP}"
        )));
    }
    Ok(cap)
}

/// Reads the rules and stops at the first past [`MAX_RULES`], so the error
/// points at that rule and an oversized plan is never held whole.
fn rules_at_most_max<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Checked<RuleSpec>>, D::Error> {
    use serde::de::{DeserializeSeed, Error, IgnoredAny, SeqAccess, Visitor};
    use std::fmt;
    struct AtMost;
    /// The rule past the cap: refused from inside its own value, where the
    /// parser knows its line and column.
    struct OneTooMany;
    impl<'de> DeserializeSeed<'de> for OneTooMany {
        type Value = IgnoredAny;
        fn deserialize<E: serde::Deserializer<'de>>(self, d: E) -> Result<IgnoredAny, E::Error> {
            d.deserialize_any(self)
        }
    }
    fn too_many<E: Error>() -> E {
        E::custom(format!(
            "more than {MAX_RULES} rules: a plan holds at most {MAX_RULES}"
        ))
    }
    impl<'de> Visitor<'de> for OneTooMany {
        type Value = IgnoredAny;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "no more than {MAX_RULES} rules")
        }
        // A rule is a mapping; anything else past the cap is refused alike.
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<IgnoredAny, A::Error> {
            Err(too_many())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<IgnoredAny, A::Error> {
            Err(too_many())
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<IgnoredAny, E> {
            Err(too_many())
        }
        fn visit_unit<E: Error>(self) -> Result<IgnoredAny, E> {
            Err(too_many())
        }
    }
    impl<'de> Visitor<'de> for AtMost {
        type Value = Vec<Checked<RuleSpec>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {MAX_RULES} rules")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut rules = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RULES));
            while rules.len() < MAX_RULES {
                match seq.next_element()? {
                    Some(rule) => rules.push(rule),
                    None => {
                        // Doubling left up to half the list unused, at
                        // 1.2 KB a rule, kept as long as the plan is.
                        rules.shrink_to_fit();
                        return Ok(rules);
                    }
                }
            }
            match seq.next_element_seed(OneTooMany)? {
                Some(_) => Err(A::Error::custom("unreachable: the seed refuses")),
                None => Ok(rules),
            }
        }
    }
    d.deserialize_seq(AtMost)
}
/// One rule as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A name for events and reports (default `rule<N>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The stage.
    pub stage: StageSel,
    /// Conditions.
    #[serde(default, rename = "match", skip_serializing_if = "is_default")]
    pub matches: MatchSpec,
    /// The attempt key (default by stage: rcpt → rcpt; mail, data, bdat,
    /// data_end → sender; otherwise connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyKind>,
    /// Select with this probability (hash of seed, rule, key, attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<Probability>,
    /// Select attempts N, 2N, 3N, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Positive>,
    /// Select attempts 1..=N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    /// Select attempts after the N-th.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// The n-th attempt gets the n-th step (then the last repeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Vec<SeqStep>>,
    /// Active only in this time window (timing-dependent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// Select only requests over a rate (timing-dependent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Select only connections over a cap (connect; load-dependent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<MaxConnSpec>,
    /// What to do.
    #[serde(default)]
    pub action: ActionSpec,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// What a selected rule does. At most one of `reply`, `greylist`,
/// `disconnect`, `stall`, `idle_close`, `accept`; `delay`, `throttle` and
/// `split_reply` may accompany it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Replace the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplySpec>,
    /// Wait before replying.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "delay_spec"
    )]
    pub delay: Option<DelaySpec>,
    /// Close the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<DisconnectSpec>,
    /// Stop reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallSpec>,
    /// Slow link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleSpec>,
    /// Fragment replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_reply: Option<SplitSpec>,
    /// Greylist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greylist: Option<GreylistSpec>,
    /// Close when idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_close: Option<IdleCloseSpec>,
    /// Proceed normally (stops later rules from deciding).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept: bool,
    /// A server with finite capacity (`data_end` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSpec>,
    /// A DNS fault (stage dns only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsFault>,
}
