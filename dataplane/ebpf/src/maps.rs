//! The maps shared with userspace. All are pinned by name (under the pin path
//! the loader chooses), so a restarted daemon finds the live tables and
//! counters instead of starting empty.
use crate::types::{Flow, NextHop};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use dataplane_common::{
    BUCKETS_LEN, Bucket, Config, LISTEN_GEN_LEN, ListenerState, MAX_NODES, MAX_VIPS, MemberInfo,
    NodeInfo, STATS_LEN, VipInfo, VipKey, VipKey4, counter::NUM_COUNTERS,
};

/// BPF_F_NO_PREALLOC: updates replace the element under RCU, so a reader
/// sees either the old or the new VipInfo, never a recycled one. The table
/// flip (`active_slot`) relies on that.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "LBD_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "LBD_VIPS4")]
pub static VIPS4: HashMap<VipKey4, VipInfo> = HashMap::pinned(MAX_VIPS, BPF_F_NO_PREALLOC);

#[map(name = "LBD_VIPS6")]
pub static VIPS6: HashMap<VipKey, VipInfo> = HashMap::pinned(MAX_VIPS, BPF_F_NO_PREALLOC);

/// BPF_F_MMAPABLE: userspace writes a whole table with one memcpy instead
/// of one syscall per bucket (65537 of them), so every node switches tables
/// within microseconds of each other.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map(name = "LBD_BUCKETS")]
pub static BUCKETS: Array<Bucket> = Array::pinned(BUCKETS_LEN, BPF_F_MMAPABLE);

#[map(name = "LBD_NODES")]
pub static NODES: Array<NodeInfo> = Array::pinned(MAX_NODES, 0);

/// Members by underlay address: tunnel packets are decapsulated only when
/// their outer source is in here (kept by the daemon next to LBD_NODES).
#[map(name = "LBD_MEMBERS4")]
pub static MEMBERS4: HashMap<[u8; 4], MemberInfo> = HashMap::pinned(MAX_NODES, 0);

#[map(name = "LBD_MEMBERS6")]
pub static MEMBERS6: HashMap<[u8; 16], MemberInfo> = HashMap::pinned(MAX_NODES, 0);

/// Per VIP index: is this node steering new connections away for want of
/// a listener? Written by `listener.rs` on SYNs, cleared by lbd.
#[map(name = "LBD_LISTENER")]
pub static LISTENER: Array<ListenerState> = Array::pinned(MAX_VIPS, 0);

/// The listening-socket generation (`LISTEN_GEN`, bumped by
/// `lbd_listen_close` whenever a listening socket of the host closes) and
/// whether that program is attached (`LISTEN_GEN_ARMED`, set by lbd).
#[map(name = "LBD_LISTEN_GEN")]
pub static LISTEN_GEN: Array<u64> = Array::pinned(LISTEN_GEN_LEN, 0);

#[map(name = "LBD_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(STATS_LEN, 0);

/// Scratch space for the flow being steered (too big for the BPF stack).
#[map(name = "LBD_FLOW")]
pub static FLOW: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU cache of resolved next hops by node id (not pinned: a cache).
#[map(name = "LBD_NEXTHOP")]
pub static NEXTHOP: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(MAX_NODES, 0);

/// Per-CPU counter: plain increment, no atomics needed.
#[inline(always)]
pub fn count(vip_index: u32, counter: u32) {
    let idx = vip_index * NUM_COUNTERS + counter;
    if let Some(c) = STATS.get_ptr_mut(idx) {
        unsafe { *c += 1 };
    }
}

/// Counter of the global slot (not tied to a VIP).
#[inline(always)]
pub fn count_global(counter: u32) {
    count(MAX_VIPS, counter);
}
