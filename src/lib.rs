//! Workspace root package: it exists so that the top-level `tests/` and
//! `benches/` directories belong to a package. The real code lives in `crates/`.
#![deny(missing_docs)]

pub use mailstorm_proto as proto;
