//! The effective settings of a run: what the CLI or a profile asked for,
//! with defaults filled in. Serialised verbatim into the report's `config`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use mailstorm_config::serde_units::scalar_or_map;
use serde::{Deserialize, Deserializer, Serialize};

use crate::stages::{LoadStages, StagesMode};
use crate::BlastError;

mod flags;
mod message_shape;

pub use crate::timeouts::Timeouts;
pub use flags::{parse_bytes, parse_duration};
pub use mailstorm_config::format_duration;
use message_shape::{rcpts_any, size_any};
pub use message_shape::{RcptRange, SizeDist, MAX_MESSAGE_SIZE};
// Durations in profiles read and write like every other setting.
pub(crate) use mailstorm_config::serde_units::{duration as dur, opt_duration as opt_dur};

/// `auto` (follow the server's EHLO), `on` (always) or `off` (never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Use the extension when the server advertises it.
    #[default]
    Auto,
    /// Use it even when not advertised (to test a server's reaction).
    On,
    /// Never use it.
    Off,
}

impl Mode {
    /// Whether to use the extension given what the server advertised.
    pub fn use_it(self, advertised: bool) -> bool {
        match self {
            Mode::Auto => advertised,
            Mode::On => true,
            Mode::Off => false,
        }
    }
}

/// STARTTLS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Never upgrade.
    #[default]
    Off,
    /// Upgrade when advertised; stay in clear text otherwise.
    Opportunistic,
    /// Upgrade, or fail the session when STARTTLS is missing or refused.
    Required,
}

/// SASL mechanism for `--auth`: the protocol crate's one mechanism enum
/// (names case-insensitive in flags and YAML; PLAIN is the default).
pub use mailstorm_proto::sasl::Mechanism as AuthMech;

