//! `make bench-dataplane`: per-packet cost of the XDP forwarder through
//! BPF_PROG_TEST_RUN, measured the way that stays comparable on a noisy
//! shared VM: a loop of repeat-1 runs on fresh input (the kernel copies the
//! input every run), the kernel-reported duration of each, mean and p50,
//! pinned to one CPU, with a trivial `return XDP_TX` program measured in
//! the same run, interleaved with the cases, as the baseline.
//! Also the Maglev build time, and what the listener watch (a BPF program
//! on every TCP state change of the host) costs: its run time per event
//! from the kernel's BPF statistics, and loopback connections per second
//! with and without it, in alternated rounds. Writes
//! target/bench/dataplane.json.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use dataplane::maglev;
use dataplane_common::{Bucket, ENCAP_GUE, ENCAP_IPIP, HOP_FIRST, NO_HOP};
use lab::{bed::*, packets::*, procfs::loadavg};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Per-packet cost of the lbd XDP forwarder (BPF_PROG_TEST_RUN)")]
struct Args {
    /// Runs per case (each a separate repeat-1 syscall).
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// CPU to pin the measuring thread to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// Passes: each measures every case in `rounds` interleaved rounds, so
    /// the spread between passes shows how stable the figures are.
    #[arg(long, default_value_t = 2)]
    passes: usize,
    /// Rounds per pass.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Measure only the cases whose name contains one of these (the
    /// baseline always runs); for A/B runs while optimising.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, default_value = "target/bench/dataplane.json")]
    out: PathBuf,
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// One case: the tables and encapsulation it needs, its packet, and the
/// verdict that proves it took the intended path.
struct Case {
    name: &'static str,
    encap: u8,
    tables: (u16, u16),
    packet: Vec<u8>,
    program: &'static str,
    expect: u32,
}

/// One case's figures in one pass; ratios are to the baseline of the same
/// pass (its rounds interleave with the case's).
#[derive(Serialize)]
struct CaseOut {
    name: &'static str,
    ns_mean: f64,
    ns_p50: u64,
    ns_above_baseline_mean: f64,
    ns_above_baseline_p50: i64,
    ratio_mean: f64,
    ratio_p50: f64,
}

#[derive(Serialize)]
struct Pass {
    baseline_xdp_tx_ns: f64,
    baseline_xdp_tx_ns_p50: u64,
    cases: Vec<CaseOut>,
}

#[derive(Serialize)]
struct Report {
    runs_per_case: usize,
    rounds_per_pass: usize,
    /// Load average (1 min) before and after, for a reader judging noise.
    loadavg_before: f64,
    loadavg_after: f64,
    /// Each case's figures per pass.
    passes: Vec<Pass>,
    /// Per case: ratios to the same pass's baseline, averaged and per pass.
    cases: Vec<CaseSummary>,
    maglev_build_ms: std::collections::BTreeMap<String, f64>,
    listen_watch: ListenWatchOut,
}

/// The listener watch's cost.
#[derive(Serialize)]
struct ListenWatchOut {
    /// Kernel-counted run time of `lbd_listen_close` per tracepoint event
    /// (BPF statistics: the program only, not the tracepoint's own work).
    ns_per_event: f64,
    /// Events it ran on while `connections` loopback connections were
    /// opened and closed (other TCP activity of the host included).
    events: u64,
    connections: usize,
    /// Loopback connections (connect, accept, close both ends) per second,
    /// one figure per round, watch attached and detached alternately.
    conns_per_s_with: Vec<f64>,
    conns_per_s_without: Vec<f64>,
    /// Median with / median without.
    ratio: f64,
}

/// A case over all passes: ratios averaged over the passes, and each
/// pass's ratio (the spread).
#[derive(Serialize)]
struct CaseSummary {
    name: &'static str,
    ratio_mean: f64,
    ratio_p50: f64,
    ratio_mean_per_pass: Vec<f64>,
    ratio_p50_per_pass: Vec<f64>,
}

fn average(v: &[f64]) -> f64 {
    round2(v.iter().sum::<f64>() / v.len() as f64)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Mean and p50 of a pass's samples.
fn stats(s: &mut [u64]) -> (f64, u64) {
    s.sort_unstable();
    (
        s.iter().sum::<u64>() as f64 / s.len() as f64,
        s[s.len() / 2],
    )
}

/// Runs every case in `rounds` interleaved rounds (noise hits all alike)
/// and returns each case's samples, in case order.
fn measure(bed: &mut Bed, cases: &[Case], runs: usize, rounds: usize) -> Result<Vec<Vec<u64>>> {
    let per_round = runs.div_ceil(rounds);
    let mut samples = vec![Vec::with_capacity(per_round * rounds); cases.len()];
    for round in 0..rounds {
        for (c, s) in cases.iter().zip(&mut samples) {
            bed.set_encap(c.encap)?;
            // Every bucket of a multi-node table has a fallback: the local
            // cases pay for the listener check as they would on a node.
            bed.buckets(Bucket {
                first: c.tables.0,
                second: c.tables.1,
                fallback: N3,
                _pad: 0,
            })?;
            for _ in 0..per_round {
                let r = bed.run_program(c.program, &c.packet)?;
                ensure!(
                    r.action == c.expect,
                    "{}: verdict {} (want {})",
                    c.name,
                    r.action,
                    c.expect
                );
                s.push(r.duration.as_nanos() as u64);
            }
        }
        eprint!("\rround {}/{rounds}", round + 1);
    }
    eprintln!();
    Ok(samples)
}

fn summarise(cases: &[Case], mut samples: Vec<Vec<u64>>) -> Pass {
    let (base_mean, base_p50) = stats(&mut samples[0]);
    let mut out = Vec::new();
    for (c, s) in cases.iter().zip(&mut samples).skip(1) {
        let (mean, p50) = stats(s);
        out.push(CaseOut {
            name: c.name,
            ns_mean: round1(mean),
            ns_p50: p50,
            ns_above_baseline_mean: round1(mean - base_mean),
            ns_above_baseline_p50: p50 as i64 - base_p50 as i64,
            ratio_mean: round2(mean / base_mean),
            ratio_p50: round2(p50 as f64 / base_p50 as f64),
        });
    }
    Pass {
        baseline_xdp_tx_ns: round1(base_mean),
        baseline_xdp_tx_ns_p50: base_p50,
        cases: out,
    }
}

/// Loopback connections per second over `n` connections to `listener`.
fn connection_rate(listener: &std::net::TcpListener, n: usize) -> Result<f64> {
    let addr = listener.local_addr()?;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let client = std::net::TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        drop((client, server));
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What the listener watch costs (see `ListenWatchOut`).
fn measure_listen_watch(bed: &mut Bed) -> Result<ListenWatchOut> {
    const ROUNDS: usize = 6;
    const CONNS: usize = 2000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    // Run time per event: statistics on only while counting (they cost
    // every BPF program of the host two clock reads per run).
    let (events, run_time) = {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
        let (n0, t0) = bed.dp.listen_watch_runs()?;
        connection_rate(&listener, CONNS)?;
        let (n1, t1) = bed.dp.listen_watch_runs()?;
        (n1 - n0, t1 - t0)
    };
    ensure!(events > 0, "the listener watch never ran");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    eprint!("listener watch:");
    for round in 0..ROUNDS {
        bed.dp.unwatch_listeners()?;
        without.push(connection_rate(&listener, CONNS)?);
        bed.dp.watch_listeners()?;
        with.push(connection_rate(&listener, CONNS)?);
        eprint!(" {}/{ROUNDS}", round + 1);
    }
    eprintln!();
    Ok(ListenWatchOut {
        ns_per_event: round1(run_time.as_nanos() as f64 / events as f64),
        events,
        connections: CONNS,
        ratio: round2(median(&with) / median(&without)),
        conns_per_s_with: with.iter().map(|&r| r.round()).collect(),
        conns_per_s_without: without.iter().map(|&r| r.round()).collect(),
    })
}

fn pin_to(cpu: usize) -> Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        ensure!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    pin_to(args.cpu.min(cpus - 1))?;
    let mut bed = Bed::new(ENCAP_GUE)?;

    // A real connection, so the socket lookup of the second-hop case finds
    // an established socket.
    let listener = std::net::TcpListener::bind(SocketAddr::new(IpAddr::from(VIP4), 80))?;
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    client.bind(&SocketAddr::new(IpAddr::from(CLIENT4), 0).into())?;
    client.connect(&SocketAddr::new(IpAddr::from(VIP4), 80).into())?;
    let (_server_side, _) = listener.accept()?;
    let cport = client
        .local_addr()?
        .as_socket()
        .context("client address")?
        .port();

    let syn = tcp4(CLIENT4, 40000, VIP4, 80, Tcp::Syn, b"");
    let syn6 = tcp6(CLIENT6, 40003, VIP6, 80, Tcp::Syn, b"");
    let ack = tcp4(CLIENT4, 40001, VIP4, 80, Tcp::Ack, &[0x42; 64]);
    let established = tcp4(CLIENT4, cport, VIP4, 80, Tcp::Ack, &[0x42; 64]);
    // Not VIP traffic as a node sees it: addressed to the node itself.
    let not_vip = tcp4(CLIENT4, 40002, SELF4, 22, Tcp::Ack, &[0x42; 64]);
    let h = flow4(CLIENT4, 40001, VIP4, 80, 6);
    let gue_in = arriving(&ack, Underlay::V4(N2_4, SELF4), true, HOP_FIRST, h);
    // The same tunnel packet from an address that is no member's.
    let stranger = arriving(&ack, Underlay::V4(CLIENT4, SELF4), true, HOP_FIRST, h);

    let case = |name, encap, tables, packet: &Vec<u8>, program, expect| Case {
        name,
        encap,
        tables,
        packet: packet.clone(),
        program,
        expect,
    };
    let mut cases = vec![
        case(
            "baseline_xdp_tx",
            ENCAP_GUE,
            (SELF, NO_HOP),
            &ack,
            "lbd_tx",
            XDP_TX,
        ),
        case(
            "forward_gue",
            ENCAP_GUE,
            (N2, NO_HOP),
            &ack,
            "lbd_xdp",
            XDP_TX,
        ),
        case(
            "forward_ipip",
            ENCAP_IPIP,
            (N2, NO_HOP),
            &ack,
            "lbd_xdp",
            XDP_TX,
        ),
        case(
            "local_syn",
            ENCAP_GUE,
            (SELF, N2),
            &syn,
            "lbd_xdp",
            XDP_PASS,
        ),
        // A non-SYN packet of a local bucket without a second hop: kept
        // without a socket lookup (the steady state of a local flow).
        case(
            "local_no_second_hop",
            ENCAP_GUE,
            (SELF, NO_HOP),
            &ack,
            "lbd_xdp",
            XDP_PASS,
        ),
        // The bucket has a second hop, so the lookup runs and finds the
        // real established socket above: the packet stays local.
        case(
            "local_established_socket",
            ENCAP_GUE,
            (SELF, N2),
            &established,
            "lbd_xdp",
            XDP_PASS,
        ),
        // Listener-aware steering: a SYN to the IPv6 VIP, on whose port
        // nothing listens, goes to the bucket's fallback (node 3).
        case(
            "syn_to_fallback",
            ENCAP_GUE,
            (SELF, NO_HOP),
            &syn6,
            "lbd_xdp",
            XDP_TX,
        ),
        case(
            "second_hop_forward",
            ENCAP_GUE,
            (SELF, N2),
            &ack,
            "lbd_xdp",
            XDP_TX,
        ),
        case(
            "decap",
            ENCAP_GUE,
            (SELF, NO_HOP),
            &gue_in,
            "lbd_xdp",
            XDP_PASS,
        ),
        case(
            "decap_not_member",
            ENCAP_GUE,
            (SELF, NO_HOP),
            &stranger,
            "lbd_xdp",
            XDP_DROP,
        ),
        case(
            "not_vip",
            ENCAP_GUE,
            (SELF, NO_HOP),
            &not_vip,
            "lbd_xdp",
            XDP_PASS,
        ),
    ];

    cases.retain(|c| {
        c.program == "lbd_tx"
            || args.only.is_empty()
            || args.only.iter().any(|o| c.name.contains(o.as_str()))
    });
    let loadavg_before = loadavg();
    let mut passes = Vec::new();
    for pass in 0..args.passes {
        eprintln!("pass {}/{}", pass + 1, args.passes);
        let samples = measure(&mut bed, &cases, args.runs, args.rounds)?;
        passes.push(summarise(&cases, samples));
    }
    let loadavg_after = loadavg();

    let mut maglev_build_ms = std::collections::BTreeMap::new();
    for n in [10usize, 100] {
        maglev_build_ms.insert(
            n.to_string(),
            maglev::bench_build_ms(n, maglev::DEFAULT_TABLE_SIZE, 21),
        );
    }
    let listen_watch = measure_listen_watch(&mut bed)?;
    let summary = cases
        .iter()
        .skip(1)
        .enumerate()
        .map(|(i, c)| {
            let means: Vec<f64> = passes.iter().map(|p| p.cases[i].ratio_mean).collect();
            let p50s: Vec<f64> = passes.iter().map(|p| p.cases[i].ratio_p50).collect();
            CaseSummary {
                name: c.name,
                ratio_mean: average(&means),
                ratio_p50: average(&p50s),
                ratio_mean_per_pass: means,
                ratio_p50_per_pass: p50s,
            }
        })
        .collect();
    let report = Report {
        runs_per_case: args.runs.div_ceil(args.rounds) * args.rounds,
        rounds_per_pass: args.rounds,
        loadavg_before,
        loadavg_after,
        passes,
        cases: summary,
        maglev_build_ms,
        listen_watch,
    };

    println!("load average {loadavg_before:.2} before, {loadavg_after:.2} after");
    for (i, p) in report.passes.iter().enumerate() {
        println!(
            "pass {}: {:<26} {:>9} {:>8} {:>10} {:>9} {:>10} {:>9}",
            i + 1,
            "case",
            "mean ns",
            "p50 ns",
            "mean-base",
            "p50-base",
            "ratio mean",
            "ratio p50"
        );
        println!(
            "        {:<26} {:>9.1} {:>8} {:>10} {:>9} {:>10} {:>9}",
            "baseline (return XDP_TX)",
            p.baseline_xdp_tx_ns,
            p.baseline_xdp_tx_ns_p50,
            "-",
            "-",
            "1",
            "1"
        );
        for c in &p.cases {
            println!(
                "        {:<26} {:>9.1} {:>8} {:>10.1} {:>9} {:>10.2} {:>9.2}",
                c.name,
                c.ns_mean,
                c.ns_p50,
                c.ns_above_baseline_mean,
                c.ns_above_baseline_p50,
                c.ratio_mean,
                c.ratio_p50
            );
        }
    }
    for (n, ms) in &report.maglev_build_ms {
        println!("maglev build, M=65537, N={n:<4} {ms:>8.2} ms");
    }
    let w = &report.listen_watch;
    println!(
        "listener watch: {:.1} ns per TCP state change ({} events, {} connections); \
         loopback connections/s with / without: {:.3} (median of {} rounds each)",
        w.ns_per_event,
        w.events,
        w.connections,
        w.ratio,
        w.conns_per_s_with.len()
    );
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
