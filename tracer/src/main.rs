//! `lbd-trace`: on-CPU, off-CPU and latency profiling with eBPF, in one
//! static binary. See docs/tracer.md.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tracer::{
    bpf::{Collected, LatencyTarget, Tracer},
    capture::{self, EndReason, UnwindMode, UserStacks},
    duration,
    filter::Filters,
    latency,
    output::{self, Format},
    pprof::Units,
    procs::Processes,
    symbolize,
};
use tracer_common::{
    Config, F_INCLUDE_IDLE, F_INCLUDE_PREEMPTED, F_KERNEL_STACKS, F_PROC_EVENTS,
    F_UNWIND_DWARF_ALL, F_UNWIND_DWARF_LISTED, F_USER_STACKS, PAGE, STACK_WINDOW_DEFAULT,
    STACK_WINDOW_MAX, StackKey,
};

/// A fully static eBPF profiler: copy it to a node, run it as root, get a
/// flamegraph. Needs nothing on the host but a kernel with BTF.
///
/// Examples:
///   lbd-trace profile --duration 30s                       # whole node, SVG
///   lbd-trace profile --pid 1234 --duration 5s --format folded --output app.folded
///   lbd-trace profile --cgroup system.slice/nginx.service --freq 999
///   lbd-trace offcpu --comm java --min-block 1ms
///   lbd-trace latency /usr/sbin/nginx:ngx_http_process_request --pid 1234
///   lbd-trace latency syscall:fsync --duration 10s
///   lbd-trace diff before.folded after.folded --output diff.svg
#[derive(Parser, Debug)]
#[command(name = "lbd-trace", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// On-CPU sampling (perf cpu-clock events): where the CPU time goes.
    Profile(ProfileArgs),
    /// Off-CPU time (sched_switch): where threads block, and for how long.
    Offcpu(OffcpuArgs),
    /// Latency histogram of a user function, kernel function or syscall.
    Latency(LatencyArgs),
    /// Differential flamegraph of two folded files (red: grew, blue: shrank).
    Diff(DiffArgs),
    /// Converts a folded file to SVG or pprof.
    Convert(ConvertArgs),
    /// Write man pages and completions into DIR (for `make packages`).
    #[command(name = clidoc::SUBCOMMAND, hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Args, Debug)]
struct CaptureArgs {
    #[command(flatten)]
    filters: Filters,
    /// How long to capture (5s, 250ms, 2m). Default: until Ctrl-C, or until
    /// every --pid/--tid has exited.
    #[arg(long, short = 'd', value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Output format.
    #[arg(long, short = 'f', value_enum)]
    format: Option<Format>,
    /// Output file ("-" for stdout). Default: stdout for folded,
    /// COMMAND.svg / COMMAND.pb.gz otherwise.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Also write the folded stacks here (to diff against a later capture).
    #[arg(long, value_name = "FILE")]
    save_folded: Option<PathBuf>,
    /// Leave out kernel stacks.
    #[arg(long)]
    no_kernel: bool,
    /// Leave out user stacks.
    #[arg(long)]
    no_user: bool,
    /// How user stacks are unwound: `auto` picks per executable (frame
    /// pointers where it was built with them, DWARF CFI where not); `fp`
    /// walks frame pointers only; `dwarf` copies the user stack window of
    /// every sample and unwinds it with .eh_frame/.debug_frame.
    #[arg(long, value_enum, default_value = "auto")]
    unwind: UnwindMode,
    /// DWARF mode: bytes of user stack copied per sample (frames deeper
    /// than this are cut, the stack ends in a "[truncated ...]" frame).
    #[arg(long, default_value_t = STACK_WINDOW_DEFAULT, value_parser = parse_window)]
    stack_window: u32,
    /// Flamegraph title.
    #[arg(long)]
    title: Option<String>,
    /// Write capture statistics (samples, lost, symbolization time) as JSON.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// How often counts and stacks are moved out of the kernel maps (keeps
    /// them from filling on long captures).
    #[arg(long, default_value = "2s", value_parser = duration::parse, hide = true)]
    drain_every: Duration,
}

