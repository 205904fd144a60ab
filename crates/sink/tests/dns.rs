//! The DNS responder (`--dns`) asked by a real client, `dig`: the default
//! zone built from the listeners, a zone file, TCP, and every DNS fault a
//! plan can inject at stage dns.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dig, http};
use mailstorm_sink::{plan::Engine, Sink, SinkHandle};

/// The answer section's records as `(type, data)`.
fn answers(out: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut in_answer = false;
    for l in out.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if l.trim().is_empty() {
                break;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            v.push((f[3].to_string(), f[4..].join(" ")));
        }
    }
    v
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
}

fn start(zone: Option<&str>, plan: Option<&str>) -> SinkHandle {
    let mut b = Sink::builder()
        .listen("127.0.0.2:0".parse().unwrap())
        .listen("127.0.0.3:0".parse().unwrap());
    let c = b.config_mut();
    c.dns = Some("127.0.0.1:0".parse().unwrap());
    if let Some(z) = zone {
        let p = std::env::temp_dir().join(format!(
            "mailstorm-zone-{}-{}.yaml",
            std::process::id(),
            z.len()
        ));
        std::fs::write(&p, z).unwrap();
        c.dns_zone = Some(p);
    }
    let engine = Arc::new(Engine::new());
    if let Some(p) = plan {
        engine.load_bytes(p.as_bytes(), None, "plan.yaml").unwrap();
    }
    b.fault_engine(engine).start().unwrap()
}

#[test]
fn default_zone_points_at_the_listeners() {
    let sink = start(None, None);
    let dns = sink.dns_addr().unwrap();
    let out = dig(dns, "MX", "example.test", &[], 2);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains(" aa"), "authoritative: {out}");
    let mut mx = answers(&out);
    mx.sort();
    assert_eq!(
        mx,
        vec![
            ("MX".into(), "10 mx1.example.test.".into()),
            ("MX".into(), "20 mx2.example.test.".into())
        ],
        "{out}"
    );
    let out = dig(dns, "A", "mx2.example.test", &[], 2);
    assert_eq!(
        answers(&out),
        vec![("A".into(), "127.0.0.3".into())],
        "{out}"
    );
    // TCP answers the same.
    let out = dig(dns, "A", "MX1.Example.Test.", &["+tcp"], 2);
    assert_eq!(
        answers(&out),
        vec![("A".into(), "127.0.0.2".into())],
        "{out}"
    );
    // Not in the zone: NXDOMAIN; in the zone without that type: NODATA.
    assert_eq!(status(&dig(dns, "MX", "nowhere.test", &[], 2)), "NXDOMAIN");
    let out = dig(dns, "AAAA", "mx1.example.test", &[], 2);
    assert_eq!((status(&out), answers(&out).len()), ("NOERROR", 0), "{out}");
    let s = sink.dns_stats().unwrap();
    assert_eq!((s.queries, s.tcp, s.outcomes.nxdomain), (5, 1, 1), "{s:?}");
    assert_eq!(s.clients.values().sum::<u64>(), 5, "{s:?}");
    sink.shutdown();
}

const ZONE: &str = "\
ttl: 30s
names:
  example.test:
    mx: [{preference: 5, host: mx.example.test}]
  mx.example.test: {addresses: [127.0.0.2, '::1'], ttl: 7s}
  slow.test: {addresses: [127.0.0.2]}
  fail.test: {addresses: [127.0.0.2]}
  gone.test: {addresses: [127.0.0.2]}
  mute.test: {addresses: [127.0.0.2]}
  big.test: {mx: [{preference: 1, host: mx.example.test}]}
  flaky.test: {addresses: [127.0.0.2]}
";

const PLAN: &str = "\
seed: 7
rules:
  - {stage: dns, match: {qname: slow.test}, action: {delay: 400ms}}
  - {stage: dns, match: {qname: fail.test}, action: {dns: servfail}}
  - {stage: dns, match: {qname: gone.test, qtype: A}, action: {dns: nxdomain}}
  - {stage: dns, match: {qname: mute.test}, action: {dns: no_answer}}
  - {stage: dns, match: {qname: big.test}, action: {dns: truncate}}
  - {stage: dns, match: {qname: flaky.test}, every: 2, action: {dns: servfail}}
  # `any` never decides a DNS query.
  - {stage: any, action: {reply: {code: 421}}}
";

