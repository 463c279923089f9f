//! Sessions with FRR over IPv4 and IPv6 transport, and ECMP in the router's
//! kernel from two speakers announcing the same /32 and /128.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn frr_two_speakers_ecmp_v4_v6_announce_withdraw() {
    let lab = Lab::new("ecmp", 2);
    let mut neigh = Vec::new();
    for i in 1..=2 {
        for addr in [speaker_v4(i), speaker_v6(i)] {
            neigh.push(FrrNeighbor {
                addr,
                remote_as: 65100 + i as u32,
                ..Default::default()
            });
        }
    }
    let frr = Frr::start(&lab, &neigh, &FrrExtra::default());
    let s: Vec<NsSpeaker> = (1..=2)
        .map(|i| {
            NsSpeaker::start(
                &lab.speakers[i - 1],
                speaker_config(i, &[&router_v4(i), &router_v6(i)]),
            )
        })
        .collect();
    for (i, sp) in s.iter().enumerate() {
        wait_for(
            &format!("speaker {} established twice", i + 1),
            Duration::from_secs(30),
            || sp.established() == 2,
        );
    }
    for n in &neigh {
        assert_eq!(
            frr.neighbor_state(&n.addr),
            "Established",
            "FRR side of {}",
            n.addr
        );
    }
    announce_ecmp_then_withdraw_one_by_one(&lab, &s);
    for sp in &s {
        for p in sp.speaker.peers() {
            assert_eq!(p.state, bgp_speaker::State::Established, "{p:?}");
            assert!(p.messages_in >= 2 && p.messages_out >= 4, "{p:?}");
            assert_eq!(p.prefixes_sent, 0);
        }
    }
}
