//! One peer's finite state machine (RFC 4271 section 8): connect and accept,
//! OPEN exchange, collision detection, keepalives, hold timer, sending the
//! routes, and restart with exponential backoff after every failure.
//!
//! Each state of a connection is a loop over [`Event`]s (`event.rs` turns
//! reads, timers and signals into them); the connection is any
//! [`Transport`], TCP in the speaker and in-memory pipes in the tests
//! (`session/tests.rs`, paused clock).

mod event;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant as TInstant, sleep_until, timeout};

use crate::bfd::{self, BfdHub, BfdState};
use crate::config::{GRACEFUL_SHUTDOWN, PeerConfig, RouteAttrs, SpeakerConfig};
use crate::conn::{Conn, Read};
use crate::iana::{cease, fsm};
use crate::jitter;
use crate::raw_check::{Action, ErrorClass, UpdateSummary};
use crate::rib::{Rib, Stop};
use crate::state::{PeerShared, SessionError, SessionEvent, State};
use crate::transport::{Dialer, Transport};
use crate::wire::{self, Incoming, Notification, PeerOpen};
use event::{Event, Timers};

/// RFC 4271 suggests a large hold time while waiting for the peer's OPEN.
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// A peer that does not read what we write for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a planned stop waits for the router to close its side before
/// BFD says AdminDown (see `stop_conn`).
const CLOSE_SEEN_LIMIT: Duration = Duration::from_secs(2);
/// How long a restarting speaker holds End-of-RIB for its owner's first
/// routes at most (the router's stale timer runs meanwhile).
pub(crate) const EOR_HOLD_LIMIT: Duration = Duration::from_secs(30);
/// A connection from the peer while one is up is judged after this long:
/// a peer that closed its connection (Cease or FIN) and reconnected at once
/// has its close read by then, and gets an OPEN instead of a collision.
const LIVENESS_GRACE: Duration = Duration::from_millis(250);
/// An UPDATE error class of a peer is logged at most once per interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) struct PeerTask<S, D> {
    pub cfg: Arc<PeerConfig>,
    pub global: Arc<SpeakerConfig>,
    pub rib: watch::Receiver<Rib>,
    pub shared: Arc<Mutex<PeerShared>>,
    pub events: broadcast::Sender<SessionEvent>,
    /// Connections from the peer (the speaker's listener accepts them).
    pub incoming: mpsc::Receiver<S>,
    pub stop: watch::Receiver<Stop>,
    pub bfd: Option<Arc<BfdHub>>,
    /// When each UPDATE error class was last logged.
    pub error_log: LogLimiter<(Action, ErrorClass)>,
    /// Opens our connections to the peer.
    pub dialer: Arc<D>,
    /// `incoming` has closed (the peer is being removed).
    pub inbox_closed: bool,
}

/// How one connection ended.
enum End<S> {
    /// Closed; `reason` goes to `last_error`. `next`: a connection from
    /// the peer that arrived while this one was ending, to run at once.
    Closed {
        reason: SessionError,
        established: bool,
        next: Option<S>,
    },
    /// The speaker is stopping.
    Stopped,
    /// Collision resolution picked the other connection.
    Switch(S),
}

/// A connection from the peer held for judgement, and when it is judged.
type Held<S> = Option<(S, TInstant)>;

