//! `make bench-tracer`: overhead of lbd-trace on a CPU-bound workload that
//! fills every CPU, at 99 and 999 Hz, in frame-pointer and DWARF unwinding
//! modes, against `perf record -a -g` and `perf record -a --call-graph dwarf`
//! at the same frequencies, all in the same run.
//!
//! Method (issue 16): every profiled trial is paired with an unprofiled one
//! run right before or after it (the order alternates between rounds); the
//! overhead of a pair is 1 - profiled/unprofiled throughput; the figure is
//! the median over the rounds (>= 5 pairs per mode). Modes are rotated so no
//! mode always runs first. Also: each profiler's own CPU time during the
//! capture, bytes of user stack copied per sample, unwinding and
//! symbolization time, and the share of samples whose stack reaches `main`
//! (the workload is built with `-O2 -fomit-frame-pointer`, as distributions
//! build). Writes target/bench/tracer.json and prints a table.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The lbd-trace binary to measure (the static one).
    #[arg(long)]
    tracer: PathBuf,
    #[arg(long, default_value = "target/bench/tracer.json")]
    out: PathBuf,
    /// Seconds per trial.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Rounds (each runs every mode once, paired with its own unprofiled
    /// trial).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// main -> level1 -> level2 -> level3 -> unit, built without frame
