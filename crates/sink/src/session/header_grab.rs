//! Discard mode keeps only a message's header section: what header rules
//! and the ledger's trace scan read.

/// Header bytes kept per message for header rules and the ledger's trace
/// scan in discard mode (the section usually ends far sooner).
pub(super) const HEADER_GRAB: usize = 16 * 1024;

/// Discard mode: copies the next `bytes` of the message into `msg` while
/// its header section lasts (at most [`HEADER_GRAB`] bytes), for header
/// rules and the ledger's trace scan. The end is found before copying, so
/// the body is never copied, even when it arrives in the same read, and a
/// message without a trace header costs its header section only.
pub(super) fn grab_headers(msg: &mut Vec<u8>, complete: &mut bool, bytes: &[u8]) {
    if *complete {
        return;
    }
    let bytes = &bytes[..bytes.len().min(HEADER_GRAB - msg.len())];
    match header_end(msg, bytes) {
        Some(end) => {
            msg.extend_from_slice(&bytes[..end]);
            *complete = true;
        }
        None => {
            msg.extend_from_slice(bytes);
            *complete = msg.len() >= HEADER_GRAB;
        }
    }
}

/// How many of `bytes` (the message's next bytes after `before`) belong to
/// the header section when it ends in them: up to the first empty line
/// (CRLF or bare LF), which may start in `before`'s last two bytes.
fn header_end(before: &[u8], bytes: &[u8]) -> Option<usize> {
    if before.is_empty() {
        // No header at all: the message starts with the empty line.
        if bytes.starts_with(b"\r\n") {
            return Some(2);
        }
        if bytes.starts_with(b"\n") {
            return Some(1);
        }
    }
    // An end straddling the reads: `before`'s last 2 bytes and the first 3
    // new ones (an end wholly in `before` was found on an earlier call).
    let tail = &before[before.len().saturating_sub(2)..];
    let head = bytes.len().min(3);
    let mut joint = [0u8; 5];
    joint[..tail.len()].copy_from_slice(tail);
    joint[tail.len()..tail.len() + head].copy_from_slice(&bytes[..head]);
    if let Some(end) = first_end(&joint[..tail.len() + head]) {
        if end > tail.len() {
            return Some(end - tail.len());
        }
    }
    first_end(bytes)
}

/// The end of the first line end followed by an empty line.
fn first_end(s: &[u8]) -> Option<usize> {
    mailstorm_proto::header::empty_line_end(s)
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
        assert_eq!(grab(&[b"\nbody", &body]), (b"\n".to_vec(), true));
        // Nothing of a body in the same read as the headers is copied, and
        // an end split as `\n` | `\n` or `\r` | `\n` is found.
        assert_eq!(grab(&[b"A: 1\n", b"\nbody"]).0, b"A: 1\n\n");
        assert_eq!(grab(&[b"A: 1\r\n\r", b"\nbody"]).0, b"A: 1\r\n\r\n");
    }

    #[test]
    fn bounded_when_the_section_never_ends() {
        let long = vec![b'h'; 10_000];
        let (m, done) = grab(&[&long, &long, &long]);
        assert_eq!((m.len(), done), (HEADER_GRAB, true));
    }
}
