//! The dev-only lab every test tree shares (never shipped: `publish =
//! false`, and no production crate depends on it; Katran keeps its testing
//! framework apart from the library the same way).
//!
//! It holds the namespace helpers ([`Netns`], [`enter_named`],
//! [`unique`]), the site's addressing plan ([`addr`]), processes by pid
//! ([`process`]), waiting for a condition ([`wait`]), the routers labs
//! peer with ([`router`]: FRR, BIRD), nginx as a backend ([`nginx`]),
//! `systemd-analyze verify` of shipped units ([`systemd`]), the
//! XDP test bed ([`Bed`]) and packet builders ([`packets`]), and the
//! dataplane lab: a client, a Linux router with an
//! ECMP route for the VIPs (L4 hashing), and N storage nodes, each with the
//! XDP forwarder on its uplink, the MSS clamp on egress and a small HTTP
//! server bound to the VIPs that says which node answered.
//!
//! Used by the netns tests, the dataplane benchmark and demo, lbd's tests
//! and the storage-site lab. Everything it builds is removed on drop, also
//! when a test fails.
pub mod addr;
pub mod bed;
mod http;
mod netns;
pub mod nginx;
pub mod packets;
pub mod process;
pub mod procfs;
pub mod route_monitor;
pub mod router;
pub mod systemd;
pub mod wait;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Result, anyhow};
use dataplane_common::{Bucket, Config, DEFAULT_GUE_PORT, ENCAP_GUE};

pub use bed::Bed;
pub use http::{connect, get, next_line, upload};
pub use netns::{
    NODE_SYSCTLS, Netns, ROUTER_SYSCTLS, enter_named, no_checksum_offload, unique, veth,
    veth_for_xdp,
};
pub use process::run;
pub use wait::{wait_for, wait_until};

use dataplane::{
    loader::{Dataplane, Vip},
    maglev::{self, Member},
    mtu::clamped_mss,
    predict::Flow,
    transition,
};
use http::Server;

pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
pub const HTTP_PORT: u16 = 80;

pub struct LabOptions {
    /// Nodes built (ids 1..=nodes); `active` of them start in the tables.
    pub nodes: u16,
    pub active: u16,
    pub encap: u8,
    /// Clamp SYN-ACK MSS for the encapsulated path (false: no clamp).
    pub clamp_mss: bool,
    pub seed: u32,
    pub table_size: u32,
    /// MTU of every link.
    pub mtu: u16,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            active: 3,
            encap: ENCAP_GUE,
            clamp_mss: true,
            seed: dataplane_common::DEFAULT_HASH_SEED,
            table_size: maglev::DEFAULT_TABLE_SIZE,
            mtu: 1500,
        }
    }
}

pub struct Node {
    pub id: u16,
    pub ns: Netns,
    pub dp: Dataplane,
    pub pin_dir: PathBuf,
    pub uplink: String,
    pub underlay: Ipv4Addr,
    pub underlay6: Ipv6Addr,
}

impl Node {
    pub fn name(&self) -> String {
        format!("node{}", self.id)
    }
}

pub struct Lab {
    pub opts: LabOptions,
    // Field order = drop order: servers stop before namespaces go.
    servers: Vec<Server>,
    pub nodes: Vec<Node>,
    router_dp: Option<(Dataplane, PathBuf)>,
    pub router: Netns,
    pub client: Netns,
    /// The live buckets (same on every node) and the nodes in the tables.
    pub live: Vec<Bucket>,
    pub active: Vec<u16>,
}

impl Lab {
    pub fn vips() -> [Vip; 2] {
        [
            Vip {
                addr: IpAddr::V4(VIP4),
                port: HTTP_PORT,
                proto: 6,
            },
            Vip {
                addr: IpAddr::V6(VIP6),
                port: HTTP_PORT,
                proto: 6,
            },
        ]
    }

