//! The one unit grammar: a table of accepted and rejected forms.

use std::time::Duration;

use mailstorm_config::range::parse_count;
use mailstorm_config::{format_duration, format_size, parse_duration, parse_range, parse_size};

#[test]
fn durations_accepted() {
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let table: &[(&str, Duration)] = &[
        ("300ms", ms(300)),
        ("2s", s(2)),
        ("1.5s", ms(1500)),
        ("1m", s(60)),
        ("1.5m", s(90)),
        ("1h", s(3600)),
        ("1d", s(86_400)),
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("7ns", Duration::from_nanos(7)),
        ("2min", s(120)),
        ("7", s(7)),
        ("0.25", ms(250)),
        (".5s", ms(500)),
        ("0s", Duration::ZERO),
        (" 5s ", s(5)),
        ("5 s", s(5)),
        ("365d", s(365 * 86_400)),
        ("8760h", s(365 * 86_400)),
    ];
    for (text, want) in table {
        assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
    }
}

#[test]
fn durations_rejected_name_the_value() {
    for text in [
        "",
        "s",
        "5 parsecs",
        "-1s",
        "1.5.2s",
        "1e3s",
        "5S",
        "1.5ns",
        "abc",
        "99999999999999999999d",
        "1y",
        // Past the 365-day limit, which keeps `now + d` from overflowing
        // the clock (u64::MAX seconds used to panic mid-run).
        "366d",
        "365.000000001d",
        "18446744073709551615",
    ] {
        let e = parse_duration(text).expect_err(text).to_string();
        assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
    }
}

#[test]
fn durations_past_the_limit_say_so() {
    let e = parse_duration("400d").unwrap_err().to_string();
    assert!(e.contains("limit of 365d"), "{e}");
    assert_eq!(
        mailstorm_config::MAX_DURATION,
        parse_duration("365d").unwrap()
    );
}

#[test]
fn durations_format_round_trip() {
    for (d, text) in [
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(5), "5s"),
        (Duration::from_secs(120), "2m"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_secs(86_400), "1d"),
        (Duration::from_micros(3), "3us"),
        (Duration::ZERO, "0s"),
    ] {
        assert_eq!(format_duration(d), text);
        assert_eq!(parse_duration(text).unwrap(), d);
    }
}

#[test]
fn sizes_accepted() {
    let table: &[(&str, u64)] = &[
        ("512", 512),
        ("4k", 4096),
        ("4K", 4096),
        ("4kb", 4096),
        ("4KiB", 4096),
        ("1.5k", 1536),
        ("10MiB", 10 << 20),
        ("10M", 10 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("2T", 2 << 40),
        ("0", 0),
        ("64 k", 65_536),
        ("100b", 100),
    ];
    for (text, want) in table {
        assert_eq!(parse_size(text).as_ref(), Ok(want), "{text}");
    }
}

#[test]
fn sizes_rejected_name_the_value() {
    for text in [
        "",
        "k",
        "-1",
        "4x",
        "1.5",
        "0.3k",
        "99999999999T",
        "1P",
        "4 kilobytes",
        "1..2",
    ] {
        let e = parse_size(text).expect_err(text).to_string();
        assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
    }
}

#[test]
fn sizes_format_round_trip() {
    for (n, text) in [
        (4096, "4KiB"),
        (10 << 20, "10MiB"),
        (1 << 30, "1GiB"),
        (1000, "1000"),
        (0, "0"),
    ] {
        assert_eq!(format_size(n), text);
        assert_eq!(parse_size(text).unwrap(), n);
    }
}

#[test]
fn ranges() {
    assert_eq!(
        parse_range("1k..100k", parse_size).unwrap(),
        (1024, 102_400)
    );
    assert_eq!(parse_range("4k", parse_size).unwrap(), (4096, 4096));
    assert_eq!(parse_range("1..3", parse_count).unwrap(), (1, 3));
    assert_eq!(parse_range("1..=3", parse_count).unwrap(), (1, 3));
    let e = parse_range("100k..1k", parse_size).unwrap_err().to_string();
    assert!(e.contains("100k..1k"), "{e}");
    let e = parse_range("1..x", parse_count).unwrap_err().to_string();
    assert!(e.contains("\"x\""), "{e}");
}
