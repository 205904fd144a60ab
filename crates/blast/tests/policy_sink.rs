//! Each policy against a sink plan that exercises it: the backoff the
//! sink's referee observes, 5xx never retried, the breaker across an
//! outage window, concurrency under a connection cap.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailstorm_blast::config::{Config, RcptRange};
use mailstorm_blast::policy::breaker::State;
use mailstorm_blast::policy::runtime::Summary;
use mailstorm_blast::policy::PolicySpec;
use mailstorm_blast::RunResult;
use mailstorm_sink::plan::Engine;
use mailstorm_sink::SinkHandle;

/// A sink with `plan` loaded.
fn sink_with(plan: &str) -> (SinkHandle, Arc<Engine>) {
    let engine = Arc::new(Engine::new());
    engine
        .load_bytes(plan.as_bytes(), None, "test plan")
        .unwrap();
    let sink = sink_builder().fault_engine(engine.clone()).start().unwrap();
    (sink, engine)
}

fn policy(yaml: &str) -> Option<PolicySpec> {
    Some(serde_yaml::from_str(yaml).unwrap())
}

fn cfg(messages: u64, policy_yaml: &str) -> Config {
    Config {
        messages: Some(messages),
        duration: None,
        rcpts: RcptRange { min: 1, max: 1 },
        policy: policy(policy_yaml),
        ..config()
    }
}

fn summary(r: &RunResult) -> &Summary {
    r.resilience.as_ref().expect("a policy run has a summary")
}

#[test]
fn referee_sees_the_exponential_backoff() {
    // Every message: 451 at MAIL twice, then accepted.
    let (sink, engine) = sink_with(
        "seed: 1\nrules:\n  - stage: mail\n    key: sender\n    sequence: [451, 451, 250]\n    \
         action: {reply: {code: 451, enhanced: 4.3.0}}\n",
    );
    let r = run(
        cfg(
            30,
            "max_attempts: 5\nbackoff: {kind: exponential, initial: 300ms, multiplier: 2, max: 10s}\n",
        ),
        sink.local_addr(),
    );
    let s = summary(&r);
    assert_eq!(s.tally.messages.delivered, 30, "{:?}", s.tally);
    assert_eq!(s.tally.retries, 60);
    let clients = engine.clients_json();
    let recent = clients["recent_retries"].as_array().unwrap();
    assert_eq!(recent.len(), 60, "{clients}");
    // The n-th retry comes 300 ms × 2^(n-1) after the failure, as the
    // referee measures it (its own clock, on the server side).
    for r in recent {
        let want = match r["attempt"].as_u64().unwrap() {
            2 => 300,
            3 => 600,
            a => panic!("attempt {a}"),
        };
        let got = r["interval_ms"].as_u64().unwrap();
        assert!(
            got + 5 >= want && got <= want + 150,
            "attempt {}: {got} ms, want {want} ms",
            r["attempt"]
        );
        assert_eq!(r["after_code"], 451);
    }
    let h = &clients["retry_interval_ms_by_code"]["451"];
    assert_eq!(h["count"], 60);
    sink.shutdown_with_grace(Duration::from_secs(1));
}

#[test]
fn jitter_stays_within_the_schedule() {
    let (sink, engine) = sink_with(
        "seed: 1\nrules:\n  - stage: mail\n    key: sender\n    first: 1\n    \
         action: {reply: {code: 450, enhanced: 4.7.1}}\n",
    );
    run(
        cfg(
            40,
            "max_attempts: 2\nbackoff: {kind: fixed, delay: 400ms}\njitter: equal\n",
        ),
        sink.local_addr(),
    );
    let h = &engine.clients_json()["retry_interval_ms_by_code"]["450"];
    assert_eq!(h["count"], 40);
    // Equal jitter: between half and all of the delay.
    assert!(h["min"].as_u64().unwrap() + 5 >= 200, "{h}");
    assert!(h["max"].as_u64().unwrap() <= 400 + 150, "{h}");
    assert!(
        h["max"].as_u64().unwrap() > h["min"].as_u64().unwrap(),
        "{h}"
    );
    sink.shutdown_with_grace(Duration::from_secs(1));
}

