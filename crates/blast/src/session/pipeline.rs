//! Pipelined transactions (RFC 2920, RFC 3030): several transactions per
//! write where the server allows, replies attributed in order.

use std::time::{Duration, Instant};

use mailstorm_proto::encode::{
    write_bdat, write_data, write_mail_from, write_quit, write_rcpt_to, write_rset,
};

use super::disposition::{DataEnd, RcptReplies};
use super::transaction::{envelope, Envelope};
use super::{Conn, Disposition, Env, Job, JobSource, Scratch, Txn};
use crate::policy::fate::TxnRecord;
use crate::stats::{Fault, Stage};

impl Conn {
    /// RFC 2920 groups. With CHUNKING, up to `pipeline_depth` transactions
    /// `[RSET] MAIL RCPT… BDAT n LAST`+body go out in one write (RSET before
    /// each one after the first, so a transaction the server left open —
    /// e.g. a BDAT refused for want of recipients — cannot spill into the
    /// next), plus QUIT when the session ends with them. With DATA, the
    /// group ends at DATA and, at depth > 1, the next group (or QUIT) rides
    /// on the body's write. Replies are read in order and attributed to the
    /// transaction they belong to.
    pub(super) async fn pipelined(
        &mut self,
        env: &Env,
        sc: &mut Scratch,
        first: Job,
        src: &dyn JobSource,
    ) -> Result<(), Fault> {
        let cfg = &env.cfg;
        let chunking = cfg.chunking.use_it(self.caps.chunking);
        let depth = cfg.pipeline_depth.max(1) as usize;
        let rset = self.dirty || (cfg.rset && self.txns > 0);
        self.write_txn(env, sc, first, rset, chunking);
        if chunking {
            while self.pending.len() < depth && self.can_take(cfg) {
                let Some(j) = src.try_next() else { break };
                self.write_txn(env, sc, j, true, true);
            }
        }
        let mut quit_at = None;
        let quit = depth > 1 && chunking && self.ends_after(cfg, src);
        if quit {
            write_quit(&mut self.wbuf);
            self.quit_sent = true;
        }
        let t0 = self.send_group(Stage::Mail, cfg.timeouts.data).await?;
        if quit {
            quit_at = Some(t0);
        }
        while let Some(&txn) = self.pending.front() {
            let o = self
                .read_txn(env, sc, txn, src, chunking, depth, &mut quit_at)
                .await?;
            self.pending.pop_front();
            src.finish(&txn.job, o, &self.rec.get().fate(self.broken));
            if self.broken {
                return Ok(());
            }
        }
        if let Some(tq) = quit_at {
            match self.reply(Stage::Quit, cfg.timeouts.quit).await {
                Ok(r) => self.record(env, Stage::Quit, r, tq),
                Err(f) => self.quit_fault(env, f),
            }
        }
        Ok(())
    }

    /// Writes one transaction's commands (and, with CHUNKING, its body).
    fn write_txn(&mut self, env: &Env, sc: &mut Scratch, job: Job, rset: bool, chunking: bool) {
        let Envelope {
            rcpts: n,
            offered,
            size,
        } = envelope(env, sc, &job);
        self.txns += 1;
        env.stats().counters.rcpt_attempted += n as u64;
        if rset {
            write_rset(&mut self.wbuf);
        }
        write_mail_from(
            &mut self.wbuf,
            &sc.from,
            self.caps.size.then_some(size),
            None,
            env.utf8,
        );
        for r in &sc.rcpts[..n] {
            write_rcpt_to(&mut self.wbuf, r);
        }
        if chunking {
            write_bdat(&mut self.wbuf, size, true);
            env.factory
                .write(&mut self.wbuf, job.seq, size, &sc.rcpts[0], &sc.tags, false);
            env.stats().counters.bytes += size;
        } else {
            write_data(&mut self.wbuf);
        }
        self.pending.push_back(Txn {
            job,
            n: n as u32,
            offered,
            size,
            rset,
            sent: None,
        });
    }