#[derive(Args, Debug)]
struct ProfileArgs {
    #[command(flatten)]
    cap: CaptureArgs,
    /// Sampling frequency per CPU, in Hz.
    #[arg(long, short = 'F', default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    freq: u64,
    /// Only these CPUs (repeat or comma-separate). Default: all online CPUs.
    #[arg(long = "cpu", value_delimiter = ',')]
    cpus: Vec<u32>,
    /// Also sample the idle task.
    #[arg(long)]
    include_idle: bool,
}

#[derive(Args, Debug)]
struct OffcpuArgs {
    #[command(flatten)]
    cap: CaptureArgs,
    /// Ignore blocks shorter than this (e.g. 100us).
    #[arg(long, value_parser = duration::parse)]
    min_block: Option<Duration>,
    /// Ignore blocks longer than this (e.g. 10s).
    #[arg(long, value_parser = duration::parse)]
    max_block: Option<Duration>,
    /// Also count time runnable but preempted (waiting for a CPU).
    #[arg(long)]
    include_preempted: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LatencyFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct LatencyArgs {
    /// BINARY:FUNCTION (uprobe/uretprobe), kfunc:NAME (fentry/fexit) or
    /// syscall:NAME (sys_enter/sys_exit tracepoints).
    target: String,
    #[command(flatten)]
    filters: Filters,
    /// How long to measure. Default: until Ctrl-C or every --pid has exited.
    #[arg(long, short = 'd', value_parser = duration::parse)]
    duration: Option<Duration>,
    #[arg(long, short = 'f', value_enum, default_value = "text")]
    format: LatencyFormat,
    /// Output file ("-" or absent: stdout).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DiffArgs {
    before: PathBuf,
    after: PathBuf,
    /// Scale the first profile to the second's total before comparing.
    #[arg(long)]
    normalize: bool,
    #[arg(long, short = 'o', default_value = "diff.svg")]
    output: PathBuf,
    #[arg(long, default_value = "Differential flamegraph")]
    title: String,
}

#[derive(Args, Debug)]
struct ConvertArgs {
    input: PathBuf,
    #[arg(long, short = 'f', value_enum)]
    format: Format,
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// The folded values are off-CPU microseconds, not samples.
    #[arg(long)]
    offcpu: bool,
    /// Sampling frequency the samples were taken at (pprof period).
    #[arg(long, default_value_t = 99)]
    freq: u64,
}

fn parse_window(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if v < PAGE as u32 || v as usize > STACK_WINDOW_MAX || !v.is_multiple_of(8) {
        return Err(format!(
            "{v}: the stack window must be a multiple of 8 between {PAGE} and {STACK_WINDOW_MAX} bytes"
        ));
    }
    Ok(v)
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Profile(a) => profile(a),
        Cmd::Offcpu(a) => offcpu(a),
        Cmd::Latency(a) => latency_cmd(a),
        Cmd::Diff(a) => diff(a),
        Cmd::Convert(a) => convert(a),
        Cmd::GenerateDocs { dir } => clidoc::write(Cli::command(), &dir)
            .map(drop)
            .map_err(Into::into),
    };
    if let Err(e) = r {
        eprintln!("lbd-trace: error: {e:#}");
        std::process::exit(1);
    }
}

fn open_output(path: &Option<PathBuf>, default: Option<&str>) -> Result<(Box<dyn Write>, String)> {
    let p = match (path, default) {
        (Some(p), _) if p.as_os_str() != "-" => p.clone(),
        (None, Some(d)) => PathBuf::from(d),
        _ => return Ok((Box::new(std::io::stdout().lock()), "stdout".into())),
    };
    let f = fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok((
        Box::new(std::io::BufWriter::new(f)),
        p.display().to_string(),
    ))
}

