//! One SMTP/LMTP client connection: setup (connect, TLS, greeting, EHLO,
//! STARTTLS, AUTH), pipelined or step-by-step transactions, and QUIT.
//!
//! Commands are encoded with the proto crate into a reused write buffer and
//! each pipelined group goes out in one write; replies are parsed in place
//! from a reused read buffer, whose size a reply cannot push past a cap.
//!
//! - `transport`: the byte stream, timed writes and capped reply reads,
//!   each error tagged with the stage it happened at.
//! - `setup`: connect, TLS, greeting, EHLO/HELO, STARTTLS, AUTH, QUIT.
//! - `transaction`: one message step by step, and the shared pieces
//!   (envelope, final replies, reply accounting).
//! - `pipeline`: several transactions per write (RFC 2920, RFC 3030).
//! - `disposition`: the one rule that turns replies into how a message
//!   ended.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::auth::Credentials;
use crate::config::Config;
use crate::message::{MessageFactory, Pattern, RcptTags};
use crate::net::SockOpts;
use crate::policy::fate::{Fate, Mask, TxnRecord};
use crate::policy::runtime::Msg;
use crate::stats::{Fault, Stats};

mod disposition;
mod pipeline;
mod setup;
mod transaction;
mod transport;

pub(crate) use disposition::Disposition;

use disposition::Rep;
use transport::Stream;

/// Everything a shard's connections share (one per shard, behind an `Rc`).
pub(crate) struct Env {
    pub cfg: Arc<Config>,
    pub addr: SocketAddr,
    /// Where connections go when the target is a domain or relays.
    pub targets: Option<Arc<crate::target::Targets>>,
    pub opts: SockOpts,
    pub tls: Option<Arc<ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
    pub creds: Option<Credentials>,
    pub factory: MessageFactory,
    pub from: Pattern,
    pub to: Pattern,
    pub utf8: bool,
    /// Next index into `cfg.source`.
    pub next_source: Cell<usize>,
    /// Shared with the shard so a panic cannot take the measurements
    /// with it.
    pub stats: Rc<RefCell<Stats>>,
}

impl Env {
    fn source(&self) -> Option<IpAddr> {
        let pool = &self.cfg.source;
        if pool.is_empty() {
            return None;
        }
        let i = self.next_source.get();
        self.next_source.set(i.wrapping_add(1));
        Some(pool[i % pool.len()])
    }

    fn stats(&self) -> std::cell::RefMut<'_, Stats> {
        self.stats.borrow_mut()
    }
}

/// What the server offered, reduced to what the client uses.
#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    pipelining: bool,
    chunking: bool,
    starttls: bool,
    size: bool,
}

/// Reused per-connection scratch for the envelope of the message written
/// last: its addresses and its recipients' trace tags.
pub(crate) struct Scratch {
    from: String,
    rcpts: Vec<String>,
    /// All of the message's recipients (a retry offers a subset), for
    /// its trace header.
    tags: RcptTags,
}

impl Scratch {
    pub fn new(max_rcpts: u32) -> Scratch {
        Scratch {
            from: String::with_capacity(64),
            rcpts: (0..max_rcpts).map(|_| String::with_capacity(64)).collect(),
            tags: RcptTags::default(),
        }
    }
}

fn us(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

/// A closed connection's buffers, kept by its slot for the slot's next
/// connection: reconnecting (`--per-conn`, a 421) then allocates and
/// regrows nothing. A slot holds at most what one open connection holds,
/// and buffers grown past [`Spare::KEEP_MAX`] are not kept.
#[derive(Default)]
pub(crate) struct Spare {
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    pending: VecDeque<Txn>,
}

impl Spare {
    /// The largest buffer a slot keeps between connections (a 100 KB
    /// message's write buffer is rebuilt for each connection instead).
    const KEEP_MAX: usize = 64 * 1024;

    /// The buffers of a connection that is over, emptied.
    fn from_conn(mut rbuf: Vec<u8>, mut wbuf: Vec<u8>, mut pending: VecDeque<Txn>) -> Spare {
        let keep = |v: &mut Vec<u8>| {
            v.clear();
            if v.capacity() > Spare::KEEP_MAX {
                *v = Vec::new();
            }
        };
        keep(&mut rbuf);
        keep(&mut wbuf);
        pending.clear();
        Spare {
            rbuf,
            wbuf,
            pending,
        }
    }
}

/// An open session.
pub(crate) struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    caps: Caps,
    last_read: Instant,
    /// The text of the latest transport error (OS, TLS or cap message),
    /// counted with its fault.
    error_text: String,
    /// When the connect started.
    pub opened: Instant,
    /// Transactions attempted on this connection.
    pub txns: u32,
    /// A transaction was left open: RSET before the next.
    dirty: bool,
    /// The connection cannot be used any more (transport error, 421).
    pub broken: bool,
    /// QUIT went out with the last transactions.
    quit_sent: bool,
    /// Transactions written and not yet answered, oldest first.
    pending: VecDeque<Txn>,
    /// The replies of the transaction being read (its recipients' fate).
    rec: Cell<TxnRecord>,
    /// The host or relay of a routed target (relay health hears of its
    /// 421s and deliveries).
    route: Option<crate::target::Candidate>,
}

/// A message a worker took on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Sequence number (seeds its content).
    pub seq: u64,
    /// When it was meant to start (open loop schedule; else `started`).
    pub intended: Instant,
    /// When a worker picked it up.
    pub started: Instant,
    /// Its load stage (`--stages`), 0 without stages.
    pub stage: usize,
    /// Recipients to offer, by index (all of them on a first attempt).
    pub mask: Mask,
    /// With a policy: the message's state across attempts.
    pub msg: Option<Msg>,
    /// The breaker let it through as a half-open probe.
    pub probe: bool,
}

/// Where a connection gets more messages to pipeline, and where it reports
/// how each one ended.
pub(crate) trait JobSource {
    /// A message due now, if any, without waiting (counted as started).
    fn try_next(&self) -> Option<Job>;
    /// No message will come for this connection now: QUIT may go out with
    /// the last transactions.
    fn exhausted(&self) -> bool;
    /// Records how a message ended and what happened to its recipients.
    fn finish(&self, job: &Job, o: Disposition, fate: &Fate);
}

/// A pipelined transaction whose commands are written.
#[derive(Debug, Clone, Copy)]
struct Txn {
    job: Job,
    /// Recipients sent.
    n: u32,
    /// Their indices in the message.
    offered: Mask,
    size: u64,
    /// Preceded by RSET.
    rset: bool,
    /// When the write carrying its commands started.
    sent: Option<Instant>,
}

impl Conn {
    /// Counts a transport error with the text that came with it; the
    /// message (or setup) it ended failed with its kind.
    fn count_fault(&self, env: &Env, fault: Fault) -> Disposition {
        env.stats().fault(fault, &self.error_text);
        Disposition::Failed(fault.kind)
    }
}
