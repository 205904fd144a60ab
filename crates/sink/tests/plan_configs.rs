//! The ready plans in `configs/` load and behave as their comments say.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailstorm_sink::plan::{Engine, FaultAction, Plan, Probe, Verdict};
use mailstorm_sink::Stage;

fn load(name: &str, t0: Instant) -> Engine {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name);
    let plan = Plan::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!plan.spec().rules.is_empty(), "{name}");
    let e = Engine::new();
    e.load_at(plan, t0);
    e
}

fn peer() -> SocketAddr {
    "192.0.2.1:5000".parse().unwrap()
}

fn rcpt(rcpt: &str) -> Probe {
    let mut p = Probe::new(Stage::Rcpt, 1, peer());
    p.sender = Some("s@example.test".into());
    p.rcpt = Some(rcpt.into());
    p
}

fn end(headers: &str) -> Probe {
    let mut p = Probe::new(Stage::DataEnd, 1, peer());
    p.sender = Some("s@example.test".into());
    p.recipients = vec!["r@example.test".into()];
    p.message = Some(format!("{headers}\r\n\r\nbody\r\n").into_bytes());
    p
}

fn code(v: &Option<Verdict>) -> Option<u16> {
    v.as_ref().and_then(|v| v.code())
}

#[test]
fn greylisting() {
    let t0 = Instant::now();
    let e = load("greylisting.yaml", t0);
    let at = |s: u64| code(&rcpt("r@example.test").decide(&e, t0 + Duration::from_secs(s)));
    assert_eq!(
        [at(0), at(30), at(61), at(62)],
        [Some(450), Some(450), None, None]
    );
}

#[test]
fn flaky_relay() {
    let t0 = Instant::now();
    let e = load("flaky-relay.yaml", t0);
    let verdicts: Vec<Verdict> = (0..4000)
        .filter_map(|i| rcpt(&format!("u{i}@example.test")).decide(&e, t0))
        .collect();
    let tempfail = verdicts.iter().filter(|v| v.code() == Some(451)).count();
    assert!((80..=160).contains(&tempfail), "{tempfail} of 4000");
    assert!(verdicts.iter().any(|v| v.delay.is_some()), "rcpt latency");
    let ends: Vec<Verdict> = (0..4000)
        .filter_map(|i| {
            let mut p = end("Subject: x");
            p.recipients = vec![format!("u{i}@example.test")];
            p.decide(&e, t0)
        })
        .collect();
    let closes = ends.iter().filter(|v| v.code() == Some(421)).count();
    assert!((5..=45).contains(&closes), "{closes}");
    let mut delays: Vec<Duration> = ends.iter().filter_map(|v| v.delay).collect();
    delays.sort();
    let median = delays[delays.len() / 2];
    assert!(
        (Duration::from_millis(50)..Duration::from_millis(130)).contains(&median),
        "{median:?}"
    );
}

#[test]
fn overloaded() {
    let t0 = Instant::now();
    let e = load("overloaded.yaml", t0);
    let mut refused = 0;
    for id in 1..=12 {
        assert!(e.session_opened(peer(), t0));
        let v = Probe::new(Stage::Connect, id, peer())
            .decide(&e, t0)
            .unwrap();
        if v.code() == Some(421) {
            refused += 1;
        } else {
            assert!(v.delay.is_some(), "slow banner");
        }
    }
    assert_eq!(refused, 2, "connections 11 and 12");
    let mail = |ms: u64| {
        let mut p = Probe::new(Stage::Mail, 1, peer());
        p.command = "MAIL FROM:<s@example.test>".into();
        code(&p.decide(&e, t0 + Duration::from_millis(ms)))
    };
    let burst: Vec<Option<u16>> = (0..101).map(|_| mail(0)).collect();
    assert_eq!(burst.iter().filter(|c| c.is_some()).count(), 1, "the 101st");
    assert_eq!(mail(100), None, "refilled 1 token in 100 ms");
}

