//! `make bench-flowmark`: the per-packet cost of the egress program through
//! BPF_PROG_TEST_RUN (a loop of repeat=1 runs with a fresh input each time,
//! against a trivial program in the same run), and iperf3 throughput over a
//! veth pair with marking on and off, alternated in one run.
//!
//! Writes target/bench/flowmark.json and prints a table.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use clap::Parser;
use flowmark::marker::Marker;
use flowmark_common::{FlowKey, encode_label, with_entropy};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/bench/flowmark.json")]
    out: String,
    /// BPF_PROG_TEST_RUN runs per packet kind.
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// iperf3 rounds per setting (on, off), alternated.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per iperf3 round.
    #[arg(long, default_value_t = 2)]
    seconds: u32,
}

const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SRV6: &str = "2001:db8:9::1";
const CLI6: &str = "2001:db8:9::2";

fn v6_tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&[0x86, 0xdd]);
    p.extend_from_slice(&(6u32 << 28).to_be_bytes());
    p.extend_from_slice(&(20u16 + 64).to_be_bytes());
    p.extend_from_slice(&[6, 64]);
    p.extend_from_slice(&SRC6);
    p.extend_from_slice(&DST6);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0u8; 16 + 64]);
    p
}

fn v4_tcp() -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&[
        0x45, 0, 0, 104, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ]);
    p.extend_from_slice(&[0x1f, 0x90, 0xa4, 0x10]);
    p.extend_from_slice(&[0u8; 16 + 64]);
    p
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// Kernel-reported duration of one run, in ns.
fn once(prog: &SchedClassifier, input: &[u8], out: &mut [u8]) -> anyhow::Result<f64> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(input),
        data_out: Some(out),
        ..Default::default()
    })?;
    Ok(r.duration.as_nanos() as f64)
}

struct Stat {
    mean: f64,
    p50: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        p50: v.get(v.len() / 2).copied().unwrap_or(0.0),
    }
}

fn per_packet(args: &Args) -> anyhow::Result<[Stat; 4]> {
    let mut m = Marker::load()?;
    let key = FlowKey::new(SRC6, DST6, 8080, 41000, 6);
    m.set_flow(&key, with_entropy(encode_label(3, 14), 5))?;
    m.baseline()?;
    let inputs = [
        v6_tcp(8080, 41000),
        v6_tcp(8080, 41000),
        v6_tcp(8080, 41001),
        v4_tcp(),
    ];
    let mut out = vec![0u8; 256];
    let mut samples: [Vec<f64>; 4] = Default::default();
    // Interleave in blocks so drift on a shared machine hits every kind alike.
    let block = 1000;
    for _ in 0..args.runs.div_ceil(block) {
        for (i, input) in inputs.iter().enumerate() {
            for _ in 0..block {
                let prog = if i == 0 { m.baseline()? } else { m.program()? };
                let ns = once(prog, input, &mut out)?;
                samples[i].push(ns);
            }
        }
    }
    let [a, b, c, d] = samples;
    Ok([stat(a), stat(b), stat(c), stat(d)])
}

fn sh(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("{args:?} failed");
    }
    Ok(())
}

struct Lab {
    srv: String,
    cli: String,
    server: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            unsafe { libc::kill(s.id() as i32, libc::SIGTERM) };
            let _ = s.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
    }
}

fn iperf_round(lab: &Lab, cport: u16, seconds: u32) -> anyhow::Result<f64> {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.srv,
            "iperf3",
            "-6",
            "-J",
            "-c",
            CLI6,
            "-t",
            &seconds.to_string(),
        ])
        .args(["--cport", &cport.to_string(), "--connect-timeout", "3000"])
        .output()
        .context("iperf3 client")?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3: {}", v["error"]))
}

