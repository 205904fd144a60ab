//! Hostile peers: garbage, oversize lines, BDAT edge cases. Each test checks
//! the replies, the counters, and that the sink still serves a normal client
//! afterwards. Every read has a timeout (`common::TIMEOUT`), so a test fails
//! rather than hangs.

mod common;

use common::*;
use mailstorm_sink::{CloseReason, Sink, SinkHandle, Stage};

/// A normal client still gets its message through.
#[track_caller]
fn still_serves(sink: &SinkHandle) {
    let before = sink.stats().messages_accepted;
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("ok@b.test", &["x@y.test"], "Subject: fine\r\n\r\nfine")
        .expect(250, "2.0.0");
    c.cmd("QUIT").expect(221, "2.0.0");
    assert_eq!(sink.stats().messages_accepted, before + 1);
}

/// A client past EHLO with one recipient, ready for DATA or BDAT.
fn in_transaction(sink: &SinkHandle) -> Client {
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    c
}

/// Deterministic pseudo-random bytes (xorshift), NUL and CR/LF included.
fn garbage(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_bytes_end_in_the_error_limit_and_are_counted() {
    let sink = start(Sink::builder().max_errors(5));
    let mut c = Client::connect(sink.local_addr());
    let mut noise = garbage(64 * 1024, 0x2545_f491_4f6c_dd1d);
    // Make sure there are lines to answer.
    for i in (0..noise.len()).step_by(97) {
        noise[i] = b'\n';
    }
    c.send(&noise);
    let replies = c.drain_to_eof();
    let last = replies.last().expect("at least the closing reply");
    last.expect(421, "4.7.0");
    let errors = &replies[..replies.len() - 1];
    assert!(
        errors.len() <= 5 && errors.iter().all(|r| r.code >= 500),
        "{replies:?}"
    );
    wait_for("the close to be counted", || {
        sink.stats().closed_for(CloseReason::TooManyErrors) == 1
    });
    let s = sink.stats();
    assert_eq!(s.messages_accepted + s.messages_rejected, 0);
    assert!(s.read_buffer_high_water <= 128 * 1024, "{s:?}");
    still_serves(&sink);
}

#[test]
fn an_oversize_command_line_is_refused_and_the_session_goes_on() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    let mut line = vec![b'M'; 100_000];
    line.extend_from_slice(b"\r\nNOOP\r\n");
    c.send(&line);
    c.reply().expect(500, "5.5.2");
    c.reply().expect(250, "2.0.0");
    // The long line was skipped, not buffered whole.
    let s = sink.stats();
    assert!(s.read_buffer_high_water < 100_000, "{s:?}");
    assert_eq!(s.replies_at(Stage::Invalid, 500), 1);
    c.cmd("QUIT").expect(221, "2.0.0");
    still_serves(&sink);
}

#[test]
fn an_endless_command_line_is_not_buffered() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    // 4 MB with no line end: the sink must skip it, not keep it.
    let chunk = vec![b'Z'; 64 * 1024];
    for _ in 0..64 {
        c.send(&chunk);
    }
    c.send(b"\r\nNOOP\r\n");
    c.reply().expect(500, "5.5.2");
    c.reply().expect(250, "2.0.0");
    let s = sink.stats();
    assert!(s.read_buffer_high_water <= 256 * 1024, "{s:?}");
    still_serves(&sink);
}

#[test]
fn oversize_data_lines_are_accepted_or_refused_by_size_only() {
    let sink = start(Sink::builder().max_message_size(64 * 1024).keep(4));
    // One 32 KB line: no line limit in content, the message fits.
    let mut c = in_transaction(&sink);
    assert_eq!(c.cmd("DATA").code, 354);
    let long = "L".repeat(32 * 1024);
    c.send(format!("Subject: long\r\n\r\n{long}\r\n.\r\n").as_bytes());
    c.reply().expect(250, "2.0.0");
    // One 200 KB line: over the size limit, refused, and the session goes on.
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&vec![b'Y'; 200_000]);
    c.send(b"\r\n.\r\n");
    c.reply().expect(552, "5.3.4");
    c.cmd("NOOP").expect(250, "2.0.0");
    let s = sink.stats();
    assert_eq!((s.messages_accepted, s.messages_rejected), (1, 1));
    assert_eq!(sink.messages().len(), 1, "the refused body is not kept");
    assert!(sink.messages()[0].body().len() > 32 * 1024);
    still_serves(&sink);
}

