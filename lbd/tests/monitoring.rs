//! The shipped Grafana dashboard and alert rules (configs/grafana/,
//! configs/prometheus/) against a real lbd: one node with FRR, BGP and BFD
//! up and its HTTP check passing; every `lbd_*` metric name the dashboard
//! and the rules use must be in its `/metrics` scrape.

#[path = "../../packaging/tests/common/metric_names.rs"]
mod metric_names;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const BFD: &str = "bfd = { min_tx = \"100ms\", min_rx = \"100ms\", multiplier = 3 }\n";

#[test]
fn every_lbd_metric_of_the_dashboard_and_alert_rules_is_in_a_real_scrape() {
    let mut lab = Lab::new("metrics", 1, false);
    lab.start_frr(&lab.frr_conf("bfd profile fast"));
    let cfg = lab
        .node_config(1, &[1])
        .replace("remote_as = 65000\n", &format!("remote_as = 65000\n{BFD}"));
    let metrics: SocketAddr = "127.0.0.1:9181".parse().expect("addr");
    assert!(cfg.contains(&format!("metrics = \"{metrics}\"")), "{cfg}");
    lab.write_config(0, &cfg);
    lab.start_lbd(0);
    wait_for(
        "VIP announced, BFD up, checks measured",
        Duration::from_secs(30),
        || {
            let s = lab.status(0);
            s["vips"][0]["announced"] == true
                && s["bgp"][0]["state"] == "Established"
                && s["bgp"][0]["bfd"] == "Up"
                && s["vips"][0]["checks"][0]["latency_ms"].is_number()
        },
    );
    // The exporter refreshes every second: check the first scrape that
    // shows the state above (or the last one, if none does in time).
    let scrape = || {
        lab.nodes[0]
            .ns
            .run(|| Ok(metric_names::get_metrics(metrics)?))
            .expect("scrape lbd's /metrics in the node's namespace")
    };
    let used = metric_names::used("lbd_");
    let mut text = String::new();
    let _ = lab::wait::wait_until("a scrape after that state", Duration::from_secs(10), || {
        text = scrape();
        metric_names::missing(&used, &metric_names::scraped(&text)).is_empty()
            && DATAPLANE_PREFIXES.iter().all(|p| has_counter(&text, p))
            && bfd_up(&text)
    });
    let scraped = metric_names::scraped(&text);
    let missing = metric_names::missing(&used, &scraped);
    assert!(
        missing.is_empty(),
        "the dashboard/rules use {missing:?}, which lbd does not export; it exports {scraped:?}"
    );
    for prefix in DATAPLANE_PREFIXES {
        assert!(
            has_counter(&text, prefix),
            "no lbd_dataplane_packets counter {prefix}* in:\n{text}"
        );
    }
    assert!(bfd_up(&text), "lbd_bfd_up is not 1 with BFD up:\n{text}");
}

/// The rules and panels select dataplane counters by reason prefix.
const DATAPLANE_PREFIXES: [&str; 3] = ["drop_", "fwd_", "decap"];

fn has_counter(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with("lbd_dataplane_packets{") && l.contains(&format!("counter=\"{prefix}"))
    })
}

fn bfd_up(text: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with("lbd_bfd_up{") && l.ends_with(" 1"))
}
