//! Sockets (socket2 tuning, source address pool), file descriptor limits,
//! CPU pinning and target resolution.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::Config;
use crate::BlastError;

/// Socket options applied to every connection.
#[derive(Debug, Clone)]
pub struct SockOpts {
    nodelay: bool,
    sndbuf: Option<u32>,
    rcvbuf: Option<u32>,
    linger0: bool,
    keepalive: Option<Duration>,
}

impl SockOpts {
    /// The options from the config.
    pub fn from_config(cfg: &Config) -> SockOpts {
        SockOpts {
            nodelay: cfg.nodelay,
            sndbuf: cfg.sndbuf,
            rcvbuf: cfg.rcvbuf,
            linger0: cfg.linger0,
            keepalive: cfg.keepalive,
        }
    }
}

/// Opens a TCP connection to `addr`, optionally from `source` (port chosen
/// at connect time, so a source address pool multiplies the usable port
/// space instead of exhausting it at bind).
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    opts: &SockOpts,
) -> io::Result<TcpStream> {
    // Non-blocking from socket(2) on: two fcntl calls fewer per connection.
    #[cfg(target_os = "linux")]
    let ty = Type::STREAM.nonblocking();
    #[cfg(not(target_os = "linux"))]
    let ty = Type::STREAM;
    let sock = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
    #[cfg(not(target_os = "linux"))]
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(opts.nodelay)?;
    if let Some(n) = opts.sndbuf {
        sock.set_send_buffer_size(n as usize)?;
    }
    if let Some(n) = opts.rcvbuf {
        sock.set_recv_buffer_size(n as usize)?;
    }
    if opts.linger0 {
        // Close with RST: no TIME_WAIT on our side.
        sock.set_linger(Some(Duration::ZERO))?;
    }
    if let Some(idle) = opts.keepalive {
        sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if let Some(src) = source {
        #[cfg(target_os = "linux")]
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
            .map_err(io::Error::from)?;
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    let std: std::net::TcpStream = sock.into();
    TcpSocket::from_std_stream(std).connect(addr).await
}

/// Resolves `host:port` (a bare host gets port 25).
pub fn resolve(target: &str) -> Result<(SocketAddr, String), BlastError> {
    let with_port = if target.parse::<SocketAddr>().is_ok() || has_port(target) {
        target.to_string()
    } else {
        format!("{target}:25")
    };
    let host = match with_port.parse::<SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => with_port
            .rsplit_once(':')
            .map_or(with_port.as_str(), |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string(),
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| BlastError::Unreachable(format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| BlastError::Unreachable(format!("{target} resolves to no address")))?;
    Ok((addr, host))
}

fn has_port(t: &str) -> bool {
    match t.rsplit_once(':') {
        Some((h, p)) => !h.is_empty() && !h.ends_with(':') && p.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit and checks that
/// `needed` descriptors fit. Returns the new soft limit.
pub fn raise_nofile(needed: u64) -> Result<u64, BlastError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| BlastError::Config(format!("getrlimit(RLIMIT_NOFILE): {e}")))?;
    let mut limit = soft;
    if soft < hard && soft < needed && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        limit = hard;
    }
    if limit < needed {
        return Err(BlastError::Config(format!(
            "this run needs about {needed} file descriptors but RLIMIT_NOFILE allows {limit} \
             (hard limit {hard}): lower --concurrency, or raise the limit (`ulimit -n {needed}` \
             as root or via /etc/security/limits.conf, LimitNOFILE= for systemd units)"
        )));
    }
    Ok(limit)
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), BlastError> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| BlastError::Config(format!("CPU {cpu}: {e}")))?;
    // Pid 0 is the calling thread for sched_setaffinity.
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| BlastError::Config(format!("cannot pin to CPU {cpu}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_forms() {
        let (a, h) = resolve("127.0.0.1:2525").unwrap();
        assert_eq!((a.port(), h.as_str()), (2525, "127.0.0.1"));
        let (a, h) = resolve("127.0.0.1").unwrap();
        assert_eq!((a.port(), h.as_str()), (25, "127.0.0.1"));
        let (a, h) = resolve("[::1]:26").unwrap();
        assert_eq!((a.port(), h.as_str()), (26, "::1"));
        let (a, h) = resolve("localhost:27").unwrap();
        assert_eq!((a.port(), h.as_str()), (27, "localhost"));
        assert!(a.ip().is_loopback());
    }

    #[test]
    fn nofile() {
        assert!(raise_nofile(16).is_ok());
        let e = raise_nofile(u64::MAX / 2).unwrap_err().to_string();
        assert!(e.contains("--concurrency") && e.contains("ulimit"), "{e}");
    }
}
