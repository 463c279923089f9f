//! Test lab: network namespaces with veth links, FRR and BIRD routers, and
//! speakers running inside a namespace on their own thread.
#![allow(dead_code)]

pub mod raw;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bgp_speaker::{PeerConfig, RouteAttrs, Speaker, SpeakerConfig};

pub const ROUTER_AS: u32 = 65000;
pub const VIP4: &str = "198.51.100.10/32";
pub const VIP6: &str = "2001:db8:ffff::10/128";

pub fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

pub fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "command failed: {cmd}\n{out}");
    out
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
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

/// Speaker i (1-based) addresses: router side and speaker side.
pub fn router_v4(i: usize) -> String {
    format!("192.0.2.{}", 4 * i - 3)
}
pub fn speaker_v4(i: usize) -> String {
    format!("192.0.2.{}", 4 * i - 2)
}
pub fn router_v6(i: usize) -> String {
    format!("2001:db8:{i}::1")
}
pub fn speaker_v6(i: usize) -> String {
    format!("2001:db8:{i}::2")
}

/// A router namespace linked to `n` speaker namespaces. Dropping it deletes
/// everything it created.
pub struct Lab {
    pub tag: String,
    pub router: String,
    pub speakers: Vec<String>,
    pub dir: PathBuf,
}

impl Lab {
    pub fn new(tag: &str, n: usize) -> Lab {
        let tag = format!("{tag}-{}", std::process::id());
        let router = format!("bgpt-{tag}-r");
        let speakers: Vec<String> = (1..=n).map(|i| format!("bgpt-{tag}-s{i}")).collect();
        let dir = PathBuf::from(format!("/tmp/bgpt-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let lab = Lab {
            tag,
            router,
            speakers,
            dir,
        };
        for ns in std::iter::once(&lab.router).chain(lab.speakers.iter()) {
            let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
            must(&format!("ip netns add {ns}"));
            must(&format!("ip -n {ns} link set lo up"));
            must(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
                 net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
                 net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1"
            ));
        }
        for (idx, ns) in lab.speakers.iter().enumerate() {
            let i = idx + 1;
            let r = &lab.router;
            must(&format!(
                "ip link add s{i} netns {r} type veth peer name uplink netns {ns}"
            ));
            must(&format!("ip -n {r} addr add {}/30 dev s{i}", router_v4(i)));
            must(&format!(
                "ip -n {r} addr add {}/64 dev s{i} nodad",
                router_v6(i)
            ));
            must(&format!(
                "ip -n {ns} addr add {}/30 dev uplink",
                speaker_v4(i)
            ));
            must(&format!(
                "ip -n {ns} addr add {}/64 dev uplink nodad",
                speaker_v6(i)
            ));
            must(&format!("ip -n {r} link set s{i} up"));
            must(&format!("ip -n {ns} link set uplink up"));
        }
        lab
    }

    /// Kernel routes of the router for `prefix` (`ip route show`).
    pub fn router_route(&self, prefix: &str) -> String {
        let fam = if prefix.contains(':') { "-6" } else { "-4" };
        sh(&format!("ip -n {} {fam} route show {prefix}", self.router)).1
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.router).chain(self.speakers.iter()) {
            let _ = sh(&format!("ip -n {ns} nexthop flush 2>/dev/null"));
            // Processes still inside the namespace (ours only) are killed by
            // PID before the namespace goes.
            let (_, pids) = sh(&format!("ip netns pids {ns} 2>/dev/null"));
            for pid in pids.split_whitespace() {
                let _ = sh(&format!("kill -9 {pid}"));
            }
            let _ = sh(&format!("ip netns del {ns}"));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Routers are killed outright: a graceful FRR stop takes ~2 s and the
/// namespace (with everything the daemon installed) is deleted right after.
fn kill_pid(pid: u32) {
    let _ = sh(&format!("kill -9 {pid} 2>/dev/null"));
    let _ = (0..100).any(|_| {
        // Gone, or a zombie waiting for whoever adopted the daemon.
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(st)
                if st
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) => {}
        }
        thread::sleep(Duration::from_millis(10));
        false
    });
}

/// Per-neighbour FRR options.
#[derive(Clone, Default)]
pub struct FrrNeighbor {
    pub addr: String,
    pub remote_as: u32,
    pub password: Option<String>,
    pub bfd: bool,
    pub ttl_security: bool,
    pub passive: bool,
}

