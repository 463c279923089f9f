//! Parsing: what is this packet? Not ours (pass untouched), malformed
//! (drop), encapsulated for this node (decapsulate), or a VIP flow to steer.
//!
//! Fragments are never steered: only the first fragment carries ports, so a
//! fragment cannot be hashed consistently. They are passed to the local stack
//! untouched (counted); VIP traffic is TCP with DF set, so none is expected.
use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use dataplane_common::{
    Config, FAMILY_V4, FAMILY_V6, HOP_FIRST, HOP_SECOND, IPV4_ID_MARK, VipInfo, VipKey, VipKey4,
    counter::{DROP_MALFORMED, DROP_NOT_MEMBER, FRAGMENT, NOT_VIP},
    flow_hash_v4_words, flow_hash_v6_words,
};

use crate::{
    maps::{FLOW, MEMBERS4, MEMBERS6, NODES, VIPS4, VIPS6},
    packet::*,
    types::{Flow, Kind, Parsed},
    verdict::{PASS, encode},
};

#[inline(always)]
fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    (ld32(a, 0) ^ ld32(b, 0))
        | (ld32(a, 4) ^ ld32(b, 4))
        | (ld32(a, 8) ^ ld32(b, 8))
        | (ld32(a, 12) ^ ld32(b, 12))
        == 0
}

#[inline(always)]
fn is_zero16(a: &[u8; 16]) -> bool {
    ld32(a, 0) | ld32(a, 4) | ld32(a, 8) | ld32(a, 12) == 0
}

/// The VIP keys, built as words (one store each) in 4-aligned stack slots
/// and handed to the maps as `VipKey4` / `VipKey` (same layouts). Built
/// field by field they are 2-aligned, and zeroing or copying them became
/// calls of the byte-loop `memset` / `memcpy`.
#[repr(C, align(8))]
struct Key4Words([u32; 2]);
#[repr(C, align(4))]
struct Key6Words([u32; 5]);

/// The IPv4 VIP (address word as loaded, port in network order).
#[inline(always)]
pub fn vip_lookup4(addr: u32, port_be: u16, proto: u8) -> Option<&'static VipInfo> {
    let p = port_be.to_ne_bytes();
    let key = Key4Words([addr, word([p[0], p[1], proto, 0])]);
    // SAFETY: VipKey4 is repr(C) { [u8; 4], u16, u8, u8 }: 8 bytes, align 2,
    // the same bytes as the two words.
    let key4 = unsafe { &*(&key as *const Key4Words as *const VipKey4) };
    unsafe { VIPS4.get(key4) }
}

/// The IPv6 VIP (address words as loaded, port in network order).
#[inline(always)]
pub fn vip_lookup6(addr: [u32; 4], port_be: u16, proto: u8) -> Option<&'static VipInfo> {
    let p = port_be.to_ne_bytes();
    let key = Key6Words([
        addr[0],
        addr[1],
        addr[2],
        addr[3],
        word([p[0], p[1], proto, FAMILY_V6]),
    ]);
    // SAFETY: VipKey is repr(C) { [u8; 16], u16, u8, u8 }: 20 bytes, align
    // 2, the same bytes as the five words.
    let key6 = unsafe { &*(&key as *const Key6Words as *const VipKey) };
    unsafe { VIPS6.get(key6) }
}

/// Outer IPv4 identification -> hop; anything not ours is terminal.
#[inline(always)]
fn hop_from_v4_id(id: u16) -> u8 {
    if id == IPV4_ID_MARK | HOP_FIRST as u16 {
        HOP_FIRST
    } else {
        HOP_SECOND
    }
}

#[inline(always)]
fn hop_from_flow_label(low: u8) -> u8 {
    if low & 3 == HOP_FIRST {
        HOP_FIRST
    } else {
        HOP_SECOND
    }
}

/// Classifies a packet as it arrives: encapsulation addressed to this node
/// is recognised. A BPF subprogram (not inlined), so its stack frame is not
/// added to those of the steering and encapsulation code (512-byte limit);
/// BPF calls take at most five arguments, the returned enum counts as one.
#[inline(never)]
pub fn classify_outer(raw: *mut xdp_md, cfg: &Config, l3: usize, ethertype: u16) -> u32 {
    let Some(flow) = FLOW.get_ptr_mut(0) else {
        return PASS | NOT_VIP;
    };
    let flow = unsafe { &mut *flow };
    let p = classify(&XdpContext::new(raw), cfg, l3, ethertype, true, flow);
    encode(p, flow)
}