#[test]
fn zone_file_and_injected_faults() {
    let sink = start(Some(ZONE), Some(PLAN));
    let dns = sink.dns_addr().unwrap();
    let out = dig(dns, "AAAA", "mx.example.test", &[], 2);
    let a = answers(&out);
    assert_eq!(a, vec![("AAAA".into(), "::1".into())], "{out}");
    assert!(
        out.contains("mx.example.test.\t7\tIN") || out.contains(" 7 IN"),
        "per-name TTL: {out}"
    );

    let t = Instant::now();
    let out = dig(dns, "A", "slow.test", &[], 3);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        answers(&out),
        vec![("A".into(), "127.0.0.2".into())],
        "{out}"
    );

    assert_eq!(status(&dig(dns, "A", "fail.test", &[], 2)), "SERVFAIL");
    assert_eq!(status(&dig(dns, "A", "gone.test", &[], 2)), "NXDOMAIN");
    // qtype: only A is faulted.
    assert_eq!(status(&dig(dns, "MX", "gone.test", &[], 2)), "NOERROR");

    let t = Instant::now();
    let out = dig(dns, "A", "mute.test", &[], 1);
    assert!(
        out.contains("timed out") || out.contains("no servers could be reached"),
        "{out}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // Truncated over UDP: dig retries over TCP and gets the answer.
    let out = dig(dns, "MX", "big.test", &[], 2);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(
        answers(&out),
        vec![("MX".into(), "1 mx.example.test.".into())],
        "{out}"
    );
    // Without the retry the client sees the TC bit.
    let out = dig(dns, "MX", "big.test", &["+ignore"], 2);
    assert!(out.contains(" tc"), "{out}");

    // every: 2 → the 2nd and 4th queries fail.
    let got: Vec<String> = (0..4)
        .map(|_| status(&dig(dns, "A", "flaky.test", &[], 2)).to_string())
        .collect();
    assert_eq!(got, ["NOERROR", "SERVFAIL", "NOERROR", "SERVFAIL"]);

    let s = sink.dns_stats().unwrap();
    assert_eq!(
        (
            s.outcomes.servfail,
            s.outcomes.no_answer,
            s.outcomes.truncated,
            s.delayed
        ),
        (3, 1, 2, 1),
        "{s:?}"
    );
    assert_eq!(s.outcomes.nxdomain, 1, "{s:?}");
    assert_eq!(s.tcp, 1, "{s:?}");
    sink.shutdown();
}

#[test]
fn bad_zone_file_names_line_and_key() {
    let mut b = Sink::builder();
    let p = std::env::temp_dir().join(format!("mailstorm-badzone-{}.yaml", std::process::id()));
    std::fs::write(
        &p,
        "names:\n  example.test:\n    mx:\n      - {preference: 10, hots: a.test}\n",
    )
    .unwrap();
    let c = b.config_mut();
    c.dns = Some("127.0.0.1:0".parse().unwrap());
    c.dns_zone = Some(p.clone());
    let e = b.start().unwrap_err().to_string();
    assert!(e.contains(&format!("{}:4:", p.display())), "{e}");
    assert!(
        e.contains("names.example.test.mx[0]") && e.contains("hots"),
        "{e}"
    );
}

#[test]
fn dns_rules_are_checked() {
    let e = Engine::new()
        .load_bytes(
            b"rules:\n  - {stage: rcpt, action: {dns: servfail}}\n",
            None,
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.yaml:2:") && e.contains("action.dns") && e.contains("stage rcpt"),
        "{e}"
    );
    let e = Engine::new()
        .load_bytes(
            b"rules:\n  - {stage: dns, action: {reply: {code: 421}}}\n",
            None,
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("action.reply") && e.contains("stage dns"), "{e}");
}

#[test]
fn control_api_serves_dns_counts_per_client() {
    use std::io::{Read, Write};
    let mut b = Sink::builder().listen("127.0.0.2:0".parse().unwrap());
    b.config_mut().dns = Some("127.0.0.1:0".parse().unwrap());
    let sink = b.control("127.0.0.1:0".parse().unwrap()).start().unwrap();
    let dns = sink.dns_addr().unwrap();
    for _ in 0..3 {
        dig(dns, "MX", "example.test", &[], 2);
    }
    let mut s = std::net::TcpStream::connect(sink.control_addr().unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /dns HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["queries"], 3, "{v}");
    assert_eq!(v["clients"]["127.0.0.1"], 3, "{v}");
}

