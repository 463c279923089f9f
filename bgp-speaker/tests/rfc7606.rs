//! RFC 7606 classification of received UPDATEs, one test per attribute and
//! per structural rule: treat-as-withdraw and attribute discard keep the
//! session, and the errors still classed as session reset carry the code,
//! subcode and data of RFC 4271 section 6.3.

mod common;

use bgp_speaker::iana::{attr, code, update};
use bgp_speaker::raw_check::{
    Action, CheckCtx, ErrorClass, UpdateSummary, check_route_refresh, check_update,
};
use common::raw::{attrs_with, msg, update_msg};

const ORIGIN: [u8; 4] = [0x40, attr::ORIGIN, 1, 0];
/// AS_SEQUENCE 65000, 4-octet.
const AS_PATH4: [u8; 9] = [0x40, attr::AS_PATH, 6, 2, 1, 0, 0, 0xfd, 0xe8];
const NEXT_HOP: [u8; 7] = [0x40, attr::NEXT_HOP, 4, 192, 0, 2, 1];
const NLRI: [u8; 5] = [32, 198, 51, 100, 1];

fn ebgp() -> CheckCtx {
    CheckCtx {
        ebgp: true,
        asn4: true,
        enhanced_route_refresh: false,
        ipv4: true,
        ipv6: true,
    }
}

/// ORIGIN, AS_PATH, NEXT_HOP with one attribute replaced or added.
fn with(extra: &[u8], replace: Option<u8>) -> Vec<u8> {
    attrs_with(&[&ORIGIN, &AS_PATH4, &NEXT_HOP], replace, extra)
}

fn classify(attrs: &[u8], ctx: &CheckCtx) -> UpdateSummary {
    check_update(&update_msg(&[], attrs, &NLRI), ctx).expect("no session reset")
}

/// The UPDATE is treated as withdraw with exactly this one error class.
fn assert_withdraw(attrs: &[u8], ctx: &CheckCtx, class: ErrorClass) {
    let s = classify(attrs, ctx);
    assert!(s.treated_as_withdraw(), "{s:?}");
    assert_eq!(s.announced, 0);
    assert_eq!(s.withdrawn, 1);
    let classes: Vec<_> = s.errors.iter().map(|e| (e.action, e.class)).collect();
    assert_eq!(classes, vec![(Action::TreatAsWithdraw, class)], "{s:?}");
}

/// The attribute is discarded, the route stays.
fn assert_discard(attrs: &[u8], ctx: &CheckCtx, class: ErrorClass) {
    let s = classify(attrs, ctx);
    assert!(!s.treated_as_withdraw(), "{s:?}");
    assert_eq!(s.announced, 1);
    let classes: Vec<_> = s.errors.iter().map(|e| (e.action, e.class)).collect();
    assert_eq!(classes, vec![(Action::AttributeDiscard, class)], "{s:?}");
}

fn assert_reset(frame: &[u8], ctx: &CheckCtx, subcode: u8, data: &[u8]) {
    let n = check_update(frame, ctx).expect_err("session reset");
    assert_eq!(
        (n.code, n.subcode, n.data.as_slice()),
        (code::UPDATE, subcode, data)
    );
}

#[test]
fn a_clean_update_has_no_errors() {
    let s = classify(&with(&[], None), &ebgp());
    assert_eq!(
        s,
        UpdateSummary {
            announced: 1,
            withdrawn: 0,
            errors: vec![]
        }
    );
}

#[test]
fn origin_7_1() {
    let c = ebgp();
    let bad_value = with(&[0x40, attr::ORIGIN, 1, 3], Some(attr::ORIGIN));
    assert_withdraw(&bad_value, &c, ErrorClass::Origin);
    let bad_len = with(&[0x40, attr::ORIGIN, 2, 0, 0], Some(attr::ORIGIN));
    assert_withdraw(&bad_len, &c, ErrorClass::Origin);
}

#[test]
fn as_path_7_2() {
    let c = ebgp();
    for bad in [
        // Segment type 9.
        vec![0x40, attr::AS_PATH, 6, 9, 1, 0, 0, 0xfd, 0xe8],
        // Segment count 2, one AS present.
        vec![0x40, attr::AS_PATH, 6, 2, 2, 0, 0, 0xfd, 0xe8],
        // Empty segment.
        vec![0x40, attr::AS_PATH, 2, 2, 0],
        // AS 0 (RFC 7607).
        vec![0x40, attr::AS_PATH, 6, 2, 1, 0, 0, 0, 0],
    ] {
        assert_withdraw(&with(&bad, Some(attr::AS_PATH)), &c, ErrorClass::AsPath);
    }
    // A 2-octet session reads the 4-octet path as 3 ASes in a 1-AS segment.
    let two = CheckCtx {
        asn4: false,
        ..ebgp()
    };
    assert_withdraw(&with(&[], None), &two, ErrorClass::AsPath);
    let as2 = [0x40, attr::AS_PATH, 4, 2, 1, 0xfd, 0xe8];
    assert!(
        classify(&with(&as2, Some(attr::AS_PATH)), &two)
            .errors
            .is_empty()
    );
}

