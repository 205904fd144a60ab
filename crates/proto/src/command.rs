//! Server side: parsing one command line (RFC 5321 §4.1, with the ESMTP
//! extensions listed in the crate docs).

use crate::address::{check_domain, parse_mailbox, parse_path};
use crate::line::find_line;
use crate::params::{parse_decimal, parse_mail_params, parse_rcpt_params};
use crate::verb::pack_upper;
use crate::{Error, ErrorKind, MailParams, Path, RcptParams, Status, DEFAULT_MAX_COMMAND_LINE};

/// Parser settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserConfig {
    /// Longest accepted command line, CRLF included (RFC 5321: 512).
    pub max_line_len: usize,
    /// Accept what real clients send but the grammar forbids: a space after
    /// `FROM:`/`TO:`, a path without angle brackets, trailing spaces, and
    /// lines ended by a bare LF.
    pub lenient: bool,
}

impl Default for ParserConfig {
    fn default() -> Self {
        ParserConfig {
            max_line_len: DEFAULT_MAX_COMMAND_LINE,
            lenient: false,
        }
    }
}

impl ParserConfig {
    /// Strict RFC 5321 parsing with the given line limit.
    pub fn strict(max_line_len: usize) -> Self {
        ParserConfig {
            max_line_len,
            lenient: false,
        }
    }

    /// Lenient parsing (see [`ParserConfig::lenient`]) with the given limit.
    pub fn lenient(max_line_len: usize) -> Self {
        ParserConfig {
            max_line_len,
            lenient: true,
        }
    }
}

/// One parsed command. Fields borrow from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain`
    Ehlo {
        /// Domain or address literal the client gave.
        domain: &'a str,
    },
    /// `HELO domain`
    Helo {
        /// Domain the client gave.
        domain: &'a str,
    },
    /// `LHLO domain` (LMTP, RFC 2033)
    Lhlo {
        /// Domain the client gave.
        domain: &'a str,
    },
    /// `MAIL FROM:<path> [params]`
    Mail {
        /// Reverse-path (may be null).
        from: Path<'a>,
        /// ESMTP parameters.
        params: MailParams<'a>,
    },
    /// `RCPT TO:<path> [params]`
    Rcpt {
        /// Forward-path (never null).
        to: Path<'a>,
        /// ESMTP parameters.
        params: RcptParams<'a>,
    },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat {
        /// Chunk size in octets.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy {
        /// The argument as sent.
        arg: &'a str,
    },
    /// `EXPN string`
    Expn {
        /// The argument as sent.
        arg: &'a str,
    },
    /// `HELP [string]`
    Help {
        /// The topic, if any.
        topic: Option<&'a str>,
    },
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954)
    Auth {
        /// SASL mechanism name as sent (compare case-insensitively).
        mechanism: &'a str,
        /// Base64 initial response; `Some("")` for `=` (an empty response).
        initial_response: Option<&'a str>,
    },
    /// Any other verb; the server answers 500 5.5.2.
    Unknown {
        /// The verb as sent.
        verb: &'a [u8],
        /// Everything after the verb and its separating space.
        args: &'a [u8],
    },
}

const EHLO: u64 = pack_upper(b"EHLO");
const HELO: u64 = pack_upper(b"HELO");
const LHLO: u64 = pack_upper(b"LHLO");
const MAIL: u64 = pack_upper(b"MAIL");
const RCPT: u64 = pack_upper(b"RCPT");
const DATA: u64 = pack_upper(b"DATA");
const BDAT: u64 = pack_upper(b"BDAT");
const RSET: u64 = pack_upper(b"RSET");
const NOOP: u64 = pack_upper(b"NOOP");
const QUIT: u64 = pack_upper(b"QUIT");
const VRFY: u64 = pack_upper(b"VRFY");
const EXPN: u64 = pack_upper(b"EXPN");
const HELP: u64 = pack_upper(b"HELP");
const STARTTLS: u64 = pack_upper(b"STARTTLS");
const AUTH: u64 = pack_upper(b"AUTH");
const FROM_COLON: u64 = pack_upper(b"FROM:");
const TO_COLON: u64 = pack_upper(b"TO:");
const LAST: u64 = pack_upper(b"LAST");

