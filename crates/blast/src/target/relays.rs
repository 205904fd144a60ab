//! Several relays with weights: smooth weighted round robin (each pick
//! goes to the relay furthest behind its share), health from connection
//! outcomes and replies, ejection after a failure streak and a probe after
//! a cooldown.
//!
//! A failure is a connect error, a 4xx greeting, or a 421 at any stage
//! (greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, end of data); a
//! delivered message ends the streak. A session that is set up is no
//! success by itself: a relay that greets and then answers 421 to every
//! MAIL must still be ejected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Consecutive failures (connect errors, 4xx greetings, 421 at any stage)
/// that eject a relay.
pub const EJECT_AFTER: u32 = 3;

/// One relay as given: `host:port=weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// As written (`relay1:25`).
    pub label: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Weight (≥ 1).
    pub weight: u32,
}

/// Per-relay figures in the report's `routing.relays`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelayFigures {
    /// As given.
    pub relay: String,
    /// Its weight.
    pub weight: u32,
    /// Connections tried first on this relay.
    pub picked: u64,
    /// Sessions set up.
    pub connected: u64,
    /// Failures: connect errors, 4xx greetings and 421 replies at any
    /// stage.
    pub failed: u64,
    /// Times it was taken out.
    pub ejections: u64,
    /// Probe connections after a cooldown.
    pub probes: u64,
    /// Out of rotation at the end of the run.
    pub ejected: bool,
}

#[derive(Debug)]
struct State {
    current: i64,
    streak: u32,
    ejected_until: Option<Instant>,
    probing: bool,
    fig: RelayFigures,
}

/// The relays and their health, shared by every shard.
#[derive(Debug)]
pub(crate) struct Pool {
    relays: Vec<RelaySpec>,
    cooldown: Duration,
    state: Mutex<Vec<State>>,
    /// Per relay: a failure was recorded since the last delivery. Read
    /// without the lock on every delivered message, so a healthy relay's
    /// deliveries never take the pool's lock (shared by every shard).
    failing: Box<[AtomicBool]>,
}

impl Pool {
    pub(crate) fn new(relays: Vec<RelaySpec>, cooldown: Duration) -> Pool {
        let state = relays
            .iter()
            .map(|r| State {
                current: 0,
                streak: 0,
                ejected_until: None,
                probing: false,
                fig: RelayFigures {
                    relay: r.label.clone(),
                    weight: r.weight,
                    ..RelayFigures::default()
                },
            })
            .collect();
        Pool {
            failing: relays.iter().map(|_| AtomicBool::new(false)).collect(),
            relays,
            cooldown,
            state: Mutex::new(state),
        }
    }