/// pointers; counts loop iterations per second of its own CPU time and per
/// wall-clock second. CPU time (which on this kernel includes interrupt time,
/// CONFIG_IRQ_TIME_ACCOUNTING being off) takes in the sampling interrupts and
/// BPF programs run on the workload's CPU; wall-clock throughput also takes
/// in the CPU the profiler's own process uses (and other load on a shared
/// machine).
const WORK_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double clk(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
volatile unsigned long sink;
__attribute__((noipa)) void unit(void) { for (int i = 0; i < 20000; i++) sink += i * 7; }
__attribute__((noipa)) void level3(void) { unit(); sink++; }
__attribute__((noipa)) void level2(void) { level3(); sink++; }
__attribute__((noipa)) void level1(void) { level2(); sink++; }
int main(int argc, char **argv) {
  double start = clk(CLOCK_THREAD_CPUTIME_ID), wall = clk(CLOCK_MONOTONIC), end = start + atof(argv[1]);
  unsigned long n = 0; double now = start;
  while (now < end) { level1(); n++; if ((n & 63) == 0) now = clk(CLOCK_THREAD_CPUTIME_ID); }
  printf("%f %f\n", n / (now - start), n / (clk(CLOCK_MONOTONIC) - wall)); return 0; }
"#;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tool {
    Lbd,
    Perf,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Mode {
    tool: Tool,
    dwarf: bool,
    hz: u32,
}

impl Mode {
    fn name(&self) -> String {
        match (self.tool, self.dwarf) {
            (Tool::Lbd, false) => format!("lbd-trace fp {} Hz", self.hz),
            (Tool::Lbd, true) => format!("lbd-trace dwarf {} Hz", self.hz),
            (Tool::Perf, false) => format!("perf -g {} Hz", self.hz),
            (Tool::Perf, true) => format!("perf dwarf {} Hz", self.hz),
        }
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn interrupt_and_wait(mut r: Running, limit: Duration) -> Result<()> {
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(r.0.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if r.0.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("profiler did not stop within {limit:?}")
}

/// Starts a profiler and waits until it samples.
fn start(mode: Mode, tracer: &Path, dir: &Path, stats: &Path) -> Result<Running> {
    let hz = mode.hz.to_string();
    match mode.tool {
        Tool::Lbd => {
            let mut c = Command::new(tracer)
                .args([
                    "profile",
                    "--freq",
                    &hz,
                    "--unwind",
                    if mode.dwarf { "dwarf" } else { "fp" },
                    "--format",
                    "folded",
                    "--output",
                ])
                .arg(dir.join("lbd.folded"))
                .arg("--stats")
                .arg(stats)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting lbd-trace")?;
            let err = c.stderr.take().context("stderr")?;
            let r = Running(c);
            let mut lines = BufReader::new(err).lines();
            loop {
                match lines.next() {
                    Some(Ok(l)) if l.contains("Ctrl-C to stop") => break,
                    Some(Ok(_)) => {}
                    _ => bail!("lbd-trace exited before attaching"),
                }
            }
            // Keep draining stderr so the child never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            Ok(r)
        }
        Tool::Perf => {
            let mut cmd = Command::new("perf");
            cmd.args(["record", "-F", &hz, "-a", "-q"]);
            if mode.dwarf {
                cmd.args(["--call-graph", "dwarf"]);
            } else {
                cmd.arg("-g");
            }
            // perf prints nothing when ready: it starts with its events
            // disabled and is told to enable them through a control FIFO;
            // its "ack" says they are.
            let (ctl, ack) = (dir.join("perf.ctl"), dir.join("perf.ack"));
            for f in [&ctl, &ack] {
                mkfifo(f)?;
            }
            let c = cmd
                .args(["--delay", "-1", "--control"])
                .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
                .arg("-o")
                .arg(dir.join("perf.data"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf (linux-perf)")?;
            let mut r = Running(c);
            enable_perf(&mut r, &ctl, &ack).context("enabling perf's events")?;
            Ok(r)
        }
    }
}

fn mkfifo(path: &Path) -> Result<()> {
    let _ = fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("mkfifo {}", path.display()));
    }
    Ok(())
}

/// Sends `enable` on perf's control FIFO and waits for its `ack`: from then
/// on perf records. Non-blocking opens and reads, so a perf that fails
/// never hangs the bench.
fn enable_perf(r: &mut Running, ctl: &Path, ack: &Path) -> Result<()> {
    use std::io::{ErrorKind, Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let nonblocking = |read: bool, path: &Path| {
        fs::OpenOptions::new()
            .read(read)
            .write(!read)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    };
    // A reader first: perf's open of the ack FIFO waits for one.
    let mut ack_r = nonblocking(true, ack)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ctl_w = None;
    let mut got = Vec::new();
    loop {
        if let Some(st) = r.0.try_wait()? {
            bail!("perf exited ({st}) before recording");
        }
        if Instant::now() > deadline {
            bail!("perf did not acknowledge 'enable' within 10 s");
        }
        if ctl_w.is_none() {
            // ENXIO until perf has opened its end.
            if let Ok(mut w) = nonblocking(false, ctl) {
                w.write_all(b"enable\n")?;
                ctl_w = Some(w);
            }
        }
        let mut buf = [0u8; 16];
        match ack_r.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if got.starts_with(b"ack") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after ')'.
    let f: Vec<&str> = rest.split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (
        f.get(11).and_then(|v| v.parse::<f64>().ok()),
        f.get(12).and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) / hz,
        _ => f64::NAN,
    }
}

/// Share of the samples of the workload (comm "work") whose folded stack
/// contains `main`.
fn main_share_folded(path: &Path) -> Option<f64> {
    let text = fs::read_to_string(path).ok()?;
    let (mut all, mut main) = (0u64, 0u64);
    for l in text.lines() {
        let (stack, n) = l.rsplit_once(' ')?;
        let n: u64 = n.parse().ok()?;
        if !stack.starts_with("work;") {
            continue;
        }
        all += n;
        if stack.split(';').any(|f| f == "main") {
            main += n;
        }
    }
    (all > 0).then(|| main as f64 / all as f64)
}

/// The same from a perf.data file (`perf script`; outside the measured
/// window).
fn main_share_perf(data: &Path) -> Option<f64> {
    let out = Command::new("perf")
        .args(["script", "--comms", "work", "-F", "ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut all, mut main) = (0u64, 0u64);
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        all += 1;
        if block
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("main"))
        {
            main += 1;
        }
    }
    (all > 0).then(|| main as f64 / all as f64)
}

/// Runs one copy of the workload per CPU; summed iterations per CPU-second
/// and per wall-clock second.
fn throughput(work: &Path, secs: f64) -> Result<(f64, f64)> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kids: Vec<_> = (0..ncpu)
        .map(|_| {
            Command::new(work)
                .arg(secs.to_string())
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let (mut cpu, mut wall) = (0.0, 0.0);
    for k in kids {
        let out = k.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(|v| v.parse::<f64>());
        match (it.next(), it.next()) {
            (Some(Ok(c)), Some(Ok(w))) => {
                cpu += c;
                wall += w;
            }
            _ => bail!("workload output {text:?}"),
        }
    }
    Ok((cpu, wall))
}

/// What one profiled trial measured besides throughput.
#[derive(Default, Clone)]
struct Extra {
    /// The profiler's own CPU time during the capture, per second of it.
    self_cpu_ms_per_s: f64,
    symbolize_ms: Option<f64>,
    unwind_ms: Option<f64>,
    stack_bytes_per_sample: Option<f64>,
    bpf_ns_per_run: Option<f64>,
    main_share: Option<f64>,
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.rounds < 5 {
        bail!("--rounds must be at least 5 (the figure is a median of >= 5 pairs)");
    }
    let dir = std::env::temp_dir().join(format!("lbd-trace-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let src = dir.join("work.c");
    let work = dir.join("work");
    fs::write(&src, WORK_C)?;
    let st = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&work)
        .arg(&src)
        .status()?;
    if !st.success() {
        bail!("gcc failed");
    }
    let perf_ok = Command::new("perf")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut modes = Vec::new();
    for tool in [Tool::Lbd, Tool::Perf] {
        if tool == Tool::Perf && !perf_ok {
            eprintln!("perf not found: perf columns left out");
            continue;
        }
        for dwarf in [false, true] {
            for hz in [99, 999] {
                modes.push(Mode { tool, dwarf, hz });
            }
        }
    }
    let stats = dir.join("stats.json");
    // Per mode: every pair's profiled/unprofiled ratio (CPU-time and wall
    // throughput) and the trial's extra figures.
    let mut rel: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut rel_wall: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut extra: BTreeMap<Mode, Vec<Extra>> = BTreeMap::new();
    let t0 = Instant::now();
    for round in 0..a.rounds {
        for i in 0..modes.len() {
            let mode = modes[(i + round) % modes.len()];
            let profiled_first = (round + i) % 2 == 0;
            let mut base = None;
            let mut prof = None;
            let mut ex = Extra::default();
            for profiled in [profiled_first, !profiled_first] {
                if !profiled {
                    base = Some(throughput(&work, a.secs)?);
                    continue;
                }
                let _ = fs::remove_file(&stats);
                let p = start(mode, &a.tracer, &dir, &stats)?;
                let pid = p.0.id();
                let c0 = cpu_secs(pid);
                let w0 = Instant::now();
                prof = Some(throughput(&work, a.secs)?);
                ex.self_cpu_ms_per_s = (cpu_secs(pid) - c0) * 1e3 / w0.elapsed().as_secs_f64();
                interrupt_and_wait(p, Duration::from_secs(180))?;
                if mode.tool == Tool::Lbd
                    && let Ok(s) = fs::read_to_string(&stats)
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&s)
                {
                    ex.symbolize_ms = v["symbolize_ms"].as_f64();
                    ex.bpf_ns_per_run = v["bpf_ns_per_run"].as_f64();
                    if mode.dwarf {
                        ex.unwind_ms = v["unwind_ms"].as_f64();
                        ex.stack_bytes_per_sample = v["stack_bytes_per_sample"].as_f64();
                    }
                    ex.main_share = main_share_folded(&dir.join("lbd.folded"));
                }
                if mode.tool == Tool::Perf {
                    // perf's reach-main share once per mode (perf script is
                    // slow on DWARF data), outside the measured window.
                    if round == 0 {
                        ex.main_share = main_share_perf(&dir.join("perf.data"));
                    }
                    let _ = fs::remove_file(dir.join("perf.data"));
                }
            }
            let (b, p) = (base.context("baseline")?, prof.context("profiled")?);
            rel.entry(mode).or_default().push(p.0 / b.0);
            rel_wall.entry(mode).or_default().push(p.1 / b.1);
            eprintln!(
                "[{:>4.0}s] round {round}: {:<22} cpu {:+.2}%  wall {:+.2}%  own CPU {:.1} ms/s",
                t0.elapsed().as_secs_f64(),
                mode.name(),
                (1.0 - p.0 / b.0) * 100.0,
                (1.0 - p.1 / b.1) * 100.0,
                ex.self_cpu_ms_per_s
            );
            extra.entry(mode).or_default().push(ex);
        }
    }
    let pct = |r: &BTreeMap<Mode, Vec<f64>>, m: &Mode| -> Option<f64> {
        r.get(m).and_then(|v| median(v)).map(|x| (1.0 - x) * 100.0)
    };
    let ex_med = |m: &Mode, f: fn(&Extra) -> Option<f64>| -> Option<f64> {
        extra
            .get(m)
            .and_then(|v| median(&v.iter().filter_map(f).collect::<Vec<_>>()))
    };
    let bytes = fs::metadata(&a.tracer)?.len();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut table = serde_json::Map::new();
    for m in &modes {
        table.insert(
            m.name(),
            json!({
                "overhead_cpu_pct": pct(&rel, m),
                "overhead_wall_pct": pct(&rel_wall, m),
                "own_cpu_ms_per_s": ex_med(m, |e| Some(e.self_cpu_ms_per_s)),
                "main_share": ex_med(m, |e| e.main_share),
                "stack_bytes_per_sample": ex_med(m, |e| e.stack_bytes_per_sample),
                "unwind_ms": ex_med(m, |e| e.unwind_ms),
                "symbolize_ms": ex_med(m, |e| e.symbolize_ms),
                "bpf_ns_per_run": ex_med(m, |e| e.bpf_ns_per_run),
                "cpu_ratio_per_pair": rel.get(m),
                "wall_ratio_per_pair": rel_wall.get(m),
            }),
        );
    }
    let j = json!({
        "modes": table,
        "binary_bytes": bytes,
        "rounds": a.rounds,
        "trial_secs": a.secs,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "loadavg_at_end": load.trim(),
        "method": "one CPU-bound process per CPU (main->level1->level2->level3->unit, gcc -O2 -fomit-frame-pointer); each profiled trial paired with an unprofiled trial right before or after it (order alternating); overhead = 1 - profiled/unprofiled throughput, median over the pairs; cpu = iterations per CPU-second of the workload (takes in interrupts and BPF run on its CPUs), wall = iterations per wall-clock second (also takes in the profiler's own process); own_cpu = the profiler process's user+system CPU during the trial",
    });
    if let Some(p) = a.out.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(&a.out, serde_json::to_string_pretty(&j)?)?;
    let f = |v: Option<f64>, unit: &str| {
        v.map(|x| format!("{x:+.2}{unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let g = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    println!(
        "lbd-trace benchmark: {} pairs x {} s per mode, all {} CPUs busy, baseline paired in the same run (load {})",
        a.rounds,
        a.secs,
        j["cpus"],
        load.trim()
    );
    println!(
        "{:<24} {:>9} {:>9} {:>10} {:>8} {:>10} {:>9} {:>9}",
        "mode", "cpu ovh", "wall ovh", "own ms/s", "->main", "B/sample", "unwind", "symbol."
    );
    for m in &modes {
        println!(
            "{:<24} {:>9} {:>9} {:>10} {:>8} {:>10} {:>9} {:>9}",
            m.name(),
            f(pct(&rel, m), "%"),
            f(pct(&rel_wall, m), "%"),
            g(ex_med(m, |e| Some(e.self_cpu_ms_per_s)), 2),
            g(ex_med(m, |e| e.main_share), 3),
            g(ex_med(m, |e| e.stack_bytes_per_sample), 0),
            g(ex_med(m, |e| e.unwind_ms), 0),
            g(ex_med(m, |e| e.symbolize_ms), 0),
        );
    }
    println!(
        "binary: {bytes} bytes ({:.2} MiB); unwind and symbol. in ms per capture of {} s",
        bytes as f64 / 1048576.0,
        a.secs
    );
    println!("wrote {}", a.out.display());
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
