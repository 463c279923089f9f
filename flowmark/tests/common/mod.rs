//! Test lab: two network namespaces joined by a veth pair, processes
//! started inside them (killed by PID on drop), and an AF_PACKET capture
//! that reads the IPv6 flow labels of real packets. Namespaces, processes
//! and waits are the shared `lab` crate's.
#![allow(dead_code)]

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use lab::Netns;
use lab::process::{ip_netns_exec, stop_child};
pub use lab::wait::wait_value;

pub const SRV6: &str = "2001:db8:7::1";
pub const CLI6: &str = "2001:db8:7::2";
pub const SRV4: &str = "192.0.2.1";
pub const CLI4: &str = "192.0.2.2";

pub fn sh(args: &[&str]) -> String {
    lab::run(args[0], &args[1..]).unwrap_or_else(|e| panic!("{e:#}"))
}

pub struct Lab {
    pub srv: String,
    pub cli: String,
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    /// Deleted on drop, after the children are stopped.
    namespaces: Vec<Netns>,
}

impl Lab {
    /// `srv` holds the storage node (veth0), `cli` the client (veth1).
    pub fn new(tag: &str) -> Lab {
        let srv_ns = Netns::new(&format!("flm-s-{tag}-")).expect("server netns");
        let cli_ns = Netns::new(&format!("flm-c-{tag}-")).expect("client netns");
        let dir = std::env::temp_dir().join(lab::unique(&format!("flm-{tag}-")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        lab::veth("veth0", &srv_ns, "veth1", &cli_ns, 1500).expect("veth");
        for (ns, dev, a6, a4) in [
            (&srv_ns, "veth0", SRV6, SRV4),
            (&cli_ns, "veth1", CLI6, CLI4),
        ] {
            ns.ip(&format!("addr add {a6}/64 dev {dev} nodad"))
                .expect("address");
            ns.ip(&format!("addr add {a4}/24 dev {dev}"))
                .expect("address");
            // Unmarked packets must carry label 0, not the kernel's
            // automatic per-flow label, so the test can tell them apart.
            ns.sysctl("net.ipv6.auto_flowlabels", "0").expect("sysctl");
        }
        Lab {
            srv: srv_ns.name.clone(),
            cli: cli_ns.name.clone(),
            dir,
            children: vec![],
            namespaces: vec![srv_ns, cli_ns],
        }
    }

    /// Starts a process inside `ns`; stdout and stderr go to DIR/NAME.log.
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) -> &mut Child {
        let log = File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = ip_netns_exec(ns)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push((name.to_string(), child));
        &mut self.children.last_mut().unwrap().1
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until DIR/NAME.log contains `text`; fails early if the process died.
    pub fn wait_log(&mut self, name: &str, text: &str) {
        let what = format!("{text:?} in {name}'s log");
        let found = lab::wait::poll(&what, Duration::from_secs(20), || {
            if self.log(name).contains(text) {
                return Some(Ok(()));
            }
            let exited = self
                .children
                .iter_mut()
                .find(|(n, _)| n == name)
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            exited.map(|st| Err(format!("{name} exited ({st}) before {text:?}")))
        });
        match found {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}:\n{}", self.log(name)),
            Err(e) => panic!("{name}: {e}:\n{}", self.log(name)),
        }
    }

    /// Waits (bounded) for a process started with `spawn` to exit by itself.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> std::process::ExitStatus {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let st = wait_value(&format!("{name} to exit"), timeout, || {
            self.children[i].1.try_wait().ok().flatten()
        });
        self.children.remove(i);
        st
    }

    /// SIGTERM to one process by PID, then wait for it (bounded).
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.children.remove(i);
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        ip_netns_exec(ns).args(args).output().unwrap()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // `ip netns exec` execs the command, so the child's PID is the
        // process itself; the namespaces go after (field order).
        for (_, c) in self.children.iter_mut() {
            stop_child(c, Duration::from_secs(5));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One captured IPv6 TCP/UDP packet.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub label: u32,
    /// TCP flags (0 for UDP).
    pub flags: u8,
}

pub const TCP_FIN: u8 = 0x01;

type Frames = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// An AF_PACKET capture on `iface` inside `ns`, in a thread of its own.
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Frames,
    thread: Option<JoinHandle<u32>>,
}

