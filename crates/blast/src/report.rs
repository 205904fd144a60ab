//! Output: the JSON report (schema `mailstorm.report/2`, see
//! `crates/blast/report.schema.json`), the human summary and the timeline.

use std::fmt::Write;

use hdrhistogram::Histogram;
use mailstorm_sample::HistSummary;
use serde_json::{json, Map, Value};

use crate::stats::{Stage, Transport};
use crate::RunResult;

/// The report's schema identifier.
pub const SCHEMA: &str = "mailstorm.report/2";

/// Latency summary of one histogram, microseconds: the shared
/// [`HistSummary`] without `min`, which the report schema does not carry.
pub fn latency_summary(h: &Histogram<u64>) -> Value {
    let sum = HistSummary::of(h);
    json!({
        "count": sum.count,
        "mean": sum.mean,
        "p50": sum.p50,
        "p90": sum.p90,
        "p99": sum.p99,
        "p999": sum.p999,
        "max": sum.max,
    })
}

// The histogram codec lives with the lossless section that uses it most.
pub use crate::measurements::{decode_histogram, encode_histogram};

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The JSON report.
pub fn to_json(r: &RunResult) -> Value {
    let t = &r.totals;
    let c = &t.counters;
    let secs = r.elapsed.as_secs_f64();
    let mut replies = Map::new();
    for (stage, codes) in t.replies_by_stage() {
        let m: Map<String, Value> = codes.into_iter().map(|(k, v)| (k, json!(v))).collect();
        replies.insert(stage.name().into(), Value::Object(m));
    }
    let transport: Map<String, Value> = Transport::ALL
        .iter()
        .map(|k| (k.name().to_string(), json!(t.transport[*k as usize])))
        .collect();
    let mut latency = Map::new();
    let mut hists = Map::new();
    for stage in Stage::ALL {
        let h = t.histogram(stage);
        if h.is_empty() {
            continue;
        }
        latency.insert(stage.name().into(), latency_summary(h));
        hists.insert(stage.name().into(), json!(encode_histogram(h)));
    }
    let config = serde_json::to_value(r.config.redacted()).unwrap_or(Value::Null);
    json!({
        "schema": SCHEMA,
        "targets": [r.target],
        "config": config,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "interrupted": r.interrupted,
        "internal_error": r.internal_error,
        "routing": r.routing,
        "messages": {
            "attempted": c.attempted,
            "accepted": c.accepted,
            "deferred": c.deferred,
            "rejected": c.rejected,
            "failed": c.failed,
        },
        "schedule": {
            "mode": if r.config.open_loop() { "open" } else { "closed" },
            "rate": r.config.rate,
            "scheduled": c.scheduled,
            "late": c.late,
            "not_started": c.not_started,
            "stages": load_stages(r),
        },
        "recipients": {
            "attempted": c.rcpt_attempted,
            "accepted": c.rcpt_accepted,
        },
        "connections": {
            "opened": c.conn_opened,
            "failed": c.conn_failed,
            "tls_handshakes": c.tls_handshakes,
            "tls_resumed": c.tls_resumed,
        },
        "throughput": {
            "messages_per_s": rate(c.accepted, secs),
            "bytes_per_s": rate(c.bytes, secs),
        },
        "replies": replies,
        "transport_errors": transport,
        "latency_us": latency,
        "histograms": hists,
        "resilience": r
            .resilience
            .as_ref()
            .map(|p| crate::policy::report::to_json(p, secs)),
        "interval_s": r.config.interval.as_secs_f64(),
        "timeline": timeline_json(r),
        "run": {
            "id": r.config.run_id,
            "shard": r.config.shard,
            "started_unix_us": unix_us(r.started_at),
            "elapsed_ns": r.elapsed.as_nanos().min(u128::from(u64::MAX)) as u64,
        },
        "measurements": crate::measurements::Measurements::of(r),
    })
}

/// Microseconds since the Unix epoch (0 before it).
pub fn unix_us(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u128::from(u64::MAX)) as u64)
}

/// The line before a report written to standard output (`--report -`), so
/// it can be picked out of a log (`kubectl logs`) that has other lines.
pub const FRAME_BEGIN: &str = "-----BEGIN MAILSTORM REPORT-----";
/// The line after it.
pub const FRAME_END: &str = "-----END MAILSTORM REPORT-----";

/// The report between the frame lines. Pretty-printed: short lines
/// survive log pipelines that split long ones.
pub fn framed(report: &Value) -> String {
    let body = serde_json::to_string_pretty(report).unwrap_or_else(|_| report.to_string());
    format!("{FRAME_BEGIN}\n{body}\n{FRAME_END}\n")
}

/// The timeline rows (what `--timeline` writes as CSV), for the HTML page.
fn timeline_json(r: &RunResult) -> Value {
    r.rows
        .iter()
        .enumerate()
        .map(|(i, row)| timeline_row(i, row, r.config.interval))
        .collect()
}

