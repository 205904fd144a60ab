//! The plan file's shape (serde). Unknown keys are errors everywhere; value
//! checks that need only one field run while parsing (so the error carries
//! that field's line and column) and whole-rule checks run when the rule's
//! mapping ends (the error points at the rule).
//!
//! Times are written in the shared duration grammar (`300ms`, `2s`, `1m`;
//! a plain number is seconds) and sizes in the size grammar (`64k`,
//! `10MiB`): see [`mailstorm_config::units`].

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

mod dns_fault;
mod expect;
mod queue;
mod sequence;
mod stage_sel;
mod values;
pub use dns_fault::DnsFault;
pub use expect::{ExpectSpec, Policy, DEFAULT_POLICY, METRICS};
pub use queue::{OverflowSpec, QueueSpec};
pub use sequence::{DnsStep, SeqStep, DNS_STEPS};
pub use stage_sel::StageSel;
use values::{opt_millis, opt_secs, secs, whole_millis};
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
    #[serde(default = "default_state_cap")]
    pub state_cap: usize,
    /// The rules, in order: the first that matches and is selected decides.
    #[serde(default)]
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

/// What makes two attempts "the same request".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The recipient (at data_end: all recipients).
    Rcpt,
    /// The reverse-path.
    Sender,
    /// The Message-ID header (data_end).
    MessageId,
    /// Client IP, sender and recipient(s): the greylisting key.
    Triplet,
    /// The SMTP session: reset by STARTTLS (RFC 3207).
    Session,
    /// The TCP connection.
    Connection,
    /// One ordinal over every match of the rule.
    Global,
}

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

/// Active time since the plan was loaded (`from: 30s`, `to: 2m`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Start, in seconds (written as a duration; default 0).
    #[serde(default = "zero", with = "secs")]
    pub from: NonNeg,
    /// End, in seconds (exclusive); absent: open-ended (or `duty` decides).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub to: Option<NonNeg>,
    /// Repeat every `period`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub period: Option<NonNeg>,
    /// With `period`: the active fraction of each period, from `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duty: Option<NonNeg>,
}

fn zero() -> NonNeg {
    NonNeg(0.0)
}

/// What a token bucket counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateBy {
    /// Client IP.
    Ip,
    /// Reverse-path.
    Sender,
    /// Recipient domain.
    RcptDomain,
    /// Everything together.
    Global,
}

/// A token bucket: fires when the client exceeds `max` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Bucket size and tokens per period.
    pub max: Positive,
    /// The period (key `per`, a duration > 0), in seconds.
    #[serde(rename = "per", with = "secs")]
    pub per_seconds: NonNeg,
    /// What each bucket belongs to.
    #[serde(default = "rate_by_ip")]
    pub by: RateBy,
}

fn rate_by_ip() -> RateBy {
    RateBy::Ip
}

/// What a connection cap counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnPer {
    /// All clients together.
    Global,
    /// Each client IP.
    Ip,
}

/// Fires at the greeting when more than `max` connections are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxConnSpec {
    /// Connections allowed (this one included).
    pub max: u64,
    /// Counted per.
    #[serde(default = "conn_per_ip")]
    pub per: ConnPer,
}

fn conn_per_ip() -> ConnPer {
    ConnPer::Ip
}

/// `reply`: answer with this instead of the normal reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySpec {
    /// Reply code.
    pub code: Code,
    /// Enhanced status code (RFC 3463) such as `4.7.1`; its class must
    /// match the code's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    /// Reply text (default: a standard text for the code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Distribution families for `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistKind {
    /// `min`..`max`.
    Uniform,
    /// `mean`, `stddev`.
    Normal,
    /// `median`, `p99`.
    Lognormal,
    /// `mean`.
    Exponential,
    /// `scale`, `shape`.
    Pareto,
}

