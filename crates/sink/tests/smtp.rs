//! Commands, extensions, pipelining, BDAT, SIZE and LMTP.

mod common;

use common::*;
use mailstorm_sink::{Sink, Stage};

#[test]
fn greeting_and_ehlo_capabilities() {
    let sink = sink();
    let mut c = Client::connect_raw(sink.local_addr());
    let g = c.reply();
    assert_eq!(g.code, 220);
    assert_eq!(g.text(), "sink.test ESMTP mailstorm-sink");
    let e = c.cmd("EHLO client.test");
    assert_eq!(e.code, 250);
    assert_eq!(e.lines[0], "sink.test");
    for ext in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "STARTTLS",
        "AUTH PLAIN LOGIN CRAM-MD5",
    ] {
        assert!(e.lines.iter().any(|l| l == ext), "missing {ext} in {e:?}");
    }
    let h = c.cmd("HELO client.test");
    assert_eq!((h.code, h.text().as_str()), (250, "sink.test"));
    c.cmd("QUIT").expect(221, "2.0.0");
    assert!(c.drain_to_eof().is_empty(), "closed after QUIT");
}

#[test]
fn no_starttls_advertised_without_tls() {
    let sink = start(Sink::builder().tls(false));
    let mut c = Client::connect(sink.local_addr());
    let e = c.cmd("EHLO x.test");
    assert!(!e.lines.iter().any(|l| l == "STARTTLS"));
    c.cmd("STARTTLS").expect(502, "5.5.1");
}

#[test]
fn simple_commands() {
    let sink = sink();
    let mut c = Client::connect(sink.local_addr());
    c.cmd("NOOP").expect(250, "2.0.0");
    c.cmd("RSET").expect(250, "2.0.0");
    c.cmd("VRFY postmaster").expect(252, "2.5.0");
    c.cmd("EXPN list").expect(502, "5.5.1");
    assert_eq!(c.cmd("HELP").code, 214);
    c.cmd("FOO bar").expect(500, "5.5.2");
    c.cmd("MAIL FROM:<a@b.test>").expect(503, "5.5.1");
    c.cmd("EHLO client.test");
    c.cmd("RCPT TO:<a@b.test>").expect(503, "5.5.1");
    c.cmd("DATA").expect(503, "5.5.1");
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("MAIL FROM:<a@b.test>").expect(503, "5.5.1");
    c.cmd("DATA").expect(503, "5.5.1");
    c.cmd("RSET").expect(250, "2.0.0");
    c.cmd("RCPT TO:<a@b.test>").expect(503, "5.5.1");
    // A bad reverse-path is a sender problem: RFC 3463 X.1.7, not X.1.3.
    c.cmd("MAIL FROM:a@b.test").expect(501, "5.1.7");
    c.cmd("MAIL TO:<a@b.test>").expect(501, "5.5.4");
    c.cmd("MAIL FROM:<a@b.test> FOO=1").expect(555, "5.5.4");
    c.cmd("DATA extra").expect(501, "5.5.4");
    c.cmd("QUIT").expect(221, "2.0.0");
}

#[test]
fn message_with_dsn_and_8bitmime_params() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test> BODY=8BITMIME RET=HDRS ENVID=xyz SIZE=100")
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<r@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@x.test")
        .expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: hi\r\n\r\n..dotted\r\n.\r\n");
    c.reply().expect(250, "2.0.0");
    c.cmd("MAIL FROM:<> SMTPUTF8").expect(250, "2.1.0");
    c.cmd("RCPT TO:<ü@x.test>").expect(250, "2.1.5");
    c.cmd("QUIT");
    let s = sink.shutdown();
    assert_eq!(s.messages_accepted, 1);
    assert_eq!(s.recipients_accepted, 2);
    assert_eq!(
        s.message_bytes,
        "Subject: hi\r\n\r\n.dotted\r\n".len() as u64
    );
}

