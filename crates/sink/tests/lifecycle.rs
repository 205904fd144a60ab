//! Graceful shutdown, capture, kept messages, reload, the hook seam and the
//! control API.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailstorm_sink::{CloseReason, Decision, Sink, Stage, StageContext};

#[test]
fn graceful_shutdown_answers_421_at_next_command() {
    let sink = start(Sink::builder().shutdown_grace(Duration::from_secs(5)));
    let addr = sink.local_addr();
    let mut idle = Client::ehlo(addr);
    let mut in_data = Client::ehlo(addr);
    in_data.cmd("MAIL FROM:<a@b.test>");
    in_data.cmd("RCPT TO:<x@y.test>");
    assert_eq!(in_data.cmd("DATA").code, 354);
    let started = Instant::now();
    let stopper = std::thread::spawn(move || sink.shutdown());
    // The idle session gets 421 at its next command (once the shard has
    // seen the shutdown; until then NOOP is still answered).
    idle.noop_until_refused().expect(421, "4.3.2");
    assert!(idle.drain_to_eof().is_empty());
    // A message in progress is finished; the command after it gets 421.
    in_data.send(b"body\r\n.\r\n");
    in_data.reply().expect(250, "2.0.0");
    in_data.cmd("NOOP").expect(421, "4.3.2");
    assert!(in_data.drain_to_eof().is_empty());
    // New connections are refused.
    assert!(std::net::TcpStream::connect(addr).is_err());
    let last = stopper.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait the full grace"
    );
    assert_eq!(last.closed_for(CloseReason::Shutdown), 2);
    assert_eq!(last.messages_accepted, 1);
    assert_eq!(last.connections_open, 0);
}

#[test]
fn shutdown_grace_is_bounded() {
    let sink = start(Sink::builder());
    let mut c = Client::ehlo(sink.local_addr());
    let started = Instant::now();
    let last = sink.shutdown_with_grace(Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(last.connections_total, 1);
    assert_eq!(last.connections_open, 0);
    assert_eq!(last.closed_for(CloseReason::Shutdown), 1);
    // The silent client's connection was dropped when the grace ran out.
    assert!(c.drain_to_eof().is_empty());
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mailstorm-sink-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn capture_writes_eml_with_envelope_headers() {
    let dir = temp_dir("capture");
    std::fs::write(dir.join("41.eml"), "old").unwrap();
    let sink = start(Sink::builder().capture(&dir));
    let mut c = Client::ehlo(sink.local_addr());
    let r = c.send_message(
        "from@a.test",
        &["one@b.test", "two@b.test"],
        "Subject: captured\r\n\r\nbody",
    );
    r.expect(250, "2.0.0");
    assert!(r.text().ends_with("queued as 42"), "{r:?}");
    let text = std::fs::read_to_string(dir.join("42.eml")).unwrap();
    let client = c.stream.local_addr().unwrap();
    let expected = format!(
        "X-Mailstorm-Mail-From: <from@a.test>\r\n\
         X-Mailstorm-Rcpt-To: <one@b.test>\r\n\
         X-Mailstorm-Rcpt-To: <two@b.test>\r\n\
         X-Mailstorm-Client: {client} helo=client.test\r\n\
         X-Mailstorm-TLS: no\r\n\
         X-Mailstorm-Auth: none\r\n\
         Subject: captured\r\n\r\nbody\r\n"
    );
    assert_eq!(text, expected);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    assert!(
        sink.messages().is_empty(),
        "capture alone keeps nothing in memory"
    );
}

#[test]
fn keep_is_a_bounded_ring() {
    let sink = start(Sink::builder().keep(2));
    let mut c = Client::ehlo(sink.local_addr());
    for i in 0..3 {
        c.send_message(
            "a@b.test",
            &["x@y.test"],
            &format!("Subject: m{i}\r\n\r\nx"),
        )
        .expect(250, "2.0.0");
    }
    let msgs = sink.messages();
    let subjects: Vec<_> = msgs.iter().map(|m| m.header("subject").unwrap()).collect();
    assert_eq!(subjects, ["m1", "m2"]);
    sink.clear_messages();
    assert!(sink.messages().is_empty());
}

#[test]
fn reload_applies_to_new_sessions_only() {
    let sink = start(Sink::builder().hostname("old.test"));
    let mut old = Client::connect(sink.local_addr());
    let mut cfg = sink.config();
    cfg.hostname = Some("new.test".into());
    cfg.max_recipients = 1;
    cfg.threads = Some(4);
    let ignored = sink.reload(cfg).unwrap();
    assert_eq!(ignored, ["threads"]);
    assert_eq!(old.cmd("EHLO c.test").lines[0], "old.test");
    let mut new = Client::connect_raw(sink.local_addr());
    assert_eq!(new.reply().text(), "new.test ESMTP mailstorm-sink");
    new.cmd("EHLO c.test");
    new.cmd("MAIL FROM:<a@b.test>");
    new.cmd("RCPT TO:<1@b.test>").expect(250, "2.1.5");
    new.cmd("RCPT TO:<2@b.test>").expect(452, "4.5.3");
    // A bad reload keeps the running configuration.
    let mut bad = sink.config();
    bad.max_line_length = 1;
    assert!(sink.reload(bad).is_err());
    assert_eq!(sink.hostname(), "new.test");
}

#[test]
fn hook_replies_delays_and_closes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    // The reverse-path each MAIL decision was handed (`None` elsewhere).
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let paths_seen = paths.clone();
    let hook = move |ctx: &StageContext<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
        if ctx.stage == Stage::Mail || ctx.reverse_path.is_some() {
            let path = ctx.reverse_path.map(str::to_owned);
            paths_seen.lock().unwrap().push((ctx.stage, path));
        }
        match ctx.stage {
            Stage::Rcpt if ctx.rcpt.is_some_and(|r| r.starts_with("bad")) => Decision::Reply {
                code: 550,
                enhanced: Some("5.1.1".into()),
                text: "No such user".into(),
            },
            Stage::Mail if ctx.sender.is_none() && ctx.command.ends_with(b"<slow@a.test>") => {
                Decision::Delay(Duration::from_millis(100))
            }
            Stage::DataEnd if ctx.header("subject") == Some("drop") => {
                Decision::Close { rst: true }
            }
            Stage::DataEnd => {
                assert_eq!(ctx.recipients.iter().collect::<Vec<_>>(), ["good@b.test"]);
                Decision::Reply {
                    code: 250,
                    enhanced: Some("2.0.0".into()),
                    text: "custom ok".into(),
                }
            }
            _ => Decision::Accept,
        }
    };
    let sink = start(Sink::builder().keep(5).hook(Arc::new(hook)));
    let mut c = Client::ehlo(sink.local_addr());
    let t = Instant::now();
    c.cmd("MAIL FROM:<slow@a.test>").expect(250, "2.1.0");
    assert!(t.elapsed() >= Duration::from_millis(100), "delayed");
    c.cmd("RCPT TO:<bad@b.test>").expect(550, "5.1.1");
    c.cmd("RCPT TO:<good@b.test>").expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: keep\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.text(), "2.0.0 custom ok");
    c.cmd("MAIL FROM:<a@a.test>");
    c.cmd("RCPT TO:<good@b.test>");
    c.cmd("DATA");
    c.send(b"Subject: drop\r\n\r\nx\r\n.\r\n");
    assert!(c.drain_to_eof().is_empty(), "closed without a reply");
    wait_for("close", || sink.stats().closed_for(CloseReason::Hook) == 1);
    assert!(calls.load(Ordering::Relaxed) >= 8);
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(
        *paths.lock().unwrap(),
        [
            (Stage::Mail, Some("slow@a.test".to_owned())),
            (Stage::Mail, Some("a@a.test".to_owned()))
        ]
    );
}

