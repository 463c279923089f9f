//! `flowmark collect`: receives fireflies on UDP, validates them against
//! the published schema, and aggregates them per experiment and activity
//! (registry names) into Prometheus metrics.
//!
//! Anyone can send a datagram to UDP 10514, so nothing a sender writes
//! becomes a label as it is: ids are range-checked, ids outside the
//! registry share one "unknown" series, the number of label sets is capped
//! (later ones share "other"), and `--allow-from` can restrict the senders.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use ipnet::IpNet;
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
/// Distinct (experiment, activity) label sets by default: several times the
/// published registry's pairs, far below what hurts a Prometheus server.
pub const DEFAULT_MAX_SERIES: usize = 1000;
/// The label value of ids the registry does not list.
pub const UNKNOWN: &str = "unknown";
/// The label value of label sets past the cap.
pub const OTHER: &str = "other";
/// `transfer` label: a flow registered by a third-party-copy agent (its
/// `context.application` names one of [`Limits::tpc_applications`]).
pub const TPC: &str = "tpc";
/// `transfer` label: any other flow (a client's GET or PUT, a pipe line).
pub const PLAIN: &str = "plain";
/// Applications whose flows are third-party copies by default: the
/// storage-front sidecar registers only the data connections of its COPYs.
pub const DEFAULT_TPC_APPLICATIONS: &[&str] = &["storage-front"];

/// What the collector accepts, from the command line.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Distinct (experiment, activity) label sets; later ones are counted
    /// under [`OTHER`].
    pub max_series: usize,
    /// Accept datagrams only from these networks; empty: from anywhere.
    pub allow_from: Vec<IpNet>,
    /// Application names (the first word of a firefly's
    /// `context.application`, up to a space or `/`) whose flows are counted
    /// as `transfer="tpc"`.
    pub tpc_applications: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: DEFAULT_MAX_SERIES,
            allow_from: vec![],
            tpc_applications: DEFAULT_TPC_APPLICATIONS
                .iter()
                .map(|a| a.to_string())
                .collect(),
        }
    }
}

/// The labels of one firefly's aggregates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Labels {
    experiment: String,
    activity: String,
    experiment_id: String,
    activity_id: String,
    /// [`TPC`] or [`PLAIN`] (two values whatever the sender writes).
    transfer: &'static str,
}

impl Labels {
    fn same(v: &str, transfer: &'static str) -> Labels {
        Labels {
            experiment: v.into(),
            activity: v.into(),
            experiment_id: v.into(),
            activity_id: v.into(),
            transfer,
        }
    }

    fn pairs(&self) -> [(&'static str, String); 5] {
        [
            ("experiment", self.experiment.clone()),
            ("activity", self.activity.clone()),
            ("experiment_id", self.experiment_id.clone()),
            ("activity_id", self.activity_id.clone()),
            ("transfer", self.transfer.to_string()),
        ]
    }
}

/// The aggregation state: the registry, the limits and the label sets
/// handed out so far.
pub struct Collector {
    registry: Registry,
    limits: Limits,
    series: HashSet<Labels>,
}

impl Collector {
    pub fn new(registry: Registry, limits: Limits) -> Collector {
        Collector {
            registry,
            limits,
            series: HashSet::new(),
        }
    }

    /// Whether datagrams from `ip` are accepted (an IPv4 sender seen on a
    /// dual-stack socket arrives as `::ffff:a.b.c.d`).
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.limits.allow_from.is_empty() || self.limits.allow_from.iter().any(|n| n.contains(&ip))
    }