/// Classifies a decapsulated packet: no nested encapsulation.
#[inline(never)]
pub fn classify_inner(raw: *mut xdp_md, cfg: &Config, l3: usize, ethertype: u16) -> u32 {
    let Some(flow) = FLOW.get_ptr_mut(0) else {
        return PASS | NOT_VIP;
    };
    let flow = unsafe { &mut *flow };
    let p = classify(&XdpContext::new(raw), cfg, l3, ethertype, false, flow);
    encode(p, flow)
}

#[inline(always)]
fn classify(
    ctx: &XdpContext,
    cfg: &Config,
    l3: usize,
    ethertype: u16,
    outer: bool,
    flow: &mut Flow,
) -> Parsed {
    if ethertype == ETH_P_IP {
        classify_v4(ctx, cfg, l3, outer, flow)
    } else if ethertype == ETH_P_IPV6 {
        classify_v6(ctx, cfg, l3, outer, flow)
    } else {
        Parsed::Pass(NOT_VIP)
    }
}

#[inline(always)]
fn classify_v4(ctx: &XdpContext, cfg: &Config, l3: usize, outer: bool, flow: &mut Flow) -> Parsed {
    let Some(ip) = bytes::<IPV4_LEN>(ctx, l3) else {
        return Parsed::Drop(DROP_MALFORMED);
    };
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot = be16(ip, 2) as usize;
    let saddr = ld32(ip, 12);
    let daddr = ld32(ip, 16);
    if ip[0] >> 4 != 4 || ihl < IPV4_LEN || tot < ihl || l3 + tot > frame_len(ctx) {
        return Parsed::Drop(DROP_MALFORMED);
    }
    if be16(ip, 6) & 0x3fff != 0 {
        return Parsed::Pass(FRAGMENT);
    }
    let proto = ip[9];
    let l4 = l3 + ihl;

    // An IPv6-only underlay leaves self_v4 at 0.0.0.0: never a match.
    let self_v4 = ld32(&cfg.self_v4, 0);
    if outer && self_v4 != 0 && daddr == self_v4 {
        // The node's own address: our encapsulation, or ordinary traffic
        // to the node (no VIP lookup needed: the fast not-VIP path).
        let hop = hop_from_v4_id(be16(ip, 4));
        let from_member = || unsafe { MEMBERS4.get(&saddr.to_ne_bytes()) }.is_some();
        let is_node = |id: u16| {
            NODES
                .get(id as u32)
                .is_some_and(|n| n.family == FAMILY_V4 && ld32(&n.addr, 0) == saddr)
        };
        return decap_of(ctx, cfg, proto, l4, ihl, hop, (from_member, is_node))
            .unwrap_or(Parsed::Pass(NOT_VIP));
    }

    flow.family = FAMILY_V4;
    flow.ip_len = tot;
    flow.l3_off = l3;
    flow.ihl = ihl;
    flow.l4_off = l4;
    // IPv4 flows use only the first four bytes of saddr/daddr.
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let Some(kind) = l4_kind(ctx, proto, l4) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let Some(ports) = bytes::<4>(ctx, l4) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let (sport, dport) = (ld16(ports, 0), ld16(ports, 2));
            let Some(vip) = vip_lookup4(daddr, dport, proto) else {
                return Parsed::Pass(NOT_VIP);
            };
            st32(&mut flow.saddr, 0, saddr);
            st32(&mut flow.daddr, 0, daddr);
            copy_words(&mut flow.vip, vip);
            flow.kind = kind;
            st16(&mut flow.sport, 0, sport);
            st16(&mut flow.dport, 0, dport);
            flow.hash = flow_hash_v4_words(saddr, daddr, ld32(ports, 0), proto, cfg.hash_seed);
            Parsed::Steer
        }
        IPPROTO_ICMP => {
            // Type 3 code 4: fragmentation needed. The embedded header is the
            // VIP's own packet (VIP -> client): hash it the other way round.
            let Some(icmp) = bytes::<8>(ctx, l4) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            if icmp[0] != 3 || icmp[1] != 4 {
                return Parsed::Pass(NOT_VIP);
            }
            let e3 = l4 + 8;
            let Some(e) = bytes::<IPV4_LEN>(ctx, e3) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let eihl = ((e[0] & 0x0f) as usize) * 4;
            let eproto = e[9];
            if eihl < IPV4_LEN || (eproto != IPPROTO_TCP && eproto != IPPROTO_UDP) {
                return Parsed::Pass(NOT_VIP);
            }
            let vip_addr = ld32(e, 12);
            let client = ld32(e, 16);
            let Some(ep) = bytes::<4>(ctx, e3 + eihl) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            // The embedded packet runs VIP -> client: swap the ports.
            let (vport, cport) = (ld16(ep, 0), ld16(ep, 2));
            let Some(vip) = vip_lookup4(vip_addr, vport, eproto) else {
                return Parsed::Pass(NOT_VIP);
            };
            st32(&mut flow.saddr, 0, client);
            st32(&mut flow.daddr, 0, vip_addr);
            copy_words(&mut flow.vip, vip);
            flow.kind = Kind::Icmp;
            st16(&mut flow.sport, 0, cport);
            st16(&mut flow.dport, 0, vport);
            let (c, v) = (cport.to_ne_bytes(), vport.to_ne_bytes());
            let cports = word([c[0], c[1], v[0], v[1]]);
            flow.hash = flow_hash_v4_words(client, vip_addr, cports, eproto, cfg.hash_seed);
            Parsed::Steer
        }
        _ => Parsed::Pass(NOT_VIP),
    }
}

