//! Counting: a `sequence` step of 2xx is an accept, not a fault;
//! refusals are counted at every stage, by stage and class.

mod common;

use std::sync::Arc;

use common::{http, start, wait_for, Client};
use mailstorm_sink::hook::Stage;
use mailstorm_sink::plan::{Engine, Plan};
use mailstorm_sink::{ClientFilter, Sink};

#[test]
fn sequence_accepts_are_not_faults_and_refusals_count_by_stage() {
    let engine = Arc::new(Engine::new());
    engine.load(
        Plan::from_yaml_str(
            "rules:\n  - {stage: rcpt, key: rcpt, match: {recipient_domain: seq.test}, sequence: [451, 451, 250]}\n  - {stage: rcpt, match: {recipient: 'nobody@*'}, action: {reply: {code: 550, enhanced: 5.1.1}}}\n",
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
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@x.test>").expect(250, "2.1.0");
    let codes: Vec<u16> = (0..3).map(|_| c.cmd("RCPT TO:<b@seq.test>").code).collect();
    assert_eq!(codes, [451, 451, 250]);
    c.cmd("RCPT TO:<nobody@y.test>").expect(550, "5.1.1");
    c.cmd("QUIT");
    wait_for("session closed", || {
        sink.clients(&ClientFilter::helo("client.test"))
            .unwrap()
            .clients
            .get("client.test")
            .is_some_and(|c| c.sessions_closed == 1)
    });
    let r = sink.clients(&ClientFilter::all()).unwrap();
    let client = &r.clients["client.test"];
    assert_eq!(
        client.faults, 3,
        "two 451s and the 550; the 250 is no fault"
    );
    assert_eq!((client.replies_4xx, client.replies_5xx), (2, 1));
    // The 550 at RCPT is visible, by stage: /stats and /metrics.
    let s = sink.stats();
    assert_eq!(s.messages_rejected, 0, "end-of-data refusals only");
    assert_eq!(s.replies_at(Stage::Rcpt, 550), 1);
    assert_eq!(s.rejections["rcpt"]["5xx"], 1);
    assert_eq!(s.rejections["rcpt"]["4xx"], 2);
    let ctl = sink.control_addr().unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&http(ctl, "GET", "/stats", b"").body).unwrap();
    assert_eq!(stats["rejections"]["rcpt"]["5xx"], 1, "{stats}");
    let m = http(ctl, "GET", "/metrics", b"").text();
    assert!(
        m.contains("mailstorm_sink_rejections_total{stage=\"rcpt\",class=\"5xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mailstorm_sink_rejections_total{stage=\"rcpt\",class=\"4xx\"} 2"),
        "{m}"
    );
}
