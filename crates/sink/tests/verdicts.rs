//! Verdicts: every rule fails for a scripted misbehaving client and passes
//! for a correct one; `untested` without evidence; the `expect:` policy.
//!
//! The "correct" clients wait out their backoff (a few hundred ms, with the
//! policy's minimum intervals lowered by `expect:` to keep the test fast):
//! that wait is the behaviour under test, not a synchronisation.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{http, start, wait_for, Client};
use mailstorm_sink::plan::{Engine, Outcome, Plan};
use mailstorm_sink::{ClientFilter, Sink, SinkHandle};

/// Lowered minimum intervals: a correct client waits `BACKOFF`.
const EXPECT: &str =
    "expect: 'retry_4xx_min_interval>=200ms, reconnect_after_421>=200ms, retries_per_4xx<=2'\n";
const BACKOFF: Duration = Duration::from_millis(300);

fn sink() -> SinkHandle {
    start(
        Sink::builder()
            .threads(1)
            .max_message_size(1000)
            .control("127.0.0.1:0".parse().unwrap())
            .fault_engine(Arc::new(Engine::new())),
    )
}

/// Loads `rules` (YAML list items) with the test policy for client `name`.
fn plan_for(sink: &SinkHandle, name: &str, rules: &str) {
    let yaml = format!("{EXPECT}rules:\n{rules}");
    sink.put_scoped_plan(name, Plan::from_yaml_str(&yaml, name).unwrap())
        .unwrap();
}

fn greet(addr: SocketAddr, name: &str) -> Client {
    let mut c = Client::connect(addr);
    assert_eq!(c.cmd(&format!("EHLO {name}")).code, 250);
    c
}

/// `name`'s result for `rule`, once its `sessions` sessions have closed.
fn rule(sink: &SinkHandle, name: &str, sessions: u64, rule: &str) -> (Outcome, String) {
    wait_for("sessions closed", || {
        sink.clients(&ClientFilter::helo(name))
            .unwrap()
            .clients
            .get(name)
            .is_some_and(|c| c.sessions_closed == sessions)
    });
    let v = sink.verdict(name).expect("a verdict");
    let r = v.rules.iter().find(|r| r.rule == rule).unwrap();
    (r.result, format!("{v:#?}"))
}

#[track_caller]
fn assert_rule(sink: &SinkHandle, name: &str, sessions: u64, which: &str, want: Outcome) {
    let (got, v) = rule(sink, name, sessions, which);
    assert_eq!(got, want, "{name} / {which}: {v}");
}

const SEQ_451: &str = "  - {stage: rcpt, key: rcpt, sequence: [451, 250]}\n";

#[test]
fn retry_4xx_min_interval() {
    let sink = sink();
    let addr = sink.local_addr();
    for (name, wait, want) in [
        ("fast-retry", Duration::ZERO, Outcome::Fail),
        ("slow-retry", BACKOFF, Outcome::Pass),
    ] {
        plan_for(&sink, name, SEQ_451);
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        assert_eq!(c.cmd("RCPT TO:<r@y.test>").code, 451);
        std::thread::sleep(wait);
        assert_eq!(c.cmd("RCPT TO:<r@y.test>").code, 250);
        c.cmd("QUIT");
        assert_rule(&sink, name, 1, "retry_4xx_min_interval", want);
    }
    let v = sink.verdict("fast-retry").unwrap();
    assert_eq!(v.verdict, Outcome::Fail);
    let r = &v.rules[0];
    assert_eq!(r.expression, "retry_4xx_min_interval>=200ms");
    assert!(
        r.evidence[0].starts_with("rcpt fast-retry <s@x.test> <r@y.test>: retried ")
            && r.evidence[0].ends_with("after 451"),
        "{r:?}"
    );
    assert_eq!(sink.verdict("slow-retry").unwrap().verdict, Outcome::Pass);
}

#[test]
fn retries_per_4xx() {
    let sink = sink();
    let addr = sink.local_addr();
    for (name, attempts, want) in [
        ("stubborn", 4, Outcome::Fail),
        ("gives-up", 2, Outcome::Pass),
    ] {
        plan_for(
            &sink,
            name,
            "  - {stage: rcpt, action: {reply: {code: 451}}}\n",
        );
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        for _ in 0..attempts {
            assert_eq!(c.cmd("RCPT TO:<r@y.test>").code, 451);
        }
        c.cmd("QUIT");
        assert_rule(&sink, name, 1, "retries_per_4xx", want);
    }
}

