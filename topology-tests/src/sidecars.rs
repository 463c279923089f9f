//! The storage-front sidecar on every lab node, deployed the way
//! docs/storage-front.md tells a site to: the shipped nginx snippets from
//! configs/storage-front/ in the node's nginx include hooks (main.d for the
//! lua modules, http.d, conf.d, data.d), and `storage-front run` in the
//! node's namespace on loopback, with the shared storage root as its root.
//! The snippets are read from the repository, not /etc: the lab's copy
//! differs only in those paths (and points flowmark's Lua at the node's
//! own flowmark socket, or at nothing).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{spawn_in, stop_pid, wait_until};
use crate::site::{Site, find_lbd};

/// The sidecar's listener inside each node's namespace (the shipped
/// default; namespaces keep the nodes apart).
pub const LISTEN_PORT: u16 = 8091;
pub const METRICS_PORT: u16 = 9816;
const NDK: &str = "/usr/lib/nginx/modules/ndk_http_module.so";
const LUA: &str = "/usr/lib/nginx/modules/ngx_http_lua_module.so";
/// A probe file whose Digest header proves a node's nginx runs the Lua.
const PROBE: &str = "data/.storage-front-probe";

/// configs/storage-front/ of this source tree.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/storage-front")
}

/// The `storage-front` binary beside `lbd`, or $STORAGE_FRONT_BIN.
pub fn find_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STORAGE_FRONT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = find_lbd()?.with_file_name("storage-front");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p storage-front) or set STORAGE_FRONT_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// One sidecar: a node's, or a second site's (node 0).
pub struct Sidecar {
    pub node: u16,
    pub ns: String,
    child: Child,
}

/// The sidecars of all nodes; stopped by pid on drop.
pub struct StorageFronts {
    pub sidecars: Vec<Sidecar>,
}

impl StorageFronts {
    /// Starts a sidecar per node, writes the snippets and reloads every
    /// node's nginx; returns once each node answers a HEAD with a Digest.
    /// `flowmark(node)` names the node's flowmark socket, if it runs one.
    pub fn start(site: &Site, flowmark: &dyn Fn(u16) -> Option<PathBuf>) -> Result<StorageFronts> {
        let shipped = shipped_dir();
        let mut fronts = StorageFronts { sidecars: vec![] };
        let probe = site.storage.join(PROBE);
        fs::create_dir_all(probe.parent().context("a parent")?)?;
        fs::write(&probe, b"storage-front probe\n")?;
        for n in &site.nodes {
            let dir = n.dir.join("storage-front");
            let sock = flowmark(n.id);
            fronts.sidecars.push(Sidecar::start(
                n.id,
                &n.ns,
                &dir,
                &site.storage,
                &site.pki.ca_dir,
                sock.as_deref(),
            )?);
            let ngx = &n.nginx.dir;
            fs::write(
                ngx.join("main.d/storage-front.conf"),
                format!("load_module {NDK};\nload_module {LUA};\n"),
            )?;
            let fm_lua = shipped.join("../flowmark");
            let no_fm = dir.join("no-flowmark");
            let lab_copy = |f: &str| -> Result<String> {
                let text = fs::read_to_string(shipped.join(f))
                    .with_context(|| format!("reading {}", shipped.join(f).display()))?;
                let (lua_dir, socket) = match &sock {
                    Some(s) => (fm_lua.clone(), s.display().to_string()),
                    None => (no_fm.clone(), "/nonexistent".to_string()),
                };
                Ok(text
                    .replace("/etc/storage-front/", &format!("{}/", shipped.display()))
                    .replace("/etc/flowmark/", &format!("{}/", lua_dir.display()))
                    .replace("unix:/run/flowmark.sock", &format!("unix:{socket}"))
                    .replace("8091", &LISTEN_PORT.to_string()))
            };
            fs::write(
                ngx.join("http.d/storage-front.conf"),
                lab_copy("nginx-http.conf")?,
            )?;
            fs::write(
                ngx.join("conf.d/storage-front.conf"),
                lab_copy("nginx-server.conf")?,
            )?;
            fs::write(
                ngx.join("data.d/storage-front.conf"),
                lab_copy("nginx-location.conf")?,
            )?;
            n.nginx.reload(&n.ns)?;
        }
        let vip = site.topo.vips.ipv4.to_string();
        for s in &fronts.sidecars {
            let url = format!("http://{vip}/{PROBE}");
            wait_until(
                &format!("node {}'s nginx answering with a Digest", s.node),
                Duration::from_secs(20),
                || {
                    crate::process::nsenter(&s.ns, &["curl", "-sSI", "--max-time", "2", &url])
                        .is_ok_and(|h| h.to_ascii_lowercase().contains("digest: adler32="))
                },
            )?;
        }
        Ok(fronts)
    }

