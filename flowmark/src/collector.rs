//! `flowmark collect`: receives fireflies on UDP, validates them against
//! the published schema, and aggregates them per experiment and activity
//! (registry names) into Prometheus metrics.

use std::net::SocketAddr;

use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::net::UdpSocket;

use crate::{bad, firefly, registry::Registry};

pub const DURATION_METRIC: &str = "flowmark_collector_flow_duration_seconds";
pub const DURATION_BUCKETS: &[f64] = &[
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];

pub async fn serve(sock: UdpSocket, registry: Registry) {
    let mut buf = vec![0u8; firefly::MAX_DATAGRAM + 1];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("collector receive: {e}");
                continue;
            }
        };
        if n > firefly::MAX_DATAGRAM {
            reject("too_large", "datagram larger than 8 KiB", from, &buf[..64]);
            continue;
        }
        match firefly::parse(&buf[..n]) {
            Ok(v) => record(&v, &registry),
            Err(r) => {
                let detail = match &r {
                    firefly::Reject::NotJson(e) => format!("firefly is not JSON: {e}"),
                    firefly::Reject::Schema(e) => format!("firefly violates the schema: {e}"),
                    other => format!("firefly rejected: {}", other.name()),
                };
                reject(r.name(), &detail, from, &buf[..n]);
            }
        }
    }
}

fn reject(reason: &'static str, detail: &str, from: SocketAddr, data: &[u8]) {
    metrics::counter!("flowmark_collector_rejected_total", "reason" => reason).increment(1);
    let kind = match reason {
        "not_utf8" => "firefly_not_utf8",
        "bad_syslog_header" => "firefly_bad_syslog_header",
        "not_json" => "firefly_not_json",
        "schema" => "firefly_schema",
        _ => "firefly_too_large",
    };
    bad::report(
        kind,
        &format!("{detail} (from {from})"),
        &String::from_utf8_lossy(data),
    );
}

/// Adds one valid firefly to the aggregates.
pub fn record(v: &Value, registry: &Registry) {
    let state = v["flow-lifecycle"]["state"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let exp_id = v["context"]["experiment-id"].as_i64().unwrap_or(0);
    let act_id = v["context"]["activity-id"].as_i64().unwrap_or(0);
    let (exp_name, act_name) = match (u16::try_from(exp_id), u8::try_from(act_id)) {
        (Ok(e), Ok(a)) => (
            registry.experiment_name(e).unwrap_or("unknown").to_string(),
            registry
                .activity_name(e, a)
                .unwrap_or("unknown")
                .to_string(),
        ),
        _ => ("unknown".to_string(), "unknown".to_string()),
    };
    let labels = [
        ("experiment", exp_name),
        ("activity", act_name),
        ("experiment_id", exp_id.to_string()),
        ("activity_id", act_id.to_string()),
    ];
    let mut with_state = labels.to_vec();
    with_state.push(("state", state.clone()));
    metrics::counter!("flowmark_collector_fireflies_total", &with_state).increment(1);
    match state.as_str() {
        "start" => {
            metrics::counter!("flowmark_collector_flows_started_total", &labels).increment(1)
        }
        "end" => {
            metrics::counter!("flowmark_collector_flows_ended_total", &labels).increment(1);
            if let Some(sent) = v["usage"]["sent"].as_u64() {
                metrics::counter!("flowmark_collector_bytes_sent_total", &labels).increment(sent);
            }
            if let Some(recv) = v["usage"]["received"].as_u64() {
                metrics::counter!("flowmark_collector_bytes_received_total", &labels)
                    .increment(recv);
            }
            let t = |k: &str| {
                v["flow-lifecycle"][k]
                    .as_str()
                    .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            };
            if let (Some(a), Some(b)) = (t("start-time"), t("end-time")) {
                let secs = (b - a).as_seconds_f64();
                if secs >= 0.0 {
                    metrics::histogram!(DURATION_METRIC, &labels).record(secs);
                }
            }
        }
        _ => {}
    }
}
