//! `--dashboard`: the report model so far, for the live page's feed.
//!
//! The model is the JSON report's (`report::to_json`) built from the
//! collector's interval snapshots: the totals replaced each interval, the
//! timeline kept as its rendered rows (a few hundred bytes each, not the
//! rows' histograms, which the engine already holds), the thresholds
//! evaluated as they stand, and the outcome `running`.

use serde_json::Value;

use crate::config::Config;
use crate::policy::runtime::Summary;
use crate::threshold::{self, Check};
use crate::{report, Progress, RunResult};

/// The model the feed serves while the run lasts.
#[derive(Debug)]
pub struct Model {
    /// Totals and settings; `rows` stays empty (see [`Model::timeline`]).
    result: RunResult,
    /// The timeline so far, as the report renders it.
    timeline: Vec<Value>,
    checks: Option<Vec<Check>>,
}

impl Model {
    /// An empty model for a run of `cfg` against `target`.
    pub fn new(cfg: &Config, target: &str) -> Model {
        let mut result = RunResult::empty(
            cfg.clone(),
            target.to_string(),
            std::time::Duration::ZERO,
            String::new(),
        );
        result.internal_error = None;
        // The run's own --threshold was parsed (and refused if bad) before.
        let checks = cfg
            .threshold
            .as_deref()
            .and_then(|t| threshold::parse(t).ok());
        Model {
            result,
            timeline: Vec::new(),
            checks,
        }
    }

    /// Takes in one interval of the run against `target`.
    pub fn interval(&mut self, target: &str, p: &Progress<'_>, resilience: Option<Summary>) {
        if self.result.target != target {
            self.result.target = target.to_string();
        }
        let i = self.timeline.len();
        self.timeline
            .push(report::timeline_row(i, p.row, p.interval));
        self.result.totals.clone_from(p.totals);
        self.result.elapsed = p.elapsed;
        self.result.resilience = resilience;
    }

    /// The model as JSON, with the outcome `running`.
    pub fn render(&mut self) -> Vec<u8> {
        let mut json = report::to_json(&self.result);
        let outcomes = self
            .checks
            .as_deref()
            .map(|c| threshold::evaluate(c, &self.result));
        let failing: Vec<String> = outcomes
            .iter()
            .flatten()
            .filter(|o| !o.passed)
            .map(|o| format!("so far: {} (measured {})", o.text, o.measured()))
            .collect();
        report::add_outcome(&mut json, outcomes.as_deref(), 0, "running", &failing);
        json["outcome"]["exit_code"] = Value::Null;
        // Moved in and back out rather than copied each interval.
        json["timeline"] = Value::Array(std::mem::take(&mut self.timeline));
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        if let Value::Array(rows) = json["timeline"].take() {
            self.timeline = rows;
        }
        bytes
    }
}
