//! Listener-aware steering: a first hop with no listener for the VIP's
//! port (nginx stopped, crashed, restarting) sends new connections to the
//! bucket's fallback instead of letting its kernel refuse them, long before
//! a health check notices.
//!
//! - A SYN at the first hop looks up a listener (one `bpf_skc_lookup_tcp`,
//!   SYNs only). None: the SYN goes to the bucket's fallback (the owner
//!   once this node leaves the table, so the connection survives the
//!   failover), or to its second hop when it has no fallback; marked second
//!   hop, so at most two hops still holds. The VIP's `LBD_LISTENER` entry
//!   records it.
//! - While that entry says "steering", a later packet at the first hop
//!   that no local socket holds goes to the fallback as well: it belongs
//!   to a connection sent there. lbd clears
//!   the entry once the listener is back and the drain period has passed,
//!   so the steady state reads one array entry and looks nothing up.
//! - Quiesced by the operator (`lbd listener quiesce`, before nginx stops):
//!   SYNs are steered as if the listener were missing, with no lookup,
//!   while the old listener still holds its accept queue; packets of local
//!   connections (established, or a request socket finishing its
//!   handshake) find their socket and stay. lbd clears the flag on
//!   `lbd listener resume` or when a new listening socket appears.
//! - No fallback, or one without an underlay address: nothing changes (the
//!   kernel refuses, as without this module).
//! - Listener cache: a SYN whose lookup found a listener records the
//!   listening-socket generation it read before the lookup; later SYNs
//!   are kept without a lookup while no listening socket of the host has
//!   closed since (`listen_watch.rs` counts those). Only "present" is
//!   cached: a listener that appears fires its tracepoint before it is
//!   hashed, so a cached "absent" could outlive it.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use dataplane_common::{
    Bucket, LISTEN_GEN, LISTEN_GEN_ARMED, ListenerState, NO_HOP, counter::SYN_LISTENER_LOOKUP,
};

use crate::{
    maps::{self, LISTENER, NODES, count},
    types::{Flow, Kind},
};

/// What the listener lookup found for a SYN's tuple.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Nothing,
    /// A listening socket: what the cache remembers.
    Listener,
    /// Another socket (TIME_WAIT being reused, a request socket for a
    /// retransmitted SYN): kept, not cached.
    Socket,
}

/// The listening-socket generation, 1-based (0: the tracepoint program is
/// not attached, so nothing may be cached). Read before the lookup it
/// vouches for: a listener closing after this read bumps the generation,
/// and one closed before it is no longer in the lookup's tables.
#[inline(always)]
fn listen_generation() -> u64 {
    let (Some(armed), Some(generation)) = (
        maps::LISTEN_GEN.get_ptr(LISTEN_GEN_ARMED),
        maps::LISTEN_GEN.get_ptr(LISTEN_GEN),
    ) else {
        return 0;
    };
    unsafe {
        if core::ptr::read_volatile(armed) == 0 {
            return 0;
        }
        core::ptr::read_volatile(generation).wrapping_add(1)
    }
}

/// The SYN rule without quiesce: is a listener here (cached or looked up)?
#[inline(always)]
fn syn_has_listener(
    vip_index: u32,
    state: &mut ListenerState,
    listening: impl Fn() -> Found,
) -> bool {
    let generation = listen_generation();
    let found = if generation != 0 && state.listener_gen == generation {
        Found::Listener
    } else {
        count(vip_index, SYN_LISTENER_LOOKUP);
        let found = listening();
        if found == Found::Listener && state.listener_gen != generation {
            state.listener_gen = generation;
        }
        found
    };
    if found == Found::Nothing {
        return false;
    }
    if state.missing != 0 {
        state.missing = 0;
    }
    true
}

/// Where the first hop sends this packet instead of keeping it: a node id,
/// or NO_HOP to keep today's rule. `mine`: our table names this node as
/// the bucket's first hop (else a hop-1 packet arrived while tables
/// disagree, and a listener-less SYN goes where our table says).
/// `listening` runs the listener lookup (SYNs, unless cached), `local` the
/// socket lookup (only while steering).
#[inline(always)]
pub fn divert(
    flow: &Flow,
    bucket: &Bucket,
    mine: bool,
    listening: impl Fn() -> Found,
    local: impl Fn() -> bool,
) -> u16 {
    let Some(state) = LISTENER.get_ptr_mut(flow.vip.index) else {
        return NO_HOP;
    };
    let state = unsafe { &mut *state };
    let target = match flow.kind {
        Kind::Syn => {
            // Quiesced (the listener is about to close): steered as if it
            // were missing, without the lookup.
            if state.quiesced == 0 {
                if syn_has_listener(flow.vip.index, state, listening) {
                    return NO_HOP;
                }
                state.missing = 1;
            }
            state.steering = 1;
            state.last_missing_ns = unsafe { bpf_ktime_get_coarse_ns() };
            if !mine {
                // A hop-1 SYN while tables disagree: where our table says.
                bucket.first
            } else if bucket.fallback != NO_HOP {
                bucket.fallback
            } else {
                bucket.second
            }
        }
        // The fallback even when the bucket has a second hop: it is where
        // the SYNs went, and the owner of the bucket once this node leaves
        // the table (the second hop's drained connections are the price,
        // docs/dataplane.md).
        Kind::Tcp { .. } if mine && state.steering != 0 && bucket.fallback != NO_HOP => {
            if local() {
                return NO_HOP;
            }
            bucket.fallback
        }
        _ => return NO_HOP,
    };
    if target == NO_HOP {
        return NO_HOP;
    }
    // A fallback without an underlay address (removed meanwhile): keep
    // today's behaviour rather than drop.
    match NODES.get(target as u32) {
        Some(n) if n.family != 0 => target,
        _ => NO_HOP,
    }
}
