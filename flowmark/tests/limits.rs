//! What a hostile or broken producer cannot do: grow the collector's
//! Prometheus series without bound, reach the collector from outside the
//! allowed networks, grow the daemon's flow table without bound, or find
//! the flowd pipe closed to its writers because of a umask.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::UdpSocket,
    os::unix::fs::PermissionsExt,
    time::{Duration, SystemTime},
};

use common::*;
use flowmark::{
    daemon::{Config, Daemon, Request},
    firefly,
    flow::FlowId,
    registry::Registry,
    scitag::SciTag,
};
use serde_json::{Value, json};

/// A valid start firefly whose context carries any ids, framed as syslog.
fn firefly_with(exp: i64, act: i64) -> Vec<u8> {
    let flow = FlowId::parse("tcp", "192.0.2.1", "443", "192.0.2.2", "40000").unwrap();
    let now = SystemTime::now();
    let tag = SciTag::new(1, 2).unwrap();
    let mut msg = firefly::message(firefly::State::Start, &flow, tag, "t", now, now, None);
    msg["context"]["experiment-id"] = json!(exp);
    msg["context"]["activity-id"] = json!(act);
    firefly::frame(&msg, "sender", "t", now).into_bytes()
}

/// The label sets (label name -> value) of every series of `metric`.
fn series(text: &str, metric: &str) -> Vec<BTreeMap<String, String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .map(|l| {
            let body = &l[..l.rfind('}').unwrap()];
            body.split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect()
        })
        .collect()
}

/// Sends `datagrams` from namespace `ns` to `to`, `batch` at a time, each
/// batch once the collector has counted the previous one (`counted` reads
/// its running total), so that no datagram is lost to a full socket buffer.
fn send_paced(
    lab: &Lab,
    ns: &str,
    to: &str,
    datagrams: Vec<Vec<u8>>,
    counted: impl Fn(&Lab) -> f64,
) {
    let mut sent = 0.0;
    for chunk in datagrams.chunks(50) {
        sent += chunk.len() as f64;
        let (ns, to, chunk) = (ns.to_string(), to.to_string(), chunk.to_vec());
        in_netns(&ns, move || {
            let s = UdpSocket::bind(if to.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            })
            .unwrap();
            for d in &chunk {
                s.send_to(d, &to).unwrap();
            }
        });
        wait_value(
            "the collector counted the batch",
            Duration::from_secs(20),
            || (counted(lab) >= sent).then_some(()),
        );
    }
}

#[test]
fn collector_series_stay_bounded_whatever_the_ids() {
    let mut lab = Lab::new("card");
    let cli = lab.cli.clone();
    spawn_collector(&mut lab, &[]);
    lab.wait_log("collector", "flowmark: ready");
    // Every in-range experiment id with a spread of activities, then ids
    // out of range (and a u64 beyond i64).
    let mut datagrams: Vec<Vec<u8>> = (0..=511).map(|e| firefly_with(e, (e * 7) % 64)).collect();
    let in_range = datagrams.len() as f64;
    let out_of_range = [
        (512, 1),
        (1023, 1),
        (5000, 0),
        (-1, 0),
        (3, 64),
        (3, -1),
        (3, 1000),
    ];
    datagrams.extend(out_of_range.iter().map(|&(e, a)| firefly_with(e, a)));
    let mut huge = firefly_with(3, 1);
    let text = String::from_utf8(huge.clone()).unwrap();
    huge = text
        .replace(
            "\"experiment-id\":3",
            "\"experiment-id\":18446744073709551615",
        )
        .into_bytes();
    datagrams.push(huge);
    let total = datagrams.len() as f64;
    let counted = |lab: &Lab| {
        let m = metrics(lab, &cli, 9814);
        metric_sum(&m, "flowmark_collector_fireflies_total", &[])
            + metric_sum(&m, "flowmark_collector_rejected_total", &[])
    };
    send_paced(&lab, &cli, "127.0.0.1:10514", datagrams, counted);

    let m = metrics(&lab, &cli, 9814);
    assert_eq!(
        metric_sum(&m, "flowmark_collector_fireflies_total", &[]),
        in_range,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "flowmark_collector_rejected_total",
            &["reason=\"out_of_range\""]
        ),
        total - in_range,
        "{m}"
    );
    let registry = Registry::builtin();
    let names: BTreeSet<&str> = registry
        .experiments
        .values()
        .map(|e| e.name.as_str())
        .collect();
    let started = series(&m, "flowmark_collector_flows_started_total");
    for s in &started {
        let exp = &s["experiment_id"];
        if exp == "unknown" {
            assert_eq!(s["experiment"], "unknown", "{s:?}");
            assert_eq!(s["activity_id"], "unknown", "{s:?}");
            continue;
        }
        let id: u16 = exp.parse().unwrap_or_else(|_| panic!("label {exp:?}"));
        assert_eq!(
            registry.experiment_name(id),
            Some(s["experiment"].as_str()),
            "{s:?}"
        );
        assert!(names.contains(s["experiment"].as_str()));
        let act = &s["activity_id"];
        if act != "unknown" {
            let a: u8 = act.parse().unwrap();
            assert_eq!(
                registry.activity_name(id, a),
                Some(s["activity"].as_str()),
                "{s:?}"
            );
        }
    }
    // One series for all the unregistered experiments, and at most one
    // per registered experiment here (each was sent once).
    let unknown = started
        .iter()
        .filter(|s| s["experiment_id"] == "unknown")
        .count();
    assert_eq!(unknown, 1, "{m}");
    assert!(started.len() <= registry.experiments.len() + 1, "{m}");
    let unknown_flows = metric_sum(
        &m,
        "flowmark_collector_flows_started_total",
        &["experiment_id=\"unknown\""],
    );
    let registered = (0..=511u16)
        .filter(|e| registry.experiment_name(*e).is_some())
        .count();
    assert_eq!(unknown_flows, (512 - registered) as f64, "{m}");
}

