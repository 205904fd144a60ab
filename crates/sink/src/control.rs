//! The HTTP control API (`--control ADDR`): health, stats, Prometheus
//! metrics, captured messages, and (later) the fault plan.
//!
//! It runs axum on a current-thread tokio runtime on its own OS thread, so it
//! never competes with a sink shard. The sink plugs in through
//! [`ControlBackend`]; this module only does HTTP.
//!
//! Routes (all but `/healthz` need `Authorization: Bearer <token>` when a
//! token is set):
//!
//! | method & path          | backend call                  | success                   |
//! |------------------------|-------------------------------|---------------------------|
//! | `GET /healthz`         | —                             | 200 `ok`                  |
//! | `GET /stats`           | [`ControlBackend::stats_json`]   | 200 JSON               |
//! | `GET /metrics`         | [`ControlBackend::metrics_text`] | 200 Prometheus text    |
//! | `POST /reset`          | [`ControlBackend::reset`]        | 204                    |
//! | `GET /messages`        | [`ControlBackend::messages`]     | 200 JSON               |
//! | `GET /messages/{id}`   | [`ControlBackend::message_raw`]  | 200 `message/rfc822`, 404 |
//! | `DELETE /messages`     | [`ControlBackend::clear_messages`] | 204                  |
//! | `GET /plan`            | [`ControlBackend::plan_yaml`]    | 200 YAML, 404 when unsupported |
//! | `PUT /plan`            | [`ControlBackend::put_plan`]     | 204, 400 with the error (an empty plan too), 404 |
//! | `DELETE /plan`         | [`ControlBackend::delete_plan`]  | 204, 404 when unsupported |
//! | `GET /clients`         | [`ControlBackend::clients_json`] | 200 JSON, 404 when unsupported |

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