/// Timeline row `i` (0-based) of the report, `interval` long: also what
/// the live dashboard appends once per interval.
pub fn timeline_row(i: usize, row: &crate::Row, interval: std::time::Duration) -> Value {
    let step = interval.as_secs_f64();
    let c = &row.counters;
    let h = &row.latency;
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    json!({
        "t_s": (((i + 1) as f64 * step) * 1000.0).round() / 1000.0,
        "offered": c.offered,
        "attempted": c.attempted,
        "accepted": c.accepted,
        "deferred": c.deferred,
        "rejected": c.rejected,
        "failed": c.failed,
        "late": c.late,
        "not_started": c.not_started,
        "replies_4xx": row.replies_4xx,
        "replies_5xx": row.replies_5xx,
        "errors": row.errors,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "open_connections": row.open_connections,
        "codes": row.codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<String, Value>>(),
    })
}

/// Adds how the run ended to a report: each `--threshold` result
/// (`null` without `--threshold`) and the outcome (exit code, status and
/// every reason the run did not pass).
pub fn add_outcome(
    report: &mut Value,
    thresholds: Option<&[crate::threshold::Outcome]>,
    exit_code: u8,
    status: &str,
    reasons: &[String],
) {
    report["thresholds"] =
        thresholds.map_or(Value::Null, |t| t.iter().map(|o| o.to_json()).collect());
    report["outcome"] = json!({
        "status": status,
        "exit_code": exit_code,
        "reasons": reasons,
    });
}

/// Per load stage: its definition and what happened to its messages
/// (`null` without `--stages`).
fn load_stages(r: &RunResult) -> Value {
    if r.config.stages.is_none() {
        return Value::Null;
    }
    let r2 = |v: f64| (v * 100.0).round() / 100.0;
    let rows: Vec<Value> = crate::stage_report::figures(r)
        .iter()
        .map(|f| {
            let t = &f.tally;
            json!({
                "start_s": (f.start_s * 1000.0).round() / 1000.0,
                "duration_s": f.duration_s,
                "from": f.from,
                "to": f.to,
                "scheduled": t.scheduled,
                "attempted": t.attempted,
                "accepted": t.accepted,
                "deferred": t.deferred,
                "rejected": t.rejected,
                "failed": t.failed,
                "not_started": t.not_started,
                "late": t.late,
                "offered_rate": r2(f.offered_rate()),
                "achieved_rate": r2(f.achieved_rate()),
                "accept_rate": f.accept_rate().map(|v| (v * 1e4).round() / 1e4),
                "p50_us": f.quantile(0.5),
                "p99_us": f.quantile(0.99),
            })
        })
        .collect();
    Value::Array(rows)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn pct(n: u64, of: u64) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.2}%", n as f64 * 100.0 / of as f64)
    }
}

