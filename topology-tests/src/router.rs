//! The site router: FRR (zebra, bgpd, bfdd) or BIRD 2 in the router
//! namespace, one eBGP session per node, ECMP over the nodes' VIP routes
//! (L4 hashing is a sysctl of the namespace, set by the site).
use std::path::PathBuf;

use anyhow::Result;
use lab::router::{Bird, Frr, FrrConfig};

use crate::process::run_checked;
use crate::topology::{RouterKind, Topology, addr};

/// The daemons `lab::router` started for the site.
enum Daemons {
    Frr(Frr),
    Bird(Bird),
}

pub struct Router {
    pub kind: RouterKind,
    pub ns: String,
    /// Config, sockets and pid files (FRR needs it owned by frr).
    pub dir: PathBuf,
    daemons: Daemons,
}

impl Router {
    pub fn start(topo: &Topology, ns: &str, dir: PathBuf) -> Result<Router> {
        let daemons = match topo.router {
            RouterKind::Frr => Daemons::Frr(Frr::start(
                ns,
                dir.clone(),
                &FrrConfig {
                    zebra: FRR_ZEBRA_CONF,
                    bfdd: &frr_bfdd_conf(topo),
                    bgpd: &frr_bgpd_conf(topo),
                },
            )?),
            RouterKind::Bird => Daemons::Bird(Bird::start(ns, dir.clone(), &bird_conf(topo))?),
        };
        Ok(Router {
            kind: topo.router,
            ns: ns.to_string(),
            dir,
            daemons,
        })
    }

    /// (Re)starts the BGP daemon: bgpd for FRR, bird for BIRD.
    pub fn start_bgp(&mut self) -> Result<u32> {
        match &mut self.daemons {
            Daemons::Frr(f) => f.start_bgpd(),
            Daemons::Bird(b) => b.restart(),
        }
    }

    /// kill -9 of the BGP daemon (zebra and bfdd stay, as when bgpd crashes).
    pub fn kill_bgp(&mut self) -> Result<()> {
        match &mut self.daemons {
            Daemons::Frr(f) => f.kill_bgpd(),
            Daemons::Bird(b) => b.kill(),
        }
    }

    /// The router's own summary of its BGP sessions, for people.
    pub fn summary(&self) -> String {
        let out = match &self.daemons {
            Daemons::Frr(f) => f.vtysh("show bgp summary"),
            Daemons::Bird(b) => b.birdc("show protocols"),
        };
        out.unwrap_or_else(|e| format!("(no summary: {e:#})"))
    }

    /// Node ids the router's kernel route to `vip` points at (ECMP next hops).
    pub fn paths(&self, vip: &str, nodes: u16) -> Result<Vec<u16>> {
        paths_in(&self.ns, vip, nodes)
    }
}

/// Node ids the kernel route to `vip` in the router namespace `ns` points
/// at: [`Router::paths`] for a thread that cannot hold the router.
pub fn paths_in(ns: &str, vip: &str, nodes: u16) -> Result<Vec<u16>> {
    let fam = if vip.contains(':') { "-6" } else { "-4" };
    let out = run_checked("ip", &["-n", ns, fam, "route", "show", vip])?;
    Ok(nodes_of_route(&out, nodes))
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