    /// Sends the write buffer; stamps the transactions it carries.
    async fn send_group(&mut self, stage: Stage, limit: Duration) -> Result<Instant, Fault> {
        let t0 = self.send(stage, limit).await?;
        for t in self.pending.iter_mut().rev() {
            if t.sent.is_some() {
                break;
            }
            t.sent = Some(t0);
        }
        Ok(t0)
    }

    /// Reads the replies of the oldest pending transaction (with DATA:
    /// sends its body, and at depth > 1 the next group or QUIT with it).
    #[allow(clippy::too_many_arguments)]
    async fn read_txn(
        &mut self,
        env: &Env,
        sc: &mut Scratch,
        txn: Txn,
        src: &dyn JobSource,
        chunking: bool,
        depth: usize,
        quit_at: &mut Option<Instant>,
    ) -> Result<Disposition, Fault> {
        let cfg = &env.cfg;
        let t = &cfg.timeouts;
        let t0 = txn.sent.unwrap_or(self.last_read);
        self.rec.set(TxnRecord::begin(txn.offered));
        if txn.rset {
            let r = self.reply(Stage::Rset, t.rset).await?;
            self.record(env, Stage::Rset, r, t0);
            self.dirty = false;
            if self.broken {
                return Ok(self.message_done(env, t0, Disposition::Deferred));
            }
        }
        let m = self.reply(Stage::Mail, t.mail).await?;
        self.record(env, Stage::Mail, m, t0);
        if self.broken {
            // 421: the server closes; the rest of the group is lost.
            return Ok(self.message_done(env, t0, Disposition::Deferred));
        }
        let mut rcpts = RcptReplies::default();
        for _ in 0..txn.n {
            let r = self.reply(Stage::Rcpt, t.rcpt).await?;
            self.record(env, Stage::Rcpt, r, t0);
            if self.broken {
                return Ok(self.message_done(env, t0, Disposition::Deferred));
            }
            rcpts.add(r);
        }
        env.stats().counters.rcpt_accepted += u64::from(rcpts.accepted);
        if chunking {
            return self.finals(env, t0, t0, m, rcpts).await;
        }
        let d = self.reply(Stage::Data, t.data).await?;
        self.record(env, Stage::Data, d, t0);
        if self.broken {
            return Ok(self.message_done(env, t0, Disposition::Deferred));
        }
        if d.code != 354 {
            self.dirty = m.ok();
            let o = Disposition::of_transaction(m, rcpts, DataEnd::Refused(d.code));
            return Ok(self.message_done(env, t0, o));
        }
        if !m.ok() || rcpts.accepted == 0 {
            // A server that said 354 without recipients: end the empty
            // message to stay in sync.
            self.wbuf.extend_from_slice(b".\r\n");
            let tb = self.send(Stage::DataEnd, t.data).await?;
            let f = self.reply(Stage::DataEnd, t.data_end).await?;
            self.record(env, Stage::DataEnd, f, tb);
            let o = Disposition::of_transaction(m, rcpts, DataEnd::NotReached);
            return Ok(self.message_done(env, t0, o));
        }
        // The group was written last, so the scratch still holds this
        // message's recipients and their tags.
        env.factory.write(
            &mut self.wbuf,
            txn.job.seq,
            txn.size,
            &sc.rcpts[0],
            &sc.tags,
            true,
        );
        env.stats().counters.bytes += txn.size;
        let mut quit = false;
        if depth > 1 {
            // RFC 2920: after the final dot the next group may follow in
            // the same write (the dot ends this transaction whatever its
            // reply, so no RSET is needed).
            if self.can_take(cfg) {
                if let Some(j) = src.try_next() {
                    self.write_txn(env, sc, j, cfg.rset, false);
                }
            }
            if self.pending.len() == 1 && self.ends_after(cfg, src) {
                write_quit(&mut self.wbuf);
                self.quit_sent = true;
                quit = true;
            }
        }
        let tb = self.send_group(Stage::DataEnd, t.data).await?;
        if quit {
            *quit_at = Some(tb);
        }
        self.finals(env, t0, tb, m, rcpts).await
    }
}
