//! What the end-to-end tests share: a lab of network namespaces with a site
//! router (FRR or BIRD, started by the test), a client, and storage nodes
//! each running the `lbd` binary (XDP on `eth0`, BGP to the router,
//! liveness between nodes) in front of a small HTTP backend bound to the
//! VIPs.
//!
//! Addressing: node `i` sits on its own link to the router,
//! 192.0.2.(16i+2)/28 and 2001:db8:i::2/64, the router being .(16i+1) and
//! 2001:db8:i::1. With an IPv6 underlay the members, the liveness polls,
//! the encapsulation between nodes and the BGP sessions use the IPv6
//! addresses. The client is 203.0.113.2 / 2001:db8:c::2.

#![allow(dead_code, unused_imports)] // each test binary uses a part

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::loader::Dataplane;
pub use lab::addr::{
    node4 as node_addr, node6 as node_addr6, router_to_node4 as router_addr,
    router_to_node6 as router_addr6,
};
pub use lab::process::{raise_nofile, signal};
use lab::router::{BFDD_FAST, Bird, Frr, FrrConfig};
pub use lab::wait::wait_for;
pub use lab::{NODE_SYSCTLS, Netns, ROUTER_SYSCTLS, veth_for_xdp};
pub use serde_json::Value;

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
/// A second IPv4 VIP, for tests that add and remove VIPs.
pub const VIP2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const LBD: &str = env!("CARGO_BIN_EXE_lbd");
pub const CHECK_INTERVAL_MS: u64 = 200;
pub const CHECK_FALL: u64 = 2;

/// A tiny HTTP/1.0 backend on port 80 of the VIPs in a node's namespace:
/// `/health`, `/whoami`, `/stream?ms=N` (the node name every 100 ms, then
/// `done`).
pub struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<anyhow::Result<()>>>,
}

