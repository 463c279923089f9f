//! What /proc says about a process, for tests that check how a daemon
//! really runs (the systemd unit tests of lbd and flowmark).
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