const SEQ_PLAN: &str = "\
seed: 11
rules:
  - {stage: dns, match: {qname: seq.test}, sequence: [servfail, nxdomain, servfail, answer]}
";

#[test]
fn sequence_at_stage_dns_gives_outcomes_in_order() {
    let zone = "names:\n  seq.test: {addresses: [127.0.0.2]}\n";
    let run = || {
        let sink = start(Some(zone), Some(SEQ_PLAN));
        let dns = sink.dns_addr().unwrap();
        let got: Vec<String> = (0..6)
            .map(|_| status(&dig(dns, "A", "seq.test", &[], 2)).to_string())
            .collect();
        let report = sink.clients(&mailstorm_sink::ClientFilter::all()).unwrap();
        sink.shutdown();
        (got, report.clients["127.0.0.1"].dns)
    };
    let (first, dns) = run();
    // The n-th query gets the n-th step; then the last repeats.
    assert_eq!(
        first,
        ["SERVFAIL", "NXDOMAIN", "SERVFAIL", "NOERROR", "NOERROR", "NOERROR"]
    );
    assert_eq!(
        (
            dns.queries,
            dns.outcomes.servfail,
            dns.outcomes.nxdomain,
            dns.outcomes.answered
        ),
        (6, 2, 1, 3),
        "{dns:?}"
    );
    // Deterministic: a fresh sink with the same plan gives the same.
    assert_eq!(run().0, first);
}

#[test]
fn sequence_steps_are_checked_against_the_stage() {
    let err = |plan: &str| {
        Engine::new()
            .load_bytes(plan.as_bytes(), None, "p.yaml")
            .unwrap_err()
            .to_string()
    };
    // A misspelt step: at the step's own line and column.
    let e = err("rules:\n  - stage: dns\n    sequence: [servfail, servfial]\n");
    assert!(
        e.starts_with("p.yaml:3:26:") && e.contains("servfial") && e.contains("answer, servfail"),
        "{e}"
    );
    // A reply code at stage dns, a DNS outcome at an SMTP stage.
    let e = err("rules:\n  - {stage: dns, sequence: [servfail, 451]}\n");
    assert!(
        e.starts_with("p.yaml:2:") && e.contains("451 is a reply code") && e.contains("stage dns"),
        "{e}"
    );
    let e = err("rules:\n  - {stage: rcpt, sequence: [451, servfail]}\n");
    assert!(
        e.starts_with("p.yaml:2:") && e.contains("`servfail` is a DNS outcome"),
        "{e}"
    );
    // The sequence decides the outcome: no `dns` action beside it.
    let e = err("rules:\n  - {stage: dns, sequence: [answer], action: {dns: servfail}}\n");
    assert!(e.contains("cannot be combined") && e.contains("dns"), "{e}");
    // A delay may accompany it.
    Engine::new()
        .load_bytes(
            b"rules:\n  - {stage: dns, sequence: [servfail, answer], action: {delay: 10ms}}\n",
            None,
            "p.yaml",
        )
        .unwrap();
}

#[test]
fn referee_reports_dns_queries_per_client() {
    let mut b = Sink::builder().listen("127.0.0.2:0".parse().unwrap());
    b.config_mut().dns = Some("127.0.0.1:0".parse().unwrap());
    let sink = b
        .control("127.0.0.1:0".parse().unwrap())
        .fault_engine(Arc::new(Engine::new()))
        .start()
        .unwrap();
    let dns = sink.dns_addr().unwrap();
    for _ in 0..4 {
        dig(dns, "MX", "example.test", &[], 2);
    }
    dig(dns, "A", "nowhere.test", &[], 2);
    let reply = http(sink.control_addr().unwrap(), "GET", "/clients", b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let c = &v["clients"]["127.0.0.1"]["dns"];
    assert_eq!(c["queries"], 5, "{v}");
    assert_eq!(
        (&c["answered"], &c["nxdomain"]),
        (&4.into(), &1.into()),
        "{v}"
    );
    // The same through the Rust handle, and a filter on the IP's entry.
    let r = sink
        .clients(&mailstorm_sink::ClientFilter::helo("127.0.0.1"))
        .unwrap();
    assert_eq!(r.clients.len(), 1);
    assert_eq!(r.clients["127.0.0.1"].dns.queries, 5);
    sink.shutdown();
}
