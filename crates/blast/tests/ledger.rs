//! The end-to-end ledger with the blaster sending straight into the sink:
//! the join's figures, two blasters sharing a run id, messages without or
//! with a forged trace header, and the sink's memory caps.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::child::Running;
use common::*;
use mailstorm_blast::config::RcptRange;
use mailstorm_blast::ledger::{join, Source};
use mailstorm_proto::trace::{rcpt_tag, Template};
use mailstorm_sink::ledger::{LedgerList, RunFigures, MAX_RUNS};
use mailstorm_sink::SinkHandle;

fn sink_with_control() -> SinkHandle {
    sink_builder()
        .control("127.0.0.1:0".parse().unwrap())
        .start()
        .expect("sink starts")
}

fn control_url(s: &SinkHandle) -> String {
    format!("http://{}", s.control_addr().unwrap())
}

/// A plain HTTP GET on loopback: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Sends each message in its own transaction on one connection (one
/// recipient each), reading every reply: a minimal SMTP client.
fn send_raw(addr: SocketAddr, messages: &[Vec<u8>]) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let reply = |r: &mut BufReader<TcpStream>, want: &str| loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(want), "wanted {want}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            return;
        }
    };
    reply(&mut r, "220");
    w.write_all(b"EHLO raw.test\r\n").unwrap();
    reply(&mut r, "250");
    for m in messages {
        w.write_all(b"MAIL FROM:<a@x.test>\r\n").unwrap();
        reply(&mut r, "250");
        w.write_all(b"RCPT TO:<b@y.test>\r\n").unwrap();
        reply(&mut r, "250");
        w.write_all(b"DATA\r\n").unwrap();
        reply(&mut r, "354");
        w.write_all(m).unwrap();
        w.write_all(b".\r\n").unwrap();
        reply(&mut r, "250");
    }
    w.write_all(b"QUIT\r\n").unwrap();
    reply(&mut r, "221");
}

fn traced(run: &str, source: u32, seq: u64) -> Vec<u8> {
    let mut m = Vec::new();
    Template::new(run, source).write(&mut m, seq, 1, 1);
    m.extend_from_slice(b"Subject: forged\r\n\r\nbody\r\n");
    m
}

