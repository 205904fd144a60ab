//! Fault plans end to end: a sink with the engine as its hook and real SMTP
//! sessions over TCP.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use common::*;
use mailstorm_sink::plan::{Engine, Plan};
use mailstorm_sink::{Sink, SinkHandle};

fn plan_sink(threads: usize, yaml: &str) -> (SinkHandle, Arc<Engine>) {
    let engine = Arc::new(Engine::new());
    engine.load(Plan::from_yaml_str(yaml, "test").unwrap());
    let sink = start(Sink::builder().threads(threads).hook(engine.clone()));
    (sink, engine)
}

const DET_PLAN: &str = r#"
seed: 4242
rules:
  - {stage: rcpt, match: {recipient_domain: seq.test}, sequence: [451, 250]}
  - {stage: rcpt, key: rcpt, probability: 0.3, action: {reply: {code: 452, enhanced: 4.2.2, text: over quota}}}
  - {stage: data_end, key: triplet, probability: 0.25, action: {reply: {code: 554, enhanced: 5.7.1}}}
"#;

/// One envelope on a fresh connection: (RCPT code, end-of-data code or 0).
fn envelope(addr: std::net::SocketAddr, k: usize) -> (u16, u16) {
    let mut c = Client::ehlo(addr);
    c.cmd(&format!("MAIL FROM:<s{}@x.test>", k % 3))
        .expect(250, "2.1.0");
    let domain = if k.is_multiple_of(4) {
        "seq.test"
    } else {
        "y.test"
    };
    let r = c.cmd(&format!("RCPT TO:<u{k}@{domain}>"));
    let end = if r.code == 250 {
        assert_eq!(c.cmd("DATA").code, 354);
        c.send(format!("Subject: {k}\r\n\r\nbody\r\n.\r\n").as_bytes());
        c.reply().code
    } else {
        c.cmd("RSET");
        0
    };
    c.cmd("QUIT");
    (r.code, end)
}

/// Three rounds of 40 envelopes (each key retried every round), spread over
/// `clients` client threads.
/// (round, key) → (RCPT code, end-of-data code).
type Replies = BTreeMap<(usize, usize), (u16, u16)>;

fn run_rounds(threads: usize, clients: usize) -> (Replies, u64) {
    let (sink, _engine) = plan_sink(threads, DET_PLAN);
    let addr = sink.local_addr();
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut out = BTreeMap::new();
                for round in 0..3 {
                    for k in (0..40).filter(|k| (k + round) % clients == t) {
                        out.insert((round, k), envelope(addr, k));
                    }
                    // Retries of a key never overtake its previous attempt.
                    barrier.wait();
                }
                out
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let accepted = sink.shutdown().messages_accepted;
    (all, accepted)
}

#[test]
fn same_decisions_across_runs_and_thread_counts() {
    let (a, acc_a) = run_rounds(1, 1);
    let (b, acc_b) = run_rounds(1, 1);
    let (c, acc_c) = run_rounds(2, 2);
    assert_eq!(a, b, "two runs");
    assert_eq!(a, c, "--threads 1 vs --threads 2");
    assert_eq!((acc_a, acc_b), (acc_c, acc_c));
    let count = |code: u16| a.values().filter(|(r, e)| *r == code || *e == code).count();
    // The plan did inject each fault, and the sequence rule let retries by.
    assert!(
        count(451) == 10,
        "sequence: first attempt of each seq.test key"
    );
    assert!(count(452) > 0 && count(554) > 0, "{a:?}");
    assert!(a
        .iter()
        .any(|((round, k), (r, _))| *round == 1 && k % 4 == 0 && *r == 250));
    assert_eq!(
        acc_a as usize,
        a.values().filter(|(_, e)| *e == 250).count()
    );
}

#[test]
fn greeting_refusal_closes() {
    let (sink, engine) = plan_sink(
        1,
        "rules:\n  - {stage: connect, action: {reply: {code: 421, enhanced: 4.3.2, text: outage}}}\n",
    );
    let mut c = Client::connect_raw(sink.local_addr());
    c.reply().expect(421, "4.3.2");
    assert!(c.drain_to_eof().is_empty());
    engine.unload();
    Client::connect(sink.local_addr())
        .cmd("QUIT")
        .expect(221, "2.0.0");
}

