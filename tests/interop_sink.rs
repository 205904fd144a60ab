//! Real SMTP clients against an embedded `mailstorm-sink`: swaks, Python
//! `smtplib`, curl, Postfix's `smtp-source` and a throwaway Postfix instance
//! relaying through the sink. Each test asserts what the sink received
//! (envelope, body, TLS, AUTH user) through `SinkHandle::messages()` and the
//! stats.
//!
//! The clients are installed by `scripts/test.sh`. A missing client fails
//! its test with a hint, unless `MAILSTORM_SKIP_INTEROP=1` (then it skips).
//! Every external process runs under a timeout and is killed with its
//! process group on timeout or drop; everything is on 127.0.0.1 with
//! ephemeral ports; waits poll with bounded timeouts.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstorm_sink::{
    Decision, Sink, SinkBuilder, SinkHandle, Stage, StageContext, StatsSnapshot, StoredMessage,
};
use support::postfix::PostfixTools;
use support::{require_program, run_with_timeout, wait_until, PostfixInstance, RunOutput, TIMEOUT};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret pass:word";
const AUTH_MECHS: [&str; 3] = ["PLAIN", "LOGIN", "CRAM-MD5"];

// ---------------------------------------------------------------------------
// Helpers

fn builder() -> SinkBuilder {
    Sink::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(1)
        .keep(100)
        .hostname("sink.test")
}

fn start(b: SinkBuilder) -> SinkHandle {
    b.start().expect("sink starts")
}

/// A sink that checks AUTH against a users file holding `USER:PASSWORD`
/// (the directory must outlive the sink's start).
fn auth_sink(dir: &Path) -> SinkHandle {
    let users = dir.join("users");
    std::fs::write(
        &users,
        format!("# test users\n{USER}:{PASSWORD}\nbob:other\n"),
    )
    .unwrap();
    start(builder().auth_users(users))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mailstorm-interop-")
        .tempdir()
        .expect("temp dir")
}

/// A marker unique to this test run, to find in bodies.
fn marker(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), unique())
}

fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Waits until the sink kept `n` messages; returns them.
#[track_caller]
fn wait_messages(sink: &SinkHandle, n: usize) -> Vec<Arc<StoredMessage>> {
    wait_messages_for(sink, n, TIMEOUT)
}

#[track_caller]
fn wait_messages_for(sink: &SinkHandle, n: usize, timeout: Duration) -> Vec<Arc<StoredMessage>> {
    if let Err(e) = wait_until(&format!("{n} message(s) at the sink"), timeout, || {
        sink.messages().len() >= n
    }) {
        panic!("{e}; stats: {:#?}", sink.stats());
    }
    sink.messages()
}

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

#[track_caller]
fn assert_body_contains(m: &StoredMessage, needle: &str) {
    let b = body(m);
    assert!(b.contains(needle), "body lacks {needle:?}:\n{b}");
}

fn run(cmd: &mut Command) -> RunOutput {
    run_with_timeout(cmd, None, TIMEOUT).expect("spawn client")
}

