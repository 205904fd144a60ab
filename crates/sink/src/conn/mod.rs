//! One connection: the transport (plain TCP or TLS, and the switch between
//! them), one reusable read buffer, one write per read batch, deadlines,
//! and the session loop that drives the protocol state machine
//! ([`Session`]). Fault effects on the I/O live in [`effects::FaultIo`].

mod deadlines;
mod effects;
mod read_buffer;
mod transport;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use crate::admission::Admission;
use crate::session::{Flow, Session};
use crate::settings::Settings;
use crate::stats::{CloseReason, Counter, ShardStats};
use crate::store::Store;

use deadlines::Deadlines;
use effects::{count_after_421, FaultIo};
use read_buffer::ReadBuffer;
use transport::{handshake, tls_version, Transport};
use write::write_with_timeout;

/// Polls `fut` once: its output if ready now, else `None` (the future is
/// dropped; tokio's `read_buf` is cancellation safe).
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
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

/// What a connection carries across the TLS switch.
struct Conn {
    sess: Session,
    rbuf: ReadBuffer,
    out: Vec<u8>,
    dl: Deadlines,
    fx: FaultIo,
    stats: Arc<ShardStats>,
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
        self.stats.sub(Counter::ConnectionsOpen, 1);
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
    let sess = Session::new(
        s.clone(),
        ctx.stats.clone(),
        ctx.store.clone(),
        ctx.stopping.clone(),
        ctx.id,
        peer,
    );
    // Boxed: the task's future then holds a pointer, not the session, so
    // spawning and completing the task copies far fewer bytes.
    let mut conn = Box::new(Conn {
        sess,
        rbuf: ReadBuffer::new(),
        out: Vec::with_capacity(256),
        dl: Deadlines::new(
            s.config.idle_timeout,
            s.config.command_timeout,
            s.config.max_session_duration,
            Instant::now(),
        ),
        fx: FaultIo::default(),
        stats: ctx.stats.clone(),
    });
    guard.reason = if guard.admission.is_some() {
        conn.run(tcp, &s, ctx.implicit_tls).await
    } else {
        conn.refuse_busy(tcp).await
    };
    conn.sess
        .report_end(guard.reason == CloseReason::ClientClosed);
}

impl Conn {
    /// `421 4.7.0` for a connection over the limits.
    async fn refuse_busy(&mut self, mut tcp: TcpStream) -> CloseReason {
        self.sess.refuse_busy(&mut self.out);
        let _ = write_with_timeout(&mut tcp, &self.out, Duration::from_secs(5)).await;
        let _ = tcp.shutdown().await;
        CloseReason::TooManyConnections
    }

    /// Plain TCP, then TLS after STARTTLS; or TLS from the start.
    async fn run(&mut self, mut tcp: TcpStream, s: &Settings, implicit_tls: bool) -> CloseReason {
        // The TLS path lives in its own boxed future: it holds a rustls
        // session and a second `serve` state machine, which would otherwise
        // make every connection's task (idle plain ones included) kilobytes
        // larger.
        if implicit_tls {
            return Box::pin(self.serve_tls(tcp, s, true)).await;
        }
        match self.serve(&mut tcp, true).await {
            Exit::Closed(r) => r,
            Exit::StartTls => Box::pin(self.serve_tls(tcp, s, false)).await,
        }
    }

    /// Handshakes and serves the rest of the session over TLS: from the
    /// start (`implicit`, port-465 style) or after STARTTLS.
    async fn serve_tls(&mut self, tcp: TcpStream, s: &Settings, implicit: bool) -> CloseReason {
        let Some(mut tls) = handshake(s, tcp, &self.stats).await else {
            return CloseReason::TlsError;
        };
        if implicit {
            self.sess.tls = Some(tls_version(&tls));
        } else {
            self.sess.tls_started(tls_version(&tls));
        }
        match self.serve(&mut tls, implicit).await {
            Exit::Closed(r) => r,
            // STARTTLS inside TLS is refused by the session.
            Exit::StartTls => CloseReason::TlsError,
        }
    }

