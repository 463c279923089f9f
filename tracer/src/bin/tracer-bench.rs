//! `make bench-tracer`: profiling overhead of lbd-trace on a CPU-bound
//! workload at 99 and 999 Hz, side by side with `perf record -F <same> -a -g`
//! on the same workload in the same run, trials alternated so machine noise
//! hits every mode alike; plus symbolization time and binary size.
//! Writes target/bench/tracer.json and prints a table.
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
    /// Rounds (each runs every mode once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// Counts loop iterations per second of its own CPU time. CPU time (the
/// scheduler's, which on this kernel includes interrupt time, as
/// CONFIG_IRQ_TIME_ACCOUNTING is off) takes in the sampling interrupts and
/// the BPF program run on this task's CPU, but not the time other processes
/// of a shared machine take: wall-clock throughput varied by 10% between
/// trials of the same mode here.
const WORK_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double clk(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
volatile unsigned long sink;
__attribute__((noinline)) void unit(void) { for (int i = 0; i < 20000; i++) sink += i * 7; }
int main(int argc, char **argv) {
  double start = clk(CLOCK_THREAD_CPUTIME_ID), wall = clk(CLOCK_MONOTONIC), end = start + atof(argv[1]);
  unsigned long n = 0; double now = start;
  while (now < end) { unit(); n++; if ((n & 63) == 0) now = clk(CLOCK_THREAD_CPUTIME_ID); }
  printf("%f %f\n", n / (now - start), n / (clk(CLOCK_MONOTONIC) - wall)); return 0; }
"#;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    Baseline,
    Lbd(u32),
    Perf(u32),
}

