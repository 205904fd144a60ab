//! The AUTH state machine against each mechanism's happy and unhappy paths.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use mailstorm_proto::sasl::MAX_RESPONSE_LINE;

use super::sasl::cram_verify;
use super::*;

/// The proto digest as text, as the sink's API returned it before.
fn cram_md5_digest(password: &str, challenge: &str) -> String {
    let hex = mailstorm_proto::sasl::cram_md5_digest(password.as_bytes(), challenge.as_bytes());
    String::from_utf8(hex.to_vec()).unwrap()
}

fn b64(s: &[u8]) -> String {
    STANDARD.encode(s)
}

fn users() -> Users {
    Users::from_pairs([("alice", "s3cret"), ("tim", "tanstaaftanstaaf")])
}

fn ok(user: &str) -> Step {
    Step::Success {
        user: user.to_owned(),
    }
}

const BAD: Step = Step::Failure(AuthFailure::BadCredentials);
const MALFORMED: Step = Step::Failure(AuthFailure::Malformed);
const CANCELLED: Step = Step::Failure(AuthFailure::Cancelled);

#[test]
fn mechanism_names() {
    assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
    assert_eq!(Mechanism::parse("Login"), Some(Mechanism::Login));
    assert_eq!(Mechanism::parse("cram-md5"), Some(Mechanism::CramMd5));
    assert_eq!(Mechanism::parse("CRAM-MD"), None);
    assert_eq!(Mechanism::parse("XOAUTH2"), None);
    assert_eq!(Mechanism::parse_bytes(b"\xffPLAIN"), None);
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::parse(m.name()), Some(m));
        assert_eq!(m.to_string(), m.name());
    }
}

#[test]
fn failure_replies() {
    assert_eq!(
        AuthFailure::BadCredentials.reply(),
        (535, "5.7.8", "Authentication credentials invalid")
    );
    assert_eq!(
        AuthFailure::Malformed.reply(),
        (501, "5.5.2", "Cannot decode response")
    );
    assert_eq!(
        AuthFailure::Cancelled.reply(),
        (501, "5.0.0", "Authentication cancelled")
    );
}

#[test]
fn plain_initial_response() {
    let ir = b64(b"\0alice\0s3cret");
    for u in [None, Some(&users())] {
        let (ex, step) = AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, u);
        assert_eq!(step, ok("alice"));
        assert!(ex.is_done());
    }
    // authzid equal to authcid is fine; anything else only without a table.
    let ir = b64(b"alice\0alice\0s3cret");
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, Some(&users())).1,
        ok("alice")
    );
    let ir = b64(b"bob\0alice\0s3cret");
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, Some(&users())).1,
        BAD
    );
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&ir), "h", 1, None).1,
        ok("alice")
    );
    // Wrong password / unknown user only fail with a table.
    let wrong = b64(b"\0alice\0nope");
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&wrong), "h", 1, Some(&users())).1,
        BAD
    );
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&wrong), "h", 1, None).1,
        ok("alice")
    );
    let unknown = b64(b"\0mallory\0s3cret");
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&unknown), "h", 1, Some(&users())).1,
        BAD
    );
}

#[test]
fn plain_empty_and_malformed() {
    for u in [None, Some(&users())] {
        // `AUTH PLAIN =` and an empty string: empty credentials.
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some("="), "h", 1, u).1,
            BAD
        );
        assert_eq!(
            AuthExchange::start(Mechanism::Plain, Some(""), "h", 1, u).1,
            BAD
        );
        for bad in [b64(b"\0\0"), b64(b"\0alice\0"), b64(b"\0\0s3cret")] {
            assert_eq!(
                AuthExchange::start(Mechanism::Plain, Some(&bad), "h", 1, u).1,
                BAD,
                "{bad}"
            );
        }
        for bad in [
            "not base64!".to_owned(),
            b64(b"alice s3cret"),
            b64(b"\0alice"),
            b64(b"\0alice\0s3\0cret"),
            b64(b"\0al\xffice\0s3cret"),
            b64(b"\0ali\r\nce\0s3cret"),
        ] {
            assert_eq!(
                AuthExchange::start(Mechanism::Plain, Some(&bad), "h", 1, u).1,
                MALFORMED,
                "{bad}"
            );
        }
    }
}

