//! The lab itself: namespaces, links and addresses, the router, and per
//! node the VIPs, nginx and lbd. Everything it builds carries the lab's
//! name, so a crashed run's leftovers are found (and refused) by the next
//! one, and `teardown` removes them whether or not this process built them.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dataplane::loader::Dataplane;
use lab::Netns;

use crate::nginx::Nginx;
use crate::process::{alive, belongs_to, read_pid, run_checked, spawn_in, stop_pid, wait_until};
use crate::router::Router;
use crate::topology::{Topology, addr};

/// Where a lab keeps configs, logs, pid files and the shared storage.
pub fn run_dir(name: &str) -> PathBuf {
    PathBuf::from("/var/tmp/lbd-lab").join(name)
}

/// Where the lab's nodes (and the router's pass program) pin their BPF objects.
pub fn pin_root(name: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf").join(format!("lbd-lab-{name}"))
}

pub fn netns_names(name: &str) -> Result<Vec<String>> {
    let out = run_checked("ip", &["netns", "list"])?;
    let prefix = format!("{name}-");
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect())
}

/// What a previous run of lab `name` left behind.
pub fn leftovers(name: &str) -> Result<Vec<String>> {
    let mut found: Vec<String> = netns_names(name)?
        .into_iter()
        .map(|n| format!("network namespace {n}"))
        .collect();
    for p in [run_dir(name), pin_root(name)] {
        if p.exists() {
            found.push(p.display().to_string());
        }
    }
    found.extend(
        crate::pki::netns_etc_dirs(name)
            .iter()
            .map(|p| p.display().to_string()),
    );
    Ok(found)
}

/// Removes everything lab `name` may have built: its processes (by the pid
/// files in its run directory, each checked to still be ours), its BPF
/// pins, its namespaces and its run directory. Returns what it removed.
pub fn teardown(name: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let dir = run_dir(name);
    let marker = dir.display().to_string();
    let mut pid_files = Vec::new();
    run_files(&dir, &["pid"], &mut pid_files);
    // lbd first (it withdraws), then backends and the router.
    pid_files.sort_by_key(|p| !p.ends_with("lbd.pid"));
    for f in pid_files {
        if let Some(pid) = read_pid(&f)
            && alive(pid)
            && belongs_to(pid, &marker)
        {
            stop_pid(pid, Duration::from_secs(3));
            removed.push(format!("process {pid} ({})", f.display()));
        }
    }
    let pins = pin_root(name);
    if pins.exists() {
        if let Ok(entries) = fs::read_dir(&pins) {
            for e in entries.flatten() {
                let _ = Dataplane::cleanup(e.path());
                let _ = fs::remove_dir(e.path());
            }
        }
        let _ = fs::remove_dir(&pins);
        removed.push(pins.display().to_string());
    }
    for ns in netns_names(name).unwrap_or_default() {
        let _ = run_checked("ip", &["-n", &ns, "nexthop", "flush"]);
        if run_checked("ip", &["netns", "del", &ns]).is_ok() {
            removed.push(format!("network namespace {ns}"));
        }
    }
    for etc in crate::pki::netns_etc_dirs(name) {
        if fs::remove_dir_all(&etc).is_ok() {
            removed.push(etc.display().to_string());
        }
    }
    if dir.exists() && fs::remove_dir_all(&dir).is_ok() {
        removed.push(dir.display().to_string());
    }
    removed
}

/// Files under a run directory with one of `extensions`, leaving out the
/// shared storage (transferred data, never needed here).
fn run_files(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("storage") {
                run_files(&p, extensions, out);
            }
        } else if p
            .extension()
            .is_some_and(|x| extensions.iter().any(|e| x == *e))
        {
            out.push(p);
        }
    }
}

pub struct Node {
    pub id: u16,
    pub ns: String,
    pub dir: PathBuf,
    pub nginx: Nginx,
    lbd: Option<Child>,
}

