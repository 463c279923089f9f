//! Types and the flow-label encoding shared by flowmark's tc egress program
//! (`flowmark-ebpf`) and its userspace daemon (`flowmark`).
//!
//! The SciTags IPv6 flow-label layout (20 bits, bit 19 most significant):
//!
//! | bits  | field                                                   |
//! |-------|---------------------------------------------------------|
//! | 19-18 | entropy (2 bits)                                        |
//! | 17-9  | experiment id, 9 bits, bit-reversed (LSB at label bit 17) |
//! | 8     | entropy (1 bit)                                         |
//! | 7-2   | activity id, 6 bits, normal order                       |
//! | 1-0   | entropy (2 bits)                                        |
//!
//! The encoding lives here, dependency-free, so the kernel program and the
//! userspace tools can never disagree on where a bit goes.
#![no_std]

/// The 15 label bits that carry experiment and activity.
pub const SEMANTIC_MASK: u32 = 0x3FEFC;
/// The 5 label bits chosen once per flow.
pub const ENTROPY_MASK: u32 = 0xC0103;
/// All 20 bits of an IPv6 flow label.
pub const LABEL_MASK: u32 = 0xFFFFF;
/// Experiments that fit the label: 1..=511 (9 bits).
pub const MAX_LABEL_EXPERIMENT: u16 = 511;
/// Largest activity id (6 bits).
pub const MAX_ACTIVITY: u8 = 63;

/// Semantic label bits for `experiment` (< 512) and `activity` (< 64), all
/// entropy bits zero. Higher bits of the arguments are ignored: callers check
/// the ranges first (`flowmark::scitag` does, with a reason for the user).
#[inline(always)]
pub const fn encode_label(experiment: u16, activity: u8) -> u32 {
    let mut label = ((activity as u32) & 0x3F) << 2;
    let mut i = 0;
    while i < 9 {
        if (experiment >> i) & 1 == 1 {
            label |= 1 << (17 - i);
        }
        i += 1;
    }
    label
}

/// The inverse of [`encode_label`]: (experiment, activity); entropy ignored.
#[inline(always)]
pub const fn decode_label(label: u32) -> (u16, u8) {
    let mut experiment = 0u16;
    let mut i = 0;
    while i < 9 {
        if (label >> (17 - i)) & 1 == 1 {
            experiment |= 1 << i;
        }
        i += 1;
    }
    (experiment, ((label >> 2) & 0x3F) as u8)
}

/// Spreads the low 5 bits of `entropy` over the entropy positions
/// (bits 4-3 -> 19-18, bit 2 -> 8, bits 1-0 -> 1-0) of a semantic label.
#[inline(always)]
pub const fn with_entropy(semantic: u32, entropy: u32) -> u32 {
    let e = ((entropy & 0x18) << 15) | ((entropy & 0x4) << 6) | (entropy & 0x3);
    (semantic & SEMANTIC_MASK) | e
}

/// The 5 entropy bits of a label, packed back into 0..32.
#[inline(always)]
pub const fn entropy_of(label: u32) -> u32 {
    ((label >> 15) & 0x18) | ((label >> 6) & 0x4) | (label & 0x3)
}

