//! Runs that must not be lost or misreported: the grace cut-off with some
//! workers finished and others stuck, the offered load capped by the
//! connections, and open-loop schedules at rates far beyond what a shard
//! can send.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mailstorm_blast::config::{Config, Mode};
use mailstorm_blast::stats::Transport;
use mailstorm_blast::BlastError;
use mailstorm_sink::{Decision, StageContext};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One test at a time: the RSS measurement must not see another test's
/// allocations (an in-process sink included).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A minimal SMTP server (no extensions) that never answers the end of
/// data of message `stuck_seq`: that message's worker hangs until the
/// grace cut-off, while the others finish.
fn stalling_server(stuck_seq: u64) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let marker = stuck_seq.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, marker.clone()));
            }
        });
    });
    addr
}

async fn serve(s: tokio::net::TcpStream, marker: String) -> std::io::Result<()> {
    let mut s = BufReader::new(s);
    s.get_mut().write_all(b"220 stalling ESMTP\r\n").await?;
    let mut line = String::new();
    let (mut in_data, mut stuck) = (false, false);
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            // The sequence number is zero-padded.
            stuck |= line
                .strip_prefix("X-Mailstorm-Seq: ")
                .is_some_and(|n| n.trim().trim_start_matches('0') == marker);
            if line == ".\r\n" {
                in_data = false;
                if stuck {
                    // Never answer; hold the connection until the client
                    // goes away.
                    while s.read_line(&mut line).await? > 0 {}
                    return Ok(());
                }
                s.get_mut().write_all(b"250 2.0.0 ok\r\n").await?;
            }
            continue;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 stalling\r\n",
            "DATA" => {
                in_data = true;
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                s.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 2.0.0 ok\r\n",
        };
        s.get_mut().write_all(reply).await?;
    }
}

#[test]
fn cutoff_after_some_workers_finished_keeps_the_run() {
    let _serial = serial();
    // Worker 0 sends message 0 and ends (the budget is spent); worker 1's
    // message 1 never gets its final reply, so the grace cut-off comes
    // while worker 0 is already joined. On main this panicked with
    // "JoinHandle polled after completion" and the run was lost.
    let addr = stalling_server(1);
    let cfg = Config {
        threads: 1,
        concurrency: 2,
        messages: Some(2),
        duration: Some(Duration::from_secs(1)),
        grace: Duration::from_millis(300),
        ..config()
    };
    let t0 = Instant::now();
    let r = try_run(cfg, addr, None).expect("the run is not lost");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(r.internal_error, None);
    let c = r.totals.counters;
    assert_eq!((c.attempted, c.accepted, c.failed), (2, 1, 1), "{c:?}");
    assert_eq!(r.totals.transport_count(Transport::Aborted), 1);
}

#[test]
fn sends_the_connections_could_not_start_are_counted_per_interval() {
    let _serial = serial();
    // 20 ms per message and 5 connections: about 250 msg/s of capacity
    // under a schedule of 1000/s. Three quarters of the load is never
    // offered to the server; the counters say so.
    let hook = |ctx: &StageContext<'_>| match ctx.stage {
        mailstorm_sink::Stage::DataEnd => Decision::Delay(Duration::from_millis(20)),
        _ => Decision::Accept,
    };
    let sink = sink_builder().hook(Arc::new(hook)).start().unwrap();
    let cfg = Config {
        threads: 1,
        rate: Some(1000.0),
        concurrency: 5,
        duration: Some(Duration::from_secs(2)),
        interval: Duration::from_millis(500),
        grace: Duration::from_millis(500),
        pipelining: Mode::Off,
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let c = r.totals.counters;
    assert!((1990..=2000).contains(&c.offered), "{c:?}");
    assert!(c.late > 0, "{c:?}");
    assert_eq!(c.attempted + c.not_started, c.offered, "{c:?}");
    assert!(c.not_started_ratio() > 0.5, "{c:?}");
    // Every interval of the run carries its share.
    let rows = &r.rows;
    assert!(rows.len() >= 4, "{} rows", rows.len());
    let sum = |f: fn(&mailstorm_blast::Row) -> u64| rows.iter().map(f).sum::<u64>();
    assert_eq!(sum(|row| row.counters.offered), c.offered);
    assert_eq!(sum(|row| row.counters.not_started), c.not_started);
    // FIFO: the sends left over are the latest ones; every interval after
    // the first has some.
    assert!(
        rows[1..4].iter().all(|row| row.counters.not_started > 0),
        "{:?}",
        rows.iter().map(|r| r.counters).collect::<Vec<_>>()
    );
}

