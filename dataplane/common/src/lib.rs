//! Types and the flow hash shared by the XDP program (`dataplane-ebpf`) and
//! its userspace side (`dataplane`).
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]`, with
//! explicit padding, so both sides agree on the layout byte for byte. The
//! flow hash lives here too: the kernel uses it to pick a bucket and the
//! userspace predictor uses the very same function to say which node owns a
//! flow, so the two can never drift apart.
#![no_std]

pub mod hash;

pub use hash::{
    bucket_index, flow_hash_v4, flow_hash_v4_words, flow_hash_v6, flow_hash_v6_words, jhash_3words,
};

/// Most VIPs (address, port, protocol) one node serves.
pub const MAX_VIPS: u32 = 32;
/// Largest Maglev table; tables are prime-sized and at most this long.
pub const MAX_TABLE_SIZE: u32 = 65537;
/// Each VIP owns two table slots: one live, one being written. A table
/// change writes the idle slot and then flips `VipInfo::active_slot`, so no
/// packet ever sees a half-written table.
pub const SLOTS_PER_VIP: u32 = 2;
/// Entries of the flat bucket array: VIP index x slot x table position.
pub const BUCKETS_LEN: u32 = MAX_VIPS * SLOTS_PER_VIP * MAX_TABLE_SIZE;
/// Node ids are 1..MAX_NODES; 0 means "no hop".
pub const MAX_NODES: u32 = 1024;
pub const NO_HOP: u16 = 0;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const ENCAP_GUE: u8 = 1;
pub const ENCAP_IPIP: u8 = 2;
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// The flow-hash seed when the config names none. Every node of a cluster
/// must hash with the same seed; the default makes that true out of the box.
pub const DEFAULT_HASH_SEED: u32 = 0x1bd0_5eed;

/// Hop marker carried in the outer header of every packet we encapsulate.
/// IPv4 outer: the IP identification field (the outer packet always has DF
/// set, so RFC 6864 leaves the field free). IPv6 outer: the two low bits of
/// the flow label (the other 18 bits carry flow entropy).
/// A packet marked `HOP_SECOND` is never forwarded again: at most two hops.
pub const HOP_FIRST: u8 = 1;
pub const HOP_SECOND: u8 = 2;
pub const IPV4_ID_MARK: u16 = 0x4c00;

/// Key of the IPv6 VIP map (and the family-independent key userspace uses):
/// (address, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// IPv4 addresses use the first 4 bytes, the rest are zero.
    pub addr: [u8; 16],
    /// Network byte order, exactly as in the packet.
    pub port_be: u16,
    /// IPPROTO_TCP (6) or IPPROTO_UDP (17).
    pub proto: u8,
    /// FAMILY_V4 or FAMILY_V6.
    pub family: u8,
}

/// Key of the IPv4 VIP map: a compact key hashes and compares faster than
/// the 20-byte [`VipKey`] (IPv4 VIPs are the common case).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey4 {
    pub addr: [u8; 4],
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl VipKey {
    /// The compact key of an IPv4 VIP.
    pub fn v4(&self) -> Option<VipKey4> {
        (self.family == FAMILY_V4).then_some(VipKey4 {
            addr: [self.addr[0], self.addr[1], self.addr[2], self.addr[3]],
            port_be: self.port_be,
            proto: self.proto,
            _pad: 0,
        })
    }
}

/// Value of the VIP maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipInfo {
    /// Index 0..MAX_VIPS: selects the VIP's table slots and counters.
    pub index: u32,
    /// Maglev table size (prime, <= MAX_TABLE_SIZE).
    pub table_size: u32,
    /// Which of the two slots is live (0 or 1).
    pub active_slot: u32,
    /// Clamp the MSS option of SYN-ACKs leaving from this VIP to this value
    /// (0: off), so full-size segments still fit the encapsulated path.
    pub mss_clamp: u16,
    pub _pad: u16,
}

/// One bucket of a VIP's table (8 bytes: a BPF array slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// The owner of the bucket's flows (node id, never NO_HOP in a live table).
    pub first: u16,
    /// The previous owner while the table is in transition, else NO_HOP.
    pub second: u16,
    /// The node that owns the bucket in the table built without `first`
    /// (`maglev::fallbacks`): where the first hop sends new connections
    /// while it has no listener for the VIP's port. NO_HOP when no other
    /// node serves, or the fallback is not usable.
    pub fallback: u16,
    pub _pad: u16,
}

impl Bucket {
    /// A bucket without a fallback.
    pub const fn new(first: u16, second: u16) -> Self {
        Bucket {
            first,
            second,
            fallback: NO_HOP,
            _pad: 0,
        }
    }
}

/// Version of the pinned maps' layout (names, key and value types, sizes,
/// counter meanings). Bump it with any such change: a daemon refuses to
/// reuse maps pinned by a build with another layout (the operator runs
/// `lbd cleanup` once), instead of reading them with the wrong types.
/// 2: member maps (decapsulation only from members), counter 13 drops.
/// 3: `Bucket::fallback`, `LBD_LISTENER`, counter 15 (`syn_to_fallback`).
/// 4: `ListenerState::quiesced` (24 bytes).
/// 5: `ListenerState::listener_gen` (32 bytes), `LBD_LISTEN_GEN`, counter
///    16 (`syn_listener_lookup`).
pub const LAYOUT_VERSION: u32 = 5;

/// `LBD_LISTEN_GEN` (array of u64) entry bumped by the tracepoint program
/// each time a listening socket of the host closes.
pub const LISTEN_GEN: u32 = 0;
/// `LBD_LISTEN_GEN` entry set non-zero by lbd once that program is
/// attached: the XDP program trusts a cached "listener present" only then.
pub const LISTEN_GEN_ARMED: u32 = 1;
/// Entries of `LBD_LISTEN_GEN`.
pub const LISTEN_GEN_LEN: u32 = 2;
/// Where the `sock/inet_sock_set_state` tracepoint's record holds `int
/// oldstate` and `__u16 protocol` (Linux 4.16 to 6.18 alike). The program
/// reads them at these constant offsets; lbd attaches it only if this
/// kernel's format file says the same.
pub const LISTEN_RECORD_OLDSTATE: usize = 16;
pub const LISTEN_RECORD_PROTOCOL: usize = 30;

