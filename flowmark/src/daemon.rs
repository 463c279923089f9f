//! `flowmark run`: one task owns the flow table, the kernel maps and the
//! firefly sender; the sources (named pipe, API socket) send it requests.
//! A single owner keeps start/end ordering simple and the maps consistent.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot},
};

use crate::{
    bad,
    firefly::{self, State, Usage},
    flow::FlowId,
    marker::Marker,
    registry::Registry,
    scitag::{SciTag, TagError},
};

/// What the daemon does, from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<String>,
    /// Mark packets (false: fireflies only, no eBPF).
    pub mark: bool,
    pub pipe: Option<PathBuf>,
    pub api: Option<PathBuf>,
    pub collectors: Vec<SocketAddr>,
    /// Send fireflies to the flow's peer on `peer_port`.
    pub peer_fireflies: bool,
    pub peer_port: u16,
    /// Ongoing fireflies every this long; zero: none.
    pub ongoing: Duration,
    /// How long a flow's label stays in the kernel map after its end: the
    /// end is reported when the application has written its last byte,
    /// which may still sit in the socket's send queue, and the FIN follows.
    pub linger: Duration,
    pub application: String,
    pub port_rules: Vec<(u16, SciTag)>,
    pub cgroup_rules: Vec<(PathBuf, SciTag)>,
    /// Most flows in the table; a start beyond it evicts the oldest flow.
    pub max_flows: usize,
    /// A flow never ended is dropped this long after its start; zero: kept.
    pub max_age: Duration,
}

/// The kernel flow map's size: more flows than this cannot all be marked.
pub const DEFAULT_MAX_FLOWS: usize = flowmark_common::MAX_FLOWS as usize;
/// Longer than any WLCG transfer; a flow still registered after this was
/// never ended (its producer crashed or lost the end line).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why a flow left the table without an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Eviction {
    /// The table was full when another flow started.
    TableFull,
    /// Older than `max_age`.
    Aged,
}

impl Eviction {
    pub fn name(self) -> &'static str {
        match self {
            Eviction::TableFull => "table_full",
            Eviction::Aged => "aged",
        }
    }
}

/// A flow registration or end, from any source.
pub enum Request {
    Start {
        flow: FlowId,
        tag: SciTag,
        application: Option<String>,
        /// Write the label to the kernel flow map. False for flows found by
        /// discovery: their rule already marks them in the kernel, with the
        /// rule's entropy, from their first packet.
        mark: bool,
        reply: Option<oneshot::Sender<Value>>,
    },
    End {
        flow: FlowId,
        hint: Option<(u32, u32)>,
        /// Bytes as the application counted them (the proxy knows its
        /// request's); else tcp_info, else the kernel program's count.
        usage: Option<Usage>,
        reply: Option<oneshot::Sender<Value>>,
    },
    Status {
        reply: oneshot::Sender<Value>,
    },
}

struct Flow {
    tag: SciTag,
    application: String,
    start: SystemTime,
    /// When it was registered (monotonic, for ageing), and its key in
    /// `Daemon::order`.
    since: tokio::time::Instant,
    seq: u64,
    /// The label written to the kernel map, if the flow is marked.
    label: Option<u32>,
}

/// Checks an (experiment, activity) pair from outside: ranges, then the
/// registry. Unknown experiments are refused; an activity the registry does
/// not list is accepted (registries grow) but counted.
pub fn check_tag(
    experiment: u32,
    activity: u32,
    registry: &Registry,
    input: &str,
) -> Option<SciTag> {
    let tag = match SciTag::new(experiment, activity) {
        Ok(t) => t,
        Err(e) => {
            bad::report(e.kind(), &e.to_string(), input);
            return None;
        }
    };
    if registry.experiment_name(tag.experiment).is_none() {
        bad::report(
            "unknown_experiment",
            &format!("experiment {} is not in the registry", tag.experiment),
            input,
        );
        return None;
    }
    if registry
        .activity_name(tag.experiment, tag.activity)
        .is_none()
    {
        bad::report(
            "unknown_activity",
            &format!(
                "activity {} of experiment {} is not in the registry (accepted)",
                tag.activity, tag.experiment
            ),
            input,
        );
    }
    Some(tag)
}

