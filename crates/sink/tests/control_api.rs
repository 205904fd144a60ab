//! The control API against a real sink: clearing the plan is explicit
//! (`DELETE /plan`), and `DELETE /messages` gives the memory back.

mod common;

use std::sync::Arc;

use common::*;
use mailstorm_sink::control::EMPTY_PLAN_MESSAGE;
use mailstorm_sink::plan::Engine;
use mailstorm_sink::{Sink, SinkHandle};

const PLAN: &str = "rules:\n  - name: no-mail\n    stage: mail\n    action: { reply: { code: 451, enhanced: \"4.3.0\", text: \"later\" } }\n";

fn sink_with_plan() -> SinkHandle {
    let sink = start(
        Sink::builder()
            .control("127.0.0.1:0".parse().unwrap())
            .fault_engine(Arc::new(Engine::new())),
    );
    let r = http(
        sink.control_addr().unwrap(),
        "PUT",
        "/plan",
        PLAN.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    sink
}

fn mail_reply(sink: &SinkHandle) -> u16 {
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test>").code
}

#[test]
fn an_empty_plan_is_refused_and_the_active_plan_stays() {
    let sink = sink_with_plan();
    let api = sink.control_addr().unwrap();
    assert_eq!(mail_reply(&sink), 451);
    for body in [
        &b""[..],
        b"\n  \n",
        b"# only a comment\n# and another\n",
        b"{}",
        b"{}\n",
        b"---\n",
    ] {
        let r = http(api, "PUT", "/plan", body);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert!(r.text().contains("DELETE /plan"), "{}", r.text());
        assert_eq!(r.text().trim_end(), EMPTY_PLAN_MESSAGE);
    }
    assert_eq!(mail_reply(&sink), 451, "the plan is still active");
    assert!(http(api, "GET", "/plan", b"").text().contains("no-mail"));
}

#[test]
fn delete_plan_clears_it() {
    let sink = sink_with_plan();
    let api = sink.control_addr().unwrap();
    assert_eq!(mail_reply(&sink), 451);
    assert_eq!(http(api, "DELETE", "/plan", b"").status, 204);
    assert_eq!(
        mail_reply(&sink),
        250,
        "normal behaviour after DELETE /plan"
    );
    assert_eq!(http(api, "GET", "/plan", b"").text(), "rules: []\n");
    // Deleting again is fine (idempotent).
    assert_eq!(http(api, "DELETE", "/plan", b"").status, 204);
    // An explicit empty rule list is a plan, not a mistake.
    assert_eq!(http(api, "PUT", "/plan", b"rules: []\n").status, 204);
}

#[test]
fn delete_plan_without_a_fault_engine_is_404() {
    let sink = start(Sink::builder().control("127.0.0.1:0".parse().unwrap()));
    let api = sink.control_addr().unwrap();
    assert_eq!(http(api, "DELETE", "/plan", b"").status, 404);
    assert_eq!(http(api, "PUT", "/plan", b"").status, 404);
}
