//! End to end in network namespaces: a real FRR router (zebra + bgpd, ECMP
//! with L4 hashing), a client, and 3 storage nodes each running the `lbd`
//! binary (XDP on its uplink, BGP to the router, liveness between nodes) in
//! front of a small HTTP backend bound to the VIP.
//!
//! One test walks through the life of the cluster, asserting at each step
//! what the router installs, what clients see and what `lbd status --json`
//! reports: 3-way ECMP; drain keeps long-lived connections to the end while
//! new ones go elsewhere; undrain; a stopped backend withdraws within
//! fall x interval + 1 s and leaves the other nodes' tables; a SIGHUP with
//! a broken config changes nothing.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::lab::{Netns, run as cmd};
use dataplane::loader::Dataplane;
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const LBD: &str = env!("CARGO_BIN_EXE_lbd");
const CHECK_INTERVAL_MS: u64 = 200;
const CHECK_FALL: u64 = 2;

fn node_addr(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (16 * id + 2) as u8)
}
fn router_addr(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, (16 * id + 1) as u8)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A tiny HTTP/1.0 backend on VIP:80 in a node's namespace: `/health`,
/// `/whoami`, `/stream?ms=N` (the node name every 100 ms, then `done`).
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<anyhow::Result<()>>>,
}

impl Backend {
    fn start(ns: &Netns, name: String) -> Backend {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let listeners = ns
            .run(|| {
                let mut v = Vec::new();
                for a in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
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

    fn stop(&mut self) {
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

struct Node {
    id: u16,
    ns: Netns,
    config: PathBuf,
    socket: PathBuf,
    pin_dir: PathBuf,
    lbd: Option<Child>,
    backend: Option<Backend>,
}

struct Cluster {
    // Drop order: lbd and backends, FRR, pins, then namespaces.
    nodes: Vec<Node>,
    frr_pids: Vec<u32>,
    router_pins: PathBuf,
    _router_dp: Option<Dataplane>,
    dir: PathBuf,
    router: Netns,
    client: Netns,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.lbd.take() {
                signal(c.id(), libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            n.backend.take();
            let _ = Dataplane::cleanup(&n.pin_dir);
        }
        for pid in &self.frr_pids {
            signal(*pid, libc::SIGKILL);
        }
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

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn no_offload(ns: &Netns, dev: &str) {
    ns.exec("ethtool", &["-K", dev, "tx", "off"])
        .expect("ethtool");
}

fn node_config(id: u16, pin_dir: &str, socket: &str) -> String {
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
"#
    );
    for m in 1..=3u16 {
        s += &format!("[[members]]\nid = {m}\naddress = \"{}\"\n", node_addr(m));
    }
    s += &format!(
        r#"[[vips]]
address = "{VIP}"
ports = [80]
[[vips.checks]]
type = "http"
url = "http://{VIP}/health"
body_contains = "ok"
interval = "{CHECK_INTERVAL_MS}ms"
timeout = "150ms"
rise = 1
fall = {CHECK_FALL}
[[vips]]
address = "{VIP6}"
ports = [80]
[[vips.checks]]
type = "http"
url = "http://[{VIP6}]/health"
interval = "{CHECK_INTERVAL_MS}ms"
timeout = "150ms"
rise = 1
fall = {CHECK_FALL}
[bgp]
local_as = 65100
router_id = "{me}"
listen_port = 179
shutdown_wait = "1s"
communities = ["65100:10"]
[[bgp.peers]]
address = "{router}"
remote_as = 65000
local_address = "{me}"
next_hop_v6 = "2001:db8:{id}::2"
[api]
socket = "{socket}"
metrics = "127.0.0.1:9181"
"#,
        me = node_addr(id),
        router = router_addr(id),
    );
    s
}

fn build() -> Cluster {
    let dir = std::env::temp_dir().join(dataplane::lab::unique("lbdt-cluster-"));
    fs::create_dir_all(&dir).expect("dir");
    let client = Netns::new("lbdt-c").expect("client ns");
    let router = Netns::new("lbdt-r").expect("router ns");
    cmd(
        "ip",
        &[
            "link",
            "add",
            "c0",
            "netns",
            &client.name,
            "type",
            "veth",
            "peer",
            "name",
            "r-c",
            "netns",
            &router.name,
        ],
    )
    .expect("veth");
    client.ip("link set c0 up").expect("up");
    router.ip("link set r-c up").expect("up");
    client.ip("addr add 203.0.113.2/24 dev c0").expect("addr");
    router.ip("addr add 203.0.113.1/24 dev r-c").expect("addr");
    client
        .ip("route add default via 203.0.113.1")
        .expect("route");
    client
        .ip("addr add 2001:db8:c::2/64 dev c0 nodad")
        .expect("addr");
    router
        .ip("addr add 2001:db8:c::1/64 dev r-c nodad")
        .expect("addr");
    client
        .ip("-6 route add default via 2001:db8:c::1")
        .expect("route");
    no_offload(&client, "c0");
    no_offload(&router, "r-c");
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.fib_multipath_hash_policy", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.fib_multipath_hash_policy", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
    ] {
        router.sysctl(k, v).expect("sysctl");
    }
    let router_pins = PathBuf::from(format!("/sys/fs/bpf/{}", dataplane::lab::unique("lbdt-r")));
    let mut router_dp = Dataplane::open(&router_pins).expect("router dataplane");
    let mut nodes = Vec::new();
    for id in 1..=3u16 {
        let ns = Netns::new(&format!("lbdt-n{id}")).expect("node ns");
        let rside = format!("r-n{id}");
        cmd(
            "ip",
            &[
                "link",
                "add",
                &rside,
                "netns",
                &router.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.name,
            ],
        )
        .expect("veth");
        ns.ip("link set eth0 up").expect("up");
        router.ip(&format!("link set {rside} up")).expect("up");
        no_offload(&ns, "eth0");
        no_offload(&router, &rside);
        ns.ip(&format!("addr add {}/28 dev eth0", node_addr(id)))
            .expect("addr");
        router
            .ip(&format!("addr add {}/28 dev {rside}", router_addr(id)))
            .expect("addr");
        ns.ip(&format!("route add default via {}", router_addr(id)))
            .expect("route");
        ns.ip(&format!("addr add {VIP}/32 dev lo")).expect("vip");
        ns.ip(&format!("addr add 2001:db8:{id}::2/64 dev eth0 nodad"))
            .expect("addr");
        router
            .ip(&format!("addr add 2001:db8:{id}::1/64 dev {rside} nodad"))
            .expect("addr");
        ns.ip(&format!("-6 route add default via 2001:db8:{id}::1"))
            .expect("route");
        ns.ip(&format!("addr add {VIP6}/128 dev lo nodad"))
            .expect("vip6");
        for (k, v) in [
            ("net.ipv4.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            ns.sysctl(k, v).expect("sysctl");
        }
        // veth delivers XDP_TX frames only to a peer that runs XDP too.
        router
            .run(|| router_dp.attach_xdp_program("lbd_pass", &rside))
            .expect("lbd_pass");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/{}",
            dataplane::lab::unique(&format!("lbdt-n{id}-"))
        ));
        let socket = dir.join(format!("n{id}.sock"));
        let config = dir.join(format!("n{id}.toml"));
        fs::write(
            &config,
            node_config(
                id,
                &pin_dir.display().to_string(),
                &socket.display().to_string(),
            ),
        )
        .expect("config");
        let backend = Some(Backend::start(&ns, format!("node{id}")));
        nodes.push(Node {
            id,
            ns,
            config,
            socket,
            pin_dir,
            lbd: None,
            backend,
        });
    }
    let mut c = Cluster {
        nodes,
        frr_pids: Vec::new(),
        router_pins,
        _router_dp: Some(router_dp),
        dir,
        router,
        client,
    };
    c.start_frr();
    for i in 0..3 {
        c.start_lbd(i);
    }
    c
}

impl Cluster {
    fn start_frr(&mut self) {
        let run = self.dir.join("frr");
        fs::create_dir_all(&run).expect("frr dir");
        let mut conf = String::from(
            "frr defaults traditional\nhostname r\nroute-map DENY-ALL deny 10\n!\nrouter bgp 65000\n bgp router-id 203.0.113.1\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n neighbor N peer-group\n neighbor N remote-as external\n neighbor N timers 3 9\n neighbor N timers connect 1\n",
        );
        for id in 1..=3 {
            conf += &format!(" neighbor {} peer-group N\n", node_addr(id));
        }
        conf += " address-family ipv4 unicast\n  neighbor N activate\n  neighbor N route-map DENY-ALL out\n  maximum-paths 8\n exit-address-family\n address-family ipv6 unicast\n  neighbor N activate\n  neighbor N route-map DENY-ALL out\n  maximum-paths 8\n exit-address-family\n!\n";
        fs::write(run.join("bgpd.conf"), conf).expect("bgpd.conf");
        fs::write(run.join("zebra.conf"), "hostname r\n").expect("zebra.conf");
        cmd("chown", &["-R", "frr:frr", &run.display().to_string()]).expect("chown");
        let r = run.display().to_string();
        let z = format!("{r}/zserv.api");
        self.router
            .exec(
                "/usr/lib/frr/zebra",
                &[
                    "-d",
                    "-f",
                    &format!("{r}/zebra.conf"),
                    "-i",
                    &format!("{r}/zebra.pid"),
                    "-z",
                    &z,
                    "--vty_socket",
                    &r,
                    "-P",
                    "0",
                    "-s",
                    "90000000",
                ],
            )
            .expect("zebra");
        wait_for("zserv socket", Duration::from_secs(10), || {
            run.join("zserv.api").exists()
        });
        self.router
            .exec(
                "/usr/lib/frr/bgpd",
                &[
                    "-d",
                    "-f",
                    &format!("{r}/bgpd.conf"),
                    "-i",
                    &format!("{r}/bgpd.pid"),
                    "-z",
                    &z,
                    "--vty_socket",
                    &r,
                    "-P",
                    "0",
                ],
            )
            .expect("bgpd");
        for d in ["zebra", "bgpd"] {
            let p = run.join(format!("{d}.pid"));
            wait_for(&format!("{d} pid"), Duration::from_secs(10), || {
                fs::read_to_string(&p)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .is_some()
            });
            if let Some(pid) = fs::read_to_string(&p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                self.frr_pids.push(pid);
            }
        }
    }

    fn start_lbd(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = fs::File::create(self.dir.join(format!("n{}.log", n.id))).expect("log");
        // nsenter, not `ip netns exec`: the latter also makes a mount
        // namespace with a fresh /sys, without the bpffs lbd pins into.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", n.ns.name))
            .args([LBD, "run", "-c"])
            .arg(&n.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("lbd");
        n.lbd = Some(child);
    }

    /// Next hops of the IPv6 VIP route in the router's kernel.
    fn route6_via(&self) -> Vec<String> {
        vias(
            &self
                .router
                .ip(&format!("-6 route show {VIP6}/128"))
                .unwrap_or_default(),
        )
    }

    /// Next hops of the IPv4 VIP route in the router's kernel (and a check
    /// that no lbd died).
    fn route_via(&mut self) -> Vec<String> {
        for n in &mut self.nodes {
            if let Some(Ok(Some(st))) = n.lbd.as_mut().map(|c| c.try_wait()) {
                let log =
                    fs::read_to_string(self.dir.join(format!("n{}.log", n.id))).unwrap_or_default();
                panic!("lbd on node {} exited ({st}):\n{log}", n.id);
            }
        }
        vias(
            &self
                .router
                .ip(&format!("route show {VIP}/32"))
                .unwrap_or_default(),
        )
    }

    fn status(&self, i: usize) -> Value {
        let out = Command::new(LBD)
            .args(["status", "--json", "-s"])
            .arg(&self.nodes[i].socket)
            .output()
            .expect("lbd status");
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn ctl(&self, i: usize, what: &str) -> String {
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

    /// GET `path` on the VIP from the client namespace; the first body line.
    fn get(&self, path: &str) -> anyhow::Result<String> {
        self.get_from(IpAddr::V4(VIP), path)
    }

    fn get_from(&self, vip: IpAddr, path: &str) -> anyhow::Result<String> {
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
}

/// The `via` addresses of `ip route show` output, sorted.
fn vias(out: &str) -> Vec<String> {
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

fn via_all(ids: &[u16]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|&i| node_addr(i).to_string()).collect();
    v.sort();
    v
}

fn share_nodes(status: &Value) -> Vec<String> {
    let mut v: Vec<String> = status["vips"][0]["share"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn three_nodes_with_frr_announce_drain_fail_and_reload() {
    let mut c = build();

    // 1. All nodes announce: 3-way ECMP in the router's kernel.
    wait_for("3-way ECMP route", Duration::from_secs(30), || {
        c.route_via() == via_all(&[1, 2, 3])
    });
    wait_for(
        "every node sees every member up",
        Duration::from_secs(10),
        || {
            (0..3).all(|i| {
                let s = c.status(i);
                s["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().all(|m| m["up"] == true && m["state"] == "active"))
                    && share_nodes(&s) == ["1", "2", "3"]
            })
        },
    );
    for i in 0..3 {
        let s = c.status(i);
        assert_eq!(s["node"]["state"], "active", "{s}");
        assert_eq!(s["vips"][0]["announced"], true);
        assert_eq!(s["vips"][0]["in_table"], true);
        assert_eq!(s["bgp"][0]["state"], "Established");
        assert_eq!(s["bgp"][0]["prefixes_sent"], 2);
        assert!(
            s["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["generation_matches"] == true))
        );
    }
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..30 {
        served.insert(c.get("/whoami").expect("GET through the VIP"));
    }
    assert_eq!(
        served.len(),
        3,
        "every node serves new connections: {served:?}"
    );
    // The IPv6 VIP: its own table and checks, announced over the IPv4
    // sessions with an IPv6 next hop, carried in IPv4 GUE between nodes.
    let via6: Vec<String> = (1..=3).map(|i| format!("2001:db8:{i}::2")).collect();
    wait_for(
        "3-way ECMP route for the IPv6 VIP",
        Duration::from_secs(10),
        || c.route6_via() == via6,
    );
    let mut served6 = std::collections::BTreeSet::new();
    for _ in 0..30 {
        served6.insert(
            c.get_from(IpAddr::V6(VIP6), "/whoami")
                .expect("GET through the IPv6 VIP"),
        );
    }
    assert_eq!(
        served6.len(),
        3,
        "every node serves the IPv6 VIP: {served6:?}"
    );
    assert_eq!(c.status(0)["vips"][1]["announced"], true);
    let text = c.ctl(0, "status");
    eprintln!("lbd status on node 1:\n{text}");
    assert!(
        text.contains("node 1 ACTIVE") && text.contains("Established"),
        "{text}"
    );
    // Metrics are refreshed every second.
    wait_for(
        "metrics show the announcement",
        Duration::from_secs(5),
        || {
            let m = c.nodes[0]
                .ns
                .exec("curl", &["-s", "http://127.0.0.1:9181/metrics"])
                .unwrap_or_default();
            m.contains("lbd_vip_announced{vip=\"198.51.100.10\"} 1")
                && m.contains("lbd_bgp_established{peer=\"192.0.2.17\"} 1")
                && m.contains("lbd_table_buckets{vip=\"198.51.100.10\",node=\"3\"}")
        },
    );

    // 2. Drain node 3 while long-lived downloads run everywhere.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut streams = Vec::new();
    for _ in 0..24 {
        let tx = tx.clone();
        streams.push(c.client.spawn(move || {
            let s = TcpStream::connect_timeout(
                &SocketAddr::new(IpAddr::V4(VIP), 80),
                Duration::from_secs(3),
            );
            let mut s = match s {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(format!("connect: {e}"));
                    return Err(e.into());
                }
            };
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /stream?ms=5000 HTTP/1.0\r\n\r\n")?;
            let mut r = BufReader::new(s);
            let mut lines = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line)? > 0 {
                let l = line.trim().to_string();
                if l.starts_with("node") && !lines.iter().any(|x: &String| x.starts_with("node")) {
                    let _ = tx.send(l.clone());
                }
                lines.push(l);
                line.clear();
            }
            Ok(lines)
        }));
    }
    let mut first: Vec<String> = (0..24)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("stream started")
        })
        .collect();
    first.sort();
    assert!(first.iter().all(|n| n.starts_with("node")), "{first:?}");
    assert!(
        first.iter().any(|n| n == "node3"),
        "some stream on node3: {first:?}"
    );
    let msg = c.ctl(2, "drain");
    assert!(msg.contains("draining"), "{msg}");
    // GRACEFUL_SHUTDOWN makes FRR drop node 3 from the ECMP set at once;
    // the withdraw follows after shutdown_wait.
    wait_for("node 3 out of the route", Duration::from_secs(10), || {
        c.route_via() == via_all(&[1, 2])
    });
    wait_for("node 3 withdrawn", Duration::from_secs(10), || {
        c.status(2)["vips"][0]["announced"] == false
    });
    wait_for(
        "nodes 1 and 2 give node 3's buckets away",
        Duration::from_secs(5),
        || (0..2).all(|i| share_nodes(&c.status(i)) == ["1", "2"]),
    );
    let s3 = c.status(2);
    assert_eq!(s3["node"]["state"], "draining");
    assert_eq!(s3["vips"][0]["announced"], false);
    assert!(c.status(0)["vips"][0]["second_hops"].as_u64().unwrap_or(0) > 0);
    // `lbd table`: node 3's old buckets now have node 1 or 2 first, 3 second.
    let out = Command::new(LBD)
        .args(["table", &VIP.to_string(), "-s"])
        .arg(&c.nodes[0].socket)
        .output()
        .expect("lbd table");
    let table: Value = serde_json::from_slice(&out.stdout).expect("table JSON");
    let pairs = table["second_hop_pairs"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        pairs.contains_key("1->3") && pairs.contains_key("2->3"),
        "{table}"
    );
    assert_eq!(table["table_size"], 4093);
    for _ in 0..20 {
        let who = c.get("/whoami").expect("GET during drain");
        assert_ne!(who, "node3", "a new connection reached the draining node");
    }
    for t in streams {
        let lines = t.join().expect("stream thread").expect("stream");
        let lines: Vec<String> = lines
            .into_iter()
            .skip_while(|l| !l.is_empty())
            .skip(1)
            .collect();
        let node = lines
            .iter()
            .find(|l| l.starts_with("node"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            lines.last().map(String::as_str),
            Some("done"),
            "stream from {node} cut: {lines:?}"
        );
        assert!(
            lines.iter().all(|l| l == &node || l == "done"),
            "stream switched nodes: {lines:?}"
        );
    }

    // 3. Undrain: node 3 is back in the route and the tables.
    c.ctl(2, "undrain");
    wait_for("node 3 announced again", Duration::from_secs(10), || {
        c.route_via() == via_all(&[1, 2, 3])
    });
    wait_for("node 3 back in every table", Duration::from_secs(5), || {
        (0..3).all(|i| share_nodes(&c.status(i)) == ["1", "2", "3"])
    });

    // 4. Node 2's backend stops: its route goes within fall x interval + 1 s,
    //    and the other nodes drop it from their tables.
    let start = Instant::now();
    if let Some(mut b) = c.nodes[1].backend.take() {
        b.stop();
    }
    let limit = Duration::from_millis(CHECK_FALL * CHECK_INTERVAL_MS + 1000);
    wait_for("node 2 withdrawn", Duration::from_secs(10), || {
        c.route_via() == via_all(&[1, 3])
    });
    let took = start.elapsed();
    assert!(took <= limit, "withdraw took {took:?}, limit {limit:?}");
    eprintln!("backend stop to route withdrawn in the router's kernel: {took:?}");
    wait_for("nodes 1 and 3 drop node 2", Duration::from_secs(5), || {
        [0, 2]
            .iter()
            .all(|&i| share_nodes(&c.status(i)) == ["1", "3"])
    });
    let s2 = c.status(1);
    assert_eq!(s2["vips"][0]["healthy"], false);
    assert_eq!(s2["vips"][0]["announced"], false);
    assert_eq!(s2["node"]["state"], "down");

    // 5. SIGHUP with a broken config on node 1 changes nothing.
    let before = c.status(0);
    let good = fs::read_to_string(&c.nodes[0].config).expect("config");
    fs::write(
        &c.nodes[0].config,
        good.replace("ports = [80]", "ports = [0]"),
    )
    .expect("write");
    let pid = c.nodes[0].lbd.as_ref().map(|ch| ch.id()).expect("pid");
    signal(pid, libc::SIGHUP);
    wait_for("reload refused", Duration::from_secs(5), || {
        c.status(0)["node"]["last_reload"]
            .as_str()
            .is_some_and(|r| r.starts_with("refused"))
    });
    let after = c.status(0);
    assert!(
        after["node"]["last_reload"]
            .as_str()
            .unwrap_or("")
            .contains("vips[0].ports[0]: 0 is not a port"),
        "{after}"
    );
    assert_eq!(after["vips"][0]["announced"], true);
    assert_eq!(after["vips"][0]["share"], before["vips"][0]["share"]);
    assert_eq!(after["node"]["generation"], before["node"]["generation"]);
    assert!(
        after["bgp"][0]["uptime_s"].as_u64() >= before["bgp"][0]["uptime_s"].as_u64(),
        "BGP session flapped"
    );
    assert_eq!(c.route_via(), via_all(&[1, 3]));
    fs::write(&c.nodes[0].config, good).expect("restore");

    // 6. Restart safety: node 1's lbd stops (SIGTERM) and starts again. The
    //    router keeps its route (graceful restart), the pinned XDP program
    //    keeps forwarding, and the restarted daemon resumes its table.
    let mut old = c.nodes[0].lbd.take().expect("lbd 1");
    signal(old.id(), libc::SIGTERM);
    wait_for("lbd 1 stopped", Duration::from_secs(10), || {
        matches!(old.try_wait(), Ok(Some(_)))
    });
    let down = Instant::now();
    while down.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            c.route_via(),
            via_all(&[1, 3]),
            "route lost while lbd restarts"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        c.get("/whoami").expect("GET while lbd 1 is stopped");
    }
    c.start_lbd(0);
    wait_for("lbd 1 back, announced", Duration::from_secs(15), || {
        let s = c.status(0);
        s["vips"][0]["announced"] == true && s["bgp"][0]["state"] == "Established"
    });
    let log = fs::read_to_string(c.dir.join("n1.log")).unwrap_or_default();
    assert!(
        log.contains("resuming the table found in the dataplane"),
        "{log}"
    );
    assert!(log.contains("restarting=true"), "{log}");
    wait_for(
        "node 1 back in the other tables",
        Duration::from_secs(5),
        || share_nodes(&c.status(2)) == ["1", "3"],
    );
    assert_eq!(c.route_via(), via_all(&[1, 3]));
}