/// `delay`: wait before the reply: `delay: 200ms` (fixed) or a seeded
/// distribution (`{distribution: lognormal, median: 20ms, p99: 200ms}`).
/// The `*_ms` fields hold milliseconds; the keys are durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    /// Fixed delay (key `fixed`).
    #[serde(
        rename = "fixed",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub ms: Option<NonNeg>,
    /// A distribution instead of `fixed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<DistKind>,
    /// Lower bound of `uniform` (key `min`).
    #[serde(
        rename = "min",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub min_ms: Option<NonNeg>,
    /// Upper bound of `uniform` (key `max`).
    #[serde(
        rename = "max",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub max_ms: Option<NonNeg>,
    /// Mean of `normal` / `exponential` (key `mean`).
    #[serde(
        rename = "mean",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub mean_ms: Option<NonNeg>,
    /// Standard deviation of `normal` (key `stddev`).
    #[serde(
        rename = "stddev",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub stddev_ms: Option<NonNeg>,
    /// Median of `lognormal` (key `median`).
    #[serde(
        rename = "median",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub median_ms: Option<NonNeg>,
    /// 99th percentile of `lognormal` (key `p99`).
    #[serde(
        rename = "p99",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub p99_ms: Option<NonNeg>,
    /// Minimum of `pareto` (key `scale`).
    #[serde(
        rename = "scale",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub scale_ms: Option<NonNeg>,
    /// Tail index of `pareto` (> 0; a plain number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<NonNeg>,
    /// Cap on any sample (key `cap`; default 10 minutes).
    #[serde(
        rename = "cap",
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis"
    )]
    pub cap_ms: Option<NonNeg>,
}

/// `delay: 200ms` is shorthand for `delay: {fixed: 200ms}`.
fn delay_spec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DelaySpec>, D::Error> {
    mailstorm_config::serde_units::scalar_or_map(
        d,
        "a duration (200ms) or a mapping with `fixed` or `distribution`",
        |s| {
            mailstorm_config::parse_duration(s).map(|v| DelaySpec {
                ms: Some(NonNeg(v.as_secs_f64() * 1e3)),
                ..DelaySpec::default()
            })
        },
    )
    .map(Some)
}

/// `queue.service`: like `delay`, but required.
fn delay_spec_required<'de, D: Deserializer<'de>>(d: D) -> Result<DelaySpec, D::Error> {
    delay_spec(d).map(|s| s.unwrap_or_default())
}

/// How `disconnect` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseMode {
    /// Orderly close (FIN).
    Fin,
    /// Reset (RST, SO_LINGER 0).
    Rst,
}

/// `disconnect`: close without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectSpec {
    /// FIN or RST (default fin).
    #[serde(default = "fin")]
    pub mode: CloseMode,
    /// Let the client send this many more octets first (e.g. part of the
    /// message after `DATA`); 0: at once.
    #[serde(default)]
    pub after_bytes: u64,
}

fn fin() -> CloseMode {
    CloseMode::Fin
}

/// `stall`: answer, then stop reading for a while.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallSpec {
    /// How long.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub duration: Duration,
}

/// `throttle`: a slow link for the rest of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// Octets per second, both directions.
    pub bytes_per_sec: Positive,
}

/// `split_reply`: send replies in small fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Fragment size in octets (default 1).
    #[serde(default = "one")]
    pub fragment_bytes: Positive,
    /// Pause between fragments (key `gap`, default 5ms), milliseconds.
    #[serde(rename = "gap", default = "five", with = "whole_millis")]
    pub gap_ms: u64,
}

fn one() -> Positive {
    Positive(1)
}

fn five() -> u64 {
    5
}

/// `greylist`: 450 4.7.1 until the same triplet retries late enough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreylistSpec {
    /// A retry passes once this long has passed since the first attempt.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub min_retry: Duration,
    /// Unretried entries (and passed ones, since their last use) expire
    /// after this long (default 4h).
    #[serde(
        default = "four_hours",
        with = "mailstorm_config::serde_units::duration"
    )]
    pub expire: Duration,
    /// Reply text for the deferral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn four_hours() -> Duration {
    Duration::from_secs(4 * 3600)
}

/// `idle_close`: an unprompted reply and close when the client is idle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleCloseSpec {
    /// Idle time before closing.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub after: Duration,
    /// The code sent (default 421).
    #[serde(default = "code_421")]
    pub code: Code,
    /// Reply text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn code_421() -> Code {
    Code(421)
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

/// Types checked as a whole once parsed.
pub trait Check {
    /// `Err(message)` when the value is inconsistent.
    fn check(&self) -> Result<(), String>;
}

/// A value whose [`Check`] runs inside its own mapping, so the parser
/// reports the mapping's line and column with the error.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Checked<T>(pub T);

impl<'de, T: Deserialize<'de> + Check> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Check> Visitor<'de> for V<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let t = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                t.check().map_err(de::Error::custom)?;
                Ok(Checked(t))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
