//! Through a real relay: the blaster sends into a throwaway Postfix whose
//! `relayhost` is an embedded `mailstorm-sink`; the blaster's ledger join
//! then says what Postfix lost, duplicated and delayed.
//!
//! - everything arrives exactly once, per recipient;
//! - the sink greylists: Postfix defers and retries, everything arrives,
//!   and the end-to-end latency shows the backoff;
//! - Postfix discards every tenth message (`header_checks` on the trace
//!   header's sequence number): lost is exactly that many recipients;
//! - the sink drops the connection after the final dot of the first three
//!   messages (before its reply): Postfix sends them again and the ledger
//!   counts exactly three duplicates (SMTP's "lost 250").
//!
//! Postfix is installed by `scripts/test.sh` and must run as root; without
//! it the tests fail with a hint, or skip when `MAILSTORM_SKIP_INTEROP=1`.
//! Every wait is bounded; runs are bounded by a message count and a time
//! cap; everything is on 127.0.0.1.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailstorm_blast::config::{Config, RcptRange};
use mailstorm_blast::ledger::{join, Joined, Source};
use mailstorm_blast::{RunParams, RunResult, StopSignal};
use mailstorm_sink::plan::{Engine, Plan};
use mailstorm_sink::{Sink, SinkHandle};
use support::postfix::PostfixTools;
use support::{wait_until, PostfixInstance};

/// Postfix's retry timing (see interop_plans.rs for why 3 s, not less).
const MIN_BACKOFF: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(6);
const QUEUE_RUN_DELAY: Duration = Duration::from_secs(1);
/// Bound on the relay draining its queue into the sink.
const DRAIN: Duration = Duration::from_secs(60);

fn config(run: &str, messages: u64) -> Config {
    let mut c = Config {
        threads: 1,
        pin: false,
        quiet: true,
        seed: 12,
        concurrency: 4,
        messages: Some(messages),
        duration: Some(Duration::from_secs(60)),
        grace: Duration::from_secs(5),
        to: "user{n}@example.test".into(),
        // Postfix delivers a recipient repeated within a message once:
        // a space this large makes repeats (fixed by the seed) unlikely.
        users: 1_000_000_000,
        run_id: Some(run.into()),
        trace_source: 0x5eed,
        ..Config::default()
    };
    c.timeouts.apply("15s").unwrap();
    c
}

fn blast(cfg: &Config, addr: SocketAddr) -> RunResult {
    let params = RunParams {
        config: cfg.clone(),
        addr,
        target: addr.to_string(),
        host: addr.ip().to_string(),
        trusted_pem: None,
        stop: StopSignal::new(),
        preflight: None,
    };
    mailstorm_blast::run(&params, |_| {}).expect("blast run")
}

fn start_sink(plan: Option<&str>) -> SinkHandle {
    let mut b = Sink::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(1)
        .hostname("sink.test");
    if let Some(yaml) = plan {
        let engine = Arc::new(Engine::new());
        engine.load(Plan::from_yaml_str(yaml, "test plan").unwrap_or_else(|e| panic!("{e}")));
        b = b.fault_engine(engine);
    }
    b.start().expect("sink starts")
}

fn relay(sink: &SinkHandle) -> PostfixInstance {
    PostfixInstance::relay_to(sink.local_addr())
        .backoff(MIN_BACKOFF, MAX_BACKOFF, QUEUE_RUN_DELAY)
        .start()
        .unwrap_or_else(|e| panic!("Postfix: {e}"))
}

/// Blasts `cfg` through `pf` and joins with the sink's ledger.
fn blast_and_join(cfg: &Config, pf: &PostfixInstance, sink: &SinkHandle) -> (RunResult, Joined) {
    let r = blast(cfg, pf.smtpd_addr());
    let c = r.totals.counters;
    assert_eq!(
        (c.attempted, c.accepted, r.totals.transport_errors()),
        (cfg.messages.unwrap(), cfg.messages.unwrap(), 0),
        "the relay accepts everything: {c:?}"
    );
    let src = Source::Embedded(sink.ledger().clone());
    let j = join(&src, cfg, c.rcpt_delivered, DRAIN, |_| {}).expect("join");
    (r, j)
}