    /// Sum of one counter over every node's sidecar, over the samples
    /// carrying all of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let mut total = 0.0;
        for s in &self.sidecars {
            total += sum_metric(&s.metrics()?, name, labels);
        }
        Ok(total)
    }
}

impl Sidecar {
    /// `storage-front run` in namespace `ns` on the shipped loopback ports,
    /// serving `root`, its config, log and pid file in `dir` (the pid file
    /// lets the lab's teardown stop it after a crash); `node` 0 for a
    /// sidecar outside the site.
    pub fn start(
        node: u16,
        ns: &str,
        dir: &Path,
        root: &Path,
        ca_dir: &Path,
        flowmark: Option<&Path>,
    ) -> Result<Sidecar> {
        let bin = find_bin()?.display().to_string();
        fs::create_dir_all(dir)?;
        let toml = dir.join("storage-front.toml");
        fs::write(
            &toml,
            format!(
                "# lab {where}\nlisten = \"127.0.0.1:{LISTEN_PORT}\"\nroot = \"{root}\"\n\
                 metrics = \"127.0.0.1:{METRICS_PORT}\"\nca_dir = \"{ca}\"\n\
                 flowmark_socket = \"{fm}\"\nmarker_interval_ms = 1000\n\
                 connect_timeout_ms = 5000\nidle_timeout_ms = 20000\n",
                where = if node == 0 {
                    format!("namespace {ns}")
                } else {
                    format!("node {node}")
                },
                root = root.display(),
                ca = ca_dir.display(),
                fm = flowmark.map_or("none".to_string(), |p| p.display().to_string()),
            ),
        )?;
        let child = spawn_in(
            ns,
            &[&bin, "run", "--config", &toml.display().to_string()],
            &dir.join("storage-front.log"),
        )?;
        fs::write(dir.join("storage-front.pid"), child.id().to_string())?;
        Ok(Sidecar {
            node,
            ns: ns.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sidecar's metrics text (from inside its namespace).
    pub fn metrics(&self) -> Result<String> {
        crate::process::nsenter(
            &self.ns,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{METRICS_PORT}/metrics"),
            ],
        )
    }
}

/// Sum of the samples of `name` carrying all of `labels`, in Prometheus text.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            if !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum::<f64>()
        // An empty sum is -0.0, which prints as "-0".
        + 0.0
}

/// flowmark on every node (marking the node's uplink, `eth0`, with its
/// API socket for the node's sidecar and nginx Lua) and a collector in a
/// peer's namespace (where the nodes' fireflies to their flow's peer
/// arrive, on UDP 10514), started the way docs/flowmark.md deploys them.
pub struct Flowmarks {
    daemons: Vec<(u16, Child, PathBuf)>,
    collector: Child,
    collector_ns: String,
}

/// The collector's metrics listener inside its namespace.
pub const COLLECTOR_METRICS: &str = "127.0.0.1:9814";

impl Flowmarks {
    /// Starts flowmark in each node's namespace and a collector in
    /// `collector_ns`; returns once every API socket exists and the
    /// collector serves metrics.
    pub fn start(site: &Site, collector_ns: &str) -> Result<Flowmarks> {
        let bin = find_lbd()?.with_file_name("flowmark");
        if !bin.exists() {
            bail!(
                "{} not found: cargo build --release -p flowmark",
                bin.display()
            );
        }
        let bin = bin.display().to_string();
        // `ip netns exec` (it execs: the child is flowmark): flowmark
        // finds the interface in the namespace's own /sys.
        let spawn = |ns: &str, args: &[&str], log: &Path| -> Result<Child> {
            let out = fs::File::create(log)?;
            Command::new("ip")
                .args(["netns", "exec", ns, &bin])
                .args(args)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting flowmark in {ns}"))
        };
        let collector = spawn(
            collector_ns,
            &[
                "collect",
                "--listen",
                "[::]:10514",
                "--metrics",
                COLLECTOR_METRICS,
            ],
            &site.dir.join("flowmark-collector.log"),
        )?;
        let mut me = Flowmarks {
            daemons: vec![],
            collector,
            collector_ns: collector_ns.to_string(),
        };
        for n in &site.nodes {
            let dir = n.dir.join("flowmark");
            fs::create_dir_all(&dir)?;
            let sock = dir.join("flowmark.sock");
            let child = spawn(
                &n.ns,
                &[
                    "run",
                    "--iface",
                    "eth0",
                    "--pipe",
                    "none",
                    "--ongoing-interval",
                    "0",
                    "--api",
                    &sock.display().to_string(),
                    // nginx's workers (the Lua) run as www-data.
                    "--api-mode",
                    "666",
                ],
                &dir.join("flowmark.log"),
            )?;
            me.daemons.push((n.id, child, sock));
        }
        for (id, _, sock) in &me.daemons {
            wait_until(
                &format!("node {id}'s flowmark socket"),
                Duration::from_secs(20),
                || sock.exists(),
            )?;
        }
        wait_until("the collector's metrics", Duration::from_secs(20), || {
            me.collector_metrics().is_ok()
        })?;
        Ok(me)
    }

