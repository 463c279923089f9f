//! The forwarding rule: who owns this flow, and may this node keep it?
//!
//! - Ingress packet, first hop elsewhere: send it to the first hop.
//! - At the first hop: keep it if it opens a flow (SYN, UDP), if a local
//!   socket knows the flow, or if the bucket has no second hop; otherwise send
//!   it on to the second hop (daisy chaining). The socket lookup runs only
//!   when the bucket has a second hop, so the steady state stays cheap.
//! - A packet marked second hop is always kept: at most two hops.
//! - A first-hop packet arriving at a node whose table names another first
//!   hop (tables mid-update) goes there, marked second hop, unless a local
//!   socket holds it.
use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple, xdp_action, xdp_md},
    helpers::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_check_syncookie},
    programs::XdpContext,
};
use dataplane_common::{
    Bucket, Config, FAMILY_V4, HOP_FIRST, HOP_SECOND, MAX_TABLE_SIZE, MAX_VIPS, NO_HOP,
    SLOTS_PER_VIP, bucket_index,
    counter::{
        DECAP, DROP_NO_NODE, FWD_FIRST_HOP, FWD_SECOND_HOP, ICMP_TO_OWNER, PASS_LOCAL,
        SYN_TO_FALLBACK,
    },
};

use crate::{
    encap::forward,
    listener::{self, Found},
    maps::{BUCKETS, FLOW, count, count_global},
    packet::{TCP_LEN, ld32},
    types::{Flow, Kind},
};

const TCP_LISTEN: u32 = 10;

#[inline(always)]
fn bucket_of(flow: &Flow) -> Option<Bucket> {
    let vip = &flow.vip;
    if vip.index >= MAX_VIPS || vip.table_size == 0 || vip.table_size > MAX_TABLE_SIZE {
        return None;
    }
    let slot = vip.index * SLOTS_PER_VIP + (vip.active_slot & 1);
    let pos = slot * MAX_TABLE_SIZE + bucket_index(flow.hash, vip.table_size);
    BUCKETS.get(pos).copied()
}

/// Decides and acts. `hop_in` is 0 for a packet straight from the router,
/// else the hop marker of the encapsulation it arrived in.
#[inline(never)]
pub fn steer(raw: *mut xdp_md, cfg: &Config, hop_in: u8) -> u32 {
    let ctx = &XdpContext::new(raw);
    let Some(flow) = FLOW.get_ptr(0) else {
        return xdp_action::XDP_PASS;
    };
    let flow = unsafe { &*flow };
    let idx = flow.vip.index;
    if hop_in != 0 {
        count(idx, DECAP);
    }
    let Some(bucket) = bucket_of(flow) else {
        count_global(DROP_NO_NODE);
        return xdp_action::XDP_DROP;
    };
    if hop_in == 0 {
        if flow.kind == Kind::Icmp {
            count(idx, ICMP_TO_OWNER);
        }
        if bucket.first != cfg.self_id {
            return send(ctx, cfg, flow, bucket.first, HOP_FIRST, FWD_FIRST_HOP);
        }
    }
    if hop_in == HOP_SECOND {
        count(idx, PASS_LOCAL);
        return xdp_action::XDP_PASS;
    }
    // The first hop by our table, with no listener: new connections (and
    // what belongs to them) go to the fallback (listener.rs).
    let mine = bucket.first == cfg.self_id;
    if !mine || bucket.fallback != NO_HOP || bucket.second != NO_HOP {
        let to = listener::divert(
            flow,
            &bucket,
            mine,
            || listening(ctx, flow),
            || has_local_socket(ctx, flow),
        );
        if to != NO_HOP {
            let what = if flow.kind == Kind::Syn {
                SYN_TO_FALLBACK
            } else {
                FWD_SECOND_HOP
            };
            return send(ctx, cfg, flow, to, HOP_SECOND, what);
        }
    }
    // We are the first hop. Normally our table agrees and the candidate is
    // the bucket's second hop. While a table update is being rolled out the
    // sender may have had a newer or older table than ours: then our own
    // first hop is where the connection most likely lives.
    let next = if bucket.first != cfg.self_id {
        bucket.first
    } else {
        bucket.second
    };
    let keep = next == NO_HOP
        || next == cfg.self_id
        || matches!(flow.kind, Kind::Syn | Kind::Udp)
        || has_local_socket(ctx, flow);
    if keep {
        count(idx, PASS_LOCAL);
        return xdp_action::XDP_PASS;
    }
    send(ctx, cfg, flow, next, HOP_SECOND, FWD_SECOND_HOP)
}

