//! What /proc says about a process, for tests that check how a daemon
//! really runs (the systemd unit tests of lbd and flowmark), and about
//! the machine, for benchmarks that record how loaded it was.
use anyhow::{Context, Result};

/// A capability mask line of /proc/PID/status (`field` as written there,
/// e.g. "CapEff:" or "CapBnd:"; `pid` may be "self").
pub fn capability_mask(pid: &str, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} line in /proc/{pid}/status"))?;
    u64::from_str_radix(value.trim(), 16)
        .with_context(|| format!("{field} {value:?} of process {pid} is not a hex mask"))
}

/// The 1-minute load average (NaN if /proc/loadavg cannot be read: a
/// benchmark still reports its figures).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
