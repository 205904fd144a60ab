//! Verdicts: a client judged against a policy (`GET /clients/{id}/verdict`,
//! `GET /verdicts`).
//!
//! Each rule is a check from the shared expression language over one
//! metric measured for the client (the policy's vocabulary is
//! [`crate::plan::model::METRICS`]):
//!
//! | metric | measured | untested when |
//! |---|---|---|
//! | `retry_4xx_min_interval` | shortest time from an injected 4xx to the retry of the same request (s) | no 4xx was retried |
//! | `retries_per_4xx` | most retries of one request after 4xx replies | no 4xx was injected |
//! | `resent_after_5xx` | requests sent again after a 5xx | no 5xx was injected |
//! | `commands_after_421` | commands after a 421 (QUIT excluded) | no 421 was sent |
//! | `reconnect_after_421` | shortest time from a 421 to the next connection (s) | no 421, or no reconnection |
//! | `size_violations` | MAIL `SIZE=` above the announced limit, data above the declared `SIZE=` | no MAIL yet |
//! | `unannounced_pipelining` | sessions that pipelined without PIPELINING announced | PIPELINING was always announced |
//! | `unclean_quits` | sessions the client closed without QUIT | no session closed yet |
//!
//! The overall verdict: `fail` if a rule failed, else `pass` if a rule
//! passed, else `untested`.

use std::time::Duration;

use mailstorm_config::expr::Check;
use serde::{Deserialize, Serialize};

use super::client::{Client, Rule};
use super::secs_text;
use crate::plan::model::{Policy, METRICS};

/// A rule's or a client's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The check held.
    Pass,
    /// The check did not hold.
    Fail,
    /// No evidence either way.
    Untested,
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleVerdict {
    /// The metric (`retry_4xx_min_interval`).
    pub rule: String,
    /// The check applied (`retry_4xx_min_interval>=1s`).
    pub expression: String,
    /// Its result.
    pub result: Outcome,
    /// The measured value (`1.2s`, `0`); `null` when untested.
    pub measured: Option<String>,
    /// A few lines saying what was seen (the latest, at most 4).
    pub evidence: Vec<String>,
}

/// A client's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientVerdict {
    /// The client id.
    pub client: String,
    /// `fail` if any rule failed, else `pass` if any passed, else
    /// `untested`.
    pub verdict: Outcome,
    /// Every rule of the policy, in [`METRICS`] order.
    pub rules: Vec<RuleVerdict>,
}

/// What was measured for a metric: a number (seconds for times), or
/// nothing (untested).
enum Measured {
    Count(u64),
    Time(Duration),
    Untested,
}

fn measure(c: &Client, rule: Rule) -> Measured {
    use Measured::*;
    let count_if = |tested: bool, n: u64| if tested { Count(n) } else { Untested };
    match rule {
        Rule::Retry4xxMinInterval => c.retry_4xx_min.map_or(Untested, Time),
        Rule::RetriesPer4xx => count_if(c.replies_4xx > 0, c.retries_per_4xx),
        Rule::ResentAfter5xx => count_if(c.replies_5xx > 0, c.resent_after_5xx),
        Rule::CommandsAfter421 => count_if(c.replies_421 > 0, c.commands_after_421),
        Rule::ReconnectAfter421 => match c.reconnect_min {
            Some(d) if c.replies_421 > 0 => Time(d),
            _ => Untested,
        },
        Rule::SizeViolations => count_if(c.mails > 0, c.size_violations),
        Rule::UnannouncedPipelining => {
            count_if(c.sessions_unannounced > 0, c.pipelined_unannounced)
        }
        Rule::UncleanQuits => count_if(c.sessions_closed > 0, c.unclean_quits),
    }
}

const RULES: [Rule; 8] = [
    Rule::Retry4xxMinInterval,
    Rule::RetriesPer4xx,
    Rule::ResentAfter5xx,
    Rule::CommandsAfter421,
    Rule::ReconnectAfter421,
    Rule::SizeViolations,
    Rule::UnannouncedPipelining,
    Rule::UncleanQuits,
];

fn judge(check: &Check, m: &Measured) -> (Outcome, Option<String>) {
    let (value, text) = match m {
        Measured::Untested => return (Outcome::Untested, None),
        Measured::Count(n) => (*n as f64, n.to_string()),
        Measured::Time(d) => (d.as_secs_f64(), secs_text(*d)),
    };
    let r = if check.holds(value) {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    (r, Some(text))
}

/// Client `id`'s verdict under `policy`.
pub(crate) fn verdict(id: &str, c: &Client, policy: &Policy) -> ClientVerdict {
    let rules: Vec<RuleVerdict> = RULES
        .iter()
        .zip(&policy.0)
        .zip(METRICS)
        .map(|((&rule, check), name)| {
            let (result, measured) = judge(check, &measure(c, rule));
            RuleVerdict {
                rule: name.to_string(),
                expression: check.to_string(),
                result,
                measured,
                evidence: c.evidence[rule as usize].iter().cloned().collect(),
            }
        })
        .collect();
    let any = |o| rules.iter().any(|r| r.result == o);
    let verdict = if any(Outcome::Fail) {
        Outcome::Fail
    } else if any(Outcome::Pass) {
        Outcome::Pass
    } else {
        Outcome::Untested
    };
    ClientVerdict {
        client: id.to_string(),
        verdict,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untested_pass_and_fail() {
        let p = Policy::default();
        let mut c = Client::default();
        let v = verdict("x", &c, &p);
        assert_eq!(v.verdict, Outcome::Untested);
        assert_eq!(v.rules.len(), 8);
        assert_eq!(v.rules[0].expression, "retry_4xx_min_interval>=1s");
        c.replies_4xx = 1;
        c.retried("rcpt x <a> <b>", 451, 1, Duration::from_millis(50));
        let v = verdict("x", &c, &p);
        assert_eq!(v.verdict, Outcome::Fail);
        assert_eq!(v.rules[0].result, Outcome::Fail);
        assert_eq!(v.rules[0].measured.as_deref(), Some("0.05s"));
        assert_eq!(
            v.rules[0].evidence,
            ["rcpt x <a> <b>: retried 0.05s after 451"]
        );
        assert_eq!(v.rules[1].result, Outcome::Pass, "{v:?}");
        let lax =
            Policy::default().with(Some(&crate::plan::model::ExpectSpec(vec![Check::parse(
                "retry_4xx_min_interval>=10ms",
            )
            .unwrap()])));
        assert_eq!(verdict("x", &c, &lax).verdict, Outcome::Pass);
    }
}
