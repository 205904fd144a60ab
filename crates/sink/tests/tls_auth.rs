//! STARTTLS, implicit TLS (with a rustls client) and AUTH.

mod common;

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use mailstorm_sink::{Sink, SinkHandle};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A minimal async SMTP client over any stream.
struct AClient<S> {
    s: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AClient<S> {
    fn new(s: S) -> Self {
        AClient { s, buf: Vec::new() }
    }

    async fn reply(&mut self) -> Reply {
        let fut = async {
            loop {
                if let Some(end) = reply_end(&self.buf) {
                    let text = String::from_utf8(self.buf.drain(..end).collect()).unwrap();
                    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
                    return Reply {
                        code: lines[0][..3].parse().unwrap(),
                        lines: lines
                            .iter()
                            .map(|l| l.get(4..).unwrap_or("").to_owned())
                            .collect(),
                    };
                }
                let mut chunk = [0u8; 4096];
                let n = self.s.read(&mut chunk).await.expect("read");
                assert!(
                    n > 0,
                    "closed; buffered {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .expect("reply in time")
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
        self.s.flush().await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

/// End of the first complete reply in `buf`.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let lf = buf[pos..].iter().position(|&b| b == b'\n')?;
        let line = &buf[pos..pos + lf];
        pos += lf + 1;
        if line.get(3) != Some(&b'-') {
            return Some(pos);
        }
    }
}

fn connector() -> TlsConnector {
    TlsConnector::from(mailstorm_sink::tls::insecure_client_config())
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

#[tokio::test]
async fn starttls_resets_state_and_discards_pipelined_input() {
    let sink = start(Sink::builder().keep(5));
    let tcp = TcpStream::connect(sink.local_addr()).await.unwrap();
    let mut c = AClient::new(tcp);
    assert_eq!(c.reply().await.code, 220);
    let e = c.cmd("EHLO client.test").await;
    assert!(e.lines.iter().any(|l| l == "STARTTLS"));
    // A command injected after STARTTLS in the same packet must be dropped.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n").await;
    c.reply().await.expect(220, "2.0.0");
    assert!(c.buf.is_empty());
    let tls = connector()
        .connect(localhost(), c.s)
        .await
        .expect("handshake");
    let mut c = AClient::new(tls);
    // RFC 3207: the EHLO before TLS is forgotten.
    c.cmd("MAIL FROM:<a@b.test>").await.expect(503, "5.5.1");
    let e = c.cmd("EHLO client.test").await;
    assert!(!e.lines.iter().any(|l| l == "STARTTLS"), "{e:?}");
    // The injected MAIL was not executed.
    c.cmd("RCPT TO:<x@y.test>").await.expect(503, "5.5.1");
    c.cmd("STARTTLS").await.expect(503, "5.5.1");
    c.cmd("MAIL FROM:<a@b.test>").await.expect(250, "2.1.0");
    c.cmd("RCPT TO:<x@y.test>").await.expect(250, "2.1.5");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(b"Subject: tls\r\n\r\nsecret\r\n.\r\n").await;
    c.reply().await.expect(250, "2.0.0");
    c.cmd("QUIT").await.expect(221, "2.0.0");
    let s = sink.stats();
    assert_eq!(s.tls_handshakes, 1);
    let m = &sink.messages()[0];
    assert_eq!(m.tls.as_deref(), Some("TLSv1.3"));
    assert!(String::from_utf8_lossy(&m.raw).contains("X-Mailstorm-TLS: TLSv1.3\r\n"));
}

#[tokio::test]
async fn starttls_with_trusted_self_signed_certificate() {
    let sink = start(Sink::builder().hostname("localhost"));
    let pem = sink.self_signed_cert_pem().expect("generated certificate");
    let cfg = mailstorm_sink::tls::client_config_trusting(pem.as_bytes()).unwrap();
    let mut c = AClient::new(TcpStream::connect(sink.local_addr()).await.unwrap());
    c.reply().await;
    c.cmd("EHLO c.test").await;
    c.cmd("STARTTLS").await.expect(220, "2.0.0");
    let tls = TlsConnector::from(cfg)
        .connect(localhost(), c.s)
        .await
        .expect("verified handshake");
    let mut c = AClient::new(tls);
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
}

#[tokio::test]
async fn implicit_tls_listener() {
    let sink = start(Sink::builder().tls_listen("127.0.0.1:0".parse().unwrap()));
    let addr = sink.tls_addrs()[0];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector()
        .connect(localhost(), tcp)
        .await
        .expect("handshake");
    let mut c = AClient::new(tls);
    assert_eq!(c.reply().await.code, 220);
    let e = c.cmd("EHLO c.test").await;
    assert!(!e.lines.iter().any(|l| l == "STARTTLS"));
    c.cmd("MAIL FROM:<a@b.test>").await.expect(250, "2.1.0");
    c.cmd("QUIT").await.expect(221, "2.0.0");
    assert_eq!(sink.stats().tls_handshakes, 1);
}

#[test]
fn failed_handshake_is_counted() {
    let sink = start(Sink::builder().tls_listen("127.0.0.1:0".parse().unwrap()));
    let mut c = Client::connect_raw(sink.tls_addrs()[0]);
    c.send(b"EHLO plain.test\r\n");
    assert!(c.drain_to_eof().is_empty(), "no SMTP on the TLS port");
    wait_for("failure counted", || sink.stats().tls_failures == 1);
}

fn users_file(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mailstorm-sink-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users");
    std::fs::write(&path, "alice:secret\nbob:hunter2\n").unwrap();
    path
}

fn auth_sink(name: &str, required: bool) -> SinkHandle {
    start(
        Sink::builder()
            .auth_users(users_file(name))
            .auth_required(required)
            .keep(5),
    )
}

#[test]
fn auth_plain_login_and_cram_md5() {
    let sink = auth_sink("mechs", false);
    // PLAIN with an initial response.
    let mut c = Client::ehlo(sink.local_addr());
    let good = B64.encode(b"\0alice\0secret");
    c.cmd(&format!("AUTH PLAIN {good}")).expect(235, "2.7.0");
    c.cmd(&format!("AUTH PLAIN {good}")).expect(503, "5.5.1");
    // PLAIN without, wrong password.
    let mut c = Client::ehlo(sink.local_addr());
    assert_eq!(c.cmd("AUTH PLAIN").code, 334);
    c.cmd(&B64.encode(b"\0alice\0wrong")).expect(535, "5.7.8");
    // LOGIN.
    let mut c = Client::ehlo(sink.local_addr());
    let r = c.cmd("AUTH LOGIN");
    assert_eq!((r.code, r.text().as_str()), (334, "VXNlcm5hbWU6"));
    assert_eq!(c.cmd(&B64.encode("bob")).code, 334);
    c.cmd(&B64.encode("hunter2")).expect(235, "2.7.0");
    // CRAM-MD5.
    let mut c = Client::ehlo(sink.local_addr());
    let r = c.cmd("AUTH CRAM-MD5");
    assert_eq!(r.code, 334);
    let challenge = String::from_utf8(B64.decode(r.text()).unwrap()).unwrap();
    let mut response = Vec::new();
    mailstorm_proto::sasl::write_cram_md5(&mut response, "alice", b"secret", challenge.as_bytes());
    c.cmd(std::str::from_utf8(&response).unwrap())
        .expect(235, "2.7.0");
    c.send_message("a@b.test", &["x@y.test"], "hi")
        .expect(250, "2.0.0");
    let m = sink.messages();
    assert!(String::from_utf8_lossy(&m[0].raw).contains("X-Mailstorm-Auth: alice\r\n"));
    let s = sink.stats();
    assert_eq!((s.auth_successes, s.auth_failures), (3, 1));
}

#[test]
fn auth_order_cancel_and_unknown_mechanism() {
    let sink = auth_sink("order", false);
    let mut c = Client::connect(sink.local_addr());
    c.cmd("AUTH PLAIN").expect(503, "5.5.1");
    c.cmd("HELO c.test");
    c.cmd("AUTH PLAIN").expect(503, "5.5.1");
    c.cmd("EHLO c.test");
    c.cmd("AUTH GSSAPI").expect(504, "5.5.4");
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    c.cmd("*").expect(501, "5.0.0");
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    c.cmd("!!notbase64!!").expect(501, "5.5.2");
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
    c.cmd("AUTH PLAIN").expect(503, "5.5.1");
}

#[test]
fn auth_required_refuses_mail_before_auth() {
    let sink = auth_sink("required", true);
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test>").expect(530, "5.7.0");
    c.cmd(&format!("AUTH PLAIN {}", B64.encode(b"\0alice\0secret")))
        .expect(235, "2.7.0");
    c.cmd("MAIL FROM:<a@b.test>").expect(250, "2.1.0");
}

#[test]
fn auth_accepts_anything_without_users_file() {
    let sink = sink();
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd(&format!("AUTH PLAIN {}", B64.encode(b"\0who\0ever")))
        .expect(235, "2.7.0");
}

#[tokio::test]
async fn auth_after_starttls_is_forgotten_by_new_tls_session() {
    // AUTH before STARTTLS is forgotten after it (RFC 3207 §4.2).
    let sink = start(Sink::builder().auth_required(true));
    let mut c = AClient::new(TcpStream::connect(sink.local_addr()).await.unwrap());
    c.reply().await;
    c.cmd("EHLO c.test").await;
    c.cmd(&format!("AUTH PLAIN {}", B64.encode(b"\0u\0p")))
        .await
        .expect(235, "2.7.0");
    c.cmd("STARTTLS").await.expect(220, "2.0.0");
    let tls = connector().connect(localhost(), c.s).await.unwrap();
    let mut c = AClient::new(tls);
    c.cmd("EHLO c.test").await;
    c.cmd("MAIL FROM:<a@b.test>").await.expect(530, "5.7.0");
}
