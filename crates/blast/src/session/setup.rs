//! Session setup (connect, TLS, greeting, EHLO/HELO, STARTTLS, AUTH) and
//! the polite end (QUIT).

use std::cell::Cell;
use std::time::Instant;

use mailstorm_proto::ehlo::Capabilities;
use mailstorm_proto::encode::{write_command, write_ehlo, write_lhlo, write_quit};
use mailstorm_proto::Command;

use super::transport::{Stream, READ_CHUNK};
use super::{us, Caps, Conn, Disposition, Env, Spare};
use crate::auth::Credentials;
use crate::config::{AuthMech, StartTls};
use crate::net;
use crate::policy::fate::TxnRecord;
use crate::stats::{Fault, Stage, Transport};

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

/// Why a session could not be set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetupFailed {
    /// How the message that waited for the session ends.
    pub disposition: Disposition,
    /// No connection was tried (a DNS failure, no host to try): the slot
    /// must pause before the next try, or a cached failure makes it spin.
    pub no_route: bool,
}

impl From<Disposition> for SetupFailed {
    fn from(disposition: Disposition) -> SetupFailed {
        SetupFailed {
            disposition,
            no_route: false,
        }
    }
}

pub(crate) type SetupResult = Result<Conn, SetupFailed>;

impl Conn {
    /// Connects and runs the session setup, with the buffers `spare`
    /// holds (taken; empty ones when it has none). Failures are recorded
    /// in the stats (transport errors with their stage, replies,
    /// `conn_failed`).
    pub async fn open(env: &Env, spare: &mut Spare) -> SetupResult {
        let Some(targets) = &env.targets else {
            return Conn::open_at(env, env.addr, spare)
                .await
                .map_err(|(d, _)| d.into());
        };
        // RFC 5321 §5.1: try the hosts in order; a connect failure or
        // timeout, no greeting in time, a 4xx greeting or a 421 anywhere
        // in the setup moves on to the next.
        let mut dns_time = |d: std::time::Duration| {
            if !d.is_zero() {
                env.stats().time(Stage::Dns, d.as_micros() as u64);
            }
        };
        let candidates = match targets.candidates(&mut dns_time).await {
            Ok(c) => c,
            Err(e) => {
                let text = match e {
                    crate::target::NoCandidate::Dns(f) => format!("DNS lookup failed: {f:?}"),
                    crate::target::NoCandidate::Other(m) => m,
                };
                let mut st = env.stats();
                st.fault(Fault::new(Transport::Dns, Stage::Dns), &text);
                st.counters.conn_failed += 1;
                // A sender keeps the message queued when DNS fails (RFC
                // 5321 §4.5.4.1 treats it as a temporary failure): the
                // message is deferred, and a retry policy retries it.
                return Err(SetupFailed {
                    disposition: Disposition::Deferred,
                    no_route: true,
                });
            }
        };
        let mut last = Disposition::Failed(Transport::Dns);
        for c in &candidates {
            match Conn::open_at(env, c.addr, spare).await {
                Ok(mut conn) => {
                    targets.outcome(c, true);
                    conn.route = Some(*c);
                    return Ok(conn);
                }
                Err((d, next)) => {
                    targets.outcome(c, !next);
                    if !next {
                        return Err(d.into());
                    }
                    last = d;
                }
            }
        }
        Err(last.into())
    }

