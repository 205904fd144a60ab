//! One SMTP/LMTP client connection: setup (connect, TLS, greeting, EHLO,
//! STARTTLS, AUTH), pipelined or step-by-step transactions, and QUIT.
//!
//! Commands are encoded with the proto crate into a reused write buffer and
//! each pipelined group goes out in one write; replies are parsed in place
//! from a reused read buffer.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstorm_proto::ehlo::Capabilities;
use mailstorm_proto::encode::{
    write_bdat, write_command, write_data, write_ehlo, write_lhlo, write_mail_from, write_quit,
    write_rcpt_to, write_rset,
};
use mailstorm_proto::reply::{parse_reply, EnhancedCode, Reply};
use mailstorm_proto::{Command, Status};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::auth::Credentials;
use crate::config::{AuthMech, Config, StartTls};
use crate::message::{MessageFactory, Pattern};
use crate::net::{self, SockOpts};
use crate::policy::fate::{Fate, Mask, TxnRecord};
use crate::policy::runtime::Msg;
use crate::rng::Rng;
use crate::stats::{Stage, Stats, Transport};

mod pipeline;

/// Replies longer than RFC 5321's 512 octets exist in the wild; be lenient.
const MAX_REPLY_LINE: usize = 4096;

/// Everything a shard's connections share (one per shard, behind an `Rc`).
pub(crate) struct Env {
    pub cfg: Arc<Config>,
    pub addr: SocketAddr,
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
    pub stats: RefCell<Stats>,
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

/// How a message (or the session setup it waited for) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Deferred,
    Rejected,
    Failed(Transport),
}

