//! The sink's configuration: defaults, YAML form and validation.
//!
//! YAML keys are the long flag names in snake_case (`max_message_size:
//! 50MiB`); a flag-style spelling (`max-message-size`) is an error naming
//! the right key. Durations and sizes use the one grammar of
//! [`mailstorm_config::units`]: `300ms`, `5s`, `2m`, `1h`, `1d` (a plain
//! number is seconds); `512`, `64k`, `50MiB`, `1G` (binary multiples).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailstorm_config::serde_units::{duration as duration_serde, size as size_serde};
use mailstorm_config::units::format_size;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default `max_connections`: twice the 10,000 idle connections the
/// sink is built to hold beside normal traffic, and a bound on what a
/// flood of connections can make it hold (tens of KB each mid-message).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// Most shards (threads) the sink runs: more than any machine's cores, and
/// a bound on what a typo in `--threads` can spawn.
pub const MAX_THREADS: usize = 1024;

/// What to do with a DATA body that has a bare LF or bare CR (the raw
/// material of SMTP smuggling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BareLfPolicy {
    /// Refuse the message with `550 5.7.0` (like Postfix's
    /// `smtpd_forbid_bare_newline = reject`), for strict tests.
    Reject,
    /// Accept it (default, like Postfix 3.9's `normalize`). The end of the
    /// message is still only `CRLF . CRLF`.
    #[default]
    Accept,
}

impl std::str::FromStr for BareLfPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(BareLfPolicy::Reject),
            "accept" => Ok(BareLfPolicy::Accept),
            _ => Err(format!("expected `reject` or `accept`, got {s:?}")),
        }
    }
}

