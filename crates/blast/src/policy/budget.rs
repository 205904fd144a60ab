//! A retry budget as a share of traffic: retries granted so far may not
//! exceed `min_retries + ratio × first attempts started`. Shared by every
//! shard (two atomics, touched once per message and once per retry).
//!
//! Deterministic in count whenever the retries come due after the first
//! attempts they draw on (e.g. a burst, then backoff); when first attempts
//! and retries interleave, which retry is denied depends on timing.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Budget settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSpec {
    /// Retries allowed per first attempt (0.2: at most 20% extra traffic).
    pub ratio: f64,
    /// Retries always allowed on top of the ratio.
    pub min_retries: u64,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        BudgetSpec {
            ratio: 0.2,
            min_retries: 10,
        }
    }
}

impl BudgetSpec {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.ratio.is_finite() && self.ratio >= 0.0) {
            return Err(format!(
                "retry_budget.ratio {}: must be a number >= 0",
                self.ratio
            ));
        }
        Ok(())
    }

    /// Retries allowed after `first` first attempts.
    pub fn allowance(&self, first: u64) -> u64 {
        // Saturating: `min_retries: 18446744073709551615` means unlimited.
        self.min_retries
            .saturating_add((self.ratio * first as f64 + 1e-9).floor() as u64)
    }
}

/// The shared budget.
#[derive(Debug)]
pub struct Budget {
    spec: BudgetSpec,
    first: AtomicU64,
    granted: AtomicU64,
    denied: AtomicU64,
}

impl Budget {
    /// An unused budget.
    pub fn new(spec: BudgetSpec) -> Budget {
        Budget {
            spec,
            first: AtomicU64::new(0),
            granted: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    /// A first attempt started (earns budget).
    pub fn first_attempt(&self) {
        self.first.fetch_add(1, Ordering::AcqRel);
    }

    /// Asks for one retry; `false` when the budget is spent.
    pub fn try_retry(&self) -> bool {
        let mut g = self.granted.load(Ordering::Acquire);
        loop {
            if g >= self.spec.allowance(self.first.load(Ordering::Acquire)) {
                self.denied.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self
                .granted
                .compare_exchange(g, g + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
    }

    /// Retries granted and denied so far.
    pub fn counts(&self) -> BudgetCounts {
        BudgetCounts {
            granted: self.granted.load(Ordering::Acquire),
            denied: self.denied.load(Ordering::Acquire),
        }
    }
}

/// What a retry budget granted and denied over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetCounts {
    /// Retries allowed.
    pub granted: u64,
    /// Retries refused (those messages gave up).
    pub denied: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_minimum_means_unlimited_not_an_overflow() {
        let b = Budget::new(BudgetSpec {
            ratio: 1e300,
            min_retries: u64::MAX,
        });
        b.first_attempt();
        assert_eq!(b.spec.allowance(1), u64::MAX);
        assert!(b.try_retry() && b.try_retry());
    }

    #[test]
    fn share_of_traffic() {
        let b = Budget::new(BudgetSpec {
            ratio: 0.1,
            min_retries: 2,
        });
        assert!(b.try_retry() && b.try_retry());
        assert!(!b.try_retry(), "only the minimum before any traffic");
        for _ in 0..100 {
            b.first_attempt();
        }
        let granted = (0..50).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 10);
        assert_eq!(
            b.counts(),
            BudgetCounts {
                granted: 12,
                denied: 41
            }
        );
        assert_eq!(
            BudgetSpec {
                ratio: 0.3,
                min_retries: 0
            }
            .allowance(10),
            3
        );
        assert!(BudgetSpec {
            ratio: -1.0,
            min_retries: 0
        }
        .validate()
        .is_err());
    }

    #[test]
    fn concurrent_grants_never_exceed() {
        let b = std::sync::Arc::new(Budget::new(BudgetSpec {
            ratio: 0.5,
            min_retries: 0,
        }));
        for _ in 0..1000 {
            b.first_attempt();
        }
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.try_retry()).count())
            })
            .collect();
        let total: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 500);
    }
}
