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

/// One step of a key path for [`locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// The value under this key of a mapping (compared exactly, as written).
    Key(&'a str),
    /// The key itself, as the last step: where a name is wrong rather
    /// than its value.
    KeyName(&'a str),
    /// The element of a list at this index (from 0).
    Index(usize),
}

/// Message of the error [`locate`] raises at the node it looks for; the
/// parser gives it that node's position like any error of a value.
const HERE: &str = "\u{0}mailstorm-config: located";

/// Line and column (1-based) of the node at `path` in `text`, for errors
/// found after parsing (a check across several values): the same
/// positions the loader reports for a value that does not parse.
/// `None` when the path is not in the document.
pub fn locate(text: &str, path: &[Seg<'_>]) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    match serde::de::DeserializeSeed::deserialize(Walk(path), de) {
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Walks `path`, skipping every other node, and fails at its end.
struct Walk<'p, 'a>(&'p [Seg<'a>]);

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0.first() {
            None => d.deserialize_any(Here),
            Some(Seg::Index(_)) => d.deserialize_seq(self),
            Some(_) => d.deserialize_map(self),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or list")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (name, key_itself) = match self.0[0] {
            Seg::Key(k) => (k, false),
            Seg::KeyName(k) => (k, true),
            Seg::Index(_) => return Ok(()),
        };
        while let Some(found) = map.next_key_seed(KeySeed { name, key_itself })? {
            if found {
                return map.next_value_seed(Walk(&self.0[1..]));
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Seg::Index(i) = self.0[0] else {
            return Ok(());
        };
        for _ in 0..i {
            if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk(&self.0[1..])).map(|_| ())
    }
}

/// Reads a key: `true` when it is `name`; fails on it when the key
/// itself is looked for.
struct KeySeed<'a> {
    name: &'a str,
    key_itself: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        match v == self.name {
            true if self.key_itself => Err(E::custom(HERE)),
            same => Ok(same),
        }
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Fails at whatever node it is given.
struct Here;

impl<'de> serde::de::Visitor<'de> for Here {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(HERE))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(HERE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_values_keys_and_elements() {
        let y = "ttl: 30d\nnames:\n  a.test:\n    mx:\n      - {preference: 1, host: x}\n      - {preference: 2, host: mx.b}\n  b.test: {addresses: [127.0.0.1]}\n";
        assert_eq!(locate(y, &[Seg::Key("ttl")]), Some((1, 6)));
        assert_eq!(locate(y, &[Seg::KeyName("names")]), Some((2, 1)));
        assert_eq!(
            locate(y, &[Seg::Key("names"), Seg::KeyName("b.test")]),
            Some((7, 3))
        );
        assert_eq!(
            locate(
                y,
                &[
                    Seg::Key("names"),
                    Seg::Key("a.test"),
                    Seg::Key("mx"),
                    Seg::Index(1),
                    Seg::Key("host")
                ]
            ),
            Some((6, 31))
        );
        assert_eq!(locate(y, &[Seg::Key("names"), Seg::Key("c.test")]), None);
        assert_eq!(
            locate(
                y,
                &[
                    Seg::Key("names"),
                    Seg::Key("a.test"),
                    Seg::Key("mx"),
                    Seg::Index(5)
                ]
            ),
            None
        );
    }

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
