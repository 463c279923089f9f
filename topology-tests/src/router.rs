//! The site router: FRR (zebra, bgpd, bfdd) or BIRD 2 in the router
//! namespace, one eBGP session per node, ECMP over the nodes' VIP routes
//! (L4 hashing is a sysctl of the namespace, set by the site).
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{nsenter, read_pid, run_checked, signal_pid, wait_until};
use crate::topology::{RouterKind, Topology, addr};

pub struct Router {
    pub kind: RouterKind,
    pub ns: String,
    /// Config, sockets and pid files (FRR needs it owned by frr).
    pub dir: PathBuf,
}

impl Router {
    pub fn start(topo: &Topology, ns: &str, dir: PathBuf) -> Result<Router> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let r = Router {
            kind: topo.router,
            ns: ns.to_string(),
            dir,
        };
        match r.kind {
            RouterKind::Frr => r.start_frr(topo)?,
            RouterKind::Bird => {
                fs::write(r.dir.join("bird.conf"), bird_conf(topo))?;
                r.start_bgp()?;
            }
        }
        Ok(r)
    }

    fn start_frr(&self, topo: &Topology) -> Result<()> {
        let d = &self.dir;
        fs::write(d.join("zebra.conf"), FRR_ZEBRA_CONF)?;
        fs::write(d.join("bgpd.conf"), frr_bgpd_conf(topo))?;
        fs::write(d.join("bfdd.conf"), frr_bfdd_conf(topo))?;
        run_checked("chown", &["-R", "frr:frr", &d.display().to_string()])?;
        self.frr_daemon("zebra", &["-s", "90000000"])?;
        let zserv = self.file("zserv.api");
        wait_until("zebra's zserv socket", Duration::from_secs(10), || {
            Path::new(&zserv).exists()
        })?;
        self.frr_daemon("bfdd", &["--bfdctl", &self.file("bfdd.sock")])?;
        self.start_bgp().map(|_| ())
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts FRR daemon `name` with its own config and pid file and the
    /// lab's zserv and vty sockets (no TCP vty: `-P 0`), plus `extra`.
    fn frr_daemon(&self, name: &str, extra: &[&str]) -> Result<u32> {
        let (conf, pid) = (format!("{name}.conf"), format!("{name}.pid"));
        let (conf_path, pid_path) = (self.file(&conf), self.file(&pid));
        let (zserv, vty) = (self.file("zserv.api"), self.dir.display().to_string());
        let mut args = vec![
            "-d",
            "-f",
            &conf_path,
            "-i",
            &pid_path,
            "-z",
            &zserv,
            "--vty_socket",
            &vty,
            "-P",
            "0",
        ];
        args.extend_from_slice(extra);
        self.daemon(&format!("/usr/lib/frr/{name}"), &args, &pid)
    }

    /// Starts a daemonizing router process and waits for its pid file.
    fn daemon(&self, bin: &str, args: &[&str], pid_file: &str) -> Result<u32> {
        let pidf = self.dir.join(pid_file);
        let _ = fs::remove_file(&pidf);
        let mut all = vec![bin];
        all.extend_from_slice(args);
        nsenter(&self.ns, &all)?;
        wait_until(pid_file, Duration::from_secs(10), || {
            read_pid(&pidf).is_some()
        })?;
        read_pid(&pidf).context(pid_file.to_string())
    }

    /// (Re)starts the BGP daemon: bgpd for FRR, bird for BIRD.
    pub fn start_bgp(&self) -> Result<u32> {
        match self.kind {
            RouterKind::Frr => self.frr_daemon("bgpd", &[]),
            RouterKind::Bird => self.daemon(
                "/usr/sbin/bird",
                &[
                    "-c",
                    &self.file("bird.conf"),
                    "-s",
                    &self.file("bird.ctl"),
                    "-P",
                    &self.file("bird.pid"),
                ],
                "bird.pid",
            ),
        }
    }

    /// kill -9 of the BGP daemon (zebra and bfdd stay, as when bgpd crashes).
    pub fn kill_bgp(&self) -> Result<()> {
        let f = match self.kind {
            RouterKind::Frr => "bgpd.pid",
            RouterKind::Bird => "bird.pid",
        };
        let pid = read_pid(&self.dir.join(f)).context("no BGP daemon pid")?;
        signal_pid(pid, libc::SIGKILL);
        wait_until("the BGP daemon to exit", Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        })?;
        let _ = fs::remove_file(self.dir.join(f));
        Ok(())
    }

    /// The router's own summary of its BGP sessions, for people.
    pub fn summary(&self) -> String {
        let out = match self.kind {
            RouterKind::Frr => std::process::Command::new("vtysh")
                .args([
                    "--vty_socket",
                    &self.dir.display().to_string(),
                    "-c",
                    "show bgp summary",
                ])
                .output(),
            RouterKind::Bird => std::process::Command::new("birdc")
                .args(["-s", &self.file("bird.ctl"), "show", "protocols"])
                .output(),
        };
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("(no summary: {e})"),
        }
    }

    /// Node ids the router's kernel route to `vip` points at (ECMP next hops).
    pub fn paths(&self, vip: &str, nodes: u16) -> Result<Vec<u16>> {
        let fam = if vip.contains(':') { "-6" } else { "-4" };
        let out = run_checked("ip", &["-n", &self.ns, fam, "route", "show", vip])?;
        Ok(nodes_of_route(&out, nodes))
    }
}

