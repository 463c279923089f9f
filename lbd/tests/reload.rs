//! SIGHUP end to end: a real FRR router and 3 nodes running `lbd`. Members
//! join (with long downloads running across the change) and change weight,
//! a BGP peer is added, changed and removed while the other session does
//! not flap (FRR's own uptime and established count), a VIP is added and
//! removed (route, traffic, dataplane), the encapsulation switches from GUE
//! to IPIP under traffic, and keys that cannot change live are reported
//! and keep their running value. Also: a VIP a previous run installed but
//! the config no longer has is removed from the pinned dataplane on start.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dataplane::loader::Dataplane;
use support::*;

/// Node 1's second session: its own address on the link, and a second
/// router address FRR uses as source towards it.
const N1_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 19);
const R1_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);

/// The VIPs installed in node `i`'s pinned dataplane (open read-only
/// alongside the running lbd: loading the object only reuses the maps).
fn installed(lab: &Lab, i: usize) -> Vec<IpAddr> {
    let dp = Dataplane::open(&lab.nodes[i].pin_dir).expect("open the pins");
    let mut v: Vec<IpAddr> = dp
        .installed_vips()
        .expect("installed VIPs")
        .into_iter()
        .map(|v| v.addr)
        .collect();
    v.dedup();
    v
}

/// Replaces `from` (which must occur) by `to` in node `i`'s config, sends
/// SIGHUP and returns the reload outcome.
fn edit_reload(lab: &Lab, i: usize, from: &str, to: &str) -> String {
    let c = lab.config(i);
    assert!(c.contains(from), "{from:?} not in node {}'s config", i + 1);
    lab.write_config(i, &c.replace(from, to));
    lab.reload(i)
}

/// `edit_reload` on nodes `nodes`; each outcome must contain `expect`.
fn edit_reload_all(lab: &Lab, nodes: std::ops::Range<usize>, from: &str, to: &str, expect: &str) {
    for i in nodes {
        let r = edit_reload(lab, i, from, to);
        assert!(r.contains(expect), "node {}: {r}", i + 1);
    }
}

fn with_vip2(cfg: &str) -> String {
    cfg.replace(
        "[bgp]\n",
        &(vip_config(IpAddr::V4(VIP2), &format!("http://{VIP2}/health")) + "[bgp]\n"),
    )
}

fn peer_b(extra: &str) -> String {
    format!(
        "[[bgp.peers]]\naddress = \"{R1_B}\"\nremote_as = 65000\nlocal_address = \"{N1_B}\"\n{extra}[api]\n"
    )
}

