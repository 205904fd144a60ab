//! The policy's part of the report: offered vs attempted load, goodput and
//! retries, attempts per message, final states, the breaker timeline and
//! the concurrency timeline (JSON `resilience` section and the summary).

use std::fmt::Write;

use serde_json::{json, Value};

use super::runtime::Summary;

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The `resilience` section of the JSON report.
pub fn to_json(s: &Summary, secs: f64) -> Value {
    let t = &s.tally;
    let attempted = t.offered + t.retries;
    let hist: serde_json::Map<String, Value> = t
        .attempts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    let finished: u64 = t.attempts.iter().sum();
    json!({
        "policy": serde_json::to_value(&s.policy).unwrap_or(Value::Null),
        "load": {
            "offered": t.offered,
            "attempted": attempted,
            "retries": t.retries,
            "offered_per_s": per_s(t.offered, secs),
            "attempted_per_s": per_s(attempted, secs),
            "goodput_per_s": per_s(t.messages.delivered, secs),
        },
        "final_states": {
            "delivered": t.messages.delivered,
            "rejected": t.messages.rejected,
            "gave_up": t.messages.gave_up,
            "gave_up_budget": t.messages.gave_up_budget,
            "pending": t.messages.pending,
        },
        "recipients": {
            "delivered": t.recipients.delivered,
            "rejected": t.recipients.rejected,
            "gave_up": t.recipients.gave_up,
            "pending": t.recipients.pending,
        },
        "attempts_per_message": hist,
        "attempts": {
            "count": finished,
            "mean": (t.attempts_mean() * 1000.0).round() / 1000.0,
            "p50": t.attempts_quantile(0.5),
            "p90": t.attempts_quantile(0.9),
            "p99": t.attempts_quantile(0.99),
            "max": t.attempts_quantile(1.0),
        },
        "undelivered": serde_json::to_value(&t.undelivered).unwrap_or(Value::Null),
        "breaker": s.breaker.map(|b| json!({
            "opened": b.opened,
            "closed": b.closed,
            "half_opened": b.half_opened,
            "transitions": serde_json::to_value(&s.transitions).unwrap_or(Value::Null),
        })),
        "concurrency": s.suspensions.map(|n| json!({
            "suspensions": n,
            "timeline": serde_json::to_value(&s.concurrency).unwrap_or(Value::Null),
        })),
        "retry_budget": s.budget.map(|b| json!({"granted": b.granted, "denied": b.denied})),
    })
}

/// The policy's lines of the human summary.
pub fn summary(s: &Summary, secs: f64) -> String {
    let t = &s.tally;
    let mut o = String::new();
    let attempted = t.offered + t.retries;
    let attempts = match s.policy.max_attempts {
        0 => "unbounded".to_string(),
        n => n.to_string(),
    };
    let age = s.policy.max_age.map_or_else(String::new, |a| {
        format!(", max age {:.1}s", a.as_secs_f64())
    });
    let _ = writeln!(
        o,
        "\npolicy:      {:?} preset, max attempts {attempts}{age}, time scale {}",
        s.policy.preset, s.policy.time_scale
    );
    let _ = writeln!(
        o,
        "load:        offered {} ({:.1}/s), attempted {} ({:.1}/s), retries {}, goodput {:.1} msg/s",
        t.offered,
        per_s(t.offered, secs),
        attempted,
        per_s(attempted, secs),
        t.retries,
        per_s(t.messages.delivered, secs)
    );
    let _ = writeln!(
        o,
        "final:       delivered {}, rejected {}, gave up {} (budget {}), pending {}",
        t.messages.delivered,
        t.messages.rejected,
        t.messages.gave_up_total(),
        t.messages.gave_up_budget,
        t.messages.pending
    );
    let hist: Vec<String> = t
        .attempts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}×{n}"))
        .collect();
    let _ = writeln!(
        o,
        "attempts:    per message {} (p99 {}, max {})",
        if hist.is_empty() {
            "-".into()
        } else {
            hist.join(", ")
        },
        t.attempts_quantile(0.99),
        t.attempts_quantile(1.0)
    );
    if let Some(b) = s.budget {
        let _ = writeln!(
            o,
            "budget:      {} retries granted, {} denied",
            b.granted, b.denied
        );
    }
    if let Some(b) = s.breaker {
        let _ = writeln!(o, "breaker:     opened {}, closed {}", b.opened, b.closed);
        for tr in s.transitions.iter().take(20) {
            let _ = writeln!(
                o,
                "  {:>8.3}s  {} → {}  ({})",
                tr.at_s,
                tr.from.name(),
                tr.to.name(),
                tr.reason
            );
        }
        if s.transitions.len() > 20 {
            let _ = writeln!(o, "  … {} more in the report", s.transitions.len() - 20);
        }
    }
    if let Some(n) = s.suspensions {
        let line: Vec<String> = s
            .concurrency
            .iter()
            .take(30)
            .map(|p| format!("{:.2}s:{}", p.at_s, p.concurrency))
            .collect();
        let more = if s.concurrency.len() > 30 { " …" } else { "" };
        let _ = writeln!(
            o,
            "concurrency: {} (suspended {n} times){more}",
            line.join(" ")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::runtime::{Final, Msg, Resilience, Tally};
    use crate::policy::PolicySpec;
    use std::time::{Duration, Instant};

    #[test]
    fn sections() {
        let p: PolicySpec = serde_yaml::from_str(
            "retry_budget: {ratio: 0.1}\nbreaker: {consecutive_failures: 1, cooldown: 1s}\n\
             concurrency: {initial: 2, limit: 4}\n",
        )
        .unwrap();
        let r = Resilience::new(p.resolve(None).unwrap(), 1, Instant::now());
        r.observe(
            Duration::from_millis(5),
            &crate::policy::runtime::Fate::connection_failure(1),
            false,
        );
        let mut t = Tally {
            offered: 10,
            retries: 2,
            ..Tally::default()
        };
        let mut m = Msg::new(3, 1, Duration::ZERO);
        m.attempts = 2;
        m.delivered = 1;
        m.pending = 0;
        t.finish(&m, Final::Delivered);
        let s = r.summary(t);
        let j = to_json(&s, 2.0);
        assert_eq!(j["load"]["attempted"], 12);
        assert_eq!(j["load"]["offered_per_s"], 5.0);
        assert_eq!(j["attempts_per_message"]["2"], 1);
        assert_eq!(j["breaker"]["opened"], 1);
        assert_eq!(j["breaker"]["transitions"][0]["to"], "open");
        assert_eq!(j["concurrency"]["timeline"][1]["concurrency"], 1);
        assert_eq!(j["retry_budget"]["granted"], 0);
        let text = summary(&s, 2.0);
        assert!(text.contains("offered 10 (5.0/s), attempted 12"), "{text}");
        assert!(text.contains("closed → open"), "{text}");
        assert!(text.contains("0.00s:2 0.01s:1"), "{text}");
    }
}
