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

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

fn build() -> Lab {
    let mut c = Lab::new("cluster", 3, false);
    for i in 0..3 {
        c.write_config(i, &c.node_config(i as u16 + 1, &[1, 2, 3]));
    }
    c.start_frr(&c.frr_conf(""));
    for i in 0..3 {
        c.start_lbd(i);
    }
    c
}

#[test]
fn three_nodes_with_frr_announce_drain_fail_and_reload() {
    let mut c = build();

    // 1. All nodes announce: 3-way ECMP in the router's kernel.
    wait_for("3-way ECMP route", Duration::from_secs(30), || {
        c.vip_via() == via_all(&[1, 2, 3])
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
                    && share_nodes(&s, 0) == ["1", "2", "3"]
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
        || c.route_via(&format!("{VIP6}/128")) == via6,
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
        c.vip_via() == via_all(&[1, 2])
    });
    wait_for("node 3 withdrawn", Duration::from_secs(10), || {
        c.status(2)["vips"][0]["announced"] == false
    });
    wait_for(
        "nodes 1 and 2 give node 3's buckets away",
        Duration::from_secs(5),
        || (0..2).all(|i| share_nodes(&c.status(i), 0) == ["1", "2"]),
    );
    let s3 = c.status(2);
    assert_eq!(s3["node"]["state"], "draining");
    assert_eq!(s3["vips"][0]["announced"], false);
    assert!(c.status(0)["vips"][0]["second_hops"].as_u64().unwrap_or(0) > 0);
    // `lbd table`: node 3's old buckets now have node 1 or 2 first, 3 second.
    let out = Command::new(LBD)
        .args(["table", &VIP.to_string(), "--json", "-s"])
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
    // The same data as text: the pairs are rows of their own table.
    let out = Command::new(LBD)
        .args(["table", &VIP.to_string(), "-s"])
        .arg(&c.nodes[0].socket)
        .output()
        .expect("lbd table");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |first: &str, second: &str| {
        text.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() == 3 && cells[0] == first && cells[1] == second
        })
    };
    assert!(
        out.status.success()
            && text.starts_with(&format!("VIP {VIP}: 4093 buckets, "))
            && row("1", "3")
            && row("2", "3"),
        "{text}"
    );
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
        c.vip_via() == via_all(&[1, 2, 3])
    });
    wait_for("node 3 back in every table", Duration::from_secs(5), || {
        (0..3).all(|i| share_nodes(&c.status(i), 0) == ["1", "2", "3"])
    });

    // 4. Node 2's backend stops: its route goes within fall x interval + 1 s,
    //    and the other nodes drop it from their tables.
    let start = Instant::now();
    if let Some(mut b) = c.nodes[1].backend.take() {
        b.stop();
    }
    let limit = Duration::from_millis(CHECK_FALL * CHECK_INTERVAL_MS + 1000);
    wait_for("node 2 withdrawn", Duration::from_secs(10), || {
        c.vip_via() == via_all(&[1, 3])
    });
    let took = start.elapsed();
    assert!(took <= limit, "withdraw took {took:?}, limit {limit:?}");
    eprintln!("backend stop to route withdrawn in the router's kernel: {took:?}");
    wait_for("nodes 1 and 3 drop node 2", Duration::from_secs(5), || {
        [0, 2]
            .iter()
            .all(|&i| share_nodes(&c.status(i), 0) == ["1", "3"])
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
    assert_eq!(c.vip_via(), via_all(&[1, 3]));
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
            c.vip_via(),
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
    let log = c.log(0);
    assert!(
        log.contains("resuming the table found in the dataplane"),
        "{log}"
    );
    assert!(log.contains("restarting=true"), "{log}");
    wait_for(
        "node 1 back in the other tables",
        Duration::from_secs(5),
        || share_nodes(&c.status(2), 0) == ["1", "3"],
    );
    assert_eq!(c.vip_via(), via_all(&[1, 3]));
}
