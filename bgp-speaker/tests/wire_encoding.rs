//! Bytes on the wire for the cases the router tests do not reach: iBGP
//! (LOCAL_PREF, empty AS_PATH), 2-octet peers (AS_TRANS), End-of-RIB,
//! NOTIFICATION encoding, and OPEN checks.

use std::net::Ipv4Addr;

use bgp_speaker::wire::{self, Incoming, Notification};
use bgp_speaker::{Origin, RouteAttrs};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{AsPath, PathAttributeValue};
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

/// Our UPDATE as a peer's classifier sees it (no RFC 7606 error) and as
/// netgauze decodes it (for the attribute values).
fn decode_update(m: &[u8], asn4: bool) -> netgauze_bgp_pkt::update::BgpUpdateMessage {
    let mut d = wire::Decoder::new(false);
    d.check.asn4 = asn4;
    match d.decode(m) {
        Ok(Incoming::Update(u)) => assert!(u.errors.is_empty(), "{u:?}"),
        other => panic!("not an UPDATE: {other:?}"),
    }
    let mut ctx = wire::new_context();
    ctx.set_asn4(asn4);
    let mut reader = SliceReader::new(m);
    match BgpMessage::parse(&mut reader, &mut ctx) {
        Ok(BgpMessage::Update(u)) => u,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn ctx(local_as: u32, ebgp: bool, asn4: bool) -> wire::UpdateCtx {
    wire::UpdateCtx {
        local_as,
        ebgp,
        asn4,
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 2)),
        next_hop_v6: None,
    }
}

#[test]
fn ibgp_update_has_local_pref_and_empty_as_path() {
    let a = RouteAttrs {
        local_pref: Some(250),
        ..Default::default()
    };
    let m = wire::announce(
        &ctx(65000, false, true),
        "198.51.100.10/32".parse().unwrap(),
        &a,
    )
    .unwrap();
    let u = decode_update(&m, true);
    let mut saw_lp = false;
    for attr in u.path_attributes() {
        match attr.value() {
            PathAttributeValue::LocalPreference(lp) => {
                assert_eq!(lp.metric(), 250);
                saw_lp = true;
            }
            PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => assert!(s.is_empty()),
            PathAttributeValue::AsPath(p) => panic!("unexpected {p:?}"),
            _ => {}
        }
    }
    assert!(saw_lp);
}

#[test]
fn ebgp_update_never_carries_local_pref_and_prepends() {
    let a = RouteAttrs {
        local_pref: Some(250),
        as_path_prepend: 2,
        origin: Origin::Egp,
        ..Default::default()
    };
    let m = wire::announce(
        &ctx(65001, true, true),
        "198.51.100.10/32".parse().unwrap(),
        &a,
    )
    .unwrap();
    let u = decode_update(&m, true);
    let mut as_path = None;
    for attr in u.path_attributes() {
        match attr.value() {
            PathAttributeValue::LocalPreference(_) => panic!("LOCAL_PREF on eBGP"),
            PathAttributeValue::AsPath(p) => as_path = Some(Vec::<u32>::from(p.clone())),
            _ => {}
        }
    }
    // An UPDATE without AS_PATH must fail here, not pass the loop above.
    assert_eq!(as_path, Some(vec![65001, 65001, 65001]));
}

#[test]
fn two_octet_peer_gets_as_trans() {
    let m = wire::announce(
        &ctx(4_200_000_000, true, false),
        "198.51.100.10/32".parse().unwrap(),
        &RouteAttrs::default(),
    )
    .unwrap();
    let u = decode_update(&m, false);
    let path = u
        .path_attributes()
        .iter()
        .find_map(|a| match a.value() {
            PathAttributeValue::AsPath(p) => Some(Vec::<u32>::from(p.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(path, vec![u32::from(wire::AS_TRANS)]);
    let open = wire::open(&wire::OpenParams {
        local_as: 4_200_000_000,
        hold_time: 9,
        router_id: Ipv4Addr::new(192, 0, 2, 2),
        graceful_restart: None,
    });
    assert_eq!(&open[20..22], &wire::AS_TRANS.to_be_bytes());
}

#[test]
fn end_of_rib_markers() {
    assert_eq!(
        wire::end_of_rib(false).len(),
        23,
        "IPv4 EoR is the minimum UPDATE"
    );
    let u = decode_update(&wire::end_of_rib(true), true);
    assert_eq!(
        u.end_of_rib(),
        Some(netgauze_iana::address_family::AddressType::Ipv6Unicast)
    );
}

#[test]
fn notification_bytes() {
    let n = Notification::new(6, 10, vec![]);
    let b = n.encode();
    assert_eq!(b.len(), 21);
    assert_eq!(&b[16..], &[0, 21, 3, 6, 10]);
    assert_eq!(n.describe(), "6/10 cease: BFD down");
}

#[test]
fn header_checks() {
    let mut k = wire::keepalive();
    let h: [u8; 19] = k[..19].try_into().unwrap();
    assert_eq!(wire::check_header(&h), Ok(19));
    k[0] = 0;
    let h: [u8; 19] = k[..19].try_into().unwrap();
    assert_eq!(wire::check_header(&h).unwrap_err().subcode, 1);
}

fn open_with_caps(caps: &[&[u8]]) -> Vec<u8> {
    let all: Vec<u8> = caps.concat();
    let mut body = vec![4, 0xfd, 0xe8, 0, 9, 203, 0, 113, 7];
    body.push((all.len() + 2) as u8);
    body.push(2);
    body.push(all.len() as u8);
    body.extend_from_slice(&all);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(1);
    m.extend_from_slice(&body);
    m
}

#[test]
fn open_with_families_we_do_not_know_is_accepted() {
    // What a multi-service router advertises: VPNv4, EVPN, flowspec, BGP-LS,
    // and made-up AFI/SAFI pairs, plus unknown and experimental capabilities.
    let caps: [&[u8]; 9] = [
        &[1, 4, 0, 1, 0, 1],
        &[1, 4, 0, 1, 0, 128],
        &[1, 4, 0, 25, 0, 70],
        &[1, 4, 0, 1, 0, 133],
        &[1, 4, 0x40, 0x04, 0, 71],
        &[1, 4, 0, 99, 0, 1],
        &[1, 4, 0, 1, 0, 200],
        &[200, 3, 1, 2, 3],
        &[240, 0],
    ];
    let m = open_with_caps(&caps);
    let mut ctx = wire::new_context();
    match wire::decode(&m, &mut ctx) {
        Ok(Incoming::Open(o)) => {
            let p = wire::check_open(&o, 65000, Ipv4Addr::new(192, 0, 2, 2), true).unwrap();
            assert!(p.ipv4 && !p.ipv6);
        }
        other => panic!("rejected: {other:?}"),
    }
}
