//! Flag value parsers: the shared unit grammar with blast's error type.

use std::time::Duration;

use crate::BlastError;

/// Parses a duration flag with the shared grammar (`500ms`, `5s`, `2m`,
/// plain seconds); the error quotes the value.
pub fn parse_duration(s: &str) -> Result<Duration, BlastError> {
    mailstorm_config::parse_duration(s).map_err(|e| BlastError::Config(e.to_string()))
}

/// Parses a size flag with the shared grammar (`1024`, `2k`, `1.5M`,
/// `1MiB`); the error quotes the value.
pub fn parse_bytes(s: &str) -> Result<u64, BlastError> {
    mailstorm_config::parse_size(s).map_err(|e| BlastError::Config(e.to_string()))
}