#[test]
fn resent_after_5xx() {
    let sink = sink();
    let addr = sink.local_addr();
    for (name, resend, want) in [
        ("resender", true, Outcome::Fail),
        ("bouncer", false, Outcome::Pass),
    ] {
        plan_for(
            &sink,
            name,
            "  - {stage: rcpt, action: {reply: {code: 550, enhanced: 5.1.1}}}\n",
        );
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        c.cmd("RCPT TO:<r@y.test>").expect(550, "5.1.1");
        if resend {
            c.cmd("RCPT TO:<r@y.test>").expect(550, "5.1.1");
        }
        c.cmd("QUIT");
        assert_rule(&sink, name, 1, "resent_after_5xx", want);
    }
}

const RCPT_421: &str = "  - {stage: rcpt, action: {reply: {code: 421, enhanced: 4.3.2}}}\n";

#[test]
fn commands_after_421() {
    let sink = sink();
    let addr = sink.local_addr();
    for (name, talk, want) in [
        ("talker", true, Outcome::Fail),
        ("listener", false, Outcome::Pass),
    ] {
        plan_for(&sink, name, RCPT_421);
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        if talk {
            // A command after the 421, then QUIT (QUIT alone is fine).
            c.send(b"RCPT TO:<r@y.test>\r\nRCPT TO:<r2@y.test>\r\nQUIT\r\n");
        } else {
            c.send(b"RCPT TO:<r@y.test>\r\n");
        }
        let replies = c.drain_to_eof();
        assert_eq!(replies[0].code, 421, "{replies:?}");
        assert_rule(&sink, name, 1, "commands_after_421", want);
    }
}

#[test]
fn reconnect_after_421() {
    let sink = sink();
    let addr = sink.local_addr();
    for (name, wait, want) in [
        ("hammer", Duration::ZERO, Outcome::Fail),
        ("patient", BACKOFF, Outcome::Pass),
    ] {
        plan_for(&sink, name, RCPT_421);
        let mut c = greet(addr, name);
        c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
        assert_eq!(c.cmd("RCPT TO:<r@y.test>").code, 421);
        drop(c);
        std::thread::sleep(wait);
        greet(addr, name).cmd("QUIT");
        assert_rule(&sink, name, 2, "reconnect_after_421", want);
    }
    // No reconnection: untested.
    plan_for(&sink, "gone", RCPT_421);
    let mut c = greet(addr, "gone");
    c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
    assert_eq!(c.cmd("RCPT TO:<r@y.test>").code, 421);
    drop(c);
    assert_rule(&sink, "gone", 1, "reconnect_after_421", Outcome::Untested);
}

#[test]
fn size_violations() {
    let sink = sink(); // announces SIZE 1000
    let addr = sink.local_addr();
    let body = "x".repeat(200);
    for (name, mail, want) in [
        ("oversize", "MAIL FROM:<s@x.test> SIZE=5000", Outcome::Fail),
        ("liar", "MAIL FROM:<s@x.test> SIZE=10", Outcome::Fail),
        ("honest", "MAIL FROM:<s@x.test> SIZE=300", Outcome::Pass),
    ] {
        plan_for(&sink, name, "  []\n");
        let mut c = greet(addr, name);
        if c.cmd(mail).code == 250 {
            c.cmd("RCPT TO:<r@y.test>").expect(250, "2.1.5");
            c.cmd("DATA");
            c.send(format!("{body}\r\n.\r\n").as_bytes());
            assert_eq!(c.reply().code, 250);
        }
        c.cmd("QUIT");
        assert_rule(&sink, name, 1, "size_violations", want);
    }
}