    /// The labels of a firefly's context, or `None` if its ids are out of
    /// range (experiment 0..=511: what an IPv6 flow label can carry,
    /// activity 0..=63).
    fn labels(&mut self, v: &Value) -> Option<Labels> {
        let exp = v["context"]["experiment-id"].as_i64()?;
        let act = v["context"]["activity-id"].as_i64()?;
        let exp = u16::try_from(exp)
            .ok()
            .filter(|e| *e <= flowmark_common::MAX_LABEL_EXPERIMENT)?;
        let act = u8::try_from(act)
            .ok()
            .filter(|a| *a <= flowmark_common::MAX_ACTIVITY)?;
        let (experiment, experiment_id) = match self.registry.experiment_name(exp) {
            Some(name) => (name.to_string(), exp.to_string()),
            None => (UNKNOWN.to_string(), UNKNOWN.to_string()),
        };
        let (activity, activity_id) = match self.registry.activity_name(exp, act) {
            Some(name) => (name.to_string(), act.to_string()),
            None => (UNKNOWN.to_string(), UNKNOWN.to_string()),
        };
        let transfer = self.transfer(v);
        let labels = Labels {
            experiment,
            activity,
            experiment_id,
            activity_id,
            transfer,
        };
        if self.series.contains(&labels) {
            return Some(labels);
        }
        if self.series.len() >= self.limits.max_series {
            metrics::counter!("flowmark_collector_series_capped_total").increment(1);
            return Some(Labels::same(OTHER, transfer));
        }
        self.series.insert(labels.clone());
        Some(labels)
    }

    /// [`TPC`] if the firefly's application is a third-party-copy agent.
    fn transfer(&self, v: &Value) -> &'static str {
        let name = v["context"]["application"]
            .as_str()
            .and_then(|a| a.split([' ', '/']).next())
            .unwrap_or("");
        if self.limits.tpc_applications.iter().any(|t| t == name) {
            TPC
        } else {
            PLAIN
        }
    }

    /// Adds one schema-valid firefly to the aggregates; `Err` names why it
    /// was not counted (the `rejected_total` reason).
    pub fn record(&mut self, v: &Value) -> Result<(), &'static str> {
        let labels = self.labels(v).ok_or("out_of_range")?;
        // The schema limits the state to start | ongoing | end.
        let state = match v["flow-lifecycle"]["state"].as_str() {
            Some(s @ ("start" | "ongoing" | "end")) => s,
            _ => return Err("schema"),
        };
        let labels = labels.pairs();
        let mut with_state = labels.to_vec();
        with_state.push(("state", state.to_string()));
        metrics::counter!("flowmark_collector_fireflies_total", &with_state).increment(1);
        match state {
            "start" => {
                metrics::counter!("flowmark_collector_flows_started_total", &labels).increment(1)
            }
            "end" => {
                metrics::counter!("flowmark_collector_flows_ended_total", &labels).increment(1);
                if let Some(sent) = v["usage"]["sent"].as_u64() {
                    metrics::counter!("flowmark_collector_bytes_sent_total", &labels)
                        .increment(sent);
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
        Ok(())
    }

    /// Label sets handed out so far (at most `max_series`).
    pub fn series(&self) -> usize {
        self.series.len()
    }
}

pub async fn serve(sock: UdpSocket, mut collector: Collector) {
    let mut buf = vec![0u8; firefly::MAX_DATAGRAM + 1];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("collector receive: {e}");
                continue;
            }
        };
        if !collector.allowed(from.ip()) {
            reject("source", "datagram from outside --allow-from", from, &[]);
            continue;
        }
        if n > firefly::MAX_DATAGRAM {
            reject("too_large", "datagram larger than 8 KiB", from, &buf[..64]);
            continue;
        }
        match firefly::parse(&buf[..n]) {
            Ok(v) => {
                if let Err(reason) = collector.record(&v) {
                    let detail = match reason {
                        "out_of_range" => {
                            "firefly experiment or activity id out of range (0..=511, 0..=63)"
                        }
                        _ => "firefly with an unknown state",
                    };
                    reject(reason, detail, from, &buf[..n]);
                }
            }
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
        "out_of_range" => "firefly_out_of_range",
        "source" => "firefly_source",
        _ => "firefly_too_large",
    };
    bad::report(
        kind,
        &format!("{detail} (from {from})"),
        &String::from_utf8_lossy(data),
    );
}
