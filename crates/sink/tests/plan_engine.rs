//! The fault engine on its own: every action, every selection mode,
//! determinism, time-driven rules with an injected clock, and plan errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mailstorm_sink::hook::SplitReply;
use mailstorm_sink::plan::{Engine, FaultAction, Plan, Probe, Verdict};
use mailstorm_sink::Stage;

fn plan(yaml: &str) -> Plan {
    Plan::from_yaml_str(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn engine_at(yaml: &str, t0: Instant) -> Engine {
    let e = Engine::new();
    e.load_at(plan(yaml), t0);
    e
}

fn engine(yaml: &str) -> Engine {
    engine_at(yaml, Instant::now())
}

fn peer() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

/// A probe with a full envelope, as the stage would see it.
fn probe(stage: Stage, sender: &str, rcpt: &str) -> Probe {
    let mut p = Probe::new(stage, 1, peer());
    p.helo = Some("client.test".into());
    match stage {
        Stage::Connect => p.helo = None,
        Stage::Ehlo => p.command = "EHLO client.test".into(),
        Stage::Mail => p.command = format!("MAIL FROM:<{sender}>"),
        Stage::Rcpt => {
            p.sender = Some(sender.into());
            p.rcpt = Some(rcpt.into());
            p.command = format!("RCPT TO:<{rcpt}>");
        }
        Stage::Data | Stage::DataEnd | Stage::Bdat => {
            p.sender = Some(sender.into());
            p.recipients = vec![rcpt.into()];
            p.message_size = 1234;
            p.command = match stage {
                Stage::Data => "DATA".into(),
                Stage::Bdat => "BDAT 1234".into(),
                _ => String::new(),
            };
        }
        Stage::StartTls => p.command = "STARTTLS".into(),
        Stage::Auth => p.command = "AUTH PLAIN".into(),
        Stage::Rset => p.command = "RSET".into(),
        Stage::Quit => p.command = "QUIT".into(),
        _ => {}
    }
    p
}

fn code(v: &Option<Verdict>) -> Option<u16> {
    v.as_ref().and_then(|v| v.code())
}

const STAGES: [(&str, Stage); 11] = [
    ("connect", Stage::Connect),
    ("ehlo", Stage::Ehlo),
    ("starttls", Stage::StartTls),
    ("auth", Stage::Auth),
    ("mail", Stage::Mail),
    ("rcpt", Stage::Rcpt),
    ("data", Stage::Data),
    ("data_end", Stage::DataEnd),
    ("bdat", Stage::Bdat),
    ("rset", Stage::Rset),
    ("quit", Stage::Quit),
];

/// An action as written and a check of its verdict.
type Check = fn(&Verdict) -> bool;

#[test]
fn every_action_at_every_stage() {
    let now = Instant::now();
    let actions: [(&str, Check); 9] = [
        (
            "reply: {code: 451, enhanced: 4.3.0, text: busy}",
            |v| matches!(&v.outcome, FaultAction::Reply { code: 451, enhanced, text } if enhanced == "4.3.0" && text == "busy"),
        ),
        (
            "reply: {code: 421}",
            |v| matches!(&v.outcome, FaultAction::Reply { code: 421, enhanced, .. } if enhanced == "4.3.2"),
        ),
        ("delay: {fixed: 250ms}", |v| {
            v.delay == Some(Duration::from_millis(250)) && v.outcome == FaultAction::Accept
        }),
        (
            "{delay: {fixed: 5ms}, reply: {code: 554, enhanced: 5.7.1}}",
            |v| v.delay == Some(Duration::from_millis(5)) && v.code() == Some(554),
        ),
        ("disconnect: {mode: rst, after_bytes: 100}", |v| {
            v.outcome
                == FaultAction::Disconnect {
                    rst: true,
                    after_bytes: 100,
                }
        }),
        ("stall: {duration: 2s}", |v| {
            v.outcome == FaultAction::Stall(Duration::from_secs(2))
        }),
        ("throttle: {bytes_per_sec: 1000}", |v| {
            v.throttle == Some(1000) && v.outcome == FaultAction::Accept
        }),
        ("split_reply: {fragment_bytes: 3, gap: 1ms}", |v| {
            v.split_reply
                == Some(SplitReply {
                    fragment: 3,
                    gap: Duration::from_millis(1),
                })
        }),
        (
            "idle_close: {after: 1.5s}",
            |v| matches!(&v.outcome, FaultAction::IdleClose { after, code: 421, .. } if *after == Duration::from_millis(1500)),
        ),
    ];
    for (sname, stage) in STAGES {
        for (action, ok) in &actions {
            let e = engine(&format!(
                "seed: 1\nrules:\n  - stage: {sname}\n    action: {}\n",
                if action.starts_with('{') {
                    action.to_string()
                } else {
                    format!("{{{action}}}")
                }
            ));
            let v = probe(stage, "a@x.test", "b@y.test").decide(&e, now);
            let v = v.unwrap_or_else(|| panic!("{sname} / {action}: no verdict"));
            assert!(ok(&v), "{sname} / {action}: {v:?}");
            // Other stages are not affected.
            let other = if stage == Stage::Quit {
                Stage::Rset
            } else {
                Stage::Quit
            };
            assert_eq!(
                probe(other, "a", "b").decide(&e, now),
                None,
                "{sname} / {action}"
            );
        }
        // `accept` decides (and stops later rules).
        let e = engine(&format!(
            "rules:\n  - stage: {sname}\n    action: {{accept: true}}\n  - stage: any\n    action: {{reply: {{code: 550}}}}\n"
        ));
        let v = probe(stage, "a@x.test", "b@y.test")
            .decide(&e, now)
            .unwrap();
        assert_eq!((v.rule, &v.outcome), (0, &FaultAction::Accept), "{sname}");
    }
    // Greylisting applies to MAIL, RCPT, DATA and end of data.
    for (sname, stage) in [
        ("mail", Stage::Mail),
        ("rcpt", Stage::Rcpt),
        ("data", Stage::Data),
        ("data_end", Stage::DataEnd),
    ] {
        let e = engine(&format!(
            "rules:\n  - stage: {sname}\n    action: {{greylist: {{min_retry: 60s}}}}\n"
        ));
        let v = probe(stage, "a@x.test", "b@y.test")
            .decide(&e, now)
            .unwrap();
        assert!(
            matches!(&v.outcome, FaultAction::Reply { code: 450, enhanced, .. } if enhanced == "4.7.1"),
            "{v:?}"
        );
    }
}

#[test]
fn matching_conditions() {
    let now = Instant::now();
    let e = engine(
        r#"
rules:
  - stage: rcpt
    match: {client: [10.0.0.0/8, 192.0.2.0/24], recipient: "unknown-*@*", sender: "*@x.test", helo: "*.test", tls: false}
    action: {reply: {code: 550, enhanced: 5.1.1, text: "User unknown"}}
  - stage: rcpt
    match: {recipient_domain: Full.Test}
    action: {reply: {code: 552, enhanced: 5.2.2}}
  - stage: data_end
    match: {header: {name: Subject, regex: "(?i)viagra"}}
    action: {reply: {code: 554, enhanced: 5.7.1}}
  - stage: data_end
    match: {header: {name: X-Spam-Flag}, size: {min: 10, max: 2000}}
    action: {reply: {code: 554, enhanced: 5.7.1, text: flagged}}
  - stage: mail
    match: {auth_user: "bob*"}
    action: {reply: {code: 451}}
"#,
    );
    assert_eq!(
        code(&probe(Stage::Rcpt, "a@x.test", "unknown-1@y.test").decide(&e, now)),
        Some(550)
    );
    assert_eq!(
        code(&probe(Stage::Rcpt, "a@z.test", "unknown-1@y.test").decide(&e, now)),
        None
    );
    assert_eq!(
        code(&probe(Stage::Rcpt, "a@x.test", "known@y.test").decide(&e, now)),
        None
    );
    let mut p = probe(Stage::Rcpt, "a@x.test", "unknown-1@y.test");
    p.peer = "203.0.113.1:1".parse().unwrap();
    assert_eq!(code(&p.decide(&e, now)), None, "client outside the blocks");
    p.peer = "[::ffff:10.9.9.9]:1".parse().unwrap();
    assert_eq!(code(&p.decide(&e, now)), Some(550), "IPv4-mapped client");
    p.tls = true;
    assert_eq!(code(&p.decide(&e, now)), None, "tls: false");
    assert_eq!(
        code(&probe(Stage::Rcpt, "a", "u@full.TEST").decide(&e, now)),
        Some(552)
    );

    let mut d = probe(Stage::DataEnd, "a", "b@y.test");
    d.message = Some(b"From: a\r\nSubject: cheap VIAGRA\r\n\r\nbody".to_vec());
    assert_eq!(code(&d.decide(&e, now)), Some(554));
    d.message = Some(b"From: a\r\nSubject: hello\r\n\r\nSubject: viagra\r\n".to_vec());
    assert_eq!(
        code(&d.decide(&e, now)),
        None,
        "only the header block counts"
    );
    d.message = Some(b"X-Spam-Flag: YES\r\n\r\n".to_vec());
    assert_eq!(code(&d.decide(&e, now)), Some(554));
    d.message_size = 5000;
    assert_eq!(code(&d.decide(&e, now)), None, "size out of range");
    d.message = None;
    assert_eq!(code(&d.decide(&e, now)), None, "no headers: no match");

    let mut m = probe(Stage::Mail, "a", "");
    assert_eq!(code(&m.decide(&e, now)), None);
    m.auth_user = Some("bobby".into());
    assert_eq!(code(&m.decide(&e, now)), Some(451));
}

/// Decisions of `rule` for keys k0..n, attempt by attempt.
fn run_keys(e: &Engine, n: usize, attempts: usize) -> Vec<Vec<Option<u16>>> {
    let now = Instant::now();
    (0..n)
        .map(|k| {
            (0..attempts)
                .map(|_| {
                    code(&probe(Stage::Rcpt, "s@x.test", &format!("u{k}@y.test")).decide(e, now))
                })
                .collect()
        })
        .collect()
}

#[test]
fn selection_by_attempt() {
    let e = engine("rules:\n  - {stage: rcpt, every: 3, action: {reply: {code: 451}}}\n");
    for row in run_keys(&e, 3, 7) {
        let hits: Vec<usize> = row
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(hits, [3, 6]);
    }
    let e = engine("rules:\n  - {stage: rcpt, first: 2, action: {reply: {code: 451}}}\n");
    for row in run_keys(&e, 3, 4) {
        assert_eq!(row, [Some(451), Some(451), None, None]);
    }
    let e = engine("rules:\n  - {stage: rcpt, after: 2, action: {reply: {code: 451}}}\n");
    for row in run_keys(&e, 2, 4) {
        assert_eq!(row, [None, None, Some(451), Some(451)]);
    }
    let e = engine("rules:\n  - {stage: rcpt, sequence: [451, 452, 250, 550], action: {reply: {code: 451, text: custom}}}\n");
    let now = Instant::now();
    for row in run_keys(&e, 2, 6) {
        assert_eq!(
            row,
            [Some(451), Some(452), None, Some(550), Some(550), Some(550)]
        );
    }
    let v = probe(Stage::Rcpt, "s", "new@y.test")
        .decide(&e, now)
        .unwrap();
    assert!(matches!(&v.outcome, FaultAction::Reply { text, .. } if text == "custom"));
    assert_eq!(v.attempt, 1);
    // Global ordinal: every 2nd match over all keys.
    let e =
        engine("rules:\n  - {stage: rcpt, key: global, every: 2, action: {reply: {code: 451}}}\n");
    let all: Vec<Option<u16>> = run_keys(&e, 4, 1).into_iter().flatten().collect();
    assert_eq!(all, [None, Some(451), None, Some(451)]);
    // Connection key: counted per connection, same draws in every connection.
    let e = engine(
        "rules:\n  - {stage: rcpt, key: connection, first: 1, action: {reply: {code: 451}}}\n",
    );
    for id in 1..4 {
        for n in 0..3 {
            let mut p = probe(Stage::Rcpt, "s", &format!("r{n}@y"));
            p.session_id = id;
            assert_eq!(
                code(&p.decide(&e, now)),
                (n == 0).then_some(451),
                "conn {id} rcpt {n}"
            );
        }
    }
}

#[test]
fn probability_is_deterministic_and_calibrated() {
    let yaml =
        "seed: 7\nrules:\n  - {stage: rcpt, probability: 0.2, action: {reply: {code: 451}}}\n";
    let a = run_keys(&engine(yaml), 2000, 3);
    let b = run_keys(&engine(yaml), 2000, 3);
    assert_eq!(a, b, "same seed, same traffic, same decisions");
    let hits = a.iter().flatten().filter(|c| c.is_some()).count();
    let frac = hits as f64 / 6000.0;
    assert!((0.18..0.22).contains(&frac), "{frac}");
    // Retries draw anew: not every first-attempt failure fails again.
    let again = a
        .iter()
        .filter(|r| r[0].is_some() && r[1].is_none())
        .count();
    assert!(again > 0);
    let c = run_keys(&engine(&yaml.replace("seed: 7", "seed: 8")), 2000, 3);
    assert_ne!(a, c, "another seed, other decisions");
    assert_eq!(
        run_keys(
            &engine("rules:\n  - {stage: rcpt, probability: 0, action: {reply: {code: 451}}}\n"),
            50,
            2
        )
        .iter()
        .flatten()
        .filter(|c| c.is_some())
        .count(),
        0
    );
    assert_eq!(
        run_keys(
            &engine("rules:\n  - {stage: rcpt, probability: 1, action: {reply: {code: 451}}}\n"),
            50,
            2
        )
        .iter()
        .flatten()
        .filter(|c| c.is_none())
        .count(),
        0
    );
}

#[test]
fn delays_are_seeded() {
    let yaml = "seed: 3\nrules:\n  - {stage: rcpt, action: {delay: {distribution: lognormal, median: 100ms, p99: 2000ms}}}\n";
    let sample = |e: &Engine| -> Vec<Duration> {
        (0..200)
            .map(|k| {
                probe(Stage::Rcpt, "s", &format!("r{k}@y"))
                    .decide(e, Instant::now())
                    .unwrap()
                    .delay
                    .unwrap()
            })
            .collect()
    };
    let a = sample(&engine(yaml));
    assert_eq!(a, sample(&engine(yaml)));
    let mut sorted = a.clone();
    sorted.sort();
    let median = sorted[100].as_millis();
    assert!((60..170).contains(&median), "{median}");
    for (kind, params) in [
        ("uniform", "min: 10ms, max: 20ms"),
        ("normal", "mean: 50ms, stddev: 5ms"),
        ("exponential", "mean: 30ms"),
        ("pareto", "scale: 10ms, shape: 1.5, cap: 1000ms"),
    ] {
        let e = engine(&format!(
            "rules:\n  - {{stage: mail, action: {{delay: {{distribution: {kind}, {params}}}}}}}\n"
        ));
        let d = probe(Stage::Mail, "s@x", "")
            .decide(&e, Instant::now())
            .unwrap()
            .delay
            .unwrap();
        assert!(d <= Duration::from_secs(1), "{kind}: {d:?}");
    }
}

#[test]
fn window_with_injected_clock() {
    let t0 = Instant::now();
    let e = engine_at(
        "rules:\n  - {stage: connect, window: {from: 0, to: 20, period: 60}, action: {reply: {code: 421, enhanced: 4.3.2, text: outage}}}\n",
        t0,
    );
    let at = |s: u64| code(&probe(Stage::Connect, "", "").decide(&e, t0 + Duration::from_secs(s)));
    assert_eq!(
        (at(0), at(19), at(20), at(59)),
        (Some(421), Some(421), None, None)
    );
    assert_eq!(
        (at(60), at(79), at(80), at(130)),
        (Some(421), Some(421), None, Some(421))
    );
    let e = engine_at("rules:\n  - {stage: rcpt, window: {from: 10, period: 40, duty: 0.5}, action: {reply: {code: 451}}}\n", t0);
    let at = |s: u64| code(&probe(Stage::Rcpt, "s", "r").decide(&e, t0 + Duration::from_secs(s)));
    assert_eq!(
        (at(9), at(10), at(29), at(30), at(50)),
        (None, Some(451), Some(451), None, Some(451))
    );
}

#[test]
fn rate_limit_with_injected_clock() {
    let t0 = Instant::now();
    let e = engine_at(
        "rules:\n  - {stage: mail, rate_limit: {max: 3, per: 1s, by: ip}, action: {reply: {code: 451, enhanced: 4.7.0, text: slow down}}}\n",
        t0,
    );
    let at = |ms: u64, ip: &str| {
        let mut p = probe(Stage::Mail, "s@x", "");
        p.peer = format!("{ip}:1").parse().unwrap();
        code(&p.decide(&e, t0 + Duration::from_millis(ms)))
    };
    // 3 within a second pass, the 4th fires; other IPs have their own bucket.
    assert_eq!(
        [
            at(0, "10.0.0.1"),
            at(1, "10.0.0.1"),
            at(2, "10.0.0.1"),
            at(3, "10.0.0.1")
        ],
        [None, None, None, Some(451)]
    );
    assert_eq!(at(4, "10.0.0.2"), None);
    // A third of a second refills one token.
    assert_eq!(
        [at(340, "10.0.0.1"), at(341, "10.0.0.1")],
        [None, Some(451)]
    );
    // A client under the rate never trips it.
    let e2 = engine_at("rules:\n  - {stage: mail, rate_limit: {max: 2, per: 1s, by: global}, action: {reply: {code: 451}}}\n", t0);
    for i in 0..20u64 {
        let v = probe(Stage::Mail, "s@x", "").decide(&e2, t0 + Duration::from_millis(i * 600));
        assert_eq!(code(&v), None, "request {i}");
    }
}

#[test]
fn max_connections_at_greeting() {
    let now = Instant::now();
    let e = engine("rules:\n  - {stage: connect, max_connections: {max: 2, per: ip}, action: {reply: {code: 421, enhanced: 4.7.0, text: too many connections}}}\n");
    let greet = |id: u64, ip: &str| {
        let peer: SocketAddr = format!("{ip}:1").parse().unwrap();
        assert!(e.session_opened(peer, now));
        let mut p = Probe::new(Stage::Connect, id, peer);
        p.peer = peer;
        code(&p.decide(&e, now))
    };
    assert_eq!(
        [
            greet(1, "10.0.0.1"),
            greet(2, "10.0.0.1"),
            greet(3, "10.0.0.1")
        ],
        [None, None, Some(421)]
    );
    assert_eq!(greet(4, "10.0.0.2"), None);
    let mut end = mailstorm_sink::plan::SessionEnd::new(3, "10.0.0.1:1".parse().unwrap());
    e.session_closed(&end);
    end.session_id = 2;
    e.session_closed(&end);
    assert_eq!(greet(5, "10.0.0.1"), None, "slots freed at close");
}

#[test]
fn greylisting_with_injected_clock() {
    let t0 = Instant::now();
    let e = engine_at(
        "rules:\n  - {stage: rcpt, action: {greylist: {min_retry: 300s, expire: 3600s}}}\n",
        t0,
    );
    let at = |s: u64, rcpt: &str| {
        code(&probe(Stage::Rcpt, "s@x", rcpt).decide(&e, t0 + Duration::from_secs(s)))
    };
    assert_eq!(at(0, "a@y"), Some(450));
    assert_eq!(at(100, "a@y"), Some(450), "too early");
    assert_eq!(at(299, "a@y"), Some(450));
    assert_eq!(at(300, "a@y"), None, "retried late enough");
    assert_eq!(at(301, "a@y"), None, "stays passed");
    assert_eq!(at(301, "b@y"), Some(450), "another triplet");
    assert_eq!(
        at(301 + 3601, "b@y"),
        Some(450),
        "expired: greylisted afresh"
    );
    assert_eq!(at(301 + 3601 + 300, "b@y"), None);
    // Another client IP is another triplet.
    let mut p = probe(Stage::Rcpt, "s@x", "a@y");
    p.peer = "198.51.100.1:2".parse().unwrap();
    assert_eq!(
        code(&p.decide(&e, t0 + Duration::from_secs(302))),
        Some(450)
    );
}

/// Issue 10 item 13: resetting the plan's state forgets greylist entries
/// (a passed triplet is greylisted again) and attempt counters.
#[test]
fn reset_state_forgets_greylist_entries_and_attempts() {
    let t0 = Instant::now();
    let e = engine_at("rules:\n  - {stage: rcpt, action: {greylist: {min_retry: 300s, expire: 1h}}}\n  - {stage: mail, sequence: [451, 250]}\n", t0);
    let at =
        |s: u64| code(&probe(Stage::Rcpt, "s@x", "a@y").decide(&e, t0 + Duration::from_secs(s)));
    let mail = || code(&probe(Stage::Mail, "s@x", "").decide(&e, t0));
    assert_eq!(at(0), Some(450));
    assert_eq!(at(300), None, "passed");
    assert_eq!((mail(), mail()), (Some(451), None));
    e.reset_state();
    assert_eq!(e.state_len(), 0);
    assert_eq!(at(301), Some(450), "greylisted afresh after the reset");
    assert_eq!(mail(), Some(451), "the sequence starts again");
}

#[test]
fn first_matching_selected_rule_decides() {
    let e = engine(
        "rules:\n  - {stage: rcpt, match: {recipient: 'x*'}, first: 1, action: {reply: {code: 451}}}\n  - {stage: any, action: {reply: {code: 550}}}\n",
    );
    let now = Instant::now();
    assert_eq!(
        code(&probe(Stage::Rcpt, "s", "x1@y").decide(&e, now)),
        Some(451)
    );
    assert_eq!(
        code(&probe(Stage::Rcpt, "s", "x1@y").decide(&e, now)),
        Some(550),
        "not selected: next rule"
    );
    assert_eq!(
        code(&probe(Stage::Rcpt, "s", "z@y").decide(&e, now)),
        Some(550)
    );
    assert_eq!(
        code(&probe(Stage::Ehlo, "s", "z@y").decide(&e, now)),
        Some(550),
        "any"
    );
}

/// A deterministic envelope stream: 300 keys, each tried in 4 rounds.
fn envelopes() -> Vec<Vec<(String, String)>> {
    (0..4)
        .map(|_| {
            (0..300)
                .map(|k| {
                    (
                        format!("s{}@x.test", k % 7),
                        format!("u{k}@d{}.test", k % 5),
                    )
                })
                .collect()
        })
        .collect()
}

const DET_PLAN: &str = r#"
seed: 99
rules:
  - {stage: rcpt, match: {recipient_domain: d0.test}, sequence: [451, 451, 250]}
  - {stage: rcpt, key: triplet, probability: 0.3, action: {reply: {code: 452, enhanced: 4.2.2}}}
  - {stage: rcpt, key: sender, every: 5, action: {delay: {distribution: exponential, mean: 40ms}}}
  - {stage: data_end, key: triplet, probability: 0.1, action: {reply: {code: 554, enhanced: 5.7.1}}}
"#;

type Log = BTreeMap<(String, usize), String>;

fn decide_round(e: &Engine, round: usize, batch: &[(String, String)], log: &mut Log) {
    for (s, r) in batch {
        let v = probe(Stage::Rcpt, s, r).decide(e, Instant::now());
        log.insert((r.clone(), round), format!("{v:?}"));
        let v = probe(Stage::DataEnd, s, r).decide(e, Instant::now());
        log.insert((format!("end {r}"), round), format!("{v:?}"));
    }
}

#[test]
fn deterministic_across_runs_and_threads() {
    let one = |_: ()| {
        let e = engine(DET_PLAN);
        let mut log = Log::new();
        for (round, batch) in envelopes().iter().enumerate() {
            decide_round(&e, round, batch, &mut log);
        }
        log
    };
    let a = one(());
    assert_eq!(a, one(()), "two runs");
    // Two threads, keys spread across them differently each round (as a
    // client's retries land on any shard), rounds in order.
    let e = Arc::new(engine(DET_PLAN));
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut log = Log::new();
                for (round, batch) in envelopes().iter().enumerate() {
                    let mine: Vec<_> = batch
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| (i / (round + 1)) % 2 == t)
                        .map(|(_, x)| x.clone())
                        .collect();
                    decide_round(&e, round, &mine, &mut log);
                    barrier.wait();
                }
                log
            })
        })
        .collect();
    let mut b = Log::new();
    for h in handles {
        b.extend(h.join().unwrap());
    }
    assert_eq!(a.len(), b.len());
    // Rules with per-envelope keys decide exactly the same envelopes.
    for (k, v) in &a {
        if !v.contains("rule: 2,") && v != "None" {
            assert_eq!(Some(v), b.get(k), "{k:?}");
        }
    }
    // The sender-keyed rule: which concurrent envelope of a sender gets
    // its n-th attempt depends on arrival order, but the decisions per
    // (key, attempt), hence the per-code counts, are the same.
    let mut va: Vec<&String> = a.values().collect();
    let mut vb: Vec<&String> = b.values().collect();
    va.sort();
    vb.sort();
    assert_eq!(va, vb);
    // The plan really injected something of each kind.
    let all: String = a.values().cloned().collect();
    for needle in ["code: 451", "code: 452", "delay: Some", "code: 554"] {
        assert!(all.contains(needle), "{needle}");
    }
}

