//! The HTTP control API (`--control ADDR`): health, stats, Prometheus
//! metrics, captured messages, and (later) the fault plan.
//!
//! It runs axum on a current-thread tokio runtime on its own OS thread, so
//! it never competes with a sink shard, within `mailstorm_http`'s limits
//! (connections, head size and deadline, bodies in flight, request and
//! write deadlines): no HTTP peer can make the sink hold unbounded
//! memory. The sink plugs in through [`ControlBackend`]; this module only
//! does HTTP.
//!
//! Routes (all but `/healthz` need `Authorization: Bearer <token>`, or the
//! dashboard's cookie, when a token is set):
//!
//! | method & path          | backend call                  | success                   |
//! |------------------------|-------------------------------|---------------------------|
//! | `GET /healthz`         | —                             | 200 `ok`                  |
//! | `GET /info`            | [`ControlBackend::info_json`]    | 200 JSON (the ready-file object), 404 |
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
//! | `GET /verdicts`        | [`ControlBackend::verdicts_json`] | 200 JSON list, 404 when unsupported |
//! | `GET /clients/{id}/verdict` | [`ControlBackend::verdict_json`] | 200 JSON, 404 for an unknown client |
//! | `GET /ledger`          | [`ControlBackend::ledger_json`]  | 200 JSON (runs and global counters; `?helo=&domain=` selects the runs a client delivered to), 404 when unsupported |
//! | `GET /ledger/{run}`    | [`ControlBackend::ledger_json`]  | 200 JSON (one run's figures), 404 for an unknown run or one the filter does not select |
//! | `GET /`                | —                             | 200 the dashboard page (see [`dashboard`]) |
//! | `GET /dashboard.json`  | [`dashboard::feed_json`]         | 200 JSON: the page's one feed |
//!
//! `?helo=NAME&domain=D` ([`ClientFilter`]) selects one test's clients on
//! `GET /clients`, `GET /messages`, `DELETE /messages`, `GET /verdicts` and
//! `POST /reset`; `?helo=NAME` on `GET/PUT/DELETE /plan` addresses the plan
//! scoped to that client. An unknown query parameter is a 400.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use crate::filter::ClientFilter;

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
    /// `POST /reset`: zero the counters; with a filter, forget only the
    /// selected clients' records, messages and plan state.
    fn reset(&self, filter: &ClientFilter);
    /// `GET /messages`: the kept messages' metadata as JSON (those of the
    /// clients `filter` selects).
    fn messages(&self, filter: &ClientFilter) -> serde_json::Value;
    /// `GET /messages/{id}`: one kept message, raw, or `None` (404).
    fn message_raw(&self, id: u64) -> Option<Vec<u8>>;
    /// `DELETE /messages`: forget the kept messages (those of the clients
    /// `filter` selects).
    fn clear_messages(&self, filter: &ClientFilter);

    /// `GET /info`: the ready-file object (addresses, pid, version);
    /// `None` (404) when unknown.
    fn info_json(&self) -> Option<serde_json::Value> {
        None
    }
    /// `GET /dns`: the DNS responder's counters, queries per client
    /// included; `None` (404) without `--dns`.
    fn dns_json(&self) -> Option<serde_json::Value> {
        None
    }
    /// `GET /plan`: the fault plan as YAML (`helo`: the plan scoped to that
    /// client); `None` (404) when the backend has no plan support, or there
    /// is no such scoped plan.
    fn plan_yaml(&self, helo: Option<&str>) -> Option<String> {
        let _ = helo;
        None
    }
    /// `PUT /plan`: replace the fault plan (or `helo`'s scoped plan) with
    /// `body` (sent with `content_type`). `None` → 404 (unsupported),
    /// `Some(Err(text))` → 400 with `text`, `Some(Ok(()))` → 204.
    fn put_plan(
        &self,
        helo: Option<&str>,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Option<Result<(), String>> {
        let _ = (helo, body, content_type);
        None
    }
    /// `DELETE /plan`: remove the fault plan (or `helo`'s scoped plan;
    /// normal behaviour from then on). `None` → 404 (unsupported),
    /// `Some(())` → 204.
    fn delete_plan(&self, helo: Option<&str>) -> Option<()> {
        let _ = helo;
        None
    }
    /// `GET /clients`: per-client details as JSON; `None` (404) when
    /// unsupported.
    fn clients_json(&self, filter: &ClientFilter) -> Option<serde_json::Value> {
        let _ = filter;
        None
    }
    /// `GET /verdicts`: the selected clients' verdicts as a JSON list;
    /// `None` (404) when unsupported.
    fn verdicts_json(&self, filter: &ClientFilter) -> Option<serde_json::Value> {
        let _ = filter;
        None
    }
    /// `GET /clients/{id}/verdict`: one client's verdict; `None` (404) for
    /// an unknown client or without support.
    fn verdict_json(&self, id: &str) -> Option<serde_json::Value> {
        let _ = id;
        None
    }
    /// `GET /ledger` (`run: None`) and `GET /ledger/{run}`: the
    /// end-to-end ledger, limited to the runs `filter`'s client or domain
    /// delivered to; `None` (404) for an unknown or unselected run or
    /// without support.
    fn ledger_json(&self, run: Option<&str>, filter: &ClientFilter) -> Option<serde_json::Value> {
        let _ = (run, filter);
        None
    }
    /// The dashboard's faults by rule (a JSON list); `None` without plan
    /// support.
    fn faults_json(&self) -> Option<serde_json::Value> {
        None
    }
    /// The dashboard's message search: the newest kept messages whose
    /// sender, recipients or subject contain `query`, at most `limit`
    /// (`{"kept", "matched", "messages"}`).
    fn search_messages(&self, query: &str, limit: usize) -> serde_json::Value {
        dashboard::search_in(&self.messages(&ClientFilter::all()), query, limit)
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
    // A dropped sender (handle dropped) also means "stop".
    let stop = async move {
        let _ = stop.await;
    };
    mailstorm_http::serve(
        listener,
        app,
        mailstorm_http::Limits::default(),
        stop,
        SHUTDOWN_GRACE,
    )
    .await;
}

type Backend = Arc<dyn ControlBackend>;

/// The route table. To add a route: a handler below taking
/// `State<Backend>`, a line here, and (if the backend must provide data) a
/// default method on [`ControlBackend`] returning `None` → 404.
fn router(token: Option<String>, backend: Backend) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/info", get(info))
        .route("/dns", get(dns))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/reset", post(reset))
        .route("/messages", get(messages).delete(clear_messages))
        .route("/messages/{id}", get(message_raw))
        .route("/plan", get(plan_get).put(plan_put).delete(plan_delete))
        .route("/clients", get(clients))
        .route("/clients/{id}/verdict", get(verdict))
        .route("/verdicts", get(verdicts))
        .route("/ledger", get(ledger))
        .route("/ledger/{run}", get(ledger_run))
        .route("/", get(dashboard::page))
        .route("/dashboard.json", get(dashboard::feed))
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
        let authorized =
            bearer_matches(req.headers(), token) || dashboard::cookie_matches(req.headers(), token);
        if dashboard::wants_exchange(&req) || !authorized && req.uri().path() != "/healthz" {
            if let Some(page) = dashboard::login(&req, token) {
                return page;
            }
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
    scheme.eq_ignore_ascii_case("bearer")
        && mailstorm_proto::sasl::constant_time_eq(given.trim().as_bytes(), token.as_bytes())
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

/// `?helo=NAME` on the plan routes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanScope {
    helo: Option<String>,
}

async fn info(State(b): State<Backend>) -> Response {
    match b.info_json() {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "no info\n").into_response(),
    }
}

