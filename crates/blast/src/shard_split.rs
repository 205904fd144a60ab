//! Sharding a run across processes (`--shard I/N`, or Kubernetes'
//! `JOB_COMPLETION_INDEX` with `--shards N`): the arithmetic of who takes
//! what, kept apart from the engine so it can be checked on its own.
//!
//! A sharded process is a slice of the one run the `N` processes form.
//! Its threads are numbered within the whole run: thread `t` of process
//! `i` is global shard `g = i + t·N` of `N·T` (T: the process's threads),
//! so the engine's existing interleaving (send `j` of the schedule goes to
//! `j mod (N·T)`, sequence numbers `k·N·T + g`, connection slots
//! `g + s·N·T`) makes process `i` take exactly the sends, sequence numbers
//! and connection slots `≡ i (mod N)` of the single run, whatever `T` is.
//! Counts (connections, messages) are split the same way: process `i`
//! gets `base + (i < rem)`, then its threads split that share alike.
//! Rates and stage values need no division: the schedule itself is the
//! whole run's, and each process takes its residue class of it.

use serde::{Deserialize, Serialize};

use crate::BlastError;

/// Most shards a run may have (the trace's sequence-space id keeps the
/// shard in its low 16 bits; `merge` caps its inputs at the same number).
pub const MAX_SHARDS: u32 = 4096;

/// One process's place in a sharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// 0-based index, `< count`.
    pub index: u32,
    /// How many processes form the run.
    pub count: u32,
}