/// Per-VIP listener state (`LBD_LISTENER`, indexed by the VIP's index):
/// written by the XDP program when a SYN at the first hop finds no local
/// listener, cleared by lbd once the listener is back and the connections
/// sent to the fallback meanwhile have had the drain period to finish.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerState {
    /// Non-zero while packets of this VIP at the first hop must be checked
    /// for a local socket (their connection may live on the fallback).
    pub steering: u32,
    /// 1 when the last SYN looked up found no listener, 0 when it found one.
    pub missing: u32,
    /// bpf_ktime_get_coarse_ns() of the last SYN that found no listener
    /// (or was steered away while quiesced).
    pub last_missing_ns: u64,
    /// Non-zero while the operator has quiesced this VIP port's listener
    /// (`lbd listener quiesce`, before nginx stops): new connections go to
    /// the fallback as if the listener were missing, without a lookup;
    /// established ones stay. Set and cleared by lbd only.
    pub quiesced: u32,
    pub _pad: u32,
    /// 1 + the `LBD_LISTEN_GEN` generation read before the last lookup
    /// that found a listener for this VIP port (0: none). While it equals
    /// 1 + the current generation (no listening socket closed since), a
    /// SYN is kept without a lookup. Written by the XDP program; lbd
    /// clears it with the rest of the entry.
    pub listener_gen: u64,
}

/// Value of the member maps (`LBD_MEMBERS4`, keyed by the 4 address bytes,
/// and `LBD_MEMBERS6`, keyed by the 16): the node id owning that underlay
/// address. Only packets encapsulated by a member are decapsulated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u16,
    pub _pad: u16,
}

/// Underlay address of a node, indexed by node id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub addr: [u8; 16],
    /// FAMILY_V4, FAMILY_V6, or 0 for an unused id.
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Cluster-wide and node-local settings (single entry array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// This node's id; 0 means "not configured": the program passes everything.
    pub self_id: u16,
    /// ENCAP_GUE or ENCAP_IPIP.
    pub encap: u8,
    pub _pad0: u8,
    /// GUE destination port, network byte order.
    pub gue_port_be: u16,
    pub _pad1: u16,
    /// Cluster-wide flow hash seed.
    pub hash_seed: u32,
    /// This node's underlay addresses: encapsulation source and decap match.
    pub self_v4: [u8; 4],
    pub self_v6: [u8; 16],
}

