//! flowmark's tc clsact egress program: writes the SciTags flow label into
//! the IPv6 header of every packet of a registered flow (or of a flow that
//! matches a local-port or cgroup rule). Everything else passes untouched;
//! the program never drops or redirects a packet.
//!
//! Headers are read with direct packet access (cheap); the label is written
//! with bpf_skb_store_bytes, so only marked packets pay for un-cloning the
//! skb (TCP's egress skbs are clones), not every packet as a direct write's
//! verifier prologue would make them.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{__sk_buff, TC_ACT_OK},
    helpers::bpf_skb_cgroup_id,
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use flowmark_common::{
    CACHE_SLOTS, CacheSlot, Config, FlowKey, FlowValue, HAS_CGROUP_RULES, HAS_PORT_RULES,
    LABEL_MASK, MAX_FLOWS, MAX_RULES, PORT_WORDS, RuleValue, cache_slot_of, counter, port_bit,
    rule_entropy, with_entropy,
};

#[map]
static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
/// Local (source) port, host byte order -> semantic label.
#[map]
static PORT_RULES: HashMap<u16, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);
/// cgroup v2 id of the sending socket -> semantic label.
#[map]
static CGROUP_RULES: HashMap<u64, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);
/// One entry (array lookups are inlined by the verifier: cheap).
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// Per-CPU copies of flow-map entries this CPU found, indexed by
/// `cache_slot`: a flow's later packets skip the hash of the 40-byte key
/// (see CacheSlot).
#[map]
static FLOW_CACHE: PerCpuArray<CacheSlot> = PerCpuArray::with_max_entries(CACHE_SLOTS, 0);
/// The remote-port filter in front of the flow map (see PORT_WORDS).
#[map]
static REMOTE_PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::NUM, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *slot += 1 };
    }
}

#[classifier]
pub fn flowmark_egress(ctx: TcContext) -> i32 {
    mark(&ctx);
    TC_ACT_OK
}

