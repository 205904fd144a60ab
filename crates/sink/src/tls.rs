//! TLS configuration builders live in the shared `mailstorm-tls` crate;
//! re-exported here so `mailstorm_sink::tls::...` keeps working for
//! embedders and tests.

pub use mailstorm_tls::*;
