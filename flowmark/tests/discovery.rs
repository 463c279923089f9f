//! perfSONAR-style rules: every flow from a local port is marked by the
//! kernel program from its first packet, and sock_diag discovery sends its
//! start and end fireflies, without any registration.
mod common;

use std::time::Duration;

use common::*;

const FILE_LEN: usize = 1 << 20;

#[test]
fn port_rule_marks_from_first_packet_and_discovery_sends_fireflies() {
    let mut lab = Lab::new("disc");
    std::fs::create_dir_all(lab.dir.join("www")).unwrap();
    std::fs::write(lab.dir.join("www/file"), vec![b'z'; FILE_LEN]).unwrap();
    let conf = nginx_conf(&lab, "", "", "");
    start_node(
        &mut lab,
        &conf,
        &[
            "--pipe",
            "none",
            "--api",
            "none",
            "--port-rule",
            "8080=default:perfSONAR",
            "--discover-interval-ms",
            "100",
            "--metrics",
            "127.0.0.1:9815",
        ],
    );
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    let cap = Capture::start(&cli, "veth1");
    // Fetch the file, then hold the kept-alive connection until the test
    // says go: after discovery has seen it with all its data acked.
    let go = lab.path("go");
    let script = format!(
        "import os,socket,time\n\
         s=socket.socket(socket.AF_INET6)\n\
         s.bind(('{CLI6}',43000))\n\
         s.connect(('{SRV6}',8080))\n\
         s.sendall(b'GET /file HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         n=0\n\
         while n<{FILE_LEN}:\n\
         \x20n+=len(s.recv(1<<20))\n\
         while not os.path.exists('{go}'):\n\
         \x20time.sleep(0.02)\n\
         s.close()\n"
    );
    lab.spawn("client", &cli, &["timeout", "20", "python3", "-c", &script]);
    wait_value("the server's data acked", Duration::from_secs(10), || {
        let o = lab.exec(
            &srv,
            &["ss", "-Htin", "sport", "=", ":8080", "dport", "=", ":43000"],
        );
        let ss = String::from_utf8_lossy(&o.stdout).into_owned();
        let acked = ss
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes_acked:")?.parse::<usize>().ok());
        (acked? > FILE_LEN).then_some(())
    });
    // Then one whole scan after that, which saw the final usage.
    let scans = || {
        metric_sum(
            &metrics(&lab, &srv, 9815),
            "flowmark_discovery_scans_total",
            &[],
        )
    };
    let seen = scans();
    wait_value("two more discovery scans", Duration::from_secs(10), || {
        (scans() >= seen + 2.0).then_some(())
    });
    std::fs::write(&go, "").unwrap();
    let st = lab.wait_exit("client", Duration::from_secs(20));
    assert!(st.success(), "client: {}", lab.log("client"));
    let m = wait_value("discovered flow ended", Duration::from_secs(10), || {
        let m = metrics(&lab, &cli, 9814);
        (metric_sum(&m, "flowmark_collector_flows_ended_total", &[]) >= 1.0).then_some(m)
    });
    let packets = cap.finish();

    let flow = flow_packets(&packets, 8080, 43000);
    assert!(flow.len() > 10);
    // From the SYN-ACK on: the rule needs no registration.
    assert_one_label("port-rule flow", &flow, flowmark_common::encode_label(1, 2));
    let ps = ["experiment=\"default\"", "activity=\"perfSONAR\""];
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_started_total", &ps),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_flows_ended_total", &ps),
        1.0,
        "{m}"
    );
    // The usage is the last tcp_info a poll saw: here, after the transfer.
    assert!(
        metric_sum(&m, "flowmark_collector_bytes_sent_total", &ps) >= FILE_LEN as f64,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_rejected_total", &[]),
        0.0,
        "{m}"
    );
}