#[test]
fn state_is_bounded() {
    let e = engine("state_cap: 640\nrules:\n  - {stage: rcpt, probability: 0.5, action: {reply: {code: 451}}}\n");
    for k in 0..20_000 {
        probe(Stage::Rcpt, "s", &format!("u{k}@y")).decide(&e, Instant::now());
    }
    assert!(e.state_len() <= 640, "{}", e.state_len());
}

#[test]
fn json_plans_and_round_trip() {
    let p = Plan::from_json_str(
        r#"{"seed": 5, "rules": [{"stage": "rcpt", "every": 2, "action": {"reply": {"code": 451, "enhanced": "4.3.0"}}}]}"#,
        "PUT /plan",
    )
    .unwrap();
    let yaml = p.to_yaml();
    let again = Plan::from_yaml_str(&yaml, "again").unwrap();
    assert_eq!(again.spec(), p.spec());
    let e = Engine::new();
    e.load(again);
    assert!(e.plan_yaml().unwrap().contains("every: 2"));
}

/// Each kind of mistake: the error names the place, the key and what is
/// allowed.
#[test]
fn bad_plans_give_clear_errors() {
    let cases: &[(&str, &[&str])] = &[
        ("seed: 1\nrulez: []\n", &["t.yaml:2:1", "unknown field `rulez`", "seed", "rules"]),
        ("rules:\n  - stage: rcpt\n    acton: {accept: true}\n", &["t.yaml:3:5", "rules[0]", "unknown field `acton`", "action"]),
        ("rules:\n  - stage: rcp\n    action: {accept: true}\n", &["t.yaml:2:12", "rules[0].stage", "unknown variant `rcp`", "data_end"]),
        ("rules:\n  - stage: rcpt\n    action: {reply: {code: 45}}\n", &["t.yaml:3:28", "rules[0].action.reply.code", "reply code 45", "200..=599"]),
        ("rules:\n  - stage: rcpt\n    probability: 1.5\n    action: {accept: true}\n", &["t.yaml:3:18", "probability", "0.0..=1.0"]),
        ("rules:\n  - stage: rcpt\n    every: 0\n    action: {accept: true}\n", &["t.yaml:3:12", "every", "at least 1"]),
        ("rules:\n  - stage: rcpt\n    key: recipient\n    action: {accept: true}\n", &["t.yaml:3:10", "rules[0].key", "message_id", "triplet"]),
        ("rules:\n  - stage: connect\n    match: {sender: '*'}\n    action: {accept: true}\n", &["t.yaml:2:5", "rules[0]", "match.sender", "allowed stages: mail, rcpt"]),
        ("rules:\n  - stage: rcpt\n    match: {header: {name: Subject}}\n    action: {accept: true}\n", &["t.yaml:2:5", "match.header", "data_end"]),
        ("rules:\n  - stage: data_end\n    match: {header: {name: Subject, regex: '(unclosed'}}\n    action: {accept: true}\n", &["t.yaml:2:5", "regex"]),
        ("rules:\n  - stage: rcpt\n    match: {client: 10.0.0.0/40}\n    action: {accept: true}\n", &["t.yaml:2:5", "match.client", "0..=32"]),
        ("rules:\n  - stage: rcpt\n", &["t.yaml:2:5", "rules[0]", "no action", "greylist"]),
        ("rules:\n  - stage: rcpt\n    action: {reply: {code: 451}, disconnect: {}}\n", &["rules[0]", "cannot be combined", "reply` and `disconnect"]),
        ("rules:\n  - stage: rcpt\n    action: {reply: {code: 451, enhanced: 5.1.1}}\n", &["rules[0]", "5.1.1", "class must be 4"]),
        ("rules:\n  - stage: rcpt\n    action: {delay: {distribution: lognormal, median: 5ms}}\n", &["rules[0]", "lognormal", "p99"]),
        ("rules:\n  - stage: rcpt\n    action: {delay: {distribution: uniform, min: 1ms, max: 2ms, shape: 3}}\n", &["`shape` does not apply", "min, max"]),
        ("rules:\n  - stage: rcpt\n    action: {delay: {distribution: gamma}}\n", &["t.yaml:3:36", "unknown variant `gamma`", "lognormal"]),
        ("rules:\n  - stage: connect\n    action: {greylist: {min_retry: 60s}}\n", &["action.greylist", "allowed stages: mail, rcpt, data, data_end"]),
        ("rules:\n  - stage: rcpt\n    max_connections: {max: 3}\n    action: {reply: {code: 421}}\n", &["max_connections", "allowed stages: connect"]),
        ("rules:\n  - stage: rcpt\n    window: {from: 30, to: 10}\n    action: {accept: true}\n", &["window", "greater than `from`"]),
        ("rules:\n  - stage: rcpt\n    rate_limit: {max: 3, per: 1s, by: host}\n    action: {accept: true}\n", &["rate_limit.by", "unknown variant `host`", "rcpt_domain"]),
        ("rules:\n  - stage: rcpt\n    sequence: [451]\n    action: {greylist: {min_retry: 1s}}\n", &["sequence", "cannot be combined with action `greylist`"]),
        ("rules: {stage: rcpt}\n", &["t.yaml:1:8", "rules", "sequence"]),
    ];
    for (yaml, needles) in cases {
        let err = Plan::from_yaml_str(yaml, "t.yaml")
            .expect_err(yaml)
            .to_string();
        for n in *needles {
            assert!(
                err.contains(n),
                "error for\n{yaml}\nis\n  {err}\nwhich lacks `{n}`"
            );
        }
    }
    let err = Plan::from_json_str(
        "{\"seed\": 1,\n \"rules\": [{\"stage\": \"rcpt\", \"bogus\": 1}]}",
        "body",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("body:2:") && err.contains("unknown field `bogus`"),
        "{err}"
    );
}

