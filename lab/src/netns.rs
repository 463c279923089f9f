//! Network namespaces for labs and tests: created with unique names,
//! deleted on drop, and threads that run inside them.
use std::{
    fs::File,
    os::fd::AsRawFd,
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::process::run;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short name (interface and namespace names are short-lived and
/// must not collide between tests running in parallel).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A veth pair `a_dev` (in `a_ns`) <-> `b_dev` (in `b_ns`), both up with
/// `mtu`.
pub fn veth(a_dev: &str, a_ns: &Netns, b_dev: &str, b_ns: &Netns, mtu: u16) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", a_dev, "netns", &a_ns.name, "type", "veth", "peer", "name", b_dev,
            "netns", &b_ns.name,
        ],
    )?;
    for (ns, dev) in [(a_ns, a_dev), (b_ns, b_dev)] {
        ns.ip(&format!("link set {dev} mtu {mtu} up"))?;
    }
    Ok(())
}

/// [`veth`] for links an XDP program sees: checksums computed in software
/// at both ends (see [`no_checksum_offload`]).
pub fn veth_for_xdp(a_dev: &str, a_ns: &Netns, b_dev: &str, b_ns: &Netns, mtu: u16) -> Result<()> {
    veth(a_dev, a_ns, b_dev, b_ns, mtu)?;
    no_checksum_offload(a_ns, a_dev)?;
    no_checksum_offload(b_ns, b_dev)
}

/// veth hands packets over with checksums still to be filled in
/// (CHECKSUM_PARTIAL); once an XDP program sees a packet that promise is
/// lost and the receiver finds a bad checksum. Real NICs deliver finished
/// checksums, so labs compute them in software.
pub fn no_checksum_offload(ns: &Netns, dev: &str) -> Result<()> {
    ns.exec("ethtool", &["-K", dev, "tx", "off"]).map(|_| ())
}

/// The sysctls of a site router: forwarding, ECMP hashed on L4 ports, no
/// reverse-path filter (replies come back over another node).
pub const ROUTER_SYSCTLS: [(&str, &str); 5] = [
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.fib_multipath_hash_policy", "1"),
    ("net.ipv6.fib_multipath_hash_policy", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
];

/// The sysctls of a node running the XDP forwarder: bpf_fib_lookup
/// answers only for interfaces that forward; encapsulated traffic arrives
/// from other nodes' addresses.
pub const NODE_SYSCTLS: [(&str, &str); 4] = [
    ("net.ipv4.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
];

/// Moves the calling thread (only it) into the namespace called `name`
/// (one from `ip netns`, under /run/netns).
pub fn enter_named(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening netns {name}"))?;
    // SAFETY: setns(2) on a namespace fd; it moves only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        Self::named(&unique(prefix))
    }

    /// A namespace with exactly this name (a lab that must find its own
    /// leftovers after a crash uses fixed names).
    pub fn named(name: &str) -> Result<Self> {
        let name = name.to_string();
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip("link set lo up")?;
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// `ip -n NS` with whitespace-separated arguments.
    pub fn ip(&self, args: &str) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        run("ip", &all)
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

    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        for (k, v) in settings {
            self.sysctl(k, v)?;
        }
        Ok(())
    }

    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{dev}/ifindex")])?;
        Ok(out.trim().parse()?)
    }

    /// Moves the calling thread (only it) into this namespace.
    pub fn enter(&self) -> Result<()> {
        enter_named(&self.name)
    }

    /// Runs `f` on a thread inside this namespace and waits for it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("thread in {} panicked", self.name))?
        })
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> JoinHandle<Result<T>> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter_named(&name)?;
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.ip("nexthop flush");
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