    /// The API socket of node `id`'s flowmark.
    pub fn socket(&self, id: u16) -> Option<PathBuf> {
        self.daemons
            .iter()
            .find(|(n, _, _)| *n == id)
            .map(|(_, _, s)| s.clone())
    }

    /// The collector's metrics text.
    pub fn collector_metrics(&self) -> Result<String> {
        crate::process::nsenter(
            &self.collector_ns,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{COLLECTOR_METRICS}/metrics"),
            ],
        )
    }

    /// Every flowmark process's pid (daemons and collector).
    pub fn pids(&self) -> Vec<u32> {
        self.daemons
            .iter()
            .map(|(_, c, _)| c.id())
            .chain([self.collector.id()])
            .collect()
    }
}

impl Drop for Flowmarks {
    fn drop(&mut self) {
        for c in self
            .daemons
            .iter_mut()
            .map(|(_, c, _)| c)
            .chain([&mut self.collector])
        {
            stop_pid(c.id(), Duration::from_secs(3));
            let _ = c.wait();
        }
    }
}

/// A sidecar is stopped by pid on drop (the nodes' with their `StorageFronts`).
impl Drop for Sidecar {
    fn drop(&mut self) {
        stop_pid(self.child.id(), Duration::from_secs(3));
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_labels_and_skip_prefixes() {
        let t = "# HELP x\nsf_total{dir=\"pull\"} 2\nsf_total{dir=\"push\"} 3\nsf_total_bytes 9\n";
        assert_eq!(sum_metric(t, "sf_total", &[]), 5.0);
        assert_eq!(sum_metric(t, "sf_total", &[("dir", "push")]), 3.0);
        assert_eq!(sum_metric(t, "sf_total_bytes", &[]), 9.0);
    }
}
