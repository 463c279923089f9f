//! The data types the kernel-side modules share, in one leaf module that
//! imports none of them: types -> maps -> verdict -> classify / steer /
//! encap (Katran's structs -> maps -> kern). Types that cross into
//! userspace live in `dataplane-common` instead.
use dataplane_common::VipInfo;

/// What kind of packet a flow packet is; decides whether the first hop may
/// keep it without looking for a socket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TCP SYN (without ACK): starts a connection, always stays local.
    Syn,
    /// Any other TCP segment. `cookie_ack`: may complete a SYN-cookie
    /// handshake (ACK set, SYN and RST clear).
    Tcp { cookie_ack: bool },
    /// UDP: no connection state to find, always stays at the first hop.
    Udp,
    /// ICMP error about a VIP flow (embedded header).
    Icmp,
}

/// A VIP flow packet, in the client-to-VIP direction. Lives in a per-CPU
/// map, not on the 512-byte BPF stack.
#[repr(C)]
pub struct Flow {
    pub vip: VipInfo,
    pub hash: u32,
    pub kind: Kind,
    /// FAMILY_V4 / FAMILY_V6 of the packet's IP header.
    pub family: u8,
    /// Length of the IP packet (header + payload), without L2 padding.
    pub ip_len: usize,
    /// Offsets of the IP and TCP headers (for the SYN-cookie check).
    pub l3_off: usize,
    pub ihl: usize,
    pub l4_off: usize,
    /// Socket-lookup tuple (client -> VIP), network order.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// Set for Parsed::Decap.
    pub decap_hop: u8,
    pub inner_proto: u16,
    pub outer_len: usize,
}

pub enum Parsed {
    /// Not VIP traffic: pass untouched, count in the global slot.
    Pass(u32),
    /// Malformed: drop, count in the global slot.
    Drop(u32),
    /// Encapsulated for this node: strip `outer_len` bytes after L2; the inner
    /// packet has ethertype `inner_proto`.
    Decap {
        hop: u8,
        outer_len: usize,
        inner_proto: u16,
    },
    /// A VIP flow: its description is in the per-CPU `FLOW` scratch map.
    Steer,
}

/// A resolved next hop towards one node.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NextHop {
    /// bpf_ktime_get_coarse_ns() after which the entry is looked up again.
    pub expires: u64,
    /// bpf_jiffies64() when the entry was last found unexpired.
    pub checked: u64,
    /// The interface the packet came in on when this was resolved.
    pub from_ifindex: u32,
    pub ifindex: u32,
    /// Path MTU towards the node (0xffff: unknown, no limit).
    pub mtu: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: u32,
}
