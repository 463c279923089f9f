//! Path attributes as FRR sees them (MED, communities, large communities,
//! AS_PATH prepend), route refresh answered by re-sending, and drain with
//! GRACEFUL_SHUTDOWN (RFC 8326) before the withdraw.

mod common;

use std::time::Duration;

use bgp_speaker::{Origin, RouteAttrs};
use common::*;

#[test]
fn attributes_route_refresh_and_drain_with_frr() {
    let lab = Lab::new("attrs", 1);
    let frr = Frr::start(
        &lab,
        &[FrrNeighbor {
            addr: speaker_v4(1),
            remote_as: 65101,
            ..Default::default()
        }],
        &FrrExtra::default(),
    );
    let sp = NsSpeaker::start(&lab.speakers[0], speaker_config(1, &[&router_v4(1)]));
    let attrs = RouteAttrs {
        origin: Origin::Incomplete,
        as_path_prepend: 2,
        med: Some(42),
        local_pref: None,
        communities: vec![(65101 << 16) | 7],
        large_communities: vec![(65101, 1, 2)],
    };
    sp.speaker.announce(VIP4.parse().unwrap(), attrs).unwrap();
    let show = || frr.vtysh(&format!("show bgp ipv4 unicast {VIP4} json"));
    wait_for("route at FRR", Duration::from_secs(30), || {
        show().contains(&speaker_v4(1))
    });
    let r = show();
    for want in [
        "\"metric\":42",
        "65101 65101 65101",
        "65101:7",
        "65101:1:2",
        "\"origin\":\"incomplete\"",
    ] {
        assert!(r.contains(want), "missing {want} in {r}");
    }

    // Route refresh: FRR asks, we send our routes again.
    let before = sp.speaker.peers()[0].updates_out;
    frr.vtysh(&format!("clear bgp ipv4 unicast {} soft in", speaker_v4(1)));
    wait_for(
        "UPDATE re-sent after ROUTE-REFRESH",
        Duration::from_secs(10),
        || sp.speaker.peers()[0].updates_out > before,
    );
    assert_eq!(sp.speaker.peers()[0].established_count, 1);

    // Drain: GRACEFUL_SHUTDOWN first, withdraw after the delay.
    let drainer = {
        let s = sp.speaker.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(s.drain(Duration::from_secs(2)))
        })
    };
    wait_for("GRACEFUL_SHUTDOWN at FRR", Duration::from_secs(5), || {
        show().contains("gracefulShutdown")
    });
    assert!(
        lab.router_route(VIP4).contains(&speaker_v4(1)),
        "still routed while draining"
    );
    drainer.join().unwrap();
    wait_for("withdrawn after drain", Duration::from_secs(5), || {
        lab.router_route(VIP4).trim().is_empty()
    });
}
