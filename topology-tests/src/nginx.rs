//! The storage backend of a node: nginx from Debian with WebDAV (PUT,
//! DELETE, MKCOL, COPY, MOVE from the core dav module; PROPFIND and OPTIONS
//! from libnginx-mod-http-dav-ext), the way StoRM-WebDAV sites front their
//! storage. All nodes serve one shared directory, as they share a parallel
//! filesystem at a real site, so a file PUT through one node can be read
//! through any other. Starting and stopping is `lab::nginx`'s; the config
//! is the site's.
use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::topology::Topology;

pub use lab::nginx::DAV_EXT;

/// A node's nginx: `lab::nginx::Nginx` (start, stop) with the site's config.
pub struct Nginx(lab::nginx::Nginx);

impl Deref for Nginx {
    type Target = lab::nginx::Nginx;
    fn deref(&self) -> &lab::nginx::Nginx {
        &self.0
    }
}

impl Nginx {
    pub fn new(dir: PathBuf) -> Nginx {
        Nginx(lab::nginx::Nginx::new(dir))
    }

    pub fn write_config(&self, topo: &Topology, node: u16, storage: &Path) -> Result<()> {
        let d = self.dir.display();
        let tmp = storage.join(format!(".tmp-n{node}"));
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(self.dir.join("logs"))?;
        for d in ["main.d", "http.d", "conf.d", "data.d"] {
            fs::create_dir_all(self.dir.join(d))?;
        }
        let conf = format!(
            r#"# nginx for lab node {node}: WebDAV on the VIPs, one shared storage root.
load_module {DAV_EXT};
# More modules from the lab (the storage front's lua).
include {d}/main.d/*.conf;
user root;
daemon on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log {d}/logs/access.log;
    # Temp files on the storage filesystem: a finished PUT is a rename.
    client_body_temp_path {tmp};
    client_max_body_size 0;
    keepalive_timeout 75s;
    # http-level additions from the lab (the storage front's Lua setup).
    include {d}/http.d/*.conf;
    server {{
        listen {v4}:80 reuseport;
        listen [{v6}]:80 reuseport;
        # Which node served a request, for the lab's assertions.
        add_header X-Node node{node} always;
        # More listeners and locations (HTTPS, the storage front) from the lab.
        include {d}/conf.d/*.conf;
        location = /health {{ return 200 "ok\n"; }}
        location = /whoami {{ return 200 "node{node}\n"; }}
        location /data/ {{
            root {storage};
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            include {d}/data.d/*.conf;
        }}
    }}
}}
"#,
            v4 = topo.vips.ipv4,
            v6 = topo.vips.ipv6,
            storage = storage.display(),
            tmp = tmp.display(),
        );
        fs::write(self.conf(), conf).context("writing nginx.conf")
    }

    /// Re-reads the config (SIGHUP to the master): new workers take the
    /// new snippets, running requests finish on the old ones. Checks the
    /// config first so a bad snippet is an error here, not a silent no-op.
    pub fn reload(&self, ns: &str) -> Result<()> {
        let d = self.dir.display().to_string();
        let (log, conf) = (
            self.error_log().display().to_string(),
            self.conf().display().to_string(),
        );
        lab::process::nsenter(
            ns,
            &[
                "/usr/sbin/nginx",
                "-t",
                "-q",
                "-p",
                &d,
                "-e",
                &log,
                "-c",
                &conf,
            ],
        )
        .context("nginx -t")?;
        let pid = lab::process::read_pid(&self.pid_file()).context("nginx pid")?;
        lab::process::signal(pid, libc::SIGHUP);
        Ok(())
    }
}
