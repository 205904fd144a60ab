//! The ledger join: after a run through a relay, ask the downstream sink
//! what arrived of it (`GET /ledger/{run}`), wait up to `--drain` for the
//! stragglers, and report what the relay lost, duplicated and delayed.
//!
//! The blaster knows how many recipients the relay accepted (a 2xx after
//! the data); the sink knows, per sequence number of this blaster's space,
//! how many recipient deliveries arrived. Lost = accepted − delivered
//! (first deliveries), never negative; more first deliveries than
//! acceptances are `unexpected` (a relay delivering what it refused, or
//! what the blaster gave up on after a timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstorm_sink::ledger::{Ledger, RunFigures};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::BlastError;

/// The `ledger` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// Run id.
    pub run: String,
    /// This blaster's sequence space (8 hex digits).
    pub source: String,
    /// Where the figures came from: `embedded` or the control URL.
    pub from: String,
    /// Recipients the target accepted (2xx after the data).
    pub accepted: u64,
    /// First deliveries of those recipients downstream.
    pub delivered: u64,
    /// Accepted, never arrived (within the drain).
    pub lost: u64,
    /// Deliveries beyond the first.
    pub duplicates: u64,
    /// Messages that arrived again in full.
    pub duplicate_messages: u64,
    /// First deliveries beyond what the target accepted.
    pub unexpected: u64,
    /// First arrivals out of sequence order.
    pub out_of_order: u64,
    /// Arrivals the sink could not record (its memory caps).
    pub dropped: u64,
    /// Everything accepted arrived before the drain ran out.
    pub drained: bool,
    /// How long the join waited, seconds.
    pub waited_s: f64,
    /// End-to-end latency (arrival minus send time) of the whole run, all
    /// sources: summary and mergeable histogram.
    pub e2e: mailstorm_sink::ledger::Latency,
}

/// Where the ledger is read.
pub enum Source {
    /// The embedded sink's ledger.
    Embedded(Arc<Ledger>),
    /// A sink's control API, `http://host:port`.
    Url(String),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Embedded(_) => "embedded".into(),
            Source::Url(u) => u.clone(),
        }
    }

    /// The run's figures; `Ok(None)` while the sink has not seen the run.
    pub fn figures(&self, run: &str) -> Result<Option<RunFigures>, BlastError> {
        match self {
            Source::Embedded(l) => Ok(l.run(run)),
            Source::Url(u) => fetch(u, run),
        }
    }
}

fn fetch(base: &str, run: &str) -> Result<Option<RunFigures>, BlastError> {
    let base = base.trim_end_matches('/');
    let url = if base.contains("://") {
        format!("{base}/ledger/{run}")
    } else {
        format!("http://{base}/ledger/{run}")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(&url)
        .call()
        .map_err(|e| BlastError::Runtime(format!("--ledger {url}: {e}")))?;
    match resp.status().as_u16() {
        404 => Ok(None),
        200 => {
            // The figures are small (a few KiB with the histogram).
            let text = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .map_err(|e| BlastError::Runtime(format!("--ledger {url}: {e}")))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| BlastError::Runtime(format!("--ledger {url}: {e}")))
        }
        s => Err(BlastError::Runtime(format!("--ledger {url}: HTTP {s}"))),
    }
}

/// The run id of `cfg` (a fallback derived from the seed for runs that
/// did not go through [`crate::effective_config`]).
pub fn run_id(cfg: &Config) -> String {
    cfg.run_id
        .clone()
        .unwrap_or_else(|| format!("s{:x}", cfg.seed))
}

/// The trace source of `cfg` (fallback: from the seed).
pub fn source_id(cfg: &Config) -> u32 {
    if cfg.trace_source != 0 {
        cfg.trace_source
    } else {
        (crate::rng::splitmix64(&mut cfg.seed.clone()) >> 32) as u32 | 1
    }
}

/// Picks a run id and a sequence space for a run that has none.
pub(crate) fn pick_ids(c: &mut Config) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut x = now ^ u64::from(std::process::id()).rotate_left(32) ^ c.seed;
    if c.trace_source == 0 {
        c.trace_source = (crate::rng::splitmix64(&mut x) >> 32) as u32 | 1;
    }
    if c.run_id.is_none() {
        c.run_id = Some(format!(
            "{:x}-{:08x}",
            now / 1_000_000,
            crate::rng::splitmix64(&mut x) as u32
        ));
    }
}

/// Waits until every accepted recipient arrived (or `drain` ran out) and
/// joins. `progress` gets a line about once a second.
pub fn join(
    src: &Source,
    cfg: &Config,
    accepted: u64,
    drain: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Joined, BlastError> {
    let run = run_id(cfg);
    let source = format!("{:08x}", source_id(cfg));
    let start = Instant::now();
    let mut last_line = start;
    let mut fig = None;
    loop {
        let f = src.figures(&run)?;
        let delivered = f
            .as_ref()
            .and_then(|f| f.source(&source))
            .map_or(0, |s| s.counts.unique);
        fig = f.or(fig);
        let waited = start.elapsed();
        if delivered >= accepted || waited >= drain {
            break;
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            progress(&format!(
                "ledger: {delivered}/{accepted} delivered after {:.0}s (drain {:.0}s)",
                waited.as_secs_f64(),
                drain.as_secs_f64()
            ));
        }
        // Polling a loopback control API: 50 ms apart is cheap and keeps
        // the join's own delay small.
        std::thread::sleep(Duration::from_millis(50).min(drain - waited));
    }
    let s = fig.as_ref().and_then(|f| f.source(&source));
    let c = s.map(|s| s.counts).unwrap_or_default();
    Ok(Joined {
        run,
        source,
        from: src.name(),
        accepted,
        delivered: c.unique.min(accepted),
        lost: accepted.saturating_sub(c.unique),
        duplicates: c.duplicates,
        duplicate_messages: c.duplicate_messages,
        unexpected: c.unique.saturating_sub(accepted),
        out_of_order: c.out_of_order,
        dropped: c.dropped,
        drained: c.unique >= accepted,
        waited_s: start.elapsed().as_secs_f64(),
        e2e: fig.map(|f| f.e2e).unwrap_or_default(),
    })
}

/// One line for the summary.
pub fn summary(j: &Joined) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "ledger ({}): accepted {} delivered {} lost {} duplicates {} unexpected {}{}\n\
         end-to-end: p50 {:.1}ms p90 {:.1}ms p99 {:.1}ms max {:.1}ms ({} arrivals)\n",
        j.from,
        j.accepted,
        j.delivered,
        j.lost,
        j.duplicates,
        j.unexpected,
        if j.drained {
            String::new()
        } else {
            format!(" (drain ran out after {:.0}s)", j.waited_s)
        },
        ms(j.e2e.p50_us),
        ms(j.e2e.p90_us),
        ms(j.e2e.p99_us),
        ms(j.e2e.max_us),
        j.e2e.count
    )
}
