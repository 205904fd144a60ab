//! `--metrics`: the run in the Prometheus text exposition format (0.0.4).
//!
//! A small encoder rather than the `prometheus-client` crate: our latency
//! histograms are HDR histograms that already hold every sample, and that
//! crate's histogram type only takes observations one by one (re-recording
//! each sample per scrape) or a hand-written `EncodeMetric` impl that is
//! larger than this file's histogram code. The output is checked against
//! the reference parser (Python `prometheus_client`) in `tests/live.rs`.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::config::Config;
use crate::policy::breaker::State;
use crate::policy::runtime::Summary;
use crate::stats::{Stage, Stats};
use crate::Row;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency histogram buckets: upper bounds as written in `le` and in
/// microseconds (the unit of the run's HDR histograms). From 100 µs (a
/// loopback reply) to 10 min (RFC 5321's DATA-end timeout), roughly
/// 1-2.5-5 per decade.
pub const BUCKETS: [(&str, u64); 21] = [
    ("0.0001", 100),
    ("0.00025", 250),
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
    ("30", 30_000_000),
    ("60", 60_000_000),
    ("120", 120_000_000),
    ("300", 300_000_000),
    ("600", 600_000_000),
];

/// What one exposition shows: the run's cumulative totals and its last
/// interval, as the collector or the final report has them.
#[derive(Debug)]
pub struct View<'a> {
    /// Everything so far (at the end: the report's totals).
    pub totals: &'a Stats,
    /// Time since the start.
    pub elapsed: Duration,
    /// The last interval and its length.
    pub last: Option<(&'a Row, Duration)>,
    /// The run is still going (0 after the end).
    pub running: bool,
    /// The effective configuration.
    pub config: &'a Config,
    /// The target as reported.
    pub target: &'a str,
    /// With a policy: retries and the breaker.
    pub resilience: Option<&'a Summary>,
}

/// The exposition of `v`.
pub fn encode(v: &View<'_>) -> String {
    let mut e = Enc(String::with_capacity(16 * 1024));
    let c = &v.totals.counters;
    let cfg = v.config;
    e.family(
        "run_info",
        "gauge",
        "The run: target, load model and run id (value 1).",
    );
    e.sample(
        "run_info",
        &[
            ("target", v.target),
            ("mode", if cfg.open_loop() { "open" } else { "closed" }),
            ("run_id", cfg.run_id.as_deref().unwrap_or("")),
        ],
        1.0,
    );
    e.gauge(
        "running",
        "1 while the run lasts, 0 once it ended (final figures).",
        f(v.running),
    );
    e.gauge(
        "elapsed_seconds",
        "Time since the run started.",
        v.elapsed.as_secs_f64(),
    );
    for (name, help, n) in [
        (
            "connections_opened_total",
            "Connections established.",
            c.conn_opened,
        ),
        (
            "connections_failed_total",
            "Connection attempts that failed (connect, TLS or greeting).",
            c.conn_failed,
        ),
        (
            "tls_handshakes_total",
            "TLS handshakes completed.",
            c.tls_handshakes,
        ),
        (
            "tls_resumed_total",
            "TLS handshakes that resumed a session.",
            c.tls_resumed,
        ),
        (
            "messages_offered_total",
            "Sends the load asked for (open loop: scheduled sends that came due).",
            c.offered,
        ),
        (
            "messages_scheduled_total",
            "Open loop: sends scheduled.",
            c.scheduled,
        ),
        ("messages_attempted_total", "Messages started.", c.attempted),
        (
            "messages_late_total",
            "Open loop: messages started later than --late-after.",
            c.late,
        ),
        (
            "messages_not_started_total",
            "Open loop: scheduled sends that never started (no free connection).",
            c.not_started,
        ),
        (
            "recipients_sent_total",
            "Recipients sent (RCPT).",
            c.rcpt_attempted,
        ),
        (
            "recipients_accepted_total",
            "Recipients accepted at RCPT.",
            c.rcpt_accepted,
        ),
        (
            "message_bytes_total",
            "Message bytes sent (before dot-stuffing).",
            c.bytes,
        ),
    ] {
        e.counter(name, help, n);
    }
    e.gauge(
        "connections_open",
        "Connections open now (opened minus sessions ended).",
        v.totals.open_connections() as f64,
    );
    e.family("messages_total", "counter", "Messages ended, by outcome: accepted (2xx), deferred (4xx), rejected (5xx), failed (transport error).");
    for (outcome, n) in [
        ("accepted", c.accepted),
        ("deferred", c.deferred),
        ("rejected", c.rejected),
        ("failed", c.failed),
    ] {
        e.sample("messages_total", &[("outcome", outcome)], n as f64);
    }
    rates(&mut e, v);
    e.family(
        "replies_total",
        "counter",
        "SMTP replies received, by stage and code (enhanced status code when the server sent one).",
    );
    for (k, n) in &v.totals.replies {
        let code = k.code.to_string();
        let enhanced = k.enhanced.map(|(a, b, c)| format!("{a}.{b}.{c}"));
        let mut labels = vec![("stage", k.stage.name()), ("code", code.as_str())];
        if let Some(en) = &enhanced {
            labels.push(("enhanced", en));
        }
        e.sample("replies_total", &labels, *n as f64);
    }
    e.family(
        "transport_errors_total",
        "counter",
        "Failures below the reply level, by stage and kind.",
    );
    for fc in &v.totals.faults {
        e.sample(
            "transport_errors_total",
            &[
                ("stage", fc.fault.stage.name()),
                ("kind", fc.fault.kind.name()),
            ],
            fc.count as f64,
        );
    }
    resilience(&mut e, v.resilience);
    e.family("latency_seconds", "histogram", "Latency per stage (stages with samples): SMTP steps, message, service, latency (from the intended start), lateness, session.");
    for stage in Stage::ALL {
        let h = v.totals.histogram(stage);
        if !h.is_empty() {
            e.histogram("latency_seconds", stage, h);
        }
    }
    e.0
}