/// Per-CPU counters. Slot `vip.index * NUM_COUNTERS + counter` for VIP
/// traffic; slot `MAX_VIPS * NUM_COUNTERS + counter` for global events.
pub mod counter {
    /// Passed to the local stack (this node owns the flow or holds its socket).
    pub const PASS_LOCAL: u32 = 0;
    /// Encapsulated and sent to the first hop (the owner).
    pub const FWD_FIRST_HOP: u32 = 1;
    /// Sent on to the second hop (no local socket at the first hop).
    pub const FWD_SECOND_HOP: u32 = 2;
    /// Encapsulated packets for this node, decapsulated.
    pub const DECAP: u32 = 3;
    /// Not VIP traffic: passed untouched (global slot).
    pub const NOT_VIP: u32 = 4;
    /// IP fragments: passed untouched, never forwarded (global slot).
    pub const FRAGMENT: u32 = 5;
    /// ICMP too-big / frag-needed about a VIP flow, steered to its owner.
    pub const ICMP_TO_OWNER: u32 = 6;
    /// Dropped: headers truncated or inconsistent.
    pub const DROP_MALFORMED: u32 = 7;
    /// Dropped: the bucket names a node with no underlay address.
    pub const DROP_NO_NODE: u32 = 8;
    /// Dropped: growing or shrinking the packet failed.
    pub const DROP_ENCAP: u32 = 9;
    /// Dropped: bpf_fib_lookup found no route or no neighbour for the hop's
    /// underlay address (lbd's member polling keeps neighbours resolved).
    pub const DROP_NO_ROUTE: u32 = 10;
    /// SYN-ACKs whose MSS option was clamped (tc egress).
    pub const MSS_CLAMPED: u32 = 11;
    /// Dropped: the encapsulated packet would exceed the underlay MTU.
    pub const DROP_TOO_BIG: u32 = 12;
    /// Dropped: encapsulated by a member, but the inner packet is not VIP
    /// traffic. Members only ever encapsulate VIP flows; passing anything
    /// else would let a tunnel carry arbitrary packets into the site.
    pub const DROP_DECAP_NOT_VIP: u32 = 13;
    /// Dropped: GUE or IPIP / IPv6-in-IP addressed to this node whose outer
    /// source is not a member's underlay address (global slot).
    pub const DROP_NOT_MEMBER: u32 = 14;
    /// SYNs at the first hop with no local listener for the VIP's port,
    /// sent to the bucket's fallback (or second hop) instead of being
    /// refused here.
    pub const SYN_TO_FALLBACK: u32 = 15;
    /// SYNs at the first hop that looked their listener up
    /// (`bpf_skc_lookup_tcp`): the listener cache had nothing valid (first
    /// SYN, a listening socket of the host closed since, or no listener).
    pub const SYN_LISTENER_LOOKUP: u32 = 16;
    pub const NUM_COUNTERS: u32 = 17;

    /// Names in index order, for status output and metrics.
    pub const NAMES: [&str; 17] = [
        "pass_local",
        "fwd_first_hop",
        "fwd_second_hop",
        "decap",
        "not_vip",
        "fragment",
        "icmp_to_owner",
        "drop_malformed",
        "drop_no_node",
        "drop_encap",
        "drop_no_route",
        "mss_clamped",
        "drop_too_big",
        "drop_decap_not_vip",
        "drop_not_member",
        "syn_to_fallback",
        "syn_listener_lookup",
    ];
}

/// Length of the per-CPU counter array.
pub const STATS_LEN: u32 = (MAX_VIPS + 1) * counter::NUM_COUNTERS;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with explicit padding fields and
    // no pointers: any byte pattern is a valid value.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipKey4 {}
    unsafe impl aya::Pod for super::VipInfo {}
    unsafe impl aya::Pod for super::Bucket {}
    unsafe impl aya::Pod for super::NodeInfo {}
    unsafe impl aya::Pod for super::MemberInfo {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ListenerState {}
}