/// Every setting of the sink. [`SinkConfig::default`] gives the binary's
/// defaults; [`crate::Sink::builder`] starts from [`SinkConfig::embedded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Plain SMTP/LMTP listeners (STARTTLS offered when TLS is on).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (port 465 style).
    pub tls_listen: Vec<SocketAddr>,
    /// Shards (threads); `None` = number of CPUs.
    pub threads: Option<usize>,
    /// Pin each shard's thread to a CPU.
    pub pin_threads: bool,
    /// Listen backlog per shard listener.
    pub backlog: u32,
    /// Host name in the greeting and EHLO reply; `None` = the system's.
    pub hostname: Option<String>,
    /// Speak LMTP (RFC 2033) instead of SMTP.
    pub lmtp: bool,
    /// Longest command line, CRLF included.
    #[serde(with = "size_serde")]
    pub max_line_length: u64,
    /// Largest message in octets (advertised with SIZE); 0 = no limit.
    #[serde(with = "size_serde")]
    pub max_message_size: u64,
    /// Recipients per message; more are answered `452 4.5.3`.
    pub max_recipients: usize,
    /// Error replies before `421 4.7.0` and close, counted since the
    /// session's last delivered message (as Postfix's
    /// `smtpd_hard_error_limit`).
    pub max_errors: u32,
    /// Close (`421 4.4.2`) after this long without input.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// Close (`421 4.4.2`) a client whose command line is not complete
    /// this long after its first byte (slowloris; RFC 5321 §4.5.3.2).
    #[serde(with = "duration_serde")]
    pub command_timeout: Duration,
    /// Close (`421 4.4.2`) sessions older than this; 0 = no limit.
    #[serde(with = "duration_serde")]
    pub max_session_duration: Duration,
    /// Open connections in total; more get `421 4.7.0`. 0 = no limit of
    /// its own. Finite by default ([`DEFAULT_MAX_CONNECTIONS`]): each
    /// connection can hold tens of KB (its read buffer and session), and
    /// a container's open-files limit can be a million.
    pub max_connections: usize,
    /// Open connections per client IP; more get `421 4.7.0`. 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Bare LF / bare CR in DATA.
    pub bare_lf: BareLfPolicy,
    /// Accept what real clients send but RFC 5321 forbids in commands
    /// (bare-LF line ends, a space after `FROM:`, missing angle brackets).
    pub lenient: bool,
    /// Offer STARTTLS and enable `tls_listen` (self-signed unless a
    /// certificate is given).
    pub tls: bool,
    /// PEM certificate chain (leaf first).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (defaults to the certificate file).
    pub tls_key: Option<PathBuf>,
    /// TLS handshake time limit.
    #[serde(with = "duration_serde")]
    pub tls_handshake_timeout: Duration,
    /// `user:password` lines; without it AUTH accepts any credentials.
    pub auth_users: Option<PathBuf>,
    /// Refuse MAIL before AUTH (`530 5.7.0`).
    pub auth_required: bool,
    /// Write each accepted message to `<id>.eml` in this directory.
    pub capture: Option<PathBuf>,
    /// Keep the last N messages in memory for the control API.
    pub keep: usize,
    /// Total size cap of the kept messages; the oldest go first.
    #[serde(with = "size_serde")]
    pub keep_bytes: u64,
    /// Message bytes held in memory at once, across sessions: bodies while
    /// they arrive with `keep` or `capture` (a message that would pass it
    /// is answered `452 4.3.1` at its end; the client keeps it and
    /// retries), and each session's recipients past 32 KiB (`452 4.3.1`
    /// to the RCPT). What arriving messages hold stays within it (plus each
    /// session's read buffer and at most 64 KiB of spare body buffer).
    /// Must be at least 1 byte, and at least `max_message_size` (which may
    /// then not be 0) when keep or capture is on.
    #[serde(with = "size_serde")]
    pub buffer_bytes: u64,
    /// Control API address; `None` (YAML `off`) disables it.
    #[serde(with = "control_serde")]
    pub control: Option<SocketAddr>,
    /// Bearer token for the control API (required off loopback).
    pub control_token: Option<String>,
    /// Period of the stats line on stderr; 0 = off.
    #[serde(with = "duration_serde")]
    pub stats_interval: Duration,
    /// No stats line and no informational messages.
    pub quiet: bool,
    /// How long shutdown waits for sessions to finish.
    #[serde(with = "duration_serde")]
    pub shutdown_grace: Duration,
    /// Fault plan file (YAML or JSON); reloaded on SIGHUP.
    pub plan: Option<PathBuf>,
    /// Append one JSON line per injected fault to this file.
    pub events: Option<PathBuf>,
    /// Serve an authoritative DNS zone on this address (UDP and TCP).
    pub dns: Option<SocketAddr>,
    /// The zone's YAML file; without it, `dns_domain` with one MX host per
    /// listener IP.
    pub dns_zone: Option<PathBuf>,
    /// The domain of the default zone.
    pub dns_domain: String,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            tls_listen: Vec::new(),
            threads: None,
            pin_threads: true,
            backlog: 4096,
            hostname: None,
            lmtp: false,
            max_line_length: mailstorm_proto::DEFAULT_MAX_COMMAND_LINE as u64,
            max_message_size: 50 << 20,
            max_recipients: 1000,
            max_errors: 20,
            idle_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            max_session_duration: Duration::from_secs(3600),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 0,
            bare_lf: BareLfPolicy::Accept,
            lenient: false,
            tls: true,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout: Duration::from_secs(10),
            auth_users: None,
            auth_required: false,
            capture: None,
            keep: 0,
            keep_bytes: 64 << 20,
            buffer_bytes: 256 << 20,
            control: Some(SocketAddr::from(([127, 0, 0, 1], 8025))),
            control_token: None,
            stats_interval: Duration::from_secs(1),
            quiet: false,
            shutdown_grace: Duration::from_secs(5),
            plan: None,
            events: None,
            dns: None,
            dns_zone: None,
            dns_domain: "example.test".into(),
        }
    }
}

