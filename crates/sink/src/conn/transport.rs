//! The byte stream a session runs on, and the TLS handshake that turns
//! plain TCP into TLS.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::settings::Settings;
use crate::stats::{Counter, ShardStats};

/// A byte stream the session runs on: plain TCP or TLS over TCP.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Plain TCP: closing the socket sends the FIN, no shutdown needed.
    const PLAIN: bool;

    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    const PLAIN: bool = true;

    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    const PLAIN: bool = false;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

pub(super) async fn handshake(
    s: &Settings,
    tcp: TcpStream,
    stats: &ShardStats,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = s.tls.clone()?;
    match tokio::time::timeout(s.config.tls_handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            stats.add(Counter::TlsHandshakes, 1);
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                stats.add(Counter::TlsResumed, 1);
            }
            Some(tls)
        }
        _ => {
            stats.add(Counter::TlsFailures, 1);
            None
        }
    }
}

pub(super) fn tls_version(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> &'static str {
    match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}
