//! STARTTLS, implicit TLS and each AUTH mechanism against the sink.

mod common;

use std::time::Duration;

use common::*;
use mailstorm_blast::config::{AuthMech, Config, StartTls};
use mailstorm_blast::stats::Stage;

fn tls_sink() -> mailstorm_sink::SinkHandle {
    sink_builder()
        .tls(true)
        .tls_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap()
}

fn small() -> Config {
    Config {
        messages: Some(20),
        concurrency: 2,
        per_conn: 5,
        ..config()
    }
}

#[test]
fn starttls_required_verifies_the_certificate() {
    let sink = tls_sink();
    let pem = sink.self_signed_cert_pem().unwrap().into_bytes();
    let cfg = Config {
        starttls: StartTls::Required,
        ..small()
    };
    let r = run_with(cfg.clone(), sink.local_addr(), Some(pem));
    assert_eq!(r.totals.counters.accepted, 20);
    assert_eq!(r.totals.histogram(Stage::Tls).len(), 4);
    assert_eq!(replies(&r, "ehlo", "250"), 8, "EHLO again after TLS");
    assert_eq!(sink.stats().tls_handshakes, 4);

    // Without a trusted certificate, the run refuses to start...
    let err = try_run(cfg.clone(), sink.local_addr(), None).unwrap_err();
    assert!(err.to_string().contains("--ca"), "{err}");
    // ...and an untrusted one fails every handshake.
    let other = mailstorm_sink::tls::generate_self_signed("localhost").unwrap();
    let r = run_with(
        cfg.clone(),
        sink.local_addr(),
        Some(other.cert_pem.into_bytes()),
    );
    let c = r.totals.counters;
    assert_eq!((c.accepted, c.failed), (0, 20));
    assert_eq!(
        r.totals.transport[mailstorm_blast::stats::Transport::TlsFailure as usize],
        20
    );

    // --insecure skips verification.
    let r = run(
        Config {
            insecure: true,
            ..cfg
        },
        sink.local_addr(),
    );
    assert_eq!(r.totals.counters.accepted, 20);
}

#[test]
fn starttls_required_fails_without_the_extension() {
    // The scripted server never offers STARTTLS.
    let (addr, _log) = scripted(Script::default());
    let cfg = Config {
        starttls: StartTls::Required,
        insecure: true,
        ..small()
    };
    let r = run(cfg.clone(), addr);
    assert_eq!(r.totals.counters.accepted, 0);
    assert_eq!(r.totals.counters.failed, 20);
    // Opportunistic carries on in clear text.
    let r = run(
        Config {
            starttls: StartTls::Opportunistic,
            ..cfg
        },
        addr,
    );
    assert_eq!(r.totals.counters.accepted, 20);
    assert_eq!(r.totals.histogram(Stage::Tls).len(), 0);
}

#[test]
fn implicit_tls() {
    let sink = tls_sink();
    let pem = sink.self_signed_cert_pem().unwrap().into_bytes();
    let cfg = Config {
        tls: true,
        ..small()
    };
    let r = run_with(cfg, sink.tls_addrs()[0], Some(pem));
    assert_eq!(r.totals.counters.accepted, 20);
    assert_eq!(r.totals.histogram(Stage::Tls).len(), 4);
    assert_eq!(
        sink.shutdown_with_grace(Duration::from_secs(1))
            .messages_accepted,
        20
    );
}

