//! Test helpers: C workloads with known hot functions built with frame
//! pointers, processes that are always reaped, and `lbd-trace` runs with
//! deadlines so a stuck capture fails the test instead of hanging CI.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    time::{Duration, Instant},
};

/// Captures run one at a time: they sample the whole machine and two
/// concurrent CPU-bound workloads on 2 cores would skew each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lbd-trace")
}

pub fn workdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("lbd-trace-tests-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles a C workload with frame pointers and no inlining, so the hot
/// functions are real frames.
pub fn build_c(name: &str, src: &str) -> PathBuf {
    build_c_with(
        name,
        src,
        &["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline"],
    )
}

/// Compiles a C file with the given compiler flags (e.g. `-O2
/// -fomit-frame-pointer`, as distributions build).
pub fn build_c_with(name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let dir = workdir();
    let c = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&c, src).unwrap();
    let out = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&c)
        .output()
        .expect("running cc");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A child that is killed and reaped when dropped (by its PID only).
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        Proc(cmd.spawn().expect("spawning workload"))
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spends `secs` of CPU time: ~70% in hot_a, ~30% in hot_b (by thread CPU
/// clock, so the split holds however busy the machine is).
pub const HOT_C: &str = r#"
#include <stdlib.h>
#include <time.h>
static double cpu_now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
volatile unsigned long sink;
__attribute__((noinline)) void spin_for(double secs) { double end = cpu_now() + secs; while (cpu_now() < end) { for (int i = 0; i < 2000; i++) sink += i * 7; } }
__attribute__((noinline)) void hot_a(void) { spin_for(0.007); }
__attribute__((noinline)) void hot_b(void) { spin_for(0.003); }
int main(int argc, char **argv) { double total = argc > 1 ? atof(argv[1]) : 5; double end = cpu_now() + total; while (cpu_now() < end) { hot_a(); hot_b(); } return 0; }
"#;

/// Spends its time in system calls made from `do_syscalls` itself (inline
/// `syscall` instructions: libc's wrappers have no frame pointer, so the
/// frame of their caller would be skipped by frame-pointer unwinding).
pub const SYS_C: &str = r#"
#include <stdlib.h>
#include <time.h>
#include <fcntl.h>
#include <sys/syscall.h>
static inline __attribute__((always_inline)) long sys3(long n, long a, long b, long c) { long r; __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory"); return r; }
static char buf[4096];
__attribute__((noinline)) void do_syscalls(int fd) { for (int i = 0; i < 200; i++) { sys3(SYS_write, fd, (long)buf, sizeof buf); sys3(SYS_getppid, 0, 0, 0); } }
int main(int argc, char **argv) { double total = argc > 1 ? atof(argv[1]) : 5; int fd = open("/dev/null", O_WRONLY); time_t end = time(0) + (time_t)total + 1; while (time(0) < end) do_syscalls(fd); return 0; }
"#;

/// Waits for a line on stdin, then blocks N x MS ms (default 50) in
/// sleepy_wait, then
/// exits. The nanosleep is an inline `syscall` for the reason given above.
pub const SLEEPY_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/syscall.h>
static long ms = 50;
__attribute__((noinline)) void sleepy_wait(void) { struct timespec t = {ms / 1000, (ms % 1000) * 1000 * 1000}; long r; __asm__ volatile ("syscall" : "=a"(r) : "a"((long)SYS_nanosleep), "D"(&t), "S"(0L) : "rcx", "r11", "memory"); }
int main(int argc, char **argv) { int n = argc > 1 ? atoi(argv[1]) : 20; if (argc > 2) ms = atol(argv[2]); char line[16]; if (!fgets(line, sizeof line, stdin)) return 1; for (int i = 0; i < n; i++) sleepy_wait(); return 0; }
"#;

/// fixed_delay busy-waits 1.5 ms (CLOCK_MONOTONIC); called in a loop.
pub const LAT_C: &str = r#"
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
__attribute__((noinline)) void fixed_delay(void) { double end = now() + 0.0015; while (now() < end) ; }
int main(int argc, char **argv) { double total = argc > 1 ? atof(argv[1]) : 5; double end = now() + total; while (now() < end) { fixed_delay(); struct timespec t = {0, 200 * 1000}; nanosleep(&t, 0); } return 0; }
"#;

pub struct Run {
    pub ok: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// A running `lbd-trace`, with its stderr read on a thread.
pub struct Tracer {
    child: Proc,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Tracer {
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Proc::spawn(
            Command::new(bin())
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let err = child.0.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Tracer {
            child,
            lines: rx,
            stderr: Vec::new(),
        }
    }

    /// Waits for the line saying the probes are attached.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    let ready = l.contains("Ctrl-C to stop");
                    self.stderr.push(l);
                    if ready {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = self.child.0.try_wait() {
                        panic!("lbd-trace exited early ({st}): {}", self.stderr.join("\n"));
                    }
                }
                Err(_) => panic!("lbd-trace closed stderr: {}", self.stderr.join("\n")),
            }
        }
        panic!("lbd-trace not ready after 60 s: {}", self.stderr.join("\n"));
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.pid() as i32, libc::SIGINT) };
    }

    /// Waits for exit (killing it past `limit`).
    pub fn finish(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.0.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = Vec::new();
        if let Some(mut o) = self.child.0.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_end(&mut stdout);
        }
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stderr.push(l);
        }
        let stderr = self.stderr.join("\n");
        let Some(status) = status else {
            panic!("lbd-trace still running after {limit:?}: {stderr}");
        };
        Run {
            ok: status.success(),
            stdout,
            stderr,
        }
    }
}