/// The human summary printed at the end.
pub fn summary(r: &RunResult) -> String {
    let t = &r.totals;
    let c = &t.counters;
    let cfg = &r.config;
    let secs = r.elapsed.as_secs_f64();
    let mut s = String::new();
    let model = match (&cfg.stages, cfg.rate) {
        (Some(st), _) if cfg.open_loop() => format!(
            "open loop, rate stages {st} (up to {} connections)",
            cfg.concurrency
        ),
        (Some(st), _) => format!("closed loop, connection stages {st}"),
        (None, Some(rate)) => format!(
            "open loop {rate} msg/s (up to {} connections)",
            cfg.concurrency
        ),
        (None, None) => format!("closed loop, {} connections", cfg.concurrency),
    };
    let _ = writeln!(
        s,
        "mailstorm-blast → {}: {secs:.2} s, {} shard(s), {model}{}",
        r.target,
        cfg.threads,
        if r.interrupted {
            " (interrupted: partial)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "messages:    attempted {}, accepted {} ({}), deferred {}, rejected {}, failed {}",
        c.attempted,
        c.accepted,
        pct(c.accepted, c.attempted),
        c.deferred,
        c.rejected,
        c.failed
    );
    let _ = writeln!(
        s,
        "throughput:  {:.1} msg/s accepted, {:.2} MB/s of message data",
        rate(c.accepted, secs),
        rate(c.bytes, secs) / 1e6
    );
    let _ = writeln!(
        s,
        "connections: opened {}, failed {}; recipients {} sent, {} accepted",
        c.conn_opened, c.conn_failed, c.rcpt_attempted, c.rcpt_accepted
    );
    if cfg.stages.is_some() {
        stage_table(&mut s, r);
    }
    if cfg.open_loop() {
        let _ = writeln!(
            s,
            "schedule:    {} sends scheduled, {} started late (> {}), {} never started{}",
            c.scheduled,
            c.late,
            crate::config::format_duration(cfg.late_after),
            c.not_started,
            if !r.interrupted
                && c.not_started as f64 > c.scheduled as f64 * crate::verdict::MAX_NOT_OFFERED
            {
                format!(" (all {} connections busy: raise -c)", cfg.concurrency)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        s,
        "\nlatency (ms)     count       mean        p50        p90        p99      p99.9        max"
    );
    for stage in Stage::ALL {
        let h = t.histogram(stage);
        if h.is_empty() {
            continue;
        }
        let sum = HistSummary::of(h);
        // The unrounded mean: the summary's is rounded to 0.1 µs, and this
        // column shows 1 µs in milliseconds.
        let _ = writeln!(
            s,
            "  {:<10} {:>9} {:>10.3} {:>10} {:>10} {:>10} {:>10} {:>10}",
            stage.name(),
            sum.count,
            h.mean() / 1000.0,
            ms(sum.p50),
            ms(sum.p90),
            ms(sum.p99),
            ms(sum.p999.unwrap_or_default()),
            ms(sum.max)
        );
    }
    let by_stage = t.replies_by_stage();
    if !by_stage.is_empty() {
        let _ = writeln!(s, "\nreplies");
        for (stage, codes) in by_stage {
            let list: Vec<String> = codes.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            let _ = writeln!(s, "  {:<10} {}", stage.name(), list.join(", "));
        }
    }
    let errs = transport_errors(t);
    if !errs.is_empty() {
        let _ = writeln!(s, "\ntransport errors: {}", errs.join(", "));
    }
    if let Some(p) = &r.resilience {
        s.push_str(&crate::policy::report::summary(p, secs));
    }
    if let Some(routing) = &r.routing {
        s.push_str(&routing.summary());
    }
    s
}

/// Per load stage: offered and achieved msgs/s, accept rate, latency
/// (p50/p99 from the intended start), deferred (4xx) and rejected (5xx)
/// messages, transport failures, late and never-started sends.
fn stage_table(s: &mut String, r: &RunResult) {
    let unit = if r.config.open_loop() {
        "msg/s"
    } else {
        "conns"
    };
    let _ = writeln!(
        s,
        "\nstage    start  length  {unit:>11}  offered/s achieved/s   accept   p50 ms   p99 ms      4xx      5xx   errors     late  unstart"
    );
    let opt_ms = |v: Option<u64>| v.map_or("-".to_string(), ms);
    for (i, f) in crate::stage_report::figures(r).iter().enumerate() {
        let t = &f.tally;
        let value = if f.from == f.to {
            format!("{}", f.from)
        } else {
            format!("{}..{}", f.from, f.to)
        };
        let _ = writeln!(
            s,
            "  {:<4} {:>6.1}s {:>6.1}s  {:>11}  {:>9.1} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            i + 1,
            f.start_s,
            f.duration_s,
            value,
            f.offered_rate(),
            f.achieved_rate(),
            f.accept_rate()
                .map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0)),
            opt_ms(f.quantile(0.5)),
            opt_ms(f.quantile(0.99)),
            t.deferred,
            t.rejected,
            t.failed,
            t.late,
            t.not_started
        );
    }
}

/// Transport errors for the summary: `kind@stage count ("first error
/// text")`, most frequent first.
fn transport_errors(t: &crate::stats::Stats) -> Vec<String> {
    t.faults_by_count()
        .iter()
        .map(|f| match f.first_text.as_str() {
            "" => format!("{} {}", f.fault, f.count),
            text => format!("{} {} ({text:?})", f.fault, f.count),
        })
        .collect()
}

/// The timeline CSV: one row per interval.
pub fn timeline_csv(r: &RunResult) -> String {
    // New columns go at the end: scripts reading the first eight keep
    // working. Then one `code_NNN` column per reply code seen in the run.
    let codes: std::collections::BTreeSet<u16> = r
        .rows
        .iter()
        .flat_map(|row| row.codes.keys().copied())
        .collect();
    let mut s = String::from(
        "time_s,sent,accepted,4xx,5xx,errors,p50_us,p99_us,offered,late,not_started,\
         open_connections,deferred,rejected,failed",
    );
    for c in &codes {
        let _ = write!(s, ",code_{c}");
    }
    s.push('\n');
    let step = r.config.interval.as_secs_f64();
    for (i, row) in r.rows.iter().enumerate() {
        let h = &row.latency;
        let (p50, p99) = if h.is_empty() {
            (0, 0)
        } else {
            (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
        };
        let c = &row.counters;
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            (i + 1) as f64 * step,
            c.attempted,
            c.accepted,
            row.replies_4xx,
            row.replies_5xx,
            row.errors,
            p50,
            p99,
            c.offered,
            c.late,
            c.not_started,
            row.open_connections
                .map_or(String::new(), |n| n.to_string()),
            c.deferred,
            c.rejected,
            c.failed
        );
        for code in &codes {
            let _ = write!(s, ",{}", row.codes.get(code).copied().unwrap_or(0));
        }
        s.push('\n');
    }
    s
}

/// One line of live progress.
pub fn progress_line(p: &crate::Progress<'_>) -> String {
    let t = &p.totals;
    let h = &p.row.latency;
    let p99 = if h.is_empty() {
        "-".into()
    } else {
        ms(h.value_at_quantile(0.99))
    };
    format!(
        "[{:>6.1}s] {:>8.0} msg/s | accepted {} | 4xx {} | 5xx {} | errors {} | p99 {} ms",
        p.elapsed.as_secs_f64(),
        p.row.counters.accepted as f64 / p.interval.as_secs_f64(),
        t.counters.accepted,
        t.replies_of_class(4),
        t.replies_of_class(5),
        t.transport_errors(),
        p99
    )
}
