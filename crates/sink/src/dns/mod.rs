//! The DNS responder (`--dns ADDR`): a small authoritative zone on UDP and
//! TCP, served by hickory-server (TCP through our own capped accept loop),
//! whose answers the fault plan can delay or replace (stage dns). It runs on
//! a thread of its own beside the SMTP shards and stops with them.

mod counts;
mod handler;
mod tcp;
pub mod zone;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::plan::referee::DnsOutcomes;
pub use counts::{DnsStats, MAX_DNS_CLIENTS};
pub use handler::MAX_HELD_DNS_QUERIES;
pub use tcp::MAX_DNS_TCP_CONNECTIONS;
pub use zone::{MxSpec, NameSpec, Zone, ZoneSpec};

use counts::DnsCounts;

/// A TCP client that completes no query for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Queries held by a delay rule are not waited for long at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The bound sockets of a responder not yet running.
pub(crate) struct Bound {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    pub(crate) addr: SocketAddr,
}

/// Binds UDP and TCP on `addr`. With port 0, UDP picks the port and TCP
/// takes the same one (a few tries if another program holds it on TCP).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<Bound> {
    let err = |e: io::Error| io::Error::new(e.kind(), format!("cannot serve DNS on {addr}: {e}"));
    let tries = if addr.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = std::net::UdpSocket::bind(addr).map_err(err)?;
        let actual = udp.local_addr()?;
        match std::net::TcpListener::bind(actual) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok(Bound {
                    udp,
                    tcp,
                    addr: actual,
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| io::Error::other("no port"))))
}

/// The running responder's shared parts.
pub(crate) struct Dns {
    pub(crate) addr: SocketAddr,
    counts: Arc<DnsCounts>,
}

impl Dns {
    pub(crate) fn stats(&self) -> DnsStats {
        self.counts.snapshot()
    }
}

/// Starts the responder's thread; it serves until `shutdown` turns true.
pub(crate) fn spawn(
    bound: Bound,
    zone: Zone,
    engine: Option<Arc<crate::plan::Engine>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> io::Result<(Arc<Dns>, std::thread::JoinHandle<()>)> {
    let counts = Arc::new(DnsCounts::default());
    let handler = handler::Handler {
        zone: Arc::new(zone),
        engine,
        counts: counts.clone(),
        held: Arc::new(tokio::sync::Semaphore::new(MAX_HELD_DNS_QUERIES)),
    };
    let dns = Arc::new(Dns {
        addr: bound.addr,
        counts,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("sink-dns".into())
        .spawn(move || {
            rt.block_on(async move {
                let (udp, tcp) = match (
                    tokio::net::UdpSocket::from_std(bound.udp),
                    tokio::net::TcpListener::from_std(bound.tcp),
                ) {
                    (Ok(u), Ok(t)) => (u, t),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("mailstorm-sink: DNS responder: {e}");
                        return;
                    }
                };
                let tcp = tokio::spawn(tcp::serve(
                    tcp,
                    Arc::new(handler.clone()),
                    TCP_IDLE,
                    shutdown.clone(),
                ));
                let mut server = hickory_server::ServerFuture::new(handler);
                server.register_socket(udp);
                while !*shutdown.borrow_and_update() {
                    if shutdown.changed().await.is_err() {
                        break;
                    }
                }
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown_gracefully()).await;
                let _ = tcp.await;
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        })?;
    Ok((dns, thread))
}
