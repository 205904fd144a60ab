//! Shared drivers for the fuzz targets: each feeds an input to a parser the
//! way a real read loop does (whole, or in pieces) and records what it saw,
//! so the targets can assert that splitting never changes the result.

use mailstorm_proto::data::{DataConfig, DataReceiver, DataStats};
use mailstorm_proto::line::skip_line;
use mailstorm_proto::reply::parse_reply;
use mailstorm_proto::{parse_command, Error, ParserConfig, Status};

/// The split position a target uses: derived from the first input byte,
/// scaled over the rest of the input so every position is reachable.
pub fn split_point(first: u8, len: usize) -> usize {
    usize::from(first) * (len + 1) / 256
}

/// Feeds `input` cut at `cuts` (positions, any order) to `step`, which
/// receives the accumulated buffer each time and returns how many bytes to
/// drop, or `None` to wait for more.
fn drive(input: &[u8], cuts: &[usize], mut step: impl FnMut(&[u8]) -> Option<usize>) -> usize {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.sort_unstable();
    ends.push(input.len());
    let mut buf = Vec::new();
    let mut pos = 0;
    for end in ends {
        buf.extend_from_slice(&input[pos.min(end)..end]);
        pos = pos.max(end);
        while let Some(n) = step(&buf) {
            assert!(n <= buf.len(), "dropping {n} of {} bytes", buf.len());
            buf.drain(..n);
        }
    }
    buf.len()
}

/// Errors always make progress and stay inside the buffer.
pub fn check_error(e: &Error, len: usize) {
    assert!(e.consumed > 0, "{e:?}: no progress");
    assert!(e.consumed <= len, "{e:?}: past the buffer ({len})");
    assert!(e.offset <= e.consumed, "{e:?}");
    let _ = e.reply();
}

/// Events of a server's command loop (with resynchronisation after errors)
/// and the bytes left over (+1,000,000 while still skipping a long line).
pub fn command_events(input: &[u8], cuts: &[usize], cfg: &ParserConfig) -> (Vec<String>, usize) {
    let mut events = Vec::new();
    let mut skipping = false;
    let left = drive(input, cuts, |buf| {
        if skipping {
            return match skip_line(buf) {
                Some(n) => {
                    skipping = false;
                    Some(n)
                }
                None if buf.is_empty() => None,
                None => Some(buf.len()),
            };
        }
        match parse_command(buf, cfg) {
            Ok(Status::Partial) => None,
            Ok(Status::Complete((cmd, n))) => {
                assert!(n > 0 && n <= cfg.max_line_len && buf[n - 1] == b'\n');
                events.push(format!("{cmd:?} +{n}"));
                Some(n)
            }
            Err(e) => {
                check_error(&e, buf.len());
                events.push(format!("{:?}@{}", e.kind, e.offset));
                skipping = !e.line_complete;
                Some(e.consumed)
            }
        }
    });
    (events, left + usize::from(skipping) * 1_000_000)
}

/// Events of a client's reply loop.
pub fn reply_events(input: &[u8], cuts: &[usize], max_line: usize) -> (Vec<String>, usize) {
    let mut events = Vec::new();
    let mut skipping = false;
    let left = drive(input, cuts, |buf| {
        if skipping {
            return match skip_line(buf) {
                Some(n) => {
                    skipping = false;
                    Some(n)
                }
                None if buf.is_empty() => None,
                None => Some(buf.len()),
            };
        }
        match parse_reply(buf, max_line) {
            Ok(Status::Partial) => None,
            Ok(Status::Complete((r, n))) => {
                assert!(n > 0 && n <= buf.len() && r.raw().len() == n);
                assert_eq!(r.lines().count(), r.line_count());
                let lines: Vec<&[u8]> = r.lines().collect();
                events.push(format!(
                    "{} {:?} {:?} {lines:?} +{n}",
                    r.code,
                    r.enhanced,
                    r.text()
                ));
                Some(n)
            }
            Err(e) => {
                check_error(&e, buf.len());
                events.push(format!("{:?}@{}", e.kind, e.offset));
                skipping = !e.line_complete;
                Some(e.consumed)
            }
        }
    });
    (events, left + usize::from(skipping) * 1_000_000)
}

/// What a DATA receiver produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOutcome {
    /// Unstuffed output (empty in discard mode).
    pub out: Vec<u8>,
    /// Bytes consumed up to and including the terminator, once found.
    pub end: Option<usize>,
    /// The receiver's stats at the end.
    pub stats: DataStats,
}

/// Feeds `input` cut at `cuts` to a DATA receiver.
pub fn data_feed(input: &[u8], cuts: &[usize], cfg: DataConfig, unstuff: bool) -> DataOutcome {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    ends.sort_unstable();
    ends.push(input.len());
    let mut rx = DataReceiver::new(cfg);
    let mut out = Vec::new();
    let mut pos = 0;
    for end in ends {
        let start = pos.min(end);
        let chunk = &input[start..end];
        let status = if unstuff {
            rx.unstuff(chunk, &mut out)
        } else {
            rx.discard(chunk)
        };
        if cfg.max_size != 0 {
            assert!(out.len() as u64 <= cfg.max_size, "output over max_size");
        }
        assert!(out.len() as u64 <= rx.stats().bytes);
        if let Status::Complete(n) = status {
            assert!(n >= 1 && n <= chunk.len() && rx.is_done());
            return DataOutcome {
                out,
                end: Some(start + n),
                stats: rx.stats(),
            };
        }
        pos = pos.max(end);
    }
    DataOutcome {
        out,
        end: None,
        stats: rx.stats(),
    }
}

/// RFC 5321 line breaks: a bare CR or LF becomes CRLF, and a non-empty body
/// gets a final CRLF (what `DotStuffer` promises to transmit).
pub fn crlf_normalise(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
