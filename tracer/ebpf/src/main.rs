//! lbd-trace's kernel-side programs. One object, loaded by the `lbd-trace`
//! binary, which attaches only the programs a command needs:
//! - `profile`: perf-event (cpu-clock) sampler counting (task, stacks).
//! - `offcpu`: `sched:sched_switch` tracepoint, time between a task being
//!   switched out and back in, charged to the stacks it blocked with.
//! - `lat_*`: entry/exit pairs (uprobe/uretprobe, fentry/fexit, syscall
//!   tracepoints) feeding a log2 latency histogram.
//!
//! All filtering (PID/TID, command name, cgroup) happens here, so unwanted
//! tasks cost one map lookup and never reach userspace.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_get_stack, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_task_pt_regs, generated::bpf_probe_read_user,
    },
    macros::{fentry, fexit, map, perf_event, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        FEntryContext, FExitContext, PerfEventContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
};
use tracer_common::{
    COMM_LEN, Config, EV_EXIT, EV_NEW_PROC, EV_SAMPLE, EventHeader, F_FILTER_CGROUP, F_FILTER_COMM,
    F_FILTER_TASK, F_INCLUDE_IDLE, F_INCLUDE_PREEMPTED, F_KERNEL_STACKS, F_PROC_EVENTS,
    F_UNWIND_DWARF_ALL, F_UNWIND_DWARF_LISTED, F_USER_STACKS, LAT_BUCKETS, MAX_COUNTS, MAX_DEPTH,
    MAX_FILTER_IDS, MAX_STACKS, OffStart, PAGE, STACK_WINDOW_MAX, STAT_DWARF_SAMPLES,
    STAT_LAT_SUM_NS, STAT_LAT_UNMATCHED, STAT_LOST_COUNT, STAT_LOST_RINGBUF, STAT_LOST_STACK,
    STAT_SAMPLES, STAT_SLOTS, STAT_STACK_BYTES, Stack, StackKey, USTACK_USERSPACE, UserSample,
    UserSampleHeader,
};

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_IDS, 0);
#[map]
static TIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_IDS, 0);
/// Stacks by content hash. Not a STACK_TRACE map: that one is a table of
/// buckets indexed by hash with no chaining, so two different stacks that
/// share a bucket drop a sample (-EEXIST) long before it is full; measured on
/// a busy machine, 23% of samples were lost that way. A hash map keyed by a
/// 64-bit content hash has no such collisions. Preallocated: allocating on
/// use fails in sched_switch (runqueue lock held) when the per-CPU free list
/// is empty, which lost stacks in the off-CPU test.
#[map]
static STACKS: HashMap<u64, Stack> = HashMap::with_max_entries(MAX_STACKS, 0);
/// Scratch space for one stack (too big for the 512-byte BPF stack).
#[map]
static SCRATCH: PerCpuArray<Stack> = PerCpuArray::with_max_entries(1, 0);
#[map]
static COUNTS: HashMap<StackKey, u64> = HashMap::with_max_entries(MAX_COUNTS, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);
#[map]
static OFF_START: LruHashMap<u32, OffStart> = LruHashMap::with_max_entries(65536, 0);
#[map]
static LAT_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);
/// Samples in DWARF mode and process events, to userspace. 16 MiB holds
/// about a second of 999 Hz samples with 8 KiB windows on 2 CPUs; userspace
/// empties it every 50 ms.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);
/// Processes whose user stacks are copied for DWARF unwinding (the automatic
/// per-binary choice, written by userspace).
#[map]
static DWARF_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(4 * MAX_FILTER_IDS, 0);
/// Processes already announced to userspace (EV_NEW_PROC).
#[map]
static SEEN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);
/// Scratch for one DWARF-mode sample per CPU, indexed by CPU number (too big
/// for a per-CPU array, whose values are limited to 32 KiB). Userspace sizes
/// it to the number of possible CPUs at load time.
#[map]
static USCRATCH: Array<UserSample> = Array::with_max_entries(1, 0);
/// Per-CPU sequence for off-CPU sample ids.
#[map]
static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
static LAT_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LAT_BUCKETS, 0);

#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
fn bump(slot: u32, by: u64) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += by };
    }
}