/// A configuration that cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has an unknown key or a bad value.
    #[error("{path}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Parse {
        /// The file (or `<string>`).
        path: PathBuf,
        /// Line and column (1-based) when known.
        location: Option<(usize, usize)>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value is out of range or settings contradict each other.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl SinkConfig {
    /// Defaults for a sink embedded in a test suite: one listener on
    /// `127.0.0.1:0`, 1 unpinned thread, no control API, quiet.
    pub fn embedded() -> Self {
        SinkConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            threads: Some(1),
            pin_threads: false,
            control: None,
            stats_interval: Duration::ZERO,
            quiet: true,
            shutdown_grace: Duration::from_secs(2),
            ..SinkConfig::default()
        }
    }

    /// Parses YAML (unknown keys are errors naming the key, its position
    /// and the allowed keys).
    pub fn from_yaml_str(yaml: &str, origin: &Path) -> Result<SinkConfig, ConfigError> {
        mailstorm_config::from_yaml_str(yaml, &origin.display().to_string()).map_err(|e| {
            ConfigError::Parse {
                path: origin.to_path_buf(),
                location: e.location,
                message: keyed_message(e),
            }
        })
    }

    /// Reads and parses a YAML file.
    pub fn from_yaml_file(path: &Path) -> Result<SinkConfig, ConfigError> {
        let text =
            mailstorm_config::read_config_file(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        SinkConfig::from_yaml_str(&text, path)
    }

    /// The configuration as YAML (every key, with its current value).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Shards to run.
    pub fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_THREADS)
        })
    }

    /// The host name to announce.
    pub fn effective_hostname(&self) -> String {
        match &self.hostname {
            Some(h) if !h.is_empty() => h.clone(),
            _ => system_hostname(),
        }
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            return bad("no listen address".into());
        }
        if !self.tls_listen.is_empty() && !self.tls {
            return bad("tls_listen needs TLS enabled".into());
        }
        if self.threads == Some(0) {
            return bad("threads must be at least 1".into());
        }
        if let Some(t) = self.threads.filter(|&t| t > MAX_THREADS) {
            return bad(format!(
                "threads {t}: at most {MAX_THREADS} shards (each is a thread with its own runtime)"
            ));
        }
        if !(16..=1 << 20).contains(&self.max_line_length) {
            return bad(format!(
                "max_line_length {} is outside 16..=1MiB",
                self.max_line_length
            ));
        }
        if self.max_recipients == 0 {
            return bad("max_recipients must be at least 1".into());
        }
        if self.buffer_bytes == 0 {
            return bad("buffer_bytes (--buffer-bytes) must be at least 1 byte".into());
        }
        let buffers = self.capture.is_some() || self.keep > 0;
        if buffers && (self.max_message_size == 0 || self.max_message_size > self.buffer_bytes) {
            let max = match self.max_message_size {
                0 => "0 (no limit)".to_owned(),
                n => format_size(n),
            };
            return bad(format!(
                "max_message_size (--max-message-size) {max} is more than buffer_bytes \
                 (--buffer-bytes) {}: with keep or capture every arriving message is held in \
                 memory, so the largest must fit; raise buffer_bytes or lower \
                 max_message_size",
                format_size(self.buffer_bytes)
            ));
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout must be positive".into());
        }
        if self.command_timeout.is_zero() {
            return bad("command-timeout must be positive".into());
        }
        if self.tls_key.is_some() && self.tls_cert.is_none() {
            return bad("tls_key given without tls_cert".into());
        }
        if let Some(addr) = self.control {
            let has_token = self.control_token.as_deref().is_some_and(|t| !t.is_empty());
            if !addr.ip().is_loopback() && !has_token {
                return bad(format!(
                    "the control API on non-loopback {addr} requires control_token (--control-token)"
                ));
            }
        }
        if let Some(h) = &self.hostname {
            if h.bytes().any(|c| c <= b' ' || c == 0x7f) {
                return bad(format!("hostname {h:?} has spaces or control characters"));
            }
        }
        Ok(())
    }
}