fn throughput(args: &Args) -> anyhow::Result<(f64, f64, u64)> {
    let id = std::process::id();
    let mut lab = Lab {
        srv: format!("flm-bs-{id}"),
        cli: format!("flm-bc-{id}"),
        server: None,
    };
    sh(&["ip", "netns", "add", &lab.srv])?;
    sh(&["ip", "netns", "add", &lab.cli])?;
    sh(&[
        "ip", "-n", &lab.srv, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        "netns", &lab.cli,
    ])?;
    for (ns, dev, a) in [(&lab.srv, "veth0", SRV6), (&lab.cli, "veth1", CLI6)] {
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{a}/64"),
            "dev",
            dev,
            "nodad",
        ])?;
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
    }
    lab.server = Some(
        Command::new("ip")
            .args(["netns", "exec", &lab.cli, "iperf3", "-s", "-6"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(300));
    // Marker attaches by name in this thread's namespace: enter the server's.
    let own = File::open("/proc/self/ns/net")?;
    let ns = File::open(format!("/var/run/netns/{}", lab.srv))?;
    // SAFETY: plain setns on valid namespace fds; this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    let result = (|| {
        let (mut on, mut off, mut marked) = (vec![], vec![], 0u64);
        for round in 0..args.rounds * 2 {
            let cport = 45000 + round as u16;
            if round % 2 == 0 {
                let mut m = Marker::load()?;
                m.attach("veth0")?;
                let key = FlowKey::new(SRC6, DST6, cport, 5201, 6);
                m.set_flow(&key, with_entropy(encode_label(3, 14), 5))?;
                on.push(iperf_round(&lab, cport, args.seconds)?);
                marked += m
                    .stats()
                    .iter()
                    .find(|(n, _)| *n == "marked_flow")
                    .map_or(0, |(_, v)| *v);
            } else {
                off.push(iperf_round(&lab, cport, args.seconds)?);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        Ok((mean(&on), mean(&off), marked))
    })();
    // SAFETY: back to the namespace we came from.
    unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) };
    result
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin_to_cpu0();
    let t0 = Instant::now();
    let [base, marked, unmarked, v4] = per_packet(&args)?;
    println!(
        "flowmark egress program, BPF_PROG_TEST_RUN, {} runs per kind (repeat=1), CPU 0",
        args.runs
    );
    println!(
        "{:<28} {:>9} {:>9} {:>15}",
        "packet", "mean ns", "p50 ns", "above baseline"
    );
    for (name, s) in [
        ("baseline (trivial program)", &base),
        ("IPv6, registered flow", &marked),
        ("IPv6, unregistered", &unmarked),
        ("IPv4", &v4),
    ] {
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>15.1}",
            name,
            s.mean,
            s.p50,
            s.mean - base.mean
        );
    }
    let (on, off, marked_packets) = throughput(&args)?;
    if marked_packets == 0 {
        bail!("the marked iperf3 rounds marked no packet: the figure would be meaningless");
    }
    let ratio = on / off;
    println!(
        "iperf3 over veth, {} x {} s per setting, alternated: marked {:.2} Gb/s, unmarked {:.2} Gb/s, ratio {:.3}",
        args.rounds,
        args.seconds,
        on / 1e9,
        off / 1e9,
        ratio
    );
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goals: marked <= 40 ns above baseline ({}), ratio >= 0.97 ({})",
        met(marked.mean - base.mean <= 40.0),
        met(ratio >= 0.97)
    );
    let out = json!({
        "baseline_ns": base.mean,
        "marked_ns": marked.mean,
        "unmarked_ns": unmarked.mean,
        "ipv4_ns": v4.mean,
        "marked_above_baseline_ns": marked.mean - base.mean,
        "unmarked_above_baseline_ns": unmarked.mean - base.mean,
        "ipv4_above_baseline_ns": v4.mean - base.mean,
        "p50_ns": { "baseline": base.p50, "marked": marked.p50, "unmarked": unmarked.p50, "ipv4": v4.p50 },
        "runs_per_kind": args.runs,
        "iperf_ratio": ratio,
        "iperf_marked_gbps": on / 1e9,
        "iperf_unmarked_gbps": off / 1e9,
        "iperf_rounds_per_setting": args.rounds,
        "iperf_marked_packets": marked_packets,
        "goals": { "marked_above_baseline_ns_max": 40, "iperf_ratio_min": 0.97 },
    });
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&out)?)?;
    println!("wrote {} in {:.1} s", args.out, t0.elapsed().as_secs_f64());
    Ok(())
}
