//! MSS clamp on egress. Clients size their segments from the MSS our
//! SYN-ACK advertises; a segment that lands on the wrong node is
//! encapsulated (20-56 bytes more), so the advertised MSS must leave room for
//! that or full-size segments would not fit the underlay MTU.
use aya_ebpf::programs::TcContext;
use dataplane_common::counter::MSS_CLAMPED;

use crate::{
    classify::{vip_lookup4, vip_lookup6},
    maps::count,
    packet::*,
};

/// BPF_F_PSEUDO_HDR is not needed: the MSS is not part of the pseudo header;
/// the low bits give the size of the replaced field.
const CSUM_FIELD_2: u64 = 2;
const MAX_OPTION_STEPS: usize = 12;

#[inline(always)]
pub fn clamp(ctx: &TcContext) -> Option<()> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    let l3 = ETH_LEN;
    // The VIP is the packet's source: its address is kept as loaded (no
    // key struct zeroed up front: that was a memset loop on every packet).
    let mut v4 = true;
    let mut addr = [0u32; 4];
    let l4 = if ethertype == ETH_P_IP {
        let ip: [u8; IPV4_LEN] = ctx.load(l3).ok()?;
        if ip[9] != IPPROTO_TCP || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
            return None;
        }
        addr[0] = ld32(&ip, 12);
        l3 + ((ip[0] & 0x0f) as usize) * 4
    } else if ethertype == ETH_P_IPV6 {
        let ip: [u8; IPV6_LEN] = ctx.load(l3).ok()?;
        if ip[6] != IPPROTO_TCP {
            return None;
        }
        v4 = false;
        addr = [ld32(&ip, 8), ld32(&ip, 12), ld32(&ip, 16), ld32(&ip, 20)];
        l3 + IPV6_LEN
    } else {
        return None;
    };
    let th: [u8; TCP_LEN] = ctx.load(l4).ok()?;
    if th[13] & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK {
        return None;
    }
    let port_be = ld16(&th, 0);
    let vip = if v4 {
        vip_lookup4(addr[0], port_be, IPPROTO_TCP)?
    } else {
        vip_lookup6(addr, port_be, IPPROTO_TCP)?
    };
    if vip.mss_clamp == 0 {
        return None;
    }
    let opts_end = l4 + ((th[12] >> 4) as usize) * 4;
    let mut off = l4 + TCP_LEN;
    for _ in 0..MAX_OPTION_STEPS {
        if off + 4 > opts_end {
            return None;
        }
        let opt: [u8; 4] = ctx.load(off).ok()?;
        match opt[0] {
            0 => return None,
            1 => off += 1,
            2 if opt[1] == 4 => {
                let mss = u16::from_be_bytes([opt[2], opt[3]]);
                if mss <= vip.mss_clamp {
                    return None;
                }
                let old = u16::from_ne_bytes([opt[2], opt[3]]);
                let new = vip.mss_clamp.to_be();
                ctx.store(off + 2, &new, 0).ok()?;
                ctx.l4_csum_replace(l4 + 16, old as u64, new as u64, CSUM_FIELD_2)
                    .ok()?;
                count(vip.index, MSS_CLAMPED);
                return Some(());
            }
            _ => {
                if opt[1] < 2 {
                    return None;
                }
                off += opt[1] as usize;
            }
        }
    }
    None
}