/// Extra bgpd.conf lines: under `router bgp`, and in each address family.
#[derive(Default)]
pub struct FrrExtra {
    /// Before `router bgp` (route-maps, ...).
    pub preamble: String,
    pub global: String,
    pub af4: String,
    pub af6: String,
}

/// FRR 8.4 (zebra, bgpd, bfdd) in the router namespace.
pub struct Frr {
    pub run: PathBuf,
    pids: Vec<u32>,
}

impl Frr {
    pub fn start(lab: &Lab, neighbors: &[FrrNeighbor], extra: &FrrExtra) -> Frr {
        let extra_global = &extra.global;
        let run = lab.path("frr");
        fs::create_dir_all(&run).expect("frr dir");
        let mut c =
            String::from("frr defaults traditional\nhostname r\nroute-map DENY-ALL deny 10\n!\n");
        c += &extra.preamble;
        c += &format!(
            "router bgp {ROUTER_AS}\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n \
             no bgp default ipv4-unicast\n bgp bestpath as-path multipath-relax\n{extra_global}"
        );
        for n in neighbors {
            c += &format!(
                " neighbor {a} remote-as {r}\n neighbor {a} timers 3 9\n neighbor {a} timers connect 1\n",
                a = n.addr,
                r = n.remote_as
            );
            if let Some(p) = &n.password {
                c += &format!(" neighbor {} password {p}\n", n.addr);
            }
            if n.bfd {
                c += &format!(" neighbor {} bfd profile fast\n", n.addr);
            }
            if n.ttl_security {
                c += &format!(" neighbor {} ttl-security hops 1\n", n.addr);
            }
            if n.passive {
                c += &format!(" neighbor {} passive\n", n.addr);
            }
        }
        for af in ["ipv4", "ipv6"] {
            c += &format!(" address-family {af} unicast\n");
            for n in neighbors {
                c += &format!("  neighbor {} activate\n", n.addr);
            }
            c += if af == "ipv4" { &extra.af4 } else { &extra.af6 };
            c += "  maximum-paths 8\n exit-address-family\n";
        }
        c += "!\n";
        Frr::start_in(&lab.router, run, &c)
    }

    /// zebra, bfdd and bgpd with the given bgpd.conf in namespace `ns`.
    pub fn start_in(ns: &str, run: PathBuf, bgpd_conf: &str) -> Frr {
        fs::create_dir_all(&run).expect("frr dir");
        fs::write(run.join("bgpd.conf"), bgpd_conf).expect("bgpd.conf");
        fs::write(run.join("zebra.conf"), "hostname r\n").expect("zebra.conf");
        fs::write(
            run.join("bfdd.conf"),
            "bfd\n profile fast\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n !\n!\n",
        )
        .expect("bfdd.conf");
        must(&format!("chown -R frr:frr {}", run.display()));
        let r = run.display();
        let common = format!("-z {r}/zserv.api --vty_socket {r} -P 0");
        must(&format!(
            "ip netns exec {ns} /usr/lib/frr/zebra -d -f {r}/zebra.conf -i {r}/zebra.pid {common} -s 90000000"
        ));
        wait_for("zserv socket", Duration::from_secs(10), || {
            run.join("zserv.api").exists()
        });
        must(&format!(
            "ip netns exec {ns} /usr/lib/frr/bfdd -d -f {r}/bfdd.conf -i {r}/bfdd.pid {common} --bfdctl {r}/bfdd.sock"
        ));
        let mut frr = Frr {
            run,
            pids: Vec::new(),
        };
        for d in ["zebra", "bfdd"] {
            let p = frr.run.join(format!("{d}.pid"));
            wait_for(&format!("{d} pid file"), Duration::from_secs(10), || {
                read_pid(&p).is_some()
            });
            frr.pids.extend(read_pid(&p));
        }
        frr.start_bgpd(ns);
        frr
    }