/// Parses the first command line in `buf`.
///
/// Returns `Ok(Status::Partial)` when no complete line is buffered yet (and
/// the line limit is not exceeded), or `Ok(Status::Complete((command,
/// consumed)))`. On error, [`Error::consumed`] says how many bytes to drop.
pub fn parse_command<'a>(
    buf: &'a [u8],
    cfg: &ParserConfig,
) -> Result<Status<(Command<'a>, usize)>, Error> {
    let line = match find_line(buf, cfg.max_line_len, cfg.lenient)? {
        Status::Complete(l) => l,
        Status::Partial => return Ok(Status::Partial),
    };
    let mut content = &buf[..line.content_len];
    if cfg.lenient {
        while let [rest @ .., b' ' | b'\t'] = content {
            content = rest;
        }
    }
    parse_line(content, cfg.lenient)
        .map(|c| Status::Complete((c, line.total_len)))
        .map_err(|mut e| {
            e.consumed = line.total_len;
            e
        })
}

fn syntax(at: usize) -> Error {
    Error::at(ErrorKind::Syntax, at, 0)
}

/// Parses a command line without its terminator.
#[inline(always)]
fn parse_line(line: &[u8], lenient: bool) -> Result<Command<'_>, Error> {
    let verb_end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let verb = &line[..verb_end];
    let args_at = (verb_end + 1).min(line.len());
    let args = &line[args_at..];
    let has_args = verb_end < line.len();
    let no_args = |cmd: Command<'static>| {
        if has_args && !(lenient && args.iter().all(|&c| c == b' ')) {
            Err(syntax(verb_end))
        } else {
            Ok(cmd)
        }
    };
    match pack_upper(verb) {
        EHLO => Ok(Command::Ehlo {
            domain: parse_helo_arg(args, args_at, lenient)?,
        }),
        HELO => Ok(Command::Helo {
            domain: parse_helo_arg(args, args_at, lenient)?,
        }),
        LHLO => Ok(Command::Lhlo {
            domain: parse_helo_arg(args, args_at, lenient)?,
        }),
        MAIL => {
            let (from, rest, rest_at) =
                parse_path_arg(args, args_at, FROM_COLON, 5, lenient, false).map_err(|mut e| {
                    if e.kind == ErrorKind::InvalidAddress {
                        e.kind = ErrorKind::InvalidSender;
                    }
                    e
                })?;
            let params = parse_mail_params(rest, rest_at)?;
            if !from.is_ascii() && !params.smtputf8 {
                let first = args.iter().position(|&c| c >= 0x80).unwrap_or(0);
                return Err(Error::at(ErrorKind::NonAscii, args_at + first, 0));
            }
            Ok(Command::Mail { from, params })
        }
        RCPT => {
            let (to, rest, rest_at) = parse_path_arg(args, args_at, TO_COLON, 3, lenient, true)?;
            if to.is_null() {
                let path_at = args.iter().position(|&c| c == b'<').unwrap_or(0);
                return Err(Error::at(ErrorKind::InvalidAddress, args_at + path_at, 0));
            }
            let params = parse_rcpt_params(rest, rest_at)?;
            Ok(Command::Rcpt { to, params })
        }
        DATA => no_args(Command::Data),
        BDAT => parse_bdat(args, args_at),
        RSET => no_args(Command::Rset),
        NOOP => Ok(Command::Noop),
        QUIT => no_args(Command::Quit),
        STARTTLS => no_args(Command::StartTls),
        VRFY => Ok(Command::Vrfy {
            arg: required_text(args, args_at)?,
        }),
        EXPN => Ok(Command::Expn {
            arg: required_text(args, args_at)?,
        }),
        HELP => Ok(Command::Help {
            topic: if args.is_empty() {
                None
            } else {
                Some(required_text(args, args_at)?)
            },
        }),
        AUTH => parse_auth(args, args_at),
        _ => Ok(Command::Unknown { verb, args }),
    }
}

