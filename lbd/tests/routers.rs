//! The daemon against the site routers and session options operators use:
//! FRR with BFD (bfdd, 100 ms x 3) and TCP-MD5 + GTSM sessions set up from
//! lbd's config, and BIRD 2 running the example configs/lbd/bird-router.conf
//! (MD5, GTSM, BFD, graceful restart) over an IPv6 underlay: members,
//! liveness, encapsulation and BGP sessions on IPv6, carrying the IPv4 and
//! the IPv6 VIP.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "lbd-test-key-7f3a";

/// The peer's TCP-MD5 key from a file.
fn with_md5(lab: &Lab, cfg: &str) -> String {
    let key = lab.dir.join("bgp.key");
    std::fs::write(&key, format!("{KEY}\n")).expect("key");
    cfg.replace(
        "remote_as = 65000\n",
        &format!(
            "remote_as = 65000\nmd5_password_file = \"{}\"\n",
            key.display()
        ),
    )
}

fn with_gtsm(cfg: &str) -> String {
    cfg.replace(
        "remote_as = 65000\n",
        "remote_as = 65000\nttl_security = true\n",
    )
}

const BFD: &str = "bfd = { min_tx = \"100ms\", min_rx = \"100ms\", multiplier = 3 }\n";

fn with_bfd(cfg: &str) -> String {
    cfg.replace("remote_as = 65000\n", &format!("remote_as = 65000\n{BFD}"))
}

/// One BGP packet from `node` as the router receives it, as tcpdump -v
/// prints it (TTL included).
fn bgp_packet_from(lab: &Lab, link: &str, node: IpAddr) -> String {
    lab.router
        .exec(
            "timeout",
            &[
                "10",
                "tcpdump",
                "-n",
                "-v",
                "-c",
                "1",
                "-i",
                link,
                "tcp",
                "port",
                "179",
                "and",
                "src",
                "host",
                &node.to_string(),
            ],
        )
        .unwrap_or_default()
}

