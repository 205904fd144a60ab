//! One connection: buffered reads, one write per read batch, timeouts,
//! graceful-shutdown notice and the switch from plain TCP to TLS.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::admission::Admission;
use crate::session::{Flow, Session};
use crate::settings::{Settings, READ_INITIAL};
use crate::stats::{CloseReason, ShardStats, C};
use crate::store::Store;

/// A byte stream the session runs on: plain TCP or TLS over TCP.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Per-connection context handed over by the shard.
pub(crate) struct ConnCtx {
    pub(crate) settings: Arc<Settings>,
    pub(crate) stats: Arc<ShardStats>,
    pub(crate) store: Arc<Store>,
    /// Set once at shutdown; only ever read on the hot path.
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) id: u64,
    pub(crate) implicit_tls: bool,
    /// `None`: over the connection limits; refuse with 421.
    pub(crate) admission: Option<Admission>,
}

enum Exit {
    Closed(CloseReason),
    StartTls,
}

/// Reusable buffers (kept across the TLS switch).
struct Buffers {
    rbuf: Vec<u8>,
    out: Vec<u8>,
}

/// Idle and session deadlines behind one timer that is re-armed lazily:
/// reads only record the time, the timer fires at the old deadline and is
/// pushed back if there was activity meanwhile. No timer work per read.
struct Deadlines {
    idle: Duration,
    session_end: Option<Instant>,
    last_input: Instant,
}

impl Deadlines {
    fn next(&self) -> Instant {
        let idle = self.last_input + self.idle;
        self.session_end.map_or(idle, |e| e.min(idle))
    }

    /// `Some(reason)` if a deadline has passed.
    fn expired(&self, now: Instant) -> Option<CloseReason> {
        if self.session_end.is_some_and(|e| now >= e) {
            Some(CloseReason::SessionTimeout)
        } else if now >= self.last_input + self.idle {
            Some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }
}

/// Keeps the open-connection gauge and close reasons right even when the
/// task is dropped (a shard's runtime ending after the shutdown grace).
struct OpenGuard {
    stats: Arc<ShardStats>,
    admission: Option<Admission>,
    reason: CloseReason,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        // Free the slot before the counters say the session is gone.
        drop(self.admission.take());
        self.stats.closed(self.reason);
        self.stats.sub(C::ConnectionsOpen, 1);
    }
}

/// Runs a connection to its end and records why it ended.
pub(crate) async fn run(tcp: TcpStream, peer: SocketAddr, mut ctx: ConnCtx) {
    let mut guard = OpenGuard {
        stats: ctx.stats.clone(),
        admission: ctx.admission.take(),
        // Unless the session ends on its own, it was cut off at shutdown.
        reason: CloseReason::Shutdown,
    };
    let s = ctx.settings.clone();
    let mut sess = Session::new(
        s.clone(),
        ctx.stats.clone(),
        ctx.store.clone(),
        ctx.stopping.clone(),
        ctx.id,
        peer,
    );
    let mut bufs = Buffers {
        rbuf: Vec::with_capacity(READ_INITIAL),
        out: Vec::with_capacity(256),
    };
    let now = Instant::now();
    let mut dl = Deadlines {
        idle: s.config.idle_timeout,
        session_end: (!s.config.max_session_duration.is_zero())
            .then(|| now + s.config.max_session_duration),
        last_input: now,
    };
    let admitted = guard.admission.is_some();
    guard.reason = run_inner(tcp, &mut sess, &mut bufs, &mut dl, &mut ctx, admitted).await;
    sess.report_end();
}

/// Writes `buf` shaped by a fault: in `split` fragments and/or at the
/// throttled rate.
async fn write_shaped<S: Transport>(
    stream: &mut S,
    buf: &[u8],
    split: Option<(usize, Duration)>,
    rate: Option<u64>,
    timer: &mut Pin<&mut Sleep>,
    dl: &Deadlines,
) -> Result<(), CloseReason> {
    let chunk = split.map_or_else(|| (rate.unwrap_or(1) / 20).max(1) as usize, |(n, _)| n);
    for part in buf.chunks(chunk.max(1)) {
        write_reply_batch(stream, part, timer, dl).await?;
        let mut pause = split.map_or(Duration::ZERO, |(_, gap)| gap);
        if let Some(r) = rate {
            pause = pause.max(Duration::from_secs_f64(part.len() as f64 / r as f64));
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(())
}

/// After an injected 421 the sink has closed its side; it keeps reading a
/// little to count what the client still sends (a violation, except QUIT).
async fn count_after_421<S: Transport>(stream: &mut S, sess: &mut Session) {
    let mut buf = Vec::with_capacity(1024);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        buf.reserve(1024);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && buf.len() < 64 * 1024 => {}
            _ => break,
        }
    }
    for line in buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
    {
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"QUIT") {
            sess.report.quit_after_421 = true;
        } else {
            sess.report.commands_after_421 += 1;
        }
    }
}

