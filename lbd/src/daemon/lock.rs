//! One daemon per node: `lbd run` takes an exclusive lock on its pin
//! directory (the dataplane it owns) and on `<socket>.lock` (the operator
//! socket it would replace) before it touches either. A second daemon
//! fails with the pid of the one that holds the lock, having changed
//! nothing. The kernel drops the locks when the holder exits, however it
//! exits: there is no stale lock to clean up.

use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Held for the daemon's lifetime.
pub struct InstanceLock {
    _held: Vec<File>,
}

pub fn acquire(pin_dir: &Path, socket: &Path) -> Result<InstanceLock> {
    std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut sock_lock = socket.as_os_str().to_owned();
    sock_lock.push(".lock");
    let mut held = Vec::new();
    for path in [pin_dir.to_path_buf(), PathBuf::from(sock_lock)] {
        let f = if path.is_dir() {
            File::open(&path)
        } else {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        }
        .with_context(|| format!("opening {} to lock it", path.display()))?;
        match f.try_lock() {
            Ok(()) => held.push(f),
            Err(TryLockError::WouldBlock) => {
                let who = holder(&f)
                    .map(|p| format!("pid {p}"))
                    .unwrap_or_else(|| "another process".into());
                bail!(
                    "another lbd ({who}) is running with {}: one daemon per node (stop it first)",
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    Ok(InstanceLock { _held: held })
}

/// The pid that holds the flock on `f`, from /proc/locks
/// (`1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF`).
fn holder(f: &File) -> Option<u32> {
    let m = f.metadata().ok()?;
    let dev = format!(
        "{:02x}:{:02x}:{}",
        libc::major(m.dev()),
        libc::minor(m.dev()),
        m.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&dev.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}
