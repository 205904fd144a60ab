//! Parse errors with byte offsets and the SMTP reply each one maps to.

use std::fmt;

/// What went wrong. Each kind maps to one SMTP reply via [`Error::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The line is longer than the configured limit (before its LF was seen).
    LineTooLong,
    /// A NUL byte inside a command or reply line.
    NulByte,
    /// A CR not followed by LF inside a line.
    BareCr,
    /// A line ended by LF without a preceding CR (strict mode).
    BareLf,
    /// The verb is known but its arguments are malformed.
    Syntax,
    /// A RCPT forward-path could not be parsed.
    InvalidAddress,
    /// A MAIL reverse-path could not be parsed (RFC 3463: X.1.7).
    InvalidSender,
    /// A MAIL/RCPT parameter is not recognised.
    UnknownParameter,
    /// A MAIL/RCPT parameter value is malformed or duplicated.
    InvalidParameter,
    /// Non-ASCII bytes where SMTPUTF8 was not requested.
    NonAscii,
    /// A reply line does not start with a three-digit code and a separator,
    /// or the codes of a multi-line reply disagree.
    MalformedReply,
}

/// A parse error: the kind and the byte offset (from the start of the input
/// given to the parser) where it was detected.
///
/// For command parsing, [`Error::consumed`] says how many bytes the caller
/// must drop to resynchronise on the next line; when [`Error::line_complete`]
/// is `false` (only for [`ErrorKind::LineTooLong`]), the caller drops them and
/// keeps discarding input up to and including the next LF (see
/// [`crate::line::skip_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Byte offset of the offending byte or field.
    pub offset: usize,
    /// Bytes the caller should drop to get past the bad line.
    pub consumed: usize,
    /// Whether `consumed` reaches past the end of the bad line.
    pub line_complete: bool,
}

/// The SMTP reply a server should send for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. `"5.5.2"`.
    pub enhanced: &'static str,
    /// Human-readable text.
    pub text: &'static str,
}

impl Error {
    pub(crate) fn at(kind: ErrorKind, offset: usize, consumed: usize) -> Error {
        Error {
            kind,
            offset,
            consumed,
            line_complete: true,
        }
    }

    /// The reply a server sends for this error (RFC 5321 §4.2.4, RFC 3463).
    pub fn reply(&self) -> ErrorReply {
        let (code, enhanced, text) = match self.kind {
            ErrorKind::LineTooLong => (500, "5.5.2", "Line too long"),
            ErrorKind::NulByte => (500, "5.5.2", "NUL byte in command"),
            ErrorKind::BareCr => (500, "5.5.2", "Bare CR in command"),
            ErrorKind::BareLf => (500, "5.5.2", "Bare LF in command; lines end with CRLF"),
            ErrorKind::Syntax => (501, "5.5.4", "Syntax error in parameters or arguments"),
            ErrorKind::InvalidAddress => (501, "5.1.3", "Bad recipient address syntax"),
            ErrorKind::InvalidSender => (501, "5.1.7", "Bad sender address syntax"),
            ErrorKind::UnknownParameter => (555, "5.5.4", "Unsupported parameter"),
            ErrorKind::InvalidParameter => (501, "5.5.4", "Invalid parameter value"),
            ErrorKind::NonAscii => (553, "5.6.7", "Non-ASCII address requires SMTPUTF8"),
            ErrorKind::MalformedReply => (500, "5.5.2", "Malformed reply"),
        };
        ErrorReply {
            code,
            enhanced,
            text,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::LineTooLong => "line too long",
            ErrorKind::NulByte => "NUL byte",
            ErrorKind::BareCr => "bare CR",
            ErrorKind::BareLf => "bare LF",
            ErrorKind::Syntax => "syntax error",
            ErrorKind::InvalidAddress => "invalid address",
            ErrorKind::InvalidSender => "invalid sender address",
            ErrorKind::UnknownParameter => "unknown parameter",
            ErrorKind::InvalidParameter => "invalid parameter",
            ErrorKind::NonAscii => "non-ASCII without SMTPUTF8",
            ErrorKind::MalformedReply => "malformed reply",
        };
        f.write_str(s)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.offset)
    }
}

impl std::error::Error for Error {}
