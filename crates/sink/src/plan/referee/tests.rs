//! The referee through the engine's decisions: a failure record holds no
//! text, so the key and client a retry reports are rebuilt from the retry
//! itself, and a filtered reset finds a client's failures by its id hash.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Failure;
use crate::filter::ClientFilter;
use crate::hook::{Recipients, SessionScope, Stage, StageContext};
use crate::plan::{Engine, Plan};

/// One RCPT or end-of-data decision at `t0 + s` seconds: the client's
/// session scope (`None`: a session that never greeted, known by its IP),
/// the sender, and the recipient (RCPT) or the recipients (end of data).
struct Req<'a> {
    scope: Option<&'a SessionScope>,
    peer: SocketAddr,
    stage: Stage,
    sender: &'a str,
    rcpts: &'a [&'a str],
}

impl Req<'_> {
    fn decide(&self, e: &Engine, t0: Instant, s: u64) -> Option<u16> {
        let buf: String = self.rcpts.concat();
        let ends: Vec<u32> = self
            .rcpts
            .iter()
            .scan(0u32, |n, r| {
                *n += r.len() as u32;
                Some(*n)
            })
            .collect();
        let rcpt = (self.stage == Stage::Rcpt).then(|| self.rcpts[0]);
        let ctx = StageContext {
            stage: self.stage,
            session_id: 1,
            peer: self.peer,
            helo: None,
            sender: Some(self.sender),
            recipients: Recipients {
                buf: if rcpt.is_some() { "" } else { &buf },
                ends: if rcpt.is_some() { &[] } else { &ends },
            },
            rcpt,
            reverse_path: None,
            tls: false,
            auth_user: None,
            message_size: 1,
            message: None,
            command: b"",
            scope: self.scope.map(|s| &**s),
        };
        e.decide_at(&ctx, t0 + Duration::from_secs(s))
            .and_then(|v| v.code())
    }
}

/// An RCPT of `rcpts[0]`.
fn rcpt<'a>(
    scope: Option<&'a SessionScope>,
    peer: SocketAddr,
    sender: &'a str,
    rcpts: &'a [&'a str],
) -> Req<'a> {
    Req {
        scope,
        peer,
        stage: Stage::Rcpt,
        sender,
        rcpts,
    }
}

fn retries(e: &Engine, id: &str) -> u64 {
    e.referee_report_for(&ClientFilter::helo(id)).clients[id].retries
}

/// `(key, attempt, interval in s)` of the recent retries `filter` selects.
fn recent(e: &Engine, filter: &ClientFilter) -> Vec<(String, u32, u64)> {
    e.referee_report_for(filter)
        .recent_retries
        .into_iter()
        .map(|r| (r.key, r.attempt, r.interval_ms / 1000))
        .collect()
}

fn evidence(e: &Engine, id: &str, rule: &str) -> Vec<String> {
    let v = e.verdict(id).expect("a known client");
    v.rules
        .into_iter()
        .find(|r| r.rule == rule)
        .expect("a policy rule")
        .evidence
}

