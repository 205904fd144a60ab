//! mailstorm-proto against smtp-proto (Stalwart's parser) on the same inputs,
//! side by side in one run (issue 2, section 6).
//!
//! Groups:
//! - `commands`: a 12-line pipelined command mix repeated 100 times
//!   (throughput in commands);
//! - `data_discard` / `data_unstuff`: 1 MiB and 100 KiB dot-stuffed bodies,
//!   with `memchr::memmem` looking for `CRLF . CRLF` as the limit reference;
//! - `replies`: `250 2.1.0 Ok` and an 11-line EHLO reply;
//! - `ehlo_caps`: the same EHLO reply turned into capabilities (both
//!   parsers' typed EHLO readers; both allocate by design);
//! - `trace_find`: the sink's per-message scan of a header section for the
//!   trace header (ours only: smtp-proto has no counterpart), as the
//!   blaster writes it, tagged, and behind a relay's three `Received:`
//!   lines.
//!
//! Before criterion starts, every case runs once under a counting global
//! allocator and the allocation counts are printed, along with where the
//! DATA input and output buffers sit relative to each other (memcpy on Zen 4
//! slows ~10x when `(dst - src) mod 4096` is 1..=15, so the distance is fixed
//! at 2048).
//!
//! `scripts/bench-proto-table.sh` turns criterion's estimates into the
//! README table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use mailstorm_proto::data::{DataConfig, DataReceiver};
use mailstorm_proto::ehlo::Capabilities;
use mailstorm_proto::reply::parse_reply;
use mailstorm_proto::trace::{self, Found, Template};
use mailstorm_proto::{parse_command, ParserConfig, Status, DEFAULT_MAX_REPLY_LINE};
use memchr::memmem;

// ---------------------------------------------------------------------------
// Counting allocator. Large blocks are page-aligned so that buffer placement
// below is the same on every run, whatever malloc's mmap threshold is.

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Blocks of at least this size are allocated 4096-aligned.
const PAGE_ALIGN_FROM: usize = 64 * 1024;

fn placed(layout: Layout) -> Layout {
    if layout.size() >= PAGE_ALIGN_FROM && layout.align() < 4096 {
        Layout::from_size_align(layout.size(), 4096).unwrap_or(layout)
    } else {
        layout
    }
}

