//! Test sites: a real nginx (Debian's, with the lua module) configured with
//! the shipped snippets from configs/storage-front/, and a real
//! storage-front sidecar behind it, on loopback ports (or inside a network
//! namespace); a strict performance-marker parser (what davix refuses, it
//! refuses); helpers to talk HTTP with curl and raw sockets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use lab::Netns;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// Two free-ish loopback ports per site: nginx and the sidecar.
pub fn ports() -> (u16, u16) {
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    let n = NEXT.fetch_add(3, Ordering::SeqCst);
    (base + n, base + n + 1)
}

pub fn sidecar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_storage-front")
}

pub fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/storage-front")
}

pub use lab::wait::wait_value as wait_for;

pub struct Site {
    pub name: String,
    pub dir: PathBuf,
    pub host: String,
    pub port: u16,
    pub sidecar_port: u16,
    pub metrics_port: u16,
    /// Runs commands inside this namespace (None: the test's own).
    pub netns: Option<String>,
    children: Vec<Child>,
}

pub struct SiteOptions<'a> {
    pub host: &'a str,
    pub netns: Option<&'a str>,
    /// Extra lines in the sidecar's TOML.
    pub sidecar_extra: &'a str,
    /// Extra lines in nginx's `server {}` (e.g. an https listener).
    pub server_extra: &'a str,
    /// flowmark's API socket: nginx then loads flowmark's shipped Lua
    /// (configs/flowmark/) through storage-front's http snippet.
    pub flowmark_lua: Option<&'a str>,
}

impl Default for SiteOptions<'_> {
    fn default() -> Self {
        SiteOptions {
            host: "127.0.0.1",
            netns: None,
            sidecar_extra: "",
            server_extra: "",
            flowmark_lua: None,
        }
    }
}

