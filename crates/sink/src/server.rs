//! Shards: one thread per core, each with a current-thread tokio runtime and
//! its own `SO_REUSEPORT` listeners, so the kernel spreads connections and
//! no session ever touches another shard's state.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admission::Limits;
use crate::conn::{self, ConnCtx};
use crate::settings::Settings;
use crate::stats::{Counter, ShardStats, Stats};
use crate::store::Store;

/// State shared by all shards and the handle. Nothing in here is touched
/// per command: settings once per session, the limits once per connection.
pub(crate) struct SinkState {
    pub(crate) settings: RwLock<Arc<Settings>>,
    pub(crate) stats: Stats,
    pub(crate) store: Arc<Store>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) ordinal: AtomicU64,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set before `shutdown` is signalled; sessions read it per command.
    pub(crate) stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Grace period chosen at shutdown time, in milliseconds.
    pub(crate) grace_ms: AtomicU64,
    /// Kept across reloads.
    pub(crate) hook: Option<Arc<dyn crate::hook::StageHook>>,
    /// The fault engine (also the hook) when one is installed.
    pub(crate) engine: Option<Arc<crate::plan::Engine>>,
    /// The end-to-end ledger (also in every `Settings`).
    pub(crate) ledger: Arc<crate::ledger::Ledger>,
    /// The DNS responder, when `dns` is set.
    pub(crate) dns: Option<Arc<crate::dns::Dns>>,
    /// What the ready file says, set once every listener is bound.
    pub(crate) info: std::sync::OnceLock<crate::ready::ReadyInfo>,
}

impl SinkState {
    /// `POST /reset`: with no filter, the counters, the referee and the
    /// plans' state; with one, the selected clients' referee records,
    /// kept messages and plan state (the counters are global and stay).
    pub(crate) fn reset(&self, filter: &crate::filter::ClientFilter) {
        if filter.is_all() {
            self.stats.reset();
            self.ledger.clear();
        } else {
            self.store.remove_where(|m| m.matches(filter));
            self.ledger.remove_for(filter);
        }
        if let Some(e) = &self.engine {
            e.reset_clients(filter);
        }
    }

    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Binds one listening socket with `SO_REUSEPORT`, so each shard can bind
/// the same address and the kernel balances connections between them.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a restarted sink bind over its predecessor's TIME_WAIT
    // connections; never lets two listeners share the address.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` should not also grab IPv4, so `0.0.0.0` can be listed too.
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Claims `addr` for this sink: binds it once *without* `SO_REUSEPORT`,
/// which fails while any other socket (another sink's `SO_REUSEPORT`
/// listeners included) holds the address. Returns the address with port 0
/// resolved. The probe is closed before the shards bind with
/// `SO_REUSEPORT`; a second process would have to bind in that gap of a
/// few microseconds to slip in.
fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = new_socket(addr)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on {addr}: the address is already in use \
                     (another mailstorm-sink or server is listening there)"
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
        }
    })?;
    probe.local_addr()?.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot listen on {addr}: not an IP address"),
        )
    })
}

/// Binds `addrs` once per shard. Each address is first claimed (see
/// [`claim`]): another process on it is an error, not a silent split of
/// the traffic. An address listed twice is an error (port 0 excepted: each
/// `:0` is a new port). Returns per-shard listener lists and the bound
/// addresses.
pub(crate) fn bind_all(
    addrs: &[SocketAddr],
    shards: usize,
    backlog: u32,
) -> io::Result<(Vec<Vec<std::net::TcpListener>>, Vec<SocketAddr>)> {
    for (i, a) in addrs.iter().enumerate() {
        if a.port() != 0 && addrs[..i].contains(a) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listen address {a} is given twice"),
            ));
        }
    }
    let mut per_shard: Vec<Vec<std::net::TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for &addr in addrs {
        let actual = claim(addr)?;
        for shard in per_shard.iter_mut() {
            shard.push(bind(actual, backlog).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {actual}: {e}"))
            })?);
        }
        bound.push(actual);
    }
    Ok((per_shard, bound))
}

/// Pins the calling thread to `cpu` (modulo the CPUs it may run on).
fn pin_to_cpu(index: usize) {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        return;
    }
    let mut set = CpuSet::new();
    if set.set(cpus[index % cpus.len()]).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// What one shard thread needs.
pub(crate) struct ShardSpec {
    pub(crate) index: usize,
    pub(crate) plain: Vec<std::net::TcpListener>,
    pub(crate) tls: Vec<std::net::TcpListener>,
    pub(crate) stats: Arc<ShardStats>,
    pub(crate) shared: Arc<SinkState>,
    pub(crate) pin: bool,
}

/// Starts a shard's thread. `ready` receives `Ok` once its runtime runs.
pub(crate) fn spawn_shard(spec: ShardSpec) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sink-shard-{}", spec.index))
        .spawn(move || {
            if spec.pin {
                pin_to_cpu(spec.index);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!(
                        "mailstorm-sink: shard {}: cannot start runtime: {e}",
                        spec.index
                    );
                    return;
                }
            };
            rt.block_on(shard_main(spec));
            // Sessions still running after the grace period are dropped
            // (and their sockets closed) with the runtime.
            rt.shutdown_timeout(Duration::from_millis(100));
        })
}

async fn shard_main(spec: ShardSpec) {
    let ShardSpec {
        plain,
        tls,
        stats,
        shared,
        ..
    } = spec;
    // Every session holds a sender; `recv()` returns `None` when all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut accepters = Vec::new();
    for (l, implicit_tls) in plain
        .into_iter()
        .map(|l| (l, false))
        .chain(tls.into_iter().map(|l| (l, true)))
    {
        let listener = match TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mailstorm-sink: cannot register listener: {e}");
                continue;
            }
        };
        accepters.push(tokio::spawn(accept_loop(
            listener,
            implicit_tls,
            stats.clone(),
            shared.clone(),
            alive_tx.clone(),
        )));
    }
    drop(alive_tx);
    for a in accepters {
        let _ = a.await;
    }
    let grace = Duration::from_millis(shared.grace_ms.load(Ordering::Relaxed));
    let _ = tokio::time::timeout(grace, alive_rx.recv()).await;
}

async fn accept_loop(
    listener: TcpListener,
    implicit_tls: bool,
    stats: Arc<ShardStats>,
    shared: Arc<SinkState>,
    alive: mpsc::Sender<()>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow_and_update() {
        return;
    }
    let mut error_logged = false;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if !error_logged {
                        eprintln!("mailstorm-sink: accept failed: {e} (raise the open files limit?)");
                        error_logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let settings = shared.settings();
        let admission = shared.limits.admit(
            peer.ip(),
            settings.config.max_connections,
            settings.config.max_connections_per_ip,
        );
        stats.add(Counter::ConnectionsTotal, 1);
        stats.add(Counter::ConnectionsOpen, 1);
        let ctx = ConnCtx {
            id: shared.ordinal.fetch_add(1, Ordering::Relaxed) + 1,
            settings,
            stats: stats.clone(),
            store: shared.store.clone(),
            stopping: shared.stopping.clone(),
            implicit_tls,
            admission,
        };
        let alive = alive.clone();
        tokio::spawn(async move {
            conn::run(tcp, peer, ctx).await;
            drop(alive);
        });
    }
}

/// Raises the soft open-files limit to the hard limit. Returns the new soft
/// limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    Ok(soft)
}
