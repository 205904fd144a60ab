//! The live HTTP endpoints: listeners bound before the run (so a bad
//! address is a usage error, not a surprise mid-run), served by axum
//! within `mailstorm_http`'s limits on a thread of their own. Handlers
//! only clone the latest published [`Snapshot`]: the collector publishes
//! once per interval, the load's hot path never sees a request.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;

use crate::BlastError;

/// How long open connections (a browser's keep-alive) may hold up the
/// shutdown once the run and its linger are over.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What the endpoints serve: rendered once per interval and at the end.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The Prometheus exposition.
    pub metrics: Bytes,
    /// The report model so far, JSON.
    pub report: Bytes,
}

/// The latest snapshot, swapped whole by the publisher.
#[derive(Debug, Default)]
pub struct Feed(Mutex<Arc<Snapshot>>);

impl Feed {
    /// Replaces the snapshot.
    pub fn publish(&self, s: Snapshot) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }

    fn latest(&self) -> Arc<Snapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Roles {
    /// `GET /metrics`.
    pub metrics: bool,
    /// `GET /` (the page) and `GET /report.json` (its feed).
    pub dashboard: bool,
}

/// Resolves and binds `value` (`HOST:PORT`) for `flag`; errors name both.
pub fn bind(flag: &str, value: &str) -> Result<TcpListener, BlastError> {
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| {
            BlastError::Config(format!(
                "{flag} {value}: not a listening address (HOST:PORT, e.g. 127.0.0.1:9464): {e}"
            ))
        })?
        .collect();
    let l = TcpListener::bind(&addrs[..])
        .map_err(|e| BlastError::Config(format!("{flag} {value}: cannot listen: {e}")))?;
    l.set_nonblocking(true)
        .map_err(|e| BlastError::Config(format!("{flag} {value}: {e}")))?;
    Ok(l)
}

/// The running server thread.
#[derive(Debug)]
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves each listener with its roles until [`Server::shutdown`].
    pub fn start(
        listeners: Vec<(TcpListener, Roles)>,
        feed: Arc<Feed>,
        page: Bytes,
    ) -> Result<Server, BlastError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BlastError::Runtime(format!("live endpoints: {e}")))?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("blast-live".into())
            .spawn(move || rt.block_on(serve(listeners, feed, page, rx)))
            .map_err(|e| BlastError::Runtime(format!("live endpoints: {e}")))?;
        Ok(Server {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops serving (each listener's open requests get [`SHUTDOWN_GRACE`],
    /// the lot at most twice that) and joins the thread.
    pub fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listeners: Vec<(TcpListener, Roles)>,
    feed: Arc<Feed>,
    page: Bytes,
    stop: oneshot::Receiver<()>,
) {
    let (stop_all, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (l, roles) in listeners {
        let addr = l.local_addr().ok();
        let listener = match tokio::net::TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mailstorm-blast: live endpoint {addr:?} failed to start: {e}");
                continue;
            }
        };
        let app = router(roles, feed.clone(), page.clone());
        let mut rx = stop_all.subscribe();
        let stop = async move {
            let _ = rx.recv().await;
        };
        tasks.spawn(mailstorm_http::serve(
            listener,
            app,
            mailstorm_http::Limits::default(),
            stop,
            SHUTDOWN_GRACE,
        ));
    }
    // A dropped sender means "stop" too.
    let _ = stop.await;
    let _ = stop_all.send(());
    // Each server bounds its own grace; this bounds the lot.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

fn router(roles: Roles, feed: Arc<Feed>, page: Bytes) -> Router {
    let mut r = Router::new();
    if roles.metrics {
        r = r.route("/metrics", get(metrics));
    }
    if roles.dashboard {
        r = r
            .route(
                "/",
                get(move || {
                    let page = page.clone();
                    async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) }
                }),
            )
            .route(&format!("/{}", mailstorm_web::live::FEED_PATH), get(report))
            // Browsers ask for it; a 404 would show on their console.
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }));
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(feed)
}

async fn metrics(State(feed): State<Arc<Feed>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        feed.latest().metrics.clone(),
    )
}

async fn report(State(feed): State<Arc<Feed>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        feed.latest().report.clone(),
    )
}
