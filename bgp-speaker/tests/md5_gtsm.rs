//! TCP-MD5 (RFC 2385) and GTSM (RFC 5082) with FRR: the right password and
//! TTL security reach Established; a wrong password, or GTSM against a peer
//! that sends TTL 1, never does.

mod common;

use std::time::{Duration, Instant};

use bgp_speaker::{RouteAttrs, State};
use common::*;

#[test]
fn md5_and_gtsm_with_frr() {
    let lab = Lab::new("md5", 3);
    let n = |i: usize, password: bool, ttl_security: bool| FrrNeighbor {
        addr: speaker_v4(i),
        remote_as: 65100 + i as u32,
        password: password.then(|| "s3cret-key".to_string()),
        ttl_security,
        ..Default::default()
    };
    let frr = Frr::start(
        &lab,
        &[
            n(1, true, true),
            n(2, true, false),
            n(3, false, false),
            FrrNeighbor {
                addr: speaker_v6(1),
                remote_as: 65101,
                ..Default::default()
            },
        ],
        &FrrExtra::default(),
    );
    // Speaker 1 also has a plain IPv6 session, so its listener is shared by
    // GTSM and non-GTSM peers (FRR's inbound connection is refused and the
    // GTSM session runs on the speaker's own); speaker 3's listener filters.
    let mut c1 = speaker_config(1, &[&router_v4(1), &router_v6(1)]);
    c1.peers[0].md5_password = Some("s3cret-key".into());
    c1.peers[0].ttl_security = true;
    let mut c2 = speaker_config(2, &[&router_v4(2)]);
    c2.peers[0].md5_password = Some("wrong-key".into());
    let mut c3 = speaker_config(3, &[&router_v4(3)]);
    c3.peers[0].ttl_security = true;
    let s: Vec<NsSpeaker> = [c1, c2, c3]
        .into_iter()
        .enumerate()
        .map(|(i, c)| NsSpeaker::start(&lab.speakers[i], c))
        .collect();
    for sp in &s {
        sp.speaker
            .announce(VIP4.parse().unwrap(), RouteAttrs::default())
            .unwrap();
    }
    wait_for(
        "MD5 + GTSM session and plain session",
        Duration::from_secs(30),
        || s[0].established() == 2,
    );
    wait_for("route via speaker 1", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });
    assert_eq!(frr.neighbor_state(&speaker_v4(1)), "Established");
    // Several connect attempts from both sides (FRR retries every second).
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for i in [2, 3] {
            assert_ne!(
                s[i - 1].speaker.peers()[0].state,
                State::Established,
                "speaker {i}"
            );
            assert_ne!(
                frr.neighbor_state(&speaker_v4(i)),
                "Established",
                "FRR with speaker {i}"
            );
        }
        // GTSM on the speaker's listener drops FRR's TTL-1 SYNs, so FRR's
        // own connection never even opens.
        let st = frr.neighbor_state(&speaker_v4(3));
        assert!(
            ["Idle", "Connect", "Active"].contains(&st.as_str()),
            "FRR with speaker 3 in {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = lab.router_route(VIP4);
    assert!(
        !r.contains(&speaker_v4(2)) && !r.contains(&speaker_v4(3)),
        "{r}"
    );
}