impl Site {
    pub fn start(name: &str, opts: SiteOptions) -> Site {
        let (port, sidecar_port) = ports();
        let dir = std::env::temp_dir().join(format!("sf-{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["www", "tmp", "ca"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let d = dir.to_str().unwrap().to_string();
        let mut site = Site {
            name: name.into(),
            dir: dir.clone(),
            host: opts.host.to_string(),
            port,
            sidecar_port,
            metrics_port: sidecar_port + 1,
            netns: opts.netns.map(str::to_string),
            children: vec![],
        };
        let toml = format!(
            "listen = \"127.0.0.1:{sidecar_port}\"\nroot = \"{d}/www\"\nmetrics = \"127.0.0.1:{}\"\n\
             ca_dir = \"{d}/ca\"\nmarker_interval_ms = 100\nconnect_timeout_ms = 2000\n\
             idle_timeout_ms = 3000\n{}{}",
            site.metrics_port,
            opts.sidecar_extra,
            // Never the host's flowmark, unless the test starts one.
            if opts.sidecar_extra.contains("flowmark_socket") {
                ""
            } else {
                "flowmark_socket = \"none\"\n"
            }
        );
        std::fs::write(dir.join("storage-front.toml"), toml).unwrap();
        let cfg = configs();
        let cfg = cfg.to_str().unwrap();
        // Without a flowmark for this site, the Lua finds no flowmark.lua.
        let flowmark_dir = match opts.flowmark_lua {
            Some(_) => format!("{cfg}/../flowmark/"),
            None => format!("{d}/no-flowmark/"),
        };
        let flowmark_sock = format!("unix:{}", opts.flowmark_lua.unwrap_or("/nonexistent"));
        let shipped = |f: &str| {
            std::fs::read_to_string(configs().join(f))
                .unwrap()
                .replace("/etc/storage-front/", &format!("{cfg}/"))
                .replace("/etc/flowmark/", &flowmark_dir)
                .replace("unix:/run/flowmark.sock", &flowmark_sock)
                .replace("8091", &sidecar_port.to_string())
        };
        let listen = if opts.host.contains(':') {
            format!("listen [{}]:{port};", opts.host)
        } else {
            format!("listen {}:{port};", opts.host)
        };
        let conf = format!(
            r#"user root;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
  log_format sf '$request_method $uri $status auth=[$http_authorization] scitag=[$http_scitag] want=[$http_want_digest]';
  access_log {d}/access.log sf;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  {http}
  server {{
    {listen}
    root {d}/www;
    {server_extra}
    {server}
    location / {{
      dav_methods PUT DELETE MKCOL COPY MOVE;
      create_full_put_path on;
      client_max_body_size 0;
      {location}
    }}
  }}
}}
"#,
            http = shipped("nginx-http.conf"),
            server = shipped("nginx-server.conf"),
            location = shipped("nginx-location.conf"),
            server_extra = opts.server_extra,
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        site.spawn(
            "sidecar",
            &[
                sidecar_bin(),
                "run",
                "--config",
                &format!("{d}/storage-front.toml"),
            ],
        );
        site.spawn(
            "nginx",
            &[
                "nginx",
                "-c",
                &format!("{d}/nginx.conf"),
                "-g",
                "daemon off;",
            ],
        );
        std::fs::write(dir.join("www/ready"), "").unwrap();
        let url = site.url("/ready");
        wait_for(&format!("{name} up"), Duration::from_secs(20), || {
            (site
                .curl(&["-o", "/dev/null", "-w", "%{http_code}", &url])
                .0
                == "200"
                && site.sidecar_metrics().is_some())
            .then_some(())
        });
        site
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(args);
                c
            }
            None => {
                let mut c = Command::new(args[0]);
                c.args(&args[1..]);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push(child);
    }

    pub fn url(&self, path: &str) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{path}", self.host, self.port)
        } else {
            format!("http://{}:{}{path}", self.host, self.port)
        }
    }

    pub fn file(&self, path: &str) -> PathBuf {
        self.dir.join("www").join(path.trim_start_matches('/'))
    }

    /// Runs curl (in the site's namespace): (stdout, stderr, success).
    pub fn curl(&self, args: &[&str]) -> (String, String, bool) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        let o = cmd
            .args(["-sS", "-g", "--max-time", "30"])
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.status.success(),
        )
    }

    /// COPY `path` on this site with `headers`: (status, body).
    pub fn copy(&self, path: &str, headers: &[&str]) -> (u16, String) {
        let mut args = vec!["-X", "COPY", "-w", "\n%{http_code}"];
        for h in headers {
            args.extend(["-H", h]);
        }
        let url = self.url(path);
        args.push(&url);
        let (out, err, _) = self.curl(&args);
        let (body, code) = out
            .rsplit_once('\n')
            .unwrap_or_else(|| panic!("COPY {path}: {out:?} {err}"));
        (code.parse().unwrap_or(0), body.to_string())
    }

    /// Uploads `data` to `path` with curl (a PUT through nginx).
    pub fn put(&self, path: &str, data: &[u8]) {
        let src = self.dir.join("tmp/upload");
        std::fs::write(&src, data).unwrap();
        let (code, err, ok) = self.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-T",
            src.to_str().unwrap(),
            &self.url(path),
        ]);
        assert!(
            ok && (code == "201" || code == "204"),
            "PUT {path}: {code} {err}"
        );
    }

    /// The sidecar's metrics text, or None if it does not answer.
    pub fn sidecar_metrics(&self) -> Option<String> {
        let (out, _, ok) = self.curl(&[&format!("http://127.0.0.1:{}/metrics", self.metrics_port)]);
        (ok && !out.is_empty()).then_some(out)
    }

    /// The sum of every sample of `name` whose labels contain all `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.sidecar_metrics().unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // All stop at once. `ip netns exec` execs, so the PID is the
        // process itself.
        for c in self.children.iter().rev() {
            lab::process::signal(c.id(), libc::SIGTERM);
        }
        for c in self.children.iter_mut() {
            lab::process::stop_child(c, Duration::from_secs(5));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The adler32 xattr StoRM reads.
pub fn xattr(path: &Path) -> Option<String> {
    xattr::get(path, "user.storm.checksum.adler32")
        .ok()
        .flatten()
        .map(|v| String::from_utf8(v).unwrap())
}

/// adler32 by the textbook definition (RFC 1950), independent of the
/// crate the sidecar uses.
pub fn adler32(data: &[u8]) -> String {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    format!("{:08x}", (b << 16) | a)
}

/// Deterministic test content.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e3779b9u32 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One performance marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub timestamp: u64,
    pub bytes: u64,
    pub remote: String,
}

