//! DNS lookups for domain targets: one hickory resolver per shard thread
//! (its connections belong to that shard's runtime), one TTL cache and one
//! set of counters shared by every shard.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::ProtoErrorKind;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};
use serde::Serialize;
use tokio::sync::Notify;

/// Cached answers (names × types) at most; past it the cache is emptied
/// and refilled, which costs queries but never memory.
pub const DNS_CACHE_CAP: usize = 4096;

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsFailure {
    /// No answer within `--dns-timeout`.
    Timeout,
    /// The server answered SERVFAIL.
    Servfail,
    /// The name does not exist.
    Nxdomain,
    /// Anything else (refused, malformed, no server reachable).
    Other,
}

/// One lookup's answer as cached: MX `(preference, host)` pairs or
/// addresses. An empty answer is NODATA (the name exists, the type not).
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Mx(Vec<(u16, String)>),
    Ips(Vec<IpAddr>),
}

/// The DNS counters of a run, in the report's `dns` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsCounts {
    /// Queries sent (cache misses; MX and address lookups each count).
    pub queries: u64,
    /// Lookups answered from the TTL cache.
    pub cache_hits: u64,
    /// Failed queries: no answer in time.
    pub timeouts: u64,
    /// Failed queries: SERVFAIL.
    pub servfail: u64,
    /// Failed queries: NXDOMAIN.
    pub nxdomain: u64,
    /// Failed queries: anything else.
    pub other_failures: u64,
}

/// A cache entry: when it expires and what was answered.
type Cached = (Instant, Result<Answer, DnsFailure>);

/// The resolver settings and the shared cache and counters.
pub(crate) struct Dns {
    server: Option<SocketAddr>,
    timeout: Duration,
    cache: Mutex<HashMap<(String, RecordType), Cached>>,
    /// Lookups on the wire: later askers of the same key wait for the
    /// first one's answer instead of sending the same query (single
    /// flight), so a cold start with many connections costs one query.
    inflight: Mutex<HashMap<(String, RecordType), Arc<Notify>>>,
    queries: AtomicU64,
    hits: AtomicU64,
    fails: [AtomicU64; 4],
}

thread_local! {
    /// This shard's resolver (built on first use inside its runtime).
    static RESOLVER: RefCell<Option<TokioResolver>> = const { RefCell::new(None) };
}

/// Negative answers are cached this long (no SOA in a test zone to say
/// otherwise), so a failing domain is not hammered by every connection.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

