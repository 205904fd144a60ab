//! Per-key state of a plan other than attempt counters: token buckets
//! (`rate_limit`) and greylist entries, and one step of each.

use std::time::{Duration, Instant};

/// Per-key state of a plan other than attempt counters (those are plain
/// `u64`s in a map of their own, [`Active::counts`]).
pub(crate) enum Slot {
    Bucket {
        tokens: f64,
        at: Instant,
    },
    Grey {
        first: Instant,
        last: Instant,
        passed: bool,
    },
}

impl Slot {
    /// A full bucket of `max` tokens.
    pub(crate) fn bucket(max: f64, now: Instant) -> Slot {
        Slot::Bucket {
            tokens: max,
            at: now,
        }
    }

    /// A greylist entry first seen `now`.
    pub(crate) fn grey(now: Instant) -> Slot {
        Slot::Grey {
            first: now,
            last: now,
            passed: false,
        }
    }
}

/// One token-bucket step: refills at `rate` per second up to `max`, then
/// takes a token; `true` when there was one (the request is within the
/// limit).
pub(crate) fn take_token(s: &mut Slot, now: Instant, rate: f64, max: f64) -> bool {
    let Slot::Bucket { tokens, at } = s else {
        return true;
    };
    let dt = now.saturating_duration_since(*at).as_secs_f64();
    *tokens = (*tokens + dt * rate).min(max);
    *at = now.max(*at);
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// One greylisting step; `true` when the attempt passes.
pub(crate) fn grey_step(s: &mut Slot, now: Instant, min_retry: Duration, expire: Duration) -> bool {
    let Slot::Grey {
        first,
        last,
        passed,
    } = s
    else {
        return true;
    };
    let since = |t: Instant| now.saturating_duration_since(t);
    let stale = if *passed {
        since(*last) > expire
    } else {
        since(*first) > expire
    };
    if stale {
        *first = now;
        *passed = false;
    }
    *last = now;
    if !*passed && since(*first) >= min_retry {
        *passed = true;
    }
    *passed
}
