//! A speaker without a listener (`listen_port: None`, active connections
//! only) still brings its sessions up: its session tasks must not take the
//! absence of inbound connections for a stop.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn speaker_without_listener_reaches_established() {
    let lab = Lab::new("act", 1);
    let mut cfg = speaker_config(1, &[&router_v4(1)]);
    cfg.listen_port = None;
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    let frr = Frr::start(
        &lab,
        &[FrrNeighbor {
            addr: speaker_v4(1),
            remote_as: 65101,
            ..Default::default()
        }],
        &FrrExtra::default(),
    );
    wait_for("session", Duration::from_secs(30), || sp.established() == 1);
    assert_eq!(frr.neighbor_state(&speaker_v4(1)), "Established");
}