fn base_config(cap: &CaptureArgs) -> Result<Config> {
    if cap.no_kernel && cap.no_user {
        bail!("--no-kernel and --no-user together leave no stacks to collect");
    }
    let mut cfg = Config::default();
    if !cap.no_kernel {
        cfg.flags |= F_KERNEL_STACKS;
    }
    if !cap.no_user {
        cfg.flags |= F_USER_STACKS;
    }
    cfg.flags |= F_PROC_EVENTS
        | match cap.unwind {
            UnwindMode::Auto => F_UNWIND_DWARF_LISTED,
            UnwindMode::Fp => 0,
            UnwindMode::Dwarf => F_UNWIND_DWARF_ALL,
        };
    cfg.stack_window = cap.stack_window;
    Ok(cfg)
}

#[derive(Serialize)]
struct CaptureStats {
    command: &'static str,
    elapsed_s: f64,
    samples: u64,
    lost: u64,
    stacks: usize,
    addresses: usize,
    processes: usize,
    symbolize_ms: f64,
    /// DWARF mode: unwinding in userspace, and what the kernel copied.
    unwind: &'static str,
    dwarf_samples: u64,
    unwind_ms: f64,
    stack_bytes_per_sample: f64,
    ringbuf_full: u64,
    /// Kernel-side cost: program runs and mean nanoseconds per run.
    bpf_runs: u64,
    bpf_ns_per_run: f64,
    end: String,
}

