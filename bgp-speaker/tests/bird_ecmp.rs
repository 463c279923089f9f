//! Sessions with BIRD 2 over IPv4 and IPv6 transport, and ECMP in the
//! router's kernel (BIRD's `merge paths`) from two speakers.

mod common;

use std::time::Duration;

use bgp_speaker::RouteAttrs;
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
    for sp in &s {
        sp.speaker
            .announce(VIP4.parse().unwrap(), RouteAttrs::default())
            .unwrap();
        sp.speaker
            .announce(VIP6.parse().unwrap(), RouteAttrs::default())
            .unwrap();
    }
    let both = |prefix: &str, a: &str, b: &str| {
        let r = lab.router_route(prefix);
        r.contains(&format!("via {a} ")) && r.contains(&format!("via {b} "))
    };
    wait_for("IPv4 ECMP route", Duration::from_secs(10), || {
        both(VIP4, &speaker_v4(1), &speaker_v4(2))
    });
    wait_for("IPv6 ECMP route", Duration::from_secs(10), || {
        both(VIP6, &speaker_v6(1), &speaker_v6(2))
    });
    s[0].speaker.withdraw(VIP4.parse().unwrap());
    s[0].speaker.withdraw(VIP6.parse().unwrap());
    let only = |prefix: &str, keep: &str, gone: &str| {
        let r = lab.router_route(prefix);
        r.contains(keep) && !r.contains(&format!("{gone} "))
    };
    wait_for(
        "IPv4 route via speaker 2 only",
        Duration::from_secs(10),
        || only(VIP4, &speaker_v4(2), &speaker_v4(1)),
    );
    wait_for(
        "IPv6 route via speaker 2 only",
        Duration::from_secs(10),
        || only(VIP6, &speaker_v6(2), &speaker_v6(1)),
    );
    s[1].speaker.withdraw(VIP4.parse().unwrap());
    s[1].speaker.withdraw(VIP6.parse().unwrap());
    wait_for("routes gone", Duration::from_secs(10), || {
        lab.router_route(VIP4).trim().is_empty() && lab.router_route(VIP6).trim().is_empty()
    });
}