async fn dns(State(b): State<Backend>) -> Response {
    match b.dns_json() {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no DNS responder (start with --dns)\n",
        )
            .into_response(),
    }
}

async fn reset(State(b): State<Backend>, Query(f): Query<ClientFilter>) -> StatusCode {
    b.reset(&f);
    StatusCode::NO_CONTENT
}

async fn messages(
    State(b): State<Backend>,
    Query(f): Query<ClientFilter>,
) -> Json<serde_json::Value> {
    Json(b.messages(&f))
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

async fn clear_messages(State(b): State<Backend>, Query(f): Query<ClientFilter>) -> StatusCode {
    b.clear_messages(&f);
    StatusCode::NO_CONTENT
}

async fn plan_get(State(b): State<Backend>, Query(p): Query<PlanScope>) -> Response {
    if let Some(h) = &p.helo {
        return match b.plan_yaml(Some(h)) {
            Some(yaml) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                )],
                yaml,
            )
                .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                format!("no plan scoped to helo {h:?}\n"),
            )
                .into_response(),
        };
    }
    match b.plan_yaml(None) {
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

async fn plan_put(
    State(b): State<Backend>,
    Query(p): Query<PlanScope>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if is_empty_plan(&body) {
        // Checked after support, so an unsupported backend still says 404.
        if b.plan_yaml(None).is_none() {
            return (StatusCode::NOT_FOUND, "no fault plan support\n").into_response();
        }
        return (StatusCode::BAD_REQUEST, format!("{EMPTY_PLAN_MESSAGE}\n")).into_response();
    }
    match b.put_plan(p.helo.as_deref(), &body, content_type) {
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "no fault plan support\n").into_response(),
    }
}

async fn plan_delete(State(b): State<Backend>, Query(p): Query<PlanScope>) -> Response {
    match b.delete_plan(p.helo.as_deref()) {
        Some(()) => StatusCode::NO_CONTENT.into_response(),
        None => (StatusCode::NOT_FOUND, "no fault plan support\n").into_response(),
    }
}

async fn clients(State(b): State<Backend>, Query(f): Query<ClientFilter>) -> Response {
    match b.clients_json(&f) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "no client details\n").into_response(),
    }
}

async fn verdicts(State(b): State<Backend>, Query(f): Query<ClientFilter>) -> Response {
    match b.verdicts_json(&f) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "no verdicts\n").into_response(),
    }
}

async fn verdict(State(b): State<Backend>, Path(id): Path<String>) -> Response {
    match b.verdict_json(&id) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no client {id:?}\n")).into_response(),
    }
}

async fn ledger(State(b): State<Backend>, Query(f): Query<ClientFilter>) -> Response {
    match b.ledger_json(None, &f) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, "no ledger\n").into_response(),
    }
}

async fn ledger_run(
    State(b): State<Backend>,
    Path(run): Path<String>,
    Query(f): Query<ClientFilter>,
) -> Response {
    match b.ledger_json(Some(&run), &f) {
        Some(v) => Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no run {run:?}\n")).into_response(),
    }
}

pub mod dashboard;
#[cfg(test)]
mod tests;