#[test]
fn unannounced_pipelining() {
    let sink = sink();
    let addr = sink.local_addr();
    for (name, pipeline, want) in [
        ("eager", true, Outcome::Fail),
        ("polite", false, Outcome::Pass),
    ] {
        plan_for(&sink, name, "  []\n");
        let mut c = Client::connect(addr);
        // HELO: no EHLO reply, so no PIPELINING announced.
        assert_eq!(c.cmd(&format!("HELO {name}")).code, 250);
        if pipeline {
            c.send(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\n");
            assert_eq!(c.reply().code, 250);
            assert_eq!(c.reply().code, 250);
        } else {
            c.cmd("MAIL FROM:<s@x.test>").expect(250, "2.1.0");
            c.cmd("RCPT TO:<r@y.test>").expect(250, "2.1.5");
        }
        c.cmd("QUIT");
        assert_rule(&sink, name, 1, "unannounced_pipelining", want);
    }
    // EHLO announced PIPELINING: pipelining is fine and the rule untested.
    plan_for(&sink, "ehlo-pipeliner", "  []\n");
    let mut c = greet(addr, "ehlo-pipeliner");
    c.send(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\n");
    c.reply();
    c.reply();
    c.cmd("QUIT");
    assert_rule(
        &sink,
        "ehlo-pipeliner",
        1,
        "unannounced_pipelining",
        Outcome::Untested,
    );
}

#[test]
fn unclean_quits_untested_and_unknown_clients() {
    let sink = sink();
    let addr = sink.local_addr();
    let ctl = sink.control_addr().unwrap();
    plan_for(&sink, "quitter", "  []\n");
    plan_for(&sink, "dropper", "  []\n");
    // While its only session is open, a client is untested on every rule.
    let mut open = greet(addr, "quitter");
    wait_for("greeting recorded", || sink.verdict("quitter").is_some());
    let v = sink.verdict("quitter").unwrap();
    assert_eq!(v.verdict, Outcome::Untested, "{v:?}");
    assert!(v
        .rules
        .iter()
        .all(|r| r.result == Outcome::Untested && r.measured.is_none()));
    open.cmd("QUIT");
    drop(greet(addr, "dropper"));
    assert_rule(&sink, "quitter", 1, "unclean_quits", Outcome::Pass);
    assert_rule(&sink, "dropper", 1, "unclean_quits", Outcome::Fail);
    let v = sink.verdict("dropper").unwrap();
    assert_eq!(v.verdict, Outcome::Fail);
    let r = v.rules.iter().find(|r| r.rule == "unclean_quits").unwrap();
    assert_eq!(r.measured.as_deref(), Some("1"));
    assert!(r.evidence[0].contains("without QUIT"), "{r:?}");
    // Over HTTP: the same JSON shape, and 404 for an unknown client.
    let got = http(ctl, "GET", "/clients/DROPPER/verdict", b"");
    assert_eq!(got.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(j["client"], "dropper");
    assert_eq!(j["verdict"], "fail");
    assert_eq!(j["rules"][7]["rule"], "unclean_quits");
    assert_eq!(j["rules"][7]["expression"], "unclean_quits==0");
    assert_eq!(j["rules"][7]["result"], "fail");
    assert_eq!(j["rules"][7]["measured"], "1");
    assert!(j["rules"][0]["measured"].is_null());
    assert_eq!(j["rules"][0]["result"], "untested");
    assert_eq!(http(ctl, "GET", "/clients/nobody/verdict", b"").status, 404);
    let all: serde_json::Value =
        serde_json::from_slice(&http(ctl, "GET", "/verdicts", b"").body).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["client"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dropper", "quitter"]);
}

#[test]
fn expect_errors_point_at_the_users_file_and_list_metrics() {
    let e = Plan::from_yaml_str(
        "seed: 1\nexpect:\n  - retries_per_4xx<=3\n  - retry_fast>=1s\nrules: []\n",
        "plan.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("plan.yaml:"), "{e}");
    assert!(e.contains("expect[1]: "), "{e}");
    assert!(e.contains("unknown metric \"retry_fast\""), "{e}");
    assert!(e.contains("retry_4xx_min_interval, retries_per_4xx"), "{e}");
    let e = Plan::from_yaml_str("expect: 'unclean_quits=0'\n", "p.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.yaml:1:"), "{e}");
    // Both forms parse, and the plan's YAML round-trips them as a list.
    let p = Plan::from_yaml_str("expect: 'unclean_quits<=1, retries_per_4xx<3'\n", "p").unwrap();
    let yaml = p.to_yaml();
    assert!(yaml.contains("- unclean_quits<=1"), "{yaml}");
    assert!(Plan::from_yaml_str(&yaml, "again").is_ok());
}