    /// The relays to try for the next connection: the weighted pick first,
    /// then the other relays in rotation (fallback), as `(index, addr)`.
    pub(crate) fn candidates(&self, now: Instant) -> Vec<(usize, SocketAddr)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A relay whose cooldown is over gets one probe connection.
        let mut probe = None;
        for (i, s) in st.iter_mut().enumerate() {
            if s.ejected_until.is_some_and(|t| t <= now) && !s.probing && probe.is_none() {
                s.probing = true;
                s.fig.probes += 1;
                probe = Some(i);
            }
        }
        let live: Vec<usize> = (0..st.len())
            .filter(|&i| st[i].ejected_until.is_none())
            .collect();
        let pick = match probe {
            Some(i) => Some(i),
            None if live.is_empty() => None,
            None => {
                let total: i64 = live.iter().map(|&i| i64::from(self.relays[i].weight)).sum();
                for &i in &live {
                    st[i].current += i64::from(self.relays[i].weight);
                }
                let best = *live
                    .iter()
                    .max_by_key(|&&i| (st[i].current, std::cmp::Reverse(i)))
                    .unwrap_or(&live[0]);
                st[best].current -= total;
                Some(best)
            }
        };
        let mut out = Vec::new();
        if let Some(p) = pick {
            st[p].fig.picked += 1;
            out.push((p, self.relays[p].addr));
        }
        let mut rest: Vec<usize> = live.into_iter().filter(|&i| Some(i) != pick).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(self.relays[i].weight));
        out.extend(rest.into_iter().map(|i| (i, self.relays[i].addr)));
        if out.is_empty() {
            // Everything is out and cooling down: try the one back soonest
            // rather than fail without a connection attempt.
            if let Some(i) = (0..st.len()).min_by_key(|&i| st[i].ejected_until) {
                out.push((i, self.relays[i].addr));
            }
        }
        out
    }

    /// Records how a connection setup on relay `i` went. The probe's
    /// session set up brings an ejected relay back into rotation, but no
    /// setup ends a failure streak: only a delivered message does.
    pub(crate) fn outcome(&self, i: usize, ok: bool, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = st.get_mut(i) else { return };
        let was_probe = s.probing;
        s.probing = false;
        if ok {
            s.fig.connected += 1;
            if was_probe {
                s.ejected_until = None;
            }
            return;
        }
        self.fail(s, was_probe, now);
        self.failing[i].store(true, Ordering::Relaxed);
    }

    /// A 421 on an established session with relay `i` (MAIL, RCPT, DATA,
    /// end of data): a failure for the streak.
    pub(crate) fn failed(&self, i: usize, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = st.get_mut(i) {
            self.fail(s, false, now);
            self.failing[i].store(true, Ordering::Relaxed);
        }
    }

    /// A message delivered through relay `i`: the failure streak ends, and
    /// a relay ejected meanwhile (by the connections beside this one) is
    /// healthy after all.
    pub(crate) fn delivered(&self, i: usize) {
        // A failure racing this load is seen by the next delivery.
        if !self
            .failing
            .get(i)
            // A load first: no write to the shared line while healthy.
            .is_some_and(|f| f.load(Ordering::Relaxed) && f.swap(false, Ordering::Relaxed))
        {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = st.get_mut(i) {
            s.streak = 0;
            s.ejected_until = None;
        }
    }

    fn fail(&self, s: &mut State, was_probe: bool, now: Instant) {
        s.fig.failed += 1;
        s.streak += 1;
        if was_probe || (s.ejected_until.is_none() && s.streak >= EJECT_AFTER) {
            if s.ejected_until.is_none() || was_probe {
                s.fig.ejections += u64::from(!was_probe);
            }
            s.ejected_until = Some(now + self.cooldown);
            s.current = 0;
        }
    }

    pub(crate) fn figures(&self) -> Vec<RelayFigures> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.iter()
            .map(|s| RelayFigures {
                ejected: s.ejected_until.is_some(),
                ..s.fig.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        let r = |p: u16, w| RelaySpec {
            label: format!("r{p}"),
            addr: SocketAddr::from(([127, 0, 0, 1], p)),
            weight: w,
        };
        Pool::new(vec![r(1, 8), r(2, 2)], Duration::from_secs(5))
    }

    #[test]
    fn splits_by_weight_and_ejects_then_probes() {
        let p = pool();
        let now = Instant::now();
        let mut n = [0u32; 2];
        for _ in 0..100 {
            n[p.candidates(now)[0].0] += 1;
        }
        assert_eq!(n, [80, 20]);
        for _ in 0..EJECT_AFTER {
            p.outcome(1, false, now);
        }
        assert!(p.figures()[1].ejected);
        assert!((0..20).all(|_| p.candidates(now).iter().all(|c| c.0 == 0)));
        // After the cooldown: one probe, and a failed probe ejects again.
        let later = now + Duration::from_secs(6);
        assert_eq!(p.candidates(later)[0].0, 1);
        assert_eq!(p.candidates(later)[0].0, 0, "one probe at a time");
        p.outcome(1, false, later);
        assert!(p.figures()[1].ejected);
        let later2 = later + Duration::from_secs(6);
        assert_eq!(p.candidates(later2)[0].0, 1);
        p.outcome(1, true, later2);
        let f = p.figures();
        assert!(!f[1].ejected);
        assert_eq!((f[1].ejections, f[1].probes), (1, 2));
    }

    #[test]
    fn a_421_streak_ejects_though_sessions_set_up_and_delivery_resets_it() {
        let p = pool();
        let now = Instant::now();
        // Greets fine, then 421 to MAIL, each time: ejected.
        for _ in 0..EJECT_AFTER {
            p.outcome(1, true, now);
            assert!(!p.figures()[1].ejected);
            p.failed(1, now);
        }
        let f = p.figures();
        assert!(f[1].ejected, "{f:?}");
        assert_eq!((f[1].failed, f[1].ejections), (3, 1));
        // A delivered message between failures ends the streak.
        for _ in 0..10 {
            p.failed(0, now);
            p.delivered(0);
        }
        assert!(!p.figures()[0].ejected);
    }
}