/// A child of the cgroup v2 hierarchy, reached through a mount of its own
/// under the lab directory: `ip netns exec` remounts /sys, so the daemon
/// and senders inside the namespaces could not see /sys/fs/cgroup. Removed
/// and unmounted when the test ends, pass or fail.
struct Cgroup {
    mount: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Cgroup {
    fn new(lab: &Lab) -> Cgroup {
        let mount = lab.dir.join("cgroup2");
        std::fs::create_dir_all(&mount).unwrap();
        sh(&["mount", "-t", "cgroup2", "none", mount.to_str().unwrap()]);
        let dir = mount.join(&lab.srv);
        let cg = Cgroup { mount, dir };
        std::fs::create_dir(&cg.dir).expect("a cgroup v2 child");
        cg
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .status();
    }
}

/// A sender in the server namespace: joins `cgroup` (if any) before it
/// creates its socket, then sends 200 kB from `sport` to the client's sink.
fn send_from(lab: &Lab, cgroup: Option<&str>, sport: u16) {
    let join = cgroup
        .map(|c| format!("open('{c}/cgroup.procs','w').write(str(os.getpid()))\n"))
        .unwrap_or_default();
    let script = format!(
        "import os,socket,time\n{join}\
         for i in range(100):\n\
         \x20try:\n\
         \x20\x20s=socket.socket(socket.AF_INET6)\n\
         \x20\x20s.bind(('{SRV6}',{sport}))\n\
         \x20\x20s.connect(('{CLI6}',7000))\n\
         \x20\x20break\n\
         \x20except OSError:\n\
         \x20\x20s.close(); time.sleep(0.05)\n\
         s.sendall(b'x'*200000)\n\
         s.close()\n"
    );
    let o = lab.exec(&lab.srv, &["timeout", "20", "python3", "-c", &script]);
    assert!(
        o.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn cgroup_rule_marks_only_the_cgroups_flows() {
    let mut lab = Lab::new("cg");
    let cg = Cgroup::new(&lab);
    let dir = cg.dir.to_str().unwrap().to_string();
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    let rule = format!("{dir}=2:4");
    lab.spawn(
        "flowmark",
        &srv,
        &[
            flowmark_bin(),
            "run",
            "--iface",
            "veth0",
            "--pipe",
            "none",
            "--api",
            "none",
            "--cgroup-rule",
            &rule,
        ],
    );
    lab.wait_log("flowmark", "flowmark: ready");
    // A sink that accepts and drains connections on port 7000.
    let sink = format!(
        "import socket\n\
         l=socket.socket(socket.AF_INET6)\n\
         l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         l.bind(('{CLI6}',7000))\n\
         l.listen(8)\n\
         while True:\n\
         \x20c,_=l.accept()\n\
         \x20while c.recv(1<<16): pass\n\
         \x20c.close()\n"
    );
    lab.spawn("sink", &cli, &["python3", "-c", &sink]);
    let cap = Capture::start(&cli, "veth1");
    send_from(&lab, Some(&dir), 44000);
    send_from(&lab, None, 44001);
    // Until the last packet of both connections has crossed the link.
    cap.wait("both connections closed", Duration::from_secs(10), |p| {
        tcp_closed(p, 44000, 7000) && tcp_closed(p, 44001, 7000)
    });
    let packets = cap.finish();

    let marked = flow_packets(&packets, 44000, 7000);
    assert!(marked.len() > 3, "{} packets", marked.len());
    // The last ACK after close() leaves from a timewait socket, which has
    // no cgroup: only a short unmarked tail is allowed.
    let last = marked
        .iter()
        .rposition(|p| p.label != 0)
        .expect("nothing marked");
    let tail = marked.len() - 1 - last;
    assert!(tail <= 2, "{tail} unmarked packets at the end: {marked:?}");
    assert_one_label(
        "cgroup flow",
        &marked[..=last],
        flowmark_common::encode_label(2, 4),
    );
    let other = flow_packets(&packets, 44001, 7000);
    assert!(other.len() > 3);
    assert_unmarked("a process outside the cgroup", &other);
}
