//! Server side: parsing one command line (RFC 5321 §4.1, with the ESMTP
//! extensions listed in the crate docs).

use crate::address::{all_of, check_domain, parse_mailbox_in, parse_path_in, BASE64, MECH};
use crate::line::{ascii_str, find_ctl_space_del, frame, frame_crlf, Framed, Src};
use crate::params::{parse_decimal, parse_mail_params, parse_rcpt_params};
use crate::verb::{load_key, pack_upper};
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
///
/// Always inlined: returned out of line, the command is written field by
/// field and then typically copied by the caller with wide loads that cannot
/// be forwarded from those narrow stores (a ~10-cycle stall per command).
/// There is one call site per server loop, so the code size is paid once.
#[inline(always)]
pub fn parse_command<'a>(
    buf: &'a [u8],
    cfg: &ParserConfig,
) -> Result<Status<(Command<'a>, usize)>, Error> {
    // The common case, a CRLF line found by the first control byte, is
    // taken inline with the line's facts as plain values; everything else
    // (bare LF, NUL, bare CR, partial or over-long lines) goes through the
    // general framing out of line.
    let (content_len, total_len, ascii) = 'framed: {
        if let Some((cr, ascii)) = frame_crlf(buf, cfg.max_line_len) {
            break 'framed (cr, cr + 2, ascii);
        }
        match frame_cold(buf, cfg.max_line_len, cfg.lenient)? {
            Status::Complete(l) => (l.content_len, l.total_len, l.ascii),
            Status::Partial => return Ok(Status::Partial),
        }
    };
    let mut len = content_len;
    if cfg.lenient {
        while len > 0 && matches!(buf[len - 1], b' ' | b'\t') {
            len -= 1;
        }
    }
    let src = Src { buf, len, ascii };
    match parse_line(src, cfg.lenient) {
        Ok(c) => Ok(Status::Complete((c, total_len))),
        Err(mut e) => {
            e.consumed = total_len;
            Err(e)
        }
    }
}

/// [`frame`] out of line, for the lines [`frame_crlf`] leaves.
#[cold]
#[inline(never)]
fn frame_cold(buf: &[u8], max_len: usize, lenient: bool) -> Result<Status<Framed>, Error> {
    frame(buf, max_len, lenient)
}

#[cold]
#[inline(never)]
fn syntax(at: usize) -> Error {
    Error::at(ErrorKind::Syntax, at, 0)
}

/// Parses a command line (`src.buf[..src.len]`, without its terminator).
#[inline(always)]
fn parse_line(src: Src<'_>, lenient: bool) -> Result<Command<'_>, Error> {
    let len = src.len;
    let verb_end = src.find(0, len, b' ');
    let args_at = (verb_end + 1).min(len);
    let no_args = |cmd: Command<'static>| no_args(src, cmd, verb_end, lenient);
    match load_key(src.buf, 0, verb_end) {
        EHLO => Ok(Command::Ehlo {
            domain: parse_helo_arg(src, args_at, lenient)?,
        }),
        HELO => Ok(Command::Helo {
            domain: parse_helo_arg(src, args_at, lenient)?,
        }),
        LHLO => Ok(Command::Lhlo {
            domain: parse_helo_arg(src, args_at, lenient)?,
        }),
        MAIL => {
            let (from, rest_at) = parse_path_arg(src, args_at, FROM_COLON, 5, lenient, false)
                .map_err(|mut e| {
                    if e.kind == ErrorKind::InvalidAddress {
                        e.kind = ErrorKind::InvalidSender;
                    }
                    e
                })?;
            let params = parse_mail_params(src, rest_at)?;
            if !from.is_ascii() && !params.smtputf8 {
                return Err(non_ascii(src, args_at));
            }
            Ok(Command::Mail { from, params })
        }
        RCPT => {
            let (to, rest_at) = parse_path_arg(src, args_at, TO_COLON, 3, lenient, true)?;
            if to.is_null() {
                return Err(null_rcpt(src, args_at));
            }
            let params = parse_rcpt_params(src, rest_at)?;
            Ok(Command::Rcpt { to, params })
        }
        DATA => no_args(Command::Data),
        BDAT => parse_bdat(src, args_at),
        RSET => no_args(Command::Rset),
        NOOP => Ok(Command::Noop),
        QUIT => no_args(Command::Quit),
        STARTTLS => no_args(Command::StartTls),
        VRFY => Ok(Command::Vrfy {
            arg: required_text(src, args_at)?,
        }),
        EXPN => Ok(Command::Expn {
            arg: required_text(src, args_at)?,
        }),
        HELP => Ok(Command::Help {
            topic: if args_at == len {
                None
            } else {
                Some(required_text(src, args_at)?)
            },
        }),
        AUTH => parse_auth(src, args_at),
        _ => Ok(Command::Unknown {
            verb: src.bytes(0, verb_end),
            args: src.bytes(args_at, len),
        }),
    }
}

/// A command without arguments (trailing spaces allowed when lenient).
#[inline(always)]
fn no_args(
    src: Src<'_>,
    cmd: Command<'static>,
    verb_end: usize,
    lenient: bool,
) -> Result<Command<'static>, Error> {
    if verb_end < src.len
        && !(lenient && src.bytes(verb_end + 1, src.len).iter().all(|&c| c == b' '))
    {
        Err(syntax(verb_end))
    } else {
        Ok(cmd)
    }
}