#[test]
fn bdat_0_last_is_an_empty_message() {
    let sink = start(Sink::builder().keep(2));
    let mut c = in_transaction(&sink);
    c.cmd("BDAT 0 LAST").expect(250, "2.0.0");
    let s = sink.stats();
    assert_eq!((s.messages_accepted, s.message_bytes), (1, 0));
    assert_eq!(sink.messages()[0].body(), b"");
    still_serves(&sink);
}

#[test]
fn bdat_without_last_then_quit_accepts_nothing() {
    let sink = sink();
    let mut c = in_transaction(&sink);
    c.send(b"BDAT 5\r\nhello");
    let r = c.reply();
    r.expect(250, "2.0.0");
    assert!(r.text().contains("5 octets"), "{r:?}");
    c.cmd("QUIT").expect(221, "2.0.0");
    assert!(c.drain_to_eof().is_empty());
    wait_for("the session to close", || {
        sink.stats().closed_for(CloseReason::Quit) == 1
    });
    assert_eq!(sink.stats().messages_accepted, 0);
    still_serves(&sink);
}

#[test]
fn a_bdat_chunk_swallows_commands_until_its_size_then_the_peer_vanishes() {
    let sink = sink();
    let mut c = in_transaction(&sink);
    // "QUIT\r\n" is chunk data here, not a command: no 221.
    c.send(b"BDAT 20\r\nQUIT\r\n");
    c.send(&[b'x'; 14]);
    let r = c.reply();
    r.expect(250, "2.0.0");
    assert!(r.text().contains("20 octets"), "{r:?}");
    // Promise 1000 octets, send 10, and go away.
    c.send(b"BDAT 1000 LAST\r\n0123456789");
    drop(c);
    wait_for("the vanished client to be counted", || {
        sink.stats().closed_for(CloseReason::ClientClosed) == 1
    });
    let s = sink.stats();
    assert_eq!((s.messages_accepted, s.connections_open), (0, 0));
    still_serves(&sink);
}

#[test]
fn bdat_with_a_bad_size_is_a_syntax_error() {
    let sink = sink();
    let mut c = in_transaction(&sink);
    for bad in [
        "BDAT abc LAST",
        "BDAT -1",
        "BDAT 99999999999999999999999 LAST",
        "BDAT 5 FIRST",
        "BDAT",
        "BDAT 0x10",
    ] {
        c.cmd(bad).expect(501, "5.5.4");
    }
    // The transaction survived the errors.
    c.send(b"BDAT 2 LAST\r\nok");
    c.reply().expect(250, "2.0.0");
    let s = sink.stats();
    assert_eq!(s.messages_accepted, 1);
    assert_eq!(s.replies_with_code(501), 6);
    still_serves(&sink);
}

#[test]
fn bdat_bigger_than_the_size_limit_is_refused_and_its_bytes_swallowed() {
    let sink = start(Sink::builder().max_message_size(1024));
    let mut c = in_transaction(&sink);
    let mut chunk = b"BDAT 4096 LAST\r\n".to_vec();
    // The chunk looks like commands; none may run.
    chunk.extend(b"RSET\r\n".iter().cycle().take(4096));
    c.send(&chunk);
    c.reply().expect(552, "5.3.4");
    c.cmd("NOOP").expect(250, "2.0.0");
    let s = sink.stats();
    // Counted as a refused message, as an over-size DATA body is.
    assert_eq!((s.messages_accepted, s.messages_rejected), (0, 1));
    assert_eq!(s.replies_with_code(552), 1);
    still_serves(&sink);
}

#[test]
fn bdat_after_data_needs_a_new_transaction_and_data_after_bdat_is_refused() {
    let sink = sink();
    let mut c = in_transaction(&sink);
    assert_eq!(c.cmd("DATA").code, 354);
    // BDAT inside a DATA body is content.
    c.send(b"BDAT 5 LAST\r\nhello\r\n.\r\n");
    c.reply().expect(250, "2.0.0");
    // After the DATA transaction: no MAIL, so the chunk is refused and its
    // 5 octets are swallowed, never run as a command.
    c.send(b"BDAT 5 LAST\r\nQUIT\n");
    c.reply().expect(503, "5.5.1");
    c.cmd("NOOP").expect(250, "2.0.0");
    // DATA in the middle of a BDAT transaction.
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    c.send(b"BDAT 3\r\nabc");
    c.reply().expect(250, "2.0.0");
    c.cmd("DATA").expect(503, "5.5.1");
    // The BDAT transaction can still be finished.
    c.send(b"BDAT 3 LAST\r\ndef");
    c.reply().expect(250, "2.0.0");
    let s = sink.stats();
    assert_eq!(s.messages_accepted, 2);
    assert_eq!(s.message_bytes, "BDAT 5 LAST\r\nhello\r\n".len() as u64 + 6);
    still_serves(&sink);
}