/// Downloads of `ms` on the VIP from the client; each thread returns the
/// lines it got. Returns once every download has its first line (or has
/// ended), so the change that follows happens while they run.
fn downloads(
    lab: &Lab,
    n: usize,
    ms: u64,
) -> Vec<std::thread::JoinHandle<anyhow::Result<Vec<String>>>> {
    let started = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..n)
        .map(|_| {
            let started = started.clone();
            lab.client.spawn(move || {
                let mut lines = Vec::new();
                let r = (|| -> anyhow::Result<()> {
                    let mut s = TcpStream::connect_timeout(
                        &SocketAddr::new(IpAddr::V4(VIP), 80),
                        Duration::from_secs(3),
                    )?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(format!("GET /stream?ms={ms} HTTP/1.0\r\n\r\n").as_bytes())?;
                    for l in BufReader::new(s).lines() {
                        lines.push(l?.trim().to_string());
                        if lines.len() == 1 {
                            started.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })();
                // One that ended before its first line counts too: its
                // error is for assert_complete to report.
                if lines.is_empty() {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                r.map(|()| lines)
            })
        })
        .collect();
    wait_for("every download under way", Duration::from_secs(10), || {
        started.load(Ordering::Relaxed) == n
    });
    streams
}

fn assert_complete(what: &str, streams: Vec<std::thread::JoinHandle<anyhow::Result<Vec<String>>>>) {
    for t in streams {
        let lines = t
            .join()
            .expect("stream thread")
            .unwrap_or_else(|e| panic!("download across {what}: {e:#}"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("done"),
            "download cut: {lines:?}"
        );
        let nodes: std::collections::BTreeSet<&String> =
            lines.iter().filter(|l| l.starts_with("node")).collect();
        assert_eq!(nodes.len(), 1, "download switched nodes: {nodes:?}");
    }
}

#[test]
fn reload_applies_members_vips_peers_and_dataplane_live() {
    let mut lab = Lab::new("reload", 3, false);
    lab.nodes[0]
        .ns
        .ip(&format!("addr add {N1_B}/28 dev eth0"))
        .expect("addr");
    lab.router
        .ip(&format!("addr add {R1_B}/28 dev r-n1"))
        .expect("addr");
    let frr = lab.frr_conf("").replace(
        " address-family ipv4 unicast\n",
        &format!(
            " neighbor {N1_B} peer-group N\n neighbor {N1_B} update-source {R1_B}\n address-family ipv4 unicast\n"
        ),
    );
    lab.start_frr(&frr);
    for i in 0..2 {
        lab.write_config(i, &lab.node_config(i as u16 + 1, &[1, 2]));
        lab.start_lbd(i);
    }
    wait_for("2-way ECMP", Duration::from_secs(30), || {
        lab.vip_via() == via_all(&[1, 2])
    });
    wait_for("2-node tables", Duration::from_secs(10), || {
        (0..2).all(|i| share_nodes(&lab.status(i), 0) == ["1", "2"])
    });

    // 1. Node 3 joins: it starts with members 1-3, then 1 and 2 reload.
    //    Downloads running across the change all complete on their node.
    let streams = downloads(&lab, 24, 3000);
    for i in 0..3 {
        lab.write_config(i, &lab.node_config(i as u16 + 1, &[1, 2, 3]));
    }
    lab.start_lbd(2);
    let mut took = Vec::new();
    for i in 0..2 {
        let t = Instant::now();
        let r = lab.reload(i);
        took.push(t.elapsed());
        assert!(
            r.contains("applied [members]") && r.contains("needs a restart: []"),
            "{r}"
        );
    }
    wait_for("3-way ECMP after the join", Duration::from_secs(15), || {
        lab.vip_via() == via_all(&[1, 2, 3])
    });
    wait_for("node 3 in every table", Duration::from_secs(10), || {
        (0..3).all(|i| share_nodes(&lab.status(i), 0) == ["1", "2", "3"])
    });
    let s1 = lab.status(0);
    assert!(
        s1["vips"][0]["second_hops"].as_u64().unwrap_or(0) > 1000,
        "buckets moved to node 3 keep their previous owner: {}",
        s1["vips"][0]
    );
    assert!(
        s1["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["generation_matches"] == true)),
        "{}",
        s1["members"]
    );
    assert_eq!(
        s1["node"]["generation"],
        lab.status(2)["node"]["generation"]
    );
    assert_complete("the join", streams);
    // Downloads whose bucket moved to node 3 reached their node through
    // node 3's second hop.
    let second: u64 = lab.counter_sum(0, "fwd_second_hop");
    assert!(second > 0, "no packet took a second hop");
    assert_eq!(lab.served_by(IpAddr::V4(VIP), 30).len(), 3);
    eprintln!("reload (member join) SIGHUP to outcome in status: {took:?}");

    // 2. Node 3's weight goes to 3 on every node.
    let before = lab.status(0)["vips"][0]["share"].clone();
    edit_reload_all(
        &lab,
        0..3,
        "id = 3\naddress = \"192.0.2.50\"\n",
        "id = 3\naddress = \"192.0.2.50\"\nweight = 3\n",
        "applied [members]",
    );
    wait_for("node 3 has 3x the buckets", Duration::from_secs(5), || {
        (0..3).all(|i| {
            let s = &lab.status(i)["vips"][0]["share"];
            s["3"].as_u64().unwrap_or(0) > 2 * s["1"].as_u64().unwrap_or(u64::MAX)
        })
    });
    assert!(before["3"].as_u64() < lab.status(0)["vips"][0]["share"]["3"].as_u64());
    assert_eq!(lab.served_by(IpAddr::V4(VIP), 30).len(), 3);

    // 3. BGP peers on node 1: add a second session; the first must not flap.
    let a = IpAddr::V4(node_addr(1));
    let b = IpAddr::V4(N1_B);
    let established = |lab: &Lab, p: IpAddr| lab.frr_neighbor(p)["connectionsEstablished"].as_u64();
    let up_ms = |lab: &Lab, p: IpAddr| lab.frr_neighbor(p)["bgpTimerUpMsec"].as_u64().unwrap_or(0);
    let a_count = established(&lab, a);
    assert_eq!(lab.frr_neighbor(a)["bgpState"], "Established");
    let a_up = up_ms(&lab, a);
    let a_seen = Instant::now();
    assert!(a_up > 0, "FRR reports session A's uptime");
    let one = lab.config(0);
    lab.write_config(0, &one.replace("[api]\n", &peer_b("")));
    let t = Instant::now();
    let r = lab.reload(0);
    assert!(r.contains("bgp peer 192.0.2.20 added"), "{r}");
    wait_for("session B established", Duration::from_secs(15), || {
        lab.frr_neighbor(b)["bgpState"] == "Established"
    });
    eprintln!(
        "reload adding a peer: SIGHUP to FRR Established {:?}",
        t.elapsed()
    );
    wait_for("route via session B too", Duration::from_secs(10), || {
        lab.vip_via().contains(&N1_B.to_string())
    });
    let s = lab.status(0);
    assert_eq!(s["bgp"].as_array().map(Vec::len), Some(2), "{}", s["bgp"]);
    // Session B's settings change: B is re-established, A is not touched.
    let b_count = established(&lab, b);
    lab.write_config(
        0,
        &one.replace(
            "[api]\n",
            &peer_b(&format!("next_hop_v6 = \"{}\"\n", node_addr6(1))),
        ),
    );
    let r = lab.reload(0);
    assert!(r.contains("bgp peer 192.0.2.20 settings changed"), "{r}");
    wait_for("session B re-established", Duration::from_secs(15), || {
        lab.frr_neighbor(b)["bgpState"] == "Established" && established(&lab, b) > b_count
    });
    // Removed: session B goes, A stays.
    lab.write_config(0, &one);
    let r = lab.reload(0);
    assert!(r.contains("bgp peer 192.0.2.20 removed"), "{r}");
    wait_for("session B down", Duration::from_secs(10), || {
        lab.frr_state(b) != "Established"
    });
    wait_for("route without session B", Duration::from_secs(10), || {
        lab.vip_via() == via_all(&[1, 2, 3])
    });
    assert_eq!(established(&lab, a), a_count, "session A flapped");
    // FRR counts uptime in whole seconds: a session that kept running has
    // what it had plus the time since, less at most one second.
    let kept = a_up + a_seen.elapsed().as_millis() as u64;
    let now = up_ms(&lab, a);
    assert!(
        now + 1000 >= kept,
        "session A's uptime was reset: {now} ms now, {a_up} ms {:?} ago",
        a_seen.elapsed()
    );
    assert_eq!(lab.frr_neighbor(a)["bgpState"], "Established");

    // 4. A VIP is added everywhere: announced when its checks pass.
    for i in 0..3 {
        lab.write_config(i, &with_vip2(&lab.config(i)));
        let r = lab.reload(i);
        assert!(r.contains("vip 198.51.100.20 added"), "{r}");
    }
    let vip2 = format!("{VIP2}/32");
    wait_for(
        "3-way route for the new VIP",
        Duration::from_secs(10),
        || lab.route_via(&vip2) == via_all(&[1, 2, 3]),
    );
    wait_for(
        "the new VIP's 3-node tables",
        Duration::from_secs(5),
        || (0..3).all(|i| share_nodes_of(&lab.status(i), IpAddr::V4(VIP2)) == ["1", "2", "3"]),
    );
    assert_eq!(lab.served_by(IpAddr::V4(VIP2), 30).len(), 3);
    assert!(installed(&lab, 0).contains(&IpAddr::V4(VIP2)));

    // 5. Node 3 restarts with a config without the new VIP: the VIP its
    //    previous run installed leaves the pinned dataplane.
    lab.stop_lbd(2);
    lab.write_config(
        2,
        &lab.node_config(3, &[1, 2, 3]).replace(
            "id = 3\naddress = \"192.0.2.50\"\n",
            "id = 3\naddress = \"192.0.2.50\"\nweight = 3\n",
        ),
    );
    lab.start_lbd(2);
    wait_for("node 3 back", Duration::from_secs(15), || {
        lab.status(2)["vips"][0]["announced"] == true
    });
    assert!(
        lab.log(2)
            .contains("removed a VIP a previous run installed"),
        "{}",
        lab.log(2)
    );
    assert!(!installed(&lab, 2).contains(&IpAddr::V4(VIP2)));
    assert!(installed(&lab, 2).contains(&IpAddr::V4(VIP)));

    // 6. The VIP is removed from nodes 1 and 2: withdrawn, out of the
    //    dataplane.
    let vip2_cfg = vip_config(IpAddr::V4(VIP2), &format!("http://{VIP2}/health"));
    edit_reload_all(&lab, 0..2, &vip2_cfg, "", "vip 198.51.100.20 removed");
    wait_for(
        "the removed VIP's route gone",
        Duration::from_secs(10),
        || {
            lab.route_via(&vip2).is_empty()
                && lab
                    .router
                    .ip(&format!("route show {vip2}"))
                    .unwrap_or_default()
                    .is_empty()
        },
    );
    assert!(!installed(&lab, 0).contains(&IpAddr::V4(VIP2)));
    assert_eq!(lab.status(0)["vips"].as_array().map(Vec::len), Some(2));

    // 7. Encapsulation GUE -> IPIP under traffic, then a key that needs a
    //    restart (table_size): reported, the running value stays.
    let streams = downloads(&lab, 12, 2000);
    edit_reload_all(
        &lab,
        0..3,
        "interface = \"eth0\"\n",
        "interface = \"eth0\"\nencapsulation = \"ipip\"\n",
        "dataplane.encapsulation / gue_port",
    );
    assert_eq!(lab.served_by(IpAddr::V4(VIP), 30).len(), 3);
    let r = edit_reload(&lab, 0, "table_size = 4093", "table_size = 4091");
    assert!(
        r.contains("applied []; needs a restart: [dataplane.table_size]"),
        "{r}"
    );
    assert_eq!(lab.status(0)["vips"][0]["table_size"], 4093);
    assert_complete("the encapsulation change", streams);
    assert_eq!(lab.vip_via(), via_all(&[1, 2, 3]));

    // 8. Node 3 drains, then nodes 1 and 2 remove it from their members: it
    //    leaves their tables, then their dataplane's node list.
    lab.ctl(2, "drain");
    wait_for("node 3 withdrawn", Duration::from_secs(10), || {
        lab.vip_via() == via_all(&[1, 2])
    });
    edit_reload_all(
        &lab,
        0..2,
        "[[members]]\nid = 3\naddress = \"192.0.2.50\"\nweight = 3\n",
        "",
        "applied [members]",
    );
    wait_for(
        "2-node tables on nodes 1 and 2",
        Duration::from_secs(5),
        || {
            (0..2).all(|i| {
                let s = lab.status(i);
                share_nodes(&s, 0) == ["1", "2"] && s["members"].as_array().map(Vec::len) == Some(2)
            })
        },
    );
    assert!(
        lab.log(0)
            .lines()
            .any(|l| l.contains("removed from the dataplane's node list") && l.contains("member=3")),
        "{}",
        lab.log(0)
    );
    assert_eq!(
        lab.served_by(IpAddr::V4(VIP), 20)
            .into_iter()
            .collect::<Vec<_>>(),
        ["node1", "node2"]
    );

    let log = lab.log(0);
    let reloads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload") && l.contains("took="))
        .collect();
    eprintln!("node 1 reloads:\n{}", reloads.join("\n"));
}
