//! The blaster against hostile servers: silent, garbage, endless
//! continuation lines, a close in the middle of a reply, a reply trickled
//! byte by byte. Each run must end in bounded time and memory, with the
//! right error kind counted at the right stage.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use mailstorm_blast::config::Config;
use mailstorm_blast::stats::{Stage, Transport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// RSS measurements must not see another test's allocations.
static SERIAL: Mutex<()> = Mutex::new(());

type Behaviour = fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A loopback server running `behaviour` on every connection, on its own
/// thread and runtime; it lives until the test process ends.
fn hostile(behaviour: Behaviour) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(behaviour(s));
            }
        });
    });
    addr
}

/// Reads and drops whatever the client sends until it closes (bounded).
async fn drain(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, s.read(&mut buf)).await {
        if n == 0 {
            return;
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Three messages, one connection at a time, short reply deadlines.
fn hostile_config() -> Config {
    let mut cfg = Config {
        threads: 1,
        concurrency: 1,
        messages: Some(3),
        duration: Some(Duration::from_secs(20)),
        grace: Duration::from_millis(500),
        ..config()
    };
    cfg.timeouts.banner = Duration::from_millis(400);
    cfg.timeouts.ehlo = Duration::from_millis(400);
    cfg
}

struct Outcome {
    result: mailstorm_blast::RunResult,
    took: Duration,
    rss_growth_kib: u64,
}

fn blast(addr: SocketAddr, cfg: Config) -> Outcome {
    let before = rss_kib();
    let t0 = Instant::now();
    let result = run(cfg, addr);
    Outcome {
        took: t0.elapsed(),
        rss_growth_kib: rss_kib().saturating_sub(before),
        result,
    }
}

/// Asserts every message failed with `kind` at `stage` and the error text
/// was kept.
fn assert_fault(o: &Outcome, kind: Transport, stage: Stage) {
    let t = &o.result.totals;
    assert_eq!(t.counters.attempted, 3, "{:?}", t.counters);
    assert_eq!(t.counters.failed, 3, "{:?}", t.counters);
    let faults = t.faults_by_count();
    let f = faults
        .iter()
        .find(|f| f.fault.kind == kind && f.fault.stage == stage)
        .unwrap_or_else(|| panic!("no {}@{} in {faults:?}", kind.name(), stage.name()));
    assert_eq!(f.count, 3, "{faults:?}");
    assert!(!f.first_text.is_empty(), "{faults:?}");
    assert_eq!(t.transport_count(kind), 3);
}

#[test]
fn silent_server_times_out_at_the_banner() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let addr = hostile(|mut s| {
        Box::pin(async move {
            drain(&mut s).await;
        })
    });
    let o = blast(addr, hostile_config());
    assert_fault(&o, Transport::ReadTimeout, Stage::Banner);
    assert!(o.took < Duration::from_secs(5), "{:?}", o.took);
}

#[test]
fn garbage_is_a_malformed_reply_at_the_banner() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let addr = hostile(|mut s| {
        Box::pin(async move {
            let _ = s.write_all(b"\x00\xffHELLO this is not smtp\r\n").await;
            drain(&mut s).await;
        })
    });
    let o = blast(addr, hostile_config());
    assert_fault(&o, Transport::MalformedReply, Stage::Banner);
    assert!(o.took < Duration::from_secs(5), "{:?}", o.took);
}

#[test]
fn endless_continuation_lines_are_cut_at_the_reply_cap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let addr = hostile(|mut s| {
        Box::pin(async move {
            let line = format!("220-{}\r\n", "x".repeat(70));
            let batch = line.repeat(64 * 1024 / line.len());
            // Bounded: 256 MiB per connection at most, or until the client
            // goes away.
            for _ in 0..4096 {
                if s.write_all(batch.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
    });
    let mut cfg = hostile_config();
    // Plenty of time to read hundreds of megabytes if nothing capped it.
    cfg.timeouts.banner = Duration::from_secs(3);
    let o = blast(addr, cfg);
    assert_fault(&o, Transport::MalformedReply, Stage::Banner);
    let first = &o.result.totals.faults_by_count()[0].first_text;
    assert!(first.contains("lines"), "{first}");
    // The reply buffer is capped at 64 KiB; allow the allocator slack.
    assert!(
        o.rss_growth_kib < 32 * 1024,
        "RSS grew {} KiB",
        o.rss_growth_kib
    );
    assert!(o.took < Duration::from_secs(5), "{:?}", o.took);
}

#[test]
fn close_in_the_middle_of_the_ehlo_reply() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let addr = hostile(|s| {
        Box::pin(async move {
            let mut s = BufReader::new(s);
            let _ = s.get_mut().write_all(b"220 hostile ESMTP\r\n").await;
            let mut line = String::new();
            let _ = s.read_line(&mut line).await;
            // Half a reply, then gone.
            let _ = s.get_mut().write_all(b"250-hostile\r\n250-PIPEL").await;
        })
    });
    let o = blast(addr, hostile_config());
    assert_fault(&o, Transport::UnexpectedClose, Stage::Ehlo);
    assert!(o.took < Duration::from_secs(5), "{:?}", o.took);
}

#[test]
fn a_trickled_reply_is_bounded_by_its_deadline_not_reset_per_byte() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let addr = hostile(|mut s| {
        Box::pin(async move {
            // One byte every 5 ms of a reply that never ends: each byte
            // would reset a per-read timer; the deadline is per reply.
            let line = b"220-trickle\r\n";
            for i in 0..4000 {
                if s.write_all(&line[i % line.len()..][..1]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });
    let o = blast(addr, hostile_config());
    assert_fault(&o, Transport::ReadTimeout, Stage::Banner);
    // Three deadlines of 400 ms plus reconnect pauses.
    assert!(o.took < Duration::from_secs(4), "{:?}", o.took);
    assert!(
        o.rss_growth_kib < 16 * 1024,
        "RSS grew {} KiB",
        o.rss_growth_kib
    );
}
