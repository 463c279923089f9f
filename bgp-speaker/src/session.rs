//! One peer's finite state machine (RFC 4271 section 8): connect and accept,
//! OPEN exchange, collision detection, keepalives, hold timer, sending the
//! routes, and restart with exponential backoff after every failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant as TInstant, sleep_until, timeout};

use crate::bfd::{self, BfdHub, BfdState};
use crate::config::{GRACEFUL_SHUTDOWN, PeerConfig, RouteAttrs, SpeakerConfig};
use crate::conn::{Conn, Read};
use crate::speaker::{PeerShared, Rib, SessionEvent, State, Stop};
use crate::wire::{self, Incoming, Notification, PeerOpen};
use crate::{jitter, socket};

/// RFC 4271 suggests a large hold time while waiting for the peer's OPEN.
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// A peer that does not read what we write for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a restarting speaker holds End-of-RIB for its owner's first
/// routes at most (the router's stale timer runs meanwhile).
pub(crate) const EOR_HOLD_LIMIT: Duration = Duration::from_secs(30);

pub(crate) struct PeerTask {
    pub cfg: Arc<PeerConfig>,
    pub global: Arc<SpeakerConfig>,
    pub rib: watch::Receiver<Rib>,
    pub shared: Arc<Mutex<PeerShared>>,
    pub events: broadcast::Sender<SessionEvent>,
    pub incoming: mpsc::Receiver<TcpStream>,
    pub stop: watch::Receiver<Stop>,
    pub bfd: Option<Arc<BfdHub>>,
}

/// How one connection ended.
enum End {
    /// Closed; `reason` goes to `last_error`.
    Closed { reason: String, established: bool },
    /// The speaker is stopping.
    Stopped,
    /// Collision resolution picked the other connection.
    Switch(TcpStream),
}

impl PeerTask {
    fn set_state(&self, to: State, reason: Option<String>) {
        let from = {
            let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let from = s.status.state;
            if from == to {
                return;
            }
            s.status.state = to;
            if to == State::Established {
                s.since = Some(Instant::now());
                s.status.established_count += 1;
            } else if from == State::Established {
                s.since = None;
                s.status.prefixes_sent = 0;
                s.status.bfd = None;
            }
            if let Some(r) = &reason {
                s.status.last_error = Some(r.clone());
            }
            from
        };
        tracing::info!(peer = %self.cfg.address, ?from, ?to, reason = reason.as_deref().unwrap_or(""), "BGP state");
        let _ = self.events.send(SessionEvent {
            peer: self.cfg.address,
            from,
            to,
            reason,
        });
    }

