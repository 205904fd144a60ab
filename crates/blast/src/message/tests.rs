use super::*;

#[test]
fn date() {
    assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(1_700_000_000),
        "Tue, 14 Nov 2023 22:13:20 +0000"
    );
}

#[test]
fn exact_sizes_and_valid_lines() {
    let cfg = Config {
        size: SizeDist::Uniform { min: 0, max: 5000 },
        seed: 1,
        // The trace's send time differs between the two writes.
        trace: false,
        ..Config::default()
    };
    let f = MessageFactory::new(&cfg).unwrap();
    let min = f.min_size();
    for size in min..min + 400 {
        let mut out = Vec::new();
        f.write(&mut out, 77, size, "r", &RcptTags::default(), false);
        assert_eq!(out.len() as u64, size);
        assert!(out.ends_with(b"\r\n"));
        // Every CR is followed by LF and every LF preceded by CR.
        for (i, &b) in out.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(out[i + 1], b'\n', "size {size}");
            }
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "size {size}");
            }
        }
        let mut dotted = Vec::new();
        f.write(&mut dotted, 77, size, "r", &RcptTags::default(), true);
        // Same bytes apart from the send-time header.
        let body = f.header.len();
        assert_eq!(dotted.len(), out.len() + 3);
        assert_eq!(&dotted[..f.sent_at], &out[..f.sent_at]);
        assert_eq!(&dotted[body..out.len()], &out[body..]);
        assert!(dotted.ends_with(b"\r\n.\r\n"));
    }
    let mut out = Vec::new();
    f.write(&mut out, 123, 2000, "r", &RcptTags::default(), false);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("X-Mailstorm-Seq: 00000000000000000123\r\n"));
    let source = crate::ledger::source_id(&cfg);
    assert!(text.contains(&format!(
        "Message-ID: <00000000000000000123.{source:08x}.s1@mailstorm.test>"
    )));
}

#[test]
fn trace_header_parses_and_sizes_stay_exact() {
    use mailstorm_proto::trace::{find, Found};
    let cfg = Config {
        seed: 7,
        run_id: Some("run-x".into()),
        trace_source: 0xabc,
        rcpts: crate::config::RcptRange { min: 2, max: 5 },
        ..Config::default()
    };
    let f = MessageFactory::new(&cfg).unwrap();
    let mut rng = Rng::new(1);
    let size = f.size(&mut rng, 9, "r");
    let mut out = Vec::new();
    let rcpts = redrawn_tags(&cfg, 9);
    f.write(&mut out, 9, size, "r", &rcpts, false);
    assert_eq!(out.len() as u64, size);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("Message-ID: <00000000000000000009.00000abc.run-x@mailstorm.test>"));
    let Found::Trace(t) = find(&out) else {
        panic!("no trace in {text}")
    };
    let n = Rng::for_item(7, 9).range(2, 5) as u32;
    assert_eq!((t.run, t.source, t.seq, t.rcpts), ("run-x", 0xabc, 9, n));
    let mut tags = [0; MAX_TAGGED];
    tags[..n as usize].copy_from_slice(rcpts.tags());
    assert_eq!(t.tags, Some(tags));
    assert!(t.sent_us > 1_700_000_000_000_000);
}

#[test]
fn eml_template() {
    let dir = std::env::temp_dir().join(format!("blast-eml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.eml");
    std::fs::write(&p, "Subject: n{{seq}}\nTo: {{rcpt}}\n\n.dot {{x}}\n").unwrap();
    let cfg = Config {
        eml: Some(p),
        trace: false,
        ..Config::default()
    };
    let f = MessageFactory::new(&cfg).unwrap();
    let mut rng = Rng::new(1);
    let n = f.size(&mut rng, 42, "a@b");
    let mut raw = Vec::new();
    f.write(&mut raw, 42, n, "a@b", &RcptTags::default(), false);
    assert_eq!(raw, b"Subject: n42\r\nTo: a@b\r\n\r\n.dot {{x}}\r\n");
    assert_eq!(n, raw.len() as u64);
    let mut dotted = Vec::new();
    f.write(&mut dotted, 42, n, "a@b", &RcptTags::default(), true);
    assert_eq!(
        dotted,
        b"Subject: n42\r\nTo: a@b\r\n\r\n..dot {{x}}\r\n.\r\n"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn patterns() {
    let mut s = String::new();
    Pattern::new("user{n}@example.test").write(&mut s, 7);
    assert_eq!(s, "user7@example.test");
    Pattern::new("fixed@example.test").write(&mut s, 7);
    assert_eq!(s, "fixed@example.test");
    assert!(Pattern::new("üser{n}@example.test").is_utf8());
}