#[test]
fn retries_report_the_retried_request_and_a_filtered_reset_drops_only_its_clients_failures() {
    let t0 = Instant::now();
    let e = Engine::new();
    e.load_at(
        Plan::from_yaml_str(
            "rules:\n  - {stage: rcpt, action: {reply: {code: 451}}}\n  - {stage: data_end, action: {reply: {code: 451}}}\n",
            "t.yaml",
        )
        .unwrap(),
        t0,
    );
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let one = e.greeted(peer, "Client-One", t0).expect("a plan is loaded");
    let two = e.greeted(peer, "client-TWO", t0).expect("a plan is loaded");
    let ip: SocketAddr = "192.0.2.9:40001".parse().unwrap();
    let one_rcpt = |sender, rcpts| rcpt(Some(&one), peer, sender, rcpts);
    let two_rcpt = rcpt(Some(&two), peer, "Fail@X.test", &["R@Y.test"]);
    let ip_rcpt = |sender| rcpt(None, ip, sender, &["r@y.test"]);
    let two_data = |rcpts| Req {
        scope: Some(&two),
        peer,
        stage: Stage::DataEnd,
        sender: "Fail@X.test",
        rcpts,
    };

    // The same RCPT from three clients (two greeted from one address, one
    // known by its IP): none is another's retry.
    assert_eq!(
        one_rcpt("Fail@X.test", &["R@Y.test"]).decide(&e, t0, 0),
        Some(451)
    );
    assert_eq!(two_rcpt.decide(&e, t0, 1), Some(451));
    assert_eq!(ip_rcpt("fail@x.test").decide(&e, t0, 2), Some(451));
    assert_eq!(recent(&e, &ClientFilter::all()), []);
    // Retries, differently cased; several recipients in another order.
    assert_eq!(
        one_rcpt("fail@x.test", &["r@y.TEST"]).decide(&e, t0, 10),
        Some(451)
    );
    assert_eq!(
        two_data(&["B@y.test", "a@Y.test", "c@y.test"]).decide(&e, t0, 11),
        Some(451)
    );
    assert_eq!(
        two_data(&["c@y.test", "A@y.test", "b@y.test"]).decide(&e, t0, 14),
        Some(451)
    );
    assert_eq!(ip_rcpt("FAIL@x.test").decide(&e, t0, 20), Some(451));
    let one_key = "rcpt client-one <fail@x.test> <r@y.test>";
    let data_key = "data client-two <fail@x.test> <a@y.test>,<b@y.test>,<c@y.test>";
    let ip_key = "rcpt 192.0.2.9 <fail@x.test> <r@y.test>";
    assert_eq!(
        recent(&e, &ClientFilter::all()),
        [
            (one_key.into(), 2, 10),
            (data_key.into(), 2, 3),
            (ip_key.into(), 2, 18)
        ]
    );
    // Each retry is the client's own (the filter reads its client).
    for (id, key, secs) in [
        ("client-one", one_key, 10),
        ("client-two", data_key, 3),
        ("192.0.2.9", ip_key, 18),
    ] {
        assert_eq!(retries(&e, id), 1, "{id}");
        let filter = ClientFilter::helo(id.to_uppercase());
        assert_eq!(recent(&e, &filter), [(key.into(), 2, secs)], "{id}");
    }
    assert_eq!(
        evidence(&e, "client-two", "retry_4xx_min_interval"),
        [format!("{data_key}: retried 3s after 451")]
    );
    assert_eq!(
        evidence(&e, "client-one", "retries_per_4xx"),
        [format!("{one_key}: attempt 2 after 1 refusals")]
    );

    // Outstanding: every retry failed again, and client two's RCPT.
    assert_eq!(e.referee.failures.len(), 4);
    e.reset_clients(&ClientFilter::helo("CLIENT-ONE"));
    assert_eq!(e.referee.failures.len(), 3, "client one's failure only");
    assert_eq!(
        one_rcpt("fail@x.test", &["r@y.test"]).decide(&e, t0, 30),
        Some(451)
    );
    assert_eq!(retries(&e, "client-one"), 0, "its failure was dropped");
    assert_eq!(two_rcpt.decide(&e, t0, 31), Some(451));
    assert_eq!(
        two_data(&["b@y.test", "c@y.test", "a@y.test"]).decide(&e, t0, 32),
        Some(451)
    );
    assert_eq!(retries(&e, "client-two"), 3, "its failures were kept");
    // The IP client's id is its address text: its failure goes too.
    e.reset_clients(&ClientFilter::helo("192.0.2.9"));
    assert_eq!(ip_rcpt("fail@x.test").decide(&e, t0, 40), Some(451));
    assert_eq!(retries(&e, "192.0.2.9"), 0, "its failure was dropped");
    assert_eq!(
        recent(&e, &ClientFilter::all()),
        [
            (data_key.into(), 2, 3),
            ("rcpt client-two <fail@x.test> <r@y.test>".into(), 2, 30),
            (data_key.into(), 3, 18),
        ]
    );
}

#[test]
fn a_failure_record_is_small() {
    // Was 72 bytes and two heap blocks (the key text, the client id).
    assert!(std::mem::size_of::<Failure>() <= 40);
}
