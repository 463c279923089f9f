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
}
