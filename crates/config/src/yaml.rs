//! Loading YAML that a person wrote into a typed struct, with errors a
//! person can act on: `file:line:col`, the key path (`rules[2].stage`), what
//! is wrong and which keys or values are allowed. serde's wording is kept
//! where it is already plain; Rust type names (`struct RcptRange`,
//! `internally tagged enum SizeDist`) are replaced by the shape they stand
//! for, and an old or flag-style key spelling is named with its right one.

use std::fmt;

use serde::de::DeserializeOwned;

/// A YAML document that does not fit the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    /// The file (or a description such as `<string>`).
    pub origin: String,
    /// Line and column (1-based) when known.
    pub location: Option<(usize, usize)>,
    /// Key path such as `rules[2].stage`; empty at the top level.
    pub path: String,
    /// What is wrong, with the allowed keys or values where they apply.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Key renames a document kind knows about: `(old, new)`; an old key is
/// reported as "renamed, write `new`".
pub type Renames<'a> = &'a [(&'a str, &'a str)];

/// Parses `text` (from `origin`) into `T`. An empty document, or one with
/// only comments, is an empty mapping.
pub fn from_yaml_str<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, YamlError> {
    from_yaml_str_with(text, origin, &[])
}

/// [`from_yaml_str`] with a table of renamed keys for better errors.
pub fn from_yaml_str_with<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    renames: Renames<'_>,
) -> Result<T, YamlError> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---");
    let text = if blank { "{}" } else { text };
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = path_string(e.path());
        let inner = e.into_inner();
        YamlError {
            origin: origin.to_owned(),
            location: inner.location().map(|l| (l.line(), l.column())),
            message: friendly(&raw_message(&inner, &path), renames),
            path,
        }
    })
}

/// `rules[2].stage` from serde_path_to_error's path (`.` at the top).
fn path_string(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

/// serde_yaml's message without its own path prefix and position suffix.
fn raw_message(e: &serde_yaml::Error, path: &str) -> String {
    let mut m = e.to_string();
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(i) = m.rfind(&suffix) {
            m.replace_range(i..i + suffix.len(), "");
        }
    }
    // serde_yaml prefixes its own path ("rules[0].stage: ..."); ours is
    // reported separately.
    if let Some((head, rest)) = m.split_once(": ") {
        let is_path = !head.contains(char::is_whitespace);
        if !path.is_empty() && is_path && (path.starts_with(head) || path.ends_with(head)) {
            m = rest.to_owned();
        }
    }
    m
}

/// Rewrites serde's wording for a person.
fn friendly(msg: &str, renames: Renames<'_>) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((key, tail)) = rest.split_once('`') {
            let allowed = backticked(tail);
            return unknown_key(key, &allowed, renames);
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((value, tail)) = rest.split_once('`') {
            let allowed = backticked(tail);
            let snake = value.replace('-', "_");
            if snake != value && allowed.contains(&snake.as_str()) {
                return format!("unknown variant `{value}`: write `{snake}` (snake_case)");
            }
            return format!(
                "unknown variant `{value}`; allowed values: {}",
                allowed.join(", ")
            );
        }
    }
    without_type_names(msg)
}

/// The backticked names in serde's "expected one of `a`, `b`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

fn unknown_key(key: &str, allowed: &[&str], renames: Renames<'_>) -> String {
    if let Some((_, new)) = renames.iter().find(|(old, _)| *old == key) {
        if allowed.contains(new) {
            return format!("unknown field `{key}`: renamed, write `{new}`");
        }
    }
    let snake = key.replace('-', "_");
    if snake != key && allowed.contains(&snake.as_str()) {
        return format!("unknown field `{key}`: write `{snake}` (keys are snake_case)");
    }
    for suffix in ["_seconds", "_secs", "_ms"] {
        if let Some(stem) = snake.strip_suffix(suffix) {
            if allowed.contains(&stem) {
                return format!(
                    "unknown field `{key}`: renamed, write `{stem}` with a unit (e.g. {stem}: 300ms, 2s, 1m)"
                );
            }
        }
    }
    if allowed.is_empty() {
        format!("unknown field `{key}`; this mapping takes no keys")
    } else {
        format!(
            "unknown field `{key}`; allowed keys: {}",
            allowed.join(", ")
        )
    }
}

/// Replaces serde's Rust type names with the shape they stand for.
fn without_type_names(msg: &str) -> String {
    const SHAPES: [(&str, &str); 10] = [
        (
            "data did not match any variant of untagged enum ",
            "a value of an allowed form",
        ),
        ("internally tagged enum ", "a mapping with `kind`"),
        ("adjacently tagged enum ", "a mapping"),
        ("struct variant ", "a mapping"),
        ("tuple variant ", "a list"),
        ("unit variant ", "a name"),
        ("newtype struct ", "a value"),
        ("tuple struct ", "a list"),
        ("struct ", "a mapping"),
        ("enum ", "one of the allowed names"),
    ];
    let mut out = msg.to_owned();
    for (phrase, shape) in SHAPES {
        while let Some(i) = find_word(&out, phrase) {
            let name_start = i + phrase.len();
            let name_end = out[name_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(out.len(), |j| name_start + j);
            // Only a CamelCase Rust name, not prose that happens to say "enum".
            if !out[name_start..].starts_with(|c: char| c.is_ascii_uppercase()) {
                break;
            }
            out.replace_range(i..name_end, shape);
        }
    }
    out
}

/// `phrase` at a word start.
fn find_word(s: &str, phrase: &str) -> Option<usize> {
    s.match_indices(phrase)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || !s.as_bytes()[i - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_become_shapes() {
        assert_eq!(
            without_type_names("invalid type: string \"x\", expected struct RcptRange"),
            "invalid type: string \"x\", expected a mapping"
        );
        assert_eq!(
            without_type_names(
                "invalid type: integer `3`, expected internally tagged enum SizeDist"
            ),
            "invalid type: integer `3`, expected a mapping with `kind`"
        );
        assert_eq!(
            without_type_names("data did not match any variant of untagged enum Source"),
            "a value of an allowed form"
        );
    }
}
