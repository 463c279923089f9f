//! `lbd run`: the node daemon.
//!
//! One loop, ticking every 100 ms, owns all state: it reads the local checks
//! and the member table, publishes this node's report, recomputes each VIP's
//! table and installs it, then brings BGP in line. Operator requests and
//! signals are events of the same loop, so nothing races.
//!
//! Ordering that keeps connections alive:
//! - a VIP is announced only when its checks pass *and* this node is a first
//!   hop of the table installed in its own dataplane;
//! - a failing check withdraws at once (before the table changes);
//! - `drain`: the node reports `draining` (peers give its buckets away and
//!   keep it as second hop), BGP re-announces with GRACEFUL_SHUTDOWN, waits
//!   `bgp.shutdown_wait`, then withdraws; established connections keep being
//!   served through second-hop forwarding until the drain period ends.
//! - stopping keeps the pinned XDP program forwarding and closes BGP for a
//!   graceful restart.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bgp_speaker::{
    BfdConfig, GracefulRestart, IpNet, PeerConfig, RouteAttrs, Speaker, SpeakerConfig,
};
use dataplane::loader::{Dataplane, Vip};
use dataplane_common::{ENCAP_GUE, ENCAP_IPIP};
use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::{Config, Encap};
use crate::control::{self, Request, Response};
use crate::liveness::{self, Keys, Members, NodeState, Report};
use crate::status::Status;
use crate::table_view::TableView;
use crate::tables::{Change, MemberView, VipTable};
use crate::vips::{VipState, Vips};

mod error;
mod lock;
mod quiesce;
mod reload;

pub use error::DaemonError;
use error::DataplaneContext;
pub use lock::LockError;

const TICK: Duration = Duration::from_millis(100);

/// Whether each VIP passes its checks, read once per tick.
type Healthy = BTreeMap<IpAddr, bool>;

pub struct Daemon {
    cfg: Config,
    dp: Dataplane,
    /// Each VIP's config, checks and table, by address. What is announced
    /// is the speaker's RIB (see `announced`).
    vips: Vips,
    members: Members,
    report: watch::Sender<Report>,
    speaker: Speaker,
    /// End-of-RIB released to the speaker (see `first_routes_decided`).
    eor_released: bool,
    drained: bool,
    drain_task: Option<tokio::task::JoinHandle<()>>,
    state: NodeState,
    reason: String,
    started: Instant,
    last_reload: Option<String>,
    last_metrics: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The generation the liveness poller compares members against.
    generation: watch::Sender<String>,
    /// The BGP peers as running in the speaker (MD5 passwords read).
    peers: Vec<PeerConfig>,
    /// Members a reload removed, still in the dataplane's node list until
    /// no table names them.
    gone_members: Vec<u16>,
    /// Quiesced VIP ports and the inodes of their listeners at that time
    /// (quiesce.rs): a listener not among them resumes the port.
    quiesced: BTreeMap<(IpAddr, u16), Vec<u32>>,
    /// The dataplane's quiesce flags have been read once (a restarted
    /// daemon adopts them).
    quiesce_adopted: bool,
    /// The liveness secrets (re-read at every reload).
    keys: watch::Sender<Option<Arc<Keys>>>,
    liveness_counters: Arc<liveness::Counters>,
    _lock: lock::InstanceLock,
}

/// The signals the daemon handles, installed before anything else so that
/// a SIGHUP while starting is queued for the loop instead of killing lbd
/// (its default action).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Call on the thread that runs the daemon's loop (`block_on`), after
    /// the runtime's workers exist. The signals are also blocked on this
    /// thread: they reach the handlers through a worker, and never
    /// interrupt a BPF program load here (the verifier gives up with
    /// EAGAIN when a signal is pending: a SIGHUP during start used to make
    /// the XDP attach fail).
    pub fn install() -> Result<Signals, DaemonError> {
        block_on_this_thread(&[libc::SIGHUP, libc::SIGINT, libc::SIGTERM])
            .map_err(DaemonError::Signals)?;
        let handler = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            term: handler(SignalKind::terminate())?,
            int: handler(SignalKind::interrupt())?,
            hup: handler(SignalKind::hangup())?,
        })
    }
}

fn block_on_this_thread(signals: &[libc::c_int]) -> std::io::Result<()> {
    // SAFETY: sigset operations on a local set, then pthread_sigmask for
    // the calling thread only.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::other(format!(
            "pthread_sigmask: {}",
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    Ok(())
}