    /// Connects to `addr` and sets the session up. The flag says whether
    /// another host should be tried: a connect failure or timeout, a
    /// transport error while waiting for the greeting (no greeting in
    /// time, closed), a 4xx greeting, or a 421 at any step of the setup.
    async fn open_at(
        env: &Env,
        addr: std::net::SocketAddr,
        spare: &mut Spare,
    ) -> Result<Conn, (Disposition, bool)> {
        let cfg = &env.cfg;
        let t0 = Instant::now();
        let connected = tokio::time::timeout(
            cfg.timeouts.connect,
            net::connect(addr, env.source(), &env.opts),
        )
        .await;
        let tcp = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err((
                    connect_failed(env, Transport::from_io(&e), &e.to_string()),
                    true,
                ))
            }
            Err(_) => {
                let text = format!("no connection within {:?}", cfg.timeouts.connect);
                return Err((connect_failed(env, Transport::ConnectTimeout, &text), true));
            }
        };
        let now = Instant::now();
        {
            let mut st = env.stats();
            st.time(Stage::Connect, us(t0, now));
            st.counters.conn_opened += 1;
        }
        let Spare {
            mut rbuf,
            wbuf,
            mut pending,
        } = std::mem::take(spare);
        if rbuf.capacity() == 0 {
            rbuf.reserve_exact(READ_CHUNK);
        }
        if pending.capacity() == 0 {
            // Room for the pipeline depth at once: VecDeque's first growth
            // is 4 transactions (768 bytes), which at depth 1 with 10,000
            // connections was 5.5 MiB of the blaster's RSS.
            pending.reserve_exact(cfg.pipeline_depth.clamp(1, 64) as usize);
        }
        let mut c = Conn {
            stream: Stream::Tcp(tcp),
            rbuf,
            rpos: 0,
            // Grows to the largest write (a message with its commands).
            wbuf,
            caps: Caps::default(),
            last_read: now,
            error_text: String::new(),
            opened: t0,
            txns: 0,
            dirty: false,
            broken: false,
            quit_sent: false,
            pending,
            rec: Cell::new(TxnRecord::default()),
            route: None,
        };
        let mut next_host = false;
        match c.setup(env, now, &mut next_host).await {
            Ok(()) => Ok(c),
            Err(o) => {
                // The connection ends here (dropped, never quit): its
                // session is over too, so every opened connection has a
                // session length and open = opened − sessions.
                let mut st = env.stats();
                st.counters.conn_failed += 1;
                st.time(Stage::Session, us(t0, Instant::now()));
                // A 421 (EHLO, STARTTLS, AUTH) is the one 4xx that marks
                // the connection broken: the server closes (RFC 5321 §3.8).
                let closed_421 = o == Disposition::Deferred && c.broken;
                Err((o, next_host || closed_421))
            }
        }
    }

    /// Greeting to AUTH; transport errors are counted here.
    async fn setup(
        &mut self,
        env: &Env,
        connected: Instant,
        next_host: &mut bool,
    ) -> Result<(), Disposition> {
        let cfg = &env.cfg;
        let t = &cfg.timeouts;
        let mut banner_from = connected;
        if cfg.tls {
            self.handshake(env)
                .await
                .map_err(|f| self.count_fault(env, f))?;
            let now = Instant::now();
            env.stats().time(Stage::Tls, us(connected, now));
            banner_from = now;
        }
        let r = self.reply(Stage::Banner, t.banner).await.map_err(|f| {
            // No greeting (in time): as good as no connection.
            *next_host = true;
            self.count_fault(env, f)
        })?;
        self.record(env, Stage::Banner, r, banner_from);
        if !r.ok() {
            *next_host = r.code / 100 == 4;
            return Err(Disposition::of_code(r.code));
        }
        self.ehlo(env).await?;
        if cfg.starttls != StartTls::Off {
            if self.caps.starttls {
                self.starttls(env).await?;
            } else if cfg.starttls == StartTls::Required {
                let f = self.fault(
                    Transport::TlsFailure,
                    Stage::Tls,
                    "STARTTLS required but not offered",
                );
                return Err(self.count_fault(env, f));
            }
        }
        if let Some(creds) = &env.creds {
            self.auth(env, creds).await?;
        }
        Ok(())
    }

    async fn starttls(&mut self, env: &Env) -> Result<(), Disposition> {
        let cfg = &env.cfg;
        let limit = cfg.timeouts.ehlo;
        let t0 = Instant::now();
        write_command(&mut self.wbuf, &Command::StartTls);
        let r = async {
            self.send(Stage::Tls, limit).await?;
            self.reply(Stage::Tls, limit).await
        }
        .await
        .map_err(|f| self.count_fault(env, f))?;
        env.stats().reply(Stage::Tls, r.code, r.enhanced);
        if r.code != 220 {
            // A 421 closes the connection, whether TLS was required or not.
            if cfg.starttls == StartTls::Required || r.code == 421 {
                return Err(Disposition::of_code(r.code));
            }
            return Ok(());
        }
        if self.rpos != self.rbuf.len() {
            // Data after 220 would be injected into the TLS session.
            let f = self.fault(
                Transport::MalformedReply,
                Stage::Tls,
                "data after the STARTTLS 220 reply",
            );
            return Err(self.count_fault(env, f));
        }
        self.handshake(env)
            .await
            .map_err(|f| self.count_fault(env, f))?;
        env.stats().time(Stage::Tls, us(t0, Instant::now()));
        // RFC 3207: everything learned before TLS is forgotten.
        self.ehlo(env).await
    }

    async fn ehlo(&mut self, env: &Env) -> Result<(), Disposition> {
        let cfg = &env.cfg;
        let limit = cfg.timeouts.ehlo;
        if cfg.lmtp {
            write_lhlo(&mut self.wbuf, &cfg.helo);
        } else {
            write_ehlo(&mut self.wbuf, &cfg.helo);
        }
        let (t0, r, caps) = async {
            let t0 = self.send(Stage::Ehlo, limit).await?;
            let (r, caps) = self
                .reply_with(Stage::Ehlo, limit, |rep| {
                    rep.is_positive().then(|| Capabilities::from_reply(rep))
                })
                .await?;
            Ok::<_, Fault>((t0, r, caps))
        }
        .await
        .map_err(|f| self.count_fault(env, f))?;
        self.record(env, Stage::Ehlo, r, t0);
        if let Some(c) = caps.filter(|_| r.ok()) {
            self.caps = Caps::from(&c);
            return Ok(());
        }
        if r.code / 100 != 5 || cfg.lmtp {
            return Err(Disposition::of_code(r.code));
        }
        // RFC 5321 §3.2: fall back to HELO (no extensions).
        self.caps = Caps::default();
        write_command(
            &mut self.wbuf,
            &Command::Helo {
                domain: cfg.helo.as_str(),
            },
        );
        let (t0, r) = async {
            let t0 = self.send(Stage::Ehlo, limit).await?;
            Ok::<_, Fault>((t0, self.reply(Stage::Ehlo, limit).await?))
        }
        .await
        .map_err(|f| self.count_fault(env, f))?;
        self.record(env, Stage::Ehlo, r, t0);
        if r.ok() {
            Ok(())
        } else {
            Err(Disposition::of_code(r.code))
        }
    }

    async fn auth(&mut self, env: &Env, creds: &Credentials) -> Result<(), Disposition> {
        let t0 = Instant::now();
        let last = self
            .auth_exchange(env, creds)
            .await
            .map_err(|f| self.count_fault(env, f))?;
        self.record(env, Stage::Auth, last, t0);
        if last.code == 235 {
            Ok(())
        } else {
            // A 334 left hanging (or any odd code) is no acceptance.
            Err(Disposition::of_code(last.code.max(400)))
        }
    }

    /// The AUTH command and its challenge-response steps; the last reply.
    async fn auth_exchange(&mut self, env: &Env, creds: &Credentials) -> Result<super::Rep, Fault> {
        let limit = env.cfg.timeouts.auth;
        let stage = Stage::Auth;
        Ok(match creds.mech {
            AuthMech::Plain => {
                self.wbuf.extend_from_slice(creds.auth_line());
                self.send(stage, limit).await?;
                self.reply(stage, limit).await?
            }
            AuthMech::Login => {
                self.wbuf.extend_from_slice(creds.auth_line());
                self.send(stage, limit).await?;
                let mut r = self.reply(stage, limit).await?;
                for step in creds.login_lines() {
                    if r.code != 334 {
                        break;
                    }
                    self.wbuf.extend_from_slice(step);
                    self.send(stage, limit).await?;
                    r = self.reply(stage, limit).await?;
                }
                r
            }
            AuthMech::CramMd5 => {
                self.wbuf.extend_from_slice(creds.auth_line());
                self.send(stage, limit).await?;
                let (r, challenge) = self
                    .reply_with(stage, limit, |rep| rep.text().to_vec())
                    .await?;
                if r.code != 334 {
                    return Ok(r);
                }
                creds.write_cram_md5_line(&challenge, &mut self.wbuf);
                self.send(stage, limit).await?;
                self.reply(stage, limit).await?
            }
        })
    }

    /// Ends the session politely with QUIT (unless it is broken or QUIT
    /// went out already); errors here are recorded but do not affect
    /// message outcomes. Gives back the buffers for the slot's next
    /// connection.
    pub async fn quit(mut self, env: &Env) -> Spare {
        if !self.broken && !self.quit_sent {
            write_quit(&mut self.wbuf);
            let limit = env.cfg.timeouts.quit;
            let res = async {
                let t0 = self.send(Stage::Quit, limit).await?;
                let r = self.reply(Stage::Quit, limit).await?;
                Ok::<_, Fault>((t0, r))
            }
            .await;
            match res {
                Ok((t0, r)) => self.record(env, Stage::Quit, r, t0),
                Err(f) => self.quit_fault(env, f),
            }
        }
        env.stats()
            .time(Stage::Session, us(self.opened, Instant::now()));
        Spare::from_conn(self.rbuf, self.wbuf, self.pending)
    }

    /// A server that closes right after 221 is fine; other QUIT errors
    /// count.
    pub(super) fn quit_fault(&self, env: &Env, f: Fault) {
        if f.kind != Transport::UnexpectedClose {
            self.count_fault(env, f);
        }
    }
}

/// A failed connect: counted as a transport error at `connect`.
fn connect_failed(env: &Env, kind: Transport, text: &str) -> Disposition {
    let mut st = env.stats();
    st.fault(Fault::new(kind, Stage::Connect), text);
    st.counters.conn_failed += 1;
    Disposition::Failed(kind)
}