impl std::fmt::Display for Shard {
    /// `I/N`, as `--shard` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// A checked shard: `index < count <= MAX_SHARDS`; `what` names the
    /// flag or variable in errors.
    pub fn new(index: u32, count: u32, what: &str) -> Result<Shard, BlastError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(BlastError::Config(format!(
                "{what}: {count} shards: expected 1 to {MAX_SHARDS}"
            )));
        }
        if index >= count {
            return Err(BlastError::Config(format!(
                "{what}: shard index {index} is not below the shard count {count} \
                 (indexes are 0-based: 0 to {})",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `I/N` (`--shard 2/8`).
    pub fn parse(s: &str) -> Result<Shard, BlastError> {
        let bad = || {
            BlastError::Config(format!(
                "--shard {s:?}: expected INDEX/COUNT with a 0-based index, e.g. 0/4"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n, &format!("--shard {s}"))
    }

    /// The shard from `--shard`, else from `JOB_COMPLETION_INDEX` (what an
    /// Indexed Job sets) with `--shards N`; `None` for an unsharded run.
    pub fn resolve(
        flag: Option<&str>,
        shards: Option<u32>,
        job_index: Option<&str>,
    ) -> Result<Option<Shard>, BlastError> {
        match (flag, shards, job_index) {
            (Some(f), None, _) => Shard::parse(f).map(Some),
            (Some(_), Some(_), _) => Err(BlastError::Config(
                "--shard I/N already gives the count: drop --shards".into(),
            )),
            (None, Some(n), Some(i)) => {
                let idx: u32 = i.trim().parse().map_err(|_| {
                    BlastError::Config(format!(
                        "JOB_COMPLETION_INDEX {i:?}: expected a shard index (0, 1, …)"
                    ))
                })?;
                Shard::new(
                    idx,
                    n,
                    &format!("JOB_COMPLETION_INDEX={i} with --shards {n}"),
                )
                .map(Some)
            }
            (None, Some(n), None) => Err(BlastError::Config(format!(
                "--shards {n}: this process's index comes from --shard I/N or the \
                 JOB_COMPLETION_INDEX variable, and neither is set"
            ))),
            (None, None, _) => Ok(None),
        }
    }

    /// This shard's share of a whole-run count.
    pub fn share(&self, total: u64) -> u64 {
        share(total, self.index.into(), self.count.into())
    }
}

/// `total` split over `n` parts, part `i`'s share: `base + (i < rem)`.
/// The shares of `0..n` sum to `total`.
pub fn share(total: u64, i: u64, n: u64) -> u64 {
    let n = n.max(1);
    total / n + u64::from(i < total % n)
}

/// One engine thread's place in the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSlice {
    /// Global shard index, `< stride`.
    pub index: u64,
    /// Global shard count: processes × threads.
    pub stride: u64,
    /// Connections (closed loop) or the connection cap (open loop).
    pub workers: u64,
    /// Messages it may start (`None`: no message cap).
    pub messages: Option<u64>,
}

/// Thread `t` of `threads` in process `shard` (unsharded: the whole run)
/// of a run with `concurrency` connections and `messages` messages.
pub fn thread_slice(
    shard: Option<Shard>,
    threads: usize,
    t: usize,
    concurrency: u64,
    messages: Option<u64>,
) -> ThreadSlice {
    let s = shard.unwrap_or(Shard { index: 0, count: 1 });
    let (i, n) = (u64::from(s.index), u64::from(s.count));
    let (t, threads) = (t as u64, threads.max(1) as u64);
    ThreadSlice {
        index: i + t * n,
        stride: n * threads,
        workers: share(share(concurrency, i, n), t, threads),
        messages: messages.map(|m| share(share(m, i, n), t, threads)),
    }
}

/// Checks that every shard gets something to do: a run of fewer
/// connections (or messages) than shards would leave some idle and the
/// merged run unlike the single one.
pub fn check_counts(
    shard: Shard,
    concurrency: u64,
    messages: Option<u64>,
) -> Result<(), BlastError> {
    let n = u64::from(shard.count);
    if concurrency < n {
        return Err(BlastError::Config(format!(
            "--shard {shard}: the run's {concurrency} connection(s) cannot be shared by {n} \
             shards (each needs one): raise -c to at least {n}"
        )));
    }
    if let Some(m) = messages.filter(|m| *m < n) {
        return Err(BlastError::Config(format!(
            "--shard {shard}: the run's {m} message(s) cannot be shared by {n} shards: \
             raise -n to at least {n}"
        )));
    }
    Ok(())
}

/// FNV-1a of a run id: the same in every process of the run.
fn run_hash(run_id: &str) -> u64 {
    run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The shard's trace sequence space: the run id's hash in the high 16
/// bits, `index + 1` in the low 16 (never 0, distinct per shard).
pub fn trace_source(run_id: &str, shard: Shard) -> u32 {
    ((run_hash(run_id) >> 48) as u32) << 16 | (shard.index + 1)
}

/// The run's seed when none was given: derived from the run id, so every
/// shard draws sizes and recipients from the same per-message streams the
/// single run would (they are keyed by seed and global sequence number).
pub fn run_seed(run_id: &str) -> u64 {
    let mut x = run_hash(run_id);
    crate::rng::splitmix64(&mut x) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_whole_for_every_field() {
        for n in 1..=9u32 {
            for threads in 1..=4usize {
                for total in [0u64, 1, 7, 8, 9, 100, 1001] {
                    let mut workers = 0;
                    let mut msgs = 0;
                    let mut indexes = std::collections::BTreeSet::new();
                    for i in 0..n {
                        let s = Shard::new(i, n, "t").unwrap();
                        let mut proc_workers = 0;
                        for t in 0..threads {
                            let sl = thread_slice(Some(s), threads, t, total, Some(total + 3));
                            assert_eq!(sl.stride, u64::from(n) * threads as u64);
                            assert!(indexes.insert(sl.index), "global index repeats");
                            workers += sl.workers;
                            proc_workers += sl.workers;
                            msgs += sl.messages.unwrap();
                        }
                        assert_eq!(proc_workers, s.share(total));
                    }
                    assert_eq!(workers, total, "n={n} threads={threads}");
                    assert_eq!(msgs, total + 3);
                    assert_eq!(indexes.len() as u64, u64::from(n) * threads as u64);
                    assert_eq!(
                        indexes.iter().next_back().copied(),
                        Some(indexes.len() as u64 - 1)
                    );
                }
            }
        }
    }

    #[test]
    fn remainders_go_to_the_first_shards() {
        let shares: Vec<u64> = (0..4).map(|i| share(10, i, 4)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        // Deterministic: the same inputs, the same answer.
        assert_eq!(
            thread_slice(Some(Shard { index: 1, count: 4 }), 2, 1, 10, None).workers,
            1
        );
        assert_eq!(
            thread_slice(Some(Shard { index: 1, count: 4 }), 2, 1, 10, None),
            thread_slice(Some(Shard { index: 1, count: 4 }), 2, 1, 10, None)
        );
    }

    #[test]
    fn process_takes_its_residue_class_of_sends_and_slots() {
        // Thread g's sends are g + k·stride: together the threads of
        // process i cover exactly j ≡ i (mod n) below any bound.
        let (n, threads) = (3u32, 2usize);
        for i in 0..n {
            let s = Shard::new(i, n, "t").unwrap();
            let mut seen: Vec<u64> = (0..threads)
                .flat_map(|t| {
                    let sl = thread_slice(Some(s), threads, t, 6, None);
                    (0..10).map(move |k| sl.index + k * sl.stride)
                })
                .filter(|j| *j < 30)
                .collect();
            seen.sort_unstable();
            let want: Vec<u64> = (0..30)
                .filter(|j| j % u64::from(n) == u64::from(i))
                .collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn unsharded_is_the_old_thread_split() {
        for t in 0..3 {
            let sl = thread_slice(None, 3, t, 10, Some(11));
            assert_eq!((sl.index, sl.stride), (t as u64, 3));
            assert_eq!(sl.workers, share(10, t as u64, 3));
        }
    }

    #[test]
    fn parses_and_resolves() {
        assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
        for bad in ["8/8", "1/0", "x/2", "3", "-1/2", "1/5000"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) || e.contains("shards"), "{bad}: {e}");
        }
        assert_eq!(
            Shard::resolve(None, Some(4), Some("3")).unwrap(),
            Some(Shard { index: 3, count: 4 })
        );
        let e = Shard::resolve(None, Some(4), Some("4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("JOB_COMPLETION_INDEX=4"), "{e}");
        assert!(Shard::resolve(None, Some(4), None).is_err());
        assert!(Shard::resolve(Some("0/2"), Some(2), None).is_err());
        assert_eq!(Shard::resolve(None, None, Some("1")).unwrap(), None);
        assert!(check_counts(Shard { index: 0, count: 4 }, 3, None).is_err());
        assert!(check_counts(Shard { index: 0, count: 4 }, 4, Some(3)).is_err());
        assert!(check_counts(Shard { index: 0, count: 4 }, 4, Some(4)).is_ok());
    }

    #[test]
    fn sources_are_distinct_and_seeds_shared() {
        let a: std::collections::BTreeSet<u32> = (0..MAX_SHARDS)
            .map(|i| {
                trace_source(
                    "run-1",
                    Shard {
                        index: i,
                        count: MAX_SHARDS,
                    },
                )
            })
            .collect();
        assert_eq!(a.len(), MAX_SHARDS as usize);
        assert!(!a.contains(&0));
        assert_eq!(run_seed("run-1"), run_seed("run-1"));
        assert_ne!(run_seed("run-1"), run_seed("run-2"));
    }
}
