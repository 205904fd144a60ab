//! Loading a plan: parse (YAML or JSON), validate, compile its rules.

use std::path::{Path, PathBuf};

use super::model::{self, PlanSpec};
use super::validate::{self, Rule};

/// A plan that cannot be loaded. The old plan (if any) stays active.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file could not be read.
    #[error("cannot read plan {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Malformed, an unknown key, or a bad value.
    #[error("{origin}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Invalid {
        /// File name, or `<PUT /plan>` and the like.
        origin: String,
        /// Line and column (1-based) when known.
        location: Option<(usize, usize)>,
        /// What is wrong: the key path, the value and what is allowed.
        message: String,
    },
}

/// A parsed, validated and compiled plan.
#[derive(Debug)]
pub struct Plan {
    spec: PlanSpec,
    pub(crate) rules: Vec<Rule>,
    origin: String,
    /// Bytes of the text it was parsed from: what scoped plans' budget
    /// counts of their strings (patterns, reply texts).
    text_len: usize,
}

/// Removes serde_yaml's trailing " at line L column C" (the location is
/// reported separately).
fn strip_location(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg,
    }
}

impl Plan {
    /// Parses a YAML plan; `origin` names it in errors.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Plan, PlanError> {
        let spec = model::parse_yaml(text, origin).map_err(|e| PlanError::Invalid {
            origin: origin.to_string(),
            location: e.location,
            message: crate::config::keyed_message(e),
        })?;
        Plan::compile(spec, origin, text.len())
    }

    /// Parses a JSON plan (same keys as YAML).
    pub fn from_json_str(text: &str, origin: &str) -> Result<Plan, PlanError> {
        let spec: PlanSpec = serde_json::from_str(text).map_err(|e| PlanError::Invalid {
            origin: origin.to_string(),
            location: Some((e.line(), e.column())),
            message: {
                let m = e.to_string();
                strip_location(m)
            },
        })?;
        Plan::compile(spec, origin, text.len())
    }

    /// Parses a request body: JSON when the content type says so or the
    /// body starts with `{`, YAML otherwise.
    pub fn from_bytes(
        body: &[u8],
        content_type: Option<&str>,
        origin: &str,
    ) -> Result<Plan, PlanError> {
        let text = std::str::from_utf8(body).map_err(|_| PlanError::Invalid {
            origin: origin.to_string(),
            location: None,
            message: "the plan is not UTF-8".into(),
        })?;
        let json =
            content_type.is_some_and(|c| c.contains("json")) || text.trim_start().starts_with('{');
        if json {
            Plan::from_json_str(text, origin)
        } else {
            Plan::from_yaml_str(text, origin)
        }
    }

    /// Reads a YAML (or JSON) plan file.
    pub fn from_file(path: &Path) -> Result<Plan, PlanError> {
        let text = mailstorm_config::read_config_file(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Plan::from_bytes(text.as_bytes(), None, &path.display().to_string())
    }

    fn compile(spec: PlanSpec, origin: &str, text_len: usize) -> Result<Plan, PlanError> {
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                validate::compile_rule(i, &r.0).map_err(|message| PlanError::Invalid {
                    origin: origin.to_string(),
                    location: None,
                    message: format!("rules[{i}]: {message}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            spec,
            rules,
            origin: origin.to_string(),
            text_len,
        })
    }

    /// The plan as parsed.
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }

    /// Where it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Bytes of the YAML or JSON text it was parsed from.
    pub fn text_len(&self) -> usize {
        self.text_len
    }

    /// The plan as YAML (every key, defaults filled in).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.spec).unwrap_or_default()
    }

    /// Whether a rule looks at message headers (the session then keeps the
    /// header block of each message even in discard mode).
    pub fn needs_headers(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.m.header.is_some() || r.key == model::KeyKind::MessageId)
    }
}
