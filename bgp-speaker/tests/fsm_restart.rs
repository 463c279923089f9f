//! The session FSM restarts on its own: the speaker starts before the
//! router and keeps retrying (backoff with jitter), comes back after the
//! router's bgpd is killed, and uses the configured source address when the
//! router only accepts connections from it (FRR `passive`).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use bgp_speaker::{RouteAttrs, State};
use common::*;

#[test]
fn retries_until_router_starts_recovers_from_router_crash_and_uses_source_address() {
    let lab = Lab::new("fsm", 1);
    // A second IPv6 address on the speaker's uplink: the router only knows
    // this one and never connects itself.
    let source = "2001:db8:1::3";
    must(&format!(
        "ip -n {} addr add {source}/64 dev uplink nodad",
        lab.speakers[0]
    ));
    let mut cfg = speaker_config(1, &[&router_v4(1), &router_v6(1)]);
    cfg.peers[1].local_address = Some(source.parse().unwrap());
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    sp.speaker
        .announce(VIP4.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    wait_for("failed connect attempts", Duration::from_secs(10), || {
        sp.speaker.peers()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connect"))
    });

    let mut frr = Frr::start(
        &lab,
        &[
            FrrNeighbor {
                addr: speaker_v4(1),
                remote_as: 65101,
                ..Default::default()
            },
            FrrNeighbor {
                addr: source.into(),
                remote_as: 65101,
                passive: true,
                ..Default::default()
            },
        ],
        &FrrExtra::default(),
    );
    wait_for("both sessions", Duration::from_secs(30), || {
        sp.established() == 2
    });
    let v6 = &sp.speaker.peers()[1];
    assert_eq!(v6.local_address, Some(source.parse::<IpAddr>().unwrap()));
    assert_eq!(frr.neighbor_state(source), "Established");
    wait_for("route", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });

    // The router's bgpd dies and comes back: the sessions return by
    // themselves and the route is announced again.
    frr.kill_bgpd();
    wait_for("sessions down", Duration::from_secs(10), || {
        sp.speaker
            .peers()
            .iter()
            .all(|p| p.state != State::Established)
    });
    frr.start_bgpd();
    wait_for("sessions back", Duration::from_secs(30), || {
        sp.established() == 2
    });
    wait_for("route back", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });
    assert!(sp.speaker.peers().iter().all(|p| p.established_count >= 2));
}
