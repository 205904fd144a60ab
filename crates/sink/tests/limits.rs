//! Limits and hostile input: every limit answers with its code and memory
//! stays bounded.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use mailstorm_sink::{BareLfPolicy, CloseReason, Sink, Stage};

#[test]
fn line_too_long_then_session_continues() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    let mut line = vec![b'N'; 600];
    line.extend_from_slice(b"\r\nNOOP\r\n");
    c.send(&line);
    c.reply().expect(500, "5.5.2");
    c.reply().expect(250, "2.0.0");
    // Exactly at the limit (510 + CRLF) is fine.
    let ok = format!("NOOP {}\r\n", "x".repeat(505));
    assert_eq!(ok.len(), 512);
    c.send(ok.as_bytes());
    c.reply().expect(250, "2.0.0");
    let long = format!("NOOP {}\r\n", "x".repeat(506));
    c.send(long.as_bytes());
    c.reply().expect(500, "5.5.2");
}

#[test]
fn ten_megabyte_line_without_lf_keeps_memory_bounded() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..10 {
        c.send(&chunk);
    }
    c.send(b"\r\nNOOP\r\n");
    c.reply().expect(500, "5.5.2");
    c.reply().expect(250, "2.0.0");
    let s = sink.stats();
    assert_eq!(
        s.replies_at(Stage::Invalid, 500),
        1,
        "one error for the line"
    );
    assert!(s.bytes_received > 10 << 20);
    assert!(
        s.read_buffer_high_water <= 64 * 1024,
        "read buffer grew to {}",
        s.read_buffer_high_water
    );
}

#[test]
fn nul_bytes_and_bare_lf_in_commands() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    c.send(b"NO\0OP\r\n");
    c.reply().expect(500, "5.5.2");
    c.send(b"NOOP\n");
    c.reply().expect(500, "5.5.2");
    c.send(b"MAIL FROM:<a\0@b.test>\r\n");
    c.reply().expect(500, "5.5.2");
    c.cmd("NOOP").expect(250, "2.0.0");
}

/// Each smuggling sequence, followed by a would-be second message.
const SMUGGLE: [&[u8]; 4] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n"];

fn smuggle(c: &mut Client, seq: &[u8]) -> Vec<Reply> {
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    let mut body = b"Subject: one\r\n\r\nfirst".to_vec();
    body.extend_from_slice(seq);
    body.extend_from_slice(
        b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: two\r\n\r\nsmuggled\r\n.\r\n",
    );
    c.send(&body);
    // Everything up to here is one message: exactly one final reply, then
    // the next command is answered normally.
    c.send(b"NOOP\r\n");
    let mut replies = vec![c.reply()];
    let next = c.reply();
    assert_eq!(
        next.code, 250,
        "NOOP after the message, got {next:?} (replies {replies:?})"
    );
    replies.push(next);
    replies
}

#[test]
fn smuggling_sequences_are_rejected_with_bare_lf_reject() {
    let sink = start(Sink::builder().bare_lf(BareLfPolicy::Reject));
    let mut c = Client::ehlo(sink.local_addr());
    for seq in SMUGGLE {
        let r = smuggle(&mut c, seq);
        r[0].expect(550, "5.7.0");
    }
    let s = sink.stats();
    assert_eq!(s.messages_accepted, 0);
    assert_eq!(s.messages_rejected, 4);
}

#[test]
fn smuggling_sequences_give_exactly_one_message_when_accepted() {
    let sink = start(Sink::builder().bare_lf(BareLfPolicy::Accept).keep(10));
    let mut c = Client::ehlo(sink.local_addr());
    for seq in SMUGGLE {
        let r = smuggle(&mut c, seq);
        r[0].expect(250, "2.0.0");
    }
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 4, "one message per attempt");
    for m in &msgs {
        assert_eq!(m.rcpt_to, ["x@y.test"]);
        let body = String::from_utf8_lossy(m.body());
        assert!(
            body.contains("smuggled"),
            "the second message stays inside the first"
        );
    }
}

#[test]
fn binary_garbage_ends_in_error_limit() {
    let sink = sink();
    let mut c = Client::connect(sink.local_addr());
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let garbage: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    // The sink may close mid-write; that is fine.
    let _ = c.stream.write_all(&garbage);
    let replies = c.drain_to_eof();
    let last = replies.last().expect("some replies");
    last.expect(421, "4.7.0");
    assert!(replies[..replies.len() - 1].iter().all(|r| r.code >= 500));
    wait_for("close", || {
        sink.stats().closed_for(CloseReason::TooManyErrors) == 1
    });
    // The sink is unharmed.
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "ok")
        .expect(250, "2.0.0");
}