impl Capture {
    pub fn start(ns: &str, iface: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let frames: Frames = Default::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, iface, stop2, out) = (
            ns.to_string(),
            iface.to_string(),
            stop.clone(),
            frames.clone(),
        );
        let thread = std::thread::spawn(move || {
            lab::enter_named(&ns).expect("setns");
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                );
                assert!(fd >= 0, "AF_PACKET socket");
                let name = std::ffi::CString::new(iface).unwrap();
                let ifindex = libc::if_nametoindex(name.as_ptr());
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                sll.sll_ifindex = ifindex as i32;
                assert_eq!(
                    libc::bind(
                        fd,
                        &sll as *const _ as *const libc::sockaddr,
                        std::mem::size_of_val(&sll) as u32
                    ),
                    0
                );
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const _,
                    16,
                );
                // FORCE: past net.core.rmem_max (208 KiB, three GSO
                // frames), so a busy machine does not make the capture
                // lose packets; losses are counted and fail the test.
                let big: i32 = 64 << 20;
                assert_eq!(
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        &big as *const _ as *const _,
                        4,
                    ),
                    0,
                    "SO_RCVBUFFORCE"
                );
                // tpacket_stats {packets, drops}; reading resets them, so
                // the first read starts the count here.
                let drops = || {
                    let mut stats = [0u32; 2];
                    let mut len = 8u32;
                    libc::getsockopt(
                        fd,
                        libc::SOL_PACKET,
                        libc::PACKET_STATISTICS,
                        stats.as_mut_ptr() as *mut _,
                        &mut len,
                    );
                    stats[1]
                };
                drops();
                ready_tx.send(()).unwrap();
                let mut buf = vec![0u8; 65536 + 128];
                loop {
                    // Once stopped, drain what is already queued.
                    let stopping = stop2.load(Ordering::SeqCst);
                    let flags = if stopping { libc::MSG_DONTWAIT } else { 0 };
                    let n = libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), flags);
                    if n > 0 {
                        // Only headers are needed: keep the first 128 bytes.
                        out.lock()
                            .unwrap()
                            .push(buf[..(n as usize).min(128)].to_vec());
                    } else if stopping {
                        break;
                    }
                }
                let lost = drops();
                libc::close(fd);
                lost
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("capture ready");
        Capture {
            stop,
            frames,
            thread: Some(thread),
        }
    }

    /// The packets captured so far.
    pub fn packets(&self) -> Vec<Packet> {
        let frames = self.frames.lock().unwrap();
        frames.iter().filter_map(|f| parse_frame(f)).collect()
    }

    /// Waits until the packets captured so far satisfy `done`.
    pub fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&[Packet]) -> bool) {
        wait_value(what, timeout, || done(&self.packets()).then_some(()));
    }

    /// Stops the capture; every packet it saw (it fails if it lost any).
    pub fn finish(mut self) -> Vec<Packet> {
        self.stop.store(true, Ordering::SeqCst);
        let drops = self.thread.take().unwrap().join().unwrap();
        assert_eq!(drops, 0, "the capture lost {drops} packets");
        self.packets()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn parse_frame(f: &[u8]) -> Option<Packet> {
    if f.len() < 14 + 40 + 4 || f[12..14] != [0x86, 0xdd] || !(f[20] == 6 || f[20] == 17) {
        return None;
    }
    let ip = &f[14..];
    let first = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
    let addr = |o: usize| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap());
    let tcp = f[20] == 6 && ip.len() > 40 + 13;
    Some(Packet {
        src: addr(8),
        dst: addr(24),
        sport: u16::from_be_bytes([ip[40], ip[41]]),
        dport: u16::from_be_bytes([ip[42], ip[43]]),
        label: first & 0xFFFFF,
        flags: if tcp { ip[40 + 13] } else { 0 },
    })
}

/// The TCP connection between ports `a` and `b` is closed in the capture:
/// both sides sent their FIN and the last FIN was acknowledged, so neither
/// side sends another packet of it.
pub fn tcp_closed(packets: &[Packet], a: u16, b: u16) -> bool {
    let of_flow = |p: &&Packet| (p.sport, p.dport) == (a, b) || (p.sport, p.dport) == (b, a);
    let flow: Vec<&Packet> = packets.iter().filter(of_flow).collect();
    let fin_from = |port: u16| {
        flow.iter()
            .position(|p| p.sport == port && p.flags & TCP_FIN != 0)
    };
    let (Some(fa), Some(fb)) = (fin_from(a), fin_from(b)) else {
        return false;
    };
    let last_fin = fa.max(fb);
    let acker = flow[last_fin].dport;
    flow[last_fin + 1..].iter().any(|p| p.sport == acker)
}

/// Runs `f` in a thread that entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        lab::enter_named(&ns).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// The captured packets of one flow, by its ports as it leaves the node.
pub fn flow_packets(packets: &[Packet], sport: u16, dport: u16) -> Vec<&Packet> {
    packets
        .iter()
        .filter(|p| p.sport == sport && p.dport == dport)
        .collect()
}