/// Content type of `GET /metrics` (Prometheus text exposition format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long shutdown waits for in-flight requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the control API reads and drives. Implemented by the sink.
///
/// Methods are called on the control thread, never on a shard; they may take
/// locks or sum per-shard counters.
pub trait ControlBackend: Send + Sync + 'static {
    /// `GET /stats`: the stats snapshot as JSON.
    fn stats_json(&self) -> serde_json::Value;
    /// `GET /metrics`: Prometheus text exposition of the same counters.
    fn metrics_text(&self) -> String;
    /// `POST /reset`: zero the counters.
    fn reset(&self);
    /// `GET /messages`: the kept messages' metadata as JSON.
    fn messages(&self) -> serde_json::Value;
    /// `GET /messages/{id}`: one kept message, raw, or `None` (404).
    fn message_raw(&self, id: u64) -> Option<Vec<u8>>;
    /// `DELETE /messages`: forget the kept messages.
    fn clear_messages(&self);

    /// `GET /plan`: the fault plan as YAML; `None` (404) when the backend has
    /// no plan support.
    fn plan_yaml(&self) -> Option<String> {
        None
    }
    /// `PUT /plan`: replace the fault plan with `body` (sent with
    /// `content_type`). `None` → 404 (unsupported), `Some(Err(text))` → 400
    /// with `text`, `Some(Ok(()))` → 204.
    fn put_plan(&self, body: &[u8], content_type: Option<&str>) -> Option<Result<(), String>> {
        let _ = (body, content_type);
        None
    }
    /// `DELETE /plan`: remove the fault plan (normal behaviour from then
    /// on). `None` → 404 (unsupported), `Some(())` → 204.
    fn delete_plan(&self) -> Option<()> {
        None
    }
    /// `GET /clients`: per-client details as JSON; `None` (404) when
    /// unsupported.
    fn clients_json(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Why the control API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A non-loopback address without a token.
    #[error("control API on {addr} is not loopback-only: it requires a token (--control-token)")]
    TokenRequired {
        /// The requested address.
        addr: SocketAddr,
    },
    /// An empty token was given (it would protect nothing).
    #[error("control API on {addr}: the token is empty")]
    EmptyToken {
        /// The requested address.
        addr: SocketAddr,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen for the control API on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or thread could not be created.
    #[error("cannot start the control API thread for {addr}: {source}")]
    Start {
        /// The requested address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Checks the rule "a control API off loopback needs a token": `Ok` for a
/// loopback address (127.0.0.0/8, `::1`, `::ffff:127.x`), or when a non-empty
/// token is given. [`spawn`] enforces this too.
pub fn require_token_for(addr: &SocketAddr, token: Option<&str>) -> Result<(), ControlError> {
    match token {
        Some("") => Err(ControlError::EmptyToken { addr: *addr }),
        Some(_) => Ok(()),
        None if addr.ip().to_canonical().is_loopback() => Ok(()),
        None => Err(ControlError::TokenRequired { addr: *addr }),
    }
}

/// A running control API. Dropping it also stops the server (and waits for
/// its thread).
#[derive(Debug)]
pub struct ControlHandle {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlHandle {
    /// Stops accepting, lets in-flight requests finish (at most ~2 s), and
    /// joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An Err means the server already ended; nothing to stop.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the control thread has already been reported on stderr.
            let _ = thread.join();
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds `addr` (synchronously: errors name the address), then serves the
/// control API on a new thread named `mailstorm-control`.
///
/// With `token`, every route except `/healthz` requires
/// `Authorization: Bearer <token>`. Fails with
/// [`ControlError::TokenRequired`] when `addr` is not loopback and there is
/// no token.
pub fn spawn(
    addr: SocketAddr,
    token: Option<String>,
    backend: Arc<dyn ControlBackend>,
) -> Result<ControlHandle, ControlError> {
    require_token_for(&addr, token.as_deref())?;
    let bind_err = |source| ControlError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let start_err = |source| ControlError::Start { addr, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(start_err)?;
    let app = router(token, backend);
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("mailstorm-control".into())
        .spawn(move || runtime.block_on(serve(listener, app, stop_rx, local_addr)))
        .map_err(start_err)?;
    Ok(ControlHandle {
        local_addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    stop: oneshot::Receiver<()>,
    local_addr: SocketAddr,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mailstorm-sink: control API on {local_addr} failed to start: {e}");
            return;
        }
    };
    // `stopping` fires when shutdown starts, to bound the graceful phase.
    let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
    let signal = async move {
        // A dropped sender (handle dropped) also means "stop".
        let _ = stop.await;
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            // The server ended on its own; let it report.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        res = server => {
            if let Err(e) = res {
                eprintln!("mailstorm-sink: control API on {local_addr} stopped: {e}");
            }
        }
        () = deadline => {}
    }
}

type Backend = Arc<dyn ControlBackend>;

/// The route table. To add a route: a handler below taking
/// `State<Backend>`, a line here, and (if the backend must provide data) a
/// default method on [`ControlBackend`] returning `None` → 404.
fn router(token: Option<String>, backend: Backend) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/reset", post(reset))
        .route("/messages", get(messages).delete(clear_messages))
        .route("/messages/{id}", get(message_raw))
        .route("/plan", get(plan_get).put(plan_put).delete(plan_delete))
        .route("/clients", get(clients))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        // Applied to every route and the fallback; /healthz is exempted inside.
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_bearer,
        ))
        .with_state(backend)
}

async fn require_bearer(
    State(token): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = token.as_deref() {
        if req.uri().path() != "/healthz" && !bearer_matches(req.headers(), token) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                "missing or wrong bearer token\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && ct_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Comparison without an early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn stats(State(b): State<Backend>) -> Json<serde_json::Value> {
    Json(b.stats_json())
}

async fn metrics(State(b): State<Backend>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        b.metrics_text(),
    )
        .into_response()
}

async fn reset(State(b): State<Backend>) -> StatusCode {
    b.reset();
    StatusCode::NO_CONTENT
}

async fn messages(State(b): State<Backend>) -> Json<serde_json::Value> {
    Json(b.messages())
}

async fn message_raw(State(b): State<Backend>, Path(id): Path<u64>) -> Response {
    match b.message_raw(id) {
        Some(raw) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/rfc822"),
            )],
            raw,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no message {id}\n")).into_response(),
    }
}