/// Everything after the capture: symbolize, fold, write.
#[allow(clippy::too_many_arguments)]
fn finish(
    command: &'static str,
    collected: &Collected,
    bpf_run: (u64, u64),
    procs: &Processes,
    stacks: &UserStacks,
    outcome: &capture::Outcome,
    cap: &CaptureArgs,
    units: Units,
    scale: u64,
    default_title: String,
) -> Result<()> {
    let counts: Vec<(StackKey, u64)> = collected.counts.iter().map(|(k, v)| (*k, *v)).collect();
    let t0 = Instant::now();
    let sym = symbolize::symbolize(&counts, &collected.stacks, procs);
    let symbolize_ms = t0.elapsed().as_secs_f64() * 1e3;
    for n in &sym.notes {
        eprintln!("lbd-trace: note: {n}");
    }
    let folded = output::fold(&sym.stacks, scale);
    let s = &outcome.stats;
    let end = match outcome.reason {
        EndReason::Duration => "duration reached",
        EndReason::Interrupted => "interrupted",
        EndReason::TargetsExited => "all target processes exited",
    };
    eprintln!(
        "lbd-trace: {command}: {:.1}s ({end}), {} {}, {} lost, {} distinct stacks, \
         {} addresses symbolized in {:.0} ms",
        outcome.elapsed.as_secs_f64(),
        s.samples,
        if command == "offcpu" {
            "blocks"
        } else {
            "samples"
        },
        s.lost(),
        folded.len(),
        sym.addresses,
        symbolize_ms
    );
    if s.lost() > 0 {
        eprintln!(
            "lbd-trace: warning: {} samples lost (stack or count map full); shorten the capture \
             or narrow the filters",
            s.lost()
        );
    }
    if let Some(p) = &cap.save_folded {
        fs::write(p, output::folded_text(&folded))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &cap.stats {
        let st = CaptureStats {
            command,
            elapsed_s: outcome.elapsed.as_secs_f64(),
            samples: s.samples,
            lost: s.lost(),
            stacks: folded.len(),
            addresses: sym.addresses,
            processes: procs.by_pid.len(),
            symbolize_ms,
            unwind: match cap.unwind {
                UnwindMode::Auto => "auto",
                UnwindMode::Fp => "fp",
                UnwindMode::Dwarf => "dwarf",
            },
            dwarf_samples: s.dwarf_samples,
            unwind_ms: stacks.unwinding.unwind_time.as_secs_f64() * 1e3,
            stack_bytes_per_sample: s.stack_bytes as f64 / s.dwarf_samples.max(1) as f64,
            ringbuf_full: s.ringbuf_full,
            bpf_runs: bpf_run.0,
            bpf_ns_per_run: bpf_run.1 as f64 / bpf_run.0.max(1) as f64,
            end: end.into(),
        };
        fs::write(p, serde_json::to_string_pretty(&st)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let format = cap.format.unwrap_or(Format::Svg);
    let default = match format {
        Format::Folded => None,
        Format::Svg => Some(if command == "offcpu" {
            "offcpu.svg"
        } else {
            "profile.svg"
        }),
        Format::Pprof => Some(if command == "offcpu" {
            "offcpu.pb.gz"
        } else {
            "profile.pb.gz"
        }),
    };
    if folded.is_empty() && format != Format::Folded {
        bail!("no stacks were collected: nothing to write (check the filters and the duration)");
    }
    let (mut out, name) = open_output(&cap.output, default)?;
    let title = cap.title.clone().unwrap_or(default_title);
    output::write(
        &folded,
        format,
        units,
        outcome.elapsed.as_nanos() as i64,
        &title,
        &mut out,
    )?;
    out.flush()?;
    if name != "stdout" {
        eprintln!("lbd-trace: wrote {name}");
    }
    Ok(())
}

/// Loads the programs for a profile or offcpu capture and, before they are
/// attached, snapshots the listed targets (and picks their unwinding mode).
fn load_for_capture(cfg: Config, cap: &CaptureArgs) -> Result<(Tracer, Processes, UserStacks)> {
    check_targets_exist(&cap.filters)?;
    let mut tracer = Tracer::load(cfg, &cap.filters)?;
    let mut procs = Processes::default();
    let mut stacks = UserStacks::default();
    let pids: Vec<u32> = cap.filters.pids.clone();
    capture::prepare(&mut tracer, &mut procs, &mut stacks, &pids, cap.unwind)?;
    Ok((tracer, procs, stacks))
}

/// Runs a profile or offcpu capture and writes its output.
#[allow(clippy::too_many_arguments)]
fn capture_and_write(
    command: &'static str,
    (mut tracer, mut procs, mut stacks): (Tracer, Processes, UserStacks),
    cap: &CaptureArgs,
    what: &'static str,
    units: Units,
    scale: u64,
    title: String,
) -> Result<()> {
    let opts = capture::Options {
        duration: cap.duration,
        targets: targets(&cap.filters),
        what,
        snapshot: true,
        drain_every: cap.drain_every,
        unwind: cap.unwind,
    };
    let mut collected = Collected::default();
    let run_stats = cap
        .stats
        .as_ref()
        .map(|_| Tracer::enable_run_stats())
        .transpose()?;
    let outcome = capture::run(&mut tracer, &mut procs, &mut collected, &mut stacks, &opts)?;
    let bpf_run = tracer.run_stats();
    drop(run_stats);
    finish(
        command, &collected, bpf_run, &procs, &stacks, &outcome, cap, units, scale, title,
    )
}

fn targets(f: &Filters) -> Vec<u32> {
    if f.only_tasks() {
        f.pids.iter().chain(&f.tids).copied().collect()
    } else {
        Vec::new()
    }
}

fn check_targets_exist(f: &Filters) -> Result<()> {
    for p in f.pids.iter().chain(&f.tids) {
        if !Path::new(&format!("/proc/{p}")).exists() {
            bail!("no process or thread {p} (not in /proc)");
        }
    }
    Ok(())
}

fn profile(a: ProfileArgs) -> Result<()> {
    let mut cfg = base_config(&a.cap)?;
    if a.include_idle {
        cfg.flags |= F_INCLUDE_IDLE;
    }
    let mut loaded = load_for_capture(cfg, &a.cap)?;
    let ncpu = loaded.0.attach_profile(a.freq, &a.cpus)?;
    eprintln!(
        "lbd-trace: profiling {ncpu} CPUs at {} Hz{}; Ctrl-C to stop",
        a.freq,
        a.cap
            .duration
            .map(|d| format!(" for {:?}", d))
            .unwrap_or_default()
    );
    let title = format!("lbd-trace profile, {} Hz", a.freq);
    capture_and_write(
        "profile",
        loaded,
        &a.cap,
        "samples",
        Units::Samples { hz: a.freq },
        1,
        title,
    )
}

fn offcpu(a: OffcpuArgs) -> Result<()> {
    let mut cfg = base_config(&a.cap)?;
    if a.include_preempted {
        cfg.flags |= F_INCLUDE_PREEMPTED;
    }
    cfg.min_block_ns = a.min_block.map(|d| d.as_nanos() as u64).unwrap_or(0);
    cfg.max_block_ns = a.max_block.map(|d| d.as_nanos() as u64).unwrap_or(u64::MAX);
    if cfg.min_block_ns > cfg.max_block_ns {
        bail!("--min-block is larger than --max-block");
    }
    let mut loaded = load_for_capture(cfg, &a.cap)?;
    loaded.0.attach_offcpu()?;
    eprintln!("lbd-trace: tracing off-CPU time (sched:sched_switch); Ctrl-C to stop");
    let title = "lbd-trace off-CPU time (us)".to_string();
    capture_and_write(
        "offcpu",
        loaded,
        &a.cap,
        "blocks",
        Units::OffCpuMicros,
        1000,
        title,
    )
}

fn latency_cmd(a: LatencyArgs) -> Result<()> {
    let target = LatencyTarget::parse(&a.target)?;
    check_targets_exist(&a.filters)?;
    let mut tracer = Tracer::load(Config::default(), &a.filters)?;
    tracer.attach_latency(&target)?;
    eprintln!(
        "lbd-trace: measuring latency of {}; Ctrl-C to stop",
        a.target
    );
    let mut procs = Processes::default();
    let opts = capture::Options {
        duration: a.duration,
        targets: targets(&a.filters),
        what: "calls",
        snapshot: false,
        drain_every: Duration::from_secs(3600),
        unwind: UnwindMode::Fp,
    };
    let mut collected = Collected::default();
    let mut stacks = UserStacks::default();
    let outcome = capture::run(&mut tracer, &mut procs, &mut collected, &mut stacks, &opts)?;
    let hist = tracer.histogram()?;
    let r = latency::report(
        &a.target,
        &hist,
        outcome.stats.lat_sum_ns,
        outcome.stats.lat_unmatched,
    );
    let (mut out, name) = open_output(&a.output, None)?;
    match a.format {
        LatencyFormat::Text => out.write_all(latency::text(&r).as_bytes())?,
        LatencyFormat::Json => {
            out.write_all(serde_json::to_string_pretty(&r)?.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    if name != "stdout" {
        eprintln!("lbd-trace: wrote {name}");
    }
    Ok(())
}

fn diff(a: DiffArgs) -> Result<()> {
    let svg = output::diff_svg(&a.before, &a.after, a.normalize, &a.title)?;
    fs::write(&a.output, svg).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("lbd-trace: wrote {}", a.output.display());
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    if a.freq == 0 {
        bail!("--freq must be at least 1");
    }
    let folded = output::read_folded(&a.input)?;
    let units = if a.offcpu {
        Units::OffCpuMicros
    } else {
        Units::Samples { hz: a.freq }
    };
    let (mut out, name) = open_output(&a.output, None)?;
    let title = a.input.display().to_string();
    output::write(&folded, a.format, units, 0, &title, &mut out)?;
    out.flush()?;
    if name != "stdout" {
        eprintln!("lbd-trace: wrote {name}");
    }
    Ok(())
}
