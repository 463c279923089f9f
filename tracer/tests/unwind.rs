//! User stacks of code built without frame pointers (`gcc -O2
//! -fomit-frame-pointer`, as distributions build): DWARF mode (copied stack
//! window, unwound with .eh_frame) against frame pointers only, with
//! `perf record --call-graph dwarf` on the same process as the reference.
mod common;

use std::{fs, process::Command, time::Duration};

use common::*;

const LIMIT: Duration = Duration::from_secs(90);

/// main -> level1 -> level2 -> level3 -> hot_a (70% of CPU time) / hot_b
/// (30%), by thread CPU clock. `noipa`: no inlining, cloning or tail calls
/// across these functions, so the chain is real frames; the work after each
/// call keeps them from being sibling calls.
const CHAIN_C: &str = r#"
#include <stdlib.h>
#include <time.h>
static double cpu_now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
volatile unsigned long sink;
__attribute__((noipa)) void spin_for(double secs) { double end = cpu_now() + secs; while (cpu_now() < end) { for (int i = 0; i < 2000; i++) sink += i * 7; } }
__attribute__((noipa)) void hot_a(void) { spin_for(0.007); sink++; }
__attribute__((noipa)) void hot_b(void) { spin_for(0.003); sink++; }
__attribute__((noipa)) void level3(void) { hot_a(); hot_b(); sink++; }
__attribute__((noipa)) void level2(void) { level3(); sink++; }
__attribute__((noipa)) void level1(void) { level2(); sink++; }
int main(int argc, char **argv) { double total = argc > 1 ? atof(argv[1]) : 5; double end = cpu_now() + total; while (cpu_now() < end) level1(); return 0; }
"#;

const NO_FP: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];

const CHAIN: &str = "main;level1;level2;level3;hot_a;spin_for";

fn chain_workload(name: &str, secs: &str) -> (Proc, String) {
    let exe = build_c_with(name, CHAIN_C, NO_FP);
    let w = Proc::spawn(Command::new(exe).arg(secs));
    let pid = w.pid().to_string();
    (w, pid)
}

