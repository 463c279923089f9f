//! Optional discovery (`--discover-interval-ms`): polls sock_diag for
//! established TCP connections that match a `--port-rule` (local port) or a
//! `--cgroup-rule`, and registers them for fireflies: start when first
//! seen, end (with the last tcp_info usage seen) when gone.
//!
//! The kernel program already marks these flows through the same rules,
//! from their first packet and with a stable entropy, so discovered flows
//! are registered with `mark: false`: discovery only adds the fireflies.

use std::{collections::HashMap, time::Duration};

use tokio::sync::mpsc;

use crate::{
    daemon::Request,
    firefly::Usage,
    flow::{FlowId, Proto},
    scitag::SciTag,
    tcpinfo,
};

#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Local port -> tag.
    pub ports: Vec<(u16, SciTag)>,
    /// cgroup v2 id -> tag.
    pub cgroups: Vec<(u64, SciTag)>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.cgroups.is_empty()
    }
}

/// Established connections matching a rule, with their usage so far.
pub fn scan(rules: &Rules) -> anyhow::Result<HashMap<FlowId, (SciTag, Option<Usage>)>> {
    let mut found = HashMap::new();
    for v6 in [false, true] {
        tcpinfo::dump_established(v6, |r| {
            let id = &r.header.socket_id;
            tracing::trace!(?id, "established socket");
            let by_port = rules
                .ports
                .iter()
                .find(|(p, _)| *p == id.source_port)
                .map(|(_, t)| *t);
            let tag = by_port.or_else(|| {
                let cg = tcpinfo::response_cgroup(r)?;
                rules
                    .cgroups
                    .iter()
                    .find(|(c, _)| *c == cg)
                    .map(|(_, t)| *t)
            });
            let Some(tag) = tag else { return };
            if let Ok(flow) = FlowId::new(
                Proto::Tcp,
                id.source_address,
                id.source_port,
                id.destination_address,
                id.destination_port,
            ) {
                found.insert(flow, (tag, tcpinfo::response_usage(r)));
            }
        })?;
    }
    Ok(found)
}

pub async fn serve(rules: Rules, interval: Duration, tx: mpsc::Sender<Request>) {
    let mut known: HashMap<FlowId, (SciTag, Option<Usage>)> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed_once = false;
    loop {
        tick.tick().await;
        let r = rules.clone();
        let found = match tokio::task::spawn_blocking(move || scan(&r)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                if !std::mem::replace(&mut failed_once, true) {
                    tracing::warn!("sock_diag discovery failed (retrying quietly): {e:#}");
                }
                continue;
            }
            Err(_) => continue,
        };
        tracing::trace!(matched = found.len(), "discovery scan");
        // Lets a reader know a scan happened after some event (tests wait
        // for it instead of sleeping).
        metrics::counter!("flowmark_discovery_scans_total").increment(1);
        for (flow, (tag, _)) in &found {
            if !known.contains_key(flow) {
                let req = Request::Start {
                    flow: *flow,
                    tag: *tag,
                    application: Some("flowmark discovery".into()),
                    mark: false,
                    reply: None,
                };
                if tx.send(req).await.is_err() {
                    return;
                }
            }
        }
        for (flow, (_, usage)) in &known {
            if !found.contains_key(flow) {
                let req = Request::End {
                    flow: *flow,
                    hint: None,
                    usage: *usage,
                    reply: None,
                };
                if tx.send(req).await.is_err() {
                    return;
                }
            }
        }
        known = found;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn scan_finds_a_live_connection_by_local_port() {
        let l = TcpListener::bind("[::1]:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let tag = SciTag::new(1, 2).unwrap();
        let rules = Rules {
            ports: vec![(port, tag)],
            cgroups: vec![],
        };
        let found = scan(&rules).unwrap();
        let flow = FlowId::new(
            Proto::Tcp,
            "::1".parse().unwrap(),
            port,
            peer.ip(),
            peer.port(),
        )
        .unwrap();
        assert_eq!(found.get(&flow).map(|f| f.0), Some(tag), "{found:?}");
        assert_eq!(
            found.len(),
            1,
            "only the server side matches the local port"
        );
    }
}
