//! Single-hop asynchronous BFD (RFC 5880, RFC 5881), written by hand because
//! no BFD session crate exists. One UDP socket on port 3784 receives for all
//! sessions (dispatched by source address); each session sends from its own
//! socket with a source port in 49152-65535 and TTL 255, and only packets
//! that arrive with TTL 255 are accepted (RFC 5881 section 5).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::config::BfdConfig;
use crate::{jitter_bfd, socket};

pub const CONTROL_PORT: u16 = 3784;
const PACKET_LEN: usize = 24;
/// While not Up, RFC 5880 section 6.8.3 wants at least one second between
/// packets.
const SLOW_TX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BfdState {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl BfdState {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
}

/// Diagnostic codes we send (RFC 5880 section 4.1).
const DIAG_NONE: u8 = 0;
const DIAG_DETECT_EXPIRED: u8 = 1;
const DIAG_NEIGHBOR_DOWN: u8 = 3;

/// A BFD control packet (no authentication section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: u8,
    pub state: BfdState,
    pub poll: bool,
    pub fin: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("BFD packet too short ({0} bytes)")]
    Short(usize),
    #[error("BFD version {0} is not 1")]
    Version(u8),
    #[error("BFD length field {0} is invalid for a {1}-byte datagram")]
    Length(u8, usize),
    #[error("BFD authentication is not supported")]
    Auth,
    #[error("BFD detect multiplier is zero")]
    DetectMult,
    #[error("BFD multipoint bit set")]
    Multipoint,
    #[error("BFD my discriminator is zero")]
    MyDisc,
    #[error("BFD your discriminator is zero in state {0:?}")]
    YourDisc(BfdState),
}

impl Packet {
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = ((self.state as u8) << 6) | (u8::from(self.poll) << 5) | (u8::from(self.fin) << 4);
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b
    }

    /// Decodes and applies the checks of RFC 5880 section 6.8.6 that do not
    /// need session state.
    pub fn decode(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < PACKET_LEN {
            return Err(PacketError::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(PacketError::Version(version));
        }
        let len = b[3];
        if usize::from(len) < PACKET_LEN || usize::from(len) > b.len() {
            return Err(PacketError::Length(len, b.len()));
        }
        if b[1] & 0x04 != 0 {
            return Err(PacketError::Auth);
        }
        if b[1] & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: b[0] & 0x1f,
            state: BfdState::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            fin: b[1] & 0x10 != 0,
            detect_mult: b[2],
            my_disc: u32_at(4),
            your_disc: u32_at(8),
            desired_min_tx_us: u32_at(12),
            required_min_rx_us: u32_at(16),
        };
        if p.detect_mult == 0 {
            return Err(PacketError::DetectMult);
        }
        if p.my_disc == 0 {
            return Err(PacketError::MyDisc);
        }
        if p.your_disc == 0 && !matches!(p.state, BfdState::Down | BfdState::AdminDown) {
            return Err(PacketError::YourDisc(p.state));
        }
        Ok(p)
    }
}

