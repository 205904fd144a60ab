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

/// Writes the `with` adapter module for one unit type and its `Option`
/// twin, so both kinds read and write the same way.
macro_rules! unit_adapters {
    (
        $(#[$doc:meta])* $name:ident,
        $(#[$opt_doc:meta])* $opt_name:ident,
        $ty:ty, $format:path, $parse:path, $expecting:literal
    ) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;
            use serde::Serializer;

            /// Writes the value in the grammar.
            pub fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&$format(*v))
            }

            /// Reads the grammar or a plain number.
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                scalar(d, $expecting, $parse)
            }
        }

        $(#[$opt_doc])*
        pub mod $opt_name {
            use super::*;
            use serde::Serializer;

            /// Writes the value in the grammar, or `null`.
            pub fn serialize<S: Serializer>(v: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                match v {
                    Some(v) => super::$name::serialize(v, s),
                    None => s.serialize_none(),
                }
            }

            /// Reads `null` or a value.
            pub fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<Option<$ty>, D::Error> {
                struct W($ty);
                impl<'de> Deserialize<'de> for W {
                    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        super::$name::deserialize(d).map(W)
                    }
                }
                Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
            }
        }
    };
}

unit_adapters!(
    /// `Duration` as `300ms`, `2s`, `1m`; a plain number is seconds.
    duration,
    /// `Option<Duration>`: absent or `null` is `None`.
    opt_duration,
    Duration,
    crate::units::format_duration,
    parse_duration,
    "a duration such as 300ms, 2s, 1m"
);

unit_adapters!(
    /// A size in bytes as `4k`, `10MiB`; a plain number is bytes.
    size,
    /// `Option<u64>` size: absent or `null` is `None`.
    opt_size,
    u64,
    crate::units::format_size,
    parse_size,
    "a size such as 512, 4k, 10MiB"
);
