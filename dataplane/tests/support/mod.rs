//! Test support: throwaway network namespaces and a loaded dataplane with
//! its own pin directory, both removed on drop (also when a test fails).
#![allow(dead_code)]

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};
use dataplane::loader::Dataplane;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `prefix` + pid + sequence (interface names are
/// limited to 15 bytes, so keep prefixes short).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

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

/// `ip` with arguments split on whitespace.
pub fn ip(args: &str) -> Result<String> {
    run("ip", &args.split_whitespace().collect::<Vec<_>>())
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        ip(&format!("netns add {name}"))?;
        let ns = Self { name };
        ns.ip("link set lo up")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    pub fn ip(&self, args: &str) -> Result<String> {
        ip(&format!("-n {} {args}", self.name))
    }

    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Moves the calling thread into this namespace (only this thread:
    /// every test runs on its own thread).
    pub fn enter(&self) -> Result<()> {
        let f = File::open(format!("/run/netns/{}", self.name))?;
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{dev}/ifindex")])?;
        Ok(out.trim().parse()?)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.ip("nexthop flush");
        let _ = ip(&format!("netns del {}", self.name));
    }
}

/// A dataplane loaded with a private pin directory.
pub struct Loaded {
    pub dp: Dataplane,
    pub pin_dir: PathBuf,
}

impl Loaded {
    pub fn new(prefix: &str) -> Result<Self> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", unique(prefix)));
        let dp = Dataplane::open(&pin_dir)?;
        Ok(Self { dp, pin_dir })
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = Dataplane::cleanup(&self.pin_dir);
    }
}