impl<S: Transport, D: Dialer<S>> PeerTask<S, D> {
    fn set_state(&self, to: State, reason: Option<&SessionError>) {
        let reason = reason.map(|r| r.to_string());
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
            let (cfg, dialer) = (self.cfg.clone(), self.dialer.clone());
            let connect = async move {
                sleep_until(deadline).await;
                dialer.dial(&cfg).await
            };
            let first = tokio::select! {
                s = self.incoming.recv() => match s {
                    Some(s) => Some((s, false)),
                    None => return,
                },
                r = connect, if !self.cfg.passive => match r {
                    Ok(s) => Some((s, true)),
                    Err(e) => {
                        self.set_state(State::Active, Some(&SessionError::Connect(e)));
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
                            self.set_state(State::Idle, Some(&SessionError::Stopped));
                            return;
                        }
                        End::Switch(s) => {
                            stream = s;
                            outbound = false;
                        }
                        End::Closed {
                            reason,
                            established,
                            next,
                        } => {
                            ended_established |= established;
                            self.set_state(State::Idle, Some(&reason));
                            match next {
                                Some(s) => {
                                    stream = s;
                                    outbound = false;
                                }
                                None => break,
                            }
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

    /// The next event of connection `c` (see [`event::next_event`]).
    async fn next_event(
        &mut self,
        c: &mut Conn<S>,
        timers: &Timers,
        rib: bool,
        bfd: Option<&mut watch::Receiver<BfdState>>,
    ) -> Event<S> {
        let inputs = event::Inputs {
            incoming: &mut self.incoming,
            inbox_closed: &mut self.inbox_closed,
            rib: &mut self.rib,
            stop: &mut self.stop,
        };
        event::next_event(c, inputs, timers, rib, bfd).await
    }

    fn ebgp(&self) -> bool {
        self.cfg.remote_as != self.global.local_as
    }

    async fn send(&self, c: &mut Conn<S>, bytes: &[u8]) -> Result<(), SessionError> {
        match timeout(WRITE_TIMEOUT, c.wr.write_all(bytes)).await {
            Ok(Ok(())) => {
                self.with(|s| s.status.messages_out += 1);
                Ok(())
            }
            Ok(Err(e)) => Err(SessionError::Write(e)),
            Err(_) => Err(SessionError::WriteStalled),
        }
    }

    /// Sends a NOTIFICATION and returns why the connection ends.
    async fn notify(&self, c: &mut Conn<S>, n: &Notification) -> SessionError {
        let _ = self.send(c, &n.encode()).await;
        let _ = c.wr.shutdown().await;
        SessionError::NotificationSent(n.describe())
    }

    async fn run_connection(&mut self, stream: S, outbound: bool) -> End<S> {
        let gtsm = (!outbound && self.cfg.ttl_security).then_some(self.cfg.address);
        let mut c = match Conn::open(stream, outbound, gtsm, self.ebgp()) {
            Ok(c) => c,
            Err(reason) => return closed(reason),
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
        let mut pending: Option<S> = None;
        let timers = Timers {
            hold: Some(TInstant::now() + OPEN_HOLD),
            ..Timers::default()
        };
        let peer = loop {
            match self.next_event(&mut c, &timers, false, None).await {
                Event::Read(m) => match self.handshake_read(&mut c, m).await {
                    Ok(Incoming::Open(o)) => {
                        match wire::check_open(
                            &o,
                            self.cfg.remote_as,
                            self.global.router_id,
                            self.ebgp(),
                        ) {
                            Ok(p) => break p,
                            Err(n) => return closed(self.notify(&mut c, &n).await),
                        }
                    }
                    Ok(m) => {
                        let n =
                            Notification::unexpected(fsm::UNEXPECTED_IN_OPEN_SENT, m.msg_type());
                        return closed(self.notify(&mut c, &n).await);
                    }
                    // The peer gave up this connection for its other one.
                    Err(r) => return pending.map_or_else(|| closed(r), End::Switch),
                },
                // Judged once this connection's OPEN names the peer.
                Event::Connection(s) => pending = Some(s),
                Event::HoldTimerExpires => {
                    let n = Notification::hold_timer_expired();
                    return closed(self.notify(&mut c, &n).await);
                }
                Event::Stop => return self.stop_conn(&mut c).await,
                // Not armed in OpenSent.
                _ => {}
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

        // OpenConfirm: wait for KEEPALIVE. A connection from the peer is
        // held for LIVENESS_GRACE: if this one ends meanwhile it simply
        // takes over, otherwise the collision is resolved.
        let mut timers = Timers {
            hold: Some(TInstant::now() + if hold.is_zero() { OPEN_HOLD } else { hold }),
            ..Timers::default()
        };
        let mut pending: Held<S> = None;
        loop {
            timers.collision = pending.as_ref().map(|(_, t)| *t);
            match self.next_event(&mut c, &timers, false, None).await {
                Event::Read(m) => match self.handshake_read(&mut c, m).await {
                    Ok(Incoming::KeepAlive) => break,
                    Ok(m) => {
                        let n =
                            Notification::unexpected(fsm::UNEXPECTED_IN_OPEN_CONFIRM, m.msg_type());
                        return closed_then(self.notify(&mut c, &n).await, false, pending);
                    }
                    Err(r) => return closed_then(r, false, pending),
                },
                Event::Connection(other) => hold_for_judgement(&mut pending, other).await,
                Event::CollisionCheck => {
                    if let Some((other, _)) = pending.take()
                        && let Some(end) = self.collide(&mut c, other, &peer).await
                    {
                        return end;
                    }
                }
                Event::HoldTimerExpires => {
                    let n = Notification::hold_timer_expired();
                    return closed_then(self.notify(&mut c, &n).await, false, pending);
                }
                Event::Stop => return self.stop_conn(&mut c).await,
                // Not armed in OpenConfirm.
                _ => {}
            }
        }
        let mut pending = pending;
        let end = self.established(c, peer, hold, &mut pending).await;
        match (end, pending) {
            (
                End::Closed {
                    reason,
                    established,
                    next: None,
                },
                Some((s, _)),
            ) => End::Closed {
                reason,
                established,
                next: Some(s),
            },
            (end, _) => end,
        }
    }

    /// A read during the OPEN exchange: the message, or why the connection
    /// ended (NOTIFICATION received or sent, TCP closed).
    async fn handshake_read(&self, c: &mut Conn<S>, m: Read) -> Result<Incoming, SessionError> {
        match m {
            Read::Msg(Incoming::Notification(n)) => {
                Err(SessionError::NotificationReceived(n.describe()))
            }
            Read::Msg(m) => {
                self.with(|s| s.status.messages_in += 1);
                Ok(m)
            }
            Read::Bad(n) => Err(self.notify(c, &n).await),
            Read::Closed(r) => Err(r),
        }
    }

    /// Collision detection (RFC 4271 section 6.8): the connection opened by
    /// the side with the higher BGP identifier survives. Returns how the
    /// current connection ends if it loses.
    async fn collide(&self, c: &mut Conn<S>, other: S, peer: &PeerOpen) -> Option<End<S>> {
        let keep_ours = self.global.router_id > peer.router_id;
        if keep_ours == c.outbound {
            reject_collision(other).await;
            None
        } else {
            let n = Notification::cease(cease::CONNECTION_COLLISION);
            self.notify(c, &n).await;
            Some(End::Switch(other))
        }
    }

    async fn stop_conn(&self, c: &mut Conn<S>) -> End<S> {
        if *self.stop.borrow() == Stop::Shutdown {
            let n = Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN);
            self.notify(c, &n).await;
        } else {
            let _ = c.wr.shutdown().await;
        }
        // The BFD session, dropped when this returns, says AdminDown next.
        // A router that sees BFD go Down while the BGP session is still
        // Established stops it as a failure (FRR 8.4 does, graceful
        // restart or not) and flushes our routes; so the AdminDown waits
        // until the router has seen the close, which it shows by closing
        // its side (bounded, for a router that never does).
        let _ = timeout(CLOSE_SEEN_LIMIT, async {
            while let Some(Read::Msg(_)) = c.rd.recv().await {}
        })
        .await;
        End::Stopped
    }

    /// End-of-RIB for every address family of the session.
    async fn end_of_rib(&self, c: &mut Conn<S>, peer: &PeerOpen) -> Result<(), SessionError> {
        for (afi_ok, v6) in [(peer.ipv4, false), (peer.ipv6, true)] {
            if afi_ok {
                self.send(c, &wire::end_of_rib(v6)).await?;
            }
        }
        Ok(())
    }

    /// Established until the connection ends. `pending`: a connection from
    /// the peer that arrived meanwhile and is not judged yet (it is the
    /// next session's if this one ends first).
    async fn established(
        &mut self,
        mut c: Conn<S>,
        peer: PeerOpen,
        hold: Duration,
        pending: &mut Held<S>,
    ) -> End<S> {
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
        let armed = |at: TInstant| (!hold.is_zero()).then_some(at);
        let mut timers = Timers {
            hold: armed(TInstant::now() + hold),
            keepalive: armed(TInstant::now() + keepalive_every),
            collision: None,
            end_of_rib: eor_due.then_some(eor_limit),
        };
        loop {
            timers.collision = pending.as_ref().map(|(_, t)| *t);
            match self
                .next_event(&mut c, &timers, true, bfd_state.as_mut())
                .await
            {
                Event::Read(Read::Msg(msg)) => {
                    timers.hold = armed(TInstant::now() + hold);
                    self.with(|s| s.status.messages_in += 1);
                    match msg {
                        Incoming::KeepAlive | Incoming::Ignored => {}
                        // Routers send routes; we classify, count and
                        // let them go.
                        Incoming::Update(u) => self.count_update(&u),
                        Incoming::RouteRefresh(req) => {
                            if let Err(reason) = self
                                .refresh(
                                    &mut c,
                                    &uctx,
                                    &mut sent,
                                    req.ipv6,
                                    peer.enhanced_route_refresh,
                                )
                                .await
                            {
                                return closed_est(reason);
                            }
                        }
                        Incoming::Notification(n) => {
                            return closed_est(SessionError::NotificationReceived(n.describe()));
                        }
                        Incoming::Open(_) => {
                            let n = Notification::unexpected(
                                fsm::UNEXPECTED_IN_ESTABLISHED,
                                wire::TYPE_OPEN,
                            );
                            return closed_est(self.notify(&mut c, &n).await);
                        }
                    }
                }
                Event::Read(Read::Bad(n)) => return closed_est(self.notify(&mut c, &n).await),
                Event::Read(Read::Closed(r)) => return closed_est(r),
                Event::KeepaliveTimerExpires => {
                    timers.keepalive = armed(TInstant::now() + keepalive_every);
                    if let Err(reason) = self.send(&mut c, &wire::keepalive()).await {
                        return closed_est(reason);
                    }
                }
                Event::HoldTimerExpires => {
                    let n = Notification::hold_timer_expired();
                    return closed_est(self.notify(&mut c, &n).await);
                }
                Event::RibClosed => return End::Stopped,
                Event::RibChanged => {
                    if let Err(reason) = self.sync_routes(&mut c, &uctx, &mut sent).await {
                        return closed_est(reason);
                    }
                    if timers.end_of_rib.is_some() && !self.rib.borrow().eor_held {
                        timers.end_of_rib = None;
                        if let Err(reason) = self.end_of_rib(&mut c, &peer).await {
                            return closed_est(reason);
                        }
                    }
                }
                Event::EndOfRibDue => {
                    timers.end_of_rib = None;
                    if let Err(reason) = self.end_of_rib(&mut c, &peer).await {
                        return closed_est(reason);
                    }
                }
                // RFC 4271 section 6.8: a new connection loses against an
                // Established one, once this one is seen to be still alive.
                Event::Connection(other) => hold_for_judgement(pending, other).await,
                Event::CollisionCheck => {
                    if let Some((other, _)) = pending.take() {
                        reject_collision(other).await;
                    }
                }
                Event::Bfd(st) => {
                    self.with(|s| s.status.bfd = Some(st));
                    if st == BfdState::Up {
                        bfd_was_up = true;
                    } else if bfd_was_up {
                        let n = Notification::cease(cease::BFD_DOWN);
                        self.notify(&mut c, &n).await;
                        return closed_est(SessionError::BfdDown(n.describe()));
                    }
                }
                Event::Stop => return self.stop_conn(&mut c).await,
            }
        }
    }

    /// Counts a received UPDATE and logs its RFC 7606 errors, each class at
    /// most once per ERROR_LOG_INTERVAL.
    fn count_update(&mut self, u: &UpdateSummary) {
        self.with(|s| {
            let st = &mut s.status;
            st.updates_in += 1;
            st.prefixes_received += u.announced as u64;
            if u.treated_as_withdraw() {
                st.treat_as_withdraw += 1;
            }
            for e in &u.errors {
                if e.action == Action::AttributeDiscard {
                    st.attribute_discard += 1;
                }
                let key = format!("{}/{}", e.action.as_str(), e.class.as_str());
                *st.update_errors.entry(key).or_default() += 1;
            }
        });
        let now = Instant::now();
        for e in &u.errors {
            let Some(suppressed) = self.error_log.admit((e.action, e.class), now) else {
                continue;
            };
            let hex: String = e.excerpt.iter().map(|b| format!("{b:02x}")).collect();
            tracing::warn!(
                peer = %self.cfg.address,
                action = e.action.as_str(),
                class = e.class.as_str(),
                attr_type = e.attr_type,
                bytes = %hex,
                suppressed,
                "malformed UPDATE from peer handled without a session reset (RFC 7606)"
            );
        }
    }

    /// Answers a ROUTE-REFRESH request: every route of the family again,
    /// between Beginning- and End-of-RIB markers when enhanced route
    /// refresh (RFC 7313) was negotiated.
    async fn refresh(
        &mut self,
        c: &mut Conn<S>,
        uctx: &wire::UpdateCtx,
        sent: &mut BTreeMap<IpNet, RouteAttrs>,
        ipv6: bool,
        enhanced: bool,
    ) -> Result<(), SessionError> {
        if enhanced {
            self.send(c, &wire::refresh_marker(ipv6, true)).await?;
        }
        sent.retain(|p, _| matches!(p, IpNet::V6(_)) != ipv6);
        self.sync_routes(c, uctx, sent).await?;
        if enhanced {
            self.send(c, &wire::refresh_marker(ipv6, false)).await?;
        }
        Ok(())
    }

    /// Sends what changed between `sent` and the RIB.
    async fn sync_routes(
        &mut self,
        c: &mut Conn<S>,
        uctx: &wire::UpdateCtx,
        sent: &mut BTreeMap<IpNet, RouteAttrs>,
    ) -> Result<(), SessionError> {
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

/// One log line per key and ERROR_LOG_INTERVAL.
pub(crate) struct LogLimiter<K> {
    /// Per key: when it was last logged, how many were held back since.
    last: HashMap<K, (Instant, u64)>,
}

impl<K: std::hash::Hash + Eq> LogLimiter<K> {
    pub fn new() -> Self {
        LogLimiter {
            last: HashMap::new(),
        }
    }

    /// Whether to log `key` now: `Some(held back since the last line)`, or
    /// `None` (counted as held back).
    pub fn admit(&mut self, key: K, now: Instant) -> Option<u64> {
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < ERROR_LOG_INTERVAL => {
                *held += 1;
                None
            }
            Some(entry) => Some(std::mem::replace(entry, (now, 0)).1),
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// Doubles the retry delay up to `max`.
pub(crate) fn next_backoff(current: Duration, max: Duration) -> Duration {
    (current * 2).min(max.max(current))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn closed<S>(reason: SessionError) -> End<S> {
    closed_then(reason, false, None)
}

fn closed_est<S>(reason: SessionError) -> End<S> {
    closed_then(reason, true, None)
}

/// Closed, with the peer's held connection (if any) to run next.
fn closed_then<S>(reason: SessionError, established: bool, pending: Held<S>) -> End<S> {
    End::Closed {
        reason,
        established,
        next: pending.map(|(s, _)| s),
    }
}

/// Holds a connection from the peer for LIVENESS_GRACE before it is
/// judged; one held already loses to it.
async fn hold_for_judgement<S: Transport>(pending: &mut Held<S>, other: S) {
    if let Some((old, _)) = pending.replace((other, TInstant::now() + LIVENESS_GRACE)) {
        reject_collision(old).await;
    }
}

/// Closes the losing connection of a collision with Cease / Connection
/// Collision Resolution.
async fn reject_collision<S: Transport>(mut s: S) {
    let n = Notification::cease(cease::CONNECTION_COLLISION);
    let _ = timeout(Duration::from_secs(1), s.write_all(&n.encode())).await;
    let _ = s.shutdown().await;
}