#[test]
fn hook_refuses_at_connect() {
    let hook = |ctx: &StageContext<'_>| match ctx.stage {
        Stage::Connect => Decision::Reply {
            code: 554,
            enhanced: Some("5.7.1".into()),
            text: "Go away".into(),
        },
        _ => Decision::Accept,
    };
    let sink = start(Sink::builder().hook(Arc::new(hook)));
    let mut c = Client::connect_raw(sink.local_addr());
    c.reply().expect(554, "5.7.1");
    assert!(c.drain_to_eof().is_empty());
}

fn http(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn control_api_serves_stats_and_messages() {
    let sink = start(
        Sink::builder()
            .keep(5)
            .control("127.0.0.1:0".parse().unwrap()),
    );
    let ctl = sink.control_addr().unwrap();
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "Subject: api\r\n\r\nhello")
        .expect(250, "2.0.0");
    let stats = http(
        ctl,
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    assert!(stats.contains("\"messages_accepted\":1"), "{stats}");
    let metrics = http(
        ctl,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("mailstorm_sink_messages_accepted_total 1"),
        "{metrics}"
    );
    let list = http(
        ctl,
        "GET /messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(list.contains("\"subject\":\"api\""), "{list}");
    let id = sink.messages()[0].id;
    let raw = http(
        ctl,
        &format!("GET /messages/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert!(raw.contains("X-Mailstorm-Rcpt-To: <x@y.test>"), "{raw}");
    let reset = http(
        ctl,
        "POST /reset HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(reset.starts_with("HTTP/1.1 204"), "{reset}");
    assert_eq!(sink.stats().messages_accepted, 0);
}

#[test]
fn control_off_loopback_requires_token() {
    let err = Sink::builder()
        .control("0.0.0.0:0".parse().unwrap())
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("control-token"), "{err}");
}

/// Issue 10 item 2: a second sink on an address another sink listens on
/// refuses to start (SO_REUSEPORT is only shared among one sink's shards),
/// and the first keeps all the traffic.
#[test]
fn second_sink_on_the_same_address_refuses_to_start() {
    let first = start(Sink::builder().threads(2));
    let addr = first.local_addr();
    let Err(err) = Sink::builder().listen(addr).threads(2).start() else {
        panic!("a second sink on the same address must not start");
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("in use"),
        "{msg}"
    );
    // The first sink is untouched and serves every message.
    for _ in 0..4 {
        let mut c = Client::ehlo(addr);
        c.send_message("a@x.test", &["b@y.test"], "Subject: t\r\n\r\nhi\r\n")
            .expect(250, "2.0.0");
        c.cmd("QUIT");
    }
    assert_eq!(first.shutdown().messages_accepted, 4);
}

/// Issue 10 item 13: the same listen address given twice is an error, not
/// two binds that share the port.
#[test]
fn same_listen_address_twice_is_an_error() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let Err(err) = Sink::builder().listen(addr).listen(addr).start() else {
        panic!("a duplicated listen address must be refused");
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("twice"),
        "{msg}"
    );
}