/// Runs `lbd-trace` to completion with a deadline.
pub fn trace(args: &[&str], limit: Duration) -> Run {
    Tracer::spawn(args).finish(limit)
}

/// Parses folded text into (stack, count).
pub fn folded(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (s, c) = l.rsplit_once(' ').expect("folded line");
            (s.to_string(), c.parse().expect("count"))
        })
        .collect()
}

/// Share of the total weight whose stack has `chain` (frames separated by
/// `;`) as consecutive frames, in that order.
pub fn chain_share(stacks: &[(String, u64)], chain: &str) -> f64 {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let hit: u64 = stacks
        .iter()
        .filter(|(s, _)| format!(";{s};").contains(&format!(";{chain};")))
        .map(|(_, c)| c)
        .sum();
    hit as f64 / total.max(1) as f64
}

/// Share of the total weight whose stack contains `frame`.
pub fn share(stacks: &[(String, u64)], frame: &str) -> f64 {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let hit: u64 = stacks
        .iter()
        .filter(|(s, _)| s.split(';').any(|f| f == frame))
        .map(|(_, c)| c)
        .sum();
    hit as f64 / total.max(1) as f64
}

pub fn write_stdin(p: &mut Proc, text: &str) {
    let mut stdin = p.0.stdin.take().expect("stdin piped");
    stdin.write_all(text.as_bytes()).unwrap();
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Builds a C workload and starts it with one argument; returns it with its
/// PID as text (the form the command line wants).
pub fn workload(name: &str, src: &str, arg: &str) -> (Proc, String) {
    let w = Proc::spawn(Command::new(build_c(name, src)).arg(arg));
    let pid = w.pid().to_string();
    (w, pid)
}

/// The 70/30 attribution check on the frame-pointer workload (HOT_C), with
/// the given `--unwind` mode: shares within 5 points, whole stacks rooted at
/// the comm, nothing unresolved.
pub fn hot_split_within_5_points(unwind: &str) {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    let out = workdir().join(format!("hot-{unwind}.folded"));
    let r = trace(
        &[
            "profile",
            "--pid",
            &pid,
            "--unwind",
            unwind,
            "--duration",
            "3s",
            "--freq",
            "999",
            "--format",
            "folded",
            "--output",
            path_str(&out),
        ],
        Duration::from_secs(60),
    );
    assert!(r.ok, "{}", r.stderr);
    let stacks = folded(&std::fs::read_to_string(&out).unwrap());
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(total > 500, "only {total} samples: {}", r.stderr);
    assert!(r.stderr.contains(" 0 lost,"), "samples lost: {}", r.stderr);
    eprint!("{unwind}: {total} samples, ");
    assert_70_30(&stacks);
    // Symbolized through the executable's ELF/DWARF, rooted at the comm.
    assert!(stacks.iter().all(|(s, _)| s.starts_with("hot;")));
    assert!(
        stacks
            .iter()
            .any(|(s, _)| s.contains(";main;hot_a;spin_for"))
    );
    assert!(!stacks.iter().any(|(s, _)| s.contains("[unknown]")));
    // clock_gettime runs in the vDSO: resolved through lbd-trace's own copy.
    assert!(
        !stacks.iter().any(|(s, _)| s.contains("[vdso]+")),
        "unresolved vDSO frames"
    );
}

/// hot_a holds 70% and hot_b 30% of the samples, within 5 points.
pub fn assert_70_30(stacks: &[(String, u64)]) {
    let (a, b) = (share(stacks, "hot_a"), share(stacks, "hot_b"));
    eprintln!("hot_a {a:.3} hot_b {b:.3}");
    assert!(
        (a - 0.70).abs() <= 0.05,
        "hot_a share {a:.3}, expected 0.70 +- 0.05"
    );
    assert!(
        (b - 0.30).abs() <= 0.05,
        "hot_b share {b:.3}, expected 0.30 +- 0.05"
    );
}

/// Runs a shell script in a private mount namespace, as a container's
/// process: what it mounts there does not exist on the host.
pub fn in_private_mount_ns(script: &str) -> Proc {
    Proc::spawn(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ]))
}
