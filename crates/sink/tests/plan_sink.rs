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
    let domain = if k % 4 == 0 { "seq.test" } else { "y.test" };
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