impl Node {
    pub fn config(&self) -> PathBuf {
        self.dir.join("lbd.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("lbd.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("lbd.log")
    }
}

pub struct Site {
    pub topo: Topology,
    pub dir: PathBuf,
    pub storage: PathBuf,
    pub router: Router,
    pub clients: Vec<String>,
    pub nodes: Vec<Node>,
    pub lbd_bin: PathBuf,
    /// The lab CA and the VIP's certificate (HTTPS on every node).
    pub pki: crate::pki::LabPki,
    router_dp: Option<Dataplane>,
    /// Namespaces go with the site (dropped after everything else).
    _netns: Vec<Netns>,
}

/// The `lbd` binary next to this executable (target/release/lbd for both
/// target/release/lbd-lab and target/release/deps/<test>), or $LBD_BIN.
pub fn find_lbd() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LBD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let lbd = dir.join("lbd");
    if !lbd.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p lbd) or set LBD_BIN",
            lbd.display()
        );
    }
    Ok(lbd)
}

impl Site {
    /// Builds the lab and starts every node; returns once the router has
    /// an ECMP route over all nodes for both VIPs. `progress` hears each step.
    pub fn build(topo: Topology, progress: &mut dyn FnMut(&str)) -> Result<Site> {
        Self::build_with(topo, progress, &[])
    }

    /// Like `build`, but the nodes in `hold_back` get their backend and
    /// config and no lbd (they join later with `start_lbd`).
    pub fn build_with(
        topo: Topology,
        progress: &mut dyn FnMut(&str),
        hold_back: &[u16],
    ) -> Result<Site> {
        Self::build_from(topo, find_lbd()?, progress, hold_back)
    }

    /// Like `build_with`, the nodes running `lbd_bin` (for instance the
    /// /usr/bin/lbd of an installed package).
    pub fn build_from(
        topo: Topology,
        lbd_bin: PathBuf,
        progress: &mut dyn FnMut(&str),
        hold_back: &[u16],
    ) -> Result<Site> {
        let name = topo.name.clone();
        let left = leftovers(&name)?;
        if !left.is_empty() {
            bail!(
                "lab {name:?} has leftovers of an earlier run:\n  {}\nremove them with `lbd-lab down` on the same topology file (make demo-clean for the demo)",
                left.join("\n  ")
            );
        }
        match Self::build_inner(topo, lbd_bin, progress, hold_back) {
            Ok(s) => Ok(s),
            Err(e) => {
                teardown(&name);
                Err(e)
            }
        }
    }

