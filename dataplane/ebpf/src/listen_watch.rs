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
use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use dataplane_common::{LISTEN_GEN, LISTEN_RECORD_OLDSTATE, LISTEN_RECORD_PROTOCOL};

use crate::maps;

const TCP_LISTEN: i32 = 10;
const IPPROTO_TCP: u16 = 6;

#[tracepoint]
pub fn lbd_listen_close(ctx: TracePointContext) -> u32 {
    // Direct reads at constant offsets (the verifier wants them in the
    // instruction; a helper call per event would cost more than the rest):
    // lbd attaches this program only where the kernel's format file puts
    // the fields there.
    let record = ctx.as_ptr() as *const u8;
    let old = unsafe { *(record.add(LISTEN_RECORD_OLDSTATE) as *const i32) };
    if old != TCP_LISTEN {
        return 0;
    }
    let proto = unsafe { *(record.add(LISTEN_RECORD_PROTOCOL) as *const u16) };
    if proto != IPPROTO_TCP {
        return 0;
    }
    if let Some(generation) = maps::LISTEN_GEN.get_ptr_mut(LISTEN_GEN) {
        // An atomic add (BPF_ATOMIC): CPUs closing listeners at once all
        // count. (core's AtomicU64 has no fetch_add on this target.)
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(generation, 1) };
    }
    0
}