/// Stats of a session that is over: waits for the sink to count it closed
/// (the client may exit before the sink has processed its QUIT).
fn settled_stats(sink: &SinkHandle) -> StatsSnapshot {
    wait_until("sessions to close", TIMEOUT, || {
        let s = sink.stats();
        s.connections_open == 0 && s.closed.values().sum::<u64>() == s.connections_total
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", sink.stats()));
    sink.stats()
}

// ---------------------------------------------------------------------------
// swaks

fn swaks(bin: &Path, sink: &SinkHandle, to: &str, extra: &[&str]) -> RunOutput {
    run(Command::new(bin)
        .args(["--server", &sink.local_addr().to_string()])
        .args(["--timeout", "10", "--helo", "swaks.test"])
        .args(["--from", "swaks-sender@client.test", "--to", to])
        .args(extra))
}

#[test]
fn swaks_plain_message_arrives_with_its_envelope() {
    let Some(bin) = require_program("swaks") else {
        return;
    };
    let sink = start(builder());
    let m = marker("swaks-plain");
    let subject = format!("Subject: swaks {m}");
    let out = swaks(
        &bin,
        &sink,
        "one@sink.test,two@sink.test",
        &["--header", &subject, "--body", &format!("body {m}")],
    );
    out.assert_success();
    let msgs = wait_messages(&sink, 1);
    assert_eq!(msgs.len(), 1);
    let msg = &msgs[0];
    assert_eq!(msg.mail_from, "swaks-sender@client.test");
    assert_eq!(msg.rcpt_to, ["one@sink.test", "two@sink.test"]);
    assert_eq!(msg.helo, "swaks.test");
    assert_eq!(msg.tls, None);
    assert_eq!(msg.auth_user, None);
    assert_eq!(msg.header("subject").as_deref(), Some(&subject[9..]));
    assert_body_contains(msg, &format!("body {m}"));
    let stats = settled_stats(&sink);
    assert_eq!(stats.messages_accepted, 1);
    assert_eq!(stats.recipients_accepted, 2);
}

/// With `--pipeline` swaks sends MAIL, both RCPTs and DATA in one write;
/// the sink answers that batch in one write. Same transaction without
/// pipelining: one reply write per command.
#[test]
fn swaks_pipelining_batch_gets_one_write() {
    let Some(bin) = require_program("swaks") else {
        return;
    };
    let mut seen = Vec::new();
    for pipeline in [false, true] {
        let sink = start(builder());
        let m = marker("swaks-pipe");
        let mut extra = vec!["--body", &m];
        if pipeline {
            extra.push("--pipeline");
        }
        let out = swaks(&bin, &sink, "p1@sink.test,p2@sink.test", &extra);
        out.assert_success();
        if pipeline {
            // swaks saw PIPELINING advertised and used it.
            assert!(
                out.stdout.contains("PIPELINING"),
                "no PIPELINING in EHLO reply:\n{out}"
            );
        }
        let msgs = wait_messages(&sink, 1);
        assert_eq!(msgs[0].rcpt_to, ["p1@sink.test", "p2@sink.test"]);
        assert_body_contains(&msgs[0], &m);
        let stats = settled_stats(&sink);
        seen.push((stats.commands, stats.reply_writes));
    }
    eprintln!("(commands, reply writes) without / with pipelining: {seen:?}");
    let [(plain_cmds, plain_writes), (pipe_cmds, pipe_writes)] = seen[..] else {
        unreachable!()
    };
    // EHLO MAIL RCPT RCPT DATA QUIT either way.
    assert_eq!(plain_cmds, pipe_cmds, "{seen:?}");
    // Unpipelined: greeting + one write per command + the final dot.
    assert_eq!(plain_writes, plain_cmds + 2, "{seen:?}");
    // Pipelined: MAIL, RCPT, RCPT, DATA answered in one write (3 fewer).
    assert!(
        pipe_writes + 3 <= plain_writes,
        "pipelined batch not answered in one write: (commands, writes) plain/pipelined {seen:?}"
    );
}

#[test]
fn swaks_starttls_message_is_marked_tls() {
    let Some(bin) = require_program("swaks") else {
        return;
    };
    let sink = start(builder());
    let m = marker("swaks-tls");
    // swaks does not verify the certificate by default: the sink's
    // generated self-signed one is fine.
    let out = swaks(&bin, &sink, "tls@sink.test", &["-tls", "--body", &m]);
    out.assert_success();
    assert!(out.stdout.contains("TLS started"), "{out}");
    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert!(
        msg.tls.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "tls = {:?}",
        msg.tls
    );
    assert_eq!(msg.rcpt_to, ["tls@sink.test"]);
    // RFC 3207: the EHLO after STARTTLS is the one recorded.
    assert_eq!(msg.helo, "swaks.test");
    assert_body_contains(msg, &m);
    let stats = settled_stats(&sink);
    assert_eq!((stats.tls_handshakes, stats.tls_failures), (1, 0));
}

#[test]
fn swaks_auth_mechanisms_right_and_wrong_password() {
    let Some(bin) = require_program("swaks") else {
        return;
    };
    let dir = tempdir();
    let sink = auth_sink(dir.path());
    let mut expected = 0;
    for mech in AUTH_MECHS {
        // Right password: accepted, message carries the user.
        let m = marker(&format!("swaks-auth-{mech}"));
        let out = swaks(
            &bin,
            &sink,
            "auth@sink.test",
            &[
                "--auth",
                mech,
                "--auth-user",
                USER,
                "--auth-password",
                PASSWORD,
                "--body",
                &m,
            ],
        );
        out.assert_success();
        assert!(out.stdout.contains("235 2.7.0"), "{mech}: {out}");
        expected += 1;
        let msgs = wait_messages(&sink, expected);
        let msg = msgs.last().unwrap();
        assert_eq!(msg.auth_user.as_deref(), Some(USER), "{mech}");
        assert_body_contains(msg, &m);

        // Wrong password: 535 5.7.8, swaks gives up, no message.
        let out = swaks(
            &bin,
            &sink,
            "auth@sink.test",
            &[
                "--auth",
                mech,
                "--auth-user",
                USER,
                "--auth-password",
                "wrong",
            ],
        );
        assert!(
            !out.success(),
            "{mech} with a wrong password succeeded: {out}"
        );
        assert!(out.stdout.contains("535 5.7.8"), "{mech}: {out}");
    }
    let stats = settled_stats(&sink);
    assert_eq!(stats.auth_successes, 3);
    assert_eq!(stats.auth_failures, 3);
    assert_eq!(stats.messages_accepted, 3);
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(stats.replies_at(Stage::Auth, 535), 3);
}

#[test]
fn swaks_auth_after_starttls() {
    let Some(bin) = require_program("swaks") else {
        return;
    };
    let dir = tempdir();
    let sink = auth_sink(dir.path());
    let m = marker("swaks-tls-auth");
    let out = swaks(
        &bin,
        &sink,
        "tls-auth@sink.test",
        &[
            "-tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--body",
            &m,
        ],
    );
    out.assert_success();
    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert!(msg.tls.is_some());
    assert_eq!(msg.auth_user.as_deref(), Some(USER));
    assert_body_contains(msg, &m);
}

// ---------------------------------------------------------------------------
// Python smtplib

fn smtplib(sink: &SinkHandle, marker: &str, extra: &[&str]) -> Option<RunOutput> {
    let python = require_program("python3")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/smtplib_client.py");
    Some(run(Command::new(python)
        .arg(script)
        .args(["--port", &sink.local_addr().port().to_string()])
        .args(["--marker", marker])
        .args(extra)))
}

/// The envelope send_message() builds: To, then Bcc, then Cc (smtplib's
/// order).
const PY_RCPTS: [&str; 4] = [
    "ann@sink.test",
    "bob@sink.test",
    "dave@sink.test",
    "carol@sink.test",
];

#[test]
fn smtplib_send_message_to_several_recipients() {
    let sink = start(builder());
    let m = marker("smtplib");
    let Some(out) = smtplib(&sink, &m, &[]) else {
        return;
    };
    out.assert_success();
    assert!(out.stdout.contains("\"refused\": {}"), "{out}");
    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert_eq!(msg.mail_from, "py-sender@client.test");
    assert_eq!(msg.rcpt_to, PY_RCPTS);
    assert_eq!(msg.helo, "smtplib.test");
    assert_eq!(msg.tls, None);
    assert_eq!(msg.header("subject"), Some(format!("smtplib {m}")));
    assert_eq!(
        msg.header("to").as_deref(),
        Some("Ann Example <ann@sink.test>, bob@sink.test")
    );
    // send_message() drops Bcc from the transmitted headers.
    assert_eq!(msg.header("bcc"), None);
    assert_body_contains(msg, &m);
    // smtplib dot-stuffed the line; the sink removed the extra dot.
    assert_body_contains(msg, "\r\n.a line that starts with a dot\r\n");
    assert!(!body(msg).contains("..a line"), "{}", body(msg));
}

#[test]
fn smtplib_starttls_and_login() {
    let dir = tempdir();
    let sink = auth_sink(dir.path());
    let m = marker("smtplib-tls");
    // login() picks the mechanism (CRAM-MD5 first when offered).
    let Some(out) = smtplib(
        &sink,
        &m,
        &["--starttls", "--user", USER, "--password", PASSWORD],
    ) else {
        return;
    };
    out.assert_success();
    assert!(out.stdout.contains("\"starttls\": true"), "{out}");
    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert!(msg.tls.is_some(), "{msg:?}");
    assert_eq!(msg.auth_user.as_deref(), Some(USER));
    assert_eq!(msg.rcpt_to, PY_RCPTS);
    assert_body_contains(msg, &m);

    // Each mechanism forced, then a wrong password.
    for (i, mech) in AUTH_MECHS.into_iter().enumerate() {
        let m = marker(&format!("smtplib-{mech}"));
        let out = smtplib(
            &sink,
            &m,
            &[
                "--starttls",
                "--user",
                USER,
                "--password",
                PASSWORD,
                "--mech",
                mech,
            ],
        )
        .unwrap();
        out.assert_success();
        let msg = wait_messages(&sink, 2 + i).pop().unwrap();
        assert_eq!(msg.auth_user.as_deref(), Some(USER), "{mech}");
        assert_body_contains(&msg, &m);
    }
    let out = smtplib(
        &sink,
        "never",
        &["--starttls", "--user", USER, "--password", "wrong"],
    )
    .unwrap();
    assert_eq!(out.code(), Some(3), "wrong password not refused: {out}");
    assert!(out.stdout.contains("[535, \"5.7.8"), "{out}");
    let stats = settled_stats(&sink);
    assert_eq!(stats.messages_accepted, 4);
    assert_eq!(stats.tls_handshakes, 5);
    // login() tries each advertised mechanism before giving up.
    assert_eq!(stats.auth_failures, 3);
    assert!(sink.messages().iter().all(|m| !body(m).contains("never")));
}

// ---------------------------------------------------------------------------
// curl

/// Writes a message file for `curl --upload-file` (CRLF line ends; curl
/// does the dot-stuffing).
fn eml(dir: &Path, marker: &str) -> PathBuf {
    let path = dir.join(format!("{marker}.eml"));
    let text = format!(
        "From: Curl Sender <curl-sender@client.test>\r\n\
         To: c1@sink.test, c2@sink.test\r\n\
         Subject: curl {marker}\r\n\
         \r\n\
         Hello from curl.\r\n\
         {marker}\r\n\
         .dot-led line\r\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn curl(bin: &Path, sink: &SinkHandle, file: &Path, extra: &[&str]) -> RunOutput {
    // The URL path is the EHLO name.
    let url = format!("smtp://{}/curl.test", sink.local_addr());
    run(Command::new(bin)
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--url", &url])
        .args(["--mail-from", "curl-sender@client.test"])
        .args(["--mail-rcpt", "c1@sink.test", "--mail-rcpt", "c2@sink.test"])
        .arg("--upload-file")
        .arg(file)
        .args(extra))
}

#[test]
fn curl_plain_upload() {
    let Some(bin) = require_program("curl") else {
        return;
    };
    let dir = tempdir();
    let sink = start(builder());
    let m = marker("curl-plain");
    curl(&bin, &sink, &eml(dir.path(), &m), &[]).assert_success();
    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert_eq!(msg.mail_from, "curl-sender@client.test");
    assert_eq!(msg.rcpt_to, ["c1@sink.test", "c2@sink.test"]);
    assert_eq!(msg.helo, "curl.test");
    assert_eq!(msg.tls, None);
    assert_eq!(msg.header("subject"), Some(format!("curl {m}")));
    assert_body_contains(msg, &format!("\r\n{m}\r\n.dot-led line\r\n"));
}

#[test]
fn curl_starttls_and_auth() {
    let Some(bin) = require_program("curl") else {
        return;
    };
    let dir = tempdir();
    let sink = auth_sink(dir.path());
    let creds = format!("{USER}:{PASSWORD}");
    let mut expected = 0;
    // curl's own choice of mechanism, then each one forced.
    let mut variants = vec![None];
    variants.extend(AUTH_MECHS.map(Some));
    for mech in variants {
        let m = marker(&format!("curl-{}", mech.unwrap_or("auto")));
        let opt = mech.map(|x| format!("AUTH={x}"));
        let mut extra = vec!["--ssl-reqd", "--insecure", "--user", &creds];
        if let Some(o) = &opt {
            extra.extend(["--login-options", o]);
        }
        curl(&bin, &sink, &eml(dir.path(), &m), &extra).assert_success();
        expected += 1;
        let msgs = wait_messages(&sink, expected);
        let msg = msgs.last().unwrap();
        assert!(msg.tls.is_some(), "{mech:?}: {msg:?}");
        assert_eq!(msg.auth_user.as_deref(), Some(USER), "{mech:?}");
        assert_eq!(msg.rcpt_to, ["c1@sink.test", "c2@sink.test"]);
        assert_body_contains(msg, &m);
    }
    // Wrong password: curl reports a login failure (67), nothing stored.
    let m = marker("curl-wrong");
    let wrong = format!("{USER}:wrong");
    let out = curl(
        &bin,
        &sink,
        &eml(dir.path(), &m),
        &["--ssl-reqd", "--insecure", "--user", &wrong],
    );
    assert_eq!(out.code(), Some(67), "{out}");
    let stats = settled_stats(&sink);
    assert_eq!(stats.messages_accepted, expected as u64);
    assert_eq!(stats.auth_failures, 1);
    assert_eq!(stats.replies_at(Stage::Auth, 535), 1);
    assert!(sink.messages().iter().all(|msg| !body(msg).contains(&m)));
}

// ---------------------------------------------------------------------------
// Postfix: smtp-source as a load client, and Postfix relaying to the sink

#[test]
fn smtp_source_messages_all_arrive() {
    let Some(tools) = PostfixTools::require() else {
        return;
    };
    let source = tools.smtp_source.expect("smtp-source is part of postfix");
    let sink = start(builder());
    // 20 messages over 2 concurrent sessions, 2 recipients each.
    let out = run(Command::new(source)
        .args(["-m", "20", "-s", "2", "-r", "2", "-l", "2048"])
        .args(["-M", "source.test", "-f", "source@client.test"])
        .args(["-t", "dest@sink.test"])
        .arg(sink.local_addr().to_string()));
    out.assert_success();
    let msgs = wait_messages(&sink, 20);
    assert_eq!(msgs.len(), 20);
    for msg in &msgs {
        assert_eq!(msg.mail_from, "source@client.test");
        // -r 2 prefixes the recipient with a number per copy.
        assert_eq!(msg.rcpt_to.len(), 2, "{:?}", msg.rcpt_to);
        assert!(msg.rcpt_to.iter().all(|r| r.ends_with("dest@sink.test")));
        assert!(msg.size >= 2048, "size {}", msg.size);
    }
    let stats = settled_stats(&sink);
    assert_eq!(stats.messages_accepted, 20);
    assert_eq!(stats.recipients_accepted, 40);
}

fn relay_message(marker: &str, from: &str, to: &[&str]) -> String {
    format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: relay {marker}\r\n\r\nRelayed by Postfix.\r\n{marker}\r\n",
        to.join(", ")
    )
}

#[track_caller]
fn start_postfix(b: support::PostfixBuilder) -> PostfixInstance {
    b.start()
        .unwrap_or_else(|e| panic!("Postfix instance: {e}"))
}

#[test]
fn postfix_relays_through_sink() {
    if PostfixTools::require().is_none() {
        return;
    }
    let sink = start(builder());
    let pf = start_postfix(PostfixInstance::relay_to(sink.local_addr()));
    let m = marker("postfix-relay");
    let rcpts = ["r1@dest.test", "r2@other.test"];
    let reply = pf
        .send(
            "pf-sender@client.test",
            &rcpts,
            &relay_message(&m, "pf-sender@client.test", &rcpts),
        )
        .unwrap_or_else(|e| panic!("inject: {e}\n{}", pf.maillog()));
    let qid = PostfixInstance::queue_id(&reply)
        .expect("queue id")
        .to_owned();

    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert_eq!(msg.mail_from, "pf-sender@client.test");
    assert_eq!(msg.rcpt_to, rcpts);
    assert_eq!(msg.helo, "postfix.mailstorm.test");
    assert_eq!(msg.tls, None);
    assert_eq!(msg.header("subject"), Some(format!("relay {m}")));
    // Postfix's Received: header (folded), naming its queue id.
    assert!(
        msg.header("received")
            .is_some_and(|r| r.starts_with("from injector.test")),
        "{msg:?}"
    );
    assert_body_contains(
        msg,
        &format!("\r\n\tby postfix.mailstorm.test (Postfix) with ESMTP id {qid}"),
    );
    assert_body_contains(msg, &m);

    // Postfix saw the sink's 250 for both recipients and emptied its queue.
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{}", sink.local_addr().port());
    let log = pf
        .wait_for_log(&format!("{qid}: removed"), TIMEOUT)
        .unwrap();
    for r in rcpts {
        assert!(
            log.lines().any(|l| l.contains(&format!("to=<{r}>"))
                && l.contains(&relay)
                && l.contains("status=sent (250 2.0.0")),
            "no delivery line for {r}:\n{log}"
        );
    }
    pf.wait_queue_empty(TIMEOUT).unwrap();
}

#[test]
fn postfix_relay_uses_starttls_when_offered() {
    if PostfixTools::require().is_none() {
        return;
    }
    let sink = start(builder());
    let pf = start_postfix(PostfixInstance::relay_to(sink.local_addr()).client_tls(true));
    assert_eq!(pf.postconf("smtp_tls_security_level").unwrap(), "may");
    let m = marker("postfix-tls");
    pf.send(
        "tls-sender@client.test",
        &["tls-rcpt@dest.test"],
        &relay_message(&m, "tls-sender@client.test", &["tls-rcpt@dest.test"]),
    )
    .unwrap();
    let msgs = wait_messages(&sink, 1);
    let msg = &msgs[0];
    assert!(
        msg.tls.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "Postfix did not use STARTTLS: {msg:?}\n{}",
        pf.maillog()
    );
    assert_eq!(msg.rcpt_to, ["tls-rcpt@dest.test"]);
    assert_body_contains(msg, &m);
    // Postfix's smtp logs the TLS line before the delivery's status line:
    // wait for the later one (waiting for the first raced the second).
    let log = pf.wait_for_log("status=sent", TIMEOUT).unwrap();
    assert!(
        log.contains("TLS connection established to 127.0.0.1"),
        "{log}"
    );
    assert_eq!(sink.stats().tls_handshakes, 1);
}

/// The sink defers the first MAIL with 451; Postfix retries after its
/// (short) backoff and the message arrives once.
#[test]
fn postfix_retries_deferred_mail_with_short_backoff() {
    if PostfixTools::require().is_none() {
        return;
    }
    let mails = Arc::new(AtomicUsize::new(0));
    let seen = mails.clone();
    let hook = move |ctx: &StageContext<'_>| {
        if ctx.stage == Stage::Mail && seen.fetch_add(1, Ordering::Relaxed) == 0 {
            Decision::Reply {
                code: 451,
                enhanced: Some("4.3.0".into()),
                text: "try again later".into(),
            }
        } else {
            Decision::Accept
        }
    };
    let sink = start(builder().hook(Arc::new(hook)));
    let pf = start_postfix(PostfixInstance::relay_to(sink.local_addr()).backoff(
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(1),
    ));
    assert_eq!(pf.postconf("minimal_backoff_time").unwrap(), "1s");
    let m = marker("postfix-retry");
    let t0 = Instant::now();
    pf.send(
        "retry@client.test",
        &["later@dest.test"],
        &relay_message(&m, "retry@client.test", &["later@dest.test"]),
    )
    .unwrap();
    // Default Postfix backoff is 300 s: arriving within 15 s shows the
    // builder's settings are in force.
    let msgs = wait_messages_for(&sink, 1, Duration::from_secs(15));
    let took = t0.elapsed();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, ["later@dest.test"]);
    assert_body_contains(&msgs[0], &m);
    let log = pf.wait_for_log("status=sent", TIMEOUT).unwrap();
    assert!(
        log.contains("status=deferred") && log.contains("451 4.3.0 try again later"),
        "no deferral logged:\n{log}"
    );
    assert!(mails.load(Ordering::Relaxed) >= 2);
    assert_eq!(sink.stats().replies_at(Stage::Mail, 451), 1);
    eprintln!("deferred message delivered after {took:?}");
    pf.wait_queue_empty(TIMEOUT).unwrap();
}

