//! Writing replies under the connection's deadlines.

use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::deadlines::Deadlines;
use super::transport::Transport;
use crate::stats::CloseReason;

/// Writes `buf` fully within `limit` (replies sent on the way out).
pub(super) async fn write_with_timeout<S: AsyncWrite + Unpin>(
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
pub(super) async fn write_reply_batch<S: Transport>(
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