/// Offered against achieved, over the last interval and the whole run,
/// and the schedule's rate now (open loop, while running).
fn rates(e: &mut Enc, v: &View<'_>) {
    let c = &v.totals.counters;
    let per = |n: u64, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    for (name, help, which) in [
        ("offered_messages_per_second", "Sends the load asked for per second, over the last interval and the whole run.", true),
        ("achieved_messages_per_second", "Messages accepted per second, over the last interval and the whole run (the report's throughput).", false),
    ] {
        e.family(name, "gauge", help);
        let pick = |c: &crate::stats::Counters| if which { c.offered } else { c.accepted };
        if let Some((row, len)) = v.last {
            e.sample(name, &[("window", "interval")], per(pick(&row.counters), len));
        }
        e.sample(name, &[("window", "run")], per(pick(c), v.elapsed));
    }
    let cfg = v.config;
    if v.running && cfg.open_loop() {
        let now = match &cfg.stages {
            Some(st) => st.value_at(v.elapsed),
            None => cfg.rate.unwrap_or(0.0),
        };
        e.gauge(
            "target_messages_per_second",
            "Open loop: the schedule's rate now (--rate or the current stage).",
            now,
        );
    }
}

/// Retries and the breaker, with a policy.
fn resilience(e: &mut Enc, s: Option<&Summary>) {
    let Some(s) = s else { return };
    e.counter(
        "retries_total",
        "Policy retries: attempts after the first.",
        s.tally.retries,
    );
    if let Some(b) = &s.breaker {
        let now = s.transitions.last().map_or(State::Closed, |t| t.to);
        e.family(
            "breaker_state",
            "gauge",
            "The circuit breaker's state: 1 for the current one.",
        );
        for st in [State::Closed, State::Open, State::HalfOpen] {
            e.sample("breaker_state", &[("state", st.name())], f(st == now));
        }
        e.family(
            "breaker_transitions_total",
            "counter",
            "Circuit breaker transitions, by the state entered.",
        );
        for (to, n) in [
            ("open", b.opened),
            ("closed", b.closed),
            ("half_open", b.half_opened),
        ] {
            e.sample("breaker_transitions_total", &[("to", to)], n as f64);
        }
    }
}

fn f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The text being written; names get the `mailstorm_blast_` prefix.
struct Enc(String);

const PREFIX: &str = "mailstorm_blast_";

