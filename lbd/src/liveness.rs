//! Peer liveness: every node publishes its own state on a small HTTP
//! endpoint (`GET /v1/state` on its member address and the liveness port)
//! and polls every other member. A member is up after `rise` good polls in
//! a row and down after `fall` failed ones. What a member reports (active,
//! draining, down; which VIPs pass their checks; its config generation)
//! feeds the tables every node computes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use health::RiseFall;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Liveness, Member};

/// A node's own state, as it publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving (at least one VIP passes its checks).
    Active,
    /// `lbd drain`: no new connections, established ones keep being served.
    Draining,
    /// No VIP passes its checks (or the node is starting).
    Down,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// What `GET /v1/state` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node_id: u16,
    pub state: NodeState,
    pub generation: String,
    /// VIP address -> passes its checks.
    pub vips: BTreeMap<String, bool>,
}

/// Serves the latest report until the task is dropped.
pub async fn serve(listener: TcpListener, report: watch::Receiver<Report>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let report = report.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = serde_json::to_vec(&*report.borrow()).unwrap_or_default();
                async move {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    if req.uri().path() != "/v1/state" {
                        *resp.status_mut() = StatusCode::NOT_FOUND;
                        *resp.body_mut() = Full::new(Bytes::from_static(b"not found\n"));
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One other member as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: u16,
    pub address: IpAddr,
    pub up: bool,
    /// The member's last report (None before the first good poll).
    pub report: Option<Report>,
    pub last_seen_unix: Option<u64>,
    pub last_error: Option<String>,
    /// Polls answered or failed so far.
    pub polls: u64,
    #[serde(skip)]
    rf: RiseFall,
}

pub type Members = Arc<Mutex<BTreeMap<u16, MemberStatus>>>;

/// Every member is either up or has failed `fall` polls: the view is
/// decided (at start, before this, "down" only means "not asked yet").
pub fn decided(m: &Members, fall: u32) -> bool {
    lock(m).values().all(|s| s.up || s.polls >= u64::from(fall))
}

pub fn lock(m: &Members) -> std::sync::MutexGuard<'_, BTreeMap<u16, MemberStatus>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The table of other members, all down until polled.
pub fn members(all: &[Member], me: u16, cfg: &Liveness) -> Members {
    let m = Arc::new(Mutex::new(BTreeMap::new()));
    set_members(&m, all, me, cfg);
    m
}

/// Brings the table in line with a (reloaded) member list: members that
/// stay at the same address keep their state; new ones start down; gone
/// ones are dropped (the poller stops polling them at its next round).
pub fn set_members(members: &Members, all: &[Member], me: u16, cfg: &Liveness) {
    let mut map = lock(members);
    map.retain(|id, s| {
        all.iter()
            .any(|m| m.id == *id && m.address == s.address && m.id != me)
    });
    for m in all.iter().filter(|m| m.id != me) {
        map.entry(m.id).or_insert_with(|| MemberStatus {
            id: m.id,
            address: m.address,
            up: false,
            report: None,
            last_seen_unix: None,
            last_error: None,
            polls: 0,
            rf: RiseFall::new(cfg.rise, cfg.fall),
        });
    }
}

/// `generation` is ours (it changes with a reload).
pub async fn poll(members: Members, cfg: Liveness, generation: watch::Receiver<String>) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        // A fresh connection per poll: a kept-alive one could outlive the
        // member's listener and hide that it is gone.
        .pool_max_idle_per_host(0)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "liveness: cannot build the HTTP client; members stay down");
            return;
        }
    };
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let targets: Vec<(u16, IpAddr)> =
            lock(&members).values().map(|m| (m.id, m.address)).collect();
        let mut set = tokio::task::JoinSet::new();
        for (id, addr) in targets {
            let url = format!("http://{}/v1/state", SocketAddr::new(addr, cfg.port));
            let client = client.clone();
            set.spawn(async move {
                let r: Result<Report, String> = async {
                    let resp = client
                        .get(&url)
                        .send()
                        .await
                        .map_err(|e| health::error_chain(&e))?;
                    if !resp.status().is_success() {
                        return Err(format!("status {}", resp.status().as_u16()));
                    }
                    resp.json::<Report>()
                        .await
                        .map_err(|e| format!("bad report: {}", health::error_chain(&e)))
                }
                .await;
                (id, r)
            });
        }
        while let Some(Ok((id, result))) = set.join_next().await {
            let mut all = lock(&members);
            let Some(m) = all.get_mut(&id) else { continue };
            m.polls += 1;
            let ok = match &result {
                Ok(r) if r.node_id != id => {
                    m.last_error = Some(format!("answered as node {}, expected {id}", r.node_id));
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    m.last_error = Some(e.clone());
                    false
                }
            };
            if let Ok(r) = result
                && ok
            {
                let generation = generation.borrow().clone();
                if r.generation != generation
                    && m.report.as_ref().map(|p| &p.generation) != Some(&r.generation)
                {
                    tracing::error!(
                        member = id,
                        theirs = %r.generation,
                        ours = %generation,
                        "member runs a different config generation: tables may disagree"
                    );
                }
                if m.report.as_ref().map(|p| p.state) != Some(r.state) {
                    tracing::info!(member = id, state = r.state.name(), "member state");
                }
                m.report = Some(r);
                m.last_seen_unix = Some(health::unix_now());
                m.last_error = None;
            }
            if m.rf.record(ok) {
                m.up = m.rf.up();
                if m.up {
                    tracing::info!(member = id, "member up");
                } else {
                    tracing::warn!(
                        member = id,
                        reason = m.last_error.as_deref().unwrap_or(""),
                        "member down"
                    );
                }
            }
        }
    }
}