#[test]
fn pipelined_batch_is_answered_in_one_write() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    let before = sink.stats().reply_writes;
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n");
    let replies: Vec<_> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(replies, [250, 250, 250, 354]);
    assert_eq!(
        sink.stats().reply_writes - before,
        1,
        "one write for the batch"
    );
    // Body, end and the next transaction in one write too.
    let before = sink.stats().reply_writes;
    c.send(b"body\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 5 LAST\r\nhello");
    let replies: Vec<_> = (0..4).map(|_| c.reply().code).collect();
    assert_eq!(replies, [250, 250, 250, 250]);
    assert_eq!(sink.stats().reply_writes - before, 1);
    assert_eq!(sink.stats().messages_accepted, 2);
}

#[test]
fn pipelined_batch_larger_than_the_read_buffer_is_answered_in_one_write() {
    // 16 BDAT transactions in one write, ~9 KiB: far more than the
    // session's first read buffer (1 KiB). The sink takes all that is
    // already in the socket before answering, so the client gets one write
    // of replies, not one per piece read (each write wakes the client).
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend_from_slice(
            format!("MAIL FROM:<s{i}@b.test>\r\nRCPT TO:<x@y.test>\r\nBDAT 500 LAST\r\n")
                .as_bytes(),
        );
        batch.extend_from_slice(&[b'x'; 500]);
    }
    assert!(batch.len() > 8 * 1024, "{}", batch.len());
    let before = sink.stats().reply_writes;
    c.send(&batch);
    for i in 0..48 {
        assert_eq!(c.reply().code, 250, "reply {i}");
    }
    assert_eq!(
        sink.stats().reply_writes - before,
        1,
        "one write for the whole batch"
    );
    assert_eq!(sink.stats().messages_accepted, 16);
}

#[test]
fn bdat_chunks_with_and_without_last() {
    let sink = start(Sink::builder().keep(10));
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test> BODY=BINARYMIME")
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    c.send(b"BDAT 6\r\nab\r\n.\r");
    let r = c.reply();
    r.expect(250, "2.0.0");
    assert!(r.text().contains("6 octets"), "{r:?}");
    // The chunk's bytes are data, even ones that look like commands.
    c.send(b"BDAT 10\r\nQUIT\r\nRSET");
    c.reply().expect(250, "2.0.0");
    c.send(b"BDAT 0 LAST\r\n");
    c.reply().expect(250, "2.0.0");
    // DATA after BDAT in the same transaction, and BDAT without MAIL.
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    c.send(b"BDAT 3\r\nabc");
    c.reply().expect(250, "2.0.0");
    c.cmd("DATA").expect(503, "5.5.1");
    c.send(b"BDAT 2 LAST\r\nde");
    c.reply().expect(250, "2.0.0");
    // Without MAIL: refused, but the chunk is still consumed.
    c.send(b"BDAT 6 LAST\r\nNOOP\r\n");
    c.reply().expect(503, "5.5.1");
    c.cmd("NOOP").expect(250, "2.0.0");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].body(), b"ab\r\n.\rQUIT\r\nRSET");
    assert_eq!(msgs[1].body(), b"abcde");
}

#[test]
fn binarymime_requires_bdat() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test> BODY=BINARYMIME")
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    c.cmd("DATA").expect(503, "5.5.1");
}

