//! The engine against the in-process sink and a scripted server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailstorm_blast::config::{Mode, RcptRange};
use mailstorm_blast::stats::Stage;
use mailstorm_sink::{Decision, StageContext};

#[test]
fn accepted_count_matches_the_sink() {
    let sink = sink();
    let cfg = mailstorm_blast::config::Config {
        messages: Some(3000),
        concurrency: 8,
        per_conn: 50,
        rcpts: RcptRange { min: 1, max: 3 },
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let st = sink.shutdown_with_grace(Duration::from_secs(1));
    let c = r.totals.counters;
    assert_eq!(c.attempted, 3000);
    assert_eq!(c.accepted, 3000, "{:?}", r.totals.replies);
    assert_eq!(st.messages_accepted, c.accepted);
    assert_eq!(st.recipients_accepted, c.rcpt_accepted);
    // Workers share the budget, so each may end with a partial connection.
    assert!((60..=68).contains(&c.conn_opened), "{}", c.conn_opened);
    assert_eq!(st.connections_total, c.conn_opened);
    assert_eq!(r.totals.histogram(Stage::Message).len(), 3000);
    assert_eq!(r.totals.histogram(Stage::Session).len(), c.conn_opened);
    assert_eq!(r.totals.transport_errors(), 0);
    // Every message is in the timeline too.
    let rows: u64 = r.rows.iter().map(|row| row.counters.accepted).sum();
    assert_eq!(rows, 3000);
}

#[test]
fn sink_pipelining_and_bdat_when_advertised() {
    // The sink advertises PIPELINING and CHUNKING.
    let sink = sink();
    // Small messages: a whole group fits in one read of the sink's smallest
    // read buffer (1 KiB), so this measures the client's writes only.
    let cfg = mailstorm_blast::config::Config {
        messages: Some(500),
        concurrency: 2,
        per_conn: 0,
        size: mailstorm_blast::config::SizeDist::Fixed { bytes: 400 },
        ..config()
    };
    let r = run(cfg.clone(), sink.local_addr());
    let st = sink.stats();
    assert_eq!(r.totals.counters.accepted, 500);
    assert_eq!(
        st.replies_at(mailstorm_sink::Stage::Data, 354),
        0,
        "BDAT, not DATA"
    );
    assert_eq!(st.replies_at(mailstorm_sink::Stage::DataEnd, 250), 500);
    // One reply write per pipelined transaction (plus greeting/EHLO/QUIT).
    assert!(
        st.reply_writes <= 500 + 4 * 2,
        "{} reply writes",
        st.reply_writes
    );

    // Both off: DATA and one round trip per command.
    sink.reset_stats();
    let off = mailstorm_blast::config::Config {
        pipelining: Mode::Off,
        chunking: Mode::Off,
        ..cfg
    };
    let r = run(off, sink.local_addr());
    let st = sink.shutdown_with_grace(Duration::from_secs(1));
    assert_eq!(r.totals.counters.accepted, 500);
    assert_eq!(st.replies_at(mailstorm_sink::Stage::Data, 354), 500);
    assert!(
        st.reply_writes >= 4 * 500,
        "{} reply writes",
        st.reply_writes
    );
    assert_eq!(replies(&r, "data", "354"), 500);
}

fn scripted_run(script: Script, per_conn: u32) -> (mailstorm_blast::RunResult, Log) {
    let (addr, log) = scripted(script);
    let cfg = mailstorm_blast::config::Config {
        messages: Some(40),
        concurrency: 2,
        per_conn,
        rcpts: RcptRange { min: 2, max: 2 },
        ..config()
    };
    let r = run(cfg, addr);
    // Workers QUIT before the run returns, so the log is complete.
    let log = log.lock().unwrap().clone();
    (r, log)
}

#[test]
fn extensions_follow_the_ehlo_reply() {
    // Nothing advertised: DATA, one command at a time.
    let (r, log) = scripted_run(Script::default(), 10);
    assert_eq!(r.totals.counters.accepted, 40);
    assert_eq!((log.count("DATA"), log.count("BDAT")), (40, 0));
    assert_eq!(log.mail_with_more, 0);
    assert_eq!(log.count("RCPT"), 80);
    assert_eq!(log.count("QUIT"), 4);

    // PIPELINING only: DATA, MAIL+RCPT+RCPT+DATA in one write.
    let (r, log) = scripted_run(
        Script {
            pipelining: true,
            ..Script::default()
        },
        10,
    );
    assert_eq!(r.totals.counters.accepted, 40);
    assert_eq!((log.count("DATA"), log.count("BDAT")), (40, 0));
    assert_eq!(log.mail_with_more, 40);

    // CHUNKING only: BDAT, not pipelined.
    let (r, log) = scripted_run(
        Script {
            chunking: true,
            ..Script::default()
        },
        10,
    );
    assert_eq!(r.totals.counters.accepted, 40);
    assert_eq!((log.count("DATA"), log.count("BDAT")), (0, 40));
    assert_eq!(log.mail_with_more, 0);

    // Both: MAIL+RCPT+RCPT+BDAT LAST+body in one write.
    let (r, log) = scripted_run(
        Script {
            pipelining: true,
            chunking: true,
            ..Script::default()
        },
        0,
    );
    assert_eq!(r.totals.counters.accepted, 40);
    assert_eq!((log.count("DATA"), log.count("BDAT")), (0, 40));
    assert_eq!(log.mail_with_more, 40);
    assert_eq!(log.messages, 40);
}

#[test]
fn helo_fallback_after_ehlo_5xx() {
    let (r, log) = scripted_run(
        Script {
            reject_ehlo: true,
            pipelining: true,
            ..Script::default()
        },
        20,
    );
    assert_eq!(r.totals.counters.accepted, 40);
    assert_eq!(log.count("HELO"), 2);
    // HELO means no extensions: no pipelining even though EHLO listed it.
    assert_eq!(log.mail_with_more, 0);
    assert_eq!(replies(&r, "ehlo", "502 5.5.1"), 2);
}

#[test]
fn rset_between_messages_when_asked() {
    let sink = sink();
    let cfg = mailstorm_blast::config::Config {
        messages: Some(100),
        concurrency: 2,
        per_conn: 10,
        rset: true,
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    assert_eq!(r.totals.counters.accepted, 100);
    // 10 connections, 9 RSETs each.
    assert_eq!(r.totals.histogram(Stage::Rset).len(), 90);
    assert_eq!(
        sink.stats().replies_at(mailstorm_sink::Stage::Rset, 250),
        90
    );
}

#[test]
fn lmtp_one_reply_per_recipient() {
    let sink = sink_builder().lmtp(true).start().unwrap();
    let cfg = mailstorm_blast::config::Config {
        messages: Some(50),
        lmtp: true,
        rcpts: RcptRange { min: 3, max: 3 },
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    assert_eq!(r.totals.counters.accepted, 50);
    assert_eq!(r.totals.histogram(Stage::DataEnd).len(), 150);
    assert!(sink.stats().messages_accepted >= 50);
}

#[test]
fn open_loop_pacing_within_two_percent() {
    let sink = sink();
    let cfg = mailstorm_blast::config::Config {
        rate: Some(200.0),
        duration: Some(Duration::from_secs(5)),
        concurrency: 8,
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let c = r.totals.counters;
    assert_eq!(c.scheduled, 1000, "the schedule is exact");
    let sent = c.attempted as f64;
    assert!((sent - 1000.0).abs() <= 20.0, "sent {sent} of 1000");
    assert_eq!(c.accepted + c.not_started, c.scheduled);
    let rate = c.accepted as f64 / 5.0;
    assert!((rate - 200.0).abs() <= 4.0, "{rate} msg/s");
    assert_eq!(sink.stats().messages_accepted, c.accepted);
    // The generator's own lateness has its histogram: one sample per
    // started message, and (free connections, a 5 ms gap between sends)
    // a median far below tokio's 1 ms timer tick.
    let lateness = r.totals.histogram(Stage::Lateness);
    assert_eq!(lateness.len(), c.attempted);
    assert!(
        lateness.value_at_quantile(0.5) < 400,
        "median lateness {} µs",
        lateness.value_at_quantile(0.5)
    );
}

#[test]
fn coordinated_omission_is_corrected() {
    // Each message takes >= 20 ms at the sink, one connection: capacity is
    // under 50 msg/s while 100 msg/s are scheduled. Sends queue up, so the
    // latency from the intended start far exceeds the service time.
    let hook = |ctx: &StageContext<'_>| match ctx.stage {
        mailstorm_sink::Stage::DataEnd => Decision::Delay(Duration::from_millis(20)),
        _ => Decision::Accept,
    };
    let sink = sink_builder().hook(Arc::new(hook)).start().unwrap();
    let cfg = mailstorm_blast::config::Config {
        rate: Some(100.0),
        duration: Some(Duration::from_secs(2)),
        concurrency: 1,
        threads: 1,
        grace: Duration::from_secs(1),
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let t = &r.totals;
    let service = t.histogram(Stage::Service);
    let latency = t.histogram(Stage::Latency);
    assert!(service.len() >= 40, "{}", service.len());
    assert!(service.value_at_quantile(0.5) >= 19_000);
    assert!(service.value_at_quantile(0.99) < 200_000);
    // Half the schedule is still waiting at the end: p99 latency is about
    // a second, ten times the service time.
    assert!(
        latency.value_at_quantile(0.99) > 5 * service.value_at_quantile(0.99),
        "latency p99 {} vs service p99 {}",
        latency.value_at_quantile(0.99),
        service.value_at_quantile(0.99)
    );
    assert!(t.counters.late > t.counters.attempted / 2);
    assert!(t.counters.not_started > 50, "{:?}", t.counters);
}

#[test]
fn refused_target_is_counted_not_hidden() {
    // Bind then drop a listener: its port now refuses.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = mailstorm_blast::config::Config {
        messages: Some(5),
        concurrency: 1,
        threads: 1,
        ..config()
    };
    let r = run(cfg, addr);
    let c = r.totals.counters;
    assert_eq!((c.attempted, c.failed, c.conn_opened), (5, 5, 0));
    assert_eq!(
        r.totals.transport[mailstorm_blast::stats::Transport::Refused as usize],
        5
    );
}

#[test]
fn shipped_profiles_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let args = mailstorm_blast::cli::Args {
                profile: Some(path.clone()),
                target: vec!["127.0.0.1:2525".into()],
                ..Default::default()
            };
            let cfg = args
                .to_config()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            mailstorm_blast::effective_config(&cfg).unwrap();
            n += 1;
        }
    }
    assert!(n >= 5, "{n} profiles");
}

