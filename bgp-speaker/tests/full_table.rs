//! The router sends a large table to the speaker: the session stays up, the
//! routes are counted and ignored, and our own announcement still works.

mod common;

use std::time::Duration;

use bgp_speaker::{RouteAttrs, State};
use common::*;

const V4_ROUTES: usize = 20_000;
const V6_ROUTES: usize = 5_000;

#[test]
fn frr_sends_full_table_session_stays_up() {
    let lab = Lab::new("table", 1);
    // Routes carry the attributes real routers add, so the decoder sees more
    // than ORIGIN/AS_PATH/NEXT_HOP.
    let preamble = "route-map RICH permit 10\n set community 65000:1 no-export\n \
                    set large-community 65000:1:2\n set extcommunity rt 65000:100\n \
                    set metric 50\n set as-path prepend 65000 65000\n set origin incomplete\n!\n";
    let mut af4 = String::new();
    for i in 0..V4_ROUTES {
        af4 += &format!("  network 10.{}.{}.0/24\n", i / 256, i % 256);
    }
    af4 += &format!("  neighbor {} route-map RICH out\n", speaker_v4(1));
    let mut af6 = String::new();
    for i in 0..V6_ROUTES {
        af6 += &format!("  network 2001:db8:8000:{i:x}::/64\n");
    }
    af6 += &format!("  neighbor {} route-map RICH out\n", speaker_v6(1));
    let frr = Frr::start(
        &lab,
        &[
            FrrNeighbor {
                addr: speaker_v4(1),
                remote_as: 65101,
                ..Default::default()
            },
            FrrNeighbor {
                addr: speaker_v6(1),
                remote_as: 65101,
                ..Default::default()
            },
        ],
        &FrrExtra {
            preamble: preamble.into(),
            global: " no bgp network import-check\n".into(),
            af4,
            af6,
        },
    );
    let sp = NsSpeaker::start(
        &lab.speakers[0],
        speaker_config(1, &[&router_v4(1), &router_v6(1)]),
    );
    wait_for("sessions", Duration::from_secs(30), || {
        sp.established() == 2
    });
    // Each session carries both families, so every route arrives twice.
    let want = 2 * (V4_ROUTES + V6_ROUTES) as u64;
    wait_for("full table received", Duration::from_secs(60), || {
        sp.speaker
            .peers()
            .iter()
            .map(|p| p.prefixes_received)
            .sum::<u64>()
            >= want
    });
    sp.speaker
        .announce(VIP4.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    sp.speaker
        .announce(VIP6.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    wait_for("our routes at FRR", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
            && lab.router_route(VIP6).contains(&speaker_v6(1))
    });
    // Several keepalive periods under the table: nothing resets.
    std::thread::sleep(Duration::from_secs(4));
    for p in sp.speaker.peers() {
        assert_eq!(p.state, State::Established, "{p:?}");
        assert_eq!(p.established_count, 1, "{p:?}");
        assert!(p.updates_in > 0, "{p:?}");
    }
    assert_eq!(frr.neighbor_state(&speaker_v4(1)), "Established");
    let rm = frr.vtysh("show route-map RICH");
    for set in [
        "large-community",
        "extcommunity rt",
        "as-path prepend",
        "metric 50",
    ] {
        assert!(rm.contains(set), "route-map lacks {set}: {rm}");
    }
}
