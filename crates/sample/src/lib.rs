//! Seeded randomness and distribution summaries shared by mailstorm's sink
//! and blaster: the splitmix64 mixer and xoshiro256** generator that make
//! runs reproducible from a seed, the log-normal parameterised by median and
//! 99th percentile that both sides use (message sizes, reply delays), and
//! the percentile summary of an HDR histogram and the bounded decoder of
//! the histograms reports carry.

#![deny(missing_docs)]

pub mod dist;
pub mod hist;
pub mod rng;

pub use dist::{standard_normal, LogNormal, Z99};
pub use hist::{decode_v2, encode_v2, HistSummary, MAX_HISTOGRAM_BYTES};
pub use rng::{mix64, splitmix64, Rng};
