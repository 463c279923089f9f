//! Types shared by `lbd-trace`'s kernel programs (`tracer-ebpf`) and its
//! userspace loader. Everything is `#[repr(C)]`, padded explicitly, so both
//! sides agree on the layout of map keys and values byte for byte.
#![no_std]

/// Length of a task's command name in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// [`Config::flags`]: keep only tasks whose process (tgid) is in `PIDS` or
/// whose thread id is in `TIDS` (one flag covers both, they are OR-ed).
pub const F_FILTER_TASK: u32 = 1;
/// [`Config::flags`]: keep only tasks whose command name equals [`Config::comm`].
pub const F_FILTER_COMM: u32 = 1 << 1;
/// [`Config::flags`]: keep only tasks in the cgroup (v2) [`Config::cgroup_id`]
/// or below it.
pub const F_FILTER_CGROUP: u32 = 1 << 2;
/// [`Config::flags`]: collect kernel stacks.
pub const F_KERNEL_STACKS: u32 = 1 << 3;
/// [`Config::flags`]: collect user stacks.
pub const F_USER_STACKS: u32 = 1 << 4;
/// [`Config::flags`]: also sample the idle task (pid 0).
pub const F_INCLUDE_IDLE: u32 = 1 << 5;
/// [`Config::flags`]: off-CPU, also count involuntary switches (preemption),
/// not only blocking.
pub const F_INCLUDE_PREEMPTED: u32 = 1 << 6;

/// [`Config::flags`]: copy the user stack window and registers (DWARF
/// unwinding in userspace) for every task, not only those in `DWARF_PIDS`.
pub const F_UNWIND_DWARF_ALL: u32 = 1 << 7;
/// [`Config::flags`]: copy the user stack window for processes listed in
/// `DWARF_PIDS` (the automatic per-binary choice).
pub const F_UNWIND_DWARF_LISTED: u32 = 1 << 8;
/// [`Config::flags`]: tell userspace about new processes (first sample),
/// exits and execs through the `EVENTS` ring buffer.
pub const F_PROC_EVENTS: u32 = 1 << 9;

/// Bytes of user stack copied per sample in DWARF mode, at most: perf's
/// default for `--call-graph dwarf` (8 KiB). Frames whose return address lies
/// deeper than this window cannot be recovered.
pub const STACK_WINDOW_DEFAULT: u32 = 8192;
/// Largest window `--stack-window` accepts.
pub const STACK_WINDOW_MAX: usize = 32768;
/// Page size the copy is split on (a read must not cross the end of the
/// stack mapping, or the whole read fails).
pub const PAGE: usize = 4096;
/// Marks a `StackKey::ustack` that is not a kernel-side stack hash: in
/// COUNTS (off-CPU, DWARF mode) the id of a [`UserSample`]; in userspace, the
/// hash of a stack unwound there.
pub const USTACK_USERSPACE: u64 = 1 << 63;

/// `EVENTS` record kinds ([`EventHeader::kind`]).
pub const EV_SAMPLE: u32 = 1;
/// A process (tgid) sampled for the first time (or again after an exec).
pub const EV_NEW_PROC: u32 = 2;
/// A process's main thread exited.
pub const EV_EXIT: u32 = 3;

/// Every `EVENTS` record starts with this.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub tgid: u32,
}

/// A DWARF-mode sample: the task's user registers and the top of its user
/// stack (`len` bytes from `sp`), unwound in userspace. Sent as
/// `size_of::<UserSampleHeader>() + len` bytes of [`UserSample`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserSampleHeader {
    pub ev: EventHeader,
    pub pid: u32,
    pub _pad: u32,
    /// Kernel stack hash (STACKS key), 0 when none.
    pub kstack: u64,
    /// Weight: 1 sample (profile); 0 for off-CPU, whose time is counted in
    /// COUNTS under `ustack = id`.
    pub value: u64,
    /// Off-CPU: the id this stack is counted under ([`USTACK_USERSPACE`] set).
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Stack bytes that follow.
    pub len: u64,
    pub comm: [u8; COMM_LEN],
}

