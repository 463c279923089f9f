//! The handle `lbd` holds: routes to announce, session events, counters.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::bfd::BfdHub;
use crate::config::{PeerConfig, RouteAttrs, SpeakerConfig};
use crate::rib::{Rib, Stop};
use crate::session::{LogLimiter, PeerTask};
use crate::socket;
use crate::state::{PeerShared, PeerStatus, SessionEvent};
use crate::transport::TcpDialer;

/// A route the speaker cannot announce.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0} is not a unicast prefix")]
    NotUnicast(IpNet),
}

/// Errors starting the speaker.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on BGP port {port}: {source}")]
    Listen { port: u16, source: io::Error },
    #[error("cannot open the BFD socket (UDP 3784): {0}")]
    Bfd(io::Error),
    #[error("peer {0} is configured twice")]
    DuplicatePeer(IpAddr),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Per peer: its session's inbox and whether inbound connections are refused.
type Inboxes = Arc<Mutex<HashMap<IpAddr, (mpsc::Sender<TcpStream>, bool)>>>;

/// A running speaker. Cheap to clone; every method can be called from any
/// thread.
#[derive(Clone)]
pub struct Speaker {
    global: Arc<SpeakerConfig>,
    rib: watch::Sender<Rib>,
    events: broadcast::Sender<SessionEvent>,
    /// Stops the listener task; each peer has its own stop (`remove_peer`).
    stop: watch::Sender<Stop>,
    listener: Option<Arc<TcpListener>>,
    /// Every peer used GTSM at start, so the listener filters TTL < 254.
    listener_gtsm: bool,
    /// Where the listener hands accepted connections: the peer's inbox and
    /// whether inbound connections from it are refused (GTSM, see `add`).
    inboxes: Inboxes,
    inner: Arc<Mutex<Inner>>,
    /// Inbound connections from addresses that are not peers.
    refused_unknown: Arc<std::sync::atomic::AtomicU64>,
}

/// Refused connections are logged at most this often (with the count since
/// the last line): a SYN flood to port 179 must not flood the journal.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

struct PeerHandle {
    addr: IpAddr,
    shared: Arc<Mutex<PeerShared>>,
    stop: watch::Sender<Stop>,
    task: Option<JoinHandle<()>>,
    /// Without a listener nothing feeds the session's inbox, but a closed
    /// inbox means "stop" to a session task: the sender lives here.
    _idle_inbox: Option<mpsc::Sender<TcpStream>>,
}

#[derive(Default)]
struct Inner {
    peers: Vec<PeerHandle>,
    bfd: Option<Arc<BfdHub>>,
    listener_task: Option<JoinHandle<()>>,
}

