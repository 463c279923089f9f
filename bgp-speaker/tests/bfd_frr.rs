//! BFD with FRR's bfdd over IPv4 and IPv6: the sessions come up with the BGP
//! sessions, and when the node goes silent the router drops its routes in
//! well under a second (timed by the kernel's route notifications, `ip
//! monitor route`, not by polling).

mod common;

use std::time::{Duration, Instant};

use bgp_speaker::{BfdConfig, BfdState, RouteAttrs};
use common::*;
use lab::route_monitor::RouteMonitor;

#[test]
fn bfd_with_frr_removes_route_under_one_second() {
    let lab = Lab::new("bfd", 1);
    let n = |addr: String| FrrNeighbor {
        addr,
        remote_as: 65101,
        bfd: true,
        ..Default::default()
    };
    let frr = Frr::start(
        &lab,
        &[n(speaker_v4(1)), n(speaker_v6(1))],
        &FrrExtra::default(),
    );
    let mut cfg = speaker_config(1, &[&router_v4(1), &router_v6(1)]);
    for p in &mut cfg.peers {
        p.bfd = Some(BfdConfig::default());
    }
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    for vip in [VIP4, VIP6] {
        sp.speaker
            .announce(vip.parse().unwrap(), RouteAttrs::default())
            .unwrap();
    }
    wait_for("BGP and BFD up", Duration::from_secs(30), || {
        sp.speaker
            .peers()
            .iter()
            .all(|p| p.bfd == Some(BfdState::Up))
    });
    wait_for("FRR's two BFD peers up", Duration::from_secs(10), || {
        frr.vtysh("show bfd peers json")
            .matches("\"status\":\"up\"")
            .count()
            == 2
    });
    wait_for("routes at FRR", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
            && lab.router_route(VIP6).contains(&speaker_v6(1))
    });

    let mut events = sp.speaker.events();
    // The node goes silent: nothing it sends reaches the router any more.
    let blackhole = |op: &str| {
        must(&format!(
            "ip -n {ns} route {op} blackhole {}/32 && ip -n {ns} -6 route {op} blackhole {}/128",
            router_v4(1),
            router_v6(1),
            ns = lab.speakers[0],
        ))
    };
    let monitor = RouteMonitor::start(&lab.router, None).expect("ip monitor");
    let t0 = Instant::now();
    blackhole("add");
    let removed = monitor
        .wait_all(&[(VIP4, true), (VIP6, true)], Duration::from_secs(5))
        .expect("routes removed");
    let took: Vec<Duration> = removed.iter().map(|t| *t - t0).collect();
    for vip in [VIP4, VIP6] {
        assert!(
            lab.router_route(vip).trim().is_empty(),
            "{vip} still in the router's kernel: {}",
            lab.router_route(vip)
        );
    }
    eprintln!("BFD failover: routes left the router's kernel after {took:?} (IPv4, IPv6)");
    for t in took {
        assert!(t < Duration::from_secs(1), "took {t:?}");
    }

    // The node comes back: sessions, BFD and routes return.
    blackhole("del");
    wait_for("routes back", Duration::from_secs(30), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
            && lab.router_route(VIP6).contains(&speaker_v6(1))
    });
    for p in sp.speaker.peers() {
        assert!(p.established_count >= 2, "{p:?}");
    }
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        reasons.extend(e.reason);
    }
    assert!(
        reasons.iter().filter(|r| r.contains("BFD down")).count() >= 2,
        "both sessions of the speaker also went down through BFD: {reasons:?}"
    );
}