/// Reports a tag error from outside input.
pub fn report_tag_error(e: &TagError, input: &str) {
    bad::report(e.kind(), &e.to_string(), input);
}

struct Fireflies {
    v4: UdpSocket,
    v6: UdpSocket,
    collectors: Vec<SocketAddr>,
    peer: Option<u16>,
    hostname: String,
    app: String,
}

impl Fireflies {
    async fn new(cfg: &Config) -> anyhow::Result<Fireflies> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Ok(Fireflies {
            v4: UdpSocket::bind("0.0.0.0:0")
                .await
                .context("firefly socket (IPv4)")?,
            v6: UdpSocket::bind("[::]:0")
                .await
                .context("firefly socket (IPv6)")?,
            collectors: cfg.collectors.clone(),
            peer: cfg.peer_fireflies.then_some(cfg.peer_port),
            hostname,
            app: "flowmark".into(),
        })
    }

    async fn send(&self, flow: &FlowId, msg: &Value) {
        let now = SystemTime::now();
        let text = firefly::frame(msg, &self.hostname, &self.app, now);
        let peer = self.peer.map(|p| SocketAddr::new(flow.dst.ip(), p));
        let state = msg["flow-lifecycle"]["state"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        for to in peer.iter().chain(self.collectors.iter()) {
            let sock = if to.is_ipv4() { &self.v4 } else { &self.v6 };
            match sock.send_to(text.as_bytes(), to).await {
                Ok(_) => {
                    metrics::counter!("flowmark_fireflies_sent_total", "state" => state.clone())
                        .increment(1)
                }
                Err(e) => {
                    metrics::counter!("flowmark_fireflies_failed_total").increment(1);
                    tracing::debug!(%to, "firefly not sent: {e}");
                }
            }
        }
    }
}

pub struct Daemon {
    cfg: Config,
    marker: Option<Marker>,
    flows: HashMap<FlowId, Flow>,
    /// The flows by registration order: the oldest goes first, whether the
    /// table is full or it is too old.
    order: BTreeMap<u64, FlowId>,
    next_seq: u64,
    evicted: BTreeMap<Eviction, u64>,
    fireflies: Fireflies,
    /// Ended flows whose kernel entry goes at the deadline (in order: the
    /// linger is constant).
    lingering: VecDeque<(tokio::time::Instant, FlowId)>,
}

impl Daemon {
    pub async fn new(cfg: Config) -> anyhow::Result<Daemon> {
        let marker = if cfg.mark {
            let mut m = Marker::load()?;
            for (port, tag) in &cfg.port_rules {
                m.add_port_rule(*port, tag.flow_label()?)?;
            }
            for (path, tag) in &cfg.cgroup_rules {
                m.add_cgroup_rule(path, tag.flow_label()?)?;
            }
            for iface in &cfg.interfaces {
                m.attach(iface)?;
                tracing::info!(iface, "marking IPv6 flow labels on egress");
            }
            Some(m)
        } else {
            None
        };
        let fireflies = Fireflies::new(&cfg).await?;
        Ok(Daemon {
            cfg,
            marker,
            flows: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            evicted: BTreeMap::new(),
            fireflies,
            lingering: VecDeque::new(),
        })
    }

