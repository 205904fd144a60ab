//! A rule's `stage`: a hook [`Stage`] by its stats name, or `any`.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::hook::Stage;

/// The stage a rule applies to: one stage the hook is consulted at (written
/// by its stats name, such as `rcpt` or `data_end`), or `any` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageSel {
    /// This stage only (one where [`Stage::is_consulted`] holds).
    One(Stage),
    /// Every stage the hook is consulted at.
    Any,
}

impl StageSel {
    /// The names a plan may write, in the order errors list them.
    pub const NAMES: [&'static str; Stage::CONSULTED + 1] = {
        let mut names = ["any"; Stage::CONSULTED + 1];
        let mut i = 0;
        while i < Stage::CONSULTED {
            names[i] = Stage::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// The name as written in a plan.
    pub fn as_str(self) -> &'static str {
        match self {
            StageSel::One(s) => s.as_str(),
            StageSel::Any => "any",
        }
    }
}

impl Serialize for StageSel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StageSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StageSel, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = StageSel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stage name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StageSel, E> {
                if v == "any" {
                    return Ok(StageSel::Any);
                }
                Stage::ALL[..Stage::CONSULTED]
                    .iter()
                    .find(|s| s.as_str() == v)
                    .map(|&s| StageSel::One(s))
                    .ok_or_else(|| E::unknown_variant(v, &StageSel::NAMES))
            }
        }
        d.deserialize_str(Name)
    }
}
