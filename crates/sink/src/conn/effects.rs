//! Fault effects on the connection's I/O: shaped (split, throttled)
//! writes, stalls, an unprompted reply when idle, a cut after N octets and
//! TCP resets. The session records what a fault asked for
//! ([`crate::session::IoEffects`]); [`FaultIo`] takes those requests over
//! and applies them, so the connection loop only calls it at fixed points.

use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::deadlines::Deadlines;
use super::transport::Transport;
use super::write::{write_reply_batch, write_with_timeout};
use crate::hook::{DisconnectAfter, SplitReply};
use crate::session::{IdleCloseReply, IoEffects, Session};
use crate::stats::CloseReason;

/// The fault effects in force on one connection. Empty (and free) unless
/// a fault plan or hook asked for one.
#[derive(Default)]
pub(super) struct FaultIo {
    /// Close once this many more octets arrived.
    disconnect_after: Option<DisconnectAfter>,
    /// Stop reading this long after the next write.
    stall: Option<Duration>,
    /// Octets per second, both directions, from now on.
    throttle: Option<u64>,
    /// Fragments for the next write.
    split: Option<SplitReply>,
    /// Idle this long → this reply, then close.
    idle_close: Option<IdleCloseReply>,
}

/// Why reading stopped: the fault cut the connection.
pub(super) struct Cut;

impl FaultIo {
    /// Takes over the effects the session recorded since the last call
    /// (a newer request replaces an older one of its kind).
    pub(super) fn absorb(&mut self, requested: &mut IoEffects) {
        if let Some(d) = requested.disconnect_after.take() {
            self.disconnect_after = Some(d);
        }
        if let Some(s) = requested.stall.take() {
            self.stall = Some(s);
        }
        if let Some(t) = requested.throttle.take() {
            self.throttle = Some(t);
        }
        if let Some(s) = requested.split.take() {
            self.split = Some(s);
        }
        if let Some(i) = requested.idle_close.take() {
            self.idle_close = Some(i);
        }
    }

    /// Writes one batch of replies: as is, or split and throttled.
    pub(super) async fn write<S: Transport>(
        &mut self,
        stream: &mut S,
        buf: &[u8],
        timer: &mut Pin<&mut Sleep>,
        dl: &Deadlines,
    ) -> Result<(), CloseReason> {
        let split = self.split.take();
        if split.is_none() && self.throttle.is_none() {
            return write_reply_batch(stream, buf, timer, dl).await;
        }
        let rate = self.throttle;
        let chunk = split.map_or_else(|| (rate.unwrap_or(1) / 20).max(1) as usize, |s| s.fragment);
        for part in buf.chunks(chunk.max(1)) {
            write_reply_batch(stream, part, timer, dl).await?;
            let mut pause = split.map_or(Duration::ZERO, |s| s.gap);
            if let Some(r) = rate {
                pause = pause.max(Duration::from_secs_f64(part.len() as f64 / r as f64));
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(())
    }

    /// After a write: a stalled server neither reads nor answers for a
    /// while (which counts as input time: the client is not idle), and an
    /// idle-close fault shortens the idle deadline.
    pub(super) async fn after_write(&mut self, dl: &mut Deadlines, timer: &mut Pin<&mut Sleep>) {
        if let Some(d) = self.stall.take() {
            tokio::time::sleep(d).await;
            dl.input(Instant::now());
        }
        if let Some(ic) = &self.idle_close {
            if dl.idle != ic.after {
                dl.idle = ic.after;
                timer.as_mut().reset(dl.next());
            }
        }
    }

    /// No fault counts or paces reads: reading ahead changes nothing.
    pub(super) fn reads_plainly(&self) -> bool {
        self.disconnect_after.is_none() && self.throttle.is_none()
    }

    /// After reading `n` octets: cut the connection if its allowance ran
    /// out, else pace reading at the throttled rate.
    pub(super) async fn after_read<S: Transport>(
        &mut self,
        stream: &mut S,
        n: usize,
    ) -> Result<(), Cut> {
        if let Some(cut) = &mut self.disconnect_after {
            if n as u64 >= cut.bytes {
                if cut.rst {
                    reset(stream);
                }
                return Err(Cut);
            }
            cut.bytes -= n as u64;
        }
        if let Some(rate) = self.throttle {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        Ok(())
    }

    /// The idle deadline passed with an idle-close fault in force: send its
    /// reply and close. `false` when no such fault is in force.
    pub(super) async fn idle_close<S: Transport>(&mut self, stream: &mut S) -> bool {
        let Some(ic) = self.idle_close.take() else {
            return false;
        };
        let _ = write_with_timeout(stream, &ic.reply, Duration::from_secs(1)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        true
    }
}

/// Makes the coming close a TCP reset (SO_LINGER 0) instead of a FIN.
pub(super) fn reset<S: Transport>(stream: &S) {
    let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
}

/// After an injected 421 the sink has closed its side; it keeps reading a
/// little to count what the client still sends (a violation, except QUIT),
/// starting with `pending`: input already read but not processed (commands
/// pipelined behind the one that got the 421).
pub(super) async fn count_after_421<S: Transport>(
    stream: &mut S,
    sess: &mut Session,
    pending: &[u8],
) {
    let mut buf = Vec::with_capacity(1024 + pending.len());
    buf.extend_from_slice(pending);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && buf.len() < 64 * 1024 => {}
            _ => break,
        }
    }
    let (commands, quit) = lines_after_421(&buf);
    sess.report.commands_after_421 += commands;
    sess.report.quit_after_421 |= quit;
}

/// The non-blank lines of `buf` other than QUIT, and whether one was QUIT.
/// Lines are found with `memchr`: the bytes behind a 421 are often several
/// pipelined messages, and a split by byte cost ~30,000 instructions per
/// 421 there (callgrind, the faults-only benchmark plan).
fn lines_after_421(buf: &[u8]) -> (u32, bool) {
    let (mut commands, mut quit) = (0, false);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', buf).chain(std::iter::once(buf.len())) {
        let line = &buf[start..end];
        start = end + 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"QUIT") {
            quit = true;
        } else {
            commands += 1;
        }
    }
    (commands, quit)
}

#[cfg(test)]
mod tests {
    use super::lines_after_421;

    #[test]
    fn lines_after_421_are_counted_as_before() {
        // The previous form: split at every LF, skip blank lines.
        let by_split = |buf: &[u8]| {
            let (mut commands, mut quit) = (0, false);
            for line in buf
                .split(|&b| b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
            {
                if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"QUIT") {
                    quit = true;
                } else {
                    commands += 1;
                }
            }
            (commands, quit)
        };
        let cases: [&[u8]; 9] = [
            b"",
            b"\n",
            b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
            b"MAIL FROM:<a@b>\r\n\r\n  \r\nquit\r\n",
            b"RSET\r\nQUI",
            b"QUIT",
            b"\n\nNOOP",
            b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQuit\r\n",
            b"\r\n\t\r\n",
        ];
        for buf in cases {
            assert_eq!(
                lines_after_421(buf),
                by_split(buf),
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
        assert_eq!(lines_after_421(b"MAIL\r\nRCPT\r\nQUIT\r\n"), (2, true));
    }
}
