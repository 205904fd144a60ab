//! `mailstorm-blast merge` flags.

use std::path::PathBuf;

use clap::Parser;

const AFTER_HELP: &str = "\
Merges the reports of the shards of one run (--shard I/N, the same
--run-id) into the report of the whole run: counts summed, HDR histograms
merged exactly, timelines aligned by wall-clock interval, ledger figures
joined; --threshold is judged on the merged run as on a single run.

A PART is a report file (--report FILE.json) or a log holding one framed
report (--report - writes it between -----BEGIN MAILSTORM REPORT----- and
-----END MAILSTORM REPORT----- lines, e.g. what `kubectl logs` prints).

Refused, naming the file (exit code 2): a part that cannot be read or is
not a report, a different schema version, a different run id or load
settings, the same shard twice, a missing shard (unless --allow-partial),
more than 4096 parts or a part over 64 MiB. A part with no report at all
(empty, or only other lines: the log of a shard that failed before
reporting) is a missing shard: refused, showing its last line, or left out
with --allow-partial; a report cut off or corrupt is refused even so.

Exit codes: 0 merged (and the thresholds passed), 1 a --threshold check
failed or the merged run did not pass, 2 refused or a usage error, 4 a part
recorded an internal error, 5 a part was interrupted.

Examples:
  mailstorm-blast merge shard-*.json --report run.json --html run.html
  mailstorm-blast merge logs/*.log --report run.json --threshold 'p99<50ms,5xx==0'";

/// Merge the reports of a sharded run into one.
#[derive(Debug, Parser, Default)]
#[command(
    name = "mailstorm-blast merge",
    bin_name = "mailstorm-blast merge",
    after_help = AFTER_HELP
)]
pub struct MergeArgs {
    /// Report files or logs with a framed report, one per shard.
    #[arg(required = true, value_name = "PARTS")]
    pub parts: Vec<PathBuf>,
    /// Write the merged JSON report here (`-`: framed, to standard output).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the merged run's self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write the merged per-interval CSV timeline here.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// Checks on the merged run, as for a single run (`p99<200ms,5xx==0`).
    #[arg(long)]
    pub threshold: Option<String>,
    /// Merge the shards that are there when some are missing; the report
    /// says which (`merge.partial`, `merge.missing`).
    #[arg(long)]
    pub allow_partial: bool,
    /// No summary on standard output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