#[test]
fn direct_run_joins_with_nothing_lost_or_duplicated() {
    let sink = sink_with_control();
    let mut cfg = config();
    cfg.messages = Some(2_000);
    cfg.rcpts = RcptRange { min: 1, max: 3 };
    cfg.run_id = Some("direct-1".into());
    cfg.trace_source = 0x11;
    let r = run(cfg.clone(), sink.local_addr());
    let accepted = r.totals.counters.rcpt_delivered;
    assert_eq!(r.totals.counters.accepted, 2_000);
    assert!(accepted > 2_000 && accepted < 6_000, "{accepted}");
    let src = Source::Url(control_url(&sink));
    let j = join(&src, &cfg, accepted, Duration::from_secs(10), |_| {}).unwrap();
    assert!(j.drained, "{j:?}");
    assert_eq!(
        (j.delivered, j.lost, j.duplicates, j.unexpected),
        (accepted, 0, 0, 0)
    );
    assert_eq!(j.e2e.count, 2_000);
    assert!(j.e2e.p50_us > 0 && j.e2e.p99_us < 10_000_000, "{:?}", j.e2e);
    // The histogram round-trips (mergeable) with the same count.
    assert_eq!(j.e2e.histogram().unwrap().len(), 2_000);
    // The same figures over HTTP, and in /metrics.
    let ctl = sink.control_addr().unwrap();
    let (st, body) = get(ctl, "/ledger/direct-1");
    assert_eq!(st, 200);
    let f: RunFigures = serde_json::from_str(&body).unwrap();
    assert_eq!(f.counts.deliveries, accepted);
    assert_eq!(f.sources.len(), 1);
    assert_eq!(get(ctl, "/ledger/nope").0, 404);
    let (_, list) = get(ctl, "/ledger");
    let list: LedgerList = serde_json::from_str(&list).unwrap();
    assert_eq!(list.runs.len(), 1);
    assert_eq!((list.unattributed, list.malformed), (0, 0));
    let (_, metrics) = get(ctl, "/metrics");
    // Every per-run figure of /ledger is in /metrics, with the same value.
    let c = &list.runs[0].counts;
    for (what, v) in [
        ("messages", c.messages),
        ("deliveries", c.deliveries),
        ("unique", c.unique),
        ("duplicates", c.duplicates),
        ("duplicate_messages", c.duplicate_messages),
        ("out_of_order", c.out_of_order),
        ("dropped", c.dropped),
        ("clock_skewed", list.runs[0].clock_skewed),
    ] {
        let line = format!("mailstorm_sink_ledger_{what}_total{{run=\"direct-1\"}} {v}\n");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    assert_eq!((c.deliveries, c.unique), (accepted, accepted));
    // Prometheus's reference parser (installed by scripts/test.sh) reads it.
    let script =
        "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  f = {x.name: x for x in text_string_to_metric_families(sys.stdin.read())}\n\
                  print(sum(s.value for s in f['mailstorm_sink_ledger_deliveries'].samples))";
    let mut py = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    py.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(n, accepted as f64);
}

#[test]
fn two_blasters_sharing_a_run_id_keep_their_own_sequence_spaces() {
    let sink = sink_with_control();
    let mut joined = Vec::new();
    let mut cfgs = Vec::new();
    for source in [0xa, 0xb] {
        let mut cfg = config();
        cfg.messages = Some(500);
        cfg.run_id = Some("shared".into());
        cfg.trace_source = source;
        let r = run(cfg.clone(), sink.local_addr());
        cfgs.push((cfg, r.totals.counters.rcpt_delivered));
    }
    let src = Source::Url(control_url(&sink));
    for (cfg, accepted) in &cfgs {
        let j = join(&src, cfg, *accepted, Duration::from_secs(10), |_| {}).unwrap();
        assert_eq!((j.delivered, j.lost, j.duplicates), (500, 0, 0), "{j:?}");
        joined.push(j);
    }
    let f = sink.ledger().run("shared").unwrap();
    assert_eq!(f.sources.len(), 2);
    assert_eq!(
        f.counts.unique, 1_000,
        "same sequence numbers, no collision"
    );
    assert_eq!(f.counts.duplicates, 0);
    assert_eq!(f.e2e.count, 1_000);
}

#[test]
fn untraced_and_forged_headers_are_counted_never_trusted() {
    let sink = sink_with_control();
    let mut msgs = vec![
        b"Subject: no trace\r\n\r\nbody\r\n".to_vec(),
        b"X-Mailstorm-Trace: v1 r=x s=zz q=1 n=1 t=1\r\n\r\n".to_vec(),
    ];
    // Two trace headers: one of them is not the blaster's; neither counts.
    let mut two = Vec::new();
    Template::new("x", 1).write(&mut two, 2, 1, 1);
    two.extend_from_slice(&traced("x", 1, 1));
    msgs.push(two);
    // More runs than the cap, each spraying sequence numbers far apart.
    for i in 0..(MAX_RUNS as u64 + 20) {
        msgs.push(traced(&format!("forged{i}"), 7, i.wrapping_mul(1 << 40)));
        msgs.push(traced(&format!("forged{i}"), 7, u64::MAX / 2 - i));
    }
    send_raw(sink.local_addr(), &msgs);
    let l = sink.ledger().list();
    assert_eq!(l.unattributed, 1);
    assert_eq!(l.malformed, 2);
    assert_eq!(l.runs.len(), MAX_RUNS);
    assert_eq!(l.evicted_runs, 20);
    assert!(l.pages <= 2 * MAX_RUNS, "{}", l.pages);
    assert_eq!(l.bytes, l.pages * 4096);
    // Every accepted message was looked at exactly once.
    let s = sink.stats();
    assert_eq!(s.messages_accepted, msgs.len() as u64);
}

#[test]
fn cli_ledger_flag_reports_and_thresholds_pass() {
    let sink = sink_with_control();
    let report = std::env::temp_dir().join(format!("ledger-{}.json", std::process::id()));
    let target = sink.local_addr().to_string();
    let url = control_url(&sink);
    let p = report.to_str().unwrap();
    let args = [
        "--target",
        &target,
        "--ledger",
        &url,
        "--run-id",
        "cli-run",
        "--drain",
        "10s",
        "-n",
        "300",
        "-c",
        "4",
        "-t",
        "1",
        "--no-pin",
        "-q",
        "--report",
        p,
        "--threshold",
        "lost==0,duplicates==0,e2e_p99<5s",
    ];
    let (code, out, err) = Running::start(&args, &[]).finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("lost 0 duplicates 0"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    std::fs::remove_file(&report).ok();
    let l = &j["ledger"];
    assert_eq!(l["run"], "cli-run");
    assert_eq!(l["lost"], 0);
    assert_eq!(l["delivered"], 300);
    assert_eq!(l["e2e"]["count"], 300);
    // A threshold on a ledger figure fails when the ledger says so.
    let mut bad = args;
    bad[19] = "delivered>300";
    bad[5] = "cli-run-2";
    let (code, _, err) = Running::start(&bad, &[]).finish();
    assert_eq!(code, Some(1), "{err}");
    // --no-trace: nothing to join on.
    let (code, _, err) = Running::start(
        &[
            "--target",
            &target,
            "--ledger",
            &url,
            "--no-trace",
            "-n",
            "1",
        ],
        &[],
    )
    .finish();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--no-trace"), "{err}");
}

#[test]
fn embedded_runs_join_automatically_and_no_trace_skips_it() {
    let (code, out, err) =
        Running::start(&["-n", "200", "-t", "1", "--no-pin", "-q"], &[]).finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ledger (embedded): accepted 200 delivered 200 lost 0"),
        "{out}"
    );
    let (code, out, err) = Running::start(
        &["-n", "50", "-t", "1", "--no-pin", "-q", "--no-trace"],
        &[],
    )
    .finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("ledger"), "{out}");
}