#[inline(always)]
fn send(ctx: &XdpContext, cfg: &Config, flow: &Flow, node: u16, hop: u8, what: u32) -> u32 {
    let action = forward(ctx.ctx, cfg, flow, node, hop);
    if action != xdp_action::XDP_DROP {
        count(flow.vip.index, what);
    }
    action
}

/// Does a local socket hold this flow? (See docs/dataplane.md: a listener
/// only counts when the packet completes a valid SYN-cookie handshake.)
#[inline(always)]
fn has_local_socket(ctx: &XdpContext, flow: &Flow) -> bool {
    if flow.kind == Kind::Udp {
        return true;
    }
    let sk = lookup_tcp(ctx, flow);
    if sk.is_null() {
        return false;
    }
    let state = unsafe { (*sk).state };
    let local = if state != TCP_LISTEN {
        true
    } else if let Kind::Tcp { cookie_ack: true } = flow.kind {
        syncookie_valid(ctx, flow, sk)
    } else {
        false
    };
    unsafe { bpf_sk_release(sk as *mut _) };
    local
}

/// Is anything listening (or connected) for this SYN's tuple?
#[inline(always)]
fn listening(ctx: &XdpContext, flow: &Flow) -> Found {
    let sk = lookup_tcp(ctx, flow);
    if sk.is_null() {
        return Found::Nothing;
    }
    let found = if unsafe { (*sk).state } == TCP_LISTEN {
        Found::Listener
    } else {
        Found::Socket
    };
    unsafe { bpf_sk_release(sk as *mut _) };
    found
}

/// The kernel's receive-side lookup for the flow's tuple (client -> VIP):
/// established (request and TIME_WAIT sockets included), then a listener.
/// A non-NULL result must be released.
#[inline(always)]
fn lookup_tcp(ctx: &XdpContext, flow: &Flow) -> *mut bpf_sock {
    // Only the `size` bytes the helper reads are written, a word at a time
    // (zeroing the whole tuple first was a 36-byte memset loop).
    let mut tuple = core::mem::MaybeUninit::<bpf_sock_tuple>::uninit();
    let t = tuple.as_mut_ptr() as *mut u32;
    let (sp, dp) = (flow.sport, flow.dport);
    let ports = u32::from_ne_bytes([sp[0], sp[1], dp[0], dp[1]]);
    let size = if flow.family == FAMILY_V4 {
        unsafe {
            t.write(ld32(&flow.saddr, 0));
            t.add(1).write(ld32(&flow.daddr, 0));
            t.add(2).write(ports);
        }
        12
    } else {
        let mut i = 0;
        while i < 4 {
            unsafe {
                t.add(i).write(ld32(&flow.saddr, 4 * i));
                t.add(4 + i).write(ld32(&flow.daddr, 4 * i));
            }
            i += 1;
        }
        unsafe { t.add(8).write(ports) };
        36
    };
    unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut _,
            tuple.as_mut_ptr(),
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    }
}

#[inline(always)]
fn syncookie_valid(ctx: &XdpContext, flow: &Flow, sk: *mut bpf_sock) -> bool {
    // The helper reads the whole IP header: the verifier wants its length
    // constant, so handle the two common lengths (IPv4 without options,
    // IPv6). A cookie ACK with IPv4 options counts as "not local".
    if flow.ihl == 20 {
        cookie_check::<20>(ctx, flow, sk)
    } else if flow.ihl == 40 {
        cookie_check::<40>(ctx, flow, sk)
    } else {
        false
    }
}

#[inline(always)]
fn cookie_check<const IHL: usize>(ctx: &XdpContext, flow: &Flow, sk: *mut bpf_sock) -> bool {
    if flow.l3_off > 18 {
        return false;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    let iph = start + flow.l3_off;
    let th = iph + IHL;
    if th + TCP_LEN > end {
        return false;
    }
    unsafe {
        bpf_tcp_check_syncookie(
            sk as *mut _,
            iph as *mut _,
            IHL as u32,
            th as *mut _,
            TCP_LEN as u32,
        ) == 0
    }
}
