//! Peer liveness: every node publishes its own state on a small HTTP
//! endpoint (`GET /v1/state` on its member address and the liveness port)
//! and polls every other member. A member is up after `rise` good polls in
//! a row and down after `fall` failed ones. What a member reports (active,
//! draining, down; which VIPs pass their checks; its config generation)
//! feeds the tables every node computes.
//!
//! The protocol is a control plane reachable from the network: the
//! endpoint is bounded (`server`), reports are authenticated with the
//! cluster secret over a per-poll nonce (`auth`) and validated field by
//! field (`report`) before they count. See docs/threat-model.md.

mod auth;
mod report;
mod server;

pub use auth::{Keys, MAC_HEADER, NONCE_PARAM, SecretError, SharedKeys};
pub use report::{MAX_REPORT_BYTES, NodeState, Report, ReportError, is_generation, printable};
pub use server::{Counters, Endpoint, MAX_CONNECTIONS, MAX_PER_SOURCE, serve};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use health::RiseFall;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Liveness, Member};

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

/// What the poller needs besides the member table.
#[derive(Clone)]
pub struct Poller {
    pub cfg: Liveness,
    /// Our config generation (it changes with a reload).
    pub generation: watch::Receiver<String>,
    /// Polls leave from our member address: that is the address the other
    /// members accept polls from.
    pub local_address: Option<IpAddr>,
    pub keys: SharedKeys,
}

/// Why a poll of a member failed: what `lbd status` shows as its last
/// error (text from the network is escaped).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PollError {
    #[error("no randomness for a nonce")]
    NoNonce,
    #[error("{0}")]
    Http(String),
    #[error("status {0}")]
    Status(u16),
    #[error("bad report: {0}")]
    BadReport(#[from] ReportError),
    #[error("report not authenticated: no tag (is liveness.secret_file set there?)")]
    NoTag,
    #[error("report not authenticated: tag does not match (wrong secret, forged or replayed)")]
    BadTag,
    #[error("answered as node {got}, expected {expected}")]
    WrongNode { got: u16, expected: u16 },
}

/// One poll: a fresh nonce, the answer read up to `MAX_REPORT_BYTES`,
/// its tag checked (when a secret is configured), then parsed and
/// validated. The client's timeout covers the whole request.
async fn poll_one(
    client: &reqwest::Client,
    addr: SocketAddr,
    keys: Option<Arc<Keys>>,
) -> Result<Report, PollError> {
    let nonce = auth::nonce().ok_or(PollError::NoNonce)?;
    let url = format!("http://{addr}/v1/state?{NONCE_PARAM}={nonce}");
    let http = |e: reqwest::Error| PollError::Http(printable(&health::error_chain(&e)));
    let mut resp = client.get(&url).send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(PollError::Status(resp.status().as_u16()));
    }
    let tag = resp
        .headers()
        .get(MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge.into());
        }
        body.extend_from_slice(&chunk);
    }
    if let Some(keys) = keys {
        match tag {
            None => return Err(PollError::NoTag),
            Some(t) if !keys.verify(&nonce, &body, &t) => return Err(PollError::BadTag),
            Some(_) => {}
        }
    }
    Ok(Report::parse(&body)?)
}

/// Polls every member every interval until the task is dropped.
pub async fn poll(members: Members, p: Poller) {
    let cfg = &p.cfg;
    let client = match reqwest::Client::builder()
        .no_proxy()
        // A fresh connection per poll: a kept-alive one could outlive the
        // member's listener and hide that it is gone.
        .pool_max_idle_per_host(0)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .local_address(p.local_address)
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
        let keys = p.keys.borrow().clone();
        let mut set = tokio::task::JoinSet::new();
        for (id, addr) in targets {
            let client = client.clone();
            let keys = keys.clone();
            let addr = SocketAddr::new(addr, cfg.port);
            set.spawn(async move { (id, poll_one(&client, addr, keys).await) });
        }
        while let Some(Ok((id, result))) = set.join_next().await {
            record(&members, id, result, &p.generation.borrow());
        }
    }
}

/// One poll's outcome into the member table.
fn record(members: &Members, id: u16, result: Result<Report, PollError>, generation: &str) {
    let mut all = lock(members);
    let Some(m) = all.get_mut(&id) else { return };
    m.polls += 1;
    let result = match result {
        Ok(r) if r.node_id != id => Err(PollError::WrongNode {
            got: r.node_id,
            expected: id,
        }),
        other => other,
    };
    let ok = result.is_ok();
    match result {
        Err(e) => m.last_error = Some(e.to_string()),
        Ok(r) => {
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