/// Every effective setting of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host:port`; `None` starts the embedded sink.
    pub target: Option<String>,
    /// Allow targets outside loopback.
    pub allow_remote: bool,
    /// Shards (threads); 0 means one per available CPU.
    pub threads: usize,
    /// CPUs to pin shards to, round robin; empty means every allowed CPU.
    pub cpus: Vec<usize>,
    /// Pin each shard thread to a CPU.
    pub pin: bool,
    /// Closed loop: connections sending back to back. Open loop: the most
    /// connections used to keep up with the schedule.
    pub concurrency: u32,
    /// Open loop: messages per second on a fixed schedule.
    pub rate: Option<f64>,
    /// Load stages (`10s:100,30s:100..500,10s:0`): steps and linear ramps
    /// of the rate or of the connection count; the run lasts their sum.
    pub stages: Option<LoadStages>,
    /// What the stage values are: `rate` (messages/s, open loop) or
    /// `concurrency` (connections, closed loop).
    pub stages_mode: StagesMode,
    /// Stop after this many messages (attempted).
    pub messages: Option<u64>,
    /// Stop starting messages after this long.
    #[serde(with = "opt_dur")]
    pub duration: Option<Duration>,
    /// Messages per connection; 0 means unlimited.
    pub per_conn: u32,
    /// Send RSET before every transaction after the first on a connection
    /// (otherwise only after an unfinished one).
    pub rset: bool,
    /// Recipients per message (`3`, `1..3` or `{min, max}`).
    #[serde(deserialize_with = "rcpts_any")]
    pub rcpts: RcptRange,
    /// Message sizes (`4k`, `1k..100k`, `lognormal:10k,200k` or the
    /// mapping form with `kind`).
    #[serde(deserialize_with = "size_any")]
    pub size: SizeDist,
    /// Template file with `{{seq}}`/`{{rcpt}}` placeholders instead of
    /// generated messages.
    pub eml: Option<PathBuf>,
    /// Envelope sender pattern; `{n}` is the message sequence number.
    pub from: String,
    /// Recipient pattern; `{n}` is drawn from `0..users`.
    pub to: String,
    /// Size of the `{n}` space for recipients.
    pub users: u64,
    /// EHLO/LHLO domain.
    pub helo: String,
    /// PIPELINING use.
    pub pipelining: Mode,
    /// Most transactions a connection has outstanding at once when the
    /// server pipelines: with CHUNKING, up to this many
    /// `MAIL RCPT… BDAT n LAST`+body groups go out in one write (each after
    /// the first preceded by RSET); with DATA, the next group rides on the
    /// previous body's write. QUIT rides on the last write of a session.
    /// 1 (the default) is one transaction at a time.
    pub pipeline_depth: u32,
    /// CHUNKING (BDAT) use.
    pub chunking: Mode,
    /// STARTTLS policy.
    pub starttls: StartTls,
    /// Implicit TLS (SMTPS, port 465 style).
    pub tls: bool,
    /// Skip certificate verification.
    pub insecure: bool,
    /// Resume TLS sessions across connections (a client session cache).
    pub tls_resume: bool,
    /// PEM file of CA certificates to trust.
    pub ca: Option<PathBuf>,
    /// TLS server name; defaults to the target's host.
    pub sni: Option<String>,
    /// `user:password` for AUTH (the report shows the user only).
    pub auth: Option<String>,
    /// SASL mechanism.
    pub auth_mech: AuthMech,
    /// Speak LMTP (LHLO, one reply per recipient after the data).
    pub lmtp: bool,
    /// Seed for every random choice (sizes, recipients); 0 picks one
    /// from the clock (the report shows the one used).
    pub seed: u64,
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// SO_SNDBUF, bytes (`256k`).
    #[serde(deserialize_with = "opt_buffer_size")]
    pub sndbuf: Option<u32>,
    /// SO_RCVBUF, bytes (`256k`).
    #[serde(deserialize_with = "opt_buffer_size")]
    pub rcvbuf: Option<u32>,
    /// Close with RST (SO_LINGER 0) instead of FIN.
    pub linger0: bool,
    /// TCP keepalive idle time.
    #[serde(with = "opt_dur")]
    pub keepalive: Option<Duration>,
    /// Source addresses, used round robin.
    pub source: Vec<IpAddr>,
    /// Per-stage timeouts (`10s`, `connect=2s,data_end=1m` or a mapping).
    #[serde(deserialize_with = "timeouts_any")]
    pub timeouts: Timeouts,
    /// How long in-flight messages may take to finish after a stop.
    #[serde(with = "dur")]
    pub grace: Duration,
    /// DNS server for `mx:DOMAIN` targets (`ip:port`); `None`: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<std::net::SocketAddr>,
    /// SMTP port of the hosts an `mx:DOMAIN` target resolves to.
    pub smtp_port: u16,
    /// How long one DNS query may take.
    #[serde(with = "dur")]
    pub dns_timeout: Duration,
    /// How long an ejected relay stays out before a probe.
    #[serde(with = "dur")]
    pub relay_cooldown: Duration,
    /// Open loop: a send starting later than this after its intended time
    /// counts as late.
    #[serde(with = "dur")]
    pub late_after: Duration,
    /// Live view / timeline interval.
    #[serde(with = "dur")]
    pub interval: Duration,
    /// `--report FILE.json`.
    pub report: Option<PathBuf>,
    /// `--timeline FILE.csv`.
    pub timeline: Option<PathBuf>,
    /// `--threshold` checks.
    pub threshold: Option<String>,
    /// No live progress.
    pub quiet: bool,
    /// Client resilience policy (retries, breaker, concurrency feedback);
    /// none: one attempt per message, as a plain load test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicySpec>,
    /// Multiplies every policy time (`--time-scale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_scale: Option<f64>,
    /// Add the `X-Mailstorm-Trace` header (`--no-trace` turns it off).
    pub trace: bool,
    /// `--run-id`; `None` until the run picks one.
    pub run_id: Option<String>,
    /// The trace's sequence space: one per blaster process, so blasters
    /// sharing a run id never collide (picked at start when 0).
    pub trace_source: u32,
    /// `--ledger URL`: the downstream sink's control address.
    pub ledger: Option<String>,
    /// `--drain`: how long the ledger join waits for arrivals.
    #[serde(with = "dur")]
    pub drain: Duration,
    /// `--shard I/N`: this process is one slice of a run of N (the other
    /// settings are the whole run's; see [`crate::shard_split`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard_split::Shard>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target: None,
            allow_remote: false,
            threads: 0,
            cpus: Vec::new(),
            pin: true,
            concurrency: 50,
            rate: None,
            stages: None,
            stages_mode: StagesMode::Rate,
            messages: None,
            duration: None,
            per_conn: 100,
            rset: false,
            rcpts: RcptRange { min: 1, max: 1 },
            size: SizeDist::Fixed { bytes: 1024 },
            eml: None,
            from: "sender{n}@example.test".into(),
            to: "user{n}@example.test".into(),
            users: 1000,
            helo: "mailstorm-blast.example.test".into(),
            pipelining: Mode::Auto,
            pipeline_depth: 1,
            chunking: Mode::Auto,
            starttls: StartTls::Off,
            tls: false,
            insecure: false,
            tls_resume: false,
            ca: None,
            sni: None,
            auth: None,
            auth_mech: AuthMech::Plain,
            lmtp: false,
            seed: 0,
            nodelay: true,
            sndbuf: None,
            rcvbuf: None,
            linger0: false,
            keepalive: None,
            source: Vec::new(),
            timeouts: Timeouts::default(),
            grace: Duration::from_secs(5),
            resolver: None,
            smtp_port: 25,
            dns_timeout: Duration::from_secs(2),
            relay_cooldown: Duration::from_secs(5),
            late_after: Duration::from_millis(2),
            interval: Duration::from_secs(1),
            report: None,
            timeline: None,
            threshold: None,
            quiet: false,
            policy: None,
            time_scale: None,
            trace: true,
            run_id: None,
            trace_source: 0,
            ledger: None,
            drain: Duration::from_secs(60),
            shard: None,
        }
    }
}

