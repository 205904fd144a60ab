//! Reply parser: the input fed whole and split at a position derived from
//! its first byte must give the same replies and errors; a parsed reply
//! re-encoded with `write_reply_lines` parses back to the same code,
//! enhanced code and lines; the capability parser agrees with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailstorm_proto::ehlo::Capabilities;
use mailstorm_proto::encode::write_reply_lines;
use mailstorm_proto::reply::parse_reply;
use mailstorm_proto::{Status, DEFAULT_MAX_REPLY_LINE};
use mailstorm_proto_fuzz::{reply_events, split_point};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let at = split_point(first, input.len());
    for max in [DEFAULT_MAX_REPLY_LINE, usize::from(first % 64) + 4] {
        let whole = reply_events(input, &[], max);
        assert_eq!(
            reply_events(input, &[at], max),
            whole,
            "split at {at}, max {max}"
        );
        let bytewise: Vec<usize> = (1..input.len().min(600)).collect();
        assert_eq!(
            reply_events(input, &bytewise, max),
            whole,
            "one byte at a time"
        );
    }

    match parse_reply(input, DEFAULT_MAX_REPLY_LINE) {
        Ok(Status::Complete((r, n))) => {
            let lines: Vec<String> = r
                .lines()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            if r.lines().all(|l| std::str::from_utf8(l).is_ok()) {
                let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
                let mut out = Vec::new();
                write_reply_lines(&mut out, r.code, None, &texts);
                let (again, m) = parse_reply(&out, 1 << 16).unwrap().complete().unwrap();
                assert_eq!(m, out.len());
                assert_eq!(again.code, r.code);
                assert_eq!(again.enhanced, r.enhanced);
                assert_eq!(again.text(), r.text());
                assert!(again.lines().eq(r.lines()));
            }
            match Capabilities::parse(input) {
                Ok(Status::Complete((caps, m))) => {
                    assert_eq!(m, n);
                    assert_eq!(caps, Capabilities::from_reply(&r));
                }
                other => panic!("capabilities disagree with the reply parser: {other:?}"),
            }
        }
        Ok(Status::Partial) => {
            assert_eq!(Capabilities::parse(input), Ok(Status::Partial));
        }
        Err(e) => {
            assert_eq!(Capabilities::parse(input), Err(e));
        }
    }
});