impl Outcome {
    fn from_code(code: u16) -> Outcome {
        match code / 100 {
            2 | 3 => Outcome::Accepted,
            4 => Outcome::Deferred,
            _ => Outcome::Rejected,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rep {
    code: u16,
    enhanced: Option<EnhancedCode>,
}

impl Rep {
    fn ok(&self) -> bool {
        self.code / 100 == 2
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

impl Caps {
    fn from(c: &Capabilities) -> Caps {
        Caps {
            pipelining: c.pipelining,
            chunking: c.chunking,
            starttls: c.starttls,
            size: c.size.is_some(),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
    async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b).await,
            Stream::Tls(s) => {
                s.write_all(b).await?;
                // rustls buffers records: push them to the socket now.
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// Reused per-connection scratch for addresses.
pub(crate) struct Scratch {
    from: String,
    rcpts: Vec<String>,
}

impl Scratch {
    pub fn new(max_rcpts: u32) -> Scratch {
        Scratch {
            from: String::with_capacity(64),
            rcpts: (0..max_rcpts).map(|_| String::with_capacity(64)).collect(),
        }
    }
}

fn us(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

/// An open session.
pub(crate) struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    caps: Caps,
    last_read: Instant,
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
    fn finish(&self, job: &Job, o: Outcome, fate: &Fate);
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

/// Why a session could not be set up.
pub(crate) type SetupResult = Result<Conn, Outcome>;

impl Conn {
    /// Connects and runs the session setup. Failures are recorded in the
    /// stats (transport errors, replies, `conn_failed`).
    pub async fn open(env: &Env) -> SetupResult {
        let cfg = &env.cfg;
        let t0 = Instant::now();
        let connected = tokio::time::timeout(
            cfg.timeouts.connect,
            net::connect(env.addr, env.source(), &env.opts),
        )
        .await;
        let tcp = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(setup_failed(env, Transport::from_io(&e))),
            Err(_) => return Err(setup_failed(env, Transport::ConnectTimeout)),
        };
        let now = Instant::now();
        {
            let mut st = env.stats();
            st.time(Stage::Connect, us(t0, now));
            st.counters.conn_opened += 1;
        }
        let mut c = Conn {
            stream: Stream::Tcp(tcp),
            rbuf: Vec::with_capacity(8192),
            rpos: 0,
            wbuf: Vec::with_capacity(8192),
            caps: Caps::default(),
            last_read: now,
            opened: t0,
            txns: 0,
            dirty: false,
            broken: false,
            quit_sent: false,
            pending: VecDeque::new(),
            rec: Cell::new(TxnRecord::default()),
        };
        match c.setup(env, now).await {
            Ok(()) => Ok(c),
            Err(o) => {
                env.stats().counters.conn_failed += 1;
                if let Outcome::Failed(t) = o {
                    env.stats().transport(t);
                }
                Err(o)
            }
        }
    }

    async fn setup(&mut self, env: &Env, connected: Instant) -> Result<(), Outcome> {
        let cfg = &env.cfg;
        let t = &cfg.timeouts;
        let mut banner_from = connected;
        if cfg.tls {
            self.handshake(env).await.map_err(Outcome::Failed)?;
            let now = Instant::now();
            env.stats().time(Stage::Tls, us(connected, now));
            banner_from = now;
        }
        let r = self.reply(t.banner).await.map_err(Outcome::Failed)?;
        self.record(env, Stage::Banner, r, banner_from);
        if !r.ok() {
            return Err(Outcome::from_code(r.code));
        }
        self.ehlo(env).await?;
        if cfg.starttls != StartTls::Off {
            if self.caps.starttls {
                let t0 = Instant::now();
                write_command(&mut self.wbuf, &Command::StartTls);
                self.send(t.ehlo).await.map_err(Outcome::Failed)?;
                let r = self.reply(t.ehlo).await.map_err(Outcome::Failed)?;
                env.stats().reply(Stage::Tls, r.code, r.enhanced);
                if r.code == 220 {
                    if self.rpos != self.rbuf.len() {
                        // Data after 220 would be injected into the TLS session.
                        return Err(Outcome::Failed(Transport::MalformedReply));
                    }
                    self.handshake(env).await.map_err(Outcome::Failed)?;
                    env.stats().time(Stage::Tls, us(t0, Instant::now()));
                    // RFC 3207: everything learned before TLS is forgotten.
                    self.ehlo(env).await?;
                } else if cfg.starttls == StartTls::Required {
                    return Err(Outcome::from_code(r.code));
                }
            } else if cfg.starttls == StartTls::Required {
                return Err(Outcome::Failed(Transport::TlsFailure));
            }
        }
        if let Some(creds) = &env.creds {
            self.auth(env, creds).await?;
        }
        Ok(())
    }

    async fn ehlo(&mut self, env: &Env) -> Result<(), Outcome> {
        let cfg = &env.cfg;
        let limit = cfg.timeouts.ehlo;
        if cfg.lmtp {
            write_lhlo(&mut self.wbuf, &cfg.helo);
        } else {
            write_ehlo(&mut self.wbuf, &cfg.helo);
        }
        let t0 = self.send(limit).await.map_err(Outcome::Failed)?;
        let (r, caps) = self
            .reply_with(limit, |rep| {
                rep.is_positive().then(|| Capabilities::from_reply(rep))
            })
            .await
            .map_err(Outcome::Failed)?;
        self.record(env, Stage::Ehlo, r, t0);
        if let Some(c) = caps.filter(|_| r.ok()) {
            self.caps = Caps::from(&c);
            return Ok(());
        }
        if r.code / 100 != 5 || cfg.lmtp {
            return Err(Outcome::from_code(r.code));
        }
        // RFC 5321 §3.2: fall back to HELO (no extensions).
        self.caps = Caps::default();
        write_command(
            &mut self.wbuf,
            &Command::Helo {
                domain: cfg.helo.as_str(),
            },
        );
        let t0 = self.send(limit).await.map_err(Outcome::Failed)?;
        let r = self.reply(limit).await.map_err(Outcome::Failed)?;
        self.record(env, Stage::Ehlo, r, t0);
        if r.ok() {
            Ok(())
        } else {
            Err(Outcome::from_code(r.code))
        }
    }

    async fn auth(&mut self, env: &Env, creds: &Credentials) -> Result<(), Outcome> {
        let limit = env.cfg.timeouts.auth;
        let t0 = Instant::now();
        let fail = |e| Outcome::Failed(e);
        let last = match creds.mech {
            AuthMech::Plain => {
                self.wbuf.extend_from_slice(creds.auth_line());
                self.send(limit).await.map_err(fail)?;
                self.reply(limit).await.map_err(fail)?
            }
            AuthMech::Login => {
                self.wbuf.extend_from_slice(creds.auth_line());
                self.send(limit).await.map_err(fail)?;
                let mut r = self.reply(limit).await.map_err(fail)?;
                for step in creds.login_lines() {
                    if r.code != 334 {
                        break;
                    }
                    self.wbuf.extend_from_slice(step);
                    self.send(limit).await.map_err(fail)?;
                    r = self.reply(limit).await.map_err(fail)?;
                }
                r
            }
            AuthMech::CramMd5 => {
                self.wbuf.extend_from_slice(creds.auth_line());
                self.send(limit).await.map_err(fail)?;
                let (r, challenge) = self
                    .reply_with(limit, |rep| rep.text().to_vec())
                    .await
                    .map_err(fail)?;
                if r.code == 334 {
                    creds.write_cram_md5_line(&challenge, &mut self.wbuf);
                    self.send(limit).await.map_err(fail)?;
                    self.reply(limit).await.map_err(fail)?
                } else {
                    r
                }
            }
        };
        self.record(env, Stage::Auth, last, t0);
        if last.code == 235 {
            Ok(())
        } else {
            Err(Outcome::from_code(last.code.max(400)))
        }
    }

    /// The connection can carry no more transactions (broken, or QUIT
    /// already sent).
    pub fn done(&self) -> bool {
        self.broken || self.quit_sent
    }

    /// Runs message `first` and, when the server pipelines and
    /// `pipeline_depth` allows, more messages taken from `src`; reports
    /// every message's outcome to `src`.
    pub async fn run(&mut self, env: &Env, sc: &mut Scratch, first: Job, src: &dyn JobSource) {
        if !env.cfg.pipelining.use_it(self.caps.pipelining) {
            let o = self.transaction(env, sc, first).await;
            src.finish(&first, o, &self.rec.get().fate(self.broken));
            return;
        }
        let res = self.pipelined(env, sc, first, src).await;
        // Whatever is still pending lost its connection: a transport error,
        // or a 421 (the server would have answered 421 to the rest too).
        let rest = match res {
            Ok(()) => Outcome::Deferred,
            Err(t) => {
                self.broken = true;
                env.stats().transport(t);
                Outcome::Failed(t)
            }
        };
        while let Some(txn) = self.pending.pop_front() {
            src.finish(&txn.job, rest, &Fate::connection_failure(txn.offered));
        }
    }

    fn can_take(&self, cfg: &Config) -> bool {
        cfg.per_conn == 0 || self.txns < cfg.per_conn
    }

    fn ends_after(&self, cfg: &Config, src: &dyn JobSource) -> bool {
        !self.can_take(cfg) || src.exhausted()
    }

    /// Runs one mail transaction for `job`; returns the outcome and
    /// records every reply and stage time (and, in `rec`, each recipient's
    /// fate).
    pub async fn transaction(&mut self, env: &Env, sc: &mut Scratch, job: Job) -> Outcome {
        match self.transaction_inner(env, sc, job).await {
            Ok(o) => o,
            Err(t) => {
                self.broken = true;
                env.stats().transport(t);
                Outcome::Failed(t)
            }
        }
    }

    async fn transaction_inner(
        &mut self,
        env: &Env,
        sc: &mut Scratch,
        job: Job,
    ) -> Result<Outcome, Transport> {
        let cfg = &env.cfg;
        let t = &cfg.timeouts;
        let seq = job.seq;
        let (n, offered, size) = envelope(env, sc, &job);
        self.rec.set(TxnRecord::begin(offered));
        let chunking = cfg.chunking.use_it(self.caps.chunking);
        let need_rset = self.dirty || (cfg.rset && self.txns > 0);
        let size_param = self.caps.size.then_some(size);
        self.txns += 1;
        env.stats().counters.rcpt_attempted += n as u64;

        let mut accepted = 0u32;
        let mut any_4xx = false;
        let rcpt_outcome = |any_4xx: bool| {
            if any_4xx {
                Outcome::Deferred
            } else {
                Outcome::Rejected
            }
        };

        // Step by step: one command, one reply.
        if need_rset {
            write_rset(&mut self.wbuf);
            let t0 = self.send(t.rset).await?;
            let r = self.reply(t.rset).await?;
            self.record(env, Stage::Rset, r, t0);
            self.dirty = false;
        }
        write_mail_from(&mut self.wbuf, &sc.from, size_param, None, env.utf8);
        let t0 = self.send(t.mail).await?;
        let m = self.reply(t.mail).await?;
        self.record(env, Stage::Mail, m, t0);
        if !m.ok() {
            return Ok(self.message_done(env, t0, Outcome::from_code(m.code)));
        }
        self.dirty = true;
        for r in &sc.rcpts[..n] {
            write_rcpt_to(&mut self.wbuf, r);
            let tr = self.send(t.rcpt).await?;
            let r = self.reply(t.rcpt).await?;
            self.record(env, Stage::Rcpt, r, tr);
            if self.broken {
                return Ok(self.message_done(env, t0, Outcome::Deferred));
            }
            if r.ok() {
                accepted += 1;
            }
            any_4xx |= r.code / 100 == 4;
        }
        env.stats().counters.rcpt_accepted += u64::from(accepted);
        if accepted == 0 {
            return Ok(self.message_done(env, t0, rcpt_outcome(any_4xx)));
        }
        let tb = if chunking {
            write_bdat(&mut self.wbuf, size, true);
            env.factory
                .write(&mut self.wbuf, seq, size, &sc.rcpts[0], false);
            env.stats().counters.bytes += size;
            self.send(t.data).await?
        } else {
            write_data(&mut self.wbuf);
            let td = self.send(t.data).await?;
            let d = self.reply(t.data).await?;
            self.record(env, Stage::Data, d, td);
            if d.code != 354 {
                return Ok(self.message_done(env, t0, Outcome::from_code(d.code)));
            }
            env.factory
                .write(&mut self.wbuf, seq, size, &sc.rcpts[0], true);
            env.stats().counters.bytes += size;
            self.send(t.data).await?
        };
        self.finals(env, t0, tb, m, accepted, any_4xx).await
    }

    /// Reads the final reply (LMTP: one per accepted recipient).
    async fn finals(
        &mut self,
        env: &Env,
        t_mail: Instant,
        t_body: Instant,
        m: Rep,
        accepted: u32,
        any_4xx: bool,
    ) -> Result<Outcome, Transport> {
        let limit = env.cfg.timeouts.data_end;
        let count = if env.cfg.lmtp && m.ok() {
            accepted.max(1)
        } else {
            1
        };
        let (mut ok, mut tmp) = (false, false);
        let mut first = None;
        for _ in 0..count {
            let f = self.reply(limit).await?;
            self.record(env, Stage::DataEnd, f, t_body);
            first.get_or_insert(f);
            ok |= f.ok();
            tmp |= f.code / 100 == 4;
        }
        // Without an accepted recipient the server refused the data but the
        // transaction (MAIL) is still open: RSET before the next one.
        self.dirty = m.ok() && accepted == 0;
        let outcome = if !m.ok() {
            Outcome::from_code(m.code)
        } else if accepted == 0 {
            if any_4xx {
                Outcome::Deferred
            } else {
                Outcome::Rejected
            }
        } else if ok {
            Outcome::Accepted
        } else if tmp {
            Outcome::Deferred
        } else {
            Outcome::from_code(first.map_or(554, |f| f.code))
        };
        Ok(self.message_done(env, t_mail, outcome))
    }

    fn message_done(&mut self, env: &Env, t_mail: Instant, o: Outcome) -> Outcome {
        env.stats().time(Stage::Message, us(t_mail, self.last_read));
        o
    }

    /// Ends the session politely with QUIT; errors here are recorded but do
    /// not affect message outcomes.
    pub async fn quit(mut self, env: &Env) {
        if !self.broken && !self.quit_sent {
            write_quit(&mut self.wbuf);
            let limit = env.cfg.timeouts.quit;
            let res = async {
                let t0 = self.send(limit).await?;
                let r = self.reply(limit).await?;
                Ok::<_, Transport>((t0, r))
            }
            .await;
            match res {
                Ok((t0, r)) => self.record(env, Stage::Quit, r, t0),
                // A server that closes right after 221 is fine; others count.
                Err(Transport::UnexpectedClose) => {}
                Err(t) => env.stats().transport(t),
            }
        }
        env.stats()
            .time(Stage::Session, us(self.opened, Instant::now()));
    }

    fn record(&self, env: &Env, stage: Stage, r: Rep, since: Instant) {
        let mut rec = self.rec.get();
        rec.on_reply(stage, r.code, env.cfg.lmtp);
        self.rec.set(rec);
        let mut st = env.stats();
        st.reply(stage, r.code, r.enhanced);
        st.time(stage, us(since, self.last_read));
    }

    /// Writes the whole write buffer; returns when the write started.
    async fn send(&mut self, limit: Duration) -> Result<Instant, Transport> {
        let t0 = Instant::now();
        let res = tokio::time::timeout(limit, self.stream.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        match res {
            Ok(Ok(())) => Ok(t0),
            Ok(Err(e)) => {
                self.broken = true;
                Err(Transport::from_io(&e))
            }
            Err(_) => {
                self.broken = true;
                Err(Transport::ReadTimeout)
            }
        }
    }

    async fn reply(&mut self, limit: Duration) -> Result<Rep, Transport> {
        self.reply_with(limit, |_| ()).await.map(|(r, ())| r)
    }

    /// Waits for the next complete reply; `f` sees it before the buffer
    /// moves on.
    async fn reply_with<T>(
        &mut self,
        limit: Duration,
        f: impl FnOnce(&Reply<'_>) -> T,
    ) -> Result<(Rep, T), Transport> {
        let mut deadline = None;
        loop {
            match parse_reply(&self.rbuf[self.rpos..], MAX_REPLY_LINE) {
                Ok(Status::Complete((r, n))) => {
                    let rep = Rep {
                        code: r.code,
                        enhanced: r.enhanced,
                    };
                    let v = f(&r);
                    self.rpos += n;
                    if rep.code == 421 {
                        // RFC 5321 §3.8: the server closes after 421.
                        self.broken = true;
                    }
                    return Ok((rep, v));
                }
                Ok(Status::Partial) => {}
                Err(_) => {
                    self.broken = true;
                    return Err(Transport::MalformedReply);
                }
            }
            let dl = *deadline.get_or_insert_with(|| Instant::now() + limit);
            self.fill(dl).await?;
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), Transport> {
        if self.rpos > 0 {
            if self.rpos == self.rbuf.len() {
                self.rbuf.clear();
            } else {
                self.rbuf.drain(..self.rpos);
            }
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(8192);
        }
        let res = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.stream.read_buf(&mut self.rbuf),
        )
        .await;
        match res {
            Ok(Ok(0)) => {
                self.broken = true;
                Err(Transport::UnexpectedClose)
            }
            Ok(Ok(_)) => {
                self.last_read = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => {
                self.broken = true;
                Err(Transport::from_io(&e))
            }
            Err(_) => {
                self.broken = true;
                Err(Transport::ReadTimeout)
            }
        }
    }

    async fn handshake(&mut self, env: &Env) -> Result<(), Transport> {
        let (Some(tls), Some(name)) = (&env.tls, &env.server_name) else {
            return Err(Transport::TlsFailure);
        };
        let Stream::Tcp(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(Transport::TlsFailure);
        };
        let connector = TlsConnector::from(tls.clone());
        let res =
            tokio::time::timeout(env.cfg.timeouts.tls, connector.connect(name.clone(), tcp)).await;
        match res {
            Ok(Ok(s)) => {
                self.stream = Stream::Tls(Box::new(s));
                self.last_read = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => {
                self.broken = true;
                // Resets during the handshake are still transport resets.
                Err(match Transport::from_io(&e) {
                    Transport::Reset => Transport::Reset,
                    Transport::UnexpectedClose => Transport::UnexpectedClose,
                    _ => Transport::TlsFailure,
                })
            }
            Err(_) => {
                self.broken = true;
                Err(Transport::TlsFailure)
            }
        }
    }
}

/// Writes `job`'s sender and the recipients it offers (compacted to the
/// front of the scratch) and draws its size. Every recipient is drawn, so
/// a retry offering a subset gets the same addresses and size. Returns
/// (recipients offered, their mask, size).
fn envelope(env: &Env, sc: &mut Scratch, job: &Job) -> (usize, Mask, u64) {
    let cfg = &env.cfg;
    let mut rng = Rng::for_item(cfg.seed, job.seq);
    let n = rng.range(u64::from(cfg.rcpts.min), u64::from(cfg.rcpts.max)) as usize;
    env.from.write(&mut sc.from, job.seq);
    let (mut k, mut offered) = (0, 0);
    for i in 0..n {
        let user = rng.below(cfg.users);
        // Masks cover 64 recipients; policy runs are limited to that.
        if i >= 64 || job.mask >> i & 1 == 1 {
            env.to.write(&mut sc.rcpts[k], user);
            k += 1;
            offered |= 1u64.checked_shl(i as u32).unwrap_or(0);
        }
    }
    if k == 0 {
        // Nothing left to offer cannot happen for a queued retry; keep
        // the transaction well-formed anyway.
        env.to.write(&mut sc.rcpts[0], 0);
        k = 1;
    }
    let size = env.factory.size(&mut rng, job.seq, &sc.rcpts[0]);
    (k, offered, size)
}

/// Outcome of a pipelined transaction whose DATA was refused.
fn early(m: Rep, accepted: u32, any_4xx: bool, d: Rep) -> Outcome {
    if !m.ok() {
        Outcome::from_code(m.code)
    } else if accepted == 0 {
        if any_4xx {
            Outcome::Deferred
        } else {
            Outcome::Rejected
        }
    } else {
        Outcome::from_code(d.code)
    }
}

fn setup_failed(env: &Env, t: Transport) -> Outcome {
    let mut st = env.stats();
    st.transport(t);
    st.counters.conn_failed += 1;
    Outcome::Failed(t)
}
