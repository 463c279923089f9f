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
    FlowKey, FlowValue, HAS_CGROUP_RULES, HAS_PORT_RULES, LABEL_MASK, MAX_FLOWS, MAX_RULES,
    RuleValue, counter, rule_entropy, with_entropy,
};

#[map]
static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);
/// Local (source) port, host byte order -> semantic label.
#[map]
static PORT_RULES: HashMap<u16, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);
/// cgroup v2 id of the sending socket -> semantic label.
#[map]
static CGROUP_RULES: HashMap<u64, RuleValue> = HashMap::with_max_entries(MAX_RULES, 0);
/// Entry 0: HAS_* bits (array lookups are inlined by the verifier: cheap).
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(1, 0);
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
    // Word loads (unaligned packet reads are fine for the verifier on this
    // architecture); see FlowKey for why not byte arrays.
    let word = |off: usize| unsafe { *((ip + off) as *const u32) };
    let key = FlowKey {
        src: [word(8), word(12), word(16), word(20)],
        dst: [word(24), word(28), word(32), word(36)],
        sport_be: unsafe { *((ip + IPV6_HLEN) as *const u16) },
        dport_be: unsafe { *((ip + IPV6_HLEN + 2) as *const u16) },
        proto: next,
        _pad0: 0,
        _pad1: 0,
    };
    let rules = CONFIG.get(0).copied().unwrap_or(0);
    let label = if let Some(flow) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: a pointer into the map value; plain adds (see FlowValue).
        unsafe {
            (*flow).packets += 1;
            (*flow).bytes += ctx.len() as u64;
            count(counter::MARKED_FLOW);
            (*flow).label & LABEL_MASK
        }
    } else if let Some(rule) = (rules & HAS_PORT_RULES != 0)
        .then(|| unsafe { PORT_RULES.get(&u16::from_be(key.sport_be)) })
        .flatten()
    {
        count(counter::MARKED_PORT);
        with_entropy(rule.semantic, rule_entropy(&key))
    } else if let Some(rule) = (rules & HAS_CGROUP_RULES != 0)
        .then(|| unsafe { CGROUP_RULES.get(&bpf_skb_cgroup_id(ctx.as_ptr() as *mut __sk_buff)) })
        .flatten()
    {
        count(counter::MARKED_CGROUP);
        with_entropy(rule.semantic, rule_entropy(&key))
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
