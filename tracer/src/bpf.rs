//! The embedded eBPF object: loading it, writing the config and filters,
//! attaching the programs a command needs, and reading the maps back.
use std::{collections::HashMap as StdHashMap, fs, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        FEntry, FExit, PerfEvent, TracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::UProbeScope,
    },
    util::{nr_cpus, online_cpus},
};
use tracer_common::{
    Config, EV_EXIT, EV_NEW_PROC, EV_SAMPLE, EventHeader, LAT_BUCKETS, STAT_DWARF_SAMPLES,
    STAT_LAT_SUM_NS, STAT_LAT_UNMATCHED, STAT_LOST_COUNT, STAT_LOST_RINGBUF, STAT_LOST_STACK,
    STAT_SAMPLES, STAT_STACK_BYTES, Stack, StackKey, UserSampleHeader,
};

use crate::filter::Filters;

/// The kernel programs, built by build.rs and embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Counters the kernel side keeps (summed over CPUs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub samples: u64,
    pub lost_stacks: u64,
    pub lost_counts: u64,
    pub lat_sum_ns: u64,
    pub lat_unmatched: u64,
    /// DWARF mode: samples sent with a stack window, and the bytes of user
    /// stack they carried.
    pub dwarf_samples: u64,
    pub stack_bytes: u64,
    /// DWARF mode: samples the ring buffer had no room for (counted with a
    /// frame-pointer stack instead).
    pub ringbuf_full: u64,
}

impl Stats {
    pub fn lost(&self) -> u64 {
        self.lost_stacks + self.lost_counts
    }
}

/// A record from the `EVENTS` ring buffer.
pub enum Event<'a> {
    /// A DWARF-mode sample and the user stack bytes copied with it.
    Sample(UserSampleHeader, &'a [u8]),
    NewProc(u32),
    Exit(u32),
}

impl<'a> Event<'a> {
    /// Decodes a record; `None` for one that is too short or unknown.
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        let hdr_len = std::mem::size_of::<EventHeader>();
        if b.len() < hdr_len {
            return None;
        }
        // SAFETY: EventHeader is plain repr(C) data, length checked.
        let h: EventHeader = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        match h.kind {
            EV_NEW_PROC => Some(Self::NewProc(h.tgid)),
            EV_EXIT => Some(Self::Exit(h.tgid)),
            EV_SAMPLE => {
                let n = std::mem::size_of::<UserSampleHeader>();
                if b.len() < n {
                    return None;
                }
                // SAFETY: plain repr(C) data, length checked.
                let s: UserSampleHeader = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
                let len = (s.len as usize).min(b.len() - n);
                Some(Self::Sample(s, &b[n..n + len]))
            }
            _ => None,
        }
    }
}

/// Counts and stacks moved out of the kernel maps (see [`Tracer::drain`]).
#[derive(Debug, Default)]
pub struct Collected {
    /// (task, stack hashes) -> samples or nanoseconds.
    pub counts: StdHashMap<StackKey, u64>,
    /// Stack hash -> frames, innermost first.
    pub stacks: StdHashMap<u64, Vec<u64>>,
}

/// A loaded object with its config written.
pub struct Tracer {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
}

/// Where latency is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatencyTarget {
    /// uprobe + uretprobe on `symbol` in the ELF file `binary`.
    User { binary: String, symbol: String },
    /// fentry + fexit on a kernel function (needs BTF).
    Kernel { function: String },
    /// syscalls:sys_enter_NAME + sys_exit_NAME tracepoints.
    Syscall { name: String },
}

impl LatencyTarget {
    /// `BINARY:SYMBOL`, `kfunc:NAME` or `syscall:NAME`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(f) = s
            .strip_prefix("kfunc:")
            .or_else(|| s.strip_prefix("fentry:"))
        {
            if f.is_empty() {
                bail!("latency target {s:?}: missing kernel function name");
            }
            return Ok(Self::Kernel {
                function: f.to_string(),
            });
        }
        if let Some(n) = s.strip_prefix("syscall:") {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("latency target {s:?}: expected syscall:NAME, e.g. syscall:read");
            }
            return Ok(Self::Syscall {
                name: n.to_string(),
            });
        }
        let s2 = s.strip_prefix("uprobe:").unwrap_or(s);
        match s2.rsplit_once(':') {
            Some((bin, sym)) if !bin.is_empty() && !sym.is_empty() => Ok(Self::User {
                binary: bin.to_string(),
                symbol: sym.to_string(),
            }),
            _ => bail!(
                "latency target {s:?}: expected BINARY:FUNCTION (uprobe), kfunc:NAME (fentry) \
                 or syscall:NAME (tracepoints)"
            ),
        }
    }
}

