//! CPU and memory from `/proc`: the generator's own CPU (to tell "the
//! generator could not keep up" from "the target could not") and, with
//! `--target-pid`, a local target's CPU and RSS beside the load.

use std::time::Instant;

/// Cumulative CPU seconds (user + system) of this process.
pub fn self_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        // getrusage(RUSAGE_SELF) cannot fail on Linux; 0 makes the share 0.
        Err(_) => 0.0,
    }
}

/// A process's CPU seconds and resident set size from `/proc/PID`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, fixed at
/// 100 on Linux for every architecture we build for).
const USER_HZ: f64 = 100.0;
/// Page size for `/proc/PID/statm` (4 KiB on x86-64 and most arm64).
const PAGE: u64 = 4096;

/// Reads `/proc/PID/stat` and `/proc/PID/statm`; an error names the pid.
pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("--target-pid {pid}: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: parse
    // after its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("--target-pid {pid}: unreadable /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<f64, String> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("--target-pid {pid}: unreadable /proc/{pid}/stat"))
    };
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let cpu_secs = (field(11)? + field(12)?) / USER_HZ;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .map_err(|e| format!("--target-pid {pid}: {e}"))?;
    let rss_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu_secs,
        rss_bytes: rss_pages * PAGE,
    })
}

/// CPU use over a step: the generator's and (optionally) the target's.
pub struct CpuMeter {
    started: Instant,
    own: f64,
    target: Option<(super::TargetProbe, Option<ProcSample>)>,
}

/// What a [`CpuMeter`] measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// The generator's CPU, percent of one core.
    pub generator_pct: f64,
    /// The target's CPU, percent of one core (`--target-pid`).
    pub target_pct: Option<f64>,
    /// The target's RSS at the end, bytes (`--target-pid`).
    pub target_rss: Option<u64>,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(target: Option<&super::TargetProbe>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            own: self_cpu_secs(),
            target: target.map(|t| (t.clone(), t.sample().ok())),
        }
    }

    /// CPU since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-6);
        let mut out = CpuUse {
            generator_pct: (self_cpu_secs() - self.own) / wall * 100.0,
            ..CpuUse::default()
        };
        if let Some((probe, Some(before))) = &self.target {
            if let Ok(now) = probe.sample() {
                out.target_pct = Some((now.cpu_secs - before.cpu_secs) / wall * 100.0);
                out.target_rss = Some(now.rss_bytes);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_secs >= 0.0);
        assert!(sample(u32::MAX).unwrap_err().contains("--target-pid"));
        let m = CpuMeter::start(Some(&crate::capacity::TargetProbe::Pid(std::process::id())));
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let u = m.stop();
        assert!(u.generator_pct >= 0.0);
        assert!(u.target_rss.is_some());
    }
}
