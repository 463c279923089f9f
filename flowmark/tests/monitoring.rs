//! The shipped Grafana dashboard and alert rules (configs/grafana/,
//! configs/prometheus/) against a real `flowmark collect`: after a start
//! and an end firefly and one malformed datagram, every `flowmark_*`
//! metric name the dashboard and the rules use must be in its scrape.

#[path = "../../packaging/tests/common/metric_names.rs"]
mod metric_names;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use flowmark::firefly::{self, State, Usage};
use flowmark::flow::{FlowId, Proto};
use flowmark::scitag::SciTag;

/// Kills the collector when the test ends, however it ends.
struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn every_flowmark_metric_of_the_dashboard_and_alert_rules_is_in_a_real_scrape() {
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port());
    let metrics = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowmark"))
        .args(["collect", "--listen", &listen.to_string()])
        .args(["--metrics", &metrics.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flowmark collect");
    let out = child.stdout.take().expect("stdout");
    let _collector = Collector(child);
    let mut ready = String::new();
    BufReader::new(out)
        .read_line(&mut ready)
        .expect("collector output");
    assert_eq!(ready.trim(), "flowmark: ready");

    let flow = FlowId::new(
        Proto::Tcp,
        "2001:db8::10".parse().expect("ip"),
        443,
        "2001:db8::20".parse().expect("ip"),
        40000,
    )
    .expect("flow");
    let tag = SciTag::new(3, 14).expect("cms analysis input");
    let start = SystemTime::now() - Duration::from_secs(90);
    let now = SystemTime::now();
    let usage = Usage {
        received: Some(56),
        sent: Some(1234),
    };
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for (state, usage) in [(State::Start, None), (State::End, Some(usage))] {
        let msg = firefly::message(state, &flow, tag, "xrootd", start, now, usage);
        let dgram = firefly::frame(&msg, "node1", "flowmark", now);
        sock.send_to(dgram.as_bytes(), listen)
            .expect("send firefly");
    }
    sock.send_to(b"not a firefly", listen).expect("send junk");

    let used = metric_names::used("flowmark_");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metric_names::get_metrics(metrics).unwrap_or_default();
        let scraped = metric_names::scraped(&text);
        let missing = metric_names::missing(&used, &scraped);
        if missing.is_empty() {
            assert!(text.contains("experiment=\"cms\""), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard/rules use {missing:?}, which the collector does not export; it exports {scraped:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
