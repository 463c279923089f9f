//! Test lab: network namespaces with veth links, FRR and BIRD routers (the
//! shared `lab` crate's namespaces, launchers and waits, with the configs
//! these tests need), and speakers running inside a namespace on their own
//! thread.
#![allow(dead_code)]

pub mod raw;

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use bgp_speaker::{PeerConfig, RouteAttrs, Speaker, SpeakerConfig};
use lab::Netns;
use lab::process::kill_pid;
use lab::router::{BFDD_FAST, FrrConfig};
pub use lab::wait::wait_for;

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

/// The sysctls of every namespace of the lab: a router that forwards and
/// hashes ECMP on L4 ports.
const SYSCTLS: [(&str, &str); 6] = [
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.fib_multipath_hash_policy", "1"),
    ("net.ipv6.fib_multipath_hash_policy", "1"),
];

/// A router namespace linked to `n` speaker namespaces. Dropping it deletes
/// everything it created.
pub struct Lab {
    pub tag: String,
    pub router: String,
    pub speakers: Vec<String>,
    pub dir: PathBuf,
    namespaces: Vec<Netns>,
}

impl Lab {
    pub fn new(tag: &str, n: usize) -> Lab {
        let tag = format!("{tag}-{}", std::process::id());
        let router = format!("bgpt-{tag}-r");
        let speakers: Vec<String> = (1..=n).map(|i| format!("bgpt-{tag}-s{i}")).collect();
        let dir = PathBuf::from(format!("/tmp/bgpt-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let mut namespaces = Vec::new();
        for name in std::iter::once(&router).chain(speakers.iter()) {
            let _ = lab::run("ip", &["netns", "del", name]);
            let ns = Netns::named(name).expect("netns");
            ns.sysctls(&SYSCTLS).expect("sysctl");
            namespaces.push(ns);
        }
        for i in 1..=n {
            let (r, s) = (&namespaces[0], &namespaces[i]);
            lab::veth(&format!("s{i}"), r, "uplink", s, 1500).expect("veth");
            for a in [
                format!("addr add {}/30 dev s{i}", router_v4(i)),
                format!("addr add {}/64 dev s{i} nodad", router_v6(i)),
            ] {
                r.ip(&a).expect(&a);
            }
            for a in [
                format!("addr add {}/30 dev uplink", speaker_v4(i)),
                format!("addr add {}/64 dev uplink nodad", speaker_v6(i)),
            ] {
                s.ip(&a).expect(&a);
            }
        }
        Lab {
            tag,
            router,
            speakers,
            dir,
            namespaces,
        }
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
        for ns in &self.namespaces {
            // Processes still inside the namespace (ours only) are killed by
            // PID before the namespace goes (when `namespaces` drops).
            let pids = lab::run("ip", &["netns", "pids", &ns.name]).unwrap_or_default();
            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                kill_pid(pid);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
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

/// FRR 8.4 (zebra, bgpd, bfdd) in the router namespace: `lab::router::Frr`
/// with these tests' bgpd.conf.
pub struct Frr {
    pub run: PathBuf,
    daemons: lab::router::Frr,
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
        let conf = FrrConfig {
            zebra: "hostname r\n",
            bfdd: BFDD_FAST,
            bgpd: bgpd_conf,
        };
        let daemons = lab::router::Frr::start(ns, run.clone(), &conf).expect("FRR");
        Frr { run, daemons }
    }

    /// (Re)starts bgpd; returns its pid.
    pub fn start_bgpd(&mut self) -> u32 {
        self.daemons.start_bgpd().expect("bgpd")
    }

    /// kill -9 bgpd (zebra and bfdd stay).
    pub fn kill_bgpd(&mut self) {
        self.daemons.kill_bgpd().expect("kill bgpd");
    }

    /// vtysh's output (stdout and stderr) for several commands (`-c`
    /// each), e.g. configuration.
    pub fn vtysh_multi(&self, cmds: &[&str]) -> String {
        let (out, err) = self.daemons.vtysh_output(cmds).expect("vtysh");
        out + &err
    }

    pub fn vtysh(&self, cmd: &str) -> String {
        self.vtysh_multi(&[cmd])
    }

    pub fn bgpd_pid(&self) -> u32 {
        self.daemons.bgpd_pid().unwrap_or(0)
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

/// BIRD 2 in the router namespace: `lab::router::Bird` with these tests'
/// config.
pub struct Bird {
    pub ctl: PathBuf,
    daemon: lab::router::Bird,
}

impl Bird {
    /// `neighbors`: (neighbour address, its AS, our local address).
    pub fn start(lab: &Lab, neighbors: &[(String, u32, String)]) -> Bird {
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
        let daemon = lab::router::Bird::start(&lab.router, lab.path("bird"), &c).expect("bird");
        Bird {
            ctl: daemon.ctl(),
            daemon,
        }
    }

    /// birdc's output (stdout and stderr).
    pub fn birdc(&self, cmd: &str) -> String {
        let (out, err) = self.daemon.birdc_output(cmd).expect("birdc");
        out + &err
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
            lab::enter_named(&ns).expect("setns");
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
        self.stop_with(false);
    }

    /// Stops as a planned restart does: no NOTIFICATION, sessions closed
    /// for the routers' graceful-restart helpers.
    pub fn stop_for_restart(&mut self) {
        self.stop_with(true);
    }

    fn stop_with(&mut self, for_restart: bool) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(for_restart);
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
        let mut child = lab::process::nsenter_command(ns)
            .arg(env!("CARGO_BIN_EXE_bgp-speakerd"))
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
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
