//! `capture` and `keep`: the directory is checked at start, a failed write
//! leaves no temp file behind, and the kept messages have a byte cap.

mod common;

use common::*;
use mailstorm_sink::{Sink, SinkError};

/// Names in `dir` that start with a dot (temp files and probes).
fn hidden_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn a_missing_capture_directory_is_created_at_start() {
    let base = temp_dir("capture-create");
    let dir = base.join("not/yet/there");
    let sink = start(Sink::builder().capture(&dir));
    assert!(dir.is_dir(), "created before the first message");
    assert!(hidden_files(&dir).is_empty(), "the write probe is removed");
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "Subject: s\r\n\r\nhi")
        .expect(250, "2.0.0");
    assert!(dir.join("1.eml").is_file());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_uncreatable_capture_directory_refuses_to_start_naming_the_path() {
    let base = temp_dir("capture-uncreatable");
    let file = base.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let dir = file.join("captures");
    let err = Sink::builder().capture(&dir).start().unwrap_err();
    assert!(matches!(err, SinkError::Capture { .. }), "{err:?}");
    assert!(err.is_configuration());
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_unwritable_capture_directory_refuses_to_start() {
    // procfs refuses new files even to root, where a chmod would not.
    let err = Sink::builder().capture("/proc/self").start().unwrap_err();
    assert!(matches!(err, SinkError::Capture { .. }), "{err:?}");
    assert!(err.to_string().contains("/proc/self"), "{err}");
}

#[test]
fn a_full_disk_leaves_no_temp_file_and_later_messages_are_stored() {
    let dir = temp_dir("capture-full");
    let sink = start(Sink::builder().capture(&dir));
    // The first message's temp file leads to /dev/full: every write to it
    // fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.join(".1.eml.tmp")).unwrap();
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "Subject: one\r\n\r\nhi")
        .expect(451, "4.3.0");
    assert_eq!(
        hidden_files(&dir),
        Vec::<String>::new(),
        "temp file removed"
    );
    assert!(!dir.join("1.eml").exists());
    // The disk is not left full: the next message is stored.
    let r = c.send_message("a@b.test", &["x@y.test"], "Subject: two\r\n\r\nhi");
    r.expect(250, "2.0.0");
    assert!(r.text().contains("queued as 2"), "{r:?}");
    assert!(std::fs::read_to_string(dir.join("2.eml"))
        .unwrap()
        .contains("Subject: two"));
    let s = sink.stats();
    assert_eq!((s.messages_accepted, s.messages_rejected), (1, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_rename_leaves_no_temp_file() {
    let dir = temp_dir("capture-rename");
    // A non-empty directory where `1.eml` should go: the rename fails.
    std::fs::create_dir_all(dir.join("1.eml")).unwrap();
    std::fs::write(dir.join("1.eml/occupied"), b"x").unwrap();
    let sink = start(Sink::builder().capture(&dir));
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "Subject: one\r\n\r\nhi")
        .expect(451, "4.3.0");
    assert_eq!(
        hidden_files(&dir),
        Vec::<String>::new(),
        "temp file removed"
    );
    c.send_message("a@b.test", &["x@y.test"], "Subject: two\r\n\r\nhi")
        .expect(250, "2.0.0");
    assert!(dir.join("2.eml").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kept_messages_are_capped_in_bytes_oldest_first() {
    const CAP: u64 = 100 * 1024;
    let sink = start(Sink::builder().keep(10_000).keep_bytes(CAP));
    let mut c = Client::ehlo(sink.local_addr());
    let body = format!("Subject: s\r\n\r\n{}", "x".repeat(10 * 1024));
    for _ in 0..50 {
        c.send_message("a@b.test", &["x@y.test"], &body)
            .expect(250, "2.0.0");
    }
    let kept = sink.messages();
    let bytes: usize = kept.iter().map(|m| m.raw.len()).sum();
    assert!(bytes as u64 <= CAP, "{bytes} bytes kept over a {CAP} cap");
    assert!(
        kept.len() >= 8,
        "the cap keeps as many as fit: {}",
        kept.len()
    );
    assert_eq!(kept.last().unwrap().id, 50, "the newest is kept");
    let ids: Vec<u64> = kept.iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert_eq!(sink.stats().messages_accepted, 50);
}

#[test]
fn a_message_over_the_byte_cap_is_accepted_but_not_kept() {
    let sink = start(Sink::builder().keep(10).keep_bytes(1024));
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "Subject: small\r\n\r\nhi")
        .expect(250, "2.0.0");
    let big = format!("Subject: big\r\n\r\n{}", "y".repeat(4096));
    c.send_message("a@b.test", &["x@y.test"], &big)
        .expect(250, "2.0.0");
    let kept = sink.messages();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].header("subject").as_deref(), Some("small"));
}

#[test]
fn a_reload_to_an_unwritable_capture_directory_keeps_the_old_one() {
    let dir = temp_dir("capture-reload");
    let sink = start(Sink::builder().capture(&dir));
    let mut config = sink.config();
    config.capture = Some("/proc/self".into());
    let err = sink.reload(config).unwrap_err();
    assert!(matches!(err, SinkError::Capture { .. }), "{err:?}");
    assert_eq!(sink.config().capture.as_deref(), Some(dir.as_path()));
    let mut c = Client::ehlo(sink.local_addr());
    c.send_message("a@b.test", &["x@y.test"], "hi")
        .expect(250, "2.0.0");
    assert!(dir.join("1.eml").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `buffer_bytes` bounds what arriving messages hold in memory across
/// sessions (`--keep`/`--capture` buffer each message whole): a message
/// that would pass it is answered `452 4.3.1` at its end, and what a
/// message held comes back when it ends or its session is dropped.
#[test]
fn arriving_messages_share_the_buffer_budget() {
    const BODY: usize = 600 * 1024;
    let sink = start(
        Sink::builder()
            .keep(10)
            .max_message_size(1 << 20)
            .buffer_bytes(1 << 20),
    );
    let addr = sink.local_addr();
    let body = format!("Subject: big\r\n\r\n{}", "z".repeat(BODY));

    // A holds 600 KB of a message it has not ended.
    let mut a = Client::ehlo(addr);
    a.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    a.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    assert_eq!(a.cmd("DATA").code, 354);
    a.send(body.as_bytes());
    wait_for("A's body held", || sink.buffered_bytes() >= BODY as u64);

    // B's 600 KB would take the sessions past 1 MiB: 452, nothing kept.
    let mut b = Client::ehlo(addr);
    b.send_message("b@b.test", &["x@y.test"], &body)
        .expect(452, "4.3.1");
    // A's message is whole and kept.
    a.send(b"\r\n.\r\n");
    a.reply().expect(250, "2.0.0");
    // A's hold came back: B's retry fits, over BDAT too.
    b.send_message("b@b.test", &["x@y.test"], &body)
        .expect(250, "2.0.0");
    b.cmd("MAIL FROM:<b@b.test>").expect(250, "2.1.0");
    b.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    b.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
    b.send(body.as_bytes());
    b.reply().expect(250, "2.0.0");

    // C holds 600 KB and leaves mid-message: its hold comes back too.
    let mut c = Client::ehlo(addr);
    c.cmd("MAIL FROM:<c@b.test>").expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(body.as_bytes());
    wait_for("C's body held", || sink.buffered_bytes() >= BODY as u64);
    // While C holds it, a BDAT message in two chunks passes the budget at
    // its second chunk and is refused at its end.
    let half = body.len() / 2;
    b.cmd("MAIL FROM:<b@b.test>").expect(250, "2.1.0");
    b.cmd("RCPT TO:<x@y.test>").expect(250, "2.1.5");
    b.send(format!("BDAT {half}\r\n").as_bytes());
    b.send(&body.as_bytes()[..half]);
    b.reply().expect(250, "2.0.0");
    b.send(format!("BDAT {} LAST\r\n", body.len() - half).as_bytes());
    b.send(&body.as_bytes()[half..]);
    b.reply().expect(452, "4.3.1");
    let open = sink.stats().connections_open;
    drop(c);
    wait_for("C's session closed", || {
        sink.stats().connections_open < open
    });
    b.send_message("b@b.test", &["x@y.test"], &body)
        .expect(250, "2.0.0");

    let kept = sink.messages();
    assert_eq!(kept.len(), 4, "A's, and B's three accepted");
    // DATA adds the CRLF before the final dot; BDAT carries the body as is.
    let sizes: Vec<usize> = kept.iter().map(|m| m.size).collect();
    let whole = [body.len() + 2, body.len() + 2, body.len(), body.len() + 2];
    assert_eq!(sizes, whole, "whole bodies kept");
    assert_eq!(sink.stats().messages_accepted, 4);
}