/// A COPY body parsed as strictly as davix does: only `Perf Marker` ...
/// `End` blocks with every field, then exactly one final `success:` or
/// `failure:` line, then nothing. Err says what is wrong.
pub fn parse_markers(body: &str) -> Result<(Vec<Marker>, Result<String, String>), String> {
    let mut markers = vec![];
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        if line == "Perf Marker" {
            let mut fields = std::collections::HashMap::new();
            loop {
                let l = lines.next().ok_or("marker without End")?;
                if l == "End" {
                    break;
                }
                let (k, v) = l.split_once(": ").ok_or(format!("bad marker line {l:?}"))?;
                if fields.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(format!("field {k} twice"));
                }
            }
            let num = |k: &str| -> Result<u64, String> {
                fields
                    .get(k)
                    .ok_or(format!("no {k}"))?
                    .parse()
                    .map_err(|_| format!("{k} is not a number"))
            };
            if num("Stripe Index")? != 0 || num("Total Stripe Count")? != 1 {
                return Err("stripe fields".into());
            }
            let remote = fields
                .get("RemoteConnections")
                .ok_or("no RemoteConnections")?;
            if !remote.is_empty() && !remote.starts_with("tcp:") {
                return Err(format!("RemoteConnections {remote:?}"));
            }
            if fields.len() != 5 {
                return Err(format!("unexpected fields {fields:?}"));
            }
            let m = Marker {
                timestamp: num("Timestamp")?,
                bytes: num("Stripe Bytes Transferred")?,
                remote: remote.clone(),
            };
            if markers.last().is_some_and(|p: &Marker| p.bytes > m.bytes) {
                return Err("bytes went down".into());
            }
            markers.push(m);
        } else if let Some(r) = line.strip_prefix("success: ") {
            if lines.next().is_some() {
                return Err("text after success".into());
            }
            return Ok((markers, Ok(r.to_string())));
        } else if let Some(r) = line.strip_prefix("failure: ") {
            if lines.next().is_some() {
                return Err("text after failure".into());
            }
            return Ok((markers, Err(r.to_string())));
        } else {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    Err("stream ended without success or failure".into())
}

/// A raw HTTP request; returns the connection after the request was sent.
pub fn raw(addr: &str, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s
}

/// Reads until `needle` appeared (or panics after 10 s).
pub fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Two namespaces (deleted on drop) joined by veth0 (addr `a`) and veth1
/// (addr `b`), IPv6, automatic flow labels off (unmarked packets carry
/// label 0).
pub fn veth_pair(tag: &str, a: &str, b: &str) -> (Netns, Netns) {
    let na = Netns::new(&format!("sf-{tag}a")).expect("namespace");
    let nb = Netns::new(&format!("sf-{tag}b")).expect("namespace");
    lab::veth("veth0", &na, "veth1", &nb, VETH_MTU).expect("veth pair");
    for (ns, dev, addr) in [(&na, "veth0", a), (&nb, "veth1", b)] {
        ns.ip(&format!("addr add {addr}/64 dev {dev} nodad"))
            .expect("address");
        ns.sysctl("net.ipv6.auto_flowlabels", "0")
            .expect("flow labels off");
    }
    (na, nb)
}

/// The kernel's default for a veth.
const VETH_MTU: u16 = 1500;

/// A child process stopped (SIGTERM, bounded wait, then SIGKILL) on drop,
/// also when a test fails.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // `ip netns exec` execs, so the PID is the process itself.
        lab::process::stop_child(&mut self.0, Duration::from_secs(5));
    }
}
