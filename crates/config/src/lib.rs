//! mailstorm's one config language, shared by the sink and the blaster.
//!
//! - [`units`]: the duration (`300ms`, `2s`, `1.5s`, `1m`, `1h`, `1d`) and
//!   size (`4k`, `4KiB`, `10MiB`, `1G`) grammar: parse and format, with
//!   checked arithmetic and errors that quote the bad value.
//! - [`range`]: `lo..hi` ranges of sizes or counts (`1k..100k`, `1..3`).
//! - [`serde_units`]: serde adapters so YAML and JSON use the same forms as
//!   the command line.
//! - [`expr`]: the one expression language for judgements
//!   (`metric op value`, `retry_4xx_min_interval>=1s`): parse, evaluate,
//!   print back.
//! - [`file`]: reading a file the user named, bounded, so a device or a
//!   stray huge file cannot take the process's memory.
//! - [`yaml`]: a loader that reports `file:line:col`, the key path and the
//!   allowed keys or values, and never a Rust type name.

#![deny(missing_docs)]

pub mod expr;
pub mod file;
pub mod range;
pub mod serde_units;
pub mod units;
pub mod yaml;

pub use expr::{Check, ExprError, Op, Value};
pub use file::{read_bounded, read_config_file, read_to_string_bounded, MAX_CONFIG_FILE_BYTES};
pub use range::{parse_range, RangeError};
pub use units::{
    format_duration, format_size, parse_duration, parse_size, UnitError, MAX_DURATION,
};
pub use yaml::{from_yaml_str, YamlError};