#[test]
fn spam_filter() {
    let e = load("spam-filter.yaml", Instant::now());
    let now = Instant::now();
    let v = end("X-Spam-Flag: YES\r\nSubject: hi")
        .decide(&e, now)
        .unwrap();
    assert!(
        matches!(&v.outcome, FaultAction::Reply { code: 554, enhanced, .. } if enhanced == "5.7.1")
    );
    assert_eq!(
        code(&end("Subject: You are a LOTTERY WINNER").decide(&e, now)),
        Some(554)
    );
    assert_eq!(
        code(&end("Subject: minutes of the meeting").decide(&e, now)),
        None
    );
    assert_eq!(code(&end("X-Spam-Flag: NO").decide(&e, now)), None);
}

#[test]
fn outage() {
    let t0 = Instant::now();
    let e = load("outage.yaml", t0);
    let at = |s: u64| {
        code(&Probe::new(Stage::Connect, 1, peer()).decide(&e, t0 + Duration::from_secs(s)))
    };
    assert_eq!(
        [at(0), at(19), at(20), at(59), at(61)],
        [Some(421), Some(421), None, None, Some(421)]
    );
}

#[test]
fn slow_relay() {
    let e = load("slow-relay.yaml", Instant::now());
    let v = Probe::new(Stage::Connect, 1, peer())
        .decide(&e, Instant::now())
        .unwrap();
    assert_eq!(v.throttle, Some(65536));
    assert!(v.delay.is_some());
    let v = end("Subject: x").decide(&e, Instant::now()).unwrap();
    assert!(
        v.delay.unwrap() >= Duration::from_millis(800),
        "pareto scale"
    );
}

#[test]
fn mailbox_errors() {
    let e = load("mailbox-errors.yaml", Instant::now());
    let now = Instant::now();
    for (to, want) in [
        ("unknown-1@example.test", Some(550)),
        ("full-1@example.test", Some(552)),
        ("quota-1@example.test", Some(452)),
        ("disabled-1@example.test", Some(550)),
        ("moved-1@example.test", Some(551)),
        ("alice@example.test", None),
    ] {
        assert_eq!(code(&rcpt(to).decide(&e, now)), want, "{to}");
    }
}

/// The plan shown in README.md is real: it loads, and its first rule answers
/// a matching recipient with 550 5.1.1.
#[test]
fn readme_example_plan_loads() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```yaml\n")
        .expect("README has a ```yaml block")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").expect("the block is closed");
    let plan = Plan::from_yaml_str(&readme[start..end], "README.md")
        .unwrap_or_else(|e| panic!("README's plan example does not load: {e}"));
    let t0 = Instant::now();
    let e = Engine::new();
    e.load_at(plan, t0);
    assert_eq!(
        code(&rcpt("nobody7@example.test").decide(&e, t0)),
        Some(550)
    );
}

/// The benchmark's plans load, and its one-rule plans are the faults-only
/// plan's rules word for word (same seed, same rule), as their comments
/// promise: the plans table compares them with that row.
#[test]
fn bench_plans_load_and_one_rule_plans_match_faults_only() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/bench");
    let yaml = |name: &str| -> serde_yaml::Value {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let mut plans = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let plan = Plan::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!plan.spec().rules.is_empty(), "{}", path.display());
            plans += 1;
        }
    }
    assert!(plans >= 6, "{plans} plans in configs/bench");
    let whole = yaml("flaky-relay-faults-only.yaml");
    let rules = whole["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 2);
    for (file, rule) in [
        ("faults-only-rcpt-451.yaml", &rules[0]),
        ("faults-only-data-end-421.yaml", &rules[1]),
    ] {
        let one = yaml(file);
        assert_eq!(one["seed"], whole["seed"], "{file}");
        assert_eq!(
            one["rules"].as_sequence().unwrap(),
            std::slice::from_ref(rule),
            "{file}"
        );
    }
}