#[test]
fn relay_delivers_every_recipient_exactly_once() {
    if PostfixTools::require().is_none() {
        return;
    }
    let sink = start_sink(None);
    let pf = relay(&sink);
    // Several recipients each, from a small population: a message's
    // recipients are drawn distinct (Postfix delivers a repeated one once)
    // and the trace names them, so "delivered" is per recipient.
    let cfg = Config {
        rcpts: RcptRange { min: 2, max: 4 },
        users: 50,
        ..config("relay-once", 2_000)
    };
    let (r, j) = blast_and_join(&cfg, &pf, &sink);
    assert!(j.drained, "{j:?}");
    assert_eq!(j.accepted, r.totals.counters.rcpt_delivered);
    assert!(
        j.accepted >= 4_000,
        "several recipients each: {}",
        j.accepted
    );
    assert_eq!(
        (j.delivered, j.lost, j.duplicates, j.unexpected),
        (j.accepted, 0, 0, 0),
        "{j:?}"
    );
    // One arrival per message copy Postfix delivered (it may split a
    // message's recipients over deliveries, never below one per message).
    assert!(j.e2e.count >= 2_000, "{:?}", j.e2e);
    assert!(j.e2e.p50_us > 0 && j.e2e.p50_us <= j.e2e.p99_us);
    assert_eq!(sink.ledger().list().unattributed, 0);
}

#[test]
fn greylisting_downstream_shows_in_end_to_end_latency() {
    if PostfixTools::require().is_none() {
        return;
    }
    let plan = "rules:\n  - name: grey\n    stage: rcpt\n    key: triplet\n    action:\n      greylist: { min_retry: 2s, expire: 1h }\n";
    let sink = start_sink(Some(plan));
    let pf = relay(&sink);
    let cfg = config("relay-grey", 100);
    let (_, j) = blast_and_join(&cfg, &pf, &sink);
    assert!(j.drained, "{j:?}");
    assert_eq!((j.delivered, j.lost, j.duplicates), (100, 0, 0), "{j:?}");
    // Every recipient was deferred once and retried after Postfix's
    // backoff (at least min_retry, 2 s, for the greylist to pass).
    let min = j.e2e.histogram().unwrap().min();
    assert!(
        min >= 2_000_000,
        "fastest arrival {min} µs: not after a retry"
    );
    assert!(j.e2e.p50_us >= 2_000_000, "{:?}", j.e2e);
    let deferred: u64 = sink.stats().replies["rcpt"]
        .iter()
        .filter(|(code, _)| **code / 100 == 4)
        .map(|(_, n)| n)
        .sum();
    assert!(
        deferred >= 100,
        "every recipient greylisted once: {deferred}"
    );
}

#[test]
fn discarded_share_is_counted_as_lost_exactly() {
    if PostfixTools::require().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("header_checks");
    // Every tenth message: sequence numbers ending in 0.
    std::fs::write(
        &checks,
        "/^X-Mailstorm-Trace: .* q=[0-9]*0 / DISCARD every tenth\n",
    )
    .unwrap();
    let sink = start_sink(None);
    let pf = PostfixInstance::relay_to(sink.local_addr())
        .backoff(MIN_BACKOFF, MAX_BACKOFF, QUEUE_RUN_DELAY)
        .param("header_checks", &format!("regexp:{}", checks.display()))
        .start()
        .unwrap_or_else(|e| panic!("Postfix: {e}"));
    let cfg = Config {
        rcpts: RcptRange { min: 2, max: 2 },
        ..config("relay-discard", 500)
    };
    // Drain bounded: the discarded ones never come.
    let r = blast(&cfg, pf.smtpd_addr());
    assert_eq!(r.totals.counters.accepted, 500);
    pf.wait_queue_empty(DRAIN).unwrap();
    let src = Source::Embedded(sink.ledger().clone());
    let j = join(
        &src,
        &cfg,
        r.totals.counters.rcpt_delivered,
        Duration::from_secs(3),
        |_| {},
    )
    .unwrap();
    // Sequence numbers 0..500: 50 end in 0, two recipients each.
    assert_eq!(j.accepted, 1_000);
    assert_eq!((j.lost, j.delivered, j.duplicates), (100, 900, 0), "{j:?}");
    assert!(!j.drained);
}

