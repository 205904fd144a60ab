//! Decoding histograms from reports and ledgers written by someone else:
//! whatever the bytes, `decode_v2` never allocates more than a bounded
//! amount (hdrhistogram's own deserializer allocates what the header
//! claims, up to 4 GiB).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};
use hdrhistogram::Histogram;
use mailstorm_sample::{decode_v2, MAX_HISTOGRAM_BYTES};

/// Records the largest single allocation asked for.
struct Largest;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// records the requested size.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

fn sample() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for v in [1, 20, 300, 4_000, 50_000, 600_000] {
        h.record(v).unwrap();
    }
    h
}

fn plain(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new().serialize(h, &mut out).unwrap();
    out
}

fn deflate(plain: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(plain).unwrap();
    let z = z.finish().unwrap();
    let mut out = 0x1c84_9314u32.to_be_bytes().to_vec();
    out.extend((z.len() as u32).to_be_bytes());
    out.extend(z);
    out
}

fn set_word(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

// One test: the allocation high-water mark is process-wide.
#[test]
fn hostile_headers_are_refused_without_large_allocations() {
    let h = sample();
    let mut deflated = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&h, &mut deflated)
        .unwrap();
    // What the tools write decodes, compressed or plain.
    assert_eq!(decode_v2(&deflated).unwrap(), h);
    assert_eq!(decode_v2(&plain(&h)).unwrap(), h);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, claim) in [
        ("2 GiB payload", 0x7fff_ffff),
        ("4 GiB payload", u32::MAX - 4),
    ] {
        let mut p = plain(&h);
        set_word(&mut p, 4, claim);
        cases.push((name, deflate(&p)));
        cases.push((name, p));
    }
    let mut five = plain(&h);
    set_word(&mut five, 12, 5);
    cases.push(("5 digits", deflate(&five)));
    // A zlib bomb: 200 MB of zeros behind a valid header.
    let mut bomb = plain(&h)[..40].to_vec();
    bomb.resize(200 << 20, 0);
    cases.push(("bomb", deflate(&bomb)));
    drop(bomb);
    cases.push(("truncated", deflated[..deflated.len() / 2].to_vec()));
    cases.push(("empty", Vec::new()));

    LARGEST.store(0, Ordering::Relaxed);
    for (name, bytes) in &cases {
        assert!(decode_v2(bytes).is_none(), "{name}");
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= 2 * MAX_HISTOGRAM_BYTES,
        "largest allocation {largest} bytes"
    );
}