#[test]
fn replies_are_accounted_per_stage_and_enhanced_code() {
    // user1@ is unknown (550 5.1.1), user0@ is accepted.
    let hook = |ctx: &StageContext<'_>| match (ctx.stage, ctx.rcpt) {
        (mailstorm_sink::Stage::Rcpt, Some(r)) if r.starts_with("user1@") => Decision::Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "no such user".into(),
        },
        _ => Decision::Accept,
    };
    let sink = sink_builder().hook(Arc::new(hook)).start().unwrap();
    let cfg = mailstorm_blast::config::Config {
        messages: Some(400),
        users: 2,
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let c = r.totals.counters;
    assert_eq!(c.accepted + c.rejected, 400, "{c:?}");
    assert!(c.rejected > 100 && c.accepted > 100, "{c:?}");
    assert_eq!(replies(&r, "rcpt", "550 5.1.1"), c.rejected);
    assert_eq!(sink.stats().messages_accepted, c.accepted);
    // Same seed, same split.
    let again = run(
        mailstorm_blast::config::Config {
            messages: Some(400),
            users: 2,
            ..config()
        },
        sink.local_addr(),
    );
    assert_eq!(again.totals.counters.rejected, c.rejected);
}

#[test]
fn a_421_defers_and_closes_the_connection() {
    let hook = |ctx: &StageContext<'_>| match ctx.stage {
        mailstorm_sink::Stage::Mail => Decision::Reply {
            code: 421,
            enhanced: Some("4.7.0".into()),
            text: "too busy".into(),
        },
        _ => Decision::Accept,
    };
    let sink = sink_builder().hook(Arc::new(hook)).start().unwrap();
    let cfg = mailstorm_blast::config::Config {
        messages: Some(30),
        concurrency: 2,
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let c = r.totals.counters;
    assert_eq!((c.deferred, c.failed), (30, 0), "{c:?}");
    // Every 421 ends its connection: one connection per message.
    assert_eq!(c.conn_opened, 30);
    assert_eq!(replies(&r, "mail", "421 4.7.0"), 30);
}
