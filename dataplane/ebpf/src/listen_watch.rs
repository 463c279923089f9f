//! `lbd_listen_close`, on the `sock/inet_sock_set_state` tracepoint: counts
//! the host's listening TCP sockets that close, so the XDP program can
//! trust "a listener was found for this VIP port" until one does
//! (`listener.rs`, docs/dataplane.md "Listener cache").
//!
//! The tracepoint fires from `inet_sk_state_store`, which `tcp_set_state`
//! calls after `sk->sk_prot->unhash(sk)`: once the generation is bumped, a
//! lookup that starts then no longer finds the closed listener. It sees
//! every network namespace of the host; no filter, since a close elsewhere
//! only costs the XDP program one lookup more.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use dataplane_common::LISTEN_GEN;

use crate::maps;

/// Offsets of `oldstate` (int) and `protocol` (__u16) in the tracepoint's
/// record. lbd reads them from the tracepoint's format file and sets them
/// at load time; these defaults are Linux 4.16..6.x's.
#[unsafe(no_mangle)]
static LISTEN_OLDSTATE_OFF: u32 = 16;
#[unsafe(no_mangle)]
static LISTEN_PROTOCOL_OFF: u32 = 30;

const TCP_LISTEN: i32 = 10;
const IPPROTO_TCP: u16 = 6;

#[tracepoint]
pub fn lbd_listen_close(ctx: TracePointContext) -> u32 {
    // Globals read through volatile loads: the loader's values, not the
    // compiler's defaults. A record that cannot be read counts as a close
    // (one lookup more, never a stale "present").
    let old_off = unsafe { core::ptr::read_volatile(&LISTEN_OLDSTATE_OFF) } as usize;
    if let Ok(old) = unsafe { ctx.read_at::<i32>(old_off) }
        && old != TCP_LISTEN
    {
        return 0;
    }
    let proto_off = unsafe { core::ptr::read_volatile(&LISTEN_PROTOCOL_OFF) } as usize;
    if let Ok(proto) = unsafe { ctx.read_at::<u16>(proto_off) }
        && proto != IPPROTO_TCP
    {
        return 0;
    }
    if let Some(generation) = maps::LISTEN_GEN.get_ptr_mut(LISTEN_GEN) {
        // An atomic add (BPF_ATOMIC): CPUs closing listeners at once all
        // count. (core's AtomicU64 has no fetch_add on this target.)
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(generation, 1) };
    }
    0
}
