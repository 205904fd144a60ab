//! Settings a session reads: the configuration plus everything derived from
//! it once (pre-encoded greeting and EHLO replies, TLS acceptor, user list).
//!
//! A session takes one `Arc<Settings>` at its start and keeps it, so a
//! reload (SIGHUP) affects new sessions only and costs nothing per command.

use std::sync::Arc;

use mailstorm_proto::ParserConfig;
use tokio_rustls::TlsAcceptor;

use crate::auth::Users;
use crate::config::{ConfigError, SinkConfig};
use crate::hook::StageHook;
use crate::tls::SelfSigned;

/// Longest AUTH continuation line accepted (RFC 4954 §4: at least 12288).
pub(crate) const AUTH_LINE_MAX: usize = 12288;

/// Initial per-session read buffer; it grows (doubling) only when a read
/// fills it, up to [`Settings::read_cap`]. Small, because idle connections
/// are the common case at scale: a pipelined command batch fits in 1 KiB,
/// and bodies grow the buffer within a few reads.
pub(crate) const READ_INITIAL: usize = 1024;

pub(crate) struct Settings {
    pub(crate) config: SinkConfig,
    pub(crate) hostname: String,
    pub(crate) parser: ParserConfig,
    pub(crate) greeting: Vec<u8>,
    /// EHLO/LHLO reply without STARTTLS (TLS off or already active).
    pub(crate) ehlo: Vec<u8>,
    /// EHLO/LHLO reply offering STARTTLS.
    pub(crate) ehlo_starttls: Vec<u8>,
    pub(crate) helo: Vec<u8>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) self_signed: Option<SelfSigned>,
    pub(crate) users: Option<Arc<Users>>,
    pub(crate) hook: Option<Arc<dyn StageHook>>,
    /// Keep message bodies (capture or keep): DATA is unstuffed into a
    /// buffer instead of discarded.
    pub(crate) keep_bodies: bool,
    /// Largest read buffer a session may hold.
    pub(crate) read_cap: usize,
    /// The end-to-end ledger, shared across reloads (set by the builder).
    pub(crate) ledger: Option<Arc<crate::ledger::Ledger>>,
}

impl Settings {
    /// Builds settings, loading TLS material and the user list.
    pub(crate) fn build(
        config: SinkConfig,
        hook: Option<Arc<dyn StageHook>>,
    ) -> Result<Settings, ConfigError> {
        config.validate()?;
        let hostname = config.effective_hostname();
        let invalid =
            |what: &str, e: &dyn std::fmt::Display| ConfigError::Invalid(format!("{what}: {e}"));
        let (tls, self_signed) = if config.tls {
            let t = crate::tls::load_server_config(
                config.tls_cert.as_deref(),
                config.tls_key.as_deref(),
                &hostname,
            )
            .map_err(|e| invalid("TLS", &e))?;
            (Some(TlsAcceptor::from(t.config)), t.generated)
        } else {
            (None, None)
        };
        let users = match &config.auth_users {
            Some(p) => Some(Arc::new(
                Users::load(p).map_err(|e| invalid("auth-users", &e))?,
            )),
            None => None,
        };
        let max_line = config.max_line_length as usize;
        let parser = if config.lenient {
            ParserConfig::lenient(max_line)
        } else {
            ParserConfig::strict(max_line)
        };
        let (ehlo, ehlo_starttls) = ehlo_replies(&hostname, config.max_message_size);
        let greeting = if config.lmtp {
            format!("220 {hostname} LMTP mailstorm-sink\r\n")
        } else {
            format!("220 {hostname} ESMTP mailstorm-sink\r\n")
        };
        Ok(Settings {
            keep_bodies: config.capture.is_some() || config.keep > 0,
            read_cap: max_line.max(64 * 1024),
            helo: format!("250 {hostname}\r\n").into_bytes(),
            greeting: greeting.into_bytes(),
            ehlo,
            ehlo_starttls,
            hostname,
            parser,
            tls,
            self_signed,
            users,
            hook,
            config,
            ledger: None,
        })
    }
}

impl Settings {
    /// Whether a session keeps the header block of each message in
    /// discard mode: for header rules of the hook, and for the ledger.
    pub(crate) fn wants_headers(&self) -> bool {
        self.ledger.is_some() || self.hook.as_ref().is_some_and(|h| h.wants_headers())
    }
}

/// The EHLO reply without and with STARTTLS. RFC 2034 §4: no enhanced codes
/// on EHLO replies.
fn ehlo_replies(hostname: &str, max_size: u64) -> (Vec<u8>, Vec<u8>) {
    let size = format!("SIZE {max_size}");
    let build = |starttls: bool| {
        let mut lines = vec![
            hostname,
            "PIPELINING",
            &size,
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "BINARYMIME",
            "ENHANCEDSTATUSCODES",
            "DSN",
        ];
        if starttls {
            lines.push("STARTTLS");
        }
        lines.push("AUTH PLAIN LOGIN CRAM-MD5");
        let mut out = Vec::new();
        mailstorm_proto::encode::write_reply_lines(&mut out, 250, None, &lines);
        out
    };
    (build(false), build(true))
}
