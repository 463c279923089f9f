//! The storage backend of a node: nginx from Debian with WebDAV (PUT,
//! DELETE, MKCOL, COPY, MOVE from the core dav module; PROPFIND and OPTIONS
//! from libnginx-mod-http-dav-ext), the way StoRM-WebDAV sites front their
//! storage. All nodes serve one shared directory, as they share a parallel
//! filesystem at a real site, so a file PUT through one node can be read
//! through any other.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{nsenter, read_pid, stop_pid, wait_until};
use crate::topology::Topology;

pub const DAV_EXT: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

pub struct Nginx {
    pub dir: PathBuf,
}

impl Nginx {
    pub fn new(dir: PathBuf) -> Nginx {
        Nginx { dir }
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
        fs::write(self.dir.join("nginx.conf"), conf).context("writing nginx.conf")
    }

    pub fn start(&self, ns: &str) -> Result<u32> {
        let pidf = self.dir.join("nginx.pid");
        let _ = fs::remove_file(&pidf);
        self.nginx_in(ns, &[])?;
        wait_until("nginx's pid file", Duration::from_secs(10), || {
            read_pid(&pidf).is_some()
        })?;
        read_pid(&pidf).context("nginx pid")
    }

    /// Runs /usr/sbin/nginx with `extra` and this node's prefix, error log
    /// and config, in namespace `ns`.
    fn nginx_in(&self, ns: &str, extra: &[&str]) -> Result<String> {
        let d = self.dir.display().to_string();
        let (log, conf) = (format!("{d}/logs/error.log"), format!("{d}/nginx.conf"));
        let mut argv = vec!["/usr/sbin/nginx"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["-p", &d, "-e", &log, "-c", &conf]);
        nsenter(ns, &argv)
    }

    /// Re-reads the config (SIGHUP to the master): new workers take the
    /// new snippets, running requests finish on the old ones. Checks the
    /// config first so a bad snippet is an error here, not a silent no-op.
    pub fn reload(&self, ns: &str) -> Result<()> {
        self.nginx_in(ns, &["-t", "-q"]).context("nginx -t")?;
        let pid = read_pid(&self.dir.join("nginx.pid")).context("nginx pid")?;
        crate::process::signal_pid(pid, libc::SIGHUP);
        Ok(())
    }

    /// Stops nginx the way a failing backend stops answering: the master
    /// and its workers exit, listening sockets close.
    pub fn stop(&self) {
        if let Some(pid) = read_pid(&self.dir.join("nginx.pid")) {
            stop_pid(pid, Duration::from_secs(3));
        }
    }
}
