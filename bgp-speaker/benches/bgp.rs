//! Benchmark against FRR 8.4 in network namespaces, with FRR itself as the
//! node-side speaker for the baseline, measured in the same run:
//! - announce()/withdraw() to the route appearing in / leaving the router's
//!   kernel table (seen by `ip monitor route`), vs an FRR node speaker
//!   driven through vtysh;
//! - silent node failure to route removal with BFD 100 ms x 3, vs hold timer
//!   only (hold time 9 s, FRR's `timers 3 9`);
//! - process start to Established: bgp-speakerd vs FRR bgpd.
//!
//! Writes target/bench/bgp-speaker.json (keys withdraw_ms, announce_ms,
//! bfd_failover_ms, holdtimer_failover_ms, start_to_established_ms, each
//! {median, max}, and the same under "baseline") and prints a table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bgp_speaker::{BfdConfig, BfdState, RouteAttrs};
use common::*;
use lab::route_monitor::RouteMonitor;

const RUNS: usize = 20;
const FAILOVER_RUNS: usize = 10;
const HOLD_RUNS: usize = 3;
const START_RUNS: usize = 10;
const VIP_FRR: &str = "198.51.100.20/32";
const VIP_D: &str = "198.51.100.30/32";

/// `ip monitor route` in the router namespace, lines stamped on arrival.
struct Monitor(RouteMonitor);

impl Monitor {
    fn start(ns: &str) -> Monitor {
        Monitor(RouteMonitor::start(ns, Some("-4")).expect("ip monitor"))
    }

    fn drain(&self) {
        self.0.drain();
    }

    /// Time of the first line about `prefix` (a deletion if `deleted`).
    fn wait(&self, prefix: &str, deleted: bool, limit: Duration) -> Instant {
        self.0
            .wait(prefix, deleted, limit)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        median: v[v.len() / 2],
        max: v[v.len() - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn frr_node_conf(i: usize) -> String {
    format!(
        "frr defaults traditional\nhostname n{i}\nrouter bgp {asn}\n bgp router-id {rid}\n no bgp ebgp-requires-policy\n \
         no bgp default ipv4-unicast\n no bgp network import-check\n neighbor {r} remote-as {ROUTER_AS}\n \
         neighbor {r} timers 3 9\n neighbor {r} timers connect 1\n address-family ipv4 unicast\n  neighbor {r} activate\n \
         exit-address-family\n!\n",
        asn = 65100 + i,
        rid = speaker_v4(i),
        r = router_v4(i)
    )
}

fn vtysh_node(frr: &Frr, i: usize, cmd: &str) {
    let out = frr.vtysh_multi(&[
        "configure terminal",
        &format!("router bgp {}", 65100 + i),
        "address-family ipv4 unicast",
        cmd,
    ]);
    assert!(!out.contains("%"), "vtysh: {out}");
}

fn main() {
    let out_path = std::env::args()
        .skip_while(|a| a != "--out")
        .nth(1)
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/bench/bgp-speaker.json"
            )
            .into()
        });
    let lab = Lab::new("bench", 3);
    let neighbor = |i: usize, bfd: bool| FrrNeighbor {
        addr: speaker_v4(i),
        remote_as: 65100 + i as u32,
        bfd,
        ..Default::default()
    };
    let frr = Frr::start(
        &lab,
        &[neighbor(1, true), neighbor(2, false), neighbor(3, false)],
        &FrrExtra::default(),
    );
    let mon = Monitor::start(&lab.router);

    // Speaker 1: ours, in-process, BFD on. Node 2: FRR as the node speaker.
    let mut c1 = speaker_config(1, &[&router_v4(1)]);
    c1.peers[0].bfd = Some(BfdConfig::default());
    let s1 = NsSpeaker::start(&lab.speakers[0], c1);
    let mut node = Frr::start_in(&lab.speakers[1], lab.path("node2"), &frr_node_conf(2));
    wait_for("speaker 1 BFD up", Duration::from_secs(30), || {
        s1.speaker.peers()[0].bfd == Some(BfdState::Up)
            && frr
                .vtysh("show bfd peers json")
                .contains("\"status\":\"up\"")
    });
    wait_for("FRR node established", Duration::from_secs(30), || {
        node.vtysh("show bgp summary json")
            .contains("\"state\":\"Established\"")
    });

    let vip: bgp_speaker::IpNet = VIP4.parse().unwrap();
    let (mut ann, mut wd, mut ann_b, mut wd_b) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        mon.drain();
        let t = Instant::now();
        s1.speaker.announce(vip, RouteAttrs::default()).unwrap();
        ann.push(ms(mon.wait(VIP4, false, Duration::from_secs(10)) - t));
        let t = Instant::now();
        s1.speaker.withdraw(vip);
        wd.push(ms(mon.wait(VIP4, true, Duration::from_secs(10)) - t));

