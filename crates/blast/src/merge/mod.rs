//! `mailstorm-blast merge PARTS…`: the reports of a sharded run's
//! processes as the report of the one run they formed. Each part is read
//! back into the [`RunResult`] it was written from (the report's lossless
//! `measurements` and `histograms`), the parts are added up, and the
//! merged run goes through the same report, threshold and verdict code as
//! a single run.

pub mod args;
pub mod combine;
pub mod input;

use std::path::Path;

use serde_json::Value;

use crate::report;
use crate::shard_split::MAX_SHARDS;
use crate::threshold;
use crate::verdict::judge;
use crate::{BlastError, RunResult};

/// Why parts were refused.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// One part is unreadable, not a report, or does not belong.
    #[error("merge: {file}: {why}")]
    Part {
        /// The file, as given.
        file: String,
        /// What is wrong with it.
        why: String,
    },
    /// A part holds no report at all (an empty log, or only other lines:
    /// a shard that failed before reporting); a missing shard, merged
    /// without with `--allow-partial`.
    #[error(
        "merge: {file}: no report in it ({}); a missing shard: --allow-partial merges the \
         others without it",
        match last_line {
            Some(l) => format!("a shard that failed before reporting? its last line: {l:?}"),
            None => "empty".to_string(),
        }
    )]
    NoReport {
        /// The file, as given.
        file: String,
        /// Its last non-blank line, if any (the shard's error, usually).
        last_line: Option<String>,
    },
    /// Shards missing without `--allow-partial`.
    #[error("merge: {0}")]
    Missing(String),
    /// Too many parts.
    #[error("merge: {0} parts, more than the {MAX_SHARDS} a run may have")]
    TooMany(usize),
}

impl MergeError {
    pub(crate) fn part(file: &str, why: impl Into<String>) -> MergeError {
        MergeError::Part {
            file: file.to_string(),
            why: why.into(),
        }
    }
}

impl From<MergeError> for BlastError {
    fn from(e: MergeError) -> BlastError {
        BlastError::Config(e.to_string())
    }
}

/// A merged run and its JSON report.
#[derive(Debug)]
pub struct Merged {
    /// The whole run.
    pub result: RunResult,
    /// Its report, `merge` section, thresholds and outcome included.
    pub report: Value,
    /// The exit code (as a single run's).
    pub code: u8,
    /// The threshold results, if any were given.
    pub thresholds: Option<Vec<threshold::Outcome>>,
    /// Parts that held no report, left out as missing shards
    /// (`--allow-partial`): file and last line.
    pub no_report: Vec<(String, Option<String>)>,
}

/// Reads, checks and merges `paths`; judges `thresholds` on the result.
pub fn merge_files(
    paths: &[impl AsRef<Path>],
    thresholds: Option<&str>,
    allow_partial: bool,
) -> Result<Merged, BlastError> {
    if paths.len() > MAX_SHARDS as usize {
        return Err(MergeError::TooMany(paths.len()).into());
    }
    let mut parts = Vec::new();
    let mut no_report = Vec::new();
    for p in paths {
        match input::read(p.as_ref()) {
            Ok(part) => parts.push(part),
            Err(MergeError::NoReport { file, last_line }) if allow_partial => {
                no_report.push((file, last_line));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if parts.is_empty() {
        let files: Vec<&str> = no_report.iter().map(|(f, _)| f.as_str()).collect();
        return Err(MergeError::Missing(format!(
            "no part holds a report ({}): nothing to merge",
            files.join(", ")
        ))
        .into());
    }
    let checks = thresholds.map(threshold::parse).transpose()?;
    let cov = combine::check(&mut parts, allow_partial)?;
    let result = combine::combine(&parts);
    let checked = checks.map(|c| threshold::evaluate(&c, &result));
    let (code, status, mut reasons) = judge(&result, checked.as_deref());
    if !cov.missing.is_empty() {
        reasons.push(format!(
            "partial: {} of {} shards merged (--allow-partial)",
            parts.len(),
            cov.count
        ));
    }
    let mut json = report::to_json(&result);
    if let (Some(j), Some(obj)) = (&result.ledger, json.as_object_mut()) {
        obj.insert(
            "ledger".into(),
            serde_json::to_value(j).map_err(|e| BlastError::Internal(e.to_string()))?,
        );
    }
    report::add_outcome(&mut json, checked.as_deref(), code, status, &reasons);
    json["merge"] = combine::section(&parts, &cov, &no_report);
    Ok(Merged {
        result,
        report: json,
        code,
        thresholds: checked,
        no_report,
    })
}

/// The `merge` command: merge, print the summary, write the outputs.
pub fn run(a: &args::MergeArgs) -> anyhow::Result<u8> {
    use anyhow::Context;
    for (flag, path) in [
        ("--report", &a.report),
        ("--html", &a.html),
        ("--timeline", &a.timeline),
    ] {
        if let Some(p) = path.as_ref().filter(|p| p.as_os_str() != "-") {
            // Checked before the work, as for a run.
            if p.is_dir() {
                return Err(
                    BlastError::Config(format!("{flag} {}: a directory", p.display())).into(),
                );
            }
        }
    }
    let m = merge_files(&a.parts, a.threshold.as_deref(), a.allow_partial)?;
    let quiet_stdout = a.quiet || a.report.as_deref() == Some(Path::new("-"));
    if !quiet_stdout {
        print!("{}", report::summary(&m.result));
        if let Some(j) = &m.result.ledger {
            print!("{}", crate::ledger::summary(j));
        }
    }
    for (file, last) in &m.no_report {
        match last {
            Some(l) => eprintln!(
                "merge: {file}: no report in it (its last line: {l:?}): left out as a missing \
                 shard (--allow-partial)"
            ),
            None => eprintln!(
                "merge: {file}: no report in it (empty): left out as a missing shard \
                 (--allow-partial)"
            ),
        }
    }
    if m.report["merge"]["partial"] == true {
        eprintln!(
            "merge: partial: missing shard(s) {} (--allow-partial)",
            m.report["merge"]["missing"]
        );
    }
    if let Some(outcomes) = &m.thresholds {
        eprintln!("thresholds:");
        for o in outcomes {
            eprintln!("{}", threshold::describe(o));
        }
    }
    if let Some(p) = &a.report {
        if p.as_os_str() == "-" {
            print!("{}", report::framed(&m.report));
        } else {
            let text = serde_json::to_string_pretty(&m.report)? + "\n";
            std::fs::write(p, text).with_context(|| format!("writing --report {}", p.display()))?;
            eprintln!("merged report written to {}", p.display());
        }
    }
    if let Some(p) = &a.timeline {
        std::fs::write(p, report::timeline_csv(&m.result))
            .with_context(|| format!("writing --timeline {}", p.display()))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(
            p,
            mailstorm_web::report_page("mailstorm-blast merged run", &m.report),
        )
        .with_context(|| format!("writing --html {}", p.display()))?;
        eprintln!("HTML report written to {}", p.display());
    }
    Ok(m.code)
}
