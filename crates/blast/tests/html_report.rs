//! The HTML report opened in a real browser: Debian's `chromium`, headless.
//! A capacity search and a plain `--stages` run each write `--html`; the
//! page is rendered with `--dump-dom` after a virtual-time budget and the
//! DOM is checked: every chart drawn (a uPlot canvas per chart, holding as
//! many points as the report has steps or intervals), the verdict shown,
//! no script error on the page or on the browser's console. A screenshot
//! of each is kept under `target/tmp/html-report/` for people to look at.
//!
//! Without `chromium` on PATH the tests say so and pass, unless
//! `MAILSTORM_REQUIRE_BROWSER=1` (scripts/test.sh sets it after installing
//! chromium), so a developer machine without a browser can still run
//! `cargo test`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::browser::{browser, chromium, console, run, text_of};

const BIN: &str = env!("CARGO_BIN_EXE_mailstorm-blast");

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The page's DOM after its scripts ran, and the browser's console lines.
fn render(chrome: &Path, page: &Path, name: &str) -> (String, Vec<String>) {
    let profile = out_dir().join(format!("profile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let url = format!("file://{}", page.display());
    let (code, dom, log) = run(
        browser(chrome, &profile).args(["--dump-dom", &url]),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "chromium --dump-dom failed: {log}");
    let shot = out_dir().join(format!("{name}.png"));
    let (code, _, slog) = run(
        browser(chrome, &profile)
            .arg("--window-size=1100,2600")
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "chromium --screenshot failed: {slog}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "empty screenshot"
    );
    let _ = std::fs::remove_dir_all(&profile);
    (dom, console(&log))
}

/// The `data-points` of the chart element `id`.
fn points(dom: &str, id: &str) -> usize {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let tag_end = at + dom[at..].find('>').unwrap();
    let tag = &dom[..tag_end];
    let start = tag.rfind('<').unwrap();
    let tag = &tag[start..];
    let v = tag
        .split("data-points=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("chart {id} has no data-points: {tag}"));
    v[..v.find('"').unwrap()].parse().unwrap()
}

fn check_page(dom: &str, console: &[String]) {
    assert!(console.is_empty(), "console output: {console:#?}");
    assert!(
        dom.contains("data-rendered=\"true\""),
        "page did not render"
    );
    assert!(
        dom.contains("id=\"errors\" class=\"errors\" hidden"),
        "the page reported an error: {}",
        text_of(dom, "errors")
    );
}

fn write_plan(name: &str, yaml: &str) -> PathBuf {
    let p = out_dir().join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn capacity_report_renders_in_chromium() {
    let Some(chrome) = chromium() else { return };
    let plan = write_plan(
        "limit-1600.yaml",
        "seed: 1\nrules:\n  - name: capacity\n    stage: mail\n    rate_limit:\n      max: 100\n      \
         per: 62500us\n      by: global\n    action:\n      reply:\n        code: 451\n        \
         enhanced: 4.3.2\n        text: \"queue full\"\n",
    );
    let html = out_dir().join("capacity.html");
    let json = out_dir().join("capacity.json");
    // The test process stands in for the target's CPU and memory.
    let pid = std::process::id().to_string();
    let (code, out, err) = run(
        Command::new(BIN).args([
            "capacity",
            "--target-pid",
            &pid,
            "--sink-plan",
            plan.to_str().unwrap(),
            "--start-rate",
            "1000",
            "--precision",
            "0.2",
            "--warmup",
            "250ms",
            "--step-duration",
            "1s",
            "--interval",
            "250ms",
            "--no-pin",
            "-c",
            "32",
            "--html",
            html.to_str().unwrap(),
            "--report",
            json.to_str().unwrap(),
        ]),
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let steps = model["steps"].as_array().unwrap().len();
    let ticks = model["timeline"].as_array().unwrap().len();
    assert!(steps >= 3);
    let (dom, console) = render(&chrome, &html, "capacity");
    check_page(&dom, &console);
    assert_eq!(text_of(&dom, "verdict"), model["capacity"]["verdict"]);
    for id in ["chart-throughput", "chart-latency", "chart-replies"] {
        assert_eq!(points(&dom, id), steps, "{id}");
    }
    for id in [
        "chart-timeline-rate",
        "chart-timeline-latency",
        "chart-timeline-conns",
        "chart-timeline-target",
    ] {
        assert_eq!(points(&dom, id), ticks, "{id}");
    }
    assert!(dom.matches("<canvas").count() >= 6, "uPlot drew no canvas");
    // The knee row is marked in the step table.
    assert_eq!(dom.matches("class=\"knee\"").count(), 1);
}

#[test]
fn stages_run_report_renders_in_chromium() {
    let Some(chrome) = chromium() else { return };
    let html = out_dir().join("stages.html");
    let json = out_dir().join("stages.json");
    let (code, out, err) = run(
        Command::new(BIN).args([
            "--stages",
            "1s:100,1s:300",
            "-c",
            "8",
            "--interval",
            "250ms",
            "--no-pin",
            "--threshold",
            "p99<2s,accept_rate>=0.99",
            "--html",
            html.to_str().unwrap(),
            "--report",
            json.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ticks = model["timeline"].as_array().unwrap().len();
    assert!(ticks >= 7, "{ticks} timeline rows");
    let (dom, console) = render(&chrome, &html, "stages");
    check_page(&dom, &console);
    assert!(text_of(&dom, "verdict").starts_with("passed: "));
    assert_eq!(points(&dom, "chart-timeline-rate"), ticks);
    assert_eq!(points(&dom, "chart-timeline-latency"), ticks);
    assert!(dom.matches("<canvas").count() >= 2);
    // Thresholds and both load stages are tabled.
    assert!(dom.contains("p99&lt;2s") || dom.contains("p99<2s"));
    assert!(dom.contains("Load stages"));
    // The embedded sink's ledger join: every accepted recipient arrived.
    let accepted = model["ledger"]["accepted"].as_u64().unwrap();
    assert!(
        accepted > 0 && model["ledger"]["lost"] == 0,
        "{}",
        model["ledger"]
    );
    assert!(dom.contains("End to end (ledger)"));
    assert!(dom.contains("every accepted recipient arrived"));
}

#[test]
fn transport_errors_are_shown_by_kind() {
    let Some(chrome) = chromium() else { return };
    let html = out_dir().join("errors.html");
    let json = out_dir().join("errors.json");
    // The embedded sink resets the connection after every fifth message's
    // data: the client sees `reset` transport errors.
    let plan = write_plan(
        "errors-plan.yaml",
        "seed: 3\nrules:\n  - {stage: data_end, key: global, every: 5, action: {disconnect: {mode: rst}}}\n",
    );
    let (code, out, err) = run(
        Command::new(BIN).args([
            "-n",
            "200",
            "-c",
            "4",
            "--no-pin",
            "--sink-plan",
            plan.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--report",
            json.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(matches!(code, Some(0 | 1)), "{code:?}\n{out}\n{err}");
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let resets = model["transport_errors"]["reset"].as_u64().unwrap();
    assert!(resets > 0, "{}", model["transport_errors"]);
    let (dom, console) = render(&chrome, &html, "errors");
    check_page(&dom, &console);
    assert!(dom.contains("Transport errors"), "no transport error table");
    let row = format!("<td>{resets}</td><td class=\"l\">reset</td>");
    assert!(dom.contains(&row), "{row} not in the page");
    assert!(
        !dom.contains(">refused</td>"),
        "kinds that did not happen are left out"
    );
}

#[test]
fn scenario_report_renders_in_chromium() {
    let Some(chrome) = chromium() else { return };
    let scn = write_plan(
        "scenario-page.yaml",
        "name: scenario-page\nprofile: {messages: 40, concurrency: 2, threads: 1, pin: false}\n\
         expect:\n  - delivered == 40\n  - rejected == 0\n",
    );
    let html = out_dir().join("scenario.html");
    let (code, out, err) = run(
        Command::new(BIN).args([
            "--scenario",
            scn.to_str().unwrap(),
            "--no-pin",
            "--html",
            html.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (dom, console) = render(&chrome, &html, "scenario");
    check_page(&dom, &console);
    assert!(
        text_of(&dom, "verdict").starts_with("passed: 40 of 40 messages accepted"),
        "{}",
        text_of(&dom, "verdict")
    );
    // Every expectation is tabled with its measured value and verdict.
    assert!(dom.contains("Scenario scenario-page"));
    let at = dom
        .find("id=\"expectations\"")
        .expect("the expectations table");
    let table = &dom[at..at + dom[at..].find("</table>").unwrap()];
    let table = table.replace("&lt;", "<").replace("&gt;", ">");
    for e in ["delivered == 40", "rejected == 0"] {
        assert!(table.contains(e), "{e} missing: {table}");
    }
    assert!(!table.contains("FAILED"), "{table}");
}
