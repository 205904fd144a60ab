//! Where the next connection goes: one host, a domain's MX hosts, or
//! weighted relays. Workers ask [`Targets::candidates`] before each
//! connection and try the addresses in order (RFC 5321 §5.1 fallback),
//! then tell [`Targets::outcome`] how each attempt went (relay health).
//! A plain `host:port` target never comes here: it is resolved once at
//! start as before.

pub mod dns;
mod mx;
pub mod relays;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use dns::{DnsCounts, DnsFailure, DNS_CACHE_CAP};
pub use relays::{RelayFigures, RelaySpec, EJECT_AFTER};

use crate::config::Config;
use crate::BlastError;

/// What `--target` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// One `host:port`.
    Host(String),
    /// `mx:DOMAIN`.
    Mx(String),
    /// Several relays: `(host:port, weight)`.
    Relays(Vec<(String, u32)>),
}

/// Parses `--target` (several `--target` flags arrive joined by commas).
pub fn parse(target: &str) -> Result<TargetSpec, BlastError> {
    let bad = |m: String| Err(BlastError::Config(m));
    if let Some(d) = target.strip_prefix("mx:") {
        let d = d.trim().trim_end_matches('.');
        if d.is_empty() || target.contains(',') || d.contains(':') {
            return bad(format!(
                "--target {target:?}: expected mx:DOMAIN with one domain (the SMTP port is --smtp-port)"
            ));
        }
        return Ok(TargetSpec::Mx(d.to_ascii_lowercase()));
    }
    let parts: Vec<&str> = target.split(',').map(str::trim).collect();
    if parts.len() == 1 && !target.contains('=') {
        return Ok(TargetSpec::Host(target.to_string()));
    }
    let mut out = Vec::new();
    for p in parts {
        let (host, w) = match p.rsplit_once('=') {
            Some((h, w)) => match w.parse::<u32>() {
                Ok(w) if (1..=1000).contains(&w) => (h, w),
                _ => {
                    return bad(format!(
                        "--target {target:?}: relay {p:?} has weight {w:?}; expected a whole number from 1 to 1000"
                    ))
                }
            },
            None => (p, 1),
        };
        if host.is_empty() || host.starts_with("mx:") {
            return bad(format!(
                "--target {target:?}: relay {p:?} is not host:port[=weight] (mx: targets cannot be mixed with relays)"
            ));
        }
        out.push((host.to_string(), w));
    }
    Ok(TargetSpec::Relays(out))
}

/// The routing figures of a run, in the report's `routing` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Routing {
    /// `mx:DOMAIN` runs: the DNS counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsCounts>,
    /// Relay runs: one entry per relay, in the order given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<RelayFigures>,
}

impl Routing {
    /// The text summary's `dns` line and `relays` table.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if let Some(d) = &self.dns {
            let _ = writeln!(
                s,
                "\ndns: {} queries, {} cache hits; failures: {} timeout, {} servfail, {} nxdomain, {} other",
                d.queries, d.cache_hits, d.timeouts, d.servfail, d.nxdomain, d.other_failures
            );
        }
        if !self.relays.is_empty() {
            let _ = writeln!(
                s,
                "\nrelays                        weight   picked connected   failed  ejected  probes  state"
            );
            for r in &self.relays {
                let _ = writeln!(
                    s,
                    "  {:<28} {:>6} {:>8} {:>9} {:>8} {:>8} {:>7}  {}",
                    r.relay,
                    r.weight,
                    r.picked,
                    r.connected,
                    r.failed,
                    r.ejections,
                    r.probes,
                    if r.ejected { "out" } else { "in" }
                );
            }
        }
        s
    }
}

/// One address to try, and the relay it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) addr: SocketAddr,
    relay: Option<usize>,
}

/// Why no address could be tried.
#[derive(Debug, Clone)]
pub(crate) enum NoCandidate {
    /// A DNS failure of this kind.
    Dns(DnsFailure),
    /// Anything else, said in words.
    Other(String),
}

/// What [`preflight`] learned: its resolver cache and counters, which
/// the run goes on with (so the report counts every query the process
/// sent, and the run starts with the answers in the cache), and a
/// warning to print when the run starts despite a failing lookup.
#[derive(Clone)]
pub struct Preflight {
    dns: Arc<dns::Dns>,
    /// Say this on stderr before the run (the lookup failed, transiently).
    pub warning: Option<String>,
}

