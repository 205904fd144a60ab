//! The early look ([`StageHook::accepts_early`]) against the whole
//! decision: whenever it accepts, the decision selects nothing; it does
//! accept the traffic a plan's conditions leave alone; and it makes the
//! referee's domain note the decision would have made.

use std::net::SocketAddr;
use std::time::Instant;

use crate::hook::{EarlyLook, Recipients, SessionScope, Stage, StageContext, StageHook};
use crate::plan::{Engine, Plan};

fn engine(yaml: &str) -> Engine {
    let e = Engine::new();
    e.load(Plan::from_yaml_str(yaml, "t.yaml").unwrap_or_else(|err| panic!("{err}\n{yaml}")));
    e
}

fn peer() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

/// A command of a greeted session: the stage, its argument (reverse-path
/// at MAIL, recipient at RCPT) and the message size, with the rest of the
/// context as a session in that state would have it.
struct Cmd<'a> {
    stage: Stage,
    arg: Option<&'a str>,
    size: u64,
}

impl<'a> Cmd<'a> {
    fn mail(sender: &'a str) -> Self {
        Cmd {
            stage: Stage::Mail,
            arg: Some(sender),
            size: 0,
        }
    }

    fn rcpt(rcpt: &'a str) -> Self {
        Cmd {
            stage: Stage::Rcpt,
            arg: Some(rcpt),
            size: 0,
        }
    }

    /// A command without an argument (end of data, or a stage the early
    /// look does not know).
    fn bare(stage: Stage, size: u64) -> Self {
        Cmd {
            stage,
            arg: None,
            size,
        }
    }

    fn early(&self, e: &Engine, scope: &SessionScope) -> bool {
        e.accepts_early(&EarlyLook {
            stage: self.stage,
            arg: self.arg,
            message_size: self.size,
            scope: Some(&**scope),
        })
    }

    /// The whole decision's reply code (`Some(0)`: a verdict without one).
    fn decide(&self, e: &Engine, scope: &SessionScope) -> Option<u16> {
        let in_tx = !matches!(self.stage, Stage::Mail);
        let ends = [8u32];
        let ctx = StageContext {
            stage: self.stage,
            session_id: 1,
            peer: peer(),
            helo: Some("client.test"),
            sender: in_tx.then_some("a@src.test"),
            recipients: Recipients {
                buf: if matches!(self.stage, Stage::DataEnd | Stage::Bdat) {
                    "b@x.test"
                } else {
                    ""
                },
                ends: if matches!(self.stage, Stage::DataEnd | Stage::Bdat) {
                    &ends
                } else {
                    &[]
                },
            },
            rcpt: if self.stage == Stage::Rcpt {
                self.arg
            } else {
                None
            },
            reverse_path: if self.stage == Stage::Mail {
                self.arg
            } else {
                None
            },
            tls: false,
            auth_user: None,
            message_size: self.size,
            message: None,
            command: b"",
            scope: Some(&**scope),
        };
        e.decide_at(&ctx, Instant::now())
            .map(|v| v.code().unwrap_or(0))
    }
}

const PLANS: [&str; 7] = [
    // The benchmark's plan: conditions no ordinary traffic meets.
    include_str!("../../../../configs/bench/no-match-5-rules.yaml"),
    "rules:
  - {stage: mail, match: {sender: '*@bad.test'}, action: {reply: {code: 550}}}
  - {stage: rcpt, match: {recipient: 'spam*@*'}, action: {reply: {code: 551}}}
  - {stage: rcpt, match: {recipient_domain: [Never.Test, other.test]}, action: {reply: {code: 552}}}
  - {stage: data_end, match: {size: {min: 100, max: 200}}, action: {reply: {code: 553}}}
  - {stage: bdat, match: {size: {min: 5000}}, action: {reply: {code: 554}}}
",
    // A condition the early look cannot see (the sender at RCPT, TLS):
    // it must leave those decisions whole.
    "rules:
  - {stage: rcpt, match: {sender: '*@src.test'}, action: {reply: {code: 450}}}
  - {stage: data_end, match: {tls: false}, action: {reply: {code: 451}}}
",
    // `stage: any` and a rule with no condition at all.
    "rules:
  - {stage: any, match: {size: {min: 10}}, action: {reply: {code: 452}}}
  - {stage: mail, match: {sender: '*@only.test'}, action: {reply: {code: 550}}}
  - {stage: rcpt, action: {reply: {code: 250}}}
",
    "rules:
  - {stage: mail, match: {sender: ''}, action: {reply: {code: 553}}}
  - {stage: rcpt, match: {recipient: '*@*', recipient_domain: x.test}, action: {reply: {code: 554}}}
",
    // A MAIL rule with no condition on the reverse-path.
    "rules:
  - {stage: mail, match: {client: 192.0.2.0/24}, action: {reply: {code: 421}}}
",
    "rules:
  - {stage: rcpt, key: rcpt, probability: 0.5, match: {recipient_domain: x.test}, action: {reply: {code: 451}}}
",
];