/// Default run length when neither `--messages` nor `--duration` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// Most shards (threads) one process runs: more than any machine's cores,
/// and a bound on what a typo in `--threads` can spawn.
pub const MAX_THREADS: usize = 1024;

impl Config {
    /// Parses a profile (YAML with the report's `config` keys); errors give
    /// `origin:line:col`, the key path and the allowed keys or forms.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, BlastError> {
        mailstorm_config::from_yaml_str(text, origin).map_err(|e| BlastError::Config(e.to_string()))
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), BlastError> {
        let err = |m: String| Err(BlastError::Config(m));
        if let Some(id) = &self.run_id {
            if !mailstorm_proto::trace::valid_run_id(id) {
                return err(format!(
                    "--run-id {id:?}: 1 to {} characters of A-Z a-z 0-9 . _ -",
                    mailstorm_proto::trace::MAX_RUN_ID
                ));
            }
        }
        if let Some(p) = &self.policy {
            p.resolve(self.time_scale)
                .map_err(|e| BlastError::Config(e.to_string()))?;
            if self.rcpts.max > crate::policy::fate::MAX_RCPTS {
                return err(format!(
                    "a policy tracks at most {} recipients per message (--rcpts)",
                    crate::policy::fate::MAX_RCPTS
                ));
            }
        } else if self.time_scale.is_some() {
            return err("--time-scale scales a policy: give one (profile `policy:`)".into());
        }
        if self.threads > MAX_THREADS {
            return err(format!(
                "--threads {}: at most {MAX_THREADS} shards (each is a thread with its own runtime)",
                self.threads
            ));
        }
        if self.concurrency == 0 {
            return err("--concurrency must be at least 1".into());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return err(format!("--rate {r}: must be a positive number"));
            }
        }
        if let Some(st) = &self.stages {
            if self.rate.is_some() {
                return err(
                    "--stages and --rate are exclusive: the stage values are the rates \
                     (or connection counts with --stages-mode concurrency)"
                        .into(),
                );
            }
            if self.duration.is_some_and(|d| d != st.total()) {
                return err(format!(
                    "--stages: the run lasts the sum of the stages ({}); drop --duration",
                    format_duration(st.total())
                ));
            }
            if self.stages_mode == StagesMode::Concurrency && st.max_value() > 1_000_000.0 {
                return err("--stages: at most 1,000,000 connections".into());
            }
        }
        if !(1..=10_000).contains(&self.pipeline_depth) {
            return err("--pipeline-depth must be between 1 and 10000".into());
        }
        if self.messages == Some(0) {
            return err("--messages must be at least 1".into());
        }
        if self.duration == Some(Duration::ZERO) {
            return err("--duration must be positive".into());
        }
        if self.tls && self.starttls != StartTls::Off {
            return err("--tls (implicit TLS) and --starttls are exclusive".into());
        }
        if let Some(a) = &self.auth {
            if !a.contains(':') {
                return err("--auth expects user:password".into());
            }
        }
        if self.users == 0 {
            return err("--users must be at least 1".into());
        }
        if self.interval < Duration::from_millis(10) {
            return err("--interval must be at least 10ms".into());
        }
        if self.keepalive == Some(Duration::ZERO) {
            return err(
                "--keepalive 0s: the keepalive idle time must be positive (omit it for none)"
                    .into(),
            );
        }
        self.timeouts.check()?;
        Ok(())
    }

    /// The configured duration, or the default when no bound was given.
    pub fn effective_duration(&self) -> Option<Duration> {
        if let Some(st) = &self.stages {
            return Some(st.total());
        }
        match (self.duration, self.messages) {
            (None, None) => Some(DEFAULT_DURATION),
            (d, _) => d,
        }
    }

    /// Open loop: a fixed `rate`, or stages in rate mode.
    pub fn open_loop(&self) -> bool {
        self.rate.is_some() || (self.stages.is_some() && self.stages_mode == StagesMode::Rate)
    }

    /// Stages in concurrency mode.
    pub fn concurrency_stages(&self) -> Option<&LoadStages> {
        self.stages
            .as_ref()
            .filter(|_| self.stages_mode == StagesMode::Concurrency)
    }

    /// Uses TLS in any form.
    pub fn uses_tls(&self) -> bool {
        self.tls || self.starttls != StartTls::Off
    }

    /// A copy safe to print or write to a report (password hidden).
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if let Some(a) = &c.auth {
            let user = a.split_once(':').map_or(a.as_str(), |(u, _)| u);
            c.auth = Some(format!("{user}:***"));
        }
        c
    }
}

