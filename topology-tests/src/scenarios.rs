//! The seven scenarios of a storage site's life. Each builds its own lab
//! from the topology, runs the transfer workload while it acts, and
//! returns an `Outcome`: the transfer counts, the failover time where one
//! is measured, and named checks (the tests require every check to pass;
//! the benchmark reports them).
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use crate::outcome::{Check, Outcome};
use crate::process::{alive, read_pid, run_checked, signal_pid, wait_until};
use crate::site::Site;
use crate::topology::{Topology, addr};
use crate::upstream::{self, HOSTILE_ADDR, HOSTILE_AS, RawPeer};
use crate::workload::{self, Finished, Plan, Running, Transfer};
use anyhow::{Context, Result, bail};

pub const ALL: [&str; 10] = [
    "steady",
    "drain",
    "join",
    "backend_fail",
    "nginx_restart",
    "node_crash",
    "rolling_restart",
    "router_restart",
    "bad_update",
    "grid_clients",
];

/// How big the workloads are: the tests and the benchmark use the same
/// shape; `long_mb` is the size of the transfers kept in flight while a
/// scenario acts, paced at `rate_mb_s` each.
#[derive(Debug, Clone)]
pub struct Scale {
    pub long_mb: u64,
    pub rate_mb_s: u64,
    pub parallel: usize,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            long_mb: 200,
            rate_mb_s: 25,
            parallel: 6,
        }
    }
}

pub fn run(
    name: &str,
    topo: &Topology,
    scale: &Scale,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let start = Instant::now();
    let mut out = Outcome::new(name);
    match name {
        "steady" => steady(topo, scale, &mut out, progress)?,
        "drain" => drain(topo, scale, &mut out, progress)?,
        "join" => join(topo, scale, &mut out, progress)?,
        "backend_fail" => backend_fail(topo, scale, &mut out, progress)?,
        "nginx_restart" => nginx_restart(topo, scale, &mut out, progress)?,
        "node_crash" => node_crash(topo, scale, &mut out, progress)?,
        "rolling_restart" => rolling_restart(topo, scale, &mut out, progress)?,
        "router_restart" => router_restart(topo, scale, &mut out, progress)?,
        "bad_update" => bad_update(topo, scale, &mut out, progress)?,
        "grid_clients" => crate::grid_clients::run(topo, &mut out, progress)?,
        other => bail!("unknown scenario {other:?} (known: {})", ALL.join(", ")),
    }
    out.duration_s = start.elapsed().as_secs_f64();
    Ok(out)
}

fn vips(site: &Site) -> [IpAddr; 2] {
    [site.topo.vips.ipv4.into(), site.topo.vips.ipv6.into()]
}

/// Long paced transfers that stay in flight while the scenario acts;
/// returns once `scale.parallel` of them are running.
fn long_transfers(site: &mut Site, scale: &Scale, tag: &str, jobs: usize) -> Result<Running> {
    let w = workload::start(
        &site.clients,
        vips(site),
        Plan {
            tag: tag.into(),
            sizes_mb: vec![scale.long_mb],
            jobs,
            parallel: scale.parallel,
            rate_mb_s: Some(scale.rate_mb_s),
        },
    );
    wait_in_flight(site, &w, scale.parallel as u64)?;
    Ok(w)
}

/// A mixed stream of 1 MB to `long_mb` files at full speed.
fn mixed_transfers(site: &Site, scale: &Scale, tag: &str, jobs: usize) -> Running {
    workload::start(
        &site.clients,
        vips(site),
        Plan {
            tag: tag.into(),
            sizes_mb: vec![1, 16, scale.long_mb, 4, 64],
            jobs,
            parallel: scale.parallel.min(4),
            rate_mb_s: None,
        },
    )
}

