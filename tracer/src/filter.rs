//! Which tasks a capture looks at. The same flags serve `profile`, `offcpu`
//! and `latency`; all of them are enforced in the kernel programs.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use tracer_common::{COMM_LEN, Config, F_FILTER_CGROUP, F_FILTER_COMM, F_FILTER_TASK};

/// Task filters shared by every command.
#[derive(Args, Debug, Clone, Default)]
pub struct Filters {
    /// Only this process (all its threads). Repeat or comma-separate for several.
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Only this thread. Repeat or comma-separate for several; OR-ed with --pid.
    #[arg(long = "tid", value_name = "TID", value_delimiter = ',')]
    pub tids: Vec<u32>,
    /// Only tasks in this cgroup (v2) or below it: a path under the cgroup2
    /// mount, absolute (/sys/fs/cgroup/system.slice/nginx.service) or relative
    /// to it (system.slice/nginx.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Only tasks with this command name (as in /proc/PID/comm, at most 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
}

/// A cgroup resolved to what the kernel compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupTarget {
    pub path: PathBuf,
    pub id: u64,
    pub level: u32,
}

impl Filters {
    /// Fills the filter part of the kernel config (the id lists go to their
    /// own maps, see [`crate::bpf::Tracer::set_filters`]).
    pub fn apply(&self, cfg: &mut Config) -> Result<Option<CgroupTarget>> {
        if self.pids.len() + self.tids.len() > tracer_common::MAX_FILTER_IDS as usize {
            bail!(
                "too many --pid/--tid values ({}), at most {}",
                self.pids.len() + self.tids.len(),
                tracer_common::MAX_FILTER_IDS
            );
        }
        if let Some(p) = self.pids.iter().chain(&self.tids).find(|&&p| p == 0) {
            bail!("invalid --pid/--tid {p}: the idle task cannot be filtered on");
        }
        if !self.pids.is_empty() || !self.tids.is_empty() {
            cfg.flags |= F_FILTER_TASK;
        }
        if let Some(comm) = &self.comm {
            cfg.comm = comm_bytes(comm)?;
            cfg.flags |= F_FILTER_COMM;
        }
        let cg = match &self.cgroup {
            Some(p) => Some(resolve_cgroup(p)?),
            None => None,
        };
        if let Some(cg) = &cg {
            cfg.cgroup_id = cg.id;
            cfg.cgroup_level = cg.level;
            cfg.flags |= F_FILTER_CGROUP;
        }
        Ok(cg)
    }

    /// True when the capture is limited to listed processes/threads only, so
    /// it can end once they have all exited.
    pub fn only_tasks(&self) -> bool {
        (!self.pids.is_empty() || !self.tids.is_empty())
            && self.cgroup.is_none()
            && self.comm.is_none()
    }
}

/// The kernel's comm is 15 bytes plus NUL; longer names never match, so say so.
pub fn comm_bytes(name: &str) -> Result<[u8; COMM_LEN]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= COMM_LEN || b.contains(&0) {
        bail!(
            "invalid --comm {name:?}: a command name is 1 to {} bytes (the kernel truncates \
             longer names; use the first {} bytes)",
            COMM_LEN - 1,
            COMM_LEN - 1
        );
    }
    let mut out = [0u8; COMM_LEN];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    for line in info.lines() {
        // "... mountpoint opts ... - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mp) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mp));
        }
    }
    bail!("no cgroup2 file system is mounted: --cgroup needs the unified (v2) hierarchy")
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs on a NUL-terminated path into a zeroed struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// Resolves `--cgroup PATH` to the cgroup id (the directory's inode) and its
/// depth below the cgroup2 root, which `bpf_get_current_ancestor_cgroup_id`
/// needs to match the cgroup and everything below it.
pub fn resolve_cgroup(path: &Path) -> Result<CgroupTarget> {
    let mount = cgroup2_mount()?;
    let candidates: Vec<PathBuf> = if path.is_absolute() && path.starts_with(&mount) {
        vec![path.to_path_buf()]
    } else {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let mut v = vec![mount.join(rel)];
        if path.is_absolute() {
            v.insert(0, path.to_path_buf());
        }
        v
    };
    for cand in &candidates {
        if !cand.is_dir() {
            continue;
        }
        if !is_cgroup2(cand) {
            bail!(
                "--cgroup {}: {} is not in the cgroup v2 hierarchy (mounted at {}); \
                 name the cgroup by its path there",
                path.display(),
                cand.display(),
                mount.display()
            );
        }
        let canon = cand
            .canonicalize()
            .with_context(|| format!("resolving {}", cand.display()))?;
        let mount_canon = mount.canonicalize().unwrap_or(mount.clone());
        let rel = canon.strip_prefix(&mount_canon).with_context(|| {
            format!(
                "--cgroup {}: not below the cgroup2 mount {}",
                path.display(),
                mount.display()
            )
        })?;
        let level = rel.components().count() as u32;
        let id = fs::metadata(&canon)
            .with_context(|| format!("stat {}", canon.display()))?
            .ino();
        return Ok(CgroupTarget {
            path: canon,
            id,
            level,
        });
    }
    bail!(
        "--cgroup {}: no such cgroup (looked at {}); list them with `ls {}` or \
         `systemctl status UNIT` (the CGroup: line)",
        path.display(),
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        mount.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_limits() {
        assert!(comm_bytes("nginx").is_ok());
        assert!(comm_bytes("").is_err());
        assert!(comm_bytes("a-name-of-16-byt").is_err());
        assert_eq!(&comm_bytes("java").unwrap()[..5], b"java\0");
    }

    #[test]
    fn root_cgroup_is_level_zero() {
        let mount = cgroup2_mount().unwrap();
        let t = resolve_cgroup(&mount).unwrap();
        assert_eq!(t.level, 0);
        assert!(resolve_cgroup(Path::new("no/such/cgroup-lbd")).is_err());
    }
}