/// The shared receive socket and the sessions it feeds.
pub struct BfdHub {
    /// Per peer: the generation of the registration and its inbox.
    sessions: Mutex<HashMap<IpAddr, (u64, mpsc::Sender<Packet>)>>,
    next_gen: std::sync::atomic::AtomicU64,
    receiver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for BfdHub {
    fn drop(&mut self) {
        // Free UDP 3784 as soon as the speaker is gone.
        if let Some(t) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

fn raw_udp6(port: u16) -> io::Result<std::net::UdpSocket> {
    // SAFETY: plain socket(2); the fd is owned by the UdpSocket below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    let off: libc::c_int = 0;
    let on: libc::c_int = 1;
    socket::setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &off)?;
    socket::setsockopt(&sock, libc::IPPROTO_IP, libc::IP_RECVTTL, &on)?;
    socket::setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &on)?;
    socket::setsockopt(&sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, &on)?;
    let sa = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let sa: socket2_free::SockAddr = sa.into();
    // SAFETY: sa points to a valid sockaddr of the given length.
    let rc = unsafe { libc::bind(fd, sa.as_ptr(), sa.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Minimal sockaddr conversion (kept here to avoid a socket2 dependency).
mod socket2_free {
    use std::net::SocketAddr;

    pub struct SockAddr {
        storage: libc::sockaddr_in6,
    }

    impl From<SocketAddr> for SockAddr {
        fn from(sa: SocketAddr) -> Self {
            let (ip, port) = match sa {
                SocketAddr::V4(v4) => (v4.ip().to_ipv6_mapped(), v4.port()),
                SocketAddr::V6(v6) => (*v6.ip(), v6.port()),
            };
            SockAddr {
                storage: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: port.to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    sin6_scope_id: 0,
                },
            }
        }
    }

    impl SockAddr {
        pub fn as_ptr(&self) -> *const libc::sockaddr {
            (&self.storage as *const libc::sockaddr_in6).cast()
        }
        pub fn len(&self) -> libc::socklen_t {
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// recvmsg(2) returning the payload length, source and received TTL.
fn recv_with_ttl(fd: i32, buf: &mut [u8]) -> io::Result<(usize, IpAddr, Option<u8>)> {
    // SAFETY: zeroed plain-old-data structures for recvmsg.
    let mut src: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut cmsg = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut src as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: msg points to valid buffers that outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: iterating the control buffer the kernel filled, with the
    // kernel's own CMSG macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let ty = (*c).cmsg_type;
            if (level == libc::IPPROTO_IP && ty == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_HOPLIMIT)
            {
                let v: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let ip = Ipv6Addr::from(src.sin6_addr.s6_addr);
    Ok((n as usize, socket::canonical(IpAddr::V6(ip)), ttl))
}

impl BfdHub {
    pub async fn start() -> io::Result<Arc<BfdHub>> {
        Self::start_on(CONTROL_PORT).await
    }

    pub async fn start_on(port: u16) -> io::Result<Arc<BfdHub>> {
        let sock = UdpSocket::from_std(raw_udp6(port)?)?;
        let hub = Arc::new(BfdHub {
            sessions: Mutex::new(HashMap::new()),
            next_gen: std::sync::atomic::AtomicU64::new(1),
            receiver: Mutex::new(None),
        });
        let weak = Arc::downgrade(&hub);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 128];
            loop {
                let r = sock
                    .async_io(Interest::READABLE, || {
                        recv_with_ttl(sock.as_raw_fd(), &mut buf)
                    })
                    .await;
                let Some(hub) = weak.upgrade() else { return };
                let (n, from, ttl) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "BFD receive failed");
                        continue;
                    }
                };
                if ttl != Some(255) {
                    tracing::debug!(peer = %from, ?ttl, "BFD packet with TTL != 255 dropped");
                    continue;
                }
                let pkt = match Packet::decode(&buf[..n]) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(peer = %from, error = %e, "BFD packet dropped");
                        continue;
                    }
                };
                let tx = hub
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&from)
                    .cloned();
                if let Some((_, tx)) = tx {
                    let _ = tx.try_send(pkt);
                }
            }
        });
        *hub.receiver.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(hub)
    }

    /// Routes packets from `peer` to a new inbox; a later registration for
    /// the same peer replaces this one.
    fn register(&self, peer: IpAddr) -> (u64, mpsc::Receiver<Packet>) {
        let (tx, rx) = mpsc::channel(16);
        let generation = self
            .next_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, (generation, tx));
        (generation, rx)
    }

    /// Removes the registration unless a newer session already replaced it.
    fn unregister(&self, peer: IpAddr, generation: u64) {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if s.get(&peer).is_some_and(|(g, _)| *g == generation) {
            s.remove(&peer);
        }
    }
}

fn send_socket(local: IpAddr, peer: IpAddr) -> io::Result<std::net::UdpSocket> {
    // RFC 5881 section 4: source port in 49152..=65535.
    let start = 49152 + (crate::random_u32() % 16384) as u16;
    let mut last = None;
    for i in 0..16384u16 {
        let port = 49152 + (start - 49152 + i) % 16384;
        match std::net::UdpSocket::bind(SocketAddr::new(local, port)) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                let ttl: libc::c_int = 255;
                match peer {
                    IpAddr::V4(_) => socket::setsockopt(&s, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?,
                    IpAddr::V6(_) => {
                        socket::setsockopt(&s, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?
                    }
                }
                s.connect(SocketAddr::new(peer, CONTROL_PORT))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free BFD source port")))
}

/// Runs one BFD session until aborted, publishing its state.
pub fn spawn_session(
    hub: Arc<BfdHub>,
    cfg: BfdConfig,
    local: IpAddr,
    peer: IpAddr,
    state: watch::Sender<BfdState>,
) -> tokio::task::JoinHandle<()> {
    let (generation, rx) = hub.register(peer);
    tokio::spawn(async move {
        struct Unregister(Arc<BfdHub>, IpAddr, u64);
        impl Drop for Unregister {
            fn drop(&mut self) {
                self.0.unregister(self.1, self.2);
            }
        }
        let _guard = Unregister(hub, peer, generation);
        let sock = match send_socket(local, peer).and_then(UdpSocket::from_std) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "cannot open BFD socket");
                return;
            }
        };
        Session::new(cfg, state).run(sock, rx).await;
    })
}

/// RFC 5880 section 6.8.1 state variables.
struct Session {
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
    fn new(cfg: BfdConfig, out: watch::Sender<BfdState>) -> Self {
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

    async fn run(mut self, sock: UdpSocket, mut rx: mpsc::Receiver<Packet>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_roundtrip_and_checks() {
        let p = Packet {
            diag: 0,
            state: BfdState::Up,
            poll: true,
            fin: false,
            detect_mult: 3,
            my_disc: 7,
            your_disc: 9,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
        };
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
        let mut b = p.encode();
        b[0] = 2 << 5;
        assert_eq!(Packet::decode(&b), Err(PacketError::Version(2)));
        let mut b = p.encode();
        b[2] = 0;
        assert_eq!(Packet::decode(&b), Err(PacketError::DetectMult));
        let mut b = p.encode();
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(Packet::decode(&b), Err(PacketError::YourDisc(BfdState::Up)));
        assert_eq!(Packet::decode(&b[..10]), Err(PacketError::Short(10)));
    }

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