#[test]
fn closed_loop_offered_is_what_started() {
    let _serial = serial();
    let sink = sink();
    let cfg = Config {
        messages: Some(200),
        ..config()
    };
    let c = run(cfg, sink.local_addr()).totals.counters;
    assert_eq!((c.offered, c.attempted, c.not_started), (200, 200, 0));
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_huge_rate_is_scheduled_lazily_and_honours_the_duration() {
    let _serial = serial();
    // Ten million sends in one second: the schedule used to be a queue of
    // 16 bytes per send (160 MB here); now memory does not grow with it.
    let sink = sink();
    let cfg = Config {
        threads: 1,
        rate: Some(1e7),
        concurrency: 4,
        duration: Some(Duration::from_secs(1)),
        grace: Duration::from_millis(500),
        ..config()
    };
    let before = rss_kib();
    let t0 = Instant::now();
    let r = run(cfg, sink.local_addr());
    let took = t0.elapsed();
    let grown = rss_kib().saturating_sub(before);
    let c = r.totals.counters;
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(grown < 48 * 1024, "RSS grew {grown} KiB");
    assert!(c.offered >= 9_900_000, "{c:?}");
    assert_eq!(c.attempted + c.not_started, c.offered, "{c:?}");
}

#[test]
fn a_rate_one_shard_cannot_schedule_is_refused() {
    let _serial = serial();
    let cfg = Config {
        threads: 1,
        rate: Some(1e9),
        duration: Some(Duration::from_secs(1)),
        ..config()
    };
    let addr = "127.0.0.1:9".parse().unwrap();
    let t0 = Instant::now();
    match try_run(cfg, addr, None) {
        Err(BlastError::Config(m)) => {
            assert!(m.contains("rate 1000000000"), "{m}");
            assert!(m.contains("--threads"), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_tls_failure_is_counted_at_its_stage_with_the_reason() {
    let _serial = serial();
    let sink = sink_builder()
        .tls(true)
        .tls_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let cfg = Config {
        starttls: mailstorm_blast::config::StartTls::Required,
        messages: Some(6),
        concurrency: 2,
        ..config()
    };
    // A certificate the sink does not have: every handshake fails.
    let other = mailstorm_sink::tls::generate_self_signed("localhost").unwrap();
    let r = run_with(cfg, sink.local_addr(), Some(other.cert_pem.into_bytes()));
    let faults = r.totals.faults_by_count();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let f = &faults[0];
    assert_eq!(f.fault.to_string(), "tls_failure@tls");
    assert_eq!(f.count, 6);
    assert!(f.first_text.contains("certificate"), "{}", f.first_text);
}

#[test]
fn a_run_ending_on_an_interval_boundary_files_its_sends_where_they_came_due() {
    let _serial = serial();
    let sink = sink();
    // 50 msgs/s and 51 messages: sends 0..49 come due in [0 s, 1 s), the
    // last one at exactly 1.000 s, the start of the second interval. The
    // run ends a moment later, before or after the shard's own tick.
    for threads in [1, 2] {
        let cfg = Config {
            threads,
            rate: Some(50.0),
            messages: Some(51),
            concurrency: 2,
            interval: Duration::from_secs(1),
            duration: Some(Duration::from_secs(10)),
            ..config()
        };
        let t0 = Instant::now();
        let r = run(cfg, sink.local_addr());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let offered: Vec<u64> = r.rows.iter().map(|row| row.counters.offered).collect();
        assert_eq!(offered, [50, 1], "{threads} thread(s)");
        let attempted: u64 = r.rows.iter().map(|row| row.counters.attempted).sum();
        assert_eq!(attempted, 51);
        // Rows closed at the end of the run still know how many
        // connections were open: none, once every session ended.
        let open: Vec<Option<u64>> = r.rows.iter().map(|row| row.open_connections).collect();
        assert!(open.iter().all(Option::is_some), "{open:?}");
        assert_eq!(open.last(), Some(&Some(0)), "{open:?}");
    }
}
