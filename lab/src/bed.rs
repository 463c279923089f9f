//! A single node's dataplane in its own namespace, driven packet by packet
//! through BPF_PROG_TEST_RUN: the packet tests and the benchmark use it.
//!
//! The namespace has a veth `up0` carrying the node's underlay addresses,
//! permanent neighbours for two other nodes (so bpf_fib_lookup resolves real
//! next hops), and the VIP and client addresses on `lo` (so real sockets can
//! exist for the "local connection" cases).
use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use aya::programs::{TestRun, TestRunOptions};
use dataplane_common::{Bucket, Config, DEFAULT_GUE_PORT};

use super::{Netns, unique};
use dataplane::loader::{Counters, Dataplane, Vip};

pub const SEED: u32 = 0x5eed_1234;
pub const TABLE: usize = 13;
pub const SELF: u16 = 1;
/// A node with an IPv4 underlay address.
pub const N2: u16 = 2;
/// A node with an IPv6 underlay address.
pub const N3: u16 = 3;
/// Named in tables but without an underlay address.
pub const N_UNKNOWN: u16 = 7;

pub const MAC_SELF: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_N2: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const MAC_N3: [u8; 6] = [2, 0, 0, 0, 0, 3];
pub const MAC_ROUTER: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

pub const SELF4: [u8; 4] = [192, 0, 2, 1];
pub const N2_4: [u8; 4] = [192, 0, 2, 2];
pub const SELF6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const N3_6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
pub const VIP4: [u8; 4] = [198, 51, 100, 10];
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const CLIENT4: [u8; 4] = [203, 0, 113, 7];
pub const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

/// The VIPs every bed serves: TCP/80 and UDP/53 on the IPv4 VIP, TCP/80 on
/// the IPv6 VIP.
pub fn vips() -> [Vip; 3] {
    [
        Vip {
            addr: IpAddr::from(VIP4),
            port: 80,
            proto: 6,
        },
        Vip {
            addr: IpAddr::from(VIP4),
            port: 53,
            proto: 17,
        },
        Vip {
            addr: IpAddr::from(VIP6),
            port: 80,
            proto: 6,
        },
    ]
}

/// One run of a program: verdict, output frame, kernel-measured duration.
pub struct Run {
    pub action: u32,
    pub out: Vec<u8>,
    pub duration: Duration,
}

pub struct Bed {
    pub dp: Dataplane,
    pin_dir: PathBuf,
    /// Entered by the creating thread; deleted on drop.
    _ns: Netns,
    ifindex: u32,
}

impl Bed {
    /// Builds the namespace and moves the calling thread into it.
    pub fn new(encap: u8) -> Result<Self> {
        let ns = Netns::new("dpt")?;
        ns.ip("link add up0 type veth peer name up1")?;
        ns.ip("link set up0 address 02:00:00:00:00:01 up")?;
        ns.ip("link set up1 up")?;
        ns.ip("addr add 192.0.2.1/24 dev up0")?;
        ns.ip("addr add 2001:db8:1::1/64 dev up0 nodad")?;
        ns.ip("neigh replace 192.0.2.2 lladdr 02:00:00:00:00:02 dev up0 nud permanent")?;
        ns.ip("neigh replace 2001:db8:1::3 lladdr 02:00:00:00:00:03 dev up0 nud permanent")?;
        for a in ["198.51.100.10/32", "203.0.113.7/32"] {
            ns.ip(&format!("addr add {a} dev lo"))?;
        }
        for a in ["2001:db8:100::10/128", "2001:db8:200::7/128"] {
            ns.ip(&format!("addr add {a} dev lo nodad"))?;
        }
        ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        ns.enter()?;
        let ifindex = ns.ifindex("up0")?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", unique("dpt")));
        let dp = Dataplane::open(&pin_dir)?;
        let mut bed = Self {
            dp,
            pin_dir,
            _ns: ns,
            ifindex,
        };
        bed.set_encap(encap)?;
        bed.dp.set_node(SELF, Some(IpAddr::from(SELF4)))?;
        bed.dp.set_node(N2, Some(IpAddr::from(N2_4)))?;
        bed.dp.set_node(N3, Some(IpAddr::from(N3_6)))?;
        // As on a node: the listener cache armed, its watch attached.
        bed.dp.watch_listeners()?;
        bed.dp.forwarder()?;
        Ok(bed)
    }

    pub fn set_encap(&mut self, encap: u8) -> Result<()> {
        self.dp.set_config(&Config {
            self_id: SELF,
            encap,
            gue_port_be: DEFAULT_GUE_PORT.to_be(),
            hash_seed: SEED,
            self_v4: SELF4,
            self_v6: SELF6,
            ..Default::default()
        })
    }

    /// Every bucket of every VIP: (first, second), no fallback.
    pub fn tables(&mut self, first: u16, second: u16) -> Result<()> {
        self.buckets(Bucket::new(first, second))
    }

    /// Every bucket of every VIP is `bucket`.
    pub fn buckets(&mut self, bucket: Bucket) -> Result<()> {
        for v in vips() {
            self.dp.set_vip_table(&v, &[bucket; TABLE], 0)?;
        }
        Ok(())
    }

    /// Runs the forwarder once on `input` (as received on `up0`).
    pub fn run(&mut self, input: &[u8]) -> Result<Run> {
        self.run_program("lbd_xdp", input)
    }

    /// Runs one of the object's XDP programs once (`lbd_tx`: the baseline).
    pub fn run_program(&mut self, name: &str, input: &[u8]) -> Result<Run> {
        let mut out = vec![0u8; input.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.ifindex.to_ne_bytes());
        let prog = self.dp.trivial(name)?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(Run {
            action: r.return_value,
            out,
            duration: r.duration,
        })
    }

    /// Counters summed over the global slot and every VIP.
    pub fn all_counters(&self) -> Result<Counters> {
        let mut sum = self.dp.counters(None)?;
        for v in vips() {
            for (k, n) in self.dp.counters(Some(&v))? {
                *sum.entry(k).or_default() += n;
            }
        }
        Ok(sum)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = Dataplane::cleanup(&self.pin_dir);
    }
}