#[test]
fn collector_caps_series_and_takes_only_allowed_senders() {
    let mut lab = Lab::new("cap");
    let (srv, cli) = (lab.srv.clone(), lab.cli.clone());
    let allow = format!("{SRV4}/32");
    spawn_collector(&mut lab, &["--max-series", "3", "--allow-from", &allow]);
    lab.wait_log("collector", "flowmark: ready");
    // Ten registered (experiment, activity) pairs from the allowed node,
    // over IPv4 to a dual-stack socket (the sender is seen as ::ffff:...).
    let registry = Registry::builtin();
    let pairs: Vec<(u16, u8)> = registry
        .experiments
        .iter()
        .filter(|(e, _)| **e <= 511)
        .flat_map(|(e, x)| x.activities.keys().map(move |a| (*e, *a)))
        .take(10)
        .collect();
    assert_eq!(pairs.len(), 10);
    let datagrams = pairs
        .iter()
        .map(|&(e, a)| firefly_with(e.into(), a.into()))
        .collect();
    let to = format!("{CLI4}:10514");
    let counted = |lab: &Lab| {
        metric_sum(
            &metrics(lab, &cli, 9814),
            "flowmark_collector_fireflies_total",
            &[],
        )
    };
    send_paced(&lab, &srv, &to, datagrams, counted);
    // Five from the collector's own loopback: not an allowed sender.
    let from_loopback = (0..5).map(|_| firefly_with(3, 14)).collect();
    let refused = |lab: &Lab| {
        metric_sum(
            &metrics(lab, &cli, 9814),
            "flowmark_collector_rejected_total",
            &["reason=\"source\""],
        )
    };
    send_paced(&lab, &cli, "127.0.0.1:10514", from_loopback, refused);

    let m = metrics(&lab, &cli, 9814);
    let started = series(&m, "flowmark_collector_flows_started_total");
    assert_eq!(started.len(), 4, "three label sets and \"other\": {m}");
    let other: Vec<_> = started
        .iter()
        .filter(|s| s["experiment"] == "other")
        .collect();
    assert_eq!(other.len(), 1, "{m}");
    assert_eq!(
        metric_sum(
            &m,
            "flowmark_collector_flows_started_total",
            &["experiment=\"other\""]
        ),
        7.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_series_capped_total", &[]),
        7.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "flowmark_collector_fireflies_total", &[]),
        10.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "flowmark_collector_rejected_total",
            &["reason=\"source\""]
        ),
        5.0,
        "{m}"
    );
}

