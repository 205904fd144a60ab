//! The target's CPU and memory interval by interval (`--target-pid`,
//! `--target-metrics`), for the timeline.
//!
//! A scrape can take up to its timeout, so it runs on a thread of its own:
//! the step's interval callback only reads the latest sample and never
//! waits on the target.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::procstat::ProcSample;
use super::TargetProbe;

/// One sample and when it was taken.
type Stamped = (Instant, ProcSample);

/// Samples a target every interval until dropped.
pub struct TargetWatch {
    latest: Arc<Mutex<Option<Stamped>>>,
    /// The sample the previous tick read (CPU is a difference).
    seen: Option<Stamped>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The target's use over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetUse {
    /// CPU, percent of one core, between the last two samples.
    pub cpu_pct: Option<f64>,
    /// Resident memory at the latest sample, bytes.
    pub rss_bytes: Option<u64>,
}

impl TargetWatch {
    /// Starts sampling `probe` every `every` (nothing without a probe).
    pub fn start(probe: Option<&TargetProbe>, every: Duration) -> TargetWatch {
        let latest = Arc::new(Mutex::new(None));
        let Some(probe) = probe.cloned() else {
            return TargetWatch {
                latest,
                seen: None,
                stop: None,
                thread: None,
            };
        };
        let (tx, rx) = mpsc::channel::<()>();
        let slot = latest.clone();
        let thread = std::thread::Builder::new()
            .name("target-watch".into())
            .spawn(move || loop {
                if let Ok(s) = probe.sample() {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s));
                }
                // The period, or an early end when the watch is dropped.
                match rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            })
            .ok();
        TargetWatch {
            latest,
            seen: None,
            stop: Some(tx),
            thread,
        }
    }

    /// The target's use since the previous call (CPU needs two samples:
    /// `None` until the second distinct one).
    pub fn tick(&mut self) -> TargetUse {
        let now = *self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let Some((at, s)) = now else {
            return TargetUse::default();
        };
        let cpu_pct = match self.seen {
            Some((was, p)) if at > was => {
                let wall = at.duration_since(was).as_secs_f64();
                Some(((s.cpu_secs - p.cpu_secs) / wall * 100.0).max(0.0))
            }
            _ => None,
        };
        if cpu_pct.is_some() || self.seen.is_none() {
            self.seen = Some((at, s));
        }
        TargetUse {
            cpu_pct,
            rss_bytes: Some(s.rss_bytes),
        }
    }
}

impl Drop for TargetWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // Bounded by one scrape's timeout.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_a_process_interval_by_interval() {
        let probe = TargetProbe::Pid(std::process::id());
        let mut w = TargetWatch::start(Some(&probe), Duration::from_millis(10));
        let t0 = Instant::now();
        let mut first = TargetUse::default();
        while first.rss_bytes.is_none() && t0.elapsed() < Duration::from_secs(5) {
            first = w.tick();
            std::thread::yield_now();
        }
        assert!(first.rss_bytes.unwrap() > 0);
        let mut next = TargetUse::default();
        while next.cpu_pct.is_none() && t0.elapsed() < Duration::from_secs(5) {
            next = w.tick();
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(next.cpu_pct.unwrap() >= 0.0, "{next:?}");
        drop(w);
        let mut none = TargetWatch::start(None, Duration::from_millis(10));
        assert_eq!(none.tick(), TargetUse::default());
    }
}
