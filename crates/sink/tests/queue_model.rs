//! The `queue` action: a server with finite capacity at end of data.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailstorm_sink::plan::{Engine, Plan};
use mailstorm_sink::Sink;

fn plan(action: &str, stage: &str) -> Result<Plan, String> {
    let yaml = format!("seed: 1\nrules:\n  - name: q\n    stage: {stage}\n    action:\n{action}");
    Plan::from_yaml_str(&yaml, "q.yaml").map_err(|e| e.to_string())
}

#[test]
fn bad_queues_are_refused_with_their_place() {
    let queue = "      queue: {workers: 2, service: 5ms}\n";
    assert!(plan(queue, "data_end").is_ok());
    let e = plan(queue, "rcpt").unwrap_err();
    assert!(e.contains("action.queue") && e.contains("data_end"), "{e}");
    let e = plan(
        "      queue: {workers: 2, service: 5ms}\n      delay: 1ms\n",
        "data_end",
    )
    .unwrap_err();
    assert!(e.contains("remove `delay`"), "{e}");
    let e = plan(
        "      queue: {workers: 2, service: 5ms}\n      reply: {code: 451}\n",
        "data_end",
    )
    .unwrap_err();
    assert!(e.contains("`reply` and `queue`"), "{e}");
    let e = plan("      queue: {workers: 0, service: 5ms}\n", "data_end").unwrap_err();
    assert!(e.contains("q.yaml:") && e.contains("workers"), "{e}");
    let e = plan(
        "      queue: {workers: 2, service: {distribution: lognormal, median: 5ms}}\n",
        "data_end",
    )
    .unwrap_err();
    assert!(
        e.contains("action.queue.service") && e.contains("p99"),
        "{e}"
    );
    let e = plan(
        "      queue: {workers: 2, service: 5ms, overflow: {reply: {code: 250}}}\n",
        "data_end",
    )
    .unwrap_err();
    assert!(e.contains("4xx or 5xx"), "{e}");
}

#[test]
fn a_busy_worker_delays_the_reply_and_a_full_queue_refuses() {
    // One worker, 300 ms per message, nobody may wait.
    let engine = Arc::new(Engine::new());
    engine.load(
        plan(
            "      queue: {workers: 1, service: 300ms, max_queue: 0}\n",
            "data_end",
        )
        .unwrap(),
    );
    let sink = start(Sink::builder().fault_engine(engine));
    let mut clients = [
        Client::ehlo(sink.local_addr()),
        Client::ehlo(sink.local_addr()),
    ];
    for c in &mut clients {
        c.cmd("MAIL FROM:<a@example.test>").expect(250, "2.1.0");
        c.cmd("RCPT TO:<b@example.test>").expect(250, "2.1.5");
        assert_eq!(c.cmd("DATA").code, 354);
    }
    // Both messages end at once: whichever the sink sees first holds the
    // only worker for 300 ms; the other finds it busy and the queue full.
    let t0 = Instant::now();
    let replies: Vec<(u16, String, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|c| {
                s.spawn(move || {
                    c.send(b"Subject: q\r\n\r\nbody\r\n.\r\n");
                    let r = c.reply();
                    (r.code, r.enhanced().to_string(), t0.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served: Vec<_> = replies.iter().filter(|r| r.0 == 250).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.0 == 421).collect();
    assert_eq!((served.len(), refused.len()), (1, 1), "{replies:?}");
    assert_eq!(refused[0].1, "4.3.2");
    assert!(refused[0].2 < Duration::from_millis(300), "{replies:?}");
    assert!(served[0].2 >= Duration::from_millis(300), "{replies:?}");
}
