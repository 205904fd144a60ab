//! The control API against a real sink: clearing the plan is explicit
//! (`DELETE /plan`), and `DELETE /messages` gives the memory back.

mod common;

use std::sync::Arc;

use common::*;
use mailstorm_sink::control::EMPTY_PLAN_MESSAGE;
use mailstorm_sink::plan::Engine;
use mailstorm_sink::{Sink, SinkHandle};

const PLAN: &str = "rules:\n  - name: no-mail\n    stage: mail\n    action: { reply: { code: 451, enhanced: \"4.3.0\", text: \"later\" } }\n";

fn sink_with_plan() -> SinkHandle {
    let sink = start(
        Sink::builder()
            .control("127.0.0.1:0".parse().unwrap())
            .fault_engine(Arc::new(Engine::new())),
    );
    let r = http(
        sink.control_addr().unwrap(),
        "PUT",
        "/plan",
        PLAN.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    sink
}

fn mail_reply(sink: &SinkHandle) -> u16 {
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("MAIL FROM:<a@b.test>").code
}

#[test]
fn an_empty_plan_is_refused_and_the_active_plan_stays() {
    let sink = sink_with_plan();
    let api = sink.control_addr().unwrap();
    assert_eq!(mail_reply(&sink), 451);
    for body in [
        &b""[..],
        b"\n  \n",
        b"# only a comment\n# and another\n",
        b"{}",
        b"{}\n",
        b"---\n",
    ] {
        let r = http(api, "PUT", "/plan", body);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        assert!(r.text().contains("DELETE /plan"), "{}", r.text());
        assert_eq!(r.text().trim_end(), EMPTY_PLAN_MESSAGE);
    }
    assert_eq!(mail_reply(&sink), 451, "the plan is still active");
    assert!(http(api, "GET", "/plan", b"").text().contains("no-mail"));
}

#[test]
fn delete_plan_clears_it() {
    let sink = sink_with_plan();
    let api = sink.control_addr().unwrap();
    assert_eq!(mail_reply(&sink), 451);
    assert_eq!(http(api, "DELETE", "/plan", b"").status, 204);
    assert_eq!(
        mail_reply(&sink),
        250,
        "normal behaviour after DELETE /plan"
    );
    assert_eq!(http(api, "GET", "/plan", b"").text(), "rules: []\n");
    // Deleting again is fine (idempotent).
    assert_eq!(http(api, "DELETE", "/plan", b"").status, 204);
    // An explicit empty rule list is a plan, not a mistake.
    assert_eq!(http(api, "PUT", "/plan", b"rules: []\n").status, 204);
}

#[test]
fn delete_plan_without_a_fault_engine_is_404() {
    let sink = start(Sink::builder().control("127.0.0.1:0".parse().unwrap()));
    let api = sink.control_addr().unwrap();
    assert_eq!(http(api, "DELETE", "/plan", b"").status, 404);
    assert_eq!(http(api, "PUT", "/plan", b"").status, 404);
}

/// `/metrics` as Prometheus itself would read it: the reference text
/// parser (Python prometheus_client) accepts the whole exposition, with
/// the sink's counters, the referee's per-client series and the process's
/// own CPU and memory.
#[test]
fn metrics_parse_with_the_reference_prometheus_parser() {
    let sink = sink_with_plan();
    assert_eq!(mail_reply(&sink), 451);
    let mut c = Client::ehlo(sink.local_addr());
    c.cmd("RSET");
    let r = http(sink.control_addr().unwrap(), "GET", "/metrics", b"");
    assert_eq!(r.status, 200);
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
def value(name):
    return sum(s.value for s in fams[name].samples if s.name in (name, name + "_total"))
print(len(fams), value("mailstorm_sink_connections"), value("process_cpu_seconds"),
      value("process_resident_memory_bytes"))
"#;
    let mut py = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    py.stdin
        .take()
        .unwrap()
        .write_all(r.text().as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused /metrics (prometheus-client installed by scripts/test.sh): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.text()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(v[0] >= 10.0, "metric families: {text}");
    assert!(v[1] >= 2.0, "connections counted: {text}");
    assert!(v[2] > 0.0 && v[3] > 1_048_576.0, "process metrics: {text}");
}