/// Does the current task pass the filters?
#[inline(always)]
fn wanted(cfg: &Config, tgid: u32, tid: u32) -> bool {
    if (tid == 0 && cfg.flags & F_INCLUDE_IDLE == 0) || tgid == cfg.self_tgid {
        return false;
    }
    if cfg.flags & F_FILTER_TASK != 0 {
        // SAFETY: read-only lookups of plain bytes.
        let hit = unsafe { PIDS.get(&tgid).is_some() || TIDS.get(&tid).is_some() };
        if !hit {
            return false;
        }
    }
    if cfg.flags & F_FILTER_COMM != 0 {
        let Ok(comm) = bpf_get_current_comm() else {
            return false;
        };
        let mut i = 0;
        while i < COMM_LEN {
            if comm[i] != cfg.comm[i] {
                return false;
            }
            if comm[i] == 0 {
                break;
            }
            i += 1;
        }
    }
    if cfg.flags & F_FILTER_CGROUP != 0 {
        // SAFETY: helper without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(cfg.cgroup_level as i32) };
        if id != cfg.cgroup_id {
            return false;
        }
    }
    true
}

/// Copies one stack of the current task into the stacks map and returns its
/// hash (0: no stack of that kind, or it could not be stored).
#[inline(always)]
fn stack<C: EbpfContext>(ctx: &C, flags: u64) -> u64 {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `buf` is this CPU's scratch slot, sized for MAX_DEPTH frames.
    let buf = unsafe { &mut *buf };
    let size = (MAX_DEPTH * 8) as u32;
    // SAFETY: the helper writes at most `size` bytes into `buf.ips`.
    let n = unsafe { bpf_get_stack(ctx.as_ptr(), buf.ips.as_mut_ptr().cast(), size, flags) };
    if n <= 0 {
        // No stack of that kind (e.g. no kernel stack for a user-mode sample).
        return 0;
    }
    let len = (n as usize / 8).min(MAX_DEPTH);
    buf.len = len as u64;
    // FNV-1a over the frames.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ len as u64;
    let mut i = 0;
    while i < MAX_DEPTH {
        if i >= len {
            break;
        }
        h = (h ^ buf.ips[i]).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    if h == 0 {
        h = 1;
    }
    // SAFETY: read-only probe of the map.
    if unsafe { STACKS.get(&h) }.is_none() && STACKS.insert(&h, buf, BPF_NOEXIST as u64).is_err() {
        // Full (or another CPU stored the same stack just now).
        // SAFETY: as above.
        if unsafe { STACKS.get(&h) }.is_none() {
            bump(STAT_LOST_STACK, 1);
            return 0;
        }
    }
    h
}

/// Hashes of the current task's stacks, as configured.
#[inline(always)]
fn stacks<C: EbpfContext>(ctx: &C, cfg: &Config) -> (u64, u64) {
    let k = if cfg.flags & F_KERNEL_STACKS != 0 {
        stack(ctx, 0)
    } else {
        0
    };
    let u = if cfg.flags & F_USER_STACKS != 0 {
        stack(ctx, BPF_F_USER_STACK as u64)
    } else {
        0
    };
    (k, u)
}

/// Tells userspace the first time a process is sampled, so it can snapshot
/// its mappings while it lives (instead of scanning the counts map).
#[inline(always)]
fn announce(cfg: &Config, tgid: u32) {
    if cfg.flags & F_PROC_EVENTS == 0 {
        return;
    }
    // SAFETY: read-only probe of the map.
    if unsafe { SEEN.get(&tgid) }.is_some() {
        return;
    }
    if SEEN.insert(&tgid, &1, BPF_NOEXIST as u64).is_ok() {
        let ev = EventHeader {
            kind: EV_NEW_PROC,
            tgid,
        };
        let _ = EVENTS.output(&ev, BPF_RB_FORCE_WAKEUP as u64);
    }
}

/// Is this process's user stack copied for DWARF unwinding?
#[inline(always)]
fn dwarf_mode(cfg: &Config, tgid: u32) -> bool {
    cfg.flags & F_USER_STACKS != 0
        && (cfg.flags & F_UNWIND_DWARF_ALL != 0
            // SAFETY: read-only probe of the map.
            || (cfg.flags & F_UNWIND_DWARF_LISTED != 0 && unsafe { DWARF_PIDS.get(&tgid) }.is_some()))
}

/// Copies the task's user registers and up to `stack_window` bytes of its
/// user stack into the ring buffer. Returns false (nothing sent) for a task
/// without user context or when the ring buffer is full.
#[inline(always)]
fn user_sample(cfg: &Config, tgid: u32, tid: u32, kstack: u64, value: u64, id: u64) -> bool {
    // SAFETY: helper without arguments; runs with preemption off.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(buf) = USCRATCH.get_ptr_mut(cpu) else {
        return false;
    };
    // SAFETY: this CPU's slot; the program does not nest on one CPU.
    let buf = unsafe { &mut *buf };
    // The user registers saved on entry to the kernel (interrupt or
    // syscall); for a task interrupted in user mode these are the
    // interrupted ones.
    // SAFETY: the helpers take the current task's BTF pointer.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    // SAFETY: probe read of kernel memory, failure is handled.
    let Ok(regs) = (unsafe { bpf_probe_read_kernel(regs) }) else {
        return false;
    };
    // Kernel threads have no user context (CPL 3 = user mode).
    if regs.cs & 3 != 3 {
        return false;
    }
    let sp = regs.rsp;
    let window = (cfg.stack_window as usize).min(STACK_WINDOW_MAX);
    // Page by page: one read across the end of the stack mapping would fail
    // whole, so the copy stops at the first page that cannot be read.
    let mut off: usize = 0;
    let mut i = 0;
    while i < STACK_WINDOW_MAX / PAGE + 1 {
        i += 1;
        if off >= window || off >= STACK_WINDOW_MAX {
            break;
        }
        let addr = sp.wrapping_add(off as u64);
        let mut chunk = PAGE - (addr as usize & (PAGE - 1));
        if chunk > window - off {
            chunk = window - off;
        }
        if chunk == 0 || chunk > PAGE {
            break;
        }
        // SAFETY: `off < STACK_WINDOW_MAX` and `chunk <= PAGE`, inside the
        // stack area (which has a page of slack).
        let r = unsafe {
            bpf_probe_read_user(
                buf.stack.as_mut_ptr().add(off).cast(),
                chunk as u32,
                addr as *const _,
            )
        };
        if r != 0 {
            break;
        }
        off += chunk;
    }
    buf.hdr = UserSampleHeader {
        ev: EventHeader {
            kind: EV_SAMPLE,
            tgid,
        },
        pid: tid,
        _pad: 0,
        kstack,
        value,
        id,
        ip: regs.rip,
        sp,
        bp: regs.rbp,
        len: off as u64,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    };
    let size = core::mem::size_of::<UserSampleHeader>() + off;
    if size > core::mem::size_of::<UserSample>() {
        return false;
    }
    // SAFETY: `size` bytes of `buf`, bounded just above.
    let bytes =
        unsafe { core::slice::from_raw_parts((buf as *const UserSample).cast::<u8>(), size) };
    // No wake-up per sample: userspace reads the ring every 50 ms.
    if EVENTS.output(bytes, BPF_RB_NO_WAKEUP as u64).is_err() {
        bump(STAT_LOST_RINGBUF, 1);
        return false;
    }
    bump(STAT_DWARF_SAMPLES, 1);
    bump(STAT_STACK_BYTES, off as u64);
    true
}