/// Every packet carries `semantic` (experiment and activity bits) and the
/// same whole label: one entropy for the flow.
pub fn assert_one_label(what: &str, packets: &[&Packet], semantic: u32) {
    assert!(!packets.is_empty(), "{what}: no packets");
    for p in packets {
        assert_eq!(
            p.label & flowmark_common::SEMANTIC_MASK,
            semantic,
            "{what}: label {:#07x}",
            p.label
        );
        assert_eq!(
            p.label, packets[0].label,
            "{what}: entropy changed within the flow"
        );
    }
}

/// No packet carries a label.
pub fn assert_unmarked(what: &str, packets: &[&Packet]) {
    if let Some(p) = packets.iter().find(|p| p.label != 0) {
        panic!("{what}: marked {:#07x}: {p:?}", p.label);
    }
}

/// curl inside the client namespace from a fixed local port (so the test
/// knows the 5-tuple in advance). Returns the body length.
pub fn curl(lab: &Lab, url: &str, local_port: u16, headers: &[&str]) -> usize {
    let lp = local_port.to_string();
    let mut args = vec![
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "20",
        "--local-port",
        &lp,
        "-o",
        "-",
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let o = lab.exec(&lab.cli, &args);
    assert!(
        o.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout.len()
}

/// GET http://127.0.0.1:PORT/metrics inside `ns`.
pub fn metrics(lab: &Lab, ns: &str, port: u16) -> String {
    metrics_at(lab, ns, &format!("127.0.0.1:{port}"))
}

/// GET http://ADDR/metrics inside `ns` (ADDR: `host:port`, `[v6]:port`).
pub fn metrics_at(lab: &Lab, ns: &str, addr: &str) -> String {
    let o = lab.exec(
        ns,
        &[
            "curl",
            "-sS",
            "-g",
            "--max-time",
            "5",
            &format!("http://{addr}/metrics"),
        ],
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sum of a metric over all series whose label set contains every `want`.
pub fn metric_sum(text: &str, name: &str, want: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One request/reply on the API socket.
pub fn api(path: &Path, request: &str) -> serde_json::Value {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("api connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or(serde_json::Value::Null)
}

pub fn read_all(path: &Path) -> String {
    let mut s = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    s
}

pub fn flowmark_bin() -> &'static str {
    env!("CARGO_BIN_EXE_flowmark")
}

/// A minimal nginx config serving DIR/www on port 8080 (v4 and v6), with
/// `extra` inserted in the server block and `http_extra` in http.
pub fn nginx_conf(lab: &Lab, main_extra: &str, http_extra: &str, extra: &str) -> String {
    let d = lab.dir.to_str().unwrap();
    std::fs::create_dir_all(lab.dir.join("www")).unwrap();
    std::fs::create_dir_all(lab.dir.join("tmp")).unwrap();
    // What start_node polls: a file, so the poll leaves no [error] line
    // (403 for the directory index, 404) in nginx's error log.
    std::fs::write(lab.dir.join("www/ready"), "").unwrap();
    let conf = format!(
        r#"{main_extra}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  {http_extra}
  server {{
    listen 8080;
    listen [::]:8080;
    root {d}/www;
    {extra}
  }}
}}
"#
    );
    let path = lab.dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path.to_str().unwrap().to_string()
}

/// `flowmark collect --listen [::]:10514 --metrics 127.0.0.1:9814 ARGS` in
/// the client namespace, as process "collector" (not waited for).
pub fn spawn_collector(lab: &mut Lab, extra: &[&str]) {
    let cli = lab.cli.clone();
    let mut args = vec![
        flowmark_bin(),
        "collect",
        "--listen",
        "[::]:10514",
        "--metrics",
        "127.0.0.1:9814",
    ];
    args.extend_from_slice(extra);
    lab.spawn("collector", &cli, &args);
}

/// The storage node and its peer: the peer's collector (UDP 10514, metrics
/// on 127.0.0.1:9814 in the client namespace), `flowmark run --iface veth0
/// --ongoing-interval 0 ARGS` and nginx with `conf` in the server
/// namespace; returns when all three answer.
pub fn start_node(lab: &mut Lab, conf: &str, flowmark_args: &[&str]) {
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    spawn_collector(lab, &[]);
    let mut args = vec![
        flowmark_bin(),
        "run",
        "--iface",
        "veth0",
        "--ongoing-interval",
        "0",
    ];
    args.extend_from_slice(flowmark_args);
    lab.spawn("flowmark", &srv, &args);
    lab.wait_log("flowmark", "flowmark: ready");
    lab.wait_log("collector", "flowmark: ready");
    lab.spawn("nginx", &srv, &["nginx", "-c", conf, "-g", "daemon off;"]);
    let root = format!("http://[{SRV6}]:8080/ready");
    wait_value("nginx", Duration::from_secs(10), || {
        // Any HTTP answer will do; 7 is curl's "connection refused".
        let o = lab.exec(&cli, &["curl", "-s", "-o", "/dev/null", "-g", &root]);
        o.status.code().filter(|c| *c != 7)
    });
}
