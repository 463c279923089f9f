//! The daemon's firefly life cycle in process (no eBPF, no namespaces):
//! start, periodic ongoing, end with the usage given by the API, each a
//! syslog-framed datagram that validates against the published schema.
use std::{net::UdpSocket, time::Duration};

use flowmark::{
    daemon::{Config, Daemon, Request},
    firefly,
    flow::FlowId,
    scitag::SciTag,
};

fn recv(sock: &UdpSocket) -> serde_json::Value {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a firefly within the timeout");
    assert!(
        buf.starts_with(b"<134>1 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    firefly::parse(&buf[..n]).expect("valid firefly")
}

#[test]
fn start_ongoing_end_fireflies_reach_a_collector() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let cfg = Config {
        interfaces: vec![],
        mark: false,
        pipe: None,
        api: None,
        collectors: vec![collector.local_addr().unwrap()],
        peer_fireflies: false,
        peer_port: firefly::PORT,
        ongoing: Duration::from_millis(200),
        linger: Duration::ZERO,
        application: "test".into(),
        port_rules: vec![],
        cgroup_rules: vec![],
        max_flows: flowmark::daemon::DEFAULT_MAX_FLOWS,
        max_age: flowmark::daemon::DEFAULT_MAX_AGE,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flow = FlowId::parse("tcp", "192.0.2.1", "443", "198.51.100.7", "40000").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = std::thread::spawn(move || {
        rt.block_on(async {
            let daemon = Daemon::new(cfg).await.unwrap();
            daemon.serve(rx).await;
        })
    });
    let tag = SciTag::from_value(206).unwrap();
    tx.blocking_send(Request::Start {
        flow,
        tag,
        application: None,
        mark: true,
        reply: None,
    })
    .unwrap();
    let start = recv(&collector);
    assert_eq!(start["flow-lifecycle"]["state"], "start");
    assert_eq!(start["flow-id"]["afi"], "ipv4");
    assert_eq!(start["flow-id"]["src-port"], 443);
    assert_eq!(start["context"]["experiment-id"], 3);
    assert_eq!(start["context"]["activity-id"], 14);
    let ongoing = recv(&collector);
    assert_eq!(ongoing["flow-lifecycle"]["state"], "ongoing");
    assert_eq!(
        ongoing["flow-lifecycle"]["start-time"],
        start["flow-lifecycle"]["start-time"]
    );
    let usage = flowmark::firefly::Usage {
        sent: Some(1234),
        received: Some(56),
    };
    tx.blocking_send(Request::End {
        flow,
        hint: None,
        usage: Some(usage),
        reply: None,
    })
    .unwrap();
    let end = loop {
        let m = recv(&collector);
        if m["flow-lifecycle"]["state"] == "end" {
            break m;
        }
        assert_eq!(m["flow-lifecycle"]["state"], "ongoing");
    };
    assert_eq!(end["usage"]["sent"], 1234);
    assert_eq!(end["usage"]["received"], 56);
    assert!(end["flow-lifecycle"]["end-time"].is_string());
    drop(tx);
    handle.join().unwrap();
}