#[test]
fn permanent_failures_are_never_retried() {
    // 550 for every recipient, 554 at end of data for one sender in ten.
    let (sink, engine) = sink_with(
        "seed: 1\nrules:\n  - stage: rcpt\n    match: {recipient: \"user1*\"}\n    \
         action: {reply: {code: 550, enhanced: 5.1.1}}\n  - stage: data_end\n    \
         match: {sender: \"sender*5@*\"}\n    action: {reply: {code: 554, enhanced: 5.7.1}}\n",
    );
    let c = Config {
        to: "user1{n}@example.test".into(),
        ..cfg(
            40,
            "max_attempts: 5\nbackoff: {kind: fixed, delay: 100ms}\n",
        )
    };
    let r = run(c, sink.local_addr());
    let s = summary(&r);
    assert_eq!(s.tally.messages.rejected, 40, "all rejected: {:?}", s.tally);
    assert_eq!(s.tally.retries, 0);
    assert_eq!(s.tally.attempts[1], 40);
    let clients = engine.clients_json();
    let c = &clients["clients"]["mailstorm-blast.example.test"];
    assert_eq!(c["resent_after_5xx"], 0, "{clients}");
    assert_eq!(c["retries"], 0);
    // Now the 554 alone: data_end 5xx is permanent for the message.
    let (sink2, engine2) = sink_with(
        "seed: 1\nrules:\n  - stage: data_end\n    match: {sender: \"sender*5@*\"}\n    \
         action: {reply: {code: 554, enhanced: 5.7.1}}\n",
    );
    let r = run(
        cfg(
            40,
            "max_attempts: 5\nbackoff: {kind: fixed, delay: 100ms}\n",
        ),
        sink2.local_addr(),
    );
    let s = summary(&r);
    assert_eq!(
        (s.tally.messages.delivered, s.tally.messages.rejected),
        (36, 4)
    );
    assert_eq!(s.tally.retries, 0);
    assert_eq!(
        engine2.clients_json()["clients"]["mailstorm-blast.example.test"]["resent_after_5xx"],
        0
    );
    sink.shutdown_with_grace(Duration::from_secs(1));
    sink2.shutdown_with_grace(Duration::from_secs(1));
}

#[test]
fn breaker_opens_in_the_outage_and_closes_after() {
    let (sink, _engine) = sink_with(
        "seed: 1\nrules:\n  - stage: connect\n    window: {from: 0, to: 1.5}\n    \
         action: {reply: {code: 421, enhanced: 4.3.2}}\n",
    );
    let r = run(
        cfg(
            200,
            "max_attempts: 10\nbackoff: {kind: exponential, initial: 100ms, max: 500ms}\n\
             breaker: {consecutive_failures: 3, cooldown: 400ms, half_open_probes: 1}\n",
        ),
        sink.local_addr(),
    );
    let s = summary(&r);
    assert_eq!(s.tally.messages.delivered, 200, "{:?}", s.tally);
    let t = &s.transitions;
    assert!(!t.is_empty());
    assert_eq!((t[0].from, t[0].to), (State::Closed, State::Open));
    assert!(t[0].at_s < 0.5, "opened early in the outage: {t:?}");
    let closed: Vec<_> = t.iter().filter(|x| x.to == State::Closed).collect();
    assert_eq!(closed.len(), 1, "closed once, after the outage: {t:?}");
    assert!(closed[0].at_s >= 1.4, "{t:?}");
    // While open, nothing was attempted: every reopening came from a probe.
    for w in t.windows(2) {
        if w[1].to == State::Open {
            assert_eq!(w[0].to, State::HalfOpen, "{t:?}");
        }
    }
    assert_eq!(t.last().unwrap().to, State::Closed);
    sink.shutdown_with_grace(Duration::from_secs(1));
}