/// Key of the flow map: the full 5-tuple of an IPv6 packet as it leaves
/// this host (src = local side). Ports in network byte order, exactly as in
/// the packet, so the kernel never swaps bytes.
///
/// Addresses are held as four 32-bit words in packet byte order: the kernel
/// program fills them with four word loads each, where byte arrays would
/// make LLVM emit calls to byte-at-a-time memcpy/memset subprograms.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    /// IPPROTO_TCP (6) or IPPROTO_UDP (17).
    pub proto: u8,
    // Scalars, not `[u8; 3]`: a zeroed array becomes a memset call in BPF.
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowKey {
    pub fn new(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            src: words(src),
            dst: words(dst),
            sport_be: sport.to_be(),
            dport_be: dport.to_be(),
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

fn words(b: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

impl FlowKey {
    /// Word-wise equality: derived `==` on the address arrays would become
    /// a `bcmp` call in BPF.
    #[inline(always)]
    pub fn same(&self, o: &FlowKey) -> bool {
        self.src[0] == o.src[0]
            && self.src[1] == o.src[1]
            && self.src[2] == o.src[2]
            && self.src[3] == o.src[3]
            && self.dst[0] == o.dst[0]
            && self.dst[1] == o.dst[1]
            && self.dst[2] == o.dst[2]
            && self.dst[3] == o.dst[3]
            && self.sport_be == o.sport_be
            && self.dport_be == o.dport_be
            && self.proto == o.proto
    }
}

/// Value of the flow map. `label` is written by userspace once per flow; the
/// counters are bumped by the kernel program (plain adds: a lost increment
/// under a cross-CPU race only blurs a usage fallback, never the label).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// The full 20-bit label, entropy included.
    pub label: u32,
    /// The flow map's generation when userspace wrote the entry: a cache
    /// slot filled at an older generation holds counts of an entry this one
    /// replaced, which are not folded into it.
    pub version: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// Value of the port and cgroup rule maps: the semantic label bits; the
/// kernel adds per-flow entropy from a hash of the 5-tuple, so every packet
/// of a flow carries the same label without any per-flow state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub semantic: u32,
}

/// One slot of the per-CPU flow cache (`FLOW_CACHE`) in front of the flow
/// map: a copy of a flow-map entry the program found, valid while
/// `generation` equals `Config::generation` (userspace bumps it on every
/// change or removal of a flow-map entry). 64 bytes, one cache line. The
/// counters are this slot's share of the flow's packets and bytes; the
/// program folds them into the flow-map entry when the slot is taken over,
/// and userspace adds the live ones when it reads a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSlot {
    pub key: FlowKey,
    pub label: u32,
    pub generation: u32,
    pub packets: u64,
    pub bytes: u64,
}

impl Default for FlowKey {
    fn default() -> FlowKey {
        FlowKey::new([0; 16], [0; 16], 0, 0, 0)
    }
}

/// Slots of the per-CPU flow cache (a power of two).
pub const CACHE_SLOTS: u32 = 256;

/// The cache slot of a flow: a cheap fold of the words that differ most
/// between flows (the remote address's low words and the ports). Both the
/// program and userspace (which reads the slots' counters) use it.
#[inline(always)]
pub fn cache_slot(key: &FlowKey) -> u32 {
    cache_slot_of(
        key.src[3],
        key.dst[2],
        key.dst[3],
        ((key.sport_be as u32) << 16) | key.dport_be as u32,
    )
}

/// [`cache_slot`] from the key's words as the program reads them from the
/// packet (`ports` = sport_be << 16 | dport_be).
#[inline(always)]
pub const fn cache_slot_of(src3: u32, dst2: u32, dst3: u32, ports: u32) -> u32 {
    let mut h = src3 ^ dst2 ^ dst3 ^ ports;
    h ^= h >> 16;
    h ^= h >> 8;
    h & (CACHE_SLOTS - 1)
}

/// Words of the remote-port filter (`REMOTE_PORTS`): one bit per value of
/// a flow key's `dport_be`, set while a registered flow has that remote
/// port. A clear bit lets the program skip the flow-map lookup.
pub const PORT_WORDS: u32 = 1024;

/// The filter word and bit of a remote port (`dport_be`, as in the key).
#[inline(always)]
pub const fn port_bit(dport_be: u16) -> (u32, u64) {
    ((dport_be as u32) >> 6, 1 << (dport_be & 63))
}

/// Entries of the flow map (LRU: the oldest idle flows go first).
pub const MAX_FLOWS: u32 = 65536;
/// Entries of each rule map.
pub const MAX_RULES: u32 = 1024;

/// Per-CPU counters of the egress program.
pub mod counter {
    /// IPv6 packets of a registered flow: label written.
    pub const MARKED_FLOW: u32 = 0;
    /// IPv6 packets matching a local-port rule: label written.
    pub const MARKED_PORT: u32 = 1;
    /// IPv6 packets matching a cgroup rule: label written.
    pub const MARKED_CGROUP: u32 = 2;
    /// IPv6 TCP/UDP packets of no flow and no rule: untouched.
    pub const UNMARKED_V6: u32 = 3;
    /// IPv4 packets: no flow label, untouched (fireflies only).
    pub const IPV4: u32 = 4;
    /// Anything else (ARP, IPv6 with extension headers, ICMPv6...): untouched.
    pub const OTHER: u32 = 5;
    /// Headers shorter than they claim: untouched.
    pub const TRUNCATED: u32 = 6;
    /// bpf_skb_store_bytes failed: untouched.
    pub const STORE_FAILED: u32 = 7;
    pub const NUM: u32 = 8;
    /// Names in index order, for status output and metrics.
    pub const NAMES: [&str; NUM as usize] = [
        "marked_flow",
        "marked_port",
        "marked_cgroup",
        "unmarked_v6",
        "ipv4",
        "other",
        "truncated",
        "store_failed",
    ];
}

/// Mixes a 5-tuple into 5 bits of entropy for rule-marked flows. It only
/// has to be stable per flow and spread flows a little; skb->hash is not
/// used because the kernel re-rolls a socket's txhash on RTO.
#[inline(always)]
pub fn rule_entropy(key: &FlowKey) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < 4 {
        h = (h ^ key.src[i]).wrapping_mul(0x85eb_ca6b).rotate_left(13);
        h = (h ^ key.dst[i]).wrapping_mul(0xc2b2_ae35).rotate_left(13);
        i += 1;
    }
    h ^= ((key.sport_be as u32) << 16) | key.dport_be as u32;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 16;
    h & 0x1F
}

/// Bits of the CONFIG array's entry 0: which rule maps hold entries, so the
/// program skips lookups (and the cgroup helper) for rule kinds not in use.
pub const HAS_PORT_RULES: u32 = 1;
pub const HAS_CGROUP_RULES: u32 = 2;

/// The CONFIG array's one entry (one lookup for both fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// HAS_* bits.
    pub rules: u32,
    /// Generation of the flow map: cache slots of another generation are
    /// ignored; 0 (never written) disables the cache.
    pub generation: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, explicit padding, no pointers: any byte pattern
    // is a valid value.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::RuleValue {}
    unsafe impl aya::Pod for super::CacheSlot {}
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scitag_206_is_0x30038() {
        assert_eq!(encode_label(3, 14), 0x30038);
        assert_eq!(decode_label(0x30038), (3, 14));
    }

    #[test]
    fn entropy_and_semantics_never_overlap() {
        assert_eq!(SEMANTIC_MASK & ENTROPY_MASK, 0);
        assert_eq!(SEMANTIC_MASK | ENTROPY_MASK, LABEL_MASK);
        for e in 0..32 {
            let l = with_entropy(encode_label(511, 63), e);
            assert_eq!(l & SEMANTIC_MASK, SEMANTIC_MASK);
            assert_eq!(entropy_of(l), e);
            assert_eq!(with_entropy(0, e) & SEMANTIC_MASK, 0);
        }
    }

    #[test]
    fn every_encodable_pair_round_trips() {
        for exp in 0..=MAX_LABEL_EXPERIMENT {
            for act in 0..=MAX_ACTIVITY {
                let l = encode_label(exp, act);
                assert_eq!(l & !SEMANTIC_MASK, 0);
                assert_eq!(decode_label(l), (exp, act));
            }
        }
    }
}
