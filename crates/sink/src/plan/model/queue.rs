//! `queue`: a server with finite capacity at end of data.

use serde::{Deserialize, Serialize};

use super::{DelaySpec, Positive, ReplySpec};

/// `queue: {workers: 8, service: 5ms, max_queue: 64, overflow: {reply: …}}`:
/// messages are served by `workers` in arrival order, each taking a
/// `service` time drawn from a delay distribution (seeded by the plan);
/// a message that finds every worker busy waits in a queue of at most
/// `max_queue`, and one that finds the queue full gets the `overflow`
/// reply (default `421 4.3.2`). Capacity: workers ÷ mean service time.
/// Only at `data_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Messages served at once.
    pub workers: Positive,
    /// Service time per message: `5ms`, or a distribution as in `delay`.
    #[serde(deserialize_with = "super::delay::delay_spec_required")]
    pub service: DelaySpec,
    /// Messages that may wait for a worker (0: none wait).
    #[serde(default)]
    pub max_queue: u64,
    /// The reply when the queue is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<OverflowSpec>,
}

/// `overflow: {reply: {code: 421, …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowSpec {
    /// The reply sent instead of queueing.
    pub reply: ReplySpec,
}