impl Speaker {
    /// Binds the listener (if any) and starts one task per peer on the
    /// current tokio runtime.
    pub async fn start(cfg: SpeakerConfig) -> Result<Speaker, StartError> {
        if cfg.hold_time != 0 && cfg.hold_time < 3 {
            return Err(StartError::Config(format!(
                "hold time {} must be 0 or at least 3 seconds",
                cfg.hold_time
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &cfg.peers {
            if !seen.insert(socket::canonical(p.address)) {
                return Err(StartError::DuplicatePeer(socket::canonical(p.address)));
            }
        }
        let (rib, _) = watch::channel(Rib {
            eor_held: cfg.graceful_restart.is_some_and(|g| g.restarting),
            ..Rib::default()
        });
        let (events, _) = broadcast::channel(1024);
        let (stop, _) = watch::channel(Stop::Running);
        // GTSM is only watertight when the kernel filters the SYN, which it
        // does per listening socket: see `refuse_inbound` in `add`.
        let listener_gtsm = !cfg.peers.is_empty() && cfg.peers.iter().all(|p| p.ttl_security);
        let listener = match cfg.listen_port {
            Some(port) => Some(Arc::new(
                socket::listen(port, listener_gtsm)
                    .map_err(|source| StartError::Listen { port, source })?,
            )),
            None => None,
        };
        let bfd = if cfg.peers.iter().any(|p| p.bfd.is_some()) {
            Some(BfdHub::start().await.map_err(StartError::Bfd)?)
        } else {
            None
        };
        let peers = cfg.peers.clone();
        let sp = Speaker {
            global: Arc::new(SpeakerConfig {
                peers: Vec::new(),
                ..cfg
            }),
            rib,
            events,
            stop,
            listener,
            listener_gtsm,
            inboxes: Arc::new(Mutex::new(HashMap::new())),
            inner: Arc::new(Mutex::new(Inner {
                bfd,
                ..Default::default()
            })),
            refused_unknown: Default::default(),
        };
        for pc in peers {
            sp.add(pc)?;
        }
        if let Some(listener) = sp.listener.clone() {
            let mut stop_rx = sp.stop.subscribe();
            let inboxes = sp.inboxes.clone();
            let refused = sp.refused_unknown.clone();
            let mut last_log: Option<(Instant, u64)> = None;
            sp.lock().listener_task = Some(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = listener.accept() => match r {
                            Ok((stream, from)) => {
                                let ip = socket::canonical(from.ip());
                                let inbox = inboxes.lock().unwrap_or_else(|e| e.into_inner()).get(&ip).cloned();
                                match inbox {
                                    Some((_, true)) => tracing::debug!(peer = %ip, "GTSM peer: inbound connection refused"),
                                    // A full inbox means the session is busy
                                    // with several connections already.
                                    Some((tx, false)) => { let _ = tx.try_send(stream); }
                                    None => {
                                        let n = refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                                        if last_log.is_none_or(|(t, _)| t.elapsed() >= REFUSED_LOG_EVERY) {
                                            let since = n - last_log.map_or(0, |(_, c)| c);
                                            tracing::warn!(peer = %ip, refused_since_last_line = since, total = n, "connections from unconfigured addresses refused (logged at most every 10s)");
                                            last_log = Some((Instant::now(), n));
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                        _ = stop_rx.changed() => return,
                    }
                }
            }));
        }
        Ok(sp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a peer to a running speaker: its session starts at once and
    /// gets every announced route. The other sessions are not touched.
    pub async fn add_peer(&self, pc: PeerConfig) -> Result<(), StartError> {
        if pc.bfd.is_some() && self.lock().bfd.is_none() {
            let hub = BfdHub::start().await.map_err(StartError::Bfd)?;
            self.lock().bfd.get_or_insert(hub);
        }
        self.add(pc)
    }

    fn add(&self, pc: PeerConfig) -> Result<(), StartError> {
        let addr = socket::canonical(pc.address);
        let mut inner = self.lock();
        if inner.peers.iter().any(|p| p.addr == addr) {
            return Err(StartError::DuplicatePeer(addr));
        }
        if *self.stop.borrow() != Stop::Running {
            return Err(StartError::Config("the speaker is stopped".into()));
        }
        if self.listener.is_none() && pc.passive {
            return Err(StartError::Config(format!(
                "passive peer {addr}: there is no listener"
            )));
        }
        if self.listener_gtsm && !pc.ttl_security && pc.passive {
            return Err(StartError::Config(format!(
                "passive peer {addr} without GTSM: the listener drops its SYNs \
                 (every peer used GTSM when the speaker started)"
            )));
        }
        if let (Some(l), Some(key)) = (&self.listener, pc.md5_password.as_deref()) {
            socket::set_md5(&**l, true, addr, Some(key))
                .map_err(|e| StartError::Config(format!("peer {addr}: MD5 key: {e}")))?;
        }
        let (tx, rx) = mpsc::channel(4);
        // A GTSM peer sharing the listener with non-GTSM peers could slip
        // packets with a low TTL in before the accepted socket gets its
        // minimum TTL, so such a peer's connections are refused and the
        // session runs on ours (whose SYN-ACK is already filtered). A
        // passive GTSM peer gets best effort: GTSM right after accept.
        let refuse_inbound = pc.ttl_security && !self.listener_gtsm && !pc.passive;
        let idle_inbox = if self.listener.is_some() {
            self.inboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(addr, (tx, refuse_inbound));
            None
        } else {
            Some(tx)
        };
        let shared = Arc::new(Mutex::new(PeerShared::new(addr)));
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let task = PeerTask {
            cfg: Arc::new(pc),
            global: self.global.clone(),
            rib: self.rib.subscribe(),
            shared: shared.clone(),
            events: self.events.clone(),
            incoming: rx,
            stop: stop_rx,
            bfd: inner.bfd.clone(),
            error_log: LogLimiter::new(),
            dialer: Arc::new(TcpDialer),
            inbox_closed: false,
        };
        inner.peers.push(PeerHandle {
            addr,
            shared,
            stop,
            task: Some(tokio::spawn(task.run())),
            _idle_inbox: idle_inbox,
        });
        Ok(())
    }

    /// Removes a peer from a running speaker: its session ends with Cease /
    /// Administrative Shutdown (the router withdraws our routes from it at
    /// once). Returns false if there is no such peer.
    pub async fn remove_peer(&self, address: IpAddr) -> bool {
        let addr = socket::canonical(address);
        let handle = {
            let mut inner = self.lock();
            match inner.peers.iter().position(|p| p.addr == addr) {
                Some(i) => inner.peers.remove(i),
                None => return false,
            }
        };
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        if let Some(l) = &self.listener {
            let _ = socket::set_md5(&**l, true, addr, None);
        }
        let _ = handle.stop.send(Stop::Shutdown);
        if let Some(t) = handle.task {
            let _ = t.await;
        }
        true
    }

    /// The first routes are decided (announced or known not to be): a
    /// restarting speaker now sends End-of-RIB to its peers. Without this
    /// call it does so 30 s after a session is established.
    pub fn release_end_of_rib(&self) {
        self.rib
            .send_if_modified(|r| std::mem::replace(&mut r.eor_held, false));
    }

    /// Announces (or updates the attributes of) a prefix to every peer.
    /// Multicast prefixes cannot be announced as unicast routes.
    pub fn announce(&self, prefix: IpNet, attrs: RouteAttrs) -> Result<(), RouteError> {
        let prefix = prefix.trunc();
        if !crate::wire::is_unicast(prefix) {
            return Err(RouteError::NotUnicast(prefix));
        }
        self.rib.send_if_modified(|r| {
            if r.routes.get(&prefix) == Some(&attrs) {
                return false;
            }
            r.routes.insert(prefix, attrs);
            true
        });
        Ok(())
    }

    /// Withdraws a prefix from every peer.
    pub fn withdraw(&self, prefix: IpNet) {
        let prefix = prefix.trunc();
        self.rib
            .send_if_modified(|r| r.routes.remove(&prefix).is_some());
    }

    /// Drains the node (RFC 8326): re-announces every route with the
    /// GRACEFUL_SHUTDOWN community so routers move traffic away, waits
    /// `delay`, then withdraws everything. Routes announced later are
    /// tagged too until `undrain`.
    pub async fn drain(&self, delay: Duration) {
        self.rib
            .send_if_modified(|r| !std::mem::replace(&mut r.draining, true));
        tokio::time::sleep(delay).await;
        self.rib.send_if_modified(|r| {
            let changed = !r.routes.is_empty();
            r.routes.clear();
            changed
        });
    }

    /// Leaves the draining state: later announcements go out untagged.
    pub fn undrain(&self) {
        self.rib
            .send_if_modified(|r| std::mem::replace(&mut r.draining, false));
    }

    /// Inbound connections refused because their source is not a peer.
    pub fn refused_unknown(&self) -> u64 {
        self.refused_unknown
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The prefixes currently announced.
    pub fn announced(&self) -> Vec<IpNet> {
        self.rib.borrow().routes.keys().copied().collect()
    }

    /// Whether `prefix` is in the RIB (announced to every peer, or being
    /// drained with GRACEFUL_SHUTDOWN).
    pub fn is_announced(&self, prefix: IpNet) -> bool {
        self.rib.borrow().routes.contains_key(&prefix.trunc())
    }

    /// A stream of session state changes.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Counters of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.lock()
            .peers
            .iter()
            .map(|p| {
                let s = p.shared.lock().unwrap_or_else(|e| e.into_inner());
                let mut st = s.status.clone();
                st.uptime = s.since.map(|t| t.elapsed());
                st
            })
            .collect()
    }

    /// Stops every session with Cease / Administrative Shutdown.
    pub async fn shutdown(&self) {
        self.stop_with(Stop::Shutdown).await;
    }

    /// Stops every session without NOTIFICATION, so routers that are
    /// graceful-restart helpers keep our routes while `lbd` restarts.
    pub async fn close_for_restart(&self) {
        self.stop_with(Stop::ForRestart).await;
    }

    async fn stop_with(&self, how: Stop) {
        let _ = self.stop.send(how);
        let tasks: Vec<_> = {
            let mut inner = self.lock();
            let mut tasks: Vec<_> = inner
                .peers
                .iter_mut()
                .filter_map(|p| {
                    let _ = p.stop.send(how);
                    p.task.take()
                })
                .collect();
            tasks.extend(inner.listener_task.take());
            tasks
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}
