//! Processes of the lab: started inside a namespace with nsenter (not
//! `ip netns exec`, which also makes a mount namespace with a fresh /sys
//! that hides the bpffs lbd pins into), found again through pid files, and
//! stopped by pid only.
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use lab::run as run_checked;

/// Runs a command inside namespace `ns` and waits for it.
pub fn nsenter(ns: &str, argv: &[&str]) -> Result<String> {
    let mut all = vec![format!("--net=/run/netns/{ns}")];
    all.extend(argv.iter().map(|s| s.to_string()));
    let args: Vec<&str> = all.iter().map(String::as_str).collect();
    run_checked("nsenter", &args)
}

/// Starts a long-running command inside namespace `ns` with its output in `log`.
pub fn spawn_in(ns: &str, argv: &[&str], log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))
}

pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn signal_pid(pid: u32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) on a pid this lab started (checked by the caller).
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie child is dead for our purposes.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Whether `pid` is still a process of this lab: its command line names
/// the lab's run directory (pid files may outlive their process and the
/// pid be reused by something else).
pub fn belongs_to(pid: u32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(marker))
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
pub fn stop_pid(pid: u32, grace: Duration) {
    signal_pid(pid, libc::SIGTERM);
    let end = Instant::now() + grace;
    while alive(pid) && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        signal_pid(pid, libc::SIGKILL);
        let end = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Polls `f` every 20 ms until it holds; an error names what was awaited.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}
