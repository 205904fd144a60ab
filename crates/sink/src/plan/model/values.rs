//! The plan's value types (reply codes, probabilities, counts, times) and
//! the serde adapters that read times in the shared duration grammar. Each
//! checks its value inside the parser's visitor, so an error carries the
//! value's own line, column and key path.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Reads a number and checks it inside the parser's visitor, so an error
/// carries the value's own line and column and key path.
struct Num<F>(&'static str, F);

impl<'de, T, F: FnOnce(f64) -> Result<T, String>> Visitor<'de> for Num<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.1)(v as f64).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.1)(v as f64).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

fn integer(v: f64, what: &str) -> Result<u64, String> {
    if v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v) {
        Ok(v as u64)
    } else {
        Err(format!("{what} must be a whole number, got {v}"))
    }
}

/// A reply code: three digits, 200..=599.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Code(pub u16);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Num("a reply code (200..=599)", |v: f64| {
            let n = integer(v, "a reply code")?;
            if (200..=599).contains(&n) {
                Ok(Code(n as u16))
            } else {
                Err(format!(
                    "reply code {n} is out of range; allowed: 200..=599 (4xx/5xx refuse, 2xx/3xx accept)"
                ))
            }
        }))
    }
}

/// A probability in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Probability(pub f64);

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Num("a probability (0.0..=1.0)", |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(Probability(p))
            } else {
                Err(format!(
                    "probability {p} is out of range; allowed: 0.0..=1.0"
                ))
            }
        }))
    }
}

/// A count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Positive(pub u64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Num(
            "a whole number >= 1",
            |v: f64| -> Result<Positive, String> {
                match integer(v, "a count")? {
                    0 => Err("0 is not allowed; must be at least 1".to_string()),
                    n => Ok(Positive(n)),
                }
            },
        ))
    }
}

/// A non-negative, finite number (seconds or milliseconds, said where used).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct NonNeg(pub f64);

impl<'de> Deserialize<'de> for NonNeg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Num("a number >= 0", |v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(NonNeg(v))
            } else {
                Err(format!("{v} is not allowed; expected a finite number >= 0"))
            }
        }))
    }
}

/// One value or a list of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// A [`NonNeg`] number of seconds written as a duration (`90s`, `1.5m`).
pub(super) mod secs {
    use super::*;
    use serde::Serializer;
    use std::time::Duration;

    pub(in crate::plan) fn serialize<S: Serializer>(v: &NonNeg, s: S) -> Result<S::Ok, S::Error> {
        mailstorm_config::serde_units::duration::serialize(
            &Duration::from_secs_f64(v.0.min(1e12)),
            s,
        )
    }
    pub(in crate::plan) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<NonNeg, D::Error> {
        mailstorm_config::serde_units::duration::deserialize(d).map(|v| NonNeg(v.as_secs_f64()))
    }
}

/// `Option` of [`secs`].
pub(super) mod opt_secs {
    use super::*;
    use serde::Serializer;

    pub(in crate::plan) fn serialize<S: Serializer>(
        v: &Option<NonNeg>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::secs::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub(in crate::plan) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NonNeg>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::secs")] NonNeg);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// An `Option<NonNeg>` of milliseconds written as a duration (`250ms`).
pub(super) mod opt_millis {
    use super::*;
    use serde::Serializer;

    pub(in crate::plan) fn serialize<S: Serializer>(
        v: &Option<NonNeg>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        super::opt_secs::serialize(&v.map(|ms| NonNeg(ms.0 / 1e3)), s)
    }
    pub(in crate::plan) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NonNeg>, D::Error> {
        Ok(super::opt_secs::deserialize(d)?.map(|s| NonNeg(s.0 * 1e3)))
    }
}

/// A whole number of milliseconds written as a duration (`5ms`).
pub(super) mod whole_millis {
    use super::*;
    use serde::Serializer;
    use std::time::Duration;

    pub(in crate::plan) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        mailstorm_config::serde_units::duration::serialize(&Duration::from_millis(*v), s)
    }
    pub(in crate::plan) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let v = mailstorm_config::serde_units::duration::deserialize(d)?;
        u64::try_from(v.as_millis()).map_err(|_| de::Error::custom("gap is too large"))
    }
}
