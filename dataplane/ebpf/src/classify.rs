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
    flow_hash_v4, flow_hash_v6,
};

use crate::{
    maps::{FLOW, MEMBERS4, MEMBERS6, VIPS4, VIPS6},
    packet::*,
    types::{Flow, Kind, Parsed},
    verdict::{PASS, encode},
};

#[inline(always)]
fn eq4(a: &[u8; 4], b: &[u8; 4]) -> bool {
    u32::from_ne_bytes(*a) == u32::from_ne_bytes(*b)
}

#[inline(always)]
fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
            != u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
        {
            return false;
        }
        i += 4;
    }
    true
}

#[inline(always)]
fn is_zero16(a: &[u8; 16]) -> bool {
    eq16(a, &[0; 16])
}

#[inline(always)]
fn copy4(dst: &mut [u8; 16], src: &[u8; 4]) {
    dst[0] = src[0];
    dst[1] = src[1];
    dst[2] = src[2];
    dst[3] = src[3];
}

#[inline(always)]
fn vip_lookup(addr: &[u8; 16], port: [u8; 2], proto: u8, family: u8) -> Option<VipInfo> {
    let port_be = u16::from_ne_bytes(port);
    if family == FAMILY_V4 {
        let key4 = VipKey4 {
            addr: [addr[0], addr[1], addr[2], addr[3]],
            port_be,
            proto,
            _pad: 0,
        };
        return unsafe { VIPS4.get(&key4) }.copied();
    }
    let key = VipKey {
        addr: *addr,
        port_be,
        proto,
        family,
    };
    unsafe { VIPS6.get(&key) }.copied()
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
    if ip[0] >> 4 != 4 || ihl < IPV4_LEN || tot < ihl || l3 + tot > frame_len(ctx) {
        return Parsed::Drop(DROP_MALFORMED);
    }
    if be16(ip, 6) & 0x3fff != 0 {
        return Parsed::Pass(FRAGMENT);
    }
    let proto = ip[9];
    let saddr: [u8; 4] = [ip[12], ip[13], ip[14], ip[15]];
    let daddr: [u8; 4] = [ip[16], ip[17], ip[18], ip[19]];
    let l4 = l3 + ihl;

    // An IPv6-only underlay leaves self_v4 at 0.0.0.0: never a match.
    if outer && u32::from_ne_bytes(cfg.self_v4) != 0 && eq4(&daddr, &cfg.self_v4) {
        // The node's own address: our encapsulation, or ordinary traffic
        // to the node (no VIP lookup needed: the fast not-VIP path).
        let hop = hop_from_v4_id(be16(ip, 4));
        let from_member = || unsafe { MEMBERS4.get(&saddr) }.is_some();
        return decap_of(ctx, cfg, proto, l4, ihl, hop, from_member)
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
            copy4(&mut flow.daddr, &daddr);
            let Some(vip) = vip_lookup(&flow.daddr, [ports[2], ports[3]], proto, FAMILY_V4) else {
                return Parsed::Pass(NOT_VIP);
            };
            copy4(&mut flow.saddr, &saddr);
            flow.vip = vip;
            flow.kind = kind;
            flow.sport = [ports[0], ports[1]];
            flow.dport = [ports[2], ports[3]];
            flow.hash = flow_hash_v4(&saddr, &daddr, ports, proto, cfg.hash_seed);
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
            let vip_addr: [u8; 4] = [e[12], e[13], e[14], e[15]];
            let client: [u8; 4] = [e[16], e[17], e[18], e[19]];
            let Some(ep) = bytes::<4>(ctx, e3 + eihl) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            copy4(&mut flow.daddr, &vip_addr);
            let Some(vip) = vip_lookup(&flow.daddr, [ep[0], ep[1]], eproto, FAMILY_V4) else {
                return Parsed::Pass(NOT_VIP);
            };
            copy4(&mut flow.saddr, &client);
            let cports = [ep[2], ep[3], ep[0], ep[1]];
            flow.vip = vip;
            flow.kind = Kind::Icmp;
            flow.sport = [ep[2], ep[3]];
            flow.dport = [ep[0], ep[1]];
            flow.hash = flow_hash_v4(&client, &vip_addr, &cports, eproto, cfg.hash_seed);
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
        flow.saddr[i] = ip[8 + i];
        flow.daddr[i] = ip[24 + i];
        i += 1;
    }
    let l4 = l3 + IPV6_LEN;

    // An IPv4-only underlay leaves self_v6 at ::, never a match.
    if outer && !is_zero16(&cfg.self_v6) && eq16(&flow.daddr, &cfg.self_v6) {
        let hop = hop_from_flow_label(ip[3]);
        let from_member = || unsafe { MEMBERS6.get(&flow.saddr) }.is_some();
        return decap_of(ctx, cfg, nh, l4, IPV6_LEN, hop, from_member)
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
            let Some(vip) = vip_lookup(&flow.daddr, [ports[2], ports[3]], nh, FAMILY_V6) else {
                return Parsed::Pass(NOT_VIP);
            };
            flow.vip = vip;
            flow.kind = kind;
            flow.sport = [ports[0], ports[1]];
            flow.dport = [ports[2], ports[3]];
            flow.hash = flow_hash_v6(&flow.saddr, &flow.daddr, ports, nh, cfg.hash_seed);
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
                flow.daddr[i] = e[8 + i];
                flow.saddr[i] = e[24 + i];
                i += 1;
            }
            let Some(ep) = bytes::<4>(ctx, e3 + IPV6_LEN) else {
                return Parsed::Drop(DROP_MALFORMED);
            };
            let Some(vip) = vip_lookup(&flow.daddr, [ep[0], ep[1]], enh, FAMILY_V6) else {
                return Parsed::Pass(NOT_VIP);
            };
            let cports = [ep[2], ep[3], ep[0], ep[1]];
            flow.vip = vip;
            flow.kind = Kind::Icmp;
            flow.sport = [ep[2], ep[3]];
            flow.dport = [ep[0], ep[1]];
            flow.hash = flow_hash_v6(&flow.saddr, &flow.daddr, &cports, enh, cfg.hash_seed);
            Parsed::Steer
        }
        _ => Parsed::Pass(NOT_VIP),
    }
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
/// carries, so the node is no open relay into the site. `from_member` (one
/// hash lookup) runs only for tunnel packets: other traffic never pays it.
#[inline(always)]
fn decap_of(
    ctx: &XdpContext,
    cfg: &Config,
    proto: u8,
    l4: usize,
    ip_hdr: usize,
    hop: u8,
    from_member: impl Fn() -> bool,
) -> Option<Parsed> {
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
            if !from_member() {
                return Some(Parsed::Drop(DROP_NOT_MEMBER));
            }
            let Some(udp) = bytes::<{ UDP_LEN + GUE_LEN }>(ctx, l4) else {
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
