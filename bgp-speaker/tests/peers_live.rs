//! Peers added to and removed from a running speaker (what `lbd` does on
//! SIGHUP), against FRR: the new session comes up and gets the routes, a
//! removed one ends with Cease, and the session left alone never flaps.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use bgp_speaker::{PeerConfig, RouteAttrs, StartError};
use common::*;

/// FRR's established count for a neighbour (`connectionsEstablished`).
fn established_count(frr: &Frr, addr: &str) -> u64 {
    let out = frr.vtysh(&format!("show bgp neighbors {addr} json"));
    out.split("\"connectionsEstablished\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn peers_added_and_removed_live_leave_the_other_session_alone() {
    let lab = Lab::new("live", 1);
    let n = |addr: String| FrrNeighbor {
        addr,
        remote_as: 65101,
        ..Default::default()
    };
    let frr = Frr::start(
        &lab,
        &[n(speaker_v4(1)), n(speaker_v6(1))],
        &FrrExtra::default(),
    );
    // Starts with the IPv4 session only.
    let sp = NsSpeaker::start(&lab.speakers[0], speaker_config(1, &[&router_v4(1)]));
    sp.speaker
        .announce(VIP4.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    wait_for("IPv4 session", Duration::from_secs(30), || {
        frr.neighbor_state(&speaker_v4(1)) == "Established"
    });
    let v4_count = established_count(&frr, &speaker_v4(1));
    // Seen once in ~17 runs (make test, 2026-12-07): 2 at this point, a
    // startup flap not yet explained; the router's view says why.
    assert_eq!(
        v4_count,
        1,
        "{}",
        frr.vtysh(&format!("show bgp neighbors {} json", speaker_v4(1)))
    );

    // Add the IPv6 session: it comes up and carries the route too.
    let v6: IpAddr = router_v6(1).parse().unwrap();
    let s = sp.speaker.clone();
    let nh4 = speaker_v4(1).parse().ok();
    sp.run(async move {
        s.add_peer(PeerConfig {
            next_hop_v4: nh4,
            ..PeerConfig::new(v6, ROUTER_AS)
        })
        .await
    })
    .expect("add_peer");
    wait_for("IPv6 session", Duration::from_secs(30), || {
        frr.neighbor_state(&speaker_v6(1)) == "Established"
    });
    wait_for("route via both sessions", Duration::from_secs(10), || {
        frr.vtysh("show bgp ipv4 unicast 198.51.100.10/32 json")
            .matches("\"peerId\"")
            .count()
            == 2
    });
    assert_eq!(sp.speaker.peers().len(), 2);
    // A second one for the same address is refused.
    let s = sp.speaker.clone();
    let dup = sp.run(async move { s.add_peer(PeerConfig::new(v6, ROUTER_AS)).await });
    assert!(
        matches!(dup, Err(StartError::DuplicatePeer(a)) if a == v6),
        "{dup:?}"
    );

    // Remove the IPv4 session: FRR sees it go, the IPv6 one stays.
    let v4: IpAddr = router_v4(1).parse().unwrap();
    let s = sp.speaker.clone();
    assert!(sp.run(async move { s.remove_peer(v4).await }));
    wait_for("IPv4 session gone", Duration::from_secs(10), || {
        frr.neighbor_state(&speaker_v4(1)) != "Established"
    });
    assert!(
        frr.vtysh(&format!("show bgp neighbors {} json", speaker_v4(1)))
            .contains("Cease"),
        "FRR got no Cease"
    );
    let s = sp.speaker.clone();
    assert!(
        !sp.run(async move { s.remove_peer(v4).await }),
        "removed twice"
    );
    assert_eq!(sp.speaker.peers().len(), 1);
    assert_eq!(frr.neighbor_state(&speaker_v6(1)), "Established");
    assert_eq!(
        established_count(&frr, &speaker_v6(1)),
        1,
        "IPv6 session flapped"
    );
    // And back: the IPv4 session is re-established; IPv6 still untouched.
    let s = sp.speaker.clone();
    sp.run(async move { s.add_peer(PeerConfig::new(v4, ROUTER_AS)).await })
        .expect("add_peer again");
    wait_for("IPv4 session back", Duration::from_secs(30), || {
        frr.neighbor_state(&speaker_v4(1)) == "Established"
    });
    assert_eq!(established_count(&frr, &speaker_v4(1)), v4_count + 1);
    assert_eq!(
        established_count(&frr, &speaker_v6(1)),
        1,
        "IPv6 session flapped"
    );
}

#[test]
fn a_passive_peer_needs_a_listener() {
    let lab = Lab::new("nolisten", 1);
    let mut cfg = speaker_config(1, &[]);
    cfg.listen_port = None;
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    let s = sp.speaker.clone();
    let r = sp.run(async move {
        s.add_peer(PeerConfig {
            passive: true,
            ..PeerConfig::new(router_v4(1).parse().unwrap(), ROUTER_AS)
        })
        .await
    });
    assert!(
        matches!(&r, Err(StartError::Config(m)) if m.contains("no listener")),
        "{r:?}"
    );
}
