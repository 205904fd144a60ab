use super::*;

fn b64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_base64(&mut out, data);
    out
}

fn unb64(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let mut out = Vec::new();
    decode_base64(line, &mut out).map(|()| out)
}

#[test]
fn mechanism_names_are_case_insensitive() {
    for (name, mech) in [
        ("PLAIN", Mechanism::Plain),
        ("plain", Mechanism::Plain),
        ("Plain", Mechanism::Plain),
        ("LOGIN", Mechanism::Login),
        ("login", Mechanism::Login),
        ("CRAM-MD5", Mechanism::CramMd5),
        ("cram-md5", Mechanism::CramMd5),
        ("Cram-Md5", Mechanism::CramMd5),
    ] {
        assert_eq!(Mechanism::parse(name), Some(mech), "{name}");
        assert_eq!(name.parse::<Mechanism>(), Ok(mech), "{name}");
    }
    for bad in ["", "CRAM-MD", "CRAM_MD5", "XOAUTH2", " PLAIN", "PLAIN "] {
        assert_eq!(Mechanism::parse(bad), None, "{bad:?}");
        let err = bad.parse::<Mechanism>().unwrap_err();
        assert!(err.to_string().contains("plain, login, cram-md5"), "{err}");
    }
    assert_eq!(Mechanism::parse_bytes(b"\xffPLAIN"), None);
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::parse(m.name()), Some(m));
        assert_eq!(Mechanism::parse(m.config_name()), Some(m));
        assert_eq!(m.to_string(), m.name());
    }
    assert_eq!(Mechanism::default(), Mechanism::Plain);
    assert!(Mechanism::Plain.is_client_first());
    assert!(!Mechanism::Login.is_client_first() && !Mechanism::CramMd5.is_client_first());
}

#[test]
fn auth_command_line() {
    let mut out = Vec::new();
    write_auth(&mut out, Mechanism::Plain, Some(b"AGEAYg=="));
    write_auth(&mut out, Mechanism::Plain, Some(b""));
    write_auth(&mut out, Mechanism::Login, None);
    write_auth(&mut out, Mechanism::CramMd5, None);
    write_plain(&mut out, "", "a", "b");
    write_response_end(&mut out);
    assert_eq!(
        out,
        b"AUTH PLAIN AGEAYg==\r\nAUTH PLAIN =\r\nAUTH LOGIN\r\nAUTH CRAM-MD5\r\nAGEAYg==\r\n"
    );
    // The parser reads back what the encoder writes.
    let (cmd, _) = crate::parse_command(b"AUTH PLAIN AGEAYg==\r\n", &Default::default())
        .unwrap()
        .complete()
        .unwrap();
    assert!(matches!(
        cmd,
        crate::Command::Auth {
            mechanism: "PLAIN",
            initial_response: Some("AGEAYg==")
        }
    ));
}

#[test]
fn base64_round_trip_and_leniency() {
    assert_eq!(b64(b""), b"");
    assert_eq!(b64(b"Username:"), LOGIN_USERNAME_CHALLENGE.as_bytes());
    assert_eq!(b64(b"Password:"), LOGIN_PASSWORD_CHALLENGE.as_bytes());
    assert_eq!(unb64(b"VXNlcm5hbWU6").unwrap(), b"Username:");
    // Missing padding and a trailing CR are tolerated.
    assert_eq!(unb64(b"AGFsAHB3").unwrap(), b"\0al\0pw");
    assert_eq!(unb64(b"YQ").unwrap(), b"a");
    assert_eq!(unb64(b"YQ==\r").unwrap(), b"a");
    for bad in [&b"not base64!"[..], b"a=b=", b"\xff\x00", b"*", b"="] {
        assert_eq!(unb64(bad), Err(SaslError::InvalidBase64), "{bad:?}");
    }
    // `=` is the empty response only on the AUTH line.
    let mut out = vec![7];
    decode_initial_response(b"=", &mut out).unwrap();
    decode_initial_response(b"YQ==", &mut out).unwrap();
    assert_eq!(out, [7, b'a']);
    // Appends, and leaves `out` alone on error.
    let mut out = b"x".to_vec();
    assert_eq!(
        decode_base64(b"%%", &mut out),
        Err(SaslError::InvalidBase64)
    );
    assert_eq!(out, b"x");
    // The length limit sits exactly at MAX_RESPONSE_LINE.
    let at_limit = b"QUFB".repeat(MAX_RESPONSE_LINE / 4);
    assert_eq!(unb64(&at_limit).unwrap().len(), MAX_RESPONSE_LINE / 4 * 3);
    let over = b"QUFB".repeat(MAX_RESPONSE_LINE / 4 + 1);
    assert_eq!(unb64(&over), Err(SaslError::TooLong));
}

