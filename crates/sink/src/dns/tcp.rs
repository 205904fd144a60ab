//! DNS over TCP with a cap on open connections. hickory-server's own TCP
//! listener accepts every connection, and each one stalled mid-query holds
//! ~30 KiB (4,000 clients: 104 MB), so the accept loop is ours; framing,
//! decoding and encoding stay hickory's.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use hickory_proto::op::{Header, Message, MessageType, ResponseCode};
use hickory_proto::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_proto::xfer::{DnsStreamHandle, Protocol, SerialMessage};
use hickory_server::authority::MessageRequest;
use hickory_server::server::{Request, RequestHandler, ResponseHandle, TimeoutStream};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::handler::Handler;

/// Open TCP connections at most; further clients wait in the listen
/// backlog until one closes (as the control API's do).
pub const MAX_DNS_TCP_CONNECTIONS: usize = 256;

/// Accepts until `shutdown` turns true, then drops the open connections
/// at once (as hickory's listener does): an idle client would otherwise
/// hold the sink's exit for up to `idle`.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_DNS_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    // Completes once, on shutdown (or when the sink is gone); the loop
    // breaks as soon as it does, so it is never polled again.
    let stopped = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        // The slot is taken before accepting, so a full responder leaves
        // new clients in the kernel's backlog instead of in memory.
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            r = listener.accept() => r,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                connections.spawn(async move {
                    serve_connection(stream, peer, &handler, idle).await;
                    drop(slot);
                });
            }
            // EMFILE and the like: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Answers the connection's queries one at a time until it closes, errs
/// or completes no query for `idle`. One at a time is hickory's own rule: a
/// connection never holds more than one query in the handler.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    idle: Duration,
) {
    let (framed, mut responses) =
        hickory_proto::tcp::TcpStream::from_stream(AsyncIoTokioAsStd(stream), peer);
    let mut framed = TimeoutStream::new(framed, idle);
    // Polling the stream also writes the answers queued on `responses`.
    while let Some(Ok(message)) = poll_fn(|cx| Pin::new(&mut framed).poll_next(cx)).await {
        match MessageRequest::from_bytes(message.bytes()) {
            Ok(query) if query.message_type() == MessageType::Query => {
                let request = Request::new(query, peer, Protocol::Tcp);
                let reply = ResponseHandle::new(peer, responses.clone(), Protocol::Tcp);
                handler.handle_request(&request, reply).await;
            }
            // A response sent to us is never answered (reflection).
            Ok(_) => {}
            Err(_) => {
                // As hickory's UDP path does: FORMERR when the header can
                // be read, nothing when not even that.
                let Ok(header) = Header::read(&mut BinDecoder::new(message.bytes())) else {
                    continue;
                };
                let reply =
                    Message::error_msg(header.id(), header.op_code(), ResponseCode::FormErr);
                if let Ok(bytes) = reply.to_vec() {
                    let _ = responses.send(SerialMessage::new(bytes, peer));
                }
            }
        }
    }
}
