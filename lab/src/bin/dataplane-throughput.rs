//! `make bench-dataplane`, part 2: the forward path under real traffic.
//! TCP uploads through the dataplane lab (client -> Linux router -> nodes,
//! XDP forwarder on every node's uplink, MSS clamp on), the same flows
//! (client ports owned by node 2) sent two ways in alternated rounds:
//! - forward: the router's route names node 1 only, so node 1 encapsulates
//!   every segment to node 2 (GUE or IPIP), which decapsulates it;
//! - local: the route names node 2, the segments arrive where they belong.
//!
//! Throughput of each, their ratio, and the host's softirq CPU time per GB
//! (/proc/stat, all CPUs: the namespaces share the host's CPUs, so the
//! forwarding node's share shows as the difference between the two paths).
//! One stream and 8 parallel streams. Writes
//! target/bench/dataplane-throughput.json.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Result, ensure};
use clap::Parser;
use dataplane_common::{ENCAP_GUE, ENCAP_IPIP};
use lab::{CLIENT4, Lab, LabOptions, VIP4, procfs::loadavg};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Forward path vs local path under TCP uploads (dataplane lab)")]
struct Args {
    /// Megabytes uploaded per round, split over the round's streams.
    #[arg(long, default_value_t = 256)]
    mb: usize,
    /// Rounds per path (forward and local alternate).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    #[arg(long, default_value = "target/bench/dataplane-throughput.json")]
    out: PathBuf,
}

/// The node the flows belong to, and the one that forwards them.
const OWNER: u16 = 2;
const FORWARDER: u16 = 1;

/// Softirq time from /proc/stat: (all CPUs, per CPU), in clock ticks.
fn softirq_ticks() -> Result<(u64, Vec<u64>)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut total = 0;
    let mut per_cpu = Vec::new();
    for line in stat.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // cpuN user nice system idle iowait irq softirq ...
        if f.len() > 7 && f[0].starts_with("cpu") {
            let softirq: u64 = f[7].parse()?;
            if f[0] == "cpu" {
                total = softirq;
            } else {
                per_cpu.push(softirq);
            }
        }
    }
    Ok((total, per_cpu))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

#[derive(Serialize, Clone)]
struct Round {
    path: &'static str,
    gbit_per_s: f64,
    softirq_s_per_gb: f64,
    /// Share of the round's softirq time on each CPU.
    softirq_share_per_cpu: Vec<f64>,
}

#[derive(Serialize)]
struct Set {
    encap: &'static str,
    streams: usize,
    rounds: Vec<Round>,
    forward_gbit_per_s_median: f64,
    local_gbit_per_s_median: f64,
    /// forward / local, medians; the goal is >= 0.9.
    throughput_ratio: f64,
    forward_softirq_s_per_gb_median: f64,
    local_softirq_s_per_gb_median: f64,
    /// Packets node 1 encapsulated (proves the forward rounds took the
    /// forward path) and node 2 decapsulated.
    forwarder_fwd_first_hop: u64,
    owner_decap: u64,
}