#[test]
fn next_hop_7_3() {
    let c = ebgp();
    let short = with(&[0x40, attr::NEXT_HOP, 3, 192, 0, 2], Some(attr::NEXT_HOP));
    assert_withdraw(&short, &c, ErrorClass::NextHop);
    let multicast = with(
        &[0x40, attr::NEXT_HOP, 4, 224, 0, 0, 1],
        Some(attr::NEXT_HOP),
    );
    assert_withdraw(&multicast, &c, ErrorClass::NextHop);
}

#[test]
fn med_7_4() {
    let bad = with(&[0x80, attr::MULTI_EXIT_DISC, 2, 0, 1], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::MultiExitDisc);
}

#[test]
fn local_pref_7_5_discarded_from_ebgp_checked_on_ibgp() {
    let good = with(&[0x40, attr::LOCAL_PREF, 4, 0, 0, 0, 100], None);
    assert_discard(&good, &ebgp(), ErrorClass::LocalPref);
    let ibgp = CheckCtx {
        ebgp: false,
        ..ebgp()
    };
    assert!(classify(&good, &ibgp).errors.is_empty());
    let bad = with(&[0x40, attr::LOCAL_PREF, 3, 0, 0, 100], None);
    assert_withdraw(&bad, &ibgp, ErrorClass::LocalPref);
}

#[test]
fn atomic_aggregate_7_6() {
    let bad = with(&[0x40, attr::ATOMIC_AGGREGATE, 1, 0], None);
    assert_discard(&bad, &ebgp(), ErrorClass::AtomicAggregate);
}

#[test]
fn aggregator_7_7() {
    // 2-octet AS + id on a 4-octet session.
    let bad = with(&[0xc0, attr::AGGREGATOR, 6, 0xfd, 0xe8, 192, 0, 2, 1], None);
    assert_discard(&bad, &ebgp(), ErrorClass::Aggregator);
    let as0 = with(&[0xc0, attr::AGGREGATOR, 8, 0, 0, 0, 0, 192, 0, 2, 1], None);
    assert_discard(&as0, &ebgp(), ErrorClass::Aggregator);
}

#[test]
fn communities_7_8() {
    let bad = with(&[0xc0, attr::COMMUNITIES, 3, 0, 1, 2], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::Communities);
    let empty = with(&[0xc0, attr::COMMUNITIES, 0], None);
    assert_withdraw(&empty, &ebgp(), ErrorClass::Communities);
}

#[test]
fn originator_id_7_9_and_cluster_list_7_10() {
    let bad = with(&[0x80, attr::ORIGINATOR_ID, 3, 1, 2, 3], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::OriginatorId);
    let bad = with(&[0x80, attr::CLUSTER_LIST, 5, 1, 2, 3, 4, 5], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::ClusterList);
}

#[test]
fn extended_communities_7_14_and_ipv6_7_15() {
    let bad = with(
        &[0xc0, attr::EXTENDED_COMMUNITIES, 7, 0, 2, 0, 0, 0, 0, 1],
        None,
    );
    assert_withdraw(&bad, &ebgp(), ErrorClass::ExtendedCommunities);
    let mut v6 = vec![0xc0, attr::IPV6_EXTENDED_COMMUNITIES, 19];
    v6.extend_from_slice(&[0; 19]);
    assert_withdraw(
        &with(&v6, None),
        &ebgp(),
        ErrorClass::Ipv6ExtendedCommunities,
    );
}

#[test]
fn large_communities_rfc8092() {
    let bad = with(&[0xc0, attr::LARGE_COMMUNITIES, 4, 0, 0, 0, 1], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::LargeCommunities);
}

#[test]
fn as4_path_and_as4_aggregator_rfc6793() {
    // From a 4-octet speaker they are ignored outright.
    let as4 = with(&[0xc0, attr::AS4_PATH, 6, 2, 1, 0, 0, 0xfd, 0xe8], None);
    assert_discard(&as4, &ebgp(), ErrorClass::As4Path);
    // From a 2-octet speaker a malformed one is discarded.
    let two = CheckCtx {
        asn4: false,
        ..ebgp()
    };
    let mut a = vec![0x40, attr::ORIGIN, 1, 0];
    a.extend_from_slice(&[0x40, attr::AS_PATH, 4, 2, 1, 0x5b, 0xa0]);
    a.extend_from_slice(&NEXT_HOP);
    let mut good = a.clone();
    good.extend_from_slice(&[0xc0, attr::AS4_PATH, 6, 2, 1, 0, 1, 0, 1]);
    assert!(classify(&good, &two).errors.is_empty());
    let mut bad = a.clone();
    bad.extend_from_slice(&[0xc0, attr::AS4_PATH, 5, 2, 1, 0, 1, 0]);
    assert_discard(&bad, &two, ErrorClass::As4Path);
    let mut agg = a;
    agg.extend_from_slice(&[0xc0, attr::AS4_AGGREGATOR, 6, 0, 1, 192, 0, 2, 1]);
    assert_discard(&agg, &two, ErrorClass::As4Aggregator);
}

