//! YAML errors in every file a user writes name the position in that file,
//! the key path and the allowed keys or values, and never a Rust type name.

use std::path::{Path, PathBuf};

use mailstorm_blast::config::Config;
use mailstorm_blast::scenario::Scenario;
use mailstorm_sink::plan::Plan;
use mailstorm_sink::SinkConfig;

/// Words that only a Rust type name would bring into a message.
const RUST_NAMES: &[&str] = &[
    "struct ",
    "enum ",
    "SizeDist",
    "RcptRange",
    "Timeouts",
    "PlanSpec",
    "RuleSpec",
    "Source",
    "Config",
];

fn check(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
    for n in RUST_NAMES {
        assert!(!err.contains(n), "Rust name {n:?} in: {err}");
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("yaml-errors-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sink_config_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "lmtp: true\nmax-message-size: 5\n",
            &["c.yaml:2:1", "write `max_message_size`"],
        ),
        (
            "idle_timeout: 5 parsecs\n",
            &["c.yaml:1:15", "idle_timeout", "\"5 parsecs\"", "300ms"],
        ),
        (
            "bare_lf: maybe\n",
            &["c.yaml:1:10", "bare_lf", "allowed values: reject, accept"],
        ),
        (
            "max_message_size: 10 MB of mail\n",
            &["c.yaml:1:19", "max_message_size", "10MiB"],
        ),
        ("listen: 7\n", &["c.yaml:1:9", "listen"]),
    ];
    for (yaml, needles) in cases {
        let e = SinkConfig::from_yaml_str(yaml, Path::new("c.yaml"))
            .expect_err(yaml)
            .to_string();
        check(&e, needles);
    }
}

#[test]
fn plan_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "rules:\n  - stage: conect\n    action: {accept: true}\n",
            &["p.yaml:2:12", "rules[0].stage", "unknown variant `conect`", "connect, ehlo"],
        ),
        (
            "rules:\n  - stage: rcpt\n    action: {greylist: {min_retry_seconds: 60}}\n",
            &["p.yaml:3:25", "rules[0].action.greylist", "write `min_retry`"],
        ),
        (
            "rules:\n  - stage: rcpt\n    action: {stall: {seconds: 2}}\n",
            &["p.yaml:3:22", "rules[0].action.stall", "write `duration`"],
        ),
        (
            "rules:\n  - stage: rcpt\n    action: {delay: {ms: 2}}\n",
            &["p.yaml:3:22", "write `fixed`"],
        ),
        (
            "rules:\n  - stage: rcpt\n    action: {delay: soon}\n",
            &["p.yaml:3:21", "rules[0].action.delay", "\"soon\""],
        ),
        (
            "rules:\n  - stage: rcpt\n    rate_limit: {max: 3, per: 1 fortnight}\n    action: {accept: true}\n",
            &["p.yaml:3:31", "rules[0].rate_limit.per", "\"1 fortnight\""],
        ),
        (
            "rules:\n  - stage: data_end\n    match: {size: {min: 4 kilo}}\n    action: {accept: true}\n",
            &["p.yaml:3:25", "rules[0].match.size.min", "\"4 kilo\""],
        ),
        (
            "rules:\n  - stage: rcpt\n    rate-limit: {max: 3, per: 1s}\n",
            &["p.yaml:3:5", "write `rate_limit`"],
        ),
    ];
    for (yaml, needles) in cases {
        let e = Plan::from_yaml_str(yaml, "p.yaml")
            .expect_err(yaml)
            .to_string();
        check(&e, needles);
    }
}

#[test]
fn profile_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "messages: 1\nper-conn: 5\n",
            &["f.yaml:2:1", "write `per_conn`"],
        ),
        ("size: 4 kilo\n", &["f.yaml:1:7", "size", "\"4 kilo\""]),
        (
            "size: {kind: gaussian}\n",
            &["f.yaml:1:", "size", "fixed, uniform, lognormal"],
        ),
        ("size: [1]\n", &["f.yaml:1:7", "size", "a size (4k)"]),
        ("rcpts: 3..1\n", &["f.yaml:1:8", "rcpts", "3..1"]),
        (
            "rcpts: [1, 2]\n",
            &["f.yaml:1:8", "rcpts", "a range (1..3)"],
        ),
        // The mapping forms get the text forms' checks: these once reached
        // the run and panicked (an empty recipient list, a size overflow).
        (
            "rcpts: {min: 1, max: 0}\n",
            &["f.yaml:1:", "rcpts", "1..0", "1 <= min <= max <= 1000"],
        ),
        (
            "size: {kind: fixed, bytes: 18446744073709551615}\n",
            &["f.yaml:1:", "size", "18446744073709551615 bytes", "64 MiB"],
        ),
        (
            "size: {kind: uniform, min: 9k, max: 1k}\n",
            &[
                "f.yaml:1:",
                "size",
                "9216..1024 bytes",
                "min must be at most max",
            ],
        ),
        (
            "size: {kind: lognormal, median: 2k, p99: 1k}\n",
            &[
                "f.yaml:1:",
                "size",
                "median 2048, p99 1024",
                "at least the median",
            ],
        ),
        (
            "duration: 400d\n",
            &["f.yaml:1:11", "duration", "\"400d\"", "365d"],
        ),
        (
            "timeouts: {conect: 2s}\n",
            &[
                "f.yaml:1:12",
                "timeouts",
                "unknown field `conect`",
                "connect",
            ],
        ),
        (
            "timeouts: banner=0s\n",
            &["f.yaml:1:11", "timeouts", "banner=0s", "positive"],
        ),
        (
            "duration: 10 parsecs\n",
            &["f.yaml:1:11", "duration", "\"10 parsecs\""],
        ),
        (
            "pipelining: maybe\n",
            &["f.yaml:1:13", "pipelining", "auto, on, off"],
        ),
    ];
    for (yaml, needles) in cases {
        let e = Config::from_yaml_str(yaml, "f.yaml")
            .expect_err(yaml)
            .to_string();
        check(&e, needles);
    }
}

