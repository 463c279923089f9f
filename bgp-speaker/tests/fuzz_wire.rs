//! Property tests over everything that parses peer input: the BGP header
//! check, the raw UPDATE checks, the netgauze-backed decoder and the BFD
//! packet decoder. None may panic, whatever the bytes; everything we encode
//! must decode cleanly.

use std::net::{Ipv4Addr, Ipv6Addr};

use bgp_speaker::bfd::Packet;
use bgp_speaker::raw_check::{check_open, check_update};
use bgp_speaker::wire::{self, HEADER_LEN, Incoming};
use bgp_speaker::{IpNet, Origin, RouteAttrs};
use proptest::prelude::*;

/// The reader task's pipeline on one buffer.
fn parse_like_reader(buf: &[u8]) {
    let mut ctx = wire::new_context();
    let Some(h) = buf.get(..HEADER_LEN) else {
        return;
    };
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(h);
    let Ok(len) = wire::check_header(&hdr) else {
        return;
    };
    let Some(frame) = buf.get(..len) else { return };
    if hdr[18] == wire::TYPE_UPDATE && check_update(frame).is_err() {
        return;
    }
    if hdr[18] == wire::TYPE_OPEN && check_open(frame).is_err() {
        return;
    }
    let _ = wire::decode(frame, &mut ctx);
}

fn attrs() -> impl Strategy<Value = RouteAttrs> {
    (
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ],
        0u8..5,
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u32>(), 0..20),
        proptest::collection::vec(any::<(u32, u32, u32)>(), 0..10),
    )
        .prop_map(
            |(origin, as_path_prepend, med, local_pref, communities, large_communities)| {
                RouteAttrs {
                    origin,
                    as_path_prepend,
                    med,
                    local_pref,
                    communities,
                    large_communities,
                }
            },
        )
}

fn sample_messages() -> Vec<Vec<u8>> {
    let ctx = wire::UpdateCtx {
        local_as: 4_200_000_001,
        ebgp: true,
        asn4: true,
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 2)),
        next_hop_v6: Some("2001:db8::2".parse::<Ipv6Addr>().unwrap()),
    };
    let a = RouteAttrs {
        med: Some(5),
        communities: vec![1, 2],
        large_communities: vec![(1, 2, 3)],
        ..Default::default()
    };
    vec![
        wire::open(&wire::OpenParams {
            local_as: 65001,
            hold_time: 9,
            router_id: Ipv4Addr::new(192, 0, 2, 2),
            graceful_restart: Some((120, true)),
        }),
        wire::announce(&ctx, "198.51.100.10/32".parse().unwrap(), &a).unwrap(),
        wire::announce(&ctx, "2001:db8:ffff::10/128".parse().unwrap(), &a).unwrap(),
        wire::withdraw("2001:db8:ffff::10/128".parse().unwrap()).unwrap(),
        wire::end_of_rib(true),
        wire::keepalive(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_like_reader(&buf);
        let _ = Packet::decode(&buf);
    }

    #[test]
    fn random_body_behind_valid_header_never_panics(ty in 1u8..=5, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        m.push(ty);
        m.extend_from_slice(&body);
        parse_like_reader(&m);
    }

    #[test]
    fn mutated_valid_messages_never_panic(which in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut m = sample_messages()[which].clone();
        for (at, v) in flips {
            let i = HEADER_LEN + at % (m.len() - HEADER_LEN).max(1);
            if i < m.len() { m[i] = v; }
        }
        // Keep the header length consistent with a possible truncation.
        let keep = HEADER_LEN + cut % (m.len() - HEADER_LEN + 1);
        m.truncate(keep);
        let len = m.len() as u16;
        m[16..18].copy_from_slice(&len.to_be_bytes());
        parse_like_reader(&m);
    }

    #[test]
    fn our_updates_decode_cleanly(a in attrs(), v4 in any::<u32>(), v6 in any::<u128>(), asn4 in any::<bool>()) {
        let ctx = wire::UpdateCtx {
            local_as: 65001,
            ebgp: true,
            asn4,
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 2)),
            next_hop_v6: Some("2001:db8::2".parse::<Ipv6Addr>().unwrap()),
        };
        for p in [
            IpNet::new(Ipv4Addr::from(v4).into(), 32).unwrap(),
            IpNet::new(Ipv6Addr::from(v6).into(), 128).unwrap(),
        ] {
            if !wire::is_unicast(p) {
                prop_assert!(wire::announce(&ctx, p, &a).is_none());
                continue;
            }
            let m = wire::announce(&ctx, p, &a).expect("encodes");
            prop_assert!(check_update(&m).is_ok());
            let mut dctx = wire::new_context();
            dctx.set_asn4(asn4);
            match wire::decode(&m, &mut dctx) {
                Ok(Incoming::Update(u)) => prop_assert_eq!(wire::update_prefix_counts(&u), (1, 0)),
                other => prop_assert!(false, "decoded as {:?}", other),
            }
            let w = wire::withdraw(p).expect("encodes");
            match wire::decode(&w, &mut dctx) {
                Ok(Incoming::Update(u)) => prop_assert_eq!(wire::update_prefix_counts(&u), (0, 1)),
                other => prop_assert!(false, "decoded as {:?}", other),
            }
        }
    }
}
