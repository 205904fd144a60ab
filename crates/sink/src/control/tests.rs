//! Unit tests of the control API's HTTP layer against fake backends.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;

#[derive(Default)]
struct Fake {
    resets: Mutex<u32>,
    /// The filter and scope of the last filtered call.
    last_filter: Mutex<Option<ClientFilter>>,
    last_helo: Mutex<Option<String>>,
    clears: Mutex<u32>,
    plan: Mutex<String>,
    last_content_type: Mutex<Option<String>>,
}

impl ControlBackend for Fake {
    fn stats_json(&self) -> serde_json::Value {
        serde_json::json!({ "messages_accepted": 3, "resets": *self.resets.lock().unwrap() })
    }
    fn metrics_text(&self) -> String {
        "# TYPE mailstorm_messages_total counter\nmailstorm_messages_total 3\n".into()
    }
    fn reset(&self, f: &ClientFilter) {
        *self.last_filter.lock().unwrap() = Some(f.clone());
        *self.resets.lock().unwrap() += 1;
    }
    fn messages(&self, _f: &ClientFilter) -> serde_json::Value {
        serde_json::json!([{ "id": 1, "size": 12 }])
    }
    fn message_raw(&self, id: u64) -> Option<Vec<u8>> {
        (id == 1).then(|| b"Subject: hi\r\n\r\nbody\r\n".to_vec())
    }
    fn clear_messages(&self, _f: &ClientFilter) {
        *self.clears.lock().unwrap() += 1;
    }
    fn plan_yaml(&self, _helo: Option<&str>) -> Option<String> {
        Some(self.plan.lock().unwrap().clone())
    }
    fn put_plan(
        &self,
        _helo: Option<&str>,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Option<Result<(), String>> {
        *self.last_content_type.lock().unwrap() = content_type.map(str::to_owned);
        Some(match std::str::from_utf8(body) {
            Ok(text) if text.starts_with("rules:") => {
                *self.plan.lock().unwrap() = text.to_owned();
                Ok(())
            }
            _ => Err("line 1: expected `rules:`".to_owned()),
        })
    }
    fn verdict_json(&self, id: &str) -> Option<serde_json::Value> {
        (id == "test 42").then(|| serde_json::json!({ "client": id }))
    }
    fn delete_plan(&self, helo: Option<&str>) -> Option<()> {
        // Only scoped plans: a global DELETE /plan answers 404.
        *self.last_helo.lock().unwrap() = helo.map(str::to_owned);
        helo.map(|_| ())
    }
    fn clients_json(&self, _f: &ClientFilter) -> Option<serde_json::Value> {
        Some(serde_json::json!([]))
    }
}

/// Only the required methods: the extension routes must answer 404.
struct Minimal;

impl ControlBackend for Minimal {
    fn stats_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn metrics_text(&self) -> String {
        String::new()
    }
    fn reset(&self, _f: &ClientFilter) {}
    fn messages(&self, _f: &ClientFilter) -> serde_json::Value {
        serde_json::json!([])
    }
    fn message_raw(&self, _id: u64) -> Option<Vec<u8>> {
        None
    }
    fn clear_messages(&self, _f: &ClientFilter) {}
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn every_route_without_token() {
    let fake = Arc::new(Fake {
        plan: Mutex::new("rules: []\n".into()),
        ..Fake::default()
    });
    let handle = spawn(localhost(), None, fake.clone()).unwrap();
    let addr = handle.local_addr;
    assert_ne!(addr.port(), 0);

    let r = http(addr, "GET", "/healthz", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    let r = http(addr, "GET", "/stats", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["messages_accepted"], 3);

    let r = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some(METRICS_CONTENT_TYPE)
    );
    assert!(r.text().contains("mailstorm_messages_total 3"));

    let r = http(addr, "POST", "/reset", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(*fake.resets.lock().unwrap(), 1);
    assert_eq!(http(addr, "GET", "/reset", &[], b"").status, 405);

    let r = http(addr, "GET", "/messages", &[], b"");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v[0]["id"], 1);

    let r = http(addr, "GET", "/messages/1", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("message/rfc822"));
    assert_eq!(r.body, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(http(addr, "GET", "/messages/2", &[], b"").status, 404);
    assert_eq!(http(addr, "GET", "/messages/abc", &[], b"").status, 400);

    let r = http(addr, "DELETE", "/messages", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(*fake.clears.lock().unwrap(), 1);

    let r = http(addr, "GET", "/plan", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "rules: []\n"));
    let r = http(
        addr,
        "PUT",
        "/plan",
        &["Content-Type: application/yaml"],
        b"rules: [x]\n",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        fake.last_content_type.lock().unwrap().as_deref(),
        Some("application/yaml")
    );
    assert_eq!(http(addr, "GET", "/plan", &[], b"").text(), "rules: [x]\n");
    let r = http(addr, "PUT", "/plan", &[], b"nonsense");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("expected `rules:`"));

    let r = http(addr, "GET", "/clients", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));