#[test]
fn profiles_accept_the_command_line_forms() {
    let c = Config::from_yaml_str(
        "size: 1k..100k\nrcpts: 1..3\ntimeouts: 10s\nsndbuf: 256k\nduration: 1.5s\n",
        "f.yaml",
    )
    .unwrap();
    assert_eq!(
        c.size,
        mailstorm_blast::config::SizeDist::Uniform {
            min: 1024,
            max: 102_400
        }
    );
    assert_eq!((c.rcpts.min, c.rcpts.max), (1, 3));
    assert_eq!(c.timeouts.quit, std::time::Duration::from_secs(10));
    assert_eq!(c.sndbuf, Some(256 * 1024));
    let c = Config::from_yaml_str(
        "size: 4k\nrcpts: 2\ntimeouts: connect=2s,data_end=1m\n",
        "f.yaml",
    )
    .unwrap();
    assert_eq!(
        c.size,
        mailstorm_blast::config::SizeDist::Fixed { bytes: 4096 }
    );
    assert_eq!((c.rcpts.min, c.rcpts.max), (2, 2));
    assert_eq!(c.timeouts.data_end, std::time::Duration::from_secs(60));
    // The mapping forms (as in a report's `config`) still read back.
    let again = Config::from_yaml_str(&serde_yaml::to_string(&c).unwrap(), "r.yaml").unwrap();
    assert_eq!(again, c);
}

#[test]
fn scenario_errors_point_into_the_scenario_file() {
    let d = tmp_dir("scn");
    let cases: &[(&str, &[&str])] = &[
        (
            // The example: `stage: conect` on line 7.
            "name: x\n\
             description: inline plan typo\n\
             profile: {messages: 1}\n\
             expect: [\"delivered == 1\"]\n\
             plan:\n  \
               rules:\n    \
                 - stage: conect\n      \
                   action: {accept: true}\n",
            &["s0.yaml:7:14", "plan.rules[0].stage", "unknown variant `conect`", "connect"],
        ),
        (
            "profile:\n  messages: 1\n  size: {kind: fixed, bytes: lots}\nexpect: [\"delivered == 1\"]\n",
            // The `kind`-tagged form is buffered by serde: the mapping's position.
            &["s1.yaml:3:9", "profile.size", "\"lots\""],
        ),
        (
            "profile:\n  messages: 1\n  rcpts: {min: 1, most: 2}\nexpect: [\"delivered == 1\"]\n",
            &["s2.yaml:3:19", "profile.rcpts", "unknown field `most`", "min, max"],
        ),
        (
            "profile:\n  messages: 1\n  per-conn: 2\nexpect: [\"delivered == 1\"]\n",
            &["s3.yaml:3:3", "profile", "write `per_conn`"],
        ),
        (
            "profile: {messages: 1, timeouts: 5 fortnights}\nexpect: [\"delivered == 1\"]\n",
            &["s4.yaml:1:34", "profile.timeouts", "\"5 fortnights\""],
        ),
        (
            "plan: 7\nprofile: {messages: 1}\nexpect: [\"delivered == 1\"]\n",
            &["s5.yaml:1:7", "plan", "a file path or an inline mapping"],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let p = d.join(format!("s{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let e = Scenario::load(&p).expect_err(text).to_string();
        check(&e, needles);
    }
    // A profile file named by a scenario reports its own position.
    std::fs::write(d.join("prof.yaml"), "messages: 1\nsize: 4 kilo\n").unwrap();
    let p = d.join("by-path.yaml");
    std::fs::write(&p, "profile: prof.yaml\nexpect: [\"delivered == 1\"]\n").unwrap();
    let e = Scenario::load(&p).unwrap_err().to_string();
    check(&e, &["prof.yaml:2:7", "size", "\"4 kilo\""]);
    std::fs::remove_dir_all(d).ok();
}
