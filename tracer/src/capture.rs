//! The capture loop shared by every command: runs until the duration is up,
//! Ctrl-C (SIGINT/SIGTERM), or every listed target has exited; keeps a live
//! line on a terminal; snapshots each process the first time it is seen so
//! its stacks still symbolize if it exits before the end; unwinds DWARF-mode
//! samples as they arrive.
//!
//! Nothing is scanned periodically: the kernel program announces each
//! process at its first sample and each exit (ring-buffer events), and the
//! loop sleeps in `poll` on that ring buffer.
use std::{
    collections::{HashMap, HashSet},
    io::{IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Result;
use tracer_common::{StackKey, USTACK_USERSPACE};

use crate::{
    bpf::{Collected, Event, Stats, Tracer},
    procs::Processes,
    unwind::Unwinding,
};

/// How user stacks are unwound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Per binary: frame pointers where the executable has them, DWARF CFI
    /// (.eh_frame/.debug_frame) where it does not.
    Auto,
    /// Frame pointers only, walked in the kernel (cheapest).
    Fp,
    /// DWARF CFI for every process: the user stack window is copied per
    /// sample and unwound in userspace.
    Dwarf,
}

/// Most off-CPU sample ids kept waiting for their blocked time.
const MAX_PENDING_IDS: usize = 1 << 20;

/// DWARF-mode state of a capture: the unwinder and the off-CPU sample ids
/// waiting for their count.
#[derive(Default)]
pub struct UserStacks {
    pub unwinding: Unwinding,
    ids: HashMap<u64, u64>,
}

fn stack_hash(frames: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ frames.len() as u64;
    for f in frames {
        h = (h ^ f).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | USTACK_USERSPACE
}

impl UserStacks {
    fn sample(
        &mut self,
        h: &tracer_common::UserSampleHeader,
        stack: &[u8],
        procs: &mut Processes,
        collected: &mut Collected,
    ) {
        let frames = self
            .unwinding
            .unwind(procs, h.ev.tgid, (h.ip, h.sp, h.bp), stack);
        let hash = stack_hash(&frames);
        collected.stacks.entry(hash).or_insert(frames);
        if h.value > 0 {
            let key = StackKey {
                tgid: h.ev.tgid,
                pid: h.pid,
                kstack: h.kstack,
                ustack: hash,
                comm: h.comm,
            };
            *collected.counts.entry(key).or_default() += h.value;
        }
        if h.id != 0 && self.ids.len() < MAX_PENDING_IDS {
            self.ids.insert(h.id, hash);
        }
    }

    /// Off-CPU counts are keyed by sample id in the kernel: put them under
    /// the stack that sample unwound to.
    fn resolve_ids(&mut self, collected: &mut Collected) {
        let keys: Vec<StackKey> = collected
            .counts
            .keys()
            .filter(|k| self.ids.contains_key(&k.ustack))
            .copied()
            .collect();
        for k in keys {
            let v = collected.counts.remove(&k).unwrap_or(0);
            let ustack = self.ids.remove(&k.ustack).unwrap_or(0);
            *collected
                .counts
                .entry(StackKey { ustack, ..k })
                .or_default() += v;
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// A task is gone once /proc no longer lists it or it is a zombie (it has
/// exited; only its parent has not collected the status yet).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Duration,
    Interrupted,
    TargetsExited,
}

pub struct Outcome {
    pub elapsed: Duration,
    pub stats: Stats,
    pub reason: EndReason,
}

pub struct Options<'a> {
    pub duration: Option<Duration>,
    /// PIDs/TIDs whose exit ends the capture (empty: never).
    pub targets: Vec<u32>,
    /// What the live line counts ("samples", "blocks", "calls").
    pub what: &'a str,
    /// Snapshot processes as they appear and move counts out of the kernel
    /// maps as the capture goes (profile, offcpu).
    pub snapshot: bool,
    /// How often counts are moved out of the kernel maps.
    pub drain_every: Duration,
    pub unwind: UnwindMode,
}

/// Snapshots a process seen for the first time (or again after an exec)
/// and, in automatic mode, says whether it needs DWARF unwinding.
fn on_new_proc(pid: u32, procs: &mut Processes, stacks: &mut UserStacks, mode: UnwindMode) -> bool {
    if procs.by_pid.contains_key(&pid) {
        // Announced again: an exec (new image, same start time) or an LRU
        // eviction. Drop the unwinder built for the old mappings.
        procs.resnapshot(pid);
        stacks.unwinding.forget(pid);
    } else {
        procs.observe([pid]);
    }
    mode == UnwindMode::Auto
        && procs
            .by_pid
            .get(&pid)
            .is_some_and(|s| stacks.unwinding.needs_dwarf(s))
}

/// Before attaching: snapshot the listed targets and, in automatic mode,
/// mark those built without frame pointers for DWARF unwinding, so their
/// first samples already carry whole stacks.
pub fn prepare(
    tracer: &mut Tracer,
    procs: &mut Processes,
    stacks: &mut UserStacks,
    pids: &[u32],
    mode: UnwindMode,
) -> Result<()> {
    for &p in pids {
        if on_new_proc(p, procs, stacks, mode) {
            tracer.set_dwarf(p)?;
        }
    }
    Ok(())
}

/// Reads the ring buffer: snapshots new processes, unwinds DWARF samples,
/// notes exits.
fn read_events(
    tracer: &mut Tracer,
    procs: &mut Processes,
    collected: &mut Collected,
    stacks: &mut UserStacks,
    opts: &Options,
    wait: Duration,
    exited: &mut HashSet<u32>,
) -> Result<()> {
    let mut dwarf = Vec::new();
    tracer.read_events(wait, |e| match e {
        Event::NewProc(pid) => {
            if opts.snapshot && on_new_proc(pid, procs, stacks, opts.unwind) {
                dwarf.push(pid);
            }
        }
        Event::Exit(pid) => {
            exited.insert(pid);
            stacks.unwinding.forget(pid);
        }
        Event::Sample(h, bytes) => {
            if !procs.by_pid.contains_key(&h.ev.tgid) {
                procs.observe([h.ev.tgid]);
            }
            stacks.sample(&h, bytes, procs, collected);
        }
    })?;
    for pid in dwarf {
        tracer.set_dwarf(pid)?;
    }
    Ok(())
}

pub fn run(
    tracer: &mut Tracer,
    procs: &mut Processes,
    collected: &mut Collected,
    stacks: &mut UserStacks,
    opts: &Options,
) -> Result<Outcome> {
    STOP.store(false, Ordering::SeqCst);
    install_handlers();
    let live = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last_check = start;
    let mut last_live = start;
    let mut last_drain = start;
    let mut exited = HashSet::new();
    let reason = loop {
        read_events(
            tracer,
            procs,
            collected,
            stacks,
            opts,
            Duration::from_millis(50),
            &mut exited,
        )?;
        let now = Instant::now();
        if STOP.load(Ordering::SeqCst) {
            break EndReason::Interrupted;
        }
        if opts.duration.is_some_and(|d| now - start >= d) {
            break EndReason::Duration;
        }
        if opts.snapshot && now - last_drain >= opts.drain_every {
            last_drain = now;
            tracer.drain(collected)?;
            stacks.resolve_ids(collected);
        }
        if !opts.targets.is_empty() {
            // Exits arrive as events; /proc is checked once a second only in
            // case an event was lost to a full ring buffer.
            let by_event = opts.targets.iter().all(|p| exited.contains(p));
            let by_proc = now - last_check >= Duration::from_secs(1) && {
                last_check = now;
                opts.targets.iter().all(|&p| !alive(p))
            };
            if by_event || by_proc {
                break EndReason::TargetsExited;
            }
        }
        if live && now - last_live >= Duration::from_secs(1) {
            last_live = now;
            let s = tracer.stats()?;
            eprint!(
                "\r\x1b[K{:>6.1}s  {} {}  lost {}",
                (now - start).as_secs_f64(),
                s.samples,
                opts.what,
                s.lost()
            );
            let _ = std::io::stderr().flush();
        }
    };
    if live {
        eprintln!();
    }
    let elapsed = start.elapsed();
    if opts.snapshot {
        read_events(
            tracer,
            procs,
            collected,
            stacks,
            opts,
            Duration::ZERO,
            &mut exited,
        )?;
        tracer.drain(collected)?;
        stacks.resolve_ids(collected);
        // Processes counted without an announcement (SEEN evicted, or the
        // event lost to a full ring buffer).
        let tgids: Vec<u32> = collected.counts.keys().map(|k| k.tgid).collect();
        procs.observe(tgids);
        procs.refresh();
    }
    Ok(Outcome {
        elapsed,
        stats: tracer.stats()?,
        reason,
    })
}
