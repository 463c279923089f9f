//! One daemon per node: `lbd run` takes an exclusive lock on its pin
//! directory (the dataplane it owns) and on `<socket>.lock` (the operator
//! socket it would replace) before it touches either. A second daemon
//! fails with the pid of the one that holds the lock, having changed
//! nothing. The kernel drops the locks when the holder exits, however it
//! exits: there is no stale lock to clean up.

use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why this daemon cannot be the node's one daemon.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another lbd ({holder}) is running with {}: one daemon per node (stop it first)",
        path.display()
    )]
    Held { holder: String, path: PathBuf },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LockError {
    let path = path.to_path_buf();
    move |source| LockError::Io { what, path, source }
}

/// Held for the daemon's lifetime.
pub struct InstanceLock {
    _held: Vec<File>,
}

pub fn acquire(pin_dir: &Path, socket: &Path) -> Result<InstanceLock, LockError> {
    std::fs::create_dir_all(pin_dir).map_err(io("creating", pin_dir))?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
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
        .map_err(io("opening to lock", &path))?;
        match f.try_lock() {
            Ok(()) => held.push(f),
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&f)
                    .map(|p| format!("pid {p}"))
                    .unwrap_or_else(|| "another process".into());
                return Err(LockError::Held { holder, path });
            }
            Err(TryLockError::Error(e)) => return Err(io("locking", &path)(e)),
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