#[test]
fn plain_rfc4616_examples() {
    // RFC 4616 §4: "tim" with password "tanstaaftanstaaf", without and with
    // an authorization identity.
    let mut out = Vec::new();
    write_plain(&mut out, "", "tim", "tanstaaftanstaaf");
    assert_eq!(out, b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    let mut out = Vec::new();
    write_plain(&mut out, "Ursel", "Kurt", "xipj3plmq");
    assert_eq!(unb64(&out).unwrap(), b"Ursel\0Kurt\0xipj3plmq");

    let msg = unb64(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm").unwrap();
    assert_eq!(
        decode_plain(&msg),
        Ok(PlainCredentials {
            authzid: "",
            authcid: "tim",
            password: "tanstaaftanstaaf"
        })
    );
    assert_eq!(
        decode_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap().authzid,
        "Ursel"
    );
    // Empty fields are decoded; rejecting them is policy.
    assert_eq!(
        decode_plain(b"\0\0"),
        Ok(PlainCredentials {
            authzid: "",
            authcid: "",
            password: ""
        })
    );
    // Passwords may contain anything but NUL, colons included.
    assert_eq!(decode_plain(b"\0u\0p:w").unwrap().password, "p:w");
    for bad in [&b""[..], b"tim", b"\0tim", b"\0tim\0pw\0", b"a\0b\0c\0d"] {
        assert_eq!(decode_plain(bad), Err(SaslError::Malformed), "{bad:?}");
    }
    assert_eq!(decode_plain(b"\0t\xffim\0pw"), Err(SaslError::InvalidUtf8));
}

#[test]
fn login_responses() {
    let mut out = Vec::new();
    write_login(&mut out, "alice");
    assert_eq!(out, b"YWxpY2U=");
    assert_eq!(decode_login(&unb64(&out).unwrap()), Ok("alice"));
    assert_eq!(decode_login(b"\xff"), Err(SaslError::InvalidUtf8));
}

#[test]
fn cram_md5_rfc2195_example() {
    // RFC 2195 §2: challenge, secret and the exact client response.
    let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
    assert_eq!(
        b64(challenge),
        b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    );
    assert_eq!(
        &cram_md5_digest(b"tanstaaftanstaaf", challenge),
        b"b913a602c7eda7a495b4e6e7334d3890"
    );
    let mut out = Vec::new();
    write_cram_md5(&mut out, "tim", b"tanstaaftanstaaf", challenge);
    assert_eq!(out, b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");

    let msg = unb64(&out).unwrap();
    let resp = decode_cram_md5(&msg).unwrap();
    assert_eq!(resp.user, "tim");
    assert_eq!(resp.digest, b"b913a602c7eda7a495b4e6e7334d3890");
    assert!(resp.verify(b"tanstaaftanstaaf", challenge));
    assert!(!resp.verify(b"tanstaaftanstaa", challenge));
    assert!(!resp.verify(b"tanstaaftanstaaf", b"<1@postoffice.reston.mci.net>"));
    // Upper-case hex verifies too.
    let upper = decode_cram_md5(b"tim B913A602C7EDA7A495B4E6E7334D3890").unwrap();
    assert!(upper.verify(b"tanstaaftanstaaf", challenge));
    // The user name ends at the last space.
    let spaced = format!("tim smith {}", "0".repeat(32));
    assert_eq!(
        decode_cram_md5(spaced.as_bytes()).unwrap().user,
        "tim smith"
    );
}

#[test]
fn cram_md5_malformed() {
    let zeros = "0".repeat(32);
    for bad in [
        "tim".to_owned(),
        "tim 1234".to_owned(),
        format!("tim {}", "g".repeat(32)),
        format!("tim {zeros}0"),
        format!("tim {zeros} "),
        zeros.clone(),
    ] {
        assert_eq!(
            decode_cram_md5(bad.as_bytes()),
            Err(SaslError::Malformed),
            "{bad}"
        );
    }
    let mut bad_user = b"t\xffm ".to_vec();
    bad_user.extend_from_slice(zeros.as_bytes());
    assert_eq!(decode_cram_md5(&bad_user), Err(SaslError::InvalidUtf8));
    // An empty user name is well-formed; rejecting it is policy.
    assert_eq!(
        decode_cram_md5(format!(" {zeros}").as_bytes())
            .unwrap()
            .user,
        ""
    );
}

#[test]
fn constant_time_eq_is_plain_equality() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"s3cret", b"s3cret"));
    assert!(!constant_time_eq(b"s3cret", b"s3cre"));
    assert!(!constant_time_eq(b"s3cret", b"s3creT"));
    assert!(!constant_time_eq(b"a", b""));
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(
        SaslError::TooLong.to_string(),
        "SASL response line too long"
    );
    assert!(SaslError::InvalidBase64.to_string().contains("base64"));
}

#[cfg(feature = "serde")]
#[test]
fn serde_names() {
    let m: Mechanism = serde_json::from_str("\"CRAM-MD5\"").unwrap();
    assert_eq!(m, Mechanism::CramMd5);
    assert_eq!(
        serde_json::to_string(&Mechanism::CramMd5).unwrap(),
        "\"cram-md5\""
    );
    let err = serde_json::from_str::<Mechanism>("\"xoauth2\"").unwrap_err();
    assert!(err.to_string().contains("plain, login, cram-md5"), "{err}");
}