#[test]
fn only_to_customer_rfc9234() {
    let bad = with(&[0xc0, attr::ONLY_TO_CUSTOMER, 2, 0, 1], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::OnlyToCustomer);
}

#[test]
fn flags_conflict_3c_is_treat_as_withdraw() {
    // ORIGIN marked optional.
    let bad = with(&[0xc0, attr::ORIGIN, 1, 0], Some(attr::ORIGIN));
    assert_withdraw(&bad, &ebgp(), ErrorClass::AttributeFlags);
    // MED marked transitive.
    let bad = with(&[0xc0, attr::MULTI_EXIT_DISC, 4, 0, 0, 0, 1], None);
    assert_withdraw(&bad, &ebgp(), ErrorClass::AttributeFlags);
}

#[test]
fn missing_well_known_3d_is_treat_as_withdraw() {
    let no_nh = with(&[], Some(attr::NEXT_HOP));
    assert_withdraw(&no_nh, &ebgp(), ErrorClass::MissingWellKnown);
    let s = classify(&no_nh, &ebgp());
    assert_eq!(s.errors[0].attr_type, attr::NEXT_HOP);
    // NLRI and no attributes at all.
    assert_withdraw(&[], &ebgp(), ErrorClass::MissingWellKnown);
    // A pure withdrawal needs none.
    let s = check_update(&update_msg(&NLRI, &[], &[]), &ebgp()).unwrap();
    assert_eq!((s.announced, s.withdrawn, s.errors.len()), (0, 1, 0));
}

#[test]
fn duplicates_3g_keep_the_first_except_mp_reach() {
    let dup = with(&[0x80, attr::MULTI_EXIT_DISC, 4, 0, 0, 0, 1], None);
    let mut twice = dup.clone();
    twice.extend_from_slice(&[0x80, attr::MULTI_EXIT_DISC, 4, 0, 0, 0, 2]);
    assert_discard(&twice, &ebgp(), ErrorClass::Duplicate);
    let unreach = [0x80, attr::MP_UNREACH_NLRI, 3, 0, 2, 1];
    let mut mp = unreach.to_vec();
    mp.extend_from_slice(&unreach);
    assert_reset(
        &update_msg(&[], &mp, &[]),
        &ebgp(),
        update::MALFORMED_ATTRIBUTE_LIST,
        &[],
    );
}

#[test]
fn overrun_section_4_is_treat_as_withdraw() {
    let mut a = with(&[], Some(attr::NEXT_HOP));
    a.extend_from_slice(&[0x40, attr::NEXT_HOP, 40, 192, 0, 2, 1]);
    assert_withdraw(&a, &ebgp(), ErrorClass::AttributeOverrun);
    // A lone flags octet at the end.
    let mut b = with(&[], None);
    b.push(0x40);
    assert_withdraw(&b, &ebgp(), ErrorClass::AttributeOverrun);
}

#[test]
fn unrecognized_attributes() {
    // Optional: ignored.
    let opt = with(&[0xc0, 250, 2, 1, 2], None);
    assert!(classify(&opt, &ebgp()).errors.is_empty());
    // Well-known: 3/2 with the attribute as data.
    let wk = [0x40, 250, 2, 1, 2];
    assert_reset(
        &update_msg(&[], &with(&wk, None), &NLRI),
        &ebgp(),
        update::UNRECOGNIZED_WELL_KNOWN,
        &wk,
    );
}

#[test]
fn length_fields_and_nlri_are_session_resets() {
    // Withdrawn Routes Length past the message: 3/1.
    let mut m = update_msg(&[], &[], &[]);
    m[19..21].copy_from_slice(&100u16.to_be_bytes());
    assert_reset(&m, &ebgp(), update::MALFORMED_ATTRIBUTE_LIST, &[]);
    // Total Path Attribute Length past the message: 3/1.
    let mut m = update_msg(&[], &with(&[], None), &[]);
    m[21..23].copy_from_slice(&200u16.to_be_bytes());
    assert_reset(&m, &ebgp(), update::MALFORMED_ATTRIBUTE_LIST, &[]);
    // Prefix length 33 in the NLRI field and in the withdrawn field: 3/10.
    let m = update_msg(&[], &with(&[], None), &[33, 1, 2, 3, 4, 5]);
    assert_reset(&m, &ebgp(), update::INVALID_NETWORK_FIELD, &[]);
    let m = update_msg(&[24, 198, 51], &[], &[]);
    assert_reset(&m, &ebgp(), update::INVALID_NETWORK_FIELD, &[]);
}

