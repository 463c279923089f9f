//! The hostile-peer corpus: malformed and unusual messages, one case per
//! fresh connection, each with the RFC section it comes from and what a
//! speaker must do about it. `run_case` plays one case against any BGP
//! speaker and reports what came back; the probe after it checks that a
//! correct session still reaches Established.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::raw::{
    attrs_with, cap, caps_param, connect, msg, open_with_id, read_msg as read_one,
    update_msg as update,
};

/// The AS the hostile peer claims (both targets are configured with it).
pub const PEER_AS: u16 = 65098;
const PEER_ID: [u8; 4] = [203, 0, 113, 7];

/// How far the OPEN exchange goes before the case's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Nothing sent: the target is in OpenSent.
    OpenSent,
    /// Our OPEN sent, its OPEN and KEEPALIVE read: the target is in
    /// OpenConfirm.
    OpenConfirm,
    /// And our KEEPALIVE sent: Established.
    Established,
}

/// What the target must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// NOTIFICATION (code, subcode, data), then close.
    Reset(u8, u8, Vec<u8>),
    /// The session goes on: the barrier message after the case gets its
    /// own NOTIFICATION (header error, bad type 9).
    Kept,
    /// The target closes without NOTIFICATION (we sent one, or FIN).
    Closed,
}

pub struct Case {
    pub name: &'static str,
    pub rfc: &'static str,
    pub setup: Setup,
    /// Our OPEN advertises enhanced route refresh (RFC 7313).
    pub enhanced_rr: bool,
    pub send: Vec<u8>,
    /// Close our side after sending (FIN).
    pub fin: bool,
    pub want: Outcome,
    /// The speaker's counter "approach/class" this case increments.
    pub counts: Option<&'static str>,
}

/// The barrier: an unknown message type, answered 1/3 with the type.
pub const BARRIER_TYPE: u8 = 9;

pub fn open_msg(version: u8, asn: u16, hold: u16, id: [u8; 4], caps: &[Vec<u8>]) -> Vec<u8> {
    let params = if caps.is_empty() {
        Vec::new()
    } else {
        caps_param(caps)
    };
    open_with_id(version, asn, hold, id, &params)
}

fn std_caps(enhanced_rr: bool) -> Vec<Vec<u8>> {
    let mut c = vec![
        cap(1, &[0, 1, 0, 1]),
        cap(1, &[0, 2, 0, 1]),
        cap(2, &[]),
        cap(65, &u32::from(PEER_AS).to_be_bytes()),
    ];
    if enhanced_rr {
        c.push(cap(70, &[]));
    }
    c
}

pub fn good_open(enhanced_rr: bool) -> Vec<u8> {
    open_msg(4, PEER_AS, 9, PEER_ID, &std_caps(enhanced_rr))
}

const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
/// AS_SEQUENCE PEER_AS, 4-octet (both targets negotiate 4-octet AS).
const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfe, 0x4a];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 9];
const NLRI: [u8; 4] = [24, 203, 0, 113];

/// ORIGIN, AS_PATH, NEXT_HOP (minus `drop`) plus `extra`, one /24.
fn route_with(extra: &[u8], drop: Option<u8>) -> Vec<u8> {
    let a = attrs_with(&[&ORIGIN, &AS_PATH, &NEXT_HOP], drop, extra);
    update(&[], &a, &NLRI)
}

/// ORIGIN, AS_PATH plus `extra` (an MP attribute), no NLRI field.
fn mp_route(extra: &[u8]) -> Vec<u8> {
    let mut a = ORIGIN.to_vec();
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(extra);
    update(&[], &a, &[])
}

fn with_len(mut m: Vec<u8>, len: u16) -> Vec<u8> {
    m[16..18].copy_from_slice(&len.to_be_bytes());
    m
}

fn rr(afi: u16, subtype: u8, safi: u8) -> Vec<u8> {
    let mut b = afi.to_be_bytes().to_vec();
    b.push(subtype);
    b.push(safi);
    msg(5, &b)
}

