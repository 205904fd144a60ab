//! One connection slot: takes messages, (re)opens sessions as needed, and
//! lets the connection pipeline more messages when it can.

use std::rc::Rc;
use std::time::Duration;

use super::Ctx;
use crate::policy::fate::Fate;
use crate::policy::feedback::{SharedFeedback, Slot};
use crate::session::{Conn, Disposition, Job, JobSource, Scratch, Spare};

/// One worker's view of the shard's jobs, handed to a connection so it can
/// pipeline several.
struct Source<'a> {
    ctx: &'a Ctx,
    slot: u32,
}

impl JobSource for Source<'_> {
    fn try_next(&self) -> Option<Job> {
        let p = self.ctx.try_job(self.slot)?;
        Some(self.ctx.begin(p))
    }

    fn exhausted(&self) -> bool {
        self.ctx.exhausted(self.slot)
    }

    fn finish(&self, job: &Job, o: Disposition, fate: &Fate) {
        self.ctx.end(job, o, fate);
    }
}

/// The slot's loop: wait for the slot to be wanted and (with concurrency
/// feedback) for a connection permit, take a message, open a session if
/// none is open, run it, and close the session when it is done, full, or
/// over the feedback limit. A failed setup backs off before the next try.
pub(super) async fn worker(ctx: Rc<Ctx>, slot: u32) {
    let env = &ctx.env;
    let cfg = &env.cfg;
    let src = Source { ctx: &ctx, slot };
    let feedback = ctx.run.res.as_ref().and_then(|r| r.feedback.as_ref());
    let mut conn: Option<Conn> = None;
    let mut permit = false;
    let mut scratch = Scratch::new(cfg.rcpts.max);
    let mut spare = Spare::default();
    let mut backoff = Duration::ZERO;
    let mut conn_failures = 0u32;
    loop {
        if !ctx.wait_for_slot(slot, &mut conn).await {
            break;
        }
        if conn.is_none() && permit {
            if let Some(f) = feedback {
                f.release();
            }
            permit = false;
        }
        if let (Some(f), None) = (feedback, &conn) {
            if !acquire(&ctx, f).await {
                break;
            }
            permit = true;
        }
        let Some(pick) = ctx.next_job(slot).await else {
            break;
        };
        let job = ctx.begin(pick);
        let mut setup_failed = false;
        if conn.is_none() {
            // Boxed: opening (connect, TLS, AUTH) is the largest of the
            // slot's futures (2.2 KB against 1.9 KB for a transaction), and
            // kept inline it would size every idle or sending worker task.
            match Box::pin(Conn::open(env, &mut spare)).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::ZERO;
                    conn_failures = 0;
                }
                Err(e) => {
                    let o = e.disposition;
                    ctx.end(&job, o, &Fate::connection_failure(job.mask));
                    // With a policy every setup failure (421 greeting
                    // included) is connection-level: back off. A failed
                    // lookup always does: it comes from the negative cache
                    // at no cost, so without a pause the slot would spin
                    // (and starve the shard's other tasks).
                    setup_failed =
                        e.no_route || matches!(o, Disposition::Failed(_)) || ctx.run.res.is_some();
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            c.run(env, &mut scratch, job, &src).await;
            let shrink = feedback.is_some_and(|f| f.over_limit());
            if c.done() || shrink || (cfg.per_conn > 0 && c.txns >= cfg.per_conn) {
                if let Some(c) = conn.take() {
                    spare = c.quit(env).await;
                }
            }
        }
        if setup_failed {
            conn_failures += 1;
            backoff = reconnect_delay(&ctx, slot, backoff, conn_failures);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = ctx.wait_stopped() => {}
            }
        }
    }
    if let Some(c) = conn.take() {
        c.quit(env).await;
    }
    if permit {
        if let Some(f) = feedback {
            f.release();
        }
    }
}

/// The pause after a failed session setup.
fn reconnect_delay(ctx: &Ctx, slot: u32, previous: Duration, failures: u32) -> Duration {
    match &ctx.run.res {
        // Concurrency feedback governs reconnects (the window, and a
        // suspension when the destination is dead), as in Postfix; a short
        // pause keeps a window of one from spinning.
        Some(r) if r.feedback.is_some() => Duration::from_millis(10),
        Some(r) => r
            .policy
            .reconnect_delay(r.seed, ctx.global_slot(slot).into(), failures),
        // Don't spin on a refusing target; each attempt is still counted.
        None => (previous * 2).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    }
}

/// Waits for a connection permit; `false` when the run ends first.
async fn acquire(ctx: &Ctx, f: &SharedFeedback) -> bool {
    loop {
        if ctx.stop.get() || ctx.past_deadline() || ctx.settled() {
            return false;
        }
        let notified = f.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let start = ctx.run.start;
        let wait = match f.acquire(start.elapsed()) {
            Slot::Granted => return true,
            Slot::Wait(w) => w,
        };
        // Releases wake us; a suspension ends by the clock; retries and the
        // end of the run by the shard's own wake-ups.
        let until = wait.map_or(Duration::from_millis(50), |t| {
            t.saturating_sub(start.elapsed())
        });
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(until.min(Duration::from_millis(50))) => {}
            _ = ctx.wait_stopped() => {}
        }
    }
}
