//! `lbd-trace profile` against real workloads on the real kernel: shares of
//! known hot functions, kernel frames, SVG, pprof, and the task filters.
mod common;

use std::{fs, process::Command, time::Duration};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn hot_functions_get_their_share_within_5_points() {
    // Automatic mode: frame pointers for this binary (tests/unwind.rs runs
    // the same check with --unwind dwarf).
    hot_split_within_5_points("auto");
}

#[test]
fn syscall_heavy_workload_shows_kernel_frames() {
    let _g = serial();
    let (_w, pid) = workload("sysheavy", SYS_C, "30");
    let r = trace(
        &[
            "profile",
            "--pid",
            &pid,
            "--duration",
            "2s",
            "--freq",
            "499",
            "--format",
            "folded",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let kernel: u64 = stacks
        .iter()
        .filter(|(s, _)| s.contains("_[k]"))
        .map(|(_, c)| c)
        .sum();
    eprintln!("{kernel} of {total} samples in the kernel");
    assert!(total > 100, "{}", r.stderr);
    // cpu-clock is a timer: ticks that land while the kernel runs with
    // interrupts off are taken on the way back to user mode, so the kernel
    // share reads lower than the real one (about half here, as with perf).
    assert!(
        kernel as f64 > 0.3 * total as f64,
        "kernel frames in {kernel}/{total} samples"
    );
    // Kernel frames sit above the user frames that made the call.
    assert!(
        stacks
            .iter()
            .any(|(s, _)| s.contains(";do_syscalls;") && s.contains("do_syscall_64_[k]")),
        "no do_syscalls -> do_syscall_64 stack"
    );
    // DWARF inlined frames: sys3 is always_inline'd into do_syscalls.
    assert!(
        stacks
            .iter()
            .any(|(s, _)| s.contains(";do_syscalls;sys3_[i]")),
        "no inlined frame"
    );
}

#[test]
fn svg_is_well_formed_and_names_the_functions() {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    let out = workdir().join("hot.svg");
    // SVG is the default format.
    let r = trace(
        &[
            "profile",
            "--pid",
            &pid,
            "-d",
            "1s",
            "-F",
            "499",
            "-o",
            path_str(&out),
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let svg = fs::read_to_string(&out).unwrap();
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => elements += 1,
            Ok(_) => {}
            Err(e) => panic!("SVG not well-formed at {}: {e}", reader.buffer_position()),
        }
    }
    assert!(elements > 10);
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
    assert!(
        svg.contains("hot_a") && svg.contains("hot_b"),
        "function names missing in SVG"
    );
}

#[test]
fn pprof_parses_back_with_the_same_totals() {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    let dir = workdir();
    let (pb, fo) = (dir.join("hot.pb.gz"), dir.join("hot-pprof.folded"));
    let r = trace(
        &[
            "profile",
            "--pid",
            &pid,
            "-d",
            "1s",
            "-F",
            "499",
            "--format",
            "pprof",
            "-o",
            path_str(&pb),
            "--save-folded",
            path_str(&fo),
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let p = tracer::pprof::decode(&fs::read(&pb).unwrap()).unwrap();
    let stacks = folded(&fs::read_to_string(&fo).unwrap());
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(total > 0);
    assert_eq!(
        p.total(),
        total as i64,
        "pprof total differs from the folded total"
    );
    assert_eq!(p.sample.len(), stacks.len());
    let st = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(st(p.sample_type[0].r#type), "samples");
    assert_eq!(st(p.sample_type[1].unit), "nanoseconds");
    assert_eq!(p.period, 1_000_000_000 / 499);
    // Same stacks, same counts.
    for s in &p.sample {
        let f = p.folded(s);
        let want = stacks.iter().find(|(k, _)| *k == f).map(|(_, c)| *c);
        assert_eq!(want, Some(s.value[0] as u64), "stack {f}");
    }
}

/// Two copies of the same program under different names, so the folded
/// root frame (the comm) tells whose sample it is.
fn two_workloads() -> (Proc, Proc) {
    let exe = build_c("hot", HOT_C);
    let dir = workdir();
    let (l, r) = (dir.join("hot_left"), dir.join("hot_right"));
    fs::copy(&exe, &l).unwrap();
    fs::copy(&exe, &r).unwrap();
    (
        Proc::spawn(Command::new(&l).arg("30")),
        Proc::spawn(Command::new(&r).arg("30")),
    )
}

fn roots(out: &[u8]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    for (s, c) in folded(&String::from_utf8_lossy(out)) {
        let root = s.split(';').next().unwrap().to_string();
        match v.iter_mut().find(|(r, _)| *r == root) {
            Some(e) => e.1 += c,
            None => v.push((root, c)),
        }
    }
    v
}

#[test]
fn pid_filter_never_shows_another_process() {
    let _g = serial();
    let (left, _right) = two_workloads();
    let pid = left.pid().to_string();
    let r = trace(
        &[
            "profile", "--pid", &pid, "-d", "2s", "-F", "999", "-f", "folded",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let seen = roots(&r.stdout);
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|(r, _)| r == "hot_left"),
        "other processes sampled: {seen:?}"
    );
    // Two --pid flags take both.
    let pid2 = _right.pid().to_string();
    let r = trace(
        &[
            "profile", "--pid", &pid, "--pid", &pid2, "-d", "1s", "-F", "999", "-f", "folded",
        ],
        LIMIT,
    );
    let seen = roots(&r.stdout);
    assert!(
        seen.iter().any(|(r, _)| r == "hot_left") && seen.iter().any(|(r, _)| r == "hot_right")
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A thread filter: the main thread's TID is the PID.
    let r = trace(
        &[
            "profile", "--tid", &pid, "-d", "1s", "-F", "999", "-f", "folded",
        ],
        LIMIT,
    );
    let seen = roots(&r.stdout);
    assert!(r.ok && !seen.is_empty(), "{}", r.stderr);
    assert!(
        seen.iter().all(|(r, _)| r == "hot_left"),
        "other threads sampled: {seen:?}"
    );
}

#[test]
fn comm_filter_never_shows_another_process() {
    let _g = serial();
    let (_left, _right) = two_workloads();
    let r = trace(
        &[
            "profile",
            "--comm",
            "hot_right",
            "-d",
            "2s",
            "-F",
            "999",
            "-f",
            "folded",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let seen = roots(&r.stdout);
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|(r, _)| r == "hot_right"),
        "other processes sampled: {seen:?}"
    );
}

#[test]
fn cgroup_filter_never_shows_another_process() {
    let _g = serial();
    let (_left, right) = two_workloads();
    let mount = tracer::filter::cgroup2_mount().unwrap();
    let name = format!("lbd-trace-test-{}", std::process::id());
    let cg = mount.join(&name);
    fs::create_dir_all(&cg).unwrap();
    struct Rm(std::path::PathBuf, std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            // Move anything left back to the root so the directory can go.
            if let Ok(p) = fs::read_to_string(self.0.join("cgroup.procs")) {
                for pid in p.lines() {
                    let _ = fs::write(self.1.join("cgroup.procs"), pid);
                }
            }
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(cg.clone(), mount.clone());
    fs::write(cg.join("cgroup.procs"), right.pid().to_string()).unwrap();
    // Relative to the cgroup2 mount, as an operator names a systemd unit.
    let r = trace(
        &[
            "profile", "--cgroup", &name, "-d", "2s", "-F", "999", "-f", "folded",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let seen = roots(&r.stdout);
    assert!(!seen.is_empty(), "{}", r.stderr);
    assert!(
        seen.iter().all(|(r, _)| r == "hot_right"),
        "other processes sampled: {seen:?}"
    );
    drop(right);
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    let cases: &[(&[&str], &str)] = &[
        (&["profile", "--duration", "5x"], "unknown unit"),
        (
            &["profile", "--pid", "999999999", "-d", "1s"],
            "no process or thread 999999999",
        ),
        (
            &["profile", "--cgroup", "no/such/cgroup", "-d", "1s"],
            "no such cgroup",
        ),
        (
            &["profile", "--comm", "a-very-long-command-name", "-d", "1s"],
            "1 to 15 bytes",
        ),
        (&["profile", "--freq", "0"], "freq"),
        (
            &[
                "offcpu",
                "--min-block",
                "1s",
                "--max-block",
                "1ms",
                "-d",
                "1s",
            ],
            "--min-block",
        ),
        (&["latency", "nothing"], "expected BINARY:FUNCTION"),
        (
            &["latency", "/no/such/binary:main", "-d", "1s"],
            "no such file",
        ),
        (
            &["latency", "syscall:nosuchcall", "-d", "1s"],
            "unknown syscall",
        ),
        (
            &["latency", "kfunc:no_such_kernel_function_lbd", "-d", "1s"],
            "no_such_kernel_function_lbd",
        ),
        (
            &["diff", "/no/such.folded", "/no/such2.folded"],
            "/no/such.folded",
        ),
    ];
    for (args, want) in cases {
        let r = trace(args, LIMIT);
        assert!(!r.ok, "{args:?} succeeded");
        assert!(
            r.stderr.contains(want),
            "{args:?}: stderr lacks {want:?}: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            r.stderr
        );
    }
    let bad = workdir().join("bad.folded");
    fs::write(&bad, "a;b 1\nthis line has no count\n").unwrap();
    let r = trace(&["diff", path_str(&bad), path_str(&bad)], LIMIT);
    assert!(!r.ok && r.stderr.contains("bad.folded:2"), "{}", r.stderr);
}

#[test]
fn diff_flamegraph_from_two_folded_files() {
    let dir = workdir();
    let (a, b, out) = (
        dir.join("before.folded"),
        dir.join("after.folded"),
        dir.join("diff.svg"),
    );
    fs::write(&a, "app;main;parse 70\napp;main;send 30\n").unwrap();
    fs::write(&b, "app;main;parse 20\napp;main;send 80\n").unwrap();
    let r = trace(
        &["diff", path_str(&a), path_str(&b), "-o", path_str(&out)],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let svg = fs::read_to_string(&out).unwrap();
    assert!(svg.contains("parse") && svg.contains("send"));
    // inferno colours grown frames red and shrunk ones blue.
    assert!(
        svg.contains("rgb(255,") || svg.contains("fill=\"rgb(255"),
        "no red frame"
    );
    assert!(svg.contains(",255)"), "no blue frame");
}

#[test]
fn container_process_that_exits_midway_still_symbolizes() {
    let _g = serial();
    let exe = build_c("hot", HOT_C);
    // A private mount namespace with a tmpfs only it sees, as in a container:
    // the path the process maps its executable from does not exist on the
    // host. It runs 3 s of CPU and exits while the capture goes on.
    let script = format!(
        "mount -t tmpfs lbd-trace-test /mnt && cp {} /mnt/ctr_hot && exec /mnt/ctr_hot 3",
        exe.display()
    );
    let w = in_private_mount_ns(&script);
    let pid = w.pid().to_string();
    let r = trace(
        &[
            "profile", "--pid", &pid, "-d", "30s", "-F", "499", "-f", "folded",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("all target processes exited"),
        "{}",
        r.stderr
    );
    assert!(
        !std::path::Path::new("/mnt/ctr_hot").exists(),
        "the test binary leaked to the host"
    );
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    let a = share(&stacks, "hot_a");
    assert!(a > 0.5, "hot_a share {a:.3} in {stacks:?}");
    assert!(
        stacks
            .iter()
            .any(|(s, _)| s.starts_with("ctr_hot;") && s.contains(";main;hot_a;spin_for"))
    );
}

#[test]
fn ctrl_c_ends_the_capture_and_keeps_what_was_sampled() {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    // No --duration: runs until SIGINT.
    let mut t = Tracer::spawn(&["profile", "--comm", "hot", "-F", "499", "-f", "folded"]);
    t.wait_ready();
    // Samples come while the workload runs: wait for its CPU time (~250
    // samples at 499 Hz), not wall time (it runs less on a loaded machine).
    let ran = |since| lab::procfs::cpu_time(pid.parse().unwrap()).unwrap() - since;
    let start = ran(Duration::ZERO);
    lab::wait_for(
        "the workload to run 500 ms under the profiler",
        LIMIT,
        || ran(start) >= Duration::from_millis(500),
    );
    t.interrupt();
    let r = t.finish(LIMIT);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("interrupted"), "{}", r.stderr);
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    assert!(share(&stacks, "hot_a") > 0.5, "{stacks:?} (pid {pid})");
}

#[test]
fn live_line_on_a_terminal_shows_samples_and_lost() {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    // `script` gives the tracer a pseudo-terminal as stderr.
    let cmd = format!(
        "{} profile --pid {pid} -d 2500ms -F 499 -f folded -o /dev/null",
        bin()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .output()
        .expect("running script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // "\r\x1b[K   1.0s  493 samples  lost 0", refreshed every second.
    let live: Vec<&str> = text
        .split('\r')
        .filter(|l| l.contains(" samples  lost "))
        .collect();
    assert!(live.len() >= 2, "no live line: {text:?}");
}

#[test]
fn convert_turns_folded_into_pprof_and_svg() {
    let dir = workdir();
    let (f, pb, svg) = (
        dir.join("conv.folded"),
        dir.join("conv.pb.gz"),
        dir.join("conv.svg"),
    );
    fs::write(&f, "app;main;read_[k] 5\napp;main;work 15\n").unwrap();
    let r = trace(
        &[
            "convert",
            path_str(&f),
            "-f",
            "pprof",
            "-o",
            path_str(&pb),
            "--offcpu",
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let p = tracer::pprof::decode(&fs::read(&pb).unwrap()).unwrap();
    assert_eq!(p.total(), 20);
    assert_eq!(
        p.string_table[p.sample_type[0].unit as usize],
        "microseconds"
    );
    let r = trace(
        &["convert", path_str(&f), "-f", "svg", "-o", path_str(&svg)],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(fs::read_to_string(&svg).unwrap().contains("work"));
}

#[test]
fn draining_the_kernel_maps_mid_capture_keeps_every_sample() {
    let _g = serial();
    let (_w, pid) = workload("hot", HOT_C, "30");
    let stats = workdir().join("drain-stats.json");
    // Counts and stacks move to userspace every 100 ms (2 s by default).
    let r = trace(
        &[
            "profile",
            "--pid",
            &pid,
            "-d",
            "2s",
            "-F",
            "999",
            "-f",
            "folded",
            "--drain-every",
            "100ms",
            "--stats",
            path_str(&stats),
        ],
        LIMIT,
    );
    assert!(r.ok, "{}", r.stderr);
    let stacks = folded(&String::from_utf8_lossy(&r.stdout));
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let st: serde_json::Value = serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
    // Every sample the kernel counted is in the output (none lost to the
    // read-then-delete window at this rate), and the shares still hold.
    assert_eq!(st["lost"], 0, "{st}");
    let taken = st["samples"].as_u64().unwrap();
    assert!(
        total as f64 >= 0.99 * taken as f64 && total <= taken,
        "{total} of {taken} samples in the output"
    );
    let a = share(&stacks, "hot_a");
    assert!((a - 0.70).abs() <= 0.05, "hot_a share {a:.3}");
}

#[test]
fn cpu_option_samples_only_the_chosen_cpus() {
    let _g = serial();
    let exe = build_c("hot", HOT_C);
    // The workload is pinned to CPU 1: sampling CPU 0 sees none of it,
    // sampling CPU 1 sees it.
    let w = Proc::spawn(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(&exe)
            .arg("30"),
    );
    let pid = w.pid().to_string();
    let count = |cpu: &str| -> u64 {
        let r = trace(
            &[
                "profile", "--pid", &pid, "--cpu", cpu, "-d", "1s", "-F", "499", "-f", "folded",
            ],
            LIMIT,
        );
        assert!(r.ok, "{}", r.stderr);
        folded(&String::from_utf8_lossy(&r.stdout))
            .iter()
            .map(|(_, c)| c)
            .sum()
    };
    assert_eq!(count("0"), 0);
    assert!(count("1") > 100);
}
