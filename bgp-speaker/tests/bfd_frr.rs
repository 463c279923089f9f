//! BFD with FRR's bfdd: the session comes up with the BGP session, and when
//! the node goes silent the router drops its route in well under a second.

mod common;

use std::time::{Duration, Instant};

use bgp_speaker::{BfdConfig, BfdState, RouteAttrs};
use common::*;

#[test]
fn bfd_with_frr_removes_route_under_one_second() {
    let lab = Lab::new("bfd", 1);
    let frr = Frr::start(
        &lab,
        &[FrrNeighbor {
            addr: speaker_v4(1),
            remote_as: 65101,
            bfd: true,
            ..Default::default()
        }],
        &FrrExtra::default(),
    );
    let mut cfg = speaker_config(1, &[&router_v4(1)]);
    cfg.peers[0].bfd = Some(BfdConfig::default());
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    sp.speaker
        .announce(VIP4.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    wait_for("BGP and BFD up", Duration::from_secs(30), || {
        sp.speaker.peers()[0].bfd == Some(BfdState::Up)
    });
    wait_for("FRR's BFD peer up", Duration::from_secs(10), || {
        frr.vtysh("show bfd peers json")
            .contains("\"status\":\"up\"")
    });
    wait_for("route at FRR", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });

    let mut events = sp.speaker.events();
    // The node goes silent: nothing it sends reaches the router any more.
    let t0 = Instant::now();
    must(&format!(
        "ip -n {} route add blackhole {}/32",
        lab.speakers[0],
        router_v4(1)
    ));
    wait_for("route removed", Duration::from_secs(5), || {
        lab.router_route(VIP4).trim().is_empty()
    });
    let took = t0.elapsed();
    eprintln!("BFD failover: route left the router's kernel after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // The node comes back: session, BFD and route return.
    must(&format!(
        "ip -n {} route del blackhole {}/32",
        lab.speakers[0],
        router_v4(1)
    ));
    wait_for("route back", Duration::from_secs(30), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });
    let p = &sp.speaker.peers()[0];
    assert!(p.established_count >= 2, "{p:?}");
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        reasons.extend(e.reason);
    }
    assert!(
        reasons.iter().any(|r| r.contains("BFD down")),
        "the speaker's side also went down through BFD: {reasons:?}"
    );
}