#[inline(always)]
fn classify_v6(ctx: &XdpContext, cfg: &Config, l3: usize, outer: bool, flow: &mut Flow) -> Parsed {
    let Some(ip) = bytes::<IPV6_LEN>(ctx, l3) else {
        return Parsed::Drop(DROP_MALFORMED);
    };
    let plen = be16(ip, 4) as usize;
    if ip[0] >> 4 != 6 || l3 + IPV6_LEN + plen > frame_len(ctx) {
        return Parsed::Drop(DROP_MALFORMED);
    }
    let nh = ip[6];
    if nh == IPPROTO_FRAGMENT {
        return Parsed::Pass(FRAGMENT);
    }
    let mut i = 0;
    while i < 16 {
        st32(&mut flow.saddr, i, ld32(ip, 8 + i));
        st32(&mut flow.daddr, i, ld32(ip, 24 + i));
        i += 4;
    }
    let l4 = l3 + IPV6_LEN;

    // An IPv4-only underlay leaves self_v6 at ::, never a match.
    if outer && !is_zero16(&cfg.self_v6) && eq16(&flow.daddr, &cfg.self_v6) {
        let hop = hop_from_flow_label(ip[3]);
        let from_member = || unsafe { MEMBERS6.get(&flow.saddr) }.is_some();
        let is_node = |id: u16| {
            NODES
                .get(id as u32)
                .is_some_and(|n| n.family == FAMILY_V6 && eq16(&n.addr, &flow.saddr))
        };
        return decap_of(ctx, cfg, nh, l4, IPV6_LEN, hop, (from_member, is_node))
            .unwrap_or(Parsed::Pass(NOT_VIP));
    }

    flow.family = FAMILY_V6;
    flow.ip_len = IPV6_LEN + plen;
    flow.l3_off = l3;
    flow.ihl = IPV6_LEN;
    flow.l4_off = l4;
    match nh {
        IPPROTO_TCP | IPPROTO_UDP => {
            let Some(kind) = l4_kind(ctx, nh, l4) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let Some(ports) = bytes::<4>(ctx, l4) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let (sport, dport) = (ld16(ports, 0), ld16(ports, 2));
            let Some(vip) = vip_lookup6(words16(&flow.daddr), dport, nh) else {
                return Parsed::Pass(NOT_VIP);
            };
            copy_words(&mut flow.vip, vip);
            flow.kind = kind;
            st16(&mut flow.sport, 0, sport);
            st16(&mut flow.dport, 0, dport);
            flow.hash = hash6(flow, ld32(ports, 0), nh, cfg.hash_seed);
            Parsed::Steer
        }
        IPPROTO_ICMPV6 => {
            // Type 2: packet too big, about the VIP's own packet.
            let Some(icmp) = bytes::<8>(ctx, l4) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            if icmp[0] != 2 {
                return Parsed::Pass(NOT_VIP);
            }
            let e3 = l4 + 8;
            let Some(e) = bytes::<IPV6_LEN>(ctx, e3) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let enh = e[6];
            if enh != IPPROTO_TCP && enh != IPPROTO_UDP {
                return Parsed::Pass(NOT_VIP);
            }
            let mut i = 0;
            while i < 16 {
                st32(&mut flow.daddr, i, ld32(e, 8 + i));
                st32(&mut flow.saddr, i, ld32(e, 24 + i));
                i += 4;
            }
            let Some(ep) = bytes::<4>(ctx, e3 + IPV6_LEN) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let (vport, cport) = (ld16(ep, 0), ld16(ep, 2));
            let Some(vip) = vip_lookup6(words16(&flow.daddr), vport, enh) else {
                return Parsed::Pass(NOT_VIP);
            };
            let (c, v) = (cport.to_ne_bytes(), vport.to_ne_bytes());
            copy_words(&mut flow.vip, vip);
            flow.kind = Kind::Icmp;
            st16(&mut flow.sport, 0, cport);
            st16(&mut flow.dport, 0, vport);
            flow.hash = hash6(flow, word([c[0], c[1], v[0], v[1]]), enh, cfg.hash_seed);
            Parsed::Steer
        }
        _ => Parsed::Pass(NOT_VIP),
    }
}