fn profile(pid: &str, unwind: &str, secs: &str, stats: &std::path::Path) -> Vec<(String, u64)> {
    let r = trace(
        &[
            "profile",
            "--pid",
            pid,
            "--unwind",
            unwind,
            "-d",
            secs,
            "-F",
            "999",
            "-f",
            "folded",
            "--stats",
            path_str(stats),
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(total > 300, "{unwind}: only {total} samples: {}", r.stderr);
    stacks
}

fn stats(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

/// `perf record --call-graph dwarf` on the process: share of its samples
/// whose call chain reaches `main`, and of those with `chain` in order.
fn perf_dwarf(pid: &str, secs: &str) -> (f64, f64, usize) {
    let data = workdir().join(format!("perf-{pid}.data"));
    let st = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "999",
            "--call-graph",
            "dwarf",
            "-p",
            pid,
            "-o",
        ])
        .arg(&data)
        .args(["--", "sleep", secs])
        .output()
        .expect("running perf (linux-perf)");
    assert!(
        st.status.success(),
        "perf record: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .expect("perf script");
    assert!(
        out.status.success(),
        "perf script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut n, mut main, mut chain) = (0usize, 0usize, 0usize);
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        // Innermost first: reverse into folded order.
        let mut syms: Vec<&str> = block
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        syms.reverse();
        n += 1;
        main += syms.contains(&"main") as usize;
        chain += format!(";{};", syms.join(";")).contains(&format!(";{CHAIN};")) as usize;
    }
    let _ = fs::remove_file(&data);
    (
        main as f64 / n.max(1) as f64,
        chain as f64 / n.max(1) as f64,
        n,
    )
}

#[test]
fn dwarf_mode_reaches_main_where_frame_pointers_do_not() {
    let _g = serial();
    let (_w, pid) = chain_workload("chain", "60");
    let dir = workdir();
    let st = dir.join("chain-stats.json");

    let dwarf = profile(&pid, "dwarf", "3s", &st);
    let s = stats(&st);
    let (main_d, chain_d) = (share(&dwarf, "main"), chain_share(&dwarf, CHAIN));
    let (a, b) = (share(&dwarf, "hot_a"), share(&dwarf, "hot_b"));
    eprintln!(
        "dwarf: main {main_d:.3}, chain {chain_d:.3}, hot_a {a:.3}, hot_b {b:.3}, {} bytes/sample, \
         unwind {} ms",
        s["stack_bytes_per_sample"], s["unwind_ms"]
    );
    assert!(s["dwarf_samples"].as_u64().unwrap() > 300, "{s}");
    assert!(
        main_d >= 0.90,
        "DWARF mode: only {main_d:.3} of samples reach main: {dwarf:?}"
    );
    assert!(
        chain_d >= 0.55,
        "chain {CHAIN} in {chain_d:.3} of samples: {dwarf:?}"
    );
    assert_70_30(&dwarf);
    assert!(
        dwarf
            .iter()
            .any(|(s, _)| s.contains(";main;level1;level2;level3;hot_b;spin_for")),
        "no hot_b chain"
    );

    // The same process with frame pointers only: the chain is broken.
    let fp = profile(&pid, "fp", "2s", &st);
    let main_f = share(&fp, "main");
    eprintln!("fp: main {main_f:.3}, chain {:.3}", chain_share(&fp, CHAIN));
    assert_eq!(stats(&st)["dwarf_samples"].as_u64(), Some(0));
    assert!(
        main_f < 0.5,
        "frame pointers alone reach main in {main_f:.3} of samples: the test would not \
         tell the modes apart: {fp:?}"
    );

    // Automatic mode picks DWARF for this executable.
    let auto = profile(&pid, "auto", "2s", &st);
    let main_a = share(&auto, "main");
    eprintln!("auto: main {main_a:.3}");
    assert!(stats(&st)["dwarf_samples"].as_u64().unwrap() > 0);
    assert!(main_a >= 0.90, "auto: {main_a:.3} reach main");

    // The reference: perf's own DWARF unwinding of the same process.
    let (main_p, chain_p, n) = perf_dwarf(&pid, "2");
    eprintln!("perf --call-graph dwarf: {n} samples, main {main_p:.3}, chain {chain_p:.3}");
    assert!(n > 300, "perf took {n} samples");
    assert!(
        main_d >= main_p - 0.05,
        "lbd-trace reaches main in {main_d:.3}, perf in {main_p:.3}"
    );
}

#[test]
fn automatic_mode_keeps_frame_pointers_where_the_binary_has_them() {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    let st = workdir().join("hot-auto-stats.json");
    let stacks = profile(&pid, "auto", "2s", &st);
    assert_eq!(
        stats(&st)["dwarf_samples"].as_u64(),
        Some(0),
        "a frame-pointer binary was unwound with DWARF"
    );
    assert!(share(&stacks, "main") > 0.9);
}

/// The 70/30 attribution of the frame-pointer workload holds in DWARF mode.
#[test]
fn hot_functions_share_holds_in_dwarf_mode() {
    hot_split_within_5_points("dwarf");
}

/// A library dlopen'ed after the capture started, in a process that runs in
/// its own mount namespace (as in a container) and exits before the end.
#[test]
fn dwarf_mode_late_library_in_a_container_process_that_exits() {
    let _g = serial();
    let dir = workdir();
    let lib = dir.join("libplug.so");
    let src = dir.join("plug.c");
    fs::write(
        &src,
        r#"
volatile unsigned long psink;
__attribute__((noipa)) static void plugin_spin(void) { for (int i = 0; i < 200000; i++) psink += i * 3; }
__attribute__((noipa)) void plugin_work(int n) { for (int i = 0; i < n; i++) plugin_spin(); psink++; }
"#,
    )
    .unwrap();
    let out = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-shared",
            "-fPIC",
            "-o",
        ])
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = build_c_with(
        "plughost",
        r#"
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static double cpu_now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
volatile unsigned long sink;
__attribute__((noipa)) void before_load(double s) { double end = cpu_now() + s; while (cpu_now() < end) sink++; }
__attribute__((noipa)) void call_plugin(void (*f)(int)) { f(50); sink++; }
int main(int argc, char **argv) {
  before_load(0.5);
  void *h = dlopen("/mnt/libplug.so", RTLD_NOW); if (!h) return 2;
  void (*f)(int) = (void (*)(int))dlsym(h, "plugin_work"); if (!f) return 3;
  double end = cpu_now() + 2.0; while (cpu_now() < end) call_plugin(f);
  return 0; }
"#,
        &["-O2", "-g", "-fomit-frame-pointer"],
    );
    let script = format!(
        "mount -t tmpfs lbd-trace-test /mnt && cp {} /mnt/plughost && cp {} /mnt/libplug.so \
         && exec /mnt/plughost",
        host.display(),
        lib.display()
    );
    let w = in_private_mount_ns(&script);
    let pid = w.pid().to_string();
    let r = trace(
        &[
            "profile", "--pid", &pid, "--unwind", "dwarf", "-d", "30s", "-F", "499", "-f", "folded",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("all target processes exited"),
        "{}",
        r.stderr
    );
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    let plug: Vec<(String, u64)> = stacks
        .iter()
        .filter(|(s, _)| s.contains(";plugin_work"))
        .cloned()
        .collect();
    let total: u64 = plug.iter().map(|(_, c)| c).sum();
    assert!(total > 200, "{total} samples in the plugin: {stacks:?}");
    let whole = chain_share(&plug, "main;call_plugin;plugin_work;plugin_spin");
    eprintln!("plugin samples {total}, whole chain {whole:.3}");
    assert!(whole >= 0.9, "{whole:.3}: {plug:?}");
    assert!(stacks.iter().all(|(s, _)| s.starts_with("plughost;")));
}

/// Off-CPU stacks in DWARF mode: the blocked time is charged to the whole
/// chain of a binary without frame pointers.
#[test]
fn offcpu_dwarf_mode_attributes_blocking_to_the_whole_chain() {
    let _g = serial();
    let exe = build_c_with(
        "sleepchain",
        r#"
#include <stdio.h>
#include <time.h>
volatile unsigned long sink;
__attribute__((noipa)) void nap(void) { struct timespec t = {0, 100 * 1000 * 1000}; nanosleep(&t, 0); sink++; }
__attribute__((noipa)) void waiter(void) { nap(); sink++; }
int main(void) { char line[16]; if (!fgets(line, sizeof line, stdin)) return 1; for (int i = 0; i < 15; i++) waiter(); return 0; }
"#,
        NO_FP,
    );
    let mut w = Proc::spawn(Command::new(exe).stdin(std::process::Stdio::piped()));
    let pid = w.pid().to_string();
    let mut t = Tracer::spawn(&[
        "offcpu",
        "--pid",
        &pid,
        "--unwind",
        "dwarf",
        "-d",
        "30s",
        "-f",
        "folded",
        "--no-kernel",
    ]);
    t.wait_ready();
    write_stdin(&mut w, "go\n");
    let r = t.finish(LIMIT);
    assert!(r.ok, "{}", r.stderr);
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let whole = chain_share(&stacks, "main;waiter;nap");
    eprintln!("{total} us blocked, whole chain {whole:.3}: {stacks:?}");
    // 15 x 100 ms.
    assert!(total > 1_200_000, "{total} us");
    assert!(whole >= 0.9, "{whole:.3}");
}