#[test]
fn each_auth_mechanism() {
    let dir = std::env::temp_dir().join(format!("blast-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users");
    std::fs::write(&users, "alice:s3cret\n").unwrap();
    let sink = sink_builder()
        .auth_users(&users)
        .auth_required(true)
        .start()
        .unwrap();
    for mech in [AuthMech::Plain, AuthMech::Login, AuthMech::CramMd5] {
        let cfg = Config {
            auth: Some("alice:s3cret".into()),
            auth_mech: mech,
            ..small()
        };
        let r = run(cfg.clone(), sink.local_addr());
        assert_eq!(
            r.totals.counters.accepted, 20,
            "{mech:?}: {:?}",
            r.totals.replies
        );
        assert_eq!(
            replies(&r, "auth", "235 2.7.0"),
            4,
            "{mech:?}: {:?}",
            r.totals.replies
        );
        // A wrong password is a 535 and no message gets through.
        let bad = Config {
            auth: Some("alice:wrong".into()),
            ..cfg
        };
        let r = run(bad, sink.local_addr());
        assert_eq!(r.totals.counters.accepted, 0, "{mech:?}");
        assert_eq!(r.totals.counters.rejected, 20, "{mech:?}");
        assert_eq!(r.totals.counters.conn_failed, r.totals.counters.conn_opened);
    }
    std::fs::remove_dir_all(dir).ok();
}

/// SASL names are case-insensitive (RFC 4422 §3.1): `--auth-mech PLAIN`
/// picks the same mechanism as `plain`, and YAML accepts the same forms.
#[test]
fn auth_mech_names_in_any_case() {
    use clap::Parser as _;
    use mailstorm_blast::cli::Args;
    for (name, mech) in [
        ("plain", AuthMech::Plain),
        ("PLAIN", AuthMech::Plain),
        ("LOGIN", AuthMech::Login),
        ("Login", AuthMech::Login),
        ("CRAM-MD5", AuthMech::CramMd5),
        ("cram-md5", AuthMech::CramMd5),
    ] {
        let args = Args::try_parse_from(["mailstorm-blast", "--auth-mech", name])
            .unwrap_or_else(|e| panic!("--auth-mech {name}: {e}"));
        assert_eq!(args.to_config().unwrap().auth_mech, mech, "{name}");
        let from_yaml: AuthMech = serde_yaml::from_str(name).unwrap();
        assert_eq!(from_yaml, mech, "{name}");
    }
    let err = Args::try_parse_from(["mailstorm-blast", "--auth-mech", "xoauth2"]).unwrap_err();
    assert!(err.to_string().contains("cram-md5"), "{err}");
    let err = serde_yaml::from_str::<AuthMech>("xoauth2").unwrap_err();
    assert!(err.to_string().contains("cram-md5"), "{err}");
}

#[test]
fn tls_resume_resumes_sessions_and_is_off_by_default() {
    let sink = tls_sink();
    let pem = sink.self_signed_cert_pem().unwrap().into_bytes();
    // One connection at a time, one message each: every connection after
    // the first can resume the ticket the previous one received.
    let cfg = Config {
        starttls: StartTls::Required,
        messages: Some(6),
        concurrency: 1,
        threads: 1,
        per_conn: 1,
        ..config()
    };
    let full = run_with(cfg.clone(), sink.local_addr(), Some(pem.clone()));
    let c = full.totals.counters;
    assert_eq!((c.accepted, c.tls_handshakes, c.tls_resumed), (6, 6, 0));
    assert_eq!(
        sink.stats().tls_resumed,
        0,
        "no resumption without --tls-resume"
    );

    let resumed = run_with(
        Config {
            tls_resume: true,
            ..cfg
        },
        sink.local_addr(),
        Some(pem),
    );
    let c = resumed.totals.counters;
    assert_eq!((c.accepted, c.tls_handshakes), (6, 6));
    assert_eq!(c.tls_resumed, 5, "all but the first connection resume");
    let s = sink.stats();
    assert_eq!(
        (s.tls_handshakes, s.tls_resumed),
        (12, 5),
        "the sink saw it too"
    );
}

#[test]
fn tls_resume_keeps_a_ticket_for_every_connection() {
    let sink = tls_sink();
    let pem = sink.self_signed_cert_pem().unwrap().into_bytes();
    // 20 connections handshaking at once, one message each: only the
    // first wave has no ticket. A store of 8 tickets per server (rustls's
    // default) resumed about four in five of the rest.
    let n = 300;
    let c = 20;
    let report = run_with(
        Config {
            starttls: StartTls::Required,
            messages: Some(n),
            concurrency: c,
            threads: 1,
            per_conn: 1,
            tls_resume: true,
            ..config()
        },
        sink.local_addr(),
        Some(pem),
    );
    let t = report.totals.counters;
    assert_eq!((t.accepted, t.tls_handshakes), (n, n));
    assert!(
        t.tls_resumed >= n - u64::from(c),
        "{} of {n} handshakes resumed",
        t.tls_resumed
    );
}