/// An IPv6 address as four words, as loaded.
#[inline(always)]
pub fn words16<const N: usize>(b: &[u8; N]) -> [u32; 4] {
    [ld32(b, 0), ld32(b, 4), ld32(b, 8), ld32(b, 12)]
}

/// The flow hash of an IPv6 flow whose addresses are in `flow`.
#[inline(always)]
fn hash6(flow: &Flow, ports: u32, proto: u8, seed: u32) -> u32 {
    flow_hash_v6_words(
        &words16(&flow.saddr),
        &words16(&flow.daddr),
        ports,
        proto,
        seed,
    )
}

/// TCP/UDP header sanity and the packet kind; None if truncated/invalid.
#[inline(always)]
fn l4_kind(ctx: &XdpContext, proto: u8, l4: usize) -> Option<Kind> {
    if proto == IPPROTO_UDP {
        bytes::<UDP_LEN>(ctx, l4)?;
        return Some(Kind::Udp);
    }
    let th = bytes::<TCP_LEN>(ctx, l4)?;
    if (th[12] >> 4) < 5 {
        return None;
    }
    let flags = th[13];
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        Some(Kind::Syn)
    } else {
        let cookie_ack = flags & TCP_ACK != 0 && flags & (TCP_SYN | TCP_RST) == 0;
        Some(Kind::Tcp { cookie_ack })
    }
}

/// Recognises our encapsulations addressed to this node: IPIP / IPv6-in-IP
/// (protocol 4 / 41) and GUE (UDP to the GUE port, 4-byte header, variant 0).
/// None: not encapsulated (e.g. other UDP to the node), classify normally.
///
/// Only members encapsulate: a tunnel packet whose outer source is not a
/// member's underlay address is dropped (`drop_not_member`), whatever it
/// carries, so the node is no open relay into the site. `member.0` (one
/// hash lookup) runs only for tunnel packets: other traffic never pays it.
/// GUE from lbd carries its sender's node id (the GUE flags field, ours to
/// use on the cluster's port): `member.1` checks the outer source against
/// that node's underlay address with an array read, and only a packet
/// without an id (0) or whose id does not match pays the hash lookup. The
/// guarantee is the same: the outer source is a member's address
/// (`LBD_NODES` never names an address the member maps do not hold).
#[inline(always)]
fn decap_of(
    ctx: &XdpContext,
    cfg: &Config,
    proto: u8,
    l4: usize,
    ip_hdr: usize,
    hop: u8,
    member: (impl Fn() -> bool, impl Fn(u16) -> bool),
) -> Option<Parsed> {
    let (from_member, is_node) = member;
    match proto {
        IPPROTO_IPIP | IPPROTO_IPV6 if !from_member() => Some(Parsed::Drop(DROP_NOT_MEMBER)),
        IPPROTO_IPIP => Some(Parsed::Decap {
            hop,
            outer_len: ip_hdr,
            inner_proto: ETH_P_IP,
        }),
        IPPROTO_IPV6 => Some(Parsed::Decap {
            hop,
            outer_len: ip_hdr,
            inner_proto: ETH_P_IPV6,
        }),
        IPPROTO_UDP => {
            let ports = bytes::<4>(ctx, l4)?;
            if u16::from_ne_bytes([ports[2], ports[3]]) != cfg.gue_port_be {
                return None;
            }
            let header = bytes::<{ UDP_LEN + GUE_LEN }>(ctx, l4);
            let sender = header.as_ref().map_or(0, |h| be16(h, UDP_LEN + 2));
            if !is_node(sender) && !from_member() {
                return Some(Parsed::Drop(DROP_NOT_MEMBER));
            }
            let Some(udp) = header else {
                return Some(Parsed::Drop(DROP_MALFORMED));
            };
            // GUE variant 0, no control bit, no extension fields.
            if udp[8] != 0 {
                return Some(Parsed::Drop(DROP_MALFORMED));
            }
            let inner_proto = match udp[9] {
                IPPROTO_IPIP => ETH_P_IP,
                IPPROTO_IPV6 => ETH_P_IPV6,
                _ => return Some(Parsed::Drop(DROP_MALFORMED)),
            };
            Some(Parsed::Decap {
                hop,
                outer_len: ip_hdr + UDP_LEN + GUE_LEN,
                inner_proto,
            })
        }
        _ => None,
    }
}