const ARGS: [&str; 9] = [
    "a@src.test",
    "b@x.test",
    "B@X.TEST",
    "a@bad.test",
    "spam1@x.test",
    "c@never.test",
    "d@OTHER.test",
    "",
    "no-at-sign",
];

#[test]
fn an_early_accept_is_never_a_decision_that_selects_something() {
    let mut early_accepts = 0;
    for yaml in PLANS {
        for stage in [Stage::Mail, Stage::Rcpt, Stage::DataEnd, Stage::Bdat] {
            for arg in ARGS {
                for size in [1, 10, 150, 10_000, 2_000_000_000] {
                    // A fresh engine per command: a decision that selects
                    // a rule counts an attempt, and the next one must not
                    // see it.
                    let e = engine(yaml);
                    let scope = e.greeted(peer(), "client.test", Instant::now()).unwrap();
                    let cmd = Cmd {
                        stage,
                        arg: matches!(stage, Stage::Mail | Stage::Rcpt).then_some(arg),
                        size,
                    };
                    if cmd.early(&e, &scope) {
                        early_accepts += 1;
                        assert_eq!(
                            cmd.decide(&e, &scope),
                            None,
                            "accepted early but a rule applies: {stage:?} {arg:?} size {size}\n{yaml}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        early_accepts > 500,
        "the early look accepted {early_accepts} times"
    );
}

#[test]
fn ordinary_traffic_under_the_benchmark_plan_is_accepted_early() {
    let e = engine(PLANS[0]);
    let scope = e.greeted(peer(), "client.test", Instant::now()).unwrap();
    for cmd in [
        Cmd::mail("a@src.test"),
        Cmd::rcpt("b@x.test"),
        Cmd::bare(Stage::DataEnd, 1_000),
    ] {
        assert!(cmd.early(&e, &scope), "{:?}", cmd.stage);
    }
    // What the early look cannot settle goes to the decision.
    let rcpt = Cmd::bare(Stage::Rcpt, 0);
    assert!(!rcpt.early(&e, &scope), "an RCPT without its recipient");
    let ehlo = Cmd::bare(Stage::Ehlo, 0);
    assert!(
        !ehlo.early(&e, &scope),
        "a stage the early look does not handle"
    );
    let unscoped = EarlyLook {
        stage: Stage::Mail,
        arg: Some("a@src.test"),
        message_size: 0,
        scope: None,
    };
    assert!(!e.accepts_early(&unscoped), "a session that never greeted");
}

#[test]
fn an_early_accept_notes_the_domains_the_decision_would() {
    let e = engine(PLANS[0]);
    let scope = e.greeted(peer(), "client.test", Instant::now()).unwrap();
    assert!(Cmd::mail("a@Src.Test").early(&e, &scope));
    assert!(Cmd::rcpt("b@x.test").early(&e, &scope));
    let report = e.referee_report();
    let mut domains = report.clients["client.test"].domains.clone();
    domains.sort();
    assert_eq!(domains, ["src.test", "x.test"]);
}

#[test]
fn once_the_referee_watches_a_stage_its_commands_take_the_whole_decision() {
    let e = engine(
        "rules:\n  - {stage: rcpt, match: {recipient: 'fail@*'}, action: {reply: {code: 451}}}\n",
    );
    let scope = e.greeted(peer(), "client.test", Instant::now()).unwrap();
    let other = Cmd::rcpt("b@x.test");
    assert!(other.early(&e, &scope));
    let fail = Cmd::rcpt("fail@x.test");
    assert!(!fail.early(&e, &scope));
    assert_eq!(fail.decide(&e, &scope), Some(451));
    // A retry of any RCPT must now be looked up by the referee.
    assert!(!other.early(&e, &scope));
    assert!(!fail.early(&e, &scope));
}

#[test]
fn a_client_with_a_scoped_plan_takes_the_whole_decision() {
    // The global plan leaves this MAIL alone; the client's own plan does not.
    let e = engine(PLANS[0]);
    let scoped = "rules:\n  - {stage: mail, action: {reply: {code: 421}}}\n";
    e.load_scoped(
        "client.test",
        Plan::from_yaml_str(scoped, "s.yaml").unwrap(),
    )
    .unwrap();
    let scope = e.greeted(peer(), "client.test", Instant::now()).unwrap();
    let mail = Cmd::mail("a@src.test");
    assert!(!mail.early(&e, &scope));
    assert_eq!(mail.decide(&e, &scope), Some(421));
}
