//! Load stages (`--stages`): rate steps and ramps (open loop) and
//! connection steps (closed loop), counted per stage.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailstorm_blast::config::Config;
use mailstorm_blast::stages::{LoadStages, StagesMode};
use mailstorm_sink::{Decision, StageContext};

#[test]
fn rate_stages_schedule_exact_counts_per_stage() {
    let sink = sink();
    // 100/s for 1 s, 300/s for 1 s, then a ramp 0 → 200/s over 1 s
    // (100 sends, a quarter of them in its first half).
    let cfg = Config {
        stages: Some(LoadStages::parse("1s:100,1s:300,1s:0..200").unwrap()),
        stages_mode: StagesMode::Rate,
        duration: None,
        concurrency: 8,
        interval: Duration::from_millis(500),
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    let load = &r.totals.load;
    assert_eq!(load.len(), 3, "{load:?}");
    let scheduled: Vec<u64> = load.iter().map(|t| t.scheduled).collect();
    assert_eq!(scheduled, [100, 300, 100], "the schedule is exact");
    for (i, t) in load.iter().enumerate() {
        assert_eq!(t.attempted + t.not_started, t.scheduled, "stage {i}: {t:?}");
        assert!(t.not_started <= 2, "stage {i}: {t:?}");
        assert_eq!(t.accepted, t.attempted, "stage {i}: {t:?}");
    }
    let c = r.totals.counters;
    assert_eq!(c.scheduled, 500);
    assert_eq!(sink.stats().messages_accepted, c.accepted);
    // The run lasts the sum of the stages.
    assert_eq!(r.config.duration, Some(Duration::from_secs(3)));
    assert!(r.elapsed < Duration::from_secs(6), "{:?}", r.elapsed);
    // The timeline (by start time, 500 ms rows) follows the shape.
    let sent: Vec<u64> = r.rows.iter().map(|row| row.counters.attempted).collect();
    let expect = [50.0, 50.0, 150.0, 150.0, 25.0, 75.0];
    assert!(sent.len() >= 6, "{sent:?}");
    for (i, (&got, want)) in sent.iter().zip(expect).enumerate() {
        assert!(
            (got as f64 - want).abs() <= want * 0.1 + 3.0,
            "row {i}: {got} sends, expected about {want}: {sent:?}"
        );
    }
    // The report carries the per-stage figures.
    let v = mailstorm_blast::report::to_json(&r);
    assert_eq!(v["schedule"]["mode"], "open");
    assert_eq!(v["schedule"]["stages"][1]["scheduled"], 300);
    assert_eq!(v["schedule"]["stages"][2]["start_s"], 2.0);
    let schema_path = concat!(env!("CARGO_MANIFEST_DIR"), "/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let errs = validate(&schema, &v);
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn concurrency_stages_scale_connections() {
    // Every message takes at least 10 ms at the sink: one connection does
    // at most 100 messages/s, four do four times that.
    let hook = |ctx: &StageContext<'_>| match ctx.stage {
        mailstorm_sink::Stage::DataEnd => Decision::Delay(Duration::from_millis(10)),
        _ => Decision::Accept,
    };
    let sink = sink_builder().hook(Arc::new(hook)).start().unwrap();
    let cfg = Config {
        stages: Some(LoadStages::parse("1s:1,1s:4,1s:0,500ms:2").unwrap()),
        stages_mode: StagesMode::Concurrency,
        duration: None,
        ..config()
    };
    let r = run(cfg, sink.local_addr());
    assert_eq!(r.config.concurrency, 4, "slots from the highest stage");
    let load = &r.totals.load;
    let a: Vec<u64> = load.iter().map(|t| t.attempted).collect();
    assert_eq!(load.len(), 4, "{a:?}");
    assert!((40..=101).contains(&a[0]), "{a:?}");
    let ratio = a[1] as f64 / a[0] as f64;
    assert!((2.8..=5.2).contains(&ratio), "ratio {ratio}: {a:?}");
    assert_eq!(a[2], 0, "a zero stage starts nothing: {a:?}");
    assert!(a[3] >= 20, "{a:?}");
    for t in load {
        assert_eq!(t.accepted, t.attempted, "{t:?}");
    }
    let c = r.totals.counters;
    assert_eq!(c.accepted, a.iter().sum::<u64>());
    assert_eq!(sink.stats().messages_accepted, c.accepted);
    // Slots that go idle close their connection; at least the extra three
    // of stage 2 and the two of stage 4 were opened.
    assert!(c.conn_opened >= 5, "{c:?}");
    assert_eq!(r.totals.transport_errors(), 0);
}

#[test]
fn stages_flags_and_mode_inference() {
    use clap::Parser;
    use mailstorm_blast::cli::Args;
    let parse = |args: &[&str]| {
        let mut v = vec!["mailstorm-blast", "--target", "127.0.0.1:2525"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).unwrap().to_config()
    };
    let c = parse(&["--stages", "1s:5,2s:5..10"]).unwrap();
    assert_eq!(c.stages_mode, StagesMode::Rate);
    assert!(c.open_loop());
    let e = mailstorm_blast::effective_config(&c).unwrap();
    assert_eq!(e.duration, Some(Duration::from_secs(3)));
    // --concurrency without --rate: connection stages.
    let c = parse(&["--stages", "1s:5", "-c", "3"]).unwrap();
    assert_eq!(c.stages_mode, StagesMode::Concurrency);
    assert!(!c.open_loop());
    assert_eq!(
        mailstorm_blast::effective_config(&c).unwrap().concurrency,
        5
    );
    // Explicit mode wins: rate stages capped at 3 connections.
    let c = parse(&["--stages", "1s:5", "-c", "3", "--stages-mode", "rate"]).unwrap();
    assert_eq!(c.stages_mode, StagesMode::Rate);
    assert_eq!(
        mailstorm_blast::effective_config(&c).unwrap().concurrency,
        3
    );
    assert!(parse(&["--stages", "1s:5", "--rate", "5"]).is_err());
    assert!(parse(&["--stages", "1s:5", "-d", "9s"]).is_err());
    assert!(parse(&["--stages", "1s:0"]).is_err());
    assert!(parse(&["--pipeline-depth", "0"]).is_err());
    assert_eq!(parse(&["--pipeline-depth", "8"]).unwrap().pipeline_depth, 8);
    // Profiles carry stages as the same string.
    let y = serde_yaml::to_string(&parse(&["--stages", "1s:5,2s:5..10"]).unwrap()).unwrap();
    assert!(y.contains("stages: 1s:5,2s:5..10"), "{y}");
    let back: Config = serde_yaml::from_str(&y).unwrap();
    assert_eq!(back.stages.unwrap().total(), Duration::from_secs(3));
}