impl std::fmt::Debug for Preflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preflight")
            .field("dns", &self.dns.counts())
            .field("warning", &self.warning)
            .finish()
    }
}

/// Domain or relay targets, shared by every shard of a run.
pub(crate) enum Targets {
    Mx {
        domain: String,
        port: u16,
        dns: Arc<dns::Dns>,
        allow_remote: bool,
    },
    Relays(relays::Pool),
}

impl Targets {
    /// `None` for a plain `host:port` target (or the embedded sink). A
    /// domain target goes on with `pre`'s cache and counters when given.
    pub(crate) fn from_config(
        cfg: &Config,
        pre: Option<&Preflight>,
    ) -> Result<Option<Arc<Targets>>, BlastError> {
        let Some(t) = &cfg.target else {
            return Ok(None);
        };
        Ok(match parse(t)? {
            TargetSpec::Host(_) => None,
            TargetSpec::Mx(domain) => Some(Arc::new(Targets::Mx {
                domain,
                port: cfg.smtp_port,
                dns: match pre {
                    Some(p) => p.dns.clone(),
                    None => Arc::new(dns::Dns::new(cfg.resolver, cfg.dns_timeout)),
                },
                allow_remote: cfg.allow_remote,
            })),
            TargetSpec::Relays(list) => Some(Arc::new(Targets::Relays(relays::Pool::new(
                relay_specs(&list, cfg.allow_remote)?,
                cfg.relay_cooldown,
            )))),
        })
    }

    /// The addresses to try for the next connection, best first. `dns`
    /// receives the time of every DNS query sent (the `dns` stage).
    pub(crate) async fn candidates(
        &self,
        dns_time: &mut impl FnMut(Duration),
    ) -> Result<Vec<Candidate>, NoCandidate> {
        match self {
            Targets::Mx {
                domain,
                port,
                dns,
                allow_remote,
            } => {
                let addrs =
                    mx::candidates(dns, domain, *port, dns_time)
                        .await
                        .map_err(|e| match e {
                            mx::MxError::Dns(f) => NoCandidate::Dns(f),
                            mx::MxError::NoHost(m) => NoCandidate::Other(m),
                        })?;
                let addrs: Vec<Candidate> = addrs
                    .into_iter()
                    .filter(|a| *allow_remote || a.ip().is_loopback())
                    .map(|addr| Candidate { addr, relay: None })
                    .collect();
                if addrs.is_empty() {
                    return Err(NoCandidate::Other(format!(
                        "the MX hosts of {domain} are outside loopback: add --allow-remote if you mean to load them"
                    )));
                }
                Ok(addrs)
            }
            Targets::Relays(pool) => Ok(pool
                .candidates(Instant::now())
                .into_iter()
                .map(|(i, addr)| Candidate {
                    addr,
                    relay: Some(i),
                })
                .collect()),
        }
    }

    /// How a setup on `c` went: `ok` is a session set up, or a refusal
    /// that is no reason to try another host (a 5xx greeting).
    pub(crate) fn outcome(&self, c: &Candidate, ok: bool) {
        if let (Targets::Relays(pool), Some(i)) = (self, c.relay) {
            pool.outcome(i, ok, Instant::now());
        }
    }

    /// A reply on an established session with `c`: a 421 counts against
    /// its relay's health.
    pub(crate) fn replied(&self, c: &Candidate, code: u16) {
        if let (Targets::Relays(pool), Some(i), 421) = (self, c.relay, code) {
            pool.failed(i, Instant::now());
        }
    }

    /// A message delivered through `c`: its relay's failure streak ends.
    pub(crate) fn delivered(&self, c: &Candidate) {
        if let (Targets::Relays(pool), Some(i)) = (self, c.relay) {
            pool.delivered(i);
        }
    }

    /// The figures for the report.
    pub(crate) fn routing(&self) -> Routing {
        match self {
            Targets::Mx { dns, .. } => Routing {
                dns: Some(dns.counts()),
                relays: Vec::new(),
            },
            Targets::Relays(pool) => Routing {
                dns: None,
                relays: pool.figures(),
            },
        }
    }
}

