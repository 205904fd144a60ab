//! Runs a scenario: the embedded sink with the plan, the profile against
//! it, then the measurements every expectation is checked against.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailstorm_sink::plan::referee::HistogramSummary;
use mailstorm_sink::plan::{Engine, RefereeReport};
use serde_json::Value;

use super::expect::{self, Checked, Measurements};
use super::Scenario;
use crate::config::Config;
use crate::ledger::{self, Joined, Source};
use crate::policy::PolicySpec;
use crate::{BlastError, RunParams, RunResult, StopSignal};

/// Command-line overrides for a scenario run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--time-scale` (wins over the scenario's).
    pub time_scale: Option<f64>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// Do not pin shard threads.
    pub no_pin: bool,
    /// `-q`: no ledger drain progress (a relay scenario waiting for its
    /// downstream).
    pub quiet: bool,
}

/// What a scenario run produced.
#[derive(Debug)]
pub struct ScenarioOutcome {
    /// The blaster's run.
    pub run: RunResult,
    /// Every measured value.
    pub measurements: Measurements,
    /// Each expectation, checked.
    pub checks: Vec<Checked>,
    /// The sink's referee report (`GET /clients`).
    pub clients: RefereeReport,
    /// The sink's counters at the end.
    pub sink: mailstorm_sink::StatsSnapshot,
    /// The ledger join (`None` without the trace header or a downstream).
    pub ledger: Option<Joined>,
    /// The downstream sink's control URL, with a relay target.
    pub downstream: Option<String>,
}

impl ScenarioOutcome {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The expectations that failed, as written.
    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.text.as_str())
            .collect()
    }
}

/// The effective blast configuration of `scn` under `opts`.
pub fn config(scn: &Scenario, opts: &Options) -> Result<Config, BlastError> {
    let mut cfg = scn.config.clone();
    // Without a policy every message gets one attempt, still tallied.
    cfg.policy.get_or_insert_with(|| PolicySpec {
        max_attempts: Some(1),
        ..PolicySpec::default()
    });
    if let Some(t) = opts.time_scale.or(scn.time_scale) {
        cfg.time_scale = Some(t);
    }
    if let Some(t) = opts.threads {
        cfg.threads = t;
    }
    if let Some(s) = opts.seed {
        cfg.seed = s;
    }
    if cfg.seed == 0 {
        // Scenarios replay: a fixed default seed, not the clock.
        cfg.seed = 1;
    }
    if opts.no_pin {
        cfg.pin = false;
    }
    cfg.quiet = true;
    crate::effective_config(&cfg)
}

/// Runs `scn`: starts the embedded sink with its plan (or, with a relay
/// `target:`, loads the plan into the downstream sink), blasts it, joins
/// the ledger and checks the expectations.
pub fn run(scn: &Scenario, opts: &Options) -> Result<ScenarioOutcome, BlastError> {
    let cfg = config(scn, opts)?;
    match &scn.target {
        None => run_embedded(scn, cfg),
        Some(t) => run_relay(scn, cfg, t, opts.quiet),
    }
}

fn run_embedded(scn: &Scenario, cfg: Config) -> Result<ScenarioOutcome, BlastError> {
    let engine = Arc::new(Engine::new());
    if let Some((yaml, origin)) = &scn.plan {
        engine
            .load_bytes(yaml.as_bytes(), None, origin)
            .map_err(|e| BlastError::Config(format!("scenario plan: {e}")))?;
    }
    let local: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    let mut b = mailstorm_sink::Sink::builder()
        .hostname("localhost")
        .lmtp(cfg.lmtp)
        .tls(cfg.uses_tls())
        .fault_engine(engine.clone());
    b = if cfg.tls {
        b.tls_listen(local)
    } else {
        b.listen(local)
    };
    let sink = b
        .start()
        .map_err(|e| BlastError::Config(format!("embedded sink: {e}")))?;
    let addr = if cfg.tls {
        sink.tls_addrs()[0]
    } else {
        sink.local_addr()
    };
    crate::net::raise_nofile(crate::fds_needed(&cfg, true))?;
    let params = RunParams {
        config: cfg,
        addr,
        target: addr.to_string(),
        host: addr.ip().to_string(),
        trusted_pem: sink.self_signed_cert_pem().map(String::into_bytes),
        stop: StopSignal::new(),
        preflight: None,
    };
    let run = crate::run(&params, |_| {})?;
    // The embedded sink already holds every arrival: the join is at once,
    // with no progress to show.
    let src = Source::Embedded(sink.ledger().clone());
    let ledger = join_ledger(&src, &params.config, &run, Duration::ZERO, true)?;
    let clients = engine.referee_report();
    let stats = sink.shutdown_with_grace(Duration::from_secs(1));
    Ok(judged(scn, run, Some((clients, stats)), ledger, None))
}

