//! A tiny blocking SMTP test client. Every read has a timeout, so a test
//! waits for the reply it needs (never a fixed sleep) and fails instead of
//! hanging.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mailstorm_sink::{Sink, SinkBuilder, SinkHandle};

pub mod child;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One reply: code and the text of each line (after `250-` / `250 `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code at the start of the last line.
    pub fn enhanced(&self) -> &str {
        self.lines
            .last()
            .and_then(|l| l.split(' ').next())
            .unwrap_or("")
    }

    #[track_caller]
    pub fn expect(&self, code: u16, enhanced: &str) -> &Self {
        assert_eq!(
            (self.code, self.enhanced()),
            (code, enhanced),
            "unexpected reply {self:?}"
        );
        self
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects without reading the greeting.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and checks the 220 greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        let g = c.reply();
        assert_eq!(g.code, 220, "greeting {g:?}");
        c
    }

    /// Connects, greets and sends EHLO.
    pub fn ehlo(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr);
        assert_eq!(c.cmd("EHLO client.test").code, 250);
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads more input; `false` on EOF.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        // A signal to this thread (e.g. from a child process the test
        // started) interrupts the read; that is not a timeout: read again.
        let read = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!(
                "read failed (timeout?): {e}; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Parses one complete reply from the buffer, if there is one.
    fn take_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            let lf = rest.iter().position(|&b| b == b'\n')?;
            let line = std::str::from_utf8(&rest[..lf])
                .expect("reply is UTF-8")
                .trim_end_matches('\r');
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let sep = line.as_bytes().get(3).copied().unwrap_or(b' ');
            lines.push((code, line.get(4..).unwrap_or("").to_owned()));
            pos += lf + 1;
            if sep == b' ' {
                self.buf.drain(..pos);
                let code = lines[0].0;
                assert!(lines.iter().all(|l| l.0 == code), "mixed codes {lines:?}");
                return Some(Reply {
                    code,
                    lines: lines.into_iter().map(|l| l.1).collect(),
                });
            }
        }
    }

    /// Reads one reply (panics on EOF or timeout).
    #[track_caller]
    pub fn reply(&mut self) -> Reply {
        loop {
            if let Some(r) = self.take_reply() {
                return r;
            }
            assert!(
                self.fill(),
                "connection closed; buffered {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads one reply, or `None` at EOF.
    pub fn try_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some(r) = self.take_reply() {
                return Some(r);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Sends `line` + CRLF and reads one reply.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// `true` once the server has closed the connection (after any
    /// remaining replies, which are returned).
    pub fn drain_to_eof(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some(r) = self.try_reply() {
            out.push(r);
        }
        out
    }

    /// Sends NOOP until the reply is not 250 (the shard may not have seen a
    /// shutdown yet) and returns that reply.
    #[track_caller]
    pub fn noop_until_refused(&mut self) -> Reply {
        for _ in 0..100_000 {
            let r = self.cmd("NOOP");
            if r.code != 250 {
                return r;
            }
        }
        panic!("NOOP never refused");
    }

    /// A full message with DATA; returns the final reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.cmd(&format!("MAIL FROM:<{from}>"))
            .expect(250, "2.1.0");
        for r in to {
            self.cmd(&format!("RCPT TO:<{r}>")).expect(250, "2.1.5");
        }
        assert_eq!(self.cmd("DATA").code, 354);
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}

/// Starts a sink from a builder (listening on 127.0.0.1:0).
pub fn start(b: SinkBuilder) -> SinkHandle {
    b.start().expect("sink starts")
}

/// A default embedded sink.
pub fn sink() -> SinkHandle {
    start(Sink::builder().hostname("sink.test"))
}

/// Polls `f` until it is true or the timeout passes (for counters updated
/// by the server after it replied).
#[track_caller]
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An HTTP/1.1 reply from the control API: status and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request to the control API on a fresh connection (bounded in time).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpReply {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to control API");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read HTTP reply");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of HTTP headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("HTTP status");
    HttpReply {
        status,
        body: raw[split + 4..].to_vec(),
    }
}

/// `dig` with a bounded wait (one try, `time` seconds); `extra` adds flags.
pub fn dig(server: SocketAddr, qtype: &str, name: &str, extra: &[&str], time: u32) -> String {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args([
            qtype,
            name,
            "+tries=1",
            &format!("+time={time}"),
            "+norecurse",
        ])
        .args(extra)
        .output()
        .expect("dig (Debian bind9-dnsutils) must be installed; scripts/test.sh installs it");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A fresh, empty directory under the system temp dir for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mailstorm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