#[test]
fn a_plan_holds_at_most_max_rules_and_a_bounded_state_cap() {
    use mailstorm_sink::plan::{MAX_RULES, MAX_STATE_CAP};
    let plan = |n: usize| {
        let mut y = String::from("seed: 1\nrules:\n");
        for _ in 0..n {
            y.push_str("  - {stage: rcpt, action: {reply: {code: 451}}}\n");
        }
        y
    };
    assert_eq!(
        Plan::from_yaml_str(&plan(MAX_RULES), "t.yaml")
            .unwrap()
            .spec()
            .rules
            .len(),
        MAX_RULES
    );
    // The error names the first rule too many, at its own line.
    let err = Plan::from_yaml_str(&plan(MAX_RULES + 1), "t.yaml")
        .unwrap_err()
        .to_string();
    let line = MAX_RULES + 3;
    assert!(
        err.starts_with(&format!("t.yaml:{line}:")) && err.contains("at most 10000"),
        "{err}"
    );
    let err = Plan::from_yaml_str(
        &format!("state_cap: {}\nrules: []\n", MAX_STATE_CAP + 1),
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("t.yaml:1:") && err.contains("state_cap 10000001 is more than"),
        "{err}"
    );
    Plan::from_yaml_str(
        &format!("state_cap: {MAX_STATE_CAP}\nrules: []\n"),
        "t.yaml",
    )
    .unwrap();
}

