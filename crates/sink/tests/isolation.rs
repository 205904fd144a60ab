//! Several tests on one sink: clients told apart by EHLO name (and by
//! domain), per-client plans, filtered reports and resets.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{http, start, wait_for, Client};
use mailstorm_sink::plan::{Engine, Plan};
use mailstorm_sink::{ClientFilter, Sink, SinkHandle};

fn sink_with_engine() -> (SinkHandle, SocketAddr) {
    let sink = start(
        Sink::builder()
            .threads(2)
            .keep(100)
            .control("127.0.0.1:0".parse().unwrap())
            .fault_engine(Arc::new(Engine::new())),
    );
    let ctl = sink.control_addr().unwrap();
    (sink, ctl)
}

fn json(ctl: SocketAddr, method: &str, path: &str) -> serde_json::Value {
    let r = http(ctl, method, path, b"");
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn greet(addr: SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(addr);
    assert_eq!(c.cmd(&format!("EHLO {name}")).code, 250);
    c
}

/// One test's client: its own scoped plan (the first RCPT of each
/// recipient deferred, then a 550 for `reject@`), one message delivered
/// after the retry.
fn one_test(addr: SocketAddr, ctl: SocketAddr, name: &str, domain: &str) {
    let plan = "seed: 7\nrules:\n  - {stage: rcpt, key: rcpt, match: {recipient: 'ok@*'}, sequence: [451, 250]}\n  - {stage: rcpt, match: {recipient: 'reject@*'}, action: {reply: {code: 550, enhanced: 5.1.1}}}\n";
    let r = http(ctl, "PUT", &format!("/plan?helo={name}"), plan.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    let mut c = greet(addr, name);
    c.cmd(&format!("MAIL FROM:<me@{domain}>"))
        .expect(250, "2.1.0");
    c.cmd(&format!("RCPT TO:<ok@{domain}>"))
        .expect(451, "4.3.0");
    c.cmd(&format!("RCPT TO:<ok@{domain}>"))
        .expect(250, "2.1.5");
    c.cmd(&format!("RCPT TO:<reject@{domain}>"))
        .expect(550, "5.1.1");
    c.cmd("DATA");
    c.send(format!("Subject: {name}\r\n\r\nhi\r\n.\r\n").as_bytes());
    assert_eq!(c.reply().code, 250);
    c.cmd("QUIT");
}

#[test]
fn two_parallel_tests_never_see_each_other() {
    let (sink, ctl) = sink_with_engine();
    let addr = sink.local_addr();
    std::thread::scope(|s| {
        s.spawn(|| one_test(addr, ctl, "test-a", "a.test"));
        s.spawn(|| one_test(addr, ctl, "test-b", "b.test"));
    });
    // A client without a plan sends to A's recipient: A's plan is not its.
    let mut other = greet(addr, "test-c");
    other.cmd("MAIL FROM:<x@c.test>").expect(250, "2.1.0");
    other.cmd("RCPT TO:<ok@a.test>").expect(250, "2.1.5");
    other.cmd("QUIT");
    wait_for("three sessions closed", || {
        json(ctl, "GET", "/clients")["clients"]
            .as_object()
            .is_some_and(|m| m.values().filter(|c| c["sessions_closed"] == 1).count() == 3)
    });

    for (name, domain) in [("test-a", "a.test"), ("test-b", "b.test")] {
        let j = json(
            ctl,
            "GET",
            &format!("/clients?helo={}", name.to_uppercase()),
        );
        let clients = j["clients"].as_object().unwrap();
        assert_eq!(clients.keys().collect::<Vec<_>>(), [name], "{j}");
        let c = &clients[name];
        // 451 and 550 are faults; the sequence's 250 is an accept.
        assert_eq!(c["faults"], 2, "{j}");
        assert_eq!(c["retries"], 1, "{j}");
        assert_eq!(c["messages"], 1, "{j}");
        assert_eq!(c["ips"][0], "127.0.0.1");
        assert!(
            c["domains"].as_array().unwrap().iter().any(|d| d == domain),
            "{j}"
        );
        // By domain: this client (and test-c, which also wrote to
        // a.test), never the other test's.
        let j = json(ctl, "GET", &format!("/clients?domain={domain}"));
        let other = if name == "test-a" { "test-b" } else { "test-a" };
        assert!(j["clients"][name].is_object(), "{j}");
        assert!(j["clients"][other].is_null(), "{j}");
        let m = json(ctl, "GET", &format!("/messages?helo={name}"));
        let m = m.as_array().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["subject"], name);
        let m = json(ctl, "GET", &format!("/messages?domain={domain}"));
        assert_eq!(m.as_array().unwrap().len(), 1);
        let v = json(ctl, "GET", &format!("/verdicts?helo={name}"));
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["client"], name);
    }
    let c = &json(ctl, "GET", "/clients?helo=test-c")["clients"]["test-c"];
    assert_eq!(c["faults"], 0, "{c}");
    // The scoped plans read back, and are theirs only.
    let r = http(ctl, "GET", "/plan?helo=test-a", b"");
    assert!(
        r.status == 200 && r.text().contains("seed: 7"),
        "{}",
        r.text()
    );
    assert_eq!(http(ctl, "GET", "/plan?helo=test-c", b"").status, 404);

    // Resetting A forgets A only: records, messages, plan state.
    assert_eq!(http(ctl, "POST", "/reset?helo=test-a", b"").status, 204);
    assert!(json(ctl, "GET", "/clients?helo=test-a")["clients"]
        .as_object()
        .unwrap()
        .is_empty());
    assert!(json(ctl, "GET", "/messages?helo=test-a")
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        json(ctl, "GET", "/clients?helo=test-b")["clients"]["test-b"]["faults"],
        2
    );
    assert_eq!(
        json(ctl, "GET", "/messages?helo=test-b")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A's sequence starts again; B's state is kept (its next attempt of
    // the same recipient is the sequence's second step).
    let mut a = greet(addr, "test-a");
    a.cmd("MAIL FROM:<me@a.test>").expect(250, "2.1.0");
    a.cmd("RCPT TO:<ok@a.test>").expect(451, "4.3.0");
    let mut b = greet(addr, "test-b");
    b.cmd("MAIL FROM:<me@b.test>").expect(250, "2.1.0");
    b.cmd("RCPT TO:<ok@b.test>").expect(250, "2.1.5");
    a.cmd("QUIT");
    b.cmd("QUIT");

    // Deleting a scoped plan: normal behaviour for that client.
    assert_eq!(http(ctl, "DELETE", "/plan?helo=test-b", b"").status, 204);
    assert_eq!(http(ctl, "DELETE", "/plan?helo=test-b", b"").status, 404);
    let mut b = greet(addr, "test-b");
    b.cmd("MAIL FROM:<me@b.test>").expect(250, "2.1.0");
    b.cmd("RCPT TO:<reject@b.test>").expect(250, "2.1.5");
    b.cmd("QUIT");
    // DELETE /messages?helo= forgets that client's messages only.
    assert_eq!(
        http(ctl, "DELETE", "/messages?helo=test-b", b"").status,
        204
    );
    assert!(json(ctl, "GET", "/messages").as_array().unwrap().is_empty());
    // An unknown filter parameter is refused.
    assert_eq!(http(ctl, "GET", "/clients?hello=x", b"").status, 400);
}

#[test]
fn a_filtered_reset_drops_that_clients_state_in_the_global_plan() {
    let engine = Arc::new(Engine::new());
    engine.load(
        Plan::from_yaml_str(
            "rules:\n  - {stage: rcpt, key: rcpt, sequence: [451, 250]}\n",
            "test",
        )
        .unwrap(),
    );
    let sink = start(Sink::builder().threads(1).fault_engine(engine.clone()));
    let addr = sink.local_addr();
    let first = |name: &str, rcpt: &str| {
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        let code = c.cmd(&format!("RCPT TO:<{rcpt}>")).code;
        c.cmd("QUIT");
        code
    };
    assert_eq!(first("test-a", "a@a.test"), 451);
    assert_eq!(first("test-b", "b@b.test"), 451);
    assert_eq!(engine.state_len(), 2);
    sink.reset(&ClientFilter::helo("test-a"));
    assert_eq!(engine.state_len(), 1, "only A's counter dropped");
    assert_eq!(first("test-a", "a@a.test"), 451, "A starts afresh");
    assert_eq!(first("test-b", "b@b.test"), 250, "B's state kept");
}

#[test]
fn retries_are_told_apart_by_client_id() {
    // Two clients, same sender and recipient, different EHLO names: one's
    // attempt is not the other's retry.
    let engine = Arc::new(Engine::new());
    engine.load(
        Plan::from_yaml_str(
            "rules:\n  - {stage: rcpt, key: triplet, first: 1, action: {reply: {code: 451}}}\n",
            "test",
        )
        .unwrap(),
    );
    let sink = start(Sink::builder().threads(1).fault_engine(engine.clone()));
    let addr = sink.local_addr();
    for name in ["one", "two"] {
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        let _ = c.cmd("RCPT TO:<r@y.test>");
        c.cmd("QUIT");
    }
    wait_for("both closed", || {
        sink.clients(&ClientFilter::all())
            .unwrap()
            .clients
            .values()
            .map(|c| c.sessions_closed)
            .sum::<u64>()
            == 2
    });
    let r = sink.clients(&ClientFilter::all()).unwrap();
    assert_eq!(r.clients["one"].retries, 0, "{r:?}");
    assert_eq!(r.clients["two"].retries, 0, "{r:?}");
    assert!(r.recent_retries.is_empty());
}

#[test]
fn scoped_plans_are_bounded() {
    let e = Engine::new();
    let plan = || Plan::from_yaml_str("rules: []\n", "t").unwrap();
    for i in 0..mailstorm_sink::plan::MAX_SCOPED_PLANS {
        e.load_scoped(&format!("c{i}"), plan()).unwrap();
    }
    let err = e.load_scoped("one-more", plan()).unwrap_err().to_string();
    assert!(err.contains("too many scoped plans"), "{err}");
    // Replacing an existing one is fine.
    e.load_scoped("C1", plan()).unwrap();
    assert!(e.unload_scoped("c1"));
    e.load_scoped("one-more", plan()).unwrap();
}

#[test]
fn scoped_plans_share_a_budget_of_rules_and_text() {
    use mailstorm_sink::plan::{MAX_RULES, MAX_SCOPED_RULES, MAX_SCOPED_TEXT};
    // Each PUT of a plan of 10,000 one-line rules held ~75 MiB, so 4096
    // scoped plans could take hundreds of GiB: the rules are budgeted.
    let e = Engine::new();
    let rules = |n: usize| {
        let mut y = String::from("rules:\n");
        for _ in 0..n {
            y.push_str("  - {stage: rcpt, action: {reply: {code: 451}}}\n");
        }
        Plan::from_yaml_str(&y, "t").unwrap()
    };
    let full = MAX_SCOPED_RULES / MAX_RULES;
    for i in 0..full {
        e.load_scoped(&format!("big{i}"), rules(MAX_RULES)).unwrap();
    }
    let left = MAX_SCOPED_RULES - full * MAX_RULES;
    e.load_scoped("last", rules(left)).unwrap();
    let err = e.load_scoped("one-more", rules(1)).unwrap_err().to_string();
    assert!(
        err.contains(&format!("would hold {} rules", MAX_SCOPED_RULES + 1)),
        "{err}"
    );
    // Replacing a plan counts it once, not twice; removing one frees room.
    e.load_scoped("big0", rules(MAX_RULES)).unwrap();
    assert!(e.unload_scoped("last"));
    e.load_scoped("one-more", rules(1)).unwrap();

    // Text: a few rules with long patterns are budgeted by their bytes.
    let e = Engine::new();
    let pattern = "x".repeat(1 << 20);
    let long = || {
        let yaml = format!(
            "rules:\n  - {{stage: rcpt, match: {{recipient: \"{pattern}\"}}, action: {{reply: {{code: 550}}}}}}\n"
        );
        Plan::from_yaml_str(&yaml, "t").unwrap()
    };
    let fit = MAX_SCOPED_TEXT / long().text_len();
    for i in 0..fit {
        e.load_scoped(&format!("t{i}"), long()).unwrap();
    }
    let err = e.load_scoped("t-more", long()).unwrap_err().to_string();
    assert!(err.contains("bytes of plan text in all"), "{err}");
}

/// One traced message (run `run`, sequence `seq`) from a client greeting
/// as `helo`, to a recipient in `domain`.
fn traced(addr: SocketAddr, helo: &str, domain: &str, run: &str, seq: u64) {
    let mut c = greet(addr, helo);
    c.cmd("MAIL FROM:<s@blaster.test>").expect(250, "2.1.0");
    c.cmd(&format!("RCPT TO:<u@{domain}>")).expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    let mut m = Vec::new();
    mailstorm_proto::trace::Template::new(run, 1).write(&mut m, seq, 1, 1);
    m.extend_from_slice(b"Subject: t\r\n\r\nhi\r\n.\r\n");
    c.send(&m);
    assert_eq!(c.reply().code, 250);
    c.cmd("QUIT");
}

fn runs_of(v: &serde_json::Value) -> Vec<String> {
    let mut r: Vec<String> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap().to_owned())
        .collect();
    r.sort();
    r
}

#[test]
fn the_ledger_lists_one_tests_runs_and_a_filtered_reset_drops_only_them() {
    let (sink, ctl) = sink_with_engine();
    let addr = sink.local_addr();
    traced(addr, "Test-A", "a.test", "run-a", 0);
    traced(addr, "test-a", "a.test", "run-a", 1);
    traced(addr, "test-b", "b.test", "run-b", 0);
    // A run two tests delivered to (a shared run id): listed for both,
    // dropped by neither's reset.
    traced(addr, "test-a", "a.test", "run-ab", 0);
    traced(addr, "test-b", "b.test", "run-ab", 1);

    let all = json(ctl, "GET", "/ledger");
    assert_eq!(runs_of(&all), ["run-a", "run-ab", "run-b"]);
    assert_eq!(
        runs_of(&json(ctl, "GET", "/ledger?helo=TEST-A")),
        ["run-a", "run-ab"]
    );
    assert_eq!(
        runs_of(&json(ctl, "GET", "/ledger?domain=b.test")),
        ["run-ab", "run-b"]
    );
    assert_eq!(
        runs_of(&json(ctl, "GET", "/ledger?helo=test-a&domain=b.test")),
        ["run-ab"]
    );
    assert!(runs_of(&json(ctl, "GET", "/ledger?helo=nobody")).is_empty());
    let a = json(ctl, "GET", "/ledger/run-a?helo=test-a");
    assert_eq!(
        (a["messages"].as_u64(), a["unique"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(a["clients"], serde_json::json!(["test-a"]));
    assert_eq!(a["domains"], serde_json::json!(["blaster.test", "a.test"]));
    assert_eq!(
        http(ctl, "GET", "/ledger/run-a?helo=test-b", b"").status,
        404
    );
    assert_eq!(
        http(ctl, "GET", "/ledger?hello=test-a", b"").status,
        400,
        "a typo is refused"
    );
    // The Rust handle gives the same.
    let list = sink.ledger_runs(&ClientFilter::helo("test-b"));
    let mut ids: Vec<&str> = list.runs.iter().map(|r| r.run.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["run-ab", "run-b"]);

    assert_eq!(http(ctl, "POST", "/reset?helo=test-a", b"").status, 204);
    assert_eq!(
        runs_of(&json(ctl, "GET", "/ledger")),
        ["run-ab", "run-b"],
        "test-a's own run dropped, the shared one kept"
    );
}

/// The referee's per-client domains: every domain a session used is
/// reported once, in first-use order, whether the same domain comes back
/// in a row (the session skips it without hashing), alternates with
/// others, or differs only in case or by a longer name ending in it.
#[test]
fn client_domains_are_each_reported_once() {
    let (sink, ctl) = sink_with_engine();
    let plan = "seed: 1\nrules:\n  - {stage: rcpt, match: {recipient: 'never@*'}, action: {reply: {code: 550}}}\n";
    assert_eq!(http(ctl, "PUT", "/plan", plan.as_bytes()).status, 204);
    let mut c = greet(sink.local_addr(), "domains.test");
    for (from, to) in [
        ("a@one.test", ["x@two.test", "y@two.test", "z@three.test"]),
        ("b@one.test", ["x@TWO.test", "q@sub.two.test", "r@two.test"]),
        (
            "\"c@x\"@four.test",
            [
                "\"@\"@two.test",
                "s@a-very-long-domain-name-past-32-bytes.test",
                "t@a-very-long-domain-name-past-32-bytes.test",
            ],
        ),
    ] {
        c.cmd(&format!("MAIL FROM:<{from}>")).expect(250, "2.1.0");
        for r in to {
            c.cmd(&format!("RCPT TO:<{r}>")).expect(250, "2.1.5");
        }
        c.cmd("RSET");
    }
    c.cmd("QUIT");
    wait_for("the session closed", || {
        json(ctl, "GET", "/clients")["clients"]["domains.test"]["sessions_closed"] == 1
    });
    let j = json(ctl, "GET", "/clients");
    let mut domains: Vec<String> = j["clients"]["domains.test"]["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    domains.sort();
    assert_eq!(
        domains,
        [
            "a-very-long-domain-name-past-32-bytes.test",
            "four.test",
            "one.test",
            "sub.two.test",
            "three.test",
            "two.test",
        ],
        "{j}"
    );
}