/// A unique id for an off-CPU DWARF sample (the key its blocked time is
/// counted under in COUNTS until userspace has unwound it).
#[inline(always)]
fn next_id() -> u64 {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let n = match SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    };
    USTACK_USERSPACE | (cpu << 48) | (n & ((1 << 48) - 1))
}

#[inline(always)]
fn kernel_stack<C: EbpfContext>(ctx: &C, cfg: &Config) -> u64 {
    if cfg.flags & F_KERNEL_STACKS != 0 {
        stack(ctx, 0)
    } else {
        0
    }
}

#[inline(always)]
fn current_key<C: EbpfContext>(ctx: &C, cfg: &Config, tgid: u32, tid: u32) -> StackKey {
    let (kstack, ustack) = stacks(ctx, cfg);
    StackKey {
        tgid,
        pid: tid,
        kstack,
        ustack,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

#[inline(always)]
fn add_count(key: &StackKey, by: u64) {
    if let Some(p) = COUNTS.get_ptr_mut(key) {
        // SAFETY: a hash-map value. The key holds the thread id and a thread
        // runs on one CPU at a time, so no two CPUs update one key at once.
        unsafe { *p += by };
    } else if COUNTS.insert(key, &by, BPF_NOEXIST as u64).is_err() {
        // Either another CPU inserted it first (retry once) or the map is full.
        match COUNTS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(p) => unsafe { *p += by },
            None => bump(STAT_LOST_COUNT, 1),
        }
    }
}

#[perf_event]
pub fn profile(ctx: PerfEventContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    if !wanted(cfg, tgid, tid) {
        return 0;
    }
    bump(STAT_SAMPLES, 1);
    announce(cfg, tgid);
    if dwarf_mode(cfg, tgid) {
        let kstack = kernel_stack(&ctx, cfg);
        if user_sample(cfg, tgid, tid, kstack, 1, 0) {
            return 0;
        }
    }
    let key = current_key(&ctx, cfg, tgid, tid);
    add_count(&key, 1);
    0
}

#[tracepoint]
pub fn offcpu(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    // SAFETY: offsets come from the tracepoint's own format file.
    let now = unsafe { bpf_ktime_get_ns() };
    // Switch-out: `current` is still `prev`, so its stacks and cgroup are
    // the ones the task blocks with.
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    let state: i64 = unsafe { ctx.read_at(cfg.off_prev_state as usize) }.unwrap_or(0);
    // Low byte = TASK_REPORT states (S, D, T, t, X, Z, P, I); 0 = runnable,
    // 0x100 (TASK_REPORT_MAX) = preempted.
    let blocked = state & 0xff != 0;
    if (blocked || cfg.flags & F_INCLUDE_PREEMPTED != 0) && wanted(cfg, tgid, tid) {
        announce(cfg, tgid);
        let mut key = None;
        if dwarf_mode(cfg, tgid) {
            let kstack = kernel_stack(&ctx, cfg);
            let id = next_id();
            if user_sample(cfg, tgid, tid, kstack, 0, id) {
                key = Some(StackKey {
                    tgid,
                    pid: tid,
                    kstack,
                    ustack: id,
                    comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
                });
            }
        }
        let key = match key {
            Some(k) => k,
            None => current_key(&ctx, cfg, tgid, tid),
        };
        let start = OffStart { ts_ns: now, key };
        if OFF_START.insert(&tid, &start, 0).is_err() {
            bump(STAT_LOST_COUNT, 1);
        }
    }
    // Switch-in of `next`: charge its blocked time to the stacks it left with.
    let next: i32 = unsafe { ctx.read_at(cfg.off_next_pid as usize) }.unwrap_or(0);
    if next <= 0 {
        return 0;
    }
    let next = next as u32;
    // SAFETY: the entry is copied out before removal.
    let Some(start) = (unsafe { OFF_START.get(&next) }).copied() else {
        return 0;
    };
    let _ = OFF_START.remove(&next);
    let delta = now.saturating_sub(start.ts_ns);
    if delta < cfg.min_block_ns || delta > cfg.max_block_ns {
        return 0;
    }
    bump(STAT_SAMPLES, 1);
    add_count(&start.key, delta);
    0
}

/// `sched:sched_process_exec`: the process has a new image; forget it was
/// announced so its next sample makes userspace snapshot it again.
#[tracepoint]
pub fn proc_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = SEEN.remove(&tgid);
    0
}