/// The ledger join for a traced run that ended without an internal error;
/// unless `quiet`, a progress line a second while it waits (never with a
/// zero `drain`).
fn join_ledger(
    src: &Source,
    cfg: &Config,
    run: &RunResult,
    drain: Duration,
    quiet: bool,
) -> Result<Option<Joined>, BlastError> {
    if !cfg.trace || run.internal_error.is_some() {
        return Ok(None);
    }
    let accepted = run.totals.counters.rcpt_delivered;
    ledger::join(src, cfg, accepted, drain, |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })
    .map(Some)
}

/// Measures the run (with the sink's referee and counters when one was
/// reachable) and checks the expectations.
fn judged(
    scn: &Scenario,
    run: RunResult,
    sink: Option<(RefereeReport, mailstorm_sink::StatsSnapshot)>,
    ledger: Option<Joined>,
    downstream: Option<String>,
) -> ScenarioOutcome {
    let measurements = measure(&run, sink.as_ref().map(|(c, s)| (c, s)), ledger.as_ref());
    let checks = expect::evaluate(&scn.expectations, &measurements);
    let (clients, sink) = sink.unwrap_or_default();
    ScenarioOutcome {
        run,
        measurements,
        checks,
        clients,
        sink,
        ledger,
        downstream,
    }
}

/// Against a relay: the downstream sink (when named) is reset and gets the
/// plan, the profile is sent to the relay, the ledger join waits up to the
/// profile's `drain` for the relay to deliver, then the downstream's
/// counters and referee are read and its plan cleared again.
fn run_relay(
    scn: &Scenario,
    cfg: Config,
    target: &str,
    quiet: bool,
) -> Result<ScenarioOutcome, BlastError> {
    let (addr, host) = crate::net::resolve(target)?;
    if !addr.ip().is_loopback() && !cfg.allow_remote {
        return Err(BlastError::Config(format!(
            "target {target} ({}) is outside loopback: add `allow_remote: true` to the profile \
             if you mean to load it",
            addr.ip()
        )));
    }
    let down = scn.downstream.as_deref().map(Downstream::new);
    if let Some(d) = &down {
        d.post("/reset")?;
        match &scn.plan {
            Some((yaml, _)) => d.put_plan(yaml)?,
            None => d.delete("/plan")?,
        }
    }
    crate::net::raise_nofile(crate::fds_needed(&cfg, false))?;
    let params = RunParams {
        config: cfg,
        addr,
        target: target.to_string(),
        host,
        trusted_pem: None,
        stop: StopSignal::new(),
        preflight: None,
    };
    let outcome = (|| {
        let run = crate::run(&params, |_| {})?;
        let Some(d) = &down else {
            return Ok(judged(scn, run, None, None, None));
        };
        let src = Source::Url(d.base.clone());
        let ledger = join_ledger(&src, &params.config, &run, params.config.drain, quiet)?;
        let stats: mailstorm_sink::StatsSnapshot = d.get_json("/stats")?;
        // A sink without a plan engine answers 404: no referee figures.
        let clients: RefereeReport = d.get_json_or_default("/clients")?;
        Ok(judged(
            scn,
            run,
            Some((clients, stats)),
            ledger,
            Some(d.base.clone()),
        ))
    })();
    if let (Some(d), Some(_)) = (&down, &scn.plan) {
        // Leave the downstream as found: its own plan was replaced.
        if let Err(e) = d.delete("/plan") {
            eprintln!("mailstorm-blast: clearing the downstream plan: {e}");
        }
    }
    outcome
}

/// The downstream sink's control API.
struct Downstream {
    base: String,
    agent: ureq::Agent,
}