    pub fn build(opts: LabOptions) -> Result<Self> {
        let client = Netns::new("dlc")?;
        let router = Netns::new("dlr")?;
        let mut lab = Self {
            opts,
            servers: Vec::new(),
            nodes: Vec::new(),
            router_dp: None,
            router,
            client,
            live: Vec::new(),
            active: Vec::new(),
        };
        lab.wire_client()?;
        let router_pins = PathBuf::from(format!("/sys/fs/bpf/{}", unique("dlr")));
        let router_dp = Dataplane::open(&router_pins)?;
        lab.router_dp = Some((router_dp, router_pins));
        for id in 1..=lab.opts.nodes {
            let node = lab.wire_node(id)?;
            lab.nodes.push(node);
        }
        for n in &mut lab.nodes {
            configure_node(n, &lab.opts, &lab_underlays(lab.opts.nodes))?;
        }
        let active: Vec<u16> = (1..=lab.opts.active).collect();
        lab.set_members(&active, &[])?;
        Ok(lab)
    }

    fn wire_client(&self) -> Result<()> {
        veth_for_xdp("c0", &self.client, "r-c", &self.router, self.opts.mtu)?;
        self.client.ip("addr add 203.0.113.2/24 dev c0")?;
        self.client.ip("addr add 2001:db8:c::2/64 dev c0 nodad")?;
        self.router.ip("addr add 203.0.113.1/24 dev r-c")?;
        self.router.ip("addr add 2001:db8:c::1/64 dev r-c nodad")?;
        self.client.ip("route add default via 203.0.113.1")?;
        self.client.ip("-6 route add default via 2001:db8:c::1")?;
        self.router.sysctls(&ROUTER_SYSCTLS)?;
        Ok(())
    }

    fn wire_node(&mut self, id: u16) -> Result<Node> {
        let ns = Netns::new(&format!("dl{id}n"))?;
        let uplink = format!("n{id}-r");
        let rside = format!("r-n{id}");
        veth_for_xdp(&rside, &self.router, &uplink, &ns, self.opts.mtu)?;
        let (u4, u6) = underlay(id);
        let (r4, r6) = (addr::router_to_node4(id), addr::router_to_node6(id));
        ns.ip(&format!("addr add {u4}/28 dev {uplink}"))?;
        ns.ip(&format!("addr add {u6}/64 dev {uplink} nodad"))?;
        self.router.ip(&format!("addr add {r4}/28 dev {rside}"))?;
        self.router
            .ip(&format!("addr add {r6}/64 dev {rside} nodad"))?;
        ns.ip(&format!("route add default via {r4}"))?;
        ns.ip(&format!("-6 route add default via {r6}"))?;
        ns.ip(&format!("addr add {VIP4}/32 dev lo"))?;
        ns.ip(&format!("addr add {VIP6}/128 dev lo nodad"))?;
        ns.sysctls(&NODE_SYSCTLS)?;
        // veth delivers XDP_TX frames only to a peer that runs XDP too.
        let (rdp, _) = self
            .router_dp
            .as_mut()
            .ok_or_else(|| anyhow!("router dataplane"))?;
        self.router
            .run(|| rdp.attach_xdp_program("lbd_pass", &rside))?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", unique(&format!("dl{id}n"))));
        let mut dp = Dataplane::open(&pin_dir)?;
        ns.run(|| {
            dp.attach_xdp(&uplink)?;
            dp.attach_mss_clamp(&uplink)
        })?;
        Ok(Node {
            id,
            ns,
            dp,
            pin_dir,
            uplink,
            underlay: u4,
            underlay6: u6,
        })
    }

    /// Puts `active` nodes in the tables (Maglev) and in the router's ECMP
    /// route; `draining` nodes leave the tables but stay usable as second
    /// hop, so their connections keep working. Tables first, then routes:
    /// a node gets traffic only once every table knows it.
    pub fn set_members(&mut self, active: &[u16], draining: &[u16]) -> Result<()> {
        let members: Vec<Member> = active.iter().map(|&id| Member { id, weight: 1 }).collect();
        let owners = maglev::build(&members, self.opts.table_size, self.opts.seed)?;
        let usable = |n: u16| active.contains(&n) || draining.contains(&n);
        let buckets = transition::follow(&self.live, &owners, usable);
        self.install(buckets)?;
        self.active = active.to_vec();
        self.set_route(active)
    }

