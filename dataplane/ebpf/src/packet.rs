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
pub fn be16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be(ld16(b, at))
}

// Word access. The BPF target assumes natural alignment for 2- and 4-byte
// accesses, so code over byte arrays (`from_be_bytes`, `copy_from_slice`)
// compiles to one load or store per byte plus shifts and ors: a third of
// the forward path's instructions were those. Headers behind a 14-byte
// Ethernet header are only 2-byte aligned; x86-64 and arm64 access
// unaligned packet and map memory at full speed and the verifier allows it
// there (CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS). On an architecture
// without it the verifier refuses the program at load time: it never
// misreads. Bytes stay in memory (network) order: `ld32` of an address is
// the value the hash and the VIP keys use, no byte swapping.

/// The 2 bytes at `b[at..at + 2]` as one load, memory order.
#[inline(always)]
pub fn ld16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    debug_assert!(at + 2 <= N);
    unsafe { core::ptr::read(b.as_ptr().add(at) as *const u16) }
}

/// The 4 bytes at `b[at..at + 4]` as one load, memory order.
#[inline(always)]
pub fn ld32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    debug_assert!(at + 4 <= N);
    unsafe { core::ptr::read(b.as_ptr().add(at) as *const u32) }
}

/// One store of `v` (memory order) at `b[at..at + 2]`.
#[inline(always)]
pub fn st16<const N: usize>(b: &mut [u8; N], at: usize, v: u16) {
    debug_assert!(at + 2 <= N);
    unsafe { core::ptr::write(b.as_mut_ptr().add(at) as *mut u16, v) }
}

/// One store of `v` (memory order) at `b[at..at + 4]`.
#[inline(always)]
pub fn st32<const N: usize>(b: &mut [u8; N], at: usize, v: u32) {
    debug_assert!(at + 4 <= N);
    unsafe { core::ptr::write(b.as_mut_ptr().add(at) as *mut u32, v) }
}

/// Four bytes as the word `ld32` would read from memory holding them.
#[inline(always)]
pub const fn word(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// `*dst = *src` for a map value of whole 4-byte words, as word loads and
/// stores. A plain assignment of a struct read from a map compiles to a
/// call of the byte-at-a-time `memcpy` subprogram on the BPF target (six
/// instructions per byte).
#[inline(always)]
pub fn copy_words<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>() % 4 == 0 && align_of::<T>() >= 4) };
    let (d, s) = (dst as *mut T as *mut u32, src as *const T as *const u32);
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        unsafe { d.add(i).write(s.add(i).read()) };
        i += 1;
    }
}
