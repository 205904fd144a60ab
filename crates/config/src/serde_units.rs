//! Serde adapters for the unit grammar, for `#[serde(with = "...")]`.
//!
//! Every adapter reads a string in the grammar or a plain number (seconds
//! for durations, bytes for sizes) and writes the formatted string, so a
//! configuration printed back reads the way a user writes it.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::units::{parse_duration, parse_size};

/// Reads a scalar (string, integer or float) as text for a grammar parser.
struct ScalarVisitor<F> {
    expecting: &'static str,
    parse: F,
}

impl<'de, T, E: fmt::Display, F: FnOnce(&str) -> Result<T, E>> Visitor<'de> for ScalarVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
        (self.parse)(v).map_err(Er::custom)
    }
    fn visit_u64<Er: de::Error>(self, v: u64) -> Result<T, Er> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<Er: de::Error>(self, v: i64) -> Result<T, Er> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<Er: de::Error>(self, v: f64) -> Result<T, Er> {
        self.visit_str(&v.to_string())
    }
}

/// Deserializes a scalar through `parse`; `expecting` names the forms.
pub fn scalar<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    d.deserialize_any(ScalarVisitor { expecting, parse })
}

/// A value written either as a scalar in a compact grammar (`1k..100k`,
/// `10s`) or as the full mapping; the mapping is read from the user's own
/// document, so errors inside it keep their line and column.
pub fn scalar_or_map<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    E: fmt::Display,
{
    struct V<T, F> {
        inner: ScalarVisitor<F>,
        out: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, E: fmt::Display, F: FnOnce(&str) -> Result<T, E>> Visitor<'de>
        for V<T, F>
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.inner.expecting)
        }
        fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
            self.inner.visit_str(v)
        }
        fn visit_u64<Er: de::Error>(self, v: u64) -> Result<T, Er> {
            self.inner.visit_u64(v)
        }
        fn visit_i64<Er: de::Error>(self, v: i64) -> Result<T, Er> {
            self.inner.visit_i64(v)
        }
        fn visit_f64<Er: de::Error>(self, v: f64) -> Result<T, Er> {
            self.inner.visit_f64(v)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V {
        inner: ScalarVisitor { expecting, parse },
        out: PhantomData,
    })
}

/// `Duration` as `300ms`, `2s`, `1m`; a plain number is seconds.
pub mod duration {
    use super::*;
    use serde::Serializer;

    /// Writes the formatted duration.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::units::format_duration(*d))
    }

    /// Reads the grammar or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        scalar(d, "a duration such as 300ms, 2s, 1m", parse_duration)
    }
}

/// `Option<Duration>`: absent or `null` is `None`.
pub mod opt_duration {
    use super::*;
    use serde::Serializer;

    /// Writes the formatted duration or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::duration")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// A size in bytes as `4k`, `10MiB`; a plain number is bytes.
pub mod size {
    use super::*;
    use serde::Serializer;

    /// Writes the formatted size (`4KiB`, `1000`).
    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::units::format_size(*n))
    }

    /// Reads the grammar or a number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        scalar(d, "a size such as 512, 4k, 10MiB", parse_size)
    }
}

/// `Option<u64>` size: absent or `null` is `None`.
pub mod opt_size {
    use super::*;
    use serde::Serializer;

    /// Writes the formatted size or `null`.
    pub fn serialize<S: Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match n {
            Some(n) => super::size::serialize(n, s),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or a size.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::size")] u64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
