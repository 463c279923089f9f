//! Encapsulation (GUE or IPIP / IPv6-in-IPv6, over an IPv4 or IPv6
//! underlay) and decapsulation, done in XDP: this kernel has no ipip/fou
//! modules, and doing it here keeps the whole path in one program.
//!
//! Outer header facts (docs/dataplane.md has the byte layout):
//! - source: this node's underlay address; destination: the hop's.
//! - GUE: UDP source port from the flow hash (receiver RSS spreads flows),
//!   destination the cluster's GUE port, checksum 0 (RFC 6935 permits it for
//!   tunnels; the inner TCP/UDP checksum still protects the payload), then a
//!   4-byte GUE variant-0 header naming the inner protocol.
//! - hop marker: IPv4 identification `0x4c00 | hop`, IPv6 flow label low bits.
use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{
        bpf_fib_lookup, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_xdp_adjust_head,
    },
    programs::XdpContext,
};
use dataplane_common::{
    Config, ENCAP_GUE, FAMILY_V4, FAMILY_V6, IPV4_ID_MARK,
    counter::{DROP_ENCAP, DROP_NO_NODE, DROP_NO_ROUTE, DROP_TOO_BIG},
};

use crate::{
    maps::{NEXTHOP, NODES, count},
    packet::*,
    types::{Flow, NextHop},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_FRAG_NEEDED: i64 = 8;

/// `struct bpf_fib_lookup` (64 bytes), flattened: the bindings' unions make
/// field access noisy and this layout is fixed UAPI.
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    flowinfo: u32,
    src: [u8; 16],
    dst: [u8; 16],
    vlan: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// How long a cached next hop is trusted.
const NEXTHOP_TTL_NS: u64 = 1_000_000_000;

/// Encapsulates the flow's packet (its IP header starts right after L2, at
/// `flow.l3_off`) towards `node` with `hop`, fills L2 from the FIB, and
/// returns the XDP action; on failure counts why and returns XDP_DROP.
/// A BPF subprogram (own stack frame; at most five arguments).
#[inline(never)]
pub fn forward(raw: *mut xdp_md, cfg: &Config, flow: &Flow, node: u16, hop: u8) -> u32 {
    match encapsulate(&XdpContext::new(raw), cfg, flow, node, hop) {
        Ok(action) => action,
        Err(reason) => {
            count(flow.vip.index, reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn encapsulate(
    ctx: &XdpContext,
    cfg: &Config,
    flow: &Flow,
    node: u16,
    hop: u8,
) -> Result<u32, u32> {
    // Constant offsets: the verifier needs bounded packet arithmetic.
    let l2_len = if flow.l3_off == ETH_LEN + VLAN_LEN {
        ETH_LEN + VLAN_LEN
    } else {
        ETH_LEN
    };
    let Some(n) = NODES.get(node as u32) else {
        return Err(DROP_NO_NODE);
    };
    let outer_v4 = match n.family {
        FAMILY_V4 => true,
        FAMILY_V6 => false,
        _ => return Err(DROP_NO_NODE),
    };
    let gue = cfg.encap == ENCAP_GUE;
    let ip_hdr = if outer_v4 { IPV4_LEN } else { IPV6_LEN };
    let outer_len = ip_hdr + if gue { UDP_LEN + GUE_LEN } else { 0 };
    let total = outer_len + flow.ip_len;
    let inner_proto = if flow.family == FAMILY_V4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    if total > 0xffff {
        return Err(DROP_TOO_BIG);
    }

    // Route the outer packet before touching the frame: on failure the
    // packet is dropped unchanged and counted.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(hop_l2) = next_hop(ctx, cfg, node, &n.addr, outer_v4, ingress) else {
        return Err(DROP_NO_ROUTE);
    };
    if total > hop_l2.mtu as usize {
        return Err(DROP_TOO_BIG);
    }

    // The new L2 header: MACs from the next hop, the VLAN tag (if any) kept
    // as it was, the outer ethertype. Only the tag needs saving.
    let mut tag = 0u16;
    if l2_len == ETH_LEN + VLAN_LEN {
        let Some(old) = bytes::<VLAN_LEN>(ctx, ETH_LEN) else {
            return Err(DROP_ENCAP);
        };
        tag = ld16(old, 0);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer_len as i32)) } != 0 {
        return Err(DROP_ENCAP);
    }
    let ethertype = if outer_v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be();
    let Some(eth) = bytes::<ETH_LEN>(ctx, 0) else {
        return Err(DROP_ENCAP);
    };
    st32(eth, 0, ld32(&hop_l2.dmac, 0));
    st16(eth, 4, ld16(&hop_l2.dmac, 4));
    st16(eth, 6, ld16(&hop_l2.smac, 0));
    st32(eth, 8, ld32(&hop_l2.smac, 2));
    if l2_len == ETH_LEN + VLAN_LEN {
        let Some(vlan) = bytes::<{ VLAN_LEN + 2 }>(ctx, ETH_LEN - 2) else {
            return Err(DROP_ENCAP);
        };
        st16(vlan, 0, ETH_P_8021Q.to_be());
        st16(vlan, 2, tag);
        st16(vlan, 4, ethertype);
    } else {
        st16(eth, 12, ethertype);
    }

    let l4_proto = if gue { IPPROTO_UDP } else { inner_proto };
    if outer_v4 {
        let Some(ip) = bytes::<IPV4_LEN>(ctx, l2_len) else {
            return Err(DROP_ENCAP);
        };
        write_ipv4(ip, total as u16, l4_proto, hop, &cfg.self_v4, &n.addr);
    } else {
        let Some(ip) = bytes::<IPV6_LEN>(ctx, l2_len) else {
            return Err(DROP_ENCAP);
        };
        let payload = (total - IPV6_LEN) as u16;
        write_ipv6(ip, payload, l4_proto, hop, flow.hash, &cfg.self_v6, &n.addr);
    }
    if gue {
        let Some(udp) = bytes::<{ UDP_LEN + GUE_LEN }>(ctx, l2_len + ip_hdr) else {
            return Err(DROP_ENCAP);
        };
        let sport = (0xc000 | ((flow.hash ^ (flow.hash >> 16)) & 0x3fff) as u16).to_be_bytes();
        let gport = cfg.gue_port_be.to_ne_bytes();
        let ulen = ((total - ip_hdr) as u16).to_be_bytes();
        // UDP: ports, length, checksum 0; GUE variant 0: 00 proto, then
        // the flags field carries our node id (the receiver's member
        // check reads it, classify.rs).
        let id = cfg.self_id.to_be_bytes();
        st32(udp, 0, word([sport[0], sport[1], gport[0], gport[1]]));
        st32(udp, 4, word([ulen[0], ulen[1], 0, 0]));
        st32(udp, 8, word([0, inner_proto, id[0], id[1]]));
    }

    if hop_l2.ifindex == ingress {
        Ok(xdp_action::XDP_TX)
    } else {
        Ok(unsafe { bpf_redirect(hop_l2.ifindex, 0) } as u32)
    }
}

/// The L2 next hop towards `node`, from the per-CPU cache or, when that
/// entry is older than NEXTHOP_TTL_NS or was learnt on another interface,
/// from two FIB lookups (the first learns the path MTU, the second
/// resolves the neighbour). Caching saves a FIB and neighbour lookup on
/// every forwarded packet; route and neighbour changes apply within the TTL.
///
/// Reading the clock costs more than the rest of the cache hit (measured:
/// ~0.35 of the baseline, docs/dataplane.md), so an entry remembers the
/// jiffy in which it was last found valid: within the same jiffy it is
/// still valid (the coarse clock only moves with the tick), and the clock
/// is read at most once per tick per CPU and node.
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    cfg: &Config,
    node: u16,
    dst: &[u8; 16],
    v4: bool,
    ingress: u32,
) -> Option<&'static NextHop> {
    let tick = unsafe { bpf_jiffies64() };
    let slot = NEXTHOP.get_ptr_mut(node as u32)?;
    // A reference into this CPU's entry, not a copy: nothing else writes
    // it while this program runs on this CPU.
    let cached = unsafe { &mut *slot };
    if cached.from_ifindex == ingress && cached.checked == tick && cached.expires != 0 {
        return Some(&*cached);
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if cached.expires > now && cached.from_ifindex == ingress {
        cached.checked = tick;
        return Some(&*cached);
    }
    let mut fib = FibParams {
        family: if v4 { AF_INET } else { AF_INET6 },
        l4_protocol: IPPROTO_UDP,
        sport: 0,
        dport: 0,
        tot_len: 0xffff,
        ifindex: ingress,
        flowinfo: 0,
        src: [0; 16],
        dst: [0; 16],
        vlan: 0,
        smac: [0; 6],
        dmac: [0; 6],
    };
    if v4 {
        fib.src[..4].copy_from_slice(&cfg.self_v4);
        fib.dst[..4].copy_from_slice(&dst[..4]);
    } else {
        fib.src = cfg.self_v6;
        fib.dst = *dst;
    }
    let ptr = &mut fib as *mut FibParams as *mut _;
    let mut mtu = 0xffff;
    let mut rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, ptr, 64, 0) };
    if rc == FIB_FRAG_NEEDED {
        mtu = fib.tot_len as u32; // the kernel wrote mtu_result here
        fib.tot_len = 0;
        rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, ptr, 64, 0) };
    }
    if rc != FIB_SUCCESS {
        return None;
    }
    *cached = NextHop {
        expires: now + NEXTHOP_TTL_NS,
        checked: tick,
        from_ifindex: ingress,
        ifindex: fib.ifindex,
        mtu,
        smac: fib.smac,
        dmac: fib.dmac,
        _pad: 0,
    };
    Some(&*cached)
}

