//! [`Args::to_config`]: the `--profile` file (or the defaults), with every
//! flag given on the command line laid over it, then checked as a whole
//! (thresholds against the load stages, `--abort-on-fail` against the
//! thresholds, [`Config::validate`]).

use super::Args;
use crate::config::{parse_bytes, AuthMech, Config, Mode, RcptRange, SizeDist, StartTls};
use crate::stages::{LoadStages, StagesMode};
use crate::BlastError;

/// The [`Mode`] an `auto`/`on`/`off` flag names (clap has checked the
/// word; lower-cased by the caller).
fn mode(s: &str) -> Mode {
    match s {
        "on" => Mode::On,
        "off" => Mode::Off,
        _ => Mode::Auto,
    }
}

impl Args {
    /// The configuration: profile (if any), then flags on top.
    pub fn to_config(&self) -> Result<Config, BlastError> {
        let mut c = match &self.profile {
            Some(p) => {
                let text = mailstorm_config::read_config_file(p)
                    .map_err(|e| BlastError::Config(format!("--profile {}: {e}", p.display())))?;
                Config::from_yaml_str(&text, &p.display().to_string())?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f {
                    c.$f = v.clone().into();
                }
            )*};
        }
        if !self.target.is_empty() {
            c.target = Some(self.target.join(","));
        }
        if self.resolver.is_some() {
            c.resolver = self.resolver;
        }
        if let Some(p) = self.smtp_port {
            c.smtp_port = p;
        }
        if let Some(v) = self.dns_timeout {
            c.dns_timeout = v;
        }
        if let Some(v) = self.relay_cooldown {
            c.relay_cooldown = v;
        }
        set!(
            threads,
            concurrency,
            messages,
            per_conn,
            from,
            to,
            users,
            helo,
            seed,
            pipeline_depth
        );
        set!(cpus, source);
        if let Some(v) = self.rate {
            c.rate = Some(v);
        }
        if let Some(v) = self.duration {
            c.duration = Some(v);
        }
        if let Some(v) = self.keepalive {
            c.keepalive = Some(v);
        }
        if let Some(v) = self.grace {
            c.grace = v;
        }
        if let Some(v) = self.late_after {
            c.late_after = v;
        }
        if let Some(v) = self.interval {
            c.interval = v;
        }
        for (src, dst) in [
            (&self.eml, &mut c.eml),
            (&self.ca, &mut c.ca),
            (&self.report, &mut c.report),
            (&self.timeline, &mut c.timeline),
        ] {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        for (src, dst) in [
            (&self.sni, &mut c.sni),
            (&self.auth, &mut c.auth),
            (&self.threshold, &mut c.threshold),
        ] {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        c.allow_remote |= self.allow_remote;
        c.rset |= self.rset;
        c.tls |= self.tls;
        c.insecure |= self.insecure;
        c.tls_resume |= self.tls_resume;
        c.lmtp |= self.lmtp;
        c.linger0 |= self.linger0;
        c.quiet |= self.quiet;
        if self.no_trace {
            c.trace = false;
        }
        if let Some(v) = &self.run_id {
            c.run_id = Some(v.clone());
        }
        if let Some(v) = &self.ledger {
            c.ledger = Some(v.clone());
        }
        if let Some(v) = self.drain {
            c.drain = v;
        }
        let job_index = std::env::var("JOB_COMPLETION_INDEX").ok();
        if let Some(s) = crate::shard_split::Shard::resolve(
            self.shard.as_deref(),
            self.shards,
            job_index.as_deref(),
        )? {
            c.shard = Some(s);
        }
        if self.time_scale.is_some() {
            c.time_scale = self.time_scale;
        }
        if self.no_pin {
            c.pin = false;
        }
        if self.no_nodelay {
            c.nodelay = false;
        }
        if let Some(s) = &self.stages {
            c.stages = Some(LoadStages::parse(s)?);
        }
        let lower = |s: &Option<String>| s.as_deref().map(str::to_ascii_lowercase);
        match lower(&self.stages_mode).as_deref() {
            Some("concurrency") => c.stages_mode = StagesMode::Concurrency,
            Some(_) => c.stages_mode = StagesMode::Rate,
            // Inferred: --concurrency without --rate means connections.
            None if self.stages.is_some() && self.concurrency.is_some() && self.rate.is_none() => {
                c.stages_mode = StagesMode::Concurrency
            }
            None => {}
        }
        if let Some(s) = &self.rcpts {
            c.rcpts = RcptRange::parse(s)?;
        }
        if let Some(s) = &self.size {
            c.size = SizeDist::parse(s)?;
        }
        if let Some(s) = lower(&self.pipelining) {
            c.pipelining = mode(&s);
        }
        if let Some(s) = lower(&self.chunking) {
            c.chunking = mode(&s);
        }
        if let Some(s) = lower(&self.starttls) {
            c.starttls = match s.as_str() {
                "opportunistic" => StartTls::Opportunistic,
                "required" => StartTls::Required,
                _ => StartTls::Off,
            };
        }
        if let Some(s) = &self.auth_mech {
            // clap has checked the name against the same list.
            c.auth_mech = AuthMech::parse(s).unwrap_or_default();
        }
        let bytes = |s: &Option<String>| -> Result<Option<u32>, BlastError> {
            s.as_deref()
                .map(|v| parse_bytes(v).map(|n| n.min(u64::from(u32::MAX)) as u32))
                .transpose()
        };
        if self.sndbuf.is_some() {
            c.sndbuf = bytes(&self.sndbuf)?;
        }
        if self.rcvbuf.is_some() {
            c.rcvbuf = bytes(&self.rcvbuf)?;
        }
        if let Some(t) = &self.timeout {
            c.timeouts.apply(t)?;
        }
        if let Some(t) = &c.threshold {
            let stages = c.stages.as_ref().map_or(0, |s| s.stages().len());
            for check in crate::threshold::parse(t)? {
                if let Some(i) = check.load_stage().filter(|i| *i >= stages) {
                    return Err(BlastError::Config(format!(
                        "--threshold {:?}: the run has {stages} load stage(s), not {}",
                        check.text(),
                        i + 1
                    )));
                }
            }
        }
        if self.abort_on_fail && c.threshold.is_none() {
            return Err(BlastError::Config(
                "--abort-on-fail watches the --threshold checks: give some".into(),
            ));
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn flags_override_defaults() {
        let a = Args::try_parse_from([
            "mailstorm-blast",
            "--target",
            "127.0.0.1:2525",
            "-c",
            "7",
            "--rate",
            "100",
            "-d",
            "2s",
            "--size",
            "1k..2k",
            "--rcpts",
            "2..3",
            "--pipelining",
            "off",
            "--source",
            "127.0.0.2,127.0.0.3",
            "--timeout",
            "connect=1s",
            "--auth",
            "u:p",
            "--auth-mech",
            "cram-md5",
        ])
        .unwrap();
        let c = a.to_config().unwrap();
        assert_eq!(c.target.as_deref(), Some("127.0.0.1:2525"));
        assert_eq!(c.concurrency, 7);
        assert_eq!(c.rate, Some(100.0));
        assert_eq!(c.rcpts, RcptRange { min: 2, max: 3 });
        assert_eq!(c.pipelining, Mode::Off);
        assert_eq!(c.source.len(), 2);
        assert_eq!(c.timeouts.connect, std::time::Duration::from_secs(1));
        assert_eq!(c.auth_mech, AuthMech::CramMd5);
        let bad = Args::try_parse_from(["x", "--threshold", "p99<3"]).unwrap();
        assert!(bad.to_config().is_err());
        let bad = Args::try_parse_from(["x", "--threshold", ",,,"]).unwrap();
        assert!(bad.to_config().is_err());
    }

    #[test]
    fn enum_flags_ignore_case() {
        let a = Args::try_parse_from([
            "mailstorm-blast",
            "--auth-mech",
            "PLAIN",
            "--starttls",
            "Required",
            "--pipelining",
            "ON",
            "--chunking",
            "Off",
            "--stages",
            "1s:5",
            "--stages-mode",
            "CONCURRENCY",
        ])
        .unwrap();
        let c = a.to_config().unwrap();
        assert_eq!(c.auth_mech, AuthMech::Plain);
        assert_eq!(c.starttls, StartTls::Required);
        assert_eq!(c.pipelining, Mode::On);
        assert_eq!(c.chunking, Mode::Off);
        assert_eq!(c.stages_mode, StagesMode::Concurrency);
        let a = Args::try_parse_from(["x", "--auth-mech", "CRAM-MD5"]).unwrap();
        assert_eq!(a.to_config().unwrap().auth_mech, AuthMech::CramMd5);
    }
}
