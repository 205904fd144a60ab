//! A precise wake-up for the open-loop pacer.
//!
//! tokio's timer has millisecond granularity: a send due at `t` fires up
//! to ~1 ms late, and that delay would be the generator's own lateness,
//! swamping the latency of any fast target. A timerfd armed at the
//! absolute `CLOCK_MONOTONIC` time (the clock `Instant` reads on Linux)
//! wakes the runtime's epoll close to `t`, but waking a sleeping thread
//! still costs tens of microseconds (33 µs median measured on this
//! project's VMs). So the timerfd is armed [`SPIN_AHEAD`] early and the
//! rest is spent yielding to the runtime (its other tasks and I/O still
//! run) until `t`: a few microseconds late instead, for at most
//! `SPIN_AHEAD` of busy CPU per send.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How early the timerfd fires before a send is due; the remainder is
/// spun. Longer than a thread's usual wake-up delay (p50 33 µs, p99 83 µs
/// measured here), short enough that a slow rate spins a small share.
pub(super) const SPIN_AHEAD: Duration = Duration::from_micros(50);

/// `AsyncFd` needs `AsRawFd`; nix's `TimerFd` offers `AsFd`.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Sleeps until an instant with microsecond precision; falls back to
/// tokio's timer where a timerfd cannot be made or registered.
pub(super) struct PreciseTimer {
    fd: Option<AsyncFd<Fd>>,
}

impl PreciseTimer {
    /// A timer registered with the current runtime's I/O driver.
    pub fn new() -> PreciseTimer {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .ok()
        .and_then(|t| {
            // SAFETY: `Fd` owns the TimerFd, whose descriptor stays open and
            // unchanged until the AsyncFd (its only owner) is dropped.
            unsafe { AsyncFd::register_with_interest(Fd(t), Interest::READABLE) }.ok()
        });
        PreciseTimer { fd }
    }

    /// Returns at `t` (at once if `t` has passed).
    pub async fn sleep_until(&self, t: Instant) {
        if let Some(wake) = t.checked_sub(SPIN_AHEAD) {
            self.sleep_coarse(wake).await;
        }
        // The last stretch: yield until due. Each yield lets the runtime run
        // its other tasks and poll I/O, so replies are not held up.
        while Instant::now() < t {
            tokio::task::yield_now().await;
        }
    }

    /// Returns at about `t`: late by a thread's wake-up delay.
    async fn sleep_coarse(&self, t: Instant) {
        let now = Instant::now();
        let Some(left) = t.checked_duration_since(now).filter(|d| !d.is_zero()) else {
            return;
        };
        let armed = self.fd.as_ref().filter(|fd| {
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .and_then(|mono| {
                    fd.get_ref().0.set(
                        Expiration::OneShot(mono + TimeSpec::from_duration(left)),
                        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                    )
                })
                .is_ok()
        });
        let Some(fd) = armed else {
            return tokio::time::sleep_until(t.into()).await;
        };
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep_until(t.into()).await;
            };
            // Reading the expiry count clears readiness; would-block means
            // a stale readiness from an earlier arming: wait again.
            match ready.try_io(|inner| inner.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(_) => return,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wakes_at_the_instant_not_before() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let timer = PreciseTimer::new();
            assert!(timer.fd.is_some(), "timerfd available on Linux");
            for step in [Duration::from_micros(300), Duration::from_millis(2)] {
                let t = Instant::now() + step;
                timer.sleep_until(t).await;
                assert!(Instant::now() >= t, "woke before {step:?}");
            }
            // A past instant returns at once, leaving the timer usable.
            timer
                .sleep_until(Instant::now() - Duration::from_millis(1))
                .await;
            let t = Instant::now() + Duration::from_micros(500);
            timer.sleep_until(t).await;
            assert!(Instant::now() >= t);
        });
    }
}
