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

/// Counts loop iterations for a fixed wall time.
const WORK_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
volatile unsigned long sink;
__attribute__((noinline)) void unit(void) { for (int i = 0; i < 20000; i++) sink += i * 7; }
int main(int argc, char **argv) { double end = now() + atof(argv[1]); unsigned long n = 0; while (now() < end) { unit(); n++; } printf("%lu\n", n); return 0; }
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

/// Runs one copy of the workload per CPU; total iterations per second.
fn throughput(work: &Path, secs: f64) -> Result<f64> {
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
    let mut total = 0u64;
    for k in kids {
        let out = k.wait_with_output()?;
        total += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .context("workload output")?;
    }
    Ok(total as f64 / secs)
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
    // Per round: each mode's throughput relative to that round's baseline.
    let mut rel: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut sym_ms: Vec<f64> = Vec::new();
    let stats = dir.join("stats.json");
    for round in 0..a.rounds {
        let mut this: BTreeMap<Mode, f64> = BTreeMap::new();
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
                && let Some(ms) = v["symbolize_ms"].as_f64()
            {
                sym_ms.push(ms);
            }
            this.insert(mode, t);
            eprintln!("round {round}: {:<18} {:.0} it/s", mode.name(), t);
        }
        let base = this[&Mode::Baseline];
        for (m, t) in this {
            rel.entry(m).or_default().push(t / base);
        }
    }
    let overhead = |m: Mode| -> Option<f64> {
        rel.get(&m).map(|v| {
            let mut v = v.clone();
            (1.0 - median(&mut v)) * 100.0
        })
    };
    let bytes = fs::metadata(&a.tracer)?.len();
    let symbolize_ms = median(&mut sym_ms);
    let j = json!({
        "overhead_pct": {"99": overhead(Mode::Lbd(99)), "999": overhead(Mode::Lbd(999))},
        "perf_overhead_pct": {"99": overhead(Mode::Perf(99)), "999": overhead(Mode::Perf(999))},
        "binary_bytes": bytes,
        "symbolize_ms": symbolize_ms,
        "rounds": a.rounds,
        // Every round's throughput relative to its own baseline, to show the
        // noise the medians above sit in.
        "relative_per_round": rel.iter().map(|(m, v)| (m.name(), v.clone())).collect::<BTreeMap<_, _>>(),
        "trial_secs": a.secs,
        "method": "throughput of one CPU-bound process per CPU, median over rounds of (1 - mode/baseline of the same round); modes alternated",
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
    println!("{:<10} {:>14} {:>14}", "rate", "lbd-trace", "perf -a -g");
    for hz in [99, 999] {
        println!(
            "{:<10} {:>14} {:>14}",
            format!("{hz} Hz"),
            f(overhead(Mode::Lbd(hz))),
            f(overhead(Mode::Perf(hz)))
        );
    }
    println!(
        "binary: {bytes} bytes ({:.2} MiB); symbolization of a 999 Hz whole-machine capture: {symbolize_ms:.0} ms",
        bytes as f64 / 1048576.0
    );
    println!("wrote {}", a.out.display());
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