fn tracefs() -> Result<&'static Path> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok(Path::new(p));
        }
    }
    bail!(
        "tracefs is not mounted: run `mount -t tracefs tracefs /sys/kernel/tracing` \
         (needed for tracepoints)"
    )
}

/// Offset of `field` in a tracepoint's format file.
fn tp_field_offset(format: &str, field: &str) -> Option<u32> {
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next()?.trim();
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        if name != field {
            continue;
        }
        for p in parts {
            if let Some(off) = p.trim().strip_prefix("offset:") {
                return off.trim().parse().ok();
            }
        }
    }
    None
}

fn check_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lbd-trace needs root (CAP_BPF and CAP_PERFMON): run it with sudo");
    }
    Ok(())
}

impl Tracer {
    /// Loads the object and writes the config and the PID/TID filter maps.
    pub fn load(mut cfg: Config, filters: &Filters) -> Result<Self> {
        check_root()?;
        // Locked memory limits only matter on kernels before 5.11, but cost
        // nothing to lift.
        let rl = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) };
        filters.apply(&mut cfg)?;
        cfg.self_tgid = std::process::id();
        // One DWARF-sample scratch slot per possible CPU.
        let ncpu = nr_cpus()
            .map_err(|(path, e)| anyhow!("reading {path}: {e}"))?
            .get();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("USCRATCH", ncpu)
            .load(OBJECT)
            .context("loading the embedded eBPF object")?;
        {
            let mut c: Array<&mut MapData, Config> = Array::try_from(
                ebpf.map_mut("CONFIG")
                    .ok_or_else(|| anyhow!("no CONFIG map"))?,
            )?;
            c.set(0, &cfg, 0).context("writing CONFIG")?;
        }
        for (map, ids) in [("PIDS", &filters.pids), ("TIDS", &filters.tids)] {
            let mut m: HashMap<&mut MapData, u32, u8> =
                HashMap::try_from(ebpf.map_mut(map).ok_or_else(|| anyhow!("no {map} map"))?)?;
            for id in ids {
                m.insert(id, &1, 0)
                    .with_context(|| format!("writing {map}"))?;
            }
        }
        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("no EVENTS map"))?,
        )?;
        let mut t = Self { ebpf, events };
        t.attach_proc_events()?;
        Ok(t)
    }

    /// `sched_process_exec`/`sched_process_exit`: new images and exits
    /// reach userspace as events (no periodic scan of /proc or the maps).
    fn attach_proc_events(&mut self) -> Result<()> {
        for (prog, tp) in [
            ("proc_exec", "sched_process_exec"),
            ("proc_exit", "sched_process_exit"),
        ] {
            let p: &mut TracePoint = self
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| anyhow!("no {prog} program"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("loading the {tp} program"))?;
            p.attach("sched", tp)
                .with_context(|| format!("attaching to sched:{tp}"))?;
        }
        Ok(())
    }

    /// Marks processes for DWARF unwinding (automatic mode).
    pub fn set_dwarf(&mut self, tgid: u32) -> Result<()> {
        let mut m: HashMap<&mut MapData, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut("DWARF_PIDS")
                .ok_or_else(|| anyhow!("no DWARF_PIDS"))?,
        )?;
        m.insert(&tgid, &1, 0).context("writing DWARF_PIDS")?;
        Ok(())
    }

    /// Waits up to `timeout` for a forced wake-up (a new process, an exit),
    /// then hands every record in the ring buffer to `f`.
    pub fn read_events(
        &mut self,
        timeout: std::time::Duration,
        mut f: impl FnMut(Event<'_>),
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: self.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; EINTR (Ctrl-C) just returns early.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        while let Some(item) = self.events.next() {
            if let Some(e) = Event::parse(&item) {
                f(e);
            }
        }
        Ok(())
    }

    /// Samples every chosen CPU (all online CPUs when empty) with the
    /// software cpu-clock at `freq` Hz.
    pub fn attach_profile(&mut self, freq: u64, cpus: &[u32]) -> Result<usize> {
        let cpus: Vec<u32> = if cpus.is_empty() {
            online_cpus().map_err(|(path, e)| anyhow!("reading {path}: {e}"))?
        } else {
            cpus.to_vec()
        };
        let prog: &mut PerfEvent = self
            .ebpf
            .program_mut("profile")
            .ok_or_else(|| anyhow!("no profile program"))?
            .try_into()?;
        prog.load().context("loading the perf-event program")?;
        for &cpu in &cpus {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(freq),
                false,
            )
            .with_context(|| format!("opening a cpu-clock perf event on CPU {cpu}"))?;
        }
        Ok(cpus.len())
    }

    /// The sched_switch tracepoint, with field offsets from its format file.
    pub fn attach_offcpu(&mut self) -> Result<()> {
        let fmt_path = tracefs()?.join("events/sched/sched_switch/format");
        let fmt = fs::read_to_string(&fmt_path)
            .with_context(|| format!("reading {}", fmt_path.display()))?;
        let off = |f| {
            tp_field_offset(&fmt, f).ok_or_else(|| anyhow!("{}: no field {f}", fmt_path.display()))
        };
        let (prev_pid, prev_state, next_pid) =
            (off("prev_pid")?, off("prev_state")?, off("next_pid")?);
        {
            let mut c: Array<&mut MapData, Config> = Array::try_from(
                self.ebpf
                    .map_mut("CONFIG")
                    .ok_or_else(|| anyhow!("no CONFIG"))?,
            )?;
            let mut cfg = c.get(&0, 0)?;
            cfg.off_prev_pid = prev_pid;
            cfg.off_prev_state = prev_state;
            cfg.off_next_pid = next_pid;
            c.set(0, &cfg, 0)?;
        }
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut("offcpu")
            .ok_or_else(|| anyhow!("no offcpu program"))?
            .try_into()?;
        prog.load().context("loading the sched_switch program")?;
        prog.attach("sched", "sched_switch")
            .context("attaching to sched:sched_switch")?;
        Ok(())
    }

    /// Entry/exit probes for a latency histogram.
    pub fn attach_latency(&mut self, target: &LatencyTarget) -> Result<()> {
        match target {
            LatencyTarget::User { binary, symbol } => {
                if !Path::new(binary).exists() {
                    bail!("uprobe target {binary}: no such file");
                }
                for (name, what) in [("lat_uprobe", "uprobe"), ("lat_uretprobe", "uretprobe")] {
                    let p: &mut UProbe = self
                        .ebpf
                        .program_mut(name)
                        .ok_or_else(|| anyhow!("no {name} program"))?
                        .try_into()?;
                    p.load()?;
                    p.attach([symbol.as_str()], binary, UProbeScope::AllProcesses).with_context(
                        || format!("attaching a {what} to {symbol} in {binary} (is the symbol in its symbol table?)"),
                    )?;
                }
            }
            LatencyTarget::Kernel { function } => {
                let btf =
                    Btf::from_sys_fs().context("reading kernel BTF (/sys/kernel/btf/vmlinux)")?;
                let p: &mut FEntry = self
                    .ebpf
                    .program_mut("lat_fentry")
                    .ok_or_else(|| anyhow!("no fentry program"))?
                    .try_into()?;
                if let Err(e) = p.load(function, &btf) {
                    let msg = format!("{e:#}");
                    if msg.contains("Operation not permitted") || msg.contains("Invalid argument") {
                        bail!(
                            "this kernel refuses BPF tracing programs (fentry/fexit) for {function}: {msg}. \
                             Kernel-function latency needs them (`bpftool feature probe kernel` \
                             lists \"program_type tracing\"); measure a syscall (syscall:NAME) \
                             or a user function (BINARY:FUNCTION) instead"
                        );
                    }
                    return Err(anyhow!(e)).with_context(|| {
                        format!("loading fentry for kernel function {function} (is it in the kernel's BTF?)")
                    });
                }
                p.attach()
                    .with_context(|| format!("attaching fentry to {function}"))?;
                let p: &mut FExit = self
                    .ebpf
                    .program_mut("lat_fexit")
                    .ok_or_else(|| anyhow!("no fexit program"))?
                    .try_into()?;
                p.load(function, &btf)?;
                p.attach()
                    .with_context(|| format!("attaching fexit to {function}"))?;
            }
            LatencyTarget::Syscall { name } => {
                let dir = tracefs()?.join("events/syscalls");
                if !dir.join(format!("sys_enter_{name}")).is_dir() {
                    bail!(
                        "no syscall tracepoint syscalls:sys_enter_{name}: unknown syscall \
                         (see {})",
                        dir.display()
                    );
                }
                for (prog, tp) in [
                    ("lat_sys_enter", format!("sys_enter_{name}")),
                    ("lat_sys_exit", format!("sys_exit_{name}")),
                ] {
                    let p: &mut TracePoint = self
                        .ebpf
                        .program_mut(prog)
                        .ok_or_else(|| anyhow!("no {prog} program"))?
                        .try_into()?;
                    p.load()?;
                    p.attach("syscalls", &tp)
                        .with_context(|| format!("attaching to syscalls:{tp}"))?;
                }
            }
        }
        Ok(())
    }

    /// Turns on the kernel's run-time accounting of BPF programs (run count
    /// and time, for `--stats`) while the returned fd is open.
    pub fn enable_run_stats() -> Result<std::os::fd::OwnedFd> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics (BPF_ENABLE_STATS)")
    }

    /// Runs and total run time of the loaded programs (needs
    /// [`Self::enable_run_stats`] held during the capture).
    pub fn run_stats(&self) -> (u64, u64) {
        let mut runs = 0;
        let mut ns = 0;
        for (_, p) in self.ebpf.programs() {
            if let Ok(info) = p.info() {
                runs += info.run_count();
                ns += info.run_time().as_nanos() as u64;
            }
        }
        (runs, ns)
    }

    pub fn stats(&self) -> Result<Stats> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").ok_or_else(|| anyhow!("no STATS"))?)?;
        let sum = |i: u32| -> Result<u64> { Ok(m.get(&i, 0)?.iter().sum()) };
        Ok(Stats {
            samples: sum(STAT_SAMPLES)?,
            lost_stacks: sum(STAT_LOST_STACK)?,
            lost_counts: sum(STAT_LOST_COUNT)?,
            lat_sum_ns: sum(STAT_LAT_SUM_NS)?,
            lat_unmatched: sum(STAT_LAT_UNMATCHED)?,
            dwarf_samples: sum(STAT_DWARF_SAMPLES)?,
            stack_bytes: sum(STAT_STACK_BYTES)?,
            ringbuf_full: sum(STAT_LOST_RINGBUF)?,
        })
    }

    /// Moves what the kernel collected so far into `into` and deletes it
    /// from the maps, so they never fill, however long the capture.
    ///
    /// Counts are moved before stacks: a count's stacks are stored before the
    /// count is, so every stack a moved count refers to is either still in
    /// the map now or was moved by an earlier drain. Stacks are deleted only
    /// once read, so a stack stored meanwhile stays for the next drain. An
    /// increment landing between reading and deleting its count is lost (a
    /// window of microseconds per key, once per drain).
    pub fn drain(&mut self, into: &mut Collected) -> Result<()> {
        {
            let mut m: HashMap<&mut MapData, StackKey, u64> = HashMap::try_from(
                self.ebpf
                    .map_mut("COUNTS")
                    .ok_or_else(|| anyhow!("no COUNTS"))?,
            )?;
            let entries: Vec<(StackKey, u64)> = m.iter().filter_map(|r| r.ok()).collect();
            for (k, v) in entries {
                *into.counts.entry(k).or_default() += v;
                let _ = m.remove(&k);
            }
        }
        let mut m: HashMap<&mut MapData, u64, Stack> = HashMap::try_from(
            self.ebpf
                .map_mut("STACKS")
                .ok_or_else(|| anyhow!("no STACKS"))?,
        )?;
        let entries: Vec<(u64, Stack)> = m.iter().filter_map(|r| r.ok()).collect();
        for (h, st) in entries {
            let n = (st.len as usize).min(st.ips.len());
            into.stacks.entry(h).or_insert_with(|| st.ips[..n].to_vec());
            let _ = m.remove(&h);
        }
        Ok(())
    }

    /// The latency histogram, summed over CPUs.
    pub fn histogram(&self) -> Result<Vec<u64>> {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("LAT_HIST")
                .ok_or_else(|| anyhow!("no LAT_HIST"))?,
        )?;
        (0..LAT_BUCKETS)
            .map(|i| Ok(m.get(&i, 0)?.iter().sum()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latency_targets() {
        assert_eq!(
            LatencyTarget::parse("/usr/bin/x:foo").unwrap(),
            LatencyTarget::User {
                binary: "/usr/bin/x".into(),
                symbol: "foo".into()
            }
        );
        assert_eq!(
            LatencyTarget::parse("kfunc:vfs_read").unwrap(),
            LatencyTarget::Kernel {
                function: "vfs_read".into()
            }
        );
        assert_eq!(
            LatencyTarget::parse("syscall:read").unwrap(),
            LatencyTarget::Syscall {
                name: "read".into()
            }
        );
        assert!(LatencyTarget::parse("nothing").is_err());
        assert!(LatencyTarget::parse("syscall:").is_err());
        assert!(LatencyTarget::parse("syscall:../x").is_err());
        assert!(LatencyTarget::parse(":foo").is_err());
    }

    #[test]
    fn finds_tracepoint_offsets() {
        let f = "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                 \tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                 \tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n";
        assert_eq!(tp_field_offset(f, "prev_pid"), Some(24));
        assert_eq!(tp_field_offset(f, "prev_state"), Some(32));
        assert_eq!(tp_field_offset(f, "next_pid"), None);
    }
}
