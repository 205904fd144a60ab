//! Whole-value checks that run while parsing: a [`Checked`] value is
//! checked as soon as its mapping ends, so the error names the mapping's
//! line and column.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Types checked as a whole once parsed.
pub trait Check {
    /// `Err(message)` when the value is inconsistent.
    fn check(&self) -> Result<(), String>;
}

/// A value whose [`Check`] runs inside its own mapping, so the parser
/// reports the mapping's line and column with the error.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Checked<T>(pub T);

impl<'de, T: Deserialize<'de> + Check> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Check> Visitor<'de> for V<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let t = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                t.check().map_err(de::Error::custom)?;
                Ok(Checked(t))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}
