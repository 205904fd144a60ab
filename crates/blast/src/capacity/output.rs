//! The capacity search's outputs: the JSON report (schema
//! `mailstorm.capacity/1`, documented in `crates/blast/capacity.schema.json`),
//! the per-step CSV and the terminal table. The HTML page renders the JSON.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::{group, Capacity, Options, Step};
use crate::stats::{Stage, Stats};

/// The capacity report's schema identifier.
pub const SCHEMA: &str = "mailstorm.capacity/1";

fn quantiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p95": h.value_at_quantile(0.95),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
    })
}

fn replies(t: &Stats) -> Value {
    let mut m = Map::new();
    for (stage, codes) in t.replies_by_stage() {
        let c: Map<String, Value> = codes.into_iter().map(|(k, v)| (k, json!(v))).collect();
        m.insert(stage.name().into(), Value::Object(c));
    }
    Value::Object(m)
}

fn errors(t: &Stats) -> Value {
    let mut m: Map<String, Value> = Map::new();
    for f in &t.faults {
        let e = m
            .entry(f.fault.stage.name())
            .or_insert_with(|| Value::Object(Map::new()));
        e[f.fault.kind.name()] = json!(f.count);
    }
    Value::Object(m)
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

/// One step in the report; `threads`: the generator's shards.
pub fn step_json(s: &Step) -> Value {
    let t = &s.measured;
    let c = &t.counters;
    let stages: Map<String, Value> = Stage::ALL
        .iter()
        .filter(|st| !matches!(st, Stage::Latency) && !t.histogram(**st).is_empty())
        .map(|st| (st.name().to_string(), quantiles(t.histogram(*st))))
        .collect();
    json!({
        "index": s.index,
        "phase": s.phase,
        "started_s": round(s.started_s, 3),
        "window_s": round(s.window_s, 3),
        "offered_rate": round(s.rate, 2),
        "offered": c.offered,
        "achieved_rate": round(s.achieved, 2),
        "accept_rate": round(s.accept_rate(), 4),
        "attempted": c.attempted,
        "accepted": c.accepted,
        "deferred": c.deferred,
        "rejected": c.rejected,
        "failed": c.failed,
        "replies_4xx": t.replies_of_class(4),
        "replies_5xx": t.replies_of_class(5),
        "transport_errors_total": t.transport_errors(),
        "latency_us": quantiles(t.histogram(Stage::Latency)),
        "stages_us": stages,
        "replies": replies(t),
        "transport_errors": errors(t),
        "connections": s.connections,
        "connections_opened": c.conn_opened,
        "peak_open_connections": s.peak_connections,
        "late": c.late,
        "not_started": s.unstarted(),
        "generator_cpu_pct": round(s.cpu.generator_pct, 1),
        "generator_kept_up": s.generator_kept_up(),
        "target_cpu_pct": s.cpu.target_pct.map(|v| round(v, 1)),
        "target_rss_bytes": s.cpu.target_rss,
        "sla": s.sla.iter().map(|o| o.to_json()).collect::<Vec<_>>(),
        "passed": s.passed,
        "aborted": s.aborted,
        "limited_by": s.limit.as_ref().map(|(l, _)| l.name()),
        "reason": s.limit.as_ref().map(|(_, why)| why),
    })
}

/// The whole report; `outcome` is filled in by the caller.
pub fn to_json(cap: &Capacity, opts: &Options, cfg: &crate::config::Config, target: &str) -> Value {
    let knee = cap.knee.map(|k| &cap.steps[k]);
    let timeline: Vec<Value> = cap
        .steps
        .iter()
        .flat_map(|s| s.ticks.iter())
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    json!({
        "schema": SCHEMA,
        "targets": [target],
        "config": serde_json::to_value(cfg.redacted()).unwrap_or(Value::Null),
        "search": {
            "start_rate": opts.start_rate,
            "max_rate": opts.max_rate,
            "precision": opts.precision,
            "step_factor": opts.factor,
            "warmup_s": opts.warmup.as_secs_f64(),
            "step_duration_s": opts.step_duration.as_secs_f64(),
            "sla": opts.sla_text,
            "min_achieved": opts.min_achieved,
            "abort_if": opts.abort_text,
            "interval_s": cfg.interval.as_secs_f64(),
        },
        "duration_s": round(cap.elapsed.as_secs_f64(), 3),
        "interrupted": cap.interrupted,
        "steps": cap.steps.iter().map(step_json).collect::<Vec<_>>(),
        "timeline": timeline,
        "capacity": {
            "knee_rate": cap.knee_rate().map(|v| round(v, 2)),
            "knee_step": knee.map(|s| s.index),
            "knee_p99_us": knee.map(|s| s.latency(0.99)),
            "first_bad_rate": cap.first_bad.map(|b| round(cap.steps[b].rate, 2)),
            "max_throughput": round(cap.max_throughput(), 2),
            "per_hour": cap.knee_rate().map(|v| (v * 3600.0).round()),
            "verdict": cap.verdict(),
            "limited_by": cap.limited_by.as_ref().map(|(l, _)| l.name()),
            "limit_reason": cap.limited_by.as_ref().map(|(_, why)| why),
            "aborted_steps": cap.steps.iter().filter(|s| s.aborted.is_some()).map(|s| s.index).collect::<Vec<_>>(),
        },
    })
}

/// `--csv`: one row per step.
pub fn csv(cap: &Capacity) -> String {
    let mut s = String::from(
        "step,phase,offered_rate,achieved_rate,accept_rate,p50_us,p95_us,p99_us,max_us,\
         4xx,5xx,errors,late,not_started,connections,generator_cpu_pct,target_cpu_pct,\
         target_rss_bytes,passed,aborted\n",
    );
    for st in &cap.steps {
        let t = &st.measured;
        let c = &t.counters;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "{},{},{:.2},{:.2},{:.4},{},{},{},{},{},{},{},{},{},{},{:.1},{},{},{},{}",
            st.index,
            if st.phase == super::Phase::Ladder {
                "ladder"
            } else {
                "bisect"
            },
            st.rate,
            st.achieved,
            st.accept_rate(),
            st.latency(0.5),
            st.latency(0.95),
            st.latency(0.99),
            st.latency(1.0),
            t.replies_of_class(4),
            t.replies_of_class(5),
            t.transport_errors(),
            c.late,
            st.unstarted(),
            st.connections,
            st.cpu.generator_pct,
            opt(st.cpu.target_pct),
            st.cpu.target_rss.map_or(String::new(), |v| v.to_string()),
            st.passed,
            st.aborted.is_some()
        );
    }
    s
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// One line per step, as it ends.
pub fn step_line(s: &Step) -> String {
    let verdict = match (&s.aborted, s.passed) {
        (Some(a), _) => format!("ABORTED {a}"),
        (None, true) => "ok".into(),
        (None, false) => {
            let failed: Vec<String> = s
                .sla
                .iter()
                .filter(|o| !o.passed)
                .map(|o| format!("{} (measured {})", o.text, o.measured()))
                .collect();
            if failed.is_empty() {
                format!(
                    "FAILED achieved {} < {:.0}% of offered",
                    group(s.achieved),
                    super::MIN_ACHIEVED * 100.0
                )
            } else {
                format!("FAILED {}", failed.join(", "))
            }
        }
    };
    let c = &s.measured.counters;
    format!(
        "{:>4} {:<7} {:>10} {:>10} {:>7.2}% {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>5} {:>5.0}%  {verdict}",
        s.index,
        if s.phase == super::Phase::Ladder { "ladder" } else { "bisect" },
        group(s.rate),
        group(s.achieved),
        s.accept_rate() * 100.0,
        ms(s.latency(0.5)),
        ms(s.latency(0.95)),
        ms(s.latency(0.99)),
        s.measured.replies_of_class(4),
        s.measured.replies_of_class(5),
        s.measured.transport_errors(),
        c.late,
        s.unstarted(),
        s.connections,
        s.cpu.generator_pct
    )
}

/// The table's header.
pub fn header() -> String {
    format!(
        "{:>4} {:<7} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>5} {:>6}  verdict",
        "step", "phase", "offered/s", "achieved/s", "accept", "p50 ms", "p95 ms", "p99 ms", "4xx",
        "5xx", "errors", "late", "unstart", "conns", "cpu"
    )
}

/// The summary printed at the end: the table sorted by rate, then the
/// verdict.
pub fn summary(cap: &Capacity, target: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "mailstorm-blast capacity → {target}: {} steps in {:.1} s{}",
        cap.steps.len(),
        cap.elapsed.as_secs_f64(),
        if cap.interrupted {
            " (interrupted: partial)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "{}", header());
    let mut order: Vec<&Step> = cap.steps.iter().collect();
    order.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    for st in order {
        let mark = if Some(st.index) == cap.knee.map(|k| cap.steps[k].index) {
            " ← knee"
        } else {
            ""
        };
        let _ = writeln!(s, "{}{mark}", step_line(st));
    }
    let _ = writeln!(s, "\ncapacity: {}", cap.verdict());
    let _ = writeln!(
        s,
        "max throughput seen: {} msgs/s",
        group(cap.max_throughput())
    );
    let aborted: Vec<String> = cap
        .steps
        .iter()
        .filter_map(|st| {
            st.aborted
                .as_ref()
                .map(|a| format!("step {} at {} msgs/s: {a}", st.index, group(st.rate)))
        })
        .collect();
    for a in aborted {
        let _ = writeln!(s, "auto-abort: {a}");
    }
    s
}
