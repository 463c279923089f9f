//! Prometheus metrics: the figures of `lbd status`, refreshed every second,
//! with labels per VIP, check, peer and member. A series that is not
//! refreshed for [`IDLE_TIMEOUT`] (its VIP, peer or member was removed by a
//! reload) is dropped by the exporter.

use bgp_speaker::{BfdState, State};
use metrics::{counter, gauge};

use crate::liveness::NodeState;
use crate::status::Status;

/// Several export rounds: only a series nobody refreshes any more goes.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn export(s: &Status) {
    for st in [NodeState::Active, NodeState::Draining, NodeState::Down] {
        gauge!("lbd_node_state", "state" => st.name()).set(f64::from(u8::from(s.node.state == st)));
    }
    gauge!("lbd_uptime_seconds").set(s.node.uptime_s as f64);
    for (name, n) in &s.node.dataplane {
        gauge!("lbd_dataplane_node_packets", "counter" => name.clone()).set(*n as f64);
    }
    for v in &s.vips {
        let vip = v.address.clone();
        gauge!("lbd_vip_healthy", "vip" => vip.clone()).set(f64::from(u8::from(v.healthy)));
        gauge!("lbd_vip_announced", "vip" => vip.clone()).set(f64::from(u8::from(v.announced)));
        gauge!("lbd_vip_in_table", "vip" => vip.clone()).set(f64::from(u8::from(v.in_table)));
        gauge!("lbd_table_second_hop_buckets", "vip" => vip.clone()).set(v.second_hops as f64);
        for (node, buckets) in &v.share {
            gauge!("lbd_table_buckets", "vip" => vip.clone(), "node" => node.to_string())
                .set(*buckets as f64);
        }
        for (name, n) in &v.counters {
            gauge!("lbd_dataplane_packets", "vip" => vip.clone(), "counter" => name.clone())
                .set(*n as f64);
        }
        for c in &v.checks {
            let labels = [("vip", vip.clone()), ("check", c.name.clone())];
            gauge!("lbd_check_up", &labels).set(f64::from(u8::from(c.up)));
            if let Some(l) = c.latency_ms {
                gauge!("lbd_check_latency_seconds", &labels).set(l / 1000.0);
            }
        }
    }
    for p in &s.bgp {
        let peer = p.peer.clone();
        gauge!("lbd_bgp_established", "peer" => peer.clone())
            .set(f64::from(u8::from(p.state == State::Established)));
        gauge!("lbd_bgp_prefixes_sent", "peer" => peer.clone()).set(p.prefixes_sent as f64);
        // Only for peers with BFD configured: no series means no BFD.
        if let Some(bfd) = p.bfd {
            gauge!("lbd_bfd_up", "peer" => peer.clone())
                .set(f64::from(u8::from(bfd == BfdState::Up)));
        }
        gauge!("lbd_bgp_uptime_seconds", "peer" => peer.clone())
            .set(p.uptime_s.unwrap_or(0) as f64);
        for (key, n) in &p.update_errors {
            // "approach/class": one series per RFC 7606 approach and class.
            let (approach, class) = key.split_once('/').unwrap_or(("", key));
            let labels = [
                ("peer", peer.clone()),
                ("approach", approach.to_string()),
                ("class", class.to_string()),
            ];
            counter!("lbd_bgp_update_errors_total", &labels).absolute(*n);
        }
    }
    gauge!("lbd_bgp_refused_unknown_connections").set(s.bgp_refused_unknown as f64);
    for (outcome, n) in &s.liveness {
        gauge!("lbd_liveness_connections", "outcome" => outcome.clone()).set(*n as f64);
    }
    for m in &s.members {
        let id = m.id.to_string();
        gauge!("lbd_member_up", "member" => id.clone()).set(f64::from(u8::from(m.up)));
        gauge!("lbd_member_generation_matches", "member" => id)
            .set(f64::from(u8::from(m.generation_matches)));
    }
}