#[test]
fn size_limit_at_mail_and_after_body() {
    let sink = start(Sink::builder().max_message_size(100).keep(5));
    let mut c = Client::ehlo(sink.local_addr());
    let e = c.cmd("EHLO again.test");
    assert!(e.lines.iter().any(|l| l == "SIZE 100"));
    c.cmd("MAIL FROM:<a@b.test> SIZE=101").expect(552, "5.3.4");
    c.cmd("MAIL FROM:<a@b.test> SIZE=100").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&[b'x'; 300]);
    c.send(b"\r\n.\r\n");
    c.reply().expect(552, "5.3.4");
    // The session goes on; a message that fits is accepted.
    c.send_message("a@b.test", &["x@y.test"], "small")
        .expect(250, "2.0.0");
    // BDAT over the limit: refused after the chunk is consumed.
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    c.send(b"BDAT 60\r\n");
    c.send(&[b'y'; 60]);
    c.reply().expect(250, "2.0.0");
    c.send(b"BDAT 60 LAST\r\n");
    c.send(&[b'z'; 60]);
    c.reply().expect(552, "5.3.4");
    c.cmd("NOOP").expect(250, "2.0.0");
    let s = sink.stats();
    assert_eq!(s.messages_accepted, 1);
    assert_eq!(s.replies_at(Stage::Mail, 552), 1);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn too_many_recipients() {
    let sink = start(Sink::builder().max_recipients(2));
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test>");
    c.cmd("RCPT TO:<1@y.test>").expect(250, "2.1.5");
    c.cmd("RCPT TO:<2@y.test>").expect(250, "2.1.5");
    c.cmd("RCPT TO:<3@y.test>").expect(452, "4.5.3");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"x\r\n.\r\n");
    c.reply().expect(250, "2.0.0");
}

#[test]
fn lmtp_per_recipient_replies() {
    let sink = start(
        Sink::builder()
            .lmtp(true)
            .hostname("lmtp.test")
            .bare_lf(mailstorm_sink::BareLfPolicy::Reject),
    );
    let mut c = Client::connect_raw(sink.local_addr());
    assert!(c.reply().text().contains("LMTP"));
    c.cmd("EHLO x.test").expect(503, "5.5.1");
    c.cmd("HELO x.test").expect(503, "5.5.1");
    let l = c.cmd("LHLO x.test");
    assert_eq!(l.code, 250);
    assert!(l.lines.iter().any(|l| l == "PIPELINING"));
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    for r in ["one@y.test", "two@y.test", "three@y.test"] {
        c.cmd(&format!("RCPT TO:<{r}>")).expect(250, "2.1.5");
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"hi\r\n.\r\n");
    for r in ["one@y.test", "two@y.test", "three@y.test"] {
        let reply = c.reply();
        reply.expect(250, "2.1.5");
        assert!(reply.text().contains(r), "{reply:?} for {r}");
    }
    c.cmd("NOOP").expect(250, "2.0.0");
    // Each recipient also gets the refusal.
    c.cmd("MAIL FROM:<a@b.test>");
    c.cmd("RCPT TO:<one@y.test>");
    c.cmd("RCPT TO:<two@y.test>");
    c.cmd("DATA");
    c.send(b"bare\nLF\r\n.\r\n");
    c.reply().expect(550, "5.7.0");
    c.reply().expect(550, "5.7.0");
    c.cmd("NOOP").expect(250, "2.0.0");
}

#[test]
fn lhlo_is_unknown_in_smtp_mode() {
    let sink = sink();
    let mut c = Client::connect(sink.local_addr());
    c.cmd("LHLO x.test").expect(500, "5.5.2");
}

#[test]
fn stats_snapshot_counts() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test", "z@y.test"], "hello")
        .expect(250, "2.0.0");
    c.cmd("BOGUS").expect(500, "5.5.2");
    c.cmd("QUIT");
    assert!(c.drain_to_eof().is_empty());
    wait_for("session close", || sink.stats().connections_open == 0);
    let s = sink.stats();
    assert_eq!(s.connections_total, 1);
    assert_eq!(s.messages_accepted, 1);
    assert_eq!(s.recipients_accepted, 2);
    assert_eq!(s.message_bytes, 7);
    assert_eq!(s.replies_at(Stage::Connect, 220), 1);
    assert_eq!(s.replies_at(Stage::Rcpt, 250), 2);
    assert_eq!(s.replies_at(Stage::Invalid, 500), 1);
    assert_eq!(s.closed["quit"], 1);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["replies"]["data_end"]["250"], 1);
    sink.reset_stats();
    let s = sink.stats();
    assert_eq!((s.messages_accepted, s.connections_total), (0, 0));
}