    /// (Re)starts bgpd; returns its pid.
    pub fn start_bgpd(&mut self, ns: &str) -> u32 {
        let r = self.run.display();
        let pidf = self.run.join("bgpd.pid");
        let _ = fs::remove_file(&pidf);
        must(&format!(
            "ip netns exec {ns} /usr/lib/frr/bgpd -d -f {r}/bgpd.conf -i {r}/bgpd.pid -z {r}/zserv.api --vty_socket {r} -P 0"
        ));
        wait_for("bgpd pid file", Duration::from_secs(10), || {
            read_pid(&pidf).is_some()
        });
        let pid = read_pid(&pidf).unwrap_or(0);
        self.pids.push(pid);
        pid
    }

    /// kill -9 bgpd (zebra and bfdd stay).
    pub fn kill_bgpd(&mut self, pid: u32) {
        kill_pid(pid);
        self.pids.retain(|p| *p != pid);
    }

    pub fn vtysh(&self, cmd: &str) -> String {
        sh(&format!(
            "vtysh --vty_socket {} -c '{cmd}' 2>&1",
            self.run.display()
        ))
        .1
    }

    /// Several commands in one vtysh call (`-c` each), e.g. configuration.
    pub fn vtysh_multi(&self, cmds: &[&str]) -> String {
        let mut c = Command::new("vtysh");
        c.arg("--vty_socket").arg(&self.run);
        for x in cmds {
            c.arg("-c").arg(x);
        }
        let out = c.output().expect("vtysh");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    pub fn bgpd_pid(&self) -> u32 {
        read_pid(&self.run.join("bgpd.pid")).unwrap_or(0)
    }

    /// FRR's view of one neighbour as JSON text (`show bgp neighbors X json`).
    pub fn neighbor_state(&self, addr: &str) -> String {
        let out = self.vtysh(&format!("show bgp neighbors {addr} json"));
        out.split("\"bgpState\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for pid in self.pids.iter().rev() {
            kill_pid(*pid);
        }
    }
}

/// BIRD 2 in the router namespace.
pub struct Bird {
    pub ctl: PathBuf,
    pid: Option<u32>,
}

impl Bird {
    /// `neighbors`: (neighbour address, its AS, our local address).
    pub fn start(lab: &Lab, neighbors: &[(String, u32, String)]) -> Bird {
        let run = lab.path("bird");
        fs::create_dir_all(&run).expect("bird dir");
        let mut c = String::from(
            "router id 192.0.2.1;\nprotocol device {}\n\
             protocol kernel kernel4 { ipv4 { export where source = RTS_BGP; }; merge paths on limit 16; }\n\
             protocol kernel kernel6 { ipv6 { export where source = RTS_BGP; }; merge paths on limit 16; }\n\
             template bgp backend { local as 65000; hold time 9; keepalive time 3; connect retry time 1; \
             connect delay time 1; ipv4 { import all; export none; }; ipv6 { import all; export none; }; }\n",
        );
        for (i, (addr, asn, local)) in neighbors.iter().enumerate() {
            c += &format!(
                "protocol bgp n{i} from backend {{ local {local} as 65000; neighbor {addr} as {asn}; }}\n"
            );
        }
        fs::write(run.join("bird.conf"), c).expect("bird.conf");
        let r = run.display();
        must(&format!(
            "ip netns exec {} bird -c {r}/bird.conf -s {r}/bird.ctl -P {r}/bird.pid",
            lab.router
        ));
        let pidf = run.join("bird.pid");
        wait_for("bird pid", Duration::from_secs(10), || {
            read_pid(&pidf).is_some()
        });
        Bird {
            ctl: run.join("bird.ctl"),
            pid: read_pid(&pidf),
        }
    }

    pub fn birdc(&self, cmd: &str) -> String {
        sh(&format!("birdc -s {} {cmd} 2>&1", self.ctl.display())).1
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            kill_pid(pid);
        }
    }
}