fn mp_reach_v6(nh: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 2, 1, nh.len() as u8];
    v.extend_from_slice(nh);
    v.push(0);
    v.extend_from_slice(&[64, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 9]);
    let mut a = vec![0x80, 14, v.len() as u8];
    a.extend_from_slice(&v);
    a
}

const V6_NH: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

use Outcome::{Closed, Kept, Reset};
use Setup::{Established as Est, OpenConfirm, OpenSent};

fn case(name: &'static str, rfc: &'static str, setup: Setup, send: Vec<u8>, want: Outcome) -> Case {
    Case {
        name,
        rfc,
        setup,
        enhanced_rr: false,
        send,
        fin: false,
        want,
        counts: None,
    }
}

/// A treat-as-withdraw or attribute-discard case: Established, kept, and
/// counted under `counts`.
fn kept(name: &'static str, rfc: &'static str, send: Vec<u8>, counts: &'static str) -> Case {
    Case {
        counts: Some(counts),
        ..case(name, rfc, Est, send, Kept)
    }
}

fn attr_bytes(a: &[u8]) -> Vec<u8> {
    a.to_vec()
}

pub fn corpus() -> Vec<Case> {
    let mut bad_marker = msg(4, &[]);
    bad_marker[3] = 0;
    let wk_unknown = [0x40, 250, 2, 1, 2];
    let dup_unreach = {
        let u = [0x80, 15, 3, 0, 2, 1];
        let mut a = u.to_vec();
        a.extend_from_slice(&u);
        update(&[], &a, &[])
    };
    let truncated_mp = [0x80, 14, 8, 0, 2, 1, 16, 0x20, 0x01, 0x0d, 0xb8];
    let mp_nh4 = [0x80, 14, 10, 0, 2, 1, 4, 192, 0, 2, 9, 0, 0];
    let bad_unreach = [0x80, 15, 5, 0, 2, 1, 64, 0x20];
    let mut mc_nh = V6_NH;
    mc_nh[0] = 0xff;
    let mut v = vec![
        // RFC 4271 section 6.1: message header errors.
        case(
            "bad marker",
            "4271 6.1",
            OpenSent,
            bad_marker,
            Reset(1, 1, vec![]),
        ),
        case(
            "length 5000",
            "4271 6.1",
            OpenSent,
            with_len(msg(2, &[]), 5000),
            Reset(1, 2, vec![0x13, 0x88]),
        ),
        case(
            "length 18",
            "4271 6.1",
            OpenSent,
            with_len(msg(4, &[]), 18),
            Reset(1, 2, vec![0, 18]),
        ),
        case(
            "KEEPALIVE of 20 bytes",
            "4271 6.1",
            Est,
            msg(4, &[0]),
            Reset(1, 2, vec![0, 20]),
        ),
        case(
            "OPEN of 28 bytes",
            "4271 6.1",
            OpenSent,
            msg(1, &[4, 0xfe, 0x4a, 0, 9, 203, 0, 113, 7]),
            Reset(1, 2, vec![0, 28]),
        ),
        case(
            "UPDATE of 22 bytes",
            "4271 6.1",
            Est,
            msg(2, &[0, 0, 0]),
            Reset(1, 2, vec![0, 22]),
        ),
        case(
            "NOTIFICATION of 20 bytes",
            "4271 6.1",
            Est,
            msg(3, &[6]),
            Reset(1, 2, vec![0, 20]),
        ),
        case(
            "type 0",
            "4271 6.1",
            OpenSent,
            msg(0, &[]),
            Reset(1, 3, vec![0]),
        ),
        case(
            "type 200",
            "4271 6.1",
            Est,
            msg(200, &[]),
            Reset(1, 3, vec![200]),
        ),
        // RFC 4271 section 6.2, RFC 5492, RFC 6793: OPEN errors.
        case(
            "OPEN version 3",
            "4271 6.2",
            OpenSent,
            open_msg(3, PEER_AS, 9, PEER_ID, &std_caps(false)),
            Reset(2, 1, vec![0, 4]),
        ),
        case(
            "OPEN version 5",
            "4271 6.2",
            OpenSent,
            open_msg(5, PEER_AS, 9, PEER_ID, &std_caps(false)),
            Reset(2, 1, vec![0, 4]),
        ),
        case(
            "OPEN wrong AS",
            "4271 6.2",
            OpenSent,
            {
                let mut c = std_caps(false);
                c[3] = cap(65, &65099u32.to_be_bytes());
                open_msg(4, 65099, 9, PEER_ID, &c)
            },
            Reset(2, 2, vec![]),
        ),
        case(
            "OPEN 4-octet AS differs from My AS",
            "6793 4.1",
            OpenSent,
            {
                let mut c = std_caps(false);
                c[3] = cap(65, &65099u32.to_be_bytes());
                open_msg(4, PEER_AS, 9, PEER_ID, &c)
            },
            Reset(2, 2, vec![]),
        ),
        case(
            "OPEN hold time 1",
            "4271 6.2",
            OpenSent,
            open_msg(4, PEER_AS, 1, PEER_ID, &std_caps(false)),
            Reset(2, 6, vec![]),
        ),
        case(
            "OPEN hold time 2",
            "4271 6.2",
            OpenSent,
            open_msg(4, PEER_AS, 2, PEER_ID, &std_caps(false)),
            Reset(2, 6, vec![]),
        ),
        case(
            "OPEN identifier 0.0.0.0",
            "4271 6.2",
            OpenSent,
            open_msg(4, PEER_AS, 9, [0, 0, 0, 0], &std_caps(false)),
            Reset(2, 3, vec![]),
        ),
        case(
            "OPEN identifier 224.0.0.1 is valid",
            "6286 2.1",
            OpenSent,
            {
                let mut m = open_msg(4, PEER_AS, 9, [224, 0, 0, 1], &std_caps(false));
                m.extend_from_slice(&msg(4, &[]));
                m
            },
            Kept,
        ),
        case(
            "OPEN unknown parameter type",
            "4271 6.2",
            OpenSent,
            open_with_id(4, PEER_AS, 9, PEER_ID, &[7, 2, 0, 0]),
            Reset(2, 4, vec![]),
        ),
        case(
            "OPEN truncated capability",
            "5492 3",
            OpenSent,
            open_with_id(4, PEER_AS, 9, PEER_ID, &[2, 4, 1, 4, 0, 1]),
            Reset(2, 0, vec![]),
        ),
        case(
            "OPEN parameter runs past the message",
            "4271 6.2",
            OpenSent,
            open_with_id(4, PEER_AS, 9, PEER_ID, &[2, 9, 1, 4, 0, 1, 0, 1]),
            Reset(2, 0, vec![]),
        ),
        case(
            "OPEN hold time 0 accepted",
            "4271 4.2",
            OpenSent,
            {
                let mut m = open_msg(4, PEER_AS, 0, PEER_ID, &std_caps(false));
                m.extend_from_slice(&msg(4, &[]));
                m
            },
            Kept,
        ),
        case(
            "OPEN unknown capabilities ignored",
            "5492 3",
            OpenSent,
            {
                let mut c = std_caps(false);
                c.push(cap(200, &[1, 2, 3]));
                c.push(cap(201, &[]));
                let mut m = open_msg(4, PEER_AS, 9, PEER_ID, &c);
                m.extend_from_slice(&msg(4, &[]));
                m
            },
            Kept,
        ),
        // RFC 6608 and RFC 4271 section 8: FSM errors.
        case(
            "KEEPALIVE in OpenSent",
            "6608 4",
            OpenSent,
            msg(4, &[]),
            Reset(5, 1, vec![4]),
        ),
        case(
            "UPDATE in OpenSent",
            "6608 4",
            OpenSent,
            update(&[], &[], &[]),
            Reset(5, 1, vec![2]),
        ),
        case(
            "ROUTE-REFRESH in OpenSent",
            "6608 4",
            OpenSent,
            rr(1, 0, 1),
            Reset(5, 1, vec![5]),
        ),
        case(
            "OPEN in OpenConfirm",
            "6608 4",
            OpenConfirm,
            good_open(false),
            Reset(5, 2, vec![1]),
        ),
        case(
            "UPDATE in OpenConfirm",
            "6608 4",
            OpenConfirm,
            update(&[], &[], &[]),
            Reset(5, 2, vec![2]),
        ),
        case(
            "OPEN in Established",
            "6608 4",
            Est,
            good_open(false),
            Reset(5, 3, vec![1]),
        ),
        case(
            "header error right behind the KEEPALIVE",
            "4271 8.2.2",
            OpenConfirm,
            {
                let mut m = msg(4, &[]);
                let mut b = msg(4, &[]);
                b[0] = 0;
                m.extend_from_slice(&b);
                m
            },
            Reset(1, 1, vec![]),
        ),
        Case {
            fin: true,
            ..case(
                "Cease then reconnect at once",
                "4271 6.8, 4486",
                Est,
                msg(3, &[6, 2]),
                Closed,
            )
        },
        Case {
            fin: true,
            ..case(
                "FIN then reconnect at once",
                "4271 6.8",
                Est,
                Vec::new(),
                Closed,
            )
        },
        Case {
            fin: true,
            ..case(
                "NOTIFICATION with unknown code",
                "4271 6.4",
                Est,
                msg(3, &[99, 1, 2, 3]),
                Closed,
            )
        },
        // RFC 4271 section 6.3 and RFC 7606 sections 4, 5.3: what still
        // resets the session.
        case(
            "withdrawn length past the message",
            "4271 6.3, 7606 4",
            Est,
            {
                let mut m = update(&[], &[], &[]);
                m[19..21].copy_from_slice(&100u16.to_be_bytes());
                m
            },
            Reset(3, 1, vec![]),
        ),
        case(
            "attribute length past the message",
            "4271 6.3, 7606 4",
            Est,
            {
                let mut m = route_with(&[], None);
                m[21..23].copy_from_slice(&300u16.to_be_bytes());
                m
            },
            Reset(3, 1, vec![]),
        ),
        case(
            "NLRI prefix length 33",
            "4271 6.3, 7606 5.3",
            Est,
            {
                let mut m = route_with(&[], None);
                let n = m.len() - NLRI.len();
                m[n] = 33;
                m
            },
            Reset(3, 10, vec![]),
        ),
        case(
            "NLRI prefix cut short",
            "4271 6.3, 7606 5.3",
            Est,
            {
                let mut m = route_with(&[], None);
                m.truncate(m.len() - 1);
                let len = m.len() as u16;
                with_len(m, len)
            },
            Reset(3, 10, vec![]),
        ),
        case(
            "withdrawn prefix length 40",
            "4271 6.3, 7606 5.3",
            Est,
            update(&[40, 1, 2, 3, 4, 5], &[], &[]),
            Reset(3, 10, vec![]),
        ),
        case(
            "unrecognized well-known attribute",
            "4271 6.3",
            Est,
            route_with(&wk_unknown, None),
            Reset(3, 2, attr_bytes(&wk_unknown)),
        ),
        case(
            "MP_UNREACH_NLRI twice",
            "7606 3(g)",
            Est,
            dup_unreach,
            Reset(3, 1, vec![]),
        ),
        case(
            "MP_REACH_NLRI cut short",
            "4760 7, 7606 7.11",
            Est,
            mp_route(&truncated_mp),
            Reset(3, 9, attr_bytes(&truncated_mp)),
        ),
        case(
            "MP_REACH_NLRI IPv6 next hop of 4 bytes",
            "4760 7, 7606 7.11",
            Est,
            mp_route(&mp_nh4),
            Reset(3, 9, attr_bytes(&mp_nh4)),
        ),
        case(
            "MP_UNREACH_NLRI prefix cut short",
            "4760 7, 7606 7.12",
            Est,
            update(&[], &bad_unreach, &[]),
            Reset(3, 9, attr_bytes(&bad_unreach)),
        ),
        // RFC 7606 sections 3 and 7: treat-as-withdraw and attribute
        // discard; the session stays Established.
        kept(
            "ORIGIN value 7",
            "7606 7.1",
            route_with(&[0x40, 1, 1, 7], Some(1)),
            "treat-as-withdraw/origin",
        ),
        kept(
            "ORIGIN length 2",
            "7606 7.1",
            route_with(&[0x40, 1, 2, 0, 0], Some(1)),
            "treat-as-withdraw/origin",
        ),
        kept(
            "AS_PATH segment type 9",
            "7606 7.2",
            route_with(&[0x40, 2, 6, 9, 1, 0, 0, 0xfe, 0x4a], Some(2)),
            "treat-as-withdraw/as_path",
        ),
        kept(
            "AS_PATH segment overruns",
            "7606 7.2",
            route_with(&[0x40, 2, 6, 2, 2, 0, 0, 0xfe, 0x4a], Some(2)),
            "treat-as-withdraw/as_path",
        ),
        kept(
            "AS_PATH empty segment",
            "7606 7.2",
            route_with(&[0x40, 2, 2, 2, 0], Some(2)),
            "treat-as-withdraw/as_path",
        ),
        kept(
            "AS_PATH with AS 0",
            "7607 2",
            route_with(&[0x40, 2, 10, 2, 2, 0, 0, 0xfe, 0x4a, 0, 0, 0, 0], Some(2)),
            "treat-as-withdraw/as_path",
        ),
        kept(
            "NEXT_HOP length 3",
            "7606 7.3",
            route_with(&[0x40, 3, 3, 192, 0, 2], Some(3)),
            "treat-as-withdraw/next_hop",
        ),
        kept(
            "NEXT_HOP multicast",
            "4271 6.3",
            route_with(&[0x40, 3, 4, 224, 0, 0, 9], Some(3)),
            "treat-as-withdraw/next_hop",
        ),
        kept(
            "MED length 2",
            "7606 7.4",
            route_with(&[0x80, 4, 2, 0, 1], None),
            "treat-as-withdraw/multi_exit_disc",
        ),
        kept(
            "LOCAL_PREF from eBGP",
            "7606 7.5",
            route_with(&[0x40, 5, 4, 0, 0, 0, 100], None),
            "attribute-discard/local_pref",
        ),
        kept(
            "ATOMIC_AGGREGATE length 1",
            "7606 7.6",
            route_with(&[0x40, 6, 1, 0], None),
            "attribute-discard/atomic_aggregate",
        ),
        kept(
            "AGGREGATOR length 5",
            "7606 7.7",
            route_with(&[0xc0, 7, 5, 0, 1, 192, 0, 2], None),
            "attribute-discard/aggregator",
        ),
        kept(
            "COMMUNITIES length 3",
            "7606 7.8",
            route_with(&[0xc0, 8, 3, 0, 1, 2], None),
            "treat-as-withdraw/communities",
        ),
        kept(
            "ORIGINATOR_ID length 3",
            "7606 7.9",
            route_with(&[0x80, 9, 3, 1, 2, 3], None),
            "treat-as-withdraw/originator_id",
        ),
        kept(
            "CLUSTER_LIST length 5",
            "7606 7.10",
            route_with(&[0x80, 10, 5, 1, 2, 3, 4, 5], None),
            "treat-as-withdraw/cluster_list",
        ),
        kept(
            "EXTENDED_COMMUNITIES length 7",
            "7606 7.14",
            route_with(&[0xc0, 16, 7, 0, 2, 0, 0, 0, 0, 1], None),
            "treat-as-withdraw/extended_communities",
        ),
        kept(
            "LARGE_COMMUNITIES length 4",
            "8092 6",
            route_with(&[0xc0, 32, 4, 0, 0, 0, 1], None),
            "treat-as-withdraw/large_communities",
        ),
        kept(
            "AS4_PATH from a 4-octet speaker",
            "6793 6",
            route_with(&[0xc0, 17, 6, 2, 1, 0, 0, 0xfe, 0x4a], None),
            "attribute-discard/as4_path",
        ),
        kept(
            "AS4_AGGREGATOR length 6",
            "6793 6",
            route_with(&[0xc0, 18, 6, 0, 1, 192, 0, 2, 1], None),
            "attribute-discard/as4_aggregator",
        ),
        kept(
            "ORIGIN flagged optional",
            "7606 3(c)",
            route_with(&[0xc0, 1, 1, 0], Some(1)),
            "treat-as-withdraw/attribute_flags",
        ),
        kept(
            "MED flagged well-known",
            "7606 3(c)",
            route_with(&[0x40, 4, 4, 0, 0, 0, 1], None),
            "treat-as-withdraw/attribute_flags",
        ),
        kept(
            "NEXT_HOP missing",
            "7606 3(d)",
            route_with(&[], Some(3)),
            "treat-as-withdraw/missing_well_known",
        ),
        kept(
            "ORIGIN missing",
            "7606 3(d)",
            route_with(&[], Some(1)),
            "treat-as-withdraw/missing_well_known",
        ),
        kept(
            "NLRI without attributes",
            "7606 3(d)",
            update(&[], &[], &NLRI),
            "treat-as-withdraw/missing_well_known",
        ),
        kept(
            "MED twice",
            "7606 3(g)",
            route_with(&[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2], None),
            "attribute-discard/duplicate",
        ),
        kept(
            "attribute overruns the attribute list",
            "7606 4",
            {
                let mut a = ORIGIN.to_vec();
                a.extend_from_slice(&AS_PATH);
                a.extend_from_slice(&[0x40, 3, 40, 192, 0, 2, 9]);
                update(&[], &a, &NLRI)
            },
            "treat-as-withdraw/attribute_overrun",
        ),
        kept(
            "MP_REACH_NLRI multicast next hop",
            "7606 7.11",
            mp_route(&mp_reach_v6(&mc_nh)),
            "treat-as-withdraw/mp_reach_next_hop",
        ),
        // Unusual but correct: nothing to count.
        case(
            "unknown optional transitive attribute",
            "4271 9",
            Est,
            route_with(&[0xc0, 250, 3, 1, 2, 3], None),
            Kept,
        ),
        case(
            "unknown optional non-transitive attribute",
            "4271 9",
            Est,
            route_with(&[0x80, 251, 0], None),
            Kept,
        ),
        case("End-of-RIB", "4724 2", Est, update(&[], &[], &[]), Kept),
        case(
            "MP_REACH_NLRI IPv6 route",
            "4760 3",
            Est,
            mp_route(&mp_reach_v6(&V6_NH)),
            Kept,
        ),
        case(
            "MP_UNREACH_NLRI of an unknown family",
            "4760 7",
            Est,
            update(&[], &[0x80, 15, 4, 0, 25, 65, 7], &[]),
            Kept,
        ),
        // RFC 2918 and RFC 7313: ROUTE-REFRESH.
        case(
            "ROUTE-REFRESH IPv4 unicast",
            "2918 4",
            Est,
            rr(1, 0, 1),
            Kept,
        ),
        case(
            "ROUTE-REFRESH unknown family",
            "2918 4",
            Est,
            rr(25, 0, 65),
            Kept,
        ),
        case(
            "ROUTE-REFRESH of 24 bytes",
            "2918 4, 4271 6.1",
            Est,
            msg(5, &[0, 1, 0, 1, 0]),
            Reset(1, 2, vec![0, 24]),
        ),
    ];
    let long_rr = msg(5, &[0, 1, 0, 1, 0]);
    let short_rr = msg(5, &[0, 1, 0]);
    for c in [
        case(
            "enhanced: ROUTE-REFRESH request",
            "7313 4",
            Est,
            rr(2, 0, 1),
            Kept,
        ),
        case(
            "enhanced: ROUTE-REFRESH of 24 bytes",
            "7313 5",
            Est,
            long_rr.clone(),
            Reset(7, 1, long_rr),
        ),
        case(
            "enhanced: ROUTE-REFRESH of 22 bytes",
            "7313 5",
            Est,
            short_rr.clone(),
            Reset(7, 1, short_rr),
        ),
        case(
            "enhanced: ROUTE-REFRESH subtype 9",
            "7313 5",
            Est,
            rr(1, 9, 1),
            Kept,
        ),
        case(
            "enhanced: BoRR from the peer",
            "7313 4",
            Est,
            rr(1, 1, 1),
            Kept,
        ),
    ] {
        v.push(Case {
            enhanced_rr: true,
            ..c
        });
    }
    v
}