/// One transaction on a fresh connection: `rcpts` as the envelope, `msg`
/// as the data.
fn send_to(addr: SocketAddr, rcpts: &[&str], msg: &[u8]) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let reply = |r: &mut BufReader<TcpStream>, want: &str| loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(want), "wanted {want}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            return;
        }
    };
    reply(&mut r, "220");
    w.write_all(b"EHLO relay.test\r\nMAIL FROM:<a@x.test>\r\n")
        .unwrap();
    reply(&mut r, "250");
    reply(&mut r, "250");
    for rcpt in rcpts {
        w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .unwrap();
        reply(&mut r, "250");
    }
    w.write_all(b"DATA\r\n").unwrap();
    reply(&mut r, "354");
    w.write_all(msg).unwrap();
    w.write_all(b".\r\nQUIT\r\n").unwrap();
    reply(&mut r, "250");
    reply(&mut r, "221");
}

/// The trace names each recipient (`h=`): a relay that delivers one
/// recipient twice and loses another is reported as exactly that, where
/// counting deliveries per message would see all three as delivered.
#[test]
fn a_duplicate_recipient_does_not_hide_a_lost_one() {
    let sink = sink_with_control();
    let addrs = ["a@y.test", "b@y.test", "c@y.test"];
    let tags: Vec<u16> = addrs.iter().map(|a| rcpt_tag(a)).collect();
    let mut msg = Vec::new();
    Template::tagged("tags-1", 0x22).write_tagged(&mut msg, 0, 3, 1, &tags);
    msg.extend_from_slice(b"Subject: three recipients\r\n\r\nbody\r\n");
    // The relay delivers a and b, then a again (under the domain in upper
    // case: tags ignore case); c never comes.
    send_to(sink.local_addr(), &addrs[..2], &msg);
    send_to(sink.local_addr(), &["a@Y.TEST"], &msg);
    let f = sink.ledger().run("tags-1").unwrap();
    assert_eq!(
        (f.counts.deliveries, f.counts.unique, f.counts.duplicates),
        (3, 2, 1)
    );
    let mut cfg = config();
    cfg.run_id = Some("tags-1".into());
    cfg.trace_source = 0x22;
    let j = join(
        &Source::Url(control_url(&sink)),
        &cfg,
        3,
        Duration::from_millis(300),
        |_| {},
    )
    .unwrap();
    assert_eq!((j.delivered, j.lost, j.duplicates), (2, 1, 1), "{j:?}");
    // A rewritten address (no tag matches) still counts: it takes c's
    // place, so nothing is lost.
    send_to(sink.local_addr(), &["rewritten@z.test"], &msg);
    let f = sink.ledger().run("tags-1").unwrap();
    assert_eq!((f.counts.unique, f.counts.duplicates), (3, 1));
}

/// The blaster names its recipients in every trace when messages have at
/// most 8, and the sink records them per recipient: a run with several
/// recipients per message joins with nothing lost or duplicated.
#[test]
fn blaster_traces_name_their_recipients() {
    let sink = sink_with_control();
    let mut cfg = config();
    cfg.messages = Some(500);
    cfg.rcpts = RcptRange { min: 2, max: 8 };
    // Few users: without distinct recipients per message some would
    // repeat, and a relay delivers a repeated recipient once.
    cfg.users = 12;
    cfg.run_id = Some("tags-2".into());
    cfg.trace_source = 0x33;
    let r = run(cfg.clone(), sink.local_addr());
    let accepted = r.totals.counters.rcpt_delivered;
    assert_eq!(r.totals.counters.accepted, 500);
    let f = sink.ledger().run("tags-2").unwrap();
    assert_eq!((f.counts.unique, f.counts.duplicates), (accepted, 0));
    let j = join(
        &Source::Url(control_url(&sink)),
        &cfg,
        accepted,
        Duration::from_secs(10),
        |_| {},
    )
    .unwrap();
    assert_eq!((j.lost, j.duplicates, j.unexpected), (0, 0, 0), "{j:?}");
}
