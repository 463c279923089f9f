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

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::config::BfdConfig;
use crate::socket;

mod fsm;
mod packet;

pub use packet::{BfdState, Packet, PacketError};

pub const CONTROL_PORT: u16 = 3784;

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
        fsm::Session::new(cfg, state).run(sock, rx).await;
    })
}