fn required_text(args: &[u8], at: usize) -> Result<&str, Error> {
    if args.is_empty() {
        return Err(syntax(at));
    }
    std::str::from_utf8(args).map_err(|e| syntax(at + e.valid_up_to()))
}

#[inline(always)]
fn parse_helo_arg(args: &[u8], at: usize, lenient: bool) -> Result<&str, Error> {
    let mut arg = args;
    if lenient {
        // Some clients add words after the domain; keep the first.
        let start = arg.iter().position(|&c| c != b' ').unwrap_or(arg.len());
        arg = &arg[start..];
        arg = &arg[..memchr::memchr(b' ', arg).unwrap_or(arg.len())];
    }
    if arg.is_empty() {
        return Err(syntax(at));
    }
    if let Some(p) = arg.iter().position(|&c| c <= b' ' || c == 0x7f) {
        return Err(syntax(at + p));
    }
    std::str::from_utf8(arg).map_err(|e| syntax(at + e.valid_up_to()))
}

/// Parses `FROM:<path>` / `TO:<path>` and returns the path and the rest of
/// the line (the parameters) with its offset.
#[inline(always)]
fn parse_path_arg(
    args: &[u8],
    at: usize,
    keyword: u64,
    keyword_len: usize,
    lenient: bool,
    allow_postmaster: bool,
) -> Result<(Path<'_>, &[u8], usize), Error> {
    if args.len() < keyword_len || pack_upper(&args[..keyword_len]) != keyword {
        return Err(syntax(at));
    }
    let mut i = keyword_len;
    if lenient {
        while args.get(i) == Some(&b' ') {
            i += 1;
        }
    }
    let rest = &args[i..];
    let (path, used) = if lenient && rest.first() != Some(&b'<') {
        // Missing angle brackets: the address runs to the next space.
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        if end == 0 {
            return Err(Error::at(ErrorKind::InvalidAddress, at + i, 0));
        }
        (
            Path::Mailbox(parse_mailbox(&rest[..end], at + i, allow_postmaster)?),
            end,
        )
    } else {
        parse_path(rest, at + i, allow_postmaster)?
    };
    let after = i + used;
    match args.get(after) {
        None => Ok((path, &[], at + after)),
        Some(b' ') => Ok((path, &args[after + 1..], at + after + 1)),
        Some(_) => Err(syntax(at + after)),
    }
}

#[inline(always)]
fn parse_bdat(args: &[u8], at: usize) -> Result<Command<'_>, Error> {
    let size_end = memchr::memchr(b' ', args).unwrap_or(args.len());
    let size = parse_decimal(&args[..size_end]).ok_or(syntax(at))?;
    let last = match &args[size_end..] {
        [] => false,
        [b' ', word @ ..] if pack_upper(word) == LAST => true,
        _ => return Err(syntax(at + size_end)),
    };
    Ok(Command::Bdat { size, last })
}

#[inline(always)]
fn parse_auth(args: &[u8], at: usize) -> Result<Command<'_>, Error> {
    let mech_end = memchr::memchr(b' ', args).unwrap_or(args.len());
    let mech = &args[..mech_end];
    // RFC 4422 mechanism names: upper-case letters, digits, '-' and '_'.
    if mech.is_empty()
        || mech.len() > 20
        || !mech
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(syntax(at));
    }
    let initial_response = if mech_end == args.len() {
        None
    } else {
        let ir = &args[mech_end + 1..];
        let ok = !ir.is_empty()
            && (ir == b"="
                || ir
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='));
        if !ok {
            return Err(syntax(at + mech_end + 1));
        }
        Some(if ir == b"=" { "" } else { ascii_str(ir) })
    };
    Ok(Command::Auth {
        mechanism: ascii_str(mech),
        initial_response,
    })
}

/// Converts bytes already checked to be ASCII.
fn ascii_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

/// `true` when `domain` is a syntactically valid domain (used by encoders'
/// debug checks and tests).
pub fn is_valid_domain(domain: &str) -> bool {
    check_domain(domain.as_bytes()).is_ok()
}