async fn run_inner(
    mut tcp: TcpStream,
    sess: &mut Session,
    bufs: &mut Buffers,
    dl: &mut Deadlines,
    ctx: &mut ConnCtx,
    admitted: bool,
) -> CloseReason {
    if !admitted {
        sess.refuse_busy(&mut bufs.out);
        let _ = write_with_timeout(&mut tcp, &bufs.out, Duration::from_secs(5)).await;
        let _ = tcp.shutdown().await;
        return CloseReason::TooManyConnections;
    }
    // The TLS path lives in its own boxed future: it holds a rustls session
    // and a second `serve` state machine, which would otherwise make every
    // connection's task (idle plain ones included) kilobytes larger.
    if ctx.implicit_tls {
        return Box::pin(serve_tls(tcp, sess, bufs, dl, ctx, true)).await;
    }
    match serve(&mut tcp, sess, bufs, dl, ctx, true).await {
        Exit::Closed(r) => r,
        Exit::StartTls => Box::pin(serve_tls(tcp, sess, bufs, dl, ctx, false)).await,
    }
}

/// Handshakes and serves the rest of the session over TLS: from the start
/// (`implicit`, port-465 style) or after STARTTLS.
async fn serve_tls(
    tcp: TcpStream,
    sess: &mut Session,
    bufs: &mut Buffers,
    dl: &mut Deadlines,
    ctx: &mut ConnCtx,
    implicit: bool,
) -> CloseReason {
    let s = ctx.settings.clone();
    let Some(mut tls) = handshake(&s, tcp, &ctx.stats).await else {
        return CloseReason::TlsError;
    };
    if implicit {
        sess.tls = Some(tls_version(&tls));
    } else {
        sess.tls_started(tls_version(&tls));
    }
    match serve(&mut tls, sess, bufs, dl, ctx, implicit).await {
        Exit::Closed(r) => r,
        // STARTTLS inside TLS is refused by the session.
        Exit::StartTls => CloseReason::TlsError,
    }
}

async fn handshake(
    s: &Settings,
    tcp: TcpStream,
    stats: &ShardStats,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = s.tls.clone()?;
    match tokio::time::timeout(s.config.tls_handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            stats.add(C::TlsHandshakes, 1);
            Some(tls)
        }
        _ => {
            stats.add(C::TlsFailures, 1);
            None
        }
    }
}

