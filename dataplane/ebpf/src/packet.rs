//! Bounds-checked access to packet bytes. Every read goes through `bytes`,
//! which proves to the verifier (and to us) that the range is inside the
//! frame; a failed check means "truncated", never an out-of-range read.
use aya_ebpf::programs::XdpContext;

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
pub const TCP_LEN: usize = 20;
pub const GUE_LEN: usize = 4;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A reference to `N` bytes at `off`, or None if the frame is shorter.
#[inline(always)]
pub fn bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Option<&'static mut [u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + N > end {
        return None;
    }
    Some(unsafe { &mut *((start + off) as *mut [u8; N]) })
}

#[inline(always)]
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}