#[test]
fn two_postfix_instances_run_at_once() {
    if PostfixTools::require().is_none() {
        return;
    }
    let sink = start(builder());
    let addr = sink.local_addr();
    let instances: Vec<PostfixInstance> = std::thread::scope(|s| {
        let hs: Vec<_> = ["pf-a.mailstorm.test", "pf-b.mailstorm.test"]
            .map(|name| {
                s.spawn(move || {
                    // Started on a scoped thread that ends before the test:
                    // keep the master alive past it.
                    start_postfix(
                        PostfixInstance::relay_to(addr)
                            .myhostname(name)
                            .die_with_thread(false),
                    )
                })
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(instances[0].smtpd_addr(), instances[1].smtpd_addr());
    assert_ne!(instances[0].dir(), instances[1].dir());
    for (i, pf) in instances.iter().enumerate() {
        let rcpt = format!("via{i}@dest.test");
        pf.send(
            "both@client.test",
            &[&rcpt],
            &relay_message(&format!("pf{i}"), "both@client.test", &[&rcpt]),
        )
        .unwrap();
    }
    let msgs = wait_messages(&sink, 2);
    let mut helos: Vec<_> = msgs.iter().map(|m| m.helo.clone()).collect();
    helos.sort();
    assert_eq!(helos, ["pf-a.mailstorm.test", "pf-b.mailstorm.test"]);
    for pf in instances {
        pf.wait_queue_empty(TIMEOUT).unwrap();
        pf.stop();
    }
}

/// Server mode, as the load generator's tests will use it: Postfix's smtpd
/// accepts mail (plain, and over STARTTLS with a given certificate) and
/// discards it.
#[test]
fn postfix_server_mode_accepts_and_discards() {
    let Some(tools) = PostfixTools::require() else {
        return;
    };
    let Some(swaks_bin) = require_program("swaks") else {
        return;
    };
    let dir = tempdir();
    let cert = mailstorm_sink::tls::generate_self_signed("postfix.mailstorm.test").unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    let pf =
        start_postfix(PostfixInstance::server(&["example.test"]).smtpd_tls(&cert_path, &key_path));
    let addr = pf.smtpd_addr().to_string();
    let out = run(Command::new(&swaks_bin)
        .args(["--server", &addr, "--timeout", "10", "-tls"])
        .args(["--from", "load@client.test", "--to", "user@example.test"]));
    out.assert_success();
    assert!(out.stdout.contains("TLS started"), "{out}");

    // smtp-source: 10 messages over 2 sessions.
    let source = tools.smtp_source.expect("smtp-source");
    run(Command::new(source)
        .args([
            "-m",
            "10",
            "-s",
            "2",
            "-f",
            "load@client.test",
            "-t",
            "user@example.test",
        ])
        .arg(&addr))
    .assert_success();

    wait_until("11 discarded messages", TIMEOUT, || {
        pf.maillog()
            .lines()
            .filter(|l| {
                l.contains("to=<user@example.test>")
                    && l.contains("relay=none")
                    && l.contains("status=sent")
            })
            .count()
            == 11
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", pf.maillog()));
    let log = pf.maillog();
    assert!(log.contains("TLS connection established from"), "{log}");
    pf.wait_queue_empty(TIMEOUT).unwrap();
}

/// A start failure is an error that says why (here: the port is taken),
/// not a hang or a half-started instance.
#[test]
fn postfix_start_fails_cleanly_on_a_busy_port() {
    if PostfixTools::require().is_none() {
        return;
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let err = PostfixInstance::server(&["example.test"])
        .smtpd_port(port)
        .start_timeout(Duration::from_secs(5))
        .start()
        .expect_err("started on a port someone else holds");
    assert!(
        err.contains(&format!("binding 127.0.0.1:{port} now fails")),
        "{err}"
    );
    assert!(err.contains("postfix -c"), "no diagnostics: {err}");
    eprintln!("{err}");
}
