//! Which run flags `--scenario` applies. A scenario runs its own profile,
//! plan and target, so a run flag given with it would be silently ignored:
//! every flag of the run command line ([`Args`]) given on the command line
//! is refused unless it is in [`APPLIED`]. The list is an allow list, so a
//! flag added to [`Args`] later is refused until someone wires it into the
//! scenario run and adds it here.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use crate::cli::Args;
use crate::BlastError;

/// The flags (clap ids, the [`Args`] field names) a scenario run applies:
/// `--scenario` and `--junit` themselves, the machine's threads and
/// pinning, the seed, the policy time scale, `--report`/`--html` (one
/// scenario) and `-q` (no ledger drain progress).
pub const APPLIED: &[&str] = &[
    "scenario",
    "junit",
    "threads",
    "no_pin",
    "seed",
    "time_scale",
    "report",
    "html",
    "quiet",
];

/// How a flag is written, `--long` (or `-s` for one without a long name).
fn spelling(a: &clap::Arg) -> String {
    match (a.get_long(), a.get_short()) {
        (Some(l), _) => format!("--{l}"),
        (None, Some(s)) => format!("-{s}"),
        (None, None) => a.get_id().to_string(),
    }
}

/// The flags `--scenario` applies, as written, in `--help` order.
pub fn applied() -> Vec<String> {
    Args::command()
        .get_arguments()
        .filter(|a| APPLIED.contains(&a.get_id().as_str()))
        .map(spelling)
        .collect()
}

/// The flags given on the command line that a scenario would not apply,
/// as written (`-c 5` is `--concurrency`), in `--help` order. Defaults
/// and environment variables (JOB_COMPLETION_INDEX) do not count: only
/// what the user typed. `m` must come from [`Args::command`].
pub fn not_applied(m: &ArgMatches) -> Vec<String> {
    Args::command()
        .get_arguments()
        .filter(|a| !APPLIED.contains(&a.get_id().as_str()))
        .filter(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(spelling)
        .collect()
}

/// Refuses (a configuration error: exit code 2) a command line with flags
/// a scenario would not apply, naming them and what to do instead.
pub fn refuse_not_applied(m: &ArgMatches) -> Result<(), BlastError> {
    let refused = not_applied(m);
    if refused.is_empty() {
        return Ok(());
    }
    Err(BlastError::Config(format!(
        "--scenario runs the scenario's own profile and plan: {} would not apply; \
         put the settings in the scenario file (its `profile:`, or `target:` and \
         `downstream:` for a relay). The flags a scenario applies: {}",
        refused.join(", "),
        applied()
            .iter()
            .filter(|f| *f != "--scenario")
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(argv: &[&str]) -> Result<ArgMatches, clap::Error> {
        Args::command()
            .try_get_matches_from(std::iter::once("mailstorm-blast").chain(argv.iter().copied()))
    }

    #[test]
    fn every_applied_id_is_a_flag() {
        let ids: Vec<String> = Args::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for id in APPLIED {
            assert!(ids.iter().any(|i| i == id), "{id} is not an Args flag");
        }
        assert_eq!(applied().len(), APPLIED.len());
    }

    /// Each flag of the run command line, given alone with a value it
    /// accepts, is refused by name unless it is applied: flags added later
    /// are covered without a list to keep up to date here.
    #[test]
    fn every_other_flag_on_the_command_line_is_refused() {
        // Values tried in turn until clap accepts one.
        const VALUES: &[&str] = &["1", "1s", "127.0.0.1", "auto", "off", "rate", "plain"];
        let cmd = Args::command();
        let mut refused = Vec::new();
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let flag = spelling(a);
            let takes_value = a.get_action().takes_values();
            let m = if takes_value {
                VALUES
                    .iter()
                    .find_map(|v| matches(&[&flag, v]).ok())
                    .unwrap_or_else(|| panic!("{flag}: add a value it accepts to VALUES"))
            } else {
                matches(&[&flag]).unwrap_or_else(|e| panic!("{flag}: {e}"))
            };
            let got = not_applied(&m);
            if APPLIED.contains(&id) {
                assert!(got.is_empty(), "{flag} applies, yet refused: {got:?}");
            } else {
                assert_eq!(got, std::slice::from_ref(&flag), "{flag}");
                refused.push(flag);
            }
        }
        // Sanity: the walk saw the whole command line, the flattened live
        // flags included, and refused what the audit found ignored.
        for f in [
            "--target",
            "--rcpts",
            "--size",
            "--profile",
            "--per-conn",
            "--chunking",
            "--drain",
            "--tls",
            "--lmtp",
            "--timeout",
            "--abort-on-fail",
            "--run-id",
            "--no-trace",
            "--dashboard",
            "--shard",
            "--print-config",
        ] {
            assert!(
                refused.iter().any(|r| r == f),
                "{f} not refused: {refused:?}"
            );
        }
        assert!(refused.len() >= 60, "only {} flags refused", refused.len());
    }

    #[test]
    fn short_flags_are_named_by_their_long_name_in_help_order() {
        let m = matches(&[
            "-n",
            "5",
            "--scenario",
            "s.yaml",
            "-c",
            "2",
            "-T",
            "127.0.0.1:25",
        ])
        .unwrap();
        assert_eq!(not_applied(&m), ["--target", "--concurrency", "--messages"]);
        let e = refuse_not_applied(&m).unwrap_err().to_string();
        assert!(
            e.contains("--target, --concurrency, --messages would not apply"),
            "{e}"
        );
        assert!(
            e.contains("a scenario applies: --junit, --time-scale"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_applied_flags_are_not_refused() {
        let m = matches(&[
            "--scenario",
            "a.yaml",
            "b.yaml",
            "--junit",
            "j.xml",
            "-t",
            "2",
            "--no-pin",
            "--seed",
            "3",
            "--time-scale",
            "0.1",
            "-q",
        ])
        .unwrap();
        assert!(not_applied(&m).is_empty());
        assert!(refuse_not_applied(&m).is_ok());
    }
}