#[inline]
fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every block is allocated and freed by `System` with the layout
// `placed(layout)`, which depends only on the caller's layout, so `alloc`,
// `dealloc` and `realloc` always agree on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: `placed` keeps the size (non-zero per the caller's contract)
        // and only raises the alignment to a valid power of two.
        unsafe { System.alloc(placed(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(placed(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `placed(layout)`.
        unsafe { System.dealloc(ptr, placed(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        let old = placed(layout);
        // SAFETY: the caller guarantees `new_size` is non-zero and does not
        // overflow when rounded up to `layout.align()`.
        let new = placed(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            // SAFETY: `ptr` was allocated by `System` with `old`.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // SAFETY: `new` has a non-zero size.
        let p = unsafe { System.alloc(new) };
        if !p.is_null() {
            // SAFETY: both blocks are live, distinct and at least
            // `min(old, new)` bytes long; `ptr` came from `System` with `old`.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` once and returns how many allocations (and reallocations) it made.
fn allocations<R>(f: impl FnOnce() -> R) -> u64 {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    drop(black_box(r));
    ALLOCS.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------
// Inputs.

const COMMAND_MIX: [&str; 12] = [
    "EHLO client.example.com",
    "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
    "STARTTLS",
    "MAIL FROM:<sender@example.com> SIZE=12345 BODY=8BITMIME",
    "RCPT TO:<rcpt1@example.com>",
    "RCPT TO:<rcpt2@example.com> NOTIFY=SUCCESS,FAILURE",
    "RCPT TO:<rcpt3@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;rcpt3@example.com",
    "DATA",
    "BDAT 1000 LAST",
    "RSET",
    "NOOP",
    "QUIT",
];
const COMMAND_REPEAT: usize = 100;
const COMMANDS: usize = COMMAND_MIX.len() * COMMAND_REPEAT;

fn command_buffer() -> Vec<u8> {
    let mut buf = Vec::new();
    for _ in 0..COMMAND_REPEAT {
        for line in COMMAND_MIX {
            buf.extend_from_slice(line.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    }
    buf
}

const REPLY_SINGLE: &[u8] = b"250 2.1.0 Ok\r\n";
const REPLY_EHLO: &[u8] = b"250-mx.example.com Hello\r\n\
250-PIPELINING\r\n\
250-SIZE 52428800\r\n\
250-8BITMIME\r\n\
250-SMTPUTF8\r\n\
250-CHUNKING\r\n\
250-BINARYMIME\r\n\
250-STARTTLS\r\n\
250-AUTH PLAIN LOGIN CRAM-MD5\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250 DSN\r\n";

/// A DATA body as sent on the wire (dot-stuffed, ending in `CRLF . CRLF`)
/// and what unstuffing it must give.
struct Body {
    wire: Vec<u8>,
    unstuffed: Vec<u8>,
    /// Lines whose first dot is removed by unstuffing.
    stuffed_lines: usize,
}

/// Deterministic body of at least `target` bytes: lines of 76..=78
/// characters, about 2% of the message lines start with a dot (sent as
/// `..`). The first line never starts with a dot: smtp-proto's receiver does
/// not treat the start of DATA as a line start.
fn make_body(target: usize, seed: u64) -> Body {
    const ALPHABET: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/ ,.-=:;'()";
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut wire = Vec::with_capacity(target + 256);
    let mut unstuffed = Vec::with_capacity(target + 256);
    let mut stuffed_lines = 0;
    let mut line = Vec::with_capacity(80);
    let mut first = true;
    while wire.len() < target {
        line.clear();
        let len = 76 + (next() % 3) as usize;
        let dotted = !first && next() % 50 == 0;
        if dotted {
            line.push(b'.');
        }
        while line.len() < len {
            let c = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
            // No dot (or space) starts an undotted line.
            if line.is_empty() && matches!(c, b'.' | b' ') {
                continue;
            }
            line.push(c);
        }
        first = false;
        if dotted {
            wire.push(b'.');
            stuffed_lines += 1;
        }
        wire.extend_from_slice(&line);
        wire.extend_from_slice(b"\r\n");
        unstuffed.extend_from_slice(&line);
        unstuffed.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    Body {
        wire,
        unstuffed,
        stuffed_lines,
    }
}

/// Distance (mod 4096) from input to output buffer for the DATA benches.
const DATA_DISTANCE: usize = 2048;

/// The DATA input, copied into its own allocation at a chosen offset, and
/// an output buffer with room for the whole message.
struct DataCase {
    name: &'static str,
    /// Backing store of the input; `input_at` is where the body starts.
    backing: Vec<u8>,
    input_at: usize,
    input_len: usize,
    out: Vec<u8>,
    expect: Vec<u8>,
    stuffed_lines: usize,
}

impl DataCase {
    fn new(name: &'static str, size: usize, seed: u64) -> DataCase {
        let body = make_body(size, seed);
        // Output first: its address is what the input is placed against.
        let out: Vec<u8> = Vec::with_capacity(body.wire.len() + 4096);
        let out_addr = out.as_ptr() as usize;
        let mut backing = vec![0u8; body.wire.len() + 8192];
        let base = backing.as_ptr() as usize;
        // input ≡ out - DATA_DISTANCE (mod 4096), i.e. out - input ≡ DATA_DISTANCE.
        let want = (out_addr + 4096 - DATA_DISTANCE) % 4096;
        let input_at = (want + 4096 - base % 4096) % 4096;
        backing[input_at..input_at + body.wire.len()].copy_from_slice(&body.wire);
        let case = DataCase {
            name,
            backing,
            input_at,
            input_len: body.wire.len(),
            out,
            expect: body.unstuffed,
            stuffed_lines: body.stuffed_lines,
        };
        case.check_placement();
        case
    }

    fn input(&self) -> &[u8] {
        &self.backing[self.input_at..self.input_at + self.input_len]
    }

    /// Output position minus input position, mod 4096, at the start of the
    /// message; every stuffed dot removed lowers it by one.
    fn distance(&self) -> usize {
        (self.out.as_ptr() as usize)
            .wrapping_sub(self.input().as_ptr() as usize)
            .rem_euclid(4096)
    }

    fn check_placement(&self) {
        let d = self.distance();
        let low = d - self.stuffed_lines.min(d);
        println!(
            "placement {}: input {} bytes at {:#x} (mod 4096 = {}), output at {:#x} \
             (mod 4096 = {}); (out - in) mod 4096 = {} at the start, {} after the last of {} \
             stuffed dots",
            self.name,
            self.input_len,
            self.input().as_ptr() as usize,
            self.input().as_ptr() as usize % 4096,
            self.out.as_ptr() as usize,
            self.out.as_ptr() as usize % 4096,
            d,
            low,
            self.stuffed_lines,
        );
        assert_eq!(d, DATA_DISTANCE, "input/output distance not fixed");
        assert!(
            low >= 64 && d <= 4096 - 64,
            "input/output distance drifts into the slow memcpy window"
        );
    }
}

// ---------------------------------------------------------------------------
// The measured operations, shared by the allocation census and criterion.

fn mailstorm_commands(buf: &[u8], cfg: &ParserConfig) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while pos < buf.len() {
        let Ok(Status::Complete((cmd, used))) = parse_command(&buf[pos..], cfg) else {
            break;
        };
        black_box(cmd);
        pos += used;
        n += 1;
    }
    n
}

fn smtp_proto_commands(buf: &[u8]) -> usize {
    let mut it = buf.iter();
    let mut n = 0;
    while !it.as_slice().is_empty() {
        let Ok(req) = smtp_proto::Request::parse(&mut it) else {
            break;
        };
        black_box(req);
        n += 1;
    }
    n
}

fn smtp_proto_commands_receiver(buf: &[u8]) -> usize {
    let mut rx = smtp_proto::request::receiver::RequestReceiver::default();
    let mut it = buf.iter();
    let mut n = 0;
    while !it.as_slice().is_empty() {
        let Ok(req) = rx.ingest(&mut it) else {
            break;
        };
        black_box(req);
        n += 1;
    }
    n
}

fn mailstorm_discard(input: &[u8]) -> usize {
    let mut rx = DataReceiver::new(DataConfig::default());
    match rx.discard(input) {
        Status::Complete(n) => n,
        Status::Partial => 0,
    }
}

fn mailstorm_unstuff(input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut rx = DataReceiver::new(DataConfig::default());
    match rx.unstuff(input, out) {
        Status::Complete(n) => n,
        Status::Partial => 0,
    }
}

fn smtp_proto_unstuff(input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut rx = smtp_proto::request::receiver::DataReceiver::new();
    let mut it = input.iter();
    if rx.ingest(&mut it, out) {
        input.len() - it.as_slice().len()
    } else {
        0
    }
}

fn smtp_proto_discard(input: &[u8]) -> usize {
    let data = smtp_proto::request::receiver::DataReceiver::new();
    let mut rx = smtp_proto::request::receiver::DummyDataReceiver::new_data(&data);
    let mut it = input.iter();
    if rx.ingest(&mut it) {
        input.len() - it.as_slice().len()
    } else {
        0
    }
}

fn memmem_end(finder: &memmem::Finder<'_>, input: &[u8]) -> usize {
    finder.find(input).map_or(0, |p| p + 5)
}

fn mailstorm_reply(buf: &[u8]) -> (u16, usize) {
    match parse_reply(buf, DEFAULT_MAX_REPLY_LINE) {
        Ok(Status::Complete((reply, used))) => (black_box(reply).code, used),
        _ => (0, 0),
    }
}

fn smtp_proto_reply(buf: &[u8]) -> (u16, usize) {
    let mut rx = smtp_proto::response::parser::ResponseReceiver::default();
    let mut it = buf.iter();
    match rx.parse(&mut it) {
        Ok(resp) => (black_box(resp).code, buf.len() - it.as_slice().len()),
        Err(_) => (0, 0),
    }
}

fn mailstorm_caps(buf: &[u8]) -> usize {
    match Capabilities::parse(buf) {
        Ok(Status::Complete((caps, used))) => {
            black_box(caps);
            used
        }
        _ => 0,
    }
}

fn smtp_proto_caps(buf: &[u8]) -> usize {
    let mut it = buf.iter();
    match smtp_proto::EhloResponse::parse(&mut it) {
        Ok(caps) => {
            black_box(caps);
            buf.len() - it.as_slice().len()
        }
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------
// Correctness and allocation census, before any timing.

fn preflight(commands: &[u8], cases: &mut [DataCase]) {
    let cfg = ParserConfig::default();
    assert_eq!(
        mailstorm_commands(commands, &cfg),
        COMMANDS,
        "mailstorm failed on the mix"
    );
    assert_eq!(
        smtp_proto_commands(commands),
        COMMANDS,
        "smtp-proto failed on the mix"
    );
    assert_eq!(smtp_proto_commands_receiver(commands), COMMANDS);
    let finder = memmem::Finder::new(b"\r\n.\r\n");
    for case in cases.iter_mut() {
        let len = case.input_len;
        let input = case.backing[case.input_at..case.input_at + len].to_vec();
        assert_eq!(
            mailstorm_discard(&input),
            len,
            "{}: mailstorm discard",
            case.name
        );
        assert_eq!(
            smtp_proto_discard(&input),
            len,
            "{}: smtp-proto discard",
            case.name
        );
        assert_eq!(memmem_end(&finder, &input), len, "{}: memmem", case.name);
        let mut out = std::mem::take(&mut case.out);
        let ptr = out.as_ptr();
        assert_eq!(mailstorm_unstuff(case.input(), &mut out), len);
        assert!(
            out == case.expect,
            "{}: mailstorm unstuff output differs",
            case.name
        );
        assert_eq!(smtp_proto_unstuff(case.input(), &mut out), len);
        assert!(
            out == case.expect,
            "{}: smtp-proto unstuff output differs",
            case.name
        );
        assert_eq!(out.as_ptr(), ptr, "output buffer moved");
        case.out = out;
    }
    for (name, buf, lines) in [("single", REPLY_SINGLE, 1), ("ehlo11", REPLY_EHLO, 11)] {
        assert_eq!(
            mailstorm_reply(buf),
            (250, buf.len()),
            "mailstorm reply {name}"
        );
        assert_eq!(
            smtp_proto_reply(buf),
            (250, buf.len()),
            "smtp-proto reply {name}"
        );
        if let Ok(Status::Complete((r, _))) = parse_reply(buf, DEFAULT_MAX_REPLY_LINE) {
            assert_eq!(r.line_count(), lines);
        }
    }
    assert_eq!(mailstorm_caps(REPLY_EHLO), REPLY_EHLO.len());
    assert_eq!(smtp_proto_caps(REPLY_EHLO), REPLY_EHLO.len());

    // Allocation census: one run of each case, counted.
    let per = |n: u64, d: usize| n as f64 / d as f64;
    let ms_cmd = allocations(|| mailstorm_commands(commands, &cfg));
    let sp_cmd = allocations(|| smtp_proto_commands(commands));
    let sp_cmd_rx = allocations(|| smtp_proto_commands_receiver(commands));
    println!(
        "allocations per command: mailstorm {} | smtp-proto Request::parse {} | \
         smtp-proto RequestReceiver {}   ({} commands)",
        per(ms_cmd, COMMANDS),
        per(sp_cmd, COMMANDS),
        per(sp_cmd_rx, COMMANDS),
        COMMANDS
    );
    for case in cases.iter_mut() {
        let mb = case.input_len as f64 / (1024.0 * 1024.0);
        let input = &case.backing[case.input_at..case.input_at + case.input_len];
        let ms_d = allocations(|| mailstorm_discard(input));
        let sp_d = allocations(|| smtp_proto_discard(input));
        let ms_u = allocations(|| mailstorm_unstuff(input, &mut case.out));
        let sp_u = allocations(|| smtp_proto_unstuff(input, &mut case.out));
        println!(
            "allocations per MB ({}): discard mailstorm {} | smtp-proto {};  \
             unstuff (pre-allocated output) mailstorm {} | smtp-proto {}",
            case.name,
            ms_d as f64 / mb,
            sp_d as f64 / mb,
            ms_u as f64 / mb,
            sp_u as f64 / mb
        );
        assert_eq!(ms_d + ms_u, 0, "mailstorm allocated in DATA");
    }
    for (name, buf) in [("single", REPLY_SINGLE), ("ehlo11", REPLY_EHLO)] {
        let ms = allocations(|| mailstorm_reply(buf));
        let sp = allocations(|| smtp_proto_reply(buf));
        println!("allocations per reply ({name}): mailstorm {ms} | smtp-proto {sp}");
    }
    let ms = allocations(|| mailstorm_caps(REPLY_EHLO));
    let sp = allocations(|| smtp_proto_caps(REPLY_EHLO));
    println!("allocations per EHLO capabilities parse: mailstorm {ms} | smtp-proto {sp}");
    assert_eq!(ms_cmd, 0, "mailstorm allocated while parsing commands");
}

// ---------------------------------------------------------------------------
// Criterion.

fn bench_commands(c: &mut Criterion, commands: &[u8]) {
    let cfg = ParserConfig::default();
    let mut g = c.benchmark_group("commands");
    g.throughput(Throughput::Elements(COMMANDS as u64));
    g.bench_function("mailstorm", |b| {
        b.iter(|| mailstorm_commands(black_box(commands), &cfg))
    });
    g.bench_function("smtp-proto", |b| {
        b.iter(|| smtp_proto_commands(black_box(commands)))
    });
    g.bench_function("smtp-proto-receiver", |b| {
        b.iter(|| smtp_proto_commands_receiver(black_box(commands)))
    });
    g.finish();
}

fn bench_data(c: &mut Criterion, cases: &mut [DataCase]) {
    let finder = memmem::Finder::new(b"\r\n.\r\n");
    let mut g = c.benchmark_group("data_discard");
    for case in cases.iter() {
        let input = case.input();
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_with_input(BenchmarkId::new("mailstorm", case.name), input, |b, i| {
            b.iter(|| mailstorm_discard(black_box(i)))
        });
        g.bench_with_input(BenchmarkId::new("smtp-proto", case.name), input, |b, i| {
            b.iter(|| smtp_proto_discard(black_box(i)))
        });
        g.bench_with_input(BenchmarkId::new("memmem", case.name), input, |b, i| {
            b.iter(|| memmem_end(&finder, black_box(i)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("data_unstuff");
    for case in cases.iter_mut() {
        let len = case.input_len;
        let input = &case.backing[case.input_at..case.input_at + len];
        let out = &mut case.out;
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("mailstorm", case.name), |b| {
            b.iter(|| mailstorm_unstuff(black_box(input), out))
        });
        g.bench_function(BenchmarkId::new("smtp-proto", case.name), |b| {
            b.iter(|| smtp_proto_unstuff(black_box(input), out))
        });
    }
    g.finish();
}

fn bench_replies(c: &mut Criterion) {
    let mut g = c.benchmark_group("replies");
    for (name, buf) in [("single", REPLY_SINGLE), ("ehlo11", REPLY_EHLO)] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("mailstorm", name), buf, |b, i| {
            b.iter(|| mailstorm_reply(black_box(i)))
        });
        g.bench_with_input(BenchmarkId::new("smtp-proto", name), buf, |b, i| {
            b.iter(|| smtp_proto_reply(black_box(i)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ehlo_caps");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mailstorm", |b| {
        b.iter(|| mailstorm_caps(black_box(REPLY_EHLO)))
    });
    g.bench_function("smtp-proto", |b| {
        b.iter(|| smtp_proto_caps(black_box(REPLY_EHLO)))
    });
    g.finish();
}

/// A header section as the blaster writes it (trace line first, the
/// blaster's other fields after), optionally behind a relay's lines.
fn header_section(tagged: bool, relayed: bool) -> Vec<u8> {
    let mut h = Vec::new();
    if relayed {
        for hop in 1..=3 {
            h.extend_from_slice(
                format!(
                    "Received: from relay{hop}.example.test (relay{hop}.example.test [192.0.2.{hop}])\r\n\
                     \tby mx{hop}.example.test (Postfix) with ESMTP id 4Xyz{hop}AbCd\r\n\
                     \tfor <user{hop}@example.test>; Sun, 6 Dec 2026 10:00:0{hop} +0000 (UTC)\r\n"
                )
                .as_bytes(),
            );
        }
    }
    let run = "20261207T021500-1a2b3c";
    let template = if tagged {
        Template::tagged(run, 0x00c0_ffee)
    } else {
        Template::new(run, 0x00c0_ffee)
    };
    template.write_tagged(&mut h, 1_234_567, 1, 1_796_000_000_123_456, &[0xbeef]);
    h.extend_from_slice(
        b"Message-ID: <00000000000001234567.00c0ffee.20261207T021500-1a2b3c@mailstorm.test>\r\n\
          X-Mailstorm-Seq: 00000000000001234567\r\nX-Mailstorm-Sent: 1796000000123456\r\n\
          Date: Mon, 07 Dec 2026 02:15:00 +0000\r\nFrom: <mailstorm@example.test>\r\n\
          To: <undisclosed-recipients@example.test>\r\nSubject: mailstorm load test\r\n\
          MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
    );
    assert!(
        matches!(trace::find(&h), Found::Trace(t) if t.seq == 1_234_567),
        "the bench input must carry a well-formed trace"
    );
    h
}

fn bench_trace(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace_find");
    g.throughput(Throughput::Elements(1));
    for (name, tagged, relayed) in [
        ("blaster", false, false),
        ("blaster_tagged", true, false),
        ("relayed", false, true),
    ] {
        let h = header_section(tagged, relayed);
        g.bench_with_input(BenchmarkId::new("mailstorm", name), &h[..], |b, i| {
            b.iter(|| trace::find(black_box(i)))
        });
    }
    g.finish();
}

fn main() {
    let commands = command_buffer();
    let mut cases = [
        DataCase::new("1MB", 1024 * 1024, 0x9e37_79b9_7f4a_7c15),
        DataCase::new("100KB", 100 * 1024, 0x2545_f491_4f6c_dd1d),
    ];
    preflight(&commands, &mut cases);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    bench_commands(&mut c, &commands);
    bench_data(&mut c, &mut cases);
    bench_replies(&mut c);
    bench_trace(&mut c);
    c.final_summary();
}
