//! `--start-at TIME`: every shard of a run starts at the same wall-clock
//! instant, so their timelines' intervals cover the same windows. TIME is
//! RFC 3339 (`2026-05-01T12:00:00Z`, an offset or fractional seconds
//! allowed) or Unix seconds (`1777636800`, `1777636800.5`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::BlastError;

/// Furthest ahead a start may be: a typo (a wrong day) should fail now,
/// not leave a Job waiting for a day.
pub const MAX_AHEAD: Duration = Duration::from_secs(3600);
/// How far in the past a start may be: pods scheduled a moment late still
/// start (at once) instead of failing.
pub const GRACE: Duration = Duration::from_secs(10);

/// Parses TIME into a wall-clock instant.
pub fn parse(s: &str) -> Result<SystemTime, BlastError> {
    let bad = |why: &str| {
        BlastError::Config(format!(
            "--start-at {s:?}: {why} (expected RFC 3339, e.g. 2026-05-01T12:00:00Z, or Unix \
             seconds)"
        ))
    };
    let t = s.trim();
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| bad("not a number"))?;
        return Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .ok_or_else(|| bad("out of range"));
    }
    rfc3339(t).ok_or_else(|| bad("not a valid time"))
}

/// Checks a parsed start against `now`: not more than [`MAX_AHEAD`] away,
/// not more than [`GRACE`] past.
pub fn check(s: &str, at: SystemTime, now: SystemTime) -> Result<(), BlastError> {
    match at.duration_since(now) {
        Ok(ahead) if ahead > MAX_AHEAD => Err(BlastError::Config(format!(
            "--start-at {s}: {:.0} s from now, more than the {} s allowed (a typo in the date?)",
            ahead.as_secs_f64(),
            MAX_AHEAD.as_secs()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.duration() > GRACE => Err(BlastError::Config(format!(
            "--start-at {s}: {:.0} s in the past (more than the {} s grace): give a time \
             ahead, e.g. a minute after the Job is created",
            e.duration().as_secs_f64(),
            GRACE.as_secs()
        ))),
        Err(_) => Ok(()),
    }
}

/// The next multiple of `interval` since the Unix epoch after `now`: where
/// a sharded run without `--start-at` starts, so shards started within one
/// interval of each other still share interval boundaries.
pub fn next_boundary(now: SystemTime, interval: Duration) -> SystemTime {
    let step = interval.as_micros().max(1);
    let us = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let next = (us / step + 1) * step;
    UNIX_EPOCH + Duration::from_micros(next.min(u128::from(u64::MAX)) as u64)
}

/// Sleeps until `at` (wall clock), waking every 100 ms for `stop`; returns
/// false when stopped first.
pub fn wait_until(at: SystemTime, stop: &crate::StopSignal) -> bool {
    loop {
        if stop.is_triggered() {
            return false;
        }
        match at.duration_since(SystemTime::now()) {
            Ok(left) if !left.is_zero() => {
                std::thread::sleep(left.min(Duration::from_millis(100)));
            }
            _ => return true,
        }
    }
}

/// When this process starts: `--start-at` (checked against the clock),
/// else for a sharded run the next interval boundary of the clock, else
/// at once (`None`).
pub fn resolve(
    cfg: &crate::config::Config,
    flag: Option<&str>,
) -> Result<Option<SystemTime>, BlastError> {
    let now = SystemTime::now();
    match flag {
        Some(s) => {
            let at = parse(s)?;
            check(s, at, now)?;
            Ok(Some(at))
        }
        None if cfg.shard.is_some() => Ok(Some(next_boundary(now, cfg.interval))),
        None => Ok(None),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let p = s.get(r)?;
        p.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| p.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos as u32))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    #[test]
    fn parses_rfc3339_and_unix_seconds() {
        assert_eq!(secs(parse("1970-01-01T00:00:00Z").unwrap()), 0.0);
        assert_eq!(secs(parse("2000-03-01T00:00:00Z").unwrap()), 951_868_800.0);
        assert_eq!(
            secs(parse("2026-05-01T12:00:00Z").unwrap()),
            1_777_636_800.0
        );
        assert_eq!(
            secs(parse("2026-05-01T14:00:00.25+02:00").unwrap()),
            1_777_636_800.25
        );
        assert_eq!(secs(parse("1777636800").unwrap()), 1_777_636_800.0);
        assert_eq!(secs(parse("1777636800.5").unwrap()), 1_777_636_800.5);
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-05-01T12:00:00",
            "1e9",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("--start-at"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_far_future_and_past() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(check("x", now + Duration::from_secs(60), now).is_ok());
        assert!(check("x", now - Duration::from_secs(2), now).is_ok());
        let e = check("x", now + Duration::from_secs(7200), now).unwrap_err();
        assert!(e.to_string().contains("more than the 3600 s"), "{e}");
        let e = check("x", now - Duration::from_secs(600), now).unwrap_err();
        assert!(e.to_string().contains("in the past"), "{e}");
    }

    #[test]
    fn boundaries_are_interval_multiples() {
        let now = UNIX_EPOCH + Duration::from_millis(10_250);
        let b = next_boundary(now, Duration::from_secs(1));
        assert_eq!(b, UNIX_EPOCH + Duration::from_secs(11));
        let b = next_boundary(now, Duration::from_millis(500));
        assert_eq!(b, UNIX_EPOCH + Duration::from_millis(10_500));
    }
}