/// Plans are swapped continuously while clients send: every message the
/// clients saw accepted is counted by the sink, and nothing else.
#[test]
fn reload_under_load_loses_no_message() {
    let (sink, engine) = plan_sink(2, "rules: []\n");
    let addr = sink.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (engine, done, swaps) = (engine.clone(), done.clone(), swaps.clone());
        std::thread::spawn(move || {
            let plans = [
                "seed: 1\nrules:\n  - {stage: rcpt, probability: 0.5, action: {reply: {code: 451}}}\n",
                "rules: []\n",
                "seed: 2\nrules:\n  - {stage: data_end, key: triplet, every: 2, action: {reply: {code: 452}}}\n",
            ];
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let body = plans[i % plans.len()].as_bytes();
                engine.load_bytes(body, None, "swap").unwrap();
                i += 1;
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    let clients: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                let mut c = Client::ehlo(addr);
                for n in 0..150 {
                    c.cmd(&format!("MAIL FROM:<c{t}@x.test>"))
                        .expect(250, "2.1.0");
                    if c.cmd(&format!("RCPT TO:<m{n}@y.test>")).code != 250 {
                        refused += 1;
                        c.cmd("RSET").expect(250, "2.0.0");
                        continue;
                    }
                    assert_eq!(c.cmd("DATA").code, 354);
                    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
                    match c.reply().code {
                        250 => ok += 1,
                        _ => refused += 1,
                    }
                }
                c.cmd("QUIT");
                (ok, refused)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for h in clients {
        let (o, r) = h.join().unwrap();
        ok += o;
        refused += r;
    }
    done.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let stats = sink.shutdown();
    assert_eq!(ok + refused, 450);
    assert_eq!(
        stats.messages_accepted, ok,
        "accepted counts agree with the client"
    );
    assert!(
        refused > 0 && ok > 0,
        "faults were injected ({refused}) and mail got through ({ok})"
    );
    assert!(swaps.load(Ordering::Relaxed) > 10);
}

fn sink_with(
    yaml: &str,
    f: impl FnOnce(mailstorm_sink::SinkBuilder) -> mailstorm_sink::SinkBuilder,
) -> (SinkHandle, Arc<Engine>) {
    let engine = Arc::new(Engine::new());
    engine.load(Plan::from_yaml_str(yaml, "test").unwrap());
    let sink = start(f(Sink::builder().threads(1)).fault_engine(engine.clone()));
    (sink, engine)
}

#[test]
fn reply_421_mid_session_closes_and_referee_counts_violations() {
    let (sink, engine) = sink_with(
        "rules:\n  - {stage: rcpt, match: {recipient: 'bye@*'}, action: {reply: {code: 421, enhanced: 4.3.2, text: bye}}}\n",
        |b| b,
    );
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<bye@y.test>").expect(421, "4.3.2");
    // A bad client keeps talking after 421.
    c.send(b"RCPT TO:<again@y.test>\r\nQUIT\r\n");
    assert!(c.drain_to_eof().is_empty(), "closed after 421");
    drop(c);
    wait_for("session reported", || {
        engine.clients_json()["clients"]["client.test"]["commands_after_421"] == 1
    });
    let j = engine.clients_json();
    assert_eq!(j["clients"]["client.test"]["quit_after_421"], 1, "{j}");
    assert_eq!(j["clients"]["client.test"]["replies_421"], 1);
    // The client's next connection's delay after the 421 is recorded (at
    // its greeting: that is when the sink knows whose connection it is).
    Client::ehlo(sink.local_addr()).cmd("QUIT");
    wait_for("reconnect recorded", || {
        engine.clients_json()["reconnect_after_421_ms"]["count"] == 1
    });
}

#[test]
fn delay_then_reply_and_delayed_greeting() {
    let (sink, _e) = sink_with(
        "rules:\n  - {stage: connect, action: {delay: {fixed: 150ms}}}\n  - {stage: mail, action: {delay: {fixed: 150ms}, reply: {code: 451, enhanced: 4.7.0, text: later}}}\n",
        |b| b,
    );
    let t = std::time::Instant::now();
    let mut c = Client::ehlo(sink.local_addr());
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    let t = std::time::Instant::now();
    c.cmd("MAIL FROM:<a@x.test>").expect(451, "4.7.0");
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    c.cmd("NOOP").expect(250, "2.0.0");
}

#[test]
fn disconnect_mid_data() {
    let (sink, _e) = sink_with(
        "rules:\n  - {stage: data, action: {disconnect: {mode: rst, after_bytes: 100}}}\n  - {stage: rcpt, match: {recipient: 'fin@*'}, action: {disconnect: {}}}\n",
        |b| b,
    );
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<b@y.test>").expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&[b'x'; 50]);
    // More than 100 octets: the connection drops before the final dot.
    let _ = std::io::Write::write_all(&mut c.stream, &[b'y'; 200]);
    let _ = std::io::Write::write_all(&mut c.stream, b"\r\n.\r\n");
    assert!(c.drain_to_eof().is_empty());
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    c.send(b"RCPT TO:<fin@y.test>\r\n");
    assert!(c.drain_to_eof().is_empty(), "closed without a reply");
    assert_eq!(sink.shutdown().messages_accepted, 0);
}

#[test]
fn stall_split_throttle_and_idle_close() {
    let (sink, _e) = sink_with(
        r#"
rules:
  - {stage: ehlo, action: {split_reply: {fragment_bytes: 7, gap: 1ms}}}
  - {stage: mail, action: {stall: {duration: 0.2s}}}
  - {stage: rset, action: {throttle: {bytes_per_sec: 400}}}
  - {stage: quit, action: {reply: {code: 250, text: not yet}}}
  - {stage: data_end, action: {idle_close: {after: 0.3s, text: idle too long}}}
"#,
        |b| b,
    );
    let mut c = Client::ehlo(sink.local_addr()); // fragmented EHLO reply parses fine
    let t = std::time::Instant::now();
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    // Stalled: the next command waits.
    c.cmd("RSET").expect(250, "2.0.0");
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
    // Throttled at 400 B/s: a 14-byte reply to each NOOP takes ~35 ms.
    let t = std::time::Instant::now();
    for _ in 0..6 {
        c.cmd("NOOP").expect(250, "2.0.0");
    }
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(180),
        "{:?}",
        t.elapsed()
    );
    c.send_message("a@x.test", &["b@y.test"], "Subject: x\r\n\r\nhi")
        .expect(250, "2.0.0");
    // Idle after the message: an unprompted 421 and close.
    let r = c.reply();
    assert_eq!((r.code, r.text().as_str()), (421, "4.4.2 idle too long"));
    assert!(c.drain_to_eof().is_empty());
}

#[test]
fn header_rules_work_in_discard_mode() {
    let (sink, engine) = sink_with(
        "rules:\n  - {stage: data_end, match: {header: {name: X-Spam-Flag, regex: '(?i)yes'}}, action: {reply: {code: 554, enhanced: 5.7.1, text: spam}}}\n",
        |b| b.keep(0),
    );
    assert!(engine.wants_headers());
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message(
        "a@x.test",
        &["b@y.test"],
        "X-Spam-Flag: YES\r\nSubject: x\r\n\r\nhi",
    )
    .expect(554, "5.7.1");
    c.send_message(
        "a@x.test",
        &["b@y.test"],
        "Subject: x\r\n\r\nX-Spam-Flag: YES",
    )
    .expect(250, "2.0.0");
    // BDAT too.
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<b@y.test>").expect(250, "2.1.5");
    let body = b"X-Spam-Flag: yes\r\n\r\nhi\r\n";
    c.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
    c.send(body);
    c.reply().expect(554, "5.7.1");
    let s = sink.shutdown();
    assert_eq!(s.messages_accepted, 1);
}

#[test]
fn control_api_plan_and_clients() {
    let events =
        std::env::temp_dir().join(format!("mailstorm-events-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&events);
    let sink = start(
        Sink::builder()
            .threads(2)
            .control("127.0.0.1:0".parse().unwrap())
            .fault_engine(Arc::new(Engine::new())),
    );
    sink.fault_engine()
        .unwrap()
        .set_events_file(&events)
        .unwrap();
    let ctl = sink.control_addr().unwrap();
    let http = |method: &str, path: &str, body: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(ctl).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        (
            code,
            out.split_once("\r\n\r\n")
                .map(|x| x.1.to_string())
                .unwrap_or_default(),
        )
    };
    let (code, body) = http(
        "PUT",
        "/plan",
        "rules:\n  - {stage: rcpt, action: {reply: {code: 999}}}\n",
    );
    assert_eq!(code, 400);
    assert!(
        body.contains("PUT /plan:2:") && body.contains("200..=599"),
        "{body}"
    );
    let (code, _) = http(
        "PUT",
        "/plan",
        r#"{"seed": 1, "rules": [{"stage": "rcpt", "first": 1, "key": "rcpt", "action": {"reply": {"code": 451, "enhanced": "4.7.1"}}}]}"#,
    );
    assert_eq!(code, 204);
    let (_, yaml) = http("GET", "/plan", "");
    assert!(yaml.contains("first: 1"), "{yaml}");
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<b@y.test>").expect(451, "4.7.1");
    c.cmd("RCPT TO:<b@y.test>").expect(250, "2.1.5");
    // Pipelined: both commands in one write.
    c.send(b"RSET\r\nNOOP\r\n");
    c.reply();
    c.reply();
    c.cmd("QUIT");
    drop(c);
    wait_for("session end", || {
        let (_, j) = http("GET", "/clients", "");
        j.contains("\"sessions_pipelined\":1")
    });
    let (_, text) = http("GET", "/clients", "");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["retry_interval_ms_by_code"]["451"]["count"], 1, "{j}");
    assert_eq!(j["clients"]["client.test"]["max_concurrent"], 1);
    assert_eq!(j["clients"]["client.test"]["ips"][0], "127.0.0.1");
    // The JSON is the typed report: it reads back as the same struct.
    let typed: mailstorm_sink::plan::RefereeReport = serde_json::from_str(&text).unwrap();
    assert_eq!(typed, sink.fault_engine().unwrap().referee_report());
    let client = &typed.clients["client.test"];
    assert_eq!((client.retries, client.max_concurrent), (1, 1));
    assert_eq!(typed.retry_interval_ms_by_code[&451].count, 1);
    let (_, m) = http("GET", "/metrics", "");
    assert!(
        m.contains("mailstorm_sink_client_retries_total{client=\"client.test\"} 1"),
        "{m}"
    );
    let ev = std::fs::read_to_string(&events).unwrap();
    let line: serde_json::Value = serde_json::from_str(ev.lines().next().unwrap()).unwrap();
    assert_eq!(line["stage"], "rcpt");
    assert_eq!(
        (&line["client"], &line["ip"]),
        (&"client.test".into(), &"127.0.0.1".into())
    );
    assert_eq!(line["key"], "rcpt:b@y.test");
    assert_eq!(line["attempt"], 1);
    assert_eq!(line["outcome"], "reply 451 4.7.1");
    assert_eq!(ev.lines().count(), 1);
    let _ = std::fs::remove_file(&events);
}

#[test]
fn plan_file_in_config_and_failed_reload_keeps_old_plan() {
    let dir = std::env::temp_dir().join(format!("mailstorm-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "rules:\n  - {stage: mail, action: {reply: {code: 451}}}\n",
    )
    .unwrap();
    let sink = start(Sink::builder().plan_file(&file));
    Client::ehlo(sink.local_addr())
        .cmd("MAIL FROM:<a@x>")
        .expect(451, "4.3.0");
    std::fs::write(
        &file,
        "rules:\n  - {stage: mail, action: {reply: {code: 45}}}\n",
    )
    .unwrap();
    let err = sink.reload(sink.config()).unwrap_err().to_string();
    assert!(
        err.contains("p.yaml:2:") && err.contains("reply code 45"),
        "{err}"
    );
    Client::ehlo(sink.local_addr())
        .cmd("MAIL FROM:<a@x>")
        .expect(451, "4.3.0");
    std::fs::write(&file, "rules: []\n").unwrap();
    sink.reload(sink.config()).unwrap();
    Client::ehlo(sink.local_addr())
        .cmd("MAIL FROM:<a@x>")
        .expect(250, "2.1.0");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 10 item 13: `POST /reset` starts the plan's attempt counters and
/// greylist entries afresh, so a `sequence` begins at its first code again.
#[test]
fn post_reset_restarts_sequences() {
    let engine = Arc::new(Engine::new());
    engine.load(
        Plan::from_yaml_str(
            "rules:\n  - {stage: rcpt, key: rcpt, match: {recipient_domain: seq.test}, sequence: [451, 451, 250]}\n",
            "test",
        )
        .unwrap(),
    );
    let sink = start(
        Sink::builder()
            .threads(1)
            .control("127.0.0.1:0".parse().unwrap())
            .fault_engine(engine.clone()),
    );
    let ctl = sink.control_addr().unwrap();
    let post_reset = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(ctl).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "POST /reset HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    };
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    let codes = |c: &mut Client| -> Vec<u16> {
        (0..3).map(|_| c.cmd("RCPT TO:<b@seq.test>").code).collect()
    };
    assert_eq!(codes(&mut c), [451, 451, 250]);
    assert_eq!(engine.state_len(), 1);
    post_reset();
    assert_eq!(engine.state_len(), 0, "reset leaves no per-key state");
    c.cmd("RSET").expect(250, "2.0.0");
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    assert_eq!(codes(&mut c), [451, 451, 250], "the sequence starts again");
    c.cmd("QUIT");
    sink.shutdown();
}