    /// The session loop on one transport: write the replies of the last
    /// batch, act on what the session asked for, read, let the session
    /// process the input, repeat.
    async fn serve<S: Transport>(&mut self, stream: &mut S, greet: bool) -> Exit {
        let read_cap = self.sess.s.read_cap;
        let timer = sleep_until(self.dl.next());
        tokio::pin!(timer);
        let mut flow = if greet {
            self.sess.greet(&mut self.out)
        } else {
            Flow::Read
        };
        loop {
            self.fx.absorb(&mut self.sess.io);
            if !self.out.is_empty() {
                // One write for everything the last batch produced.
                self.stats.add(Counter::Writes, 1);
                let res = self.fx.write(stream, &self.out, &mut timer, &self.dl).await;
                self.out.clear();
                if let Err(r) = res {
                    return Exit::Closed(r);
                }
            }
            self.fx.after_write(&mut self.dl, &mut timer).await;
            match flow {
                Flow::Read => {}
                Flow::Delay(d) => {
                    tokio::time::sleep(d).await;
                    flow = self.resume();
                    continue;
                }
                Flow::StartTls => {
                    self.rbuf.bytes.clear();
                    return Exit::StartTls;
                }
                Flow::Close(r) => {
                    let count_421 = self.sess.report.sent_421 && self.sess.report.tracked;
                    // Dropping a plain socket closes it, which sends the FIN:
                    // a shutdown first is one more syscall per connection,
                    // needed only to go on reading after it (or for TLS's
                    // close_notify).
                    if !S::PLAIN || count_421 {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                    }
                    if count_421 {
                        let pending = std::mem::take(&mut self.rbuf.bytes);
                        count_after_421(stream, &mut self.sess, &pending).await;
                    }
                    return Exit::Closed(r);
                }
                Flow::Abort { rst } => {
                    if rst {
                        effects::reset(stream);
                    }
                    return Exit::Closed(CloseReason::Hook);
                }
            }
            let Ok(room) = self.make_room(read_cap) else {
                return Exit::Closed(CloseReason::IoError);
            };
            tokio::select! {
                biased;
                r = stream.read_buf(&mut self.rbuf.bytes) => match r {
                    Ok(0) => return Exit::Closed(CloseReason::ClientClosed),
                    Ok(n) => {
                        self.rbuf.filled(n, room);
                        self.stats.add(Counter::BytesReceived, n as u64);
                        self.dl.input(Instant::now());
                        if self.fx.after_read(stream, n).await.is_err() {
                            return Exit::Closed(CloseReason::Hook);
                        }
                    }
                    Err(_) => return Exit::Closed(CloseReason::IoError),
                },
                () = timer.as_mut() => {
                    match self.dl.expired(Instant::now()) {
                        Some(reason) => return Exit::Closed(self.deadline_passed(stream, reason).await),
                        None => timer.as_mut().reset(self.dl.next()),
                    }
                    continue;
                }
            }
            self.drain(stream, read_cap).await;
            flow = self.process();
            if self
                .dl
                .command_progress(self.sess.mid_command(self.rbuf.bytes.len()))
            {
                timer.as_mut().reset(self.dl.next());
            }
        }
    }

    /// After a read that filled its room, takes what else is already in
    /// the socket without waiting: a pipelined batch larger than the buffer
    /// then gets one write of replies, not one per piece (each write wakes
    /// the client). Not while a fault paces or cuts reading: those count
    /// every read as it comes.
    async fn drain<S: Transport>(&mut self, stream: &mut S, read_cap: usize) {
        let reads_plainly = self.fx.reads_plainly();
        while reads_plainly && self.rbuf.more_waiting(read_cap) {
            let Ok(room) = self.make_room(read_cap) else {
                break;
            };
            match poll_once(stream.read_buf(&mut self.rbuf.bytes)).await {
                Some(Ok(n)) if n > 0 => {
                    self.rbuf.filled(n, room);
                    self.stats.add(Counter::BytesReceived, n as u64);
                }
                // Nothing more yet, end of input or an error: the next
                // regular read waits for, or sees, it.
                _ => break,
            }
        }
        self.rbuf.batch_done();
    }

    /// Room for the next read (see [`ReadBuffer::make_room`]), recording
    /// the buffer's high-water mark when it grows.
    fn make_room(&mut self, read_cap: usize) -> Result<usize, read_buffer::Overflow> {
        let stats = &self.stats;
        self.rbuf.make_room(read_cap, |cap| {
            stats.max(Counter::ReadBufferHighWater, cap as u64)
        })
    }

    /// Lets the session handle the buffered input.
    fn process(&mut self) -> Flow {
        let (n, flow) = self.sess.process(&self.rbuf.bytes, &mut self.out);
        self.rbuf.consume(n);
        flow
    }

    /// After a hook's delay: the delayed greeting, or the same input again.
    fn resume(&mut self) -> Flow {
        if self.sess.greeting_pending() {
            self.sess.greet(&mut self.out)
        } else {
            self.process()
        }
    }

    /// A deadline passed: `421 4.4.2` (or an idle-close fault's own reply)
    /// and close.
    async fn deadline_passed<S: Transport>(
        &mut self,
        stream: &mut S,
        reason: CloseReason,
    ) -> CloseReason {
        if reason == CloseReason::IdleTimeout && self.fx.idle_close(stream).await {
            return CloseReason::Hook;
        }
        self.sess.timeout(&mut self.out);
        let _ = write_with_timeout(stream, &self.out, Duration::from_secs(1)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        reason
    }
}