/// `sched:sched_process_exit`: a process's main thread (or a traced thread)
/// exits; userspace ends a capture whose targets are all gone.
#[tracepoint]
pub fn proc_exit(_ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let id = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((id >> 32) as u32, id as u32);
    let leader = tgid == tid;
    let announced = leader && SEEN.remove(&tgid).is_ok();
    // SAFETY: read-only lookup.
    let target = cfg.flags & F_FILTER_TASK != 0
        && ((leader && unsafe { PIDS.get(&tgid) }.is_some())
            || unsafe { TIDS.get(&tid) }.is_some());
    if announced || target {
        let ev = EventHeader {
            kind: EV_EXIT,
            tgid: tid,
        };
        let _ = EVENTS.output(&ev, BPF_RB_FORCE_WAKEUP as u64);
    }
    0
}

#[inline(always)]
fn lat_enter() {
    let Some(cfg) = config() else { return };
    let id = bpf_get_current_pid_tgid();
    if !wanted(cfg, (id >> 32) as u32, id as u32) {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = LAT_START.insert(&id, &now, 0);
}

#[inline(always)]
fn lat_exit() {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before removal.
    let Some(start) = (unsafe { LAT_START.get(&id) }).copied() else {
        bump(STAT_LAT_UNMATCHED, 1);
        return;
    };
    let _ = LAT_START.remove(&id);
    // SAFETY: helper without arguments.
    let delta = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let bucket = if delta == 0 {
        0
    } else {
        63 - delta.leading_zeros()
    };
    if let Some(p) = LAT_HIST.get_ptr_mut(bucket) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
    bump(STAT_SAMPLES, 1);
    bump(STAT_LAT_SUM_NS, delta);
}

#[uprobe]
pub fn lat_uprobe(_ctx: ProbeContext) -> u32 {
    lat_enter();
    0
}

#[uretprobe]
pub fn lat_uretprobe(_ctx: RetProbeContext) -> u32 {
    lat_exit();
    0
}

// The attach target is chosen at load time (`FEntry::load(name, btf)`); the
// name here only fills the section.
#[fentry(function = "vfs_read")]
pub fn lat_fentry(_ctx: FEntryContext) -> u32 {
    lat_enter();
    0
}

#[fexit(function = "vfs_read")]
pub fn lat_fexit(_ctx: FExitContext) -> u32 {
    lat_exit();
    0
}

#[tracepoint]
pub fn lat_sys_enter(_ctx: TracePointContext) -> u32 {
    lat_enter();
    0
}

#[tracepoint]
pub fn lat_sys_exit(_ctx: TracePointContext) -> u32 {
    lat_exit();
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