impl Backend {
    pub fn start(ns: &Netns, name: String) -> Backend {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let listeners = ns
            .run(|| {
                let mut v = Vec::new();
                for a in [IpAddr::V4(VIP), IpAddr::V6(VIP6), IpAddr::V4(VIP2)] {
                    let l = TcpListener::bind(SocketAddr::new(a, 80))?;
                    l.set_nonblocking(true)?;
                    v.push(l);
                }
                Ok(v)
            })
            .expect("backend bind");
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let mut idle = true;
                for listener in &listeners {
                    match listener.accept() {
                        Ok((c, _)) => {
                            idle = false;
                            let name = name.clone();
                            thread::spawn(move || serve(c, &name));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if idle {
                    thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(())
        });
        Backend {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(s: TcpStream, name: &str) -> anyhow::Result<()> {
    s.set_nonblocking(false)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut req = String::new();
    r.read_line(&mut req)?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let mut w = s;
    let path = req.split_whitespace().nth(1).unwrap_or("/");
    if let Some(ms) = path.strip_prefix("/stream?ms=") {
        let end = Instant::now() + Duration::from_millis(ms.parse().unwrap_or(1000));
        w.write_all(b"HTTP/1.0 200 OK\r\n\r\n")?;
        while Instant::now() < end {
            w.write_all(format!("{name}\n").as_bytes())?;
            thread::sleep(Duration::from_millis(100));
        }
        w.write_all(b"done\n")?;
    } else if path == "/health" {
        w.write_all(b"HTTP/1.0 200 OK\r\n\r\nok\n")?;
    } else {
        w.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{name}\n").as_bytes())?;
    }
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

pub struct Node {
    pub id: u16,
    pub ns: Netns,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub lbd: Option<Child>,
    pub backend: Option<Backend>,
}

/// The router daemons a test started in the router namespace.
enum Router {
    Frr(Frr),
    Bird(Bird),
}

pub struct Lab {
    // Drop order: lbd and backends, router daemons, pins, then namespaces.
    pub nodes: Vec<Node>,
    router_daemons: Option<Router>,
    router_pins: PathBuf,
    _router_dp: Option<Dataplane>,
    pub dir: PathBuf,
    /// Members, liveness and BGP sessions over IPv6.
    pub v6_underlay: bool,
    pub router: Netns,
    pub client: Netns,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_lbd(i);
            let n = &mut self.nodes[i];
            n.backend.take();
            let _ = Dataplane::cleanup(&n.pin_dir);
        }
        self.router_daemons.take();
        self._router_dp.take();
        let _ = Dataplane::cleanup(&self.router_pins);
        // The namespaces go when the Netns fields drop; keep logs of a failed run.
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lbd logs kept in {}", self.dir.display());
        }
    }
}

fn link(a: &str, a_ns: &Netns, b: &str, b_ns: &Netns) {
    veth_for_xdp(a, a_ns, b, b_ns, 1500).expect("veth");
}

impl Lab {
    /// Namespaces, links, addresses and backends for `n` nodes; no router
    /// daemon and no lbd yet (`start_frr` / `start_bird`, `write_config`,
    /// `start_lbd`).
    pub fn new(tag: &str, n: u16, v6_underlay: bool) -> Lab {
        let dir = std::env::temp_dir().join(lab::unique(&format!("lbdt-{tag}-")));
        fs::create_dir_all(&dir).expect("dir");
        let client = Netns::new("lbdt-c").expect("client ns");
        let router = Netns::new("lbdt-r").expect("router ns");
        link("c0", &client, "r-c", &router);
        for a in [
            "addr add 203.0.113.2/24 dev c0",
            "route add default via 203.0.113.1",
            "addr add 2001:db8:c::2/64 dev c0 nodad",
            "-6 route add default via 2001:db8:c::1",
        ] {
            client.ip(a).expect(a);
        }
        for a in [
            "addr add 203.0.113.1/24 dev r-c",
            "addr add 2001:db8:c::1/64 dev r-c nodad",
        ] {
            router.ip(a).expect(a);
        }
        router.sysctls(&ROUTER_SYSCTLS).expect("sysctl");
        let router_pins = PathBuf::from(format!("/sys/fs/bpf/{}", lab::unique("lbdt-r")));
        let mut router_dp = Dataplane::open(&router_pins).expect("router dataplane");
        let mut nodes = Vec::new();
        for id in 1..=n {
            let ns = Netns::new(&format!("lbdt-n{id}")).expect("node ns");
            let rside = format!("r-n{id}");
            link(&rside, &router, "eth0", &ns);
            for a in [
                format!("addr add {}/28 dev eth0", node_addr(id)),
                format!("route add default via {}", router_addr(id)),
                format!("addr add {}/64 dev eth0 nodad", node_addr6(id)),
                format!("-6 route add default via {}", router_addr6(id)),
                format!("addr add {VIP}/32 dev lo"),
                format!("addr add {VIP2}/32 dev lo"),
                format!("addr add {VIP6}/128 dev lo nodad"),
            ] {
                ns.ip(&a).expect(&a);
            }
            for a in [
                format!("addr add {}/28 dev {rside}", router_addr(id)),
                format!("addr add {}/64 dev {rside} nodad", router_addr6(id)),
            ] {
                router.ip(&a).expect(&a);
            }
            ns.sysctls(&NODE_SYSCTLS).expect("sysctl");
            // veth delivers XDP_TX frames only to a peer that runs XDP too.
            router
                .run(|| router_dp.attach_xdp_program("lbd_pass", &rside))
                .expect("lbd_pass");
            let pin_dir = PathBuf::from(format!(
                "/sys/fs/bpf/{}",
                lab::unique(&format!("lbdt-n{id}-"))
            ));
            let backend = Some(Backend::start(&ns, format!("node{id}")));
            nodes.push(Node {
                id,
                ns,
                config: dir.join(format!("n{id}.toml")),
                socket: dir.join(format!("n{id}.sock")),
                pin_dir,
                lbd: None,
                backend,
            });
        }
        Lab {
            nodes,
            router_daemons: None,
            router_pins,
            _router_dp: Some(router_dp),
            dir,
            v6_underlay,
            router,
            client,
        }
    }

    /// The underlay address of member `id` (its liveness endpoint and
    /// encapsulation target).
    pub fn member_addr(&self, id: u16) -> IpAddr {
        if self.v6_underlay {
            IpAddr::V6(node_addr6(id))
        } else {
            IpAddr::V4(node_addr(id))
        }
    }

    /// The address node `id` peers from, as the router sees it.
    pub fn peer_addr(&self, id: u16) -> IpAddr {
        self.member_addr(id)
    }

    /// Node `id`'s config: the members given, the IPv4 and IPv6 VIPs with
    /// HTTP checks on the backend, one BGP peer (the router on its link,
    /// AS 65000). Tests edit the text for what they need.
    pub fn node_config(&self, id: u16, members: &[u16]) -> String {
        let n = &self.nodes[usize::from(id - 1)];
        let mut s = format!(
            r#"node_id = {id}
drain_period = "60s"
[dataplane]
interface = "eth0"
pin_dir = "{pin_dir}"
table_size = 4093
[liveness]
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 3
"#,
            pin_dir = n.pin_dir.display()
        );
        for &m in members {
            s += &format!(
                "[[members]]\nid = {m}\naddress = \"{}\"\n",
                self.member_addr(m)
            );
        }
        for (vip, url) in [
            (IpAddr::V4(VIP), format!("http://{VIP}/health")),
            (IpAddr::V6(VIP6), format!("http://[{VIP6}]/health")),
        ] {
            s += &vip_config(vip, &url);
        }
        let (peer, local, next_hop) = if self.v6_underlay {
            (
                IpAddr::V6(router_addr6(id)),
                IpAddr::V6(node_addr6(id)),
                format!("next_hop_v4 = \"{}\"", node_addr(id)),
            )
        } else {
            (
                IpAddr::V4(router_addr(id)),
                IpAddr::V4(node_addr(id)),
                format!("next_hop_v6 = \"{}\"", node_addr6(id)),
            )
        };
        s += &format!(
            r#"[bgp]
local_as = 65100
router_id = "{rid}"
listen_port = 179
shutdown_wait = "1s"
communities = ["65100:10"]
[[bgp.peers]]
address = "{peer}"
remote_as = 65000
local_address = "{local}"
{next_hop}
[api]
socket = "{socket}"
metrics = "127.0.0.1:9181"
"#,
            rid = node_addr(id),
            socket = n.socket.display(),
        );
        s
    }

    pub fn write_config(&self, i: usize, text: &str) {
        fs::write(&self.nodes[i].config, text).expect("config");
    }

    pub fn config(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].config).expect("config")
    }

    /// FRR (zebra, bfdd with a `fast` profile of 100 ms x 3, bgpd) with
    /// `bgpd_conf` in the router namespace.
    pub fn start_frr(&mut self, bgpd_conf: &str) {
        let conf = FrrConfig {
            zebra: "hostname r\n",
            bfdd: BFDD_FAST,
            bgpd: bgpd_conf,
        };
        let frr = Frr::start(&self.router.name, self.dir.join("frr"), &conf).expect("FRR");
        self.router_daemons = Some(Router::Frr(frr));
    }

    /// The bgpd.conf head most FRR tests use: AS 65000, no policy, ECMP
    /// over different AS paths, the neighbors in peer group N (timers 3 9,
    /// connect 1) activated for IPv4 and IPv6; `per_neighbor` adds lines
    /// for each neighbor address.
    pub fn frr_conf(&self, per_neighbor: &str) -> String {
        let mut c = String::from(
            "frr defaults traditional\nhostname r\nroute-map DENY-ALL deny 10\n!\nrouter bgp 65000\n bgp router-id 203.0.113.1\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n neighbor N peer-group\n neighbor N remote-as external\n neighbor N timers 3 9\n neighbor N timers connect 1\n",
        );
        for n in &self.nodes {
            let a = self.peer_addr(n.id);
            c += &format!(" neighbor {a} peer-group N\n");
            for l in per_neighbor.lines().filter(|l| !l.is_empty()) {
                c += &format!(" neighbor {a} {l}\n");
            }
        }
        c += " address-family ipv4 unicast\n  neighbor N activate\n  neighbor N route-map DENY-ALL out\n  maximum-paths 8\n exit-address-family\n address-family ipv6 unicast\n  neighbor N activate\n  neighbor N route-map DENY-ALL out\n  maximum-paths 8\n exit-address-family\n!\n";
        c
    }

    pub fn vtysh(&self, command: &str) -> String {
        let Some(Router::Frr(frr)) = &self.router_daemons else {
            panic!("vtysh without FRR");
        };
        frr.vtysh(command).expect("vtysh")
    }

    /// FRR's BGP state of a neighbor; panics when FRR does not answer for
    /// it, so a negative check (`!= "Established"`) cannot pass on a
    /// failed query.
    pub fn frr_state(&self, addr: IpAddr) -> String {
        let n = self.frr_neighbor(addr);
        match n["bgpState"].as_str() {
            Some(s) => s.to_string(),
            None => panic!("FRR has no state for neighbor {addr}: {n}"),
        }
    }

    /// FRR's view of a neighbor: `show bgp neighbors ADDR json`.
    pub fn frr_neighbor(&self, addr: IpAddr) -> Value {
        let v: Value =
            serde_json::from_str(&self.vtysh(&format!("show bgp neighbors {addr} json")))
                .unwrap_or(Value::Null);
        v[addr.to_string()].clone()
    }

    /// BIRD 2 with `conf` in the router namespace.
    pub fn start_bird(&mut self, conf: &str) {
        let bird = Bird::start(&self.router.name, self.dir.join("bird"), conf).expect("bird");
        self.router_daemons = Some(Router::Bird(bird));
    }

    pub fn birdc(&self, command: &str) -> String {
        let Some(Router::Bird(bird)) = &self.router_daemons else {
            panic!("birdc without BIRD");
        };
        bird.birdc(command).expect("birdc")
    }

    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.dir.join(format!("n{}.log", self.nodes[i].id))).unwrap_or_default()
    }

    pub fn start_lbd(&mut self, i: usize) {
        self.start_lbd_wrapped(i, &[]);
    }

    /// Starts lbd in node `i`'s namespace under `wrapper` (a command that
    /// runs the rest of its arguments, e.g. setpriv with its options).
    pub fn start_lbd_wrapped(&mut self, i: usize, wrapper: &[String]) {
        let n = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{}.log", n.id)))
            .expect("log");
        // nsenter, not `ip netns exec`: the latter also makes a mount
        // namespace with a fresh /sys, without the bpffs lbd pins into.
        let child = lab::process::nsenter_command(&n.ns.name)
            .args(wrapper)
            .args([LBD, "run", "-c"])
            .arg(&n.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("lbd");
        n.lbd = Some(child);
    }

    /// SIGTERM, then SIGKILL after 5 s; waits for the process.
    pub fn stop_lbd(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].lbd.take() {
            lab::process::stop_child(&mut c, Duration::from_secs(5));
        }
    }

    pub fn lbd_pid(&self, i: usize) -> u32 {
        self.nodes[i].lbd.as_ref().map(|c| c.id()).expect("lbd pid")
    }

    /// Panics with the log if an lbd exited.
    pub fn assert_running(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(Ok(Some(st))) = self.nodes[i].lbd.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "lbd on node {} exited ({st}):\n{}",
                    self.nodes[i].id,
                    self.log(i)
                );
            }
        }
    }

    /// Next hops of `prefix` in the router's kernel, sorted (and a check
    /// that no lbd died).
    pub fn route_via(&mut self, prefix: &str) -> Vec<String> {
        self.assert_running();
        let family = if prefix.contains(':') { "-6 " } else { "" };
        vias(
            &self
                .router
                .ip(&format!("{family}route show {prefix}"))
                .unwrap_or_default(),
        )
    }

    /// The route of the IPv4 VIP.
    pub fn vip_via(&mut self) -> Vec<String> {
        self.route_via(&format!("{VIP}/32"))
    }

    /// `lbd status --json` of node `i`, or Null while it does not answer
    /// (for polling); see `status_now` for checks.
    pub fn status(&self, i: usize) -> Value {
        self.try_status(i).unwrap_or(Value::Null)
    }

    /// `lbd status --json` of node `i`; panics when the query fails, so a
    /// check on its fields cannot pass on a failed query.
    pub fn status_now(&self, i: usize) -> Value {
        self.try_status(i)
            .unwrap_or_else(|e| panic!("lbd status of node {}: {e}", i + 1))
    }

    fn try_status(&self, i: usize) -> Result<Value, String> {
        let out = Command::new(LBD)
            .args(["status", "--json", "-s"])
            .arg(&self.nodes[i].socket)
            .output()
            .expect("lbd status");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
    }

    pub fn ctl(&self, i: usize, what: &str) -> String {
        let out = Command::new(LBD)
            .arg(what)
            .arg("-s")
            .arg(&self.nodes[i].socket)
            .output()
            .expect("lbd");
        assert!(
            out.status.success(),
            "lbd {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGHUP node `i` and wait until `lbd status` shows a new reload
    /// outcome; returns it.
    pub fn reload(&self, i: usize) -> String {
        let before = self.status(i)["node"]["last_reload"].clone();
        signal(self.lbd_pid(i), libc::SIGHUP);
        let mut now = Value::Null;
        wait_for("the reload outcome", Duration::from_secs(10), || {
            now = self.status(i)["node"]["last_reload"].clone();
            now != before && !now.is_null()
        });
        now.as_str().unwrap_or("").to_string()
    }

    /// A dataplane counter of VIP `vip` (index in the config), summed over
    /// every node.
    pub fn counter_sum(&self, vip: usize, name: &str) -> u64 {
        (0..self.nodes.len())
            .map(|i| {
                self.status(i)["vips"][vip]["counters"][name]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// GET `path` on the IPv4 VIP from the client; the first body line.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        self.get_from(IpAddr::V4(VIP), path)
    }

    pub fn get_from(&self, vip: IpAddr, path: &str) -> anyhow::Result<String> {
        let path = path.to_string();
        self.client.run(move || {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::new(vip, 80), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_string())
        })
    }

    /// The nodes that answer `n` GETs on `vip`.
    pub fn served_by(&self, vip: IpAddr, n: usize) -> std::collections::BTreeSet<String> {
        (0..n)
            .map(|_| {
                self.get_from(vip, "/whoami")
                    .unwrap_or_else(|e| panic!("GET http://{vip}/whoami: {e:#}"))
            })
            .collect()
    }
}

/// A `[[vips]]` entry on port 80 with one HTTP check.
pub fn vip_config(vip: IpAddr, url: &str) -> String {
    format!(
        r#"[[vips]]
address = "{vip}"
ports = [80]
[[vips.checks]]
type = "http"
url = "{url}"
body_contains = "ok"
interval = "{CHECK_INTERVAL_MS}ms"
timeout = "150ms"
rise = 1
fall = {CHECK_FALL}
"#
    )
}

/// The `via` addresses of `ip route show` output, sorted.
pub fn vias(out: &str) -> Vec<String> {
    let mut via: Vec<String> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    via.sort();
    via
}

/// The IPv4 addresses of nodes `ids`, sorted (an ECMP route's next hops).
pub fn via_all(ids: &[u16]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|&i| node_addr(i).to_string()).collect();
    v.sort();
    v
}

/// The IPv6 next hops of nodes `ids`, sorted.
pub fn via_all6(ids: &[u16]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|&i| node_addr6(i).to_string()).collect();
    v.sort();
    v
}

/// The nodes with buckets in VIP `i`'s table in a status.
/// `share_nodes` of the VIP with address `vip` (status lists VIPs by
/// address, IPv4 first, not in config order).
pub fn share_nodes_of(status: &Value, vip: IpAddr) -> Vec<String> {
    let i = status["vips"]
        .as_array()
        .and_then(|a| a.iter().position(|v| v["address"] == vip.to_string()))
        .unwrap_or(usize::MAX);
    share_nodes(status, i)
}

pub fn share_nodes(status: &Value, vip: usize) -> Vec<String> {
    let mut v: Vec<String> = status["vips"][vip]["share"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    v.sort();
    v
}
