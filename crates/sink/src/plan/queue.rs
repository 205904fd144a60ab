//! The `queue` action at run time: a multi-server FIFO queue in virtual
//! time. Each arrival takes the worker that frees first; its reply waits
//! until its service ends (the wait for a worker plus its own service), or
//! it is refused when `max_queue` messages already wait. One lock per
//! message that reaches the rule: the queue is one shared resource, as a
//! real server's is.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::select::{uniform, Dist};

/// Workers one rule may declare: beyond this the heap is only memory.
pub(crate) const MAX_WORKERS: u64 = 100_000;
/// Messages one rule may keep waiting (their start times are kept).
pub(crate) const MAX_QUEUE: u64 = 1_000_000;

/// A compiled `queue` action and its state.
#[derive(Debug)]
pub(crate) struct QueueModel {
    workers: usize,
    max_queue: usize,
    service: (Dist, f64),
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When each worker is free next (earliest on top); empty until the
    /// first arrival, then `workers` entries.
    free_at: BinaryHeap<Reverse<Instant>>,
    /// Start times of the messages waiting now, in order (starts never
    /// decrease: each arrival takes the earliest free worker).
    waiting: VecDeque<Instant>,
    /// Arrivals so far: the draw index of the next service time.
    arrivals: u64,
}

impl PartialEq for QueueModel {
    fn eq(&self, o: &QueueModel) -> bool {
        (self.workers, self.max_queue, self.service) == (o.workers, o.max_queue, o.service)
    }
}

impl QueueModel {
    pub(crate) fn new(workers: u64, max_queue: u64, service: (Dist, f64)) -> QueueModel {
        QueueModel {
            workers: workers.clamp(1, MAX_WORKERS) as usize,
            max_queue: max_queue.min(MAX_QUEUE) as usize,
            service,
            state: Mutex::new(State {
                free_at: BinaryHeap::new(),
                waiting: VecDeque::new(),
                arrivals: 0,
            }),
        }
    }

    /// A message arriving at `now`: how long until its reply, or `None`
    /// when the queue is full. Service times are draws `0, 1, 2…` of the
    /// rule's stream, so the same arrival order gives the same delays.
    pub(crate) fn arrive(&self, seed: u64, rule: usize, now: Instant) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.free_at.is_empty() {
            s.free_at.extend((0..self.workers).map(|_| Reverse(now)));
        }
        while s.waiting.front().is_some_and(|&start| start <= now) {
            s.waiting.pop_front();
        }
        let Reverse(free) = *s.free_at.peek()?;
        let start = free.max(now);
        if start > now && s.waiting.len() >= self.max_queue {
            return None;
        }
        let n = s.arrivals;
        s.arrivals += 1;
        let (dist, cap) = self.service;
        let service = dist.sample(
            uniform(seed, rule, n, 0, 1),
            uniform(seed, rule, n, 0, 2),
            cap,
        );
        s.free_at.pop();
        s.free_at.push(Reverse(start + service));
        if start > now {
            s.waiting.push_back(start);
        }
        Some(start + service - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(ms: f64) -> (Dist, f64) {
        (Dist::Fixed(ms), 600_000.0)
    }

    #[test]
    fn waits_for_a_worker_then_overflows() {
        // 2 workers, 10 ms each, 1 may wait.
        let q = QueueModel::new(2, 1, fixed(10.0));
        let t = Instant::now();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(q.arrive(1, 0, t)), Some(10));
        assert_eq!(ms(q.arrive(1, 0, t)), Some(10));
        // Both busy: waits 10 ms, then 10 ms of service.
        assert_eq!(ms(q.arrive(1, 0, t)), Some(20));
        // One already waits: full.
        assert_eq!(q.arrive(1, 0, t), None);
        // 10 ms later the waiting one has started on one worker; the other
        // is free at once.
        let later = t + Duration::from_millis(10);
        assert_eq!(ms(q.arrive(1, 0, later)), Some(10));
        // Both busy again (until 20 ms): the next one waits 10 ms.
        assert_eq!(ms(q.arrive(1, 0, later)), Some(20));
        // Idle long enough, everything is free again.
        let idle = t + Duration::from_secs(1);
        assert_eq!(ms(q.arrive(1, 0, idle)), Some(10));
    }

    #[test]
    fn below_capacity_nobody_waits() {
        // 4 workers × 5 ms = 800 msgs/s; arrivals at 400/s never wait.
        let q = QueueModel::new(4, 0, fixed(5.0));
        let t0 = Instant::now();
        for i in 0..1000u64 {
            let d = q.arrive(7, 0, t0 + Duration::from_micros(2500 * i));
            assert_eq!(d, Some(Duration::from_millis(5)));
        }
    }
}
