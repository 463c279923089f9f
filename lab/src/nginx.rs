//! nginx as a lab backend: a prefix directory of its own (nginx.conf,
//! nginx.pid, logs/), started daemonized inside a namespace, stopped the
//! way a failing backend stops answering, workers included. The caller
//! writes the config (each lab serves something else).
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::process::{alive, kill_pid, read_pid, start_daemon, stop_pid};

/// The WebDAV extension module of Debian's nginx (PROPFIND, OPTIONS).
pub const DAV_EXT: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

pub struct Nginx {
    /// The prefix: nginx.conf, nginx.pid and logs/ live here.
    pub dir: PathBuf,
}

impl Nginx {
    pub fn new(dir: PathBuf) -> Nginx {
        Nginx { dir }
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }

    pub fn error_log(&self) -> PathBuf {
        self.dir.join("logs/error.log")
    }

    /// Starts nginx (its config must say `daemon on` and `pid` the pid
    /// file) inside `ns`; returns the master's pid once it wrote it.
    pub fn start(&self, ns: &str) -> Result<u32> {
        fs::create_dir_all(self.dir.join("logs"))?;
        let d = self.dir.display().to_string();
        let (err, conf) = (
            self.error_log().display().to_string(),
            self.conf().display().to_string(),
        );
        start_daemon(
            ns,
            &["/usr/sbin/nginx", "-p", &d, "-e", &err, "-c", &conf],
            &self.pid_file(),
        )
    }

    /// SIGTERM to the master (SIGKILL after 3 s); returns once the master
    /// and every worker it had are gone, so no worker is left orphaned
    /// holding the listening sockets.
    pub fn stop(&self) {
        if let Some(pid) = read_pid(&self.pid_file()) {
            let workers = children(pid);
            stop_pid(pid, Duration::from_secs(3));
            for w in workers.into_iter().filter(|w| alive(*w)) {
                kill_pid(w);
            }
        }
    }
}

/// The child pids of `pid` (its workers, for an nginx master).
pub fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