impl Dns {
    pub(crate) fn new(server: Option<SocketAddr>, timeout: Duration) -> Dns {
        Dns {
            server,
            timeout,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            queries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            fails: Default::default(),
        }
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        RESOLVER.with(|r| {
            if let Some(r) = &*r.borrow() {
                return Ok(r.clone());
            }
            let mut opts = ResolverOpts::default();
            opts.timeout = self.timeout;
            // One try: a timeout is a measured event, not something to hide
            // behind retries; our own cache counts hits.
            opts.attempts = 1;
            opts.cache_size = 0;
            opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
            let built = match self.server {
                Some(s) => TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(
                        None,
                        vec![],
                        NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true),
                    ),
                    TokioConnectionProvider::default(),
                ),
                None => TokioResolver::builder_tokio()
                    .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
            }
            .with_options(opts)
            .build();
            *r.borrow_mut() = Some(built.clone());
            Ok(built)
        })
    }

    /// Looks `name` up (from the cache while its TTL lasts). The second
    /// value is the time spent on the wire (zero for a cache hit).
    pub(crate) async fn lookup(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> (Result<Answer, DnsFailure>, Duration) {
        let key = (name.to_ascii_lowercase(), rtype);
        let t_wait = Instant::now();
        let mut waited = false;
        // Bounded: each wait ends by the leader's answer or its timeout.
        for _ in 0..4 {
            let now = Instant::now();
            if let Some((exp, a)) = self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
            {
                if *exp > now {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    // Time spent waiting for another lookup's answer is
                    // DNS time too; a plain hit costs nothing.
                    let spent = if waited {
                        t_wait.elapsed()
                    } else {
                        Duration::ZERO
                    };
                    return (a.clone(), spent);
                }
            }
            let leader = {
                let mut inf = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                match inf.get(&key) {
                    Some(n) => Some(n.clone()),
                    None => {
                        inf.insert(key.clone(), Arc::new(Notify::new()));
                        None
                    }
                }
            };
            let Some(n) = leader else { break };
            let notified = n.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waited = true;
            // The leader may have finished before the wait was enabled (and
            // another lookup may have taken its place: waiting on this
            // leader's signal then would wait for nothing, the full timeout,
            // and count it as DNS time).
            if self
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .is_some_and(|m| Arc::ptr_eq(m, &n))
            {
                let _ =
                    tokio::time::timeout(self.timeout + Duration::from_millis(500), notified).await;
            }
        }
        let _flight = Flight {
            dns: self,
            key: key.clone(),
        };
        self.queries.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let res = match self.resolver() {
            Ok(r) => {
                // The resolver's own timeout covers one try; this bounds the
                // whole lookup whatever it does inside.
                let fqdn = format!("{}.", key.0.trim_end_matches('.'));
                match tokio::time::timeout(
                    self.timeout + Duration::from_millis(200),
                    r.lookup(fqdn, rtype),
                )
                .await
                {
                    Ok(Ok(l)) => {
                        let ttl = l.valid_until().saturating_duration_since(Instant::now());
                        let ans = match rtype {
                            RecordType::MX => Answer::Mx(
                                l.iter()
                                    .filter_map(|r| match r {
                                        RData::MX(mx) => Some((
                                            mx.preference(),
                                            mx.exchange()
                                                .to_ascii()
                                                .trim_end_matches('.')
                                                .to_string(),
                                        )),
                                        _ => None,
                                    })
                                    .collect(),
                            ),
                            _ => Answer::Ips(
                                l.iter()
                                    .filter_map(|r| match r {
                                        RData::A(a) => Some(IpAddr::V4(a.0)),
                                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                                        _ => None,
                                    })
                                    .collect(),
                            ),
                        };
                        Ok((ans, ttl))
                    }
                    Ok(Err(e)) => classify(&e),
                    Err(_) => Err(DnsFailure::Timeout),
                }
            }
            Err(_) => Err(DnsFailure::Other),
        };
        let spent = t0.elapsed();
        let (res, ttl) = match res {
            Ok((a, ttl)) => (Ok(a), ttl),
            Err(f) => {
                self.fails[f as usize].fetch_add(1, Ordering::Relaxed);
                (Err(f), NEGATIVE_TTL)
            }
        };
        if !ttl.is_zero() {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.len() >= DNS_CACHE_CAP {
                c.clear();
            }
            c.insert(key, (Instant::now() + ttl, res.clone()));
        }
        (res, spent)
    }

    /// Drops cached failures, so the next lookup of those names asks
    /// again (preflight's retries).
    pub(crate) fn forget_failures(&self) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (_, a)| a.is_ok());
    }

    pub(crate) fn counts(&self) -> DnsCounts {
        let f = |k: DnsFailure| self.fails[k as usize].load(Ordering::Relaxed);
        DnsCounts {
            queries: self.queries.load(Ordering::Relaxed),
            cache_hits: self.hits.load(Ordering::Relaxed),
            timeouts: f(DnsFailure::Timeout),
            servfail: f(DnsFailure::Servfail),
            nxdomain: f(DnsFailure::Nxdomain),
            other_failures: f(DnsFailure::Other),
        }
    }
}

/// Ends a single-flight lookup however the leader's future ends (answer,
/// error or cancellation): waiters are released and look in the cache.
struct Flight<'a> {
    dns: &'a Dns,
    key: (String, RecordType),
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let n = self
            .dns
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

/// NODATA is an answer (empty); the rest are failures by kind.
fn classify(e: &ResolveError) -> Result<(Answer, Duration), DnsFailure> {
    if let Some(p) = e.proto() {
        match p.kind() {
            ProtoErrorKind::Timeout => return Err(DnsFailure::Timeout),
            ProtoErrorKind::NoRecordsFound { response_code, .. } => {
                return match *response_code {
                    ResponseCode::NoError => Ok((Answer::Ips(Vec::new()), NEGATIVE_TTL)),
                    ResponseCode::NXDomain => Err(DnsFailure::Nxdomain),
                    ResponseCode::ServFail => Err(DnsFailure::Servfail),
                    _ => Err(DnsFailure::Other),
                }
            }
            _ => {}
        }
    }
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("servfail") || text.contains("server failure") {
        Err(DnsFailure::Servfail)
    } else if text.contains("timed out") || text.contains("timeout") {
        Err(DnsFailure::Timeout)
    } else {
        Err(DnsFailure::Other)
    }
}
