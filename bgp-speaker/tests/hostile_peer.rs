//! A hostile peer (raw TCP) sends malformed OPENs and UPDATEs: each gets the
//! right NOTIFICATION and a clean close, while the speaker's session with
//! FRR stays up undisturbed.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bgp_speaker::{PeerConfig, RouteAttrs, State};
use common::raw::*;
use common::*;

struct Case {
    name: &'static str,
    /// Complete the OPEN exchange first (to OpenConfirm / Established).
    established: bool,
    send: Vec<u8>,
    want: (u8, u8),
}

fn cases() -> Vec<Case> {
    let mut bad_marker = keepalive();
    bad_marker[3] = 0;
    let mut long = msg(2, &[]);
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    let mut long_keepalive = msg(4, &[0]);
    long_keepalive[16..18].copy_from_slice(&20u16.to_be_bytes());
    let mut attrs_flags = ORIGIN.to_vec();
    attrs_flags[0] = 0xc0; // ORIGIN marked optional
    attrs_flags.extend_from_slice(&AS_PATH);
    attrs_flags.extend_from_slice(&NEXT_HOP);
    let mut truncated_mp = ORIGIN.to_vec();
    truncated_mp.extend_from_slice(&AS_PATH);
    // MP_REACH IPv6: next hop length 16 but only 4 bytes follow.
    truncated_mp.extend_from_slice(&[0x80, 14, 8, 0, 2, 1, 16, 0x20, 0x01, 0x0d, 0xb8]);
    let mut no_next_hop = ORIGIN.to_vec();
    no_next_hop.extend_from_slice(&AS_PATH);
    let mut overrun = ORIGIN.to_vec();
    overrun.extend_from_slice(&[0x40, 2, 40, 2, 1]);
    let mut bad_origin = vec![0x40, 1, 1, 7];
    bad_origin.extend_from_slice(&AS_PATH);
    bad_origin.extend_from_slice(&NEXT_HOP);
    vec![
        Case {
            name: "bad marker",
            established: false,
            send: bad_marker,
            want: (1, 1),
        },
        Case {
            name: "length over 4096",
            established: false,
            send: long,
            want: (1, 2),
        },
        Case {
            name: "KEEPALIVE of 20 bytes",
            established: false,
            send: long_keepalive,
            want: (1, 2),
        },
        Case {
            name: "unknown type 9",
            established: false,
            send: msg(9, &[]),
            want: (1, 3),
        },
        Case {
            name: "KEEPALIVE before OPEN",
            established: false,
            send: keepalive(),
            want: (5, 1),
        },
        Case {
            name: "OPEN version 3",
            established: false,
            send: open_with(3, HOSTILE_AS, 9, &[]),
            want: (2, 1),
        },
        Case {
            name: "OPEN wrong AS",
            established: false,
            send: open_with(4, 65099, 9, &[]),
            want: (2, 2),
        },
        Case {
            name: "OPEN hold time 1",
            established: false,
            send: open_with(4, HOSTILE_AS, 1, &[]),
            want: (2, 6),
        },
        Case {
            name: "OPEN unknown parameter type",
            established: false,
            send: open_with(4, HOSTILE_AS, 9, &[7, 2, 0, 0]),
            want: (2, 4),
        },
        Case {
            name: "OPEN truncated capability",
            established: false,
            send: open_with(4, HOSTILE_AS, 9, &[2, 4, 1, 4, 0, 1]),
            want: (2, 0),
        },
        Case {
            name: "UPDATE attribute flags",
            established: true,
            send: update(&attrs_flags, &[32, 198, 51, 100, 1]),
            want: (3, 4),
        },
        Case {
            name: "UPDATE truncated MP_REACH",
            established: true,
            send: update(&truncated_mp, &[]),
            want: (3, 9),
        },
        Case {
            name: "UPDATE missing NEXT_HOP",
            established: true,
            send: update(&no_next_hop, &[32, 198, 51, 100, 1]),
            want: (3, 3),
        },
        Case {
            name: "UPDATE attribute overruns list",
            established: true,
            send: update(&overrun, &[]),
            want: (3, 5),
        },
        Case {
            name: "UPDATE bad ORIGIN value",
            established: true,
            send: update(&bad_origin, &[32, 198, 51, 100, 1]),
            want: (3, 6),
        },
        Case {
            name: "OPEN when Established",
            established: true,
            send: good_open(),
            want: (5, 3),
        },
    ]
}

#[test]
fn hostile_peer_gets_notifications_and_frr_session_survives() {
    let lab = Lab::new("hostile", 1);
    let frr = Frr::start(
        &lab,
        &[FrrNeighbor {
            addr: speaker_v4(1),
            remote_as: 65101,
            ..Default::default()
        }],
        &FrrExtra::default(),
    );
    let mut cfg = speaker_config(1, &[&router_v4(1)]);
    let hostile: IpAddr = router_v6(1).parse().unwrap();
    let mut hp = PeerConfig::new(hostile, 65000);
    hp.passive = true;
    cfg.peers.push(hp);
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    sp.speaker
        .announce(VIP4.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    wait_for("FRR session", Duration::from_secs(30), || {
        sp.established() == 1
    });
    wait_for("route at FRR", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });

    // The hostile client runs from the router namespace.
    let ns = lab.router.clone();
    let target = SocketAddr::new(speaker_v6(1).parse().unwrap(), 179);
    let results = std::thread::spawn(move || {
        enter_netns(&ns);
        let mut results = Vec::new();
        // Unknown capabilities alone are fine (RFC 5492): the session goes on.
        {
            let mut s = connect(target);
            let mut caps =
                caps_param(&[cap(200, &[1, 2, 3]), cap(1, &[0, 1, 0, 1]), cap(201, &[])]);
            caps.extend_from_slice(&caps_param(&[cap(65, &65000u32.to_be_bytes())]));
            s.write_all(&open_with(4, HOSTILE_AS, 9, &caps)).unwrap();
            expect_open_and_keepalive(&mut s);
            s.write_all(&msg(3, &[6, 2])).unwrap();
        }
        for c in cases() {
            let mut s = connect(target);
            if c.established {
                s.write_all(&good_open()).unwrap();
                expect_open_and_keepalive(&mut s);
                s.write_all(&keepalive()).unwrap();
            }
            s.write_all(&c.send).unwrap();
            results.push((c.name, c.want, expect_notification(&mut s)));
        }
        results
    })
    .join()
    .expect("hostile client");
    for r in &results {
        eprintln!("hostile case {:?}", r);
    }
    let wrong: Vec<_> = results
        .iter()
        .filter(|(_, want, got)| want != got)
        .collect();
    assert!(
        wrong.is_empty(),
        "wrong NOTIFICATIONs (case, want, got): {wrong:?}"
    );

    let frr_peer = sp
        .speaker
        .peers()
        .into_iter()
        .find(|p| p.peer.is_ipv4())
        .unwrap();
    assert_eq!(frr_peer.state, State::Established);
    assert_eq!(frr_peer.established_count, 1, "FRR session never flapped");
    assert_eq!(frr.neighbor_state(&speaker_v4(1)), "Established");
    assert!(lab.router_route(VIP4).contains(&speaker_v4(1)));
    let h = sp
        .speaker
        .peers()
        .into_iter()
        .find(|p| p.peer == hostile)
        .unwrap();
    assert!(h.last_error.is_some(), "{h:?}");
}
