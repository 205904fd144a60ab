//! Scenarios: the CI use case. A scenario file names a sink fault plan, a
//! blast profile (with its `policy:` section) and expectations;
//! `mailstorm-blast --scenario FILE` starts the embedded sink with the
//! plan, runs the profile against it, checks every expectation, prints each
//! with its measured value and exits 1 if any fails.
//!
//! ```yaml
//! name: greylisting-backoff
//! description: every first attempt is greylisted; retries pass
//! plan: ../greylisting.yaml        # a path (relative to this file) or inline
//! profile:                         # a path or inline (same keys as --profile)
//!   messages: 200
//!   policy: { preset: postfix }
//! time_scale: 0.01                 # optional; --time-scale overrides it
//! deterministic: true              # attempt-keyed: counts repeat exactly
//! expect:
//!   - delivered == 200
//!   - attempts.max == 2
//!   - retry_interval.min >= 2s
//! ```
//!
//! Against a real relay, the scenario names it and the sink the relay
//! delivers into (that sink's control API): the plan is loaded there, and
//! the ledger, counters and referee are read from there after the run.
//!
//! ```yaml
//! target: 127.0.0.1:2525            # the relay (Postfix, Exim, ...)
//! downstream: http://127.0.0.1:8025 # mailstorm-sink behind it
//! profile: { messages: 500, drain: 2m }
//! expect: [lost == 0, duplicates == 0, e2e_p99 < 30s]
//! ```

pub mod expect;
pub mod flags;
pub mod junit;
pub mod run;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use expect::{Checked, Expectation, Measurements};

use mailstorm_sink::plan::PlanSpec;

use crate::config::Config;

/// A scenario that cannot be loaded. YAML errors carry `file:line:col` and
/// the key path in the scenario's own file (inline plans and profiles
/// included) or in the plan or profile file it names.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ScenarioError {
    /// The scenario file.
    pub path: PathBuf,
    /// What is wrong, starting with the file (and position) it is in.
    pub message: String,
}

