//! The seeded generator lives in the shared `mailstorm-sample` crate;
//! re-exported so `mailstorm_blast::rng::Rng` keeps its path.

pub use mailstorm_sample::rng::{splitmix64, Rng};