    assert_eq!(http(addr, "GET", "/nope", &[], b"").status, 404);

    handle.shutdown();
    // The port is closed after shutdown.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn filters_scopes_and_verdict_ids_reach_the_backend() {
    let fake = Arc::new(Fake::default());
    let handle = spawn(localhost(), None, fake.clone()).unwrap();
    let addr = handle.local_addr;
    let r = http(
        addr,
        "POST",
        "/reset?helo=Test-42&domain=t42.test",
        &[],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        fake.last_filter.lock().unwrap().clone(),
        Some(ClientFilter {
            helo: Some("Test-42".into()),
            domain: Some("t42.test".into())
        })
    );
    assert_eq!(http(addr, "POST", "/reset", &[], b"").status, 204);
    assert!(fake.last_filter.lock().unwrap().as_ref().unwrap().is_all());
    assert_eq!(
        http(addr, "POST", "/reset?helo=a&bogus=1", &[], b"").status,
        400
    );
    assert_eq!(
        http(addr, "DELETE", "/plan?helo=x.test", &[], b"").status,
        204
    );
    assert_eq!(fake.last_helo.lock().unwrap().as_deref(), Some("x.test"));
    // Percent-encoded ids are decoded; unknown ones are 404.
    let r = http(addr, "GET", "/clients/test%2042/verdict", &[], b"");
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"client":"test 42"}"#.into())
    );
    assert_eq!(
        http(addr, "GET", "/clients/nobody/verdict", &[], b"").status,
        404
    );
    // Not implemented by this backend: 404.
    assert_eq!(http(addr, "GET", "/verdicts", &[], b"").status, 404);
    assert_eq!(http(addr, "GET", "/info", &[], b"").status, 404);
}