fn timeouts_any<'de, D: Deserializer<'de>>(d: D) -> Result<Timeouts, D::Error> {
    scalar_or_map(
        d,
        "a duration for every stage (10s), STAGE=DURATION,... or a mapping of stages",
        |s| {
            let mut t = Timeouts::default();
            t.apply(s)
                .map(|()| t)
                .map_err(|e| e.to_string().replace("--timeout ", ""))
        },
    )
}

fn opt_buffer_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = mailstorm_config::serde_units::opt_size::deserialize(d)?;
    n.map(|n| {
        u32::try_from(n)
            .map_err(|_| serde::de::Error::custom(format!("socket buffer size {n} is over 4GiB")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_bytes("2k").unwrap(), 2048);
        assert_eq!(parse_bytes("1M").unwrap(), 1 << 20);
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn size_dists() {
        assert_eq!(
            SizeDist::parse("1k..4k").unwrap(),
            SizeDist::Uniform {
                min: 1024,
                max: 4096
            }
        );
        let ln = SizeDist::parse("lognormal:10k,200k").unwrap();
        let mut r = Rng::new(1);
        let mut xs: Vec<u64> = (0..20_000).map(|_| ln.sample(&mut r)).collect();
        xs.sort_unstable();
        let med = xs[xs.len() / 2] as f64;
        let p99 = xs[xs.len() * 99 / 100] as f64;
        assert!((med / 10240.0 - 1.0).abs() < 0.1, "{med}");
        assert!((p99 / 204_800.0 - 1.0).abs() < 0.2, "{p99}");
        assert!(SizeDist::parse("4k..1k").is_err());
    }

    #[test]
    fn zero_keepalive_is_rejected_naming_flag_and_value() {
        let c = Config {
            keepalive: Some(Duration::ZERO),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--keepalive 0s") && e.contains("positive"),
            "{e}"
        );
        let c = Config {
            keepalive: Some(Duration::from_secs(30)),
            ..Config::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn config_yaml_roundtrip_and_timeouts() {
        let mut c = Config::default();
        c.timeouts.apply("3s,data_end=1m").unwrap();
        assert_eq!(c.timeouts.mail, Duration::from_secs(3));
        assert_eq!(c.timeouts.data_end, Duration::from_secs(60));
        let y = serde_yaml::to_string(&c).unwrap();
        let back: Config = serde_yaml::from_str(&y).unwrap();
        assert_eq!(back, c);
        let partial: Config = serde_yaml::from_str("rate: 200\nduration: 10s\n").unwrap();
        assert_eq!(partial.rate, Some(200.0));
        assert_eq!(partial.duration, Some(Duration::from_secs(10)));
        assert!(serde_yaml::from_str::<Config>("nope: 1\n").is_err());
        c.auth = Some("bob:secret".into());
        assert_eq!(c.redacted().auth.as_deref(), Some("bob:***"));
    }
}
