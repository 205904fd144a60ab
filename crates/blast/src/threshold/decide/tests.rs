use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::stages::LoadStages;
use crate::stats::{Fault, Stage, Transport};
use crate::threshold::{evaluate, parse};

/// A run that has so far: 10 accepted, `deferred` deferred, one 2 s
/// latency, and in load stage 1 (index 0) the same, closed by `closed`
/// of 2 shards.
fn totals(deferred: u64, closed: u64) -> Stats {
    let mut t = Stats::default();
    t.counters.accepted = 10;
    t.counters.deferred = deferred;
    t.counters.attempted = 10 + deferred;
    t.counters.scheduled = 50;
    t.counters.late = 2;
    t.time(Stage::Latency, 2_000_000);
    let s = t.load_stage(0);
    s.accepted = 10;
    s.deferred = deferred;
    s.attempted = 10 + deferred;
    s.closed = closed;
    t.load_time(0, 100_000);
    t
}

fn outlook(total: Option<u64>) -> Outlook {
    Outlook {
        total,
        shards: 2,
        stage_secs: vec![2.0, 2.0],
        open_loop: true,
    }
}

#[test]
fn cannot_pass_decides_only_what_is_certain() {
    let mut replied = totals(0, 0);
    replied.reply(Stage::Mail, 550, None);
    replied.fault(Fault::new(Transport::Reset, Stage::Mail), "x");
    let mut stage_refused = totals(0, 0);
    stage_refused.load_stage(1).rejected = 1;
    stage_refused.load_stage(1).failed = 1;
    // (check, totals, known total, must abort)
    let cases: Vec<(&str, Stats, Option<u64>, bool)> = vec![
        // Counts only grow: past the limit is for good.
        ("5xx==0", replied.clone(), None, true),
        ("errors<1", replied.clone(), None, true),
        ("deferred<=2", totals(3, 0), None, true),
        ("max<1s", totals(0, 0), None, true),
        ("deferred==5", totals(3, 0), None, false),
        ("5xx>0", totals(0, 0), None, false),
        ("5xx==0", totals(3, 0), None, false),
        // A message count bounded by the known total.
        ("accepted>=1000", totals(1, 0), Some(1000), true),
        ("accepted>=1000", totals(1, 0), None, false),
        ("accepted>=1000", totals(0, 0), Some(1000), false),
        // Ratios: only with a known total, once the rest cannot repair it.
        ("accept_rate>=0.99", totals(11, 0), Some(1000), true),
        ("accept_rate>=0.99", totals(10, 0), Some(1000), false),
        ("accept_rate>=0.99", totals(500, 0), None, false),
        ("defer_rate<=0.01", totals(11, 0), Some(1000), true),
        ("defer_rate<=0.01", totals(10, 0), Some(1000), false),
        ("late_rate<=0.01", totals(0, 0), Some(100), true),
        ("late_rate<=0.02", totals(0, 0), Some(100), false),
        ("accept_rate==0.5", totals(20, 0), Some(1000), false),
        // Never early on the whole run: more messages move them either way.
        ("p99<50ms", totals(0, 0), Some(1000), false),
        ("mean<1ms", totals(0, 0), Some(1000), false),
        ("messages_per_s>=1000000", totals(0, 0), Some(1000), false),
        ("lost==0", totals(0, 0), Some(1000), false),
        // Stage counts grow while the stage runs.
        ("stage1:deferred==0", totals(1, 0), None, true),
        ("stage2:5xx==0", stage_refused.clone(), None, true),
        ("stage2:errors==0", stage_refused.clone(), None, true),
        ("stage2:4xx==0", stage_refused.clone(), None, false),
        ("stage1:5xx==0", stage_refused.clone(), None, false),
        ("stage1:max<50ms", totals(0, 0), None, true),
        // Other stage checks wait for every shard to close the stage.
        ("stage1:p99<50ms", totals(0, 2), None, true),
        ("stage1:p99<50ms", totals(0, 1), None, false),
        ("stage1:p99<50ms", totals(0, 0), Some(1000), false),
        ("stage1:accept_rate>=0.99", totals(1, 2), None, true),
        ("stage1:accept_rate>=0.99", totals(1, 1), Some(1000), false),
        ("stage1:accept_rate>=0.9", totals(1, 2), None, false),
        ("stage1:messages_per_s>=6", totals(0, 2), None, true),
        ("stage1:messages_per_s>=5", totals(0, 2), None, false),
        ("stage2:p99<50ms", totals(0, 2), None, false),
    ];
    for (check, t, total, abort) in cases {
        let c = &parse(check).unwrap()[0];
        assert_eq!(
            c.cannot_pass(&t, &outlook(total)),
            abort,
            "{check} with total {total:?}"
        );
    }
}