async fn clear_messages(State(b): State<Backend>) -> StatusCode {
    b.clear_messages();
    StatusCode::NO_CONTENT
}

async fn plan_get(State(b): State<Backend>) -> Response {
    match b.plan_yaml() {
        Some(yaml) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            )],
            yaml,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no fault plan support\n").into_response(),
    }
}

/// What `PUT /plan` says to a body with no plan in it.
pub const EMPTY_PLAN_MESSAGE: &str =
    "empty plan: the body has no keys; to clear the active plan use DELETE /plan";

/// `true` for a body that is empty, only comments or an empty mapping (`{}`):
/// a client that meant to clear the plan, or lost its body on the way. Either
/// way replacing the active plan with nothing must be asked for explicitly.
fn is_empty_plan(body: &[u8]) -> bool {
    match serde_yaml::from_slice::<serde_yaml::Value>(body) {
        Ok(serde_yaml::Value::Null) => true,
        Ok(serde_yaml::Value::Mapping(m)) => m.is_empty(),
        // Not YAML: the backend's parser reports where and why.
        _ => body.iter().all(u8::is_ascii_whitespace),
    }
}

async fn plan_put(State(b): State<Backend>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if is_empty_plan(&body) {
        // Checked after support, so an unsupported backend still says 404.
        if b.plan_yaml().is_none() {
            return (StatusCode::NOT_FOUND, "no fault plan support\n").into_response();
        }
        return (StatusCode::BAD_REQUEST, format!("{EMPTY_PLAN_MESSAGE}\n")).into_response();
    }
    match b.put_plan(&body, content_type) {
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "no fault plan support\n").into_response(),
    }
}

async fn plan_delete(State(b): State<Backend>) -> Response {
    match b.delete_plan() {
        Some(()) => StatusCode::NO_CONTENT.into_response(),
        None => (StatusCode::NOT_FOUND, "no fault plan support\n").into_response(),
    }
}

async fn clients(State(b): State<Backend>) -> Response {
    match b.clients_json() {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "no client details\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        resets: Mutex<u32>,
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
        fn reset(&self) {
            *self.resets.lock().unwrap() += 1;
        }
        fn messages(&self) -> serde_json::Value {
            serde_json::json!([{ "id": 1, "size": 12 }])
        }
        fn message_raw(&self, id: u64) -> Option<Vec<u8>> {
            (id == 1).then(|| b"Subject: hi\r\n\r\nbody\r\n".to_vec())
        }
        fn clear_messages(&self) {
            *self.clears.lock().unwrap() += 1;
        }
        fn plan_yaml(&self) -> Option<String> {
            Some(self.plan.lock().unwrap().clone())
        }
        fn put_plan(&self, body: &[u8], content_type: Option<&str>) -> Option<Result<(), String>> {
            *self.last_content_type.lock().unwrap() = content_type.map(str::to_owned);
            Some(match std::str::from_utf8(body) {
                Ok(text) if text.starts_with("rules:") => {
                    *self.plan.lock().unwrap() = text.to_owned();
                    Ok(())
                }
                _ => Err("line 1: expected `rules:`".to_owned()),
            })
        }
        fn clients_json(&self) -> Option<serde_json::Value> {
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
        fn reset(&self) {}
        fn messages(&self) -> serde_json::Value {
            serde_json::json!([])
        }
        fn message_raw(&self, _id: u64) -> Option<Vec<u8>> {
            None
        }
        fn clear_messages(&self) {}
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
}
