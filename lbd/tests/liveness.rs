//! Peer liveness over real HTTP on the loopback: the endpoint serves the
//! node's report; polling marks a member up, records its state and
//! generation (a different one is kept for status to flag), refuses a node
//! that answers with another id, and marks it down after `fall` failed polls.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use lbd::config::{Liveness, Member};
use lbd::liveness::{self, NodeState, Report};
use tokio::sync::watch;

fn report(node_id: u16, generation: &str) -> Report {
    Report {
        node_id,
        state: NodeState::Draining,
        generation: generation.into(),
        vips: BTreeMap::from([("198.51.100.10".to_string(), true)]),
    }
}

async fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_marks_up_records_state_and_generation_then_down_after_fall() {
    let std = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = std.local_addr().expect("addr").port();
    std.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(std).expect("listener");
    let (tx, rx) = watch::channel(report(2, "0123456789abcdef"));

    let cfg = Liveness {
        port,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(40),
        rise: 1,
        fall: 3,
        secret_file: None,
    };
    let all = [
        Member {
            id: 1,
            address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            weight: 1,
        },
        Member {
            id: 2,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            weight: 1,
        },
    ];
    let server = tokio::spawn(liveness::serve(
        listener,
        liveness::Endpoint {
            report: rx,
            members: liveness::members(&all, 2, &cfg),
            keys: watch::channel(None).1,
            deadline: Duration::from_secs(1),
            counters: Default::default(),
        },
    ));
    let members = liveness::members(&all, 1, &cfg);
    assert_eq!(
        liveness::lock(&members).len(),
        1,
        "a node does not poll itself"
    );
    let poller = tokio::spawn(liveness::poll(
        members.clone(),
        liveness::Poller {
            cfg,
            generation: watch::channel("fedcba9876543210".to_string()).1,
            local_address: Some(all[0].address),
            keys: watch::channel(None).1,
        },
    ));

    wait(Duration::from_secs(5), || {
        liveness::lock(&members).get(&2).is_some_and(|m| m.up)
    })
    .await;
    {
        let m = liveness::lock(&members);
        let r = m.get(&2).and_then(|m| m.report.clone()).expect("report");
        assert_eq!(r.state, NodeState::Draining);
        assert_eq!(r.generation, "0123456789abcdef");
        assert_eq!(r.vips.get("198.51.100.10"), Some(&true));
    }

    // A node answering with another id is not the member we poll.
    tx.send_replace(report(3, "fedcba9876543210"));
    wait(Duration::from_secs(5), || {
        !liveness::lock(&members).get(&2).is_some_and(|m| m.up)
    })
    .await;
    let err = liveness::lock(&members)
        .get(&2)
        .and_then(|m| m.last_error.clone());
    assert_eq!(err.as_deref(), Some("answered as node 3, expected 2"));

    tx.send_replace(report(2, "fedcba9876543210"));
    wait(Duration::from_secs(5), || {
        liveness::lock(&members).get(&2).is_some_and(|m| m.up)
    })
    .await;

    // The endpoint goes away: down after fall (3) polls of 50 ms.
    server.abort();
    let took = wait(Duration::from_secs(5), || {
        !liveness::lock(&members).get(&2).is_some_and(|m| m.up)
    })
    .await;
    assert!(took < Duration::from_secs(2), "down after {took:?}");
    assert!(
        liveness::lock(&members)
            .get(&2)
            .and_then(|m| m.last_error.clone())
            .is_some()
    );
    poller.abort();
}