/// MAIL with a non-ASCII path but no SMTPUTF8: the error points at the first
/// non-ASCII byte of the arguments.
#[cold]
#[inline(never)]
fn non_ascii(src: Src<'_>, args_at: usize) -> Error {
    let args = src.bytes(args_at, src.len);
    let first = args.iter().position(|&c| c >= 0x80).unwrap_or(0);
    Error::at(ErrorKind::NonAscii, args_at + first, 0)
}

/// RCPT with the null path: the error points at its `<`.
#[cold]
#[inline(never)]
fn null_rcpt(src: Src<'_>, args_at: usize) -> Error {
    let args = src.bytes(args_at, src.len);
    let path_at = args.iter().position(|&c| c == b'<').unwrap_or(0);
    Error::at(ErrorKind::InvalidAddress, args_at + path_at, 0)
}

#[inline(always)]
fn required_text(src: Src<'_>, at: usize) -> Result<&str, Error> {
    if at == src.len {
        return Err(syntax(at));
    }
    src.text(at, src.len).map_err(syntax)
}

#[inline(always)]
fn parse_helo_arg(src: Src<'_>, at: usize, lenient: bool) -> Result<&str, Error> {
    let (mut start, mut end) = (at, src.len);
    if lenient {
        // Some clients add words after the domain; keep the first.
        start += src
            .bytes(start, end)
            .iter()
            .take_while(|&&c| c == b' ')
            .count();
        end = src.find(start, end, b' ');
    }
    if start == end {
        return Err(syntax(at));
    }
    let bad = start + find_ctl_space_del(src.buf, start, end);
    if bad < end {
        return Err(syntax(at + (bad - start)));
    }
    src.text(start, end).map_err(|p| syntax(at + (p - start)))
}

/// Parses `FROM:<path>` / `TO:<path>` at `at` and returns the path and where
/// the rest of the line (the parameters) starts.
#[inline(always)]
fn parse_path_arg(
    src: Src<'_>,
    at: usize,
    keyword: u64,
    keyword_len: usize,
    lenient: bool,
    allow_postmaster: bool,
) -> Result<(Path<'_>, usize), Error> {
    let len = src.len;
    if len - at < keyword_len || load_key(src.buf, at, keyword_len) != keyword {
        return Err(syntax(at));
    }
    let mut i = at + keyword_len;
    if lenient {
        while i < len && src.buf[i] == b' ' {
            i += 1;
        }
    }
    let (path, used) = if lenient && (i == len || src.buf[i] != b'<') {
        // Missing angle brackets: the address runs to the next space.
        let end = src.find(i, len, b' ');
        if end == i {
            return Err(Error::at(ErrorKind::InvalidAddress, i, 0));
        }
        (
            Path::Mailbox(parse_mailbox_in(
                src.bytes(i, end),
                i,
                src.ascii,
                allow_postmaster,
            )?),
            end - i,
        )
    } else {
        parse_path_in(src, i, allow_postmaster)?
    };
    let after = i + used;
    if after == len {
        Ok((path, len))
    } else if src.buf[after] == b' ' {
        Ok((path, after + 1))
    } else {
        Err(syntax(after))
    }
}

#[inline(always)]
fn parse_bdat(src: Src<'_>, at: usize) -> Result<Command<'_>, Error> {
    let size_end = src.find(at, src.len, b' ');
    let size = parse_decimal(src.bytes(at, size_end)).ok_or_else(|| syntax(at))?;
    let last = if size_end == src.len {
        false
    } else if load_key(src.buf, size_end + 1, src.len - size_end - 1) == LAST {
        true
    } else {
        return Err(syntax(size_end));
    };
    Ok(Command::Bdat { size, last })
}

#[inline(always)]
fn parse_auth(src: Src<'_>, at: usize) -> Result<Command<'_>, Error> {
    let len = src.len;
    let mech_end = src.find(at, len, b' ');
    let mech = src.bytes(at, mech_end);
    // RFC 4422 mechanism names: upper-case letters, digits, '-' and '_'.
    if mech.is_empty() || mech.len() > 20 || !all_of(MECH, mech) {
        return Err(syntax(at));
    }
    let initial_response = if mech_end == len {
        None
    } else {
        let ir = src.bytes(mech_end + 1, len);
        if ir.is_empty() || !all_of(BASE64, ir) {
            return Err(syntax(mech_end + 1));
        }
        Some(if ir == b"=" { "" } else { ascii_str(ir) })
    };
    Ok(Command::Auth {
        mechanism: ascii_str(mech),
        initial_response,
    })
}

/// `true` when `domain` is a syntactically valid domain (used by encoders'
/// debug checks and tests).
pub fn is_valid_domain(domain: &str) -> bool {
    check_domain(domain.as_bytes()).is_ok()
}
