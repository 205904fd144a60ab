//! Mail transactions step by step (one command, one reply), and what the
//! pipelined path shares with them: the envelope, the final replies and
//! reply accounting.

use std::time::Instant;

use mailstorm_proto::encode::{write_bdat, write_data, write_mail_from, write_rcpt_to, write_rset};

use super::disposition::{DataEnd, Finals, RcptReplies};
use super::{us, Conn, Disposition, Env, Job, JobSource, Rep, Scratch};
use crate::config::Config;
use crate::policy::fate::{Fate, Mask, TxnRecord};
use crate::rng::Rng;
use crate::stats::{Fault, Stage};

impl Conn {
    /// The connection can carry no more transactions (broken, or QUIT
    /// already sent).
    pub fn done(&self) -> bool {
        self.broken || self.quit_sent
    }

    /// Runs message `first` and, when the server pipelines and
    /// `pipeline_depth` allows, more messages taken from `src`; reports
    /// every message's ending to `src`.
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
            Ok(()) => Disposition::Deferred,
            Err(f) => self.count_fault(env, f),
        };
        while let Some(txn) = self.pending.pop_front() {
            src.finish(&txn.job, rest, &Fate::connection_failure(txn.offered));
        }
    }

    pub(super) fn can_take(&self, cfg: &Config) -> bool {
        cfg.per_conn == 0 || self.txns < cfg.per_conn
    }

    pub(super) fn ends_after(&self, cfg: &Config, src: &dyn JobSource) -> bool {
        !self.can_take(cfg) || src.exhausted()
    }

    /// Runs one mail transaction for `job`; returns how it ended and
    /// records every reply and stage time (and, in `rec`, each recipient's
    /// fate).
    async fn transaction(&mut self, env: &Env, sc: &mut Scratch, job: Job) -> Disposition {
        match self.transaction_steps(env, sc, job).await {
            Ok(o) => o,
            Err(f) => self.count_fault(env, f),
        }
    }

    async fn transaction_steps(
        &mut self,
        env: &Env,
        sc: &mut Scratch,
        job: Job,
    ) -> Result<Disposition, Fault> {
        let cfg = &env.cfg;
        let t = &cfg.timeouts;
        let seq = job.seq;
        let Envelope {
            rcpts: n,
            offered,
            size,
        } = envelope(env, sc, &job);
        self.rec.set(TxnRecord::begin(offered));
        let chunking = cfg.chunking.use_it(self.caps.chunking);
        let need_rset = self.dirty || (cfg.rset && self.txns > 0);
        let size_param = self.caps.size.then_some(size);
        self.txns += 1;
        env.stats().counters.rcpt_attempted += n as u64;

        if need_rset {
            write_rset(&mut self.wbuf);
            let t0 = self.send(Stage::Rset, t.rset).await?;
            let r = self.reply(Stage::Rset, t.rset).await?;
            self.record(env, Stage::Rset, r, t0);
            self.dirty = false;
        }
        write_mail_from(&mut self.wbuf, &sc.from, size_param, None, env.utf8);
        let t0 = self.send(Stage::Mail, t.mail).await?;
        let m = self.reply(Stage::Mail, t.mail).await?;
        self.record(env, Stage::Mail, m, t0);
        let mut rcpts = RcptReplies::default();
        if !m.ok() {
            let o = Disposition::of_transaction(m, rcpts, DataEnd::NotReached);
            return Ok(self.message_done(env, t0, o));
        }
        self.dirty = true;
        for r in &sc.rcpts[..n] {
            write_rcpt_to(&mut self.wbuf, r);
            let tr = self.send(Stage::Rcpt, t.rcpt).await?;
            let r = self.reply(Stage::Rcpt, t.rcpt).await?;
            self.record(env, Stage::Rcpt, r, tr);
            if self.broken {
                return Ok(self.message_done(env, t0, Disposition::Deferred));
            }
            rcpts.add(r);
        }
        env.stats().counters.rcpt_accepted += u64::from(rcpts.accepted);
        if rcpts.accepted == 0 {
            let o = Disposition::of_transaction(m, rcpts, DataEnd::NotReached);
            return Ok(self.message_done(env, t0, o));
        }
        let tb = if chunking {
            write_bdat(&mut self.wbuf, size, true);
            env.factory
                .write(&mut self.wbuf, seq, size, &sc.rcpts[0], false);
            env.stats().counters.bytes += size;
            self.send(Stage::DataEnd, t.data).await?
        } else {
            write_data(&mut self.wbuf);
            let td = self.send(Stage::Data, t.data).await?;
            let d = self.reply(Stage::Data, t.data).await?;
            self.record(env, Stage::Data, d, td);
            if d.code != 354 {
                let o = Disposition::of_transaction(m, rcpts, DataEnd::Refused(d.code));
                return Ok(self.message_done(env, t0, o));
            }
            env.factory
                .write(&mut self.wbuf, seq, size, &sc.rcpts[0], true);
            env.stats().counters.bytes += size;
            self.send(Stage::DataEnd, t.data).await?
        };
        self.finals(env, t0, tb, m, rcpts).await
    }

    /// Reads the final reply (LMTP: one per accepted recipient).
    pub(super) async fn finals(
        &mut self,
        env: &Env,
        t_mail: Instant,
        t_body: Instant,
        m: Rep,
        rcpts: RcptReplies,
    ) -> Result<Disposition, Fault> {
        let limit = env.cfg.timeouts.data_end;
        let count = if env.cfg.lmtp && m.ok() {
            rcpts.accepted.max(1)
        } else {
            1
        };
        let mut finals = Finals::default();
        for _ in 0..count {
            let f = self.reply(Stage::DataEnd, limit).await?;
            self.record(env, Stage::DataEnd, f, t_body);
            finals.add(f);
        }
        // Without an accepted recipient the server refused the data but the
        // transaction (MAIL) is still open: RSET before the next one.
        self.dirty = m.ok() && rcpts.accepted == 0;
        let o = Disposition::of_transaction(m, rcpts, DataEnd::Finals(finals));
        Ok(self.message_done(env, t_mail, o))
    }

    pub(super) fn message_done(
        &mut self,
        env: &Env,
        t_mail: Instant,
        o: Disposition,
    ) -> Disposition {
        env.stats().time(Stage::Message, us(t_mail, self.last_read));
        if let (Some(c), Some(t), Disposition::Accepted) = (&self.route, &env.targets, o) {
            t.delivered(c);
        }
        o
    }

    /// Counts reply `r` at `stage` (and its time since `since`), and notes
    /// it in the transaction's record.
    pub(super) fn record(&self, env: &Env, stage: Stage, r: Rep, since: Instant) {
        let mut rec = self.rec.get();
        rec.on_reply(stage, r.code, env.cfg.lmtp);
        self.rec.set(rec);
        if let (Some(c), Some(t)) = (&self.route, &env.targets) {
            t.replied(c, r.code);
        }
        let mut st = env.stats();
        st.reply(stage, r.code, r.enhanced);
        st.time(stage, us(since, self.last_read));
    }
}