    /// Serves requests until every sender is gone.
    pub async fn serve(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut tick = (!self.cfg.ongoing.is_zero()).then(|| {
            let first = tokio::time::Instant::now() + self.cfg.ongoing;
            let mut i = tokio::time::interval_at(first, self.cfg.ongoing);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            let req = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => break },
                _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => {
                    self.ongoing().await;
                    continue;
                }
                _ = tokio::time::sleep_until(self.lingering.front().map(|l| l.0).unwrap_or_else(tokio::time::Instant::now)),
                    if !self.lingering.is_empty() => {
                    self.expire_lingering();
                    continue;
                }
                _ = tokio::time::sleep_until(self.oldest_deadline().unwrap_or_else(tokio::time::Instant::now)),
                    if self.oldest_deadline().is_some() => {
                    self.expire_aged();
                    continue;
                }
            };
            match req {
                Request::Start {
                    flow,
                    tag,
                    application,
                    mark,
                    reply,
                } => {
                    let out = self.start(flow, tag, application, mark).await;
                    if let Some(r) = reply {
                        let _ = r.send(out);
                    }
                }
                Request::End {
                    flow,
                    hint,
                    usage,
                    reply,
                } => {
                    let out = self.end(flow, hint, usage).await;
                    if let Some(r) = reply {
                        let _ = r.send(out);
                    }
                }
                Request::Status { reply } => {
                    let _ = reply.send(self.status());
                }
            }
        }
    }

    async fn start(
        &mut self,
        flow: FlowId,
        tag: SciTag,
        application: Option<String>,
        mark: bool,
    ) -> Value {
        let mut label = None;
        let mut note = None;
        if let (true, Some(m), Some(key)) = (mark, self.marker.as_mut(), flow.key()) {
            match tag.flow_label() {
                Ok(semantic) => {
                    let l = flowmark_common::with_entropy(semantic, rand::random::<u32>());
                    match m.set_flow(&key, l) {
                        Ok(()) => label = Some(l),
                        Err(e) => note = Some(format!("{e:#}")),
                    }
                }
                Err(e) => {
                    bad::report(
                        "experiment_not_encodable",
                        &e.to_string(),
                        &flow.to_string(),
                    );
                    note = Some(e.to_string());
                }
            }
        }
        let now = SystemTime::now();
        let application = application.unwrap_or_else(|| self.cfg.application.clone());
        let msg = firefly::message(State::Start, &flow, tag, &application, now, now, None);
        self.fireflies.send(&flow, &msg).await;
        if !self.flows.contains_key(&flow)
            && self.flows.len() >= self.cfg.max_flows.max(1)
            && let Some((_, &oldest)) = self.order.first_key_value()
        {
            self.evict(oldest, Eviction::TableFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, flow);
        if let Some(old) = self.flows.insert(
            flow,
            Flow {
                tag,
                application,
                start: now,
                since: tokio::time::Instant::now(),
                seq,
                label,
            },
        ) {
            self.order.remove(&old.seq);
            tracing::debug!(%flow, old = %old.tag, "flow restarted (a new request on a kept-alive connection)");
        }
        metrics::counter!("flowmark_flows_started_total").increment(1);
        metrics::gauge!("flowmark_flows_active").set(self.flows.len() as f64);
        tracing::debug!(%flow, %tag, ?label, "flow start");
        json!({ "ok": true, "flow": flow.to_string(), "value": tag.value(), "experiment": tag.experiment,
                "activity": tag.activity, "flow_label": label, "note": note })
    }

    async fn end(&mut self, flow: FlowId, hint: Option<(u32, u32)>, given: Option<Usage>) -> Value {
        let Some(f) = self.flows.remove(&flow) else {
            bad::report(
                "end_without_start",
                "end of a flow that was never started (or ended twice)",
                &flow.to_string(),
            );
            return json!({ "ok": false, "error": format!("no such flow: {flow}") });
        };
        self.order.remove(&f.seq);
        if let Some((e, a)) = hint {
            let (e0, a0) = (f.tag.experiment as u32, f.tag.activity as u32);
            if (e, a) == (a0, e0) && e != a {
                // nginx's documented flowd access_log format writes activity
                // before experiment: harmless, the flow is matched on its 5-tuple.
                metrics::counter!("flowmark_end_swapped_exp_act_total").increment(1);
            } else if (e, a) != (e0, a0) {
                bad::report(
                    "end_tag_mismatch",
                    "end line names another experiment/activity than its start (start's kept)",
                    &format!("{flow} {e} {a}"),
                );
            }
        }
        let kernel = match (self.marker.as_mut(), flow.key()) {
            (Some(m), Some(key)) if self.cfg.linger.is_zero() => m.remove_flow(&key),
            (Some(m), Some(key)) => {
                self.lingering
                    .push_back((tokio::time::Instant::now() + self.cfg.linger, flow));
                m.flow(&key)
            }
            _ => None,
        };
        let usage = given.or_else(|| crate::tcpinfo::usage(&flow)).or_else(|| {
            kernel.map(|k| Usage {
                received: None,
                sent: Some(k.bytes),
            })
        });
        let now = SystemTime::now();
        let msg = firefly::message(
            State::End,
            &flow,
            f.tag,
            &f.application,
            f.start,
            now,
            usage,
        );
        self.fireflies.send(&flow, &msg).await;
        metrics::counter!("flowmark_flows_ended_total").increment(1);
        metrics::gauge!("flowmark_flows_active").set(self.flows.len() as f64);
        tracing::debug!(%flow, ?usage, "flow end");
        json!({ "ok": true, "flow": flow.to_string(), "packets_marked": kernel.map(|k| k.packets),
                "usage": usage.map(|u| json!({"sent": u.sent, "received": u.received})) })
    }

    /// Drops the kernel entries of ended flows whose linger is over, unless
    /// the same 5-tuple was registered again meanwhile.
    fn expire_lingering(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some(&(deadline, flow)) = self.lingering.front() {
            if deadline > now {
                break;
            }
            self.lingering.pop_front();
            if self.flows.contains_key(&flow) {
                continue;
            }
            if let (Some(m), Some(key)) = (self.marker.as_mut(), flow.key()) {
                m.remove_flow(&key);
            }
        }
    }

    /// When the oldest flow gets too old, if ageing is on.
    fn oldest_deadline(&self) -> Option<tokio::time::Instant> {
        if self.cfg.max_age.is_zero() {
            return None;
        }
        let (_, oldest) = self.order.first_key_value()?;
        // None past the clock's range (a --max-flow-age of centuries): never.
        self.flows.get(oldest)?.since.checked_add(self.cfg.max_age)
    }

    fn expire_aged(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some(deadline) = self.oldest_deadline() {
            if deadline > now {
                break;
            }
            let (_, &oldest) = self.order.first_key_value().expect("a deadline has a flow");
            self.evict(oldest, Eviction::Aged);
        }
    }

    /// Drops a flow that was never ended: its kernel entry goes at once (no
    /// linger: nothing says it is still sending), no end firefly is sent
    /// (nothing says it ended), and the eviction is counted.
    fn evict(&mut self, flow: FlowId, why: Eviction) {
        let Some(f) = self.flows.remove(&flow) else {
            return;
        };
        self.order.remove(&f.seq);
        if let (Some(m), Some(key)) = (self.marker.as_mut(), flow.key()) {
            m.remove_flow(&key);
        }
        let n = self.evicted.entry(why).or_insert(0);
        *n += 1;
        if *n == 1 {
            tracing::warn!(%flow, reason = why.name(), max_flows = self.cfg.max_flows,
                max_age = ?self.cfg.max_age, "flow evicted without an end (further evictions are only counted)");
        }
        metrics::counter!("flowmark_flows_evicted_total", "reason" => why.name()).increment(1);
        metrics::gauge!("flowmark_flows_active").set(self.flows.len() as f64);
    }

    async fn ongoing(&mut self) {
        let now = SystemTime::now();
        for (flow, f) in &self.flows {
            let usage = crate::tcpinfo::usage(flow);
            let msg = firefly::message(
                State::Ongoing,
                flow,
                f.tag,
                &f.application,
                f.start,
                now,
                usage,
            );
            self.fireflies.send(flow, &msg).await;
        }
    }

    fn status(&self) -> Value {
        let flows: Vec<Value> = self
            .flows
            .iter()
            .map(|(id, f)| json!({ "flow": id.to_string(), "value": f.tag.value(), "flow_label": f.label }))
            .collect();
        let kernel: serde_json::Map<String, Value> = self
            .marker
            .as_ref()
            .map(|m| {
                m.stats()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect()
            })
            .unwrap_or_default();
        let evicted: serde_json::Map<String, Value> = self
            .evicted
            .iter()
            .map(|(k, v)| (k.name().to_string(), json!(v)))
            .collect();
        json!({ "ok": true, "flows": flows, "kernel": kernel, "bad_input": bad::counts(),
                "evicted": evicted })
    }
}