/// Reads until an OPEN and a KEEPALIVE arrived; Err on NOTIFICATION or
/// close.
fn read_open_and_keepalive(s: &mut TcpStream) -> Result<(), String> {
    let (mut open, mut ka) = (false, false);
    while !(open && ka) {
        match read_one(s) {
            Ok((1, _)) => open = true,
            Ok((4, _)) if open => ka = true,
            Ok((3, b)) => return Err(format!("NOTIFICATION {b:?}")),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(())
}

const TIMEOUT: &str = "timed out";

/// What the target sent back after the case: the first NOTIFICATION (the
/// barrier's meaning the session survived the case), or a silent close.
fn read_outcome(s: &mut TcpStream) -> Result<Outcome, String> {
    loop {
        match read_one(s) {
            Ok((3, b)) if b.len() >= 2 => {
                if b[0] == 1 && b[1] == 3 && b[2..] == [BARRIER_TYPE] {
                    return Ok(Outcome::Kept);
                }
                // Nothing may follow a NOTIFICATION but the close.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                if !rest.is_empty() {
                    return Err(format!("{} bytes after NOTIFICATION", rest.len()));
                }
                return Ok(Outcome::Reset(b[0], b[1], b[2..].to_vec()));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(Outcome::Closed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(TIMEOUT.into());
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Plays one case on a fresh connection; returns what the target did.
/// `settle`: how long to wait for an answer to the case before the barrier
/// goes out. bgp-speaker handles a connection's messages strictly in order,
/// so 0 is exact for it; FRR checks every header in its I/O thread before
/// the main thread handles the message before it, so a barrier sent at once
/// would overtake the case.
pub fn run_case(target: SocketAddr, c: &Case, settle: Duration) -> Result<Outcome, String> {
    let mut s = connect(target);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    if c.setup != Setup::OpenSent {
        s.write_all(&good_open(c.enhanced_rr))
            .map_err(|e| e.to_string())?;
        read_open_and_keepalive(&mut s)?;
    }
    if c.setup == Setup::Established {
        s.write_all(&msg(4, &[])).map_err(|e| e.to_string())?;
    }
    if c.fin {
        let _ = s.write_all(&c.send);
        let _ = s.shutdown(std::net::Shutdown::Write);
        return read_outcome(&mut s);
    }
    let mut out = c.send.clone();
    let barrier = msg(BARRIER_TYPE, &[]);
    if settle.is_zero() {
        out.extend_from_slice(&barrier);
        // A target that already closed may refuse part of it: what it
        // sent before is still read below.
        let _ = s.write_all(&out);
        return read_outcome(&mut s);
    }
    let _ = s.write_all(&out);
    // Anything the target says within `settle` is its answer to the case.
    s.set_read_timeout(Some(settle))
        .map_err(|e| e.to_string())?;
    match read_outcome(&mut s) {
        Err(e) if e == TIMEOUT => {}
        other => return other,
    }
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let _ = s.write_all(&barrier);
    read_outcome(&mut s)
}

/// The liveness probe: a correct OPEN exchange on a new connection. The
/// stream is returned open (the caller checks Established on its side and
/// then drops it, FIN).
pub fn probe(target: SocketAddr) -> Result<TcpStream, String> {
    let mut s = connect(target);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(&good_open(false)).map_err(|e| e.to_string())?;
    read_open_and_keepalive(&mut s)?;
    s.write_all(&msg(4, &[])).map_err(|e| e.to_string())?;
    Ok(s)
}
