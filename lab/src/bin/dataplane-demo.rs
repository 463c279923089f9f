//! `make demo` (until the full lbd lab exists): the XDP dataplane live in
//! network namespaces. A client, a Linux router spreading the VIPs over the
//! nodes with ECMP, and storage nodes running the forwarder; real TCP
//! connections, a node joining and another draining while long downloads run.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lab::{self, Lab, LabOptions, VIP4, VIP6};

const TIMEOUT: Duration = Duration::from_secs(5);

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn main() -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let check = || -> Result<()> {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted: tearing the lab down");
        }
        Ok(())
    };
    let started = Instant::now();

    step("Building the lab: client, router (ECMP), 4 storage nodes (3 in service)");
    let mut lab = Lab::build(LabOptions {
        nodes: 4,
        active: 3,
        ..Default::default()
    })?;
    lab.start_servers()?;
    println!("client {}  router {}", lab.client.name, lab.router.name);
    for n in &lab.nodes {
        println!(
            "{}: namespace {}, uplink {} {} / {}",
            n.name(),
            n.ns.name,
            n.uplink,
            n.underlay,
            n.underlay6
        );
    }
    println!(
        "VIPs {VIP4} and {VIP6}, port 80; Maglev table of {} buckets per VIP",
        lab.opts.table_size
    );
    println!("router's VIP routes:\n{}", indent(&lab.route()?));

    step("Steady state: 300 connections (IPv4 and IPv6) through the router");
    check()?;
    let tally = whoami_round(&lab, 300)?;
    println!("served by: {}", show(&tally.0));
    println!(
        "every connection served by the node the predictor named: {}/{}",
        tally.1, 300
    );
    print_counters(&lab)?;

    step("Long downloads running; node 4 joins (tables first, then the route)");
    check()?;
    let streams = start_streams(&lab, 24, 6000)?;
    std::thread::sleep(Duration::from_millis(800));
    lab.set_members(&[1, 2, 3, 4], &[])?;
    println!("router's VIP routes:\n{}", indent(&lab.route()?));
    let tally = whoami_round(&lab, 120)?;
    println!("new connections served by: {}", show(&tally.0));

    step("Node 3 drains: out of tables and route, still serving its connections via second hop");
    check()?;
    std::thread::sleep(Duration::from_millis(1200));
    lab.set_members(&[1, 2, 4], &[3])?;
    println!("router's VIP routes:\n{}", indent(&lab.route()?));
    let tally = whoami_round(&lab, 120)?;
    println!("new connections served by: {}", show(&tally.0));

    step("Waiting for the long downloads to finish");
    let mut ok = 0;
    let total = streams.len();
    for (local, node, t) in streams {
        check()?;
        match t.join() {
            Ok(Ok(lines)) => {
                ok += 1;
                let _ = lines;
            }
            Ok(Err(e)) => println!("  {local} on {node}: BROKEN: {e:#}"),
            Err(_) => println!("  {local} on {node}: reader panicked"),
        }
    }
    println!("long downloads completed across join and drain: {ok}/{total}");
    print_counters(&lab)?;

    step("Report");
    println!(
        "lab built, 540 short connections and {total} long downloads in {:.1?}",
        started.elapsed()
    );
    println!("downloads broken by membership changes: {}", total - ok);
    println!("tearing down (namespaces, links, pinned maps)");
    drop(lab);
    if ok != total {
        bail!("{} long downloads broke", total - ok);
    }
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn show(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// `n` connections alternating IPv4/IPv6: who served each, and how many
/// matched the predictor.
fn whoami_round(lab: &Lab, n: usize) -> Result<(BTreeMap<String, usize>, usize)> {
    let mut by_node = BTreeMap::new();
    let mut predicted_ok = 0;
    for i in 0..n {
        let vip = if i % 2 == 0 {
            IpAddr::V4(VIP4)
        } else {
            IpAddr::V6(VIP6)
        };
        let s = lab::connect(lab, vip, None, TIMEOUT)?;
        let local = s.local_addr()?;
        let mut r = lab::get(s, "/whoami")?;
        let who = lab::next_line(&mut r)?.unwrap_or_default();
        if lab
            .predict(local, vip)
            .is_some_and(|b| who == format!("node{}", b.first))
        {
            predicted_ok += 1;
        }
        *by_node.entry(who).or_insert(0) += 1;
    }
    Ok((by_node, predicted_ok))
}

type Stream = (SocketAddr, String, std::thread::JoinHandle<Result<usize>>);

fn start_streams(lab: &Lab, n: u16, ms: u64) -> Result<Vec<Stream>> {
    let mut out = Vec::new();
    for i in 0..n {
        let vip = if i % 3 == 2 {
            IpAddr::V6(VIP6)
        } else {
            IpAddr::V4(VIP4)
        };
        let s = lab::connect(lab, vip, None, TIMEOUT)?;
        let local = s.local_addr()?;
        let mut r = lab::get(s, &format!("/stream?ms={ms}"))?;
        let first = lab::next_line(&mut r)?.context("empty stream")?;
        let node = first.clone();
        out.push((
            local,
            node,
            std::thread::spawn(move || -> Result<usize> {
                let mut lines = 1;
                loop {
                    match lab::next_line(&mut r)? {
                        Some(l) if l == "done" => return Ok(lines),
                        Some(_) => lines += 1,
                        None => bail!("cut after {lines} lines"),
                    }
                }
            }),
        ));
    }
    println!("{n} downloads of {ms} ms started");
    Ok(out)
}

fn print_counters(lab: &Lab) -> Result<()> {
    println!(
        "{:<7} {:>10} {:>13} {:>14} {:>8} {:>7}",
        "node", "pass_local", "fwd_first_hop", "fwd_second_hop", "decap", "drops"
    );
    for n in &lab.nodes {
        let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
        for vip in Lab::vips() {
            for (k, v) in n.dp.counters(Some(&vip))? {
                *sum.entry(k).or_default() += v;
            }
        }
        let drops: u64 = sum
            .iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "{:<7} {:>10} {:>13} {:>14} {:>8} {:>7}",
            n.name(),
            sum["pass_local"],
            sum["fwd_first_hop"],
            sum["fwd_second_hop"],
            sum["decap"],
            drops
        );
    }
    Ok(())
}
