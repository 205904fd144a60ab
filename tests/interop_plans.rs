//! A real client against a fault plan: a throwaway Postfix instance relays
//! through an embedded `mailstorm-sink` running `configs/greylisting.yaml`
//! (with `min_retry_seconds` shortened), and the sink's referee report
//! (`GET /clients`, read in-process with `Engine::clients_json`) is checked
//! against Postfix's configured retry timing.
//!
//! # How Postfix retries a deferred recipient (what the bounds come from)
//!
//! Postfix 3.x `qmgr` (`qmgr_active.c`), on a deferral at event time `E`
//! (whole seconds): `delay = clamp(E - create_time, minimal_backoff_time,
//! maximal_backoff_time)` (the message's age, so the delay roughly doubles
//! per attempt until the cap), and the queue file's time stamp becomes
//! `E + delay`. A deferred-queue scan runs every `queue_run_delay` and takes
//! every file whose stamp is not more than 1 s in the future
//! (`st_mtime > time() + 1` is skipped). So the retry comes at
//! `delay - 1 s`, rounded up to the next scan; whole-second time stamps can
//! make it up to 1 s earlier still. Measured with minimal 3 s, maximal 6 s,
//! queue_run_delay 1 s and a 12 s greylist: intervals 2.00, 2.00, 3.00,
//! 5.01 s (age 0, 2, 4 → delay 3, 3, 4; age 7 → capped at 6), each within a
//! few ms of `delay - 1 s`. (With `minimal_backoff_time = 2s` Postfix retries
//! after 1 s, which is why these tests use 3 s.)
//!
//! Each retry of a deferral made `t` seconds after the first attempt must
//! therefore come after at least `clamp(t - 1) - 2 s` and at most
//! `clamp(t + 1) - 1 s + queue_run_delay + SLACK`: the age is known to
//! ±1 s (whole-second stamps), the `- 2 s` is the 1 s early pick-up plus one
//! second of stamp truncation, and `SLACK` covers the scan and the SMTP
//! dialogue on loopback. A client that retries at once, at a fixed short
//! interval, or without the maximal backoff cap fails it.
//!
//! Postfix is installed by `scripts/test.sh` and must run as root; without
//! it the tests fail with a hint, or skip when `MAILSTORM_SKIP_INTEROP=1`.
//! Every wait is bounded; each test takes at most ~15 s when Postfix behaves.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstorm_sink::plan::{Engine, Plan};
use mailstorm_sink::{Sink, SinkHandle};
use support::postfix::PostfixTools;
use support::{wait_until, PostfixInstance};

/// Postfix's retry timing for both tests.
const MIN_BACKOFF: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(6);
const QUEUE_RUN_DELAY: Duration = Duration::from_secs(1);
/// Scan latency, process start-up and the SMTP dialogue up to RCPT on
/// loopback (measured: under 15 ms), with room for a loaded machine.
const SLACK: Duration = Duration::from_millis(750);
/// Bound on the whole delivery (measured: 2 s and 12 s).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

const SENDER: &str = "grey-sender@client.test";
/// Postfix's EHLO name: the referee's client id.
const CLIENT: &str = "postfix.mailstorm.test";
const RCPT: &str = "grey-rcpt@sink.test";

fn shipped_plan_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/greylisting.yaml")
}