/// The system host name (`/proc/sys/kernel/hostname`), or `localhost`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.bytes().any(|c| c <= b' '))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Parses a duration flag (`300ms`, `5s`, `2m`, `1h`, `1d`, plain seconds)
/// with the shared grammar; the error quotes the value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    mailstorm_config::parse_duration(s).map_err(|e| e.to_string())
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    mailstorm_config::format_duration(d)
}

/// Parses a size flag (`1024`, `64k`, `50MiB`, `1G`) with the shared
/// grammar; the error quotes the value.
pub fn parse_size(s: &str) -> Result<u64, String> {
    mailstorm_config::parse_size(s).map_err(|e| e.to_string())
}

/// Parses `off` or a socket address.
pub fn parse_control(s: &str) -> Result<Option<SocketAddr>, String> {
    match s.trim() {
        "off" | "none" | "" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|e| format!("bad control address {a:?}: {e} (or `off`)")),
    }
}

mod control_serde {
    use super::*;
    pub(super) fn serialize<S: Serializer>(
        a: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str("off"),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => parse_control(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for BareLfPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BareLfPolicy::Reject => "reject",
            BareLfPolicy::Accept => "accept",
        })
    }
}

/// A YAML error's message prefixed with its key path (`rules[0].stage: …`),
/// the form sink config and plan errors share; the origin and location are
/// carried separately.
pub(crate) fn keyed_message(e: mailstorm_config::YamlError) -> String {
    if e.path.is_empty() {
        e.message
    } else {
        format!("{}: {}", e.path, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_round_trip_and_units() {
        let c = SinkConfig::from_yaml_str(
            "listen: ['127.0.0.1:2600', '[::1]:2600']\nmax_message_size: 10MiB\nidle_timeout: 1.5s\ncontrol: off\nbare_lf: accept\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.max_message_size, 10 << 20);
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.control, None);
        assert_eq!(c.bare_lf, BareLfPolicy::Accept);
        assert_eq!(c.max_recipients, 1000, "unset keys keep defaults");
        let again = SinkConfig::from_yaml_str(&c.to_yaml(), Path::new("x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_key_names_key_and_position() {
        let e = SinkConfig::from_yaml_str("lmtp: true\nmax_mesage_size: 5\n", Path::new("c.yaml"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("max_mesage_size"), "{msg}");
        assert!(
            msg.contains("max_message_size"),
            "allowed keys listed: {msg}"
        );
        assert!(msg.starts_with("c.yaml:2:1: "), "{msg}");
    }

    #[test]
    fn kebab_key_names_the_snake_case_key() {
        let e = SinkConfig::from_yaml_str("lmtp: true\nmax-message-size: 5\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:2:1: "), "{e}");
        assert!(e.contains("write `max_message_size`"), "{e}");
    }

    #[test]
    fn bad_values_name_key_value_and_allowed_forms() {
        let e = SinkConfig::from_yaml_str(
            "quiet: true\nidle_timeout: 5 parsecs\n",
            Path::new("c.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.yaml:2:15: idle_timeout: "), "{e}");
        assert!(e.contains("\"5 parsecs\""), "{e}");
        let e = SinkConfig::from_yaml_str("bare_lf: maybe\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:1:10: bare_lf: "), "{e}");
        assert!(e.contains("reject, accept"), "{e}");
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("50MiB").unwrap(), 50 << 20);
        assert!(parse_size("1P").is_err());
        assert_eq!(parse_control("off").unwrap(), None);
    }

    #[test]
    fn control_off_loopback_needs_token() {
        let mut c = SinkConfig {
            control: Some("0.0.0.0:8025".parse().unwrap()),
            ..SinkConfig::default()
        };
        assert!(c.validate().is_err());
        c.control_token = Some("s3cret".into());
        assert!(c.validate().is_ok());
    }
}