/// The liveness secret file's keys, if one is configured.
fn load_keys(cfg: &Config) -> Result<Option<Arc<Keys>>, liveness::SecretError> {
    cfg.liveness
        .secret_file
        .as_deref()
        .map(|f| Keys::load(f).map(Arc::new))
        .transpose()
}

/// Loads the config and runs the daemon until SIGTERM/SIGINT.
pub async fn run(path: &Path, signals: Signals) -> Result<(), DaemonError> {
    let mut cfg = Config::load(path)?;
    cfg.file = path.to_path_buf();
    let (inbox_tx, inbox) = mpsc::channel(16);
    let mut d = Daemon::start(cfg, inbox_tx).await?;
    let result = d.main_loop(inbox, signals).await;
    d.stop().await;
    result
}

fn dataplane_config(cfg: &Config) -> dataplane_common::Config {
    let me = cfg.me();
    let mut c = dataplane_common::Config {
        self_id: cfg.node_id,
        encap: match cfg.dataplane.encap {
            Encap::Gue => ENCAP_GUE,
            Encap::Ipip => ENCAP_IPIP,
        },
        gue_port_be: cfg.dataplane.gue_port.to_be(),
        hash_seed: cfg.hash_seed,
        ..Default::default()
    };
    match me.address {
        IpAddr::V4(a) => c.self_v4 = a.octets(),
        IpAddr::V6(a) => c.self_v6 = a.octets(),
    }
    c
}

fn mss_clamp(cfg: &Config, vip: IpAddr) -> u16 {
    if !cfg.dataplane.mss_clamp {
        return 0;
    }
    dataplane::mtu::clamped_mss(
        cfg.dataplane.underlay_mtu,
        cfg.me().address.is_ipv6(),
        cfg.dataplane.encap == Encap::Gue,
        vip.is_ipv6(),
    )
}

/// A peer as bgp-speaker takes it; the MD5 password is read from its file
/// (at start and at every reload, so SIGHUP picks up a new password).
fn peer_config(p: &crate::config::Peer) -> Result<PeerConfig, DaemonError> {
    let md5_password = match &p.md5_password_file {
        None => None,
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|source| DaemonError::Md5Password {
                    peer: p.address,
                    file: f.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
    };
    Ok(PeerConfig {
        local_address: p.local_address,
        next_hop_v4: p.next_hop_v4,
        next_hop_v6: p.next_hop_v6,
        passive: p.passive,
        port: p.port,
        md5_password,
        ttl_security: p.ttl_security,
        bfd: p.bfd.as_ref().map(|b| BfdConfig {
            desired_min_tx: b.min_tx,
            required_min_rx: b.min_rx,
            detect_mult: b.multiplier,
        }),
        ..PeerConfig::new(p.address, p.remote_as)
    })
}

fn speaker_config(cfg: &Config, restarting: bool) -> Result<SpeakerConfig, DaemonError> {
    Ok(SpeakerConfig {
        local_as: cfg.bgp.local_as,
        router_id: cfg.bgp.router_id,
        hold_time: cfg.bgp.hold_time,
        listen_port: cfg.bgp.listen_port,
        graceful_restart: cfg.bgp.graceful_restart_time.map(|t| GracefulRestart {
            restart_time: t,
            restarting,
        }),
        peers: cfg
            .bgp
            .peers
            .iter()
            .map(peer_config)
            .collect::<Result<_, _>>()?,
    })
}

fn route_attrs(cfg: &Config) -> RouteAttrs {
    RouteAttrs {
        med: cfg.bgp.med,
        communities: cfg.bgp.communities.clone(),
        ..Default::default()
    }
}

/// XDP hands packets for other members to the FIB lookup helper, which
/// refuses ("forwarding disabled", counted as drop_no_route) unless the
/// uplink forwards the underlay's family. Said loudly at start.
fn check_forwarding(iface: &str, underlay: IpAddr) {
    let family = if underlay.is_ipv6() { "ipv6" } else { "ipv4" };
    let path = format!("/proc/sys/net/{family}/conf/{iface}/forwarding");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
        error!(
            sysctl = %path,
            "forwarding is off on the uplink for the underlay's family: packets owned by other members are dropped (drop_no_route); set it to 1"
        );
    }
}