#[derive(Serialize)]
struct Report {
    mb_per_round: usize,
    loadavg_before: f64,
    loadavg_after: f64,
    softirq_source: &'static str,
    sets: Vec<Set>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Client ports whose flows to VIP4:80 node `owner` owns, from `from` on.
fn owned_ports(lab: &Lab, owner: u16, from: u16, count: usize) -> Vec<u16> {
    (from..u16::MAX)
        .filter(|&p| {
            lab.predict(SocketAddr::new(IpAddr::V4(CLIENT4), p), IpAddr::V4(VIP4))
                .is_some_and(|b| b.first == owner)
        })
        .take(count)
        .collect()
}

/// One round: every port uploads `bytes` at once; throughput and softirq.
fn round(lab: &Lab, path: &'static str, ports: &[u16], bytes: usize) -> Result<Round> {
    let conns = ports
        .iter()
        .map(|&p| {
            lab::connect(
                lab,
                IpAddr::V4(VIP4),
                Some(p),
                std::time::Duration::from_secs(30),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let (irq0, cpus0) = softirq_ticks()?;
    let start = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|s| std::thread::spawn(move || lab::upload(s, bytes)))
        .collect();
    for w in workers {
        let answer = w
            .join()
            .map_err(|_| anyhow::anyhow!("upload thread panicked"))??;
        ensure!(
            answer == format!("node{OWNER} received {bytes}"),
            "{path}: upload answered {answer:?}"
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let (irq1, cpus1) = softirq_ticks()?;
    let total = (bytes * ports.len()) as f64;
    let irq = (irq1 - irq0) as f64 / ticks_per_second();
    let per_cpu: Vec<f64> = cpus1
        .iter()
        .zip(&cpus0)
        .map(|(a, b)| (a - b) as f64)
        .collect();
    let sum: f64 = per_cpu.iter().sum::<f64>().max(1.0);
    Ok(Round {
        path,
        gbit_per_s: round3(total * 8.0 / secs / 1e9),
        softirq_s_per_gb: round3(irq / (total / 1e9)),
        softirq_share_per_cpu: per_cpu.iter().map(|c| round3(c / sum)).collect(),
    })
}

fn measure(encap: u8, streams: usize, args: &Args, port_base: u16) -> Result<Set> {
    let mut lab = Lab::build(LabOptions {
        nodes: 2,
        active: 2,
        encap,
        ..Default::default()
    })?;
    lab.start_servers()?;
    let ports = owned_ports(&lab, OWNER, port_base, streams * args.rounds * 2);
    ensure!(
        ports.len() == streams * args.rounds * 2,
        "too few owned ports"
    );
    let bytes = (args.mb << 20) / streams;
    let mut rounds = Vec::new();
    let mut chunks = ports.chunks(streams);
    for r in 0..args.rounds {
        // Alternate which path goes first, so a trend hits both alike.
        let order: [(&'static str, u16); 2] = if r % 2 == 0 {
            [("forward", FORWARDER), ("local", OWNER)]
        } else {
            [("local", OWNER), ("forward", FORWARDER)]
        };
        for (path, via) in order {
            lab.set_route(&[via])?;
            let ports = chunks.next().expect("enough ports");
            let res = round(&lab, path, ports, bytes)?;
            eprintln!(
                "  {path:<8} {:>7.3} Gbit/s, softirq {:.3} s/GB",
                res.gbit_per_s, res.softirq_s_per_gb
            );
            rounds.push(res);
        }
    }
    let pick = |path: &str, f: fn(&Round) -> f64| {
        median(rounds.iter().filter(|r| r.path == path).map(f).collect())
    };
    let fwd = pick("forward", |r| r.gbit_per_s);
    let local = pick("local", |r| r.gbit_per_s);
    let forwarder = lab.counters4(FORWARDER)?;
    let owner = lab.counters4(OWNER)?;
    let min_segments = (bytes * streams * args.rounds / 1500) as u64;
    ensure!(
        forwarder["fwd_first_hop"] >= min_segments,
        "node {FORWARDER} forwarded only {forwarder:?}"
    );
    Ok(Set {
        encap: if encap == ENCAP_GUE { "gue" } else { "ipip" },
        streams,
        forward_gbit_per_s_median: round3(fwd),
        local_gbit_per_s_median: round3(local),
        throughput_ratio: round3(fwd / local),
        forward_softirq_s_per_gb_median: round3(pick("forward", |r| r.softirq_s_per_gb)),
        local_softirq_s_per_gb_median: round3(pick("local", |r| r.softirq_s_per_gb)),
        forwarder_fwd_first_hop: forwarder["fwd_first_hop"],
        owner_decap: owner["decap"],
        rounds,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let loadavg_before = loadavg();
    let mut sets = Vec::new();
    let mut base = 20000;
    for streams in [1, 8] {
        for encap in [ENCAP_GUE, ENCAP_IPIP] {
            let name = if encap == ENCAP_GUE { "GUE" } else { "IPIP" };
            eprintln!("{name}, {streams} stream(s):");
            sets.push(measure(encap, streams, &args, base)?);
            base += 5000;
        }
    }
    let report = Report {
        mb_per_round: args.mb,
        loadavg_before,
        loadavg_after: loadavg(),
        softirq_source: "/proc/stat softirq column, whole host (all namespaces share its CPUs)",
        sets,
    };
    println!(
        "load average {:.2} before, {:.2} after; softirq: {}",
        report.loadavg_before, report.loadavg_after, report.softirq_source
    );
    println!(
        "{:<5} {:>7} {:>12} {:>12} {:>7} {:>14} {:>14}",
        "encap", "streams", "fwd Gbit/s", "local Gbit/s", "ratio", "fwd softirq", "local softirq"
    );
    for s in &report.sets {
        println!(
            "{:<5} {:>7} {:>12.3} {:>12.3} {:>7.3} {:>9.3} s/GB {:>9.3} s/GB",
            s.encap,
            s.streams,
            s.forward_gbit_per_s_median,
            s.local_gbit_per_s_median,
            s.throughput_ratio,
            s.forward_softirq_s_per_gb_median,
            s.local_softirq_s_per_gb_median
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
