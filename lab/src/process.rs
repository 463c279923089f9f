//! Processes of a lab: run to completion, started inside a namespace with
//! nsenter (not `ip netns exec`, which also makes a mount namespace with a
//! fresh /sys that hides the bpffs lbd pins into), found again through pid
//! files, and stopped by pid only (other users of the machine run the same
//! programs: never by name).
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::wait::wait_until;

/// Runs a command, failing with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("spawning {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nsenter --net=/run/netns/NS`, the prefix of a command run in `ns`.
pub fn nsenter_command(ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"));
    c
}

/// `ip netns exec NS`, for programs that read the namespace's own
/// /sys/class/net (it mounts a fresh /sys; bpffs pins are then out of
/// reach, see [`nsenter_command`]). It execs the program: the child's pid
/// is the program's.
pub fn ip_netns_exec(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c
}

/// Runs a command inside namespace `ns` and waits for it.
pub fn nsenter(ns: &str, argv: &[&str]) -> Result<String> {
    let mut all = vec![format!("--net=/run/netns/{ns}")];
    all.extend(argv.iter().map(|s| s.to_string()));
    let args: Vec<&str> = all.iter().map(String::as_str).collect();
    run("nsenter", &args)
}

/// Starts a long-running command inside namespace `ns` with its output in `log`.
pub fn spawn_in(ns: &str, argv: &[&str], log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    nsenter_command(ns)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))
}

/// Starts a daemonizing command inside `ns` (it forks and writes `pid_file`)
/// and waits for its pid file; returns the daemon's pid.
pub fn start_daemon(ns: &str, argv: &[&str], pid_file: &Path) -> Result<u32> {
    let _ = fs::remove_file(pid_file);
    nsenter(ns, argv)?;
    let what = format!("{}'s pid file {}", argv[0], pid_file.display());
    wait_until(&what, Duration::from_secs(10), || {
        read_pid(pid_file).is_some()
    })?;
    read_pid(pid_file).context(what)
}

pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// kill(2) on a pid the caller started (never pid 0 or 1: a process group
/// or init).
pub fn signal(pid: u32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill(2) on a pid this lab started (checked by the caller).
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Whether `pid` runs (a zombie is dead for our purposes).
pub fn alive(pid: u32) -> bool {
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
/// `marker` (the lab's run directory; pid files may outlive their process
/// and the pid be reused by something else).
pub fn belongs_to(pid: u32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(marker))
        .unwrap_or(false)
}

/// Waits (bounded) until `pid` is gone; whether it is.
fn gone_within(pid: u32, limit: Duration) -> bool {
    wait_until("exit", limit, || !alive(pid)).is_ok()
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
pub fn stop_pid(pid: u32, grace: Duration) {
    signal(pid, libc::SIGTERM);
    if !gone_within(pid, grace) {
        kill_pid(pid);
    }
}

/// SIGKILL and wait (up to 2 s) until the process is gone.
pub fn kill_pid(pid: u32) {
    if alive(pid) {
        signal(pid, libc::SIGKILL);
        gone_within(pid, Duration::from_secs(2));
    }
}

/// SIGTERM a child, SIGKILL after `grace`, and reap it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        signal(child.id(), libc::SIGTERM);
        let _ = wait_until("exit", grace, || !matches!(child.try_wait(), Ok(None)));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Raises the open-file limit to its hard limit (tests that open 2,000
/// connections need more than the usual 1,024).
pub fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}