#[test]
fn frr_bfd_drops_a_cut_node_in_under_a_second_and_sessions_use_md5_and_gtsm() {
    let mut lab = Lab::new("bfd", 2, false);
    // Both sessions use MD5. Node 1 has BFD; node 2 has GTSM instead (FRR
    // 8.4 runs BFD for a ttl-security neighbor as multihop, which
    // bgp-speaker does not speak) and is the baseline without BFD (hold
    // timer, 9 s).
    let frr = lab.frr_conf(&format!("password {KEY}")).replace(
        " address-family ipv4 unicast\n",
        &format!(
            " neighbor {} bfd profile fast\n neighbor {} ttl-security hops 1\n address-family ipv4 unicast\n",
            node_addr(1),
            node_addr(2)
        ),
    );
    lab.start_frr(&frr);
    for id in 1..=2u16 {
        let c = with_md5(&lab, &lab.node_config(id, &[1, 2]));
        let c = if id == 1 { with_bfd(&c) } else { with_gtsm(&c) };
        lab.write_config(usize::from(id - 1), &c);
        lab.start_lbd(usize::from(id - 1));
    }
    wait_for("2-way ECMP", Duration::from_secs(30), || {
        lab.vip_via() == via_all(&[1, 2])
    });
    wait_for("BFD up on both ends", Duration::from_secs(10), || {
        lab.status(0)["bgp"][0]["bfd"] == "Up"
            && lab
                .vtysh(&format!("show bfd peer {}", node_addr(1)))
                .contains("Status: up")
    });
    // Node 2 has no BFD: its peer is there, its bfd field empty.
    let s2 = lab.status_now(1);
    assert!(s2["bgp"][0]["state"].is_string(), "{s2}");
    assert_eq!(s2["bgp"][0]["bfd"], Value::Null, "{s2}");
    // GTSM: lbd sends its BGP packets with TTL 255 (node 1, without it,
    // with the default TTL 64).
    let pkt = bgp_packet_from(&lab, "r-n1", IpAddr::V4(node_addr(1)));
    assert!(pkt.contains("ttl 64"), "{pkt}");
    let pkt = bgp_packet_from(&lab, "r-n2", IpAddr::V4(node_addr(2)));
    assert!(pkt.contains("ttl 255"), "{pkt}");
    // MD5: a wrong key (SIGHUP re-reads the file and re-establishes the
    // session) keeps node 2's session down; the right one brings it back.
    let key = lab.dir.join("bgp.key");
    std::fs::write(&key, "wrong-key\n").expect("key");
    let r = lab.reload(1);
    assert!(r.contains("bgp peer 192.0.2.33 settings changed"), "{r}");
    wait_for(
        "node 2 out with a wrong key",
        Duration::from_secs(10),
        || lab.vip_via() == via_all(&[1]),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(lab.frr_state(IpAddr::V4(node_addr(2))), "Established");
    let state = lab.status_now(1)["bgp"][0]["state"].clone();
    assert!(state.is_string() && state != "Established", "{state}");
    std::fs::write(&key, format!("{KEY}\n")).expect("key");
    lab.reload(1);
    wait_for(
        "node 2 back with the right key",
        Duration::from_secs(20),
        || lab.vip_via() == via_all(&[1, 2]),
    );

    // Both nodes go silent towards the router (a blackhole route to it in
    // each node; the links stay up, so only BFD or the hold timer can
    // tell): BFD takes node 1's route away in well under a second, node
    // 2's goes when FRR's hold timer expires.
    // The route change is timed by the kernel's notification, not by the
    // poll below (an `ip route` per poll would add its own start-up time
    // to a sub-second figure).
    let monitor = lab::route_monitor::RouteMonitor::start(&lab.router.name, Some("-4"))
        .expect("ip monitor in the router");
    let cut = Instant::now();
    for id in 1..=2u16 {
        lab.nodes[usize::from(id - 1)]
            .ns
            .ip(&format!("route add blackhole {}/32", router_addr(id)))
            .expect("blackhole");
    }
    let n = node_addr(1).to_string();
    wait_for("node 1 out of the route", Duration::from_secs(5), || {
        !lab.vip_via().contains(&n)
    });
    // The first change of the VIP's route since the cut: node 1 left it.
    let bfd_ms = monitor
        .wait(&format!("{VIP}/32"), false, Duration::from_secs(5))
        .expect("the VIP's route change seen by ip monitor")
        - cut;
    wait_for("node 2 out of the route", Duration::from_secs(15), || {
        lab.vip_via().is_empty()
    });
    let hold_ms = cut.elapsed();
    eprintln!(
        "link cut to route withdrawn in the router's kernel: with BFD {bfd_ms:?}, without (hold timer) {hold_ms:?}"
    );
    assert!(
        bfd_ms < Duration::from_secs(1),
        "BFD failover took {bfd_ms:?}"
    );
    // FRR's hold timer (9 s, keepalives every 3 s) expires 6-9 s after
    // the last keepalive it got: well after BFD, never within BFD's time.
    assert!(
        hold_ms >= Duration::from_secs(5),
        "node 2 left after {hold_ms:?}: faster than its hold timer allows"
    );
    assert!(
        lab.vtysh(&format!("show bfd peer {}", node_addr(1)))
            .contains("Status: down"),
        "{}",
        lab.vtysh("show bfd peers")
    );
}

#[test]
fn bird_example_config_ecmp_over_an_ipv6_underlay() {
    let mut lab = Lab::new("bird", 3, true);
    // configs/lbd/bird-router.conf as shipped, with this lab's neighbors
    // and key.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lbd/bird-router.conf"),
    )
    .expect("example");
    let mut bird: String = example
        .lines()
        .filter(|l| !l.starts_with("protocol bgp node"))
        .collect::<Vec<_>>()
        .join("\n");
    bird = bird.replace("same-as-/etc/lbd/bgp-router1.key", KEY);
    assert!(bird.contains(KEY) && bird.contains("ttl security on") && bird.contains("bfd on"));
    for id in 1..=3u16 {
        bird += &format!(
            "\nprotocol bgp node{id} from lbd_node {{ neighbor {} as 65100; }}",
            node_addr6(id)
        );
    }
    bird += "\n";
    lab.start_bird(&bird);
    for id in 1..=3u16 {
        // Active sessions only: no listener on the nodes.
        let c = with_bfd(&with_gtsm(&with_md5(
            &lab,
            &lab.node_config(id, &[1, 2, 3]),
        )))
        .replace("listen_port = 179", "listen_port = 0");
        lab.write_config(usize::from(id - 1), &c);
        lab.start_lbd(usize::from(id - 1));
    }
    wait_for(
        "3-way ECMP route in BIRD's kernel table",
        Duration::from_secs(40),
        || lab.vip_via() == via_all(&[1, 2, 3]),
    );
    let vip6 = format!("{VIP6}/128");
    wait_for(
        "3-way ECMP for the IPv6 VIP",
        Duration::from_secs(10),
        || lab.route_via(&vip6) == via_all6(&[1, 2, 3]),
    );
    let protocols = lab.birdc("show protocols");
    assert_eq!(protocols.matches("Established").count(), 3, "{protocols}");
    wait_for("BFD up", Duration::from_secs(10), || {
        (0..3).all(|i| lab.status(i)["bgp"][0]["bfd"] == "Up")
    });
    let mut bfd = String::new();
    wait_for("BIRD's BFD sessions up", Duration::from_secs(10), || {
        bfd = lab.birdc("show bfd sessions");
        bfd.matches(" Up ").count() == 3
    });
    for i in 0..3 {
        let s = lab.status(i);
        assert_eq!(s["bgp"][0]["peer"], router_addr6(i as u16 + 1).to_string());
        assert_eq!(s["bgp"][0]["state"], "Established");
        assert_eq!(s["bgp"][0]["prefixes_sent"], 2);
        let members = s["members"].as_array().cloned().unwrap_or_default();
        assert!(
            members.len() == 3
                && members
                    .iter()
                    .all(|m| m["up"] == true
                        && m["address"].as_str().is_some_and(|a| a.contains(':'))),
            "members over IPv6: {members:?}"
        );
    }
    wait_for("3-node tables", Duration::from_secs(5), || {
        (0..3).all(|i| share_nodes(&lab.status(i), 0) == ["1", "2", "3"])
    });
    // Both VIPs are served by every node: between nodes, IPv4 and IPv6
    // packets travel in IPv6 GUE.
    assert_eq!(lab.served_by(IpAddr::V4(VIP), 30).len(), 3);
    assert_eq!(lab.served_by(IpAddr::V6(VIP6), 30).len(), 3);
    let decap: u64 = lab.counter_sum(0, "decap");
    assert!(decap > 0, "no packet was forwarded between nodes");
    // Drain through BIRD: the example's filter honours GRACEFUL_SHUTDOWN.
    lab.ctl(2, "drain");
    wait_for(
        "node 3 out of BIRD's route",
        Duration::from_secs(10),
        || lab.vip_via() == via_all(&[1, 2]),
    );
}
