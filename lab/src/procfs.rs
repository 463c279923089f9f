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

/// CPU time (user + system) process `pid` has used so far: how long a
/// workload really ran (on a loaded machine, far less than the wall time).
pub fn cpu_time(pid: u32) -> Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The comm may hold spaces: fields count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("no ')' in /proc/{pid}/stat"))?;
    // utime and stime are fields 14 and 15: the 12th and 13th after ')'.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("field {} of /proc/{pid}/stat", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(std::time::Duration::from_millis(total * 1000 / hz.max(1)))
}