/// `configs/greylisting.yaml` with `min_retry` set to `secs` and
/// nothing else changed (checked against the shipped plan's parse).
fn greylisting_plan(secs: u64) -> Plan {
    let path = shipped_plan_path();
    let shipped = Plan::from_file(&path).unwrap_or_else(|e| panic!("shipped plan: {e}"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut edits = 0;
    let edited: String = text
        .lines()
        .map(|line| match line.split_once("min_retry:") {
            Some((indent, _)) if !line.trim_start().starts_with('#') => {
                edits += 1;
                format!("{indent}min_retry: {secs}s\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(edits, 1, "one min_retry in {}", path.display());
    let plan = Plan::from_yaml_str(&edited, &format!("{} (min_retry: {secs}s)", path.display()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut expected = shipped.spec().clone();
    let grey = expected.rules[0]
        .0
        .action
        .greylist
        .as_mut()
        .expect("the shipped rule greylists");
    grey.min_retry = Duration::from_secs(secs);
    assert_eq!(plan.spec(), &expected, "only min_retry changed");
    plan
}

/// One retry as the referee recorded it (`recent_retries`).
#[derive(Debug)]
struct Retry {
    key: String,
    after_code: u64,
    attempt: u64,
    interval: Duration,
}

/// The referee's figures this test looks at, read from its report.
#[derive(Debug)]
struct Referee {
    /// The report as JSON text, for failure messages.
    json: String,
    /// `clients[CLIENT]`: retries, faults, resent_after_5xx, messages.
    retries: u64,
    faults: u64,
    resent_after_5xx: u64,
    messages: u64,
    /// The codes in `retry_interval_ms_by_code`.
    codes: Vec<String>,
    /// `retry_interval_ms_by_code["450"]`: count, min, max (ms).
    h450: Option<(u64, u64, u64)>,
    recent: Vec<Retry>,
}

/// Reads the referee's report (`GET /clients`, here in-process).
fn referee(engine: &Engine) -> Referee {
    let r = engine.clients_json();
    let client = &r["clients"][CLIENT];
    let num = |k: &str| client[k].as_u64().unwrap_or(0);
    let by_code = r["retry_interval_ms_by_code"].as_object();
    let h450 = by_code.and_then(|m| m.get("450")).map(|h| {
        let f = |k: &str| h[k].as_u64().unwrap_or(0);
        (f("count"), f("min"), f("max"))
    });
    let recent = r["recent_retries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| Retry {
                    key: x["key"].as_str().unwrap_or_default().to_owned(),
                    after_code: x["after_code"].as_u64().unwrap_or(0),
                    attempt: x["attempt"].as_u64().unwrap_or(0),
                    interval: Duration::from_millis(x["interval_ms"].as_u64().unwrap_or(0)),
                })
                .collect()
        })
        .unwrap_or_default();
    Referee {
        json: format!("{r:#}"),
        retries: num("retries"),
        faults: num("faults"),
        resent_after_5xx: num("resent_after_5xx"),
        messages: num("messages"),
        codes: by_code
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
        h450,
        recent,
    }
}

/// What one run produced.
struct Run {
    referee: Referee,
    /// The 450 retry intervals the referee recorded, in order.
    intervals: Vec<Duration>,
    /// The Postfix log.
    maillog: String,
    /// The fault events file (one JSON line per injected 450).
    events: String,
    /// From the injection into Postfix to the message at the sink.
    elapsed: Duration,
    /// The referee's verdict on Postfix under the default policy.
    verdict: mailstorm_sink::plan::ClientVerdict,
}

fn start_sink(engine: &Arc<Engine>) -> SinkHandle {
    Sink::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(1)
        .keep(10)
        .hostname("sink.test")
        .fault_engine(engine.clone())
        .start()
        .expect("sink starts")
}

fn run(greylist_secs: u64, dir: &Path) -> Option<Run> {
    PostfixTools::require()?;
    let engine = Arc::new(Engine::new());
    engine.load(greylisting_plan(greylist_secs));
    let events = dir.join("events.jsonl");
    engine.set_events_file(&events).unwrap();
    let sink = start_sink(&engine);
    let pf = PostfixInstance::relay_to(sink.local_addr())
        .backoff(MIN_BACKOFF, MAX_BACKOFF, QUEUE_RUN_DELAY)
        .start()
        .unwrap_or_else(|e| panic!("Postfix: {e}"));
    let start = Instant::now();
    let reply = pf
        .send(
            SENDER,
            &[RCPT],
            "Subject: greylisted\r\nMessage-ID: <grey@client.test>\r\n\r\nhello\r\n",
        )
        .unwrap_or_else(|e| panic!("inject into Postfix: {e}"));
    assert!(PostfixInstance::queue_id(&reply).is_some(), "{reply}");
    if let Err(e) = wait_until("the message at the sink", DELIVERY_TIMEOUT, || {
        !sink.messages().is_empty()
    }) {
        panic!(
            "{e}; referee: {:#}\nPostfix log:\n{}",
            engine.clients_json(),
            pf.maillog()
        );
    }
    let elapsed = start.elapsed();
    pf.wait_for_log("status=sent", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    pf.wait_queue_empty(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1, "one message stored");
    assert_eq!(msgs[0].mail_from, SENDER);
    assert_eq!(msgs[0].rcpt_to, [RCPT]);
    let referee = referee(&engine);
    let verdict = engine.verdict(CLIENT).expect("a verdict on Postfix");
    let intervals = referee.recent.iter().map(|r| r.interval).collect();
    let events = std::fs::read_to_string(&events).unwrap_or_default();
    Some(Run {
        referee,
        intervals,
        maillog: pf.maillog(),
        events,
        elapsed,
        verdict,
    })
}

fn clamp(age: f64) -> f64 {
    age.clamp(MIN_BACKOFF.as_secs_f64(), MAX_BACKOFF.as_secs_f64())
}

/// Where Postfix's retry of a deferral `t` seconds after the first attempt
/// may land (see the module comment).
fn retry_window(t: f64) -> (f64, f64) {
    (
        clamp(t - 1.0) - 2.0,
        clamp(t + 1.0) - 1.0 + QUEUE_RUN_DELAY.as_secs_f64() + SLACK.as_secs_f64(),
    )
}

/// The checks common to both tests; returns the times (since the first
/// attempt) of the deferrals and of the passing attempt.
fn check_run(r: &Run, greylist_secs: u64) -> (Vec<f64>, f64) {
    let n = r.intervals.len();
    let ctx = || {
        format!(
            "intervals {:?}\nreferee: {}\nevents:\n{}\nPostfix log:\n{}",
            r.intervals, r.referee.json, r.events, r.maillog
        )
    };
    assert!(n >= 1, "no retry recorded; {}", ctx());

    // Postfix saw the greylisting reply first, then n - 1 more, then sent.
    let statuses: Vec<&str> = r
        .maillog
        .lines()
        .filter(|l| l.contains(&format!("to=<{RCPT}>")) && l.contains("status="))
        .collect();
    assert_eq!(statuses.len(), n + 1, "{}", ctx());
    for l in &statuses[..n] {
        assert!(
            l.contains("status=deferred")
                && l.contains("said: 450 4.7.1 Greylisted, see https://postgrey")
                && l.contains("in reply to RCPT TO command"),
            "{l}"
        );
    }
    assert!(statuses[n].contains("status=sent"), "{}", statuses[n]);

    // The sink injected exactly those n replies (the first one to the
    // first attempt), all for the same triplet.
    let event_lines: Vec<&str> = r.events.lines().collect();
    assert_eq!(event_lines.len(), n, "{}", ctx());
    let triplet = format!("\"key\":\"triplet:127.0.0.1,{SENDER},{RCPT}\"");
    for e in &event_lines {
        assert!(
            e.contains("\"outcome\":\"reply 450 4.7.1\"")
                && e.contains("\"rule\":\"greylist\"")
                && e.contains("\"stage\":\"rcpt\"")
                && e.contains(&triplet),
            "{e}"
        );
    }

    // Referee: per-client figures, the per-code histogram and each retry.
    let rf = &r.referee;
    assert_eq!(
        (rf.retries, rf.faults, rf.resent_after_5xx, rf.messages),
        (n as u64, n as u64, 0, 1),
        "retries, faults, resent after 5xx, messages; {}",
        ctx()
    );
    assert_eq!(rf.codes, ["450"], "only 450 retries; {}", ctx());
    let (count, hmin, hmax) = rf.h450.expect("a 450 histogram");
    assert_eq!(count, n as u64, "{}", ctx());
    let ms: Vec<u64> = r.intervals.iter().map(|d| d.as_millis() as u64).collect();
    let (lo, hi) = (*ms.iter().min().unwrap(), *ms.iter().max().unwrap());
    // HDR histogram, 2 significant digits: within 1%.
    let near = |v: u64, x: u64| v.abs_diff(x) <= x / 100 + 1;
    assert!(
        near(hmin, lo) && near(hmax, hi),
        "histogram min {hmin} max {hmax} vs {ms:?}"
    );
    let key = format!("rcpt {CLIENT} <{SENDER}> <{RCPT}>");
    for (k, x) in rf.recent.iter().enumerate() {
        assert_eq!(
            (x.key.as_str(), x.after_code, x.attempt),
            (key.as_str(), 450, k as u64 + 2),
            "{x:?}"
        );
    }

    // Timing: each retry where Postfix's backoff puts it; every deferral
    // before the greylist minimum, the passing attempt after it.
    let grey = greylist_secs as f64;
    let mut t = 0.0;
    let mut deferrals = Vec::with_capacity(n);
    for (k, d) in r.intervals.iter().enumerate() {
        let (lo, hi) = retry_window(t);
        let i = d.as_secs_f64();
        assert!(
            (lo..=hi).contains(&i),
            "retry {k} (deferral at {t:.3} s) after {i:.3} s, outside Postfix's \
             window [{lo:.3}, {hi:.3}] s; {}",
            ctx()
        );
        assert!(t < grey, "deferred at {t:.3} s, after the {grey} s minimum");
        deferrals.push(t);
        t += i;
    }
    assert!(
        t >= grey,
        "passed at {t:.3} s, before the {grey} s greylist minimum; {}",
        ctx()
    );
    assert!(
        r.elapsed.as_secs_f64() >= grey,
        "delivered after {:?}",
        r.elapsed
    );

    // The verdict under the default policy: Postfix retries each 450 no
    // sooner than 1 s and no more than 5 times, and quits cleanly; the
    // 421 and 5xx rules have no evidence.
    use mailstorm_sink::plan::Outcome;
    let v = &r.verdict;
    let result = |rule: &str| v.rules.iter().find(|x| x.rule == rule).unwrap().result;
    assert_eq!(v.verdict, Outcome::Pass, "{v:#?}\n{}", ctx());
    assert_eq!(result("retry_4xx_min_interval"), Outcome::Pass, "{v:#?}");
    assert_eq!(result("retries_per_4xx"), Outcome::Pass, "{v:#?}");
    assert_eq!(result("unclean_quits"), Outcome::Pass, "{v:#?}");
    assert_eq!(result("resent_after_5xx"), Outcome::Untested, "{v:#?}");
    assert_eq!(result("reconnect_after_421"), Outcome::Untested, "{v:#?}");
    (deferrals, t)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mailstorm-interop-plans-")
        .tempdir()
        .expect("temp dir")
}

/// Greylist minimum (2 s) below Postfix's first retry (3 s - 1 s): the
/// first retry passes.
#[test]
fn postfix_retry_passes_greylisting_after_minimal_backoff() {
    const GREY: u64 = 2;
    let dir = tempdir();
    let Some(r) = run(GREY, dir.path()) else {
        return;
    };
    let (deferrals, passed) = check_run(&r, GREY);
    eprintln!(
        "greylist {GREY} s: retry intervals {:?}, deferrals at {deferrals:?} s, passed at {passed:.3} s",
        r.intervals
    );
    // Normally one deferral, retried after 2 s; one more only if the
    // whole-second stamps made Postfix pick it up a second early.
    assert!(deferrals.len() <= 2, "{:?}", r.intervals);
    assert!(
        r.intervals.last().unwrap().as_secs_f64() >= 1.0,
        "{:?}",
        r.intervals
    );
    assert!(
        r.intervals.iter().any(|d| d.as_secs() >= GREY),
        "a retry interval >= the {GREY} s greylist minimum: {:?}",
        r.intervals
    );
}

/// Greylist minimum (12 s) past several retries: the intervals grow with
/// the message's age (minimal 3 s, then 4 s) and stop at maximal 6 s.
#[test]
fn postfix_backoff_grows_and_caps_under_greylisting() {
    const GREY: u64 = 12;
    let dir = tempdir();
    let Some(r) = run(GREY, dir.path()) else {
        return;
    };
    let (deferrals, passed) = check_run(&r, GREY);
    eprintln!(
        "greylist {GREY} s: retry intervals {:?}, deferrals at {deferrals:?} s, passed at {passed:.3} s",
        r.intervals
    );
    assert!(r.intervals.len() >= 3, "{:?}", r.intervals);
    // The first retry is at the minimal backoff, and a deferral older than
    // the maximal backoff is retried at the cap (delay - 1 s), not later.
    let first = r.intervals[0].as_secs_f64();
    assert!(
        first <= MIN_BACKOFF.as_secs_f64() + SLACK.as_secs_f64(),
        "{first}"
    );
    let capped: Vec<f64> = deferrals
        .iter()
        .zip(&r.intervals)
        .filter(|(t, _)| **t - 1.0 >= MAX_BACKOFF.as_secs_f64())
        .map(|(_, d)| d.as_secs_f64())
        .collect();
    assert!(
        !capped.is_empty(),
        "no deferral reached the cap: {deferrals:?}"
    );
    for i in capped {
        assert!(
            i >= MAX_BACKOFF.as_secs_f64() - 2.0
                && i <= MAX_BACKOFF.as_secs_f64() - 1.0
                    + QUEUE_RUN_DELAY.as_secs_f64()
                    + SLACK.as_secs_f64(),
            "capped retry after {i} s"
        );
    }
    // Longer than the first: the backoff grew.
    assert!(
        r.intervals.last().unwrap().as_secs_f64() > first + 1.0,
        "{:?}",
        r.intervals
    );
}