/// Waits until `n` transfers are in flight (and the lab still runs).
fn wait_in_flight(site: &mut Site, w: &Running, n: u64) -> Result<()> {
    let t0 = Instant::now();
    while w
        .progress
        .in_flight
        .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        site.check_alive()?;
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("the workload never had {n} transfers in flight");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until the nodes hold `n` client connections: the running
/// transfers have reached their nodes, so what the scenario does next
/// meets transfers in progress.
fn wait_on_nodes(site: &Site, n: usize) -> Result<()> {
    let on_nodes =
        || -> Result<usize> { site.nodes.iter().map(|nd| site.connections(nd.id)).sum() };
    // `ss` per node and poll: not every 20 ms.
    lab::wait::poll_every(
        &format!("{n} client connections on the nodes"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        || on_nodes().is_ok_and(|c| c >= n).then_some(()),
    )
}

/// The node with the most established connections to the VIPs.
fn busiest(site: &Site) -> Result<(u16, usize)> {
    let mut best = (1, 0);
    for n in &site.nodes {
        let c = site.connections(n.id)?;
        if c > best.1 {
            best = (n.id, c);
        }
    }
    Ok(best)
}

/// New connections: `count` over both VIPs; per node, how many.
fn spread(site: &Site, count: usize) -> Result<(Vec<usize>, usize)> {
    let mut per = vec![0usize; usize::from(site.topo.nodes) + 1];
    let mut failed = 0;
    for (i, vip) in vips(site).into_iter().enumerate() {
        let ns = &site.clients[i % site.clients.len()];
        for n in workload::probe(ns, vip, count / 2, 32)? {
            match n {
                Some(id) if usize::from(id) < per.len() => per[usize::from(id)] += 1,
                _ => failed += 1,
            }
        }
    }
    Ok((per, failed))
}

fn all_ids(site: &Site) -> Vec<u16> {
    (1..=site.topo.nodes).collect()
}

fn steady(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    progress("mixed PUT/GET workload, 1 MB to the long size");
    let w = mixed_transfers(&site, scale, "steady", 15);
    let finished = w.wait()?;
    out.count(&finished);
    out.check_every_job_done("every transfer succeeds");
    let nodes_seen: std::collections::BTreeSet<u16> =
        finished.transfers.iter().filter_map(|t| t.node).collect();
    out.check(
        "transfers reach every node",
        nodes_seen.len() == usize::from(site.topo.nodes),
        format!("{nodes_seen:?}"),
    );
    progress("1,500 new connections: spread over the nodes");
    let (per, failed) = spread(&site, 1500)?;
    let fair = 1500.0 / f64::from(site.topo.nodes);
    let within = per[1..]
        .iter()
        .all(|&c| (c as f64 - fair).abs() <= 0.2 * fair);
    out.check(
        "new connections within +-20% of the fair share",
        within && failed == 0,
        format!("per node {:?}, fair {fair:.0}, {failed} failed", &per[1..]),
    );
    let (status, entries) = workload::propfind(&site.clients[0], vips(&site)[0], "/data/")?;
    out.check(
        "PROPFIND lists the storage",
        status == 207,
        format!("HTTP {status}, {entries} entries"),
    );
    site.check_alive()
}

fn drain(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let w = long_transfers(&mut site, scale, "drain", scale.parallel)?;
    wait_on_nodes(&site, scale.parallel)?;
    let (k, before) = busiest(&site)?;
    progress(&format!("draining node {k} with {before} transfers on it"));
    site.lbd_cli(k, &["drain"])?;
    site.wait_member_state(k, "draining", Duration::from_secs(10))?;
    let others: Vec<u16> = all_ids(&site).into_iter().filter(|&i| i != k).collect();
    site.wait_tables(&others, Duration::from_secs(10))?;
    let (per, failed) = spread(&site, 300)?;
    out.check(
        "the draining node gets no new connection",
        per[usize::from(k)] == 0 && failed == 0,
        format!("new connections per node {:?}, {failed} failed", &per[1..]),
    );
    site.wait_paths(&others, Duration::from_secs(15))
        .context("withdraw after drain")?;
    progress("waiting for the long transfers to finish");
    let finished = w.wait()?;
    out.count(&finished);
    out.check_every_job_done("zero failed transfers");
    let on_k = finished
        .transfers
        .iter()
        .filter(|t| t.node == Some(k))
        .count();
    out.check(
        "the drained node's transfers finished there",
        before > 0 && on_k > 0,
        format!("{before} connections on node {k} at the drain, {on_k} transfers served there"),
    );
    let left = site.connections(k)?;
    out.check(
        "the drained node ends with no connection",
        left == 0,
        format!("{left} left"),
    );
    site.lbd_cli(k, &["undrain"])?;
    site.wait_paths(&all_ids(&site), Duration::from_secs(15))
        .context("undrain")?;
    site.check_alive()
}

fn join(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let k = topo.nodes;
    if k < 2 {
        bail!("join needs at least 2 nodes");
    }
    let mut site = Site::build_with(topo.clone(), progress, &[k])?;
    let w = long_transfers(&mut site, scale, "join", scale.parallel)?;
    wait_on_nodes(&site, scale.parallel)?;
    progress(&format!("node {k} joins while transfers run"));
    site.start_lbd(k)?;
    let t = site.wait_paths(&all_ids(&site), Duration::from_secs(20))?;
    site.wait_tables(&all_ids(&site), Duration::from_secs(10))?;
    let (per, failed) = spread(&site, 300)?;
    out.check(
        "the new node takes new connections",
        per[usize::from(k)] > 0 && failed == 0,
        format!("new connections per node {:?}, {failed} failed; route over all nodes {} ms after start", &per[1..], t.as_millis()),
    );
    out.count(&w.wait()?);
    out.check_every_job_done("zero failed transfers");
    site.check_alive()
}

fn backend_fail(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let k = 2.min(topo.nodes);
    let w = mixed_transfers(&site, scale, "bfail", 40);
    wait_in_flight(&mut site, &w, 2)?;
    wait_on_nodes(&site, 2)?;
    progress(&format!("stopping nginx on node {k}"));
    let steered_before = syns_to_fallback(&site, k)?;
    let t0 = Instant::now();
    site.node(k).nginx.stop();
    // From here node k has no listener: every new connection it is the
    // first hop of must go to the bucket's fallback, not be refused.
    let gone = Instant::now();
    let (per, refused) = spread(&site, PROBES)?;
    let probed = gone.elapsed();
    let others: Vec<u16> = all_ids(&site).into_iter().filter(|&i| i != k).collect();
    site.wait_paths(&others, Duration::from_secs(15))
        .context("withdraw after backend failure")?;
    let failover = t0.elapsed();
    let window_end = Instant::now();
    out.failover_ms = Some(failover.as_millis() as u64);
    let t = &site.topo.timings;
    out.check(
        "route withdrawn within 2 s",
        failover < Duration::from_secs(2),
        format!(
            "{} ms (checks every {} ms, fall {})",
            failover.as_millis(),
            t.check_interval_ms,
            t.check_fall
        ),
    );
    let steered = syns_to_fallback(&site, k)? - steered_before;
    out.check(
        "no new connection refused before the failover",
        refused == 0 && probed < failover && steered > 0 && per[usize::from(k)] == 0,
        format!(
            "{PROBES} new connections within {} ms of the stop ({} ms before the \
             withdraw): {refused} refused, per node {:?}; node {k} sent {steered} SYNs \
             to their fallback",
            probed.as_millis(),
            failover.saturating_sub(probed).as_millis(),
            &per[1..]
        ),
    );
    site.wait_member_state(k, "down", Duration::from_secs(10))?;
    let transfers = w.wait()?;
    let fresh = new_transfers(&transfers, gone);
    let in_window = fresh.iter().filter(|t| t.started <= window_end).count();
    let failed: Vec<&&Transfer> = fresh.iter().filter(|t| t.error.is_some()).collect();
    out.check(
        "zero failed new transfers during and after the failover",
        failed.is_empty(),
        format!(
            "{} transfers started after nginx stopped ({in_window} before the withdraw), \
             {} failed{}",
            fresh.len(),
            failed.len(),
            failed
                .first()
                .map_or(String::new(), |t| format!(" (first: {:?})", t.error))
        ),
    );
    progress("new transfers after the failover");
    let after = mixed_transfers(&site, scale, "bfail-after", 10).wait()?;
    let mut a = Outcome::new("after");
    a.count(&after);
    out.check(
        "new transfers succeed after the failover",
        a.jobs == 10 && a.transfers_failed == 0 && a.transfers_ok == 2 * a.jobs,
        format!("{} ok, {} failed", a.transfers_ok, a.transfers_failed),
    );
    // Transfers nginx itself aborted on node k (in flight when it was
    // stopped) are not the dataplane's to save: noted, not checked.
    let aborted = transfers
        .transfers
        .iter()
        .filter(|t| t.started < gone && t.error.is_some())
        .count();
    if aborted > 0 {
        out.notes.push(format!(
            "{aborted} transfers in flight on node {k} were aborted by nginx's stop"
        ));
    }
    out.count(&transfers);
    out.count(&after);
    out.notes.push(dataplane_counters(&site)?);
    site.node(k).nginx.start(&site.node(k).ns.clone())?;
    site.wait_paths(&all_ids(&site), Duration::from_secs(15))
        .context("route back after nginx restart")?;
    site.check_alive()
}

/// New connections probed while a node has no listener.
const PROBES: usize = 60;

/// SYNs node `id`'s dataplane sent to their fallback (all VIPs).
fn syns_to_fallback(site: &Site, id: u16) -> Result<u64> {
    Ok(site
        .status(id)?
        .vips
        .iter()
        .filter_map(|v| v.counters.get("syn_to_fallback"))
        .sum())
}

/// Each node's steering and drop counters (all VIPs), for the report.
fn dataplane_counters(site: &Site) -> Result<String> {
    const SHOWN: [&str; 8] = [
        "pass_local",
        "decap",
        "syn_to_fallback",
        "fwd_second_hop",
        "drop_too_big",
        "drop_no_route",
        "drop_no_node",
        "drop_encap",
    ];
    let mut parts = Vec::new();
    for id in all_ids(site) {
        let s = site.status(id)?;
        let sum = |k: &str| -> u64 { s.vips.iter().filter_map(|v| v.counters.get(k)).sum() };
        let shown: Vec<String> = SHOWN.iter().map(|k| format!("{k} {}", sum(k))).collect();
        let steering: Vec<String> = s
            .vips
            .iter()
            .filter(|v| v.steering_to_fallback)
            .map(|v| v.address.clone())
            .collect();
        parts.push(format!(
            "node {id}: {}, steering {steering:?}",
            shown.join(", ")
        ));
    }
    Ok(format!("dataplane counters: {}", parts.join("; ")))
}

/// Transfers whose connection opened at or after `since`.
fn new_transfers(f: &Finished, since: Instant) -> Vec<&Transfer> {
    f.transfers.iter().filter(|t| t.started >= since).collect()
}

/// Restarts nginx on node `id` the way systemd does with the lbd
/// package's drop-in for nginx.service (configs/systemd/lbd-listener.conf):
/// `lbd listener quiesce` first (ExecStop: new connections go to the
/// fallback, the command returns once the accept queues are empty), a
/// graceful quit (KillSignal=SIGQUIT: listeners close, requests in flight
/// finish), a new master once the old one has exited, then `lbd listener
/// resume` (ExecStartPost). With `auto_resume` the resume is left to lbd,
/// which resumes by itself when it sees the new listening sockets.
fn restart_nginx(site: &Site, id: u16, auto_resume: bool) -> Result<Restart> {
    let node = site.node(id);
    let pid = read_pid(&node.nginx.dir.join("nginx.pid"))
        .with_context(|| format!("node {id}: nginx's pid"))?;
    let t0 = Instant::now();
    site.lbd_cli(id, &["listener", "quiesce", "--timeout", "10s"])?;
    let quiesce_took = t0.elapsed();
    let quiesced_shown = site
        .status(id)?
        .vips
        .iter()
        .all(|v| v.listener_quiesced.contains(&80));
    // Quiesced, still listening: new connections go elsewhere.
    let (while_quiesced, refused_quiesced) = spread(site, PROBES / 2)?;
    signal_pid(pid, libc::SIGQUIT);
    let closed = Instant::now();
    // lbd status names the port as soon as the listener is gone (and
    // before the health check could fail `fall` times).
    let seen = wait_until(
        &format!("node {id}: lbd status to show port 80 without listener"),
        Duration::from_secs(5),
        || {
            site.status(id)
                .is_ok_and(|s| s.vips.iter().all(|v| v.listener_missing.contains(&80)))
        },
    )?;
    let healthy = site.status(id)?.vips.iter().all(|v| v.healthy);
    let probes = spread(site, PROBES / 2)?;
    wait_until(
        &format!("node {id}: the old nginx to finish"),
        Duration::from_secs(60),
        || !alive(pid),
    )?;
    node.nginx.start(&node.ns.clone())?;
    let without_listener = closed.elapsed();
    if !auto_resume {
        site.lbd_cli(id, &["listener", "resume"])?;
    }
    wait_until(
        &format!("node {id}: the listener resumed"),
        Duration::from_secs(5),
        || {
            site.status(id)
                .is_ok_and(|s| s.vips.iter().all(|v| v.listener_quiesced.is_empty()))
        },
    )?;
    Ok(Restart {
        quiesce_took,
        quiesced_shown,
        without_listener,
        status_saw_it: seen,
        healthy_then: healthy,
        per_node: probes.0,
        refused: probes.1 + refused_quiesced,
        while_quiesced,
    })
}

/// What one nginx restart looked like from outside.
struct Restart {
    /// `lbd listener quiesce` until the accept queues were empty.
    quiesce_took: Duration,
    /// `lbd status` listed port 80 as quiesced.
    quiesced_shown: bool,
    without_listener: Duration,
    /// Until `lbd status` listed the port as without listener.
    status_saw_it: Duration,
    /// The VIP still passed its health check at that moment.
    healthy_then: bool,
    /// New connections made while there was no listener: per node, refused
    /// (refused also counts those made while quiesced).
    per_node: Vec<usize>,
    refused: usize,
    /// New connections made while quiesced (the old listener open), per node.
    while_quiesced: Vec<usize>,
}

/// nginx restarts on every node in turn under a stream of new transfers,
/// quiesced first as the systemd drop-in does: its new connections go to
/// the fallback (and stay there after nginx is back) while the old
/// listener drains its accept queue, so nothing fails.
fn nginx_restart(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let w = workload::start(
        &site.clients,
        vips(&site),
        Plan {
            tag: "nrestart".into(),
            sizes_mb: vec![1, 4, 16, 2],
            jobs: 100_000,
            parallel: scale.parallel.min(4),
            rate_mb_s: None,
        },
    );
    wait_in_flight(&mut site, &w, 2)?;
    let mut refused_all = 0;
    let mut gaps = Vec::new();
    let mut steered = Vec::new();
    let mut status_late = Vec::new();
    let mut quiesce = Vec::new();
    let ids = all_ids(&site);
    for &id in &ids {
        // The last node leaves the resume to lbd (a new listener).
        let auto_resume = id == *ids.last().unwrap_or(&id);
        progress(&format!("restarting nginx on node {id}"));
        let before = syns_to_fallback(&site, id)?;
        let r = restart_nginx(&site, id, auto_resume)?;
        refused_all += r.refused;
        gaps.push(format!(
            "node {id}: {} ms without listener, in status after {} ms",
            r.without_listener.as_millis(),
            r.status_saw_it.as_millis()
        ));
        if !r.healthy_then {
            status_late.push(id);
        }
        quiesce.push((
            id,
            r.quiesce_took.as_millis(),
            r.quiesced_shown,
            r.while_quiesced[usize::from(id)],
        ));
        site.wait_paths(&all_ids(&site), Duration::from_secs(15))
            .with_context(|| format!("route over every node after node {id}'s restart"))?;
        steered.push((
            id,
            syns_to_fallback(&site, id)? - before,
            r.per_node[usize::from(id)],
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    w.stop_new();
    out.count(&w.wait()?);
    out.check_every_job_done("zero failed transfers");
    out.check(
        "quiesced: the node's new connections go elsewhere while its listener drains",
        quiesce
            .iter()
            .all(|&(_, ms, shown, on_self)| ms < 10_000 && shown && on_self == 0),
        format!(
            "(node, ms until the accept queues were empty, shown in status, probes \
             it served itself while quiesced): {quiesce:?}; node {} resumed by itself",
            ids.last().copied().unwrap_or_default()
        ),
    );
    out.check(
        "no probe refused while a node was quiesced or had no listener",
        refused_all == 0 && steered.iter().all(|&(_, s, on_self)| s > 0 && on_self == 0),
        format!(
            "{} probes per phase and restart, {refused_all} refused; (node, SYNs it sent \
             to the fallback, probes it served itself without listener): {steered:?}",
            PROBES / 2,
        ),
    );
    out.check(
        "lbd status shows the missing listener before the health check fails",
        status_late.is_empty(),
        format!(
            "{}; health check already failed on {status_late:?}",
            gaps.join(", ")
        ),
    );
    site.check_alive()
}

fn node_crash(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let w = long_transfers(&mut site, scale, "crash", scale.parallel * 2)?;
    wait_on_nodes(&site, scale.parallel)?;
    let (k, on_k) = busiest(&site)?;
    progress(&format!(
        "crashing node {k} (lbd killed, links cut) with {on_k} transfers on it"
    ));
    // The failover is timed by the router kernel's route notifications
    // (a poller's own start-up would be in a sub-second figure).
    let monitor = lab::route_monitor::RouteMonitor::start(&site.router.ns, None)?;
    let vips = [
        format!("{}/32", topo.vips.ipv4),
        format!("{}/128", topo.vips.ipv6),
    ];
    monitor.drain();
    let t0 = Instant::now();
    // Silence first: a dying machine sends no FIN for its BGP session.
    site.cut_links(k)?;
    site.kill_lbd(k)?;
    let others: Vec<u16> = all_ids(&site).into_iter().filter(|&i| i != k).collect();
    site.wait_paths(&others, Duration::from_secs(15))
        .context("route after crash")?;
    // The first change of each VIP's route since the cut: node k left it.
    let changed = monitor
        .wait_all(
            &[(vips[0].as_str(), false), (vips[1].as_str(), false)],
            Duration::from_secs(5),
        )
        .context("the VIP routes' change seen by ip monitor")?;
    let failover = changed.iter().max().map_or(t0.elapsed(), |t| *t - t0);
    drop(monitor);
    out.failover_ms = Some(failover.as_millis() as u64);
    if topo.timings.bfd_interval_ms > 0 {
        out.check(
            "BFD removes the node within 1 s",
            failover < Duration::from_secs(1),
            format!("{} ms", failover.as_millis()),
        );
    } else {
        // The baseline run: only the hold timer can notice.
        out.notes.push(format!(
            "without BFD (hold timer {} s): {} ms",
            topo.timings.hold_time_s,
            failover.as_millis()
        ));
    }
    let finished = w.wait()?;
    out.count(&finished);
    let bad: Vec<&Transfer> = finished
        .transfers
        .iter()
        .filter(|t| t.error.is_some() && t.node != Some(k))
        .collect();
    out.check(
        "transfers to the surviving nodes do not fail",
        bad.is_empty(),
        format!(
            "{} failed in all, {} of them not on node {k}{}",
            out.transfers_failed,
            bad.len(),
            bad.first()
                .map_or(String::new(), |t| format!(" (first: {:?})", t.error))
        ),
    );
    progress(&format!("node {k} comes back"));
    site.restore_links(k)?;
    site.start_lbd(k)?;
    site.wait_paths(&all_ids(&site), Duration::from_secs(30))
        .context("route after the node's return")?;
    site.check_alive()
}

fn rolling_restart(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let w = long_transfers(&mut site, scale, "rolling", scale.parallel * 2)?;
    let mut lost_route = Vec::new();
    for id in all_ids(&site) {
        progress(&format!("restarting lbd on node {id}"));
        site.stop_lbd(id)?;
        site.start_lbd(id)?;
        wait_until(
            &format!("node {id} to announce again"),
            Duration::from_secs(30),
            || {
                site.status(id).is_ok_and(|s| {
                    s.vips.iter().all(|v| v.announced)
                        && s.bgp
                            .iter()
                            .all(|p| p.state == bgp_speaker::State::Established)
                })
            },
        )?;
        let (p4, p6) = site.paths()?;
        if p4.len() != usize::from(site.topo.nodes) || p6.len() != usize::from(site.topo.nodes) {
            lost_route.push(format!("after node {id}: {p4:?} / {p6:?}"));
        }
        site.wait_paths(&all_ids(&site), Duration::from_secs(15))?;
    }
    out.count(&w.wait()?);
    out.check_every_job_done("zero failed transfers");
    // Not a goal (transfers are what must survive): whether the router
    // kept every path while each node restarted.
    if !lost_route.is_empty() {
        out.notes.push(format!(
            "the router's route lacked the restarted node: {}",
            lost_route.join("; ")
        ));
    }
    site.check_alive()
}

fn router_restart(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let w = long_transfers(&mut site, scale, "rrestart", scale.parallel)?;
    progress("killing the router's BGP daemon and starting it again");
    site.router.kill_bgp()?;
    // The restart begins once every node has seen its session end.
    site.wait_status(
        "every node's session down after the kill",
        Duration::from_secs(10),
        |s| {
            s.bgp
                .iter()
                .all(|p| p.state != bgp_speaker::State::Established)
        },
    )?;
    let t0 = Instant::now();
    site.router.start_bgp()?;
    let restored = site
        .wait_paths(&all_ids(&site), Duration::from_secs(60))
        .context("ECMP after the router restart");
    out.route_restored_ms = Some(t0.elapsed().as_millis() as u64);
    out.check(
        "sessions come back and the ECMP route is restored",
        restored.is_ok(),
        format!("{} ms after bgpd started", t0.elapsed().as_millis()),
    );
    let ids = all_ids(&site);
    let established = site.wait_status(
        "every node's session Established",
        Duration::from_secs(10),
        |s| {
            s.bgp
                .iter()
                .all(|p| p.state == bgp_speaker::State::Established)
        },
    );
    let states: Vec<String> = ids
        .iter()
        .map(|&id| match site.status(id) {
            Ok(s) => format!(
                "node {id}: {}",
                s.bgp
                    .iter()
                    .map(|p| p.state.name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Err(e) => format!("node {id}: {e:#}"),
        })
        .collect();
    out.check(
        "every node's session is Established",
        established.is_ok(),
        states.join("; "),
    );
    out.count(&w.wait()?);
    out.check_every_job_done("running transfers complete");
    restored.map(|_| ())?;
    site.check_alive()
}

/// A second upstream of every node (a raw BGP peer on the router's
/// loopback) sends all of them, at once, an UPDATE whose optional
/// transitive COMMUNITIES attribute is malformed. RFC 7606 says
/// treat-as-withdraw: no session drops anywhere, the router's ECMP route
/// for the VIPs never loses a next hop, transfers carry on. The control,
/// an UPDATE RFC 7606 still classes as a session reset, shows the
/// scenario sees a reset when one happens.
fn bad_update(
    topo: &Topology,
    scale: &Scale,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut site = Site::build(topo.clone(), progress)?;
    let ids = all_ids(&site);
    let router_ns = site.router.ns.clone();
    run_checked(
        "ip",
        &[
            "-n",
            &router_ns,
            "addr",
            "add",
            &format!("{HOSTILE_ADDR}/32"),
            "dev",
            "lo",
        ],
    )?;
    progress(&format!(
        "every node peers with a second upstream at {HOSTILE_ADDR}"
    ));
    for &id in &ids {
        site.add_passive_peer(id, HOSTILE_ADDR, HOSTILE_AS)?;
    }
    let router_peer = |s: &lbd::status::Status, id: u16| {
        let r = addr::router_to_node4(id).to_string();
        s.bgp
            .iter()
            .find(|p| p.peer.starts_with(&r))
            .map(|p| (p.state, p.uptime_s.unwrap_or(0)))
    };
    let mut before = Vec::new();
    for &id in &ids {
        before.push(router_peer(&site.status(id)?, id));
    }
    let w = long_transfers(&mut site, scale, "badupd", scale.parallel)?;

    let nodes: Vec<std::net::Ipv4Addr> = ids.iter().map(|&id| addr::node4(id)).collect();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let hostile = std::thread::spawn(
        move || -> Result<(Vec<Option<String>>, Option<upstream::Message>)> {
            lab::enter_named(&router_ns)?;
            let mut peers = nodes
                .iter()
                .map(|&n| RawPeer::establish(n, Duration::from_secs(10)))
                .collect::<Result<Vec<_>>>()?;
            go_rx.recv()?;
            let bad = upstream::update_with_malformed_communities();
            for p in &mut peers {
                p.send(&bad)?;
            }
            // Three seconds of the sessions' lives, kept alive from our side.
            let mut resets = vec![None; peers.len()];
            for _ in 0..5 {
                for (i, p) in peers.iter_mut().enumerate() {
                    p.keepalive()?;
                    if resets[i].is_none()
                        && let Some(m) = p.notification_within(Duration::from_millis(200))?
                    {
                        resets[i] = m.notification_code();
                    }
                }
            }
            // The control, to the first node only.
            peers[0].send(&upstream::update_with_overrunning_attribute_length())?;
            let control = peers[0].notification_within(Duration::from_secs(3))?;
            Ok((resets, control))
        },
    );

    // Sample the router's VIP routes while the UPDATE lands.
    progress("a malformed optional transitive attribute to every node at once");
    let mut samples = 0usize;
    let mut lost = Vec::new();
    let _ = go_tx.send(());
    while !hostile.is_finished() {
        let (p4, p6) = site.paths()?;
        samples += 1;
        if p4 != ids || p6 != ids {
            lost.push(format!("{p4:?} / {p6:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (resets, control) = hostile
        .join()
        .map_err(|_| anyhow::anyhow!("the hostile peer's thread panicked"))??;

    out.check(
        "no session reset on the malformed attribute",
        resets.iter().all(Option::is_none),
        format!("NOTIFICATIONs per node: {resets:?}"),
    );
    out.check(
        "the control (RFC 7606 section 4) is a session reset",
        control
            .as_ref()
            .is_some_and(|m| m.error_code() == Some(bgp_speaker::iana::code::UPDATE)),
        format!(
            "node 1 answered {:?}",
            control
                .as_ref()
                .and_then(upstream::Message::notification_code)
        ),
    );
    out.check(
        "the VIP's ECMP route never lost a next hop",
        lost.is_empty() && samples > 10,
        format!(
            "{samples} samples, {} without every node{}",
            lost.len(),
            lost.first()
                .map_or(String::new(), |l| format!(" (first: {l})"))
        ),
    );
    let mut counted = Vec::new();
    let mut flapped = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let s = site.status(id)?;
        let hostile = HOSTILE_ADDR.to_string();
        let n: u64 = s
            .bgp
            .iter()
            .filter(|p| p.peer.starts_with(&hostile))
            .flat_map(|p| p.update_errors.iter())
            .filter(|(k, _)| k.starts_with("treat-as-withdraw"))
            .map(|(_, n)| *n)
            .sum();
        counted.push(n);
        let now = router_peer(&s, id);
        let kept = match (&before[i], &now) {
            (Some((b, up_b)), Some((a, up_a))) => {
                use bgp_speaker::State::Established;
                *b == Established && *a == Established && up_a >= up_b
            }
            _ => false,
        };
        if !kept {
            flapped.push(format!("node {id}: {:?} -> {now:?}", before[i]));
        }
    }
    out.check(
        "every node counted a treat-as-withdraw",
        counted.iter().all(|&n| n >= 1),
        format!("per node {counted:?}"),
    );
    out.check(
        "the router sessions never flapped",
        flapped.is_empty(),
        flapped.join("; "),
    );
    out.count(&w.wait()?);
    out.check_every_job_done("zero failed transfers");
    site.check_alive()
}

/// An `lbd` package upgrade under load, node by node, the way a site rolls
/// one out (issue 17). The nodes run `lbd_bin`, the installed package's
/// binary; `install` puts the new package in place (`dpkg -i`: the running
/// daemons keep the file they started from), then each node's daemon is
/// restarted the way the package's maintainer script has systemd do it
/// (SIGTERM, then the unit's `lbd run` of the new file). Checks: zero
/// failed transfers; each node's pinned XDP link and
/// maps are the same objects afterwards (forwarding never stopped: the
/// restarted daemon only swaps the program behind the link); each
/// restarted daemon runs the newly installed file.
pub fn package_upgrade(
    topo: &Topology,
    scale: &Scale,
    lbd_bin: &std::path::Path,
    install: &mut dyn FnMut() -> Result<()>,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let start = Instant::now();
    let mut out = Outcome::new("package_upgrade");
    let mut site = Site::build_from(topo.clone(), lbd_bin.to_path_buf(), progress, &[])?;
    let ids = all_ids(&site);
    let pins = crate::site::pin_root(&topo.name);
    let pinned_before = pinned_objects(&pins)?;
    let w = long_transfers(&mut site, scale, "upgrade", scale.parallel * 2)?;
    let t0 = Instant::now();

    // The router's routes, sampled from another thread for the whole upgrade.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (ns, nodes, stop) = (site.router.ns.clone(), topo.nodes, stop.clone());
        let vips = [topo.vips.ipv4.to_string(), topo.vips.ipv6.to_string()];
        let want = ids.clone();
        std::thread::spawn(move || -> Result<(usize, Vec<LostSample>)> {
            let (mut samples, mut lost) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for vip in &vips {
                    let got = crate::router::paths_in(&ns, vip, nodes)?;
                    samples += 1;
                    if got != want {
                        let missing = want.iter().copied().filter(|n| !got.contains(n)).collect();
                        lost.push(LostSample {
                            at: t0.elapsed(),
                            vip: vip.clone(),
                            missing,
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((samples, lost))
        })
    };

    progress("installing the new package");
    let installed = install();
    let mut not_new = Vec::new();
    // When each node's restart began: from then until the next one, a
    // route without that node is graceful restart failing.
    let mut restarts: Vec<(Duration, u16)> = Vec::new();
    if installed.is_ok() {
        let new_file = std::fs::metadata(lbd_bin)?;
        for &id in &ids {
            restarts.push((t0.elapsed(), id));
            progress(&format!(
                "restarting lbd on node {id} as the package's unit would ({} ms)",
                t0.elapsed().as_millis()
            ));
            site.stop_lbd(id)?;
            site.start_lbd(id)?;
            site.wait_status(
                &format!("node {id} to announce again"),
                Duration::from_secs(30),
                |s| {
                    s.vips.iter().all(|v| v.announced)
                        && s.bgp
                            .iter()
                            .all(|p| p.state == bgp_speaker::State::Established)
                },
            )?;
            if !runs_file(site.lbd_pid(id), &new_file) {
                not_new.push(id);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, lost) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the route sampler panicked"))??;
    let pinned_after = pinned_objects(&pins)?;
    // The listener watch's tracepoint link is the one pin a restart
    // replaces by design (a perf-event link has no in-place update: the
    // new daemon pins its link beside the old and renames it over it).
    let (watch_before, pinned_before) = split_watch_links(pinned_before);
    let (watch_after, pinned_after) = split_watch_links(pinned_after);
    let xdp_after = ids
        .iter()
        .map(|&id| xdp_programs(&site.node(id).ns))
        .collect::<Result<Vec<_>>>()?;

    out.check(
        "the new package installs while the daemons run",
        installed.is_ok(),
        installed
            .err()
            .map_or_else(String::new, |e| format!("{e:#}")),
    );
    out.check(
        "every restarted daemon runs the newly installed binary",
        not_new.is_empty(),
        format!("nodes still on the old file: {not_new:?}"),
    );
    // Graceful restart: the routers keep each restarting node's route
    // (stale) until its new daemon re-announces it. A planned stop says
    // BFD AdminDown only after the router has seen the BGP close: FRR 8.4
    // stops an Established session hard on BFD Down and flushes its routes
    // (bgp-speaker's `stop_conn`; docs/packaging.md).
    let restarting_at = |at: Duration| {
        restarts
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|(_, id)| *id)
    };
    let (in_restart, elsewhere): (Vec<&LostSample>, Vec<&LostSample>) = lost
        .iter()
        .partition(|l| restarting_at(l.at).is_some_and(|id| l.missing.contains(&id)));
    out.check(
        "the router's ECMP route kept each node through its restart",
        samples > 0 && in_restart.is_empty(),
        format!(
            "{samples} samples; restarts began at {restarts:?}; {} samples lacked the node restarting: {:?}",
            in_restart.len(),
            &in_restart[..in_restart.len().min(8)]
        ),
    );
    // A node that is not restarting and leaves the route did so for
    // another reason (a BFD flap or a failed check on a starved machine):
    // reported with the router's view of its sessions.
    if !elsewhere.is_empty() {
        out.notes.push(format!(
            "{} of {samples} samples lacked a node that was not restarting: {:?}; router: {}",
            elsewhere.len(),
            &elsewhere[..elsewhere.len().min(8)],
            site.router.summary()
        ));
    }
    // A restarted daemon replaces the program behind the pinned link
    // (bpf_link_update, a new program id); the link and the maps are the
    // same bpffs objects, so forwarding state never went away.
    out.check(
        "each node's pinned XDP link and maps are the ones from before",
        !pinned_before.is_empty() && pinned_before == pinned_after,
        format!(
            "{} pinned objects before, {} after, {} differ",
            pinned_before.len(),
            pinned_after.len(),
            pinned_before
                .iter()
                .filter(|(k, v)| pinned_after.get(*k) != Some(*v))
                .count()
        ),
    );
    out.check(
        "each node's listener-watch link was replaced by its new daemon",
        watch_before.len() == ids.len()
            && watch_after.len() == ids.len()
            && watch_after
                .iter()
                .all(|(k, v)| watch_before.get(k).is_some_and(|old| old != v)),
        format!("before {watch_before:?}, after {watch_after:?}"),
    );
    out.check(
        "an XDP program is attached on every node after the upgrade",
        xdp_after.iter().all(|p| !p.is_empty()),
        format!("program ids after: {xdp_after:?}"),
    );
    out.count(&w.wait()?);
    out.check_every_job_done("zero failed transfers");
    site.check_alive()?;
    out.duration_s = start.elapsed().as_secs_f64();
    Ok(out)
}

/// A sample of the router's route that lacked next hops.
struct LostSample {
    at: Duration,
    vip: String,
    missing: Vec<u16>,
}

impl std::fmt::Debug for LostSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} without {:?} at {} ms",
            self.vip,
            self.missing,
            self.at.as_millis()
        )
    }
}

/// The ids of the XDP programs attached in namespace `ns` (`ip link`'s
/// `prog/xdp id N`).
fn xdp_programs(ns: &str) -> Result<Vec<u32>> {
    let links = run_checked("ip", &["-n", ns, "link", "show"])?;
    let words: Vec<&str> = links.split_whitespace().collect();
    Ok(words
        .windows(3)
        .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
        .filter_map(|w| w[2].parse().ok())
        .collect())
}

/// Every file pinned under `dir` (bpffs) with its inode: a re-created
/// map or link is pinned as a new inode.
fn pinned_objects(dir: &std::path::Path) -> Result<Pins> {
    use std::os::unix::fs::MetadataExt;
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                found.insert(e.path().display().to_string(), meta.ino());
            }
        }
    }
    Ok(found)
}

/// The pinned objects split into the listener-watch links and the rest.
type Pins = std::collections::BTreeMap<String, u64>;
fn split_watch_links(pins: Pins) -> (Pins, Pins) {
    pins.into_iter().partition(|(path, _)| {
        path.ends_with(&format!("/{}", dataplane::loader::LISTEN_WATCH_LINK))
    })
}

/// Whether process `pid` runs the file `file` (same device and inode).
fn runs_file(pid: Option<u32>, file: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    pid.and_then(|p| std::fs::metadata(format!("/proc/{p}/exe")).ok())
        .is_some_and(|exe| exe.dev() == file.dev() && exe.ino() == file.ino())
}
