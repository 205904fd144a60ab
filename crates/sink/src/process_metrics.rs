//! The sink process's own CPU time and memory in Prometheus's standard
//! names (`process_cpu_seconds_total`, `process_resident_memory_bytes`),
//! so a capacity search (`mailstorm-blast capacity --target-metrics`) or a
//! dashboard can chart the target's resources beside the load.

use std::fmt::Write as _;

/// Appends the process metrics to `out`; a value that cannot be read
/// (not Linux, no /proc) is left out rather than reported as zero.
pub(crate) fn write(out: &mut String) {
    if let Ok(u) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let cpu = secs(u.user_time()) + secs(u.system_time());
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {cpu}"
        );
    }
    if let Some(kib) = resident_kib() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {}",
            kib * 1024
        );
    }
}

/// `VmRSS` from `/proc/self/status`, KiB.
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_cpu_and_resident_memory() {
        let mut out = String::new();
        super::write(&mut out);
        let value = |name: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {out}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_cpu_seconds_total") > 0.0);
        // A test process holds at least a megabyte resident.
        assert!(value("process_resident_memory_bytes") > 1_048_576.0);
    }
}
