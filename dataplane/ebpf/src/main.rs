//! lbd's kernel-side programs.
//!
//! - `lbd_xdp`: the forwarder on each node's uplink (classify, steer,
//!   encapsulate/decapsulate).
//! - `lbd_mss_clamp`: tc egress, clamps the MSS option of SYN-ACKs leaving
//!   from a VIP so clients' full-size segments still fit once encapsulated.
//! - `lbd_listen_close`: on the `sock/inet_sock_set_state` tracepoint,
//!   counts closed listening sockets for the XDP program's listener cache.
//! - `lbd_pass`, `lbd_tx`: trivial programs. veth delivers XDP_TX/redirected
//!   frames only if the peer end has an XDP program too (labs attach
//!   `lbd_pass` there); `lbd_tx` is the benchmark's baseline.
//!
//! Module graph (no circles): `packet` and `types` are leaves; `maps`
//! declares the maps over them; `verdict` encodes a classifier's answer;
//! `classify`, `encap`, `listener`, `steer` and `mss` use those (`steer`
//! asks `listener` where a first hop without a listener sends a flow). Where a packet is
//! decided: `lbd_xdp` below (classify, then steer or decapsulate).
//!
//! The verdict encoding. The classifiers are BPF subprograms (own stack
//! frame, so their frames do not add up against the 512-byte limit) and
//! return a plain u32, not the [`types::Parsed`] enum: an enum carrying
//! data would be returned through memory that the verifier and LLVM
//! disagree about. So a verdict is `KIND | counter`: the kind (`PASS`,
//! `DROP`, `DECAP`, `STEER`, see `verdict.rs`) in bits 8..16, the counter
//! to bump (for PASS and DROP) in bits 0..8. What does not fit in a u32
//! travels in the per-CPU `LBD_FLOW` scratch map (one entry, too big for
//! the stack): a STEER verdict means "the flow is described in FLOW", a
//! DECAP verdict leaves the hop, outer length and inner ethertype there.
//! `verdict::decode` turns the u32 back into a `Parsed` for the caller.
#![no_std]
#![no_main]
// atomic_xadd for the listener watch's counter (listen_watch.rs).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod classify;
mod encap;
mod listen_watch;
mod listener;
mod maps;
mod mss;
mod packet;
mod steer;
mod types;
mod verdict;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use dataplane_common::counter::{DROP_DECAP_NOT_VIP, DROP_ENCAP};

use classify::{classify_inner, classify_outer};
use maps::{CONFIG, count_global};
use packet::*;
use types::Parsed;
use verdict::decode;

#[xdp]
pub fn lbd_xdp(ctx: XdpContext) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    if cfg.self_id == 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(eth) = bytes::<ETH_LEN>(&ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    let mut ethertype = be16(eth, 12);
    let mut l2_len = ETH_LEN;
    if ethertype == ETH_P_8021Q {
        let Some(tag) = bytes::<VLAN_LEN>(&ctx, ETH_LEN) else {
            return xdp_action::XDP_PASS;
        };
        ethertype = be16(tag, 2);
        l2_len += VLAN_LEN;
    }
    match decode(classify_outer(ctx.ctx, cfg, l2_len, ethertype)) {
        Parsed::Pass(c) => {
            count_global(c);
            xdp_action::XDP_PASS
        }
        Parsed::Drop(c) => {
            count_global(c);
            xdp_action::XDP_DROP
        }
        Parsed::Steer => steer::steer(ctx.ctx, cfg, 0),
        Parsed::Decap {
            hop,
            outer_len,
            inner_proto,
        } => {
            if !encap::decap(&ctx, l2_len, outer_len, inner_proto) {
                count_global(DROP_ENCAP);
                return xdp_action::XDP_DROP;
            }
            match decode(classify_inner(ctx.ctx, cfg, l2_len, inner_proto)) {
                Parsed::Steer => steer::steer(ctx.ctx, cfg, hop),
                Parsed::Drop(c) => {
                    count_global(c);
                    xdp_action::XDP_DROP
                }
                // A member's tunnel carries VIP flows only: anything else
                // (not VIP, a fragment) is dropped, never handed to a
                // kernel that forwards.
                _ => {
                    count_global(DROP_DECAP_NOT_VIP);
                    xdp_action::XDP_DROP
                }
            }
        }
    }
}

#[classifier]
pub fn lbd_mss_clamp(ctx: TcContext) -> i32 {
    mss::clamp(&ctx);
    // Never drops: clamping is best effort, the packet always leaves.
    // TCX_NEXT, not TC_ACT_OK: under TCX an OK verdict ends egress
    // processing, so the node's other tc programs (flowmark's SciTag
    // marker on clsact) would never see the packet.
    aya_ebpf::bindings::tcx_action_base::TCX_NEXT
}

#[xdp]
pub fn lbd_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn lbd_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
