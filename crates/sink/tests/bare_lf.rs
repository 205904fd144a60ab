//! The default `bare_lf: accept`: LF-only content is taken as written (what
//! Postfix 3.9 does with `smtpd_forbid_bare_newline = normalize`), while only
//! `CRLF . CRLF` ends DATA, so smuggling still yields exactly one message.

mod common;

use std::process::Command;

use common::*;
use mailstorm_sink::{BareLfPolicy, Sink, SinkConfig};

/// Each smuggling sequence, followed by a would-be second message.
const SMUGGLE: [&[u8]; 4] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n"];

#[test]
fn the_default_policy_is_accept() {
    assert_eq!(SinkConfig::default().bare_lf, BareLfPolicy::Accept);
    assert_eq!(SinkConfig::embedded().bare_lf, BareLfPolicy::Accept);
}

#[test]
fn smuggling_vectors_give_exactly_one_message_each_by_default() {
    let sink = start(Sink::builder().keep(10));
    let mut c = Client::ehlo(sink.local_addr());
    for seq in SMUGGLE {
        c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
        c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
        assert_eq!(c.cmd("DATA").code, 354);
        let mut body = b"Subject: one\r\n\r\nfirst".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(
            b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: two\r\n\r\nsmuggled\r\n.\r\n",
        );
        c.send(&body);
        // One final reply for the whole thing, then a normal command.
        c.reply().expect(250, "2.0.0");
        c.cmd("NOOP").expect(250, "2.0.0");
    }
    let msgs = sink.messages();
    assert_eq!(msgs.len(), SMUGGLE.len(), "one message per attempt");
    for m in &msgs {
        assert_eq!(m.rcpt_to, ["x@y.test"], "no smuggled recipient");
        assert!(String::from_utf8_lossy(m.body()).contains("smuggled"));
    }
    let s = sink.stats();
    assert_eq!((s.messages_accepted, s.messages_rejected), (4, 0));
    assert_eq!(s.recipients_accepted, 4);
}

/// Sends `content` with `curl -T` (which sends the file's bytes as they are
/// and appends `CRLF . CRLF`); returns curl's exit status and stderr.
fn curl_upload(addr: std::net::SocketAddr, content: &[u8], name: &str) -> (Option<i32>, String) {
    let dir = temp_dir(name);
    let file = dir.join("message.txt");
    std::fs::write(&file, content).unwrap();
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .arg("--url")
        .arg(format!("smtp://{addr}/client.test"))
        .args(["--mail-from", "a@b.test", "--mail-rcpt", "x@y.test", "-T"])
        .arg(&file)
        .output()
        .expect("curl runs");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An LF-only file, with a lone `.` line that curl does not dot-stuff
/// (it only looks for CRLF-dot).
const LF_ONLY: &[u8] = b"Subject: lf only\nFrom: a@b.test\n\nline one\n.\nline after the dot\n";

#[test]
fn curl_uploading_an_lf_only_file_is_accepted_as_one_message() {
    let sink = start(Sink::builder().keep(10));
    let (code, err) = curl_upload(sink.local_addr(), LF_ONLY, "curl-lf");
    assert_eq!(code, Some(0), "curl failed: {err}");
    wait_for("the message to be counted", || {
        sink.stats().messages_accepted == 1
    });
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let body = String::from_utf8_lossy(msgs[0].body()).into_owned();
    assert!(body.contains("line after the dot"), "{body:?}");
    assert_eq!(msgs[0].header("subject").as_deref(), Some("lf only"));
    assert_eq!(sink.stats().messages_rejected, 0);
}

#[test]
fn curl_lf_only_file_is_refused_with_bare_lf_reject() {
    let sink = start(Sink::builder().bare_lf(BareLfPolicy::Reject));
    let (code, err) = curl_upload(sink.local_addr(), LF_ONLY, "curl-lf-reject");
    // curl reports any non-250 end-of-data reply as "Weird server reply".
    assert_eq!(code, Some(8), "curl should report the refusal: {err}");
    wait_for("the refusal to be counted", || {
        sink.stats().messages_rejected == 1
    });
    assert_eq!(sink.stats().messages_accepted, 0);
}
