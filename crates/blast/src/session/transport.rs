//! The connection's byte stream: timed writes, and reply reads bounded in
//! time, line length, line count and total size. Every error comes back as
//! a [`Fault`] naming the stage it happened at, with its text kept in
//! `Conn::error_text`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mailstorm_proto::reply::{parse_reply, Reply};
use mailstorm_proto::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::HandshakeKind;
use tokio_rustls::TlsConnector;

use super::{Conn, Env, Rep};
use crate::stats::{Fault, Stage, Transport};

/// Longest reply line accepted. RFC 5321 §4.5.3.1.5 says 512 octets;
/// longer lines exist in the wild, so be lenient per line.
const MAX_REPLY_LINE: usize = 4096;
/// Longest reply accepted, all lines together: far above real EHLO
/// replies (a few hundred bytes), far below what hurts memory.
pub(crate) const MAX_REPLY_BYTES: usize = 64 * 1024;
/// A connection's first read buffer, and the least it grows by.
pub(crate) const READ_CHUNK: usize = 512;
/// Most lines one reply may have (a big EHLO reply has a few dozen).
pub(crate) const MAX_REPLY_LINES: usize = 256;

pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b).await,
            Stream::Tls(s) => {
                s.write_all(b).await?;
                // rustls buffers records: push them to the socket now.
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Conn {
    /// Marks the connection unusable and returns `kind` at `stage`, with
    /// `text` kept for the error summary.
    pub(super) fn fault(
        &mut self,
        kind: Transport,
        stage: Stage,
        text: impl std::fmt::Display,
    ) -> Fault {
        self.broken = true;
        self.error_text.clear();
        let _ = write!(self.error_text, "{text}");
        Fault::new(kind, stage)
    }

    /// Writes the whole write buffer (the command(s) of `stage`); returns
    /// when the write started.
    pub(super) async fn send(&mut self, stage: Stage, limit: Duration) -> Result<Instant, Fault> {
        let t0 = Instant::now();
        let res = tokio::time::timeout(limit, self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        match res {
            Ok(Ok(())) => Ok(t0),
            Ok(Err(e)) => Err(self.fault(Transport::from_io(&e), stage, e)),
            Err(_) => Err(self.fault(
                Transport::ReadTimeout,
                stage,
                format_args!("write not done within {limit:?}"),
            )),
        }
    }

    pub(super) async fn reply(&mut self, stage: Stage, limit: Duration) -> Result<Rep, Fault> {
        self.reply_with(stage, limit, |_| ()).await.map(|(r, ())| r)
    }

    /// Waits for the next complete reply of `stage`; `f` sees it before the
    /// buffer moves on. A reply over [`MAX_REPLY_BYTES`] or
    /// [`MAX_REPLY_LINES`] is malformed: what was read of it is dropped
    /// and the connection is done.
    pub(super) async fn reply_with<T>(
        &mut self,
        stage: Stage,
        limit: Duration,
        f: impl FnOnce(&Reply<'_>) -> T,
    ) -> Result<(Rep, T), Fault> {
        let mut deadline = None;
        // Bytes of the pending reply already scanned for line ends, and
        // the lines found: a reply trickled byte by byte is parsed once
        // per completed line, not once per byte. The first look parses
        // without scanning: with a pipelined batch buffered, scanning the
        // whole buffer before each reply would cost O(batch²).
        let (mut scanned, mut lines) = (0usize, 0usize);
        loop {
            let pending = &self.rbuf[self.rpos..];
            let first_look = deadline.is_none();
            let new_lines = if first_look {
                0
            } else {
                memchr::memchr_iter(b'\n', &pending[scanned..]).count()
            };
            if first_look || new_lines > 0 {
                match parse_reply(pending, MAX_REPLY_LINE) {
                    Ok(Status::Complete((r, n))) => {
                        let rep = Rep {
                            code: r.code,
                            enhanced: r.enhanced,
                        };
                        let v = f(&r);
                        self.rpos += n;
                        if rep.code == 421 {
                            // RFC 5321 §3.8: the server closes after 421.
                            self.broken = true;
                        }
                        return Ok((rep, v));
                    }
                    Ok(Status::Partial) => {}
                    Err(e) => return Err(self.fault(Transport::MalformedReply, stage, e)),
                }
            }
            // Everything buffered belongs to the incomplete reply.
            lines += if first_look {
                memchr::memchr_iter(b'\n', pending).count()
            } else {
                new_lines
            };
            scanned = pending.len();
            if scanned > MAX_REPLY_BYTES || lines > MAX_REPLY_LINES {
                self.rbuf.clear();
                self.rbuf.shrink_to(READ_CHUNK);
                self.rpos = 0;
                return Err(self.fault(
                    Transport::MalformedReply,
                    stage,
                    format_args!(
                        "reply over {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes ({lines} lines, {scanned} bytes)"
                    ),
                ));
            }
            let dl = *deadline.get_or_insert_with(|| Instant::now() + limit);
            self.fill(stage, dl, limit).await?;
        }
    }

    async fn fill(
        &mut self,
        stage: Stage,
        deadline: Instant,
        limit: Duration,
    ) -> Result<(), Fault> {
        if self.rpos > 0 {
            if self.rpos == self.rbuf.len() {
                self.rbuf.clear();
            } else {
                self.rbuf.drain(..self.rpos);
            }
            self.rpos = 0;
        }
        // Start small and double: most connections only ever hold a few
        // replies, and 10,000 idle connections must fit in tens of MiB.
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(self.rbuf.len().max(READ_CHUNK));
        }
        let res = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.stream.read_buf(&mut self.rbuf),
        )
        .await;
        match res {
            Ok(Ok(0)) => Err(self.fault(
                Transport::UnexpectedClose,
                stage,
                "the server closed the connection",
            )),
            Ok(Ok(_)) => {
                self.last_read = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => Err(self.fault(Transport::from_io(&e), stage, e)),
            Err(_) => Err(self.fault(
                Transport::ReadTimeout,
                stage,
                format_args!("no complete reply within {limit:?}"),
            )),
        }
    }

    /// The TLS handshake (implicit TLS, or after STARTTLS's 220).
    pub(super) async fn handshake(&mut self, env: &Env) -> Result<(), Fault> {
        let (Some(tls), Some(name)) = (&env.tls, &env.server_name) else {
            return Err(self.fault(Transport::TlsFailure, Stage::Tls, "no TLS configuration"));
        };
        let Stream::Tcp(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(self.fault(Transport::TlsFailure, Stage::Tls, "TLS already active"));
        };
        let connector = TlsConnector::from(tls.clone());
        let limit = env.cfg.timeouts.tls;
        let res = tokio::time::timeout(limit, connector.connect(name.clone(), tcp)).await;
        match res {
            Ok(Ok(s)) => {
                let resumed = s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
                {
                    let mut st = env.stats();
                    st.counters.tls_handshakes += 1;
                    st.counters.tls_resumed += u64::from(resumed);
                }
                self.stream = Stream::Tls(Box::new(s));
                self.last_read = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => {
                // Resets during the handshake are still transport resets.
                let kind = match Transport::from_io(&e) {
                    Transport::Reset => Transport::Reset,
                    Transport::UnexpectedClose => Transport::UnexpectedClose,
                    _ => Transport::TlsFailure,
                };
                Err(self.fault(kind, Stage::Tls, e))
            }
            Err(_) => Err(self.fault(
                Transport::TlsFailure,
                Stage::Tls,
                format_args!("handshake not done within {limit:?}"),
            )),
        }
    }
}