    fn build_inner(
        topo: Topology,
        lbd_bin: PathBuf,
        progress: &mut dyn FnMut(&str),
        hold_back: &[u16],
    ) -> Result<Site> {
        let name = topo.name.clone();
        let dir = run_dir(&name);
        let storage = dir.join("storage");
        fs::create_dir_all(storage.join("data"))
            .with_context(|| format!("creating {}", storage.display()))?;
        let pki = crate::pki::LabPki::create(&dir.join("pki"), &topo)?;
        progress(&format!(
            "namespaces and links: router, {} client(s), {} node(s)",
            topo.clients, topo.nodes
        ));
        let mut netns = Vec::new();
        let router_ns = Netns::named(&format!("{name}-router"))?;
        let rns = router_ns.name.clone();
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
        ] {
            router_ns.sysctl(k, v)?;
        }
        let pins = pin_root(&name);
        let mut router_dp = Dataplane::open(pins.join("router"))?;
        let mut clients = Vec::new();
        for c in 1..=topo.clients {
            let ns = Netns::named(&format!("{name}-c{c}"))?;
            link(&ns, "eth0", &rns, &format!("r-c{c}"))?;
            address(&ns, "eth0", &addr::client4(c).to_string(), 28)?;
            address(&ns, "eth0", &addr::client6(c).to_string(), 64)?;
            address_in(
                &rns,
                &format!("r-c{c}"),
                &addr::router_to_client4(c).to_string(),
                28,
            )?;
            address_in(
                &rns,
                &format!("r-c{c}"),
                &addr::router_to_client6(c).to_string(),
                64,
            )?;
            ns.ip(&format!(
                "route add default via {}",
                addr::router_to_client4(c)
            ))?;
            ns.ip(&format!(
                "-6 route add default via {}",
                addr::router_to_client6(c)
            ))?;
            crate::pki::write_netns_hosts(
                &ns.name,
                &pki.host_name,
                &[topo.vips.ipv4.into(), topo.vips.ipv6.into()],
            )?;
            clients.push(ns.name.clone());
            netns.push(ns);
        }
        let mut nodes = Vec::new();
        for id in 1..=topo.nodes {
            let ns = Netns::named(&format!("{name}-n{id}"))?;
            let rside = format!("r-n{id}");
            link(&ns, "eth0", &rns, &rside)?;
            address(&ns, "eth0", &addr::node4(id).to_string(), 28)?;
            address(&ns, "eth0", &addr::node6(id).to_string(), 64)?;
            address_in(&rns, &rside, &addr::router_to_node4(id).to_string(), 28)?;
            address_in(&rns, &rside, &addr::router_to_node6(id).to_string(), 64)?;
            ns.ip(&format!(
                "route add default via {}",
                addr::router_to_node4(id)
            ))?;
            ns.ip(&format!(
                "-6 route add default via {}",
                addr::router_to_node6(id)
            ))?;
            ns.ip(&format!("addr add {}/32 dev lo", topo.vips.ipv4))?;
            ns.ip(&format!("addr add {}/128 dev lo nodad", topo.vips.ipv6))?;
            for (k, v) in [
                ("net.ipv4.conf.all.forwarding", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
            // veth delivers XDP_TX frames only to a peer that runs XDP too.
            router_ns.run(|| router_dp.attach_xdp_program("lbd_pass", &rside))?;
            let ndir = dir.join(format!("n{id}"));
            fs::create_dir_all(&ndir)?;
            nodes.push(Node {
                id,
                ns: ns.name.clone(),
                nginx: Nginx::new(ndir.join("nginx")),
                dir: ndir,
                lbd: None,
            });
            netns.push(ns);
        }
        netns.push(router_ns);
        progress(&format!(
            "router: {:?} with BGP (and BFD) to every node",
            topo.router
        ));
        let router = Router::start(&topo, &rns, dir.join("router"))?;
        let mut site = Site {
            topo,
            dir,
            storage,
            router,
            clients,
            nodes,
            lbd_bin,
            pki,
            router_dp: Some(router_dp),
            _netns: netns,
        };
        progress("nodes: nginx WebDAV and lbd on each");
        let secret = site.dir.join("liveness.secret");
        write_secret(&secret)?;
        for i in 0..site.nodes.len() {
            let n = &site.nodes[i];
            n.nginx.write_config(&site.topo, n.id, &site.storage)?;
            fs::write(
                n.nginx.dir.join("conf.d/tls.conf"),
                site.pki.nginx_tls(&site.topo),
            )?;
            n.nginx.start(&n.ns)?;
            fs::write(
                n.config(),
                crate::lbd_config::render(
                    &site.topo,
                    n.id,
                    "eth0",
                    &pins.join(format!("n{}", n.id)),
                    &n.socket(),
                    &secret,
                ),
            )?;
            if !hold_back.contains(&n.id) {
                site.start_lbd(n.id)?;
            }
        }
        let expect: Vec<u16> = (1..=site.topo.nodes)
            .filter(|id| !hold_back.contains(id))
            .collect();
        progress(&format!(
            "waiting for the router's ECMP route over nodes {expect:?}"
        ));
        site.wait_paths(&expect, Duration::from_secs(30))?;
        progress("waiting for every node's tables to agree");
        site.wait_tables(&expect, Duration::from_secs(15))?;
        if site.topo.timings.bfd_interval_ms > 0 {
            // A session whose BFD is not Up yet would only be seen dead by
            // the hold timer.
            progress("waiting for BFD to come up on every session");
            site.wait_status(
                "BFD Up on every node's session",
                Duration::from_secs(20),
                |st| {
                    st.bgp
                        .iter()
                        .all(|p| p.bfd == Some(bgp_speaker::BfdState::Up))
                },
            )?;
        }
        Ok(site)
    }

    pub fn node(&self, id: u16) -> &Node {
        &self.nodes[usize::from(id) - 1]
    }

    pub fn start_lbd(&mut self, id: u16) -> Result<()> {
        let lbd = self.lbd_bin.display().to_string();
        let n = &mut self.nodes[usize::from(id) - 1];
        let _ = fs::remove_file(n.socket());
        let child = spawn_in(
            &n.ns,
            &[&lbd, "run", "-c", &n.config().display().to_string()],
            &n.log(),
        )?;
        fs::write(n.dir.join("lbd.pid"), child.id().to_string())?;
        n.lbd = Some(child);
        Ok(())
    }

    /// Adds a passive BGP peer to node `id`'s config and applies it by
    /// SIGHUP (existing sessions never flap on a reload); returns once
    /// `lbd status` reports the reload and the peer.
    pub fn add_passive_peer(
        &self,
        id: u16,
        peer: std::net::Ipv4Addr,
        remote_as: u32,
    ) -> Result<()> {
        let n = self.node(id);
        let mut conf = fs::read_to_string(n.config())?;
        conf += &format!(
            "\n[[bgp.peers]]\naddress = \"{peer}\"\nremote_as = {remote_as}\nlocal_address = \"{}\"\nnext_hop_v6 = \"{}\"\npassive = true\n",
            addr::node4(id),
            addr::node6(id)
        );
        fs::write(n.config(), conf)?;
        let before = self.status(id)?.node.last_reload;
        let pid = n
            .lbd
            .as_ref()
            .with_context(|| format!("lbd on node {id} is not running"))?
            .id();
        crate::process::signal_pid(pid, libc::SIGHUP);
        let peer_text = peer.to_string();
        wait_until(
            &format!("node {id} to add peer {peer}"),
            Duration::from_secs(10),
            || {
                self.status(id).is_ok_and(|s| {
                    s.node.last_reload != before
                        && s.bgp.iter().any(|p| p.peer.starts_with(&peer_text))
                })
            },
        )
        .map(|_| ())
    }

    /// SIGTERM (a planned stop: XDP keeps forwarding, graceful restart
    /// keeps the route) and waits for the exit.
    pub fn stop_lbd(&mut self, id: u16) -> Result<()> {
        self.end_lbd(id, libc::SIGTERM)
    }

    /// The pid of the lbd this site started on node `id`, while it runs.
    pub fn lbd_pid(&self, id: u16) -> Option<u32> {
        self.node(id).lbd.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash.
    pub fn kill_lbd(&mut self, id: u16) -> Result<()> {
        self.end_lbd(id, libc::SIGKILL)
    }

    fn end_lbd(&mut self, id: u16, sig: i32) -> Result<()> {
        let n = &mut self.nodes[usize::from(id) - 1];
        let mut child = n
            .lbd
            .take()
            .with_context(|| format!("lbd on node {id} is not running"))?;
        crate::process::signal_pid(child.id(), sig);
        let end = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait()? {
                let _ = fs::remove_file(n.dir.join("lbd.pid"));
                if sig == libc::SIGTERM && !st.success() {
                    bail!(
                        "lbd on node {id} exited with {st} on SIGTERM (log: {})",
                        n.log().display()
                    );
                }
                return Ok(());
            }
            if std::time::Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                bail!("lbd on node {id} did not exit within 15 s of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails if an lbd this site started has exited on its own.
    pub fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(c) = n.lbd.as_mut()
                && let Some(st) = c.try_wait()?
            {
                let log = fs::read_to_string(n.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                bail!(
                    "lbd on node {} exited ({st}); last lines of {}:\n{}",
                    n.id,
                    n.log().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    /// `lbd ARGS -s SOCKET` for node `id`; stdout.
    pub fn lbd_cli(&self, id: u16, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.lbd_bin)
            .args(args)
            .arg("-s")
            .arg(self.node(id).socket())
            .output()?;
        if !out.status.success() {
            bail!(
                "lbd {} on node {id}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn status(&self, id: u16) -> Result<lbd::status::Status> {
        let text = self.lbd_cli(id, &["status", "--json"])?;
        serde_json::from_str(&text).with_context(|| format!("status JSON of node {id}"))
    }

    /// Node ids behind the router's routes to the IPv4 and IPv6 VIPs.
    pub fn paths(&self) -> Result<(Vec<u16>, Vec<u16>)> {
        let n = self.topo.nodes;
        Ok((
            self.router.paths(&self.topo.vips.ipv4.to_string(), n)?,
            self.router.paths(&self.topo.vips.ipv6.to_string(), n)?,
        ))
    }

    /// Waits until both VIP routes point at exactly `ids`; returns how long it took.
    pub fn wait_paths(&mut self, ids: &[u16], limit: Duration) -> Result<Duration> {
        let mut want = ids.to_vec();
        want.sort();
        let start = std::time::Instant::now();
        loop {
            self.check_alive()?;
            let (p4, p6) = self.paths()?;
            if p4 == want && p6 == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "the router's VIP routes point at {p4:?} (IPv4) and {p6:?} (IPv6), not {want:?}, after {limit:?}\n{}",
                    self.router.summary()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Established TCP connections of clients to the VIPs' port 80 on node
    /// `id` (not the node's own health checks, which connect to its VIP
    /// from the VIP).
    pub fn connections(&self, id: u16) -> Result<usize> {
        let out = run_checked(
            "ip",
            &[
                "netns",
                "exec",
                &self.node(id).ns,
                "ss",
                "-Htn",
                "state",
                "established",
                "( sport = :80 )",
            ],
        )?;
        let vips = [
            self.topo.vips.ipv4.to_string(),
            self.topo.vips.ipv6.to_string(),
        ];
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|peer| {
                peer.rsplit_once(':')
                    .map(|(a, _)| a.trim_matches(['[', ']']))
            })
            .filter(|a| !vips.iter().any(|v| v == a))
            .count())
    }

    /// Makes node `id` silent, the way a dead machine behind a switch is:
    /// everything it would send (BGP, BFD, replies, forwarded packets) goes
    /// to blackhole routes, while the router's port stays up and tells the
    /// router nothing; only BFD (or the hold timer) notices.
    pub fn cut_links(&self, id: u16) -> Result<()> {
        let ns = &self.node(id).ns;
        for (fam, gw) in Self::uplinks(id) {
            run_checked(
                "ip",
                &["-n", ns, fam, "route", "replace", "blackhole", "default"],
            )?;
            run_checked("ip", &["-n", ns, fam, "route", "replace", "blackhole", &gw])?;
        }
        Ok(())
    }

    pub fn restore_links(&self, id: u16) -> Result<()> {
        let ns = &self.node(id).ns;
        for (fam, gw) in Self::uplinks(id) {
            run_checked("ip", &["-n", ns, fam, "route", "del", "blackhole", &gw])?;
            run_checked(
                "ip",
                &["-n", ns, fam, "route", "replace", "default", "via", &gw],
            )?;
        }
        Ok(())
    }

    /// The router's address on node `id`'s link, per family.
    fn uplinks(id: u16) -> [(&'static str, String); 2] {
        [
            ("-4", addr::router_to_node4(id).to_string()),
            ("-6", addr::router_to_node6(id).to_string()),
        ]
    }

    fn running_ids(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.lbd.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Waits until `pred` holds for `lbd status` of every running node.
    pub fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&lbd::status::Status) -> bool,
    ) -> Result<Duration> {
        let ids = self.running_ids();
        wait_until(what, limit, || {
            ids.iter()
                .all(|&id| self.status(id).is_ok_and(|s| pred(&s)))
        })
    }

    /// Waits until every running node's lbd reports `state` for member `id`.
    pub fn wait_member_state(&self, id: u16, state: &str, limit: Duration) -> Result<Duration> {
        self.wait_status(
            &format!("every node to see member {id} {state}"),
            limit,
            |s| {
                s.members
                    .iter()
                    .any(|m| m.id == id && m.state.name() == state)
            },
        )
    }

    /// Waits until every running node's installed table of every VIP
    /// has exactly `first_hops` as first hops (all nodes agree).
    pub fn wait_tables(&self, first_hops: &[u16], limit: Duration) -> Result<Duration> {
        let mut want = first_hops.to_vec();
        want.sort();
        self.wait_status(
            &format!("every node's tables to have first hops {want:?}"),
            limit,
            |s| {
                s.vips
                    .iter()
                    .all(|v| v.share.keys().copied().collect::<Vec<u16>>() == want)
            },
        )
    }

    pub fn running(&self, id: u16) -> bool {
        self.node(id).lbd.is_some()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.lbd.take() {
                stop_pid(c.id(), Duration::from_secs(5));
                let _ = c.wait();
            }
        }
        self.router_dp.take();
        keep_logs(&self.dir, &logs_dir(&self.topo.name));
        teardown(&self.topo.name);
    }
}

/// Where a torn-down lab's logs and configs are kept for a post-mortem
/// (the last run of each lab name): $LBD_LAB_LOGS/NAME, default
/// /var/tmp/lbd-lab-logs/NAME.
pub fn logs_dir(name: &str) -> PathBuf {
    std::env::var_os("LBD_LAB_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/lbd-lab-logs"))
        .join(name)
}

/// Copies the logs and configs of the run directory (not the storage,
/// sockets or pid files), keeping their relative paths.
fn keep_logs(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let mut files = Vec::new();
    run_files(from, &["log", "toml", "conf"], &mut files);
    for f in files {
        if let Ok(rel) = f.strip_prefix(from) {
            let dest = to.join(rel);
            if dest.parent().is_some_and(|d| fs::create_dir_all(d).is_ok()) {
                let _ = fs::copy(&f, &dest);
            }
        }
    }
}

fn link(ns: &Netns, dev: &str, peer_ns: &str, peer: &str) -> Result<()> {
    run_checked(
        "ip",
        &[
            "link", "add", dev, "netns", &ns.name, "type", "veth", "peer", "name", peer, "netns",
            peer_ns,
        ],
    )?;
    for (n, d) in [(ns.name.as_str(), dev), (peer_ns, peer)] {
        run_checked("ip", &["-n", n, "link", "set", d, "up"])?;
        // Checksums are not filled in by a veth peer that bounces frames
        // with XDP_TX: offload off on both ends.
        run_checked("ip", &["netns", "exec", n, "ethtool", "-K", d, "tx", "off"])?;
    }
    Ok(())
}

fn address(ns: &Netns, dev: &str, a: &str, len: u8) -> Result<()> {
    address_in(&ns.name, dev, a, len)
}

fn address_in(ns: &str, dev: &str, a: &str, len: u8) -> Result<()> {
    let mut args = vec!["-n", ns, "addr", "add"];
    let cidr = format!("{a}/{len}");
    args.extend([cidr.as_str(), "dev", dev]);
    if a.contains(':') {
        args.push("nodad");
    }
    run_checked("ip", &args).map(|_| ())
}

/// A fresh cluster secret (32 random bytes as hex), mode 0600 as lbd
/// requires: every node of the lab authenticates its liveness reports.
fn write_secret(path: &Path) -> Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{hex}")?;
    Ok(())
}

/// The router's frr.conf and each node's lbd.toml for a real site (the
/// lab's own configs with the system paths: pins in /sys/fs/bpf/lbd, the
/// socket in /run/lbd).
pub fn write_site_configs(topo: &Topology, dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![dir.join("frr.conf")];
    fs::write(&files[0], crate::router::frr_integrated_conf(topo))?;
    for id in 1..=topo.nodes {
        let f = dir.join(format!("node{id}.toml"));
        fs::write(
            &f,
            crate::lbd_config::render(
                topo,
                id,
                "eth1",
                Path::new("/sys/fs/bpf/lbd"),
                Path::new("/run/lbd/lbd.sock"),
                Path::new("/etc/lbd/liveness.secret"),
            ),
        )?;
        files.push(f);
    }
    Ok(files)
}
