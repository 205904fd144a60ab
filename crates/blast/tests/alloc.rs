//! Memory churn of a run, counted by this test binary's own allocator:
//! the pacer's per-send step must not allocate large blocks, and a new
//! connection must not regrow the buffers its slot's last one grew.
//! It once built a whole `Stats` (a 16 KiB histogram per stage, ~230 KiB)
//! at every send and threw it away, which cost the generator its own
//! precision (lateness p99 ~300 µs at 20,000 msgs/s, 6–12 µs without).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

/// Blocks of this size or more are counted: a per-send histogram is 16 KiB;
/// per-connection buffers and per-interval rows are few.
const LARGE: usize = 8 * 1024;

static LARGE_BLOCKS: AtomicU64 = AtomicU64::new(0);
/// Every `realloc` (a growing `Vec`), whatever its size.
static REALLOCS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting large requests.
struct Counting;

fn note(size: usize) {
    if size >= LARGE {
        LARGE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to the system allocator, which
// upholds `GlobalAlloc`'s contract; counting touches only an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with
        // `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        REALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `dealloc`, with the caller's valid new size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are process-wide: one test counts at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn an_open_loop_send_allocates_no_large_blocks() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sink = sink();
    let cfg = mailstorm_blast::config::Config {
        rate: Some(5000.0),
        duration: Some(Duration::from_millis(400)),
        concurrency: 16,
        ..config()
    };
    let before = LARGE_BLOCKS.load(Ordering::Relaxed);
    let r = run(cfg, sink.local_addr());
    let large = LARGE_BLOCKS.load(Ordering::Relaxed) - before;
    let sent = r.totals.counters.attempted;
    assert!(sent >= 1000, "only {sent} sends started");
    // 147 measured for 2,000 sends (the run's own setup, per-interval rows,
    // connection buffers, the in-process sink); one block per send is
    // a regression, and the old step made 17.
    assert!(
        large < sent / 4,
        "{large} allocations of {LARGE} bytes or more for {sent} sends"
    );
}

#[test]
fn a_new_connection_reuses_its_slots_buffers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sink = sink();
    let n = 2000;
    let cfg = mailstorm_blast::config::Config {
        messages: Some(n),
        per_conn: 1,
        ..config()
    };
    let before = REALLOCS.load(Ordering::Relaxed);
    let r = run(cfg, sink.local_addr());
    let reallocs = REALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(r.totals.counters.accepted, n);
    assert_eq!(r.totals.counters.conn_opened, n);
    // Measured: 2,047, about one per connection, the in-process sink's (the
    // blaster's own are none: callgrind of the binary shows no realloc).
    // Before slots kept their buffers each connection regrew its write
    // buffer from empty, ~5 more per connection: 12,028.
    assert!(
        reallocs < 2 * n,
        "{reallocs} reallocations for {n} one-message connections"
    );
}
