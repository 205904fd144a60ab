//! Mail transactions step by step (one command, one reply), and what the
//! pipelined path shares with them: the envelope, the final replies and
//! reply accounting.

use std::time::Instant;

use mailstorm_proto::encode::{write_bdat, write_data, write_mail_from, write_rcpt_to, write_rset};
use mailstorm_proto::trace::rcpt_tag;

use super::disposition::{DataEnd, Finals, RcptReplies};
use super::{us, Conn, Disposition, Env, Job, JobSource, Rep, Scratch};
use crate::config::Config;
use crate::message::RcptTags;
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
                .write(&mut self.wbuf, seq, size, &sc.rcpts[0], &sc.tags, false);
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
                .write(&mut self.wbuf, seq, size, &sc.rcpts[0], &sc.tags, true);
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
/// front of the scratch), notes every recipient's trace tag in the
/// scratch, and draws its size. Every recipient is drawn, so a retry
/// offering a subset gets the same addresses, tags and size.
pub(super) fn envelope(env: &Env, sc: &mut Scratch, job: &Job) -> Envelope {
    let cfg = &env.cfg;
    let mut rng = Rng::for_item(cfg.seed, job.seq);
    let n = rng.range(u64::from(cfg.rcpts.min), u64::from(cfg.rcpts.max)) as usize;
    env.from.write(&mut sc.from, job.seq);
    let (mut k, mut offered) = (0, 0);
    let tagged = env.factory.tags_rcpts();
    sc.tags = RcptTags::new(n as u32);
    crate::message::draw_users(&mut rng, n, cfg.users.max(1), |i, user| {
        // Masks cover 64 recipients; policy runs are limited to that.
        if i >= 64 || job.mask >> i & 1 == 1 {
            env.to.write(&mut sc.rcpts[k], user);
            if tagged {
                // Hashing the address just built skips formatting `user`
                // a second time (`Pattern::tag`).
                sc.tags.note(i, rcpt_tag(&sc.rcpts[k]));
            }
            k += 1;
            offered |= 1u64.checked_shl(i as u32).unwrap_or(0);
        } else if tagged {
            sc.tags.note(i, env.to.tag(user));
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

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::sync::Arc;

    use mailstorm_proto::trace::{find, Found, MAX_TAGGED};

    use super::*;
    use crate::config::RcptRange;
    use crate::message::{redrawn_tags, MessageFactory, Pattern};
    use crate::net::SockOpts;
    use crate::stats::Stats;

    fn test_env(cfg: Config) -> Env {
        let from = Pattern::new(&cfg.from);
        let to = Pattern::new(&cfg.to);
        Env {
            utf8: from.is_utf8() || to.is_utf8(),
            from,
            to,
            factory: MessageFactory::new(&cfg).unwrap(),
            addr: "127.0.0.1:25".parse().unwrap(),
            targets: None,
            opts: SockOpts::from_config(&cfg),
            tls: None,
            server_name: None,
            creds: None,
            next_source: Cell::new(0),
            stats: Rc::new(RefCell::new(Stats::default())),
            cfg: Arc::new(cfg),
        }
    }

    fn job(seq: u64, mask: Mask) -> Job {
        let now = Instant::now();
        Job {
            seq,
            intended: now,
            started: now,
            stage: 0,
            mask,
            msg: None,
            probe: false,
        }
    }

    fn cfg(seed: u64, rcpts: (u32, u32), users: u64) -> Config {
        Config {
            seed,
            run_id: Some("tags".into()),
            trace_source: 1,
            rcpts: RcptRange {
                min: rcpts.0,
                max: rcpts.1,
            },
            users,
            to: "U{n}@Example.test".into(),
            ..Config::default()
        }
    }

    /// Zeroes the send times (the trace's `t=`, `X-Mailstorm-Sent:`): the
    /// clock moves between two writes of one message.
    fn without_times(mut msg: Vec<u8>) -> Vec<u8> {
        for (key, line_start) in [(&b" t="[..], true), (b"\r\nX-Mailstorm-Sent: ", false)] {
            let hay = if line_start {
                // Only the trace line, which comes first.
                let end = memchr::memchr(b'\n', &msg).unwrap_or(msg.len());
                &msg[..end]
            } else {
                &msg[..]
            };
            if let Some(at) = memchr::memmem::find(hay, key) {
                msg[at + key.len()..at + key.len() + 16].fill(b'0');
            }
        }
        msg
    }

    /// The message as written with the envelope's tags, and with the tags
    /// of the trace's former second draw.
    fn both_ways(env: &Env, sc: &mut Scratch, j: &Job, dot: bool) -> (Vec<u8>, Vec<u8>) {
        let e = envelope(env, sc, j);
        let f = &env.factory;
        let mut carried = Vec::new();
        f.write(&mut carried, j.seq, e.size, &sc.rcpts[0], &sc.tags, dot);
        let mut redrawn = Vec::new();
        let old = redrawn_tags(&env.cfg, j.seq);
        f.write(&mut redrawn, j.seq, e.size, &sc.rcpts[0], &old, dot);
        (without_times(carried), without_times(redrawn))
    }

    #[test]
    fn carried_tags_write_the_bytes_the_second_draw_wrote() {
        let dir = std::env::temp_dir().join(format!("blast-tags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let eml = dir.join("t.eml");
        std::fs::write(&eml, "Subject: n{{seq}}\nTo: {{rcpt}}\n\nbody\n").unwrap();
        let untraced = Config {
            trace: false,
            ..cfg(10, (1, 3), 1000)
        };
        let configs = [
            cfg(1, (1, 1), 1000),
            // Every message to the one user.
            cfg(2, (1, 1), 1),
            // Distinct draws use up the users.
            cfg(3, (3, 3), 3),
            // Too few users to be distinct.
            cfg(4, (3, 3), 2),
            cfg(5, (8, 8), 8),
            cfg(6, (1, 8), 9),
            // More than MAX_TAGGED: counted, not named.
            cfg(7, (9, 9), 5),
            cfg(8, (5, 12), 4),
            cfg(9, (20, 20), 1000),
            Config {
                eml: Some(eml),
                ..cfg(11, (2, 5), 6)
            },
            untraced,
        ];
        let mut traced = 0;
        for c in configs {
            let (seed, rcpts) = (c.seed, c.rcpts);
            let env = test_env(c);
            let mut sc = Scratch::new(rcpts.max);
            for seq in (0..64).chain([1_000_003, u64::MAX / 3]) {
                // A first attempt, and retries offering a subset (the
                // trace still names every recipient).
                for mask in [u64::MAX, 0b1010_1010, 0b1] {
                    for dot in [false, true] {
                        let j = job(seq, mask);
                        let (carried, redrawn) = both_ways(&env, &mut sc, &j, dot);
                        let at = format!("seed {seed} seq {seq} mask {mask:b} dot {dot}");
                        assert_eq!(
                            String::from_utf8_lossy(&carried),
                            String::from_utf8_lossy(&redrawn),
                            "{at}"
                        );
                        match find(&carried) {
                            Found::Trace(t) => {
                                assert_eq!(t.rcpts, redrawn_tags(&env.cfg, seq).count(), "{at}");
                                assert_eq!(
                                    t.tags.is_some(),
                                    rcpts.max as usize <= MAX_TAGGED,
                                    "{at}"
                                );
                                traced += 1;
                            }
                            other => assert!(!env.cfg.trace, "{at}: {other:?}"),
                        }
                    }
                }
            }
        }
        assert_eq!(traced, 10 * 66 * 3 * 2, "every traced message was checked");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn trace_names_the_recipients_the_session_offers() {
        let env = test_env(cfg(11, (1, 8), 9));
        let mut sc = Scratch::new(8);
        for seq in 0..200 {
            let e = envelope(&env, &mut sc, &job(seq, u64::MAX));
            let mut out = Vec::new();
            env.factory
                .write(&mut out, seq, e.size, &sc.rcpts[0], &sc.tags, false);
            let Found::Trace(t) = find(&out) else {
                panic!("seq {seq}: no trace")
            };
            let tags = t.tags.expect("at most 8 recipients: tagged");
            let n = e.rcpts;
            assert_eq!(t.rcpts as usize, n, "seq {seq}");
            for (i, a) in sc.rcpts[..n].iter().enumerate() {
                assert_eq!(tags[i], rcpt_tag(a), "seq {seq} recipient {i}");
            }
            assert!(tags[n..].iter().all(|&t| t == 0), "seq {seq}");
            let mut distinct = sc.rcpts[..n].to_vec();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), n, "seq {seq}: {:?}", &sc.rcpts[..n]);
        }
        // More than MAX_TAGGED recipients: counted, no tags.
        let env = test_env(cfg(11, (9, 9), 9));
        let mut sc = Scratch::new(9);
        let e = envelope(&env, &mut sc, &job(1, u64::MAX));
        let mut out = Vec::new();
        env.factory
            .write(&mut out, 1, e.size, &sc.rcpts[0], &sc.tags, false);
        let Found::Trace(t) = find(&out) else {
            panic!("no trace")
        };
        assert_eq!((t.rcpts, t.tags), (9, None));
        assert!(sc.tags.tags().is_empty());
    }

    /// `n=` and `h=` as the trace wrote them when it drew the recipients a
    /// second time (recorded from that code), which `redrawn_tags` must
    /// keep reproducing for the comparison above to mean anything.
    #[test]
    fn tags_match_those_written_before_they_were_carried() {
        #[rustfmt::skip]
        let want = [
            (11, (1, 8), 9, 0, "0002", "89328382000000000000000000000000"),
            (11, (1, 8), 9, 1, "0001", "81d90000000000000000000000000000"),
            (11, (1, 8), 9, 2, "0004", "1045e2fb81d99d660000000000000000"),
            (11, (1, 8), 9, 77, "0004", "49a4e2fb10459d660000000000000000"),
            (11, (1, 8), 9, 1_000_003, "0002", "e2fb9d66000000000000000000000000"),
            (3, (3, 3), 3, 0, "0003", "054e2e03fd1700000000000000000000"),
            (3, (3, 3), 3, 1, "0003", "054efd172e0300000000000000000000"),
            (3, (3, 3), 3, 2, "0003", "2e03054efd1700000000000000000000"),
            (3, (3, 3), 3, 77, "0003", "054e2e03fd1700000000000000000000"),
            (3, (3, 3), 3, 1_000_003, "0003", "054efd172e0300000000000000000000"),
            (5, (8, 8), 8, 0, "0008", "054e7d247d3e2c7ae42d3cd4fd172e03"),
            (5, (8, 8), 8, 1, "0008", "054e7d3efd173cd42e037d24e42d2c7a"),
            (5, (8, 8), 8, 2, "0008", "7d3e054e2c7afd172e03e42d3cd47d24"),
            (5, (8, 8), 8, 77, "0008", "054e2c7a3cd42e037d24fd177d3ee42d"),
            (5, (8, 8), 8, 1_000_003, "0008", "2e037d3e2c7a7d24054efd17e42d3cd4"),
        ];
        for (seed, rcpts, users, seq, n, h) in want {
            let mut c = cfg(seed, rcpts, users);
            c.run_id = Some("gold".into());
            if seed != 11 {
                c.to = "user{n}@example.test".into();
            }
            let env = test_env(c);
            let mut sc = Scratch::new(rcpts.1);
            let e = envelope(&env, &mut sc, &job(seq, u64::MAX));
            assert_eq!(
                sc.tags,
                redrawn_tags(&env.cfg, seq),
                "seed {seed} seq {seq}"
            );
            let mut out = Vec::new();
            env.factory
                .write(&mut out, seq, e.size, &sc.rcpts[0], &sc.tags, false);
            let line =
                String::from_utf8_lossy(&out[..memchr::memchr(b'\r', &out).unwrap()]).into_owned();
            let field = |k: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(
                (field("n="), field("h=")),
                (n.to_owned(), h.to_owned()),
                "seed {seed} seq {seq}"
            );
        }
    }
}