/// What [`envelope`] drew for a message.
pub(super) struct Envelope {
    /// Recipients offered (at the front of the scratch).
    pub rcpts: usize,
    /// Their indices in the message.
    pub offered: Mask,
    /// Message size in bytes.
    pub size: u64,
}

/// Writes `job`'s sender and the recipients it offers (compacted to the
/// front of the scratch) and draws its size. Every recipient is drawn, so
/// a retry offering a subset gets the same addresses and size.
pub(super) fn envelope(env: &Env, sc: &mut Scratch, job: &Job) -> Envelope {
    let cfg = &env.cfg;
    let mut rng = Rng::for_item(cfg.seed, job.seq);
    let n = rng.range(u64::from(cfg.rcpts.min), u64::from(cfg.rcpts.max)) as usize;
    env.from.write(&mut sc.from, job.seq);
    let (mut k, mut offered) = (0, 0);
    crate::message::draw_users(&mut rng, n, cfg.users.max(1), |i, user| {
        // Masks cover 64 recipients; policy runs are limited to that.
        if i >= 64 || job.mask >> i & 1 == 1 {
            env.to.write(&mut sc.rcpts[k], user);
            k += 1;
            offered |= 1u64.checked_shl(i as u32).unwrap_or(0);
        }
    });
    if k == 0 {
        // Nothing left to offer cannot happen for a queued retry; keep
        // the transaction well-formed anyway.
        env.to.write(&mut sc.rcpts[0], 0);
        k = 1;
    }
    let size = env.factory.size(&mut rng, job.seq, &sc.rcpts[0]);
    Envelope {
        rcpts: k,
        offered,
        size,
    }
}