fn host_prefix(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

impl Daemon {
    async fn start(cfg: Config, inbox: control::Inbox) -> Result<Self, DaemonError> {
        let pin_dir = &cfg.dataplane.pin_dir;
        // Before any map, pin or socket is touched.
        let instance = lock::acquire(pin_dir, &cfg.api.socket)?;
        let keys = load_keys(&cfg)?;
        if keys.is_none() {
            warn!(
                "liveness.secret_file is not set: member reports are not authenticated; anyone who can answer for a member's address decides the tables (see docs/threat-model.md)"
            );
        }
        let (keys, keys_rx) = watch::channel(keys);
        let restarting = std::fs::read_dir(pin_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        let mut dp = Dataplane::open(pin_dir)
            .doing(|| format!("opening the dataplane in {}", pin_dir.display()))?;
        let iface = &cfg.dataplane.interface;
        dp.attach_xdp(iface)
            .doing(|| format!("attaching XDP to {iface}"))?;
        if cfg.dataplane.mss_clamp {
            dp.attach_mss_clamp(iface)
                .doing(|| format!("attaching the MSS clamp to {iface}"))?;
        }
        check_forwarding(iface, cfg.me().address);
        dp.set_config(&dataplane_config(&cfg))
            .doing(|| "writing the dataplane config".into())?;
        // The whole node list, so members a previous run knew but the
        // config no longer has stop being trusted as tunnel sources.
        let nodes: Vec<(u16, IpAddr)> = cfg.members.iter().map(|m| (m.id, m.address)).collect();
        dp.set_nodes(&nodes)
            .doing(|| "writing the dataplane's node list".into())?;
        let now = Instant::now();
        let mut vips = Vips::new();
        for v in &cfg.vips {
            let entries = v.entries();
            let found = match entries.first() {
                Some(e) => dp
                    .vip_table(e)
                    .doing(|| format!("reading the table of {e}"))?,
                None => None,
            };
            let table = match found {
                Some(live) if live.len() == cfg.dataplane.table_size as usize => {
                    info!(vip = %v.address, "resuming the table found in the dataplane");
                    VipTable::resume(cfg.node_id, live, now, cfg.drain_period)
                }
                _ => VipTable::joining(cfg.node_id),
            };
            vips.insert(v.address, VipState::start(v.clone(), table));
        }
        // A VIP a previous run installed but the config no longer has would
        // keep being steered by the pinned program: remove it.
        let wanted: Vec<Vip> = cfg.vips.iter().flat_map(|v| v.entries()).collect();
        let installed = dp
            .installed_vips()
            .doing(|| "listing the VIPs in the dataplane".into())?;
        for stale in installed {
            if !wanted.contains(&stale) {
                dp.remove_vip(&stale)
                    .doing(|| format!("removing stale VIP {stale}"))?;
                info!(vip = %stale, reason = "not in the config", "removed a VIP a previous run installed");
            }
        }
        let members = liveness::members(&cfg.members, cfg.node_id, &cfg.liveness);
        let (report, report_rx) = watch::channel(Report {
            node_id: cfg.node_id,
            state: NodeState::Down,
            generation: cfg.generation(),
            vips: BTreeMap::new(),
        });
        let mut tasks = Vec::new();
        let listen = SocketAddr::new(cfg.me().address, cfg.liveness.port);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DaemonError::Liveness {
                addr: listen,
                source,
            })?;
        let liveness_counters = Arc::new(liveness::Counters::default());
        tasks.push(tokio::spawn(liveness::serve(
            listener,
            liveness::Endpoint {
                report: report_rx,
                members: members.clone(),
                keys: keys_rx.clone(),
                // A poller waits `timeout` for the answer: a connection
                // older than that serves nobody.
                deadline: cfg.liveness.timeout.max(Duration::from_secs(1)),
                counters: liveness_counters.clone(),
            },
        )));
        let (generation, generation_rx) = watch::channel(cfg.generation());
        tasks.push(tokio::spawn(liveness::poll(
            members.clone(),
            liveness::Poller {
                cfg: cfg.liveness.clone(),
                generation: generation_rx,
                local_address: Some(cfg.me().address),
                keys: keys_rx,
            },
        )));
        let speaker_cfg = speaker_config(&cfg, restarting)?;
        let peers = speaker_cfg.peers.clone();
        let speaker = Speaker::start(speaker_cfg).await?;
        let sock = control::bind(&cfg.api.socket)?;
        tasks.push(tokio::spawn(control::serve(sock, inbox)));
        if let Some(addr) = cfg.api.metrics {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                // Series are refreshed every second; those of VIPs, peers
                // and members a reload removed stop being refreshed and go.
                .idle_timeout(
                    metrics_util::MetricKindMask::ALL,
                    Some(crate::metrics::IDLE_TIMEOUT),
                )
                .install()
                .map_err(|source| DaemonError::Metrics { addr, source })?;
        }
        info!(
            node = cfg.node_id,
            generation = %cfg.generation(),
            restarting,
            "lbd started: XDP on {iface}, liveness on {listen}, socket {}",
            cfg.api.socket.display()
        );
        Ok(Self {
            cfg,
            dp,
            vips,
            members,
            report,
            speaker,
            eor_released: false,
            drained: false,
            drain_task: None,
            state: NodeState::Down,
            reason: "starting: checks have not passed yet".into(),
            started: Instant::now(),
            last_reload: None,
            last_metrics: Instant::now() - Duration::from_secs(10),
            tasks,
            generation,
            peers,
            gone_members: Vec::new(),
            quiesced: BTreeMap::new(),
            quiesce_adopted: false,
            keys,
            liveness_counters,
            _lock: instance,
        })
    }

    async fn main_loop(
        &mut self,
        mut inbox: mpsc::Receiver<(Request, oneshot::Sender<Response>)>,
        signals: Signals,
    ) -> Result<(), DaemonError> {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                Some((req, reply)) = inbox.recv() => {
                    let resp = self.handle(req);
                    let _ = reply.send(resp);
                    self.tick();
                }
                _ = hup.recv() => self.reload().await,
                _ = term.recv() => { info!("SIGTERM: stopping"); return Ok(()); }
                _ = int.recv() => { info!("SIGINT: stopping"); return Ok(()); }
            }
        }
    }

    async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.cfg.bgp.graceful_restart_time.is_some() {
            self.speaker.close_for_restart().await;
        } else {
            self.speaker.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.cfg.api.socket);
        info!(
            pin_dir = %self.cfg.dataplane.pin_dir.display(),
            "stopped; the XDP program stays attached and keeps forwarding (lbd cleanup removes it)"
        );
    }

    /// Whether each VIP passes its checks right now.
    fn healthy(&self) -> Healthy {
        self.vips.iter().map(|(&a, v)| (a, v.healthy())).collect()
    }

    /// Whether this node announces `vip`, read from the speaker's RIB. A
    /// drain keeps the routes there (with GRACEFUL_SHUTDOWN) until
    /// `shutdown_wait` ends, but they are no longer ours to withdraw or
    /// re-announce: the drain task removes them.
    fn announced(&self, vip: IpAddr) -> bool {
        !self.drained && self.speaker.is_announced(host_prefix(vip))
    }

    /// One round of the loop, in the order that keeps connections alive.
    fn tick(&mut self) {
        let healthy = self.healthy();
        self.update_node_state(&healthy);
        self.publish_report(&healthy);
        let draining_bgp = self.drain_task.as_ref().is_some_and(|t| !t.is_finished());
        self.withdraw_failing(&healthy, draining_bgp);
        // Tables wait until every member has answered or failed `fall`
        // polls (at start, and for members a reload adds): "down" before
        // that only means "not asked yet", and a table (and an
        // announcement) without members that serve, or without the second
        // hops that lead to them, would take their connections.
        let decided = liveness::decided(&self.members, self.cfg.liveness.fall);
        if decided {
            self.update_tables(&healthy);
        }
        self.forget_gone_members();
        self.resume_on_new_listener();
        self.end_listener_steering();
        if !draining_bgp && !self.drained {
            self.announce_ready(&healthy);
        }
        self.release_end_of_rib(decided);
        self.export_metrics();
    }

    /// Node state (active / draining / down) and its reason, logged when
    /// it changes.
    fn update_node_state(&mut self, healthy: &Healthy) {
        let (state, reason) = if self.drained {
            (NodeState::Draining, "lbd drain".to_string())
        } else if healthy.values().any(|&h| h) {
            let up = healthy.values().filter(|&&h| h).count();
            (
                NodeState::Active,
                format!("{up}/{} VIPs pass their checks", healthy.len()),
            )
        } else {
            (NodeState::Down, "no VIP passes its checks".to_string())
        };
        if state != self.state {
            info!(from = self.state.name(), to = state.name(), reason = %reason, "node state");
        }
        self.state = state;
        self.reason = reason;
    }

    /// What the liveness endpoint serves (only changes wake pollers' reads).
    fn publish_report(&self, healthy: &Healthy) {
        let state = self.state;
        let vips: BTreeMap<String, bool> =
            healthy.iter().map(|(a, &h)| (a.to_string(), h)).collect();
        self.report.send_if_modified(|r| {
            let changed = r.state != state || r.vips != vips;
            r.state = state;
            r.vips = vips.clone();
            changed
        });
    }

    /// A failing check withdraws at once, before anything else moves.
    fn withdraw_failing(&mut self, healthy: &Healthy, draining_bgp: bool) {
        if draining_bgp {
            return;
        }
        for (&vip, &h) in healthy {
            if !h && self.announced(vip) {
                self.speaker.withdraw(host_prefix(vip));
                warn!(vip = %vip, reason = "health check failed", "withdrawn");
            }
        }
    }

    /// Each VIP's table from the member view; installed in the dataplane.
    fn update_tables(&mut self, healthy: &Healthy) {
        let me = self.cfg.node_id;
        let others = liveness::lock(&self.members).clone();
        let now = Instant::now();
        for (&addr, v) in &mut self.vips {
            let key = addr.to_string();
            let serving_here = !self.drained && healthy.get(&addr).copied().unwrap_or(false);
            let view: Vec<MemberView> = self
                .cfg
                .members
                .iter()
                .map(|m| {
                    if m.id == me {
                        return MemberView {
                            id: m.id,
                            weight: m.weight,
                            reachable: true,
                            serving: serving_here,
                        };
                    }
                    let (up, serving) = match others.get(&m.id) {
                        Some(s) => {
                            let serving = s.up
                                && s.report.as_ref().is_some_and(|r| {
                                    r.state == NodeState::Active
                                        && r.vips.get(&key).copied().unwrap_or(false)
                                });
                            (s.up, serving)
                        }
                        None => (false, false),
                    };
                    MemberView {
                        id: m.id,
                        weight: m.weight,
                        reachable: up,
                        serving,
                    }
                })
                .collect();
            let change = match v.table.update(
                &view,
                self.cfg.dataplane.table_size,
                self.cfg.hash_seed,
                now,
            ) {
                Ok(c) => c,
                Err(e) => {
                    error!(vip = %addr, error = %e, "cannot build the table");
                    continue;
                }
            };
            let buckets = match &change {
                Change::None => continue,
                Change::Membership {
                    buckets,
                    moved,
                    with_second_hop,
                    ..
                } => {
                    let first: Vec<u16> = view
                        .iter()
                        .filter(|m| m.reachable && m.serving)
                        .map(|m| m.id)
                        .collect();
                    info!(vip = %addr, first_hops = ?first, moved, with_second_hop, "table change");
                    buckets.clone()
                }
                Change::Settled(b) => {
                    info!(vip = %addr, "drain period over: second hops dropped");
                    b.clone()
                }
            };
            let clamp = mss_clamp(&self.cfg, addr);
            let mut ok = true;
            for e in v.config.entries() {
                if let Err(err) = self.dp.set_vip_table(&e, &buckets, clamp) {
                    error!(vip = %e, error = %format!("{err:#}"), "installing the table failed");
                    ok = false;
                }
            }
            if ok {
                v.table.installed(change, now, self.cfg.drain_period);
            }
        }
    }

    /// Listener-aware steering ends (the steady state: no socket lookups)
    /// once a VIP's listener is back and the connections its first hop sent
    /// to the fallback meanwhile have had the drain period.
    fn end_listener_steering(&mut self) {
        for v in &self.cfg.vips {
            for e in v.entries() {
                match self.dp.end_steering_after(&e, self.cfg.drain_period) {
                    Ok(true) => {
                        info!(vip = %e, "listener back for the drain period: steering to the fallback ended")
                    }
                    Ok(false) => {}
                    Err(err) => {
                        warn!(vip = %e, error = %format!("{err:#}"), "reading the listener state failed")
                    }
                }
            }
        }
    }

    /// BGP: announce only what passes its checks and is in our own table.
    fn announce_ready(&mut self, healthy: &Healthy) {
        let me = self.cfg.node_id;
        for (&vip, v) in &self.vips {
            let want = healthy.get(&vip).copied().unwrap_or(false) && v.table.has_first_hop(me);
            let announced = self.announced(vip);
            if want && !announced {
                // Cannot fail: the config takes only unicast VIPs.
                match self
                    .speaker
                    .announce(host_prefix(vip), route_attrs(&self.cfg))
                {
                    Ok(()) => {
                        info!(vip = %vip, reason = "checks pass and table loaded", "announced")
                    }
                    Err(e) => error!(vip = %vip, error = %e, "cannot announce"),
                }
            } else if !want && announced {
                self.speaker.withdraw(host_prefix(vip));
                info!(vip = %vip, reason = "not a first hop of its own table", "withdrawn");
            }
        }
    }

    fn release_end_of_rib(&mut self, decided: bool) {
        if !self.eor_released && self.first_routes_decided(decided) {
            self.speaker.release_end_of_rib();
            self.eor_released = true;
            info!(reason = "first routes decided", "End-of-RIB released");
        }
    }

    fn export_metrics(&mut self) {
        if self.last_metrics.elapsed() >= Duration::from_secs(1) {
            self.last_metrics = Instant::now();
            if self.cfg.api.metrics.is_some() {
                crate::metrics::export(&self.status());
            }
        }
    }

    /// After a restart the router keeps our routes as stale until our
    /// End-of-RIB: send it only once the view is decided and every VIP is
    /// announced or its checks have run often enough to be up if they will
    /// be (else a route announced just after it would leave a gap).
    fn first_routes_decided(&self, decided: bool) -> bool {
        decided
            && (self.drained
                || self
                    .vips
                    .iter()
                    .all(|(&a, v)| self.announced(a) || v.checks_settled()))
    }

    fn forget_gone_members(&mut self) {
        let vips = &self.vips;
        let named = |id: u16| {
            vips.values()
                .any(|v| v.table.live.iter().any(|b| b.first == id || b.second == id))
        };
        let (gone, keep): (Vec<u16>, Vec<u16>) =
            self.gone_members.iter().partition(|&&id| !named(id));
        self.gone_members = keep;
        for id in gone {
            match self.dp.set_node(id, None) {
                Ok(()) => info!(member = id, "removed from the dataplane's node list"),
                Err(e) => {
                    error!(member = id, error = %format!("{e:#}"), "removing a member from the dataplane")
                }
            }
        }
    }

    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Drain => {
                if self.drained {
                    return Response::Message("already draining".into());
                }
                self.drained = true;
                let speaker = self.speaker.clone();
                let wait = self.cfg.bgp.shutdown_wait;
                // The drain task withdraws everything after the wait.
                self.drain_task = Some(tokio::spawn(async move { speaker.drain(wait).await }));
                info!(
                    shutdown_wait = ?wait,
                    drain_period = ?self.cfg.drain_period,
                    "draining: GRACEFUL_SHUTDOWN now, withdraw after the wait; established connections keep their second hop"
                );
                Response::Message(format!(
                    "draining: routes carry GRACEFUL_SHUTDOWN for {}s then are withdrawn; established connections are served for up to {}s",
                    wait.as_secs(),
                    self.cfg.drain_period.as_secs()
                ))
            }
            Request::Undrain => {
                if !self.drained {
                    return Response::Message("not draining".into());
                }
                if let Some(t) = self.drain_task.take() {
                    t.abort();
                }
                self.speaker.undrain();
                // Whatever an aborted drain left in the RIB is ours again,
                // brought in line by the next tick (withdrawn if not wanted).
                self.drained = false;
                info!("undrained: announcing again as checks and tables allow");
                Response::Message("undrained".into())
            }
            Request::Table { vip } => {
                let Ok(addr) = vip.parse::<IpAddr>() else {
                    return Response::Error(format!("{vip:?} is not an IP address"));
                };
                let Some(v) = self.vips.get(&addr) else {
                    return Response::Error(format!("{addr} is not a configured VIP"));
                };
                Response::Table(TableView::of(addr, &v.table, Instant::now()))
            }
            Request::Quiesce(sel) => self.quiesce(&sel),
            Request::Resume(sel) => self.resume(&sel),
            Request::Listeners(sel) => self.listener_queues(&sel),
        }
    }

    fn status(&self) -> Status {
        crate::status::assemble(&crate::status::Sources {
            cfg: &self.cfg,
            vips: &self.vips,
            state: self.state,
            reason: &self.reason,
            uptime: self.started.elapsed(),
            last_reload: self.last_reload.as_deref(),
            dp: &self.dp,
            speaker: &self.speaker,
            members: &liveness::lock(&self.members).clone(),
            liveness: &self.liveness_counters,
        })
    }
}