fn relay_specs(list: &[(String, u32)], allow_remote: bool) -> Result<Vec<RelaySpec>, BlastError> {
    list.iter()
        .map(|(h, w)| {
            let (addr, _) = crate::net::resolve(h)?;
            if !allow_remote && !addr.ip().is_loopback() {
                return Err(BlastError::Config(format!(
                    "relay {h} ({}) is outside loopback: add --allow-remote if you mean to load it",
                    addr.ip()
                )));
            }
            Ok(RelaySpec {
                label: h.clone(),
                addr,
                weight: *w,
            })
        })
        .collect()
}

/// Lookups preflight makes at most when they fail transiently (SERVFAIL,
/// timeout, other), 100 ms and 200 ms apart.
pub const PREFLIGHT_TRIES: u32 = 3;

/// Checks at start that an `mx:DOMAIN` target resolves, with the run's
/// resolver and timeout: an unanswering resolver is a clear error in
/// `--dns-timeout`, not a run of failed connections.
///
/// A transient failure is asked again, up to [`PREFLIGHT_TRIES`] lookups.
/// What is still failing then decides: NXDOMAIN, a null MX or hosts
/// without addresses are permanent (an error); a resolver that never
/// answered is misconfigured (an error, naming it), and so is any other
/// failure (refused, malformed); a SERVFAIL lets the run start with a
/// warning (the server is there and may recover): its
/// lookups are counted and their messages deferred, and a retry policy
/// retries them. The returned [`Preflight`] carries the cache and counters
/// into the run (`RunParams::preflight`).
pub fn preflight(cfg: &Config) -> Result<Option<Preflight>, BlastError> {
    let Some(Ok(TargetSpec::Mx(domain))) = cfg.target.as_deref().map(parse) else {
        return Ok(None);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BlastError::Runtime(e.to_string()))?;
    let d = Arc::new(dns::Dns::new(cfg.resolver, cfg.dns_timeout));
    let server = cfg
        .resolver
        .map_or("the system's resolver".to_string(), |s| {
            format!("DNS server {s}")
        });
    let mut res = Ok(Vec::new());
    for attempt in 1..=PREFLIGHT_TRIES {
        if attempt > 1 {
            std::thread::sleep(Duration::from_millis(100) * (attempt - 1));
            d.forget_failures();
        }
        res = rt.block_on(mx::candidates(&d, &domain, cfg.smtp_port, &mut |_| {}));
        match &res {
            Err(mx::MxError::Dns(
                DnsFailure::Servfail | DnsFailure::Timeout | DnsFailure::Other,
            )) => {}
            _ => break,
        }
    }
    let started = |warning| {
        Ok(Some(Preflight {
            dns: d.clone(),
            warning,
        }))
    };
    match res {
        Ok(_) => started(None),
        Err(mx::MxError::Dns(DnsFailure::Timeout)) => Err(BlastError::Unreachable(format!(
            "{server} did not answer for {domain} within {:?} (--dns-timeout), {PREFLIGHT_TRIES} tries",
            cfg.dns_timeout
        ))),
        Err(mx::MxError::Dns(DnsFailure::Servfail)) => started(Some(format!(
            "{server}: looking up the mail hosts of {domain} failed {PREFLIGHT_TRIES} times (SERVFAIL); \
             starting anyway: messages are deferred while lookups fail"
        ))),
        Err(mx::MxError::Dns(f)) => Err(BlastError::Unreachable(format!(
            "{server}: looking up the mail hosts of {domain} failed: {f:?}"
        ))),
        Err(mx::MxError::NoHost(m)) => Err(BlastError::Unreachable(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        assert_eq!(
            parse("127.0.0.1:25").unwrap(),
            TargetSpec::Host("127.0.0.1:25".into())
        );
        assert_eq!(
            parse("mx:Example.TEST.").unwrap(),
            TargetSpec::Mx("example.test".into())
        );
        assert_eq!(
            parse("a:25=8,b:26=2,c:27").unwrap(),
            TargetSpec::Relays(vec![
                ("a:25".into(), 8),
                ("b:26".into(), 2),
                ("c:27".into(), 1)
            ])
        );
        let e = parse("a:25=0,b:26").unwrap_err().to_string();
        assert!(e.contains("\"a:25=0\"") && e.contains("weight"), "{e}");
        assert!(parse("mx:").is_err());
        assert!(parse("mx:a.test:25")
            .unwrap_err()
            .to_string()
            .contains("--smtp-port"));
    }
}
