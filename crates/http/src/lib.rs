//! Bounded HTTP/1.1 serving for mailstorm's two HTTP surfaces: the sink's
//! control API and the blaster's live endpoints (metrics, dashboard).
//!
//! axum's own `serve` takes every connection, waits forever for a request
//! head and lets each connection's read buffer grow to ~400 KiB (hyper's
//! default): 4,000 loopback connections each trickling a 300 KB header
//! held the sink at 1.3 GB. [`serve`] caps what any peer can make it hold:
//!
//! - at most [`Limits::max_connections`] connections are served at once;
//!   the rest wait in the kernel's listen backlog, unread (past the
//!   backlog the kernel drops their SYNs and they retry);
//! - a request head (request line and headers, and the idle wait of a
//!   keep-alive connection before it) must arrive within
//!   [`Limits::head_timeout`] and fit [`Limits::max_head_bytes`]; past the
//!   size the peer gets 431 and the connection closes;
//! - at most [`Limits::max_bodies_in_flight`] requests with a body are
//!   handled at once (each body at most axum's 2 MiB default);
//! - a request, its body included, must be handled within
//!   [`Limits::request_timeout`], else 408;
//! - a peer that stops reading its response for
//!   [`Limits::write_stall_timeout`] is disconnected, so its slot and the
//!   response it holds come back.
//!
//! So the memory is bounded by connections × head buffer, plus bodies in
//! flight × 2 MiB, plus one response per connection, whatever the peers
//! do. Availability is not guaranteed against a hostile peer: one that
//! keeps all slots busy with live requests keeps others waiting.

#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

mod write_deadline;

use write_deadline::WriteDeadline;

/// What one server lets its peers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; further ones wait in the listen backlog
    /// until one closes. Dashboards and test suites need a handful.
    pub max_connections: usize,
    /// Longest wait for a whole request head, counted from when the
    /// connection starts waiting for it (so an idle keep-alive connection
    /// is closed after this long too).
    pub head_timeout: Duration,
    /// Largest read buffer per connection, which bounds a request head.
    /// Raised to 8 KiB if lower (hyper's floor).
    pub max_head_bytes: usize,
    /// Longest time from a request's head to its response, reading the
    /// body included: a trickled body is answered 408.
    pub request_timeout: Duration,
    /// Longest a response write may make no progress (the peer stopped
    /// reading) before the connection is dropped.
    pub write_stall_timeout: Duration,
    /// Requests with a body (a non-zero `Content-Length`, or a
    /// `Transfer-Encoding`) handled at once; others wait for a turn within
    /// their [`Limits::request_timeout`]. Bodies are buffered whole, so
    /// this bounds their memory.
    pub max_bodies_in_flight: usize,
}

impl Default for Limits {
    /// 256 connections, 10 s for a head of at most 16 KiB (twice what
    /// nginx and Apache allow a header line; Apache closes idle keep-alive
    /// connections after 5 s), 8 bodies at once, 30 s per request and per
    /// stalled write: far above what a browser or a test suite needs, and
    /// at worst 256 × 16 KiB = 4 MiB of head buffers and 8 × 2 MiB of
    /// bodies.
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            head_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            max_bodies_in_flight: 8,
        }
    }
}

/// hyper refuses a smaller read buffer.
const MIN_HEAD_BYTES: usize = 8 * 1024;

/// Durations are kept within this range: hyper panics on a deadline past
/// what `Instant` holds, and a zero write deadline would drop any peer
/// that sees back-pressure.
const SHORTEST: Duration = Duration::from_millis(1);
const LONGEST: Duration = Duration::from_secs(86_400);

/// Pause after an accept error that is not about one connection (out of
/// descriptors, say), so the loop does not spin while it lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` within `limits` until `stop` completes, then
/// stops accepting, lets open requests finish for at most `grace` and
/// returns. Durations in `limits` are clamped to 1 ms ..= 1 day, counts
/// raised to at least 1.
pub async fn serve<F>(listener: TcpListener, app: Router, limits: Limits, stop: F, grace: Duration)
where
    F: Future<Output = ()> + Send,
{
    let turns = Arc::new(Turns {
        request_timeout: limits.request_timeout.clamp(SHORTEST, LONGEST),
        bodies: Semaphore::new(limits.max_bodies_in_flight.max(1)),
    });
    let app = app.layer(middleware::from_fn_with_state(turns, request_deadline));
    let write_stall_timeout = limits.write_stall_timeout.clamp(SHORTEST, LONGEST);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout.clamp(SHORTEST, LONGEST))
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        // A slot first: over the cap, connections stay in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // Never closed; nothing left to serve if it were.
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(WriteDeadline::new(stream, write_stall_timeout));
        let conn = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            // Errors are the peer's (reset, head too large or too slow):
            // hyper has answered what could be answered.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

/// Errors that end one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What every request's middleware shares.
struct Turns {
    request_timeout: Duration,
    /// One permit per request with a body being handled.
    bodies: Semaphore,
}

fn has_body(req: &Request) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

async fn request_deadline(State(turns): State<Arc<Turns>>, req: Request, next: Next) -> Response {
    let limit = turns.request_timeout;
    let handled = async {
        // Held until the handler returns, by when it has read the body.
        let _turn = if has_body(&req) {
            // Never closed, so never `None`.
            turns.bodies.acquire().await.ok()
        } else {
            None
        };
        next.run(req).await
    };
    match tokio::time::timeout(limit, handled).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            format!(
                "request not handled within {} s (a body sent too slowly?)\n",
                limit.as_secs_f64()
            ),
        )
            .into_response(),
    }
}
