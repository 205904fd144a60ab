//! Per-stage client timeouts: `--timeout 10s` (every stage) or
//! `--timeout connect=2s,data_end=1m`, and the same forms in a profile.
//! Its own module because both the run settings and the resilience policy
//! use it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BlastError;

/// Per-stage timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub connect: Duration,
    /// TLS handshake (implicit or after STARTTLS).
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub tls: Duration,
    /// The 220 greeting.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub banner: Duration,
    /// EHLO/HELO/LHLO and STARTTLS replies.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub ehlo: Duration,
    /// The whole AUTH exchange, per reply.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub auth: Duration,
    /// MAIL FROM reply.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub mail: Duration,
    /// Each RCPT TO reply.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub rcpt: Duration,
    /// DATA's 354 reply, and writing the body.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub data: Duration,
    /// The reply after the final dot or BDAT LAST.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub data_end: Duration,
    /// RSET reply.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub rset: Duration,
    /// QUIT reply.
    #[serde(with = "mailstorm_config::serde_units::duration")]
    pub quit: Duration,
}

impl Default for Timeouts {
    // Shorter than RFC 5321 §4.5.3.2's minutes: a load test wants to see a
    // stuck server as an error quickly. Each is configurable.
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            connect: s(10),
            tls: s(10),
            banner: s(30),
            ehlo: s(30),
            auth: s(30),
            mail: s(30),
            rcpt: s(30),
            data: s(30),
            data_end: s(60),
            rset: s(30),
            quit: s(5),
        }
    }
}

impl Timeouts {
    /// Applies `10s` (all) or `connect=2s,data_end=1m` overrides.
    pub fn apply(&mut self, spec: &str) -> Result<(), BlastError> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                let d = positive(part, part)?;
                *self = Timeouts {
                    connect: d,
                    tls: d,
                    banner: d,
                    ehlo: d,
                    auth: d,
                    mail: d,
                    rcpt: d,
                    data: d,
                    data_end: d,
                    rset: d,
                    quit: d,
                };
                continue;
            };
            let d = positive(&format!("{}={}", name.trim(), value.trim()), value)?;
            let slot = match name.trim() {
                "connect" => &mut self.connect,
                "tls" => &mut self.tls,
                "banner" => &mut self.banner,
                "ehlo" | "helo" | "lhlo" => &mut self.ehlo,
                "auth" => &mut self.auth,
                "mail" => &mut self.mail,
                "rcpt" => &mut self.rcpt,
                "data" => &mut self.data,
                "data_end" => &mut self.data_end,
                "rset" => &mut self.rset,
                "quit" => &mut self.quit,
                other => {
                    return Err(BlastError::Config(format!(
                        "--timeout: unknown stage {other:?} (connect, tls, banner, ehlo, auth, mail, rcpt, data, data_end, rset, quit)"
                    )))
                }
            };
            *slot = d;
        }
        Ok(())
    }

    /// Every stage with its timeout, in protocol order.
    pub fn stages(&self) -> [(&'static str, Duration); 11] {
        [
            ("connect", self.connect),
            ("tls", self.tls),
            ("banner", self.banner),
            ("ehlo", self.ehlo),
            ("auth", self.auth),
            ("mail", self.mail),
            ("rcpt", self.rcpt),
            ("data", self.data),
            ("data_end", self.data_end),
            ("rset", self.rset),
            ("quit", self.quit),
        ]
    }

    /// Rejects a zero timeout (from a profile; flags are checked as parsed).
    pub fn check(&self) -> Result<(), BlastError> {
        match self.stages().iter().find(|(_, d)| d.is_zero()) {
            Some((name, _)) => Err(zero_timeout(&format!("{name}=0s"))),
            None => Ok(()),
        }
    }
}

/// A zero timeout would fail every session at once: never what was meant.
fn zero_timeout(spec: &str) -> BlastError {
    BlastError::Config(format!(
        "--timeout {spec}: a timeout must be positive (e.g. 10s)"
    ))
}

fn positive(spec: &str, value: &str) -> Result<Duration, BlastError> {
    let d = mailstorm_config::parse_duration(value)
        .map_err(|e| BlastError::Config(format!("--timeout {spec}: {e}")))?;
    if d.is_zero() {
        return Err(zero_timeout(spec));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_are_rejected_naming_flag_and_value() {
        let mut t = Timeouts::default();
        let e = t.apply("banner=0s").unwrap_err().to_string();
        assert!(
            e.contains("--timeout banner=0s") && e.contains("positive"),
            "{e}"
        );
        let e = t.apply("0").unwrap_err().to_string();
        assert!(e.contains("--timeout 0"), "{e}");
        let e = t.apply("mail=soon").unwrap_err().to_string();
        assert!(e.contains("mail=soon") && e.contains("\"soon\""), "{e}");
        t.apply("banner=2s").unwrap();
        assert_eq!(t.banner, Duration::from_secs(2));
        t.rset = Duration::ZERO;
        assert!(t.check().unwrap_err().to_string().contains("rset=0s"));
    }
}
