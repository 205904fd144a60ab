//! Who delivered to a run: the client ids and the sender and recipient
//! domains of its arrivals, so `GET /ledger?helo=…&domain=…` lists one
//! test's runs on a shared sink. Bounded: at most [`MAX_NAMES`] of each per
//! run, each at most [`MAX_NAME_LEN`] bytes; past that the run is marked
//! `overflow` and matches every filter (it cannot say "not this one").

use crate::filter::ClientFilter;

/// Most client ids, and most domains, kept per run.
pub const MAX_NAMES: usize = 32;
/// Longest name kept (a DNS name is at most 253 bytes).
pub const MAX_NAME_LEN: usize = 255;

/// The names seen in one run's arrivals.
#[derive(Debug, Default)]
pub(super) struct Names {
    /// Client ids (lower case): the EHLO name, or the IP address's text.
    pub(super) clients: Vec<Box<str>>,
    /// Sender and recipient domains (lower case).
    pub(super) domains: Vec<Box<str>>,
    /// A name was not kept (a cap): the lists are incomplete.
    pub(super) overflow: bool,
}

impl Names {
    /// Notes one arrival's client id and domains. Cheap when they are
    /// known already (the common case: one client, a few domains).
    pub(super) fn note<'a>(&mut self, client: &str, domains: impl Iterator<Item = &'a str>) {
        if self.overflow {
            // The lists no longer decide a filter: nothing to keep up.
            return;
        }
        note_in(&mut self.clients, &mut self.overflow, client);
        for d in domains {
            note_in(&mut self.domains, &mut self.overflow, d);
        }
    }

    /// Whether the run is one the filter selects: its helo among the
    /// clients and its domain among the domains (both, when both given).
    pub(super) fn matches(&self, f: &ClientFilter) -> bool {
        let has = |list: &[Box<str>], want: &str| {
            self.overflow || list.iter().any(|n| n.eq_ignore_ascii_case(want))
        };
        f.helo.as_deref().is_none_or(|h| has(&self.clients, h))
            && f.domain.as_deref().is_none_or(|d| has(&self.domains, d))
    }
}

impl Names {
    /// The lists as reported.
    pub(super) fn senders(&self) -> super::RunSenders {
        let strings = |l: &[Box<str>]| l.iter().map(|n| n.to_string()).collect();
        super::RunSenders {
            clients: strings(&self.clients),
            domains: strings(&self.domains),
            names_incomplete: self.overflow,
        }
    }

    /// Whether a filtered reset may drop the run: the filter selects it
    /// and, when it names a client, no other client delivered to it. A
    /// domain alone cannot tell tests apart behind one relay (every
    /// arrival's client is the relay), so it selects every run the domain
    /// appears in.
    pub(super) fn owned_by(&self, f: &ClientFilter) -> bool {
        !self.overflow
            && self.matches(f)
            && f.helo
                .as_deref()
                .is_none_or(|h| self.clients.iter().all(|n| n.eq_ignore_ascii_case(h)))
    }
}

fn note_in(list: &mut Vec<Box<str>>, overflow: &mut bool, name: &str) {
    // Kept names are lower case, and clients nearly always send them so:
    // an exact compare first spares the per-byte case folding per arrival.
    let known = |n: &str| n.as_bytes() == name.as_bytes() || n.eq_ignore_ascii_case(name);
    if name.is_empty() || list.iter().any(|n| known(n)) {
        return;
    }
    if list.len() < MAX_NAMES && name.len() <= MAX_NAME_LEN {
        list.push(name.to_ascii_lowercase().into_boxed_str());
    } else {
        *overflow = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_case_insensitively_bounded_and_matched() {
        let mut n = Names::default();
        n.note("Test-A", ["T1.test", "t1.TEST", "other.test"].into_iter());
        n.note("test-a", std::iter::empty());
        assert_eq!(&*n.clients, &["test-a".into()] as &[Box<str>]);
        assert_eq!(n.domains.len(), 2);
        assert!(n.matches(&ClientFilter::all()));
        assert!(n.matches(&ClientFilter::helo("TEST-A")));
        assert!(!n.matches(&ClientFilter::helo("test-b")));
        assert!(n.matches(&ClientFilter::domain("t1.test")));
        let both = ClientFilter {
            helo: Some("test-a".into()),
            domain: Some("nope.test".into()),
        };
        assert!(!n.matches(&both));
        let mut long = Names::default();
        long.note("c", std::iter::once("x".repeat(300).as_str()));
        assert!(
            long.domains.is_empty() && long.overflow,
            "an over-long name is not kept"
        );
        for i in 0..MAX_NAMES + 5 {
            n.note(&format!("c{i}"), std::iter::once("t1.test"));
        }
        assert_eq!(n.clients.len(), MAX_NAMES);
        assert!(n.overflow);
        n.note("later", std::iter::once("later.test"));
        assert_eq!(n.domains.len(), 2, "past the cap nothing more is kept");
        assert!(
            n.matches(&ClientFilter::helo("never-seen")),
            "incomplete: may match"
        );
        assert!(
            !n.owned_by(&ClientFilter::helo("c1")),
            "incomplete: never dropped"
        );
        let mut one = Names::default();
        one.note("a", std::iter::once("t.test"));
        assert!(one.owned_by(&ClientFilter::helo("A")));
        assert!(one.owned_by(&ClientFilter::domain("t.test")));
        one.note("b", std::iter::empty());
        assert!(!one.owned_by(&ClientFilter::helo("a")), "b delivered too");
    }
}
