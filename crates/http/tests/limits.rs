//! Each limit of `mailstorm_http::serve` against a peer that breaks it,
//! over real loopback sockets. Waits are bounded reads, never sleeps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::routing::{get, put};
use axum::Router;
use mailstorm_http::{serve, Limits};
use tokio::sync::oneshot;

/// Upper bound on any wait for something that should happen.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Short limits so each test sees them expire.
const SHORT: Duration = Duration::from_millis(300);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(limits: Limits) -> Server {
        let app = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/body",
                put(|body: String| async move { body.len().to_string() }),
            )
            .route("/big", get(|| async { vec![b'x'; 64 << 20] }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let stop = async move {
                    let _ = rx.await;
                };
                serve(listener, app, limits, stop, SHORT).await;
            });
        });
        Server {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the server; returns how long `serve` took to return.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
        t.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.stop();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Everything the server sends until it closes (bounded by TIMEOUT per read).
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get_ok(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(&mut s)
}

#[test]
fn connections_over_the_cap_wait_until_one_closes() {
    let server = Server::start(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    // Two served connections: each answers once, so the server holds both.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(server.addr);
            s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
            s
        })
        .collect();
    // A third is not served while they stay open.
    let mut third = connect(server.addr);
    third
        .write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    third.set_read_timeout(Some(SHORT)).unwrap();
    let mut buf = [0u8; 512];
    let early = third.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "served over the cap: {early:?}"
    );
    // One closes: the third is served.
    drop(held.pop());
    third.set_read_timeout(Some(TIMEOUT)).unwrap();
    let reply = read_to_close(&mut third);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok"), "{reply}");
}

#[test]
fn a_head_over_the_limit_is_refused_with_431() {
    let server = Server::start(Limits {
        max_head_bytes: 16 * 1024,
        ..Limits::default()
    });
    let mut s = connect(server.addr);
    let pad = "a".repeat(40 * 1024);
    // The server may close before all of it is written.
    let _ = s.write_all(format!("GET /ok HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n").as_bytes());
    let reply = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
    // A head inside the limit is still served.
    let reply = get_ok(server.addr);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[test]
fn a_trickled_head_is_closed_at_the_deadline() {
    let server = Server::start(Limits {
        head_timeout: SHORT,
        ..Limits::default()
    });
    let started = Instant::now();
    let mut s = connect(server.addr);
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: a")
        .unwrap();
    let reply = read_to_close(&mut s);
    let took = started.elapsed();
    assert!(!reply.contains("200 OK"), "{reply}");
    assert!(took >= SHORT, "closed after {took:?}");
    assert!(took < TIMEOUT, "closed after {took:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_head_deadline() {
    let server = Server::start(Limits {
        head_timeout: SHORT,
        ..Limits::default()
    });
    let mut s = connect(server.addr);
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let reply = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[test]
fn a_trickled_body_is_answered_408() {
    let server = Server::start(Limits {
        request_timeout: SHORT,
        ..Limits::default()
    });
    let mut s = connect(server.addr);
    s.write_all(b"PUT /body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten..")
        .unwrap();
    let reply = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // A whole body is handled.
    let mut s = connect(server.addr);
    s.write_all(
        b"PUT /body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfour",
    )
    .unwrap();
    let reply = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("\r\n4"), "{reply}");
}

#[test]
fn bodies_in_flight_are_capped() {
    let server = Server::start(Limits {
        max_bodies_in_flight: 1,
        ..Limits::default()
    });
    // The one turn for a body: taken by a body that stalls.
    let mut stalled = connect(server.addr);
    stalled
        .write_all(b"PUT /body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten..")
        .unwrap();
    // A request without a body is served meanwhile.
    let reply = get_ok(server.addr);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // A whole body waits for the turn.
    let mut waiting = connect(server.addr);
    waiting
        .write_all(
            b"PUT /body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfour",
        )
        .unwrap();
    waiting.set_read_timeout(Some(SHORT)).unwrap();
    let mut buf = [0u8; 512];
    let early = waiting.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "two bodies at once: {early:?}"
    );
    // The stalled peer leaves: its handler fails, the turn passes on.
    drop(stalled);
    waiting.set_read_timeout(Some(TIMEOUT)).unwrap();
    let reply = read_to_close(&mut waiting);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("\r\n4"), "{reply}");
}

#[test]
fn a_peer_that_stops_reading_loses_its_slot() {
    let server = Server::start(Limits {
        max_connections: 1,
        write_stall_timeout: SHORT,
        ..Limits::default()
    });
    // Asks for 64 MiB, far past what the socket buffers hold, and never reads.
    let mut stalled = connect(server.addr);
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The only slot comes back once the write has stalled for SHORT.
    let started = Instant::now();
    let reply = get_ok(server.addr);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(started.elapsed() < TIMEOUT);
    drop(stalled);
}

#[test]
fn stop_returns_within_the_grace_with_connections_open() {
    let mut server = Server::start(Limits::default());
    let mut idle = connect(server.addr);
    idle.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(idle.read(&mut buf).unwrap() > 0);
    let _trickling = {
        let mut s = connect(server.addr);
        s.write_all(b"GET /ok HTTP/1.1\r\nHo").unwrap();
        s
    };
    let took = server.stop();
    assert!(took < SHORT + Duration::from_secs(2), "stop took {took:?}");
    // The open connections were closed, not left to linger.
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "idle connection still open"
    );
}
