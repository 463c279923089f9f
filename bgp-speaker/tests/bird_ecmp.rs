//! Sessions with BIRD 2 over IPv4 and IPv6 transport, and ECMP in the
//! router's kernel (BIRD's `merge paths`) from two speakers.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn bird_two_speakers_ecmp_v4_v6_announce_withdraw() {
    let lab = Lab::new("bird", 2);
    let mut neigh = Vec::new();
    for i in 1..=2 {
        neigh.push((speaker_v4(i), 65100 + i as u32, router_v4(i)));
        neigh.push((speaker_v6(i), 65100 + i as u32, router_v6(i)));
    }
    let bird = Bird::start(&lab, &neigh);
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
    let protos = bird.birdc("show protocols");
    assert_eq!(protos.matches("Established").count(), 4, "{protos}");
    announce_ecmp_then_withdraw_one_by_one(&lab, &s);
}