fn tls_version(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> &'static str {
    match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

async fn write_with_timeout<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(limit, async {
        stream.write_all(buf).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Writes `buf` fully, giving up when a deadline passes (a client that
/// stops reading replies is cut off at the idle deadline).
async fn write_reply_batch<S: Transport>(
    stream: &mut S,
    buf: &[u8],
    timer: &mut Pin<&mut Sleep>,
    dl: &Deadlines,
) -> Result<(), CloseReason> {
    let mut written = 0;
    while written < buf.len() {
        tokio::select! {
            r = stream.write(&buf[written..]) => match r {
                Ok(0) | Err(_) => return Err(CloseReason::IoError),
                Ok(n) => written += n,
            },
            () = timer.as_mut() => match dl.expired(Instant::now()) {
                Some(r) => return Err(r),
                None => timer.as_mut().reset(dl.next()),
            },
        }
    }
    // A no-op for TCP; pushes TLS records out.
    loop {
        tokio::select! {
            r = stream.flush() => return r.map_err(|_| CloseReason::IoError),
            () = timer.as_mut() => match dl.expired(Instant::now()) {
                Some(r) => return Err(r),
                None => timer.as_mut().reset(dl.next()),
            },
        }
    }
}

/// The session loop on one transport.
async fn serve<S: Transport>(
    stream: &mut S,
    sess: &mut Session,
    bufs: &mut Buffers,
    dl: &mut Deadlines,
    ctx: &mut ConnCtx,
    greet: bool,
) -> Exit {
    let stats = ctx.stats.clone();
    let read_cap = sess.s.read_cap;
    // Size of the last read and whether it filled the room it had.
    let (mut last_read, mut last_read_filled) = (0usize, false);
    let timer = sleep_until(dl.next());
    tokio::pin!(timer);
    let mut flow = if greet {
        sess.greet(&mut bufs.out)
    } else {
        Flow::Read
    };
    loop {
        // One write for everything the last batch produced.
        if !bufs.out.is_empty() {
            stats.add(C::Writes, 1);
            let split = sess.io.split.take();
            let res = if split.is_some() || sess.io.throttle.is_some() {
                write_shaped(stream, &bufs.out, split, sess.io.throttle, &mut timer, dl).await
            } else {
                write_reply_batch(stream, &bufs.out, &mut timer, dl).await
            };
            bufs.out.clear();
            if let Err(r) = res {
                return Exit::Closed(r);
            }
        }
        if let Some(d) = sess.io.stall.take() {
            // A stalled server: neither reads nor answers.
            tokio::time::sleep(d).await;
            dl.last_input = Instant::now();
        }
        if let Some((after, _)) = &sess.io.idle_close {
            if dl.idle != *after {
                dl.idle = *after;
                timer.as_mut().reset(dl.next());
            }
        }
        match flow {
            Flow::Read => {}
            Flow::Delay(d) => {
                tokio::time::sleep(d).await;
                let (n, f) = if sess.greeting_pending() {
                    (0, sess.greet(&mut bufs.out))
                } else {
                    sess.process(&bufs.rbuf, &mut bufs.out)
                };
                consume(&mut bufs.rbuf, n);
                flow = f;
                continue;
            }
            Flow::StartTls => {
                bufs.rbuf.clear();
                return Exit::StartTls;
            }
            Flow::Close(r) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                if sess.io.sent_421 && sess.report.tracked {
                    count_after_421(stream, sess).await;
                }
                return Exit::Closed(r);
            }
            Flow::Abort { rst } => {
                if rst {
                    let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
                }
                return Exit::Closed(CloseReason::Hook);
            }
        }
        // Room to read. Grow (doubling, bounded) when the buffer is full or
        // the last read filled all the room it had: a body is streaming in,
        // and 1 KiB reads would cost a syscall per KiB. Shrink back once a
        // read comes in small with nothing pending, so a connection that
        // goes idle after a burst gives its memory back.
        let cap = bufs.rbuf.capacity();
        if bufs.rbuf.len() == cap || (last_read_filled && cap < read_cap) {
            if bufs.rbuf.len() == cap && cap >= read_cap {
                // Every phase consumes a full buffer, so this cannot happen;
                // close rather than grow without bound.
                return Exit::Closed(CloseReason::IoError);
            }
            let want = (cap * 2).clamp(READ_INITIAL, read_cap);
            bufs.rbuf.reserve_exact(want - bufs.rbuf.len());
            stats.max(C::ReadBufferHighWater, bufs.rbuf.capacity() as u64);
        } else if bufs.rbuf.is_empty() && cap > 4 * READ_INITIAL && last_read < cap / 8 {
            bufs.rbuf.shrink_to(READ_INITIAL);
        }
        let room = bufs.rbuf.capacity() - bufs.rbuf.len();
        tokio::select! {
            biased;
            r = stream.read_buf(&mut bufs.rbuf) => match r {
                Ok(0) => return Exit::Closed(CloseReason::ClientClosed),
                Ok(n) => {
                    last_read = n;
                    last_read_filled = n == room;
                    stats.add(C::BytesReceived, n as u64);
                    dl.last_input = Instant::now();
                    if let Some((left, rst)) = sess.io.cut_after {
                        if n as u64 >= left {
                            if rst {
                                let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
                            }
                            return Exit::Closed(CloseReason::Hook);
                        }
                        sess.io.cut_after = Some((left - n as u64, rst));
                    }
                    if let Some(rate) = sess.io.throttle {
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                    }
                }
                Err(_) => return Exit::Closed(CloseReason::IoError),
            },
            () = timer.as_mut() => {
                match dl.expired(Instant::now()) {
                    Some(CloseReason::IdleTimeout) if sess.io.idle_close.is_some() => {
                        let reply = sess.io.idle_close.take().map(|(_, r)| r).unwrap_or_default();
                        let _ = write_with_timeout(stream, &reply, Duration::from_secs(1)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                        return Exit::Closed(CloseReason::Hook);
                    }
                    Some(reason) => {
                        sess.timeout(&mut bufs.out);
                        let _ = write_with_timeout(stream, &bufs.out, Duration::from_secs(1)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                        return Exit::Closed(reason);
                    }
                    None => timer.as_mut().reset(dl.next()),
                }
                continue;
            }
        }
        let (n, f) = sess.process(&bufs.rbuf, &mut bufs.out);
        consume(&mut bufs.rbuf, n);
        flow = f;
    }
}

/// Drops the first `n` bytes, moving any partial command to the front.
#[inline]
fn consume(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else if n > 0 {
        buf.drain(..n);
    }
}