impl Enc {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(self.0, "# TYPE {PREFIX}{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let _ = write!(self.0, "{PREFIX}{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(v));
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], v);
    }

    fn counter(&mut self, name: &str, help: &str, n: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], n as f64);
    }

    /// One stage's histogram: cumulative buckets, `_sum` (seconds) and
    /// `_count`, from the HDR histogram's recorded values (each at the
    /// low end of its equivalence range, so a sample exactly on a bound
    /// falls in that bucket; the resolution is 0.1%).
    fn histogram(&mut self, name: &str, stage: Stage, h: &Histogram<u64>) {
        let counts = bucket_counts(h);
        let s = stage.name();
        let bucket = format!("{name}_bucket");
        for ((le, _), n) in BUCKETS.iter().zip(counts.iter()) {
            self.sample(&bucket, &[("stage", s), ("le", le)], *n as f64);
        }
        self.sample(&bucket, &[("stage", s), ("le", "+Inf")], h.len() as f64);
        let sum_us: f64 = h
            .iter_recorded()
            .map(|v| h.median_equivalent(v.value_iterated_to()) as f64 * v.count_at_value() as f64)
            .sum();
        self.sample(&format!("{name}_sum"), &[("stage", s)], sum_us / 1e6);
        self.sample(&format!("{name}_count"), &[("stage", s)], h.len() as f64);
    }
}

/// Cumulative counts of samples at or under each of [`BUCKETS`].
pub fn bucket_counts(h: &Histogram<u64>) -> [u64; BUCKETS.len()] {
    let mut out = [0u64; BUCKETS.len()];
    let mut i = 0;
    let mut below = 0u64;
    for v in h.iter_recorded() {
        let at = h.lowest_equivalent(v.value_iterated_to());
        while i < BUCKETS.len() && at > BUCKETS[i].1 {
            out[i] = below;
            i += 1;
        }
        below += v.count_at_value();
    }
    for o in &mut out[i..] {
        *o = below;
    }
    out
}

/// A sample value: integers without a fraction, infinities as `+Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, Fault, Transport};

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let mut h = new_histogram();
        for us in [50, 100, 101, 2_500, 70_000_000, 900_000_000] {
            h.record(us).unwrap();
        }
        let b = bucket_counts(&h);
        assert_eq!(b[0], 2, "50 µs and 100 µs are ≤ 0.0001 s");
        assert_eq!(b[1], 3);
        assert_eq!(b[4], 4, "2.5 ms on the bound is in le=0.0025");
        assert_eq!(b[16], 4, "70 s is over 30 s");
        assert_eq!(b[17], 4);
        assert_eq!(b[18], 5, "70 s ≤ 120 s");
        assert_eq!(b[20], 5, "15 min is only in +Inf");
        assert!(b.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(bucket_counts(&new_histogram()), [0; 21]);
    }

    #[test]
    fn exposition_has_the_run_and_escapes_labels() {
        let mut t = Stats::default();
        t.counters.accepted = 3;
        t.counters.conn_opened = 2;
        t.reply(Stage::Mail, 250, None);
        t.time(Stage::Mail, 1_500);
        t.time(Stage::Session, 10);
        t.fault(Fault::new(Transport::Reset, Stage::DataEnd), "x");
        let cfg = Config::default();
        let out = encode(&View {
            totals: &t,
            elapsed: Duration::from_secs(2),
            last: None,
            running: false,
            config: &cfg,
            target: "a\"b\\c\nd",
            resilience: None,
        });
        assert!(out.contains("target=\"a\\\"b\\\\c\\nd\""), "{out}");
        assert!(out.contains("mailstorm_blast_messages_total{outcome=\"accepted\"} 3\n"));
        assert!(out.contains("mailstorm_blast_connections_open 1\n"));
        assert!(out.contains("mailstorm_blast_replies_total{stage=\"mail\",code=\"250\"} 1\n"));
        assert!(out.contains(
            "mailstorm_blast_transport_errors_total{stage=\"data_end\",kind=\"reset\"} 1\n"
        ));
        assert!(out.contains(
            "mailstorm_blast_latency_seconds_bucket{stage=\"mail\",le=\"0.001\"} 0\n\
             mailstorm_blast_latency_seconds_bucket{stage=\"mail\",le=\"0.0025\"} 1\n"
        ));
        assert!(out.contains("mailstorm_blast_latency_seconds_sum{stage=\"mail\"} 0.0015"));
        assert!(out.contains("mailstorm_blast_achieved_messages_per_second{window=\"run\"} 1.5\n"));
        assert!(out.contains("mailstorm_blast_running 0\n"));
        // Stages without samples have no series.
        assert!(!out.contains("stage=\"dns\",le"));
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(0.25), "0.25");
    }
}