#[test]
fn commands_before_the_greeting_are_answered_after_it() {
    let sink = sink();
    let mut c = Client::connect_raw(sink.local_addr());
    c.send(b"EHLO early.test\r\nNOOP\r\n");
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.reply().code, 250);
    c.reply().expect(250, "2.0.0");
}

#[test]
fn errors_per_session_limit() {
    let sink = start(Sink::builder().max_errors(3));
    let mut c = Client::connect(sink.local_addr());
    for _ in 0..3 {
        c.cmd("BOGUS").expect(500, "5.5.2");
    }
    c.cmd("BOGUS").expect(421, "4.7.0");
    assert!(c.drain_to_eof().is_empty());
    wait_for("close", || {
        sink.stats().closed_for(CloseReason::TooManyErrors) == 1
    });
}

#[test]
fn a_delivery_forgives_earlier_errors() {
    let sink = start(Sink::builder().max_errors(3));
    let mut c = Client::ehlo(sink.local_addr());
    for _ in 0..3 {
        c.cmd("BOGUS").expect(500, "5.5.2");
    }
    c.send_message(
        "s@example.test",
        &["r@example.test"],
        "Subject: x\r\n\r\nhi",
    )
    .expect(250, "2.0.0");
    // Counted afresh since the delivery: three more are allowed.
    for _ in 0..3 {
        c.cmd("BOGUS").expect(500, "5.5.2");
    }
    c.cmd("BOGUS").expect(421, "4.7.0");
    assert!(c.drain_to_eof().is_empty());
    wait_for("close", || {
        sink.stats().closed_for(CloseReason::TooManyErrors) == 1
    });
}

#[test]
fn idle_timeout() {
    let sink = start(Sink::builder().idle_timeout(Duration::from_millis(300)));
    let mut c = Client::ehlo(sink.local_addr());
    c.reply().expect(421, "4.4.2");
    assert!(c.drain_to_eof().is_empty());
    wait_for("close", || {
        sink.stats().closed_for(CloseReason::IdleTimeout) == 1
    });
}

#[test]
fn session_duration_limit() {
    let sink = start(
        Sink::builder()
            .idle_timeout(Duration::from_secs(30))
            .max_session_duration(Duration::from_millis(300)),
    );
    let mut c = Client::ehlo(sink.local_addr());
    c.reply().expect(421, "4.4.2");
    wait_for("close", || {
        sink.stats().closed_for(CloseReason::SessionTimeout) == 1
    });
}

#[test]
fn max_connections_total() {
    let sink = start(Sink::builder().max_connections(2));
    let mut a = Client::connect(sink.local_addr());
    let _b = Client::connect(sink.local_addr());
    let mut c = Client::connect_raw(sink.local_addr());
    c.reply().expect(421, "4.7.0");
    assert!(c.drain_to_eof().is_empty());
    a.cmd("QUIT");
    a.drain_to_eof();
    wait_for("slot freed", || sink.stats().connections_open == 1);
    let _d = Client::connect(sink.local_addr());
    assert_eq!(sink.stats().closed_for(CloseReason::TooManyConnections), 1);
}

#[test]
fn max_connections_per_ip() {
    let sink = start(Sink::builder().max_connections_per_ip(1));
    let _a = Client::connect(sink.local_addr());
    let mut b = Client::connect_raw(sink.local_addr());
    b.reply().expect(421, "4.7.0");
    assert!(b.drain_to_eof().is_empty());
}

#[test]
fn client_that_stops_reading_replies_is_cut_off() {
    let sink = start(Sink::builder().idle_timeout(Duration::from_millis(500)));
    let c = Client::connect(sink.local_addr());
    let stream = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut stream = stream;
        let batch = b"NOOP\r\n".repeat(10_000);
        for _ in 0..5_000 {
            if stream.write_all(&batch).is_err() {
                return true;
            }
        }
        false
    });
    assert!(writer.join().unwrap(), "the sink closed the connection");
    wait_for("close", || {
        sink.stats().closed_for(CloseReason::IdleTimeout) == 1
    });
    drop(c);
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("NOOP").expect(250, "2.0.0");
}