#[test]
fn mp_reach_7_11_and_mp_unreach_7_12() {
    let base = with(&[], Some(attr::NEXT_HOP));
    // IPv6 unicast, next hop 2001:db8::1, one /128.
    let mut good = vec![0x80, attr::MP_REACH_NLRI, 38, 0, 2, 1, 16];
    good.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    good.push(0);
    good.extend_from_slice(&[
        128, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ]);
    let mut a = base.clone();
    a.extend_from_slice(&good);
    let s = check_update(&update_msg(&[], &a, &[]), &ebgp()).unwrap();
    assert_eq!((s.announced, s.errors.len()), (1, 0), "{s:?}");
    // Next hop length 4 for IPv6: 3/9 with the attribute.
    let bad_nh = [
        0x80,
        attr::MP_REACH_NLRI,
        10,
        0,
        2,
        1,
        4,
        192,
        0,
        2,
        1,
        0,
        0,
    ];
    let mut a = base.clone();
    a.extend_from_slice(&bad_nh);
    assert_reset(
        &update_msg(&[], &a, &[]),
        &ebgp(),
        update::OPTIONAL_ATTRIBUTE,
        &bad_nh,
    );
    // A multicast IPv6 next hop: the routes are withdrawn.
    let mut mc = good.clone();
    mc[7] = 0xff;
    let mut a = base.clone();
    a.extend_from_slice(&mc);
    let s = check_update(&update_msg(&[], &a, &[]), &ebgp()).unwrap();
    assert!(s.treated_as_withdraw(), "{s:?}");
    assert_eq!(s.errors[0].class, ErrorClass::MpReachNextHop);
    // MP_UNREACH with a prefix running out: 3/9.
    let bad_un = [0x80, attr::MP_UNREACH_NLRI, 5, 0, 2, 1, 64, 0x20];
    assert_reset(
        &update_msg(&[], &bad_un, &[]),
        &ebgp(),
        update::OPTIONAL_ATTRIBUTE,
        &bad_un,
    );
    // A family we do not speak is ignored.
    let other = [0x80, attr::MP_UNREACH_NLRI, 4, 0, 25, 65, 7];
    let s = check_update(&update_msg(&[], &other, &[]), &ebgp()).unwrap();
    assert_eq!(s, UpdateSummary::default());
}

#[test]
fn every_error_keeps_an_excerpt_of_the_attribute() {
    let mut long = vec![0xd0, attr::COMMUNITIES, 0, 41];
    long.extend_from_slice(&[7; 41]);
    let s = classify(&with(&long, None), &ebgp());
    assert_eq!(
        s.errors[0].excerpt.len(),
        bgp_speaker::raw_check::EXCERPT_LEN
    );
    assert_eq!(&s.errors[0].excerpt[..4], &long[..4]);
}

#[test]
fn route_refresh_rfc7313_and_rfc2918() {
    let rr = |afi: u16, sub: u8, safi: u8| {
        let mut b = afi.to_be_bytes().to_vec();
        b.push(sub);
        b.push(safi);
        msg(5, &b)
    };
    let plain = ebgp();
    let enhanced = CheckCtx {
        enhanced_route_refresh: true,
        ..ebgp()
    };
    // Requests for our families; other families and (with RFC 7313)
    // other subtypes are ignored.
    assert!(check_route_refresh(&rr(1, 0, 1), &plain).unwrap().is_some());
    assert!(
        check_route_refresh(&rr(2, 0, 1), &enhanced)
            .unwrap()
            .is_some()
    );
    assert!(check_route_refresh(&rr(2, 9, 1), &plain).unwrap().is_some());
    assert!(
        check_route_refresh(&rr(2, 9, 1), &enhanced)
            .unwrap()
            .is_none()
    );
    assert!(
        check_route_refresh(&rr(2, 1, 1), &enhanced)
            .unwrap()
            .is_none()
    );
    assert!(
        check_route_refresh(&rr(25, 0, 65), &plain)
            .unwrap()
            .is_none()
    );
    // A long one: 7/1 with the message when negotiated, 1/2 otherwise.
    let long = msg(5, &[0, 1, 0, 1, 0]);
    let n = check_route_refresh(&long, &enhanced).unwrap_err();
    assert_eq!((n.code, n.subcode, n.data), (7, 1, long.clone()));
    let n = check_route_refresh(&long, &plain).unwrap_err();
    assert_eq!((n.code, n.subcode, n.data), (1, 2, vec![0, 24]));
}