/// A speaker running on its own thread inside a namespace, so every socket
/// it opens belongs to that namespace.
pub struct NsSpeaker {
    pub speaker: Speaker,
    /// The runtime on the namespace's thread (for calls that open sockets).
    pub rt: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NsSpeaker {
    pub fn start(ns: &str, cfg: SpeakerConfig) -> NsSpeaker {
        let ns = ns.to_string();
        let (tx, rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
        let thread = thread::spawn(move || {
            let f = fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let speaker = Speaker::start(cfg).await.expect("start speaker");
                tx.send((speaker.clone(), tokio::runtime::Handle::current()))
                    .expect("hand speaker out");
                let graceful = stop_rx.await.unwrap_or(false);
                if graceful {
                    speaker.close_for_restart().await;
                } else {
                    speaker.shutdown().await;
                }
            });
        });
        let (speaker, rt) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("speaker started");
        NsSpeaker {
            speaker,
            rt,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the speaker's runtime, inside its namespace, and waits.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std_mpsc::channel();
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("task on the speaker's runtime")
    }

    pub fn established(&self) -> usize {
        self.speaker
            .peers()
            .iter()
            .filter(|p| p.state == bgp_speaker::State::Established)
            .count()
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(false);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NsSpeaker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Speaker config with one peer per given router address.
pub fn speaker_config(i: usize, routers: &[&str]) -> SpeakerConfig {
    SpeakerConfig {
        local_as: 65100 + i as u32,
        router_id: speaker_v4(i).parse().expect("router id"),
        hold_time: 9,
        listen_port: Some(179),
        graceful_restart: None,
        peers: routers
            .iter()
            .map(|r| {
                let addr: IpAddr = r.parse().expect("router address");
                PeerConfig::new(addr, ROUTER_AS)
            })
            .collect(),
    }
}

/// `bgp-speakerd` as a separate process inside a namespace (for kill -9).
pub struct Daemon {
    child: std::process::Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stdin: Option<std::process::ChildStdin>,
}

impl Daemon {
    pub fn start(ns: &str, args: &[&str]) -> Daemon {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_bgp-speakerd")])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn bgp-speakerd");
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l2 = lines.clone();
        thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let stdin = child.stdin.take();
        Daemon {
            child,
            lines,
            stdin,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&mut self, cmd: &str) {
        use std::io::Write;
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{cmd}");
        }
    }

    /// Number of "to":"Established" events printed so far.
    pub fn established_events(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"to\":\"Established\""))
            .count()
    }

    pub fn kill9(&mut self) {
        let _ = sh(&format!("kill -9 {}", self.child.id()));
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = sh(&format!("kill -9 {} 2>/dev/null", self.child.id()));
        let _ = self.child.wait();
    }
}

/// Both speakers announce the IPv4 and the IPv6 VIP: the router's kernel
/// gets a 2-way ECMP route for each; speaker 1 withdraws: only speaker 2
/// is left; speaker 2 withdraws: the routes are gone.
pub fn announce_ecmp_then_withdraw_one_by_one(lab: &Lab, s: &[NsSpeaker]) {
    for sp in s {
        sp.speaker
            .announce(VIP4.parse().unwrap(), RouteAttrs::default())
            .unwrap();
        sp.speaker
            .announce(VIP6.parse().unwrap(), RouteAttrs::default())
            .unwrap();
    }
    let both = |prefix: &str, a: &str, b: &str| {
        let r = lab.router_route(prefix);
        r.contains(&format!("via {a} ")) && r.contains(&format!("via {b} "))
    };
    wait_for("IPv4 ECMP route", Duration::from_secs(10), || {
        both(VIP4, &speaker_v4(1), &speaker_v4(2))
    });
    wait_for("IPv6 ECMP route", Duration::from_secs(10), || {
        both(VIP6, &speaker_v6(1), &speaker_v6(2))
    });
    s[0].speaker.withdraw(VIP4.parse().unwrap());
    s[0].speaker.withdraw(VIP6.parse().unwrap());
    let only = |prefix: &str, keep: &str, gone: &str| {
        let r = lab.router_route(prefix);
        r.contains(keep) && !r.contains(&format!("{gone} "))
    };
    wait_for(
        "IPv4 route via speaker 2 only",
        Duration::from_secs(10),
        || only(VIP4, &speaker_v4(2), &speaker_v4(1)),
    );
    wait_for(
        "IPv6 route via speaker 2 only",
        Duration::from_secs(10),
        || only(VIP6, &speaker_v6(2), &speaker_v6(1)),
    );
    s[1].speaker.withdraw(VIP4.parse().unwrap());
    s[1].speaker.withdraw(VIP6.parse().unwrap());
    wait_for("routes gone", Duration::from_secs(10), || {
        lab.router_route(VIP4).trim().is_empty() && lab.router_route(VIP6).trim().is_empty()
    });
}
