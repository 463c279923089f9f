//! The capture loop shared by every command: runs until the duration is up,
//! Ctrl-C (SIGINT/SIGTERM), or every listed target has exited; keeps a live
//! line on a terminal; snapshots each process the first time it is seen so
//! its stacks still symbolize if it exits before the end.
use std::{
    io::{IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    bpf::{Collected, Stats, Tracer},
    procs::Processes,
};

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
}

pub fn run(
    tracer: &mut Tracer,
    procs: &mut Processes,
    collected: &mut Collected,
    opts: &Options,
) -> Result<Outcome> {
    STOP.store(false, Ordering::SeqCst);
    install_handlers();
    let live = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last_poll = start;
    let mut last_live = start;
    let mut last_drain = start;
    let reason = loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if STOP.load(Ordering::SeqCst) {
            break EndReason::Interrupted;
        }
        if opts.duration.is_some_and(|d| now - start >= d) {
            break EndReason::Duration;
        }
        if now - last_poll >= Duration::from_millis(200) {
            last_poll = now;
            if opts.snapshot {
                procs.observe(tracer.seen_tgids()?);
                if now - last_drain >= opts.drain_every {
                    last_drain = now;
                    tracer.drain(collected)?;
                }
            }
            if !opts.targets.is_empty() && opts.targets.iter().all(|&p| !alive(p)) {
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
        procs.observe(tracer.seen_tgids()?);
        tracer.drain(collected)?;
        procs.refresh();
    }
    Ok(Outcome {
        elapsed,
        stats: tracer.stats()?,
        reason,
    })
}