/// An in-process daemon without eBPF and the channel to it.
struct Running {
    tx: tokio::sync::mpsc::Sender<Request>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn new(max_flows: usize, max_age: Duration) -> Running {
        let cfg = Config {
            interfaces: vec![],
            mark: false,
            pipe: None,
            api: None,
            collectors: vec![],
            peer_fireflies: false,
            peer_port: firefly::PORT,
            ongoing: Duration::ZERO,
            linger: Duration::ZERO,
            application: "test".into(),
            port_rules: vec![],
            cgroup_rules: vec![],
            max_flows,
            max_age,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                Daemon::new(cfg).await.unwrap().serve(rx).await;
            })
        });
        Running {
            tx,
            thread: Some(thread),
        }
    }

    fn ask(&self, req: impl FnOnce(tokio::sync::oneshot::Sender<Value>) -> Request) -> Value {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.blocking_send(req(reply)).unwrap();
        rx.blocking_recv().unwrap()
    }

    fn start(&self, flow: FlowId) -> Value {
        self.ask(|r| Request::Start {
            flow,
            tag: SciTag::from_value(206).unwrap(),
            application: None,
            mark: true,
            reply: Some(r),
        })
    }

    fn end(&self, flow: FlowId) -> Value {
        self.ask(|r| Request::End {
            flow,
            hint: None,
            usage: None,
            reply: Some(r),
        })
    }

    fn status(&self) -> Value {
        self.ask(|reply| Request::Status { reply })
    }

    /// The registered flows' source ports.
    fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.status()["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let text = f["flow"].as_str().unwrap();
                let src = text.split(' ').nth(1).unwrap();
                src.rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect();
        ports.sort();
        ports
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let (tx, _) = tokio::sync::mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flow(sport: u16) -> FlowId {
    FlowId::parse(
        "tcp",
        "192.0.2.1",
        &sport.to_string(),
        "198.51.100.7",
        "40000",
    )
    .unwrap()
}

#[test]
fn flow_table_is_bounded_and_counts_evictions() {
    let d = Running::new(3, Duration::ZERO);
    for port in 1..=5 {
        assert_eq!(d.start(flow(port))["ok"], true);
    }
    // The two oldest made room.
    assert_eq!(d.ports(), [3, 4, 5]);
    assert_eq!(d.status()["evicted"], json!({"table_full": 2}));
    // A restart of a registered flow evicts nothing, and makes it the newest.
    d.start(flow(3));
    assert_eq!(d.ports(), [3, 4, 5]);
    d.start(flow(6));
    assert_eq!(d.ports(), [3, 5, 6]);
    assert_eq!(d.status()["evicted"], json!({"table_full": 3}));
    // An evicted flow's end is an end without start.
    assert_eq!(d.end(flow(1))["ok"], false);
    assert_eq!(d.end(flow(5))["ok"], true);
    assert_eq!(d.ports(), [3, 6]);
    // Control: with room, nothing is evicted.
    let roomy = Running::new(1000, Duration::ZERO);
    for port in 1..=5 {
        roomy.start(flow(port));
    }
    assert_eq!(roomy.ports(), [1, 2, 3, 4, 5]);
    assert_eq!(roomy.status()["evicted"], json!({}));
}

#[test]
fn flows_never_ended_age_out() {
    let d = Running::new(1000, Duration::from_secs(1));
    d.start(flow(1));
    d.start(flow(2));
    d.start(flow(3));
    assert_eq!(d.end(flow(3))["ok"], true);
    assert_eq!(d.ports(), [1, 2]);
    wait_value("flows aged out", Duration::from_secs(10), || {
        d.ports().is_empty().then_some(())
    });
    // Only the two never ended; the ended one is not an eviction.
    assert_eq!(d.status()["evicted"], json!({"aged": 2}));
    // A flow registered later lives its own max age.
    d.start(flow(4));
    assert_eq!(d.ports(), [4]);
}

#[test]
fn pipe_is_0622_whatever_the_umask() {
    let mut lab = Lab::new("fifo");
    let srv = lab.srv.clone();
    // Control: a FIFO made under umask 077 is not writable by others.
    let control = lab.path("control");
    sh(&["sh", "-c", &format!("umask 077 && mkfifo {control}")]);
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&control), 0o600);
    // The daemon under the same umask: a new pipe, and one left behind
    // with the wrong mode.
    let fresh = lab.path("flowd");
    let script = format!(
        "umask 077 && exec {} run --pipe {fresh} --api none --ongoing-interval 0",
        flowmark_bin()
    );
    lab.spawn("fresh", &srv, &["sh", "-c", &script]);
    lab.wait_log("fresh", "flowmark: ready");
    assert_eq!(mode(&fresh), 0o622);
    let script = format!(
        "umask 077 && exec {} run --pipe {control} --api none --ongoing-interval 0",
        flowmark_bin()
    );
    lab.spawn("left", &srv, &["sh", "-c", &script]);
    lab.wait_log("left", "flowmark: ready");
    assert_eq!(mode(&control), 0o622);
}