/// Node ids behind the `via` addresses of an `ip route show` output.
pub fn nodes_of_route(out: &str, nodes: u16) -> Vec<u16> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut ids: Vec<u16> = words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| {
            (1..=nodes).find(|&id| {
                w[1] == addr::node4(id).to_string() || w[1] == addr::node6(id).to_string()
            })
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Plain multipath routes, not kernel nexthop objects: FRR 8.4 loses a
/// nexthop group member for good after its link flaps (the route stays
/// short of the node that came back; seen in node_crash).
pub const FRR_ZEBRA_CONF: &str = "hostname site-router\nno zebra nexthop kernel enable\n";

pub fn frr_bfdd_conf(topo: &Topology) -> String {
    let t = &topo.timings;
    format!(
        "bfd\n profile fast\n  receive-interval {i}\n  transmit-interval {i}\n  detect-multiplier {m}\n !\n!\n",
        i = t.bfd_interval_ms.max(10),
        m = t.bfd_multiplier.max(1)
    )
}

/// One frr.conf (integrated config) for a site router outside the lab
/// (the containerlab topology in configs/topology/containerlab).
pub fn frr_integrated_conf(topo: &Topology) -> String {
    format!(
        "! Site router of lab {:?}: written by `lbd-lab configs` (the same as the lab's).\n{FRR_ZEBRA_CONF}{}{}",
        topo.name,
        frr_bfdd_conf(topo),
        frr_bgpd_conf(topo).replacen("frr defaults traditional\nhostname site-router\n", "", 1)
    )
}

pub fn frr_bgpd_conf(topo: &Topology) -> String {
    let t = &topo.timings;
    let mut c = format!(
        "frr defaults traditional\nhostname site-router\nroute-map DENY-ALL deny 10\n!\n\
         bgp community-list standard GSHUT permit graceful-shutdown\n\
         ! RFC 8326: a draining node's routes (GRACEFUL_SHUTDOWN) lose the tie at once.\n\
         route-map LBD-IN permit 10\n match community GSHUT\n set local-preference 0\n!\n\
         route-map LBD-IN permit 20\n!\n\
         router bgp {ras}\n bgp router-id {rid}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n \
         bgp bestpath as-path multipath-relax\n \
         neighbor LBD peer-group\n neighbor LBD remote-as {nas}\n neighbor LBD timers {k} {h}\n \
         neighbor LBD timers connect 1\n",
        ras = addr::ROUTER_AS,
        rid = addr::ROUTER_ID,
        nas = addr::NODE_AS,
        k = (t.hold_time_s / 3).max(1),
        h = t.hold_time_s,
    );
    if t.bfd_interval_ms > 0 {
        c += " neighbor LBD bfd profile fast\n";
    }
    for id in 1..=topo.nodes {
        c += &format!(" neighbor {} peer-group LBD\n", addr::node4(id));
    }
    for af in ["ipv4", "ipv6"] {
        c += &format!(
            " address-family {af} unicast\n  neighbor LBD activate\n  neighbor LBD route-map LBD-IN in\n  neighbor LBD route-map DENY-ALL out\n  maximum-paths 16\n exit-address-family\n"
        );
    }
    c + "!\n"
}

fn bird_conf(topo: &Topology) -> String {
    let t = &topo.timings;
    let mut c = format!(
        "router id {rid};\nprotocol device {{}}\n\
         protocol kernel kernel4 {{ ipv4 {{ export where source = RTS_BGP; }}; merge paths on limit 16; }}\n\
         protocol kernel kernel6 {{ ipv6 {{ export where source = RTS_BGP; }}; merge paths on limit 16; }}\n",
        rid = addr::ROUTER_ID
    );
    let bfd = t.bfd_interval_ms > 0;
    if bfd {
        c += &format!(
            "protocol bfd {{ interface \"*\" {{ min rx interval {i} ms; min tx interval {i} ms; multiplier {m}; }}; }}\n",
            i = t.bfd_interval_ms,
            m = t.bfd_multiplier
        );
    }
    // RFC 8326: a draining node's routes (GRACEFUL_SHUTDOWN) lose the tie at once.
    c += "filter gshut { if (65535, 0) ~ bgp_community then bgp_local_pref = 0; accept; }\n";
    c += &format!(
        "template bgp lbd {{ local as {ras}; hold time {h}; keepalive time {k}; connect retry time 1; \
         graceful restart on; {bfd}ipv4 {{ import filter gshut; export none; }}; ipv6 {{ import filter gshut; export none; }}; }}\n",
        ras = addr::ROUTER_AS,
        h = t.hold_time_s,
        k = (t.hold_time_s / 3).max(1),
        bfd = if bfd { "bfd on; " } else { "" },
    );
    for id in 1..=topo.nodes {
        c += &format!(
            "protocol bgp n{id} from lbd {{ local {l} as {ras}; neighbor {n} as {nas}; }}\n",
            l = addr::router_to_node4(id),
            ras = addr::ROUTER_AS,
            n = addr::node4(id),
            nas = addr::NODE_AS,
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_output_maps_to_node_ids() {
        let ecmp = "198.51.100.10 nhid 31 proto bgp metric 20 \n\tnexthop via 192.0.2.18 dev r-n1 weight 1 \n\tnexthop via 192.0.2.50 dev r-n3 weight 1 \n";
        assert_eq!(nodes_of_route(ecmp, 3), vec![1, 3]);
        let one = "2001:db8:100::10 via 2001:db8:2::2 dev r-n2 proto bgp metric 20 pref medium\n";
        assert_eq!(nodes_of_route(one, 3), vec![2]);
        assert!(nodes_of_route("", 3).is_empty());
    }
}