/// A file reference or an inline mapping, read from the user's own
/// document so errors inside an inline mapping keep their position.
#[derive(Debug, Clone, PartialEq)]
pub enum Source<T> {
    /// A path, relative to the scenario file.
    Path(PathBuf),
    /// The content itself.
    Inline(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Source<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Source<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a file path or an inline mapping")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Source<T>, E> {
                Ok(Source::Path(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Source<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Source::Inline)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The file as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// A short name (default: the file name).
    #[serde(default)]
    pub name: Option<String>,
    /// What the scenario shows.
    #[serde(default)]
    pub description: Option<String>,
    /// The sink's fault plan (none: a well-behaved sink).
    #[serde(default)]
    pub plan: Option<Source<PlanSpec>>,
    /// The blast profile.
    pub profile: Source<Config>,
    /// A relay to send to (`host:port`) instead of the embedded sink.
    #[serde(default)]
    pub target: Option<String>,
    /// The control API of the sink the relay delivers into
    /// (`http://host:port`): the plan goes there, and the ledger, counters
    /// and referee come from there.
    #[serde(default)]
    pub downstream: Option<String>,
    /// Policy time scale (the `--time-scale` flag wins).
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// The outcome counts depend only on attempt-keyed decisions, so they
    /// repeat exactly across runs and thread counts (tests check this).
    #[serde(default)]
    pub deterministic: bool,
    /// The checks.
    pub expect: Vec<String>,
}

/// A loaded, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// The plan as YAML, if any, and where it came from.
    pub plan: Option<(String, String)>,
    /// The profile.
    pub config: Config,
    /// The relay under test, `host:port` (`None`: the embedded sink).
    pub target: Option<String>,
    /// The downstream sink's control URL (with a relay target).
    pub downstream: Option<String>,
    /// The scenario's time scale.
    pub time_scale: Option<f64>,
    /// Attempt-keyed: counts repeat exactly.
    pub deterministic: bool,
    /// The checks.
    pub expectations: Vec<Expectation>,
}

impl Scenario {
    /// Reads and validates a scenario file (plan, profile, expectations).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError {
            path: path.to_path_buf(),
            message: format!("scenario {}: {message}", path.display()),
        };
        let yaml_err = |e: mailstorm_config::YamlError| ScenarioError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let text = mailstorm_config::read_config_file(path).map_err(|e| err(e.to_string()))?;
        let spec: ScenarioSpec =
            mailstorm_config::from_yaml_str(&text, &path.display().to_string())
                .map_err(yaml_err)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |what: &str, p: &Path| -> Result<(String, String), ScenarioError> {
            let full = dir.join(p);
            mailstorm_config::read_config_file(&full)
                .map(|t| (t, full.display().to_string()))
                .map_err(|e| err(format!("{what} {}: {e}", full.display())))
        };
        let plan = match spec.plan {
            None => None,
            Some(Source::Path(p)) => {
                let (yaml, origin) = read("plan", &p)?;
                mailstorm_sink::plan::Plan::from_yaml_str(&yaml, &origin).map_err(|e| {
                    ScenarioError {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    }
                })?;
                Some((yaml, origin))
            }
            // Parsed (and its rules checked) from the scenario's own text
            // above; the runner gets it back as YAML.
            Some(Source::Inline(plan)) => Some((
                serde_yaml::to_string(&plan).map_err(|e| err(format!("plan: {e}")))?,
                format!("{} (inline plan)", path.display()),
            )),
        };
        if let Some((yaml, origin)) = &plan {
            mailstorm_sink::plan::Plan::from_yaml_str(yaml, origin)
                .map_err(|e| err(format!("plan: {e}")))?;
        }
        let config: Config = match spec.profile {
            Source::Path(p) => {
                let (t, origin) = read("profile", &p)?;
                mailstorm_config::from_yaml_str(&t, &origin).map_err(yaml_err)?
            }
            Source::Inline(c) => c,
        };
        if config.target.is_some() {
            return Err(err(
                "profile: `target` belongs to the scenario (top-level `target:`), not its profile"
                    .into(),
            ));
        }
        if config.ledger.is_some() {
            return Err(err(
                "profile: `ledger` belongs to the scenario (top-level `downstream:`)".into(),
            ));
        }
        let downstream = spec
            .downstream
            .as_deref()
            .map(|d| normalise_url(d).map_err(|m| err(format!("downstream: {m}"))))
            .transpose()?;
        if spec.target.is_none() && downstream.is_some() {
            return Err(err(
                "downstream: only with a relay `target:` (the embedded sink is its own downstream)"
                    .into(),
            ));
        }
        if let Some(t) = &spec.target {
            if t.trim().is_empty() {
                return Err(err("target: empty; give the relay's host:port".into()));
            }
            if downstream.is_none() && plan.is_some() {
                return Err(err(
                    "plan: with a relay `target:` the plan is loaded into the downstream sink: \
                     give `downstream:` (its control URL)"
                        .into(),
                ));
            }
        }
        if config.messages.is_none() && config.duration.is_none() {
            return Err(err(
                "profile: give `messages` or `duration`: a scenario must be bounded".into(),
            ));
        }
        if spec.expect.is_empty() {
            return Err(err("expect: give at least one expectation".into()));
        }
        let expectations = spec
            .expect
            .iter()
            .enumerate()
            .map(|(i, t)| expect::parse(t).map_err(|m| err(format!("expect[{i}]: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if spec.target.is_some() && downstream.is_none() {
            if let Some((i, e)) = spec_needs_downstream(&expectations) {
                return Err(err(format!(
                    "expect[{i}]: {:?} is measured by the downstream sink: give `downstream:`",
                    e.text
                )));
            }
        }
        if !config.trace {
            if let Some((i, e)) = expectations
                .iter()
                .enumerate()
                .find(|(_, e)| expect::is_ledger(&e.metric))
            {
                return Err(err(format!(
                    "expect[{i}]: {:?} joins on the trace header: remove `trace: false`",
                    e.text
                )));
            }
        }
        let name = spec.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Scenario {
            name,
            description: spec.description,
            plan,
            config,
            target: spec.target,
            downstream,
            time_scale: spec.time_scale,
            deterministic: spec.deterministic,
            expectations,
        })
    }
}

/// The first expectation only a sink can measure (referee, counters,
/// ledger), with its index.
fn spec_needs_downstream(exps: &[Expectation]) -> Option<(usize, &Expectation)> {
    exps.iter().enumerate().find(|(_, e)| {
        e.metric.starts_with("referee.")
            || e.metric.starts_with("sink.")
            || e.metric.starts_with("retry_interval")
            || e.metric.starts_with("reconnect_after_421")
            || expect::is_ledger(&e.metric)
    })
}

/// `host:port` or `http://host:port[/]` as `http://host:port`.
fn normalise_url(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/');
    let rest = t.strip_prefix("http://").unwrap_or(t);
    if t.starts_with("https://") {
        return Err(format!("{s:?}: the sink's control API speaks plain http"));
    }
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(format!("{s:?}: expected http://host:port"));
    }
    Ok(format!("http://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("blast-scn-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_inline_and_paths() {
        let d = tmp("ok");
        std::fs::write(
            d.join("plan.yaml"),
            "seed: 1\nrules:\n  - stage: rcpt\n    key: triplet\n    first: 1\n    action: {reply: {code: 451}}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("s.yaml"),
            "plan: plan.yaml\nprofile: {messages: 10, concurrency: 2}\n\
             expect: [\"delivered == 10\", \"retry_interval.min >= 1s\"]\n",
        )
        .unwrap();
        let s = Scenario::load(&d.join("s.yaml")).unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.config.messages, Some(10));
        assert_eq!(s.expectations.len(), 2);
        assert!(s.plan.as_ref().unwrap().0.contains("451"));
        std::fs::write(
            d.join("i.yaml"),
            "name: inline\nplan: {seed: 2, rules: [{stage: mail, first: 1, action: {reply: {code: 450}}}]}\n\
             profile: {duration: 1s}\nexpect: [\"rejected == 0\"]\ndeterministic: true\n",
        )
        .unwrap();
        let i = Scenario::load(&d.join("i.yaml")).unwrap();
        assert!(i.deterministic && i.plan.unwrap().0.contains("450"));
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn errors_name_the_problem() {
        let d = tmp("bad");
        let cases = [
            ("profile: {messages: 1}\nexpect: [\"deliverd == 1\"]\n", "expect[0]"),
            ("profile: {messages: 1}\nexpect: []\n", "at least one"),
            ("profile: {concurrency: 1}\nexpect: [\"delivered == 1\"]\n", "bounded"),
            ("profile: {messages: 1, nope: 2}\nexpect: [\"delivered == 1\"]\n", "nope"),
            ("plan: missing.yaml\nprofile: {messages: 1}\nexpect: [\"delivered == 1\"]\n", "missing.yaml"),
            (
                "plan: {rules: [{stage: nowhere}]}\nprofile: {messages: 1}\nexpect: [\"delivered == 1\"]\n",
                "plan",
            ),
            ("profile: {messages: 1}\nexpect: [\"delivered == 1\"]\nextra: 1\n", "extra"),
            (
                "profile: {messages: 1, target: \"127.0.0.1:25\"}\nexpect: [\"delivered == 1\"]\n",
                "top-level `target:`",
            ),
            (
                "downstream: http://127.0.0.1:1\nprofile: {messages: 1}\nexpect: [\"lost == 0\"]\n",
                "only with a relay",
            ),
            (
                "target: 127.0.0.1:2525\nprofile: {messages: 1}\nexpect: [\"lost == 0\"]\n",
                "expect[0]: \"lost == 0\" is measured by the downstream sink",
            ),
            (
                "target: 127.0.0.1:2525\nplan: {rules: []}\nprofile: {messages: 1}\nexpect: [\"delivered == 1\"]\n",
                "give `downstream:`",
            ),
            (
                "target: 127.0.0.1:2525\ndownstream: ftp://x:1\nprofile: {messages: 1}\nexpect: [\"delivered == 1\"]\n",
                "expected http://host:port",
            ),
            (
                "profile: {messages: 1, trace: false}\nexpect: [\"e2e_p99 < 1s\"]\n",
                "trace header",
            ),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let p = d.join(format!("{i}.yaml"));
            std::fs::write(&p, text).unwrap();
            let e = Scenario::load(&p).unwrap_err().to_string();
            assert!(
                e.contains(needle) && e.contains(&format!("{i}.yaml")),
                "{i}: {e}"
            );
        }
        std::fs::remove_dir_all(d).ok();
    }
}