#[test]
fn the_total_is_known_only_for_a_fixed_schedule() {
    let cfg = |f: fn(&mut Config)| {
        let mut c = Config {
            threads: 3,
            ..Config::default()
        };
        f(&mut c);
        Outlook::of(&c)
    };
    let o = cfg(|c| {
        c.stages = Some(LoadStages::parse("2s:500,2s:3000,4s:500").unwrap());
    });
    assert_eq!(o.total, Some(9001));
    assert_eq!(o.shards, 3);
    assert_eq!(o.stage_secs, [2.0, 2.0, 4.0]);
    let o = cfg(|c| {
        c.rate = Some(100.0);
        c.duration = Some(Duration::from_secs(2));
    });
    assert_eq!(o.total, Some(201));
    let o = cfg(|c| {
        c.rate = Some(100.0);
        c.duration = Some(Duration::from_secs(2));
        c.messages = Some(50);
    });
    assert_eq!(o.total, Some(50));
    // Closed loop for a time: unknown.
    let o = cfg(|c| c.duration = Some(Duration::from_secs(2)));
    assert_eq!(o.total, None);
    let o = cfg(|c| c.messages = Some(7));
    assert_eq!(o.total, Some(7));
}

#[test]
fn impossible_checks_are_refused() {
    for spec in [
        "5xx<0",
        "accept_rate>1",
        "accept_rate<0",
        "p99<0ms",
        "accept_rate==1.5",
        "errors<=-1",
        "stage2:5xx<0",
        "stage1:accept_rate>1",
        "messages_per_s<0",
    ] {
        let e = parse(spec).unwrap_err().to_string();
        assert!(e.contains(spec) && e.contains("can never hold"), "{e}");
    }
    let e = parse("accept_rate>1").unwrap_err().to_string();
    assert!(e.contains("a share between 0 and 1"), "{e}");
    // Infinite limits are not numbers (they passed as `ok`, `1e400`
    // parsing as infinity and the equality tolerance then being infinite).
    for spec in ["accept_rate>=inf", "accepted>=1e400", "5xx<NaN"] {
        let e = parse(spec).unwrap_err().to_string();
        assert!(e.contains(spec) && e.contains("expected a number"), "{e}");
    }
    let e = parse("p99<0ms").unwrap_err().to_string();
    assert!(e.contains("a latency, never below 0"), "{e}");
    // Possible, if only just (or always): accepted.
    for ok in [
        "accept_rate<=0",
        "accept_rate>=1",
        "5xx<=0",
        "5xx>=0",
        "p99<=0ms",
    ] {
        assert!(parse(ok).is_ok(), "{ok}");
    }
}

#[test]
fn stage_checks_read_the_stage_tables_4xx_5xx_and_errors() {
    let c = parse("stage2:4xx==0,stage2:5xx<=1,stage2:errors==0,stage1:5xx==0,5xx==0").unwrap();
    assert_eq!(c[0].metric, Metric::Named("deferred".into()));
    assert_eq!(c[1].metric, Metric::Named("rejected".into()));
    assert_eq!(c[2].metric, Metric::Named("failed".into()));
    let mut r = crate::RunResult::empty(
        Config {
            stages: Some(LoadStages::parse("1s:10,1s:10").unwrap()),
            ..Config::default()
        },
        String::new(),
        Duration::from_secs(2),
        String::new(),
    );
    let s = r.totals.load_stage(1);
    s.deferred = 2;
    s.rejected = 1;
    s.failed = 3;
    r.totals.reply(Stage::DataEnd, 550, None);
    let o = evaluate(&c, &r);
    let got: Vec<(bool, f64)> = o.iter().map(|o| (o.passed, o.value)).collect();
    assert_eq!(
        got,
        [
            (false, 2.0),
            (true, 1.0),
            (false, 3.0),
            (true, 0.0),
            (false, 1.0)
        ]
    );
    assert_eq!(o[0].text, "stage2:4xx==0");
    // The whole run counts replies, a stage counts messages: the failed
    // whole-run 5xx check names no stage rather than a wrong one.
    assert_eq!(o[4].broke_in, None);
}