/// Does nothing: the baseline of `make bench-flowmark`, measured in the
/// same run as the real program.
#[classifier]
pub fn flowmark_baseline(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[inline(always)]
fn mark(ctx: &TcContext) {
    let data = ctx.data();
    let end = ctx.data_end();
    // Ethernet + IPv6 + the two port fields of TCP/UDP.
    if data + ETH_HLEN + IPV6_HLEN + 4 > end {
        if data + ETH_HLEN <= end {
            // SAFETY: bounds checked just above.
            let proto = u16::from_be(unsafe { *((data + 12) as *const u16) });
            count(match proto {
                ETH_P_IP => counter::IPV4,
                ETH_P_IPV6 => counter::TRUNCATED,
                _ => counter::OTHER,
            });
        } else {
            count(counter::TRUNCATED);
        }
        return;
    }
    // SAFETY (all raw reads below): data + 58 <= data_end was checked above.
    let ethertype = u16::from_be(unsafe { *((data + 12) as *const u16) });
    if ethertype != ETH_P_IPV6 {
        count(if ethertype == ETH_P_IP {
            counter::IPV4
        } else {
            counter::OTHER
        });
        return;
    }
    let ip = data + ETH_HLEN;
    let next = unsafe { *((ip + 6) as *const u8) };
    if next != IPPROTO_TCP && next != IPPROTO_UDP {
        count(counter::OTHER);
        return;
    }
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let dport_be = unsafe { *((ip + IPV6_HLEN + 2) as *const u16) };
    let (word, bit) = port_bit(dport_be);
    let flow = if REMOTE_PORTS.get(word).is_some_and(|w| w & bit != 0) {
        registered(ctx, ip, config.generation)
    } else {
        None
    };
    let rules = config.rules;
    let label = if let Some(label) = flow {
        count(counter::MARKED_FLOW);
        label
    } else if let Some(rule) = (rules & HAS_PORT_RULES != 0)
        .then(|| unsafe { PORT_RULES.get(&u16::from_be(*((ip + IPV6_HLEN) as *const u16))) })
        .flatten()
    {
        count(counter::MARKED_PORT);
        with_entropy(rule.semantic, rule_entropy(&key_at(ip)))
    } else if let Some(rule) = (rules & HAS_CGROUP_RULES != 0)
        .then(|| unsafe { CGROUP_RULES.get(&bpf_skb_cgroup_id(ctx.as_ptr() as *mut __sk_buff)) })
        .flatten()
    {
        count(counter::MARKED_CGROUP);
        with_entropy(rule.semantic, rule_entropy(&key_at(ip)))
    } else {
        count(counter::UNMARKED_V6);
        return;
    };
    let first = u32::from_be(unsafe { *(ip as *const u32) });
    let word = ((first & !LABEL_MASK) | label).to_be();
    if ctx.store(ETH_HLEN, &word, 0).is_err() {
        count(counter::STORE_FAILED);
    }
}

/// The flow key of the IPv6 packet at `ip` (TCP or UDP, 44 bytes checked).
/// Word loads (unaligned packet reads are fine for the verifier on this
/// architecture); see FlowKey for why not byte arrays.
#[inline(always)]
fn key_at(ip: usize) -> FlowKey {
    // SAFETY: the caller checked ip + 44 <= data_end.
    let word = |off: usize| unsafe { *((ip + off) as *const u32) };
    FlowKey {
        src: [word(8), word(12), word(16), word(20)],
        dst: [word(24), word(28), word(32), word(36)],
        sport_be: unsafe { *((ip + IPV6_HLEN) as *const u16) },
        dport_be: unsafe { *((ip + IPV6_HLEN + 2) as *const u16) },
        proto: unsafe { *((ip + 6) as *const u8) },
        _pad0: 0,
        _pad1: 0,
    }
}

/// The label of a registered flow: from this CPU's cache slot when it holds
/// the flow in the current generation, else from the flow map (and then
/// the slot takes the flow over). Counts the packet either way.
///
/// The cache check compares the slot with the packet directly, 8 bytes at
/// a time (the key's first 36 bytes are the packet's bytes 8..44 after the
/// IPv6 header start), and builds the key only for the flow-map lookup.
#[inline(always)]
fn registered(ctx: &TcContext, ip: usize, generation: u32) -> Option<u32> {
    // SAFETY (packet reads): the caller checked ip + 44 <= data_end.
    let p64 = |off: usize| unsafe { *((ip + off) as *const u64) };
    let p32 = |off: usize| unsafe { *((ip + off) as *const u32) };
    let proto = unsafe { *((ip + 6) as *const u8) };
    let ports = p32(IPV6_HLEN);
    let index = cache_slot_of(p32(20), p32(32), p32(36), ports.rotate_left(16));
    let slot = FLOW_CACHE.get_ptr_mut(index)?;
    let len = ctx.len() as u64;
    // SAFETY: `slot` points into this CPU's cache slot (8-aligned, the key
    // first): only this CPU touches it while we run; `flow` into a
    // flow-map value (plain adds, see FlowValue).
    unsafe {
        let k = slot as *const u64;
        if generation != 0
            && (*slot).generation == generation
            && *k == p64(8)
            && *k.add(1) == p64(16)
            && *k.add(2) == p64(24)
            && *k.add(3) == p64(32)
            && *(k.add(4) as *const u32) == ports
            && (*slot).key.proto == proto
        {
            (*slot).packets += 1;
            (*slot).bytes += len;
            return Some((*slot).label);
        }
        let key = key_at(ip);
        let flow = FLOWS.get_ptr_mut(&key)?;
        (*flow).packets += 1;
        (*flow).bytes += len;
        let label = (*flow).label & LABEL_MASK;
        if (*slot).packets != 0 {
            // Fold the slot's share into its flow before the slot moves on,
            // unless the flow's entry was written after the slot was filled
            // (the share belongs to the entry it replaced).
            let owner = if (*slot).key.same(&key) {
                Some(flow)
            } else {
                FLOWS.get_ptr_mut(&(*slot).key)
            };
            if let Some(owner) = owner
                && (*owner).version <= (*slot).generation
            {
                (*owner).packets += (*slot).packets;
                (*owner).bytes += (*slot).bytes;
            }
        }
        // Field by field: a struct assignment becomes memmove/memset
        // subprogram calls in BPF. The generation is the one read before
        // the flow-map lookup: a change that raced with it leaves the slot
        // stale, never wrong.
        let s = &mut *slot;
        s.key.src = [key.src[0], key.src[1], key.src[2], key.src[3]];
        s.key.dst = [key.dst[0], key.dst[1], key.dst[2], key.dst[3]];
        s.key.sport_be = key.sport_be;
        s.key.dport_be = key.dport_be;
        s.key.proto = key.proto;
        s.label = label;
        s.generation = generation;
        // Volatile: LLVM merges two zero stores into a memset call.
        core::ptr::write_volatile(&mut s.packets, 0);
        core::ptr::write_volatile(&mut s.bytes, 0);
        Some(label)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