#[test]
fn plain_with_challenge() {
    let (mut ex, step) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
    assert_eq!(step, Step::Challenge(String::new()));
    assert!(!ex.is_done());
    assert_eq!(
        ex.next(b64(b"\0alice\0s3cret").as_bytes(), Some(&users())),
        ok("alice")
    );
    assert!(ex.is_done());
    // Calling again after completion is an error, not a panic.
    assert_eq!(ex.next(b"", None), MALFORMED);

    let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
    assert_eq!(
        ex.next(b64(b"\0alice\0wrong").as_bytes(), Some(&users())),
        BAD
    );
    let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
    assert_eq!(ex.next(b"*", None), CANCELLED);
    let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
    assert_eq!(ex.next(b"%%%%", None), MALFORMED);
    let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
    // Unpadded base64 and trailing CR are tolerated.
    let unpadded = b64(b"\0al\0pw").trim_end_matches('=').to_owned() + "\r";
    assert_eq!(ex.next(unpadded.as_bytes(), None), ok("al"));
}

#[test]
fn login() {
    for u in [None, Some(&users())] {
        let (mut ex, step) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
        assert_eq!(
            ex.next(b64(b"alice").as_bytes(), u),
            Step::Challenge("UGFzc3dvcmQ6".into())
        );
        assert_eq!(ex.next(b64(b"s3cret").as_bytes(), u), ok("alice"));

        // Initial response carries the user name.
        let (mut ex, step) = AuthExchange::start(Mechanism::Login, Some(&b64(b"alice")), "h", 1, u);
        assert_eq!(step, Step::Challenge("UGFzc3dvcmQ6".into()));
        assert_eq!(ex.next(b64(b"s3cret").as_bytes(), u), ok("alice"));

        // Cancel at either step.
        let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        assert_eq!(ex.next(b"*", u), CANCELLED);
        let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        ex.next(b64(b"alice").as_bytes(), u);
        assert_eq!(ex.next(b"*", u), CANCELLED);

        // Bad base64 at either step, and in the initial response.
        let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        assert_eq!(ex.next(b"a=b=", u), MALFORMED);
        let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        ex.next(b64(b"alice").as_bytes(), u);
        assert_eq!(ex.next(b"\xff\x00", u), MALFORMED);
        assert_eq!(
            AuthExchange::start(Mechanism::Login, Some("!!"), "h", 1, u).1,
            MALFORMED
        );

        // Empty password is never accepted.
        let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
        ex.next(b64(b"alice").as_bytes(), u);
        assert_eq!(ex.next(b"", u), BAD);
    }
    let u = Some(&users());
    let (mut ex, _) = AuthExchange::start(Mechanism::Login, None, "h", 1, u);
    ex.next(b64(b"alice").as_bytes(), u);
    assert_eq!(ex.next(b64(b"wrong").as_bytes(), u), BAD);
    assert_eq!(ex.mechanism(), Mechanism::Login);
}

fn cram_challenge(step: &Step) -> String {
    let Step::Challenge(c) = step else {
        panic!("expected a challenge, got {step:?}")
    };
    String::from_utf8(STANDARD.decode(c).unwrap()).unwrap()
}

