//! `mailstorm-sink`: a per-core ESMTP/LMTP sink that accepts mail at line
//! rate, for load tests and CI.
//!
//! Architecture (like tokio's mini-redis, multiplied per core): shard
//! threads, each with a current-thread runtime and its own `SO_REUSEPORT`
//! listeners → connections with one reusable read buffer and one write per
//! read batch → a protocol state machine built on `mailstorm-proto` →
//! command handlers. Counters are per shard and summed when read.
//!
//! Embed it in a test suite:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sink = mailstorm_sink::Sink::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .threads(1)
//!     .keep(100)
//!     .start()?;
//! let addr = sink.local_addr();
//! // ... send mail to `addr` ...
//! assert_eq!(sink.stats().messages_accepted, 0);
//! sink.shutdown();
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod admission;
pub mod auth;
mod backend;
mod builder;
pub mod config;
mod conn;
pub mod control;
pub mod dns;
pub mod filter;
mod handle;
pub mod hook;
mod ip_text;
pub mod ledger;
pub mod plan;
mod process_metrics;
pub mod ready;
mod server;
mod session;
mod settings;
pub mod stats;
mod store;
pub mod tls;

use std::path::PathBuf;

pub use admission::connection_ceiling;
pub use builder::{Sink, SinkBuilder};
pub use config::{BareLfPolicy, ConfigError, SinkConfig, DEFAULT_MAX_CONNECTIONS};
pub use filter::ClientFilter;
pub use handle::SinkHandle;
pub use hook::{Decision, Stage, StageContext, StageHook};
pub use ready::ReadyInfo;
pub use server::raise_nofile_limit;
pub use stats::{CloseReason, StatsSnapshot};
pub use store::StoredMessage;

/// Why the sink could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The configuration is invalid, or its TLS or user files are.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound or a thread not started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The control API could not start.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The fault plan could not be loaded.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The `capture` directory cannot be created or written.
    #[error("capture directory {path}: {source}")]
    Capture {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `events` file cannot be opened for appending.
    #[error("cannot open events file {path} for appending: {source}")]
    Events {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// `true` when the configuration is at fault (a value, or a file or
    /// directory it names), `false` for a failure of the running system
    /// (an address in use, no thread). The binary exits 2 and 1 on them.
    pub fn is_configuration(&self) -> bool {
        match self {
            SinkError::Config(_)
            | SinkError::Plan(_)
            | SinkError::Capture { .. }
            | SinkError::Events { .. } => true,
            SinkError::Control(e) => !matches!(
                e,
                control::ControlError::Bind { .. } | control::ControlError::Start { .. }
            ),
            SinkError::Io(_) => false,
        }
    }
}
