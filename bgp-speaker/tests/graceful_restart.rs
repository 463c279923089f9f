//! Graceful restart as the restarting speaker (RFC 4724): kill -9 the
//! speaker and start it again within the restart time; the router keeps the
//! route in its kernel the whole time, then the session re-establishes and
//! the route is refreshed (no longer stale after End-of-RIB). A restarting
//! speaker whose owner decides its routes late holds End-of-RIB until told,
//! so the router keeps the stale route until the real one arrives.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bgp_speaker::{BfdConfig, BfdState, GracefulRestart, RouteAttrs};
use common::*;
use lab::route_monitor::RouteMonitor;

#[test]
fn kill_and_restart_keeps_route_in_router_kernel() {
    let lab = Lab::new("gr", 1);
    let frr = Frr::start(
        &lab,
        &[FrrNeighbor {
            addr: speaker_v4(1),
            remote_as: 65101,
            ..Default::default()
        }],
        &FrrExtra::default(),
    );
    let peer = format!("{},{}", router_v4(1), ROUTER_AS);
    let rid = speaker_v4(1);
    let base = [
        "--local-as",
        "65101",
        "--router-id",
        &rid,
        "--peer",
        &peer,
        "--announce",
        VIP4,
        "--graceful-restart",
        "60",
    ];
    let mut d = Daemon::start(&lab.speakers[0], &base);
    wait_for("route at FRR", Duration::from_secs(30), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });
    let gr = frr.vtysh(&format!("show bgp neighbors {} json", speaker_v4(1)));
    assert!(gr.contains("gracefulRestart"), "{gr}");

    // Watch the router's kernel table every 5 ms from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, gaps) = (stop.clone(), gaps.clone());
        let r = lab.router.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (_, out) = sh(&format!("ip -n {r} -4 route show {VIP4}"));
                if out.trim().is_empty() {
                    gaps.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    d.kill9();
    let bgp_route = || frr.vtysh(&format!("show bgp ipv4 unicast {VIP4} json"));
    wait_for("route stale at FRR", Duration::from_secs(10), || {
        bgp_route().contains("\"stale\":true")
    });
    // The restarted speaker has no route yet (like lbd before its view is
    // decided) and holds End-of-RIB.
    let mut args: Vec<&str> = base
        .iter()
        .copied()
        .filter(|a| *a != "--announce" && *a != VIP4)
        .collect();
    args.extend(["--restarting", "--hold-end-of-rib"]);
    let mut d2 = Daemon::start(&lab.speakers[0], &args);
    wait_for("re-established", Duration::from_secs(30), || {
        d2.established_events() >= 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        bgp_route().contains("\"stale\":true"),
        "End-of-RIB was not held: {}",
        bgp_route()
    );
    d2.command(&format!("announce {VIP4}"));
    d2.command("end-of-rib");
    wait_for(
        "route refreshed (not stale)",
        Duration::from_secs(30),
        || {
            let r = bgp_route();
            r.contains(&speaker_v4(1)) && !r.contains("\"stale\":true")
        },
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(gaps.load(Ordering::Relaxed), 0, "route left the kernel");
    assert!(lab.router_route(VIP4).contains(&speaker_v4(1)));
}

/// A planned restart (`close_for_restart`, as `lbd` does on SIGTERM) of a
/// speaker whose sessions also run BFD: the router must treat it as a
/// graceful restart every time. FRR 8.4 stops a session hard when BFD goes
/// Down while the session is still Established, so the AdminDown that
/// tells the router "planned" must reach it only after the BGP connection's
/// close has been seen (the router closing its side). Several restarts in
/// a row, because the order was a race.
#[test]
fn planned_restarts_with_bfd_keep_route_in_router_kernel() {
    const RESTARTS: usize = 4;
    let lab = Lab::new("grbfd", 1);
    let frr = Frr::start(
        &lab,
        &[FrrNeighbor {
            addr: speaker_v4(1),
            remote_as: 65101,
            bfd: true,
            ..Default::default()
        }],
        &FrrExtra::default(),
    );
    let config = |restarting: bool| {
        let mut cfg = speaker_config(1, &[&router_v4(1)]);
        cfg.graceful_restart = Some(GracefulRestart {
            restart_time: 60,
            restarting,
        });
        for p in &mut cfg.peers {
            p.bfd = Some(BfdConfig::default());
        }
        cfg
    };
    let bgp_route = || frr.vtysh(&format!("show bgp ipv4 unicast {VIP4} json"));
    let start = |restarting: bool| {
        let sp = NsSpeaker::start(&lab.speakers[0], config(restarting));
        sp.speaker
            .announce(VIP4.parse().unwrap(), RouteAttrs::default())
            .unwrap();
        sp.speaker.release_end_of_rib();
        wait_for("BGP and BFD up", Duration::from_secs(30), || {
            sp.speaker
                .peers()
                .iter()
                .all(|p| p.bfd == Some(BfdState::Up))
        });
        wait_for("FRR's BFD peer up", Duration::from_secs(10), || {
            frr.vtysh("show bfd peers json")
                .contains("\"status\":\"up\"")
        });
        wait_for("route at FRR, not stale", Duration::from_secs(30), || {
            let r = bgp_route();
            r.contains(&speaker_v4(1)) && !r.contains("\"stale\":true")
        });
        sp
    };
    let mut sp = start(false);
    assert!(lab.router_route(VIP4).contains(&speaker_v4(1)));
    let monitor = RouteMonitor::start(&lab.router, Some("-4")).expect("ip monitor");
    for i in 0..RESTARTS {
        sp.stop_for_restart();
        // The stopped speaker's handle still holds the listening socket.
        drop(sp);
        wait_for("session down at FRR", Duration::from_secs(10), || {
            let st = frr.neighbor_state(&speaker_v4(1));
            !st.is_empty() && st != "Established"
        });
        let neighbor = frr.vtysh(&format!("show bgp neighbors {} json", speaker_v4(1)));
        assert!(
            neighbor.contains("lastResetDueTo"),
            "restart {i}: the router took the planned stop as a BFD failure: {neighbor}"
        );
        assert!(
            bgp_route().contains("\"stale\":true"),
            "restart {i}: the router did not keep the route as stale: {}",
            bgp_route()
        );
        sp = start(true);
    }
    let gap = monitor.wait(VIP4, true, Duration::from_millis(500));
    assert!(
        gap.is_err(),
        "{VIP4} left the router's kernel during a planned restart"
    );
    assert!(lab.router_route(VIP4).contains(&speaker_v4(1)));
}
