//! The BFD session state machine (RFC 5880 sections 6.2 and 6.8): state
//! variables, reception, timers and the Poll Sequence.

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::packet::{BfdState, Packet};
use crate::config::BfdConfig;
use crate::jitter_bfd;

/// While not Up, RFC 5880 section 6.8.3 wants at least one second between
/// packets.
const SLOW_TX: Duration = Duration::from_secs(1);

/// Diagnostic codes we send (RFC 5880 section 4.1).
const DIAG_NONE: u8 = 0;
const DIAG_DETECT_EXPIRED: u8 = 1;
const DIAG_NEIGHBOR_DOWN: u8 = 3;
const DIAG_ADMIN_DOWN: u8 = 7;

/// RFC 5880 section 6.8.1 state variables.
pub(super) struct Session {
    cfg: BfdConfig,
    out: watch::Sender<BfdState>,
    state: BfdState,
    diag: u8,
    local_disc: u32,
    remote_disc: u32,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_mult: u8,
    poll: bool,
    /// Desired TX advertised (slow until Up).
    desired_tx: Duration,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    pub(super) fn new(cfg: BfdConfig, out: watch::Sender<BfdState>) -> Self {
        Session {
            cfg,
            out,
            state: BfdState::Down,
            diag: DIAG_NONE,
            local_disc: crate::random_u32().max(1),
            remote_disc: 0,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_mult: 0,
            poll: false,
            desired_tx: SLOW_TX.max(cfg.desired_min_tx),
        }
    }

    fn packet(&self, fin: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.poll && !fin,
            fin,
            detect_mult: self.cfg.detect_mult.max(1),
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx_us: us(self.desired_tx),
            required_min_rx_us: us(self.cfg.required_min_rx),
        }
    }

    fn tx_interval(&self) -> Duration {
        self.desired_tx.max(self.remote_min_rx)
    }

    fn detect_time(&self) -> Duration {
        self.cfg.required_min_rx.max(self.remote_desired_tx) * u32::from(self.remote_mult.max(1))
    }

    fn set_state(&mut self, s: BfdState, diag: u8) {
        if s == self.state {
            return;
        }
        self.state = s;
        self.diag = diag;
        // Fast timers only while Up; a change of advertised timers starts a
        // Poll Sequence (RFC 5880 section 6.8.3).
        let want = if s == BfdState::Up {
            self.cfg.desired_min_tx
        } else {
            SLOW_TX.max(self.cfg.desired_min_tx)
        };
        if want != self.desired_tx {
            self.desired_tx = want;
            self.poll = true;
        }
        let _ = self.out.send(s);
    }

    /// RFC 5880 section 6.8.6 reception; `None` when the packet is not for
    /// this session, else whether a Final must be sent right away.
    fn receive(&mut self, p: &Packet) -> Option<bool> {
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return None;
        }
        self.remote_disc = p.my_disc;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx_us));
        self.remote_desired_tx = Duration::from_micros(u64::from(p.desired_min_tx_us));
        self.remote_mult = p.detect_mult;
        if p.fin {
            self.poll = false;
        }
        match (self.state, p.state) {
            (_, BfdState::AdminDown) => {
                if self.state != BfdState::Down {
                    self.set_state(BfdState::Down, DIAG_NEIGHBOR_DOWN);
                }
            }
            (BfdState::Down, BfdState::Down) => self.set_state(BfdState::Init, DIAG_NONE),
            (BfdState::Down, BfdState::Init) => self.set_state(BfdState::Up, DIAG_NONE),
            (BfdState::Init, BfdState::Init | BfdState::Up) => {
                self.set_state(BfdState::Up, DIAG_NONE)
            }
            (BfdState::Up, BfdState::Down) => self.set_state(BfdState::Down, DIAG_NEIGHBOR_DOWN),
            _ => {}
        }
        Some(p.poll)
    }

    /// Runs until the task is aborted (the BGP session ended on purpose),
    /// then says AdminDown: RFC 5882 section 3.2 has the peer not take
    /// that as a failure, so a router in graceful-restart helper mode
    /// keeps our routes across a planned restart, while a node that dies
    /// (no AdminDown) is still detected in one detection time.
    pub(super) async fn run(self, sock: UdpSocket, rx: mpsc::Receiver<Packet>) {
        let mut s = AdminDownOnDrop {
            session: self,
            sock,
        };
        s.session.run_on(&s.sock, rx).await;
    }

    async fn run_on(&mut self, sock: &UdpSocket, mut rx: mpsc::Receiver<Packet>) {
        let _ = self.out.send(self.state);
        let mut next_tx = Instant::now();
        let mut detect_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = sleep_until(next_tx) => {
                    if self.remote_min_rx.is_zero() {
                        // The peer asked us not to send.
                        next_tx = Instant::now() + SLOW_TX;
                        continue;
                    }
                    let _ = sock.send(&self.packet(false).encode()).await;
                    next_tx = Instant::now() + jitter_bfd(self.tx_interval(), self.cfg.detect_mult);
                }
                _ = async { match detect_at { Some(t) => sleep_until(t).await, None => std::future::pending().await } } => {
                    detect_at = None;
                    self.remote_disc = 0;
                    self.set_state(BfdState::Down, DIAG_DETECT_EXPIRED);
                }
                p = rx.recv() => {
                    let Some(p) = p else { return };
                    let Some(send_final) = self.receive(&p) else { continue };
                    detect_at = if self.state == BfdState::Down && p.state == BfdState::AdminDown {
                        None
                    } else {
                        Some(Instant::now() + self.detect_time())
                    };
                    if send_final {
                        let _ = sock.send(&self.packet(true).encode()).await;
                    }
                    // Never wait longer than the interval the peer now wants.
                    let cap = Instant::now() + self.tx_interval();
                    if next_tx > cap { next_tx = cap; }
                }
            }
        }
    }
}

struct AdminDownOnDrop {
    session: Session,
    sock: UdpSocket,
}

impl Drop for AdminDownOnDrop {
    fn drop(&mut self) {
        if self.session.state != BfdState::Up {
            return;
        }
        let mut p = self.session.packet(false);
        p.state = BfdState::AdminDown;
        p.diag = DIAG_ADMIN_DOWN;
        // No await in drop: a non-blocking send, twice against a lost datagram.
        for _ in 0..2 {
            let _ = self.sock.try_send(&p.encode());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_way_handshake() {
        let (tx, _rx) = watch::channel(BfdState::Down);
        let mut s = Session::new(BfdConfig::default(), tx);
        let mut peer = s.packet(false);
        peer.my_disc = 42;
        peer.your_disc = 0;
        peer.state = BfdState::Down;
        assert_eq!(s.receive(&peer), Some(false));
        assert_eq!(s.state, BfdState::Init);
        peer.state = BfdState::Up;
        peer.your_disc = s.local_disc;
        s.receive(&peer);
        assert_eq!(s.state, BfdState::Up);
        assert!(s.poll, "going Up lowers the TX interval with a poll");
        assert_eq!(s.desired_tx, Duration::from_millis(100));
        let mut stranger = peer;
        stranger.your_disc = s.local_disc.wrapping_add(1);
        stranger.state = BfdState::Down;
        assert_eq!(s.receive(&stranger), None, "not our discriminator");
        assert_eq!(s.state, BfdState::Up);
        peer.state = BfdState::Down;
        peer.poll = true;
        assert_eq!(s.receive(&peer), Some(true), "poll wants a final");
        assert_eq!(s.state, BfdState::Down);
    }
}