#[test]
fn failed_load_keeps_the_old_plan() {
    let e = engine("rules:\n  - {stage: rcpt, action: {reply: {code: 451}}}\n");
    let before = e.plan_yaml();
    let err = e.load_bytes(
        b"rules:\n  - {stage: rcpt, action: {reply: {code: 999}}}\n",
        None,
        "PUT /plan",
    );
    assert!(err.unwrap_err().to_string().contains("PUT /plan:2:"));
    assert_eq!(e.plan_yaml(), before);
    assert_eq!(
        code(&probe(Stage::Rcpt, "s", "r").decide(&e, Instant::now())),
        Some(451)
    );
    e.load_bytes(
        br#"{"rules": [{"stage": "rcpt", "action": {"reply": {"code": 550}}}]}"#,
        Some("application/json"),
        "PUT /plan",
    )
    .unwrap();
    assert_eq!(
        code(&probe(Stage::Rcpt, "s", "r").decide(&e, Instant::now())),
        Some(550)
    );
    e.unload();
    assert_eq!(
        code(&probe(Stage::Rcpt, "s", "r").decide(&e, Instant::now())),
        None
    );
}

#[test]
fn referee_records_retries() {
    let t0 = Instant::now();
    let e = engine_at("rules:\n  - {stage: rcpt, first: 2, action: {reply: {code: 451}}}\n  - {stage: mail, match: {sender: 'bad@*'}, action: {reply: {code: 550}}}\n", t0);
    let at = |s: u64, stage: Stage, sender: &str| {
        code(&probe(stage, sender, "r@y").decide(&e, t0 + Duration::from_secs(s)))
    };
    assert_eq!(at(0, Stage::Rcpt, "s@x"), Some(451));
    assert_eq!(at(10, Stage::Rcpt, "s@x"), Some(451));
    assert_eq!(at(40, Stage::Rcpt, "s@x"), None);
    assert_eq!(at(41, Stage::Mail, "bad@x"), Some(550));
    assert_eq!(at(42, Stage::Mail, "bad@x"), Some(550));
    let j = e.clients_json();
    let h = &j["retry_interval_ms_by_code"]["451"];
    assert_eq!(h["count"], 2, "{j}");
    assert_eq!((h["min"].as_u64().unwrap() + 500) / 1000, 10);
    assert_eq!((h["max"].as_u64().unwrap() + 500) / 1000, 30);
    // The summary's keys are the report's shape: no p999, empty is zeros.
    let mut keys: Vec<&str> = h.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = ["count", "min", "mean", "p50", "p90", "p99", "max"];
    want.sort_unstable();
    assert_eq!(keys, want, "{j}");
    assert_eq!(j["reconnect_after_421_ms"]["min"], 0, "{j}");
    let c = &j["clients"]["192.0.2.7"];
    assert_eq!(c["resent_after_5xx"], 1, "{j}");
    assert_eq!(c["retries"], 3);
    assert_eq!(c["faults"], 4);
    let recent = j["recent_retries"].as_array().unwrap();
    assert_eq!(recent[1]["attempt"], 3, "{j}");
    let m = e.metrics_text();
    assert!(
        m.contains("mailstorm_sink_retry_interval_seconds_count{code=\"451\"} 2"),
        "{m}"
    );
}