#[inline(always)]
fn write_ipv4(
    ip: &mut [u8; IPV4_LEN],
    total: u16,
    proto: u8,
    hop: u8,
    src: &[u8; 4],
    dst: &[u8; 16],
) {
    let (src, dst) = (ld32(src, 0), ld32(dst, 0));
    let len = total.to_be_bytes();
    let id = (IPV4_ID_MARK | hop as u16).to_be_bytes();
    // Version/IHL, TOS, length; id, DF; TTL, protocol (checksum below).
    let w0 = word([0x45, 0, len[0], len[1]]);
    let w1 = word([id[0], id[1], 0x40, 0]);
    let w2 = word([64, proto, 0, 0]);
    // RFC 1071: the one's complement sum does not depend on byte order, so
    // sum the words as loaded and store the result the same way.
    let mut sum = 0u32;
    for w in [w0, w1, w2, src, dst] {
        sum += (w & 0xffff) + (w >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let c = (!(sum as u16)).to_ne_bytes();
    st32(ip, 0, w0);
    st32(ip, 4, w1);
    st32(ip, 8, word([64, proto, c[0], c[1]]));
    st32(ip, 12, src);
    st32(ip, 16, dst);
}

#[inline(always)]
fn write_ipv6(
    ip: &mut [u8; IPV6_LEN],
    payload: u16,
    nh: u8,
    hop: u8,
    hash: u32,
    src: &[u8; 16],
    dst: &[u8; 16],
) {
    // Flow label: 18 bits of flow entropy for underlay ECMP, 2 bits of hop.
    let label = ((hash << 2) & 0x000f_fffc) | hop as u32;
    let len = payload.to_be_bytes();
    // Labels are 20 bits: byte 1 low nibble, bytes 2 and 3.
    st32(
        ip,
        0,
        word([
            0x60,
            ((label >> 16) & 0x0f) as u8,
            (label >> 8) as u8,
            label as u8,
        ]),
    );
    st32(ip, 4, word([len[0], len[1], nh, 64]));
    let mut i = 0;
    while i < 16 {
        st32(ip, 8 + i, ld32(src, i));
        st32(ip, 24 + i, ld32(dst, i));
        i += 4;
    }
}

/// Strips `outer_len` bytes after the L2 header and sets the ethertype of the
/// inner packet. False if the frame could not be shrunk.
#[inline(always)]
pub fn decap(ctx: &XdpContext, l2_len: usize, outer_len: usize, inner_proto: u16) -> bool {
    let vlan = l2_len == ETH_LEN + VLAN_LEN;
    let Some(old) = bytes::<ETH_LEN>(ctx, 0) else {
        return false;
    };
    // MACs and the type field (0x8100 when tagged) as words, then the tag.
    let (w0, w1, w2, tpid) = (ld32(old, 0), ld32(old, 4), ld32(old, 8), ld16(old, 12));
    let mut tci = 0;
    if vlan {
        let Some(tag) = bytes::<VLAN_LEN>(ctx, ETH_LEN) else {
            return false;
        };
        tci = ld16(tag, 0);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return false;
    }
    let et = inner_proto.to_be();
    let Some(new) = bytes::<ETH_LEN>(ctx, 0) else {
        return false;
    };
    st32(new, 0, w0);
    st32(new, 4, w1);
    st32(new, 8, w2);
    if vlan {
        let Some(tag) = bytes::<VLAN_LEN>(ctx, ETH_LEN) else {
            return false;
        };
        st16(new, 12, tpid);
        st16(tag, 0, tci);
        st16(tag, 2, et);
    } else {
        st16(new, 12, et);
    }
    true
}
