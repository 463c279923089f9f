//! The scenarios of a site's life (issue 5, and a malformed UPDATE from a
//! second upstream, issue 13), each in its own lab built from a
//! topology like configs/topology/site.toml (3 nodes, FRR), plus the same
//! steady state behind BIRD with 4 nodes and 2 clients, and the lab's own
//! promises: leftovers are refused and removed, Ctrl-C tears down.
//!
//! One lab at a time (a mutex): each moves gigabytes through the kernel
//! and the timing goals must not suffer from a neighbour.
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use topology_tests::scenarios::{self, Scale};
use topology_tests::site::{self, Site};
use topology_tests::topology::Topology;

static ONE_LAB: Mutex<()> = Mutex::new(());

/// configs/topology/site.toml with another name and the keys of `extra`
/// (TOML) in place of its own.
fn topology(name: &str, extra: &str) -> Topology {
    let site = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/topology/site.toml"
    ))
    .expect("configs/topology/site.toml");
    let mut t: toml::Table = site.parse().expect("site.toml");
    let extra: toml::Table = extra.parse().expect("extra keys");
    t.extend(extra);
    t.insert("name".into(), name.into());
    Topology::parse(&toml::to_string(&t).expect("toml")).expect("topology")
}

fn scenario(name: &str, lab: &str, extra: &str) {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let topo = topology(lab, extra);
    let mut log = |s: &str| eprintln!("[{lab}] {s}");
    let out = scenarios::run(name, &topo, &Scale::default(), &mut log)
        .unwrap_or_else(|e| panic!("scenario {name}: {e:#}"));
    eprintln!("{}", out.render());
    assert!(out.passed(), "{}", out.render());
    assert!(
        site::leftovers(lab).expect("leftovers").is_empty(),
        "lab {lab} left something behind"
    );
}

#[test]
fn steady() {
    scenario("steady", "tsteady", "");
}

#[test]
fn steady_behind_bird_with_4_nodes_and_2_clients() {
    scenario(
        "steady",
        "tbird",
        "router = \"bird\"\nnodes = 4\nclients = 2",
    );
}

#[test]
fn drain() {
    scenario("drain", "tdrain", "");
}

#[test]
fn join() {
    scenario("join", "tjoin", "");
}

#[test]
fn backend_fail() {
    scenario("backend_fail", "tbfail", "");
}

/// nginx restarted on every node in turn, quiesced first as the systemd
/// drop-in does (`lbd listener quiesce`: the accept queue drains before the
/// listener closes): zero failed transfers.
#[test]
fn nginx_restart() {
    scenario("nginx_restart", "tnginx", "");
}

#[test]
fn node_crash() {
    scenario("node_crash", "tcrash", "");
}

#[test]
fn rolling_restart() {
    scenario("rolling_restart", "troll", "");
}

#[test]
fn router_restart() {
    scenario("router_restart", "trouter", "");
}

#[test]
fn bad_update_reaches_every_node_at_once() {
    scenario("bad_update", "tbadupd", "");
}

/// gfal-copy, davix and curl over HTTPS through the VIP by its name, and
/// HTTP-TPC with a foreign xrootd site (issue 14), 2 nodes to keep it short.
#[test]
fn grid_clients() {
    scenario("grid_clients", "tgrid", "nodes = 2");
}

/// A lab that was never torn down (its process died) is refused with a
/// message naming the leftovers and the way out; `teardown` removes all of
/// it, processes included.
#[test]
fn leftovers_are_refused_then_removed() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let topo = topology("tleft", "nodes = 1");
    let site = Site::build(topo.clone(), &mut |_| {}).expect("lab");
    let lbd_pid: u32 = std::fs::read_to_string(site.node(1).dir.join("lbd.pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    // As if this process had crashed: nothing is cleaned up.
    std::mem::forget(site);
    let err = match Site::build(topo.clone(), &mut |_| {}) {
        Ok(_) => panic!("a lab over leftovers was built"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("leftovers") && err.contains("tleft-router") && err.contains("lbd-lab down"),
        "{err}"
    );
    let removed = site::teardown("tleft");
    assert!(
        removed.iter().any(|r| r.contains(&lbd_pid.to_string())),
        "{removed:?}"
    );
    assert!(site::leftovers("tleft").expect("leftovers").is_empty());
    assert!(
        !std::path::Path::new(&format!("/proc/{lbd_pid}")).exists()
            || !topology_tests::process::alive(lbd_pid)
    );
}

/// `lbd-lab up` tears its lab down on Ctrl-C (SIGINT).
#[test]
fn ctrl_c_tears_the_lab_down() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("lbd-lab-ctrlc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("t.toml");
    std::fs::write(&file, "name = \"tctrlc\"\nnodes = 2\n").expect("topology");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lbd-lab"))
        .arg("up")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("lbd-lab up");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let t0 = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).expect("read");
        assert!(n > 0, "lbd-lab up ended before the lab was up");
        if line.contains("is up") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "lab not up");
    }
    assert!(!site::leftovers("tctrlc").expect("leftovers").is_empty());
    topology_tests::process::signal_pid(child.id(), libc::SIGINT);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(site::leftovers("tctrlc").expect("leftovers").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_topology_file_is_refused_with_its_key() {
    let dir = std::env::temp_dir().join(format!("lbd-lab-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "name = \"x\"\nnodes = 12\n").expect("topology");
    let out = Command::new(env!("CARGO_BIN_EXE_lbd-lab"))
        .arg("up")
        .arg(&file)
        .output()
        .expect("lbd-lab");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("nodes: 12 must be between 1 and 8"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The containerlab site's configs are what the lab itself runs
/// (regenerate with `lbd-lab configs configs/topology/site.toml configs/topology/containerlab`).
#[test]
fn containerlab_configs_match_the_lab() {
    let topo = Topology::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/topology/site.toml"
    )))
    .expect("site.toml");
    let dir = std::env::temp_dir().join(format!("lbd-lab-configs-{}", std::process::id()));
    let shipped = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/topology/containerlab"
    ));
    for f in site::write_site_configs(&topo, &dir).expect("configs") {
        let name = f.file_name().expect("name");
        let want = std::fs::read_to_string(&f).expect("generated");
        let have = std::fs::read_to_string(shipped.join(name)).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "configs/topology/containerlab/{} is stale",
            name.to_string_lossy()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// FRR's own parser (`vtysh -C`) accepts the shipped router configs: the
/// containerlab site router's and configs/lbd/frr-router.conf; a control
/// file with a bad line is refused, so the check can fail.
#[test]
fn frr_router_configs_pass_frr_own_check() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let check = |path: &str| {
        Command::new("vtysh")
            .args(["-C", "-f", path])
            .output()
            .expect("vtysh")
    };
    for f in [
        "configs/lbd/frr-router.conf",
        "configs/topology/containerlab/frr.conf",
    ] {
        let out = check(&format!("{root}/{f}"));
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let bad = std::env::temp_dir().join(format!("lbd-lab-bad-frr-{}.conf", std::process::id()));
    std::fs::write(&bad, "router bgp 65000\n neighbor LBD bogus-command\n").expect("write");
    assert!(!check(&bad.display().to_string()).status.success());
    let _ = std::fs::remove_file(bad);
}