#[test]
fn dropped_reply_after_the_dot_makes_postfix_duplicate() {
    if PostfixTools::require().is_none() {
        return;
    }
    let plan = "rules:\n  - name: lost-250\n    stage: data_end\n    key: global\n    first: 3\n    action: { disconnect: { mode: fin } }\n";
    let sink = start_sink(Some(plan));
    let pf = relay(&sink);
    let cfg = config("relay-dup", 50);
    let (_, j) = blast_and_join(&cfg, &pf, &sink);
    assert_eq!((j.lost, j.delivered), (0, 50), "{j:?}");
    // The re-sent copies come after Postfix's backoff: wait for its queue.
    pf.wait_queue_empty(DRAIN).unwrap();
    wait_until("three duplicates", Duration::from_secs(10), || {
        sink.ledger()
            .run("relay-dup")
            .is_some_and(|f| f.counts.duplicates >= 3)
    })
    .unwrap();
    let f = sink.ledger().run("relay-dup").unwrap();
    assert_eq!(f.counts.duplicates, 3, "{f:?}");
    assert_eq!(f.counts.duplicate_messages, 3);
    assert_eq!(f.counts.unique, 50);
}

/// A scenario file naming the relay (`target:`) and the sink behind it
/// (`downstream:`): the plan is loaded into the downstream sink over its
/// control API, the ledger and referee are read from there, and the
/// expectations judge what the relay did.
#[test]
fn scenario_through_a_relay_judges_the_relay() {
    use mailstorm_blast::scenario::{run, Scenario};
    if PostfixTools::require().is_none() {
        return;
    }
    let engine = Arc::new(Engine::new());
    let sink = Sink::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .control(SocketAddr::from(([127, 0, 0, 1], 0)))
        .fault_engine(engine.clone())
        .threads(1)
        .hostname("sink.test")
        .start()
        .expect("sink starts");
    let control = sink.control_addr().expect("control API");
    let pf = relay(&sink);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay-greylist.yaml");
    std::fs::write(
        &file,
        format!(
            "name: relay-greylist\n\
             target: {relay}\n\
             downstream: http://{control}\n\
             plan:\n  rules:\n    - name: grey\n      stage: rcpt\n      key: triplet\n\
             \x20     action: {{ greylist: {{ min_retry: 2s, expire: 1h }} }}\n\
             profile:\n  messages: 60\n  concurrency: 4\n  threads: 1\n  pin: false\n\
             \x20 seed: 12\n  to: \"user{{n}}@example.test\"\n  users: 1000000000\n\
             \x20 timeouts: 15s\n  drain: 60s\n\
             expect:\n  - delivered == 60\n  - ledger.delivered == 60\n  - lost == 0\n\
             \x20 - duplicates == 0\n  - e2e_p50 >= 2s\n  - e2e_max < 60s\n\
             \x20 - sink.accepted >= 60\n  - referee.retries >= 1\n\
             \x20 - referee.resent_after_5xx == 0\n",
            relay = pf.smtpd_addr(),
        ),
    )
    .unwrap();
    let scn = Scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let o = run::run(&scn, &run::Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<String> = o
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(mailstorm_blast::scenario::expect::describe)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let j = o.ledger.as_ref().expect("ledger joined");
    assert_eq!((j.accepted, j.delivered, j.lost), (60, 60, 0), "{j:?}");
    assert_eq!(
        o.downstream.as_deref(),
        Some(format!("http://{control}").as_str())
    );
    // The greylisting came from the scenario's plan, loaded over HTTP...
    let deferred: u64 = sink.stats().replies["rcpt"]
        .iter()
        .filter(|(code, _)| **code / 100 == 4)
        .map(|(_, n)| n)
        .sum();
    assert!(
        deferred >= 60,
        "every recipient greylisted once: {deferred}"
    );
    // ...and the downstream is left without it.
    assert!(!engine.is_loaded(), "plan cleared after the scenario");
}

/// The same file with a broken expectation fails, naming it, and an
/// unreachable downstream is an error before any mail is sent.
#[test]
fn scenario_relay_errors_are_named() {
    use mailstorm_blast::scenario::{run, Scenario};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    // A port nothing listens on: bound and dropped.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &file,
        format!(
            "target: 127.0.0.1:25\ndownstream: http://{dead}\n\
             profile: {{messages: 1}}\nexpect: [\"lost == 0\"]\n"
        ),
    )
    .unwrap();
    let scn = Scenario::load(&file).unwrap();
    let e = run::run(&scn, &run::Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("downstream http://{dead}")), "{e}");
}
