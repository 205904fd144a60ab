//! One sequence space (one blaster process within a run): a delivery count
//! per sequence number in fixed-size pages, so memory follows the number
//! of messages seen (one byte each), never the values a peer writes.

use foldhash::HashMap;

use serde::{Deserialize, Serialize};

/// Sequence numbers per page: 4 KiB of counts.
pub(crate) const PAGE: u64 = 4096;

/// Counters of a space (and, summed, of a run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages (SMTP transactions) that arrived.
    pub messages: u64,
    /// Recipient deliveries: each recipient of each arrival.
    pub deliveries: u64,
    /// Deliveries of a (sequence, recipient) for the first time: at most
    /// the message's recipient count per sequence number.
    pub unique: u64,
    /// Deliveries beyond a message's recipient count (re-deliveries).
    pub duplicates: u64,
    /// Arrivals of a message every recipient of which had already arrived.
    pub duplicate_messages: u64,
    /// First arrivals of a sequence number lower than one already seen.
    pub out_of_order: u64,
    /// Traced arrivals not recorded because a memory cap was reached.
    pub dropped: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, o: &Counts) {
        self.messages += o.messages;
        self.deliveries += o.deliveries;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.duplicate_messages += o.duplicate_messages;
        self.out_of_order += o.out_of_order;
        self.dropped += o.dropped;
    }
}

#[derive(Default)]
pub(crate) struct Space {
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
    pub(crate) counts: Counts,
    /// Highest sequence number seen.
    pub(crate) max_seq: Option<u64>,
}

/// Which recipients of a message one arrival was for, when its trace
/// names them (`h=`, at most 8): the count byte of its sequence number is
/// then a bitmap of the recipients that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Recipient indices whose tags matched an envelope recipient.
    pub(crate) matched: u8,
    /// Envelope recipients matching no tag (an address the relay
    /// rewrote): each takes the lowest index not yet arrived.
    pub(crate) unmatched: u64,
}

/// What recording one arrival did to the page budget.
pub(crate) enum Slot {
    /// Recorded.
    Done,
    /// Needs a new page; the caller checks its budget and calls again
    /// with `may_grow`.
    NeedsPage,
}

impl Space {
    pub(crate) fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Records an arrival of `seq` with `k` recipients of a message of `n`
    /// (which ones, when the trace names them: `who`).
    pub(crate) fn record(
        &mut self,
        seq: u64,
        k: u64,
        n: u64,
        who: Option<Delivered>,
        may_grow: bool,
    ) -> Slot {
        let page = seq / PAGE;
        let counts = match self.pages.get_mut(&page) {
            Some(p) => p,
            None if may_grow => self
                .pages
                .entry(page)
                .or_insert_with(|| Box::new([0; PAGE as usize])),
            None => return Slot::NeedsPage,
        };
        let slot = &mut counts[(seq % PAGE) as usize];
        let (unique, all_before, none_before) = match who {
            Some(d) if n <= 8 => {
                // A bitmap: bit i set once recipient i arrived.
                let full = (1u16 << n).wrapping_sub(1) as u8;
                let before = *slot;
                let mut got = d.matched & full;
                let mut spare = full & !before & !got;
                for _ in 0..d.unmatched {
                    if spare == 0 {
                        break;
                    }
                    let lowest = spare & spare.wrapping_neg();
                    got |= lowest;
                    spare &= !lowest;
                }
                *slot = before | got;
                let unique = u64::from((got & !before).count_ones()).min(k);
                (unique, before == full, before == 0)
            }
            _ => {
                let before = u64::from(*slot);
                let after = (before + k).min(u64::from(u8::MAX));
                *slot = after as u8;
                // Past 255 deliveries of one message the count saturates:
                // further arrivals still count as duplicates (before + k,
                // not after).
                let unique = (before + k).min(n).saturating_sub(before.min(n));
                (unique, before >= n, before == 0)
            }
        };
        let c = &mut self.counts;
        c.messages += 1;
        c.deliveries += k;
        c.unique += unique;
        c.duplicates += k - unique;
        if all_before {
            c.duplicate_messages += 1;
        }
        if none_before && self.max_seq.is_some_and(|m| seq < m) {
            c.out_of_order += 1;
        }
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        Slot::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_duplicates_and_split_deliveries() {
        let mut s = Space::default();
        // A 3-recipient message delivered as 2 + 1 (split by the relay).
        assert!(matches!(s.record(5, 2, 3, None, true), Slot::Done));
        s.record(5, 1, 3, None, true);
        assert_eq!((s.counts.unique, s.counts.duplicates), (3, 0));
        // ... then re-sent whole.
        s.record(5, 3, 3, None, true);
        assert_eq!((s.counts.unique, s.counts.duplicates), (3, 3));
        assert_eq!(s.counts.duplicate_messages, 1);
        assert_eq!(s.counts.messages, 3);
        s.record(2, 1, 1, None, true);
        assert_eq!(s.counts.out_of_order, 1);
        assert!(matches!(
            s.record(PAGE * 9, 1, 1, None, false),
            Slot::NeedsPage
        ));
        assert_eq!(s.pages(), 1);
    }

    #[test]
    fn named_recipients_tell_a_loss_from_a_duplicate() {
        let d = |matched, unmatched| Some(Delivered { matched, unmatched });
        let mut s = Space::default();
        // Recipients 0 and 1 of 3 arrive, then 0 again: counted alone, the
        // second arrival would fill the missing third.
        s.record(1, 2, 3, d(0b011, 0), true);
        s.record(1, 1, 3, d(0b001, 0), true);
        assert_eq!((s.counts.unique, s.counts.duplicates), (2, 1));
        assert_eq!(s.counts.duplicate_messages, 0, "recipient 2 never came");
        // The third comes under a rewritten address: it takes the free slot.
        s.record(1, 1, 3, d(0, 1), true);
        assert_eq!((s.counts.unique, s.counts.duplicates), (3, 1));
        // Everything again: all duplicates, a duplicate message.
        s.record(1, 3, 3, d(0b111, 0), true);
        assert_eq!((s.counts.unique, s.counts.duplicates), (3, 4));
        assert_eq!(s.counts.duplicate_messages, 1);
        // An unmatched recipient with nothing left to fill is a duplicate.
        s.record(1, 1, 3, d(0, 1), true);
        assert_eq!((s.counts.unique, s.counts.duplicates), (3, 5));
        // Eight recipients use the whole byte.
        s.record(2, 8, 8, d(0xff, 0), true);
        assert_eq!(s.counts.unique, 11);
    }
}
