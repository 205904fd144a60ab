//! Which requests may retry a recorded failure: a counting filter over the
//! failures' identity hashes, read without a lock before the lookup.
//!
//! A load generator that never retries leaves every failure recorded, so
//! "has this client a failure outstanding?" is nearly always yes, and with
//! a few hundred addresses every sender or recipient alone has one too:
//! only the whole identity tells a retry apart. Each recorded failure
//! counts once in the slot of its identity hash; a request whose slot is
//! zero cannot be a retry and skips the stripe's lock and the probes of
//! its tables; a nonzero slot only means "look".

use std::sync::atomic::{AtomicU8, Ordering};

/// 2^16 one-byte counters: 64 KiB, few false "look"s for thousands of
/// outstanding failures; at the referee's cap (100k) most slots are set
/// and the filter lets most requests through to the lookup, as before it.
const BITS: u32 = 16;

pub(super) struct Pending {
    counts: Box<[AtomicU8]>,
}

impl Pending {
    pub(super) fn new() -> Pending {
        Pending {
            counts: (0..1usize << BITS).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// The slot of an identity hash (already mixed). The failures map
    /// picks its stripe and buckets from other bits.
    #[inline]
    pub(super) fn slot(identity: u64) -> u32 {
        (identity >> (64 - BITS)) as u32
    }

    /// `false`: no recorded failure has this slot.
    #[inline]
    pub(super) fn may_hold(&self, slot: u32) -> bool {
        self.counts[slot as usize].load(Ordering::Relaxed) != 0
    }

    /// A failure with this slot was recorded. A full counter sticks: it
    /// then never reads zero again, which is safe (it only means "look").
    pub(super) fn add(&self, slot: u32) {
        let _ =
            self.counts[slot as usize].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c < u8::MAX).then(|| c + 1)
            });
    }

    /// A failure with this slot was forgotten (retried, evicted, reset).
    pub(super) fn sub(&self, slot: u32) {
        let _ =
            self.counts[slot as usize].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c != 0 && c < u8::MAX).then(|| c - 1)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_the_last_is_forgotten_and_sticks_when_full() {
        let p = Pending::new();
        let s = Pending::slot(0xDEAD_BEEF_0123_4567);
        assert_ne!(s, Pending::slot(0xBEEF_DEAD_0123_4567));
        assert!(!p.may_hold(s));
        p.add(s);
        p.add(s);
        p.sub(s);
        assert!(p.may_hold(s), "one failure left");
        p.sub(s);
        assert!(!p.may_hold(s));
        p.sub(s);
        assert!(!p.may_hold(s), "no wrap below zero");
        for _ in 0..300 {
            p.add(s);
        }
        for _ in 0..300 {
            p.sub(s);
        }
        assert!(p.may_hold(s), "a full counter sticks");
    }
}
