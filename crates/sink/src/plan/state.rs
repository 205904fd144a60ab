//! Bounded per-key state shared by all shards: 64 independently locked
//! stripes chosen by the key's hash, each holding at most `per_stripe`
//! entries (`cap / 64`, at least 2).
//!
//! # Eviction: two generations
//!
//! Each stripe keeps two tables, `young` and `old`, of at most
//! `per_stripe / 2` entries each. Entries are created in `young`; an entry
//! found in `old` moves back to `young` when used. When `young` is full
//! and a new entry must go in, `old` is dropped whole, `young` becomes
//! `old`, and a fresh (reused, emptied) table becomes `young`. So:
//!
//! - an entry used within the last `per_stripe / 2` creations in its
//!   stripe is never evicted; one unused for `per_stripe` creations always
//!   is — an approximation of "least recently used" in which the oldest
//!   half-cap of entries goes at once;
//! - every operation is one or two probes of a table keyed by the 64-bit
//!   hash itself (already mixed: no rehashing), with no per-use
//!   bookkeeping; eviction costs O(1) amortized (clearing a table of plain
//!   data).
//!
//! Only rules that need state touch it, and only when they match: the
//! no-plan and no-match paths never take one of these locks.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

const STRIPES: usize = 64;

/// The stripe of a key: bits 32..38, which the tables use for neither the
/// bucket index (low bits) nor the control tag (top 7 bits).
#[inline]
fn stripe_of(key: u64) -> usize {
    ((key >> 32) as usize) % STRIPES
}

/// Keys are mixed 64-bit hashes already: the table uses them as they are.
#[derive(Default)]
pub(crate) struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else anyway.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table<V> = HashMap<u64, V, BuildHasherDefault<KeyIsHash>>;

struct Stripe<V> {
    young: Table<V>,
    old: Table<V>,
}

/// A striped map from 64-bit key hashes to `V`, bounded in size.
pub(crate) struct Striped<V> {
    stripes: Box<[Mutex<Stripe<V>>]>,
    /// Entries per generation per stripe.
    generation: usize,
}

impl<V> Striped<V> {
    /// A map holding at most `max(cap, 128)` entries in total.
    pub(crate) fn new(cap: usize) -> Self {
        let per_stripe = (cap / STRIPES).max(2);
        let stripes = (0..STRIPES)
            .map(|_| {
                Mutex::new(Stripe {
                    young: Table::default(),
                    old: Table::default(),
                })
            })
            .collect();
        Striped {
            stripes,
            generation: per_stripe / 2,
        }
    }

    fn stripe(&self, key: u64) -> std::sync::MutexGuard<'_, Stripe<V>> {
        self.stripes[stripe_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the entry for `key` (created with `init` if missing),
    /// marking it as recently used. May evict the stripe's old generation.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        key: u64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        self.with_evicting(key, init, f, None)
    }

    /// [`Striped::with`], calling `gone` on each entry an eviction drops
    /// (the referee keeps a count of its entries per part).
    pub(crate) fn with_evicting<R>(
        &self,
        key: u64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
        gone: Option<&mut dyn FnMut(&V)>,
    ) -> R {
        let mut s = self.stripe(key);
        let s = &mut *s;
        if s.young.len() < self.generation {
            // No eviction can follow: one probe of `young` finds the entry
            // or the place to insert it (the common case: one probe less
            // for a new key than get-then-insert).
            return match s.young.entry(key) {
                Entry::Occupied(e) => f(e.into_mut()),
                Entry::Vacant(e) => f(e.insert(s.old.remove(&key).unwrap_or_else(init))),
            };
        }
        if let Some(v) = s.young.get_mut(&key) {
            return f(v);
        }
        let v = s.old.remove(&key).unwrap_or_else(init);
        // Drop the old generation; the young one ages.
        std::mem::swap(&mut s.young, &mut s.old);
        if let Some(gone) = gone {
            s.young.values().for_each(gone);
        }
        s.young.clear();
        f(s.young.entry(key).or_insert(v))
    }

    /// Reads the entry for `key` without creating or touching it.
    #[cfg(test)]
    pub(crate) fn peek<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        let s = self.stripe(key);
        s.young.get(&key).or_else(|| s.old.get(&key)).map(f)
    }

    /// Removes the entry for `key`, returning it.
    pub(crate) fn remove(&self, key: u64) -> Option<V> {
        let mut s = self.stripe(key);
        match s.young.remove(&key) {
            Some(v) => Some(v),
            None => s.old.remove(&key),
        }
    }

    /// Forgets every entry (`POST /reset`).
    pub(crate) fn clear(&self) {
        for s in self.stripes.iter() {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.young.clear();
            s.old.clear();
        }
    }

    /// Keeps only the entries for which `keep` is `true` (a filtered
    /// `POST /reset`; walks every stripe).
    pub(crate) fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        for s in self.stripes.iter() {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.young.retain(|_, v| keep(v));
            s.old.retain(|_, v| keep(v));
        }
    }

    /// Number of entries (sums the stripes; for reports and tests).
    pub(crate) fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.young.len() + s.old.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key in stripe 0 (`n` distinct values give distinct keys).
    fn k(n: u64) -> u64 {
        n << 38
    }

    #[test]
    fn bounded_and_recently_used_kept() {
        let m: Striped<u32> = Striped::new(0); // two per stripe: 1 + 1
        m.with(k(0), || 1, |_| ());
        m.with(k(1), || 2, |_| ());
        assert_eq!(m.peek(k(0), |v| *v), Some(1), "old generation");
        m.with(k(2), || 3, |_| ());
        assert_eq!(m.peek(k(0), |v| *v), None, "oldest evicted");
        assert_eq!(m.peek(k(1), |v| *v), Some(2));
        for n in 0..10_000u64 {
            m.with(n.wrapping_mul(0x9E37_79B9_7F4A_7C15), || 0, |v| *v += 1);
        }
        assert!(m.len() <= 128, "{}", m.len());

        let m: Striped<u32> = Striped::new(64 * 8); // generations of 4
        for n in 0..4 {
            m.with(k(n), || n as u32, |_| ());
        }
        // Keep using key 0 while new keys arrive: it is never evicted.
        for n in 4..40 {
            m.with(k(0), || 99, |v| *v += 10);
            m.with(k(n), || n as u32, |_| ());
            assert!(m.len() <= 8);
        }
        assert_eq!(m.peek(k(0), |v| *v), Some(360));
        assert_eq!(m.peek(k(1), |v| *v), None);
        assert_eq!(m.remove(k(39)), Some(39));
        assert_eq!(m.remove(k(39)), None);
    }

    #[test]
    fn total_within_cap() {
        for cap in [128, 640, 100_000] {
            let m: Striped<u8> = Striped::new(cap);
            for n in 0..(4 * cap as u64) {
                m.with(super::super::select::mix64(n), || 0, |_| ());
            }
            assert!(m.len() <= cap, "{cap}: {}", m.len());
        }
    }
}
