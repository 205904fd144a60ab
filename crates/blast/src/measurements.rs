//! The report's lossless `measurements` section: every counter, reply,
//! fault, load-stage tally and timeline row of a run, with histograms in
//! HdrHistogram's V2 deflate form, so that `merge` rebuilds the exact
//! [`Stats`] and rows a run had and every output (JSON, HTML, thresholds)
//! of a merged run comes from the same code as a single run's.
//! The per-stage histograms are the report's `histograms` section (not
//! repeated here).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{new_histogram, Counters, Fault, Stage, StageTally, Stats, Transport};
use crate::{Row, RunResult};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurements {
    /// Every counter of the run.
    pub counters: Counters,
    /// Replies by stage, code and enhanced code.
    pub replies: Vec<ReplyCount>,
    /// Transport errors by kind and stage, with the first error text.
    pub faults: Vec<FaultEntry>,
    /// Per load stage (`--stages`): tally and end-to-end latency.
    pub load: Vec<LoadEntry>,
    /// One per timeline interval.
    pub rows: Vec<RowEntry>,
}

/// One reply count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyCount {
    /// Stage name (`mail`, `data_end`, …).
    pub stage: String,
    /// Reply code.
    pub code: u16,
    /// Enhanced status code `class.subject.detail`, if the reply had one.
    pub enhanced: Option<[u16; 3]>,
    /// How many.
    pub count: u64,
}

/// One kind@stage of transport errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEntry {
    /// Kind (`reset`, `read_timeout`, …).
    pub kind: String,
    /// Stage name.
    pub stage: String,
    /// How many.
    pub count: u64,
    /// The first error's text.
    pub first_text: String,
}

/// One load stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadEntry {
    /// Its counts.
    pub tally: StageTally,
    /// End-to-end latency histogram (empty string: none recorded).
    pub hdr: String,
}

/// One timeline interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowEntry {
    /// Counters of the interval.
    pub counters: Counters,
    /// 4xx replies.
    pub replies_4xx: u64,
    /// 5xx replies.
    pub replies_5xx: u64,
    /// Transport errors.
    pub errors: u64,
    /// Of those, cut off at the end of the grace period.
    pub aborted: u64,
    /// Connections open at the interval's end.
    pub open_connections: Option<u64>,
    /// Replies by code.
    pub codes: BTreeMap<u16, u64>,
    /// End-to-end latency histogram (empty string: none recorded).
    pub hdr: String,
}

/// Base64 of the histogram in HdrHistogram's V2 compressed (deflate) format.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    B64.encode(mailstorm_sample::encode_v2(h))
}

/// Decodes [`encode_histogram`]'s output (to merge reports).
pub fn decode_histogram(s: &str) -> Option<Histogram<u64>> {
    mailstorm_sample::decode_v2(&B64.decode(s).ok()?)
}

fn hdr(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        String::new()
    } else {
        encode_histogram(h)
    }
}

/// Decodes a histogram field (`""`: empty); `what` names it in errors.
pub fn read_hdr(s: &str, what: &str) -> Result<Histogram<u64>, String> {
    if s.is_empty() {
        return Ok(new_histogram());
    }
    let h = decode_histogram(s).ok_or_else(|| format!("{what}: not a V2 deflate histogram"))?;
    // Decoded histograms keep the writer's settings; make them auto-resize
    // like ours so adding a wider one never fails.
    let mut out = new_histogram();
    out.add(&h).map_err(|e| format!("{what}: {e}"))?;
    Ok(out)
}

fn stage(name: &str, what: &str) -> Result<Stage, String> {
    Stage::from_name(name).ok_or_else(|| format!("{what}: unknown stage {name:?}"))
}

impl Measurements {
    /// The section of a run.
    pub fn of(r: &RunResult) -> Measurements {
        let t = &r.totals;
        Measurements {
            counters: t.counters,
            replies: t
                .replies
                .iter()
                .map(|(k, n)| ReplyCount {
                    stage: k.stage.name().into(),
                    code: k.code,
                    enhanced: k.enhanced.map(|(c, s, d)| [c.into(), s, d]),
                    count: *n,
                })
                .collect(),
            faults: t
                .faults
                .iter()
                .map(|f| FaultEntry {
                    kind: f.fault.kind.name().into(),
                    stage: f.fault.stage.name().into(),
                    count: f.count,
                    first_text: f.first_text.clone(),
                })
                .collect(),
            load: t
                .load
                .iter()
                .enumerate()
                .map(|(i, tally)| LoadEntry {
                    tally: *tally,
                    hdr: t.load_latency.get(i).map(hdr).unwrap_or_default(),
                })
                .collect(),
            rows: r
                .rows
                .iter()
                .map(|row| RowEntry {
                    counters: row.counters,
                    replies_4xx: row.replies_4xx,
                    replies_5xx: row.replies_5xx,
                    errors: row.errors,
                    aborted: row.aborted,
                    open_connections: row.open_connections,
                    codes: row.codes.clone(),
                    hdr: hdr(&row.latency),
                })
                .collect(),
        }
    }

    /// The run's [`Stats`] and rows again; `histograms` is the report's
    /// per-stage `histograms` section (stage name → V2 deflate base64).
    pub fn rebuild(
        &self,
        histograms: &BTreeMap<String, String>,
    ) -> Result<(Stats, Vec<Row>), String> {
        let mut t = Stats {
            counters: self.counters,
            ..Stats::default()
        };
        for r in &self.replies {
            let key = crate::stats::ReplyKey {
                stage: stage(&r.stage, "measurements.replies")?,
                code: r.code,
                enhanced: r
                    .enhanced
                    .map(|[c, s, d]| (c.min(u8::MAX.into()) as u8, s, d)),
            };
            t.replies.push((key, r.count));
        }
        for f in &self.faults {
            let kind = Transport::ALL
                .into_iter()
                .find(|k| k.name() == f.kind)
                .ok_or_else(|| format!("measurements.faults: unknown kind {:?}", f.kind))?;
            let st = stage(&f.stage, "measurements.faults")?;
            t.add_fault(Fault::new(kind, st), f.count, &f.first_text);
        }
        for (i, l) in self.load.iter().enumerate() {
            *t.load_stage(i) = l.tally;
            let h = read_hdr(&l.hdr, &format!("measurements.load[{i}].hdr"))?;
            t.load_latency.resize_with(i + 1, new_histogram);
            t.load_latency[i] = h;
        }
        for (name, b64) in histograms {
            let st = stage(name, "histograms")?;
            t.hist[st.index()] = read_hdr(b64, &format!("histograms.{name}"))?;
        }
        let rows = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(Row {
                    counters: e.counters,
                    replies_4xx: e.replies_4xx,
                    replies_5xx: e.replies_5xx,
                    errors: e.errors,
                    aborted: e.aborted,
                    latency: read_hdr(&e.hdr, &format!("measurements.rows[{i}].hdr"))?,
                    open_connections: e.open_connections,
                    codes: e.codes.clone(),
                })
            })
            .collect::<Result<Vec<Row>, String>>()?;
        Ok((t, rows))
    }
}

/// Adds `o` into `row` (a merged interval: open connections add up, as
/// the processes' connections are distinct).
pub fn add_row(row: &mut Row, o: &Row) {
    row.counters.add(&o.counters);
    row.replies_4xx += o.replies_4xx;
    row.replies_5xx += o.replies_5xx;
    row.errors += o.errors;
    row.aborted += o.aborted;
    let _ = row.latency.add(&o.latency);
    row.open_connections = match (row.open_connections, o.open_connections) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    for (k, n) in &o.codes {
        *row.codes.entry(*k).or_default() += n;
    }
}
