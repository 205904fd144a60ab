//! A loaded plan with its state ([`Active`]), global or scoped to one
//! client, and the per-session [`Scope`] the engine attaches at the first
//! greeting.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::load::Plan;
use super::matching::stage_bit;
use super::model::StageSel;
use super::primary::Primary;
use super::select::{hash_bytes, tail_word};
use super::slots::Slot;
use super::state::Striped;
use crate::hook::Stage;
use crate::ip_text::IpText;

/// The hash of client id `id` (the owner tag of its per-key state and of
/// the referee's failure records): one function, so a filtered reset
/// computes from an id the hash its sessions' [`Who::hash`] gave.
pub(crate) fn client_hash(id: &[u8]) -> u64 {
    hash_bytes(0, id)
}

/// Per-key state and the client (id hash) whose session created it, so a
/// `POST /reset?helo=X` can drop client X's entries of the global plan.
pub(crate) struct Owned<V> {
    pub(crate) owner: u64,
    pub(crate) v: V,
}

/// A loaded plan with its state.
pub(crate) struct Active {
    pub(crate) plan: Plan,
    /// Attempt counters: 24 bytes an entry.
    pub(crate) counts: Striped<Owned<u64>>,
    /// Token buckets and greylist entries.
    pub(crate) state: Striped<Owned<Slot>>,
    pub(crate) globals: Vec<AtomicU64>,
    /// Faults injected per rule (plan order), for the dashboard's "faults
    /// by rule": bumped only when a rule injects a fault, never per message.
    pub(crate) faults: Box<[AtomicU64]>,
    pub(crate) loaded_at: Instant,
    pub(crate) stage_mask: u32,
    /// Per consulted stage, the indexes of the rules that apply there, in
    /// plan order: a decision looks at these rules only.
    pub(crate) by_stage: [Box<[u32]>; Stage::CONSULTED],
}

impl Active {
    /// `plan` with fresh state, its windows counting from `loaded_at`.
    pub(crate) fn new(plan: Plan, loaded_at: Instant) -> Active {
        let stage_mask = plan.rules.iter().fold(0, |m, r| m | stage_bit(r.stage));
        let by_stage = std::array::from_fn(|st| {
            let here = StageSel::One(Stage::ALL[st]);
            (0..plan.rules.len() as u32)
                .filter(|&i| {
                    let s = plan.rules[i as usize].stage;
                    s == here || s == StageSel::Any
                })
                .collect()
        });
        // `state_cap` bounds all entries: split between the two maps only
        // when the plan uses buckets or greylisting at all.
        let cap = plan.spec().state_cap.max(1);
        let slots = plan
            .rules
            .iter()
            .any(|r| r.rate_limit.is_some() || matches!(r.primary, Primary::Greylist { .. }));
        let (count_cap, slot_cap) = if slots {
            (cap - cap / 2, cap / 2)
        } else {
            (cap, 0)
        };
        Active {
            counts: Striped::new(count_cap),
            state: Striped::new(slot_cap),
            globals: plan.rules.iter().map(|_| AtomicU64::new(0)).collect(),
            faults: plan.rules.iter().map(|_| AtomicU64::new(0)).collect(),
            plan,
            loaded_at,
            stage_mask,
            by_stage,
        }
    }