#[test]
fn concurrency_falls_under_a_cap_and_recovers() {
    // For the first 1.5 s at most 2 connections, then no cap; a little
    // latency so connections overlap.
    let (sink, engine) = sink_with(
        "seed: 1\nrules:\n  - stage: connect\n    window: {from: 0, to: 1.5}\n    \
         max_connections: {max: 2, per: ip}\n    action: {reply: {code: 421, enhanced: 4.7.0}}\n  \
         - stage: data_end\n    key: triplet\n    action: {delay: {fixed: 5ms}}\n",
    );
    let c = Config {
        messages: None,
        duration: Some(Duration::from_millis(3000)),
        concurrency: 8,
        per_conn: 10,
        ..cfg(
            1,
            "max_attempts: 50\nbackoff: {kind: fixed, delay: 50ms}\n\
             concurrency: {initial: 6, limit: 8, failed_cohort_limit: 0}\n",
        )
    };
    let r = run(c, sink.local_addr());
    let s = summary(&r);
    let tl = &s.concurrency;
    assert_eq!(tl[0].concurrency, 6);
    let low = tl
        .iter()
        .filter(|p| p.at_s < 1.5)
        .map(|p| p.concurrency)
        .min()
        .unwrap();
    assert!(low <= 2, "fell under the cap: {tl:?}");
    let high = tl
        .iter()
        .filter(|p| p.at_s >= 1.5)
        .map(|p| p.concurrency)
        .max()
        .unwrap_or(0);
    assert!(high >= 6, "recovered after the cap went away: {tl:?}");
    let max_seen = engine.clients_json()["clients"]["mailstorm-blast.example.test"]
        ["max_concurrent"]
        .as_u64()
        .unwrap();
    assert!(max_seen >= 6, "{max_seen}");
    assert!(s.tally.messages.delivered > 100);
    sink.shutdown_with_grace(Duration::from_secs(1));
}

#[test]
fn rcpt_4xx_defers_only_that_recipient() {
    // The first attempt of every recipient ending in 7 gets 450 at RCPT.
    let (sink, engine) = sink_with(
        "seed: 1\nrules:\n  - stage: rcpt\n    key: triplet\n    first: 1\n    \
         match: {recipient: \"user*7@*\"}\n    action: {reply: {code: 450, enhanced: 4.2.0}}\n",
    );
    let c = Config {
        rcpts: RcptRange { min: 3, max: 3 },
        // A large space: no recipient twice in one message.
        users: 100_000,
        ..cfg(
            60,
            "max_attempts: 3\nbackoff: {kind: fixed, delay: 100ms}\n",
        )
    };
    let r = run(c, sink.local_addr());
    let s = summary(&r);
    let st = sink.shutdown_with_grace(Duration::from_secs(1));
    assert_eq!(s.tally.messages.delivered, 60, "{:?}", s.tally);
    assert_eq!(s.tally.recipients.delivered, 180);
    let retried = s.tally.retries;
    assert!(
        retried > 0 && retried < 60,
        "some messages have a user*7: {retried}"
    );
    // Every recipient reached the sink exactly once: the retries carried
    // only the deferred recipients, never the ones already accepted.
    assert_eq!(st.recipients_accepted, 180);
    assert_eq!(st.messages_accepted, 60 + retried);
    // One referee retry per deferred recipient, each after the backoff.
    let deferred: u64 = r
        .totals
        .replies
        .iter()
        .filter(|(k, _)| k.code == 450)
        .map(|(_, n)| *n)
        .sum();
    let h = &engine.clients_json()["retry_interval_ms_by_code"]["450"];
    assert_eq!(h["count"], deferred, "{h}");
    assert!(h["min"].as_u64().unwrap() + 5 >= 100, "{h}");
}
