//! Checking that the parts form one run, and adding them up.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::input::Part;
use super::MergeError;
use crate::ledger::Joined;
use crate::measurements::add_row;
use crate::stats::Stats;
use crate::{Row, RunResult};

/// Settings every shard of one run shares: a part that differs in one is
/// from another run (or a mistyped command line).
const SHARED: &[&str] = &[
    "rate",
    "stages",
    "stages_mode",
    "concurrency",
    "messages",
    "duration",
    "interval",
    "seed",
    "rcpts",
    "size",
];

/// What the merge found, for the report's `merge` section.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// Shard count of the run (1 for an unsharded report).
    pub count: u32,
    /// Shard indexes missing (only with `--allow-partial`).
    pub missing: Vec<u32>,
}

/// Sorts the parts by shard and checks they are the shards of one run:
/// one run id, the same load settings, each shard once, none missing
/// unless `allow_partial`.
pub fn check(parts: &mut [Part], allow_partial: bool) -> Result<Coverage, MergeError> {
    parts.sort_by(|a, b| {
        (a.shard.map(|s| s.index), &a.file).cmp(&(b.shard.map(|s| s.index), &b.file))
    });
    let first = &parts[0];
    let base = serde_json::to_value(&first.result.config).unwrap_or(Value::Null);
    for p in parts.iter().skip(1) {
        if p.run_id != first.run_id {
            return Err(MergeError::part(
                &p.file,
                format!(
                    "run id {:?}, but {} is of run {:?}: parts of different runs",
                    p.run_id, first.file, first.run_id
                ),
            ));
        }
        let cfg = serde_json::to_value(&p.result.config).unwrap_or(Value::Null);
        for k in SHARED {
            if cfg.get(k) != base.get(k) {
                return Err(MergeError::part(
                    &p.file,
                    format!(
                        "config.{k} is {}, but {} has {}: not the same run's settings",
                        cfg.get(k).unwrap_or(&Value::Null),
                        first.file,
                        base.get(k).unwrap_or(&Value::Null)
                    ),
                ));
            }
        }
    }
    let count = match first.shard {
        None if parts.len() == 1 => {
            return Ok(Coverage {
                count: 1,
                missing: Vec::new(),
            })
        }
        None => {
            return Err(MergeError::part(
                &first.file,
                "not a shard (run without --shard): only a sharded run's parts merge".to_string(),
            ))
        }
        Some(s) => s.count,
    };
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for p in parts.iter() {
        let Some(s) = p.shard else {
            return Err(MergeError::part(
                &p.file,
                "not a shard (run without --shard), unlike the other parts".to_string(),
            ));
        };
        if s.count != count {
            return Err(MergeError::part(
                &p.file,
                format!(
                    "shard {s}, but {} is of a run of {count} shards",
                    first.file
                ),
            ));
        }
        if let Some(other) = seen.insert(s.index, &p.file) {
            return Err(MergeError::part(
                &p.file,
                format!("shard {s} again (also in {other}): each shard once"),
            ));
        }
    }
    let missing: Vec<u32> = (0..count).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() && !allow_partial {
        let list: Vec<String> = missing.iter().map(|i| format!("{i}/{count}")).collect();
        return Err(MergeError::Missing(format!(
            "run {:?}: shard(s) {} missing ({} of {count} given); --allow-partial merges \
             what is there",
            first.run_id,
            list.join(", "),
            parts.len()
        )));
    }
    Ok(Coverage { count, missing })
}

/// The whole run: counts and histograms added, timelines aligned on the
/// wall clock (a part's row `k` lands at its start's offset from the
/// earliest start, in whole intervals, plus `k`), ledgers joined.
pub fn combine(parts: &[Part]) -> RunResult {
    let first = &parts[0].result;
    let interval_us = first.config.interval.as_micros().max(1) as i128;
    let t0 = parts.iter().map(|p| p.started_us).min().unwrap_or(0);
    let mut totals = Stats::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut end = Duration::ZERO;
    let mut config = first.config.clone();
    config.shard = None;
    config.trace_source = 0;
    config.threads = 0;
    config.source.clear();
    let mut errors = Vec::new();
    for p in parts {
        let r = &p.result;
        totals.merge(&r.totals);
        let since = u128::from(p.started_us - t0);
        // Rounded: shards started by --start-at are a few ms apart.
        let off = ((since as i128 + interval_us / 2) / interval_us) as usize;
        for (k, row) in r.rows.iter().enumerate() {
            if rows.len() <= off + k {
                rows.resize_with(off + k + 1, Row::default);
            }
            add_row(&mut rows[off + k], row);
        }
        end = end.max(Duration::from_micros(since as u64) + r.elapsed);
        config.threads += r.config.threads;
        for a in &r.config.source {
            if !config.source.contains(a) {
                config.source.push(*a);
            }
        }
        if let Some(e) = &r.internal_error {
            errors.push(format!("{}: {e}", p.file));
        }
    }
    RunResult {
        totals,
        rows,
        elapsed: end,
        config,
        target: first.target.clone(),
        interrupted: parts.iter().any(|p| p.result.interrupted),
        resilience: None,
        internal_error: (!errors.is_empty()).then(|| errors.join("; ")),
        ledger: join_ledgers(parts),
        routing: None,
        started_at: UNIX_EPOCH + Duration::from_micros(t0),
    }
}

/// The shards' ledger joins as one: each counted its own sequence space,
/// so the counts add up; the end-to-end latency is the sink's figure for
/// the whole run, so the latest (largest) view of it is kept.
fn join_ledgers(parts: &[Part]) -> Option<Joined> {
    let mut it = parts.iter().filter_map(|p| p.result.ledger.as_ref());
    let mut j = it.next()?.clone();
    for l in it {
        j.accepted += l.accepted;
        j.delivered += l.delivered;
        j.lost += l.lost;
        j.duplicates += l.duplicates;
        j.duplicate_messages += l.duplicate_messages;
        j.unexpected += l.unexpected;
        j.out_of_order += l.out_of_order;
        j.dropped += l.dropped;
        j.drained &= l.drained;
        j.waited_s = j.waited_s.max(l.waited_s);
        j.source = format!("{},{}", j.source, l.source);
        if l.e2e.count > j.e2e.count {
            j.e2e = l.e2e.clone();
        }
    }
    Some(j)
}

/// The report's `merge` section; `no_report`: the parts left out for
/// holding no report (file, last line).
pub fn section(parts: &[Part], cov: &Coverage, no_report: &[(String, Option<String>)]) -> Value {
    let mut unmerged: Vec<&str> = parts.iter().flat_map(|p| p.unmerged.clone()).collect();
    unmerged.sort_unstable();
    unmerged.dedup();
    json!({
        "shards": cov.count,
        "partial": !cov.missing.is_empty(),
        "missing": cov.missing,
        "not_merged": unmerged,
        "no_report": no_report.iter().map(|(file, last)| json!({
            "file": file,
            "last_line": last,
        })).collect::<Vec<Value>>(),
        "parts": parts.iter().map(|p| json!({
            "file": p.file,
            "shard": p.shard,
            "started_unix_us": p.started_us,
            "accepted": p.result.totals.counters.accepted,
        })).collect::<Vec<Value>>(),
    })
}