#[test]
fn extension_routes_default_to_404() {
    let handle = spawn(localhost(), None, Arc::new(Minimal)).unwrap();
    let addr = handle.local_addr;
    assert_eq!(http(addr, "GET", "/plan", &[], b"").status, 404);
    assert_eq!(http(addr, "PUT", "/plan", &[], b"rules: []").status, 404);
    assert_eq!(http(addr, "GET", "/clients", &[], b"").status, 404);
    assert_eq!(http(addr, "GET", "/messages/1", &[], b"").status, 404);
    // Dropping the handle stops the server too.
    drop(handle);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn bearer_token() {
    let handle = spawn(
        localhost(),
        Some("s3cret-token".into()),
        Arc::new(Fake::default()),
    )
    .unwrap();
    let addr = handle.local_addr;
    // Health checks stay open.
    assert_eq!(http(addr, "GET", "/healthz", &[], b"").status, 200);
    for (method, path) in [
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("POST", "/reset"),
        ("GET", "/messages"),
        ("GET", "/messages/1"),
        ("DELETE", "/messages"),
        ("GET", "/plan"),
        ("GET", "/clients"),
        ("GET", "/nope"),
    ] {
        let r = http(addr, method, path, &[], b"");
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        for wrong in [
            "Authorization: Bearer wrong",
            "Authorization: Bearer s3cret-toke",
            "Authorization: Basic s3cret-token",
            "Authorization: s3cret-token",
        ] {
            assert_eq!(
                http(addr, method, path, &[wrong], b"").status,
                401,
                "{method} {path} {wrong}"
            );
        }
    }
    let ok = "Authorization: Bearer s3cret-token";
    assert_eq!(http(addr, "GET", "/stats", &[ok], b"").status, 200);
    assert_eq!(
        http(
            addr,
            "GET",
            "/stats",
            &["authorization: bearer s3cret-token"],
            b""
        )
        .status,
        200
    );
    assert_eq!(http(addr, "POST", "/reset", &[ok], b"").status, 204);
    assert_eq!(http(addr, "GET", "/messages/1", &[ok], b"").status, 200);
    assert_eq!(http(addr, "GET", "/nope", &[ok], b"").status, 404);
    handle.shutdown();
}

#[test]
fn loopback_rule_and_bind_errors() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    for a in [
        "127.0.0.1:8025",
        "127.1.2.3:1",
        "[::1]:8025",
        "[::ffff:127.0.0.1]:8025",
    ] {
        assert!(require_token_for(&addr(a), None).is_ok(), "{a}");
    }
    for a in [
        "0.0.0.0:8025",
        "192.0.2.1:8025",
        "[::]:8025",
        "[2001:db8::1]:8025",
    ] {
        let err = require_token_for(&addr(a), None).unwrap_err();
        assert!(matches!(err, ControlError::TokenRequired { .. }));
        assert!(err.to_string().contains(a), "{err}");
        assert!(require_token_for(&addr(a), Some("t")).is_ok());
        assert!(matches!(
            require_token_for(&addr(a), Some("")),
            Err(ControlError::EmptyToken { .. })
        ));
    }
    // spawn enforces the rule before binding.
    let err = spawn(addr("0.0.0.0:0"), None, Arc::new(Minimal)).unwrap_err();
    assert!(matches!(err, ControlError::TokenRequired { .. }), "{err}");

    // A port in use is reported synchronously, naming the address.
    let taken = std::net::TcpListener::bind(localhost()).unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let err = spawn(taken_addr, None, Arc::new(Minimal)).unwrap_err();
    assert!(matches!(err, ControlError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&taken_addr.to_string()), "{err}");
}

#[test]
fn shutdown_is_bounded_with_a_stuck_client() {
    let handle = spawn(localhost(), None, Arc::new(Minimal)).unwrap();
    // A client that sends half a request and then stalls.
    let mut stuck = TcpStream::connect(handle.local_addr).unwrap();
    stuck
        .write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    handle.shutdown();
    assert!(started.elapsed() < SHUTDOWN_GRACE + Duration::from_secs(2));
}

#[test]
fn empty_plan_bodies() {
    for body in [
        &b""[..],
        b" \n\t\n",
        b"# nothing\n",
        b"{}",
        b"--- {}\n",
        b"---\n# c\n",
    ] {
        assert!(is_empty_plan(body), "{:?}", String::from_utf8_lossy(body));
    }
    for body in [
        &b"rules: []"[..],
        b"seed: 1",
        b"{\"rules\": []}",
        b"nonsense",
        b"[[",
    ] {
        assert!(!is_empty_plan(body), "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn put_empty_plan_is_400_and_delete_plan_routes() {
    let fake = Arc::new(Fake {
        plan: Mutex::new("rules: [x]\n".into()),
        ..Fake::default()
    });
    let handle = spawn(localhost(), None, fake.clone()).unwrap();
    let addr = handle.local_addr;
    let r = http(addr, "PUT", "/plan", &[], b"# just a comment\n");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("DELETE /plan"), "{}", r.text());
    assert_eq!(http(addr, "GET", "/plan", &[], b"").text(), "rules: [x]\n");
    // Fake deletes scoped plans only: a global DELETE answers 404.
    assert_eq!(http(addr, "DELETE", "/plan", &[], b"").status, 404);
    handle.shutdown();
    let handle = spawn(localhost(), None, Arc::new(Minimal)).unwrap();
    assert_eq!(
        http(handle.local_addr, "PUT", "/plan", &[], b"{}").status,
        404
    );
    handle.shutdown();
}
