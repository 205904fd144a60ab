//! `mailstorm-proto`: the hand-tuned ESMTP/LMTP protocol core shared by
//! `mailstorm-sink` and `mailstorm-blast`.
//!
//! No I/O, no async, no allocation on the hot path. The API follows
//! `httparse`: parsers take a borrowed `&[u8]` and return
//! [`Status::Partial`] when more input is needed or [`Status::Complete`] with
//! the number of bytes consumed; parsed fields borrow from the caller's buffer.
//! Encoders append to a caller's `Vec<u8>`.
//!
//! - Server side: [`command::parse_command`], [`data::DataReceiver`],
//!   [`data::BdatReceiver`], [`encode::write_reply`].
//! - Client side: [`reply::parse_reply`], [`ehlo::Capabilities`],
//!   [`encode`] command writers and [`encode::DotStuffer`].
//! - Both sides: [`sasl`] (AUTH PLAIN, LOGIN and CRAM-MD5), [`trace`]
//!   (the end-to-end trace header) and [`header`] (where a message's
//!   header section ends).
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod address;
pub mod command;
pub mod data;
pub mod ehlo;
pub mod encode;
mod error;
pub mod header;
pub mod line;
mod params;
pub mod reply;
pub mod sasl;
pub mod trace;
mod verb;

pub use address::{Address, Path};
pub use command::{parse_command, Command, ParserConfig};
pub use error::{Error, ErrorKind, ErrorReply};
pub use params::{Body, MailParams, Notify, RcptParams, Ret};

/// Result of parsing possibly incomplete input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// More bytes are needed; nothing was consumed.
    Partial,
    /// A complete item was parsed.
    Complete(T),
}

impl<T> Status<T> {
    /// `true` for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// `true` for [`Status::Partial`].
    pub fn is_partial(&self) -> bool {
        matches!(self, Status::Partial)
    }

    /// The completed value, if any.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(v) => Some(v),
            Status::Partial => None,
        }
    }
}

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const DEFAULT_MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including CRLF.
pub const DEFAULT_MAX_REPLY_LINE: usize = 512;
