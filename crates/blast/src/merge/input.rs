//! Reading the parts: a report file or a log with one framed report,
//! bounded in size, checked to be a report of this schema, and turned back
//! into the [`RunResult`] it was written from.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::MergeError;
use crate::config::Config;
use crate::measurements::Measurements;
use crate::report::{FRAME_BEGIN, FRAME_END, SCHEMA};
use crate::shard_split::Shard;
use crate::RunResult;

/// Largest part accepted: a report of a long run with a fine timeline is a
/// few MiB; anything far beyond is not a report.
pub const MAX_PART_BYTES: u64 = 64 << 20;

/// One part, read back.
#[derive(Debug)]
pub struct Part {
    /// The file, as given.
    pub file: String,
    /// `run.id`.
    pub run_id: String,
    /// `run.shard` (`None`: an unsharded run).
    pub shard: Option<Shard>,
    /// `run.started_unix_us`.
    pub started_us: u64,
    /// The run, rebuilt from the report's lossless sections.
    pub result: RunResult,
    /// Sections that cannot be merged and were present (`resilience`,
    /// `routing`).
    pub unmerged: Vec<&'static str>,
}

/// The JSON text of `text`: the one framed report if there is a frame,
/// else the whole text when it is a JSON document (a report file).
/// `Ok(None)`: no report at all, neither a frame nor JSON (an empty log,
/// or one with only other lines, e.g. the error of a shard that failed
/// before it could report). A frame that is begun and not ended, or ended
/// and not begun, is a damaged report, not a missing one: an error.
pub fn unframe<'a>(text: &'a str, file: &str) -> Result<Option<&'a str>, MergeError> {
    let begins = text.lines().filter(|l| l.trim_end() == FRAME_BEGIN).count();
    match begins {
        0 if text.lines().any(|l| l.trim_end() == FRAME_END) => Err(MergeError::part(
            file,
            format!("{FRAME_END} without {FRAME_BEGIN} (a log cut at its start?)"),
        )),
        0 if text.trim_start().starts_with('{') => Ok(Some(text)),
        0 => Ok(None),
        1 => {
            let start = text
                .find(FRAME_BEGIN)
                .map(|i| i + FRAME_BEGIN.len())
                .unwrap_or(0);
            let rest = &text[start..];
            let end = rest.find(FRAME_END).ok_or_else(|| {
                MergeError::part(
                    file,
                    format!("{FRAME_BEGIN} without {FRAME_END} (a cut-off log?)"),
                )
            })?;
            Ok(Some(&rest[..end]))
        }
        n => Err(MergeError::part(
            file,
            format!("{n} framed reports in one file (a restarted pod?): give one per file"),
        )),
    }
}

/// The last non-blank line of `text`, trimmed and cut to a readable
/// length: what a failed shard said last (its error).
pub fn last_line(text: &str) -> Option<String> {
    const MAX: usize = 300;
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    })
}

/// Reads and checks one part.
pub fn read(path: &Path) -> Result<Part, MergeError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| MergeError::part(&file, e.to_string()))?;
    if meta.len() > MAX_PART_BYTES {
        return Err(MergeError::part(
            &file,
            format!(
                "{} bytes, more than the {MAX_PART_BYTES} a part may have",
                meta.len()
            ),
        ));
    }
    // Bounded again: a pipe or device reports a length of 0.
    let text = mailstorm_config::read_to_string_bounded(path, MAX_PART_BYTES)
        .map_err(|e| MergeError::part(&file, e.to_string()))?;
    parse(&text, &file)
}