/// Scratch layout of a DWARF-mode sample (one per CPU). The stack area has
/// one page of slack past the largest window so every page-sized read the
/// verifier sees is in bounds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserSample {
    pub hdr: UserSampleHeader,
    pub stack: [u8; STACK_WINDOW_MAX + PAGE],
}

/// Indexes into the per-CPU `STATS` array.
pub const STAT_SAMPLES: u32 = 0;
/// Stack could not be stored (stack map full or hash collision).
pub const STAT_LOST_STACK: u32 = 1;
/// Count could not be stored (counts map full).
pub const STAT_LOST_COUNT: u32 = 2;
/// Latency: sum of the measured durations, in nanoseconds.
pub const STAT_LAT_SUM_NS: u32 = 3;
/// Latency: exits seen without a matching entry (attached mid-call).
pub const STAT_LAT_UNMATCHED: u32 = 4;
/// DWARF mode: samples whose record did not fit in the ring buffer.
pub const STAT_LOST_RINGBUF: u32 = 5;
/// DWARF mode: user stack bytes copied (sum).
pub const STAT_STACK_BYTES: u32 = 6;
/// DWARF mode: samples copied.
pub const STAT_DWARF_SAMPLES: u32 = 7;
/// Number of slots in `STATS`.
pub const STAT_SLOTS: u32 = 8;

/// Number of log2 buckets of the latency histogram (bucket `i` holds
/// durations `d` with `2^i <= d < 2^(i+1)` ns; bucket 0 also holds 0).
pub const LAT_BUCKETS: u32 = 64;

/// Capacity of the stacks map (distinct stacks). Preallocated: about 1 KiB
/// each, 32 MiB in all.
pub const MAX_STACKS: u32 = 32768;
/// Deepest stack kept (the kernel's default `perf_event_max_stack`).
pub const MAX_DEPTH: usize = 127;
/// Capacity of the counts map (distinct (task, stacks) keys).
pub const MAX_COUNTS: u32 = 65536;
/// Capacity of each of the `PIDS` and `TIDS` filter maps.
pub const MAX_FILTER_IDS: u32 = 1024;

/// What the programs read from `CONFIG[0]`, written once by userspace before
/// attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
    /// Depth of the filter cgroup below the cgroup2 root (root = 0).
    pub cgroup_level: u32,
    /// Inode number of the filter cgroup's directory (= its cgroup id).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// Off-CPU: ignore blocks shorter than this (ns).
    pub min_block_ns: u64,
    /// Off-CPU: ignore blocks longer than this (ns).
    pub max_block_ns: u64,
    /// Byte offsets of fields in the `sched:sched_switch` tracepoint record,
    /// read from its tracefs `format` file so no layout is hard-coded.
    pub off_prev_pid: u32,
    pub off_prev_state: u32,
    pub off_next_pid: u32,
    /// lbd-trace's own process, never traced (it would only show itself
    /// reading maps and waiting).
    pub self_tgid: u32,
    /// DWARF mode: bytes of user stack to copy (<= STACK_WINDOW_MAX).
    pub stack_window: u32,
    pub _pad: u32,
}

/// Key of the counts map: one task and its two stacks. The value is a sample
/// count (profile) or nanoseconds blocked (offcpu).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    pub pid: u32,
    /// Hash of the kernel / user stack (its key in the stacks map), 0 when
    /// absent.
    pub kstack: u64,
    pub ustack: u64,
    pub comm: [u8; COMM_LEN],
}

/// A stack as stored in the stacks map: `ips[..len]`, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stack {
    pub len: u64,
    pub ips: [u64; MAX_DEPTH],
}

/// Off-CPU: recorded when a task is switched out, consumed when it runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffStart {
    pub ts_ns: u64,
    pub key: StackKey,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) data without padding holes, any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::StackKey {}
    unsafe impl aya::Pod for super::OffStart {}
    unsafe impl aya::Pod for super::Stack {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::UserSampleHeader {}
}