impl Mode {
    fn name(&self) -> String {
        match self {
            Mode::Baseline => "none".into(),
            Mode::Lbd(f) => format!("lbd-trace {f} Hz"),
            Mode::Perf(f) => format!("perf record {f} Hz"),
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
fn start(mode: Mode, tracer: &Path, dir: &Path, stats: &Path) -> Result<Option<Running>> {
    match mode {
        Mode::Baseline => Ok(None),
        Mode::Lbd(f) => {
            let mut c = Command::new(tracer)
                .args([
                    "profile",
                    "--freq",
                    &f.to_string(),
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
            Ok(Some(r))
        }
        Mode::Perf(f) => {
            let c = Command::new("perf")
                .args(["record", "-F", &f.to_string(), "-a", "-g", "-q", "-o"])
                .arg(dir.join("perf.data"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf (linux-perf)")?;
            // perf prints nothing when ready: give it time to open its events.
            std::thread::sleep(Duration::from_millis(700));
            Ok(Some(Running(c)))
        }
    }
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dir = std::env::temp_dir().join(format!("lbd-trace-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let src = dir.join("work.c");
    let work = dir.join("work");
    fs::write(&src, WORK_C)?;
    let st = Command::new("cc")
        .args(["-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(&work)
        .arg(&src)
        .status()?;
    if !st.success() {
        bail!("cc failed");
    }
    let perf_ok = Command::new("perf")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut modes = vec![Mode::Baseline, Mode::Lbd(99), Mode::Lbd(999)];
    if perf_ok {
        modes.extend([Mode::Perf(99), Mode::Perf(999)]);
    } else {
        eprintln!("perf not found: perf columns left out");
    }
    // Per round: each mode's throughput relative to that round's baseline,
    // per CPU-second (the figure) and per wall-clock second (noisier here,
    // but it also charges the profiler's own process, e.g. perf writing its
    // data file).
    let mut rel: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut rel_wall: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut sym_ms: Vec<f64> = Vec::new();
    let mut bpf_ns: Vec<f64> = Vec::new();
    let stats = dir.join("stats.json");
    for round in 0..a.rounds {
        let mut this: BTreeMap<Mode, (f64, f64)> = BTreeMap::new();
        // Rotate the order so no mode always runs first after a rest.
        for i in 0..modes.len() {
            let mode = modes[(i + round) % modes.len()];
            let prof = start(mode, &a.tracer, &dir, &stats)?;
            let t = throughput(&work, a.secs)?;
            if let Some(p) = prof {
                interrupt_and_wait(p, Duration::from_secs(120))?;
            }
            if let Mode::Lbd(999) = mode
                && let Ok(s) = fs::read_to_string(&stats)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&s)
            {
                sym_ms.extend(v["symbolize_ms"].as_f64());
                bpf_ns.extend(v["bpf_ns_per_run"].as_f64());
            }
            this.insert(mode, t);
            eprintln!(
                "round {round}: {:<18} {:.0} it/cpu-s  {:.0} it/s",
                mode.name(),
                t.0,
                t.1
            );
        }
        let base = this[&Mode::Baseline];
        for (m, t) in this {
            rel.entry(m).or_default().push(t.0 / base.0);
            rel_wall.entry(m).or_default().push(t.1 / base.1);
        }
    }
    let pct = |r: &BTreeMap<Mode, Vec<f64>>, m: Mode| -> Option<f64> {
        r.get(&m).map(|v| {
            let mut v = v.clone();
            (1.0 - median(&mut v)) * 100.0
        })
    };
    let overhead = |m: Mode| pct(&rel, m);
    let wall = |m: Mode| pct(&rel_wall, m);
    let bytes = fs::metadata(&a.tracer)?.len();
    let symbolize_ms = median(&mut sym_ms);
    // The kernel's own accounting of the sampling program (BPF run-time
    // stats): a noise-free figure of what each sample costs in the kernel.
    let bpf_ns_per_sample = median(&mut bpf_ns);
    let bpf_cpu_pct = |hz: f64| bpf_ns_per_sample * hz / 1e9 * 100.0;
    let per_round = |r: &BTreeMap<Mode, Vec<f64>>| {
        r.iter()
            .map(|(m, v)| (m.name(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let j = json!({
        "overhead_pct": {"99": overhead(Mode::Lbd(99)), "999": overhead(Mode::Lbd(999))},
        "perf_overhead_pct": {"99": overhead(Mode::Perf(99)), "999": overhead(Mode::Perf(999))},
        "binary_bytes": bytes,
        "symbolize_ms": symbolize_ms,
        "wall_overhead_pct": {"99": wall(Mode::Lbd(99)), "999": wall(Mode::Lbd(999))},
        "perf_wall_overhead_pct": {"99": wall(Mode::Perf(99)), "999": wall(Mode::Perf(999))},
        "bpf_ns_per_sample": bpf_ns_per_sample,
        "bpf_cpu_pct_per_cpu": {"99": bpf_cpu_pct(99.0), "999": bpf_cpu_pct(999.0)},
        "rounds": a.rounds,
        // Every round's throughput relative to its own baseline, to show the
        // noise the medians above sit in.
        "relative_per_round": per_round(&rel),
        "wall_relative_per_round": per_round(&rel_wall),
        "trial_secs": a.secs,
        "method": "iterations per CPU-second of one CPU-bound process per CPU (CPU time includes interrupt time on this kernel), median over rounds of (1 - mode/baseline of the same round); modes alternated; wall_* the same per wall-clock second",
    });
    if let Some(p) = a.out.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(&a.out, serde_json::to_string_pretty(&j)?)?;
    let f = |v: Option<f64>| {
        v.map(|x| format!("{x:+.2}%"))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "lbd-trace benchmark ({} rounds x {} s, baseline in the same run)",
        a.rounds, a.secs
    );
    println!(
        "{:<8} {:>14} {:>14} {:>16} {:>16}",
        "rate", "lbd-trace", "perf -a -g", "lbd-trace wall", "perf wall"
    );
    for hz in [99, 999] {
        println!(
            "{:<8} {:>14} {:>14} {:>16} {:>16}",
            format!("{hz} Hz"),
            f(overhead(Mode::Lbd(hz))),
            f(overhead(Mode::Perf(hz))),
            f(wall(Mode::Lbd(hz))),
            f(wall(Mode::Perf(hz)))
        );
    }
    println!(
        "binary: {bytes} bytes ({:.2} MiB); symbolization of a 999 Hz whole-machine capture: {symbolize_ms:.0} ms",
        bytes as f64 / 1048576.0
    );
    println!(
        "BPF program: {bpf_ns_per_sample:.0} ns per sample (kernel run-time stats) = {:.3}% of a CPU at 99 Hz, {:.3}% at 999 Hz",
        bpf_cpu_pct(99.0),
        bpf_cpu_pct(999.0)
    );
    println!("wrote {}", a.out.display());
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