impl Downstream {
    fn new(base: &str) -> Downstream {
        Downstream {
            base: base.to_string(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> BlastError {
        BlastError::Unreachable(format!("downstream {}{what}: {e}", self.base))
    }

    /// The body of a reply (bounded), or an error naming the call and the
    /// sink's own message.
    fn body(
        &self,
        what: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: &[u16],
    ) -> Result<(u16, String), BlastError> {
        let mut resp = resp.map_err(|e| self.fail(what, e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| self.fail(what, e))?;
        if ok.contains(&status) {
            Ok((status, text))
        } else {
            Err(self.fail(what, format!("HTTP {status}: {}", text.trim())))
        }
    }

    fn post(&self, path: &str) -> Result<(), BlastError> {
        let r = self.agent.post(format!("{}{path}", self.base)).send_empty();
        self.body(path, r, &[200, 204]).map(drop)
    }

    fn delete(&self, path: &str) -> Result<(), BlastError> {
        let r = self.agent.delete(format!("{}{path}", self.base)).call();
        self.body(path, r, &[200, 204, 404]).map(drop)
    }

    fn put_plan(&self, yaml: &str) -> Result<(), BlastError> {
        let r = self
            .agent
            .put(format!("{}/plan", self.base))
            .content_type("application/yaml")
            .send(yaml);
        self.body("/plan", r, &[200, 204])
            .map(drop)
            .map_err(|e| BlastError::Config(format!("scenario plan: {e}")))
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, BlastError> {
        let r = self.agent.get(format!("{}{path}", self.base)).call();
        let (_, text) = self.body(path, r, &[200])?;
        serde_json::from_str(&text).map_err(|e| self.fail(path, e))
    }

    fn get_json_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        path: &str,
    ) -> Result<T, BlastError> {
        let r = self.agent.get(format!("{}{path}", self.base)).call();
        match self.body(path, r, &[200, 404])? {
            (404, _) => Ok(T::default()),
            (_, text) => serde_json::from_str(&text).map_err(|e| self.fail(path, e)),
        }
    }
}

/// Every metric a scenario can check, from the run, the referee report
/// (`GET /clients`) and counters of the sink it reached (when one was
/// reachable), and the ledger join.
pub fn measure(
    r: &RunResult,
    sink: Option<(&RefereeReport, &mailstorm_sink::StatsSnapshot)>,
    ledger: Option<&Joined>,
) -> Measurements {
    let mut m = Measurements::default();
    let c = &r.totals.counters;
    let secs = r.elapsed.as_secs_f64();
    m.set("duration", secs);
    m.set("connections.opened", c.conn_opened as f64);
    m.set("connections.failed", c.conn_failed as f64);
    if let Some((_, sink)) = sink {
        m.set("sink.accepted", sink.messages_accepted as f64);
        m.set("sink.rejected", sink.messages_rejected as f64);
    }
    if let Some(j) = ledger {
        for (k, n) in [
            ("lost", j.lost),
            ("duplicates", j.duplicates),
            ("unexpected", j.unexpected),
            ("ledger.accepted", j.accepted),
            ("ledger.delivered", j.delivered),
            ("ledger.duplicate_messages", j.duplicate_messages),
            ("ledger.out_of_order", j.out_of_order),
        ] {
            m.set(k, n as f64);
        }
        if j.e2e.count > 0 {
            for (k, us) in [
                ("e2e_p50", j.e2e.p50_us),
                ("e2e_p90", j.e2e.p90_us),
                ("e2e_p99", j.e2e.p99_us),
                ("e2e_max", j.e2e.max_us),
            ] {
                m.set(k, us as f64 / 1e6);
            }
        }
    }
    if let Some(s) = &r.resilience {
        let t = &s.tally;
        m.set("offered", t.offered as f64);
        m.set("retries", t.retries as f64);
        m.set("attempted", (t.offered + t.retries) as f64);
        m.set("delivered", t.messages.delivered as f64);
        m.set("rejected", t.messages.rejected as f64);
        m.set("gave_up", t.messages.gave_up_total() as f64);
        m.set("pending", t.messages.pending as f64);
        let rcpts = &t.recipients;
        for (k, n) in [
            ("delivered", rcpts.delivered),
            ("rejected", rcpts.rejected),
            ("gave_up", rcpts.gave_up),
            ("pending", rcpts.pending),
        ] {
            m.set(format!("recipients.{k}"), n as f64);
        }
        m.set(
            "goodput",
            if secs > 0.0 {
                t.messages.delivered as f64 / secs
            } else {
                0.0
            },
        );
        let finished: u64 = t.attempts.iter().sum();
        m.set("attempts.count", finished as f64);
        if finished > 0 {
            let min = t.attempts.iter().position(|&n| n > 0).unwrap_or(0);
            m.set("attempts.min", min as f64);
            m.set("attempts.mean", t.attempts_mean());
            for (k, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
                m.set(format!("attempts.{k}"), f64::from(t.attempts_quantile(q)));
            }
        }
        if let Some(b) = s.budget {
            m.set("budget.granted", b.granted as f64);
            m.set("budget.denied", b.denied as f64);
        }
        if let Some(b) = s.breaker {
            m.set("breaker.opened", b.opened as f64);
            m.set("breaker.closed", b.closed as f64);
            m.set("breaker.half_opened", b.half_opened as f64);
        }
        if let Some(n) = s.suspensions {
            let mut cs = s.concurrency.iter().map(|p| f64::from(p.concurrency));
            m.set("concurrency.min", cs.clone().fold(f64::INFINITY, f64::min));
            m.set("concurrency.max", cs.clone().fold(0.0, f64::max));
            m.set("concurrency.final", cs.next_back().unwrap_or(0.0));
            m.set("concurrency.suspensions", n as f64);
        }
    }
    if let Some((clients, _)) = sink {
        referee(&mut m, clients);
    }
    m
}

/// The referee's figures: per-client counters summed over clients, retry
/// intervals by code and over all codes (times in seconds).
fn referee(m: &mut Measurements, report: &RefereeReport) {
    let clients = report.clients.values();
    let sum = |f: fn(&mailstorm_sink::plan::referee::ClientRecord) -> u64| {
        clients.clone().map(f).sum::<u64>() as f64
    };
    m.set("referee.retries", sum(|c| c.retries));
    m.set("referee.resent_after_5xx", sum(|c| c.resent_after_5xx));
    m.set("referee.commands_after_421", sum(|c| c.commands_after_421));
    m.set("referee.connections", sum(|c| c.connections));
    m.set("referee.replies_421", sum(|c| c.replies_421));
    let max_concurrent = clients.clone().map(|c| c.max_concurrent).max().unwrap_or(0);
    m.set("referee.max_concurrent", max_concurrent as f64);
    put_ms_summary(m, "reconnect_after_421", &report.reconnect_after_421_ms);
    for (code, s) in &report.retry_interval_ms_by_code {
        put_ms_summary(m, &format!("retry_interval.{code}"), s);
    }
    // Over all codes: exact count, min, max and mean; a quantile is the
    // largest of the per-code quantiles (an upper bound).
    let all: Vec<&HistogramSummary> = report
        .retry_interval_ms_by_code
        .values()
        .filter(|s| s.count > 0)
        .collect();
    let count: u64 = all.iter().map(|s| s.count).sum();
    m.set("retry_interval.count", count as f64);
    if count > 0 {
        let secs = |ms: u64| ms as f64 / 1000.0;
        m.set(
            "retry_interval.min",
            secs(all.iter().map(|s| s.min).min().unwrap_or(0)),
        );
        m.set(
            "retry_interval.max",
            secs(all.iter().map(|s| s.max).max().unwrap_or(0)),
        );
        let mean = all.iter().map(|s| s.mean * s.count as f64).sum::<f64>() / count as f64;
        m.set("retry_interval.mean", mean / 1000.0);
        for (k, q) in [
            (
                "p50",
                (|s: &HistogramSummary| s.p50) as fn(&HistogramSummary) -> u64,
            ),
            ("p90", |s| s.p90),
            ("p99", |s| s.p99),
        ] {
            m.set(
                format!("retry_interval.{k}"),
                secs(all.iter().map(|s| q(s)).max().unwrap_or(0)),
            );
        }
    }
}

/// One millisecond histogram summary as `family.count` and, when it has
/// values, `family.min` .. `family.max` in seconds.
fn put_ms_summary(m: &mut Measurements, family: &str, s: &HistogramSummary) {
    m.set(format!("{family}.count"), s.count as f64);
    if s.count > 0 {
        for (k, v) in [
            ("min", s.min as f64),
            ("mean", s.mean),
            ("p50", s.p50 as f64),
            ("p90", s.p90 as f64),
            ("p99", s.p99 as f64),
            ("max", s.max as f64),
        ] {
            m.set(format!("{family}.{k}"), v / 1000.0);
        }
    }
}

/// The scenario's verdict, one line per expectation.
pub fn describe(scn: &Scenario, o: &ScenarioOutcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "scenario {}:", scn.name);
    for c in &o.checks {
        let _ = writeln!(s, "{}", expect::describe(c));
    }
    let failed = o.failed();
    if failed.is_empty() {
        let _ = writeln!(
            s,
            "scenario {} passed ({} expectations)",
            scn.name,
            o.checks.len()
        );
    } else {
        let _ = writeln!(s, "scenario {} FAILED: {}", scn.name, failed.join(", "));
    }
    s
}

/// The scenario's part of the JSON report: each expectation and the
/// measurements.
pub fn to_json(scn: &Scenario, o: &ScenarioOutcome) -> Value {
    let checks: Vec<Value> = o
        .checks
        .iter()
        .map(|c| {
            serde_json::json!({
                "expect": c.text,
                "measured": c.measured,
                "shown": c.shown,
                "passed": c.passed,
            })
        })
        .collect();
    serde_json::json!({
        "name": scn.name,
        "passed": o.passed(),
        "expectations": checks,
        "measurements": o.measurements.values,
        "referee": serde_json::to_value(&o.clients).unwrap_or_default(),
        "target": scn.target,
        "downstream": o.downstream,
    })
}