    fn with<R>(&self, f: impl FnOnce(&mut PeerShared) -> R) -> R {
        f(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    pub async fn run(mut self) {
        let mut backoff = self.cfg.connect_retry;
        let mut delay = Duration::ZERO;
        loop {
            if self.stopping() {
                return;
            }
            // Connect: a TCP connect is starting now; Active: waiting for the
            // peer (passive) or for the retry timer.
            self.set_state(
                if self.cfg.passive || !delay.is_zero() {
                    State::Active
                } else {
                    State::Connect
                },
                None,
            );
            let deadline = TInstant::now() + delay;
            let cfg = self.cfg.clone();
            let first = tokio::select! {
                s = self.incoming.recv() => match s {
                    Some(s) => Some((s, false)),
                    None => return,
                },
                r = connect_at(cfg, deadline), if !self.cfg.passive => match r {
                    Ok(s) => Some((s, true)),
                    Err(e) => {
                        self.set_state(State::Active, Some(format!("connect: {e}")));
                        None
                    }
                },
                _ = self.stop.changed() => return,
            };
            let mut ended_established = false;
            if let Some((mut stream, mut outbound)) = first {
                loop {
                    match self.run_connection(stream, outbound).await {
                        End::Stopped => {
                            self.set_state(State::Idle, Some("stopped".into()));
                            return;
                        }
                        End::Switch(s) => {
                            stream = s;
                            outbound = false;
                        }
                        End::Closed {
                            reason,
                            established,
                        } => {
                            ended_established = established;
                            self.set_state(State::Idle, Some(reason));
                            break;
                        }
                    }
                }
            }
            // Reconnect after a delay with jitter that doubles after every
            // failure and starts over once a session was Established;
            // connections from the peer are accepted at any time.
            if ended_established {
                backoff = self.cfg.connect_retry;
            }
            delay = jitter(backoff);
            backoff = next_backoff(backoff, self.cfg.connect_retry_max);
        }
    }

    fn ebgp(&self) -> bool {
        self.cfg.remote_as != self.global.local_as
    }

    async fn send(&self, c: &mut Conn, bytes: &[u8]) -> Result<(), String> {
        match timeout(WRITE_TIMEOUT, c.wr.write_all(bytes)).await {
            Ok(Ok(())) => {
                self.with(|s| s.status.messages_out += 1);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("write: peer stopped reading".into()),
        }
    }

    /// Sends a NOTIFICATION and returns the reason string for `last_error`.
    async fn notify(&self, c: &mut Conn, n: &Notification) -> String {
        let _ = self.send(c, &n.encode()).await;
        let _ = c.wr.shutdown().await;
        format!("sent NOTIFICATION {}", n.describe())
    }

    async fn run_connection(&mut self, stream: TcpStream, outbound: bool) -> End {
        let gtsm = (!outbound && self.cfg.ttl_security).then_some(self.cfg.address);
        let mut c = match Conn::open(stream, outbound, gtsm) {
            Ok(c) => c,
            Err(reason) => {
                return End::Closed {
                    reason,
                    established: false,
                };
            }
        };
        self.with(|s| s.status.local_address = Some(c.local));
        let gr = self
            .global
            .graceful_restart
            .map(|g| (g.restart_time, g.restarting));
        let open = wire::open(&wire::OpenParams {
            local_as: self.global.local_as,
            hold_time: self.global.hold_time,
            router_id: self.global.router_id,
            graceful_restart: gr,
        });
        if let Err(reason) = self.send(&mut c, &open).await {
            return closed(reason);
        }
        self.set_state(State::OpenSent, None);

        // OpenSent: wait for the peer's OPEN.
        let mut pending: Option<TcpStream> = None;
        let deadline = TInstant::now() + OPEN_HOLD;
        let peer = loop {
            tokio::select! {
                m = c.rd.recv() => match self.handshake_read(&mut c, m).await {
                    Ok(Incoming::Open(o)) => {
                        match wire::check_open(&o, self.cfg.remote_as, self.global.router_id, self.ebgp()) {
                            Ok(p) => break p,
                            Err(n) => return closed(self.notify(&mut c, &n).await),
                        }
                    }
                    Ok(_) => {
                        let n = Notification::new(5, 1, Vec::new());
                        return closed(self.notify(&mut c, &n).await);
                    }
                    // The peer gave up this connection for its other one.
                    Err(r) => return pending.map_or_else(|| closed(r), End::Switch),
                },
                s = self.incoming.recv() => {
                    if let Some(s) = s { pending = Some(s); }
                }
                _ = sleep_until(deadline) => {
                    let n = Notification::new(4, 0, Vec::new());
                    return closed(self.notify(&mut c, &n).await);
                }
                _ = self.stop.changed() => return self.stop_conn(&mut c).await,
            }
        };
        if let Some(other) = pending.take()
            && let Some(end) = self.collide(&mut c, other, &peer).await
        {
            return end;
        }
        let hold = Duration::from_secs(u64::from(self.global.hold_time.min(peer.hold_time)));
        if let Err(reason) = self.send(&mut c, &wire::keepalive()).await {
            return closed(reason);
        }
        self.set_state(State::OpenConfirm, None);

        // OpenConfirm: wait for KEEPALIVE.
        let deadline = TInstant::now() + if hold.is_zero() { OPEN_HOLD } else { hold };
        loop {
            tokio::select! {
                m = c.rd.recv() => match self.handshake_read(&mut c, m).await {
                    Ok(Incoming::KeepAlive) => break,
                    Ok(_) => {
                        let n = Notification::new(5, 2, Vec::new());
                        return closed(self.notify(&mut c, &n).await);
                    }
                    Err(r) => return closed(r),
                },
                s = self.incoming.recv() => {
                    if let Some(other) = s
                        && let Some(end) = self.collide(&mut c, other, &peer).await
                    {
                        return end;
                    }
                }
                _ = sleep_until(deadline) => {
                    let n = Notification::new(4, 0, Vec::new());
                    return closed(self.notify(&mut c, &n).await);
                }
                _ = self.stop.changed() => return self.stop_conn(&mut c).await,
            }
        }
        self.established(c, peer, hold).await
    }

    /// A read during the OPEN exchange: the message, or why the connection
    /// ended (NOTIFICATION received or sent, TCP closed).
    async fn handshake_read(&self, c: &mut Conn, m: Option<Read>) -> Result<Incoming, String> {
        match m {
            Some(Read::Msg(Incoming::Notification(n))) => {
                Err(format!("received NOTIFICATION {}", n.describe()))
            }
            Some(Read::Msg(m)) => {
                self.with(|s| s.status.messages_in += 1);
                Ok(m)
            }
            Some(Read::Bad(n)) => Err(self.notify(c, &n).await),
            Some(Read::Closed(r)) => Err(r),
            None => Err("connection closed".into()),
        }
    }

    /// Collision detection (RFC 4271 section 6.8): the connection opened by
    /// the side with the higher BGP identifier survives. Returns how the
    /// current connection ends if it loses.
    async fn collide(&self, c: &mut Conn, other: TcpStream, peer: &PeerOpen) -> Option<End> {
        let keep_ours = self.global.router_id > peer.router_id;
        if keep_ours == c.outbound {
            reject_collision(other).await;
            None
        } else {
            let n = Notification::new(6, 7, Vec::new());
            self.notify(c, &n).await;
            Some(End::Switch(other))
        }
    }

    async fn stop_conn(&self, c: &mut Conn) -> End {
        if *self.stop.borrow() == Stop::Shutdown {
            let n = Notification::new(6, 2, Vec::new());
            self.notify(c, &n).await;
        }
        End::Stopped
    }

    /// End-of-RIB for every address family of the session.
    async fn end_of_rib(&self, c: &mut Conn, peer: &PeerOpen) -> Result<(), String> {
        for (afi_ok, v6) in [(peer.ipv4, false), (peer.ipv6, true)] {
            if afi_ok {
                self.send(c, &wire::end_of_rib(v6)).await?;
            }
        }
        Ok(())
    }

    async fn established(&mut self, mut c: Conn, peer: PeerOpen, hold: Duration) -> End {
        self.set_state(State::Established, None);
        let (nh4, nh6) = wire::next_hops(c.local, self.cfg.next_hop_v4, self.cfg.next_hop_v6);
        let uctx = wire::UpdateCtx {
            local_as: self.global.local_as,
            ebgp: self.ebgp(),
            asn4: peer.asn4,
            next_hop_v4: if peer.ipv4 { nh4 } else { None },
            next_hop_v6: if peer.ipv6 { nh6 } else { None },
        };
        let mut sent: BTreeMap<IpNet, RouteAttrs> = BTreeMap::new();
        let r = self.sync_routes(&mut c, &uctx, &mut sent).await;
        if let Err(reason) = r {
            return closed_est(reason);
        }
        // End-of-RIB follows our first routes; a restarting speaker waits
        // for its owner to decide them (see `Rib::eor_held`).
        let mut eor_due = self.global.graceful_restart.is_some() && peer.graceful_restart;
        let eor_limit = TInstant::now() + EOR_HOLD_LIMIT;
        if eor_due && !self.rib.borrow().eor_held {
            eor_due = false;
            if let Err(reason) = self.end_of_rib(&mut c, &peer).await {
                return closed_est(reason);
            }
        }
        // BFD rides along with the session: it starts now and its Down
        // takes the session down (Cease / BFD Down, RFC 9384).
        let mut bfd_state: Option<watch::Receiver<BfdState>> = None;
        let _bfd_task = match (&self.bfd, self.cfg.bfd) {
            (Some(hub), Some(bc)) => {
                let (tx, rx) = watch::channel(BfdState::Down);
                bfd_state = Some(rx);
                let task = bfd::spawn_session(hub.clone(), bc, c.local, self.cfg.address, tx);
                Some(AbortOnDrop(task))
            }
            _ => None,
        };
        let mut bfd_was_up = false;
        let keepalive_every = hold / 3;
        let mut next_ka = TInstant::now() + keepalive_every;
        let mut hold_deadline = TInstant::now() + hold;
        loop {
            tokio::select! {
                m = c.rd.recv() => match m {
                    Some(Read::Msg(msg)) => {
                        if !hold.is_zero() { hold_deadline = TInstant::now() + hold; }
                        self.with(|s| s.status.messages_in += 1);
                        match msg {
                            Incoming::KeepAlive => {}
                            Incoming::Update(u) => {
                                // Routers send routes; we count them and let
                                // them go.
                                let (ann, _) = wire::update_prefix_counts(&u);
                                self.with(|s| {
                                    s.status.updates_in += 1;
                                    s.status.prefixes_received += ann as u64;
                                });
                            }
                            Incoming::RouteRefresh => {
                                sent.clear();
                                if let Err(reason) = self.sync_routes(&mut c, &uctx, &mut sent).await {
                                    return closed_est(reason);
                                }
                            }
                            Incoming::Notification(n) => {
                                return closed_est(format!("received NOTIFICATION {}", n.describe()));
                            }
                            Incoming::Open(_) => {
                                let n = Notification::new(5, 3, Vec::new());
                                return closed_est(self.notify(&mut c, &n).await);
                            }
                        }
                    }
                    Some(Read::Bad(n)) => return closed_est(self.notify(&mut c, &n).await),
                    Some(Read::Closed(r)) => return closed_est(r),
                    None => return closed_est("connection closed".into()),
                },
                _ = sleep_until(next_ka), if !hold.is_zero() => {
                    next_ka = TInstant::now() + keepalive_every;
                    if let Err(reason) = self.send(&mut c, &wire::keepalive()).await {
                        return closed_est(reason);
                    }
                }
                _ = sleep_until(hold_deadline), if !hold.is_zero() => {
                    let n = Notification::new(4, 0, Vec::new());
                    return closed_est(self.notify(&mut c, &n).await);
                }
                r = self.rib.changed() => {
                    if r.is_err() { return End::Stopped; }
                    if let Err(reason) = self.sync_routes(&mut c, &uctx, &mut sent).await {
                        return closed_est(reason);
                    }
                    if eor_due && !self.rib.borrow().eor_held {
                        eor_due = false;
                        if let Err(reason) = self.end_of_rib(&mut c, &peer).await {
                            return closed_est(reason);
                        }
                    }
                }
                _ = sleep_until(eor_limit), if eor_due => {
                    eor_due = false;
                    if let Err(reason) = self.end_of_rib(&mut c, &peer).await {
                        return closed_est(reason);
                    }
                }
                s = self.incoming.recv() => {
                    if let Some(other) = s { reject_collision(other).await; }
                }
                r = async { match bfd_state.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                    let st = match (&r, bfd_state.as_ref()) {
                        (Ok(()), Some(w)) => *w.borrow(),
                        _ => BfdState::Down,
                    };
                    self.with(|s| s.status.bfd = Some(st));
                    if st == BfdState::Up {
                        bfd_was_up = true;
                    } else if bfd_was_up {
                        let n = Notification::new(6, 10, Vec::new());
                        let reason = self.notify(&mut c, &n).await;
                        return closed_est(format!("BFD down; {reason}"));
                    }
                }
                _ = self.stop.changed() => return self.stop_conn(&mut c).await,
            }
        }
    }

    /// Sends what changed between `sent` and the RIB.
    async fn sync_routes(
        &mut self,
        c: &mut Conn,
        uctx: &wire::UpdateCtx,
        sent: &mut BTreeMap<IpNet, RouteAttrs>,
    ) -> Result<(), String> {
        let want: BTreeMap<IpNet, RouteAttrs> = {
            let rib = self.rib.borrow_and_update();
            rib.routes
                .iter()
                .filter(|(p, _)| match p {
                    IpNet::V4(_) => uctx.next_hop_v4.is_some(),
                    IpNet::V6(_) => uctx.next_hop_v6.is_some(),
                })
                .map(|(p, a)| {
                    let mut a = a.clone();
                    if rib.draining && !a.communities.contains(&GRACEFUL_SHUTDOWN) {
                        a.communities.push(GRACEFUL_SHUTDOWN);
                    }
                    (*p, a)
                })
                .collect()
        };
        let gone: Vec<IpNet> = sent
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(msg) = wire::withdraw(p) {
                self.send(c, &msg).await?;
                self.with(|s| s.status.updates_out += 1);
            }
            sent.remove(&p);
        }
        for (p, a) in want {
            if sent.get(&p) == Some(&a) {
                continue;
            }
            if let Some(msg) = wire::announce(uctx, p, &a) {
                self.send(c, &msg).await?;
                self.with(|s| s.status.updates_out += 1);
            }
            sent.insert(p, a);
        }
        let n = sent.len() as u64;
        self.with(|s| s.status.prefixes_sent = n);
        Ok(())
    }
}

/// Doubles the retry delay up to `max`.
pub(crate) fn next_backoff(current: Duration, max: Duration) -> Duration {
    (current * 2).min(max.max(current))
}

async fn connect_at(cfg: Arc<PeerConfig>, at: TInstant) -> std::io::Result<TcpStream> {
    sleep_until(at).await;
    socket::connect(socket::ConnectOpts {
        peer: SocketAddr::new(cfg.address, cfg.port),
        local: cfg.local_address,
        md5: cfg.md5_password.as_deref(),
        gtsm: cfg.ttl_security,
        timeout: CONNECT_TIMEOUT,
    })
    .await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn closed(reason: String) -> End {
    End::Closed {
        reason,
        established: false,
    }
}

fn closed_est(reason: String) -> End {
    End::Closed {
        reason,
        established: true,
    }
}

/// Closes the losing connection of a collision with Cease / Connection
/// Collision Resolution.
async fn reject_collision(mut s: TcpStream) {
    let n = Notification::new(6, 7, Vec::new());
    let _ = timeout(Duration::from_secs(1), s.write_all(&n.encode())).await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_stays_in_range() {
        let mut b = Duration::from_secs(1);
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(b.as_secs());
            b = next_backoff(b, Duration::from_secs(30));
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        for _ in 0..1000 {
            let j = jitter(Duration::from_secs(4));
            assert!(
                j >= Duration::from_secs(3) && j <= Duration::from_secs(4),
                "{j:?}"
            );
        }
    }
}
