//! Property tests over everything that parses peer input: the BGP header
//! check, the raw UPDATE checks, the netgauze-backed decoder and the BFD
//! packet decoder. None may panic, whatever the bytes; everything we encode
//! must decode cleanly.

use std::net::{Ipv4Addr, Ipv6Addr};

use bgp_speaker::bfd::Packet;
use bgp_speaker::iana::attr;
use bgp_speaker::raw_check::{CheckCtx, check_update};
use bgp_speaker::wire::{self, HEADER_LEN, Incoming};
use bgp_speaker::{IpNet, Origin, RouteAttrs};
use proptest::prelude::*;

/// The reader task's pipeline on one buffer.
fn parse_like_reader(buf: &[u8]) {
    let mut decoder = wire::Decoder::new(true);
    let Some(h) = buf.get(..HEADER_LEN) else {
        return;
    };
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(h);
    let Ok(len) = wire::check_header(&hdr) else {
        return;
    };
    let Some(frame) = buf.get(..len) else { return };
    let _ = decoder.decode(frame);
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
            let mut d = wire::Decoder::new(true);
            d.check.asn4 = asn4;
            match d.decode(&m) {
                Ok(Incoming::Update(u)) => {
                    prop_assert_eq!((u.announced, u.withdrawn), (1, 0));
                    prop_assert!(u.errors.is_empty(), "{:?}", u);
                }
                other => prop_assert!(false, "decoded as {:?}", other),
            }
            let w = wire::withdraw(p).expect("encodes");
            match d.decode(&w) {
                Ok(Incoming::Update(u)) => prop_assert_eq!((u.announced, u.withdrawn, u.errors.len()), (0, 1, 0)),
                other => prop_assert!(false, "decoded as {:?}", other),
            }
        }
    }

    /// RFC 7606 over the attribute parser: framing intact, attributes of
    /// the classes handled by treat-as-withdraw or attribute discard with
    /// random flags, lengths and values, in any order and number, possibly
    /// cut short at the end of the list. Never a session reset, and every
    /// error is counted with its class.
    #[test]
    fn malformed_attributes_never_reset_the_session(
        list in proptest::collection::vec((prop_oneof![
            Just(attr::ORIGIN), Just(attr::AS_PATH), Just(attr::NEXT_HOP),
            Just(attr::MULTI_EXIT_DISC), Just(attr::LOCAL_PREF),
            Just(attr::ATOMIC_AGGREGATE), Just(attr::AGGREGATOR),
            Just(attr::COMMUNITIES), Just(attr::ORIGINATOR_ID),
            Just(attr::CLUSTER_LIST), Just(attr::EXTENDED_COMMUNITIES),
            Just(attr::AS4_PATH), Just(attr::AS4_AGGREGATOR),
            Just(attr::IPV6_EXTENDED_COMMUNITIES), Just(attr::LARGE_COMMUNITIES),
            Just(attr::ONLY_TO_CUSTOMER), 100u8..=254,
        ], any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        cut in 0usize..4,
        ctx in (any::<bool>(), any::<bool>()),
    ) {
        let mut attrs = Vec::new();
        for (ty, flags, value) in &list {
            // Unrecognized types stay optional (a well-known one resets).
            let flags = if *ty >= 100 { flags | 0x80 } else { *flags };
            attrs.push(flags);
            attrs.push(*ty);
            if flags & 0x10 != 0 {
                attrs.extend_from_slice(&(value.len() as u16).to_be_bytes());
            } else {
                attrs.push(value.len() as u8);
            }
            attrs.extend_from_slice(value);
        }
        attrs.truncate(attrs.len().saturating_sub(cut));
        let mut body = vec![0, 0];
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        body.extend_from_slice(&[32, 198, 51, 100, 1]);
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        m.push(wire::TYPE_UPDATE);
        m.extend_from_slice(&body);
        let check = CheckCtx { ebgp: ctx.0, asn4: ctx.1, ..CheckCtx::default() };
        match check_update(&m, &check) {
            Ok(s) => prop_assert_eq!(s.announced + s.withdrawn, 1, "{:?}", s),
            Err(n) => prop_assert!(false, "session reset {:?} for {:02x?}", n, attrs),
        }
    }
}