/// Checks one part's text (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<Part, MergeError> {
    let Some(body) = unframe(text, file)? else {
        return Err(MergeError::NoReport {
            file: file.to_string(),
            last_line: last_line(text),
        });
    };
    let json: Value = serde_json::from_str(body.trim())
        .map_err(|e| MergeError::part(file, format!("not a JSON report: {e}")))?;
    let bad = |m: String| MergeError::part(file, m);
    match json.get("schema").and_then(Value::as_str) {
        Some(SCHEMA) => {}
        Some(other) => {
            return Err(bad(format!(
                "schema {other:?}: this blaster merges {SCHEMA:?} reports only"
            )))
        }
        None => return Err(bad("no \"schema\": not a mailstorm-blast report".into())),
    }
    let run = json
        .get("run")
        .filter(|r| r.is_object())
        .ok_or_else(|| bad("no \"run\" section (written by an older blaster?)".into()))?;
    let run_id = run
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no run.id".into()))?
        .to_string();
    let shard: Option<Shard> = match run.get("shard") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let s: Shard =
                serde_json::from_value(v.clone()).map_err(|e| bad(format!("run.shard: {e}")))?;
            Some(Shard::new(s.index, s.count, "run.shard").map_err(|e| bad(e.to_string()))?)
        }
    };
    let started_us = run
        .get("started_unix_us")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no run.started_unix_us".into()))?;
    let elapsed_ns = run.get("elapsed_ns").and_then(Value::as_u64);
    let field = |k: &str| json.get(k).cloned().unwrap_or(Value::Null);
    let config: Config =
        serde_json::from_value(field("config")).map_err(|e| bad(format!("config: {e}")))?;
    let m: Measurements = serde_json::from_value(field("measurements"))
        .map_err(|e| bad(format!("measurements: {e}")))?;
    let hists: BTreeMap<String, String> =
        serde_json::from_value(field("histograms")).map_err(|e| bad(format!("histograms: {e}")))?;
    let (totals, rows) = m.rebuild(&hists).map_err(bad)?;
    let ledger = match field("ledger") {
        Value::Null => None,
        v => Some(serde_json::from_value(v).map_err(|e| bad(format!("ledger: {e}")))?),
    };
    let elapsed = match elapsed_ns {
        Some(ns) => Duration::from_nanos(ns),
        None => {
            let given = field("duration_s");
            let secs = given.as_f64().unwrap_or(0.0).max(0.0);
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| *d <= mailstorm_config::MAX_DURATION)
                .ok_or_else(|| bad(format!("duration_s {given}: longer than any run")))?
        }
    };
    let target = json
        .pointer("/targets/0")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut unmerged = Vec::new();
    for k in ["resilience", "routing"] {
        if !field(k).is_null() {
            unmerged.push(k);
        }
    }
    Ok(Part {
        file: file.to_string(),
        run_id,
        shard,
        started_us,
        result: RunResult {
            totals,
            rows,
            elapsed,
            config,
            target,
            interrupted: field("interrupted").as_bool().unwrap_or(false),
            resilience: None,
            internal_error: field("internal_error").as_str().map(str::to_string),
            ledger,
            routing: None,
            started_at: UNIX_EPOCH + Duration::from_micros(started_us),
        },
        unmerged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unframes_one_report_and_refuses_two_or_a_cut() {
        let log = format!("noise\n{FRAME_BEGIN}\n{{\"a\": 1}}\n{FRAME_END}\nmore noise\n");
        assert_eq!(unframe(&log, "f").unwrap().unwrap().trim(), "{\"a\": 1}");
        assert_eq!(unframe("{\"b\": 2}", "f").unwrap(), Some("{\"b\": 2}"));
        let two = format!("{log}{log}");
        let e = unframe(&two, "pod.log").unwrap_err().to_string();
        assert!(
            e.contains("pod.log") && e.contains("2 framed reports"),
            "{e}"
        );
        let cut = format!("{FRAME_BEGIN}\n{{\"a\":");
        let e = unframe(&cut, "cut.log").unwrap_err().to_string();
        assert!(e.contains("cut.log") && e.contains("without"), "{e}");
        let head_cut = format!("\"x\": 1}}\n{FRAME_END}\n");
        let e = unframe(&head_cut, "head.log").unwrap_err().to_string();
        assert!(e.contains("head.log") && e.contains("at its start"), "{e}");
    }

    #[test]
    fn a_log_without_a_report_is_no_report_not_a_broken_one() {
        assert_eq!(unframe("", "f").unwrap(), None);
        assert_eq!(unframe("\n  \n", "f").unwrap(), None);
        let failed = "Error: connecting to 127.0.0.1:34999: refused\n";
        assert_eq!(unframe(failed, "f").unwrap(), None);
        match parse(failed, "shard-1.log").unwrap_err() {
            MergeError::NoReport { file, last_line } => {
                assert_eq!(file, "shard-1.log");
                assert_eq!(
                    last_line.as_deref(),
                    Some("Error: connecting to 127.0.0.1:34999: refused")
                );
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            parse("", "e.log").unwrap_err(),
            MergeError::NoReport {
                last_line: None,
                ..
            }
        ));
        // A cut report file is damaged, not missing.
        assert!(matches!(
            parse("{\"schema\": ", "cut.json").unwrap_err(),
            MergeError::Part { .. }
        ));
        let long = "é".repeat(400);
        let l = last_line(&long).unwrap();
        assert_eq!(l.chars().count(), 301);
    }

    #[test]
    fn names_the_file_for_foreign_json() {
        let e = parse("{\"schema\": \"other/1\"}", "x.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json") && e.contains("other/1"), "{e}");
        let e = parse("{}", "y.json").unwrap_err().to_string();
        assert!(
            e.contains("y.json") && e.contains("not a mailstorm-blast report"),
            "{e}"
        );
    }
}
