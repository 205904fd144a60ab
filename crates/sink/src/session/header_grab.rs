//! Discard mode keeps only a message's header section: what header rules
//! and the ledger's trace scan read.

/// Header bytes kept per message for header rules and the ledger's trace
/// scan in discard mode (the section usually ends far sooner).
pub(super) const HEADER_GRAB: usize = 16 * 1024;

/// Discard mode: copies the next `bytes` of the message into `msg` while
/// its header section lasts (at most [`HEADER_GRAB`] bytes), for header
/// rules and the ledger's trace scan. Copying stops at the empty line that
/// ends the section (`complete`), so a body is never copied and a message
/// without a trace header costs its header section only.
pub(super) fn grab_headers(msg: &mut Vec<u8>, complete: &mut bool, bytes: &[u8]) {
    if *complete {
        return;
    }
    // Look from a little before the new bytes: the end may straddle.
    let from = msg.len().saturating_sub(2);
    let take = bytes.len().min(HEADER_GRAB - msg.len());
    msg.extend_from_slice(&bytes[..take]);
    {
        let tail = &msg[from..];
        // The first line end followed by an empty line (CRLF or bare LF), or
        // a message with no header at all. One memchr per line: a header
        // section is a dozen short lines (a memmem searcher built per call
        // cost more).
        let end = memchr::memchr_iter(b'\n', tail)
            .find_map(|i| match &tail[i + 1..] {
                [b'\n', ..] => Some(from + i + 2),
                [b'\r', b'\n', ..] => Some(from + i + 3),
                _ => None,
            })
            .or_else(|| (from == 0 && msg.starts_with(b"\r\n")).then_some(2));
        if let Some(end) = end {
            msg.truncate(end);
            *complete = true;
        } else if msg.len() >= HEADER_GRAB {
            *complete = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grab(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let (mut msg, mut done) = (Vec::new(), false);
        for c in chunks {
            grab_headers(&mut msg, &mut done, c);
        }
        (msg, done)
    }

    #[test]
    fn stops_at_the_end_of_the_header_section() {
        let body = vec![b'x'; 100_000];
        let (m, done) = grab(&[b"A: 1\r\nB: 2\r\n\r\nbody", &body]);
        assert_eq!((&m[..], done), (&b"A: 1\r\nB: 2\r\n\r\n"[..], true));
        // The empty line split across reads, at every point.
        let whole = b"Subject: s\r\n\r\nbody\r\n";
        for cut in 1..whole.len() {
            let (m, done) = grab(&[&whole[..cut], &whole[cut..], &body]);
            assert_eq!(
                (&m[..], done),
                (&b"Subject: s\r\n\r\n"[..], true),
                "cut {cut}"
            );
        }
        // Bare LF lines, mixed ends (the first empty line counts), and a
        // message with no header at all.
        assert_eq!(grab(&[b"A: 1\n\nb\r\n\r\n"]).0, b"A: 1\n\n");
        assert_eq!(grab(&[b"A: 1\nB: 2\n\nbody"]).0, b"A: 1\nB: 2\n\n");
        assert_eq!(grab(&[b"\r\nbody", &body]), (b"\r\n".to_vec(), true));
    }

    #[test]
    fn bounded_when_the_section_never_ends() {
        let long = vec![b'h'; 10_000];
        let (m, done) = grab(&[&long, &long, &long]);
        assert_eq!((m.len(), done), (HEADER_GRAB, true));
    }
}