/// HMAC-MD5 computed here independently of `cram_md5_digest`.
fn independent_digest(password: &str, challenge: &str) -> String {
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(challenge.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn cram_md5_rfc2195_vector() {
    let challenge = "<1896.697170952@postoffice.reston.mci.net>";
    let digest = cram_md5_digest("tanstaaftanstaaf", challenge);
    assert_eq!(digest, "b913a602c7eda7a495b4e6e7334d3890");
    assert_eq!(digest, independent_digest("tanstaaftanstaaf", challenge));
    assert_eq!(
        b64(format!("tim {digest}").as_bytes()),
        "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    );
    // And through the state machine, with the RFC's exact response.
    let step = cram_verify(
        &STANDARD
            .decode("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw")
            .unwrap(),
        challenge,
        Some(&users()),
    );
    assert_eq!(step, ok("tim"));
}

#[test]
fn cram_md5_exchange() {
    let u = users();
    let (mut ex, step) = AuthExchange::start(Mechanism::CramMd5, None, "mx.example", 42, Some(&u));
    let challenge = cram_challenge(&step);
    assert_eq!(challenge, "<42@mx.example>");
    let resp = format!("alice {}", independent_digest("s3cret", &challenge));
    assert_eq!(
        ex.next(b64(resp.as_bytes()).as_bytes(), Some(&u)),
        ok("alice")
    );

    // Upper-case hex is accepted too.
    let (mut ex, step) = AuthExchange::start(Mechanism::CramMd5, None, "mx.example", 43, Some(&u));
    let challenge = cram_challenge(&step);
    let resp = format!(
        "alice {}",
        independent_digest("s3cret", &challenge).to_uppercase()
    );
    assert_eq!(
        ex.next(b64(resp.as_bytes()).as_bytes(), Some(&u)),
        ok("alice")
    );

    // Wrong password, digest for another challenge, unknown user.
    for resp in [
        format!("alice {}", independent_digest("wrong", &challenge)),
        format!("alice {}", independent_digest("s3cret", "<1@mx.example>")),
        format!("mallory {}", independent_digest("s3cret", &challenge)),
    ] {
        let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "mx.example", 43, Some(&u));
        assert_eq!(
            ex.next(b64(resp.as_bytes()).as_bytes(), Some(&u)),
            BAD,
            "{resp}"
        );
    }

    // Without a table: any well-formed response is accepted.
    let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "h", 7, None);
    let resp = format!("anyone {}", "0".repeat(32));
    assert_eq!(ex.next(b64(resp.as_bytes()).as_bytes(), None), ok("anyone"));

    // Malformed responses fail either way.
    for u in [None, Some(&u)] {
        for resp in [
            b64(b"alice"),
            b64(b"alice 1234"),
            b64(format!("alice {}", "g".repeat(32)).as_bytes()),
            b64(format!("al\nice {}", "0".repeat(32)).as_bytes()),
            "***".to_owned(),
        ] {
            let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "h", 7, u);
            assert_eq!(ex.next(resp.as_bytes(), u), MALFORMED, "{resp}");
        }
        let (mut ex, _) = AuthExchange::start(Mechanism::CramMd5, None, "h", 7, u);
        assert_eq!(ex.next(b"*", u), CANCELLED);
        // CRAM-MD5 takes no initial response.
        assert_eq!(
            AuthExchange::start(Mechanism::CramMd5, Some("Zm9v"), "h", 7, u).1,
            MALFORMED
        );
    }
}

#[test]
fn oversized_and_garbage_never_panic() {
    let long = "QUFB".repeat(MAX_RESPONSE_LINE / 4 + 1);
    assert!(long.len() > MAX_RESPONSE_LINE);
    for mech in Mechanism::ALL {
        let (mut ex, _) = AuthExchange::start(mech, None, "h", 1, None);
        assert_eq!(ex.next(long.as_bytes(), None), MALFORMED);
    }
    assert_eq!(
        AuthExchange::start(Mechanism::Plain, Some(&long), "h", 1, None).1,
        MALFORMED
    );
    // Exactly at the limit is still decoded (and then judged on content).
    let at_limit = "QUFB".repeat(MAX_RESPONSE_LINE / 4);
    let (mut ex, _) = AuthExchange::start(Mechanism::Plain, None, "h", 1, None);
    assert_eq!(ex.next(at_limit.as_bytes(), None), MALFORMED);

    // Deterministic pseudo-random garbage through every state.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2000 {
        let len = (round % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let encoded = b64(&bytes);
        for mech in Mechanism::ALL {
            for u in [None, Some(&users())] {
                let (mut ex, _) = AuthExchange::start(mech, None, "h", 1, u);
                let _ = ex.next(&bytes, u);
                let (mut ex, _) = AuthExchange::start(mech, None, "h", 1, u);
                if let Step::Success { user } = ex.next(encoded.as_bytes(), u) {
                    assert!(!user.is_empty() && !user.chars().any(char::is_control));
                }
                let _ = ex.next(encoded.as_bytes(), u);
                let _ = ex.next(encoded.as_bytes(), u);
            }
        }
    }
}