        let t = Instant::now();
        vtysh_node(&node, 2, &format!("network {VIP_FRR}"));
        ann_b.push(ms(mon.wait(VIP_FRR, false, Duration::from_secs(10)) - t));
        let t = Instant::now();
        vtysh_node(&node, 2, &format!("no network {VIP_FRR}"));
        wd_b.push(ms(mon.wait(VIP_FRR, true, Duration::from_secs(10)) - t));
    }

    // Silent failure with BFD: the node's packets stop reaching the router.
    s1.speaker.announce(vip, RouteAttrs::default()).unwrap();
    mon.wait(VIP4, false, Duration::from_secs(10));
    let mut bfd = vec![];
    for _ in 0..FAILOVER_RUNS {
        mon.drain();
        let t = Instant::now();
        must(&format!(
            "ip -n {} route add blackhole {}/32",
            lab.speakers[0],
            router_v4(1)
        ));
        bfd.push(ms(mon.wait(VIP4, true, Duration::from_secs(5)) - t));
        must(&format!(
            "ip -n {} route del blackhole {}/32",
            lab.speakers[0],
            router_v4(1)
        ));
        mon.wait(VIP4, false, Duration::from_secs(30));
        wait_for(
            "BFD up again on both sides",
            Duration::from_secs(30),
            || {
                s1.speaker.peers()[0].bfd == Some(BfdState::Up)
                    && frr
                        .vtysh("show bfd peers json")
                        .contains("\"status\":\"up\"")
            },
        );
    }

    // Start to Established, bgp-speakerd as a process; the first runs also
    // measure hold-timer-only failover.
    let peer = format!("{},{}", router_v4(3), ROUTER_AS);
    let rid = speaker_v4(3);
    let args = [
        "--local-as",
        "65103",
        "--router-id",
        &rid,
        "--peer",
        &peer,
        "--announce",
        VIP_D,
    ];
    let (mut start, mut hold) = (vec![], vec![]);
    for run in 0..START_RUNS {
        let t = Instant::now();
        let mut d = Daemon::start(&lab.speakers[2], &args);
        wait_for("bgp-speakerd established", Duration::from_secs(30), || {
            d.established_events() >= 1
        });
        start.push(ms(t.elapsed()));
        mon.wait(VIP_D, false, Duration::from_secs(10));
        if run < HOLD_RUNS {
            mon.drain();
            let t = Instant::now();
            must(&format!(
                "ip -n {} route add blackhole {}/32",
                lab.speakers[2],
                router_v4(3)
            ));
            hold.push(ms(mon.wait(VIP_D, true, Duration::from_secs(20)) - t));
            d.kill9();
            must(&format!(
                "ip -n {} route del blackhole {}/32",
                lab.speakers[2],
                router_v4(3)
            ));
        } else {
            d.command("shutdown");
            mon.wait(VIP_D, true, Duration::from_secs(10));
        }
    }
    // Baseline: FRR bgpd start to Established on node 2.
    let mut start_b = vec![];
    for _ in 0..START_RUNS {
        node.kill_bgpd();
        let t = Instant::now();
        node.start_bgpd();
        wait_for("FRR node re-established", Duration::from_secs(30), || {
            node.vtysh("show bgp summary json")
                .contains("\"state\":\"Established\"")
        });
        start_b.push(ms(t.elapsed()));
    }

    let rows = [
        (
            "announce_ms",
            stat(ann),
            Some(stat(ann_b)),
            "FRR node speaker (vtysh network)",
        ),
        (
            "withdraw_ms",
            stat(wd),
            Some(stat(wd_b)),
            "FRR node speaker (vtysh no network)",
        ),
        (
            "bfd_failover_ms",
            stat(bfd),
            Some(stat(hold.clone())),
            "hold timer only (9 s)",
        ),
        ("holdtimer_failover_ms", stat(hold), None, "-"),
        (
            "start_to_established_ms",
            stat(start),
            Some(stat(start_b)),
            "FRR bgpd start",
        ),
    ];
    let mut json = serde_json::Map::new();
    let mut base = serde_json::Map::new();
    println!(
        "{:<26} {:>10} {:>10}   {:>10} {:>10}  baseline",
        "metric", "median", "max", "b.median", "b.max"
    );
    for (k, s, b, what) in &rows {
        json.insert(
            k.to_string(),
            serde_json::json!({"median": s.median, "max": s.max}),
        );
        match b {
            Some(b) => {
                base.insert(
                    k.to_string(),
                    serde_json::json!({"median": b.median, "max": b.max, "what": what}),
                );
                println!(
                    "{k:<26} {:>10.1} {:>10.1}   {:>10.1} {:>10.1}  {what}",
                    s.median, s.max, b.median, b.max
                );
            }
            None => println!("{k:<26} {:>10.1} {:>10.1}", s.median, s.max),
        }
    }
    json.insert("baseline".into(), serde_json::Value::Object(base));
    json.insert(
        "runs".into(),
        serde_json::json!({"announce_withdraw": RUNS, "bfd": FAILOVER_RUNS, "hold": HOLD_RUNS, "start": START_RUNS}),
    );
    if let Some(dir) = std::path::Path::new(&out_path).parent() {
        std::fs::create_dir_all(dir).expect("bench dir");
    }
    std::fs::write(&out_path, serde_json::to_string_pretty(&json).unwrap()).expect("write json");
    println!("wrote {out_path}");
    drop(s1);
    drop(node);
}
