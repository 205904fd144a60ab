//! Dot-stuffing encoder for DATA bodies.

use super::CRLF;

/// Streaming DATA body encoder (RFC 5321 §4.5.2).
///
/// Normalises line breaks to CRLF (a bare LF or a bare CR becomes CRLF),
/// doubles a `.` at the start of every line, and [`DotStuffer::finish`]
/// ends the body with `CRLF.CRLF`. The output does not depend on how the
/// body is split across [`DotStuffer::push`] calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DotStuffer {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The last byte pushed was a CR whose line break is not yet written,
    /// because an LF in the next chunk would belong to it.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a body.
    pub fn new() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Encodes `body` completely (push then finish) into `out`.
    pub fn encode(body: &[u8], out: &mut Vec<u8>) {
        let mut s = DotStuffer::new();
        s.push(body, out);
        s.finish(out);
    }

    /// Encodes the next `chunk` of the body into `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        // Room for the chunk plus a little stuffing; more is grown on demand.
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        let mut i = 0;
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(CRLF);
            self.at_line_start = true;
            if chunk[0] == b'\n' {
                i = 1;
            }
        }
        while i < chunk.len() {
            if self.at_line_start && chunk[i] == b'.' {
                out.push(b'.');
            }
            let rest = &chunk[i..];
            let Some(p) = memchr::memchr2(b'\r', b'\n', rest) else {
                out.extend_from_slice(rest);
                self.at_line_start = false;
                return;
            };
            out.extend_from_slice(&rest[..p]);
            let brk = i + p;
            if chunk[brk] == b'\r' {
                match chunk.get(brk + 1) {
                    // The LF may come in the next chunk: decide then.
                    None => {
                        self.pending_cr = true;
                        return;
                    }
                    Some(b'\n') => i = brk + 2,
                    Some(_) => i = brk + 1,
                }
            } else {
                i = brk + 1;
            }
            out.extend_from_slice(CRLF);
            self.at_line_start = true;
        }
    }

    /// Ends the body: a final line break if it lacks one, then `.\r\n`.
    /// The stuffer is then ready for a new body.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(CRLF);
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }
}
