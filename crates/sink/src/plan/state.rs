//! Bounded per-key state shared by all shards: 64 independently locked
//! stripes chosen by the key's hash, each holding at most `cap / 64`
//! entries and evicting its least recently used entry past that.
//!
//! Only rules that need state touch it, and only when they match: the
//! no-plan and no-match paths never take one of these locks.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

const STRIPES: usize = 64;

struct Stripe<V> {
    /// key → (value, last-use stamp)
    map: HashMap<u64, (V, u64)>,
    /// Use order, oldest first; entries whose stamp is stale are skipped.
    order: VecDeque<(u64, u64)>,
    clock: u64,
}

/// A striped map from 64-bit key hashes to `V`, bounded in size.
pub(crate) struct Striped<V> {
    stripes: Box<[Mutex<Stripe<V>>]>,
    per_stripe: usize,
}

impl<V> Striped<V> {
    /// A map holding at most about `cap` entries in total (at least one per
    /// stripe).
    pub(crate) fn new(cap: usize) -> Self {
        let stripes = (0..STRIPES)
            .map(|_| {
                Mutex::new(Stripe {
                    map: HashMap::new(),
                    order: VecDeque::new(),
                    clock: 0,
                })
            })
            .collect();
        Striped {
            stripes,
            per_stripe: cap.div_ceil(STRIPES).max(1),
        }
    }

    /// Runs `f` on the entry for `key` (created with `init` if missing),
    /// marking it as recently used. Evicts the least recently used entries
    /// of the stripe when over its cap.
    pub(crate) fn with<R>(
        &self,
        key: u64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        // The low bits pick the stripe; the key is already a mixed hash.
        let mut s = self.stripes[(key as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        s.clock += 1;
        let stamp = s.clock;
        let entry = s.map.entry(key).or_insert_with(|| (init(), 0));
        entry.1 = stamp;
        let r = f(&mut entry.0);
        s.order.push_back((key, stamp));
        while s.map.len() > self.per_stripe {
            match s.order.pop_front() {
                Some((k, st)) => {
                    if s.map.get(&k).is_some_and(|e| e.1 == st) {
                        s.map.remove(&k);
                    }
                }
                None => break,
            }
        }
        // Drop stale order entries so the queue stays within a small
        // multiple of the map.
        if s.order.len() > 2 * self.per_stripe + 16 {
            let map = &s.map;
            s.order
                .retain(|(k, st)| map.get(k).is_some_and(|e| e.1 == *st));
        }
        r
    }

    /// Reads the entry for `key` without creating or touching it.
    #[cfg(test)]
    pub(crate) fn peek<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        let s = self.stripes[(key as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.map.get(&key).map(|(v, _)| f(v))
    }

    /// Removes the entry for `key`, returning it.
    pub(crate) fn remove(&self, key: u64) -> Option<V> {
        let mut s = self.stripes[(key as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.map.remove(&key).map(|(v, _)| v)
    }

    /// Number of entries (sums the stripes; for reports and tests).
    pub(crate) fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_lru() {
        let m: Striped<u32> = Striped::new(64); // one entry per stripe
                                                // Keys 0 and 64 share stripe 0.
        m.with(0, || 1, |_| ());
        m.with(64, || 2, |_| ());
        assert_eq!(m.peek(0, |v| *v), None, "oldest evicted");
        assert_eq!(m.peek(64, |v| *v), Some(2));
        for k in 0..10_000u64 {
            m.with(k, || 0, |v| *v += 1);
        }
        assert!(m.len() <= 64, "{}", m.len());

        let m: Striped<u32> = Striped::new(128); // two per stripe
        m.with(0, || 1, |_| ());
        m.with(64, || 2, |_| ());
        m.with(0, || 9, |v| *v += 10); // touch 0: now 64 is the oldest
        m.with(128, || 3, |_| ());
        assert_eq!(m.peek(0, |v| *v), Some(11));
        assert_eq!(m.peek(64, |v| *v), None);
        assert_eq!(m.remove(128), Some(3));
    }
}