    /// Ends the drain period: tables without second hops.
    pub fn settle(&mut self) -> Result<()> {
        let mut buckets = self.live.clone();
        transition::settle(&mut buckets);
        self.install(buckets)
    }

    /// The same buckets on every node, for every VIP; they become `live`.
    fn install(&mut self, buckets: Vec<Bucket>) -> Result<()> {
        for n in &mut self.nodes {
            for vip in Self::vips() {
                n.dp.set_vip_table(&vip, &buckets, clamp_for(&self.opts, &vip))?;
            }
        }
        self.live = buckets;
        Ok(())
    }

    /// Points the router's VIP routes at `via` only (ECMP over them).
    pub fn set_route(&self, active: &[u16]) -> Result<()> {
        let mut v4 = format!("route replace {VIP4}/32");
        let mut v6 = format!("-6 route replace {VIP6}/128");
        for &id in active {
            let (u4, u6) = underlay(id);
            v4 += &format!(" nexthop via {u4} dev r-n{id}");
            v6 += &format!(" nexthop via {u6} dev r-n{id}");
        }
        self.router.ip(&v4)?;
        self.router.ip(&v6)?;
        Ok(())
    }

    /// The router's view of the VIP route (as `ip route` prints it).
    pub fn route(&self) -> Result<String> {
        Ok(self.router.ip(&format!("route show {VIP4}/32"))?
            + &self.router.ip(&format!("-6 route show {VIP6}/128"))?)
    }

    /// Starts the HTTP server on every node (idempotent).
    pub fn start_servers(&mut self) -> Result<()> {
        if !self.servers.is_empty() {
            return Ok(());
        }
        for n in &self.nodes {
            self.servers.push(Server::start(&n.ns, n.name())?);
        }
        Ok(())
    }

    /// The owner (first hop) of a client flow to `vip`, from the live table.
    pub fn predict(&self, client: SocketAddr, vip: IpAddr) -> Option<Bucket> {
        Flow {
            client: client.ip(),
            client_port: client.port(),
            vip,
            vip_port: HTTP_PORT,
            proto: 6,
        }
        .bucket(self.opts.seed, &self.live)
    }

    pub fn node(&self, id: u16) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Counters of node `id` for the IPv4 VIP.
    pub fn counters4(&self, id: u16) -> Result<dataplane::loader::Counters> {
        let node = self.node(id).ok_or_else(|| anyhow!("no node {id}"))?;
        node.dp.counters(Some(&Self::vips()[0]))
    }
}

fn clamp_for(opts: &LabOptions, vip: &Vip) -> u16 {
    if opts.clamp_mss {
        clamped_mss(opts.mtu, false, opts.encap == ENCAP_GUE, vip.addr.is_ipv6())
    } else {
        0
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.servers.clear();
        for n in &self.nodes {
            let _ = Dataplane::cleanup(&n.pin_dir);
        }
        if let Some((_, pins)) = &self.router_dp {
            let _ = Dataplane::cleanup(pins);
        }
    }
}

/// Node `id`'s underlay addresses (the plan in [`addr`]).
pub fn underlay(id: u16) -> (Ipv4Addr, Ipv6Addr) {
    (addr::node4(id), addr::node6(id))
}

fn lab_underlays(nodes: u16) -> Vec<(u16, Ipv4Addr)> {
    (1..=nodes).map(|id| (id, underlay(id).0)).collect()
}

fn configure_node(n: &mut Node, opts: &LabOptions, all: &[(u16, Ipv4Addr)]) -> Result<()> {
    n.dp.set_config(&Config {
        self_id: n.id,
        encap: opts.encap,
        gue_port_be: DEFAULT_GUE_PORT.to_be(),
        hash_seed: opts.seed,
        self_v4: n.underlay.octets(),
        self_v6: n.underlay6.octets(),
        ..Default::default()
    })?;
    for &(id, addr) in all {
        n.dp.set_node(id, Some(IpAddr::V4(addr)))?;
    }
    Ok(())
}
