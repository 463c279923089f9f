//! `lbd-lab`: builds a storage-site lab from a topology file and runs the
//! demo, the scenarios or the topology benchmark in it (docs/topology-tests.md).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use topology_tests::scenarios::{self, Outcome, Scale};
use topology_tests::site::{self, Site};
use topology_tests::topology::Topology;
use topology_tests::workload::{self, Plan, Running};

#[derive(Parser)]
#[command(
    name = "lbd-lab",
    about = "A storage-site lab in network namespaces: FRR/BIRD router, lbd + nginx WebDAV nodes, clients"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and keep it running until Ctrl-C.
    Up { topology: PathBuf },
    /// Remove what a lab (crashed or running elsewhere) left behind.
    Down { topology: PathBuf },
    /// The demo: transfers through the VIPs, lbd status of every node, the router's route, a drain and undrain while transfers run.
    Demo { topology: PathBuf },
    /// Run scenarios (all when none is named) and print their outcome.
    Scenario {
        topology: PathBuf,
        names: Vec<String>,
    },
    /// Write the router's frr.conf and every node's lbd.toml for a site
    /// outside the lab (e.g. the containerlab topology) into DIR.
    Configs { topology: PathBuf, dir: PathBuf },
    /// Run every scenario and write the figures as JSON.
    Bench {
        topology: PathBuf,
        #[arg(long, default_value = "target/bench/topology.json")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match &cli.cmd {
        Cmd::Up { topology } | Cmd::Down { topology } | Cmd::Demo { topology } => topology,
        Cmd::Scenario { topology, .. } | Cmd::Bench { topology, .. } => topology,
        Cmd::Configs { topology, .. } => topology,
    };
    let topo = match Topology::load(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lbd-lab: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C or SIGTERM: tear the lab down before leaving.
    let name = topo.name.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("\nlbd-lab: interrupted, tearing down lab {name:?}");
        for what in site::teardown(&name) {
            eprintln!("  removed {what}");
        }
        std::process::exit(130);
    });
    let result = match cli.cmd {
        Cmd::Up { .. } => up(topo),
        Cmd::Down { .. } => {
            let removed = site::teardown(&topo.name);
            if removed.is_empty() {
                println!("nothing left of lab {:?}", topo.name);
            }
            for r in removed {
                println!("removed {r}");
            }
            Ok(true)
        }
        Cmd::Demo { .. } => demo(topo),
        Cmd::Configs { dir, .. } => {
            topology_tests::site::write_site_configs(&topo, &dir).map(|files| {
                for f in files {
                    println!("wrote {}", f.display());
                }
                true
            })
        }
        Cmd::Scenario { names, .. } => run_scenarios(&topo, &names, None),
        Cmd::Bench { out, .. } => run_scenarios(&topo, &[], Some(&out)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lbd-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(n: usize, total: usize, what: &str) {
    println!("\n\x1b[1m[{n}/{total}] {what}\x1b[0m");
}

fn say(what: &str) {
    println!("  .. {what}");
}

fn up(topo: Topology) -> Result<bool> {
    let site = Site::build(topo, &mut say)?;
    show_routes(&site)?;
    println!(
        "\nlab {:?} is up; configs and logs in {}. Ctrl-C tears it down.",
        site.topo.name,
        site.dir.display()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn show_routes(site: &Site) -> Result<()> {
    println!("router's routes to the VIPs (ECMP):");
    for (fam, vip) in [
        ("-4", site.topo.vips.ipv4.to_string()),
        ("-6", site.topo.vips.ipv6.to_string()),
    ] {
        let out = topology_tests::process::run_checked(
            "ip",
            &["-n", &site.router.ns, fam, "route", "show", &vip],
        )?;
        for l in out.lines() {
            println!("    {l}");
        }
    }
    Ok(())
}

/// Prints one live line about the workload until `done` holds (rewritten
/// in place on a terminal, one line every 2 s otherwise).
fn watch(w: &Running, label: &str, mut done: impl FnMut() -> bool) {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let t0 = Instant::now();
    let mut last: Option<Instant> = None;
    loop {
        let end = done() || w.finished();
        if end || tty || last.is_none_or(|l| l.elapsed() >= Duration::from_secs(2)) {
            last = Some(Instant::now());
            let p = &w.progress;
            let line = format!(
                "  {label}: {} ok, {} failed, {} in flight, {:.0} MB moved, {:.0} s",
                p.ok.load(Ordering::Relaxed),
                p.failed.load(Ordering::Relaxed),
                p.in_flight.load(Ordering::Relaxed),
                p.bytes.load(Ordering::Relaxed) as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            );
            if tty {
                print!("\r{line}   ");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
        if end {
            if tty {
                println!();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn demo(topo: Topology) -> Result<bool> {
    const STEPS: usize = 8;
    let t0 = Instant::now();
    step(
        1,
        STEPS,
        &format!(
            "building site {:?}: {:?} router, {} lbd nodes with nginx WebDAV, {} client(s)",
            topo.name, topo.router, topo.nodes, topo.clients
        ),
    );
    let mut site = Site::build(topo, &mut say)?;
    show_routes(&site)?;
    println!("{}", indent(&site.router.summary()));

    step(
        2,
        STEPS,
        "transfer workload: parallel WebDAV PUT + GET of 1-200 MB files through both VIPs, adler32 checked",
    );
    let jobs = 18;
    let w = workload::start(
        &site.clients,
        [site.topo.vips.ipv4.into(), site.topo.vips.ipv6.into()],
        Plan {
            tag: "demo".into(),
            sizes_mb: vec![200, 1, 64, 16, 200, 4],
            jobs,
            parallel: 6,
            rate_mb_s: Some(40),
        },
    );
    let warm = Instant::now();
    watch(&w, "transfers", || warm.elapsed() > Duration::from_secs(4));

    step(3, STEPS, "`lbd status` on every node");
    for n in &site.nodes {
        println!("--- node {} ---", n.id);
        println!("{}", indent(&site.lbd_cli(n.id, &["status"])?));
    }

    let k = 2.min(site.topo.nodes);
    step(
        4,
        STEPS,
        &format!("`lbd drain` on node {k} while transfers run"),
    );
    let before = site.connections(k)?;
    let d0 = Instant::now();
    site.lbd_cli(k, &["drain"])?;
    site.wait_member_state(k, "draining", Duration::from_secs(10))?;
    let others: Vec<u16> = (1..=site.topo.nodes).filter(|&i| i != k).collect();
    let withdrawn = site.wait_paths(&others, Duration::from_secs(20))?;
    let _ = d0;
    let probes = workload::probe(&site.clients[0], site.topo.vips.ipv4.into(), 90, 16)?;
    let new_on_k = probes.iter().filter(|n| **n == Some(k)).count();
    println!(
        "  node {k} had {before} connections; out of the router's ECMP route after {} ms (GRACEFUL_SHUTDOWN, then withdrawn); {new_on_k} of 90 new connections went to it",
        withdrawn.as_millis()
    );
    show_routes(&site)?;
    println!("{}", indent(&site.lbd_cli(k, &["status"])?));
    let drain_seen = Instant::now();
    watch(&w, "transfers (node draining)", || {
        drain_seen.elapsed() > Duration::from_secs(6)
    });
    let left_on_k = site.connections(k)?;

    step(5, STEPS, &format!("`lbd undrain` on node {k}"));
    site.lbd_cli(k, &["undrain"])?;
    let back = site.wait_paths(
        &(1..=site.topo.nodes).collect::<Vec<_>>(),
        Duration::from_secs(20),
    )?;
    println!("  route over all nodes again after {} ms", back.as_millis());
    show_routes(&site)?;

    step(6, STEPS, "waiting for the workload to finish");
    watch(&w, "transfers", || false);
    let transfers = w.wait()?.transfers;

    step(
        7,
        STEPS,
        "HTTP third-party copy: our VIP pushes to a foreign xrootd site with a SciTag",
    );
    let tpc_ok = topology_tests::grid_clients::demo_tpc(&site, &mut say)?;

    step(8, STEPS, "report");
    let mut per_node = std::collections::BTreeMap::<String, (usize, usize, u64)>::new();
    for t in &transfers {
        let e = per_node
            .entry(t.node.map_or("?".into(), |n| format!("node{n}")))
            .or_default();
        if t.error.is_none() {
            e.0 += 1;
            e.2 += t.bytes;
        } else {
            e.1 += 1;
        }
    }
    println!("  {:<8} {:>6} {:>7} {:>10}", "node", "ok", "failed", "MB");
    for (n, (ok, failed, bytes)) in &per_node {
        println!("  {n:<8} {ok:>6} {failed:>7} {:>10.0}", *bytes as f64 / 1e6);
    }
    let failed: Vec<_> = transfers.iter().filter(|t| t.error.is_some()).collect();
    println!(
        "  {} transfers, {} failed (every file checked with adler32 after its GET)\n  drain of node {k}: {before} transfers on it kept running, out of the ECMP route in {} ms, {new_on_k} new connections to it, {left_on_k} connections left after the drain wait\n  undrain: route back in {} ms\n  demo took {:.0} s",
        transfers.len(),
        failed.len(),
        withdrawn.as_millis(),
        back.as_millis(),
        t0.elapsed().as_secs_f64()
    );
    for f in failed.iter().take(5) {
        println!(
            "  failed: {:?} job {} on node {:?}: {}",
            f.kind,
            f.job,
            f.node,
            f.error.as_deref().unwrap_or("")
        );
    }
    println!(
        "  third-party copy with SciTag {}: {}",
        topology_tests::grid_clients::SCITAG,
        if tpc_ok {
            "done, checked at the destination, counted by the collector"
        } else {
            "FAILED"
        }
    );
    site.check_alive()?;
    println!("\ntearing the lab down");
    drop(site);
    Ok(failed.is_empty() && new_on_k == 0 && tpc_ok)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_scenarios(topo: &Topology, names: &[String], json: Option<&Path>) -> Result<bool> {
    let names: Vec<String> = if names.is_empty() {
        scenarios::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    let scale = Scale::default();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        step(i + 1, names.len(), &format!("scenario {name}"));
        let o = scenarios::run(name, topo, &scale, &mut say)
            .with_context(|| format!("scenario {name}"))?;
        print!("{}", o.render());
        outcomes.push(o);
    }
    // The benchmark's baseline, in the same run: a crash seen by the hold
    // timer alone (BFD off on both sides).
    let mut baselines: Vec<Outcome> = Vec::new();
    if json.is_some() && names.iter().any(|n| n == "node_crash") {
        step(
            names.len() + 1,
            names.len() + 1,
            "baseline: node_crash without BFD",
        );
        let mut plain = topo.clone();
        plain.timings.bfd_interval_ms = 0;
        let mut o = scenarios::run("node_crash", &plain, &scale, &mut say)
            .context("baseline node_crash without BFD")?;
        o.name = "node_crash_no_bfd".into();
        print!("{}", o.render());
        baselines.push(o);
    }
    println!(
        "\n{:<18} {:>8} {:>8} {:>12} {:>8}",
        "scenario", "ok", "failed", "failover ms", "checks"
    );
    for o in outcomes.iter().chain(&baselines) {
        println!(
            "{:<18} {:>8} {:>8} {:>12} {:>8}",
            o.name,
            o.transfers_ok,
            o.transfers_failed,
            o.failover_ms.map_or("-".into(), |f| f.to_string()),
            if o.passed() { "pass" } else { "FAIL" }
        );
    }
    if let Some(path) = json {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let doc = serde_json::json!({
            "topology": topo.name,
            "scenarios": outcomes,
            "baselines": baselines,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {}", path.display());
    }
    Ok(outcomes.iter().all(Outcome::passed))
}