    /// Starts the state afresh (attempt counters, global counters, buckets,
    /// greylist entries); windows keep counting from the load.
    pub(crate) fn clear(&self) {
        self.counts.clear();
        self.state.clear();
        for g in self.globals.iter().chain(self.faults.iter()) {
            g.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Drops the per-key state created by client `owner`'s sessions.
    pub(crate) fn clear_owner(&self, owner: u64) {
        self.counts.retain(|e| e.owner != owner);
        self.state.retain(|e| e.owner != owner);
    }
}

/// What the engine attaches to a session at its first greeting, handed
/// back at every later stage: looked up once per session, not per command.
pub(crate) struct Scope {
    /// The client id (the greeting's argument, lower-cased).
    pub(crate) id: Box<str>,
    /// [`client_hash`] of `id`: the owner tag of state the session creates.
    pub(crate) hash: u64,
    /// The client's IP address text, for keys that name it.
    pub(crate) ip: IpText,
    /// The client's scoped plan, if it has one.
    pub(crate) plan: Option<Arc<Active>>,
    /// Hashes of the domains this session already reported (at most 16;
    /// 0 = free): checking a known domain takes no lock and allocates
    /// nothing.
    pub(crate) domains: [std::sync::atomic::AtomicU64; 16],
    /// The domain noted last at MAIL (0) and at RCPT (1): a client that
    /// sends from and to the same domains again skips the search for `@`
    /// and the hash.
    pub(crate) last_domain: [LastDomain; 2],
}

/// A short domain (at most [`LastDomain::MAX`] bytes) as the session last
/// noted it. Atomics only because the scope is shared: the session is its
/// one writer.
#[derive(Default)]
pub(crate) struct LastDomain {
    len: std::sync::atomic::AtomicU8,
    words: [AtomicU64; 4],
}

impl LastDomain {
    const MAX: usize = 32;

    fn padded(d: &[u8]) -> [u64; 4] {
        let mut buf = [0u8; LastDomain::MAX];
        buf[..d.len()].copy_from_slice(d);
        std::array::from_fn(|i| u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8")))
    }

    /// Whether `addr`'s domain (after its last `@`) is the one noted last,
    /// byte for byte: then `addr` ends in `@` and that domain, which holds
    /// no `@`.
    pub(crate) fn holds_domain_of(&self, addr: &str) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let n = usize::from(self.len.load(Relaxed));
        let a = addr.as_bytes();
        if n == 0 || a.len() <= n || a[a.len() - n - 1] != b'@' {
            return false;
        }
        // Word by word from the address itself, the last partial word by
        // one overlapping load: no padded copy per command.
        let mut whole = a[a.len() - n..].chunks_exact(8);
        let same =
            self.words.iter().zip(&mut whole).all(|(w, c)| {
                w.load(Relaxed) == u64::from_le_bytes(c.try_into().expect("8 bytes"))
            });
        let rest = whole.remainder().len();
        same && (rest == 0 || self.words[n / 8].load(Relaxed) == tail_word(a, rest))
    }

    /// Remembers domain `d` (too long a domain is not remembered).
    pub(crate) fn set(&self, d: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        if d.len() > LastDomain::MAX {
            self.len.store(0, Relaxed);
            return;
        }
        for (w, x) in self.words.iter().zip(LastDomain::padded(d.as_bytes())) {
            w.store(x, Relaxed);
        }
        self.len.store(d.len() as u8, Relaxed);
    }
}

/// Who a decision is for: the client id of a greeted session, or the
/// client's IP address text before (or without) a greeting.
pub(crate) enum Who<'a> {
    Scoped(&'a Scope),
    Ip(IpText),
}

impl Who<'_> {
    /// The client id.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Who::Scoped(s) => &s.id,
            Who::Ip(t) => std::str::from_utf8(t.as_bytes()).unwrap_or_default(),
        }
    }

    /// The client's IP address text.
    pub(crate) fn ip(&self) -> &IpText {
        match self {
            Who::Scoped(s) => &s.ip,
            Who::Ip(t) => t,
        }
    }

    /// [`client_hash`] of the client id ([`Who::as_str`]): the owner tag
    /// of per-key state created for this client.
    pub(crate) fn hash(&self) -> u64 {
        match self {
            Who::Scoped(s) => s.hash,
            Who::Ip(t) => client_hash(t.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LastDomain;

    #[test]
    fn last_domain_matches_only_the_same_domain() {
        let last = LastDomain::default();
        assert!(!last.holds_domain_of("a@two.test"), "nothing noted yet");
        last.set("two.test");
        assert!(last.holds_domain_of("a@two.test"));
        assert!(last.holds_domain_of("@two.test"));
        assert!(last.holds_domain_of("x@y@two.test"));
        for other in [
            "two.test",
            "a@sub.two.test",
            "a@TWO.test",
            "a@two.tes",
            "a@wo.test",
            "",
        ] {
            assert!(!last.holds_domain_of(other), "{other}");
        }
        // A domain that is not a whole number of words: its last word is
        // compared too.
        last.set("mail.co.uk");
        assert!(last.holds_domain_of("x@mail.co.uk"));
        for other in [
            "x@mail.co.ux",
            "x@mail.co.uK",
            "x@mail.co.u",
            "x@nail.co.uk",
        ] {
            assert!(!last.holds_domain_of(other), "{other}");
        }
        // A domain past 32 bytes is not remembered: the next check fails.
        let long = "a-very-long-domain-name-past-32-bytes.test";
        last.set(long);
        assert!(!last.holds_domain_of(&format!("a@{long}")));
        assert!(!last.holds_domain_of("a@two.test"));
        // Exactly 32 bytes is remembered.
        let d32 = "abcdefghijklmnopqrstuvwxyz01.xyz";
        assert_eq!(d32.len(), 32);
        last.set(d32);
        assert!(last.holds_domain_of(&format!("u@{d32}")));
        assert!(!last.holds_domain_of(&format!("u@{}", &d32[1..])));
    }
}
